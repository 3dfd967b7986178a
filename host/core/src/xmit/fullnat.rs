//! Full NAT (DPVS's `FULLNAT`): masquerading of both endpoints. A client's packet gets the
//! real server as its destination and one of the service's local addresses and ports as
//! its source; a reply, addressed to that local address, gets the virtual service as its
//! source and the client as its destination. The server answers the balancer whatever its
//! routes say, so it needs no route to the clients (and does not see their addresses);
//! it may even be of the other family than the clients ([`super::xlat`]).

use super::nat::{Rewrite, rewrite, same_family};
use super::{Back, Link, Packet, Refused, Sent, Target};

/// A client's packet to its real server: one hop less, then both endpoints rewritten (the
/// header translated when the server is of the other family: [`super::xlat`]).
pub fn to_real(pkt: &mut Packet<'_>, t: &Target, link: Link) -> Result<Sent, Refused> {
    if pkt.is_v6() != t.daddr.is_ipv6() {
        super::check(pkt, super::xlat::mtu_before(t.mtu, t.daddr.is_ipv6()))?;
        if t.local.0.is_ipv6() != t.daddr.is_ipv6() {
            return Err(Refused::Family);
        }
        return super::xlat::translate(pkt, t.local, (t.daddr, t.dport), link);
    }
    super::check(pkt, t.mtu)?;
    let (l4_off, proto, csum) = (pkt.l4_off, pkt.proto, pkt.csum);
    let ip = pkt.ip();
    same_family(ip, t.daddr)?;
    same_family(ip, t.local.0)?;
    super::decrement_ttl(&mut ip[..l4_off])?;
    rewrite(ip, l4_off, proto, Rewrite::Dst, t.daddr, t.dport, csum);
    rewrite(ip, l4_off, proto, Rewrite::Src, t.local.0, t.local.1, csum);
    super::set_macs(pkt.buf, link);
    Ok(Sent::InPlace { iface: link.iface })
}

/// A real server's reply to the client: one hop less, from the virtual service to the
/// client again.
pub(crate) fn to_client(pkt: &mut Packet<'_>, b: &Back, link: Link) -> Result<Sent, Refused> {
    if pkt.is_v6() != b.caddr.is_ipv6() {
        return super::xlat::translate(pkt, (b.vaddr, b.vport), (b.caddr, b.cport), link);
    }
    let (l4_off, proto, csum) = (pkt.l4_off, pkt.proto, pkt.csum);
    let ip = pkt.ip();
    same_family(ip, b.vaddr)?;
    same_family(ip, b.caddr)?;
    super::decrement_ttl(&mut ip[..l4_off])?;
    rewrite(ip, l4_off, proto, Rewrite::Src, b.vaddr, b.vport, csum);
    rewrite(ip, l4_off, proto, Rewrite::Dst, b.caddr, b.cport, csum);
    super::set_macs(pkt.buf, link);
    Ok(Sent::InPlace { iface: link.iface })
}
