//! Tunnelling (`ip_vs_tunnel_xmit`, ipvsadm `-i`): the client's packet, one hop less, goes
//! whole inside a new IPv4 packet from wvs to the real server, which takes it out (its
//! `tunl0`, a `fou` GUE port, or a GRE device holds the VIP) and answers the client
//! directly. As IPVS builds it:
//! - the outer header: DF copied from the inner packet (`pmtu_disc` 1), TOS from the inner
//!   one with ECN encapsulated as RFC 6040 (CE becomes ECT(0)), TTL from the inner packet
//!   after its decrement, protocol 4 (IPIP), 17 (GUE) or 47 (GRE);
//! - GUE (draft-ietf-intarea-gue, as Linux's `fou`): UDP from a source port spread by a hash
//!   of the connection (`udp_flow_src_port`, so the real server's receive queues share the
//!   load) to the configured port, a checksum only with `--tun-csum`, then a 4-byte header
//!   of version 0 whose protocol field says IPIP;
//! - GRE (RFC 2784): 4 bytes (protocol 0x0800), 8 with `--tun-csum` (the C bit and a
//!   checksum over the GRE header and the packet).
//!
//! The inner packet's L4 checksum is completed in software when its sender left it partial:
//! the kernel cannot finish it inside a tunnel for a packet socket. For the same reason a
//! GSO super-packet is refused here whole ([`Refused::TunnelGso`]) and the datapath cuts it
//! into segments ([`super::gso`]), each of which comes back here as a plain packet.

use std::net::{IpAddr, Ipv4Addr};

use super::{Link, Packet, Refused, Sent, Target};
use crate::model::{TunCsum, TunKind, Tunnel};
use crate::wire::checksum;
use crate::wire::{ETHERNET_HEADER_LEN, Ipv4Packet, ipv4_field, udp_field};

/// The outer IPv4 header.
const OUTER_IP_LEN: usize = ipv4_field::MIN_HEADER_LEN;
/// UDP header and the GUE header (version 0, no options).
const GUE_LEN: usize = udp_field::HEADER_LEN + 4;
/// The GRE header without and with its checksum word.
const GRE_LEN: usize = 4;
const GRE_CSUM_LEN: usize = 8;
/// IP protocol numbers of the outer header.
const PROTO_IPIP: u8 = 4;
const PROTO_UDP: u8 = 17;
const PROTO_GRE: u8 = 47;
/// GRE's protocol type for IPv4, and its checksum-present bit.
const GRE_PROTO_IPV4: u16 = 0x0800;
const GRE_FLAG_CSUM: u16 = 0x8000;
/// The range `udp_flow_src_port` spreads over (Linux's default `ip_local_port_range`).
const FLOW_PORT_MIN: u32 = 32768;
const FLOW_PORT_MAX: u32 = 60999;
/// ECN bits of the TOS byte, and the two code points RFC 6040 encapsulation uses.
const ECN_MASK: u8 = 0b11;
const ECN_CE: u8 = 0b11;
const ECN_ECT0: u8 = 0b10;

/// Bytes a tunnel adds before the inner packet: what the path MTU loses.
pub(crate) fn overhead(tun: &Tunnel) -> usize {
    OUTER_IP_LEN
        + match tun.kind {
            TunKind::Ipip => 0,
            TunKind::Gue => GUE_LEN,
            TunKind::Gre if tun.csum == TunCsum::Csum => GRE_CSUM_LEN,
            TunKind::Gre => GRE_LEN,
        }
}

/// GUE's UDP source port for a connection hash (`udp_flow_src_port`).
pub(crate) fn flow_port(hash: u32) -> u16 {
    ((u64::from(hash) * u64::from(FLOW_PORT_MAX - FLOW_PORT_MIN)) >> 32) as u16
        + FLOW_PORT_MIN as u16
}

/// The outer TOS for an inner one: same DSCP, ECN encapsulated (`INET_ECN_encapsulate`).
fn outer_tos(inner: u8) -> u8 {
    let ecn = if inner & ECN_MASK == ECN_CE {
        ECN_ECT0
    } else {
        inner & ECN_MASK
    };
    (inner & !ECN_MASK) | ecn
}

/// What the outer IP header takes from the inner one (and its length).
struct Outer {
    tos: u8,
    ttl: u8,
    dont_frag: bool,
    ident: u16,
    len: u16,
}

/// A client's packet to its real server through the tunnel.
pub fn to_real(
    pkt: &mut Packet<'_>,
    t: &Target,
    tun: &Tunnel,
    link: Link,
) -> Result<Sent, Refused> {
    // IPv4 outside and inside until the IPv6 tunnels come (issue 32).
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (t.src, t.daddr) else {
        return Err(Refused::Family);
    };
    if pkt.is_v6() {
        return Err(Refused::Family);
    }
    let over = overhead(tun);
    let fragment = needs_fragments(pkt, t, over)?;
    let (ihl, proto, csum) = (pkt.l4_off, pkt.proto, pkt.csum);
    let inner_len = pkt.total_len;
    let end = ETHERNET_HEADER_LEN + over + inner_len;
    let outer_len = u16::try_from(over + inner_len).map_err(|_| Refused::NoRoom)?;
    if end > pkt.buf.len() {
        return Err(Refused::NoRoom);
    }
    let ip = pkt.ip();
    super::decrement_ttl(&mut ip[..ihl])?;
    super::complete_csum(ip, ihl, proto, csum);
    let outer = {
        let inner = Ipv4Packet::new_unchecked(&ip[..ihl]);
        Outer {
            tos: outer_tos(inner.dscp() << 2 | inner.ecn()),
            ttl: inner.hop_limit(),
            dont_frag: inner.dont_frag() && t.pmtu_disc,
            ident: inner.ident(),
            len: outer_len,
        }
    };
    pkt.buf.copy_within(
        ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + inner_len,
        ETHERNET_HEADER_LEN + over,
    );
    let frame = &mut pkt.buf[..end];
    let (hdr, encap) = frame[ETHERNET_HEADER_LEN..].split_at_mut(OUTER_IP_LEN);
    write_outer_ip(hdr, (src, dst), tun, &outer);
    write_encap(encap, (src, dst), t.flow_hash, tun, inner_len);
    super::set_macs(frame, link);
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
fn needs_fragments(pkt: &Packet<'_>, t: &Target, over: usize) -> Result<bool, Refused> {
    let fragment = match super::check(
        pkt,
        t.mtu.saturating_sub(over as u32).max(u32::from(t.mtu != 0)),
    ) {
        Ok(()) => false,
        Err(Refused::TooBig) => true,
        Err(Refused::FragNeeded { .. }) if !t.pmtu_disc => true,
        Err(e) => return Err(e),
    };
    if pkt.gso_size != 0 {
        return Err(if fragment {
            Refused::TooBig
        } else {
            Refused::TunnelGso
        });
    }
    Ok(fragment)
}

/// The outer IPv4 header, from wvs's address on the route to the real server.
fn write_outer_ip(hdr: &mut [u8], (src, dst): (Ipv4Addr, Ipv4Addr), tun: &Tunnel, o: &Outer) {
    let next = match tun.kind {
        TunKind::Ipip => PROTO_IPIP,
        TunKind::Gue => PROTO_UDP,
        TunKind::Gre => PROTO_GRE,
    };
    hdr.fill(0);
    let mut outer = Ipv4Packet::new_unchecked(&mut *hdr);
    outer.set_version(4);
    outer.set_header_len(OUTER_IP_LEN as u8);
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

/// The encapsulation after the outer IP header (nothing for IPIP; GUE's UDP and GUE
/// headers; GRE's), over `inner_len` bytes of inner packet, with its checksum if asked.
fn write_encap(
    encap: &mut [u8],
    (src, dst): (Ipv4Addr, Ipv4Addr),
    flow_hash: u32,
    tun: &Tunnel,
    inner_len: usize,
) {
    match tun.kind {
        TunKind::Ipip => {}
        TunKind::Gue => {
            let udp_len = (GUE_LEN + inner_len) as u16;
            let (udp, rest) = encap.split_at_mut(udp_field::HEADER_LEN);
            udp[0..2].copy_from_slice(&flow_port(flow_hash).to_be_bytes());
            udp[2..4].copy_from_slice(&tun.port.to_be_bytes());
            udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
            udp[6..8].fill(0);
            // Version 0, C 0, no options; the protocol of what follows; no flags.
            rest[..4].copy_from_slice(&[0, PROTO_IPIP, 0, 0]);
            if tun.csum != TunCsum::None {
                let mut c = checksum::l4_v4(src.octets(), dst.octets(), PROTO_UDP, encap);
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
            encap[0..2].copy_from_slice(&flags.to_be_bytes());
            encap[2..4].copy_from_slice(&GRE_PROTO_IPV4.to_be_bytes());
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
        assert_eq!(overhead(&t(TunKind::Ipip, TunCsum::None)), 20);
        assert_eq!(overhead(&t(TunKind::Gue, TunCsum::None)), 32);
        assert_eq!(overhead(&t(TunKind::Gue, TunCsum::Csum)), 32);
        assert_eq!(overhead(&t(TunKind::Gre, TunCsum::None)), 24);
        assert_eq!(overhead(&t(TunKind::Gre, TunCsum::Csum)), 28);
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
