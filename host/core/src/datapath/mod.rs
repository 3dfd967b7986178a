//! The datapath: a pure function from a received frame to a verdict.
//!
//! [`Datapath::process`] takes the frame's bytes (rewritten in place), which interface it
//! came in on, the time, the service [`Snapshot`] and the shared [`ConnTable`], and says
//! whether to send the frame out of one of wvs's interfaces, drop it (with a counted
//! [`DropReason`]), or leave it alone because it is not wvs's (the kernel got its own copy).
//! It does no I/O and reads no clock, so every IPVS rule it follows (`ip_vs_in`, `ip_vs_out`,
//! the TCP state table, NAT) is unit- and property-tested with synthetic frames.
//!
//! Per packet it allocates nothing and takes one shard lock of the connection table. A new
//! connection also takes its service's scheduler lock.

mod app;
mod headers;
mod icmp;
mod reset;
pub mod stats;
mod synproxy;

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// The transmit buffers the I/O layer lends for segments and fragments (defined with the
/// transmitters that fill them).
pub use crate::xmit::gso::{SegmentSink, SegmentTo};
pub use headers::{EthHeader, Headers, Ipv4Header, Ipv6Fragment, Ipv6Header, Net};
pub use stats::{DatapathStats, DropReason, StatsSum};

use crate::conn::table::KeyDir;
use crate::conn::{
    Conn, ConnKey, ConnTable, Direction, InsertError, SctpEvent, TcpFlags, TcpState,
};
use crate::model::{Forward, Protocol};
use crate::service::{Dest, NextHop, Snapshot, VirtualService};
use crate::wire::checksum::CsumMode;
use crate::wire::sctp::SctpPacket;
use crate::wire::{
    ETHERNET_HEADER_LEN, EthernetAddress, EthernetFrame, Ipv4Packet, TcpPacket, UdpPacket,
    checksum, ipv4_field, ipv6_field, tcp_field, udp_field,
};
use crate::xmit;

/// What the I/O layer knows about a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// Index of the interface (in the `--iface` list) the frame came in on.
    pub iface: u8,
    /// State of the frame's L4 checksum.
    pub csum: CsumMode,
    /// The payload size of the segments the kernel will cut a GSO super-packet into on
    /// send; 0 for a plain frame.
    pub gso_size: u16,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the frame, rewritten in place, out of this interface: at its received length
    /// and with the offloads it was received with (the fast path's verdict).
    Tx {
        /// Index of the interface in the `--iface` list.
        iface: u8,
    },
    /// Drop it, counted under this reason.
    Drop(DropReason),
    /// Refused, counted under `reason`, and its sender is owed an ICMP error that needs
    /// more than the reason says. A handler's answer: [`Datapath::process_in_buffer`] writes
    /// the error (then [`Verdict::Send`]) or drops it ([`Verdict::Drop`]), and
    /// [`Datapath::process`] drops it; neither returns this.
    Refused {
        /// Why.
        reason: DropReason,
        /// What the answer needs.
        answer: Answer,
    },
    /// Not wvs's: leave it to the kernel.
    Pass,
    /// Hand the IP packet (from the end of the Ethernet header, `len` bytes, checksums
    /// complete) to the balancer's own stack, addressed to `daddr`: a local real server, or
    /// bypass.
    Stack {
        /// The packet's destination.
        daddr: IpAddr,
        /// Length of the IP packet.
        len: usize,
    },
    /// A GSO super-packet was cut into `count` segments, each handed to the segment sink
    /// to send; nothing is sent from the received buffer.
    Segmented {
        /// How many segments were sent.
        count: usize,
    },
    /// Send `len` bytes from the start of the buffer out of this interface: the frame
    /// rewritten in place at a new length, or a packet wvs wrote there (an encapsulation,
    /// an ICMP answer from [`Datapath::process_in_buffer`]).
    Send {
        /// Index of the interface in the `--iface` list.
        iface: u8,
        /// Length of the frame.
        len: usize,
        /// What the kernel still has to do for it.
        offloads: Offloads,
    },
}

/// What a frame sent with [`Verdict::Send`] still needs from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloads {
    /// Those it was received with (a GSO super-packet, a partial checksum): the received
    /// frame, rewritten in place, whose payload an application helper resized.
    AsReceived,
    /// None: wvs wrote the packet whole, checksums complete, one segment.
    None,
}

/// What the ICMP error owed for a [`Verdict::Refused`] packet needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Fragmentation needed, with the path's MTU (`__ip_vs_get_out_rt`).
    FragNeeded {
        /// The MTU the sender is to use.
        mtu: u16,
    },
    /// Port unreachable from wvs's own address towards the sender (`nat_icmp_send`).
    PortUnreachableFrom(IpAddr),
}

/// One of wvs's interfaces as the datapath sees it.
#[derive(Debug)]
pub struct Iface {
    /// Its MAC address: frames to it are candidates, frames from wvs carry it. It changes
    /// when the interface is created again (or given another address) while wvs runs.
    mac: std::sync::atomic::AtomicU64,
}

impl Iface {
    /// An interface with MAC address `mac`.
    pub fn new(mac: [u8; 6]) -> Self {
        let s = Self {
            mac: Default::default(),
        };
        s.set_mac(mac);
        s
    }

    /// Its MAC address now.
    pub fn mac(&self) -> [u8; 6] {
        let b = self
            .mac
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    /// Its new MAC address.
    pub fn set_mac(&self, mac: [u8; 6]) {
        let mut b = [0u8; 8];
        b[..6].copy_from_slice(&mac);
        self.mac
            .store(u64::from_le_bytes(b), std::sync::atomic::Ordering::Relaxed);
    }
}

/// A worker's datapath: shared connection table, interface list, own counters.
#[derive(Debug)]
pub struct Datapath {
    conns: Arc<ConnTable>,
    ifaces: Arc<[Iface]>,
    stats: Arc<DatapathStats>,
    /// This worker's slot in every traffic counter.
    worker: usize,
    /// Token bucket of the ICMP errors wvs sends itself (tokens, last refill in ms).
    icmp_bucket: std::cell::Cell<(u32, u64)>,
    /// This worker's `drop_packet` countdown (IPVS's `drop_counter`).
    drop_counter: std::cell::Cell<u32>,
    /// Where connections that need no more decisions are offered (`--offload tc`).
    offload: Option<Box<dyn crate::offload::FlowSink>>,
}

/// The parts of a classified TCP/UDP packet (IPv4 or IPv6) the handlers need.
#[derive(Clone, Copy)]
struct L4Info {
    proto: Protocol,
    saddr: IpAddr,
    daddr: IpAddr,
    sport: u16,
    dport: u16,
    /// Where the upper layer starts in the IP packet.
    l4_off: usize,
    total_len: usize,
    flags: TcpFlags,
    /// What an SCTP packet's chunks say to the state table (DATA for TCP and UDP).
    chunks: SctpEvent,
}

/// A received packet as the handlers see it: the snapshot it is handled under, the time,
/// how it came in and its parsed headers (a helper's rewrite updates the last two).
#[derive(Clone, Copy)]
struct Rx<'s> {
    snap: &'s Snapshot,
    now: u64,
    meta: RxMeta,
    info: L4Info,
}

impl L4Info {
    fn key(&self) -> ConnKey {
        ConnKey {
            proto: self.proto,
            saddr: self.saddr,
            sport: self.sport,
            daddr: self.daddr,
            dport: self.dport,
        }
    }

    /// What moves a connection's state: TCP's flags, SCTP's chunks.
    #[inline]
    fn events(&self) -> (TcpFlags, SctpEvent) {
        (self.flags, self.chunks)
    }

    /// A SYN without ACK or RST, or an SCTP INIT: the packets that may start a connection
    /// over an old one's ports (`is_new_conn`).
    fn is_new_syn(&self) -> bool {
        match self.proto {
            Protocol::Tcp => self.flags.syn && !self.flags.ack && !self.flags.rst,
            Protocol::Sctp => self.chunks == SctpEvent::Init,
            Protocol::Udp => false,
        }
    }
}

/// What the connection lookup of an inbound packet decided.
// Returned by value for one call: boxing the large variant would allocate per packet.
#[allow(clippy::large_enum_variant)]
enum InLookup {
    Forward(InForward),
    Drop(DropReason),
    Reschedule,
}

/// Where a client's packet goes: its connection's real server and how to reach it.
struct InForward {
    daddr: IpAddr,
    dport: u16,
    hop: Option<NextHop>,
    fwd: Forward,
    src: IpAddr,
    mtu: u32,
    local: (IpAddr, u16),
    app: Option<app::AppCtx>,
}

/// What a packet's connection lookup needs besides the connection, the same for both
/// directions' lookups.
struct Lookup<'a> {
    info: &'a L4Info,
    now: u64,
    timeouts: &'a crate::spec::StateTimeouts,
    secure: bool,
    /// Where the client's packet came from (inbound only): a connection made from a sync
    /// message learns its next hop back from it.
    client_hop: Option<NextHop>,
}

impl Datapath {
    /// A datapath over a shared table, with its own counters. `worker` is its slot in the
    /// traffic counters of services and real servers (below `MAX_WORKERS`).
    pub fn new(
        conns: Arc<ConnTable>,
        ifaces: Arc<[Iface]>,
        stats: Arc<DatapathStats>,
        worker: usize,
    ) -> Self {
        Self {
            conns,
            ifaces,
            stats,
            worker,
            icmp_bucket: std::cell::Cell::new((crate::consts::ICMP_REPLY_BURST, 0)),
            drop_counter: std::cell::Cell::new(0),
            offload: None,
        }
    }

    /// Offer the connections whose packets need no more decisions to `sink` (and withdraw
    /// them when their state moves on).
    pub fn set_offload(&mut self, sink: Box<dyn crate::offload::FlowSink>) {
        self.offload = Some(sink);
    }

    /// Offer `c`'s flows, or withdraw them, after one of its packets at `moment` that found
    /// it in TCP state `was`, `gap_ms` after its previous one (`offload::step`). Nothing to
    /// do for most packets.
    #[inline]
    fn offload_step(
        &self,
        c: &Conn,
        moment: crate::offload::Moment,
        was: TcpState,
        gap_ms: u64,
        pmtu_disc: bool,
    ) {
        use crate::offload::{self, Step};
        let Some(sink) = &self.offload else {
            return;
        };
        match offload::step(c, moment, was, gap_ms) {
            Step::Keep => return,
            Step::Withdraw => return sink.withdraw(&offload::keys(c)),
            // (With the sync daemon's master, the keeper counts the carried packets toward
            // `sync_threshold`: `offload::merge`.)
            Step::Offer => {}
        }
        let Ok(to_real) = self.link_in(c.fwd, c.dest.next_hop(), 0) else {
            return;
        };
        let to_client = if c.fwd.sees_replies() {
            let hop = c.client_hop;
            let Some(out_if) = self.ifaces.get(usize::from(hop.iface)) else {
                // Not known yet (a connection made from a sync message, until its
                // client's first packet): it stays with wvs.
                return;
            };
            Some(xmit::Link {
                iface: hop.iface,
                src_mac: out_if.mac(),
                dst_mac: hop.mac,
            })
        } else {
            None
        };
        let Some((flows, n)) = offload::flows(c, to_real, to_client, pmtu_disc) else {
            return;
        };
        match sink.offer(&flows[..n]) {
            offload::Offered::Taken => stats::bump(&self.stats.offloaded),
            offload::Offered::Held => {}
            offload::Offered::Refused => stats::bump(&self.stats.offload_refused),
        }
    }

    /// Where the connection table will look for the connection of `frame` (an Ethernet
    /// frame), one address per direction the packet could be travelling in, for the I/O
    /// layer to prefetch before it processes a batch. Nothing for what is not TCP or UDP.
    pub fn lookup_hint(&self, headers: &Headers) -> Option<[*const u8; 2]> {
        let (proto, saddr, daddr, (sport, dport)) = if let Some(ip) = headers.ipv4() {
            (ip.l4_proto()?, ip.saddr.into(), ip.daddr.into(), ip.ports?)
        } else {
            let ip = headers.ipv6()?;
            (ip.l4_proto()?, ip.saddr.into(), ip.daddr.into(), ip.ports?)
        };
        let key = ConnKey {
            proto,
            saddr,
            sport,
            daddr,
            dport,
        };
        Some([
            self.conns.shard_hint(KeyDir::In, &key),
            self.conns.shard_hint(KeyDir::Out, &key),
        ])
    }

    /// Return the worker's counters.
    pub fn stats(&self) -> &Arc<DatapathStats> {
        &self.stats
    }

    /// Decide what to do with one received frame, rewriting it in place when it is to be
    /// sent, and count the outcome. `now` is in milliseconds on a monotonic clock. With no
    /// room after the frame, a packet that must grow (a tunnel's) is dropped.
    pub fn process(&self, snap: &Snapshot, now: u64, meta: RxMeta, frame: &mut [u8]) -> Verdict {
        let headers = Headers::parse(frame);
        match self.process_in(snap, now, meta, &headers, frame, &mut xmit::gso::NoSink) {
            Verdict::Refused { reason, .. } => Verdict::Drop(reason),
            v => v,
        }
    }

    fn process_in(
        &self,
        snap: &Snapshot,
        now: u64,
        meta: RxMeta,
        headers: &Headers,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Verdict {
        stats::bump(&self.stats.rx);
        let v = self.classify(snap, now, meta, headers, buf, sink);
        match v {
            Verdict::Tx { .. }
            | Verdict::Send { .. }
            | Verdict::Stack { .. }
            | Verdict::Segmented { .. } => {}
            Verdict::Drop(r) | Verdict::Refused { reason: r, .. } => self.stats.count_drop(r),
            Verdict::Pass => stats::bump(&self.stats.passed),
        }
        v
    }

    /// As [`process`](Self::process), for a frame whose `headers` the I/O layer read (the
    /// frame is their `len` bytes at the start of a larger buffer), with `sink`'s buffers to cut a GSO super-packet into segments when its
    /// transmitter cannot send it whole (a tunnel's). The room lets wvs answer in place, as
    /// the director would: a new connection that no real server can take gets an ICMP port
    /// unreachable from the VIP, as IPVS sends (`ip_vs_leave`), and a TCP segment of no
    /// connection gets a reset from the VIP, as the director's own stack answers what IPVS
    /// lets through (see [`reset`]), so clients fail at once instead of retrying. A client's
    /// packet whose TTL runs out gets ICMP time exceeded, and one with DF too long for the
    /// path to its server ICMP fragmentation needed with the path's MTU
    /// (`__ip_vs_get_out_rt`), both from the VIP. All share one rate limit per worker.
    pub fn process_in_buffer(
        &self,
        snap: &Snapshot,
        now: u64,
        meta: RxMeta,
        headers: &Headers,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Verdict {
        let len = headers.len.min(buf.len());
        let (reason, answer) = match self.process_in(snap, now, meta, headers, buf, sink) {
            Verdict::Drop(reason) => (reason, None),
            Verdict::Refused { reason, answer } => (reason, Some(answer)),
            v => return v,
        };
        let v = Verdict::Drop(reason);
        // IPv6's answers are ICMPv6's (RFC 4443), quoting as much as fits in 1280 bytes.
        let v6 = headers.ipv6().map(|h| h.l4_off);
        let icmp6 =
            |buf: &mut [u8], kind_code, word| icmp::error_v6(buf, len, kind_code, word, None);
        use icmp::v6 as t6;
        // Written first (a dropped frame may be overwritten), so that what is never
        // answered (a reset, a truncated segment) takes no token.
        let written = match (reason, answer, v6) {
            (_, Some(Answer::FragNeeded { mtu }), Some(_)) => {
                icmp6(buf, (t6::PACKET_TOO_BIG, 0), u32::from(mtu).to_be_bytes())
            }
            (_, Some(Answer::FragNeeded { mtu }), None) => icmp::frag_needed(buf, len, mtu),
            (_, Some(Answer::PortUnreachableFrom(IpAddr::V6(src))), Some(_)) => icmp::error_v6(
                buf,
                len,
                (t6::DEST_UNREACHABLE, t6::PORT_UNREACHABLE),
                [0; 4],
                Some(src),
            ),
            (_, Some(Answer::PortUnreachableFrom(IpAddr::V4(src))), None) => {
                icmp::port_unreachable_from(buf, len, src)
            }
            (_, Some(Answer::PortUnreachableFrom(_)), _) => None,
            (DropReason::NoDest, None, Some(_)) => {
                icmp6(buf, (t6::DEST_UNREACHABLE, t6::PORT_UNREACHABLE), [0; 4])
            }
            (DropReason::NoDest, None, None) => icmp::port_unreachable(buf, len),
            // Only TCP's (an SCTP packet of no association is dropped; the director's
            // SCTP stack, where it runs one, would answer an ABORT). An ACK that returned no
            // cookie is a segment of no connection too: a client whose synproxied
            // connection timed out waiting for its server learns it so.
            (DropReason::NoConnIn | DropReason::SynproxyBadAck, None, l4_off)
                if headers
                    .ipv4()
                    .map(|h| h.next)
                    .or(headers.ipv6().map(|h| h.next))
                    == Some(6) =>
            {
                reset::tcp_reset(buf, len, l4_off.unwrap_or_default())
            }
            // A client's packet, not a reply on its way out (that one is the kernel's
            // business in IPVS, and wvs has no address of its own to answer from).
            (DropReason::TtlExceeded, None, Some(_)) if to_vip(snap, headers) => {
                icmp6(buf, (t6::TIME_EXCEEDED, 0), [0; 4])
            }
            (DropReason::TtlExceeded, None, None) if to_vip(snap, headers) => {
                icmp::time_exceeded(buf, len)
            }
            _ => return v,
        };
        let Some(n) = written else {
            return v;
        };
        if !self.icmp_token(now) {
            return v;
        }
        if matches!(reason, DropReason::NoConnIn | DropReason::SynproxyBadAck) {
            stats::bump(&self.stats.resets_sent);
        } else {
            stats::bump(&self.stats.icmp_sent);
        }
        Verdict::Send {
            iface: meta.iface,
            len: n,
            offloads: Offloads::None,
        }
    }

    /// Take a token from the ICMP bucket, refilled at `ICMP_REPLY_RATE` per second.
    fn icmp_token(&self, now: u64) -> bool {
        use crate::consts::{ICMP_REPLY_BURST, ICMP_REPLY_RATE};
        let (tokens, last) = self.icmp_bucket.get();
        let refill = now.saturating_sub(last) * u64::from(ICMP_REPLY_RATE) / 1000;
        let (tokens, last) = if refill > 0 {
            (
                (u64::from(tokens) + refill).min(u64::from(ICMP_REPLY_BURST)) as u32,
                now,
            )
        } else {
            (tokens, last)
        };
        let ok = tokens > 0;
        self.icmp_bucket.set((tokens - u32::from(ok), last));
        ok
    }

    fn classify(
        &self,
        snap: &Snapshot,
        now: u64,
        meta: RxMeta,
        headers: &Headers,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Verdict {
        let Some(iface) = self.ifaces.get(usize::from(meta.iface)) else {
            return Verdict::Pass;
        };
        let len = headers.len.min(buf.len());
        let frame = &mut buf[..len];
        let Some(eth) = headers.eth else {
            return Verdict::Drop(DropReason::L2Truncated);
        };
        // Only frames sent to our MAC: not broadcasts, and not what a bridge floods to us.
        if eth.dst != EthernetAddress(iface.mac()) {
            return Verdict::Pass;
        }
        // backup_only: a backup is no director (it would loop DR and TUN packets back to
        // the master's servers).
        if snap.sysctl.backup_only && self.conns.sync().is_backup() {
            return Verdict::Pass;
        }
        let ip = &frame[ETHERNET_HEADER_LEN..];
        let own = self.conns.own();
        let parsed = match eth.net {
            Net::Ipv4(Ok(head)) => l4_of_ipv4(snap, own, ip, &head, meta.csum),
            Net::Ipv6(Ok(head)) => l4_of_ipv6(snap, own, ip, &head, meta.csum),
            Net::Ipv4(Err(r)) | Net::Ipv6(Err(r)) => return Verdict::Drop(r),
            Net::Other => return Verdict::Pass,
        };
        let client_mac = eth.src.0;
        let info = match parsed {
            Ok(Parsed::L4(info)) => info,
            // The whole buffer: an error rebuilt in the other family may grow.
            Ok(Parsed::IcmpError(e)) => return self.icmp_error(snap, &e, buf),
            Ok(Parsed::NotOurs) => return Verdict::Pass,
            Err(r) => return Verdict::Drop(r),
        };
        let hop = NextHop {
            iface: meta.iface,
            mac: client_mac,
        };
        let (daddr, saddr) = (info.daddr, info.saddr);
        let rx = Rx {
            snap,
            now,
            meta,
            info,
        };
        let svc = snap.service_for(info.proto, (saddr, info.sport), (daddr, info.dport));
        if let Some(svc) = svc {
            self.inbound(rx, Some(svc), hop, buf, sink)
        } else if snap.is_real(info.proto, saddr, info.sport) {
            self.outbound(rx, buf, sink, false)
        } else if snap.is_data_vip(info.proto, daddr, info.dport) {
            // An expected connection's port on a virtual address (FTP data).
            self.inbound(rx, None, hop, buf, sink)
        } else if snap.is_data_real(info.proto, saddr, info.sport) {
            self.outbound(rx, buf, sink, true)
        } else if self
            .conns
            .own()
            .answers(info.proto, info.saddr, info.sport, info.dport)
        {
            // The answer to the director's own check through a VIP it holds (conn::own).
            let mut pkt = self.packet(buf, meta, &info);
            self.sent(xmit::stack::own_check(
                &mut pkt,
                crate::consts::CHECK_STANDIN.into(),
                info.sport,
            ))
        } else {
            Verdict::Pass
        }
    }

    /// Client -> VIP (`ip_vs_in`): find or schedule the connection, rewrite the destination.
    /// Without a service, the packet is to an expected connection's port: it has one, or
    /// none at all.
    fn inbound(
        &self,
        rx: Rx<'_>,
        svc: Option<&Arc<VirtualService>>,
        client_hop: NextHop,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Verdict {
        let Rx {
            snap, now, info, ..
        } = rx;
        let info = &info;
        let sysctl = snap.sysctl;
        let key = info.key();
        let move_udp = svc.is_some_and(|s| s.spec.udp_move);
        let l = Lookup {
            info,
            now,
            timeouts: svc.map_or(&snap.timeouts, |s| &s.timeouts),
            secure: self.conns.defense().secure_tcp(),
            client_hop: Some(client_hop),
        };
        let lookup = |c: &mut Conn| self.lookup_in(c, &l, sysctl, move_udp);
        let mut found = self.conns.with_conn(KeyDir::In, &key, lookup);
        // IPVS's NO_CPORT lookup: an expected connection waiting for this client port.
        if found.is_none() && self.conns.fill_wildcard(KeyDir::In, &key) {
            stats::bump(&self.stats.helper.expects_matched);
            found = self.conns.with_conn(KeyDir::In, &key, lookup);
        }
        let Some(svc) = svc else {
            return match found {
                Some(InLookup::Forward(_)) => self.forward_in(rx, buf, sink, found),
                Some(InLookup::Drop(r)) => Verdict::Drop(r),
                _ => Verdict::Drop(DropReason::NoConnIn),
            };
        };
        let new = found.is_none() || matches!(found, Some(InLookup::Reschedule));
        if new && info.proto == Protocol::Tcp {
            // The synproxy: a SYN gets a cookie, an ACK that returns one a connection.
            if info.is_new_syn() && self.synproxy_on(svc) {
                return self.synproxy_syn(&rx, buf);
            }
            if !info.flags.syn && info.flags.ack && self.synproxy_may(svc) {
                let mut rx = rx;
                if let Some(v) = self.synproxy_ack(&mut rx, svc, client_hop, buf, sink) {
                    return v;
                }
                if self.synproxy_on(svc) {
                    stats::bump(&self.stats.synproxy.acks_rejected);
                    return Verdict::Drop(DropReason::SynproxyBadAck);
                }
            }
        }
        if new {
            found = Some(
                match self.new_conn(svc, now, (client_hop, None), (info, buf), &key, sysctl) {
                    Ok(fwd) => fwd,
                    // Another worker added the same connection in the meantime: use it.
                    Err(None) => self
                        .conns
                        .with_conn(KeyDir::In, &key, lookup)
                        .unwrap_or(InLookup::Drop(DropReason::NoConnIn)),
                    Err(Some(r)) => InLookup::Drop(r),
                },
            );
        }
        self.forward_in(rx, buf, sink, found)
    }

    /// `ip_vs_in` on the connection `c` of a client's packet: start a new one instead, drop
    /// the packet, or count it, move the state on and say where it goes.
    #[inline]
    fn lookup_in(
        &self,
        c: &mut Conn,
        l: &Lookup<'_>,
        sysctl: crate::spec::Sysctl,
        move_udp: bool,
    ) -> InLookup {
        let info = l.info;
        // ip_vs_in's order: first a SYN reusing the ports of a connection that is over
        // (conn_reuse_mode, `is_new_conn_expected`) or whose server is quiesced
        // (with expire_nodest_conn) starts a new connection, unless the old one is
        // controlled (`cp->control`): by a persistence template, or by the control
        // connection whose helper expected it (an FTP data connection, whose port is
        // no service and could not be scheduled); then the server's state.
        let reuse = sysctl.conn_reuse_mode;
        if reuse != 0 && info.is_new_syn() {
            let over = c.template.is_none()
                && c.controller().is_none()
                && match c.proto {
                    Protocol::Sctp => c.sctp_state() == crate::conn::SctpState::Closed,
                    _ => {
                        matches!(c.state, TcpState::TimeWait | TcpState::Close)
                            || (reuse & 2 != 0 && c.state == TcpState::FinWait && c.no_output())
                    }
                };
            if over || (sysctl.expire_nodest_conn && c.dest.weight() == 0) {
                c.set_expire_now(true);
                return InLookup::Reschedule;
            }
        }
        if !c.dest.available() {
            // The server is gone. expire_nodest_conn: the connection ends with this
            // packet, and a SYN gets a new server; else the packet is dropped and the
            // connection waits for its timeout.
            if !sysctl.expire_nodest_conn {
                return InLookup::Drop(DropReason::DestGone);
            }
            c.set_expire_now(true);
            return if info.is_new_syn() {
                InLookup::Reschedule
            } else {
                InLookup::Drop(DropReason::DestGone)
            };
        }
        // A UDP flow whose server a health check finds down moves to a live one when
        // its service says so (keepalived#2163); IPVS keeps it where it is.
        if move_udp && info.proto == Protocol::Udp && c.dest.is_down() {
            c.set_expire_now(true);
            return InLookup::Reschedule;
        }
        c.in_pkts = c.in_pkts.saturating_add(1);
        if let Some(k) = c.controller_mut() {
            k.used();
        }
        let was = c.state;
        let gap_ms = l.now.saturating_sub(c.last_seen());
        // A synproxied connection whose server has not answered keeps its state and its
        // connect timeout: the client's packets only send the SYN again.
        let half = was == TcpState::SynRecv
            && c.app()
                .is_some_and(|a| a.synproxy_half.load(std::sync::atomic::Ordering::Relaxed));
        if !half {
            c.advance(Direction::Input, info.events(), l.timeouts, l.secure);
            c.touch(l.now);
        }
        if c.client_hop.iface == NextHop::UNKNOWN.iface
            && let Some(hop) = l.client_hop
        {
            c.client_hop = hop;
        }
        if self.conns.sync().is_master() {
            self.conns.sync_in(self.worker, c, l.now, &sysctl.sync);
        }
        c.dest.stats.worker(self.worker).packet_in(info.total_len);
        c.svc_stats.worker(self.worker).packet_in(info.total_len);
        self.offload_step(c, crate::offload::Moment::In, was, gap_ms, sysctl.pmtu_disc);
        InLookup::Forward(InForward {
            daddr: c.raddr(),
            dport: c.rport,
            hop: c.dest.next_hop(),
            fwd: c.fwd,
            src: c.dest.source(),
            mtu: c.dest.mtu(),
            local: (c.laddr(), c.lport),
            app: app::AppCtx::of(c),
        })
    }

    /// Send a client's packet on by what its connection lookup found.
    fn forward_in(
        &self,
        mut rx: Rx<'_>,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
        found: Option<InLookup>,
    ) -> Verdict {
        let f = match found {
            Some(InLookup::Forward(f)) => f,
            Some(InLookup::Drop(r)) => return Verdict::Drop(r),
            _ => return Verdict::Drop(DropReason::NoConnIn),
        };
        if f.app.is_some()
            && let Some(v) = self.synproxy_half_in(&mut rx, &f, buf, sink)
        {
            return v;
        }
        let helped = match &f.app {
            Some(ctx) => match self.help(&mut rx, ctx, wvs_sdk::helper_dir::IN, buf) {
                Ok(h) => h,
                Err(r) => return Verdict::Drop(r),
            },
            None => app::Helped::default(),
        };
        let link = match self.link_in(f.fwd, f.hop, rx.meta.iface) {
            Ok(l) => l,
            Err(r) => return Verdict::Drop(r),
        };
        // A tunnel needs wvs's own address on the route as its outer source.
        if matches!(f.fwd, Forward::Tunnel(_)) && f.src.is_unspecified() {
            return Verdict::Drop(DropReason::NoNextHop);
        }
        let target = xmit::Target {
            fwd: f.fwd,
            daddr: f.daddr,
            dport: f.dport,
            src: f.src,
            flow_hash: flow_hash(&rx.info),
            // A segment a helper made longer is held to the MTU by cutting it (below), not
            // refused: the sender never sent anything too long.
            mtu: if helped.resized { 0 } else { f.mtu },
            local: f.local,
            pmtu_disc: rx.snap.sysctl.pmtu_disc,
        };
        let mut pkt = self.packet(buf, rx.meta, &rx.info);
        if helped.resized {
            let r = xmit::to_real(&mut pkt, &target, link);
            return self.resized(r, &mut pkt, f.mtu, sink);
        }
        self.transmit_in(&mut pkt, sink, &target, link)
    }

    /// How a client's packet reaches its real server: the next hop's interface and MAC,
    /// or (local, bypass) the own stack, which routes or delivers itself.
    #[inline]
    fn link_in(
        &self,
        fwd: Forward,
        hop: Option<NextHop>,
        iface: u8,
    ) -> Result<xmit::Link, DropReason> {
        match (fwd, hop) {
            (Forward::Local | Forward::Bypass, _) => Ok(xmit::Link {
                iface,
                src_mac: [0; 6],
                dst_mac: [0; 6],
            }),
            (_, None) => Err(DropReason::NoNextHop),
            (_, Some(hop)) => {
                let Some(out_if) = self.ifaces.get(usize::from(hop.iface)) else {
                    return Err(DropReason::NoNextHop);
                };
                Ok(xmit::Link {
                    iface: hop.iface,
                    src_mac: out_if.mac(),
                    dst_mac: hop.mac,
                })
            }
        }
    }

    /// Send a client's packet to `target`: whole, or cut into segments (a super-packet into
    /// a tunnel, which the kernel cannot cut) or fragments (a tunnel's outer packet too long
    /// for the path, without DF) in `sink`'s buffers.
    fn transmit_in(
        &self,
        pkt: &mut xmit::Packet<'_>,
        sink: &mut dyn xmit::gso::SegmentSink,
        target: &xmit::Target,
        link: xmit::Link,
    ) -> Verdict {
        match xmit::to_real(pkt, target, link) {
            Err(xmit::Refused::TunnelGso) => {
                match xmit::gso::segment(pkt, sink, |p| xmit::to_real(p, target, link)) {
                    Ok((count, all)) => {
                        // Out of transmit buffers part of the way: the rest is lost.
                        self.stats
                            .count_drops(DropReason::TunnelGso, (all - count) as u64);
                        Verdict::Segmented { count }
                    }
                    Err(r) => self.sent(Err(r)),
                }
            }
            Ok(xmit::Sent::Fragment { iface, len, mtu }) => {
                match xmit::frag::fragment(&pkt.buf[..len], mtu, iface, sink) {
                    Ok((count, all)) => {
                        self.stats
                            .count_drops(DropReason::TooBig, (all - count) as u64);
                        Verdict::Segmented { count }
                    }
                    Err(r) => self.sent(Err(r)),
                }
            }
            r => self.sent(r),
        }
    }

    fn packet<'a>(&self, buf: &'a mut [u8], meta: RxMeta, info: &L4Info) -> xmit::Packet<'a> {
        xmit::Packet {
            buf,
            l4_off: info.l4_off,
            total_len: info.total_len,
            proto: info.proto,
            csum: meta.csum,
            gso_size: meta.gso_size,
        }
    }

    /// Schedule a new connection and add it to the table (synproxied if `join` is given).
    /// `Err(None)` means another worker added it first.
    fn new_conn(
        &self,
        svc: &VirtualService,
        now: u64,
        (client_hop, join): (NextHop, Option<crate::synproxy::Join>),
        (info, buf): (&L4Info, &[u8]),
        key: &ConnKey,
        sysctl: crate::spec::Sysctl,
    ) -> Result<InLookup, Option<DropReason>> {
        self.may_schedule(svc, info, key, sysctl).map_err(Some)?;
        let (dest, control) = self
            .schedule_new(svc, now, (info, buf), key, sysctl)
            .map_err(Some)?;
        let dest: &Arc<Dest> = &dest;
        let fwd = dest.forward();
        let hop = dest.next_hop();
        if hop.is_none() && !matches!(fwd, Forward::Local | Forward::Bypass) {
            dest.resolve_wanted
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(Some(DropReason::NoNextHop));
        }
        if fwd == Forward::FullNat
            && !(svc.spec.laddrs.iter()).any(|a| a.is_ipv6() == dest.addr.is_ipv6())
        {
            return Err(Some(DropReason::NoLocalAddr));
        }
        let mut conn = Conn::new(key, dest.clone(), svc.stats.clone(), client_hop, now);
        // A persistent port-0 or fwmark service's connection keeps the client's port
        // whatever the server's (ip_vs_sched_persist: the server's port only when the
        // packet's is the service's); a fwmark service's otherwise takes its server's port
        // when it has one (ip_vs_schedule: `dest->port ? dest->port : vport`).
        if svc.key.port == 0 && svc.persist_ms > 0 && !matches!(fwd, Forward::Bypass) {
            conn.rport = key.dport;
        }
        conn.template = control;
        // ip_vs_bind_app: helpers only for the methods whose replies come back through wvs;
        // a port-0 service's default (ftp) only for connections to port 21, as IPVS binds
        // by the connection's port.
        // IPVS has no SCTP helper: none binds to an SCTP connection.
        let bind = key.proto != Protocol::Sctp
            && (svc.key.port != 0
                || svc.spec.helpers.is_some()
                || key.dport == crate::consts::FTP_PORT);
        let sees_replies = conn.fwd.sees_replies();
        let helpers = if bind && sees_replies {
            &svc.helpers[..]
        } else {
            &[]
        };
        // A synproxied connection's server (scheduled now) must answer through wvs too.
        if join.is_some() && !sees_replies {
            return Err(Some(DropReason::NoDest));
        }
        let synproxied = join.is_some();
        if !helpers.is_empty() || synproxied {
            conn.set_app(crate::conn::app::AppConn::with_join(
                helpers.iter().map(|h| Arc::from(h.name())),
                join,
            ));
        }
        conn.in_pkts = 1;
        conn.advance(
            Direction::Input,
            info.events(),
            &svc.timeouts,
            self.conns.defense().secure_tcp(),
        );
        if synproxied {
            // Until its server answers (then its state's timeout, as any other).
            conn.set_timeout_ms(crate::consts::SYNPROXY_CONNECT_TIMEOUT_MS);
        }
        conn.touch(now);
        // One-packet scheduling (`IP_VS_CONN_F_ONE_PACKET`, UDP only): the connection
        // lives for this datagram, is never synced, and is not kept.
        let one_packet = svc.spec.ops && info.proto == Protocol::Udp;
        if self.conns.sync().is_master() && !one_packet {
            self.conns
                .sync_in(self.worker, &mut conn, now, &sysctl.sync);
        }
        let fwd = InForward {
            daddr: conn.raddr(),
            dport: conn.rport,
            hop,
            fwd: conn.fwd,
            src: dest.source(),
            mtu: dest.mtu(),
            local: (conn.laddr(), conn.lport),
            app: app::AppCtx::of(&conn),
        };
        if one_packet {
            self.count_conn(svc, dest, info);
            conn.release();
            return Ok(InLookup::Forward(fwd));
        }
        let unknown = info.proto == Protocol::Tcp && !info.flags.syn;
        let added = self.add_conn(conn, svc, dest, info, fwd);
        if unknown && added.is_ok() {
            stats::bump(&self.stats.unknown_flows);
        }
        added
    }

    /// The real server for a new connection of `svc`, and the link to the persistence
    /// template that chose it, if the service is persistent. A persistent service's
    /// template hands out an owned server; otherwise the service's own server is borrowed
    /// (no reference count taken until the connection holds it). With no server, and
    /// `cache_bypass` on, the packet goes on to where it was sent as a connection of its
    /// own (`ip_vs_leave`; later packets follow it even when servers come back).
    #[inline]
    fn schedule_new<'s>(
        &self,
        svc: &'s VirtualService,
        now: u64,
        (info, buf): (&L4Info, &[u8]),
        key: &ConnKey,
        sysctl: crate::spec::Sysctl,
    ) -> Result<(Cow<'s, Arc<Dest>>, Option<crate::conn::persist::Control>), DropReason> {
        let mut ci = wvs_sdk::ConnInfo {
            saddr: app::mapped(info.saddr),
            daddr: app::mapped(info.daddr),
            sport: info.sport,
            dport: info.dport,
            proto: info.proto.number(),
            af: if info.saddr.is_ipv6() { 6 } else { 4 },
            ..Default::default()
        };
        let scheduled = if svc.persist_ms > 0 {
            let client = crate::conn::persist::masked(key.saddr, svc.netmask);
            let tkey = if svc.key.is_fwmark() {
                // A fwmark service's template holds every protocol, address and port of
                // the mark: <IPPROTO_IP, client, 0, mark, 0> (ip_vs_sched_persist).
                crate::conn::persist::TemplateKey {
                    proto: Protocol::Tcp,
                    fwmark: svc.key.fwmark,
                    client,
                    vaddr: svc.key.mark_addr(),
                    vport: 0,
                    pe: 0,
                }
            } else {
                crate::conn::persist::TemplateKey {
                    proto: info.proto,
                    fwmark: 0,
                    client,
                    vaddr: key.daddr,
                    // A port-0 service's template holds every port of the client:
                    // <proto, client, 0, vaddr, 0> (ip_vs_sched_persist).
                    vport: if svc.key.port == 0 { 0 } else { key.dport },
                    pe: 0,
                }
            };
            // The persistence engine's key (ip_vs_conn_fill_param_persist): part of the
            // template's, or the packet is dropped.
            let mut pe_key = [0u8; wvs_sdk::PE_MAX_KEY];
            let pe_data = match &svc.pe {
                Some(pe) => {
                    ci.svc_flags = svc.flags | wvs_sdk::svc_flags::PERSISTENT;
                    let n = self.pe_key(pe, &ci, (info, buf), now, &mut pe_key)?;
                    n.map(|n| (&pe.label, &pe_key[..n]))
                }
                None => None,
            };
            self.conns
                .persist()
                .dest_for_pe(
                    tkey,
                    pe_data,
                    now,
                    svc.persist_ms,
                    sysctl.expire_quiescent_template,
                    || svc.schedule(&mut ci, now).cloned(),
                )
                .map(|(d, c)| (Cow::Owned(d), c))
        } else {
            svc.schedule(&mut ci, now).map(|d| (Cow::Borrowed(d), None))
        };
        match scheduled {
            Some(s) => Ok(s),
            None if sysctl.cache_bypass => Ok((Cow::Borrowed(&svc.bypass), None)),
            None => Err(DropReason::NoDest),
        }
    }

    /// Ask the persistence engine `pe` for the key of a new connection whose first packet
    /// is `buf` (its payload, after the UDP or TCP header): `Some(n)` when it wrote a key of
    /// `n` bytes to `out`, `None` for the usual template, `Err` to drop the packet. An engine
    /// that fails (a trap, a timeout, an answer out of range) gives the usual template: the
    /// service goes on without it, counted and logged as a plugin's trap.
    fn pe_key(
        &self,
        pe: &crate::plugin::PePool,
        ci: &wvs_sdk::ConnInfo,
        (info, buf): (&L4Info, &[u8]),
        now: u64,
        out: &mut [u8; wvs_sdk::PE_MAX_KEY],
    ) -> Result<Option<usize>, DropReason> {
        let l4 = ETHERNET_HEADER_LEN + info.l4_off;
        let end = (ETHERNET_HEADER_LEN + info.total_len).min(buf.len());
        let seg = buf.get(l4..end).unwrap_or(&[]);
        let hdr = match info.proto {
            Protocol::Udp => Some(udp_field::HEADER_LEN),
            // The chunks: an engine reads them as they come.
            Protocol::Sctp => Some(crate::wire::sctp::field::HEADER_LEN),
            Protocol::Tcp => TcpPacket::new_checked(seg)
                .ok()
                .map(|t| usize::from(t.header_len())),
        };
        let payload = hdr.and_then(|h| seg.get(h..)).unwrap_or(&[]);
        let r = pe.with(self.worker, |e| {
            Ok(match e.key(ci, payload, now)? {
                crate::plugin::PeAnswer::Default => Ok(None),
                crate::plugin::PeAnswer::Drop => Err(DropReason::PeDrop),
                crate::plugin::PeAnswer::Key(k) => {
                    out[..k.len()].copy_from_slice(k);
                    Ok(Some(k.len()))
                }
            })
        });
        match r {
            Ok(answer) => answer,
            Err(e) => {
                let traps = &pe.plugin.runtime().stats.traps;
                if !matches!(e, crate::plugin::PluginError::NoInstance { .. }) {
                    let n = traps.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    // Logged at the 1st, 2nd, 4th, 8th... trap of the runtime.
                    if n.is_power_of_two() {
                        tracing::warn!(
                            pe = pe.name(),
                            "persistence engine failed: {e}; the connection gets the usual template"
                        );
                    }
                }
                Ok(None)
            }
        }
    }

    /// Whether a packet of no connection may be scheduled: a TCP SYN without RST
    /// (`tcp_conn_schedule`; no ACK check, so SYN+ACK schedules, for active FTP), not
    /// dropped by the defense (`drop_packet`, `ip_vs_todrop`), and with room in the table
    /// (after evicting a half-open entry): all before the scheduler is called.
    #[inline]
    fn may_schedule(
        &self,
        svc: &VirtualService,
        info: &L4Info,
        key: &ConnKey,
        sysctl: crate::spec::Sysctl,
    ) -> Result<(), DropReason> {
        // tcp_conn_schedule: only a SYN starts a connection, or with sloppy_tcp any
        // segment but a reset (a director that takes over flows it was never told of).
        // With sloppy_consistent_only (wvs's), only a consistent scheduler takes such a
        // segment: it picks the server any other balancer picked; another would send the
        // flow to a server that never saw it.
        if info.proto == Protocol::Tcp
            && (info.flags.rst
                || !(info.flags.syn
                    || (sysctl.sloppy_tcp
                        && (!sysctl.sloppy_consistent_only || svc.sched.consistent()))))
        {
            return Err(DropReason::NoConnIn);
        }
        // sctp_conn_schedule: only an INIT starts an association.
        if info.proto == Protocol::Sctp && info.chunks != SctpEvent::Init {
            return Err(DropReason::NoConnIn);
        }
        if self.conns.defense().todrop(&self.drop_counter) {
            return Err(DropReason::DefenseDrop);
        }
        if !self.conns.has_room(key) {
            return Err(DropReason::ConnTableFull);
        }
        Ok(())
    }

    /// Put a new connection in the table (full NAT: with a local address and port from
    /// the service's, starting at the flow's hash) and count it; `Err(None)`: another
    /// worker added the same one meanwhile.
    #[inline]
    fn add_conn(
        &self,
        conn: Conn,
        svc: &VirtualService,
        dest: &Arc<Dest>,
        info: &L4Info,
        mut fwd: InForward,
    ) -> Result<InLookup, Option<DropReason>> {
        let inserted = if conn.fwd == Forward::FullNat {
            let laddrs = &svc.spec.laddrs;
            let first = flow_hash(info) as usize;
            self.conns
                .insert_fullnat(conn, laddrs, first)
                .map(|l| fwd.local = l)
        } else {
            self.conns.insert(conn)
        };
        match inserted {
            Ok(()) => {
                self.count_conn(svc, dest, info);
                Ok(InLookup::Forward(fwd))
            }
            Err(e) => {
                let reason = match e {
                    InsertError::Full(_) => Some(DropReason::ConnTableFull),
                    InsertError::NoLocalPort(_) => Some(DropReason::NoLocalPort),
                    InsertError::Exists(_) => None,
                };
                e.into_conn().release();
                Err(reason)
            }
        }
    }

    /// Count a new connection and its first packet.
    #[inline]
    fn count_conn(&self, svc: &VirtualService, dest: &Arc<Dest>, info: &L4Info) {
        stats::bump(&self.stats.conns);
        let w = self.worker;
        dest.stats.worker(w).conn();
        svc.stats.worker(w).conn();
        dest.stats.worker(w).packet_in(info.total_len);
        svc.stats.worker(w).packet_in(info.total_len);
    }

    /// Real server -> client (`ip_vs_out`): find the connection, restore the VIP as source
    /// (and in full NAT the client as destination). `data`: the packet is from a port of a
    /// real server that expected connections may use; one of no connection is the
    /// kernel's, routed on as the kernel would have.
    fn outbound(
        &self,
        mut rx: Rx<'_>,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
        data: bool,
    ) -> Verdict {
        let key = rx.info.key();
        let l = Lookup {
            info: &rx.info,
            now: rx.now,
            timeouts: &rx.snap.timeouts,
            secure: self.conns.defense().secure_tcp(),
            client_hop: None,
        };
        let lookup = |c: &mut Conn| self.lookup_out(c, &l);
        let mut found = self.conns.with_conn(KeyDir::Out, &key, lookup);
        // An expected connection waiting for the server's port (a TFTP transfer's).
        if found.is_none() && self.conns.fill_wildcard(KeyDir::Out, &key) {
            stats::bump(&self.stats.helper.expects_matched);
            found = self.conns.with_conn(KeyDir::Out, &key, lookup);
        }
        let (back, hop, app) = match found {
            Some(Ok(v)) => v,
            Some(Err(r)) => return Verdict::Drop(r),
            None => return self.no_conn_out(rx, buf, sink, data),
        };
        if let Some(ctx) = &app
            && let Some(v) = self.synproxy_out(&mut rx, ctx, buf, sink)
        {
            return v;
        }
        if hop == NextHop::UNKNOWN {
            return self.to_client_routed(rx, buf, sink, &back, app.as_ref());
        }
        let Some(out_if) = self.ifaces.get(usize::from(hop.iface)) else {
            return Verdict::Drop(DropReason::NoNextHop);
        };
        let link = xmit::Link {
            iface: hop.iface,
            src_mac: out_if.mac(),
            dst_mac: hop.mac,
        };
        if let Some(ctx) = &app {
            match self.help(&mut rx, ctx, wvs_sdk::helper_dir::OUT, buf) {
                Ok(h) if h.resized => {
                    let mut pkt = self.packet(buf, rx.meta, &rx.info);
                    let r = xmit::to_client(&mut pkt, &back, link);
                    return self.resized(r, &mut pkt, 0, sink);
                }
                Ok(_) => {}
                Err(r) => return Verdict::Drop(r),
            }
        }
        let mut pkt = self.packet(buf, rx.meta, &rx.info);
        match xmit::to_client(&mut pkt, &back, link) {
            // A super-packet into the other family (full NAT between them): cut first.
            Err(xmit::Refused::TunnelGso) => {
                match xmit::gso::segment(&pkt, sink, |p| xmit::to_client(p, &back, link)) {
                    Ok((count, all)) => {
                        self.stats
                            .count_drops(DropReason::TunnelGso, (all - count) as u64);
                        Verdict::Segmented { count }
                    }
                    Err(r) => self.sent(Err(r)),
                }
            }
            r => self.sent(r),
        }
    }

    /// A reply of a connection made from a sync message whose client has sent nothing to
    /// this director yet (a download's client waits in silence): no next hop is known, so
    /// the reply goes to the director's own stack, which routes it to the client. Without
    /// this, the server's retransmissions would be dropped until the client spoke, and a
    /// silent client never does.
    fn to_client_routed(
        &self,
        mut rx: Rx<'_>,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
        back: &xmit::Back,
        app: Option<&app::AppCtx>,
    ) -> Verdict {
        if let Some(ctx) = app
            && let Err(r) = self.help(&mut rx, ctx, wvs_sdk::helper_dir::OUT, buf)
        {
            return Verdict::Drop(r);
        }
        let link = xmit::Link {
            iface: 0,
            src_mac: [0; 6],
            dst_mac: [0; 6],
        };
        let via = |p: &mut xmit::Packet<'_>| {
            xmit::to_client(p, back, link)?;
            xmit::stack::routed(p)
        };
        let mut pkt = self.packet(buf, rx.meta, &rx.info);
        if pkt.gso_size == 0 {
            return self.sent(via(&mut pkt));
        }
        // A raw socket takes no super-packet: cut it first.
        match xmit::gso::segment(&pkt, sink, via) {
            Ok((count, all)) => {
                self.stats
                    .count_drops(DropReason::TunnelGso, (all - count) as u64);
                Verdict::Segmented { count }
            }
            Err(r) => self.sent(Err(r)),
        }
    }

    /// `ip_vs_out` on the connection `c` of a real server's packet: count it, move the
    /// state on and say how it goes back to the client.
    #[inline]
    #[allow(clippy::type_complexity)]
    fn lookup_out(
        &self,
        c: &mut Conn,
        l: &Lookup<'_>,
    ) -> Result<(xmit::Back, NextHop, Option<app::AppCtx>), DropReason> {
        if !c.dest.available() {
            c.set_expire_now(true);
            return Err(DropReason::DestGone);
        }
        if let Some(k) = c.controller_mut() {
            k.used();
        }
        let was = c.state;
        c.advance(Direction::Output, l.info.events(), l.timeouts, l.secure);
        c.touch(l.now);
        c.dest
            .stats
            .worker(self.worker)
            .packet_out(l.info.total_len);
        c.svc_stats.worker(self.worker).packet_out(l.info.total_len);
        // (A server's reply offers nothing: no MTU rule to know.)
        self.offload_step(c, crate::offload::Moment::Out, was, 0, false);
        let back = xmit::Back {
            fwd: c.fwd,
            vaddr: c.vaddr(),
            vport: c.vport,
            caddr: c.caddr(),
            cport: c.cport,
        };
        Ok((back, c.client_hop, app::AppCtx::of(c)))
    }

    /// A real server's packet of no connection: an expected connection's data port's
    /// goes on to the own stack (bypass); the answer to the balancer's own connection
    /// (a health check's) to the stack too, as IPVS's ip_vs_out leaves it (NF_ACCEPT);
    /// anything else is dropped, answered with port unreachable under `nat_icmp_send`.
    fn no_conn_out(
        &self,
        rx: Rx<'_>,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
        data: bool,
    ) -> Verdict {
        let (snap, info) = (rx.snap, &rx.info);
        // A one-packet service's replies have no connection: IPVS's ip_vs_out accepts
        // them, and the director's stack routes them on as the server sent them (unless
        // nat_icmp_send answers them first, below).
        let ops =
            !snap.sysctl.nat_icmp_send && snap.is_ops_real(info.proto, info.saddr, info.sport);
        if data || ops {
            let mut pkt = self.packet(buf, rx.meta, info);
            return match xmit::stack::bypass(&mut pkt) {
                Err(xmit::Refused::TunnelGso) => {
                    match xmit::gso::segment(&pkt, sink, xmit::stack::bypass) {
                        Ok((count, _)) => Verdict::Segmented { count },
                        Err(r) => self.sent(Err(r)),
                    }
                }
                r => self.sent(r),
            };
        }
        let own = snap.real_source(info.proto, info.saddr, info.sport);
        if own == Some(info.daddr) {
            stats::bump(&self.stats.passed);
            let mut pkt = self.packet(buf, rx.meta, info);
            return self.sent(xmit::stack::local(&mut pkt));
        }
        // nat_icmp_send: tell the server its packet has no connection, unless it is a
        // reset or an SCTP ABORT (ip_vs_out).
        let reason = DropReason::NoConnOut;
        if snap.sysctl.nat_icmp_send
            && !(info.proto == Protocol::Tcp && info.flags.rst)
            && !(info.proto == Protocol::Sctp && info.chunks == SctpEvent::Abort)
            && let Some(src) = own
        {
            let answer = Answer::PortUnreachableFrom(src);
            return Verdict::Refused { reason, answer };
        }
        Verdict::Drop(reason)
    }

    /// The verdict for a packet a helper resized, which `xmit` rewrote in place: sent at its
    /// new length, with its offloads when it came with them; a plain one longer than the
    /// path's MTU (`mtu`, 0: unknown) cut into segments, as the kernel would have cut a
    /// GSO packet.
    fn resized(
        &self,
        r: Result<xmit::Sent, xmit::Refused>,
        pkt: &mut xmit::Packet<'_>,
        mtu: u32,
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Verdict {
        let iface = match r {
            Ok(xmit::Sent::InPlace { iface }) => iface,
            other => return self.sent(other),
        };
        let len = ETHERNET_HEADER_LEN + pkt.total_len;
        if pkt.gso_size != 0 || pkt.csum == CsumMode::Partial {
            return Verdict::Send {
                iface,
                len,
                offloads: Offloads::AsReceived,
            };
        }
        let Some(mtu) = app::too_long(pkt.total_len, mtu) else {
            return Verdict::Send {
                iface,
                len,
                offloads: Offloads::None,
            };
        };
        // Cut what the transmitter made: headers as they leave, segments sent as they are.
        let l4_hdr = match pkt.proto {
            Protocol::Tcp => pkt
                .buf
                .get(ETHERNET_HEADER_LEN + pkt.l4_off + 12)
                .map_or(tcp_field::MIN_HEADER_LEN, |b| usize::from(b >> 4) * 4),
            Protocol::Udp | Protocol::Sctp => return Verdict::Drop(DropReason::TooBig),
        };
        pkt.gso_size = mtu.saturating_sub((pkt.l4_off + l4_hdr) as u16);
        // Each segment has the rewritten headers already: it goes out as it is.
        match xmit::gso::segment(pkt, sink, |_| Ok(xmit::Sent::InPlace { iface })) {
            Ok((count, all)) => {
                stats::bump(&self.stats.helper.segmented);
                self.stats
                    .count_drops(DropReason::TooBig, (all - count) as u64);
                Verdict::Segmented { count }
            }
            Err(r) => self.sent(Err(r)),
        }
    }

    /// A transmitter's outcome as a verdict (a refusal for the MTU with what its answer
    /// needs).
    fn sent(&self, r: Result<xmit::Sent, xmit::Refused>) -> Verdict {
        match r {
            Ok(xmit::Sent::InPlace { iface }) => Verdict::Tx { iface },
            Ok(xmit::Sent::Whole { iface, len }) => Verdict::Send {
                iface,
                len,
                offloads: Offloads::None,
            },
            Ok(xmit::Sent::Stack { daddr, len }) => Verdict::Stack { daddr, len },
            // Only a tunnel asks for fragments, and the caller handles it; without buffers
            // it is too big.
            Ok(xmit::Sent::Fragment { .. }) => Verdict::Drop(DropReason::TooBig),
            Err(xmit::Refused::TtlExceeded) => Verdict::Drop(DropReason::TtlExceeded),
            Err(xmit::Refused::NoRoom) => Verdict::Drop(DropReason::NoRoom),
            Err(xmit::Refused::TunnelGso) => Verdict::Drop(DropReason::TunnelGso),
            Err(xmit::Refused::TooBig) => Verdict::Drop(DropReason::TooBig),
            Err(xmit::Refused::Family) => Verdict::Drop(DropReason::FamilyMismatch),
            Err(xmit::Refused::FragNeeded { mtu }) => Verdict::Refused {
                reason: DropReason::FragNeeded,
                answer: Answer::FragNeeded { mtu },
            },
        }
    }
}

/// Whether the IP packet of the frame in `buf` is addressed to a virtual IP.
fn to_vip(snap: &Snapshot, headers: &Headers) -> bool {
    let daddr = match headers.eth.map(|e| e.net) {
        Some(Net::Ipv4(Ok(ip))) => IpAddr::V4(ip.daddr),
        Some(Net::Ipv6(Ok(ip))) => IpAddr::V6(ip.daddr),
        _ => return false,
    };
    snap.is_vip(daddr)
}

/// A hash of a connection's addresses and ports, the same for each of its packets
/// (`xmit::tunnel::flow_hash`).
fn flow_hash(info: &L4Info) -> u32 {
    xmit::tunnel::flow_hash(
        info.proto,
        (info.saddr, info.sport),
        (info.daddr, info.dport),
    )
}

/// TTL of the answers wvs writes itself (Linux's default `ip_default_ttl`).
const ANSWER_TTL: u8 = 64;

/// Write, at the start of `out`, the Ethernet and IPv4 headers of an answer to the frame
/// that was received there: back to its sender's MAC from ours (the addresses swapped),
/// from `src` to `dst`, with `payload_len` bytes of `proto` to follow. Returns the space
/// after the headers, or `None` if `out` cannot hold the headers and the payload, or if
/// either address is not one host's (RFC 1122 3.2.2 and 4.2.3.10: no ICMP error or reset
/// to or from an unspecified, loopback, broadcast, multicast or reserved address, so that
/// a forged source cannot turn wvs into an amplifier towards a whole network).
fn answer_headers(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: crate::wire::IpProtocol,
    payload_len: usize,
    dont_frag: bool,
) -> Option<&mut [u8]> {
    if !one_host(src) || !one_host(dst) {
        return None;
    }
    let total = ipv4_field::MIN_HEADER_LEN + payload_len;
    let out = out.get_mut(..ETHERNET_HEADER_LEN + total)?;
    let (eth, ip) = out.split_at_mut(ETHERNET_HEADER_LEN);
    let (dst_mac, src_mac) = eth[..12].split_at_mut(6);
    dst_mac.swap_with_slice(src_mac);
    let (hdr, payload) = ip.split_at_mut(ipv4_field::MIN_HEADER_LEN);
    hdr.fill(0);
    let mut iph = Ipv4Packet::new_unchecked(&mut *hdr);
    iph.set_version(4);
    iph.set_header_len(ipv4_field::MIN_HEADER_LEN as u8);
    iph.set_total_len(u16::try_from(total).ok()?);
    iph.set_dont_frag(dont_frag);
    iph.set_hop_limit(ANSWER_TTL);
    iph.set_next_header(proto);
    iph.set_src_addr(src);
    iph.set_dst_addr(dst);
    let c = checksum::compute(&hdr[..]);
    Ipv4Packet::new_unchecked(&mut *hdr).set_checksum(c);
    Some(payload)
}

/// As [`answer_headers`] for IPv6: the Ethernet and IPv6 headers of an answer from `src` to
/// `dst` with `payload_len` bytes of upper layer `next` to follow, or `None` if `out` cannot
/// hold them or either address is not one host's (RFC 4443 2.4 (e): no error to an
/// unspecified, loopback or multicast source).
fn answer_headers_v6(
    out: &mut [u8],
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    next: u8,
    payload_len: usize,
) -> Option<&mut [u8]> {
    if !one_host_v6(src) || !one_host_v6(dst) {
        return None;
    }
    let total = ipv6_field::HEADER_LEN + payload_len;
    let out = out.get_mut(..ETHERNET_HEADER_LEN + total)?;
    let (eth, ip) = out.split_at_mut(ETHERNET_HEADER_LEN);
    let (dst_mac, src_mac) = eth[..12].split_at_mut(6);
    dst_mac.swap_with_slice(src_mac);
    let (hdr, payload) = ip.split_at_mut(ipv6_field::HEADER_LEN);
    hdr.fill(0);
    let mut h = crate::wire::Ipv6Packet::new_unchecked(&mut *hdr);
    h.set_version(6);
    h.set_payload_len(u16::try_from(payload_len).ok()?);
    h.set_next_header(next.into());
    h.set_hop_limit(ANSWER_TTL);
    h.set_src_addr(src);
    h.set_dst_addr(dst);
    Some(payload)
}

/// Whether an IPv6 address names a single host: not unspecified, loopback or multicast
/// (an IPv4-mapped one as [`one_host`] says).
fn one_host_v6(a: std::net::Ipv6Addr) -> bool {
    !a.is_unspecified()
        && !a.is_loopback()
        && !a.is_multicast()
        && a.to_ipv4_mapped().is_none_or(one_host)
}

/// Whether `a` names a single host (RFC 1122 3.2.1.3): not 0.0.0.0/8, 127/8, multicast,
/// the reserved 240/4 or the limited broadcast.
fn one_host(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first != 0 && !a.is_loopback() && !a.is_multicast() && first < 240
}

fn set_macs(frame: &mut [u8], src: [u8; 6], dst: [u8; 6]) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_src_addr(EthernetAddress(src));
    eth.set_dst_addr(EthernetAddress(dst));
}

/// What an IPv4 packet is to wvs.
enum Parsed {
    /// Not wvs's: leave it to the kernel.
    NotOurs,
    /// A TCP or UDP packet of a service, either way.
    L4(L4Info),
    /// An ICMP error about a packet of a connection.
    IcmpError(icmp::IcmpError),
}

/// What classification needs of an IPv4 packet whose header `head` checked: ICMP errors
/// are read here, the rest as [`l4_of`] says.
#[inline]
fn l4_of_ipv4(
    snap: &Snapshot,
    own: &crate::conn::own::OwnChecks,
    ip: &[u8],
    head: &Ipv4Header,
    csum: CsumMode,
) -> Result<Parsed, DropReason> {
    let facts = IpFacts {
        saddr: IpAddr::V4(head.saddr),
        daddr: IpAddr::V4(head.daddr),
        l4_off: head.ihl,
        total_len: head.total_len,
        fragment: head.fragment,
        proto: head.l4_proto(),
        ports: head.ports,
    };
    l4_of(snap, own, ip, &facts, csum, || {
        if head.next == 1 {
            return icmp::parse(snap, ip, head.ihl, head.total_len, head.daddr)
                .map(|e| e.map_or(Parsed::NotOurs, Parsed::IcmpError));
        }
        Ok(Parsed::NotOurs)
    })
}

/// What classification needs of an IPv6 packet whose header and extension headers `head`
/// checked, as [`l4_of`] says. Fragments are treated as IPv4's: IPVS sees IPv6 packets
/// after `nf_defrag_ipv6` has put them together, and wvs does not reassemble, so a fragment
/// of a service's packet is dropped (`ip_fragment`); clients find the path's MTU by
/// Packet Too Big instead of fragmenting.
#[inline]
fn l4_of_ipv6(
    snap: &Snapshot,
    own: &crate::conn::own::OwnChecks,
    ip: &[u8],
    head: &Ipv6Header,
    csum: CsumMode,
) -> Result<Parsed, DropReason> {
    let facts = IpFacts {
        saddr: IpAddr::V6(head.saddr),
        daddr: IpAddr::V6(head.daddr),
        l4_off: head.l4_off,
        total_len: head.total_len,
        fragment: head.fragment.is_some(),
        proto: head.l4_proto(),
        ports: head.ports,
    };
    l4_of(snap, own, ip, &facts, csum, || {
        if head.next == icmp::v6::PROTO {
            return icmp::parse_v6(snap, ip, head)
                .map(|e| e.map_or(Parsed::NotOurs, Parsed::IcmpError));
        }
        Ok(Parsed::NotOurs)
    })
}

/// What an IP header of either family says that classification needs.
struct IpFacts {
    saddr: IpAddr,
    daddr: IpAddr,
    l4_off: usize,
    total_len: usize,
    fragment: bool,
    proto: Option<Protocol>,
    ports: Option<(u16, u16)>,
}

/// What classification needs of an IP packet `ip` whose header said `f`; `other` reads
/// what is neither TCP nor UDP.
///
/// `Err`: malformed, or a fragment that concerns a service; drop. A packet that is not
/// addressed to a virtual IP and does not come from a real server is never dropped here,
/// whatever it looks like: it is the kernel's.
///
/// A TCP segment that can change a connection's state (SYN, FIN, RST) has its checksum
/// verified first when it carries a complete one (`csum`): a forged or damaged RST must
/// not close a connection, nor a damaged SYN take a table entry. Data segments are left to
/// the real server's stack, as IPVS leaves them when no helper needs the payload.
/// `own` is the director's own checks through a local VIP, whose answers are wvs's too.
#[inline]
fn l4_of(
    snap: &Snapshot,
    own: &crate::conn::own::OwnChecks,
    ip: &[u8],
    f: &IpFacts,
    csum: CsumMode,
    other: impl FnOnce() -> Result<Parsed, DropReason>,
) -> Result<Parsed, DropReason> {
    let &IpFacts {
        saddr,
        daddr,
        l4_off,
        total_len,
        ..
    } = f;
    let ours = || snap.is_vip(daddr) || snap.is_real_addr(saddr);
    if f.fragment {
        return if ours() {
            Err(DropReason::IpFragment)
        } else {
            Ok(Parsed::NotOurs)
        };
    }
    let Some(proto) = f.proto else {
        return other();
    };
    let Some((sport, dport)) = f.ports else {
        return if ours() {
            Err(match proto {
                Protocol::Tcp => DropReason::TcpTruncated,
                Protocol::Udp => DropReason::UdpTruncated,
                Protocol::Sctp => DropReason::SctpTruncated,
            })
        } else {
            Ok(Parsed::NotOurs)
        };
    };
    let Some(l4) = ip.get(l4_off..total_len) else {
        return Err(DropReason::IpTruncated);
    };
    let mine = snap
        .service_for(proto, (saddr, sport), (daddr, dport))
        .is_some()
        || snap.is_real(proto, saddr, sport)
        || snap.is_data_vip(proto, daddr, dport)
        || snap.is_data_real(proto, saddr, sport)
        || own.answers(proto, saddr, sport, dport);
    if !mine {
        return Ok(Parsed::NotOurs);
    }
    // From here on the packet is ours: check it fully before anything rewrites it (IPv6
    // has no header checksum).
    if saddr.is_ipv4() && checksum::compute(&ip[..l4_off]) != 0 {
        return Err(DropReason::IpBadChecksum);
    }
    let (flags, chunks) = l4_flags(proto, l4, (saddr, daddr), csum)?;
    Ok(Parsed::L4(L4Info {
        proto,
        saddr,
        daddr,
        sport,
        dport,
        l4_off,
        total_len,
        flags,
        chunks,
    }))
}

/// The checks of wvs's TCP, UDP or SCTP packet `l4` (between `addrs`), and what moves its
/// connection's state: TCP's flags, SCTP's chunks. A segment that may start or end a
/// connection must have a good checksum (when it is complete), as a forged one must not
/// change a connection's state; so must an SCTP packet of any chunk but DATA's kind (its
/// CRC32c, which IPVS leaves to the server: one bit flipped in an INIT would otherwise
/// take a table entry, in an ABORT close the association's entry).
#[inline]
fn l4_flags(
    proto: Protocol,
    l4: &[u8],
    (saddr, daddr): (IpAddr, IpAddr),
    csum: CsumMode,
) -> Result<(TcpFlags, SctpEvent), DropReason> {
    let flags = match proto {
        Protocol::Tcp => {
            let tcp = TcpPacket::new_checked(l4).map_err(|_| DropReason::TcpTruncated)?;
            if usize::from(tcp.header_len()) < tcp_field::MIN_HEADER_LEN {
                return Err(DropReason::TcpTruncated);
            }
            let flags = TcpFlags {
                syn: tcp.syn(),
                fin: tcp.fin(),
                ack: tcp.ack(),
                rst: tcp.rst(),
            };
            if (flags.syn || flags.fin || flags.rst)
                && csum == CsumMode::Complete
                && checksum::l4(saddr, daddr, 6, l4) != 0
            {
                return Err(DropReason::L4BadChecksum);
            }
            flags
        }
        Protocol::Udp => {
            let udp = UdpPacket::new_checked(l4).map_err(|_| DropReason::UdpTruncated)?;
            if usize::from(udp.len()) < udp_field::HEADER_LEN {
                return Err(DropReason::UdpTruncated);
            }
            TcpFlags::default()
        }
        Protocol::Sctp => {
            let p = SctpPacket::new_checked(l4).map_err(|_| DropReason::SctpTruncated)?;
            let ev = SctpEvent::of(&p);
            if ev != SctpEvent::Data && csum == CsumMode::Complete && !p.verify_checksum() {
                return Err(DropReason::L4BadChecksum);
            }
            return Ok((TcpFlags::default(), ev));
        }
    };
    Ok((flags, SctpEvent::Data))
}

#[cfg(test)]
mod allport_tests;
#[cfg(test)]
mod app_tests;
#[cfg(test)]
mod ecmp_tests;
#[cfg(test)]
mod fwmark_tests;
#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod pe_tests;
#[cfg(test)]
mod sctp_tests;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
mod synproxy_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod v6_tests;
