//! `/metrics`: Prometheus (OpenMetrics text) with node_exporter's ipvs collector names for
//! what IPVS has (`node_ipvs_*`, so existing IPVS dashboards work) and `wvs_*` for the rest.
//!
//! Values are read at scrape time from the counters the datapath already keeps (per-worker
//! slots, summed), so scraping adds nothing to the fast path.

use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Shared;
use crate::stats::{Rates, Totals};

type Labels = Vec<(&'static str, String)>;

/// Everything one scrape shows, read before encoding.
#[derive(Debug, Default)]
struct Scrape {
    totals: Totals,
    rates: Rates,
    services: Vec<(Labels, Totals, Rates)>,
    backends: Vec<(Labels, i64, i64, i64, Totals, Rates)>,
    /// Each real server's labels with its forwarding method, as ipvsadm -L names it.
    backend_info: Vec<(Labels, i64)>,
    /// Each checked real server: 1 up, 0 down.
    backend_up: Vec<(Labels, i64)>,
    /// Each checked real server's last check's duration, seconds.
    check_latency: Vec<(Labels, f64)>,
    plugin: [u64; 5],
    drops: Vec<(Labels, u64)>,
    helper: Vec<(Labels, u64)>,
    synproxy: Vec<(Labels, u64)>,
    synproxy_half: i64,
    rx: u64,
    tx: u64,
    passed: u64,
    conns: u64,
    capacity: u64,
    defense: crate::api::views::DefenseView,
    /// The API server's: open connections, then evicted, refused, timed out, TLS failed.
    api: (u64, [u64; 4]),
    /// The sync daemons' events, and each daemon: 1 running, 0 not.
    sync: Vec<(Labels, u64)>,
    sync_ignored: Vec<(Labels, u64)>,
    sync_daemons: Vec<(Labels, i64)>,
    /// Connections started by a TCP segment other than a SYN.
    unknown_flows: u64,
    /// `--offload tc`: connections offloaded, refused by a full map; packets and bytes the
    /// program carried; flows in its map.
    offload: [u64; 5],
    /// With `--announce`: each VIP, 1 while announced.
    announced: Vec<(Labels, i64)>,
}

/// How a metric reads its value from a row of `T`, and so its type.
enum Read<T> {
    Count(fn(&T) -> u64),
    Gauge(fn(&T) -> i64),
    Float(fn(&T) -> f64),
}

/// One metric: its name, its help and how a row gives its value.
struct Def<T: 'static> {
    name: &'static str,
    help: &'static str,
    read: Read<T>,
}

const fn count<T>(name: &'static str, help: &'static str, f: fn(&T) -> u64) -> Def<T> {
    Def {
        name,
        help,
        read: Read::Count(f),
    }
}

const fn gauge<T>(name: &'static str, help: &'static str, f: fn(&T) -> i64) -> Def<T> {
    Def {
        name,
        help,
        read: Read::Gauge(f),
    }
}

const fn float<T>(name: &'static str, help: &'static str, f: fn(&T) -> f64) -> Def<T> {
    Def {
        name,
        help,
        read: Read::Float(f),
    }
}

fn as_gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl<T> Def<T> {
    fn kind(&self) -> MetricType {
        match self.read {
            Read::Count(_) => MetricType::Counter,
            Read::Gauge(_) | Read::Float(_) => MetricType::Gauge,
        }
    }

    fn value(&self, row: &T, m: MetricEncoder<'_>) -> std::fmt::Result {
        match self.read {
            Read::Count(f) => ConstCounter::new(f(row)).encode(m),
            Read::Gauge(f) => ConstGauge::new(f(row)).encode(m),
            Read::Float(f) => ConstGauge::new(f(row)).encode(m),
        }
    }
}

/// Metrics of one value, unlabelled.
fn scalars(e: &mut DescriptorEncoder, defs: &[Def<Scrape>], s: &Scrape) -> std::fmt::Result {
    for d in defs {
        d.value(s, e.encode_descriptor(d.name, d.help, None, d.kind())?)?;
    }
    Ok(())
}

/// Metrics with a value per labelled row.
fn families<T>(
    e: &mut DescriptorEncoder,
    defs: &[Def<T>],
    rows: &[T],
    labels: fn(&T) -> &Labels,
) -> std::fmt::Result {
    for d in defs {
        let mut m = e.encode_descriptor(d.name, d.help, None, d.kind())?;
        for r in rows {
            d.value(r, m.encode_family(labels(r))?)?;
        }
    }
    Ok(())
}

type Backend = (Labels, i64, i64, i64, Totals, Rates);
type Service = (Labels, Totals, Rates);

const TOTALS: &[Def<Scrape>] = &[
    count(
        "node_ipvs_connections",
        "The total number of connections made.",
        |s| s.totals.conns,
    ),
    count(
        "node_ipvs_incoming_packets",
        "The total number of incoming packets.",
        |s| s.totals.inpkts,
    ),
    count(
        "node_ipvs_outgoing_packets",
        "The total number of outgoing packets.",
        |s| s.totals.outpkts,
    ),
    count(
        "node_ipvs_incoming_bytes",
        "The total amount of incoming data.",
        |s| s.totals.inbytes,
    ),
    count(
        "node_ipvs_outgoing_bytes",
        "The total amount of outgoing data.",
        |s| s.totals.outbytes,
    ),
];

const BACKEND_STATE: &[Def<Backend>] = &[
    gauge(
        "node_ipvs_backend_connections_active",
        "The current active connections by local and remote address.",
        |r| r.1,
    ),
    gauge(
        "node_ipvs_backend_connections_inactive",
        "The current inactive connections by local and remote address.",
        |r| r.2,
    ),
    gauge(
        "node_ipvs_backend_weight",
        "The current backend weight by local and remote address.",
        |r| r.3,
    ),
];

const BACKEND_INFO: &[Def<(Labels, i64)>] = &[gauge(
    "wvs_backend_info",
    "Each real server, with its forwarding method as ipvsadm -L names it (Masq, Route, Tunnel, FullNat, Local); always 1.",
    |r| r.1,
)];

const BACKEND_UP: &[Def<(Labels, i64)>] = &[gauge(
    "wvs_backend_up",
    "Whether the real server's health check finds it up (1) or down (0); only checked servers.",
    |r| r.1,
)];

const CHECK_LATENCY: &[Def<(Labels, f64)>] = &[float(
    "wvs_backend_check_latency_seconds",
    "How long the real server's last health check took.",
    |r| r.1,
)];

const RATES: &[Def<Scrape>] = &[
    gauge(
        "wvs_rate_connections_per_second",
        "Connections per second (IPVS estimator).",
        |s| as_gauge(s.rates.cps),
    ),
    gauge(
        "wvs_rate_incoming_packets_per_second",
        "Incoming packets per second.",
        |s| as_gauge(s.rates.inpps),
    ),
    gauge(
        "wvs_rate_outgoing_packets_per_second",
        "Outgoing packets per second.",
        |s| as_gauge(s.rates.outpps),
    ),
    gauge(
        "wvs_rate_incoming_bytes_per_second",
        "Incoming bytes per second.",
        |s| as_gauge(s.rates.inbps),
    ),
    gauge(
        "wvs_rate_outgoing_bytes_per_second",
        "Outgoing bytes per second.",
        |s| as_gauge(s.rates.outbps),
    ),
];

const SERVICES: &[Def<Service>] = &[
    count(
        "wvs_service_connections",
        "Connections made, by virtual service.",
        |r| r.1.conns,
    ),
    count(
        "wvs_service_incoming_packets",
        "Incoming packets, by virtual service.",
        |r| r.1.inpkts,
    ),
    count(
        "wvs_service_outgoing_packets",
        "Outgoing packets, by virtual service.",
        |r| r.1.outpkts,
    ),
    count(
        "wvs_service_incoming_bytes",
        "Incoming bytes, by virtual service.",
        |r| r.1.inbytes,
    ),
    count(
        "wvs_service_outgoing_bytes",
        "Outgoing bytes, by virtual service.",
        |r| r.1.outbytes,
    ),
    gauge(
        "wvs_service_connections_per_second",
        "Connections per second, by virtual service.",
        |r| as_gauge(r.2.cps),
    ),
    gauge(
        "wvs_service_incoming_packets_per_second",
        "Incoming packets per second, by virtual service.",
        |r| as_gauge(r.2.inpps),
    ),
    gauge(
        "wvs_service_outgoing_packets_per_second",
        "Outgoing packets per second, by virtual service.",
        |r| as_gauge(r.2.outpps),
    ),
    gauge(
        "wvs_service_incoming_bytes_per_second",
        "Incoming bytes per second, by virtual service.",
        |r| as_gauge(r.2.inbps),
    ),
    gauge(
        "wvs_service_outgoing_bytes_per_second",
        "Outgoing bytes per second, by virtual service.",
        |r| as_gauge(r.2.outbps),
    ),
];

const BACKEND_TRAFFIC: &[Def<Backend>] = &[
    count(
        "wvs_backend_connections",
        "Connections made, by real server.",
        |r| r.4.conns,
    ),
    count(
        "wvs_backend_incoming_packets",
        "Incoming packets, by real server.",
        |r| r.4.inpkts,
    ),
    count(
        "wvs_backend_outgoing_packets",
        "Outgoing packets, by real server.",
        |r| r.4.outpkts,
    ),
    count(
        "wvs_backend_incoming_bytes",
        "Incoming bytes, by real server.",
        |r| r.4.inbytes,
    ),
    count(
        "wvs_backend_outgoing_bytes",
        "Outgoing bytes, by real server.",
        |r| r.4.outbytes,
    ),
    gauge(
        "wvs_backend_connections_per_second",
        "Connections per second, by real server.",
        |r| as_gauge(r.5.cps),
    ),
];

const PLUGINS: &[Def<Scrape>] = &[
    count(
        "wvs_plugin_calls",
        "Scheduler calls into WebAssembly plugins.",
        |s| s.plugin[0],
    ),
    count(
        "wvs_plugin_traps",
        "Plugin calls that trapped or ran out of time.",
        |s| s.plugin[1],
    ),
    count(
        "wvs_plugin_invalid_answers",
        "Plugin calls that gave an invalid answer.",
        |s| s.plugin[2],
    ),
    count(
        "wvs_plugin_slow",
        "Scheduler plugins taken out for calls that kept taking too long.",
        |s| s.plugin[3],
    ),
    count(
        "wvs_plugin_fallbacks",
        "Services switched to their native fallback scheduler.",
        |s| s.plugin[4],
    ),
];

const HELPER: &[Def<(Labels, u64)>] = &[count(
    "wvs_helper_events",
    "Application helper events: calls, rewrites, faults, expected connections \
     registered, refused and matched, resized segments cut.",
    |r| r.1,
)];

const SYNPROXY: &[Def<(Labels, u64)>] = &[count(
    "wvs_synproxy_events",
    "The synproxy: SYNs answered with a cookie, ACKs that returned one (connections \
     made) and that did not, SYNs sent to a server again, connections whose server \
     answered, servers' resets passed to the client.",
    |r| r.1,
)];

const SYNPROXY_HALF: &[Def<Scrape>] = &[gauge(
    "wvs_synproxy_half_joined",
    "Synproxied connections whose server has not answered yet.",
    |s| s.synproxy_half,
)];

const DROPS: &[Def<(Labels, u64)>] = &[count(
    "wvs_drops",
    "Frames dropped by the datapath, by reason.",
    |r| r.1,
)];

const ANNOUNCED: &[Def<(Labels, i64)>] = &[gauge(
    "wvs_announced",
    "With --announce: 1 while the VIP is on the device for the routing daemon to announce (one of its services has a server taking connections), else 0.",
    |r| r.1,
)];

const FRAMES_AND_TABLE: &[Def<Scrape>] = &[
    count("wvs_rx_frames", "Frames received by the datapath.", |s| {
        s.rx
    }),
    count("wvs_tx_frames", "Frames sent by the datapath.", |s| s.tx),
    count("wvs_passed_frames", "Frames left to the kernel.", |s| {
        s.passed
    }),
    count(
        "wvs_offloaded_connections",
        "With --offload tc: connections whose flows wvs handed to its tc program (past their first 8 client packets: TCP in ESTABLISHED, and UDP).",
        |s| s.offload[0],
    ),
    count(
        "wvs_offload_refused_connections",
        "With --offload tc: connections the program's full map could not take (they stay with wvs).",
        |s| s.offload[1],
    ),
    count(
        "wvs_offload_packets",
        "With --offload tc: packets the tc program carried without wvs (merged before each scrape; counted in the services' and servers' counters too).",
        |s| s.offload[2],
    ),
    count(
        "wvs_offload_bytes",
        "With --offload tc: the bytes (IP length) of those packets.",
        |s| s.offload[3],
    ),
    gauge(
        "wvs_offload_flows",
        "With --offload tc: flows in the program's map at the last merge (two per NAT connection, one per direct-routing one).",
        |s| as_gauge(s.offload[4]),
    ),
    count(
        "wvs_unknown_flows",
        "Connections started by a TCP segment other than a SYN (sloppy_tcp): flows another balancer started, moved here by the routers.",
        |s| s.unknown_flows,
    ),
    gauge(
        "wvs_connection_table_entries",
        "Connections tracked now.",
        |s| as_gauge(s.conns),
    ),
    gauge(
        "wvs_connection_table_capacity",
        "Most connections tracked at once.",
        |s| as_gauge(s.capacity),
    ),
    gauge(
        "wvs_defense_active",
        "1 while a defense strategy acts (the table is filling up), else 0.",
        |s| i64::from(s.defense.active),
    ),
];

const DEFENSE_MODE: &[Def<(Labels, i64)>] = &[gauge(
    "wvs_defense_mode",
    "Each defense strategy's mode as IPVS's sysctls: 0 off, 1 automatic and idle, \
     2 automatic and acting, 3 always on.",
    |r| r.1,
)];

const DEFENSE_RATE: &[Def<Scrape>] = &[gauge(
    "wvs_defense_drop_rate",
    "drop_packet drops one new connection in this many (0: none).",
    |s| i64::from(s.defense.drop_rate),
)];

const DEFENSE_EVENTS: &[Def<(Labels, u64)>] = &[count(
    "wvs_defense_events",
    "Defense events: half-open entries a full table evicted, entries drop_entry \
     expired, new connections drop_packet dropped, times the strategies engaged.",
    |r| r.1,
)];

const API_OPEN: &[Def<Scrape>] = &[gauge(
    "wvs_api_connections",
    "Connections open to the API now.",
    |s| as_gauge(s.api.0),
)];

const API_EVENTS: &[Def<(Labels, u64)>] = &[count(
    "wvs_api_connection_events",
    "The API server's bounds acting: idle connections closed to make room at the cap, \
     connections refused at the cap, requests answered 408, failed TLS handshakes.",
    |r| r.1,
)];

const SYNC_DAEMON: &[Def<(Labels, i64)>] = &[gauge(
    "wvs_sync_daemon_running",
    "Each configured sync daemon (ipvsadm --start-daemon): 1 while its threads run.",
    |r| r.1,
)];

const SYNC_EVENTS: &[Def<(Labels, u64)>] = &[count(
    "wvs_sync_events",
    "Connection sync: records the workers queued for the master and dropped at \
     sync_qlen_max, messages and records sent, sends failed; messages received, \
     malformed, of another syncid; connections and templates created and refreshed.",
    |r| r.1,
)];

const SYNC_IGNORED: &[Def<(Labels, u64)>] = &[count(
    "wvs_sync_ignored_records",
    "Records a backup left out, by reason.",
    |r| r.1,
)];

/// `(label name, value)` rows of one label each.
fn one_label<V: Copy>(name: &'static str, rows: &[(&str, V)]) -> Vec<(Labels, V)> {
    rows.iter()
        .map(|(k, v)| (vec![(name, (*k).to_string())], *v))
        .collect()
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let d = &self.defense;
        scalars(e, TOTALS, self)?;
        families(e, BACKEND_STATE, &self.backends, |r| &r.0)?;
        families(e, BACKEND_INFO, &self.backend_info, |r| &r.0)?;
        families(e, BACKEND_UP, &self.backend_up, |r| &r.0)?;
        families(e, CHECK_LATENCY, &self.check_latency, |r| &r.0)?;
        scalars(e, RATES, self)?;
        families(e, SERVICES, &self.services, |r| &r.0)?;
        families(e, BACKEND_TRAFFIC, &self.backends, |r| &r.0)?;
        scalars(e, PLUGINS, self)?;
        families(e, HELPER, &self.helper, |r| &r.0)?;
        families(e, SYNPROXY, &self.synproxy, |r| &r.0)?;
        scalars(e, SYNPROXY_HALF, self)?;
        families(e, DROPS, &self.drops, |r| &r.0)?;
        scalars(e, FRAMES_AND_TABLE, self)?;
        let modes = [
            ("drop_entry", i64::from(d.drop_entry)),
            ("drop_packet", i64::from(d.drop_packet)),
            ("secure_tcp", i64::from(d.secure_tcp)),
            ("synproxy", i64::from(d.synproxy)),
        ];
        families(e, DEFENSE_MODE, &one_label("strategy", &modes), |r| &r.0)?;
        scalars(e, DEFENSE_RATE, self)?;
        let events = [
            ("evicted", d.evicted),
            ("dropped_entries", d.dropped_entries),
            ("dropped_packets", d.dropped_packets),
            ("engaged", d.engaged),
        ];
        families(e, DEFENSE_EVENTS, &one_label("event", &events), |r| &r.0)?;
        scalars(e, API_OPEN, self)?;
        let [evicted, refused, timed_out, tls_failed] = self.api.1;
        let api = [
            ("evicted", evicted),
            ("refused", refused),
            ("timed_out", timed_out),
            ("tls_failed", tls_failed),
        ];
        families(e, API_EVENTS, &one_label("event", &api), |r| &r.0)?;
        families(e, SYNC_DAEMON, &self.sync_daemons, |r| &r.0)?;
        families(e, SYNC_EVENTS, &self.sync, |r| &r.0)?;
        families(e, SYNC_IGNORED, &self.sync_ignored, |r| &r.0)?;
        families(e, ANNOUNCED, &self.announced, |r| &r.0)
    }
}

/// GET /metrics.
pub async fn metrics(State(st): State<Shared>) -> Response {
    super::fresh(&st).await;
    let snap = st.snapshot.load_full();
    let mut s = Scrape::default();
    {
        let mut c = st.control.lock().await;
        let p = &c.registry().runtime().stats;
        s.plugin = [
            p.calls.load(Relaxed),
            p.traps.load(Relaxed),
            p.invalid.load(Relaxed),
            p.slow.load(Relaxed),
            p.fallbacks.load(Relaxed),
        ];
        sync(&c, &st.conns, &mut s);
        let traffic = c.traffic();
        s.totals = traffic.totals(snap.service_stats());
        s.rates = traffic.rates();
    }
    services(&snap, &mut s);
    datapath(&st, &mut s);
    if let Some((_, held)) = &*st.announced.lock() {
        let vips: std::collections::BTreeSet<_> = snap
            .services()
            .filter(|v| !v.key.is_fwmark())
            .map(|v| v.key.addr)
            .collect();
        s.announced = vips
            .into_iter()
            .map(|a| (vec![("vip", a.to_string())], i64::from(held.contains(&a))))
            .collect();
    }
    let reg = registry(st.node.as_deref(), s);
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        return super::ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
        .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The scrape in a registry; with `--node`, every series carries `node="NAME"`, so that
/// one Prometheus scrapes a fleet of balancers apart.
fn registry(node: Option<&str>, s: Scrape) -> prometheus_client::registry::Registry {
    let mut reg = match node {
        Some(n) => prometheus_client::registry::Registry::with_labels(std::iter::once((
            std::borrow::Cow::Borrowed("node"),
            std::borrow::Cow::Owned(n.to_string()),
        ))),
        None => prometheus_client::registry::Registry::default(),
    };
    reg.register_collector(Box::new(s));
    reg
}

/// Each service's and real server's rows.
fn services(snap: &crate::service::Snapshot, s: &mut Scrape) {
    for svc in snap.services_sorted() {
        // A fwmark service as node_exporter reads /proc/net/ip_vs's "FWM" lines: no
        // address, port 0, its mark in `local_mark`.
        let (proto, vip, mark) = match svc.key.fwmark {
            0 => (
                svc.key.proto.name().to_ascii_uppercase(),
                svc.key.addr.to_string(),
                String::new(),
            ),
            m => ("FWM".to_string(), String::new(), m.to_string()),
        };
        let vport = svc.key.port.to_string();
        s.services.push((
            vec![
                ("local_address", vip.clone()),
                ("local_port", vport.clone()),
                ("proto", proto.clone()),
            ],
            svc.stats.totals(),
            svc.stats.rates(),
        ));
        for d in &svc.dests {
            let port = if d.port == 0 { svc.key.port } else { d.port };
            let labels = vec![
                ("local_address", vip.clone()),
                ("local_port", vport.clone()),
                ("remote_address", d.addr.to_string()),
                ("remote_port", port.to_string()),
                ("proto", proto.clone()),
                ("local_mark", mark.clone()),
            ];
            let mut info = labels.clone();
            info.push(("forward", d.forward().ipvsadm_name().to_string()));
            s.backend_info.push((info, 1));
            for h in crate::health::reports(d) {
                let mut l = labels.clone();
                l.push(("check", h.check.clone()));
                s.backend_up.push((l.clone(), i64::from(h.state == "up")));
                if let Some(last) = &h.last {
                    s.check_latency
                        .push((l, last.latency_us as f64 / 1_000_000.0));
                }
            }
            s.backends.push((
                labels,
                i64::from(d.activeconns.load(Relaxed).max(0)),
                i64::from(d.inactconns.load(Relaxed).max(0)),
                i64::from(d.weight()),
                d.stats.totals(),
                d.stats.rates(),
            ));
        }
    }
}

/// The sync daemons' counters.
fn sync(c: &crate::control::Controller, conns: &crate::conn::ConnTable, s: &mut Scrape) {
    let out = conns.sync();
    let mut ev = vec![
        ("queued", out.queued.load(Relaxed)),
        ("queue_dropped", out.dropped.load(Relaxed)),
    ];
    for v in super::daemon_views(c) {
        s.sync_daemons.push((
            vec![
                ("state", v.daemon.state.name().to_string()),
                ("interface", v.daemon.mcast_interface.clone()),
                ("syncid", v.daemon.syncid.to_string()),
            ],
            i64::from(v.running),
        ));
    }
    if let Some(d) = c.sync() {
        let t = d.stats();
        ev.extend([
            ("sent_messages", t.sent_messages.load(Relaxed)),
            ("sent_records", t.sent_records.load(Relaxed)),
            ("send_errors", t.send_errors.load(Relaxed)),
            ("full_resync_records", t.full_records.load(Relaxed)),
            ("received_messages", t.received_messages.load(Relaxed)),
            ("bad_messages", t.bad_messages.load(Relaxed)),
            ("other_syncid", t.other_syncid.load(Relaxed)),
            ("created", t.created.load(Relaxed)),
            ("updated", t.updated.load(Relaxed)),
        ]);
        s.sync_ignored = crate::io::sync::IGNORED
            .iter()
            .zip(t.ignored.iter())
            .map(|((name, _), n)| (vec![("reason", (*name).to_string())], n.load(Relaxed)))
            .collect();
    }
    s.sync = one_label("event", &ev);
}

/// The datapath's, the table's, the defense's and the API server's counters.
fn datapath(st: &super::ApiState, s: &mut Scrape) {
    let sum = crate::datapath::StatsSum::of(st.datapath.iter().map(|w| w.as_ref()));
    s.drops = sum
        .drops
        .iter()
        .map(|(r, n)| (vec![("reason", r.name().to_string())], *n))
        .collect();
    s.helper = crate::datapath::stats::HELPER_EVENTS
        .iter()
        .zip(sum.helper)
        .map(|(name, n)| (vec![("event", (*name).to_string())], n))
        .collect();
    let mut events = sum.synproxy;
    // The SYNs the tc program answered count as the datapath's.
    if let Some(o) = &st.offload {
        events[0] += o.cookies.load(Relaxed);
    }
    s.synproxy = crate::datapath::stats::SYNPROXY_EVENTS
        .iter()
        .zip(events)
        .map(|(name, n)| (vec![("event", (*name).to_string())], n))
        .collect();
    s.synproxy_half = crate::synproxy::HALF_JOINED.load(Relaxed).max(0);
    (s.rx, s.tx, s.passed) = (sum.rx, sum.tx, sum.passed);
    s.unknown_flows = sum.unknown_flows;
    s.offload[..2].copy_from_slice(&[sum.offloaded, sum.offload_refused]);
    if let Some(o) = &st.offload {
        s.offload[2..].copy_from_slice(&[
            o.packets.load(Relaxed),
            o.bytes.load(Relaxed),
            o.flows.load(Relaxed),
        ]);
    }
    s.conns = st.conns.len() as u64;
    s.capacity = st.max_conns as u64;
    s.defense = st.conns.defense().status().into();
    let a = &st.server;
    s.api = (
        a.open.load(Relaxed) as u64,
        [
            a.evicted.load(Relaxed),
            a.refused.load(Relaxed),
            a.timed_out.load(Relaxed),
            a.tls_failed.load(Relaxed),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&'static str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
    }

    /// Every family in the order and form it was written in (node_exporter's names, types
    /// and help), from a scrape with every row kind: a change to the exposition is seen.
    #[test]
    fn the_exposition_is_as_written() {
        let t = |n: u64| Totals {
            conns: n,
            inpkts: n + 1,
            outpkts: n + 2,
            inbytes: n + 3,
            outbytes: n + 4,
        };
        let r = |n: u64| Rates {
            cps: n,
            inpps: n + 1,
            outpps: n + 2,
            inbps: n + 3,
            outbps: n + 4,
        };
        let svc = labels(&[
            ("local_address", "198.18.100.1"),
            ("local_port", "80"),
            ("proto", "TCP"),
        ]);
        let real = labels(&[
            ("local_address", "198.18.100.1"),
            ("local_port", "80"),
            ("remote_address", "198.19.0.11"),
            ("remote_port", "80"),
            ("proto", "TCP"),
            ("local_mark", ""),
        ]);
        let mut checked = real.clone();
        checked.push(("check", "http".into()));
        let mut info = real.clone();
        info.push(("forward", "Masq".into()));
        let s = Scrape {
            totals: t(10),
            rates: r(20),
            services: vec![(svc, t(30), r(40))],
            backends: vec![(real, 3, 4, 5, t(50), r(60))],
            backend_info: vec![(info, 1)],
            backend_up: vec![(checked.clone(), 1)],
            check_latency: vec![(checked, 0.0025)],
            plugin: [1, 2, 3, 4, 5],
            drops: vec![(labels(&[("reason", "no_dest")]), 7)],
            helper: vec![(labels(&[("event", "calls")]), 8)],
            synproxy: vec![(labels(&[("event", "cookies_sent")]), 15)],
            synproxy_half: 2,
            rx: 100,
            tx: 90,
            passed: 10,
            conns: 6,
            capacity: 1000,
            defense: crate::api::views::DefenseView {
                drop_entry: 1,
                drop_packet: 0,
                secure_tcp: 2,
                drop_rate: 9,
                synproxy: 1,
                active: true,
                evicted: 11,
                dropped_entries: 12,
                dropped_packets: 13,
                engaged: 14,
            },
            api: (2, [15, 16, 17, 18]),
            sync: vec![(labels(&[("event", "sent_records")]), 19)],
            sync_ignored: vec![(labels(&[("reason", "no_dest")]), 20)],
            sync_daemons: vec![(
                labels(&[("state", "master"), ("interface", "eth1"), ("syncid", "1")]),
                1,
            )],
            unknown_flows: 21,
            offload: [3, 0, 120, 9000, 6],
            announced: vec![(labels(&[("vip", "198.18.100.1")]), 1)],
        };
        let reg = registry(Some("lb1"), s);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encode");
        let golden =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/metrics.golden");
        if std::env::var_os("WVS_BLESS").is_some() {
            std::fs::write(&golden, &out).expect("write the golden file");
        }
        let want = std::fs::read_to_string(&golden).expect("src/api/metrics.golden");
        assert_eq!(
            out, want,
            "the exposition changed: check it, then WVS_BLESS=1 cargo test to accept it"
        );
    }
}
