//! Scheduling a new connection: the service's scheduler, its state, and the table of real
//! servers it reads.
//!
//! The schedulers are the plugin crates of `plugins/` (IPVS's rules, written against
//! `wvs-sdk`). They run as WebAssembly plugins (the built-in ones embedded in the binary) and
//! are also linked in natively, as the safe fallback when a plugin fails and for
//! `--sched-runtime native`. Each service owns one [`SchedState`]: the scheduler instance
//! and a [`DestInfo`] table refreshed from the live counters at each call,
//! under one lock that is IPVS's per-service `sched_lock`. It is taken once per new
//! connection, never per packet and never across services, and it makes rotations exact
//! whichever worker sees the connection.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::Mutex;
use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler as _};

use super::Dest;
use crate::model::Scheduler;
use crate::plugin::{Plugin, PluginError, Runtime, WasmScheduler};

macro_rules! instances {
    ($( $variant:ident => $ty:path, )*) => {
        impl Scheduler {
            /// A new boxed instance. Out of line and cold on purpose: some schedulers keep
            /// tables of tens of kilobytes, and a caller that built one on its own stack would
            /// probe that much stack on every call, used or not.
            #[cold]
            #[inline(never)]
            fn instance(self) -> Box<Instance> {
                match self { $(Scheduler::$variant => Box::new(Instance::$variant(<$ty>::default())),)* }
            }
        }

        // Always behind a Box (created once per service), so the size spread costs nothing.
        #[allow(clippy::large_enum_variant)]
        enum Instance { $( $variant($ty), )* }

        impl Instance {
            fn update(&mut self, dests: &[DestInfo], flags: u32) {
                match self { $(Instance::$variant(s) => s.update(dests, flags),)* }
            }

            fn schedule(&mut self, conn: &ConnInfo, dests: &[DestInfo], host: &mut dyn Host) -> Option<usize> {
                match self { $(Instance::$variant(s) => s.schedule(conn, dests, host),)* }
            }
        }
    };
}
crate::model::builtin_schedulers!(instances);

/// What runs a service's scheduling: a plugin (built in or from a file) and the native
/// IPVS scheduler that takes over if the plugin fails.
#[derive(Debug, Clone)]
pub struct SchedChoice {
    /// The name the configuration uses.
    pub name: String,
    /// The plugin; `None` runs `fallback` natively.
    pub plugin: Option<Plugin>,
    /// The safe built-in: the same IPVS scheduler natively, or wlc for custom plugins.
    pub fallback: Scheduler,
}

impl PartialEq for SchedChoice {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.plugin == other.plugin && self.fallback == other.fallback
    }
}

impl SchedChoice {
    /// The scheduler called `name`, run by `plugin` if there is one; its fallback is the
    /// IPVS scheduler of that name, or wlc for a custom plugin's.
    pub fn new(name: &str, plugin: Option<Plugin>) -> Self {
        Self {
            name: name.into(),
            plugin,
            fallback: Scheduler::from_name(name).unwrap_or(Scheduler::Wlc),
        }
    }

    /// A native IPVS scheduler.
    pub fn native(s: Scheduler) -> Self {
        Self {
            name: s.name().into(),
            plugin: None,
            fallback: s,
        }
    }
}

enum Running {
    Native(Box<Instance>),
    Wasm(Box<WasmScheduler>),
}

/// A service's scheduler instance and its view of the real servers.
pub struct SchedState {
    inner: Mutex<Inner>,
    /// The service's quorum is lost (keepalived's `quorum`): with a sorry server, only it
    /// is scheduled. Set by the health checker, which follows the live weight.
    quorum_lost: std::sync::atomic::AtomicBool,
}

struct Inner {
    running: Running,
    fallback: Scheduler,
    stats: Option<Arc<Runtime>>,
    table: Vec<DestInfo>,
    /// `table[i]` is `dests[map[i]]`: servers a health check took out are not in the table.
    map: Vec<usize>,
    flags: u32,
    updated: bool,
    host: SchedHost,
}

impl std::fmt::Debug for SchedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedState").finish_non_exhaustive()
    }
}

/// What the host offers native schedulers: random numbers (xorshift seeded at start) and
/// the clock.
struct SchedHost {
    rng: u64,
    now: u64,
}

impl Host for SchedHost {
    fn random(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as u32
    }

    fn now_ms(&self) -> u64 {
        self.now
    }
}

impl SchedState {
    /// A fresh instance for a service with these flags. A plugin that cannot be instantiated
    /// is logged and replaced by its fallback.
    pub fn new(choice: &SchedChoice, flags: u32) -> Self {
        let running = match &choice.plugin {
            Some(p) => match p.instantiate() {
                Ok(w) => Running::Wasm(Box::new(w)),
                Err(e) => {
                    tracing::error!(fallback = choice.fallback.name(), "{e}");
                    Running::Native(choice.fallback.instance())
                }
            },
            None => Running::Native(choice.fallback.instance()),
        };
        Self {
            quorum_lost: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(Inner {
                running,
                fallback: choice.fallback,
                stats: choice.plugin.as_ref().map(|p| p.runtime().clone()),
                table: Vec::new(),
                map: Vec::new(),
                flags,
                updated: false,
                host: SchedHost {
                    rng: rand::random::<u64>() | 1,
                    now: 0,
                },
            }),
        }
    }

    /// Whether the service runs a plugin (and has not fallen back).
    pub fn runs_plugin(&self) -> bool {
        matches!(self.inner.lock().running, Running::Wasm(_))
    }

    /// Whether what runs now is consistent ([`wvs_sdk::sched_flags::CONSISTENT`]): the
    /// plugin's declaration, or the native scheduler's (a plugin that fell back to wlc is
    /// not). Read only for a flow the table does not know, off the common path.
    pub fn consistent(&self) -> bool {
        let g = self.inner.lock();
        let flags = match &g.running {
            Running::Native(_) => g.fallback.flags(),
            Running::Wasm(w) => w.flags(),
        };
        flags & wvs_sdk::sched_flags::CONSISTENT != 0
    }

    /// Tell the scheduler about the real servers now, as IPVS's `add_dest`/`del_dest`/
    /// `upd_dest` do when each command runs (the control side calls this once per change,
    /// so a scheduler whose state depends on the order of changes, like wrr's current
    /// weight, follows the same history as in IPVS).
    pub fn refresh(&self, dests: &[Arc<Dest>]) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if let Err(e) = inner.sync(dests, self.quorum_lost.load(Relaxed)) {
            inner.fall_back(&e, None);
        }
    }

    /// Say whether the service's quorum is lost (the health checker follows it); a
    /// change shows at the scheduler's next call.
    pub fn set_quorum_lost(&self, lost: bool) {
        self.quorum_lost.store(lost, Relaxed);
    }

    /// Whether the service's quorum is lost.
    pub fn quorum_lost(&self) -> bool {
        self.quorum_lost.load(Relaxed)
    }

    /// Pick a real server for a new connection. `conn.svc_flags` is filled in here.
    pub fn schedule<'a>(
        &self,
        dests: &'a [Arc<Dest>],
        conn: &mut ConnInfo,
        now: u64,
    ) -> Option<&'a Arc<Dest>> {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        conn.svc_flags = inner.flags;
        inner.host.now = now;
        let picked = inner
            .sync(dests, self.quorum_lost.load(Relaxed))
            .and_then(|()| match &mut inner.running {
                Running::Native(s) => Ok(s.schedule(conn, &inner.table, &mut inner.host)),
                Running::Wasm(w) => {
                    if let Some(rt) = &inner.stats {
                        rt.stats.calls.fetch_add(1, Relaxed);
                    }
                    w.schedule(conn, &inner.table, now).and_then(|i| {
                        // No IPVS scheduler picks a server that takes no new connection; a
                        // plugin that does is wrong, not the server.
                        let Some(d) = i.and_then(|i| inner.table.get(i)) else {
                            return Ok(i);
                        };
                        let why = if d.weight <= 0 {
                            "has weight 0"
                        } else if d.flags & wvs_sdk::dest_flags::OVERLOAD != 0 {
                            "is over its upper threshold"
                        } else {
                            return Ok(i);
                        };
                        Err(PluginError::Unavailable {
                            name: w.name().to_string(),
                            addr: inner
                                .map
                                .get(i.unwrap_or_default())
                                .and_then(|&k| dests.get(k))
                                .map_or_else(String::new, |d| {
                                    std::net::SocketAddr::new(d.addr, d.port).to_string()
                                }),
                            why,
                        })
                    })
                }
            });
        let i = match picked {
            Ok(i) => i,
            Err(e) => inner.fall_back(&e, Some(conn)),
        };
        dests.get(*inner.map.get(i?)?)
    }
}

impl Inner {
    /// Refresh the table from the live counters; what IPVS tells a scheduler through
    /// add_dest/del_dest/upd_dest (a server added, removed or reweighted) shows here as a
    /// change of identity or weight, and triggers `update`.
    fn sync(&mut self, dests: &[Arc<Dest>], quorum_lost: bool) -> Result<(), PluginError> {
        let mut changed = !self.updated;
        let mut n = 0;
        let has_sorry = dests.iter().any(|d| d.is_sorry());
        let sorry = has_sorry && (quorum_lost || Dest::sorry_in_use(dests));
        for (k, d) in dests.iter().enumerate() {
            // A server its health check took out is gone for the scheduler, as keepalived's
            // DELDEST makes it for IPVS's (its connections continue); a sorry server is
            // there only while no other can take a connection, or the quorum is lost, when
            // it is there alone (keepalived swaps the live servers for it).
            if !d.in_scheduling()
                || (d.is_sorry() && !sorry)
                || (!d.is_sorry() && sorry && quorum_lost)
            {
                continue;
            }
            let info = d.info();
            if n == self.table.len() {
                self.table.push(DestInfo::default());
                self.map.push(k);
                changed = true;
            }
            let t = &mut self.table[n];
            changed |= t.addr != info.addr
                || t.port != info.port
                || t.weight != info.weight
                || t.last_weight != info.last_weight;
            *t = info;
            self.map[n] = k;
            n += 1;
        }
        if n != self.table.len() {
            self.table.truncate(n);
            self.map.truncate(n);
            changed = true;
        }
        self.updated = true;
        if !changed {
            return Ok(());
        }
        match &mut self.running {
            Running::Native(s) => {
                s.update(&self.table, self.flags);
                Ok(())
            }
            Running::Wasm(w) => w.update(&self.table, self.flags),
        }
    }

    /// A plugin failed: counted, logged once (the service stops calling the plugin), and
    /// answered by the native fallback from now on, starting with `conn` if there is one.
    fn fall_back(&mut self, e: &PluginError, conn: Option<&ConnInfo>) -> Option<usize> {
        if let Some(rt) = &self.stats {
            let c = match e {
                PluginError::BadAnswer { .. } | PluginError::Unavailable { .. } => {
                    &rt.stats.invalid
                }
                PluginError::Slow { .. } => &rt.stats.slow,
                _ => &rt.stats.traps,
            };
            c.fetch_add(1, Relaxed);
            rt.stats.fallbacks.fetch_add(1, Relaxed);
        }
        tracing::error!(
            fallback = self.fallback.name(),
            "{e}; the service falls back until the plugin is replaced"
        );
        let mut native = self.fallback.instance();
        native.update(&self.table, self.flags);
        let i = conn.and_then(|c| native.schedule(c, &self.table, &mut self.host));
        self.running = Running::Native(native);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(weights: &[u32]) -> Vec<Arc<Dest>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let d = Arc::new(Dest::new(
                    format!("198.19.0.{}", 11 + i).parse().unwrap(),
                    80,
                ));
                d.set_weight(*w);
                d
            })
            .collect()
    }

    fn native(s: Scheduler) -> SchedState {
        SchedState::new(&SchedChoice::native(s), 0)
    }

    fn picks(st: &SchedState, d: &[Arc<Dest>], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let p = st.schedule(d, &mut ConnInfo::default(), 0).unwrap();
                d.iter().position(|x| Arc::ptr_eq(x, p)).unwrap()
            })
            .collect()
    }

    /// What the kernel's wrr did in the oracle (tests/oracle, `sched`): a service built by
    /// `-A` then `-a` rs1 (weight 3), rs2 (2), rs3 (1) serves rs3 rs2 rs1 rs1 rs2 rs1, because
    /// the current weight left by the first `-a` is 1. Built from a configuration in one
    /// step, the snapshot replays that history; a new scheduler on a running service starts
    /// from the largest weight (`ip_vs_bind_scheduler`).
    #[test]
    fn wrr_follows_the_history_of_changes_as_ipvs() {
        use crate::spec::{Real, Service};
        let mut svc: Service = Service::new(
            crate::model::Protocol::Tcp,
            [198, 18, 100, 1].into(),
            80,
            "wrr",
        );
        for (last, weight) in [(11, 3), (12, 2), (13, 1)] {
            svc.reals.push(Real {
                weight,
                ..Real::new([198, 19, 0, last].into(), 80)
            });
        }
        let order = |snap: &crate::service::Snapshot| -> Vec<u8> {
            let svc = snap.services().next().unwrap();
            (0..6)
                .map(|_| {
                    let d = svc.schedule(&mut ConnInfo::default(), 0).unwrap();
                    match d.addr {
                        std::net::IpAddr::V4(a) => a.octets()[3] - 10,
                        std::net::IpAddr::V6(_) => 0,
                    }
                })
                .collect()
        };
        let built = crate::service::Snapshot::build_native(&[svc], &Default::default());
        assert_eq!(order(&built), [3, 2, 1, 1, 2, 1]);

        let st = native(Scheduler::Wrr);
        let d = dests(&[1, 2, 3]);
        st.refresh(&d);
        assert_eq!(picks(&st, &d, 6), [2, 1, 2, 0, 1, 2], "init_svc: cw = mw");
    }

    proptest::proptest! {
        /// Whatever the weights, counters and flags: no scheduler gives a new connection to
        /// a quiesced (weight 0) or overloaded server.
        #[test]
        fn never_quiesced_nor_overloaded(
            spec in proptest::collection::vec((0u32..4, 0i32..5, 0i32..300, proptest::bool::ANY), 1..6),
            picks in 1usize..20,
        ) {
            let d: Vec<Arc<Dest>> = spec
                .iter()
                .enumerate()
                .map(|(i, &(w, act, inact, over))| {
                    let d = Arc::new(Dest::new(format!("198.19.0.{}", 11 + i).parse().unwrap(), 80));
                    d.set_weight(w);
                    d.activeconns.store(act, std::sync::atomic::Ordering::Relaxed);
                    d.inactconns.store(inact, std::sync::atomic::Ordering::Relaxed);
                    if over {
                        d.set_thresholds(1, 0);
                        d.bind();
                    }
                    d
                })
                .collect();
            let eligible = d.iter().any(|x| x.schedulable());
            for s in Scheduler::ALL {
                let st = native(*s);
                for p in 0..picks {
                    let mut c = ConnInfo { sport: p as u16, ..Default::default() };
                    match st.schedule(&d, &mut c, 0) {
                        Some(x) => proptest::prop_assert!(x.schedulable(), "{} chose a quiesced or overloaded server", s.name()),
                        // The hashing schedulers refuse when the hashed server cannot take
                        // it (without their fallback flag), and ovf when all are full.
                        None => proptest::prop_assert!(
                            !eligible || matches!(s, Scheduler::Sh | Scheduler::Dh | Scheduler::Mh | Scheduler::Ovf),
                            "{} found none among eligible servers", s.name()
                        ),
                    }
                }
            }
            if !eligible {
                for s in Scheduler::ALL {
                    proptest::prop_assert!(native(*s).schedule(&d, &mut ConnInfo::default(), 0).is_none(), "{}", s.name());
                }
            }
        }
    }

    #[test]
    fn every_ipvs_name_parses() {
        for n in [
            "rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "sh", "dh",
        ] {
            assert_eq!(Scheduler::from_name(n).map(Scheduler::name), Some(n));
        }
        assert_eq!(Scheduler::from_name("nope"), None);
    }

    #[test]
    fn rr_rotates_and_skips_quiesced() {
        let d = dests(&[1, 1, 1]);
        let st = native(Scheduler::Rr);
        assert_eq!(picks(&st, &d, 4), [0, 1, 2, 0]);
        d[2].set_weight(0);
        assert_eq!(picks(&st, &d, 3), [1, 0, 1]);
    }

    #[test]
    fn wrr_follows_weight_changes() {
        let d = dests(&[3, 2, 1]);
        let st = native(Scheduler::Wrr);
        let p = picks(&st, &d, 60);
        let count = |i| p.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2)), (30, 20, 10));
        d[0].set_weight(0);
        assert!(
            !picks(&st, &d, 30).contains(&0),
            "a quiesced server gets nothing"
        );
    }
}
