//! Health checks of the real servers, run by wvs itself (what keepalived's checkers do
//! beside IPVS).
//!
//! The checker has its own thread and runtime, apart from the control thread and the
//! workers, and reads only the published snapshot: each configuration's checks become
//! probes, one per (address, port, check, timing), shared by every service and real server
//! that has the same one (keepalived#2111 asks for this). A probe's result is written to
//! each of its real servers' [`Dest`] as one flag the scheduler reads: a down server
//! leaves scheduling (keepalived's DELDEST) or, with `inhibit_on_failure`, keeps its place
//! with weight 0; its connections continue either way. The datapath never waits on a check.

pub mod probe;
pub mod state;
pub mod via;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use crate::config::check::{CheckDef, CheckSpec, Probe, Timing};
use crate::consts::CHECK_RECONCILE_MS;
use crate::model::ServiceKey;
use crate::service::{Dest, Snapshot};
pub use state::{Health, Outcome};

/// What identifies a probe: where, what and when.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProbeKey {
    /// The address and port checked.
    pub target: SocketAddr,
    /// The check.
    pub probe: Probe,
    /// Its timing and counts.
    pub timing: Timing,
    /// A DR or tunnel server checked through its service's VIP and port (`via`).
    pub via: Option<SocketAddr>,
}

/// One real server of a service that a probe decides for.
#[derive(Debug, Clone)]
struct Bound {
    dest: Arc<Dest>,
    inhibit: bool,
    service: ServiceKey,
    /// Programs run when the server changes state.
    notify: Arc<crate::config::check::Notify>,
    /// Where this probe's check comes among the server's checks (its report's place).
    rank: usize,
}

/// A running probe: its state and the real servers it decides for.
#[derive(Debug)]
pub(crate) struct ProbeShared {
    /// What it checks.
    pub key: ProbeKey,
    state: Mutex<Health>,
    bound: Mutex<Vec<Bound>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// How a check through the VIP reaches its server.
    via: Option<probe::Via>,
}

/// A probe's state as the API shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// `up` or `down`.
    pub state: String,
    /// Since when (the last change, or the start of checking), ms since the Unix epoch.
    pub since_ms: u64,
    /// The check's type.
    pub check: String,
    /// The address and port checked.
    pub target: String,
    /// Consecutive passes, latest run.
    pub passes: u32,
    /// Consecutive failures, latest run.
    pub failures: u32,
    /// The last result (none before the first check ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<Outcome>,
    /// The latest results, oldest first.
    pub history: Vec<Outcome>,
    /// Whether a failure sets weight 0 instead of leaving scheduling.
    pub inhibit_on_failure: bool,
}

impl ProbeShared {
    /// The state as the API shows it, for a real server with `inhibit`.
    pub fn report(&self, inhibit: bool) -> HealthReport {
        let h = self.state.lock();
        let (passes, failures) = h.runs();
        HealthReport {
            state: if h.up() { "up" } else { "down" }.into(),
            since_ms: h.since_ms(),
            check: self.key.probe.kind().into(),
            target: self.key.target.to_string(),
            passes,
            failures,
            last: h.history().back().cloned(),
            history: h.history().iter().cloned().collect(),
            inhibit_on_failure: inhibit,
        }
    }

    fn up(&self) -> bool {
        self.state.lock().up()
    }

    /// Say to each of its real servers what this probe found: a server checked by several
    /// probes is up while every one of them finds it up (keepalived's several checkers).
    fn publish(self: &Arc<Self>, up: bool) {
        for b in self.bound.lock().iter() {
            let all_up = up && all_up(&b.dest).unwrap_or(true);
            let was_down = b.dest.is_down();
            b.dest.set_health(!all_up, b.inhibit);
            if was_down == all_up {
                let _ = notify(b, all_up);
            }
        }
    }
}

/// What a real server is checked by: its probes, and whether a failure inhibits (attached
/// to its [`Dest`], opaque to the core).
#[derive(Debug)]
struct Attached {
    probes: Vec<Arc<ProbeShared>>,
    inhibit: bool,
}

/// Run the program the real server of `b` names for its new state (keepalived's
/// `notify_up`, `notify_down`), in the background, bounded in time, as a misc check's:
/// without a shell, with nothing of wvs's in its environment but what it is told.
fn notify(b: &Bound, up: bool) -> Option<tokio::task::JoinHandle<()>> {
    let (argv, state) = if up {
        (b.notify.up.as_ref(), "up")
    } else {
        (b.notify.down.as_ref(), "down")
    };
    let (program, args) = argv.and_then(|a| a.split_first())?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", crate::consts::MISC_CHECK_PATH)
        .env("WVS_REAL_ADDR", b.dest.addr.to_string())
        .env("WVS_REAL_PORT", b.dest.port.to_string())
        .env("WVS_SERVICE", b.service.to_string())
        .env("WVS_STATE", state);
    Some(run_bounded(
        cmd,
        program.clone(),
        b.dest.addr.to_string(),
        state,
    ))
}

/// Whether every probe of a real server finds it up (`None`: it has none attached).
fn all_up(dest: &Dest) -> Option<bool> {
    let c = dest.checker()?;
    let a = c.downcast_ref::<Attached>()?;
    Some(a.probes.iter().all(|p| p.up()))
}

/// A real server's health as the API shows it, if it is checked: with several checks, the
/// first that finds it down, else the first.
pub fn report(dest: &Dest) -> Option<HealthReport> {
    let reports = reports(dest);
    let down = reports.iter().position(|r| r.state != "up").unwrap_or(0);
    reports.into_iter().nth(down)
}

/// Each of a real server's checks' state, in the order they were given.
pub fn reports(dest: &Dest) -> Vec<HealthReport> {
    let Some(c) = dest.checker() else {
        return Vec::new();
    };
    let Some(a) = c.downcast_ref::<Attached>() else {
        return Vec::new();
    };
    a.probes.iter().map(|p| p.report(a.inhibit)).collect()
}

/// Now, in ms since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The checker: its thread runs every probe of the published configuration.
#[derive(Debug)]
pub(crate) struct Monitor {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Monitor {
    /// Start checking what `snapshot` says, on a thread of its own, until `stop` is set.
    pub fn start(
        snapshot: Arc<ArcSwap<Snapshot>>,
        stop: Arc<AtomicBool>,
        path: Option<Arc<via::CheckPath>>,
    ) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wvs-health".into())
            .spawn(move || {
                // Its misc programs get no capability: none passed on by exec.
                crate::privs::pass_none_on();
                rt.block_on(watch(snapshot, flag, path))
            })?;
        Ok(Self {
            thread: Some(thread),
            stop,
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn watch(
    snapshot: Arc<ArcSwap<Snapshot>>,
    stop: Arc<AtomicBool>,
    path: Option<Arc<via::CheckPath>>,
) {
    let tls = probe::tls_config();
    let mut probes: HashMap<ProbeKey, Arc<ProbeShared>> = HashMap::new();
    let mut seen: Option<Arc<Snapshot>> = None;
    let mut quorums: HashMap<ServiceKey, bool> = HashMap::new();
    while !stop.load(Relaxed) {
        let snap = snapshot.load_full();
        if seen.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &snap)) {
            reconcile(&snap, &mut probes, &tls, path.as_ref());
            seen = Some(snap.clone());
        }
        quorum_tick(&snap, &mut quorums);
        tokio::time::sleep(Duration::from_millis(CHECK_RECONCILE_MS)).await;
    }
    for p in probes.values() {
        if let Some(t) = p.task.lock().take() {
            t.abort();
        }
    }
    omega(&snapshot.load_full(), &probes, &quorums).await;
}

/// keepalived's `omega`, as wvs stops: for each service that asks for it, `quorum_down`
/// if its quorum held, and the notify-down program of each real server that was up; each
/// bounded in time, all waited for before the checker thread ends.
async fn omega(
    snap: &Snapshot,
    probes: &HashMap<ProbeKey, Arc<ProbeShared>>,
    quorums: &HashMap<ServiceKey, bool>,
) {
    let mut runs = Vec::new();
    for svc in snap.services().filter(|s| s.spec.quorum.omega) {
        let q = &svc.spec.quorum;
        if quorums.get(&svc.key).copied().unwrap_or(true)
            && let Some(program) = q.down.as_deref()
        {
            let sum: u64 = (svc.dests.iter())
                .filter(|d| !d.is_sorry() && d.in_scheduling())
                .map(|d| u64::from(d.weight()))
                .sum();
            runs.extend(quorum_program(svc, program, "down", sum));
        }
        let mut told = HashSet::new();
        for p in probes.values() {
            for b in p.bound.lock().iter() {
                if b.service == svc.key
                    && !b.dest.is_down()
                    && told.insert((b.dest.addr, b.dest.port))
                {
                    runs.extend(notify(b, false));
                }
            }
        }
    }
    if !runs.is_empty() {
        tracing::info!(
            programs = runs.len(),
            "omega: quorum_down and notify_down as wvs stops"
        );
    }
    for r in runs {
        let _ = r.await;
    }
}

/// Start the quorum program `program` of `svc` for `state` with live weight `sum`.
fn quorum_program(
    svc: &wvs_core::service::VirtualService,
    program: &str,
    state: &'static str,
    sum: u64,
) -> Option<tokio::task::JoinHandle<()>> {
    let argv: Vec<&str> = program.split_whitespace().collect();
    let (program, args) = argv.split_first()?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", crate::consts::MISC_CHECK_PATH)
        .env("WVS_SERVICE", svc.key.to_string())
        .env("WVS_QUORUM", state)
        .env("WVS_WEIGHT", sum.to_string());
    Some(run_bounded(
        cmd,
        program.to_string(),
        svc.key.to_string(),
        state,
    ))
}

/// Follow each service's quorum (keepalived's `update_quorum_state`): the live weight of
/// its real servers (in scheduling, not the sorry server) against `quorum` and
/// `hysteresis`; a change is told to the scheduler (with a sorry server, only it takes
/// clients while the quorum is lost) and runs `quorum_up` or `quorum_down`. `states`: each
/// service's last state (a new one starts with the quorum held).
fn quorum_tick(snap: &Snapshot, states: &mut HashMap<ServiceKey, bool>) {
    let mut live = HashSet::new();
    for svc in snap.services() {
        // A service without real servers has no quorum to follow.
        if !svc.dests.iter().any(|d| !d.is_sorry()) {
            svc.sched.set_quorum_lost(false);
            continue;
        }
        live.insert(svc.key);
        let sum: u64 = (svc.dests.iter())
            .filter(|d| !d.is_sorry() && d.in_scheduling())
            .map(|d| u64::from(d.weight()))
            .sum();
        let q = &svc.spec.quorum;
        let was = states.get(&svc.key).copied().unwrap_or(true);
        let holds = q.holds(was, sum);
        svc.sched.set_quorum_lost(!holds);
        if holds == was {
            continue;
        }
        states.insert(svc.key, holds);
        let (state, program) = if holds {
            ("up", q.up.as_deref())
        } else {
            ("down", q.down.as_deref())
        };
        if *q == wvs_core::spec::Quorum::default() {
            tracing::debug!(service = %svc.key, weight = sum, "quorum {state}");
        } else {
            tracing::warn!(service = %svc.key, weight = sum, "quorum {state}");
        }
        if let Some(p) = program {
            let _ = quorum_program(svc, p, state, sum);
        }
    }
    states.retain(|k, _| live.contains(k));
}

/// Run a notify or quorum program in the background, bounded in time, its output
/// dropped; a failure is logged. Its task is returned, for those that must be waited for.
fn run_bounded(
    mut cmd: tokio::process::Command,
    program: String,
    who: String,
    state: &'static str,
) -> tokio::task::JoinHandle<()> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::spawn(async move {
        let limit = Duration::from_millis(crate::consts::CHECK_NOTIFY_TIMEOUT_MS);
        let r = match cmd.spawn() {
            Ok(mut child) => tokio::time::timeout(limit, child.wait()).await,
            Err(e) => Ok(Err(e)),
        };
        match r {
            Ok(Ok(st)) if st.success() => {}
            Ok(Ok(st)) => tracing::warn!(%who, state, "program {program}: {st}"),
            Ok(Err(e)) => tracing::warn!(%who, state, "program {program}: {e}"),
            Err(_) => tracing::warn!(%who, state, "program {program}: killed after {limit:?}"),
        }
    })
}

/// Where the answers to `snap`'s checks through a VIP come from: the VIPs and ports they go
/// to, with their protocol. Under `--io xdp` every such check connects to the stand-in
/// address ([`via`]), and the XDP program hands these answers to wvs.
pub(crate) fn answers_through_vips(
    snap: &Snapshot,
) -> Vec<(std::net::Ipv4Addr, crate::model::Protocol, u16)> {
    let mut v: Vec<_> = wanted(snap, true)
        .into_keys()
        .filter_map(|k| {
            let std::net::SocketAddr::V4(vip) = k.via? else {
                return None;
            };
            let proto = match k.probe {
                Probe::Udp { .. } | Probe::Dns { .. } => crate::model::Protocol::Udp,
                _ => crate::model::Protocol::Tcp,
            };
            Some((*vip.ip(), proto, vip.port()))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The probes a snapshot asks for, with the real servers each decides for.
fn wanted(snap: &Snapshot, through_vip: bool) -> HashMap<ProbeKey, Vec<Bound>> {
    let mut want: HashMap<ProbeKey, Vec<Bound>> = HashMap::new();
    for svc in snap.services() {
        // The daemon's snapshots are built from its specs: their checks are `CheckSpec`s.
        let Some(given) = svc.given::<CheckSpec>() else {
            continue;
        };
        for (dest, real) in svc.dests.iter().rev().zip(&given.reals) {
            // A sorry server is not checked by its service's default (keepalived never
            // checks one).
            let default = given.check.as_ref().filter(|_| !real.sorry);
            let Some(first) = real.check.as_ref().or(default) else {
                continue;
            };
            // The server's programs: the first of its checks' that names each.
            let notify = Arc::new(crate::config::check::Notify {
                up: first.all().find_map(|c| c.notify.up.clone()),
                down: first.all().find_map(|c| c.notify.down.clone()),
            });
            // Each of its checks (keepalived's several checkers) is a probe of its own.
            for (rank, spec) in first.all().enumerate() {
                let Some(probe) = &spec.probe else { continue };
                // DR and tunnel servers the way clients reach them (not a program's check).
                let via = (through_vip
                    && via::goes_via(dest.forward())
                    && !matches!(probe, Probe::Misc { .. } | Probe::Ping | Probe::File { .. }))
                .then(|| SocketAddr::new(svc.key.addr, spec.port.unwrap_or(svc.key.port)));
                let key = ProbeKey {
                    target: SocketAddr::new(dest.addr, spec.port.unwrap_or(real.port)),
                    probe: probe.clone(),
                    timing: spec.timing,
                    via,
                };
                want.entry(key).or_default().push(Bound {
                    dest: dest.clone(),
                    inhibit: first.inhibit,
                    service: svc.key,
                    notify: notify.clone(),
                    rank,
                });
            }
        }
    }
    want
}

/// Bring the running probes in line with a new snapshot: probes that stay keep their state
/// (and their real servers theirs), new ones start, others stop and free their servers.
fn reconcile(
    snap: &Snapshot,
    probes: &mut HashMap<ProbeKey, Arc<ProbeShared>>,
    tls: &Arc<tokio_rustls::rustls::ClientConfig>,
    path: Option<&Arc<via::CheckPath>>,
) {
    let want = wanted(snap, path.is_some());
    let checked: HashSet<*const Dest> = want
        .values()
        .flatten()
        .map(|b| Arc::as_ptr(&b.dest))
        .collect();
    for p in probes.values() {
        for b in p.bound.lock().iter() {
            if !checked.contains(&Arc::as_ptr(&b.dest)) {
                b.dest.set_checker(None);
                b.dest.set_health(false, false);
                b.dest.set_dynamic_weight(None);
            }
        }
    }
    probes.retain(|k, p| {
        let keep = want.contains_key(k);
        if !keep {
            if let Some(t) = p.task.lock().take() {
                t.abort();
            }
            tracing::info!(real = %k.target, check = k.probe.kind(), "health check stopped");
        }
        keep
    });
    // Each real server's probes, in the order its checks were given.
    let mut of_dest: HashMap<*const Dest, DestProbes> = HashMap::new();
    for (key, bound) in want {
        let p = probes.entry(key.clone()).or_insert_with(|| {
            // Through the VIP (its own or not: `via` sees to it at each check).
            let via = match (key.via, path, bound.first()) {
                (Some(vip), Some(path), Some(b)) => Some(probe::Via {
                    path: path.clone(),
                    dest: b.dest.clone(),
                    vip,
                }),
                _ => None,
            };
            let p = Arc::new(ProbeShared {
                key: key.clone(),
                state: Mutex::new(Health::starting(unix_ms(), !key.timing.start_down)),
                bound: Mutex::new(Vec::new()),
                task: Mutex::new(None),
                via,
            });
            let task = tokio::spawn(run_probe(p.clone(), tls.clone()));
            *p.task.lock() = Some(task.abort_handle());
            tracing::info!(
                real = %key.target,
                check = key.probe.kind(),
                interval_ms = key.timing.interval_ms,
                via = ?p.via.as_ref().map(|v| v.vip),
                "health check started"
            );
            p
        });
        for b in &bound {
            of_dest
                .entry(Arc::as_ptr(&b.dest))
                .or_insert_with(|| (b.dest.clone(), b.inhibit, Vec::new()))
                .2
                .push((b.rank, p.clone()));
        }
        *p.bound.lock() = bound;
    }
    for (_, (dest, inhibit, mut ranked)) in of_dest {
        ranked.sort_by_key(|(rank, _)| *rank);
        let list: Vec<_> = ranked.into_iter().map(|(_, p)| p).collect();
        // A weight set by a check that is no longer there goes back to the configured one.
        if !list
            .iter()
            .any(|p| matches!(p.key.probe, Probe::Misc { dynamic: true, .. }))
        {
            dest.set_dynamic_weight(None);
        }
        let up = list.iter().all(|p| p.up());
        dest.set_checker(Some(Arc::new(Attached {
            probes: list,
            inhibit,
        })));
        dest.set_health(!up, inhibit);
    }
}

/// A real server, whether a failure inhibits it, and its probes with their places among
/// its checks.
type DestProbes = (Arc<Dest>, bool, Vec<(usize, Arc<ProbeShared>)>);

async fn run_probe(p: Arc<ProbeShared>, tls: Arc<tokio_rustls::rustls::ClientConfig>) {
    let t = p.key.timing;
    // Spread the first checks of many probes (keepalived's `warmup`): by default over up to
    // the interval, at most a second.
    let most = t.warmup_ms.unwrap_or(t.interval_ms.clamp(1, 1000));
    let warmup = rand::random::<u64>().checked_rem(most).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(warmup)).await;
    loop {
        let ((ok, detail), took) = probe::check(
            &p.key.probe,
            p.key.target,
            p.via.as_ref(),
            Duration::from_millis(t.timeout_ms),
            &tls,
        )
        .await;
        let dynamic = probe::dynamic_weight(&p.key.probe, &(ok, detail.clone()));
        let configured = p.bound.lock().first().map(|b| b.dest.configured_weight());
        let weight = dynamic.map(|d| d.of(configured.unwrap_or(1)));
        let outcome = Outcome {
            ok,
            at_ms: unix_ms(),
            latency_us: took.as_micros() as u64,
            detail,
            weight,
        };
        let (change, delay, up, runs) = {
            let mut h = p.state.lock();
            let change = h.record(outcome.clone(), &t);
            (change, h.next_delay_ms(&t), h.up(), h.runs())
        };
        if let Some(w) = dynamic {
            for b in p.bound.lock().iter() {
                b.dest
                    .set_dynamic_weight(Some(w.of(b.dest.configured_weight())));
            }
        }
        p.publish(up);
        let services: Vec<String> = p
            .bound
            .lock()
            .iter()
            .map(|b| b.service.to_string())
            .collect();
        match change {
            Some(false) => tracing::warn!(
                real = %p.key.target,
                check = p.key.probe.kind(),
                services = ?services,
                failures = runs.1,
                "real server DOWN: {}",
                outcome.detail
            ),
            Some(true) => tracing::warn!(
                real = %p.key.target,
                check = p.key.probe.kind(),
                services = ?services,
                passes = runs.0,
                "real server UP: {}",
                outcome.detail
            ),
            None if !ok => tracing::debug!(
                real = %p.key.target,
                check = p.key.probe.kind(),
                failures = runs.1,
                "check failed: {}",
                outcome.detail
            ),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
}
