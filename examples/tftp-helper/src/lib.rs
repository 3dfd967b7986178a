//! TFTP through NAT, as a wvs application helper written with the SDK.
//!
//! A TFTP client sends its read or write request (RFC 1350: opcode 1 or 2) to the server's
//! port 69; the server answers from a new port of its own (the transfer's "TID"), and the
//! whole transfer runs between that port and the client's. Behind a NAT balancer that reply
//! would belong to no connection, so the helper, on seeing the request, asks the host for
//! an expected connection: from the same real server, any port, to the client's port. The
//! host fills the server's port in from its first packet and shows it to the client as the
//! virtual address's same port, where the client sends its acknowledgements.
//!
//! Build: `cargo build -p wvs-example-tftp --target wasm32-unknown-unknown --release`, then
//! load it with `[[plugin]] name = "tftp" path = "…/wvs_example_tftp.wasm"` and bind it with
//! `helpers = ["tftp"]` on a UDP service on port 69.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{Action, Expect, HELPER_STATE_LEN, Helper, HelperHost, PacketInfo, helper_dir};

/// TFTP's read request.
const RRQ: u16 = 1;
/// TFTP's write request.
const WRQ: u16 = 2;
/// How long the transfer's first packet may take (ms).
const TRANSFER_WAIT_MS: u32 = 30_000;

/// The helper; it keeps nothing of its own.
#[derive(Debug, Default)]
pub struct Tftp;

wvs_sdk::export_helper!(Tftp);

impl Helper for Tftp {
    const NAME: &'static str = "tftp";
    const FLAGS: u32 = wvs_sdk::helper_flags::EXPECTS;

    fn packet(
        &mut self,
        pkt: &PacketInfo,
        _state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        _out: &mut [u8],
        host: &mut dyn HelperHost,
    ) -> Action {
        if pkt.dir != helper_dir::IN || pkt.proto != 17 || !is_request(payload) {
            return Action::Keep;
        }
        host.expect(&Expect {
            caddr: pkt.caddr,
            cport: pkt.cport,
            // The server's new port, and the same one on the virtual address: unknown yet.
            dport: 0,
            vport: 0,
            proto: 17,
            timeout_ms: TRANSFER_WAIT_MS,
            ..Default::default()
        });
        Action::Keep
    }
}

/// A read or write request: opcode, then a file name and a mode, each ended by a zero.
pub fn is_request(p: &[u8]) -> bool {
    let Some(op) = p.get(..2).map(|o| u16::from_be_bytes([o[0], o[1]])) else {
        return false;
    };
    (op == RRQ || op == WRQ) && p[2..].iter().filter(|&&b| b == 0).count() >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Host(Vec<Expect>);
    impl HelperHost for Host {
        fn expect(&mut self, e: &Expect) -> bool {
            self.0.push(*e);
            true
        }
        fn now_ms(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_request_expects_the_transfer() {
        let pkt = PacketInfo {
            cport: 40000,
            vport: 69,
            dport: 69,
            proto: 17,
            af: 4,
            ..Default::default()
        };
        let mut h = Host(vec![]);
        let mut st = [0; HELPER_STATE_LEN];
        let mut out = [0u8; 16];
        let rrq = b"\x00\x01file\x00octet\x00";
        assert_eq!(
            Tftp.packet(&pkt, &mut st, rrq, &mut out, &mut h),
            Action::Keep
        );
        assert_eq!(h.0.len(), 1);
        assert_eq!((h.0[0].cport, h.0[0].dport, h.0[0].vport), (40000, 0, 0));
        // Data and acknowledgements are not requests.
        for p in [
            &b"\x00\x03\x00\x01data"[..],
            b"\x00\x04\x00\x01",
            b"\x00\x01",
            b"",
        ] {
            assert!(!is_request(p));
        }
    }
}
