//! Direct routing (`ip_vs_dr_xmit`, ipvsadm `-g`): the packet goes to the real server as the
//! client sent it, on the segment they share, with only its Ethernet destination changed
//! and one hop less. The real server holds the VIP on a device that does not answer ARP for
//! it and replies to the client directly, so wvs never sees the replies.

use super::{Link, Packet, Refused, Sent, Target};

/// A client's packet to its real server.
pub fn to_real(pkt: &mut Packet<'_>, t: &Target, link: Link) -> Result<Sent, Refused> {
    super::check(pkt, t.mtu)?;
    let l4_off = pkt.l4_off;
    let ip = pkt.ip();
    // The real server holds the VIP, of the packet's family.
    super::nat::same_family(ip, t.daddr)?;
    super::decrement_ttl(&mut ip[..l4_off])?;
    super::set_macs(pkt.buf, link);
    Ok(Sent::InPlace { iface: link.iface })
}
