//! NAT (IPVS "masquerading"): in-place header rewrites with incremental checksum updates.
//!
//! Inbound (`ip_vs_nat_xmit`): the destination becomes the real server. Outbound
//! (`ip_vs_out` / `handle_response`): the source becomes the virtual service again. Every
//! rewrite adjusts the IPv4 header checksum and the TCP/UDP checksum incrementally
//! (RFC 1624), so the cost does not grow with the payload and an already bad checksum stays
//! bad instead of being "repaired".

use std::net::Ipv4Addr;

use crate::service::Protocol;
use crate::wire::checksum;
use crate::wire::{Ipv4Packet, TcpPacket, UdpPacket};

/// State of the L4 checksum of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumMode {
    /// The checksum field holds a complete checksum.
    Complete,
    /// The sender offloaded the checksum: the field holds the pseudo-header sum only, and the
    /// kernel completes it when the frame is sent on (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    Partial,
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
pub fn decrement_ttl_v4(hdr: &mut [u8]) -> bool {
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
