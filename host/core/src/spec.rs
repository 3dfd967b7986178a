//! What the core is told: services, real servers, timeouts, IPVS's switches, the defense
//! settings and plugin references, as plain values that were validated before they got here.
//!
//! The daemon reads them from its file, API and command-line forms (`wvs::config`) and
//! converts them with `TryFrom`; nothing here parses text or knows a format. A service and
//! its real servers carry a health check of the daemon's type `C`, which the core keeps
//! with the service and never reads (its health reaches the core through [`Dest`]'s cell).
//!
//! [`Dest`]: crate::service::Dest

use std::net::IpAddr;

use crate::consts::{FTP_PORT, TCP_TIMEOUTS_SECS, UDP_TIMEOUT_SECS};
use crate::model::{Forward, Protocol, ServiceKey, TcpState};

/// A virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service<C = ()> {
    /// Firewall mark of a fwmark service (`ipvsadm -f`), 0 for an address service. A
    /// fwmark service's `addr` is the unspecified address of its family, its `port` 0 and
    /// its `proto` TCP ([`ServiceKey::fwmark`]).
    pub fwmark: u32,
    /// Protocol.
    pub proto: Protocol,
    /// Virtual IP.
    pub addr: IpAddr,
    /// Virtual port.
    pub port: u16,
    /// Scheduler name: a built-in IPVS scheduler or a plugin.
    pub scheduler: String,
    /// Service flags (`IP_VS_SVC_F_*`).
    pub flags: u32,
    /// Persistence timeout in seconds (`IP_VS_SVC_F_PERSISTENT`), if persistent.
    pub persistent: Option<u32>,
    /// Persistence granularity: an IPv4 service's netmask (host byte order), an IPv6
    /// service's prefix length (as IPVS keeps them).
    pub netmask: u32,
    /// Full NAT's local addresses, in order, without repeats; a connection takes one of its
    /// real server's family.
    pub laddrs: Vec<IpAddr>,
    /// Helpers as configured (`None`: the default for the port; see [`Self::helper_names`]).
    pub helpers: Option<Vec<String>>,
    /// The default health check of its real servers.
    pub check: Option<C>,
    /// `udp_on_failure` as configured: `Some(true)` move, `Some(false)` keep, `None`
    /// not given (keep).
    pub udp_on_failure: Option<bool>,
    /// Whether a failed server's UDP flows move.
    pub udp_move: bool,
    /// One-packet scheduling (`IP_VS_SVC_F_ONEPACKET`, `ipvsadm -o`): each UDP datagram is
    /// scheduled on its own and leaves no connection behind.
    pub ops: bool,
    /// The persistence engine (`ipvsadm --pe NAME`, IPVS's `svc->pe`): a plugin that keys
    /// a persistent service's templates by what it reads in a new connection's first
    /// packet besides the client (the built-in `sip`: the Call-ID).
    pub pe: Option<String>,
    /// keepalived's `quorum` (the least total weight of live real servers that keeps the
    /// service up, else only its sorry server takes clients), `hysteresis`, and the
    /// programs run when the quorum is gained and lost (`quorum_up`, `quorum_down`).
    pub quorum: Quorum,
    /// Its synproxy (TCP only; `None`: as `defense.synproxy` says).
    pub synproxy: Option<SynproxyMode>,
    /// Real servers, in order.
    pub reals: Vec<Real<C>>,
}

/// Whether a TCP service answers new connections with SYN cookies (`crate::synproxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynproxyMode {
    /// Never.
    Off,
    /// While the defense's trigger holds (the table is short).
    Auto,
    /// Always.
    On,
}

/// A service's quorum (keepalived's `quorum`, `hysteresis`, `quorum_up`, `quorum_down`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quorum {
    /// The least total weight (`None`: 1, keepalived's default).
    pub quorum: Option<u32>,
    /// How far past it the weight must move to change state (`None`: 0).
    pub hysteresis: Option<u32>,
    /// Run when the quorum is gained (argv as written).
    pub up: Option<String>,
    /// Run when it is lost.
    pub down: Option<String>,
    /// When wvs stops: `down` runs if the quorum held, and each real server's notify-down
    /// program if the server was up (keepalived's `omega`).
    pub omega: bool,
}

impl Quorum {
    /// Whether the quorum holds after `up` (its state before) with live weight `sum`
    /// (`update_quorum_state`): lost when the weight falls below quorum - hysteresis or
    /// to 0, gained when it reaches quorum + hysteresis.
    pub fn holds(&self, up: bool, sum: u64) -> bool {
        let q = u64::from(self.quorum.unwrap_or(1));
        let h = u64::from(self.hysteresis.unwrap_or(0));
        if up {
            !(sum == 0 || sum < q.saturating_sub(h))
        } else {
            sum >= q + h
        }
    }
}

impl<C> Service<C> {
    /// A service on `addr:port` run by `scheduler`, with what a configuration may leave
    /// out: no flags, not persistent, the default helpers, no check and no real server yet.
    pub fn new(proto: Protocol, addr: IpAddr, port: u16, scheduler: &str) -> Self {
        Self {
            fwmark: 0,
            proto,
            addr,
            port,
            scheduler: scheduler.into(),
            flags: 0,
            persistent: None,
            netmask: u32::MAX,
            laddrs: Vec::new(),
            helpers: None,
            check: None,
            udp_on_failure: None,
            udp_move: false,
            ops: false,
            pe: None,
            synproxy: None,
            quorum: Quorum::default(),
            reals: Vec::new(),
        }
    }

    /// The fwmark service of `mark` in IPv6 (`v6`) or IPv4, as [`Self::new`].
    pub fn fwmark(mark: u32, v6: bool, scheduler: &str) -> Self {
        let key = ServiceKey::fwmark(mark, v6);
        Self {
            fwmark: mark,
            ..Self::new(key.proto, key.addr, key.port, scheduler)
        }
    }

    /// The service's key.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            fwmark: self.fwmark,
            proto: self.proto,
            addr: self.addr,
            port: self.port,
        }
    }

    /// The helpers its connections are bound to: those configured, else `ftp` for TCP
    /// port 21.
    pub fn helper_names(&self) -> Vec<String> {
        match &self.helpers {
            Some(h) => h.clone(),
            None if self.fwmark == 0 && self.proto == Protocol::Tcp && self.port == FTP_PORT => {
                vec!["ftp".into()]
            }
            None => Vec::new(),
        }
    }

    /// The same service with each health check turned by `f` (`|_| Some(())`: what the
    /// core reads, where there are checks but not what they are; `|_| None`: none).
    pub fn map_checks<D>(&self, f: impl Fn(&C) -> Option<D>) -> Service<D> {
        Service {
            fwmark: self.fwmark,
            proto: self.proto,
            addr: self.addr,
            port: self.port,
            scheduler: self.scheduler.clone(),
            flags: self.flags,
            persistent: self.persistent,
            netmask: self.netmask,
            laddrs: self.laddrs.clone(),
            helpers: self.helpers.clone(),
            check: self.check.as_ref().and_then(&f),
            udp_on_failure: self.udp_on_failure,
            udp_move: self.udp_move,
            ops: self.ops,
            pe: self.pe.clone(),
            quorum: self.quorum.clone(),
            synproxy: self.synproxy,
            reals: self
                .reals
                .iter()
                .map(|r| Real {
                    addr: r.addr,
                    port: r.port,
                    weight: r.weight,
                    fwd: r.fwd,
                    upper_threshold: r.upper_threshold,
                    lower_threshold: r.lower_threshold,
                    hint: r.hint,
                    check: r.check.as_ref().and_then(&f),
                    sorry: r.sorry,
                })
                .collect(),
        }
    }
}

/// A mark rule of wvs's classifier: a packet it matches carries `mark`, and a fwmark
/// service of that mark and the packet's family takes it (IPVS's `skb->mark`, which an
/// operator sets with `nft ... meta mark set` or iptables' `MARK`). Each list that is empty
/// matches anything; one that is not matches when one of its items does. The rules are
/// read in order and the last that matches wins, as a chain of `meta mark set` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRule {
    /// The mark it sets (1 or more).
    pub mark: u32,
    /// Only packets of this family (`ip` or `ip6`), if any; prefixes are all of it.
    pub family: Option<Family>,
    /// Only these protocols (TCP, UDP).
    pub protos: Vec<Protocol>,
    /// Source prefixes.
    pub saddr: Vec<ipnet::IpNet>,
    /// Destination prefixes.
    pub daddr: Vec<ipnet::IpNet>,
    /// Source port ranges, inclusive.
    pub sport: Vec<(u16, u16)>,
    /// Destination port ranges, inclusive.
    pub dport: Vec<(u16, u16)>,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (nft's `ip`).
    V4,
    /// IPv6 (nft's `ip6`).
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv6() { Self::V6 } else { Self::V4 }
    }
}

impl MarkRule {
    /// Whether a packet `saddr:sport -> daddr:dport` of `proto` matches.
    #[inline]
    pub fn matches(
        &self,
        proto: Protocol,
        (saddr, sport): (IpAddr, u16),
        (daddr, dport): (IpAddr, u16),
    ) -> bool {
        let port_in = |ranges: &[(u16, u16)], p: u16| {
            ranges.is_empty() || ranges.iter().any(|&(lo, hi)| lo <= p && p <= hi)
        };
        let addr_in = |nets: &[ipnet::IpNet], a: IpAddr| {
            nets.is_empty() || nets.iter().any(|n| n.contains(&a))
        };
        self.family.is_none_or(|f| f == Family::of(daddr))
            && (self.protos.is_empty() || self.protos.contains(&proto))
            && port_in(&self.dport, dport)
            && port_in(&self.sport, sport)
            && addr_in(&self.daddr, daddr)
            && addr_in(&self.saddr, saddr)
    }
}

/// A real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Real<C = ()> {
    /// Address.
    pub addr: IpAddr,
    /// Port (0 = the virtual port).
    pub port: u16,
    /// Weight, 0..=65535 as in IPVS.
    pub weight: u32,
    /// Forwarding method.
    pub fwd: Forward,
    /// Upper connection threshold (0 = none).
    pub upper_threshold: u32,
    /// Lower connection threshold (0 = none).
    pub lower_threshold: u32,
    /// Hint for custom schedulers.
    pub hint: u32,
    /// Its own health check (else its service's).
    pub check: Option<C>,
    /// A sorry server: scheduled only when no other can be.
    pub sorry: bool,
}

impl<C> Real<C> {
    /// A real server at `addr:port` (port 0: the virtual port) with what a configuration
    /// may leave out: weight 1, NAT, no thresholds, no hint, no check.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Self {
            addr,
            port,
            weight: 1,
            fwd: Forward::Masq,
            upper_threshold: 0,
            lower_threshold: 0,
            hint: 0,
            check: None,
            sorry: false,
        }
    }
}

/// The connection timeouts `ipvsadm --set tcp tcpfin udp` changes, in seconds: IPVS's
/// `tcp_timeouts[ESTABLISHED]`, `tcp_timeouts[FIN_WAIT]` and `udp_timeouts[NORMAL]` (the
/// other TCP states keep IPVS's fixed values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// An established TCP connection.
    pub tcp: u32,
    /// A TCP connection in FIN_WAIT.
    pub tcpfin: u32,
    /// A UDP flow.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp: TCP_TIMEOUTS_SECS[TcpState::Established as usize],
            tcpfin: TCP_TIMEOUTS_SECS[TcpState::FinWait as usize],
            udp: UDP_TIMEOUT_SECS,
        }
    }
}

/// Each state's timeout in milliseconds: IPVS's defaults with the values `--set` changes
/// (ESTABLISHED, FIN_WAIT and UDP's one state). It lives in the service snapshot, so a change
/// reaches every worker with the next packet and costs the fast path nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTimeouts {
    tcp_ms: [u64; TcpState::ALL.len()],
    udp_ms: u64,
}

impl Default for StateTimeouts {
    fn default() -> Self {
        Self::new(&Timeouts::default())
    }
}

impl StateTimeouts {
    /// The table for the configured timeouts.
    pub fn new(t: &Timeouts) -> Self {
        let mut tcp_ms = TCP_TIMEOUTS_SECS.map(|s| u64::from(s) * 1000);
        tcp_ms[TcpState::Established as usize] = u64::from(t.tcp) * 1000;
        tcp_ms[TcpState::FinWait as usize] = u64::from(t.tcpfin) * 1000;
        Self {
            tcp_ms,
            udp_ms: u64::from(t.udp) * 1000,
        }
    }

    /// The timeout of a TCP connection in state `s`.
    #[inline]
    pub fn tcp(&self, s: TcpState) -> u64 {
        self.tcp_ms[s as usize]
    }

    /// The timeout of a UDP flow.
    #[inline]
    pub fn udp(&self) -> u64 {
        self.udp_ms
    }
}

/// IPVS's switches that wvs follows (`/proc/sys/net/ipv4/vs/*`); the daemon's form says
/// what each does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctl {
    /// `cache_bypass`.
    pub cache_bypass: bool,
    /// `nat_icmp_send`.
    pub nat_icmp_send: bool,
    /// `pmtu_disc`.
    pub pmtu_disc: bool,
    /// `expire_nodest_conn` (wvs's default: on).
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template`.
    pub expire_quiescent_template: bool,
    /// `conn_reuse_mode`, IPVS's bits.
    pub conn_reuse_mode: u8,
    /// `sloppy_tcp`: a TCP segment other than a SYN (and not a reset) may start a
    /// connection.
    pub sloppy_tcp: bool,
    /// `sloppy_udp`, wvs's name for the same switch for UDP (see the daemon's form).
    pub sloppy_udp: bool,
    /// wvs's: `sloppy_tcp` applies only to services whose scheduler is consistent
    /// ([`wvs_sdk::sched_flags::CONSISTENT`]); other services answer as without it.
    pub sloppy_consistent_only: bool,
    /// `backup_only`: while the sync daemon runs as backup, packets are left to the
    /// director's own stack.
    pub backup_only: bool,
    /// What the sync daemon's master sends and when.
    pub sync: SyncSettings,
}

/// `sync_threshold`, `sync_period`, `sync_refresh_period`, `sync_retries` and
/// `sync_persist_mode`: when a connection is sent to the backups (`ip_vs_sync_conn_needed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    /// `sync_threshold[0]`: the packet count at which a connection is first sent.
    pub threshold: u32,
    /// `sync_threshold[1]`: and again every this many packets (0: once).
    pub period: u32,
    /// `sync_refresh_period`, seconds (0: off): sent again only when its expiry moved this
    /// much (or half its timeout).
    pub refresh_period: u32,
    /// `sync_retries`, 0-3: extra sends of an unchanged connection, at `refresh_period / 8`.
    pub retries: u8,
    /// `sync_persist_mode`: only the templates of persistent services are sent.
    pub persist_mode: bool,
    /// `sync_ports`: sync threads, one UDP port each (the daemon's business).
    pub ports: u8,
    /// `sync_sock_size`: the sync sockets' buffer size, 0 for the system's.
    pub sock_size: u32,
    /// `sync_qlen_max`: records each worker may queue for the master.
    pub qlen_max: u32,
    /// `sync_full_period` (wvs's own), seconds: the master sends its whole table this
    /// often (0: never, as IPVS).
    pub full_period: u32,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            threshold: crate::consts::SYNC_THRESHOLD,
            period: crate::consts::SYNC_PERIOD,
            refresh_period: 0,
            retries: 0,
            persist_mode: false,
            ports: 1,
            sock_size: 0,
            qlen_max: crate::consts::SYNC_QUEUE_RECORDS as u32,
            full_period: 0,
        }
    }
}

impl Default for Sysctl {
    fn default() -> Self {
        Self {
            cache_bypass: false,
            nat_icmp_send: false,
            pmtu_disc: true,
            expire_nodest_conn: true,
            expire_quiescent_template: false,
            conn_reuse_mode: 1,
            sloppy_tcp: false,
            sloppy_udp: false,
            sloppy_consistent_only: false,
            backup_only: false,
            sync: SyncSettings::default(),
        }
    }
}

/// The defense strategies' settings (IPVS's sysctls of the same names, and the table
/// threshold); the daemon's form says what each does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefenseSettings {
    /// `drop_entry` mode, 0-3.
    pub drop_entry: u8,
    /// `drop_packet` mode, 0-3.
    pub drop_packet: u8,
    /// `secure_tcp` mode, 0-3.
    pub secure_tcp: u8,
    /// The table fill, in percent of `max_conns`, at which the automatic modes engage.
    pub threshold: u8,
    /// `amemthresh`, pages.
    pub amemthresh: u32,
    /// `am_droprate`.
    pub am_droprate: u32,
    /// The synproxy's mode, 0-3, for the services that leave it to this setting: 1 answers
    /// new TCP connections with SYN cookies while the table is short (the other
    /// strategies' trigger), 3 always.
    pub synproxy: u8,
}

impl Default for DefenseSettings {
    fn default() -> Self {
        Self {
            drop_entry: 1,
            drop_packet: 0,
            secure_tcp: 1,
            threshold: 75,
            amemthresh: 1024,
            am_droprate: 10,
            synproxy: 1,
        }
    }
}

/// A scheduler or helper plugin loaded from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// Name services use in `scheduler = "…"` or `helpers`; may replace a built-in one.
    pub name: String,
    /// Path of the `.wasm` module.
    pub path: std::path::PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keepalived's update_quorum_state: lost below quorum - hysteresis (or at 0),
    /// gained at quorum + hysteresis; in between the state stays.
    #[test]
    fn quorum_with_hysteresis() {
        let q = Quorum {
            quorum: Some(4),
            hysteresis: Some(1),
            ..Quorum::default()
        };
        assert!(q.holds(true, 3), "3 is not below 4 - 1");
        assert!(!q.holds(true, 2));
        assert!(!q.holds(false, 4), "4 is below 4 + 1");
        assert!(q.holds(false, 5));
        let d = Quorum::default();
        assert!(d.holds(true, 1) && !d.holds(true, 0) && d.holds(false, 1));
        let big = Quorum {
            quorum: Some(1),
            hysteresis: Some(5),
            ..Quorum::default()
        };
        assert!(!big.holds(true, 0), "0 always loses it");
    }
}
