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
use crate::model::{Forward, Protocol};
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
/// rewrites headers (NAT, full NAT, direct routing) within one address family, no
/// application helper or expectation, a server still there, and a state only a SYN, FIN or
/// RST changes. (UDP has no state: when a flow qualifies is [`step`]'s rule.)
pub(crate) fn eligible(c: &Conn) -> bool {
    let method = matches!(c.fwd, Forward::Masq | Forward::FullNat | Forward::Route);
    let v4 = c.caddr().is_ipv4();
    let family = [c.vaddr(), c.raddr(), c.laddr()]
        .iter()
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
}

/// Which lookup a packet of the connection went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moment {
    /// A client's packet.
    In,
    /// A server's reply.
    Out,
}

/// What a packet of `c` at `moment`, which found it in TCP state `was`, asks of the
/// offload. Decided by transitions, so that a connection carries no mark of its own (the
/// entry stays 88 bytes): a TCP connection is offered as it becomes ESTABLISHED and
/// withdrawn as it leaves it; a UDP flow is offered at each answer that reaches wvs (the
/// sink takes it once: after that its answers pass wvs by) or, when its answers bypass wvs
/// (direct routing), at the client's second packet.
pub(crate) fn step(c: &Conn, moment: Moment, was: TcpState) -> Step {
    match c.proto {
        Protocol::Tcp if c.state == was => Step::Keep,
        Protocol::Tcp if c.state == TcpState::Established => {
            if eligible(c) {
                Step::Offer
            } else {
                Step::Keep
            }
        }
        Protocol::Tcp if was == TcpState::Established => Step::Withdraw,
        Protocol::Udp
            if match (c.fwd, moment) {
                (Forward::Route, _) => c.in_pkts == 2,
                (_, Moment::Out) => true,
                (_, Moment::In) => false,
            } && eligible(c) =>
        {
            Step::Offer
        }
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
/// whose replies bypass wvs): the client's packets to the server, then the replies.
pub(crate) fn flows(c: &Conn, to_real: Link, to_client: Option<Link>) -> ([Flow; 2], usize) {
    let key = c.in_key();
    let to = match c.fwd {
        Forward::Route => key,
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
        mtu: c.dest.mtu(),
        inbound: true,
    };
    let Some(back) = to_client else {
        return ([inbound; 2], 1);
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
    };
    ([inbound, reply], 2)
}

/// The keys `c`'s flows are carried under.
pub(crate) fn keys(c: &Conn) -> [ConnKey; 2] {
    [c.in_key(), c.out_key()]
}

/// Take back what the kernel carried for the flow `key`: its packets and bytes onto the
/// connection's server and service (in the counters' slot `slot`, which only the caller
/// writes), and its last packet's time into the connection's timer. Returns whether the
/// flow may stay in the kernel: `false` when its connection is gone or no longer eligible
/// (its server removed, its state moved on), and the caller takes it out.
pub fn merge(table: &ConnTable, key: &ConnKey, carried: Carried, slot: usize) -> bool {
    let take = |c: &mut Conn, inbound: bool| {
        if carried.packets > 0 {
            let (d, s) = (c.dest.stats.worker(slot), c.svc_stats.worker(slot));
            if inbound {
                d.packets_in(carried.packets, carried.bytes);
                s.packets_in(carried.packets, carried.bytes);
                let n = u32::try_from(carried.packets).unwrap_or(u32::MAX);
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
        // Still carried while nothing but a SYN, FIN or RST (which the program leaves to
        // wvs) could change it.
        eligible(c)
            && (c.proto != Protocol::Tcp || c.state == TcpState::Established)
            && !table.sync().is_master()
    };
    if let Some(stay) = table.with_conn(KeyDir::In, key, |c| take(c, true)) {
        return stay;
    }
    table
        .with_conn(KeyDir::Out, key, |c| take(c, false))
        .unwrap_or(false)
}

/// An IPv4 address as the offload map holds every address: mapped into IPv6's.
pub fn wide(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}
