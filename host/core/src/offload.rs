//! Flow offload: the connections whose packets need no decision, described for a program
//! outside the datapath to carry (wvs's tc-BPF program, `host/bpf/wvs_offload.c`).
//!
//! IPVS has no such thing: every packet goes through `ip_vs_in`/`ip_vs_out`. But what they do
//! for a packet of an established connection is fixed once the connection is scheduled:
//! count it, keep its timer, rewrite its addresses and ports, one hop less, out of one
//! interface to one MAC. So once a connection reaches a state that only a SYN, FIN or RST
//! can change (TCP ESTABLISHED, a UDP flow that was answered), the datapath hands each
//! direction's rewrite to a [`FlowSink`], and the host gives back what the kernel carried
//! ([`merge`]): counters into the connection's server and service, the last packet's time
//! into its timer. Everything that is a decision stays here: the program sends SYN, FIN and
//! RST to wvs (FIN and RST take the flow out of its map first), and the datapath withdraws
//! a connection whose state moved on.

use std::net::IpAddr;

use crate::conn::table::KeyDir;
use crate::conn::{Conn, ConnKey, ConnTable, TcpState};
use crate::model::{Forward, Protocol, TunCsum, TunKind};
use crate::spec::SyncSettings;
use crate::xmit::Link;

/// One direction of an offloaded connection: a packet that arrives with `key`'s endpoints
/// leaves with `to`'s, one hop less, on `link`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The packet as it arrives.
    pub key: ConnKey,
    /// Its endpoints as it leaves (equal to `key` for direct routing).
    pub to: ConnKey,
    /// Where it leaves.
    pub link: Link,
    /// The path MTU a packet must fit (0: unknown, not checked); a longer one goes to wvs,
    /// which answers it as `xmit::check` does.
    pub mtu: u32,
    /// A client's packet (counted in), not a server's reply (counted out).
    pub inbound: bool,
    /// Tunnelling (`xmit::tunnel`): the packet, unchanged bar its TTL, goes inside this
    /// outer header; `mtu` is then what the inner packet may be.
    pub encap: Option<Encap>,
}

/// The outer header a tunnelled flow's packets get, fixed for the connection as
/// `xmit::tunnel` writes it; what varies by packet (length, TOS, TTL, DF, an IPv4
/// packet's ID) the program takes from the inner packet, as `xmit::tunnel` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    /// IPIP, GUE or GRE (without an outer checksum).
    pub kind: crate::model::TunKind,
    /// The outer header's source: wvs's address on the route to the server.
    pub src: IpAddr,
    /// Its destination: the real server (of either family, whatever the inner one).
    pub dst: IpAddr,
    /// GUE's UDP source port (spread by the connection's hash) and destination port.
    pub ports: (u16, u16),
    /// The outer IPv4 ID of an IPv6 packet inside (the connection's hash).
    pub ident: u16,
    /// IPVS's `pmtu_disc`: the outer IPv4 header keeps the inner one's DF.
    pub pmtu_disc: bool,
}

/// Where the datapath offers the flows it has decided. The host's implementation writes
/// them into the offload program's map; per worker, so it takes no lock.
pub trait FlowSink: std::fmt::Debug + Send {
    /// Carry these flows from now on; a flow carried already stays as it is (with what it
    /// carried since the last merge).
    fn offer(&self, flows: &[Flow]) -> Offered;
    /// Stop carrying the flows of these keys (those not carried are no error).
    fn withdraw(&self, keys: &[ConnKey]);
}

/// What became of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The flows are carried from now on.
    Taken,
    /// They were carried already.
    Held,
    /// They could not be taken (a full map): the connection stays with wvs.
    Refused,
}

/// What the kernel carried for one flow since the last merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Carried {
    /// Packets.
    pub packets: u64,
    /// Bytes (IP length, as the datapath counts).
    pub bytes: u64,
    /// When it carried the last one (ms on the datapath clock), if it carried any.
    pub seen: Option<u64>,
}

/// Whether `c` may be carried outside wvs now, whatever its packets: a method that only
/// rewrites or prepends headers (NAT, full NAT and direct routing within one address
/// family; tunnelling without an outer checksum, which would cover the whole packet), no
/// application helper or expectation, a server still there, and a state only a SYN, FIN or
/// RST changes. (UDP has no state: when a flow qualifies is [`step`]'s rule.)
pub(crate) fn eligible(c: &Conn) -> bool {
    let (method, inner_only) = match c.fwd {
        Forward::Masq | Forward::FullNat | Forward::Route => (true, false),
        // The outer header may be of the other family: only the inner one is one.
        Forward::Tunnel(t) => (t.kind == TunKind::Ipip || t.csum == TunCsum::None, true),
        _ => (false, false),
    };
    let v4 = c.caddr().is_ipv4();
    let family = [c.vaddr(), c.laddr()]
        .into_iter()
        .chain((!inner_only).then(|| c.raddr()))
        .all(|a| a.is_ipv4() == v4);
    let quiet = match c.proto {
        Protocol::Tcp => c.state == TcpState::Established,
        Protocol::Udp => true,
        Protocol::Sctp => false,
    };
    method
        && family
        && quiet
        && c.app().is_none()
        && c.controller().is_none()
        && !c.wildcard()
        && !c.expire_now()
        && c.dest.available()
        // A server a health check took out: wvs decides again what its flows do (a UDP
        // flow may move, keepalived#2163).
        && !c.dest.is_down()
}

/// Which lookup a packet of the connection went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moment {
    /// A client's packet.
    In,
    /// A server's reply.
    Out,
}

/// What a packet of `c` at `moment`, which found it in TCP state `was` and came `gap_ms`
/// after the connection's previous packet, asks of the offload. Decided by transitions, so
/// that a connection carries no mark of its own (the entry stays 88 bytes):
/// - a TCP connection is offered at the client's packet that finds it both ESTABLISHED
///   and past `OFFLOAD_AFTER_PACKETS` client packets (and again at every
///   `OFFLOAD_AFTER_PACKETS`th packet after that which wvs sees, so that a flow the keeper
///   took out comes back; one carried already costs a map insert that finds it there), and
///   withdrawn as it leaves ESTABLISHED: a short connection never reaches the kernel's map;
/// - a UDP flow is offered at every `OFFLOAD_AFTER_PACKETS`th client packet that comes
///   within `OFFLOAD_UDP_GAP_MS` of the one before: a busy flow at once, and not the many
///   quiet ones (a flow of one client among thousands), which wvs's rings take in batches
///   faster than the kernel's path one skb at a time, and whose map entries would cost more
///   than they carry. (An offered flow's packets no longer come here.)
pub(crate) fn step(c: &Conn, moment: Moment, was: TcpState, gap_ms: u64) -> Step {
    let after = crate::consts::OFFLOAD_AFTER_PACKETS;
    let established = c.state == TcpState::Established;
    let offer = moment == Moment::In
        && match c.proto {
            // The packet that crossed the count, or the one that made a long connection
            // ESTABLISHED.
            // Or every `after`th of those that still come through wvs: a connection the
            // keeper took out (its server down for a while, then up) is carried again.
            Protocol::Tcp => {
                established
                    && (c.in_pkts == after
                        || (c.in_pkts > after
                            && (was != c.state || c.in_pkts.is_multiple_of(after))))
            }
            Protocol::Udp => {
                c.in_pkts >= after
                    && c.in_pkts.is_multiple_of(after)
                    && gap_ms < crate::consts::OFFLOAD_UDP_GAP_MS
            }
            Protocol::Sctp => false,
        };
    match c.proto {
        // Only one that could have been offered (a short one never was: no map to ask).
        Protocol::Tcp if was == TcpState::Established && !established && c.in_pkts >= after => {
            Step::Withdraw
        }
        _ if offer && eligible(c) => Step::Offer,
        _ => Step::Keep,
    }
}

/// What [`step`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing changes.
    Keep,
    /// Offer the connection's flows.
    Offer,
    /// Take them back.
    Withdraw,
}

/// `c`'s flows, given the links to its server and back to its client (none for a method
/// whose replies bypass wvs): the client's packets to the server, then the replies. None
/// for a tunnel whose outer source is not known yet, or whose path leaves an inner packet
/// less than IPv6's minimum MTU (wvs refuses or fragments each packet then).
pub(crate) fn flows(
    c: &Conn,
    to_real: Link,
    to_client: Option<Link>,
    pmtu_disc: bool,
) -> Option<([Flow; 2], usize)> {
    let key = c.in_key();
    let (mut mtu, mut encap) = (c.dest.mtu(), None);
    if let Forward::Tunnel(t) = c.fwd {
        let (src, dst) = (c.dest.source(), c.raddr());
        if src.is_unspecified() || src.is_ipv4() != dst.is_ipv4() {
            return None;
        }
        if mtu != 0 {
            let over = crate::xmit::tunnel::overhead(&t, dst.is_ipv6()) as u32;
            mtu = mtu.saturating_sub(over);
            if mtu < crate::wire::ipv6_field::MIN_MTU as u32 {
                return None;
            }
        }
        let hash = crate::xmit::tunnel::flow_hash(
            key.proto,
            (key.saddr, key.sport),
            (key.daddr, key.dport),
        );
        encap = Some(Encap {
            kind: t.kind,
            src,
            dst,
            ports: if t.kind == TunKind::Gue {
                (crate::xmit::tunnel::flow_port(hash), t.port)
            } else {
                (0, 0)
            },
            ident: hash as u16,
            pmtu_disc,
        });
    }
    let to = match c.fwd {
        Forward::Route | Forward::Tunnel(_) => key,
        _ => ConnKey {
            proto: c.proto,
            saddr: c.laddr(),
            sport: c.lport,
            daddr: c.raddr(),
            dport: c.rport,
        },
    };
    let inbound = Flow {
        key,
        to,
        link: to_real,
        mtu,
        inbound: true,
        encap,
    };
    let Some(back) = to_client else {
        return Some(([inbound; 2], 1));
    };
    let reply = Flow {
        key: c.out_key(),
        to: ConnKey {
            proto: c.proto,
            saddr: c.vaddr(),
            sport: c.vport,
            daddr: c.caddr(),
            dport: c.cport,
        },
        link: back,
        // Replies are not held to an MTU by wvs either (`handle_response`).
        mtu: 0,
        inbound: false,
        encap: None,
    };
    Some(([inbound, reply], 2))
}

/// The keys `c`'s flows are carried under.
pub(crate) fn keys(c: &Conn) -> [ConnKey; 2] {
    [c.in_key(), c.out_key()]
}

/// Take back what the kernel carried for the flow `key`: its packets and bytes onto the
/// connection's server and service (in the counters' slot `slot`, which only the caller
/// writes), and its last packet's time into the connection's timer. Returns whether the
/// flow may stay in the kernel: `false` when its connection is gone or no longer eligible
/// (its server removed, its state moved on), and the caller takes it out. With the sync
/// daemon's master running, the client's carried packets count toward `sync_threshold`
/// (`sync`) as they would through wvs, and the records they call for are queued in `slot`.
pub fn merge(
    table: &ConnTable,
    key: &ConnKey,
    carried: Carried,
    slot: usize,
    sync: &SyncSettings,
) -> bool {
    let take = |c: &mut Conn, inbound: bool| {
        let mut counted = None;
        if carried.packets > 0 {
            let (d, s) = (c.dest.stats.worker(slot), c.svc_stats.worker(slot));
            if inbound {
                d.packets_in(carried.packets, carried.bytes);
                s.packets_in(carried.packets, carried.bytes);
                let n = u32::try_from(carried.packets).unwrap_or(u32::MAX);
                counted = Some((c.in_pkts, n));
                c.in_pkts = c.in_pkts.saturating_add(n);
            } else {
                d.packets_out(carried.packets, carried.bytes);
                s.packets_out(carried.packets, carried.bytes);
            }
        }
        if let Some(t) = carried.seen
            && t + c.timeout_ms() > c.expires
        {
            c.touch(t);
        }
        if let (Some(counts), Some(t)) = (counted, carried.seen)
            && table.sync().is_master()
        {
            table.sync_carried(slot, c, counts, t, sync);
        }
        // Still carried while nothing but a SYN, FIN or RST (which the program leaves to
        // wvs) could change it.
        eligible(c) && (c.proto != Protocol::Tcp || c.state == TcpState::Established)
    };
    if let Some(stay) = table.with_conn(KeyDir::In, key, |c| take(c, true)) {
        return stay;
    }
    table
        .with_conn(KeyDir::Out, key, |c| take(c, false))
        .unwrap_or(false)
}

/// The next hop (interface, MAC) the flow `key` leaves by now: the server's (a client's
/// packet) or the client's router's (a reply), as the neighbour table last told wvs.
/// `None` when its connection is gone or its server's hop is not known. A flow offered with
/// another (the server moved to another MAC) is taken out by the keeper and offered again
/// by the datapath with this one.
pub fn next_hop(table: &ConnTable, key: &ConnKey) -> Option<(u8, [u8; 6])> {
    if let Some(hop) = table.with_conn(KeyDir::In, key, |c| c.dest.next_hop()) {
        return hop.map(|h| (h.iface, h.mac));
    }
    table.with_conn(KeyDir::Out, key, |c| (c.client_hop.iface, c.client_hop.mac))
}

/// An IPv4 address as the offload map holds every address: mapped into IPv6's.
pub fn wide(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::{Arc, Mutex};

    use etherparse::PacketBuilder;

    use super::*;
    use crate::datapath::Verdict;
    use crate::model::TunKind;
    use crate::spec::Real;
    use crate::testkit::{
        CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, FROM_RS, Harness, SERVER_IF_MAC, VIP,
        real_by, rr, rs_mac, snapshot, tunnel,
    };

    /// What the datapath asked of the sink, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Asked {
        Offer(Vec<Flow>),
        Withdraw(Vec<ConnKey>),
    }

    #[derive(Debug, Clone, Default)]
    struct Record(Arc<Mutex<Vec<Asked>>>);

    impl FlowSink for Record {
        fn offer(&self, flows: &[Flow]) -> Offered {
            self.0.lock().unwrap().push(Asked::Offer(flows.to_vec()));
            Offered::Taken
        }
        fn withdraw(&self, keys: &[ConnKey]) {
            self.0.lock().unwrap().push(Asked::Withdraw(keys.to_vec()));
        }
    }

    impl Record {
        fn take(&self) -> Vec<Asked> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    const RS: [u8; 4] = [198, 19, 0, 11];

    fn harness(proto: Protocol, port: u16, real: Real) -> (Harness, Record) {
        let mut h = Harness::new(snapshot(&[rr(proto, port, vec![real])]), 1 << 12, 0);
        let r = Record::default();
        h.dp.set_offload(Box::new(r.clone()));
        (h, r)
    }

    #[derive(Clone, Copy)]
    enum T {
        Syn,
        SynAck,
        Ack,
        Fin,
        Udp,
    }

    fn frame(client: bool, proto_port: (u16, u16), t: T) -> Vec<u8> {
        let (cport, vport) = proto_port;
        let b = if client {
            PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC).ipv4(CLIENT, VIP, 64)
        } else {
            PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC).ipv4(RS, CLIENT, 64)
        };
        // The server listens on the VIP's port 21 for FTP, on 8080 otherwise.
        let rport = if vport == 21 { 21 } else { 8080 };
        let (s, d) = if client {
            (cport, vport)
        } else {
            (rport, cport)
        };
        let mut v = Vec::new();
        match t {
            T::Udp => b.udp(s, d).write(&mut v, b"x"),
            T::Syn => b.tcp(s, d, 1, 1000).syn().write(&mut v, b""),
            T::SynAck => b.tcp(s, d, 1, 1000).syn().ack(2).write(&mut v, b""),
            T::Ack => b.tcp(s, d, 2, 1000).ack(2).write(&mut v, b"GET"),
            T::Fin => b.tcp(s, d, 5, 1000).fin().ack(2).write(&mut v, b""),
        }
        .unwrap();
        v
    }

    fn send(h: &Harness, now: u64, client: bool, mut f: Vec<u8>) {
        let meta = if client { FROM_CLIENT } else { FROM_RS };
        let v = h.dp.process(&h.snap, now, meta, &mut f);
        assert!(matches!(v, Verdict::Tx { .. }), "{v:?}");
    }

    fn nat() -> Real {
        real_by("198.19.0.11:8080", Forward::Masq)
    }

    /// Client packets until the connection is offered: the handshake's ACK was the 2nd.
    fn long(h: &Harness, cport: u16, vport: u16, from: u64) {
        // A UDP service's port is 9000 here.
        let t = if vport == 9000 { T::Udp } else { T::Ack };
        for n in from..u64::from(crate::consts::OFFLOAD_AFTER_PACKETS) {
            send(h, 10 + n, true, frame(true, (cport, vport), t));
        }
    }

    #[test]
    fn a_long_tcp_connection_is_offered_once_and_withdrawn_at_its_fin() {
        let (h, r) = harness(Protocol::Tcp, 80, nat());
        send(&h, 1, true, frame(true, (40000, 80), T::Syn));
        send(&h, 2, false, frame(false, (40000, 80), T::SynAck));
        send(&h, 3, true, frame(true, (40000, 80), T::Ack));
        assert_eq!(r.take(), vec![], "not a short connection");
        // Up to the last packet before the count.
        for n in 2..crate::consts::OFFLOAD_AFTER_PACKETS - 1 {
            send(&h, 4 + u64::from(n), true, frame(true, (40000, 80), T::Ack));
        }
        assert_eq!(r.take(), vec![]);
        send(&h, 20, true, frame(true, (40000, 80), T::Ack));
        let (client, vip, rs) = (
            IpAddr::from(CLIENT),
            IpAddr::from(VIP),
            IpAddr::from(Ipv4Addr::from(RS)),
        );
        let key = |saddr, sport, daddr, dport| ConnKey {
            proto: Protocol::Tcp,
            saddr,
            sport,
            daddr,
            dport,
        };
        assert_eq!(
            r.take(),
            vec![Asked::Offer(vec![
                Flow {
                    key: key(client, 40000, vip, 80),
                    to: key(client, 40000, rs, 8080),
                    link: Link {
                        iface: 1,
                        src_mac: SERVER_IF_MAC,
                        dst_mac: rs_mac(11),
                    },
                    mtu: 0,
                    inbound: true,
                    encap: None,
                },
                Flow {
                    key: key(rs, 8080, client, 40000),
                    to: key(vip, 80, client, 40000),
                    link: Link {
                        iface: 0,
                        src_mac: CLIENT_IF_MAC,
                        dst_mac: CLIENT_MAC,
                    },
                    mtu: 0,
                    inbound: false,
                    encap: None,
                },
            ])]
        );
        // Its packets after that ask nothing more (those the program missed).
        send(&h, 21, true, frame(true, (40000, 80), T::Ack));
        send(&h, 22, false, frame(false, (40000, 80), T::Ack));
        assert_eq!(r.take(), vec![]);
        send(&h, 23, true, frame(true, (40000, 80), T::Fin));
        assert_eq!(
            r.take(),
            vec![Asked::Withdraw(vec![
                key(client, 40000, vip, 80),
                key(rs, 8080, client, 40000)
            ])]
        );
    }

    #[test]
    fn a_udp_flow_is_offered_at_the_count_whatever_its_answers() {
        let (h, r) = harness(
            Protocol::Udp,
            9000,
            real_by("198.19.0.11:8080", Forward::Masq),
        );
        send(&h, 1, true, frame(true, (40000, 9000), T::Udp));
        send(&h, 2, false, frame(false, (40000, 9000), T::Udp));
        assert_eq!(r.take(), vec![], "not a query and its answer");
        long(&h, 40000, 9000, 1);
        let asked = r.take();
        assert!(
            matches!(&asked[..], [Asked::Offer(f)] if f.len() == 2),
            "{asked:?}"
        );
    }

    #[test]
    fn a_quiet_udp_flow_stays_with_wvs_until_it_is_busy() {
        let (h, r) = harness(
            Protocol::Udp,
            9000,
            real_by("198.19.0.11:8080", Forward::Masq),
        );
        let gap = crate::consts::OFFLOAD_UDP_GAP_MS;
        let after = u64::from(crate::consts::OFFLOAD_AFTER_PACKETS);
        // A datagram every OFFLOAD_UDP_GAP_MS: past the count three times over, not offered.
        let mut now = 1;
        for _ in 0..after * 3 {
            send(&h, now, true, frame(true, (40000, 9000), T::Udp));
            now += gap;
        }
        assert_eq!(r.take(), vec![], "a quiet flow is the rings'");
        // Then busy: offered at the next count.
        for _ in 0..after {
            send(&h, now, true, frame(true, (40000, 9000), T::Udp));
            now += 1;
        }
        let asked = r.take();
        assert!(
            matches!(&asked[..], [Asked::Offer(f)] if f.len() == 2),
            "{asked:?}"
        );
    }

    #[test]
    fn a_direct_routing_udp_flow_is_offered_one_way() {
        let (h, r) = harness(Protocol::Udp, 9000, real_by("198.19.0.11", Forward::Route));
        send(&h, 1, true, frame(true, (40000, 9000), T::Udp));
        long(&h, 40000, 9000, 1);
        let asked = r.take();
        assert!(
            matches!(&asked[..], [Asked::Offer(f)] if f.len() == 1 && f[0].to == f[0].key),
            "only the client's packets, addresses unchanged: {asked:?}"
        );
        send(&h, 30, true, frame(true, (40000, 9000), T::Udp));
        assert_eq!(r.take(), vec![], "once");
    }

    #[test]
    fn helpers_and_checksummed_tunnels_stay_with_wvs() {
        // FTP's control connection: its helper reads every segment.
        let (h, r) = harness(Protocol::Tcp, 21, real_by("198.19.0.11:21", Forward::Masq));
        send(&h, 1, true, frame(true, (40000, 21), T::Syn));
        send(&h, 2, false, frame(false, (40000, 21), T::SynAck));
        send(&h, 3, true, frame(true, (40000, 21), T::Ack));
        long(&h, 40000, 21, 2);
        assert_eq!(r.take(), vec![], "a helper's connection");
        // A GRE checksum covers the whole packet: not the program's.
        let csum = tunnel(TunKind::Gre, 0, TunCsum::Csum);
        assert_eq!(tunnelled(csum), vec![], "a tunnel with a checksum");
    }

    /// The client's packets of a TCP connection to a tunnel server, in frames with room
    /// for the outer header (the datapath writes it in place): what the sink was asked.
    fn tunnelled(fwd: Forward) -> Vec<Asked> {
        let (h, r) = harness(
            Protocol::Tcp,
            80,
            Real {
                fwd,
                ..real_by("198.19.0.11", Forward::Masq)
            },
        );
        let mut segs = vec![(1, T::Syn)];
        segs.extend((2..12).map(|n| (n, T::Ack)));
        for (now, t) in segs {
            let mut buf = frame(true, (40000, 80), t);
            let len = buf.len();
            buf.resize(2048, 0);
            let headers = crate::datapath::Headers::parse(&buf[..len]);
            let mut sink = crate::xmit::gso::NoSink;
            let v =
                h.dp.process_in_buffer(&h.snap, now, FROM_CLIENT, &headers, &mut buf, &mut sink);
            assert!(matches!(v, Verdict::Send { .. }), "{v:?}");
        }
        r.take()
    }

    /// A tunnel's flow: the client's packets only, unchanged inside the outer header that
    /// `xmit::tunnel` writes (GUE's source port from the connection's hash).
    #[test]
    fn a_tunnel_flow_carries_its_outer_header() {
        let key = ConnKey {
            proto: Protocol::Tcp,
            saddr: IpAddr::from(CLIENT),
            sport: 40000,
            daddr: IpAddr::from(VIP),
            dport: 80,
        };
        let hash = crate::xmit::tunnel::flow_hash(
            key.proto,
            (key.saddr, key.sport),
            (key.daddr, key.dport),
        );
        for (kind, port, ports) in [
            (TunKind::Ipip, 0, (0, 0)),
            (TunKind::Gre, 0, (0, 0)),
            (
                TunKind::Gue,
                6080,
                (crate::xmit::tunnel::flow_port(hash), 6080),
            ),
        ] {
            let asked = tunnelled(tunnel(kind, port, TunCsum::None));
            let [Asked::Offer(flows)] = &asked[..] else {
                panic!("{kind:?}: offered once: {asked:?}")
            };
            assert_eq!(
                flows[..],
                [Flow {
                    key,
                    to: key,
                    link: flows[0].link,
                    mtu: 0,
                    inbound: true,
                    encap: Some(Encap {
                        kind,
                        src: IpAddr::from(crate::testkit::SOURCE),
                        dst: IpAddr::from(Ipv4Addr::from(RS)),
                        ports,
                        ident: hash as u16,
                        pmtu_disc: true,
                    }),
                }],
                "{kind:?}"
            );
        }
    }

    /// A NAT connection through its handshake and past the count: the flows it offered.
    fn offered_nat() -> (Harness, Record, Vec<Flow>) {
        let (h, r) = harness(Protocol::Tcp, 80, nat());
        send(&h, 1, true, frame(true, (40000, 80), T::Syn));
        send(&h, 2, false, frame(false, (40000, 80), T::SynAck));
        send(&h, 3, true, frame(true, (40000, 80), T::Ack));
        long(&h, 40000, 80, 2);
        let Some(Asked::Offer(flows)) = r.take().pop() else {
            panic!("offered")
        };
        (h, r, flows)
    }

    /// The keeper takes a flow out while its server is down; once the server is up, the
    /// connection's packets through wvs offer it again.
    #[test]
    fn a_tcp_flow_taken_out_while_its_server_was_down_is_offered_again() {
        let (h, r, flows) = offered_nat();
        let d = h.snap.dests().next().unwrap();
        d.set_health(true, false);
        assert!(
            !merge(
                &h.conns,
                &flows[0].key,
                Carried::default(),
                0,
                &SyncSettings::default()
            ),
            "taken out while its server is down"
        );
        let after = u64::from(crate::consts::OFFLOAD_AFTER_PACKETS);
        for n in 0..after {
            send(&h, 30 + n, true, frame(true, (40000, 80), T::Ack));
        }
        assert_eq!(r.take(), vec![], "not while it is down");
        d.set_health(false, false);
        for n in 0..after {
            send(&h, 40 + n, true, frame(true, (40000, 80), T::Ack));
        }
        assert_eq!(r.take(), vec![Asked::Offer(flows)], "once it is up");
    }

    /// With the sync daemon's master running, the client's carried packets count toward
    /// `sync_threshold` as through wvs: a record at a merge whose packets reached a count of
    /// 3 modulo 50 (IPVS's default), one for several such counts, none for the other
    /// merges, none for the replies' packets.
    #[test]
    fn carried_packets_count_toward_the_sync_threshold() {
        let (h, _, flows) = offered_nat();
        h.conns.sync().start_master(64);
        let sync = SyncSettings::default();
        let slot = crate::consts::OFFLOAD_SLOT;
        let merged = |key: &ConnKey, packets: u64| {
            let carried = Carried {
                packets,
                bytes: packets * 100,
                seen: Some(20_000),
            };
            assert!(merge(&h.conns, key, carried, slot, &sync));
            let mut out = Vec::new();
            h.conns.sync().drain(slot, &mut out);
            out.iter().map(|r| (r.cport, r.dport)).collect::<Vec<_>>()
        };
        let conn = vec![(40000, 8080)];
        // Eight client packets through wvs, then 40 carried: 48, short of 53.
        assert_eq!(merged(&flows[0].key, 40), vec![]);
        assert_eq!(merged(&flows[0].key, 10), conn, "the 53rd");
        assert_eq!(merged(&flows[0].key, 40), vec![], "98");
        assert_eq!(
            merged(&flows[0].key, 120),
            conn,
            "the 103rd to the 203rd: once"
        );
        assert_eq!(merged(&flows[1].key, 500), vec![], "replies");
        h.conns.sync().stop_master();
        assert_eq!(merged(&flows[0].key, 100), vec![], "no master");
    }

    #[test]
    fn the_merge_counts_what_was_carried_and_keeps_the_timer() {
        let (h, _, flows) = offered_nat();
        let d = h.snap.dests().next().unwrap();
        let before = d.stats.totals();
        let carried = Carried {
            packets: 10,
            bytes: 1000,
            seen: Some(500_000),
        };
        assert!(merge(
            &h.conns,
            &flows[0].key,
            carried,
            crate::consts::OFFLOAD_SLOT,
            &SyncSettings::default(),
        ));
        assert!(merge(
            &h.conns,
            &flows[1].key,
            carried,
            crate::consts::OFFLOAD_SLOT,
            &SyncSettings::default(),
        ));
        let after = d.stats.totals();
        assert_eq!(
            (after.inpkts - before.inpkts, after.inbytes - before.inbytes),
            (10, 1000)
        );
        assert_eq!(
            (
                after.outpkts - before.outpkts,
                after.outbytes - before.outbytes
            ),
            (10, 1000)
        );
        // The timer runs from the last carried packet: ESTABLISHED's 900 s.
        h.conns.sweep(500_000 + 899_000);
        assert_eq!(h.conns.len(), 1, "not expired while carried");
        h.conns.sweep(500_000 + 901_000);
        assert_eq!(h.conns.len(), 0);
        assert!(
            !merge(
                &h.conns,
                &flows[0].key,
                Carried::default(),
                crate::consts::OFFLOAD_SLOT,
                &SyncSettings::default(),
            ),
            "a connection gone takes its flows out"
        );
    }
}
