//! The IPVS SCTP state machine (`ip_vs_proto_sctp.c`, `set_sctp_state`): fourteen states,
//! moved by the type of a packet's first chunk and its direction, a timeout per state.

use super::Direction;
use crate::model::SctpState;
use crate::wire::sctp::{SctpPacket, chunk};

/// What a packet's chunks say to the state table (`enum ipvs_sctp_event_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SctpEvent {
    /// DATA, SACK, HEARTBEAT and its ACK, ECNE, CWR, and every type IPVS does not name.
    #[default]
    Data = 0,
    /// INIT.
    Init,
    /// INIT ACK.
    InitAck,
    /// COOKIE ECHO.
    CookieEcho,
    /// COOKIE ACK.
    CookieAck,
    /// SHUTDOWN.
    Shutdown,
    /// SHUTDOWN ACK.
    ShutdownAck,
    /// SHUTDOWN COMPLETE.
    ShutdownComplete,
    /// ERROR.
    Error,
    /// ABORT.
    Abort,
}

impl SctpEvent {
    /// The event of a chunk type (`sctp_events[]`).
    fn of_chunk(t: u8) -> Self {
        match t {
            chunk::INIT => Self::Init,
            chunk::INIT_ACK => Self::InitAck,
            chunk::COOKIE_ECHO => Self::CookieEcho,
            chunk::COOKIE_ACK => Self::CookieAck,
            chunk::SHUTDOWN => Self::Shutdown,
            chunk::SHUTDOWN_ACK => Self::ShutdownAck,
            chunk::SHUTDOWN_COMPLETE => Self::ShutdownComplete,
            chunk::ERROR => Self::Error,
            chunk::ABORT => Self::Abort,
            _ => Self::Data,
        }
    }

    /// The event of a packet: its first chunk's, except that an ABORT bundled right after
    /// a COOKIE ECHO or COOKIE ACK is an ABORT (RFC 9260 3.3.7 lets control chunks precede
    /// an ABORT).
    pub fn of<T: AsRef<[u8]>>(p: &SctpPacket<T>) -> Self {
        let first = p.first_chunk();
        if matches!(first, chunk::COOKIE_ECHO | chunk::COOKIE_ACK)
            && p.second_chunk() == Some(chunk::ABORT)
        {
            return Self::Abort;
        }
        Self::of_chunk(first)
    }
}

use SctpState as S;
const I1: S = S::Init1;
const IN: S = S::Init;
const CS: S = S::CookieSent;
const CR: S = S::CookieReplied;
const CW: S = S::CookieWait;
const CO: S = S::Cookie;
const CE: S = S::CookieEchoed;
const ES: S = S::Established;
const SS: S = S::ShutdownSent;
const SR: S = S::ShutdownReceived;
const SA: S = S::ShutdownAckSent;
const RJ: S = S::Rejected;
const CL: S = S::Closed;

/// `sctp_states[dir][event][state]`: INPUT, OUTPUT, INPUT_ONLY; rows by event (d i i_a c_e
/// c_a s s_a s_c err ab), columns by the current state (NO I1 IN CS CR CW CO CE ES SS SR SA
/// RJ CL).
#[rustfmt::skip]
const SCTP_STATES: [[[SctpState; 14]; 10]; 3] = [
    [ // INPUT
        /*d  */ [ES, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*i  */ [I1, IN, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, IN, IN],
        /*i_a*/ [CW, CW, CW, CS, CR, CO, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*c_e*/ [CR, IN, IN, CR, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*c_a*/ [ES, I1, IN, CS, CR, CW, CO, ES, ES, SS, SR, SA, RJ, CL],
        /*s  */ [SR, I1, IN, CS, CR, CW, CO, CE, SR, SS, SR, SA, RJ, CL],
        /*s_a*/ [CL, IN, IN, CS, CR, CW, CO, CE, ES, CL, SR, CL, RJ, CL],
        /*s_c*/ [CL, CL, CL, CS, CR, CW, CO, CE, ES, SS, SR, CL, RJ, CL],
        /*err*/ [CL, I1, IN, CS, CR, CW, CO, CL, ES, SS, SR, SA, RJ, CL],
        /*ab */ [CL, CL, CL, CL, CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
    [ // OUTPUT
        /*d  */ [ES, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*i  */ [CW, CW, CW, CW, CW, CW, CW, CW, ES, CW, CW, CW, CW, CW],
        /*i_a*/ [CS, CS, CS, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*c_e*/ [CE, CE, CE, CE, CE, CE, CE, CE, ES, SS, SR, SA, RJ, CL],
        /*c_a*/ [ES, ES, ES, ES, ES, ES, ES, ES, ES, SS, SR, SA, RJ, CL],
        /*s  */ [SS, SS, SS, SS, SS, SS, SS, SS, SS, SS, SR, SA, RJ, CL],
        /*s_a*/ [SA, SA, SA, SA, SA, CW, CO, CE, ES, SA, SA, SA, RJ, CL],
        /*s_c*/ [CL, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*err*/ [CL, CL, CL, CL, CL, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*ab */ [CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
    [ // INPUT_ONLY
        /*d  */ [ES, I1, IN, CS, CR, ES, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*i  */ [I1, IN, IN, IN, IN, IN, CO, CE, ES, SS, SR, SA, IN, IN],
        /*i_a*/ [CE, CE, CE, CE, CE, CE, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*c_e*/ [ES, ES, ES, ES, ES, ES, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*c_a*/ [ES, I1, IN, ES, ES, CW, ES, ES, ES, SS, SR, SA, RJ, CL],
        /*s  */ [SR, I1, IN, CS, CR, CW, CO, CE, SR, SS, SR, SA, RJ, CL],
        /*s_a*/ [CL, IN, IN, CS, CR, CW, CO, CE, CL, CL, SR, CL, RJ, CL],
        /*s_c*/ [CL, CL, CL, CL, CL, CW, CO, CE, ES, SS, CL, CL, RJ, CL],
        /*err*/ [CL, I1, IN, CS, CR, CW, CO, CE, ES, SS, SR, SA, RJ, CL],
        /*ab */ [CL, CL, CL, CL, CL, RJ, CL, CL, CL, CL, CL, CL, CL, CL],
    ],
];

/// The next state of a connection in `state` for a packet of `event` travelling in `dir`.
pub(crate) fn next_state(state: SctpState, dir: Direction, event: SctpEvent) -> SctpState {
    let d = match dir {
        Direction::Input => 0,
        Direction::Output => 1,
        Direction::InputOnly => 2,
    };
    SCTP_STATES[d][event as usize][state as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Input, InputOnly, Output};
    use SctpEvent as E;

    fn walk(steps: &[(Direction, SctpEvent)]) -> Vec<&'static str> {
        let mut s = SctpState::None;
        steps
            .iter()
            .map(|&(d, e)| {
                s = next_state(s, d, e);
                s.name()
            })
            .collect()
    }

    #[test]
    fn an_association_through_nat_as_ipvs() {
        assert_eq!(
            walk(&[
                (Input, E::Init),
                (Output, E::InitAck),
                (Input, E::CookieEcho),
                (Output, E::CookieAck),
                (Input, E::Data),
                (Output, E::Data),
                (Input, E::Shutdown),
                (Output, E::ShutdownAck),
                (Input, E::ShutdownComplete),
            ]),
            [
                "INIT1",
                "C-SENT",
                "C-REPLIED",
                "ESTABLISHED",
                "ESTABLISHED",
                "ESTABLISHED",
                "S-RECEIVED",
                "S-ACK-SENT",
                "CLOSED"
            ]
        );
    }

    #[test]
    fn a_rejected_init_and_direct_routing() {
        assert_eq!(
            walk(&[(Input, E::Init), (Output, E::Abort)]),
            ["INIT1", "REJECTED"]
        );
        assert_eq!(
            walk(&[(Input, E::Init), (Input, E::Init), (Input, E::Abort)]),
            ["INIT1", "INIT", "CLOSED"]
        );
        // DR: only the client's packets, by the INPUT_ONLY rows.
        assert_eq!(
            walk(&[
                (InputOnly, E::Init),
                (InputOnly, E::CookieEcho),
                (InputOnly, E::Shutdown),
                (InputOnly, E::ShutdownComplete),
            ]),
            ["INIT1", "ESTABLISHED", "S-RECEIVED", "CLOSED"]
        );
    }

    #[test]
    fn events_as_ipvs_reads_chunks() {
        let pkt = |chunks: &[u8]| {
            let mut p = vec![0u8; 12];
            p.extend_from_slice(chunks);
            p
        };
        let ev = |b: &[u8]| SctpEvent::of(&SctpPacket::new_checked(b).unwrap());
        assert_eq!(ev(&pkt(&[chunk::INIT, 0, 0, 4])), E::Init);
        assert_eq!(ev(&pkt(&[3, 0, 0, 4])), E::Data, "SACK");
        assert_eq!(ev(&pkt(&[200, 0, 0, 4])), E::Data, "an unknown type");
        assert_eq!(
            ev(&pkt(&[chunk::COOKIE_ACK, 0, 0, 4, chunk::ABORT, 0, 0, 4])),
            E::Abort
        );
        assert_eq!(
            ev(&pkt(&[
                chunk::SHUTDOWN,
                0,
                0,
                8,
                0,
                0,
                0,
                0,
                chunk::ABORT,
                0,
                0,
                4
            ])),
            E::Shutdown,
            "only after a cookie chunk"
        );
    }
}
