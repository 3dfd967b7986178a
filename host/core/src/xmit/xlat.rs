//! Full NAT between the families: a client's IPv4 packet to an IPv6 real server and its
//! reply back, or the other way round. IPVS has no such method (DPVS users ask for it);
//! the header translation follows SIIT (RFC 7915): IPv4's TOS is IPv6's traffic class,
//! the TTL (one less) the hop limit, the protocol the next header, no extension header is
//! made; the other way the IPv4 header has DF set and ID 0 (the packet is not to be
//! fragmented on the way, as an IPv6 one never is; RFC 6864 lets such a datagram's ID be
//! 0), no options. The upper layer moves (20 bytes later, or earlier) and its checksum
//! follows the pseudo-header's change incrementally, so a bad one stays bad; a UDP
//! datagram without a checksum, which IPv6 does not allow, gets one.
//!
//! What the kernel would do for the packet afterwards, it cannot: a partial checksum is
//! completed first and a GSO super-packet is cut into segments by the datapath
//! ([`super::gso`]), as for a tunnel, since the new header is of another family than the
//! one the received offloads describe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Link, Packet, Refused, Sent};
use crate::model::Protocol;
use crate::wire::checksum;
use crate::wire::{
    ETHERNET_HEADER_LEN, EthernetFrame, EthernetProtocol, Ipv4Packet, Ipv6Packet, ipv4_field,
    ipv6_field, tcp_field, udp_field,
};

/// How much longer the packet gets from IPv4 to IPv6 (shorter the other way): the fixed
/// headers' difference.
pub(crate) const GROWTH: u32 = (ipv6_field::HEADER_LEN - ipv4_field::MIN_HEADER_LEN) as u32;

/// Rewrite the packet as one of the other family from `src` to `dst` (addresses and ports,
/// both of that family), one hop less, and send it on `link` whole.
pub(crate) fn translate(
    pkt: &mut Packet<'_>,
    (src, sport): (IpAddr, u16),
    (dst, dport): (IpAddr, u16),
    link: Link,
) -> Result<Sent, Refused> {
    if pkt.gso_size != 0 {
        return Err(Refused::TunnelGso);
    }
    let (l4_off, proto, csum, total) = (pkt.l4_off, pkt.proto, pkt.csum, pkt.total_len);
    let ip = pkt.ip();
    super::decrement_ttl(&mut ip[..l4_off])?;
    super::complete_csum(ip, l4_off, proto, csum);
    let l4_len = total - l4_off;
    let (old_addrs, new_len) = match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = Ipv4Packet::new_unchecked(&ip[..l4_off]);
            let mut old = [0u8; 8];
            old[..4].copy_from_slice(&h.src_addr().octets());
            old[4..].copy_from_slice(&h.dst_addr().octets());
            let (tos, ttl) = (h.dscp() << 2 | h.ecn(), h.hop_limit());
            let len = ipv6_field::HEADER_LEN + l4_len;
            let end = ETHERNET_HEADER_LEN + len;
            if end > pkt.buf.len() {
                return Err(Refused::NoRoom);
            }
            let at = ETHERNET_HEADER_LEN;
            pkt.buf
                .copy_within(at + l4_off..at + total, at + ipv6_field::HEADER_LEN);
            let l4_len = u16::try_from(l4_len).map_err(|_| Refused::TooBig)?;
            let hdr = &mut pkt.buf[at..at + ipv6_field::HEADER_LEN];
            ipv6_header(hdr, (tos, ttl), l4_len, proto.number(), (s, d));
            (OldAddrs::V4(old), len)
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = Ipv6Packet::new_unchecked(&ip[..l4_off]);
            let mut old = [0u8; 32];
            old[..16].copy_from_slice(&h.src_addr().octets());
            old[16..].copy_from_slice(&h.dst_addr().octets());
            let (tos, ttl) = (h.traffic_class(), h.hop_limit());
            let len = ipv4_field::MIN_HEADER_LEN + l4_len;
            let at = ETHERNET_HEADER_LEN;
            pkt.buf
                .copy_within(at + l4_off..at + total, at + ipv4_field::MIN_HEADER_LEN);
            let total = u16::try_from(len).map_err(|_| Refused::TooBig)?;
            let hdr = &mut pkt.buf[at..at + ipv4_field::MIN_HEADER_LEN];
            ipv4_header(hdr, (tos, ttl), total, proto.number(), (s, d));
            (OldAddrs::V6(old), len)
        }
        _ => return Err(Refused::Family),
    };
    let at = ETHERNET_HEADER_LEN + new_len - l4_len;
    let l4 = &mut pkt.buf[at..ETHERNET_HEADER_LEN + new_len];
    rewrite_l4(l4, proto, old_addrs.bytes(), (src, sport), (dst, dport));
    let frame = &mut pkt.buf[..ETHERNET_HEADER_LEN + new_len];
    EthernetFrame::new_unchecked(&mut *frame).set_ethertype(if dst.is_ipv6() {
        EthernetProtocol::Ipv6
    } else {
        EthernetProtocol::Ipv4
    });
    super::set_macs(frame, link);
    Ok(Sent::Whole {
        iface: link.iface,
        len: ETHERNET_HEADER_LEN + new_len,
    })
}

/// Write an IPv6 header (no extension header) into `hdr`: traffic class and hop limit,
/// payload length, next header, source and destination.
pub(crate) fn ipv6_header(
    hdr: &mut [u8],
    (tclass, hops): (u8, u8),
    payload_len: u16,
    next: u8,
    (src, dst): (Ipv6Addr, Ipv6Addr),
) {
    hdr.fill(0);
    let mut h = Ipv6Packet::new_unchecked(hdr);
    h.set_version(6);
    h.set_traffic_class(tclass);
    h.set_payload_len(payload_len);
    h.set_next_header(next.into());
    h.set_hop_limit(hops);
    h.set_src_addr(src);
    h.set_dst_addr(dst);
}

/// Write an IPv4 header without options into `hdr` as SIIT does (DF set, ID 0), its
/// checksum computed: TOS and TTL, total length, protocol, source and destination.
pub(crate) fn ipv4_header(
    hdr: &mut [u8],
    (tos, ttl): (u8, u8),
    total_len: u16,
    proto: u8,
    (src, dst): (Ipv4Addr, Ipv4Addr),
) {
    hdr.fill(0);
    let mut h = Ipv4Packet::new_unchecked(&mut *hdr);
    h.set_version(4);
    h.set_header_len(ipv4_field::MIN_HEADER_LEN as u8);
    h.set_dscp(tos >> 2);
    h.set_ecn(tos & 0b11);
    h.set_total_len(total_len);
    h.set_dont_frag(true);
    h.set_hop_limit(ttl);
    h.set_next_header(proto.into());
    h.set_src_addr(src);
    h.set_dst_addr(dst);
    let c = checksum::compute(hdr);
    Ipv4Packet::new_unchecked(&mut *hdr).set_checksum(c);
}

/// The translated packet's former addresses, as its pseudo-header summed them.
enum OldAddrs {
    V4([u8; 8]),
    V6([u8; 32]),
}

impl OldAddrs {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::V4(b) => b,
            Self::V6(b) => b,
        }
    }
}

/// The new ports, and the checksum for them and for the pseudo-header's new addresses
/// (its length and protocol sum the same in both families).
fn rewrite_l4(
    l4: &mut [u8],
    proto: Protocol,
    old_addrs: &[u8],
    (src, sport): (IpAddr, u16),
    (dst, dport): (IpAddr, u16),
) {
    let mut new_addrs = [0u8; 32];
    let n = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            new_addrs[..4].copy_from_slice(&s.octets());
            new_addrs[4..8].copy_from_slice(&d.octets());
            8
        }
        (s, d) => {
            new_addrs[..16].copy_from_slice(&v6(s).octets());
            new_addrs[16..].copy_from_slice(&v6(d).octets());
            32
        }
    };
    let field = match proto {
        Protocol::Tcp => tcp_field::CHECKSUM,
        Protocol::Udp => udp_field::CHECKSUM,
        Protocol::Sctp => {
            // No pseudo-header: the ports alone, the CRC32c again if they changed.
            let mut p = crate::wire::sctp::SctpPacket::new_unchecked(l4);
            if (p.src_port(), p.dst_port()) != (sport, dport) {
                p.set_src_port(sport);
                p.set_dst_port(dport);
                p.fill_checksum();
            }
            return;
        }
    };
    let old_ports = [l4[0], l4[1], l4[2], l4[3]];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    let old = u16::from_be_bytes([l4[field], l4[field + 1]]);
    let c = if proto == Protocol::Udp && old == 0 {
        // No checksum over IPv4: IPv6 needs one (RFC 8200 8.1), computed whole.
        l4[field..field + 2].fill(0);
        checksum::l4(src, dst, proto.number(), l4)
    } else {
        let c = checksum::update(old, old_addrs, &new_addrs[..n]);
        checksum::update(c, &old_ports, &l4[..4])
    };
    let c = if proto == Protocol::Udp && c == 0 {
        0xffff
    } else {
        c
    };
    l4[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// The path MTU to check a packet against before it changes family (`mtu` of the path
/// after it; 0: unknown).
pub(crate) fn mtu_before(mtu: u32, to_v6: bool) -> u32 {
    match (mtu, to_v6) {
        (0, _) => 0,
        (m, true) => m.saturating_sub(GROWTH).max(1),
        (m, false) => m + GROWTH,
    }
}
