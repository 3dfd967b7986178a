//! The IPVS TCP state machine (`ip_vs_proto_tcp.c`): eleven states, transitions driven by the
//! flags of each packet and its direction, and a timeout per state.

use crate::model::TcpState;

/// Which way a packet travels, as the state table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client to real server (`TCP_DIR_INPUT`).
    Input = 0,
    /// Real server to client (`TCP_DIR_OUTPUT`).
    Output = 4,
    /// Client to real server when replies bypass the balancer (DR/TUN; `TCP_DIR_INPUT_ONLY`).
    InputOnly = 8,
}

/// The TCP flags that drive the state table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpFlags {
    /// SYN bit.
    pub syn: bool,
    /// FIN bit.
    pub fin: bool,
    /// ACK bit.
    pub ack: bool,
    /// RST bit.
    pub rst: bool,
}

impl TcpFlags {
    /// Row of the state table for these flags: RST before SYN before FIN before ACK
    /// (`tcp_state_idx`); `None` when no flag that matters is set.
    fn index(self) -> Option<usize> {
        if self.rst {
            Some(3)
        } else if self.syn {
            Some(0)
        } else if self.fin {
            Some(1)
        } else if self.ack {
            Some(2)
        } else {
            None
        }
    }
}

use TcpState as S;
const ES: TcpState = S::Established;
const SS: TcpState = S::SynSent;
const SR: TcpState = S::SynRecv;
const FW: TcpState = S::FinWait;
const TW: TcpState = S::TimeWait;
const CL: TcpState = S::Close;
const CW: TcpState = S::CloseWait;
const LA: TcpState = S::LastAck;
const LI: TcpState = S::Listen;
const SA: TcpState = S::SynAck;

/// `tcp_states[]`: rows are direction offset + flag index (syn, fin, ack, rst), columns the
/// current state (sNO sES sSS sSR sFW sTW sCL sCW sLA sLI sSA).
#[rustfmt::skip]
const TCP_STATES: [[TcpState; 11]; 12] = [
    // INPUT
    /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
    /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    // OUTPUT
    /*syn*/ [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
    /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
    /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
    /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    // INPUT_ONLY
    /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
    /*fin*/ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
    /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
];

/// `tcp_states_dos[]`, the table IPVS switches to when `secure_tcp` is active.
#[rustfmt::skip]
const TCP_STATES_DOS: [[TcpState; 11]; 12] = [
    // INPUT
    /*syn*/ [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA],
    /*fin*/ [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA],
    /*ack*/ [ES, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA],
    /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    // OUTPUT
    /*syn*/ [SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA],
    /*fin*/ [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
    /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
    /*rst*/ [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    // INPUT_ONLY
    /*syn*/ [SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA],
    /*fin*/ [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
    /*ack*/ [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
    /*rst*/ [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
];

/// Next state for a packet with `flags` travelling in `dir` on a connection in `state`
/// (`set_tcp_state`), by `tcp_states_dos` when `secure` (the `secure_tcp` defense acts).
/// Packets with none of SYN/FIN/ACK/RST leave the state alone.
pub(crate) fn next_state(
    state: TcpState,
    dir: Direction,
    flags: TcpFlags,
    secure: bool,
) -> TcpState {
    let table = if secure { &TCP_STATES_DOS } else { &TCP_STATES };
    match flags.index() {
        Some(i) => table[dir as usize + i][state as usize],
        None => state,
    }
}

/// Decode a state stored as its number.
#[cfg(test)]
pub(crate) fn state_from_u8(v: u8) -> TcpState {
    TcpState::from_index(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(syn: bool, fin: bool, ack: bool, rst: bool) -> TcpFlags {
        TcpFlags { syn, fin, ack, rst }
    }

    #[test]
    fn handshake_and_close_as_ipvs() {
        let syn = f(true, false, false, false);
        let synack = f(true, false, true, false);
        let ack = f(false, false, true, false);
        let fin = f(false, true, true, false);
        let mut s = TcpState::None;
        s = next_state(s, Direction::Input, syn, false);
        assert_eq!(s, TcpState::SynRecv);
        s = next_state(s, Direction::Output, synack, false);
        assert_eq!(
            s,
            TcpState::SynRecv,
            "SYN ranks before ACK, and oSYN keeps sSR"
        );
        s = next_state(s, Direction::Input, ack, false);
        assert_eq!(s, TcpState::Established);
        s = next_state(s, Direction::Input, fin, false);
        assert_eq!(s, TcpState::CloseWait, "FIN ranks before ACK");
        s = next_state(s, Direction::Output, fin, false);
        assert_eq!(s, TcpState::TimeWait);
        assert_eq!(s.timeout_ms(), 120_000);
    }

    #[test]
    fn rst_wins_and_flagless_keeps_state() {
        let s = next_state(
            TcpState::Established,
            Direction::Input,
            f(true, false, false, true),
            false,
        );
        assert_eq!(s, TcpState::Close);
        assert_eq!(s.timeout_ms(), 10_000);
        let s2 = next_state(
            TcpState::Established,
            Direction::Output,
            TcpFlags::default(),
            false,
        );
        assert_eq!(s2, TcpState::Established);
    }

    #[test]
    fn secure_tcp_waits_for_the_server_as_ipvs() {
        // ipvs-more.md's vectors, NAT: in SYN -> SR; in ACK -> SR; out SYN|ACK -> SA;
        // in ACK -> SA; out ACK -> ES. Normal table: in SYN -> SR; in ACK -> ES.
        let (syn, synack) = (f(true, false, false, false), f(true, false, true, false));
        let ack = f(false, false, true, false);
        let mut s = TcpState::None;
        for (dir, flags, want) in [
            (Direction::Input, syn, TcpState::SynRecv),
            (Direction::Input, ack, TcpState::SynRecv),
            (Direction::Output, synack, TcpState::SynAck),
            (Direction::Input, ack, TcpState::SynAck),
            (Direction::Output, ack, TcpState::Established),
        ] {
            s = next_state(s, dir, flags, true);
            assert_eq!(s, want, "{dir:?} {flags:?}");
        }
        let s = next_state(TcpState::None, Direction::Input, syn, false);
        assert_eq!(
            next_state(s, Direction::Input, ack, false),
            TcpState::Established
        );
        // DR and tunnels (input only): SYN -> SYN_ACK (120 s), the client's ACK -> ES.
        let s = next_state(TcpState::None, Direction::InputOnly, syn, true);
        assert_eq!(s, TcpState::SynAck);
        assert_eq!(
            next_state(s, Direction::InputOnly, ack, true),
            TcpState::Established
        );
    }

    #[test]
    fn timeouts_match_ipvs_defaults() {
        assert_eq!(TcpState::None.timeout_ms(), 2_000);
        assert_eq!(TcpState::Established.timeout_ms(), 900_000);
        assert_eq!(TcpState::SynRecv.timeout_ms(), 60_000);
        assert_eq!(TcpState::CloseWait.timeout_ms(), 60_000);
        assert_eq!(TcpState::LastAck.timeout_ms(), 30_000);
        assert_eq!(TcpState::SynAck.timeout_ms(), 120_000);
    }

    #[test]
    fn every_state_round_trips() {
        for s in TcpState::ALL {
            assert_eq!(state_from_u8(s as u8), s);
            assert!(!s.name().is_empty());
        }
        assert_eq!(TCP_STATES_DOS[0][10], TcpState::SynAck);
    }
}
