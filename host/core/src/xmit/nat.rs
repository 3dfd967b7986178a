//! NAT (IPVS "masquerading"): in-place header rewrites with incremental checksum updates.
//!
//! Inbound (`ip_vs_nat_xmit`): the destination becomes the real server. Outbound
//! (`ip_vs_out` / `handle_response`): the source becomes the virtual service again. Every
//! rewrite adjusts the IPv4 header checksum and the TCP/UDP checksum incrementally
//! (RFC 1624), so the cost does not grow with the payload and an already bad checksum stays
//! bad instead of being "repaired".

use std::net::Ipv4Addr;

use super::{Link, Packet, Refused, Sent, Target};
use crate::model::Protocol;
use crate::wire::checksum::{self, CsumMode};
use crate::wire::{Ipv4Packet, TcpPacket, UdpPacket};

/// A client's packet to its real server (`ip_vs_nat_xmit`): one hop less, the destination
/// becomes the real server.
pub fn to_real(pkt: &mut Packet<'_>, t: &Target, link: Link) -> Result<Sent, Refused> {
    super::check(pkt, t.mtu)?;
    let (ihl, proto, csum) = (pkt.ihl, pkt.proto, pkt.csum);
    let ip = pkt.ip();
    super::decrement_ttl(&mut ip[..ihl])?;
    rewrite_v4(ip, ihl, proto, Rewrite::Dst, t.daddr, t.dport, csum);
    super::set_macs(pkt.buf, link);
    Ok(Sent::InPlace { iface: link.iface })
}

/// A real server's reply to the client (`handle_response`): one hop less (the kernel
/// forwards replies), the source becomes the virtual service.
pub(crate) fn to_client(
    pkt: &mut Packet<'_>,
    vaddr: Ipv4Addr,
    vport: u16,
    link: Link,
) -> Result<Sent, Refused> {
    let (ihl, proto, csum) = (pkt.ihl, pkt.proto, pkt.csum);
    let ip = pkt.ip();
    super::decrement_ttl(&mut ip[..ihl])?;
    rewrite_v4(ip, ihl, proto, Rewrite::Src, vaddr, vport, csum);
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
            let c = l4_update(tcp.checksum(), &old_a, &new_a, old_port, port, mode);
            tcp.set_checksum(c);
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
            // A zero UDP checksum means "none" over IPv4 and stays zero.
            if old_c != 0 || mode == CsumMode::Partial {
                let mut c = l4_update(old_c, &old_a, &new_a, old_port, port, mode);
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
