//! Per-worker datapath counters. Each worker owns one [`DatapathStats`] and is its only
//! writer, so counting is a plain load and store (no locked instruction, no shared cache
//! line); readers sum the workers' counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $v:ident => $name:literal, )*) => {
        /// Why the datapath dropped a packet. Every drop is counted under one of these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $( $(#[$doc])* $v, )* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];

            /// Return the reason's metric label.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$v => $name,)* }
            }
        }
    };
}

drop_reasons! {
    /// Frame shorter than an Ethernet header.
    L2Truncated => "l2_truncated",
    /// IPv4 header or datagram longer than the frame.
    IpTruncated => "ip_truncated",
    /// IPv4 header with a version other than 4.
    IpBadVersion => "ip_bad_version",
    /// IHL below 5 words.
    IpBadIhl => "ip_bad_ihl",
    /// Total length shorter than the header.
    IpBadLength => "ip_bad_length",
    /// IPv4 header checksum wrong.
    IpBadChecksum => "ip_bad_csum",
    /// A fragment to a virtual service or from a real server (ports unknown: never guessed).
    IpFragment => "ip_fragment",
    /// TCP header cut short or data offset out of range.
    TcpTruncated => "tcp_truncated",
    /// UDP header cut short or length field out of range.
    UdpTruncated => "udp_truncated",
    /// SCTP common header or first chunk header cut short.
    SctpTruncated => "sctp_truncated",
    /// ICMP error about a service too short to hold its quoted header.
    IcmpTruncated => "icmp_truncated",
    /// ICMP error about a service whose quoted IP header is malformed.
    IcmpInnerBad => "icmp_inner_bad",
    /// ICMP error about a service's packet that belongs to no connection.
    IcmpNoConn => "icmp_no_conn",
    /// TTL would reach zero on the way out.
    TtlExceeded => "ttl_exceeded",
    /// Non-SYN TCP packet to a virtual service with no connection.
    NoConnIn => "no_conn_in",
    /// Packet from a real server's port that belongs to no connection.
    NoConnOut => "no_conn_out",
    /// The scheduler found no real server that can take a connection.
    NoDest => "no_dest",
    /// The connection's real server was removed (`expire_nodest_conn`).
    DestGone => "dest_gone",
    /// The real server's next hop is not resolved yet.
    NoNextHop => "no_next_hop",
    /// The connection table is full (and its shard had no half-open entry to evict).
    ConnTableFull => "conn_table_full",
    /// A new connection the `drop_packet` defense dropped.
    DefenseDrop => "defense_drop",
    /// The frame was larger than a receive buffer.
    RxTruncated => "rx_truncated",
    /// The kernel refused to send the frame.
    TxError => "tx_error",
    /// The packet and its encapsulation do not fit in a buffer.
    NoRoom => "no_room",
    /// A GSO super-packet (or some of its segments) to a tunnel that found no free buffer
    /// to be cut into (see `xmit::gso`).
    TunnelGso => "tunnel_gso",
    /// An ICMP error about a connection whose checksum fails.
    IcmpBadChecksum => "icmp_bad_csum",
    /// Longer than the path's MTU, with DF: answered with ICMP fragmentation needed.
    FragNeeded => "frag_needed",
    /// Longer than the path's MTU, without DF (NAT, DR; IPVS would fragment it), or a
    /// tunnel's outer packet whose fragments found no free buffer.
    TooBig => "too_big",
    /// The socket's receive queue was full: the kernel dropped the frame before wvs read it.
    RxQueueFull => "rx_queue_full",
    /// The packet ring (`--io ring`) or the XDP socket's RX ring (`--io xdp`) was full: the
    /// kernel dropped the frame before wvs took it (`PACKET_STATISTICS`' `tp_drops`,
    /// `XDP_STATISTICS`' `rx_ring_full`).
    RxRingFull => "rx_ring_full",
    /// The XDP socket dropped the frame for another reason (`XDP_STATISTICS`' `rx_dropped`,
    /// and `rx_fill_ring_empty_descs`: no free chunk).
    XskRxDropped => "xsk_rx_dropped",
    /// A full-NAT connection to a service that has no local address (`--add-laddr`).
    NoLocalAddr => "no_local_addr",
    /// A full-NAT connection for which no local address had a free port.
    NoLocalPort => "no_local_port",
    /// A TCP segment with a wrong checksum: a SYN, FIN or RST (checked before it changes a
    /// connection's state), or a segment of a connection bound to an application helper
    /// (checked before the helper sees it, as `tcp_csum_check`).
    L4BadChecksum => "l4_bad_csum",
    /// An application helper dropped the packet.
    HelperDrop => "helper_drop",
    /// A persistence engine refused a new connection's first packet (the `sip` engine: a
    /// datagram with no Call-ID), as IPVS drops it when `fill_param` fails.
    PeDrop => "pe_drop",
    /// The connection's method cannot carry a packet of this family to its real server
    /// (NAT or direct routing between the families; an IPv6 packet into a tunnel, which
    /// carries IPv4 only so far).
    FamilyMismatch => "family_mismatch",
    /// An ICMP error about a full-NAT connection between the families that has no
    /// counterpart in the other family (RFC 7915 drops them: source quench, most parameter
    /// problems, unknown codes).
    IcmpUntranslatable => "icmp_untranslatable",
    /// An ACK of no connection to a service answering with SYN cookies that returned none
    /// (forged, older than two cookie periods, or of a synproxied connection that timed
    /// out waiting for its server): answered with a reset, as `no_conn_in`, within the
    /// answers' rate limit.
    SynproxyBadAck => "synproxy_bad_ack",
}

/// The names of [`StatsSum::helper`]'s counters, in order.
pub const HELPER_EVENTS: [&str; 8] = [
    "calls",
    "rewrites",
    "faults",
    "expects",
    "expects_refused",
    "expects_matched",
    "segmented",
    "expects_replaced",
];

/// Counters of the application helpers, per worker.
#[derive(Debug, Default)]
pub struct HelperCounters {
    /// Helper calls (packets with payload shown to a helper).
    pub calls: AtomicU64,
    /// Payloads a helper replaced.
    pub rewrites: AtomicU64,
    /// Calls that trapped, timed out or answered out of range: the connection passes
    /// through unmodified from then on.
    pub faults: AtomicU64,
    /// Expected connections registered.
    pub expects: AtomicU64,
    /// Expected connections refused (another client or server, no room).
    pub expects_refused: AtomicU64,
    /// Expected connections taken by their first packet.
    pub expects_matched: AtomicU64,
    /// Segments that grew past the path's MTU and were cut in two or more.
    pub segmented: AtomicU64,
    /// Waiting expected connections removed for a newer one of the same control
    /// connection (`HELPER_MAX_EXPECTS_PER_CONN`).
    pub expects_replaced: AtomicU64,
}

/// The names of [`StatsSum::synproxy`]'s counters, in order.
pub const SYNPROXY_EVENTS: [&str; 6] = [
    "cookies_sent",
    "acks_accepted",
    "acks_rejected",
    "syns_resent",
    "joined",
    "server_resets",
];

/// Counters of the synproxy, per worker.
#[derive(Debug, Default)]
pub struct SynproxyCounters {
    /// SYNs answered with a cookie.
    pub cookies_sent: AtomicU64,
    /// ACKs that returned a cookie: connections made.
    pub acks_accepted: AtomicU64,
    /// ACKs of no connection to a service answering with cookies that returned none.
    pub acks_rejected: AtomicU64,
    /// SYNs sent to a server again (a client's packet while the server had not answered).
    pub syns_resent: AtomicU64,
    /// Connections whose server answered: the halves joined.
    pub joined: AtomicU64,
    /// Servers that refused (a reset to the SYN), passed to the client.
    pub server_resets: AtomicU64,
}

/// Counters of one worker.
#[derive(Debug)]
pub struct DatapathStats {
    /// Frames received.
    pub rx: AtomicU64,
    /// Frames sent.
    pub tx: AtomicU64,
    /// Frames left to the kernel (not wvs's).
    pub passed: AtomicU64,
    /// Connections created.
    pub conns: AtomicU64,
    /// GRO/GSO super-packets received (forwarded whole, segmented by the kernel later).
    pub rx_gso: AtomicU64,
    /// ICMP errors wvs sent itself: port unreachable (no real server could take a new
    /// connection), time exceeded, fragmentation needed.
    pub icmp_sent: AtomicU64,
    /// TCP resets sent for segments of no connection.
    pub resets_sent: AtomicU64,
    /// Connections started by a TCP segment other than a SYN (`sloppy_tcp`): flows the
    /// routers moved here from another balancer, or that a restarted one forgot.
    pub unknown_flows: AtomicU64,
    /// Connections whose flows the offload map took (`--offload tc`).
    pub offloaded: AtomicU64,
    /// Connections whose flows it could not take (full): they stay with wvs.
    pub offload_refused: AtomicU64,
    /// Application helpers.
    pub helper: HelperCounters,
    /// The synproxy.
    pub synproxy: SynproxyCounters,
    drops: Box<[AtomicU64]>,
}

impl Default for DatapathStats {
    fn default() -> Self {
        Self {
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            conns: AtomicU64::new(0),
            rx_gso: AtomicU64::new(0),
            icmp_sent: AtomicU64::new(0),
            resets_sent: AtomicU64::new(0),
            unknown_flows: AtomicU64::new(0),
            offloaded: AtomicU64::new(0),
            offload_refused: AtomicU64::new(0),
            helper: HelperCounters::default(),
            synproxy: SynproxyCounters::default(),
            drops: DropReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

pub use crate::stats::{add, bump};

impl DatapathStats {
    /// Count a drop.
    #[inline]
    pub fn count_drop(&self, r: DropReason) {
        bump(&self.drops[r as usize]);
    }

    /// Count `n` drops at once.
    #[inline]
    pub fn count_drops(&self, r: DropReason, n: u64) {
        let c = &self.drops[r as usize];
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Return the drop count for a reason.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Relaxed)
    }
}

/// Sums of several workers' counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatsSum {
    /// Frames received.
    pub rx: u64,
    /// Frames sent.
    pub tx: u64,
    /// Frames left to the kernel.
    pub passed: u64,
    /// Connections created.
    pub conns: u64,
    /// GRO/GSO super-packets received.
    pub rx_gso: u64,
    /// ICMP port unreachable sent.
    pub icmp_sent: u64,
    /// TCP resets sent.
    pub resets_sent: u64,
    /// Connections started by a TCP segment other than a SYN.
    pub unknown_flows: u64,
    /// Connections offloaded.
    pub offloaded: u64,
    /// Connections the offload map could not take.
    pub offload_refused: u64,
    /// Application helpers: calls, rewrites, faults, expected connections registered,
    /// refused and matched, segments cut.
    pub helper: [u64; HELPER_EVENTS.len()],
    /// The synproxy: cookies sent, ACKs accepted and rejected, SYNs sent again, joins,
    /// servers' resets ([`SYNPROXY_EVENTS`]).
    pub synproxy: [u64; SYNPROXY_EVENTS.len()],
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub drops: Vec<(DropReason, u64)>,
}

impl StatsSum {
    /// Sum the counters of `workers`.
    pub fn of<'a>(workers: impl IntoIterator<Item = &'a DatapathStats>) -> Self {
        let mut s = StatsSum {
            drops: DropReason::ALL.iter().map(|r| (*r, 0)).collect(),
            ..Default::default()
        };
        for w in workers {
            s.rx += w.rx.load(Relaxed);
            s.tx += w.tx.load(Relaxed);
            s.passed += w.passed.load(Relaxed);
            s.conns += w.conns.load(Relaxed);
            s.rx_gso += w.rx_gso.load(Relaxed);
            s.icmp_sent += w.icmp_sent.load(Relaxed);
            s.resets_sent += w.resets_sent.load(Relaxed);
            s.unknown_flows += w.unknown_flows.load(Relaxed);
            s.offloaded += w.offloaded.load(Relaxed);
            s.offload_refused += w.offload_refused.load(Relaxed);
            let h = &w.helper;
            for (acc, c) in s.helper.iter_mut().zip([
                &h.calls,
                &h.rewrites,
                &h.faults,
                &h.expects,
                &h.expects_refused,
                &h.expects_matched,
                &h.segmented,
                &h.expects_replaced,
            ]) {
                *acc += c.load(Relaxed);
            }
            let p = &w.synproxy;
            for (acc, c) in s.synproxy.iter_mut().zip([
                &p.cookies_sent,
                &p.acks_accepted,
                &p.acks_rejected,
                &p.syns_resent,
                &p.joined,
                &p.server_resets,
            ]) {
                *acc += c.load(Relaxed);
            }
            for (r, n) in s.drops.iter_mut() {
                *n += w.drops(*r);
            }
        }
        s
    }

    /// Total drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}
