//! Scheduling a new connection: the service's scheduler, its state, and the table of real
//! servers it reads.
//!
//! The schedulers are the plugin crates of `plugins/` (IPVS's rules, written against
//! `wvs-sdk`), linked in natively until the WebAssembly runtime runs them as plugins; the
//! calling convention is already the plugin one. Each service owns one [`SchedState`]: the
//! scheduler instance and a [`DestInfo`] table refreshed from the live counters at each call,
//! under one lock that is IPVS's per-service `sched_lock`. It is taken once per new
//! connection, never per packet and never across services, and it makes rotations exact
//! whichever worker sees the connection.

use std::sync::Arc;

use parking_lot::Mutex;
use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler as _};

use super::Dest;

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

            fn instance(self) -> Instance {
                match self { $(Scheduler::$variant => Instance::$variant(<$ty>::default()),)* }
            }
        }

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
}

impl Scheduler {
    /// Parse an IPVS scheduler name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }
}

/// A service's scheduler instance and its view of the real servers.
pub struct SchedState {
    inner: Mutex<Inner>,
}

struct Inner {
    instance: Instance,
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

/// What the host offers schedulers: random numbers (xorshift seeded at start) and the clock.
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
    /// A fresh instance of `scheduler` for a service with these flags.
    pub fn new(scheduler: Scheduler, flags: u32) -> Self {
        Self {
            inner: Mutex::new(Inner {
                instance: scheduler.instance(),
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
            changed |= t.addr != info.addr || t.port != info.port || t.weight != info.weight;
            *t = info;
        }
        if changed {
            inner.instance.update(&inner.table, inner.flags);
            inner.updated = true;
        }
        inner.host.now = now;
        let i = inner
            .instance
            .schedule(conn, &inner.table, &mut inner.host)?;
        dests.get(i)
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

    fn picks(st: &SchedState, d: &[Arc<Dest>], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let p = st.schedule(d, &mut ConnInfo::default(), 0).unwrap();
                d.iter().position(|x| Arc::ptr_eq(x, p)).unwrap()
            })
            .collect()
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
        let st = SchedState::new(Scheduler::Rr, 0);
        assert_eq!(picks(&st, &d, 4), [0, 1, 2, 0]);
        d[2].set_weight(0);
        assert_eq!(picks(&st, &d, 3), [1, 0, 1]);
    }

    #[test]
    fn wrr_follows_weight_changes() {
        let d = dests(&[3, 2, 1]);
        let st = SchedState::new(Scheduler::Wrr, 0);
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
