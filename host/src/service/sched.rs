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
use crate::plugin::{Plugin, PluginError, Runtime, WasmScheduler};

macro_rules! schedulers {
    ($( $variant:ident => $ty:path, )*) => {
        /// Which scheduler a service uses.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Scheduler { $( #[doc = concat!("`", stringify!($ty), "`.")] $variant, )* }

        impl Scheduler {
            /// Every scheduler.
            pub const ALL: &'static [Scheduler] = &[$(Scheduler::$variant,)*];

            /// Return the IPVS name (`ipvsadm -s NAME`).
            pub fn name(self) -> &'static str {
                match self { $(Scheduler::$variant => <$ty as wvs_sdk::Scheduler>::NAME,)* }
            }

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

schedulers! {
    Rr => wvs_sched_rr::Rr,
    Wrr => wvs_sched_wrr::Wrr,
    Lc => wvs_sched_lc::Lc,
    Wlc => wvs_sched_wlc::Wlc,
    Sed => wvs_sched_sed::Sed,
    Nq => wvs_sched_nq::Nq,
    Fo => wvs_sched_fo::Fo,
    Ovf => wvs_sched_ovf::Ovf,
    Twos => wvs_sched_twos::Twos,
    Sh => wvs_sched_sh::Sh,
    Dh => wvs_sched_dh::Dh,
    Mh => wvs_sched_mh::Mh,
    Lblc => wvs_sched_lblc::Lblc,
    Lblcr => wvs_sched_lblcr::Lblcr,
}

impl Scheduler {
    /// Parse an IPVS scheduler name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }
}

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
}

struct Inner {
    running: Running,
    fallback: Scheduler,
    stats: Option<Arc<Runtime>>,
    table: Vec<DestInfo>,
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
            inner: Mutex::new(Inner {
                running,
                fallback: choice.fallback,
                stats: choice.plugin.as_ref().map(|p| p.runtime().clone()),
                table: Vec::new(),
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
        // Refresh the table from the live counters; what IPVS tells a scheduler through
        // add_dest/del_dest/upd_dest (a server added, removed or reweighted) shows here as a
        // change of identity or weight, and triggers `update`.
        let mut changed = !inner.updated || inner.table.len() != dests.len();
        inner.table.resize(dests.len(), DestInfo::default());
        for (t, d) in inner.table.iter_mut().zip(dests) {
            let info = d.info();
            changed |= t.addr != info.addr
                || t.port != info.port
                || t.weight != info.weight
                || t.last_weight != info.last_weight;
            *t = info;
        }
        inner.host.now = now;
        let picked = match &mut inner.running {
            Running::Native(s) => {
                if changed {
                    s.update(&inner.table, inner.flags);
                }
                Ok(s.schedule(conn, &inner.table, &mut inner.host))
            }
            Running::Wasm(w) => {
                let r = if changed {
                    w.update(&inner.table, inner.flags)
                } else {
                    Ok(())
                };
                let r = r.and_then(|()| w.schedule(conn, &inner.table, now));
                if let Some(rt) = &inner.stats {
                    rt.stats.calls.fetch_add(1, Relaxed);
                }
                r
            }
        };
        inner.updated = true;
        let i = match picked {
            Ok(i) => i,
            Err(e) => {
                // Counted, logged once (the service stops calling the plugin), and answered
                // by the native fallback from now on, starting with this connection.
                if let Some(rt) = &inner.stats {
                    let c = match e {
                        PluginError::BadAnswer { .. } => &rt.stats.invalid,
                        _ => &rt.stats.traps,
                    };
                    c.fetch_add(1, Relaxed);
                    rt.stats.fallbacks.fetch_add(1, Relaxed);
                }
                tracing::error!(
                    fallback = inner.fallback.name(),
                    "{e}; the service falls back until the plugin is replaced"
                );
                let mut native = inner.fallback.instance();
                native.update(&inner.table, inner.flags);
                let i = native.schedule(conn, &inner.table, &mut inner.host);
                inner.running = Running::Native(native);
                i
            }
        };
        dests.get(i?)
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
