//! What the API answers: services with their live counters, plugins, connections, totals.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};

use crate::conn::{Conn, ConnTable};
use crate::control::Controller;
use crate::model::Protocol;
use crate::service::VirtualService;

/// A virtual service, its settings, real servers and counters.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceView {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Virtual IP and port.
    pub address: String,
    /// Scheduler name.
    pub scheduler: String,
    /// What runs it now: `wasm`, `native`, or `fallback` (the plugin failed; its native
    /// fallback runs).
    pub scheduler_runs: String,
    /// Scheduler flags (ipvsadm `-b` names).
    pub flags: Vec<String>,
    /// Persistence timeout in seconds, if persistent.
    pub persistent: Option<u32>,
    /// Persistence netmask.
    pub netmask: String,
    /// The application helpers its NAT connections are bound to.
    #[serde(default)]
    pub helpers: Vec<String>,
    /// Whether those are the port's default (not configured).
    #[serde(default)]
    pub helpers_default: bool,
    /// The default health check of its real servers, as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::health::CheckDef>,
    /// A failed real server's UDP flows: `keep` or `move` (when configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_on_failure: Option<String>,
    /// Its synproxy as configured (`on`, `off`, `auto`; absent: `defense.synproxy`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synproxy: Option<String>,
    /// One-packet scheduling (ipvsadm `-o`).
    #[serde(default)]
    pub ops: bool,
    /// The persistence engine (ipvsadm `--pe`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pe: Option<String>,
    /// keepalived's quorum, when set: the least live weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// keepalived's hysteresis, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hysteresis: Option<u32>,
    /// The program run when the quorum is gained, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_up: Option<String>,
    /// The program run when the quorum is lost, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_down: Option<String>,
    /// keepalived's `omega`: when wvs stops, `quorum_down` runs if the quorum held and
    /// each real server's `notify_down` if it was up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub omega: bool,
    /// Whether the quorum is lost now (the live weight fell below it): with a sorry
    /// server, only it takes clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quorum_lost: bool,
    /// Counters since the service was added.
    pub stats: Totals,
    /// Rates (ip_vs_est: 2 s samples, EWMA).
    pub rates: Rates,
    /// Full NAT's local addresses (DPVS's `--get-laddr`), in configuration order.
    #[serde(default)]
    pub laddrs: Vec<LaddrView>,
    /// Real servers, in configuration order.
    pub reals: Vec<RealView>,
    /// Real servers removed with a grace period and not gone yet (weight 0: no new
    /// connections), with `drain_until_ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<RealView>,
}

/// A full-NAT local address of a service and the use of its ports.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LaddrView {
    /// The address.
    pub address: String,
    /// Connections holding one of its ports (of this protocol, whichever service).
    pub conns: u64,
    /// Times a new connection found no free port on it (DPVS's "CONFLICTS").
    pub exhausted: u64,
}

fn yes() -> bool {
    true
}

/// A real server and its counters.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RealView {
    /// Address and port.
    pub address: String,
    /// Weight (0: quiesced), as ipvsadm lists it: 0 while a health check with
    /// `inhibit_on_failure` finds the server down.
    pub weight: u32,
    /// The weight as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_weight: Option<u32>,
    /// Forwarding method: `nat`, `dr`, `tunnel`, `fullnat`, or `local` (the server's
    /// address is the balancer's own, whatever the configured method).
    pub forward: String,
    /// Tunnel type (tunnels only): `ipip`, `gue` or `gre`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun_type: Option<String>,
    /// GUE's UDP port (GUE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun_port: Option<u32>,
    /// The tunnel's checksum option when not `nocsum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun_csum: Option<String>,
    /// Upper connection threshold (0: none).
    pub upper_threshold: u32,
    /// Lower connection threshold (0: none).
    pub lower_threshold: u32,
    /// Hint for custom schedulers.
    pub hint: u32,
    /// Active connections (TCP in the handshake or ESTABLISHED).
    pub active_conns: i64,
    /// Inactive connections (TCP closing or closed; every UDP flow).
    pub inactive_conns: i64,
    /// Persistence templates pointing at it.
    pub persist_conns: i64,
    /// Over its upper threshold: no new connections until it drains.
    pub overloaded: bool,
    /// Whether its next hop (MAC address) is known.
    pub reachable: bool,
    /// Its own health check, as configured (else its service's applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::health::CheckDef>,
    /// Its several health checks, as configured, when it has several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::health::CheckDef>,
    /// What its health check finds (absent: not checked, or not yet set up); with several,
    /// the first that finds it down, else the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthReport>,
    /// What each of its several checks finds, in their order, when it has several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks_health: Vec<crate::health::HealthReport>,
    /// Whether it is in scheduling: false while a health check without
    /// `inhibit_on_failure` finds it down (keepalived removes such a server from IPVS).
    #[serde(default = "yes")]
    pub scheduled: bool,
    /// When its drain ends at the latest (ms since the Unix epoch), if it is being drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until_ms: Option<u64>,
    /// A sorry server (keepalived's `sorry_server`): `scheduled` only while no other real
    /// server of the service can take a connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sorry: bool,
    /// Counters.
    pub stats: Totals,
    /// Rates.
    pub rates: Rates,
}

impl RealView {
    /// The view of a real server being drained (no configuration any more).
    fn draining(d: &crate::service::Dest, vport: u16) -> Self {
        let port = if d.port == 0 { vport } else { d.port };
        let (fwd, tun) = match d.configured_forward() {
            crate::model::Forward::Tunnel(t) => ("tunnel".to_string(), Some(t)),
            f => (f.name().to_string(), None),
        };
        RealView {
            address: SocketAddr::new(d.addr, port).to_string(),
            weight: 0,
            configured_weight: None,
            forward: fwd,
            tun_type: tun.map(|t| t.kind.name().into()),
            tun_port: tun.filter(|t| t.port != 0).map(|t| u32::from(t.port)),
            tun_csum: None,
            upper_threshold: 0,
            lower_threshold: 0,
            hint: 0,
            active_conns: i64::from(d.activeconns.load(Relaxed).max(0)),
            inactive_conns: i64::from(d.inactconns.load(Relaxed).max(0)),
            persist_conns: i64::from(d.persistconns.load(Relaxed).max(0)),
            overloaded: false,
            reachable: d.next_hop().is_some(),
            check: None,
            checks: Vec::new(),
            health: None,
            checks_health: Vec::new(),
            scheduled: false,
            drain_until_ms: Some(d.drain_until_ms()),
            sorry: false,
            stats: d.stats.totals().into(),
            rates: d.stats.rates().into(),
        }
    }
}

impl ServiceView {
    /// The view of a published service.
    pub fn of(s: &VirtualService, conns: &ConnTable) -> Self {
        let given = crate::config::given(s);
        let def = crate::config::ServiceDef::from(&*given);
        let runs = match (&s.scheduler.plugin, s.sched.runs_plugin()) {
            (None, _) => "native",
            (Some(_), true) => "wasm",
            (Some(_), false) => "fallback",
        };
        Self {
            protocol: def.protocol,
            address: def.address,
            scheduler: def.scheduler,
            scheduler_runs: runs.into(),
            flags: def.flags,
            persistent: def.persistent,
            netmask: match s.spec.addr {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::from(s.spec.netmask).to_string(),
                std::net::IpAddr::V6(_) => s.spec.netmask.min(128).to_string(),
            },
            helpers: s.spec.helper_names(),
            helpers_default: s.spec.helpers.is_none(),
            check: def.check.clone(),
            udp_on_failure: def.udp_on_failure.clone(),
            synproxy: def.synproxy.clone(),
            ops: def.ops,
            pe: def.pe.clone(),
            quorum: def.quorum,
            hysteresis: def.hysteresis,
            quorum_up: def.quorum_up.clone(),
            quorum_down: def.quorum_down.clone(),
            omega: def.omega.unwrap_or(false),
            quorum_lost: s.sched.quorum_lost(),
            stats: s.stats.totals().into(),
            rates: s.stats.rates().into(),
            laddrs: s
                .spec
                .laddrs
                .iter()
                .map(|a| {
                    let (used, exhausted) = conns.laddr_usage(s.key.proto, *a);
                    LaddrView {
                        address: a.to_string(),
                        conns: used,
                        exhausted,
                    }
                })
                .collect(),
            reals: s
                .dests
                .iter()
                .rev()
                .zip(&given.reals)
                .map(|(d, r)| {
                    // As the scheduler sees them: the sorry server while no other can
                    // take a client, or alone while the quorum is lost.
                    let lost = s.sched.quorum_lost();
                    let has_sorry = s.dests.iter().any(|d| d.is_sorry());
                    let sorry_in_use =
                        has_sorry && (lost || crate::service::Dest::sorry_in_use(&s.dests));
                    let def = crate::config::RealDef::from(r);
                    RealView {
                        address: SocketAddr::new(d.addr, d.port).to_string(),
                        weight: d.weight(),
                        configured_weight: Some(d.configured_weight()),
                        forward: match d.forward() {
                            crate::model::Forward::Local => "local".into(),
                            _ => def.forward,
                        },
                        tun_type: def.tun_type,
                        tun_port: def.tun_port,
                        tun_csum: def.tun_csum,
                        upper_threshold: r.upper_threshold,
                        lower_threshold: r.lower_threshold,
                        hint: r.hint,
                        active_conns: i64::from(d.activeconns.load(Relaxed).max(0)),
                        inactive_conns: i64::from(d.inactconns.load(Relaxed).max(0)),
                        persist_conns: i64::from(d.persistconns.load(Relaxed).max(0)),
                        overloaded: d.flags() & wvs_sdk::dest_flags::OVERLOAD != 0,
                        reachable: d.next_hop().is_some()
                            || d.forward() == crate::model::Forward::Local,
                        check: def.check,
                        checks_health: if def.checks.is_empty() {
                            Vec::new()
                        } else {
                            crate::health::reports(d)
                        },
                        checks: def.checks,
                        health: crate::health::report(d),
                        scheduled: d.in_scheduling()
                            && if d.is_sorry() {
                                sorry_in_use
                            } else {
                                !(sorry_in_use && lost)
                            },
                        drain_until_ms: None,
                        sorry: d.is_sorry(),
                        stats: d.stats.totals().into(),
                        rates: d.stats.rates().into(),
                    }
                })
                .collect(),
            draining: s
                .draining
                .iter()
                .map(|d| RealView::draining(d, s.key.port))
                .collect(),
        }
    }
}

/// A scheduler plugin.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct PluginView {
    /// Name services use as their scheduler.
    pub name: String,
    /// `builtin` (an IPVS scheduler embedded in wvs) or `custom` (uploaded or from the
    /// configuration file).
    pub kind: String,
    /// The module file (custom plugins).
    pub path: Option<String>,
    /// Size of the module in bytes (custom plugins).
    pub bytes: Option<u64>,
    /// Services using it.
    pub used_by: Vec<String>,
}

impl PluginView {
    /// Every plugin: built-in schedulers first, then custom ones.
    pub fn all(c: &Controller) -> Vec<Self> {
        let cfg = c.config();
        let users = |name: &str| -> Vec<String> {
            cfg.services
                .iter()
                .filter(|s| s.scheduler == name)
                .map(|s| s.key().to_string())
                .collect()
        };
        let mut out: Vec<Self> = crate::model::Scheduler::ALL
            .iter()
            .filter(|s| !cfg.plugins.iter().any(|p| p.name == s.name()))
            .map(|s| Self {
                name: s.name().into(),
                kind: "builtin".into(),
                path: None,
                bytes: None,
                used_by: users(s.name()),
            })
            .collect();
        out.extend(cfg.plugins.iter().map(|p| Self {
            name: p.name.clone(),
            kind: "custom".into(),
            path: Some(p.path.display().to_string()),
            bytes: std::fs::metadata(&p.path).ok().map(|m| m.len()),
            used_by: users(&p.name),
        }));
        out
    }
}

/// A connection's state as `ipvsadm -L -c` prints it.
pub(crate) fn conn_state_name(c: &Conn) -> &'static str {
    c.state_name()
}

/// One connection.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnView {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Client address and port.
    pub client: String,
    /// Virtual address and port.
    pub virtual_address: String,
    /// Real server address and port.
    pub real: String,
    /// State (`ESTABLISHED`, `TIME_WAIT`, `UDP`, …).
    pub state: String,
    /// Milliseconds until it expires unless more packets come.
    pub expires_ms: u64,
    /// A persistence template keyed by a persistence engine: the engine's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pe_name: Option<String>,
    /// And the key it gave (a SIP Call-ID), as text (bytes that are no UTF-8 as U+FFFD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pe_data: Option<String>,
    /// With `--offload tc`: its packets are carried by the tc program now (its counters
    /// and timer are merged before this answer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offloaded: bool,
    /// Its client-side key, to ask the offload's map.
    #[serde(skip)]
    pub(crate) key: Option<crate::conn::ConnKey>,
}

impl ConnView {
    fn of_conn(c: &crate::conn::Conn, state: &str, now: u64) -> Self {
        Self {
            protocol: c.proto.name().into(),
            client: SocketAddr::new(c.caddr(), c.cport).to_string(),
            virtual_address: SocketAddr::new(c.vaddr(), c.vport).to_string(),
            real: SocketAddr::new(c.raddr(), c.rport).to_string(),
            state: state.into(),
            expires_ms: c.expires.saturating_sub(now),
            pe_name: None,
            pe_data: None,
            offloaded: false,
            key: Some(crate::conn::ConnKey {
                proto: c.proto,
                saddr: c.caddr(),
                sport: c.cport,
                daddr: c.vaddr(),
                dport: c.vport,
            }),
        }
    }

    /// A persistence template as ipvsadm shows one: client port 0, state NONE or ASSURED.
    fn of_template(
        k: &crate::conn::persist::TemplateKey,
        t: &crate::conn::persist::Template,
        dport: u16,
        now: u64,
    ) -> Self {
        Self {
            // A fwmark service's template is IPVS's IPPROTO_IP, which ipvsadm names IP.
            protocol: if k.fwmark != 0 { "ip" } else { k.proto.name() }.into(),
            client: SocketAddr::new(k.client, 0).to_string(),
            virtual_address: SocketAddr::new(k.vaddr, k.vport).to_string(),
            real: SocketAddr::new(t.dest.addr, dport).to_string(),
            state: t.state_name().into(),
            expires_ms: t.expires.saturating_sub(now),
            pe_name: t.pe_name().map(Into::into),
            pe_data: t.pe_data().map(|d| String::from_utf8_lossy(d).into_owned()),
            // A template has no packets of its own.
            offloaded: false,
            key: None,
        }
    }
}

/// A connection listing.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct ConnList {
    /// Connections that matched from the cursor on: all of them when there is no `next`;
    /// with `next`, the page's and one more (the walk stops at the first match past the
    /// page, so that a page costs its own length, not the table's).
    pub matched: usize,
    /// The connections listed.
    pub connections: Vec<ConnView>,
    /// Where the next page starts (`?cursor=`), when more matched than were listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Which connections a listing shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnFilter {
    /// Only this service.
    pub service: Option<crate::model::ServiceKey>,
    /// Only this real server (port 0: any port).
    pub real: Option<SocketAddr>,
    /// Only this state.
    pub state: Option<String>,
}

impl ConnFilter {
    /// Whether it keeps an entry of `(fwmark, proto, vaddr, vport)` (`fwmark`: its fwmark
    /// service's mark, or 0) to `(daddr, dport)` in `state`.
    fn keeps(
        &self,
        (fwmark, proto, vaddr, vport): (u32, Protocol, std::net::IpAddr, u16),
        (daddr, dport): (std::net::IpAddr, u16),
        state: &str,
    ) -> bool {
        let of_service = |k: crate::model::ServiceKey| {
            if k.is_fwmark() {
                k.fwmark == fwmark && k.addr.is_ipv6() == vaddr.is_ipv6()
            } else {
                // A port-0 service's connections keep their clients' ports.
                fwmark == 0
                    && k.proto == proto
                    && k.addr == vaddr
                    && (k.port == vport || k.port == 0)
            }
        };
        self.service.is_none_or(of_service)
            && self
                .real
                .is_none_or(|r| r.ip() == daddr && (r.port() == 0 || r.port() == dport))
            && self.state.as_deref().is_none_or(|s| s == state)
    }
}

/// Where a paginated connection listing goes on: after slot `1` of connection shard `0`,
/// or at position `1` of template shard `0` (connections come first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCursor {
    /// In the connection table.
    Conn(usize, usize),
    /// In the persistence templates.
    Template(usize, usize),
}

impl ConnCursor {
    /// As the API writes it: `c.SHARD.SLOT` or `t.SHARD.POSITION`.
    pub fn encode(self) -> String {
        match self {
            Self::Conn(s, i) => format!("c.{s}.{i}"),
            Self::Template(s, n) => format!("t.{s}.{n}"),
        }
    }

    /// Read a cursor the API wrote.
    pub fn parse(v: &str) -> Option<Self> {
        let mut it = v.splitn(3, '.');
        let (kind, a, b) = (it.next()?, it.next()?, it.next()?);
        let (a, b) = (a.parse().ok()?, b.parse().ok()?);
        match kind {
            "c" => Some(Self::Conn(a, b)),
            "t" => Some(Self::Template(a, b)),
            _ => None,
        }
    }
}

impl ConnList {
    /// Walk the table and then the persistence templates (one shard lock at a time) from
    /// `from` on, and list what `filter` keeps, at most `limit`; `matched` counts the rest
    /// too, and `next` says where the next page starts. Templates show as ipvsadm shows
    /// them: state NONE or ASSURED, client port 0. Like IPVS's `/proc/net/ip_vs_conn`, a
    /// listing in pages is of a live table: a connection made meanwhile may be missed.
    pub fn collect(
        table: &ConnTable,
        now: u64,
        limit: usize,
        filter: &ConnFilter,
        from: Option<ConnCursor>,
    ) -> Self {
        let mut out = Self {
            matched: 0,
            connections: Vec::new(),
            next: None,
        };
        let mut last: Option<ConnCursor> = None;
        // Whether the walk goes on: it stops at the first match past the page.
        let mut push = |out: &mut Self, v: ConnView, at: ConnCursor| {
            out.matched += 1;
            if out.connections.len() < limit {
                out.connections.push(v);
                last = Some(at);
                true
            } else {
                false
            }
        };
        let mut full = false;
        let (conn_from, tmpl_from) = match from {
            None => (Some((0, None)), (0, 0)),
            Some(ConnCursor::Conn(s, i)) => (Some((s, Some(i))), (0, 0)),
            Some(ConnCursor::Template(s, n)) => (None, (s, n)),
        };
        if let Some((shard, after)) = conn_from {
            table.walk_from(shard, after, |si, idx, c| {
                // IPVS's timer removes a connection at its timeout; wvs's sweep does
                // within a second after it, and the listing leaves out what is already due.
                if c.expires <= now {
                    return true;
                }
                let state = conn_state_name(c);
                let v = (c.fwmark(), c.proto, c.vaddr(), c.vport);
                if !filter.keeps(v, (c.raddr(), c.rport), state) {
                    return true;
                }
                let more = push(
                    &mut out,
                    ConnView::of_conn(c, state, now),
                    ConnCursor::Conn(si, idx),
                );
                full = !more;
                more
            });
        }
        if !full {
            table
                .persist()
                .walk_from(tmpl_from.0, tmpl_from.1, |si, i, k, t| {
                    let dport = if t.dest.port == 0 {
                        k.vport
                    } else {
                        t.dest.port
                    };
                    let state = t.state_name();
                    let v = (k.fwmark, k.proto, k.vaddr, k.vport);
                    if !filter.keeps(v, (t.dest.addr, dport), state) {
                        return true;
                    }
                    push(
                        &mut out,
                        ConnView::of_template(k, t, dport, now),
                        ConnCursor::Template(si, i + 1),
                    )
                });
        }
        if out.matched > out.connections.len() {
            out.next = last.map(ConnCursor::encode);
        }
        out
    }
}

/// Datapath counters.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct DatapathView {
    /// Frames received.
    pub rx: u64,
    /// Frames sent.
    pub tx: u64,
    /// Frames left to the kernel (not wvs's).
    pub passed: u64,
    /// GRO/GSO super-packets received.
    pub rx_gso: u64,
    /// ICMP port unreachable answers sent.
    pub icmp_sent: u64,
    /// TCP resets answered to segments of no connection.
    pub resets_sent: u64,
    /// Connections started by a TCP segment other than a SYN (`sloppy_tcp`: flows moved
    /// here from another balancer).
    #[serde(default)]
    pub unknown_flows: u64,
    /// Application helper events (calls, rewrites, faults, expects, expects_refused,
    /// expects_matched, segmented), those that occurred.
    #[serde(default)]
    pub helpers: std::collections::BTreeMap<String, u64>,
    /// The synproxy: every event (cookies_sent, acks_accepted, acks_rejected, syns_resent,
    /// joined, server_resets) and `half_joined`, the connections whose server has not
    /// answered yet.
    #[serde(default)]
    pub synproxy: std::collections::BTreeMap<String, u64>,
    /// Frames dropped, by reason (only reasons that occurred).
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// Plugin counters.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct PluginCounters {
    /// Scheduler calls into plugins.
    pub calls: u64,
    /// Calls that trapped or ran out of time.
    pub traps: u64,
    /// Calls that gave an invalid answer (out of range, or a server that takes no new
    /// connection).
    pub invalid: u64,
    /// Plugins taken out for being repeatedly slow.
    pub slow: u64,
    /// Services switched to their native fallback.
    pub fallbacks: u64,
}

/// Global counters.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct StatsView {
    /// The balancer's totals (every service, removed ones included).
    pub totals: Totals,
    /// The balancer's rates.
    pub rates: Rates,
    /// Connections tracked now.
    pub connections: usize,
    /// The defense strategies against floods (IPVS's drop_entry, drop_packet, secure_tcp).
    pub defense: DefenseView,
    /// Datapath counters.
    pub datapath: DatapathView,
    /// Plugin counters.
    pub plugins: PluginCounters,
}

impl StatsView {
    /// Collect the global counters.
    pub async fn collect(st: &super::ApiState) -> Self {
        let mut sum = crate::datapath::StatsSum::of(st.datapath.iter().map(|s| s.as_ref()));
        // The SYNs the tc program answered count as the datapath's.
        if let Some(o) = &st.offload {
            sum.synproxy[0] += o.cookies.load(Relaxed);
        }
        let snap = st.snapshot.load_full();
        let mut c = st.control.lock().await;
        let p = &c.registry().runtime().stats;
        let plugins = PluginCounters {
            calls: p.calls.load(Relaxed),
            traps: p.traps.load(Relaxed),
            invalid: p.invalid.load(Relaxed),
            slow: p.slow.load(Relaxed),
            fallbacks: p.fallbacks.load(Relaxed),
        };
        let traffic = c.traffic();
        Self {
            totals: traffic.totals(snap.service_stats()).into(),
            rates: traffic.rates().into(),
            connections: st.conns.len(),
            defense: st.conns.defense().status().into(),
            datapath: DatapathView {
                rx: sum.rx,
                tx: sum.tx,
                passed: sum.passed,
                rx_gso: sum.rx_gso,
                icmp_sent: sum.icmp_sent,
                resets_sent: sum.resets_sent,
                unknown_flows: sum.unknown_flows,
                helpers: crate::datapath::stats::HELPER_EVENTS
                    .iter()
                    .zip(sum.helper)
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| ((*k).to_string(), n))
                    .collect(),
                synproxy: crate::datapath::stats::SYNPROXY_EVENTS
                    .iter()
                    .zip(sum.synproxy)
                    .map(|(k, n)| ((*k).to_string(), n))
                    .chain(std::iter::once((
                        "half_joined".to_string(),
                        crate::synproxy::HALF_JOINED
                            .load(std::sync::atomic::Ordering::Relaxed)
                            .max(0) as u64,
                    )))
                    .collect(),
                drops: sum
                    .drops
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| (r.name().to_string(), *n))
                    .collect(),
            },
            plugins,
        }
    }
}

/// About this wvs.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct InfoView {
    /// wvs's version.
    pub version: String,
    /// The IPVS version whose behaviour wvs follows (printed by `wvs adm -L`).
    pub ipvs_version: String,
    /// Most connections tracked at once (`size=` in `ipvsadm -L`).
    pub conn_table_size: usize,
    /// Connections tracked now.
    pub connections: usize,
    /// The state file, if changes are saved.
    pub state_file: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnKey;
    use crate::model::NextHop;
    use crate::service::Dest;
    use std::sync::Arc;

    fn table(n: u16) -> ConnTable {
        let t = ConnTable::new(10_000);
        let d = Arc::new(Dest::new("198.19.0.11".parse().expect("addr"), 80));
        for p in 0..n {
            let k = ConnKey {
                proto: Protocol::Tcp,
                saddr: "198.18.0.2".parse().expect("addr"),
                sport: 10_000 + p,
                daddr: "198.18.100.1".parse().expect("addr"),
                dport: 80,
            };
            let hop = NextHop {
                iface: 0,
                mac: [2, 0, 0, 0, 0, 1],
            };
            t.insert(Conn::new(&k, d.clone(), Default::default(), hop, 60_000))
                .expect("room");
        }
        t
    }

    #[test]
    fn pages_list_every_connection_once() {
        let t = table(500);
        let all = ConnList::collect(&t, 0, 100_000, &ConnFilter::default(), None);
        assert_eq!((all.matched, all.connections.len()), (500, 500));
        assert!(all.next.is_none());
        let mut seen = std::collections::HashSet::new();
        let mut from = None;
        let mut pages = 0;
        loop {
            let page = ConnList::collect(&t, 0, 37, &ConnFilter::default(), from);
            assert!(page.connections.len() <= 37);
            for c in &page.connections {
                assert!(seen.insert(c.client.clone()), "listed twice: {}", c.client);
            }
            pages += 1;
            match page.next {
                Some(n) => from = Some(ConnCursor::parse(&n).expect("a cursor it wrote")),
                None => break,
            }
        }
        assert_eq!(seen.len(), 500);
        assert_eq!(pages, 500usize.div_ceil(37));
        // A page stops at the first match past it: `matched` is the page and one more.
        let page = ConnList::collect(&t, 0, 37, &ConnFilter::default(), None);
        assert_eq!(page.matched, 38);
        assert!(page.next.is_some());
    }

    /// Templates page as connections do, each listed once, and a page starts where the last
    /// ended: the walk's first template is the cursor's, not one counted up to.
    #[test]
    fn template_pages_resume_at_their_cursor() {
        use crate::conn::persist::TemplateKey;
        let t = table(0);
        let d = Arc::new(Dest::new("198.19.0.11".parse().expect("addr"), 80));
        let n = 3_000u32;
        for i in 0..n {
            let key = TemplateKey {
                proto: Protocol::Tcp,
                fwmark: 0,
                client: std::net::Ipv4Addr::from(0xc612_0000 + i).into(),
                vaddr: "198.18.100.1".parse().expect("addr"),
                vport: 80,
                pe: 0,
            };
            t.persist()
                .dest_for(key, 0, 360_000, false, || Some(d.clone()))
                .expect("a server");
        }
        let mut seen = std::collections::HashSet::new();
        let mut from = None;
        loop {
            let page = ConnList::collect(&t, 0, 41, &ConnFilter::default(), from);
            for c in &page.connections {
                assert!(seen.insert(c.client.clone()), "listed twice: {}", c.client);
            }
            match page.next {
                Some(n) => {
                    let c = ConnCursor::parse(&n).expect("a cursor it wrote");
                    if let ConnCursor::Template(shard, at) = c {
                        let mut first = None;
                        t.persist().walk_from(shard, at, |si, i, _, _| {
                            first = Some((si, i));
                            false
                        });
                        // The first one visited is at the cursor (or in a later shard when
                        // the page ended its shard).
                        let (si, i) = first.expect("more to list");
                        assert!((si, i) == (shard, at) || (si > shard && i == 0), "{c:?}");
                    }
                    from = Some(c);
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), n as usize);
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        for c in [ConnCursor::Conn(3, 1041), ConnCursor::Template(0, 7)] {
            assert_eq!(ConnCursor::parse(&c.encode()), Some(c));
        }
        for bad in ["", "c.1", "x.1.2", "c.-1.2", "c.1.2.3", "c.a.b"] {
            assert_eq!(ConnCursor::parse(bad), None, "{bad}");
        }
    }
}

/// Summed counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Totals {
    /// Connections.
    pub conns: u64,
    /// Packets in (client to server).
    pub inpkts: u64,
    /// Packets out (server to client).
    pub outpkts: u64,
    /// Bytes in.
    pub inbytes: u64,
    /// Bytes out.
    pub outbytes: u64,
}

impl From<crate::stats::Totals> for Totals {
    fn from(t: crate::stats::Totals) -> Self {
        let crate::stats::Totals {
            conns,
            inpkts,
            outpkts,
            inbytes,
            outbytes,
        } = t;
        Self {
            conns,
            inpkts,
            outpkts,
            inbytes,
            outbytes,
        }
    }
}

/// Rates, as `ipvsadm --rate` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets in per second.
    pub inpps: u64,
    /// Packets out per second.
    pub outpps: u64,
    /// Bytes in per second.
    pub inbps: u64,
    /// Bytes out per second.
    pub outbps: u64,
}

impl From<crate::stats::Rates> for Rates {
    fn from(r: crate::stats::Rates) -> Self {
        let crate::stats::Rates {
            cps,
            inpps,
            outpps,
            inbps,
            outbps,
        } = r;
        Self {
            cps,
            inpps,
            outpps,
            inbps,
            outbps,
        }
    }
}

/// The defense state as the API shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct DefenseView {
    /// The modes now (an automatic one reads 2 while it acts).
    pub drop_entry: u8,
    /// See `drop_entry`.
    pub drop_packet: u8,
    /// See `drop_entry`.
    pub secure_tcp: u8,
    /// One new connection in this many is dropped; 0: none.
    pub drop_rate: u32,
    /// The synproxy's mode now for the services that follow `defense.synproxy` (an
    /// automatic one reads 2 while it answers with SYN cookies).
    pub synproxy: u8,
    /// Whether any strategy acts now.
    pub active: bool,
    /// Half-open entries a full table evicted to take a new connection.
    pub evicted: u64,
    /// Entries `drop_entry` expired.
    pub dropped_entries: u64,
    /// New connections `drop_packet` dropped.
    pub dropped_packets: u64,
    /// Times the automatic strategies engaged.
    pub engaged: u64,
}

impl From<crate::conn::defense::Status> for DefenseView {
    fn from(s: crate::conn::defense::Status) -> Self {
        let crate::conn::defense::Status {
            drop_entry,
            drop_packet,
            secure_tcp,
            drop_rate,
            synproxy,
            active,
            evicted,
            dropped_entries,
            dropped_packets,
            engaged,
        } = s;
        Self {
            drop_entry,
            drop_packet,
            secure_tcp,
            drop_rate,
            synproxy,
            active,
            evicted,
            dropped_entries,
            dropped_packets,
            engaged,
        }
    }
}
