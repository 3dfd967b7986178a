//! The TOML configuration file: virtual services and their real servers.
//!
//! ```toml
//! [[plugin]]                    # a scheduler plugin from a file (sdk/ABI.md)
//! name = "lat2"                 # services use it as scheduler = "lat2"
//! path = "lat2.wasm"            # relative to this file
//!
//! [[service]]
//! protocol = "tcp"              # tcp | udp | sctp (or fwm/fwm6 with a mark as address)
//! address = "198.18.100.1:80"   # virtual IP and port
//! scheduler = "wlc"             # an IPVS scheduler (rr wrr lc wlc sed nq fo ovf twos sh dh
//!                               # mh lblc lblcr) or a [[plugin]] name; default wlc
//! flags = ["sh-port"]           # scheduler flags, as ipvsadm -b: sh-fallback sh-port
//!                               # mh-fallback mh-port flag-1 flag-2 flag-3
//! persistent = 300              # optional persistence timeout, seconds (ipvsadm -p)
//! netmask = "255.255.255.0"     # optional persistence granularity (ipvsadm -M)
//! laddrs = ["198.19.0.1"]       # full NAT's local addresses (DPVS's --add-laddr)
//!
//! [[service.real]]
//! address = "198.19.0.11:80"    # real server; port 0 keeps the virtual port
//! weight = 1                    # 0 quiesces; default 1
//! hint = 0                      # a number for custom schedulers (e.g. latency in µs)
//! forward = "nat"               # nat (masquerading, ipvsadm -m), dr (direct routing, -g),
//!                               # tunnel (-i), fullnat (-b) or local; default nat
//! tun_type = "gue"              # tunnel only: ipip (default), gue or gre (--tun-type)
//! tun_port = 6080               # gue only, and required: the UDP port (--tun-port)
//! tun_csum = "csum"             # gue/gre: nocsum (default), csum, remcsum (gue) (--tun-*csum)
//! upper_threshold = 0           # connection thresholds (ipvsadm -x / -y); 0 = none
//! lower_threshold = 0
//!
//! [timeouts]                    # optional: connection timeouts in seconds (ipvsadm --set)
//! tcp = 900                     # an established TCP connection
//! tcpfin = 120                  # a TCP connection in FIN_WAIT
//! udp = 300                     # a UDP flow
//!
//! [sysctl]                      # optional: IPVS's switches, with IPVS's defaults
//! cache_bypass = false          # no real server: packets go on to their destination
//! nat_icmp_send = false         # port unreachable to a server's packet of no connection
//! pmtu_disc = true              # off: tunnels fragment instead of fragmentation needed
//! sloppy_tcp = false            # any segment of an unknown flow may start a connection
//! sync_threshold = [3, 50]      # a connection goes to the backups at packet 3, 53, ...
//!
//! [[daemon]]                    # optional: IPVS's sync daemon (docs/sync.md)
//! state = "master"              # master or backup; one of each may run
//! mcast_interface = "eth1"      # the interface its messages use
//! syncid = 1                    # 0-255
//!
//! [defense]                     # optional: IPVS's defense strategies (docs/defense.md)
//! drop_entry = 1                # 0 off, 1 automatic, 3 always (IPVS's default: 0)
//! drop_packet = 0               # the same (IPVS's default too)
//! secure_tcp = 1                # the same (IPVS's default: 0)
//! threshold = 75                # automatic ones act above this % of --max-conns
//! amemthresh = 1024             # or under this many pages of available memory
//! am_droprate = 10              # drop_packet = 3 drops one new connection in this many
//! ```
//!
//! The same definitions ([`ServiceDef`], [`RealDef`]) are the REST API's JSON and the state
//! file's TOML, so all three validate alike.
//!
//! Parsing is strict (unknown keys are errors) and a file either loads whole or not at all:
//! a bad reload leaves the running configuration untouched.

pub mod check;
pub mod daemon;
pub mod mark;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::consts::{MAX_PERSISTENT_SECS, MAX_TIMEOUT_SECS, MAX_WEIGHT};
use crate::model::{Forward, Protocol, Scheduler, ServiceKey, TunCsum, TunKind, Tunnel};
use wvs_core::spec;

/// The example configuration (`examples/wvs.toml`, the demo topology's services), which
/// the tests check parses. wvs itself builds in no services.
#[cfg(test)]
pub(crate) const EXAMPLE: &str = include_str!("../../../examples/wvs.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path of the file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys. (Not a `#[source]`: the
    /// message already says all of it, and a cause chain would say it twice.)
    #[error("invalid configuration: {0}")]
    Parse(toml::de::Error),
    /// A value is malformed or out of range: what the OpenAPI document's schemas describe
    /// (the REST API answers 400).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// Every value is well-formed, but they contradict each other or the rest of the
    /// configuration: a lower threshold above the upper one, a scheduler that is not
    /// loaded, something defined twice (the REST API answers 409).
    #[error("invalid configuration: {0}")]
    Conflict(String),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    plugin: Vec<PluginToml>,
    #[serde(default)]
    service: Vec<ServiceDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sysctl: Option<Sysctl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    defense: Option<DefenseSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    daemon: Vec<daemon::SyncDaemon>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mark_rule: Vec<mark::MarkRuleDef>,
}

/// IPVS's switches that wvs follows (`/proc/sys/net/ipv4/vs/*`), with IPVS's defaults but
/// for `expire_nodest_conn`. Read from a table of names (serde would take a sequence for a
/// struct), every name known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(
    try_from = "std::collections::BTreeMap<String, serde_json::Value>",
    deny_unknown_fields
)]
pub struct Sysctl {
    /// `cache_bypass`: when a service has no real server that can take a new connection,
    /// its packets go on to the address they were sent to (routed by the balancer's own
    /// stack, as a transparent cache cluster needs) instead of being refused. Default off.
    #[serde(default)]
    pub cache_bypass: bool,
    /// `nat_icmp_send`: a packet from a NAT real server's port that belongs to no
    /// connection (and is not a reset) is answered with ICMP port unreachable, so the server
    /// learns at once that the client is gone. Default off.
    #[serde(default)]
    pub nat_icmp_send: bool,
    /// `pmtu_disc`: a packet with DF too long for the path is answered with ICMP
    /// fragmentation needed, whatever the method. Off, a tunnel's outer packet goes without
    /// DF and is fragmented instead. Default on.
    #[serde(default)]
    #[schema(default = true)]
    pub pmtu_disc: bool,
    /// `expire_nodest_conn`: a packet of a connection whose real server was removed ends
    /// the connection (and a SYN gets a new server at once; so does a SYN reusing the ports
    /// of a connection to a quiesced server), instead of being dropped until the
    /// connection times out. Default on (IPVS: off), so that a client is not stuck for
    /// the 15 minutes of an ESTABLISHED timeout (kubernetes#81775).
    #[serde(default)]
    #[schema(default = true)]
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template`: a persistence template whose server has weight 0 is
    /// dropped when a new connection would use it, so the client is scheduled again.
    /// Default off, as IPVS: the template holds.
    #[serde(default)]
    pub expire_quiescent_template: bool,
    /// `conn_reuse_mode`, IPVS's bits: 1, a SYN reusing the ports of a connection in
    /// TIME_WAIT or CLOSE starts a new one (scheduled again); 2, also of one in FIN_WAIT
    /// that saw no reply (DR, TUN). 0 turns it off: the SYN goes to the old connection.
    /// Default 1, as IPVS.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3, default = 1)]
    pub conn_reuse_mode: u8,
    /// `sloppy_tcp`: a TCP segment of a connection this director does not know, other than
    /// a reset, is scheduled as if it were a SYN (IPVS schedules only SYNs). For a director
    /// that takes over connections it was never told of (no sync daemon, or one that
    /// missed them): they go on, on whichever server the scheduler now picks
    /// (docs/sync.md). Default off.
    #[serde(default)]
    pub sloppy_tcp: bool,
    /// `sloppy_udp`: accepted for configurations that name it. IPVS (and wvs) already
    /// schedule any UDP datagram of a flow they do not know, so there is nothing to relax;
    /// Linux has no such sysctl (its SCTP one is `sloppy_sctp`). Default off.
    #[serde(default)]
    pub sloppy_udp: bool,
    /// `sloppy_consistent_only` (wvs's own): `sloppy_tcp` takes an unknown flow only for a
    /// service whose scheduler is consistent (mh, sh, dh, fo, or a plugin that declares
    /// `CONSISTENT`): it picks the server that any other balancer with the same servers
    /// picked, so a flow the routers move between balancers stays on its server. Another
    /// service answers such a segment with a reset, as without `sloppy_tcp` (sync its
    /// connections instead). Default off (IPVS: every scheduler).
    #[serde(default)]
    pub sloppy_consistent_only: bool,
    /// `backup_only`: while the sync daemon runs as backup, this director balances
    /// nothing and leaves the packets to its own stack, so that a DR or TUN backup that
    /// holds the VIP on a loopback does not send packets back to the master's servers.
    /// Default off.
    #[serde(default)]
    pub backup_only: bool,
    /// `sync_threshold`: `[threshold, period]`: a connection is sent to the backups at
    /// its `threshold`-th client packet, then every `period` packets (period 0: once).
    /// Default `[3, 50]`, as IPVS.
    #[serde(default)]
    #[schema(default = json!([3, 50]), min_items = 2, max_items = 2, value_type = Vec<crate::schema::SysctlInt>)]
    pub sync_threshold: [u32; 2],
    /// `sync_refresh_period`, seconds: with it, a connection is sent again only when its
    /// expiry moved by this much (or half its timeout) since the last send, whatever its
    /// packet count. Default 0 (off).
    #[serde(default)]
    #[schema(maximum = 2147483647)]
    pub sync_refresh_period: u32,
    /// `sync_retries`, 0-3: an unchanged connection is sent this many extra times, every
    /// `sync_refresh_period / 8`. Default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3)]
    pub sync_retries: u8,
    /// `sync_persist_mode`: only the persistence templates of persistent services are
    /// sent, not their connections (the backup needs `sloppy_tcp` then). Default off.
    #[serde(default)]
    pub sync_persist_mode: bool,
    /// `sync_ports`: sync threads (each its own UDP port, from the daemon's port up), a
    /// power of two up to 64; a connection always goes through the same one. Takes effect
    /// when a daemon starts. Default 1.
    #[serde(default)]
    #[schema(value_type = crate::schema::SyncPorts)]
    pub sync_ports: u8,
    /// `sync_sock_size`: the sync sockets' send (master) and receive (backup) buffer in
    /// bytes; 0 keeps the system's default. Takes effect when a daemon starts. Default 0.
    #[serde(default)]
    #[schema(maximum = 2147483647)]
    pub sync_sock_size: u32,
    /// `sync_qlen_max`: the records each worker may have waiting for the master thread;
    /// more are dropped and counted (`wvs_sync_dropped_total`). Takes effect when a master
    /// starts. Default 16384.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1048576, default = 16384)]
    pub sync_qlen_max: u32,
    /// `sync_full_period` (wvs's own), seconds: a master sends every connection it would
    /// sync (and every template) this often, whether or not they carry packets, so that a
    /// director that comes back as backup knows the idle ones before it takes over again
    /// (docs/sync.md). 0 (the default) sends only what IPVS sends.
    #[serde(default)]
    #[schema(maximum = 86400)]
    pub sync_full_period: u32,
}

impl TryFrom<std::collections::BTreeMap<String, serde_json::Value>> for Sysctl {
    type Error = String;

    fn try_from(m: std::collections::BTreeMap<String, serde_json::Value>) -> Result<Self, String> {
        let mut s = Self::default();
        for (k, v) in m {
            let flag = || {
                v.as_bool()
                    .ok_or_else(|| format!("{k}: expected true or false, not {v}"))
            };
            match k.as_str() {
                "cache_bypass" => s.cache_bypass = flag()?,
                "nat_icmp_send" => s.nat_icmp_send = flag()?,
                "pmtu_disc" => s.pmtu_disc = flag()?,
                "expire_nodest_conn" => s.expire_nodest_conn = flag()?,
                "expire_quiescent_template" => s.expire_quiescent_template = flag()?,
                "conn_reuse_mode" => {
                    s.conn_reuse_mode = match v.as_f64() {
                        Some(f) if f.fract() == 0.0 && (0.0..=3.0).contains(&f) => f as u8,
                        _ => {
                            return Err(format!(
                                "conn_reuse_mode: expected 0, 1, 2 or 3 (IPVS's bits), not {v}"
                            ));
                        }
                    }
                }
                "sloppy_tcp" => s.sloppy_tcp = flag()?,
                "sloppy_udp" => s.sloppy_udp = flag()?,
                "sloppy_consistent_only" => s.sloppy_consistent_only = flag()?,
                "backup_only" => s.backup_only = flag()?,
                "sync_persist_mode" => s.sync_persist_mode = flag()?,
                "sync_threshold" => {
                    // The kernel's sysctls are ints.
                    let max = i32::MAX as u64;
                    let pair = v
                        .as_array()
                        .filter(|a| a.len() == 2)
                        .and_then(|a| Some([whole_in(&a[0], 0, max)?, whole_in(&a[1], 0, max)?]));
                    // Threshold below period: Config::check, once the whole is read.
                    s.sync_threshold = match pair {
                        Some([t, p]) => [t as u32, p as u32],
                        _ => {
                            return Err(format!(
                                "sync_threshold: expected [threshold, period], two whole \
                                 numbers from 0 to 2147483647, not {v}"
                            ));
                        }
                    }
                }
                "sync_refresh_period" => {
                    s.sync_refresh_period = whole_in(&v, 0, i32::MAX as u64)
                        .ok_or_else(|| format!("sync_refresh_period: expected seconds, not {v}"))?
                        as u32
                }
                "sync_retries" => {
                    s.sync_retries = whole_in(&v, 0, 3)
                        .ok_or_else(|| format!("sync_retries: expected 0 to 3, not {v}"))?
                        as u8
                }
                "sync_ports" => {
                    s.sync_ports = whole_in(&v, 1, 64)
                        .filter(|n| n.is_power_of_two())
                        .ok_or_else(|| {
                            format!("sync_ports: expected a power of two from 1 to 64, not {v}")
                        })? as u8
                }
                "sync_sock_size" => {
                    s.sync_sock_size = whole_in(&v, 0, i32::MAX as u64)
                        .ok_or_else(|| format!("sync_sock_size: expected bytes, not {v}"))?
                        as u32
                }
                "sync_full_period" => {
                    s.sync_full_period = whole_in(&v, 0, 86_400).ok_or_else(|| {
                        format!("sync_full_period: expected 0 to 86400 seconds, not {v}")
                    })? as u32
                }
                "sync_qlen_max" => {
                    s.sync_qlen_max = whole_in(&v, 1, 1 << 20).ok_or_else(|| {
                        format!("sync_qlen_max: expected 1 to 1048576 records, not {v}")
                    })? as u32
                }
                other => {
                    return Err(format!(
                        "unknown field `{other}`, expected one of `cache_bypass`, \
                         `nat_icmp_send`, `pmtu_disc`, `expire_nodest_conn`, \
                         `expire_quiescent_template`, `conn_reuse_mode`, `sloppy_tcp`, \
                         `sloppy_udp`, `sloppy_consistent_only`, `backup_only`, `sync_threshold`, \
                         `sync_refresh_period`, `sync_retries`, `sync_persist_mode`, \
                         `sync_ports`, `sync_sock_size`, `sync_qlen_max`, `sync_full_period`"
                    ));
                }
            }
        }
        Ok(s)
    }
}

/// A JSON/TOML number that is a whole number in `lo..=hi`.
fn whole_in(v: &serde_json::Value, lo: u64, hi: u64) -> Option<u64> {
    let f = v.as_f64()?;
    (f.fract() == 0.0 && f >= lo as f64 && f <= hi as f64).then_some(f as u64)
}

impl Default for Sysctl {
    fn default() -> Self {
        spec::Sysctl::default().into()
    }
}

impl From<spec::Sysctl> for Sysctl {
    fn from(s: spec::Sysctl) -> Self {
        let spec::Sysctl {
            cache_bypass,
            nat_icmp_send,
            pmtu_disc,
            expire_nodest_conn,
            expire_quiescent_template,
            conn_reuse_mode,
            sloppy_tcp,
            sloppy_udp,
            sloppy_consistent_only,
            backup_only,
            sync,
        } = s;
        Self {
            cache_bypass,
            nat_icmp_send,
            pmtu_disc,
            expire_nodest_conn,
            expire_quiescent_template,
            conn_reuse_mode,
            sloppy_tcp,
            sloppy_udp,
            sloppy_consistent_only,
            backup_only,
            sync_threshold: [sync.threshold, sync.period],
            sync_refresh_period: sync.refresh_period,
            sync_retries: sync.retries,
            sync_persist_mode: sync.persist_mode,
            sync_ports: sync.ports,
            sync_sock_size: sync.sock_size,
            sync_qlen_max: sync.qlen_max,
            sync_full_period: sync.full_period,
        }
    }
}

impl From<Sysctl> for spec::Sysctl {
    fn from(s: Sysctl) -> Self {
        let Sysctl {
            cache_bypass,
            nat_icmp_send,
            pmtu_disc,
            expire_nodest_conn,
            expire_quiescent_template,
            conn_reuse_mode,
            sloppy_tcp,
            sloppy_udp,
            sloppy_consistent_only,
            backup_only,
            sync_threshold: [threshold, period],
            sync_refresh_period,
            sync_retries,
            sync_persist_mode,
            sync_ports,
            sync_sock_size,
            sync_qlen_max,
            sync_full_period,
        } = s;
        Self {
            cache_bypass,
            nat_icmp_send,
            pmtu_disc,
            expire_nodest_conn,
            expire_quiescent_template,
            conn_reuse_mode,
            sloppy_tcp,
            sloppy_udp,
            sloppy_consistent_only,
            backup_only,
            sync: spec::SyncSettings {
                threshold,
                period,
                refresh_period: sync_refresh_period,
                retries: sync_retries,
                persist_mode: sync_persist_mode,
                ports: sync_ports,
                sock_size: sync_sock_size,
                qlen_max: sync_qlen_max,
                full_period: sync_full_period,
            },
        }
    }
}

/// The connection timeouts `ipvsadm --set tcp tcpfin udp` changes, in seconds: IPVS's
/// `tcp_timeouts[ESTABLISHED]`, `tcp_timeouts[FIN_WAIT]` and `udp_timeouts[NORMAL]`
/// (the other TCP states keep IPVS's fixed values). A connection takes its state's timeout at
/// its next packet, as in IPVS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// An established TCP connection (default 900).
    #[serde(default = "default_tcp_timeout", deserialize_with = "whole::u32")]
    #[schema(minimum = 1, maximum = 2678400)]
    pub tcp: u32,
    /// A TCP connection in FIN_WAIT (default 120).
    #[serde(default = "default_tcpfin_timeout", deserialize_with = "whole::u32")]
    #[schema(minimum = 1, maximum = 2678400)]
    pub tcpfin: u32,
    /// A UDP flow (default 300).
    #[serde(default = "default_udp_timeout", deserialize_with = "whole::u32")]
    #[schema(minimum = 1, maximum = 2678400)]
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        spec::Timeouts::default().into()
    }
}

fn default_tcp_timeout() -> u32 {
    spec::Timeouts::default().tcp
}

fn default_tcpfin_timeout() -> u32 {
    spec::Timeouts::default().tcpfin
}

fn default_udp_timeout() -> u32 {
    spec::Timeouts::default().udp
}

impl From<spec::Timeouts> for Timeouts {
    fn from(t: spec::Timeouts) -> Self {
        let spec::Timeouts { tcp, tcpfin, udp } = t;
        Self { tcp, tcpfin, udp }
    }
}

impl TryFrom<Timeouts> for spec::Timeouts {
    type Error = ConfigError;

    fn try_from(t: Timeouts) -> Result<Self, ConfigError> {
        t.validate()?;
        let Timeouts { tcp, tcpfin, udp } = t;
        Ok(Self { tcp, tcpfin, udp })
    }
}

impl Timeouts {
    /// Check every value is in 1..=[`MAX_TIMEOUT_SECS`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            ("tcp", self.tcp),
            ("tcpfin", self.tcpfin),
            ("udp", self.udp),
        ] {
            if !(1..=MAX_TIMEOUT_SECS).contains(&v) {
                return Err(invalid(format!(
                    "timeout {name} = {v}: use 1 to {MAX_TIMEOUT_SECS} seconds"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PluginToml {
    name: String,
    path: String,
}

/// A scheduler or helper plugin loaded from a file.
pub(crate) type PluginSpec = spec::Plugin;

/// A validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Scheduler plugins from files.
    pub plugins: Vec<PluginSpec>,
    /// Virtual services.
    pub services: Vec<ServiceSpec>,
    /// Connection timeouts.
    pub timeouts: spec::Timeouts,
    /// IPVS's switches.
    pub sysctl: spec::Sysctl,
    /// The defense strategies.
    pub defense: spec::DefenseSettings,
    /// The sync daemons that run (`ipvsadm --start-daemon`), at most one of each state.
    pub daemons: Vec<daemon::SyncDaemon>,
    /// The classifier's mark rules, in order (fwmark services').
    pub marks: Vec<spec::MarkRule>,
}

/// Declare a struct that holds a virtual service's settings (scheduler, persistence,
/// helpers, default check, UDP on failure) between the fields given before and after them:
/// the settings are written once, here, for the whole definition ([`ServiceDef`]) and for
/// an edit ([`ServiceSettings`]), which read and write them alike. Where absence means
/// something different in an edit, the field's text says so.
macro_rules! with_service_settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($before:tt)* } { $($after:tt)* }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($before)*
            /// Scheduler: a built-in IPVS scheduler or a loaded plugin's name. Default `wlc`,
            /// as IPVS (and ipvsadm `-E` without `-s`). A name that is neither is a conflict
            /// (409).
            #[serde(default = "default_scheduler")]
            #[schema(value_type = crate::schema::SchedName)]
            pub scheduler: String,
            /// Scheduler flags as ipvsadm's `-b`.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            #[schema(value_type = Vec<crate::schema::SchedFlag>)]
            pub flags: Vec<String>,
            /// Persistence timeout in seconds (ipvsadm `-p`); absent: not persistent.
            #[serde(
                default,
                skip_serializing_if = "Option::is_none",
                deserialize_with = "whole::opt_u32"
            )]
            #[schema(minimum = 1, maximum = 31536000)]
            pub persistent: Option<u32>,
            /// Persistence granularity (ipvsadm `-M`): an IPv4 service's dotted netmask
            /// (default 255.255.255.255), an IPv6 service's prefix length (default 128).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<crate::schema::Netmask>)]
            pub netmask: Option<String>,
            /// Application helpers bound to the service's NAT and full-NAT connections, in
            /// order: built in `ftp` and `proxy-v2`, or a helper plugin's name; `[]` for none.
            /// Absent: the default, `ftp` on TCP port 21 (as `ip_vs_ftp` with `ports=21`),
            /// none elsewhere; in an edit, unchanged.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<Vec<crate::schema::HelperName>>)]
            pub helpers: Option<Vec<String>>,
            /// The health check of its real servers that have none of their own (wvs's
            /// keepalived: see `config::check`); `type = "none"`: none. Absent: none; in an
            /// edit, unchanged.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub check: Option<check::CheckDef>,
            /// What happens to a UDP flow whose real server a health check finds down: `keep`
            /// (it stays, as in IPVS; the default) or `move` (its next datagram is scheduled
            /// anew, keepalived#2163). Absent in an edit: unchanged.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<crate::schema::UdpOnFailure>)]
            pub udp_on_failure: Option<String>,
            /// A TCP service's synproxy (wvs's, as DPVS's): `on` answers every new
            /// connection's SYN with a SYN cookie from the VIP and opens the server's side
            /// only for a client that completes the handshake; `auto` does so while the
            /// connection table is short (the defense's trigger); `off` never. NAT and full
            /// NAT only. Absent: as `defense.synproxy` says; in an edit, unchanged.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<crate::schema::SynproxyMode>)]
            pub synproxy: Option<String>,
            /// One-packet scheduling (ipvsadm `-o`, keepalived's `ops`), for UDP services:
            /// every datagram is scheduled on its own and leaves no connection behind (a DNS
            /// or syslog service whose clients keep one port). Replies of NAT servers find
            /// no connection and leave as the servers sent them, as with IPVS.
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub ops: bool,
            /// Persistence engine (ipvsadm `--pe`, keepalived's `persistence_engine`): a
            /// plugin that keys a persistent service's templates by what a new connection's
            /// first packet carries besides the client: built in `sip` (a SIP message's
            /// Call-ID, as IPVS's `ip_vs_pe_sip`), or a persistence engine plugin's name.
            /// Only a persistent service consults it. Absent: none (in an edit too, as
            /// ipvsadm's `-E`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<crate::schema::PeName>)]
            pub pe: Option<String>,
            /// keepalived's `quorum`: the least total weight of live real servers (not the
            /// sorry server) that keeps the service up; below it, its sorry server alone
            /// takes clients. Default 1. Absent in an edit: unchanged.
            #[serde(
                default,
                skip_serializing_if = "Option::is_none",
                deserialize_with = "whole::opt_u32"
            )]
            #[schema(minimum = 1, maximum = 4294967295u32)]
            pub quorum: Option<u32>,
            /// keepalived's `hysteresis`: the quorum is lost below quorum - hysteresis and
            /// gained again at quorum + hysteresis. Default 0. Absent in an edit: unchanged.
            #[serde(
                default,
                skip_serializing_if = "Option::is_none",
                deserialize_with = "whole::opt_u32"
            )]
            #[schema(minimum = 0, maximum = 4294967295u32)]
            pub hysteresis: Option<u32>,
            /// A program run when the quorum is gained (keepalived's `quorum_up`), without a
            /// shell, told `WVS_SERVICE`, `WVS_QUORUM` (`up`) and `WVS_WEIGHT` (the live
            /// weight); from the API only behind `--allow-misc-checks`. Absent in an edit:
            /// unchanged.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<crate::schema::CheckProgram>)]
            pub quorum_up: Option<String>,
            /// A program run when the quorum is lost (keepalived's `quorum_down`), as
            /// `quorum_up` (`WVS_QUORUM` is `down`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<crate::schema::CheckProgram>)]
            pub quorum_down: Option<String>,
            /// keepalived's `omega`: when wvs stops, `quorum_down` runs if the quorum held,
            /// and the `notify_down` of each real server that was up. Absent in an edit:
            /// unchanged.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub omega: Option<bool>,
            $($after)*
        }
    };
}

with_service_settings! {
    /// A virtual service as written: in the configuration file, the state file and the REST
    /// API.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceDef {
        /// `tcp` or `udp`.
        #[schema(value_type = crate::schema::ProtocolName)]
        pub protocol: String,
        /// Virtual address and port, written as `a.b.c.d:port` or `[IPv6]:port`; port 0:
        /// every port of the address (a persistent service only, as IPVS).
        #[schema(value_type = crate::schema::VipPort)]
        pub address: String,
    } {
        /// Local addresses of full NAT (DPVS's `--add-laddr`): the sources its real servers
        /// see and answer to. IPv4 addresses of the balancer's on the servers' side.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[schema(value_type = Vec<crate::schema::IpAddress>)]
        pub laddrs: Vec<String>,
        /// Real servers, in order (`[[service.real]]` in TOML).
        #[serde(
            default,
            rename = "real",
            alias = "reals",
            skip_serializing_if = "Vec::is_empty"
        )]
        pub reals: Vec<RealDef>,
    }
}

with_service_settings! {
    /// A service's settings, without its identity and real servers: what
    /// `PUT /api/v1/services/{proto}/{addr}` and a batch's `edit_service` replace (ipvsadm
    /// `-E`), keeping the real servers, counters and connections.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct ServiceSettings {} {}
}

impl ServiceSettings {
    /// The whole service definition of service `protocol`/`address` with these settings
    /// and no real servers.
    pub(crate) fn to_def(&self, protocol: &str, address: &str) -> ServiceDef {
        let Self {
            scheduler,
            flags,
            persistent,
            netmask,
            helpers,
            check,
            udp_on_failure,
            synproxy,
            ops,
            pe,
            quorum,
            hysteresis,
            quorum_up,
            quorum_down,
            omega,
        } = self.clone();
        ServiceDef {
            protocol: protocol.into(),
            address: address.into(),
            scheduler,
            flags,
            persistent,
            netmask,
            helpers,
            check,
            udp_on_failure,
            synproxy,
            ops,
            pe,
            quorum,
            hysteresis,
            quorum_up,
            quorum_down,
            omega,
            laddrs: Vec::new(),
            reals: Vec::new(),
        }
    }
}

/// Declare a struct that holds a real server's settings (weight, method, thresholds, hint,
/// check, sorry) after the fields given: written once for the whole definition
/// ([`RealDef`]) and for an edit ([`RealSettings`]).
macro_rules! with_real_settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($before:tt)* }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($before)*
            /// Weight 0..=65535; 0 quiesces (no new connections). Default 1.
            #[serde(default = "default_weight", deserialize_with = "whole::u32")]
            #[schema(minimum = 0, maximum = 65535)]
            pub weight: u32,
            /// Forwarding method: `nat` (masquerading, ipvsadm `-m`; `masq` is the same),
            /// `dr` (direct routing, `-g`; `route`) or `tunnel` (`-i`; `tun`). Default `nat`.
            #[serde(default = "default_forward")]
            #[schema(value_type = crate::schema::Forward)]
            pub forward: String,
            /// Tunnel type (`forward = "tunnel"` only): ipip (default), gue or gre.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<crate::schema::TunType>)]
            pub tun_type: Option<String>,
            /// GUE's UDP destination port (gue only, and required there).
            #[serde(
                default,
                skip_serializing_if = "Option::is_none",
                deserialize_with = "whole::opt_u32"
            )]
            #[schema(minimum = 1, maximum = 65535)]
            pub tun_port: Option<u32>,
            /// The tunnel's checksum: nocsum (default), csum (gue, gre) or remcsum (gue).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<crate::schema::TunCsum>)]
            pub tun_csum: Option<String>,
            /// Upper connection threshold (0: none).
            #[serde(default, deserialize_with = "whole::u32")]
            #[schema(minimum = 0, maximum = 4294967295u32)]
            pub upper_threshold: u32,
            /// Lower connection threshold (0: none); at most the upper one, as IPVS requires
            /// (a lower threshold above the upper one is a conflict, 409).
            #[serde(default, deserialize_with = "whole::u32")]
            #[schema(minimum = 0, maximum = 4294967295u32)]
            pub lower_threshold: u32,
            /// A number custom schedulers may read (e.g. a latency in µs).
            #[serde(default, deserialize_with = "whole::u32")]
            #[schema(minimum = 0, maximum = 4294967295u32)]
            pub hint: u32,
            /// The real server's health check (`type = "none"`: not its service's either).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub check: Option<check::CheckDef>,
            /// Several health checks instead of `check`, each run on its own: the server is
            /// up only while every one passes (keepalived's several checkers on one real
            /// server). An edit that gives neither keeps what the server has.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub checks: Vec<check::CheckDef>,
            /// A sorry server (keepalived's `sorry_server`): scheduled only while no other
            /// real server of the service can take a connection (all down, out or of weight
            /// 0). Not health-checked unless it has a check of its own. An edit keeps it what
            /// it is.
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub sorry: bool,
        }
    };
}

with_real_settings! {
    /// A real server as written.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RealDef {
        /// IPv4 address, with a port (`a.b.c.d:port`) or without one (`a.b.c.d`, or port 0):
        /// the virtual port.
        #[schema(value_type = crate::schema::RealAddr)]
        pub address: String,
    }
}

with_real_settings! {
    /// A real server's settings, without its address: what
    /// `PUT /api/v1/services/{proto}/{addr}/reals/{real}` replaces (ipvsadm `-e`).
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RealSettings {}
}

impl RealSettings {
    /// The real server at `address` with these settings.
    pub(crate) fn to_def(&self, address: &str) -> RealDef {
        let Self {
            weight,
            forward,
            tun_type,
            tun_port,
            tun_csum,
            upper_threshold,
            lower_threshold,
            hint,
            check,
            checks,
            sorry,
        } = self.clone();
        RealDef {
            address: address.into(),
            weight,
            forward,
            tun_type,
            tun_port,
            tun_csum,
            upper_threshold,
            lower_threshold,
            hint,
            check,
            checks,
            sorry,
        }
    }
}

/// Integers as JSON Schema means them: a number with no fractional part, so `300.0` is
/// 300 (serde alone takes only `300`). Out of range or fractional is an error.
pub(crate) mod whole {
    use std::marker::PhantomData;

    use serde::de::{Deserializer, Error, Visitor};

    /// The integer types read so.
    trait Int: Copy + TryFrom<u64> + TryFrom<i64> + Into<f64> + std::fmt::Display {
        const MIN: Self;
        const MAX: Self;
    }

    impl Int for u32 {
        const MIN: Self = u32::MIN;
        const MAX: Self = u32::MAX;
    }

    impl Int for i32 {
        const MIN: Self = i32::MIN;
        const MAX: Self = i32::MAX;
    }

    /// A `T` from any of the forms a JSON or TOML number takes.
    struct Whole<T>(PhantomData<T>);

    impl<T: Int> Whole<T> {
        fn out<E: Error>(v: impl std::fmt::Display) -> E {
            E::custom(format!(
                "{v} is not a whole number from {} to {}",
                T::MIN,
                T::MAX
            ))
        }
    }

    impl<T: Int> Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a whole number from {} to {}", T::MIN, T::MAX)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| Self::out(v))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| Self::out(v))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
            if v.fract() == 0.0 && (T::MIN.into()..=T::MAX.into()).contains(&v) {
                // In range and whole: the cast is exact.
                T::try_from(v as i64).map_err(|_| Self::out(v))
            } else {
                Err(Self::out(v))
            }
        }
    }

    /// `null` (or absent) as `None`, else a `T` as [`Whole`] reads it.
    struct Opt<T>(PhantomData<T>);

    impl<'de, T: Int> Visitor<'de> for Opt<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "null or a whole number from {} to {}", T::MIN, T::MAX)
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Whole(PhantomData)).map(Some)
        }
    }

    /// A `u32`, also written as a float with no fractional part.
    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        d.deserialize_any(Whole(PhantomData))
    }

    /// A `u8`, also written as a float with no fractional part.
    pub fn u8<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        let v = u32(d)?;
        u8::try_from(v).map_err(|_| D::Error::custom(format!("{v} is above 255")))
    }

    /// An optional `u32` (`null` or absent is `None`).
    pub(crate) fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_option(Opt(PhantomData))
    }

    /// An optional `i32` (`null` or absent is `None`), also written as a float with no
    /// fractional part.
    pub(crate) fn opt_i32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        d.deserialize_option(Opt(PhantomData))
    }

    /// An optional `u16`.
    pub(crate) fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        opt_u32(d)?
            .map(|v| u16::try_from(v).map_err(|_| D::Error::custom(format!("{v} is above 65535"))))
            .transpose()
    }

    /// An optional `u8`.
    pub(crate) fn opt_u8<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
        opt_u32(d)?
            .map(|v| u8::try_from(v).map_err(|_| D::Error::custom(format!("{v} is above 255"))))
            .transpose()
    }

    #[cfg(test)]
    mod tests {
        #[derive(Debug, serde::Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "super::opt_i32")]
            i: Option<i32>,
            #[serde(default, deserialize_with = "super::opt_u32")]
            u: Option<u32>,
        }

        fn read(json: &str) -> Result<(Option<i32>, Option<u32>), String> {
            serde_json::from_str::<T>(json)
                .map(|t| (t.i, t.u))
                .map_err(|e| e.to_string())
        }

        #[test]
        fn whole_numbers_in_any_form_and_nothing_else() {
            assert_eq!(read(r#"{}"#), Ok((None, None)));
            assert_eq!(read(r#"{"i": null, "u": null}"#), Ok((None, None)));
            assert_eq!(read(r#"{"i": -5, "u": 300.0}"#), Ok((Some(-5), Some(300))));
            assert_eq!(read(r#"{"i": -2147483648.0}"#), Ok((Some(i32::MIN), None)));
            assert_eq!(read(r#"{"u": 4294967295}"#), Ok((None, Some(u32::MAX))));
            for (bad, says) in [
                (
                    r#"{"u": -1}"#,
                    "-1 is not a whole number from 0 to 4294967295",
                ),
                (
                    r#"{"u": 4294967296}"#,
                    "4294967296 is not a whole number from 0 to",
                ),
                (r#"{"u": 1.5}"#, "1.5 is not a whole number"),
                (r#"{"i": 2147483648}"#, "from -2147483648 to 2147483647"),
                (r#"{"i": "3"}"#, "expected a whole number from -2147483648"),
            ] {
                let e = read(bad).expect_err(bad);
                assert!(e.contains(says), "{bad}: {e}");
            }
        }
    }
}

fn default_scheduler() -> String {
    // IPVS's (and ipvsadm's) default.
    "wlc".into()
}
fn default_weight() -> u32 {
    1
}
fn default_forward() -> String {
    "nat".into()
}

/// The defense settings (IPVS's sysctls of the same names, and the table threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DefenseSettings {
    /// `drop_entry` mode, 0-3. Default 1 (IPVS: 0).
    #[serde(deserialize_with = "whole::u8")]
    #[schema(minimum = 0, maximum = 3)]
    pub drop_entry: u8,
    /// `drop_packet` mode, 0-3. Default 0, as IPVS: it drops real clients' new
    /// connections as often as a flood's, and with eviction a full table no longer
    /// refuses them.
    #[serde(deserialize_with = "whole::u8")]
    #[schema(minimum = 0, maximum = 3)]
    pub drop_packet: u8,
    /// `secure_tcp` mode, 0-3. Default 1 (IPVS: 0).
    #[serde(deserialize_with = "whole::u8")]
    #[schema(minimum = 0, maximum = 3)]
    pub secure_tcp: u8,
    /// The automatic modes engage when the table holds more than this percentage of
    /// `max_conns`, 1-100. Default 75.
    #[serde(deserialize_with = "whole::u8")]
    #[schema(minimum = 1, maximum = 100)]
    pub threshold: u8,
    /// `amemthresh`: or when the host's available memory is under this many pages, as
    /// IPVS. Default 1024.
    #[serde(deserialize_with = "whole::u32")]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub amemthresh: u32,
    /// `am_droprate`: `drop_packet` mode 3 drops one new connection in this many. Default
    /// 10.
    #[serde(deserialize_with = "whole::u32")]
    #[schema(minimum = 1, maximum = 2147483647)]
    pub am_droprate: u32,
    /// The synproxy's mode, 0-3, for the TCP services that do not set their own
    /// (`synproxy`): 1 answers new connections with SYN cookies while the table is short
    /// (the trigger above), 3 always, 0 never. Default 1 (IPVS has none).
    #[serde(deserialize_with = "whole::u8")]
    #[schema(minimum = 0, maximum = 3)]
    pub synproxy: u8,
}

impl Default for DefenseSettings {
    fn default() -> Self {
        spec::DefenseSettings::default().into()
    }
}

impl From<spec::DefenseSettings> for DefenseSettings {
    fn from(d: spec::DefenseSettings) -> Self {
        let spec::DefenseSettings {
            drop_entry,
            drop_packet,
            secure_tcp,
            threshold,
            amemthresh,
            am_droprate,
            synproxy,
        } = d;
        Self {
            drop_entry,
            drop_packet,
            secure_tcp,
            threshold,
            amemthresh,
            am_droprate,
            synproxy,
        }
    }
}

impl TryFrom<DefenseSettings> for spec::DefenseSettings {
    type Error = String;

    fn try_from(d: DefenseSettings) -> Result<Self, String> {
        d.validate()?;
        let DefenseSettings {
            drop_entry,
            drop_packet,
            secure_tcp,
            threshold,
            amemthresh,
            am_droprate,
            synproxy,
        } = d;
        Ok(Self {
            drop_entry,
            drop_packet,
            secure_tcp,
            threshold,
            amemthresh,
            am_droprate,
            synproxy,
        })
    }
}

impl DefenseSettings {
    /// Check the ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("drop_entry", self.drop_entry),
            ("drop_packet", self.drop_packet),
            ("secure_tcp", self.secure_tcp),
            ("synproxy", self.synproxy),
        ] {
            if v > 3 {
                return Err(format!("defense.{name} is {v}; it is 0 to 3"));
            }
        }
        if !(1..=100).contains(&self.threshold) {
            return Err(format!(
                "defense.threshold is {}; it is a percentage, 1 to 100",
                self.threshold
            ));
        }
        if self.am_droprate == 0 {
            return Err("defense.am_droprate is 0; it is 1 or more".into());
        }
        for (name, v) in [
            ("amemthresh", self.amemthresh),
            ("am_droprate", self.am_droprate),
        ] {
            if v > i32::MAX as u32 {
                return Err(format!("defense.{name} is {v}; it is at most {}", i32::MAX));
            }
        }
        Ok(())
    }
}

/// A synproxy mode as configured.
pub(crate) fn synproxy_name(m: spec::SynproxyMode) -> &'static str {
    match m {
        spec::SynproxyMode::On => "on",
        spec::SynproxyMode::Off => "off",
        spec::SynproxyMode::Auto => "auto",
    }
}

/// A validated virtual service, with its health checks.
pub(crate) type ServiceSpec = spec::Service<check::CheckSpec>;

impl From<&ServiceSpec> for ServiceDef {
    /// The service as written (the inverse of [`ServiceDef::validate`]).
    fn from(s: &ServiceSpec) -> Self {
        let (protocol, address) = service_id(s.key());
        ServiceDef {
            protocol,
            address,
            scheduler: s.scheduler.clone(),
            flags: flag_names(&s.scheduler, s.flags),
            persistent: s.persistent,
            netmask: match s.addr {
                IpAddr::V4(_) => {
                    (s.netmask != u32::MAX).then(|| Ipv4Addr::from(s.netmask).to_string())
                }
                IpAddr::V6(_) => (s.netmask != 128).then(|| s.netmask.to_string()),
            },
            helpers: s.helpers.clone(),
            check: s.check.as_ref().map(|c| c.def.clone()),
            udp_on_failure: s
                .udp_on_failure
                .map(|m| if m { "move" } else { "keep" }.to_string()),
            synproxy: s.synproxy.map(|m| synproxy_name(m).to_string()),
            ops: s.ops,
            pe: s.pe.clone(),
            quorum: s.quorum.quorum,
            hysteresis: s.quorum.hysteresis,
            quorum_up: s.quorum.up.clone(),
            quorum_down: s.quorum.down.clone(),
            omega: s.quorum.omega.then_some(true),
            laddrs: s.laddrs.iter().map(|a| a.to_string()).collect(),
            reals: s.reals.iter().map(RealDef::from).collect(),
        }
    }
}

/// A published service as the daemon gave it to its snapshot, health checks included
/// (a snapshot built from specs of another type, as some tests build, has none).
pub fn given(svc: &crate::service::VirtualService) -> std::borrow::Cow<'_, ServiceSpec> {
    match svc.given::<check::CheckSpec>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(svc.spec.map_checks(|_| None)),
    }
}

/// A validated real server, with its health check.
pub(crate) type RealSpec = spec::Real<check::CheckSpec>;

impl From<&RealSpec> for RealDef {
    /// The real server as written.
    fn from(r: &RealSpec) -> Self {
        RealDef {
            address: SocketAddr::new(r.addr, r.port).to_string(),
            weight: r.weight,
            forward: r.fwd.name().into(),
            tun_type: match r.fwd {
                Forward::Tunnel(t) => Some(t.kind.name().into()),
                _ => None,
            },
            tun_port: match r.fwd {
                Forward::Tunnel(t) if t.port != 0 => Some(u32::from(t.port)),
                _ => None,
            },
            tun_csum: match r.fwd {
                Forward::Tunnel(t) if t.csum != TunCsum::None => Some(t.csum.name().into()),
                _ => None,
            },
            upper_threshold: r.upper_threshold,
            lower_threshold: r.lower_threshold,
            hint: r.hint,
            // One check as `check`, several as `checks`, as they were written.
            check: (r.check.as_ref())
                .filter(|c| !c.listed)
                .map(|c| c.def.clone()),
            checks: (r.check.as_ref())
                .filter(|c| c.listed)
                .map_or(Vec::new(), |c| c.all().map(|c| c.def.clone()).collect()),
            sorry: r.sorry,
        }
    }
}

impl Config {
    /// The snapshot of this configuration, the one place one is built from it: `previous`'s
    /// real servers and scheduler state that stay are taken over, schedulers and helpers
    /// are the plugins `custom` (from files) or `registry`'s built-in ones.
    pub fn snapshot(
        &self,
        previous: &crate::service::Snapshot,
        registry: &crate::plugin::Registry,
        custom: &[crate::plugin::Plugin],
    ) -> crate::service::Snapshot {
        let mut snap = crate::service::Snapshot::build_with_helpers(
            &self.services,
            &self.timeouts,
            previous,
            &|n| crate::service::SchedChoice::new(n, registry.plugin_in(custom, n)),
            &|n| registry.extension_in(custom, n),
        );
        snap.sysctl = self.sysctl;
        snap.defense = self.defense;
        snap.set_marks(&self.marks);
        // keepalived's alpha: a new real server whose check starts down is out of
        // scheduling from its first snapshot, not from the checker's first look at it
        // (CHECK_RECONCILE_MS later), when it could have taken clients.
        for svc in snap.services() {
            let Some(given) = svc.given::<check::CheckSpec>() else {
                continue;
            };
            for (d, r) in svc.dests.iter().rev().zip(&given.reals) {
                let default = given.check.as_ref().filter(|_| !r.sorry);
                if let Some(c) = r.check.as_ref().or(default)
                    && d.checker().is_none()
                    && c.all().any(|c| c.timing.start_down && c.probe.is_some())
                {
                    d.set_health(true, c.inhibit);
                }
            }
        }
        snap
    }
}

/// Read and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut cfg = parse(&text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in &mut cfg.plugins {
        if p.path.is_relative() {
            p.path = base.join(&p.path);
        }
    }
    Ok(cfg)
}

/// Whether `name` may name a plugin.
pub(crate) fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parse and validate configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let file: File = toml::from_str(text)?;
    let mut cfg = Config {
        plugins: Vec::with_capacity(file.plugin.len()),
        services: Vec::with_capacity(file.service.len()),
        timeouts: file.timeouts.unwrap_or_default().try_into()?,
        sysctl: file.sysctl.unwrap_or_default().into(),
        defense: file
            .defense
            .unwrap_or_default()
            .try_into()
            .map_err(invalid)?,
        daemons: file.daemon,
        marks: file
            .mark_rule
            .iter()
            .map(mark::MarkRuleDef::validate)
            .collect::<Result<_, _>>()?,
    };
    for p in file.plugin {
        if !valid_plugin_name(&p.name) {
            return Err(invalid(format!(
                "plugin name {:?}: use 1 to 32 letters, digits, '-' or '_'",
                p.name
            )));
        }
        cfg.plugins.push(PluginSpec {
            name: p.name,
            path: p.path.into(),
        });
    }
    for s in &file.service {
        cfg.services.push(s.validate()?);
    }
    cfg.check()?;
    Ok(cfg)
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

fn conflict(msg: String) -> ConfigError {
    ConfigError::Conflict(msg)
}

/// Parse a protocol name.
pub(crate) fn parse_protocol(s: &str) -> Result<Protocol, ConfigError> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        other => Err(invalid(format!(
            "protocol {other:?}: expected \"tcp\", \"udp\", \"sctp\", \"fwm\" or \"fwm6\""
        ))),
    }
}

/// A service's identity as the API and files write it: protocol name and `vip:port`, or
/// `fwm` (`fwm6`) and its mark ([`parse_service_id`]'s inverse).
pub(crate) fn service_id(k: ServiceKey) -> (String, String) {
    match (k.is_fwmark(), k.addr.is_ipv6()) {
        (true, false) => ("fwm".into(), k.fwmark.to_string()),
        (true, true) => ("fwm6".into(), k.fwmark.to_string()),
        _ => (
            k.proto.name().into(),
            SocketAddr::new(k.addr, k.port).to_string(),
        ),
    }
}

/// Parse a service's identity: a protocol name and `vip:port`, or `fwm` (`fwm6` for IPv6)
/// and a firewall mark (ipvsadm's `-f MARK [-6]`).
pub(crate) fn parse_service_id(protocol: &str, address: &str) -> Result<ServiceKey, ConfigError> {
    let mark = address
        .parse::<u32>()
        .ok()
        .filter(|&m| m != 0 && m.to_string() == address);
    if let v6 @ ("fwm6" | "fwm") = protocol {
        // Either is well-formed on its own: the pair is what conflicts.
        return match mark {
            Some(m) => Ok(ServiceKey::fwmark(m, v6 == "fwm6")),
            None => Err(conflict(format!(
                "service {protocol}/{address}: a fwmark service is named by its mark, 1 to {}",
                u32::MAX
            ))),
        };
    }
    let proto = parse_protocol(protocol)?;
    if mark.is_some() {
        return Err(conflict(format!(
            "service {protocol}/{address}: a mark names a fwmark service, whose protocol is fwm (fwm6 for IPv6)"
        )));
    }
    let vip = parse_sockaddr(address, "service address")?;
    Ok(ServiceKey::new(proto, vip.ip(), vip.port()))
}

impl ServiceDef {
    /// Validate the service on its own; [`Config::check`] checks it against the others.
    pub fn validate(&self) -> Result<ServiceSpec, ConfigError> {
        let id = parse_service_id(&self.protocol, &self.address)?;
        // IPVS schedules a port-0 service's connections only when it is persistent (its
        // template holds every port of a client); ipvsadm refuses another.
        if id.port == 0 && !id.is_fwmark() && self.persistent.is_none() {
            return Err(conflict(format!(
                "service {}: port 0 (every port) is for a persistent service only (-p): \
                 Zero port specified for non-persistent service",
                self.address
            )));
        }
        if !valid_plugin_name(&self.scheduler) {
            return Err(invalid(format!(
                "service {}: scheduler name {:?}: use 1 to 32 letters, digits, '-' or '_'",
                self.address, self.scheduler
            )));
        }
        let flags = self.flag_bits()?;
        let persistent = self.persistence()?;
        // IPVS keeps an IPv6 service's persistence granularity as a prefix length (1 to
        // 128) where an IPv4 one has a netmask.
        let netmask = match (&self.netmask, id.addr.is_ipv6()) {
            (None, false) => u32::MAX,
            (None, true) => 128,
            (Some(m), false) => parse_netmask(m).ok_or_else(|| {
                // A well-formed granularity of the other family is a conflict with the
                // service's address, not a malformed value (the document allows both).
                let err = if prefix_len(m).is_some() { conflict } else { invalid };
                err(format!(
                    "service {}: netmask {m:?} is not a dotted IPv4 netmask such as 255.255.255.0",
                    self.address
                ))
            })?,
            (Some(m), true) => prefix_len(m).ok_or_else(|| {
                let err = if parse_netmask(m).is_some() { conflict } else { invalid };
                err(format!(
                    "service {}: netmask {m:?} is not a prefix length from 1 to 128 (an IPv6 service's, such as 64)",
                    self.address
                ))
            })?,
        };
        self.check_helpers()?;
        let udp_on_failure = match self.udp_on_failure.as_deref() {
            None => None,
            Some("keep") => Some(false),
            Some("move") => Some(true),
            Some(o) => {
                return Err(invalid(format!(
                    "service {}: udp_on_failure {o:?}: keep or move",
                    self.address
                )));
            }
        };
        let synproxy = match self.synproxy.as_deref() {
            None => None,
            Some("on") => Some(spec::SynproxyMode::On),
            Some("off") => Some(spec::SynproxyMode::Off),
            Some("auto") => Some(spec::SynproxyMode::Auto),
            Some(o) => {
                return Err(invalid(format!(
                    "service {}: synproxy {o:?}: on, off or auto",
                    self.address
                )));
            }
        };
        if synproxy.is_some_and(|m| m != spec::SynproxyMode::Off)
            && (id.proto != Protocol::Tcp || id.is_fwmark())
        {
            return Err(conflict(format!(
                "service {}/{}: synproxy is for TCP address services",
                self.protocol, self.address
            )));
        }
        // Helpers are bound by a connection's port (ip_vs_bind_app); a fwmark service's
        // connections have any.
        if id.is_fwmark() && self.helpers.as_ref().is_some_and(|h| !h.is_empty()) {
            return Err(conflict(format!(
                "service {}/{}: a fwmark service takes no helper (they are bound by port; \
                 give the application its own address service)",
                self.protocol, self.address
            )));
        }
        if self.ops && id.proto != Protocol::Udp && !id.is_fwmark() {
            return Err(conflict(format!(
                "service {}: one-packet scheduling (ops) is only for UDP services",
                self.address
            )));
        }
        let mut reals = Vec::with_capacity(self.reals.len());
        for r in &self.reals {
            reals.push(r.validate(id)?);
        }
        if synproxy == Some(spec::SynproxyMode::On)
            && let Some(r) = reals.iter().find(|r| !r.fwd.sees_replies())
        {
            return Err(conflict(format!(
                "service {}/{}: synproxy = \"on\" needs every real server's replies back \
                 through wvs (nat, fullnat); {} is {}",
                self.protocol,
                self.address,
                r.addr,
                r.fwd.name()
            )));
        }
        let laddrs = self.local_addrs()?;
        let check = self
            .check
            .as_ref()
            .map(|c| c.validate(&format!("service {}", self.address)))
            .transpose()?;
        // A server without a port of a service of every port (port 0, fwmark) has no port
        // to check: its check names one (keepalived's connect_port), or runs a program.
        for r in reals
            .iter()
            .filter(|r| id.port == 0 && r.port == 0 && !r.sorry)
        {
            let spec = r.check.as_ref().or(check.as_ref());
            let portless = spec.is_some_and(|c| {
                c.all().any(|c| {
                    c.port.is_none()
                        && c.probe
                            .as_ref()
                            .is_some_and(|p| !matches!(p, check::Probe::Misc { .. }))
                })
            });
            if portless {
                return Err(conflict(format!(
                    "service {}/{}: real server {} has no port and the service has every \
                     port: its health check needs a port (port = N, --check-port N)",
                    self.protocol, self.address, r.addr
                )));
            }
        }
        Ok(ServiceSpec {
            fwmark: id.fwmark,
            proto: id.proto,
            addr: id.addr,
            port: id.port,
            scheduler: self.scheduler.clone(),
            flags,
            persistent,
            netmask,
            laddrs,
            helpers: self.helpers.clone(),
            check,
            udp_on_failure,
            udp_move: udp_on_failure == Some(true),
            synproxy,
            ops: self.ops,
            pe: self.pe.clone(),
            quorum: self.quorum_spec()?,
            reals,
        })
    }

    /// Its quorum settings, checked.
    fn quorum_spec(&self) -> Result<spec::Quorum, ConfigError> {
        if self.quorum == Some(0) {
            return Err(invalid(format!(
                "service {}/{}: quorum 0 (the least is 1)",
                self.protocol, self.address
            )));
        }
        for (name, p) in [
            ("quorum_up", &self.quorum_up),
            ("quorum_down", &self.quorum_down),
        ] {
            if p.as_ref().is_some_and(|p| p.trim().is_empty()) {
                return Err(invalid(format!(
                    "service {}/{}: {name} is empty",
                    self.protocol, self.address
                )));
            }
        }
        Ok(spec::Quorum {
            quorum: self.quorum,
            hysteresis: self.hysteresis,
            up: self.quorum_up.clone(),
            down: self.quorum_down.clone(),
            omega: self.omega.unwrap_or(false),
        })
    }

    /// The `flags` as IPVS's bits.
    fn flag_bits(&self) -> Result<u32, ConfigError> {
        let mut flags = 0;
        for f in &self.flags {
            flags |= svc_flag(f).ok_or_else(|| {
                invalid(format!(
                    "service {}: unknown flag {f:?} (known: sh-fallback sh-port mh-fallback mh-port flag-1 flag-2 flag-3)",
                    self.address
                ))
            })?;
        }
        Ok(flags)
    }

    /// The persistence timeout, if within IPVS's bounds.
    fn persistence(&self) -> Result<Option<u32>, ConfigError> {
        Ok(match self.persistent {
            None => None,
            Some(t) if (1..=MAX_PERSISTENT_SECS).contains(&t) => Some(t),
            Some(t) => {
                return Err(invalid(format!(
                    "service {}: persistence timeout {t} is outside 1..={MAX_PERSISTENT_SECS} seconds",
                    self.address
                )));
            }
        })
    }

    /// Helper names: valid, none twice, and `[]` (not "none") for none.
    fn check_helpers(&self) -> Result<(), ConfigError> {
        if let Some(hs) = &self.helpers {
            for (i, h) in hs.iter().enumerate() {
                if !valid_plugin_name(h) {
                    return Err(invalid(format!(
                        "service {}: helper name {h:?}: use 1 to 32 letters, digits, '-' or '_' (and [] for none)",
                        self.address
                    )));
                }
                if h == "none" {
                    return Err(conflict(format!(
                        "service {}: no helper is called \"none\" (write [] for none)",
                        self.address
                    )));
                }
                if hs[..i].contains(h) {
                    return Err(conflict(format!(
                        "service {}: helper {h:?} is given twice",
                        self.address
                    )));
                }
            }
        }
        Ok(())
    }

    /// Full NAT's local addresses, none twice.
    fn local_addrs(&self) -> Result<Vec<IpAddr>, ConfigError> {
        let mut laddrs = Vec::with_capacity(self.laddrs.len());
        for a in &self.laddrs {
            let l = parse_laddr(a)?;
            if laddrs.contains(&l) {
                return Err(conflict(format!(
                    "service {}: local address {l} is given twice",
                    self.address
                )));
            }
            laddrs.push(l);
        }
        Ok(laddrs)
    }
}

impl RealDef {
    /// Validate a real server of service `svc`.
    pub fn validate(&self, svc: ServiceKey) -> Result<RealSpec, ConfigError> {
        let ra = parse_real_addr(&self.address)?;
        let fwd = self.forward_method(svc, ra.port())?;
        if self.weight > MAX_WEIGHT {
            return Err(invalid(format!(
                "real server {}: weight {} is above {MAX_WEIGHT}",
                self.address, self.weight
            )));
        }
        // IPVS lets only a tunnel server be of the other family (`ip_vs_ctl.c`): the
        // packet goes inside a header of the server's family, unchanged. wvs's full NAT
        // translates the header too (with a local address of the server's family).
        if ra.is_ipv4() != svc.addr.is_ipv4()
            && !matches!(fwd, Forward::Tunnel(_) | Forward::FullNat)
        {
            return Err(conflict(format!(
                "real server {} and service {svc} are of different address families (only a tunnel or full NAT server may be)",
                self.address
            )));
        }
        // ip_vs_add_dest / ip_vs_edit_dest: -ERANGE, also when there is no upper threshold.
        if self.lower_threshold > self.upper_threshold {
            return Err(conflict(format!(
                "real server {}: lower threshold {} is above the upper threshold {}",
                self.address, self.lower_threshold, self.upper_threshold
            )));
        }
        Ok(RealSpec {
            addr: ra.ip(),
            // DR and tunnels deliver to the virtual port, and a server given without a port
            // (or port 0) takes it too: say so, as ipvsadm sets it (`-r IP` means the
            // service's port), so that listings show the port the server is reached on.
            port: if fwd.maps_ports() && ra.port() != 0 {
                ra.port()
            } else {
                svc.port
            },
            weight: self.weight,
            fwd,
            upper_threshold: self.upper_threshold,
            lower_threshold: self.lower_threshold,
            hint: self.hint,
            check: self.check_spec()?,
            sorry: self.sorry,
        })
    }

    /// Its check, or its several checks as one whose further ones are in `also`.
    fn check_spec(&self) -> Result<Option<check::CheckSpec>, ConfigError> {
        let who = format!("real server {}", self.address);
        match (&self.check, self.checks.as_slice()) {
            (c, []) => c.as_ref().map(|c| c.validate(&who)).transpose(),
            (Some(_), [_, ..]) => Err(conflict(format!(
                "{who}: give check (one) or checks (several), not both"
            ))),
            (None, [first, rest @ ..]) => {
                let mut main = first.validate(&who)?;
                main.listed = true;
                for c in rest {
                    main.also.push(c.validate(&who)?);
                }
                if main.all().any(|c| c.probe.is_none()) {
                    return Err(conflict(format!(
                        "{who}: a check of type none among several (none alone means no check)"
                    )));
                }
                Ok(Some(main))
            }
        }
    }
}

impl RealDef {
    /// The forwarding method as written, checked as ipvsadm and the kernel check it: tunnel
    /// options only with a tunnel and only those its type takes; DR and tunnels keep the
    /// virtual port (`port`: the real server's as written).
    fn forward_method(&self, svc: ServiceKey, port: u16) -> Result<Forward, ConfigError> {
        let who = &self.address;
        let fwd = match self.forward.as_str() {
            "nat" | "masq" => Forward::Masq,
            "dr" | "route" => Forward::Route,
            "fullnat" | "full-nat" => Forward::FullNat,
            "local" => Forward::Local,
            "tunnel" | "tun" => {
                let kind = match self.tun_type.as_deref() {
                    None => TunKind::Ipip,
                    Some(k) => TunKind::from_name(k).ok_or_else(|| {
                        invalid(format!(
                            "real server {who}: unknown tunnel type {k:?} (ipip, gue or gre)"
                        ))
                    })?,
                };
                let csum = match self.tun_csum.as_deref() {
                    None => TunCsum::None,
                    Some(c) => TunCsum::from_name(c).ok_or_else(|| {
                        invalid(format!(
                            "real server {who}: unknown tunnel checksum {c:?} (nocsum, csum or remcsum)"
                        ))
                    })?,
                };
                let port = match self.tun_port {
                    None => 0,
                    Some(p @ 1..=65535) => p as u16,
                    Some(p) => {
                        return Err(invalid(format!(
                            "real server {who}: tunnel port {p} is not in 1-65535"
                        )));
                    }
                };
                let t = Tunnel { kind, port, csum };
                t.check()
                    .map_err(|e| conflict(format!("real server {who}: {e}")))?;
                Forward::Tunnel(t)
            }
            other => {
                return Err(invalid(format!(
                    "real server {who}: unknown forwarding method {other:?} (nat, dr, tunnel, fullnat or local)"
                )));
            }
        };
        if !matches!(fwd, Forward::Tunnel(_))
            && (self.tun_type.is_some() || self.tun_port.is_some() || self.tun_csum.is_some())
        {
            return Err(conflict(format!(
                "real server {who}: tunnel options conflict with forwarding method {:?}",
                self.forward
            )));
        }
        if !fwd.maps_ports() && port != 0 && port != svc.port {
            return Err(conflict(format!(
                "real server {who}: {} forwards to the virtual port {}, not {port} (leave the port out)",
                fwd.name(),
                svc.port
            )));
        }
        Ok(fwd)
    }
}

/// Parse a full-NAT local address: an IPv4 address as written canonically (malformed: 400),
/// that is a unicast one (else a conflict, 409: it cannot be a source).
pub(crate) fn parse_laddr(s: &str) -> Result<IpAddr, ConfigError> {
    // IPv4 as written back; IPv6 in any form (written back canonically).
    let a: IpAddr = s
        .parse()
        .ok()
        .filter(|a: &IpAddr| a.is_ipv6() || a.to_string() == s)
        .ok_or_else(|| {
            invalid(format!(
                "local address {s:?} is not an IP address written canonically"
            ))
        })?;
    let broadcast = matches!(a, IpAddr::V4(v) if v.is_broadcast());
    if a.is_unspecified() || broadcast || a.is_multicast() || a.is_loopback() {
        return Err(conflict(format!(
            "local address {a} is not a unicast address"
        )));
    }
    Ok(a)
}

/// An IP address as the API's patterns take it: IPv4 as written back, IPv6 in any form.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse()
        .ok()
        .filter(|a: &IpAddr| a.is_ipv6() || a.to_string() == s)
}

/// Parse a real server's address: `ip:port`, or a bare IP (port 0: the virtual port), as
/// ipvsadm's `-r` takes it.
pub(crate) fn parse_real_addr(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        if ip.is_ipv6() {
            return Ok(SocketAddr::new(ip, 0));
        }
        return canonical(
            SocketAddr::new(ip, 0),
            &ip.to_string(),
            s,
            "real server address",
        );
    }
    parse_sockaddr(s, "real server address")
}

/// Accept an address only as it is written back (`198.19.0.11:80`, not `198.19.0.11:080`),
/// so that what the API takes is exactly what its document's patterns describe, and a
/// saved configuration reads the same as what was given.
fn canonical(
    a: SocketAddr,
    written: &str,
    given: &str,
    what: &str,
) -> Result<SocketAddr, ConfigError> {
    if written == given {
        Ok(a)
    } else {
        Err(invalid(format!(
            "{what} {given:?} is not written canonically (as {written:?})"
        )))
    }
}

/// An IPv6 service's persistence granularity: a prefix length from 1 to 128, as written
/// back.
fn prefix_len(s: &str) -> Option<u32> {
    s.parse::<u32>()
        .ok()
        .filter(|p| (1..=128).contains(p) && p.to_string() == s)
}

fn parse_netmask(s: &str) -> Option<u32> {
    let m = u32::from(s.parse::<Ipv4Addr>().ok()?);
    // Contiguous ones from the top, and not empty.
    (m != 0 && m.leading_ones() + m.trailing_zeros() == 32).then_some(m)
}

impl Config {
    /// Check the services against each other and the plugins: nothing defined twice, every
    /// scheduler known.
    pub fn check(&self) -> Result<(), ConfigError> {
        daemon::check(&self.daemons)?;
        mark::check_all(&self.marks)?;
        // The kernel's proc_do_sync_threshold: two ints, the first below the second unless
        // that is 0. A pair of numbers that breaks only this is a conflict (409), as the
        // schema cannot say it.
        let sync = &self.sysctl.sync;
        if sync.period != 0 && sync.threshold >= sync.period {
            return Err(conflict(format!(
                "sync_threshold: expected [threshold, period] with threshold below period \
                 (or period 0), not [{}, {}]",
                sync.threshold, sync.period
            )));
        }
        let mut names = HashSet::new();
        for p in &self.plugins {
            if !names.insert(&p.name) {
                return Err(conflict(format!("plugin {:?} is defined twice", p.name)));
            }
        }
        let mut seen = HashSet::new();
        for s in &self.services {
            if !seen.insert(s.key()) {
                return Err(conflict(format!("service {} is defined twice", s.key())));
            }
            if Scheduler::from_name(&s.scheduler).is_none()
                && !self.plugins.iter().any(|p| p.name == s.scheduler)
            {
                let known: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
                return Err(conflict(format!(
                    "service {}: unknown scheduler {:?} (built in: {}; or a plugin's name)",
                    s.key(),
                    s.scheduler,
                    known.join(" ")
                )));
            }
            for h in s.helper_names() {
                if Scheduler::from_name(&h).is_some() {
                    return Err(conflict(format!(
                        "service {}: {h:?} is a scheduler, not an application helper",
                        s.key()
                    )));
                }
                if !crate::consts::BUILTIN_HELPERS.contains(&h.as_str())
                    && !self.plugins.iter().any(|p| p.name == h)
                {
                    return Err(conflict(format!(
                        "service {}: unknown helper {h:?} (built in: {}; or a helper plugin's name)",
                        s.key(),
                        crate::consts::BUILTIN_HELPERS.join(" ")
                    )));
                }
            }
            if let Some(pe) = &s.pe
                && !crate::consts::BUILTIN_PES.contains(&pe.as_str())
                && !self.plugins.iter().any(|p| &p.name == pe)
            {
                return Err(conflict(format!(
                    "service {}: unknown persistence engine {pe:?} (built in: {}; or a \
                     persistence engine plugin's name)",
                    s.key(),
                    crate::consts::BUILTIN_PES.join(" ")
                )));
            }
            // The scheduler plugins' table holds that many (the SDK's `MAX_DESTS`): a
            // server past it would never be scheduled.
            if s.reals.len() > wvs_sdk::MAX_DESTS {
                return Err(invalid(format!(
                    "service {} has {} real servers: at most {} per service",
                    s.key(),
                    s.reals.len(),
                    wvs_sdk::MAX_DESTS
                )));
            }
            // A full-NAT server's replies need the connection that chose its local
            // address, which one-packet scheduling does not keep.
            if s.ops && s.reals.iter().any(|r| r.fwd == Forward::FullNat) {
                return Err(conflict(format!(
                    "service {}: one-packet scheduling (ops) keeps no connection, which full \
                     NAT's replies need: use NAT, DR or a tunnel",
                    s.key()
                )));
            }
            let mut seen_real = HashSet::new();
            for r in &s.reals {
                if !seen_real.insert((r.addr, r.port)) {
                    return Err(conflict(format!(
                        "real server {} is listed twice in service {}",
                        SocketAddr::new(r.addr, r.port),
                        s.key()
                    )));
                }
            }
        }
        Ok(())
    }

    /// What a reload of the configuration file gives (SIGHUP): the file's changes since it
    /// was last applied (`base` to `new`) applied to the running configuration (`self`).
    /// What changed only in the running one (`wvs adm`, the API, `--set`) stays; where the
    /// file changed the same service, plugin or setting, the file wins. Returns the result
    /// and one line per change, for the log.
    pub(crate) fn merge_file(&self, base: &Config, new: &Config) -> (Config, Vec<String>) {
        let mut out = self.clone();
        let mut said = Vec::new();
        // Services, by key, in the running order; new ones after.
        let key_of = |c: &Config, k: ServiceKey| c.services.iter().position(|s| s.key() == k);
        for b in &base.services {
            if key_of(new, b.key()).is_none() && key_of(&out, b.key()).is_some() {
                out.services.retain(|s| s.key() != b.key());
                said.push(format!("service {} removed", b.key()));
            }
        }
        for n in &new.services {
            let before = key_of(base, n.key()).map(|i| &base.services[i]);
            if before == Some(n) {
                continue;
            }
            match key_of(&out, n.key()) {
                Some(i) => {
                    if out.services[i] != *n {
                        out.services[i] = n.clone();
                        said.push(format!("service {} replaced by the file's", n.key()));
                    }
                }
                None => {
                    out.services.push(n.clone());
                    said.push(format!("service {} added", n.key()));
                }
            }
        }
        // Plugins, by name.
        for b in &base.plugins {
            if !new.plugins.iter().any(|p| p.name == b.name) {
                let n = out.plugins.len();
                out.plugins.retain(|p| p != b);
                if out.plugins.len() != n {
                    said.push(format!("plugin {} removed", b.name));
                }
            }
        }
        for p in &new.plugins {
            if base.plugins.contains(p) {
                continue;
            }
            out.plugins.retain(|o| o.name != p.name);
            out.plugins.push(p.clone());
            said.push(format!("plugin {} from {}", p.name, p.path.display()));
        }
        // Settings, each whole.
        if new.timeouts != base.timeouts && out.timeouts != new.timeouts {
            out.timeouts = new.timeouts;
            said.push("timeouts".into());
        }
        if new.sysctl != base.sysctl && out.sysctl != new.sysctl {
            out.sysctl = new.sysctl;
            said.push("sysctl".into());
        }
        if new.defense != base.defense && out.defense != new.defense {
            out.defense = new.defense;
            said.push("defense".into());
        }
        if new.daemons != base.daemons && out.daemons != new.daemons {
            out.daemons = new.daemons.clone();
            said.push("daemons".into());
        }
        if new.marks != base.marks && out.marks != new.marks {
            out.marks = new.marks.clone();
            said.push("mark rules".into());
        }
        (out, said)
    }

    /// The service with this identity.
    pub fn service(&self, id: ServiceKey) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.key() == id)
    }

    /// The service with this identity, to edit.
    pub(crate) fn service_mut(&mut self, id: ServiceKey) -> Option<&mut ServiceSpec> {
        self.services.iter_mut().find(|s| s.key() == id)
    }
}

impl From<toml::de::Error> for ConfigError {
    fn from(e: toml::de::Error) -> Self {
        Self::Parse(e)
    }
}

/// Write a configuration as TOML that [`parse`] reads back to the same configuration.
pub fn to_toml(cfg: &Config) -> String {
    let file = File {
        plugin: cfg
            .plugins
            .iter()
            .map(|p| PluginToml {
                name: p.name.clone(),
                path: p.path.display().to_string(),
            })
            .collect(),
        service: cfg.services.iter().map(ServiceDef::from).collect(),
        timeouts: (cfg.timeouts != Default::default()).then_some(cfg.timeouts.into()),
        sysctl: (cfg.sysctl != Default::default()).then_some(cfg.sysctl.into()),
        defense: (cfg.defense != Default::default()).then_some(cfg.defense.into()),
        daemon: cfg.daemons.clone(),
        mark_rule: cfg.marks.iter().map(mark::MarkRuleDef::from).collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    toml::to_string(&file).unwrap_or_default()
}

/// The flags as ipvsadm's `-b` names them (sh-… or mh-… for those schedulers).
pub(crate) fn flag_names(scheduler: &str, flags: u32) -> Vec<String> {
    use wvs_sdk::svc_flags::{SCHED1, SCHED2, SCHED3};
    let (f1, f2) = match scheduler {
        "sh" => ("sh-fallback", "sh-port"),
        "mh" => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    [(SCHED1, f1), (SCHED2, f2), (SCHED3, "flag-3")]
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// A scheduler flag as ipvsadm's `-b` spells it.
fn svc_flag(name: &str) -> Option<u32> {
    use wvs_sdk::svc_flags::{SCHED1, SCHED2, SCHED3};
    Some(match name {
        "sh-fallback" | "mh-fallback" | "flag-1" => SCHED1,
        "sh-port" | "mh-port" | "flag-2" => SCHED2,
        "flag-3" => SCHED3,
        _ => return None,
    })
}

fn parse_sockaddr(s: &str, what: &str) -> Result<SocketAddr, ConfigError> {
    let a = s.parse::<SocketAddr>().map_err(|_| {
        invalid(format!(
            "{what} {s:?} is not an IP:port (IPv6 as [addr]:port)"
        ))
    })?;
    match a {
        // IPv6 in any form RFC 4291 allows (ipvsadm reads it with inet_pton), written back
        // canonically; the port as written back, and no zone (a service or server is
        // global).
        SocketAddr::V6(v6) => {
            if v6.scope_id() != 0 || v6.flowinfo() != 0 {
                return Err(invalid(format!(
                    "{what} {s:?}: an IPv6 zone index is not taken"
                )));
            }
            let port = format!("]:{}", v6.port());
            if !s.ends_with(&port) {
                return Err(invalid(format!(
                    "{what} {s:?} is not written canonically (as {a})"
                )));
            }
            Ok(a)
        }
        SocketAddr::V4(_) => canonical(a, &a.to_string(), s, what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let specs = parse(EXAMPLE).unwrap().services;
        assert!(
            specs
                .iter()
                .any(|s| s.proto == Protocol::Tcp && s.reals.len() == 3)
        );
        assert!(specs.iter().any(|s| s.proto == Protocol::Udp));
    }

    #[test]
    fn sysctl_and_local_addresses_round_trip_and_are_checked() {
        let cfg = parse(
            "[sysctl]\ncache_bypass = true\npmtu_disc = false\n\
             [[service]]\nprotocol = 'tcp'\naddress = '198.18.100.1:80'\nladdrs = ['198.19.0.100', '198.19.0.101']\n\
             [[service.real]]\naddress = '198.19.0.11:8080'\nforward = 'fullnat'\n",
        )
        .unwrap();
        assert_eq!(
            cfg.sysctl,
            spec::Sysctl {
                cache_bypass: true,
                pmtu_disc: false,
                ..spec::Sysctl::default()
            }
        );
        let more = parse(
            "[sysctl]\nexpire_nodest_conn = false\nexpire_quiescent_template = true\n\
             conn_reuse_mode = 3\n",
        )
        .unwrap();
        assert_eq!(
            (
                more.sysctl.expire_nodest_conn,
                more.sysctl.expire_quiescent_template,
                more.sysctl.conn_reuse_mode
            ),
            (false, true, 3)
        );
        for bad in [
            "conn_reuse_mode = 4",
            "conn_reuse_mode = 1.5",
            "conn_reuse_mode = true",
            "expire_nodest_conn = 1",
            "pmtu = true",
        ] {
            assert!(parse(&format!("[sysctl]\n{bad}\n")).is_err(), "{bad}");
        }
        assert_eq!(cfg.services[0].laddrs.len(), 2);
        // Without a port (or with 0), a server of any method is reached on the service's
        // port, and says so, as ipvsadm's `-r IP` does.
        let bare = parse(
            "[[service]]\nprotocol = 'tcp'\naddress = '198.18.100.1:80'\n\
             [[service.real]]\naddress = '198.19.0.11'\n\
             [[service.real]]\naddress = '198.19.0.12:0'\nforward = 'fullnat'\n",
        )
        .unwrap();
        let ports: Vec<u16> = bare.services[0].reals.iter().map(|r| r.port).collect();
        assert_eq!(ports, [80, 80]);
        assert_eq!(cfg.services[0].reals[0].fwd, Forward::FullNat);
        assert_eq!(parse(&to_toml(&cfg)).unwrap(), cfg);
        assert!(
            parse("").unwrap().sysctl.pmtu_disc,
            "on by default, as IPVS"
        );
        assert!(parse("[sysctl]\nbogus = true\n").is_err());
        // Defense: IPVS's modes, checked; written back when not the defaults.
        let cfg = parse("[defense]\nsecure_tcp = 3\nthreshold = 50\n").unwrap();
        assert_eq!((cfg.defense.secure_tcp, cfg.defense.threshold), (3, 50));
        assert_eq!(cfg.defense.drop_entry, 1, "the others keep their defaults");
        assert_eq!(parse(&to_toml(&cfg)).unwrap(), cfg);
        let e = parse("[defense]\ndrop_packet = 4\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("drop_packet"), "{e}");
        assert!(parse("[defense]\nbogus = 1\n").is_err());
        assert!(!to_toml(&parse("").unwrap()).contains("defense"));
        assert!(parse("[sysctl]\ncache_bypass = 1\n").is_err());
        for (laddrs, conflict) in [
            ("['198.19.0.1', '198.19.0.1']", true),
            ("['0.0.0.0']", true),
            ("['198.19.0']", false),
            ("['198.19.0.01']", false),
        ] {
            let e = parse(&format!(
                "[[service]]\nprotocol = 'tcp'\naddress = '198.18.100.1:80'\nladdrs = {laddrs}\n"
            ))
            .unwrap_err();
            assert_eq!(
                matches!(e, ConfigError::Conflict(_)),
                conflict,
                "{laddrs}: {e}"
            );
        }
        let json: Result<Sysctl, _> = serde_json::from_str("[]");
        assert!(json.is_err(), "a sequence is no table of switches");
    }

    #[test]
    fn writes_what_it_reads() {
        let text = "[[plugin]]\nname = 'lat2'\npath = '/x/lat2.wasm'\n\
            [[service]]\nprotocol = 'udp'\naddress = '198.18.100.1:9000'\nscheduler = 'sh'\nflags = ['sh-port', 'sh-fallback']\n\
            [[service.real]]\naddress = '198.19.0.11:9000'\nweight = 3\nhint = 7\nupper_threshold = 10\n\
            [[service]]\nprotocol = 'tcp'\naddress = '198.18.100.1:80'\nscheduler = 'lat2'\n";
        let cfg = parse(text).unwrap();
        assert_eq!(parse(&to_toml(&cfg)).unwrap(), cfg);
        let timed = parse("[timeouts]\ntcp = 60\nudp = 5\n").unwrap();
        assert_eq!(
            timed.timeouts,
            spec::Timeouts {
                tcp: 60,
                tcpfin: 120,
                udp: 5
            }
        );
        assert_eq!(parse(&to_toml(&timed)).unwrap(), timed);
        assert!(
            !to_toml(&Config::default()).contains("timeouts"),
            "defaults are not written"
        );
        for bad in ["tcp = 0", "udp = 2678401", "tcpfin = -1", "fin = 3"] {
            assert!(parse(&format!("[timeouts]\n{bad}\n")).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&to_toml(&Config::default())).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let cases = [
            (
                "[[service]]\nprotocol='dccp'\naddress='198.18.100.1:80'",
                "protocol",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1'",
                "IP:port",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nscheduler='nope'",
                "unknown scheduler",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nflags=['sh-nope']",
                "unknown flag",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\ncolour=1",
                "unknown field",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\n[[service.real]]\naddress='198.19.0.1:80'\nweight=70000",
                "above 65535",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\n[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'",
                "twice",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn forwarding_methods_and_tunnel_options_are_checked_as_ipvsadm_does() {
        let real = |body: &str| {
            parse(&format!(
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\n[[service.real]]\n{body}"
            ))
            .map(|c| c.services[0].reals[0].fwd)
        };
        assert_eq!(real("address='198.19.0.1'").unwrap(), Forward::Masq);
        assert_eq!(
            real("address='198.19.0.1'\nforward='route'").unwrap(),
            Forward::Route
        );
        assert_eq!(
            real("address='198.19.0.1:80'\nforward='tunnel'\ntun_type='gue'\ntun_port=6080\ntun_csum='remcsum'")
                .unwrap(),
            Forward::Tunnel(Tunnel {
                kind: TunKind::Gue,
                port: 6080,
                csum: TunCsum::Remcsum
            })
        );
        for (body, want, conflict) in [
            (
                "address='198.19.0.1'\nforward='snat'",
                "unknown forwarding method",
                false,
            ),
            (
                "address='198.19.0.1'\nforward='tunnel'\ntun_type='vxlan'",
                "unknown tunnel type",
                false,
            ),
            (
                "address='198.19.0.1'\nforward='tunnel'\ntun_csum='some'",
                "unknown tunnel checksum",
                false,
            ),
            (
                "address='198.19.0.1'\nforward='tunnel'\ntun_type='gue'\ntun_port=70000",
                "not in 1-65535",
                false,
            ),
            (
                "address='198.19.0.1'\nforward='tunnel'\ntun_type='gue'",
                "needs a tunnel port",
                true,
            ),
            (
                "address='198.19.0.1'\nforward='tunnel'\ntun_port=6080",
                "takes no tunnel port",
                true,
            ),
            (
                "address='198.19.0.1'\nforward='tunnel'\ntun_csum='csum'",
                "takes no checksum option",
                true,
            ),
            (
                "address='198.19.0.1'\nforward='tunnel'\ntun_type='gre'\ntun_csum='remcsum'",
                "takes no remcsum",
                true,
            ),
            (
                "address='198.19.0.1'\nforward='dr'\ntun_type='gre'",
                "conflict with forwarding method",
                true,
            ),
            (
                "address='198.19.0.1:8080'\nforward='dr'",
                "forwards to the virtual port 80",
                true,
            ),
            (
                "address='198.19.0.1:8080'\nforward='local'",
                "forwards to the virtual port 80",
                true,
            ),
        ] {
            let e = real(body).unwrap_err();
            assert!(e.to_string().contains(want), "{body}: {e}");
            assert_eq!(
                matches!(e, ConfigError::Conflict(_)),
                conflict,
                "{body}: {e:?}"
            );
        }
    }

    /// A scheduler plugin sees at most `MAX_DESTS` servers: a service with more is refused
    /// with the bound, not served by the first 1024.
    #[test]
    fn more_real_servers_than_a_plugin_sees_are_refused() {
        let n = wvs_sdk::MAX_DESTS;
        let mut text = String::from(
            "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nscheduler='rr'\n",
        );
        for i in 0..n {
            text += &format!(
                "[[service.real]]\naddress='198.19.{}.{}'\n",
                i / 250,
                1 + i % 250
            );
        }
        assert_eq!(
            parse(&text).expect("the bound itself").services[0]
                .reals
                .len(),
            n
        );
        text += "[[service.real]]\naddress='198.19.100.1'\n";
        let e = parse(&text).unwrap_err();
        assert!(
            e.to_string().contains("1025 real servers: at most 1024"),
            "{e}"
        );
    }

    /// Port 0 (every port) only with persistence, as ipvsadm and IPVS take it.
    #[test]
    fn a_port_0_service_is_persistent() {
        let cfg = parse(
            "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:0'\npersistent=60\n\
             [[service.real]]\naddress='198.19.0.11'\n",
        )
        .expect("persistent port 0");
        assert_eq!(
            (cfg.services[0].port, cfg.services[0].reals[0].port),
            (0, 0)
        );
        let e = parse("[[service]]\nprotocol='tcp'\naddress='198.18.100.1:0'\n").unwrap_err();
        assert!(e.to_string().contains("persistent service only"), "{e}");
        assert!(matches!(e, ConfigError::Conflict(_)), "{e:?}");
    }

    /// Fwmark services in the file: `fwm`/`fwm6` and the mark, with mark rules; the
    /// checks of servers without a port name theirs; written back as read.
    #[test]
    fn fwmark_services_and_mark_rules_read_and_write_back() {
        let text = "[[service]]\nprotocol='fwm'\naddress='7'\nscheduler='rr'\npersistent=60\n\
                    check={type='tcp', port=80}\n\
                    [[service.real]]\naddress='198.19.0.11'\n\
                    [[service]]\nprotocol='fwm6'\naddress='7'\n\
                    [[service.real]]\naddress='[2001:db8:19::11]:80'\n\
                    [[mark_rule]]\nmark=7\ndaddr=['198.18.1.0/28']\ndport=['80','443']\n";
        let cfg = parse(text).expect("fwmark services");
        assert_eq!(cfg.services[0].key(), ServiceKey::fwmark(7, false));
        assert_eq!(cfg.services[1].key(), ServiceKey::fwmark(7, true));
        assert_eq!(cfg.marks.len(), 1);
        let again = parse(&to_toml(&cfg)).expect("written back");
        assert_eq!((again.services, again.marks), (cfg.services, cfg.marks));
        // A TCP check of a server without a port, on a service of every port: which port?
        let e = parse(&text.replace("check={type='tcp', port=80}\n", "check={type='tcp'}\n"))
            .unwrap_err();
        assert!(e.to_string().contains("needs a port"), "{e}");
        assert!(matches!(e, ConfigError::Conflict(_)), "{e:?}");
        // A helper is bound by port: a fwmark service has none.
        let e = parse("[[service]]\nprotocol='fwm'\naddress='7'\nhelpers=['ftp']\n").unwrap_err();
        assert!(matches!(e, ConfigError::Conflict(_)), "{e:?}");
    }

    /// Several checks on a real server (`checks`): validated each, the first holding the
    /// others; written back as read; not beside `check`, no `none` among them, and a
    /// port-less one on a server of every port refused as a single one is.
    #[test]
    fn several_checks_on_a_real_server() {
        let text = "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\n\
                    [[service.real]]\naddress='198.19.0.11:80'\n\
                    checks=[{type='tcp'}, {type='http', urls=[{path='/'}, {path='/b'}]}]\n";
        let cfg = parse(text).expect("several checks");
        let c = cfg.services[0].reals[0].check.as_ref().expect("checks");
        assert_eq!(
            c.all().map(|c| c.def.kind.as_str()).collect::<Vec<_>>(),
            ["tcp", "http"]
        );
        let again = parse(&to_toml(&cfg)).expect("written back");
        assert_eq!(again.services, cfg.services);
        assert!(
            to_toml(&cfg).contains("[[service.real.checks]]"),
            "{}",
            to_toml(&cfg)
        );
        for (bad, why) in [
            ("check={type='tcp'}\nchecks=[{type='tcp'}]", "not both"),
            (
                "checks=[{type='tcp'}, {type='none'}]",
                "type none among several",
            ),
        ] {
            let t = text.replace(
                "checks=[{type='tcp'}, {type='http', urls=[{path='/'}, {path='/b'}]}]",
                bad,
            );
            let e = parse(&t).unwrap_err();
            assert!(
                matches!(e, ConfigError::Conflict(_)) && e.to_string().contains(why),
                "{e}"
            );
        }
        let all_port = "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:0'\npersistent=60\n\
                        [[service.real]]\naddress='198.19.0.11'\n\
                        checks=[{type='tcp', port=80}, {type='tcp'}]\n";
        let e = parse(all_port).unwrap_err();
        assert!(e.to_string().contains("needs a port"), "{e}");
    }

    /// `ops` (ipvsadm -o): UDP services only, and no full NAT server (its replies need
    /// the connection); written back as read.
    #[test]
    fn one_packet_scheduling_is_for_udp_services_without_full_nat() {
        let cfg = parse(
            "[[service]]\nprotocol='udp'\naddress='198.18.100.1:53'\nscheduler='rr'\nops=true\n\
             [[service.real]]\naddress='198.19.0.11'\nforward='dr'\n",
        )
        .expect("a UDP service with -o");
        assert!(cfg.services[0].ops);
        let def = ServiceDef::from(&cfg.services[0]);
        assert!(def.ops);
        assert!(toml::to_string(&def).unwrap().contains("ops = true"));
        for (text, want) in [
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nops=true\n",
                "only for UDP services",
            ),
            (
                "[[service]]\nprotocol='udp'\naddress='198.18.100.1:53'\nops=true\nladdrs=['198.19.0.1']\n\
                 [[service.real]]\naddress='198.19.0.11'\nforward='fullnat'\n",
                "keeps no connection",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.to_string().contains(want), "{text}: {e}");
            assert!(matches!(e, ConfigError::Conflict(_)), "{e:?}");
        }
    }

    /// `synproxy`: on, off or auto, for TCP address services, `on` only over servers whose
    /// replies come back through wvs; written back as read.
    #[test]
    fn synproxy_is_for_tcp_services_whose_replies_come_back() {
        let cfg = parse(
            "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nsynproxy='on'\n\
             [[service.real]]\naddress='198.19.0.11'\n",
        )
        .expect("a synproxied service");
        assert_eq!(cfg.services[0].synproxy, Some(spec::SynproxyMode::On));
        let def = ServiceDef::from(&cfg.services[0]);
        assert!(toml::to_string(&def).unwrap().contains("synproxy = \"on\""));
        // auto over a DR server: allowed (the service never answers with cookies).
        parse(
            "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nsynproxy='auto'\n\
             [[service.real]]\naddress='198.19.0.11'\nforward='dr'\n",
        )
        .expect("auto over DR");
        for (text, want) in [
            (
                "[[service]]\nprotocol='udp'\naddress='198.18.100.1:53'\nsynproxy='on'\n",
                "synproxy is for TCP",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nsynproxy='on'\n\
                 [[service.real]]\naddress='198.19.0.11'\nforward='dr'\n",
                "replies back",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.to_string().contains(want), "{text}: {e}");
            assert!(matches!(e, ConfigError::Conflict(_)), "{e:?}");
        }
        let e =
            parse("[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nsynproxy='always'\n")
                .unwrap_err();
        assert!(e.to_string().contains("on, off or auto"), "{e}");
    }

    /// A reload applies the file's own changes and keeps the operator's edits elsewhere.
    #[test]
    fn a_reload_merges_the_files_changes_into_the_running_configuration() {
        let svc = |port: u16, sched: &str| {
            format!(
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:{port}'\nscheduler='{sched}'\n\
                 [[service.real]]\naddress='198.19.0.11'\n"
            )
        };
        let base = parse(&(svc(80, "rr") + &svc(81, "rr") + &svc(82, "rr"))).unwrap();
        // The operator: 80 edited (wlc), 90 added, --set timeouts.
        let mut running =
            parse(&(svc(80, "wlc") + &svc(81, "rr") + &svc(82, "rr") + &svc(90, "rr"))).unwrap();
        running.timeouts.tcp = 42;
        // The file: 81 changed (sh), 82 removed, 83 added.
        let new = parse(&(svc(80, "rr") + &svc(81, "sh") + &svc(83, "rr"))).unwrap();
        let (out, said) = running.merge_file(&base, &new);
        let got: Vec<(u16, &str)> = out
            .services
            .iter()
            .map(|s| (s.port, s.scheduler.as_str()))
            .collect();
        assert_eq!(
            got,
            [(80, "wlc"), (81, "sh"), (90, "rr"), (83, "rr")],
            "{said:?}"
        );
        assert_eq!(
            out.timeouts.tcp, 42,
            "--set kept: the file did not change timeouts"
        );
        assert_eq!(said.len(), 3, "{said:?}");
        // The file changing the operator's service wins there.
        let new2 = parse(&(svc(80, "sed") + &svc(81, "rr") + &svc(82, "rr"))).unwrap();
        let (out, _) = running.merge_file(&base, &new2);
        assert_eq!(out.services[0].scheduler, "sed");
    }

    const S: DefenseSettings = DefenseSettings {
        drop_entry: 1,
        drop_packet: 1,
        secure_tcp: 1,
        threshold: 75,
        amemthresh: 1024,
        am_droprate: 10,
        synproxy: 1,
    };

    #[test]
    fn settings_are_checked() {
        assert!(S.validate().is_ok());
        let e = DefenseSettings { secure_tcp: 4, ..S }
            .validate()
            .unwrap_err();
        assert!(e.contains("secure_tcp"), "{e}");
        assert!(DefenseSettings { threshold: 0, ..S }.validate().is_err());
        assert!(
            DefenseSettings {
                am_droprate: 0,
                ..S
            }
            .validate()
            .is_err()
        );
    }
}
