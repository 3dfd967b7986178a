//! The built-in scheduler that runs until the WebAssembly schedulers of the plugin runtime
//! take over: round robin, exactly as `ip_vs_rr.c`.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Dest;

/// Which scheduler a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduler {
    /// Round robin (`ip_vs_rr_schedule`).
    #[default]
    Rr,
}

impl Scheduler {
    /// Parse an IPVS scheduler name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rr" => Some(Self::Rr),
            _ => None,
        }
    }

    /// Return the IPVS name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
        }
    }

    /// Pick a real server for a new connection.
    pub fn schedule<'a>(self, state: &SchedState, dests: &'a [Arc<Dest>]) -> Option<&'a Arc<Dest>> {
        match self {
            Self::Rr => rr(state, dests),
        }
    }
}

/// Per-service scheduler state. The lock is IPVS's per-service `sched_lock`: it is taken once
/// per new connection, never per packet, and never across services. It makes the rotation
/// exact whichever worker sees the connection.
#[derive(Debug, Default)]
pub struct SchedState {
    /// Index at which the next round-robin scan starts.
    cursor: Mutex<usize>,
}

/// `ip_vs_rr_schedule`: starting after the last chosen server, the first one with weight > 0
/// that is not overloaded.
fn rr<'a>(state: &SchedState, dests: &'a [Arc<Dest>]) -> Option<&'a Arc<Dest>> {
    let n = dests.len();
    if n == 0 {
        return None;
    }
    let mut cursor = state.cursor.lock();
    for k in 0..n {
        let i = (*cursor + k) % n;
        if dests[i].schedulable() {
            *cursor = (i + 1) % n;
            return Some(&dests[i]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(n: usize) -> Vec<Arc<Dest>> {
        (0..n)
            .map(|i| {
                Arc::new(Dest::new(
                    format!("198.19.0.{}", 11 + i).parse().unwrap(),
                    80,
                ))
            })
            .collect()
    }

    #[test]
    fn rr_rotates_and_skips_quiesced() {
        let d = dests(3);
        let st = SchedState::default();
        let pick = |st: &SchedState| {
            let p = Scheduler::Rr.schedule(st, &d).unwrap();
            d.iter().position(|x| Arc::ptr_eq(x, p)).unwrap()
        };
        assert_eq!([pick(&st), pick(&st), pick(&st), pick(&st)], [0, 1, 2, 0]);
        d[2].set_weight(0);
        assert_eq!([pick(&st), pick(&st), pick(&st)], [1, 0, 1]);
        for x in &d {
            x.set_weight(0);
        }
        assert!(Scheduler::Rr.schedule(&st, &d).is_none());
        assert!(Scheduler::Rr.schedule(&st, &[]).is_none());
    }
}
