//! ICMP errors of full-NAT connections between the families, rebuilt in the receiver's
//! family as a SIIT translator does (RFC 7915 sections 4.2 and 5.2).
//!
//! The client and the real server never see each other's family, so an error that one
//! side's network sends about a connection reaches the other side as an error of its own
//! family: its type and code mapped (Packet Too Big's MTU less IPv4's 20 bytes of header
//! difference one way, more the other, never below IPv6's 1280), the quoted packet written
//! as the receiver sent it (its header in the receiver's family, the addresses and ports
//! of its end of the connection, the quoted upper layer's bytes after the ports as they
//! came), cut to what an error of that family carries (576 bytes for IPv4, 1280 for IPv6).
//! It comes from the VIP towards a client and from the local address towards a server,
//! the addresses the receiver knows (the original sender's has no counterpart). Errors
//! with none in the other family (source quench, most parameter problems, unknown codes)
//! are dropped, as RFC 7915 drops them.

use std::net::IpAddr;

use super::{ICMP_HEADER_LEN, IcmpError, Relay, v6};
use crate::conn::table::KeyDir;
use crate::datapath::DropReason;
use crate::wire::{
    ETHERNET_HEADER_LEN, EthernetFrame, EthernetProtocol, Ipv4Packet, Ipv6Packet, checksum,
    ipv4_field, ipv6_field,
};
use crate::xmit::xlat::{ipv4_header, ipv6_header};

/// The most an ICMP error carries: IPv4's least datagram every host takes (RFC 1812), and
/// IPv6's least MTU (RFC 4443).
const MAX_V4: usize = 576;
const MAX_V6: usize = ipv6_field::MIN_MTU;
/// IPv4 types and codes (RFC 792, 1191).
const DEST_UNREACHABLE: u8 = 3;
const TIME_EXCEEDED: u8 = 11;
const PROTO_UNREACHABLE: u8 = 2;
const PORT_UNREACHABLE: u8 = 3;
const FRAG_NEEDED: u8 = 4;
const HOST_UNREACHABLE: u8 = 1;
const ADMIN_PROHIBITED: u8 = 13;
/// RFC 1191's plateau below which no path goes: the MTU an old router's zero stands for.
const V4_MIN_MTU: u32 = 68;
/// The hop count of the error wvs writes (a new datagram, as the translator's own).
const HOPS: u8 = 64;

/// What the error says, in the receiver's family: type, code, and the 4 bytes after the
/// checksum (the MTU, or a parameter problem's pointer).
type Message = (u8, u8, [u8; 4]);

/// ICMPv6 to ICMPv4 (RFC 7915 section 5.2).
fn to_v4(kind: u8, code: u8, word: [u8; 4]) -> Option<Message> {
    match (kind, code) {
        (v6::DEST_UNREACHABLE, 0 | 2 | 3) => Some((DEST_UNREACHABLE, HOST_UNREACHABLE, [0; 4])),
        (v6::DEST_UNREACHABLE, 1) => Some((DEST_UNREACHABLE, ADMIN_PROHIBITED, [0; 4])),
        (v6::DEST_UNREACHABLE, v6::PORT_UNREACHABLE) => {
            Some((DEST_UNREACHABLE, PORT_UNREACHABLE, [0; 4]))
        }
        (v6::PACKET_TOO_BIG, 0) => {
            let mtu = u32::from_be_bytes(word)
                .saturating_sub(20)
                .clamp(V4_MIN_MTU, 0xffff);
            let mtu = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
            Some((DEST_UNREACHABLE, FRAG_NEEDED, [0, 0, mtu[0], mtu[1]]))
        }
        (v6::TIME_EXCEEDED, 0 | 1) => Some((TIME_EXCEEDED, code, [0; 4])),
        // Unrecognized next header: the protocol is unreachable.
        (v6::PARAMETER_PROBLEM, 1) => Some((DEST_UNREACHABLE, PROTO_UNREACHABLE, [0; 4])),
        _ => None,
    }
}

/// ICMPv4 to ICMPv6 (RFC 7915 section 4.2).
fn to_v6(kind: u8, code: u8, word: [u8; 4]) -> Option<Message> {
    match (kind, code) {
        (DEST_UNREACHABLE, 0 | 1 | 5 | 6 | 7 | 8 | 11 | 12) => {
            Some((v6::DEST_UNREACHABLE, 0, [0; 4]))
        }
        (DEST_UNREACHABLE, 9 | 10 | 13 | 15) => Some((v6::DEST_UNREACHABLE, 1, [0; 4])),
        (DEST_UNREACHABLE, PROTO_UNREACHABLE) => {
            // The quoted IPv6 header's next header field (offset 6) is the one not taken.
            Some((v6::PARAMETER_PROBLEM, 1, [0, 0, 0, 6]))
        }
        (DEST_UNREACHABLE, PORT_UNREACHABLE) => {
            Some((v6::DEST_UNREACHABLE, v6::PORT_UNREACHABLE, [0; 4]))
        }
        (DEST_UNREACHABLE, FRAG_NEEDED) => {
            let mtu = u32::from(u16::from_be_bytes([word[2], word[3]]));
            let mtu = mtu.max(V4_MIN_MTU) + 20;
            Some((v6::PACKET_TOO_BIG, 0, mtu.max(MAX_V6 as u32).to_be_bytes()))
        }
        (TIME_EXCEEDED, 0 | 1) => Some((v6::TIME_EXCEEDED, code, [0; 4])),
        _ => None,
    }
}

/// The quoted packet's header fields that carry over: traffic class, hop count, and the
/// length of its upper layer as the original packet had it.
struct Quoted {
    tclass: u8,
    hops: u8,
    l4_len: usize,
}

/// Rebuild the error `e` (in `frame`, of the sender's family) in the receiver's, for the
/// connection `r`: the new frame's length.
pub(super) fn relay(e: &IcmpError, r: &Relay, frame: &mut [u8]) -> Result<usize, DropReason> {
    // Full NAT only: the other end of the quote is of the receiver's family too.
    let Some((other, other_port)) = r.other else {
        return Err(DropReason::IcmpInnerBad);
    };
    let ip = &frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + e.total_len];
    let icmp = &ip[e.l4_off..];
    let (kind, code) = (icmp[0], icmp[1]);
    let word = [icmp[4], icmp[5], icmp[6], icmp[7]];
    let quote = &icmp[ICMP_HEADER_LEN..];
    let (message, q) = if e.saddr.is_ipv6() {
        let h = Ipv6Packet::new_unchecked(quote);
        let hdr_len = e.inner_l4;
        let q = Quoted {
            tclass: h.traffic_class(),
            hops: h.hop_limit(),
            l4_len: usize::from(h.payload_len()).saturating_sub(hdr_len - ipv6_field::HEADER_LEN),
        };
        (to_v4(kind, code, word), q)
    } else {
        let h = Ipv4Packet::new_unchecked(quote);
        let q = Quoted {
            tclass: h.dscp() << 2 | h.ecn(),
            hops: h.hop_limit(),
            l4_len: usize::from(h.total_len()).saturating_sub(e.inner_l4),
        };
        (to_v6(kind, code, word), q)
    };
    let (kind, code, word) = message.ok_or(DropReason::IcmpUntranslatable)?;
    // The quoted upper layer as it came (at least its ports: the parser checked 8 bytes).
    let mut l4 = [0u8; MAX_V6];
    let got = &quote[e.inner_l4..];
    let (to_v6_family, cap) = match r.addr {
        IpAddr::V6(_) => (true, MAX_V6),
        IpAddr::V4(_) => (false, MAX_V4),
    };
    let (outer_len, quote_hdr) = if to_v6_family {
        (ipv6_field::HEADER_LEN, ipv6_field::HEADER_LEN)
    } else {
        (ipv4_field::MIN_HEADER_LEN, ipv4_field::MIN_HEADER_LEN)
    };
    let room = cap - outer_len - ICMP_HEADER_LEN - quote_hdr;
    let n = got.len().min(room);
    l4[..n].copy_from_slice(&got[..n]);
    // The quote's ends: a forwarded packet's (towards the client) was client -> VIP, a
    // reply's (towards the server) server -> local address.
    let ((qs, qsp), (qd, qdp)) = match r.dir {
        KeyDir::Out => ((other, other_port), (r.addr, r.port)),
        KeyDir::In => ((r.addr, r.port), (other, other_port)),
    };
    l4[..2].copy_from_slice(&qsp.to_be_bytes());
    l4[2..4].copy_from_slice(&qdp.to_be_bytes());
    // The error's own ends: from the VIP to the client, or from the local address to the
    // server.
    let (src, dst) = match r.dir {
        KeyDir::Out => (r.addr, other),
        KeyDir::In => (other, r.addr),
    };
    let total = outer_len + ICMP_HEADER_LEN + quote_hdr + n;
    if ETHERNET_HEADER_LEN + total > frame.len() {
        return Err(DropReason::NoRoom);
    }
    let proto = e.proto.number();
    let ip = &mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + total];
    let (outer, rest) = ip.split_at_mut(outer_len);
    let icmp = rest;
    icmp[..ICMP_HEADER_LEN]
        .copy_from_slice(&[kind, code, 0, 0, word[0], word[1], word[2], word[3]]);
    let (qhdr, ql4) = icmp[ICMP_HEADER_LEN..].split_at_mut(quote_hdr);
    ql4.copy_from_slice(&l4[..n]);
    let len16 = |v: usize| u16::try_from(v).unwrap_or(u16::MAX);
    let icmp_len = len16(total - outer_len);
    let c = match (src, dst, qs, qd) {
        (IpAddr::V6(src), IpAddr::V6(dst), IpAddr::V6(qs), IpAddr::V6(qd)) => {
            ipv6_header(qhdr, (q.tclass, q.hops), len16(q.l4_len), proto, (qs, qd));
            ipv6_header(outer, (0, HOPS), icmp_len, v6::PROTO, (src, dst));
            checksum::l4_v6(src.octets(), dst.octets(), v6::PROTO, icmp)
        }
        (IpAddr::V4(src), IpAddr::V4(dst), IpAddr::V4(qs), IpAddr::V4(qd)) => {
            let qlen = len16(ipv4_field::MIN_HEADER_LEN + q.l4_len);
            ipv4_header(qhdr, (q.tclass, q.hops), qlen, proto, (qs, qd));
            ipv4_header(outer, (0, HOPS), len16(total), 1, (src, dst));
            checksum::compute(icmp)
        }
        _ => return Err(DropReason::IcmpInnerBad),
    };
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    EthernetFrame::new_unchecked(&mut frame[..ETHERNET_HEADER_LEN]).set_ethertype(
        if to_v6_family {
            EthernetProtocol::Ipv6
        } else {
            EthernetProtocol::Ipv4
        },
    );
    Ok(ETHERNET_HEADER_LEN + total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_codes_map_as_rfc_7915_says() {
        // ICMPv6 to ICMPv4.
        assert_eq!(
            to_v4(1, 4, [0; 4]),
            Some((3, 3, [0; 4])),
            "port unreachable"
        );
        assert_eq!(to_v4(1, 0, [0; 4]), Some((3, 1, [0; 4])), "no route");
        assert_eq!(to_v4(1, 1, [0; 4]), Some((3, 13, [0; 4])), "prohibited");
        assert_eq!(to_v4(3, 0, [0; 4]), Some((11, 0, [0; 4])), "hop limit");
        assert_eq!(
            to_v4(2, 0, 1400u32.to_be_bytes()),
            Some((3, 4, [0, 0, 0x05, 0x64])),
            "1380"
        );
        assert_eq!(
            to_v4(2, 0, 1280u32.to_be_bytes()),
            Some((3, 4, [0, 0, 0x04, 0xec])),
            "1260"
        );
        assert_eq!(to_v4(4, 1, [0; 4]), Some((3, 2, [0; 4])), "next header");
        assert_eq!(
            to_v4(4, 0, [0, 0, 0, 8]),
            None,
            "a pointer into a header that changes"
        );
        assert_eq!(to_v4(1, 7, [0; 4]), None);
        // ICMPv4 to ICMPv6.
        assert_eq!(
            to_v6(3, 3, [0; 4]),
            Some((1, 4, [0; 4])),
            "port unreachable"
        );
        assert_eq!(
            to_v6(3, 1, [0; 4]),
            Some((1, 0, [0; 4])),
            "host unreachable"
        );
        assert_eq!(to_v6(3, 13, [0; 4]), Some((1, 1, [0; 4])), "prohibited");
        assert_eq!(to_v6(3, 2, [0; 4]), Some((4, 1, [0, 0, 0, 6])), "protocol");
        assert_eq!(
            to_v6(3, 4, [0, 0, 0x05, 0xb4]),
            Some((2, 0, 1480u32.to_be_bytes()))
        );
        assert_eq!(
            to_v6(3, 4, [0, 0, 0x02, 0x40]),
            Some((2, 0, 1280u32.to_be_bytes())),
            "never below 1280"
        );
        assert_eq!(
            to_v6(3, 4, [0; 4]),
            Some((2, 0, 1280u32.to_be_bytes())),
            "an old router's 0"
        );
        assert_eq!(
            to_v6(11, 1, [0; 4]),
            Some((3, 1, [0; 4])),
            "reassembly time"
        );
        assert_eq!(to_v6(4, 0, [0; 4]), None, "source quench");
        assert_eq!(to_v6(12, 0, [0; 4]), None, "parameter problem");
    }
}
