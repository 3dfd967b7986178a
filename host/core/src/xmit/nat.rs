//! NAT (IPVS "masquerading"): in-place header rewrites with incremental checksum updates.
//!
//! Inbound (`ip_vs_nat_xmit`): the destination becomes the real server. Outbound
//! (`ip_vs_out` / `handle_response`): the source becomes the virtual service again. Every
//! rewrite adjusts the IPv4 header checksum and the TCP/UDP checksum incrementally
//! (RFC 1624), so the cost does not grow with the payload and an already bad checksum stays
//! bad instead of being "repaired".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Link, Packet, Refused, Sent, Target};
use crate::model::Protocol;
use crate::wire::checksum::{self, CsumMode};
use crate::wire::sctp::SctpPacket;
use crate::wire::{Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

/// A client's packet to its real server (`ip_vs_nat_xmit`): one hop less, the destination
/// becomes the real server.
pub fn to_real(pkt: &mut Packet<'_>, t: &Target, link: Link) -> Result<Sent, Refused> {
    super::check(pkt, t.mtu)?;
    let (l4_off, proto, csum) = (pkt.l4_off, pkt.proto, pkt.csum);
    let ip = pkt.ip();
    same_family(ip, t.daddr)?;
    super::decrement_ttl(&mut ip[..l4_off])?;
    rewrite(ip, l4_off, proto, Rewrite::Dst, t.daddr, t.dport, csum);
    super::set_macs(pkt.buf, link);
    Ok(Sent::InPlace { iface: link.iface })
}

/// A real server's reply to the client (`handle_response`): one hop less (the kernel
/// forwards replies), the source becomes the virtual service.
pub(crate) fn to_client(
    pkt: &mut Packet<'_>,
    vaddr: IpAddr,
    vport: u16,
    link: Link,
) -> Result<Sent, Refused> {
    let (l4_off, proto, csum) = (pkt.l4_off, pkt.proto, pkt.csum);
    let ip = pkt.ip();
    same_family(ip, vaddr)?;
    super::decrement_ttl(&mut ip[..l4_off])?;
    rewrite(ip, l4_off, proto, Rewrite::Src, vaddr, vport, csum);
    super::set_macs(pkt.buf, link);
    Ok(Sent::InPlace { iface: link.iface })
}

/// Which endpoint of the packet is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// The destination (client -> real server).
    Dst,
    /// The source (real server -> client).
    Src,
}

/// Whether the IP packet `ip` is of `addr`'s family: an address of one family cannot go
/// into a header of the other.
pub(crate) fn same_family(ip: &[u8], addr: IpAddr) -> Result<(), Refused> {
    let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
    if v6 == addr.is_ipv6() {
        Ok(())
    } else {
        Err(Refused::Family)
    }
}

/// Rewrite one endpoint of a TCP/UDP packet of `addr`'s family (the caller checked that
/// the packet is of it: [`same_family`]), by [`rewrite_v4`] or [`rewrite_v6`].
pub(crate) fn rewrite(
    ip: &mut [u8],
    l4_off: usize,
    proto: Protocol,
    which: Rewrite,
    addr: IpAddr,
    port: u16,
    mode: CsumMode,
) {
    match addr {
        IpAddr::V4(a) => rewrite_v4(ip, l4_off, proto, which, a, port, mode),
        IpAddr::V6(a) => rewrite_v6(ip, l4_off, proto, which, a, port, mode),
    }
}

/// Rewrite one endpoint of an IPv4 TCP/UDP packet.
///
/// `ip` is the IPv4 packet (header and payload up to its total length), `ihl` its header
/// length in bytes. The caller has checked that `ip` holds a whole IPv4 header and at least
/// the minimal header of `proto` after it; then nothing here can panic.
pub fn rewrite_v4(
    ip: &mut [u8],
    ihl: usize,
    proto: Protocol,
    which: Rewrite,
    addr: Ipv4Addr,
    port: u16,
    mode: CsumMode,
) {
    let (hdr, l4) = ip.split_at_mut(ihl);
    let mut iph = Ipv4Packet::new_unchecked(hdr);
    let old_addr = match which {
        Rewrite::Dst => iph.dst_addr(),
        Rewrite::Src => iph.src_addr(),
    };
    let (old_a, new_a) = (old_addr.octets(), addr.octets());
    match which {
        Rewrite::Dst => iph.set_dst_addr(addr),
        Rewrite::Src => iph.set_src_addr(addr),
    }
    iph.set_checksum(checksum::update(iph.checksum(), &old_a, &new_a));
    rewrite_l4(l4, proto, which, (&old_a, &new_a), port, mode);
}

/// Rewrite one endpoint of an IPv6 TCP/UDP packet (NAT66): the address, and the port and
/// checksum of the upper layer at `l4_off` (IPv6 has no header checksum; the address is in
/// the upper layer's pseudo-header).
///
/// `ip` is the IPv6 packet up to its total length; the caller has checked that it holds
/// the fixed header and at least the minimal header of `proto` at `l4_off`.
pub fn rewrite_v6(
    ip: &mut [u8],
    l4_off: usize,
    proto: Protocol,
    which: Rewrite,
    addr: Ipv6Addr,
    port: u16,
    mode: CsumMode,
) {
    let (hdr, rest) = ip.split_at_mut(l4_off);
    let mut iph = Ipv6Packet::new_unchecked(hdr);
    let old_addr = match which {
        Rewrite::Dst => iph.dst_addr(),
        Rewrite::Src => iph.src_addr(),
    };
    match which {
        Rewrite::Dst => iph.set_dst_addr(addr),
        Rewrite::Src => iph.set_src_addr(addr),
    }
    rewrite_l4(
        rest,
        proto,
        which,
        (&old_addr.octets(), &addr.octets()),
        port,
        mode,
    );
}

/// Rewrite the port of one endpoint of a TCP, UDP or SCTP header and adjust its checksum for
/// the port and for the pseudo-header's address change `(old, new)`.
fn rewrite_l4(
    l4: &mut [u8],
    proto: Protocol,
    which: Rewrite,
    (old_a, new_a): (&[u8], &[u8]),
    port: u16,
    mode: CsumMode,
) {
    match proto {
        Protocol::Tcp => {
            let mut tcp = TcpPacket::new_unchecked(l4);
            let old_port = match which {
                Rewrite::Dst => tcp.dst_port(),
                Rewrite::Src => tcp.src_port(),
            };
            match which {
                Rewrite::Dst => tcp.set_dst_port(port),
                Rewrite::Src => tcp.set_src_port(port),
            }
            let c = l4_update(tcp.checksum(), old_a, new_a, old_port, port, mode);
            tcp.set_checksum(c);
        }
        Protocol::Sctp => {
            // CRC32c covers no pseudo-header: only a changed port asks for it again, in
            // full (`sctp_{s,d}nat_handler`). A checksum left to the device was completed
            // when the frame came in.
            let mut p = SctpPacket::new_unchecked(l4);
            let old_port = match which {
                Rewrite::Dst => p.dst_port(),
                Rewrite::Src => p.src_port(),
            };
            if old_port != port {
                match which {
                    Rewrite::Dst => p.set_dst_port(port),
                    Rewrite::Src => p.set_src_port(port),
                }
                p.fill_checksum();
            }
        }
        Protocol::Udp => {
            let mut udp = UdpPacket::new_unchecked(l4);
            let old_port = match which {
                Rewrite::Dst => udp.dst_port(),
                Rewrite::Src => udp.src_port(),
            };
            match which {
                Rewrite::Dst => udp.set_dst_port(port),
                Rewrite::Src => udp.set_src_port(port),
            }
            let old_c = udp.checksum();
            // A zero UDP checksum means "none" over IPv4 and stays zero (over IPv6 it is
            // invalid, and the receiver drops it as it would have).
            if old_c != 0 || mode == CsumMode::Partial {
                let mut c = l4_update(old_c, old_a, new_a, old_port, port, mode);
                if c == 0 && mode == CsumMode::Complete {
                    c = 0xffff;
                }
                udp.set_checksum(c);
            }
        }
    }
}

/// Adjust a TCP/UDP checksum for an address (pseudo-header) and port change.
#[inline]
fn l4_update(
    check: u16,
    old_a: &[u8],
    new_a: &[u8],
    old_p: u16,
    new_p: u16,
    mode: CsumMode,
) -> u16 {
    match mode {
        CsumMode::Complete => {
            let c = checksum::update(check, old_a, new_a);
            checksum::update(c, &old_p.to_be_bytes(), &new_p.to_be_bytes())
        }
        // Ports are payload to the pending checksum computation: only the pseudo-header
        // address goes into the partial sum.
        CsumMode::Partial => checksum::update_partial(check, old_a, new_a),
    }
}

/// Decrement the IPv4 TTL as a router does, or return `false` if it would reach zero.
pub(crate) fn decrement_ttl_v4(hdr: &mut [u8]) -> bool {
    let mut iph = Ipv4Packet::new_unchecked(hdr);
    let ttl = iph.hop_limit();
    if ttl <= 1 {
        return false;
    }
    // TTL shares a 16-bit word with the protocol field.
    let proto = u8::from(iph.next_header());
    iph.set_hop_limit(ttl - 1);
    iph.set_checksum(checksum::update(
        iph.checksum(),
        &[ttl, proto],
        &[ttl - 1, proto],
    ));
    true
}

/// Decrement the IPv6 hop limit as a router does, or return `false` if it would reach zero
/// (IPv6 has no header checksum to adjust).
pub(crate) fn decrement_hop_limit_v6(hdr: &mut [u8]) -> bool {
    let mut iph = Ipv6Packet::new_unchecked(hdr);
    let hops = iph.hop_limit();
    if hops <= 1 {
        return false;
    }
    iph.set_hop_limit(hops - 1);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// An IPv6 packet (no Ethernet header) with correct checksums, built by etherparse.
    fn packet6(
        proto: Protocol,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        ports: (u16, u16),
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ipv6(src.octets(), dst.octets(), 64);
        let mut out = Vec::new();
        match proto {
            Protocol::Tcp => b
                .tcp(ports.0, ports.1, 1, 64000)
                .syn()
                .write(&mut out, payload),
            Protocol::Udp => b.udp(ports.0, ports.1).write(&mut out, payload),
            Protocol::Sctp => unreachable!("etherparse writes no SCTP"),
        }
        .unwrap();
        out
    }

    fn l4_ok(ip: &[u8], proto: Protocol) -> bool {
        let p = Ipv6Packet::new_checked(ip).unwrap();
        let n = proto.number();
        checksum::l4_v6(p.src_addr().octets(), p.dst_addr().octets(), n, &ip[40..]) == 0
    }

    proptest! {
        /// NAT66 both ways leaves a packet whose checksum verifies, with the endpoint
        /// rewritten and nothing else.
        #[test]
        fn nat66_keeps_the_checksum_right(
            tcp in any::<bool>(),
            a in any::<[u8; 16]>(), b in any::<[u8; 16]>(), r in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(), rport in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let proto = if tcp { Protocol::Tcp } else { Protocol::Udp };
            let (a, b, r) = (Ipv6Addr::from(a), Ipv6Addr::from(b), Ipv6Addr::from(r));
            let mut ip = packet6(proto, a, b, ports, &payload);
            prop_assert!(l4_ok(&ip, proto));
            rewrite_v6(&mut ip, 40, proto, Rewrite::Dst, r, rport, CsumMode::Complete);
            let p = Ipv6Packet::new_checked(&ip[..]).unwrap();
            prop_assert_eq!((p.src_addr(), p.dst_addr()), (a, r));
            prop_assert_eq!(u16::from_be_bytes([ip[42], ip[43]]), rport);
            prop_assert!(l4_ok(&ip, proto));
            rewrite_v6(&mut ip, 40, proto, Rewrite::Src, b, 80, CsumMode::Complete);
            prop_assert_eq!(Ipv6Packet::new_checked(&ip[..]).unwrap().src_addr(), b);
            prop_assert!(l4_ok(&ip, proto));
            // What etherparse writes for the rewritten endpoints, but for the checksum
            // (an incremental update may give 0xffff where a sum gives 0, both right).
            let mut want = packet6(proto, b, r, (80, rport), &payload);
            prop_assert_eq!(want.len(), ip.len());
            let field = 40 + if tcp { 16 } else { 6 };
            want[field..field + 2].copy_from_slice(&ip[field..field + 2]);
            prop_assert_eq!(want, ip);
        }
    }

    #[test]
    fn the_hop_limit_goes_down_to_one_and_no_further() {
        let mut ip = packet6(
            Protocol::Udp,
            v6("2001:db8::2"),
            v6("2001:db8:100::1"),
            (40000, 53),
            b"q",
        );
        ip[7] = 2;
        assert!(decrement_hop_limit_v6(&mut ip[..40]));
        assert_eq!(ip[7], 1);
        assert!(!decrement_hop_limit_v6(&mut ip[..40]));
        assert_eq!(ip[7], 1);
    }
}
