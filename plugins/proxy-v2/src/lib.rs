//! PROXY protocol version 2 (HAProxy's `proxy-protocol.txt`, section 2.2): the header that
//! tells the real server who the client is and which address it connected to, inserted
//! before the first byte of the client's stream. Behind full NAT the real server sees a
//! local address of the balancer as the source; with this helper (and `proxy_protocol` on
//! the server's listener) it learns the client's.
//!
//! The header is added to the segment that carries stream offset 0, each time that segment
//! is sent (a retransmission gets it again, and the host counts its length once); every
//! later segment is shifted by the host.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{Action, HELPER_STATE_LEN, Helper, HelperHost, PacketInfo, helper_dir};

/// The protocol's 12-byte signature.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const VER_CMD: u8 = 0x21;
/// AF_INET, STREAM.
const TCP4: u8 = 0x11;
/// AF_INET, DGRAM.
const UDP4: u8 = 0x12;
/// Length of the IPv4 address block.
const V4_BLOCK: u16 = 12;
/// Length of an IPv4 header: 16 bytes of preamble and the address block.
pub const V4_LEN: usize = 16 + V4_BLOCK as usize;
/// AF_INET6, STREAM and DGRAM.
const TCP6: u8 = 0x21;
const UDP6: u8 = 0x22;
/// Length of the IPv6 address block (two addresses of 16 bytes, two ports).
const V6_BLOCK: u16 = 36;
/// Length of an IPv6 header.
pub const V6_LEN: usize = 16 + V6_BLOCK as usize;

/// The helper.
#[derive(Debug, Default)]
pub struct ProxyV2;

wvs_sdk::export_helper!(ProxyV2);

impl Helper for ProxyV2 {
    const NAME: &'static str = "proxy-v2";

    fn packet(
        &mut self,
        pkt: &PacketInfo,
        _state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        out: &mut [u8],
        _host: &mut dyn HelperHost,
    ) -> Action {
        if pkt.dir != helper_dir::IN || pkt.offset != 0 || pkt.proto != 6 {
            return Action::Keep;
        }
        // The client's family (`af`): behind full NAT between the families the server
        // learns an address of the other family than its connection's.
        let len = match pkt.af {
            4 => V4_LEN,
            6 => V6_LEN,
            _ => return Action::Keep,
        };
        let n = len + payload.len();
        if n > out.len() {
            return Action::Keep;
        }
        if len == V4_LEN {
            header_v4(pkt, &mut out[..len]);
        } else {
            header_v6(pkt, &mut out[..len]);
        }
        out[len..n].copy_from_slice(payload);
        Action::Replace(n)
    }
}

/// Write the header for `pkt`'s connection (`out` is `V4_LEN` bytes).
pub fn header_v4(pkt: &PacketInfo, out: &mut [u8]) {
    out[..12].copy_from_slice(&SIGNATURE);
    out[12] = VER_CMD;
    out[13] = if pkt.proto == 17 { UDP4 } else { TCP4 };
    out[14..16].copy_from_slice(&V4_BLOCK.to_be_bytes());
    out[16..20].copy_from_slice(&pkt.caddr[12..]);
    out[20..24].copy_from_slice(&pkt.vaddr[12..]);
    out[24..26].copy_from_slice(&pkt.cport.to_be_bytes());
    out[26..28].copy_from_slice(&pkt.vport.to_be_bytes());
}

/// Write the IPv6 header for `pkt`'s connection (`out` is `V6_LEN` bytes).
pub fn header_v6(pkt: &PacketInfo, out: &mut [u8]) {
    out[..12].copy_from_slice(&SIGNATURE);
    out[12] = VER_CMD;
    out[13] = if pkt.proto == 17 { UDP6 } else { TCP6 };
    out[14..16].copy_from_slice(&V6_BLOCK.to_be_bytes());
    out[16..32].copy_from_slice(&pkt.caddr);
    out[32..48].copy_from_slice(&pkt.vaddr);
    out[48..50].copy_from_slice(&pkt.cport.to_be_bytes());
    out[50..52].copy_from_slice(&pkt.vport.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHost;
    impl HelperHost for NoHost {
        fn expect(&mut self, _: &wvs_sdk::Expect) -> bool {
            false
        }
        fn now_ms(&self) -> u64 {
            0
        }
    }

    fn pkt(offset: u32, dir: u8) -> PacketInfo {
        let mut p = PacketInfo {
            cport: 40000,
            vport: 80,
            proto: 6,
            af: 4,
            dir,
            offset,
            ..Default::default()
        };
        p.caddr[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 2]);
        p.vaddr[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 100]);
        p
    }

    #[test]
    fn header_goes_before_the_first_byte_only() {
        let mut st = [0; HELPER_STATE_LEN];
        let mut out = [0u8; 256];
        let a = ProxyV2.packet(
            &pkt(0, 0),
            &mut st,
            b"GET / HTTP/1.0\r\n\r\n",
            &mut out,
            &mut NoHost,
        );
        assert_eq!(a, Action::Replace(V4_LEN + 18));
        assert_eq!(
            &out[..V4_LEN],
            &[
                0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11,
                0x00, 0x0c, 198, 18, 0, 2, 198, 18, 0, 100, 0x9c, 0x40, 0x00, 0x50
            ]
        );
        assert_eq!(&out[V4_LEN..V4_LEN + 18], b"GET / HTTP/1.0\r\n\r\n");
        for p in [pkt(18, 0), pkt(0, 1)] {
            assert_eq!(
                ProxyV2.packet(&p, &mut st, b"x", &mut out, &mut NoHost),
                Action::Keep
            );
        }
        // An IPv6 client: the IPv6 block.
        let mut p6 = pkt(0, 0);
        p6.af = 6;
        p6.caddr = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
        ];
        p6.vaddr = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        let a = ProxyV2.packet(&p6, &mut st, b"GET", &mut out, &mut NoHost);
        assert_eq!(a, Action::Replace(V6_LEN + 3));
        assert_eq!(&out[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(&out[16..32], &p6.caddr);
        assert_eq!(&out[32..48], &p6.vaddr);
        assert_eq!(&out[48..52], &[0x9c, 0x40, 0x00, 0x50]);
        assert_eq!(&out[V6_LEN..V6_LEN + 3], b"GET");
        let mut small = [0u8; 20];
        assert_eq!(
            ProxyV2.packet(&pkt(0, 0), &mut st, b"x", &mut small, &mut NoHost),
            Action::Keep,
            "what does not fit is left alone"
        );
    }
}
