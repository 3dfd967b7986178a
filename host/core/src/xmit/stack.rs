//! The balancer's own stack as the next hop.
//!
//! - [`local`] (`ip_vs_null_xmit`): the real server is the balancer itself, so the packet
//!   is delivered to its stack as the client sent it, to the VIP and port (a server there
//!   listens on them), and the answers leave from that stack directly.
//! - [`bypass`] (`ip_vs_bypass_xmit`): no real server could take the connection and
//!   `cache_bypass` is on, so the packet goes on to the address it was sent to, routed by
//!   the balancer's stack as any forwarded packet: one hop less, nothing rewritten.
//!
//! The packet leaves without the kernel's offloads, so a partial checksum is completed; a
//! local server takes a super-packet whole (the loopback's MTU is 64 KiB), a bypassed one
//! is cut into segments first.

use super::{Packet, Refused, Sent};
use crate::wire::{ETHERNET_HEADER_LEN, Ipv4Packet, Ipv6Packet};

/// Deliver to the balancer's own stack.
pub fn local(pkt: &mut Packet<'_>) -> Result<Sent, Refused> {
    Ok(finish(pkt))
}

/// The answer to one of the director's own checks through a local VIP
/// ([`crate::conn::own`]): from `standin` instead of the VIP (its port, `sport`, kept),
/// delivered to its stack.
pub(crate) fn own_check(
    pkt: &mut Packet<'_>,
    standin: std::net::IpAddr,
    sport: u16,
) -> Result<Sent, Refused> {
    let (l4_off, proto, csum) = (pkt.l4_off, pkt.proto, pkt.csum);
    let ip = pkt.ip();
    super::nat::same_family(ip, standin)?;
    super::nat::rewrite(
        ip,
        l4_off,
        proto,
        super::nat::Rewrite::Src,
        standin,
        sport,
        csum,
    );
    Ok(finish(pkt))
}

/// A packet already rewritten for its destination, handed to the balancer's stack to route
/// there (its checksums completed): for a destination whose next hop is not known.
pub(crate) fn routed(pkt: &mut Packet<'_>) -> Result<Sent, Refused> {
    Ok(finish(pkt))
}

/// Route on to the packet's own destination.
pub fn bypass(pkt: &mut Packet<'_>) -> Result<Sent, Refused> {
    super::check(pkt, 0)?;
    // A raw socket takes no super-packet: cut it first (`gso`).
    if pkt.gso_size != 0 {
        return Err(Refused::TunnelGso);
    }
    let l4_off = pkt.l4_off;
    super::decrement_ttl(&mut pkt.ip()[..l4_off])?;
    Ok(finish(pkt))
}

fn finish(pkt: &mut Packet<'_>) -> Sent {
    let v6 = pkt.is_v6();
    let (l4_off, proto, csum, len) = (pkt.l4_off, pkt.proto, pkt.csum, pkt.total_len);
    let ip = pkt.ip();
    super::complete_csum(ip, l4_off, proto, csum);
    let daddr = if v6 {
        Ipv6Packet::new_unchecked(&ip[..l4_off]).dst_addr().into()
    } else {
        Ipv4Packet::new_unchecked(&ip[..l4_off]).dst_addr().into()
    };
    debug_assert!(pkt.buf.len() >= ETHERNET_HEADER_LEN + len);
    Sent::Stack { daddr, len }
}
