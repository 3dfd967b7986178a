//! ICMP errors about NAT'd connections (`ip_vs_in_icmp`, `ip_vs_out_icmp`).
//!
//! A router or host that cannot deliver a packet of a connection sends an ICMP error to the
//! packet's source, quoting its IP header and first 8 bytes. For the error to be of use
//! (path MTU discovery above all), it must reach the other end of the connection with the
//! quote translated the way the original packet was:
//! - an error about a reply (VIP -> client) arrives addressed to the VIP; it goes to the
//!   real server, with the outer destination and the quoted source set to the real server;
//! - an error about a forwarded packet (client -> real server) arrives addressed to the
//!   client; it goes to the client, with the outer source and the quoted destination set to
//!   the VIP, so the client's stack matches it to its socket.
//!
//! As in IPVS, the errors relayed are destination unreachable, source quench and time
//! exceeded (others, parameter problem among them, are the kernel's); the quoted IP header
//! checksum and the ICMP checksum are recomputed, the quoted TCP/UDP checksum (usually cut
//! off) is left alone, the connection's state and timer do not change, and the error is
//! counted in the connection's and its service's traffic, inbound or outbound as the
//! direction it travels (`ip_vs_in_stats` / `ip_vs_out_stats`).
//!
//! ICMPv6 the same way (`ip_vs_in_icmp_v6`, `ip_vs_out_icmp_v6`): every error type
//! (destination unreachable, packet too big, time exceeded, parameter problem) is relayed,
//! informational messages (echo, neighbour discovery) are the kernel's, an error that is
//! itself a fragment is dropped, and its checksum (over IPv6's pseudo-header) is
//! recomputed; the quote has no header checksum.
//!
//! A full-NAT connection between the families (no IPVS has one) gets its errors rebuilt in
//! the receiver's family as a SIIT translator would (RFC 7915 sections 4.2 and 5.2):
//! [`across`].

mod across;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Datapath, DropReason, Verdict, set_macs};
use crate::conn::ConnKey;
use crate::conn::table::KeyDir;
use crate::model::{Forward, Protocol};
use crate::service::Snapshot;
use crate::wire::{ETHERNET_HEADER_LEN, Ipv4Packet, Ipv6Packet, checksum, ipv4_field};

/// ICMP header length (type, code, checksum, 4 more bytes).
const ICMP_HEADER_LEN: usize = 8;
/// ICMP types that quote the packet they are about (RFC 792).
pub(crate) const DEST_UNREACHABLE: u8 = 3;
pub(crate) const SOURCE_QUENCH: u8 = 4;
pub(crate) const TIME_EXCEEDED: u8 = 11;
/// Code of "port unreachable" under destination unreachable.
const PORT_UNREACHABLE: u8 = 3;
/// Code of "fragmentation needed and DF set" under destination unreachable.
const FRAG_NEEDED: u8 = 4;

/// Which way the quoted packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum About {
    /// A reply the balancer sent to a client (quoted source: the VIP).
    Reply,
    /// A packet the balancer forwarded to a real server (quoted destination: the server).
    Forwarded,
}

/// A parsed ICMP or ICMPv6 error about one of wvs's connections.
pub(super) struct IcmpError {
    about: About,
    /// Where the ICMP header starts in the outer packet: its IPv4 header's length, or the
    /// IPv6 header's with its extension headers.
    l4_off: usize,
    /// Outer total length.
    total_len: usize,
    /// The quoted packet's protocol and endpoints (of the outer packet's family).
    proto: Protocol,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
    /// Where the quoted packet's upper layer starts in the quote.
    inner_l4: usize,
}

/// ICMPv6 types (RFC 4443): the errors, below 128, quote the packet they are about.
pub(crate) mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Code of "port unreachable" under destination unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// The ICMPv6 protocol number.
    pub const PROTO: u8 = 58;
}

/// What an error is about: the quoted packet's protocol and endpoints, seen from a VIP
/// (`to_vip`: the error is addressed to one) or a real server.
fn about_of(
    snap: &Snapshot,
    to_vip: bool,
    proto: Protocol,
    (qs, sport): (IpAddr, u16),
    (qd, dport): (IpAddr, u16),
) -> Option<About> {
    // Services' ports, and the data ports of expected connections (application helpers).
    if to_vip && (snap.service(proto, qs, sport).is_some() || snap.is_data_vip(proto, qs, sport)) {
        Some(About::Reply)
    } else if snap
        .fwmark_service_for(proto, (qd, dport), (qs, sport))
        .is_some()
    {
        // A reply from an address a fwmark service took, to wherever it is addressed: the
        // seed's ip_vs_forward_icmp, which hands the errors routed through the director to
        // ip_vs_in_icmp, as nothing marks them.
        Some(About::Reply)
    } else if snap.is_real(proto, qd, dport) || snap.is_data_real(proto, qd, dport) {
        Some(About::Forwarded)
    } else {
        None
    }
}

/// Read an ICMPv6 error and decide whether it concerns a service. `ip` is the outer packet,
/// `head` its checked header (not a fragment: the caller drops those).
pub(super) fn parse_v6(
    snap: &Snapshot,
    ip: &[u8],
    head: &super::Ipv6Header,
) -> Result<Option<IcmpError>, DropReason> {
    let to_vip = snap.is_vip(IpAddr::V6(head.daddr));
    let bad = |r| if to_vip { Err(r) } else { Ok(None) };
    let icmp = ip.get(head.l4_off..head.total_len).unwrap_or_default();
    if icmp.len() < ICMP_HEADER_LEN {
        return bad(DropReason::IcmpTruncated);
    }
    if !matches!(
        icmp[0],
        v6::DEST_UNREACHABLE | v6::PACKET_TOO_BIG | v6::TIME_EXCEEDED | v6::PARAMETER_PROBLEM
    ) {
        return Ok(None);
    }
    let q = match super::headers::Quote6::parse(&icmp[ICMP_HEADER_LEN..]) {
        Ok(Some(q)) => q,
        // A later fragment's quote has no ports; another upper layer is not wvs's.
        Ok(None) => return Ok(None),
        Err(r) => return bad(r),
    };
    let (qs, qd) = (IpAddr::V6(q.saddr), IpAddr::V6(q.daddr));
    let Some(about) = about_of(snap, to_vip, q.proto, (qs, q.sport), (qd, q.dport)) else {
        return Ok(None);
    };
    if checksum::l4_v6(head.saddr.octets(), head.daddr.octets(), v6::PROTO, icmp) != 0 {
        return Err(DropReason::IcmpBadChecksum);
    }
    Ok(Some(IcmpError {
        about,
        l4_off: head.l4_off,
        total_len: head.total_len,
        proto: q.proto,
        saddr: qs,
        sport: q.sport,
        daddr: qd,
        dport: q.dport,
        inner_l4: q.l4_off,
    }))
}

/// Read an ICMP error and decide whether it concerns a service. `ip` is the outer packet,
/// already checked for version, IHL and length.
pub(super) fn parse(
    snap: &Snapshot,
    ip: &[u8],
    ihl: usize,
    total_len: usize,
    daddr: Ipv4Addr,
) -> Result<Option<IcmpError>, DropReason> {
    let to_vip = snap.is_vip(IpAddr::V4(daddr));
    // Malformed errors are dropped only when addressed to a VIP; others are the kernel's.
    let bad = |r| if to_vip { Err(r) } else { Ok(None) };
    let icmp = &ip[ihl..total_len];
    if icmp.len() < ICMP_HEADER_LEN {
        return bad(DropReason::IcmpTruncated);
    }
    if !matches!(icmp[0], DEST_UNREACHABLE | SOURCE_QUENCH | TIME_EXCEEDED) {
        return Ok(None);
    }
    let inner = &icmp[ICMP_HEADER_LEN..];
    if inner.len() < ipv4_field::MIN_HEADER_LEN {
        return bad(DropReason::IcmpTruncated);
    }
    let q = Ipv4Packet::new_unchecked(inner);
    let inner_ihl = usize::from(q.header_len());
    if q.version() != 4 || inner_ihl < ipv4_field::MIN_HEADER_LEN {
        return bad(DropReason::IcmpInnerBad);
    }
    // RFC 792: the quote holds the IP header and at least 8 bytes of its payload.
    if inner.len() < inner_ihl + 8 {
        return bad(DropReason::IcmpTruncated);
    }
    let Some(proto) = Protocol::from_number(u8::from(q.next_header())) else {
        return Ok(None);
    };
    if q.frag_offset() != 0 {
        // A quote of a later fragment has no ports.
        return Ok(None);
    }
    let l4 = &inner[inner_ihl..];
    let (sport, dport) = (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    );
    let (qs, qd) = (IpAddr::V4(q.src_addr()), IpAddr::V4(q.dst_addr()));
    let Some(about) = about_of(snap, to_vip, proto, (qs, sport), (qd, dport)) else {
        return Ok(None);
    };
    if checksum::compute(&ip[..ihl]) != 0 {
        return Err(DropReason::IpBadChecksum);
    }
    // ip_vs_in_icmp / ip_vs_out_icmp: an error whose own checksum fails is dropped, not
    // relayed with a checksum wvs would make good again.
    if checksum::compute(icmp) != 0 {
        return Err(DropReason::IcmpBadChecksum);
    }
    Ok(Some(IcmpError {
        about,
        l4_off: ihl,
        total_len,
        proto,
        saddr: qs,
        sport,
        daddr: qd,
        dport,
        inner_l4: inner_ihl,
    }))
}

/// Turn the IPv4 frame of `len` bytes at the start of `buf` into an ICMP port unreachable
/// to its sender, from the address it was sent to, quoting its IP header and first 8 bytes
/// of payload (RFC 792). Returns the new frame's length, or `None` if the frame is not a
/// whole IPv4 packet with 8 bytes of payload or the buffer is too small.
pub(super) fn port_unreachable(buf: &mut [u8], len: usize) -> Option<usize> {
    error_from_destination(buf, len, DEST_UNREACHABLE, PORT_UNREACHABLE, [0; 4], None)
}

/// ICMP port unreachable from wvs's own address `src` (`nat_icmp_send`: to a real server
/// whose packet belongs to no connection; its destination, the client, is not wvs's).
pub(super) fn port_unreachable_from(buf: &mut [u8], len: usize, src: Ipv4Addr) -> Option<usize> {
    error_from_destination(
        buf,
        len,
        DEST_UNREACHABLE,
        PORT_UNREACHABLE,
        [0; 4],
        Some(src),
    )
}

/// ICMP time exceeded in transit (type 11, code 0) for a client's packet whose TTL ran out
/// at the balancer, from the VIP: as the director's `icmp_send` answers, its source being
/// the packet's local destination.
pub(super) fn time_exceeded(buf: &mut [u8], len: usize) -> Option<usize> {
    error_from_destination(buf, len, TIME_EXCEEDED, 0, [0; 4], None)
}

/// ICMP fragmentation needed (type 3, code 4) with the next hop's MTU (RFC 1191), from the
/// VIP, for a client's packet with DF that does not fit the path to its real server.
pub(super) fn frag_needed(buf: &mut [u8], len: usize, mtu: u16) -> Option<usize> {
    let m = mtu.to_be_bytes();
    error_from_destination(
        buf,
        len,
        DEST_UNREACHABLE,
        FRAG_NEEDED,
        [0, 0, m[0], m[1]],
        None,
    )
}

/// Write, in place of the received frame, an ICMP error of `kind`/`code` (its second word
/// `word`) about it, from its destination (or `from`) back to its sender, quoting its IP
/// header and 8 bytes. Returns the answer's length, or `None` if the frame is too short to
/// quote.
fn error_from_destination(
    buf: &mut [u8],
    len: usize,
    kind: u8,
    code: u8,
    word: [u8; 4],
    from: Option<Ipv4Addr>,
) -> Option<usize> {
    const IP: usize = ETHERNET_HEADER_LEN;
    let frame = buf.get(..len)?;
    let ip = frame.get(IP..)?;
    if ip.len() < ipv4_field::MIN_HEADER_LEN {
        return None;
    }
    let ihl = usize::from(Ipv4Packet::new_unchecked(ip).header_len());
    let quote_len = ihl + 8;
    if ihl < ipv4_field::MIN_HEADER_LEN || ip.len() < quote_len {
        return None;
    }
    let mut quote = [0u8; 60 + 8];
    quote[..quote_len].copy_from_slice(&ip[..quote_len]);
    let orig = Ipv4Packet::new_unchecked(&quote[..quote_len]);
    let (client, vip) = (orig.src_addr(), orig.dst_addr());
    let icmp_len = ICMP_HEADER_LEN + quote_len;
    let icmp = super::answer_headers(
        buf,
        from.unwrap_or(vip),
        client,
        crate::wire::IpProtocol::Icmp,
        icmp_len,
        false,
    )?;
    icmp[..ICMP_HEADER_LEN]
        .copy_from_slice(&[kind, code, 0, 0, word[0], word[1], word[2], word[3]]);
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&quote[..quote_len]);
    let c = checksum::compute(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(IP + ipv4_field::MIN_HEADER_LEN + icmp_len)
}

/// Turn the IPv6 frame of `len` bytes at the start of `buf` into an ICMPv6 error of
/// `kind`/`code` (its second word `word`: Packet Too Big's MTU) from the address it was sent
/// to (or `from`: wvs's own, `nat_icmp_send`) back to its sender, quoting as much of it as fits in IPv6's least MTU (RFC 4443 2.4
/// (c)). Returns the answer's length, or `None` if the frame is no IPv6 packet, the buffer
/// cannot hold the answer, or either end is not one host.
pub(super) fn error_v6(
    buf: &mut [u8],
    len: usize,
    (kind, code): (u8, u8),
    word: [u8; 4],
    from: Option<Ipv6Addr>,
) -> Option<usize> {
    use crate::wire::ipv6_field::{HEADER_LEN, MIN_MTU};
    const IP: usize = ETHERNET_HEADER_LEN;
    let ip = buf.get(IP..len)?;
    let pkt = Ipv6Packet::new_checked(ip).ok()?;
    let (client, vip) = (pkt.src_addr(), pkt.dst_addr());
    let quote_len = ip.len().min(MIN_MTU - HEADER_LEN - ICMP_HEADER_LEN);
    let at = IP + HEADER_LEN + ICMP_HEADER_LEN;
    if buf.len() < at + quote_len {
        return None;
    }
    // The quote moves to where it follows the new headers (a refused frame is the
    // answer's to overwrite).
    buf.copy_within(IP..IP + quote_len, at);
    let src = from.unwrap_or(vip);
    let icmp = super::answer_headers_v6(buf, src, client, v6::PROTO, ICMP_HEADER_LEN + quote_len)?;
    icmp[..ICMP_HEADER_LEN]
        .copy_from_slice(&[kind, code, 0, 0, word[0], word[1], word[2], word[3]]);
    let c = checksum::l4_v6(src.octets(), client.octets(), v6::PROTO, icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(at + quote_len)
}

/// Where a relayed ICMP error goes, and what its connection's translation was: the address
/// and port the quote's translated end takes, the interface and MAC towards the receiver,
/// and in full NAT the quote's other end (the client, or the local address).
struct Relay {
    dir: KeyDir,
    addr: IpAddr,
    port: u16,
    iface: u8,
    mac: [u8; 6],
    other: Option<(IpAddr, u16)>,
}

impl Datapath {
    /// Relay an ICMP error to the other end of its connection.
    pub(super) fn icmp_error(&self, snap: &Snapshot, e: &IcmpError, frame: &mut [u8]) -> Verdict {
        let r = match self.relay_of(snap, e) {
            Ok(r) => r,
            Err(v) => return v,
        };
        let Some(out_if) = self.ifaces.get(usize::from(r.iface)) else {
            return Verdict::Drop(DropReason::NoNextHop);
        };
        // A full-NAT connection between the families: the error is rebuilt in the
        // receiver's family.
        if e.saddr.is_ipv6() != r.addr.is_ipv6() {
            return match across::relay(e, &r, frame) {
                Ok(len) => {
                    set_macs(frame, out_if.mac(), r.mac);
                    Verdict::Send {
                        iface: r.iface,
                        len,
                        offloads: super::Offloads::None,
                    }
                }
                Err(reason) => Verdict::Drop(reason),
            };
        }
        let ip = &mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + e.total_len];
        let (hdr, icmp) = ip.split_at_mut(e.l4_off);
        if r.dir == KeyDir::Out && crate::xmit::decrement_ttl(hdr).is_err() {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        icmp[2..4].copy_from_slice(&[0, 0]);
        let c = match (r.addr, r.other.map(|o| o.0)) {
            (IpAddr::V4(a), None | Some(IpAddr::V4(_))) => {
                let other = r.other.and_then(|(o, p)| match o {
                    IpAddr::V4(o) => Some((o, p)),
                    IpAddr::V6(_) => None,
                });
                relay_outer(hdr, r.dir, a, other);
                relay_quote(icmp, e.inner_l4, r.dir, (a, r.port), other);
                checksum::compute(icmp)
            }
            (IpAddr::V6(a), None | Some(IpAddr::V6(_))) => {
                let other = r.other.and_then(|(o, p)| match o {
                    IpAddr::V6(o) => Some((o, p)),
                    IpAddr::V4(_) => None,
                });
                let (src, dst) = relay_outer_v6(hdr, r.dir, a, other);
                relay_quote_v6(icmp, e.inner_l4, r.dir, (a, r.port), other);
                checksum::l4_v6(src.octets(), dst.octets(), v6::PROTO, icmp)
            }
            // The families agree (checked above).
            _ => return Verdict::Drop(DropReason::IcmpInnerBad),
        };
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        set_macs(frame, out_if.mac(), r.mac);
        Verdict::Tx { iface: r.iface }
    }

    /// The connection an ICMP error is about, counted, and where the error goes; or what
    /// to do instead.
    fn relay_of(&self, snap: &Snapshot, e: &IcmpError) -> Result<Relay, Verdict> {
        // The quoted packet's key, turned into the key of the packet that would go the
        // other way: that is how the connection table knows the connection.
        let key = ConnKey {
            proto: e.proto,
            saddr: e.daddr,
            sport: e.dport,
            daddr: e.saddr,
            dport: e.sport,
        };
        let w = self.worker;
        let len = e.total_len;
        let (dir, found) = match e.about {
            About::Reply => (
                KeyDir::In,
                self.conns.with_conn(KeyDir::In, &key, |c| {
                    let hop = c.dest.next_hop()?;
                    c.dest.stats.worker(w).packet_in(len);
                    c.svc_stats.worker(w).packet_in(len);
                    let other = (c.fwd == Forward::FullNat).then_some((c.laddr(), c.lport));
                    Some((c.raddr(), c.rport, hop, other))
                }),
            ),
            About::Forwarded => (
                KeyDir::Out,
                self.conns.with_conn(KeyDir::Out, &key, |c| {
                    c.dest.stats.worker(w).packet_out(len);
                    c.svc_stats.worker(w).packet_out(len);
                    let other = (c.fwd == Forward::FullNat).then_some((c.caddr(), c.cport));
                    Some((c.vaddr(), c.vport, c.client_hop, other))
                }),
            ),
        };
        let (addr, port, hop, other) = match found {
            Some(Some(v)) => v,
            Some(None) => return Err(Verdict::Drop(DropReason::NoNextHop)),
            // About a packet the balancer's own stack sent a real server (a health check's
            // probe, from its address towards that server): the error is the stack's, as
            // IPVS's ip_vs_out_icmp leaves what belongs to no connection (NF_ACCEPT).
            None if e.about == About::Forwarded
                && snap.real_source(e.proto, e.daddr, e.dport) == Some(e.saddr) =>
            {
                super::stats::bump(&self.stats.passed);
                return Err(Verdict::Stack {
                    daddr: e.saddr,
                    len: e.total_len,
                });
            }
            None => return Err(Verdict::Drop(DropReason::IcmpNoConn)),
        };
        // Full NAT: the other endpoint was translated too (the client and the local address).
        Ok(Relay {
            dir,
            addr,
            port,
            iface: hop.iface,
            mac: hop.mac,
            other,
        })
    }
}

/// The error's own header: a reply's goes to the real server instead of the VIP, a
/// forwarded one's comes from the VIP instead of the server (and in full NAT goes to the
/// client instead of the local address: `other`).
fn relay_outer(hdr: &mut [u8], dir: KeyDir, addr: Ipv4Addr, other: Option<(Ipv4Addr, u16)>) {
    let mut outer = Ipv4Packet::new_unchecked(hdr);
    let old = match dir {
        KeyDir::In => outer.dst_addr(),
        KeyDir::Out => outer.src_addr(),
    };
    match dir {
        KeyDir::In => outer.set_dst_addr(addr),
        KeyDir::Out => outer.set_src_addr(addr),
    }
    outer.set_checksum(checksum::update(
        outer.checksum(),
        &old.octets(),
        &addr.octets(),
    ));
    if let (KeyDir::Out, Some((caddr, _))) = (dir, other) {
        let old = outer.dst_addr();
        outer.set_dst_addr(caddr);
        outer.set_checksum(checksum::update(
            outer.checksum(),
            &old.octets(),
            &caddr.octets(),
        ));
    }
}

/// [`relay_outer`] for IPv6 (no header checksum); returns the new source and destination,
/// for the ICMPv6 checksum's pseudo-header.
fn relay_outer_v6(
    hdr: &mut [u8],
    dir: KeyDir,
    addr: Ipv6Addr,
    other: Option<(Ipv6Addr, u16)>,
) -> (Ipv6Addr, Ipv6Addr) {
    let mut outer = Ipv6Packet::new_unchecked(hdr);
    match dir {
        KeyDir::In => outer.set_dst_addr(addr),
        KeyDir::Out => outer.set_src_addr(addr),
    }
    if let (KeyDir::Out, Some((caddr, _))) = (dir, other) {
        outer.set_dst_addr(caddr);
    }
    (outer.src_addr(), outer.dst_addr())
}

/// The quoted packet (after the ICMP header, its upper layer `inner_l4` bytes into it),
/// translated as the connection's packets are: `(addr, port)` the translated end, `other`
/// in full NAT the other end.
fn relay_quote(
    icmp: &mut [u8],
    inner_l4: usize,
    dir: KeyDir,
    (addr, port): (Ipv4Addr, u16),
    other: Option<(Ipv4Addr, u16)>,
) {
    let (inner_hdr, inner_l4) = icmp[ICMP_HEADER_LEN..].split_at_mut(inner_l4);
    let mut q = Ipv4Packet::new_unchecked(&mut *inner_hdr);
    // Reply: the quote's source was the VIP and becomes the real server; forwarded: the
    // quote's destination was the real server and becomes the VIP.
    match dir {
        KeyDir::In => q.set_src_addr(addr),
        KeyDir::Out => q.set_dst_addr(addr),
    }
    // Full NAT: the quote's other end was the client (a reply's destination), or the
    // local address (a forwarded packet's source).
    if let Some((a, _)) = other {
        match dir {
            KeyDir::In => q.set_dst_addr(a),
            KeyDir::Out => q.set_src_addr(a),
        }
    }
    q.set_checksum(0);
    let c = checksum::compute(&inner_hdr[..]);
    Ipv4Packet::new_unchecked(&mut *inner_hdr).set_checksum(c);
    quote_ports(inner_l4, dir, port, other.map(|o| o.1));
}

/// [`relay_quote`] for IPv6: the quote has no header checksum.
fn relay_quote_v6(
    icmp: &mut [u8],
    inner_l4: usize,
    dir: KeyDir,
    (addr, port): (Ipv6Addr, u16),
    other: Option<(Ipv6Addr, u16)>,
) {
    let (inner_hdr, inner_l4) = icmp[ICMP_HEADER_LEN..].split_at_mut(inner_l4);
    let mut q = Ipv6Packet::new_unchecked(&mut *inner_hdr);
    match dir {
        KeyDir::In => q.set_src_addr(addr),
        KeyDir::Out => q.set_dst_addr(addr),
    }
    if let Some((a, _)) = other {
        match dir {
            KeyDir::In => q.set_dst_addr(a),
            KeyDir::Out => q.set_src_addr(a),
        }
    }
    quote_ports(inner_l4, dir, port, other.map(|o| o.1));
}

/// The quoted ports: a reply's source (the VIP's port) or a forwarded packet's destination
/// (the server's) becomes `port`; in full NAT the other one `other`.
fn quote_ports(inner_l4: &mut [u8], dir: KeyDir, port: u16, other: Option<u16>) {
    let port_at = if dir == KeyDir::In { 0 } else { 2 };
    inner_l4[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    if let Some(p) = other {
        inner_l4[2 - port_at..4 - port_at].copy_from_slice(&p.to_be_bytes());
    }
}
