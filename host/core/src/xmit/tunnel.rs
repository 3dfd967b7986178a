//! Tunnelling (`ip_vs_tunnel_xmit`, `ip_vs_tunnel_xmit_v6`, ipvsadm `-i`): the client's
//! packet, one hop less, goes whole inside a new IP packet of the real server's family
//! (IPv4 or IPv6 in either: IPVS lets a tunnel server be of the other family than its
//! service) from wvs to the real server, which takes it out (its
//! `tunl0`, a `fou` GUE port, or a GRE device holds the VIP) and answers the client
//! directly. As IPVS builds it:
//! - the outer header: DF copied from the inner packet (`pmtu_disc` 1), TOS from the inner
//!   one with ECN encapsulated as RFC 6040 (CE becomes ECT(0)), TTL from the inner packet
//!   after its decrement, protocol 4 (IPIP; 41 for an IPv6 packet inside), 17 (GUE) or 47
//!   (GRE); an IPv6 outer header takes the inner traffic class the same way, the hop limit
//!   from the inner packet, flow label 0;
//! - GUE (draft-ietf-intarea-gue, as Linux's `fou`): UDP from a source port spread by a hash
//!   of the connection (`udp_flow_src_port`, so the real server's receive queues share the
//!   load) to the configured port, a checksum only with `--tun-csum`, then a 4-byte header
//!   of version 0 whose protocol field says IPIP or IPv6;
//! - GRE (RFC 2784): 4 bytes (protocol 0x0800 or 0x86dd), 8 with `--tun-csum` (the C bit and
//!   a checksum over the GRE header and the packet).
//!
//! The inner packet's L4 checksum is completed in software when its sender left it partial:
//! the kernel cannot finish it inside a tunnel for a packet socket. For the same reason a
//! GSO super-packet is refused here whole ([`Refused::TunnelGso`]) and the datapath cuts it
//! into segments ([`super::gso`]), each of which comes back here as a plain packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Link, Packet, Refused, Sent, Target};
use crate::model::{TunCsum, TunKind, Tunnel};
use crate::wire::checksum;
use crate::wire::{ETHERNET_HEADER_LEN, Ipv4Packet, Ipv6Packet, ipv4_field, ipv6_field, udp_field};

/// UDP header and the GUE header (version 0, no options).
const GUE_LEN: usize = udp_field::HEADER_LEN + 4;
/// The GRE header without and with its checksum word.
const GRE_LEN: usize = 4;
const GRE_CSUM_LEN: usize = 8;
/// IP protocol numbers of the outer header, and of the inner packet (IPIP, IPv6).
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;
const PROTO_UDP: u8 = 17;
const PROTO_GRE: u8 = 47;
/// GRE's protocol types for IPv4 and IPv6, and its checksum-present bit.
const GRE_PROTO_IPV4: u16 = 0x0800;
const GRE_PROTO_IPV6: u16 = 0x86dd;
const GRE_FLAG_CSUM: u16 = 0x8000;
/// The range `udp_flow_src_port` spreads over (Linux's default `ip_local_port_range`).
const FLOW_PORT_MIN: u32 = 32768;
const FLOW_PORT_MAX: u32 = 60999;
/// ECN bits of the TOS byte, and the two code points RFC 6040 encapsulation uses.
const ECN_MASK: u8 = 0b11;
const ECN_CE: u8 = 0b11;
const ECN_ECT0: u8 = 0b10;

/// Bytes a tunnel adds before the inner packet (an IPv6 outer header when `v6`): what the
/// path MTU loses.
pub(crate) fn overhead(tun: &Tunnel, v6: bool) -> usize {
    let outer = if v6 {
        ipv6_field::HEADER_LEN
    } else {
        ipv4_field::MIN_HEADER_LEN
    };
    outer
        + match tun.kind {
            TunKind::Ipip => 0,
            TunKind::Gue => GUE_LEN,
            TunKind::Gre if tun.csum == TunCsum::Csum => GRE_CSUM_LEN,
            TunKind::Gre => GRE_LEN,
        }
}

/// A hash of a connection's addresses and ports (of its client's packets), the same for
/// each of them: the entropy a tunnel's UDP source port carries (`skb_get_hash` in
/// `udp_flow_src_port`), and the outer IPv4 ID of an IPv6 packet inside.
pub(crate) fn flow_hash(
    proto: crate::model::Protocol,
    (saddr, sport): (IpAddr, u16),
    (daddr, dport): (IpAddr, u16),
) -> u32 {
    use std::hash::BuildHasher;
    let h = foldhash::fast::FixedState::with_seed(0).hash_one((saddr, daddr, sport, dport, proto));
    (h ^ (h >> 32)) as u32
}

/// GUE's UDP source port for a connection hash (`udp_flow_src_port`).
pub(crate) fn flow_port(hash: u32) -> u16 {
    ((u64::from(hash) * u64::from(FLOW_PORT_MAX - FLOW_PORT_MIN)) >> 32) as u16
        + FLOW_PORT_MIN as u16
}

/// The outer TOS (traffic class) for an inner one: same DSCP, ECN encapsulated
/// (`INET_ECN_encapsulate`).
fn outer_tos(inner: u8) -> u8 {
    let ecn = if inner & ECN_MASK == ECN_CE {
        ECN_ECT0
    } else {
        inner & ECN_MASK
    };
    (inner & !ECN_MASK) | ecn
}

/// What the outer IP header takes from the inner one (and its length), and what the
/// encapsulation says the inner packet is.
struct Outer {
    tos: u8,
    ttl: u8,
    dont_frag: bool,
    ident: u16,
    len: u16,
    /// The inner packet's protocol number: IPIP (4) or IPv6 (41).
    inner: u8,
}

/// The tunnel's two ends, of one family: wvs's address on the route and the server's.
#[derive(Clone, Copy)]
enum Ends {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// A client's packet to its real server through the tunnel, whose outer header is of the
/// real server's family: IPv4 or IPv6 inside either (as IPVS allows a tunnel server of the
/// other family than its service's).
pub fn to_real(
    pkt: &mut Packet<'_>,
    t: &Target,
    tun: &Tunnel,
    link: Link,
) -> Result<Sent, Refused> {
    let ends = match (t.src, t.daddr) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ends::V4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ends::V6(s, d),
        _ => return Err(Refused::Family),
    };
    let outer_v6 = matches!(ends, Ends::V6(..));
    let over = overhead(tun, outer_v6);
    let fragment = needs_fragments(pkt, t, over, outer_v6)?;
    let (l4_off, proto, csum) = (pkt.l4_off, pkt.proto, pkt.csum);
    let inner_v6 = pkt.is_v6();
    let inner_len = pkt.total_len;
    let end = ETHERNET_HEADER_LEN + over + inner_len;
    let outer_len = u16::try_from(over + inner_len).map_err(|_| Refused::NoRoom)?;
    if end > pkt.buf.len() {
        return Err(Refused::NoRoom);
    }
    let ip = pkt.ip();
    super::decrement_ttl(&mut ip[..l4_off])?;
    super::complete_csum(ip, l4_off, proto, csum);
    let outer = if inner_v6 {
        let inner = Ipv6Packet::new_unchecked(&ip[..l4_off]);
        // No DF from an IPv6 packet; the IPv4 ID spreads by connection.
        Outer {
            tos: outer_tos(inner.traffic_class()),
            ttl: inner.hop_limit(),
            dont_frag: false,
            ident: t.flow_hash as u16,
            len: outer_len,
            inner: PROTO_IPV6,
        }
    } else {
        let inner = Ipv4Packet::new_unchecked(&ip[..l4_off]);
        Outer {
            tos: outer_tos(inner.dscp() << 2 | inner.ecn()),
            ttl: inner.hop_limit(),
            dont_frag: inner.dont_frag() && t.pmtu_disc,
            ident: inner.ident(),
            len: outer_len,
            inner: PROTO_IPIP,
        }
    };
    pkt.buf.copy_within(
        ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + inner_len,
        ETHERNET_HEADER_LEN + over,
    );
    let frame = &mut pkt.buf[..end];
    let outer_ip = if outer_v6 {
        ipv6_field::HEADER_LEN
    } else {
        ipv4_field::MIN_HEADER_LEN
    };
    let (hdr, encap) = frame[ETHERNET_HEADER_LEN..].split_at_mut(outer_ip);
    write_outer_ip(hdr, ends, tun, &outer);
    write_encap(encap, ends, t.flow_hash, tun, &outer);
    super::set_macs(frame, link);
    crate::wire::EthernetFrame::new_unchecked(&mut *frame).set_ethertype(if outer_v6 {
        crate::wire::EthernetProtocol::Ipv6
    } else {
        crate::wire::EthernetProtocol::Ipv4
    });
    if fragment {
        return Ok(Sent::Fragment {
            iface: link.iface,
            len: end,
            mtu: t.mtu,
        });
    }
    Ok(Sent::Whole {
        iface: link.iface,
        len: end,
    })
}

/// Whether the packet, encapsulated with `over` bytes, goes out in fragments: the path's
/// MTU less the tunnel's overhead (IPVS: `dst_mtu - sizeof(iphdr)` ...) is too little, and
/// it has no DF or `pmtu_disc` is off (`ensure_mtu_is_adequate` lets a tunnel's packet
/// through then). A super-packet cannot be: it is cut first (`TunnelGso`), or refused.
/// Over IPv6 (`outer_v6`) a path whose MTU less the overhead is below 1280 takes nothing
/// (`__ip_vs_get_out_rt_v6`), and wvs does not fragment the outer packet: what IPVS would
/// send in IPv6 fragments (an IPv4 packet without DF) is refused as too big.
fn needs_fragments(
    pkt: &Packet<'_>,
    t: &Target,
    over: usize,
    outer_v6: bool,
) -> Result<bool, Refused> {
    let inner_mtu = t.mtu.saturating_sub(over as u32);
    if outer_v6 && t.mtu != 0 && inner_mtu < ipv6_field::MIN_MTU as u32 {
        return Err(Refused::TooBig);
    }
    let fragment = match super::check(pkt, inner_mtu.max(u32::from(t.mtu != 0))) {
        Ok(()) => false,
        Err(Refused::TooBig) => true,
        Err(Refused::FragNeeded { .. }) if !t.pmtu_disc && !pkt.is_v6() => true,
        Err(e) => return Err(e),
    };
    if fragment && outer_v6 {
        return Err(Refused::TooBig);
    }
    if pkt.gso_size != 0 {
        return Err(if fragment {
            Refused::TooBig
        } else {
            Refused::TunnelGso
        });
    }
    Ok(fragment)
}

/// The outer IP header of `ends`' family, from wvs's address on the route to the real
/// server: IPv6's with the inner traffic class and hop limit, flow label 0.
fn write_outer_ip(hdr: &mut [u8], ends: Ends, tun: &Tunnel, o: &Outer) {
    let next = match tun.kind {
        TunKind::Ipip => o.inner,
        TunKind::Gue => PROTO_UDP,
        TunKind::Gre => PROTO_GRE,
    };
    hdr.fill(0);
    match ends {
        Ends::V4(src, dst) => {
            let mut outer = Ipv4Packet::new_unchecked(&mut *hdr);
            outer.set_version(4);
            outer.set_header_len(ipv4_field::MIN_HEADER_LEN as u8);
            outer.set_dscp(o.tos >> 2);
            outer.set_ecn(o.tos & ECN_MASK);
            outer.set_total_len(o.len);
            outer.set_ident(o.ident);
            outer.set_dont_frag(o.dont_frag);
            outer.set_hop_limit(o.ttl);
            outer.set_next_header(next.into());
            outer.set_src_addr(src);
            outer.set_dst_addr(dst);
            let c = checksum::compute(&hdr[..]);
            Ipv4Packet::new_unchecked(&mut *hdr).set_checksum(c);
        }
        Ends::V6(src, dst) => {
            let mut outer = Ipv6Packet::new_unchecked(&mut *hdr);
            outer.set_version(6);
            outer.set_traffic_class(o.tos);
            outer.set_payload_len(o.len - ipv6_field::HEADER_LEN as u16);
            outer.set_next_header(next.into());
            outer.set_hop_limit(o.ttl);
            outer.set_src_addr(src);
            outer.set_dst_addr(dst);
        }
    }
}

/// The encapsulation after the outer IP header (nothing for IPIP; GUE's UDP and GUE
/// headers; GRE's), over `o.len` bytes in all, with its checksum if asked (GUE's over the
/// outer family's pseudo-header; without one, 0 over IPv6 too, as IPVS sends it).
fn write_encap(encap: &mut [u8], ends: Ends, flow_hash: u32, tun: &Tunnel, o: &Outer) {
    match tun.kind {
        TunKind::Ipip => {}
        TunKind::Gue => {
            let udp_len = encap.len() as u16;
            let (udp, rest) = encap.split_at_mut(udp_field::HEADER_LEN);
            udp[0..2].copy_from_slice(&flow_port(flow_hash).to_be_bytes());
            udp[2..4].copy_from_slice(&tun.port.to_be_bytes());
            udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
            udp[6..8].fill(0);
            // Version 0, C 0, no options; the protocol of what follows; no flags.
            rest[..4].copy_from_slice(&[0, o.inner, 0, 0]);
            if tun.csum != TunCsum::None {
                let mut c = match ends {
                    Ends::V4(s, d) => checksum::l4_v4(s.octets(), d.octets(), PROTO_UDP, encap),
                    Ends::V6(s, d) => checksum::l4_v6(s.octets(), d.octets(), PROTO_UDP, encap),
                };
                if c == 0 {
                    c = 0xffff;
                }
                encap[udp_field::CHECKSUM..udp_field::CHECKSUM + 2]
                    .copy_from_slice(&c.to_be_bytes());
            }
        }
        TunKind::Gre => {
            let csum = tun.csum == TunCsum::Csum;
            let flags = if csum { GRE_FLAG_CSUM } else { 0 };
            let proto = if o.inner == PROTO_IPV6 {
                GRE_PROTO_IPV6
            } else {
                GRE_PROTO_IPV4
            };
            encap[0..2].copy_from_slice(&flags.to_be_bytes());
            encap[2..4].copy_from_slice(&proto.to_be_bytes());
            if csum {
                encap[4..8].fill(0);
                let c = checksum::compute(encap);
                encap[4..6].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overheads_as_ipvs_counts_them() {
        let t = |kind, csum| Tunnel {
            kind,
            port: if kind == TunKind::Gue { 6080 } else { 0 },
            csum,
        };
        assert_eq!(overhead(&t(TunKind::Ipip, TunCsum::None), false), 20);
        assert_eq!(overhead(&t(TunKind::Gue, TunCsum::None), false), 32);
        assert_eq!(overhead(&t(TunKind::Gue, TunCsum::Csum), false), 32);
        assert_eq!(overhead(&t(TunKind::Gre, TunCsum::None), false), 24);
        assert_eq!(overhead(&t(TunKind::Gre, TunCsum::Csum), false), 28);
        // IPv6 outside: `dst_mtu - sizeof(ipv6hdr)` and the rest.
        assert_eq!(overhead(&t(TunKind::Ipip, TunCsum::None), true), 40);
        assert_eq!(overhead(&t(TunKind::Gue, TunCsum::None), true), 52);
        assert_eq!(overhead(&t(TunKind::Gre, TunCsum::Csum), true), 48);
    }

    #[test]
    fn flow_ports_stay_in_the_ephemeral_range() {
        for h in [0, 1, 0x8000_0000, u32::MAX] {
            let p = u32::from(flow_port(h));
            assert!((FLOW_PORT_MIN..=FLOW_PORT_MAX).contains(&p), "{h}: {p}");
        }
        assert_ne!(flow_port(0x1234_5678), flow_port(0x9abc_def0));
    }

    #[test]
    fn ecn_is_encapsulated_as_rfc_6040() {
        assert_eq!(outer_tos(0xb8), 0xb8);
        assert_eq!(outer_tos(0xb9), 0xb9);
        assert_eq!(outer_tos(0xba), 0xba);
        assert_eq!(outer_tos(0xbb), 0xba);
    }
}
