//! Traffic counters and IPVS's rate estimator.
//!
//! Counters (connections, packets and bytes in and out) are kept per worker, as IPVS keeps
//! them per CPU: each worker writes only its own slot, with plain loads and stores on its own
//! cache line, and readers sum the slots. Every service and real server has a set, and so has
//! the whole balancer; they outlive configuration edits (the next snapshot takes them over).
//!
//! [`Estimator`] is `ip_vs_est.c`: every 2 seconds, the increase of each counter becomes a
//! rate (scaled by 2^10 for connections and packets, 2^5 for bytes), smoothed with an
//! exponentially weighted moving average of weight 1/4.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use std::sync::Arc;

use crate::consts::STAT_SLOTS;

/// Add one to a counter that only the calling thread writes: a plain load and store, no
/// locked instruction, as IPVS's per-CPU counters.
#[inline]
pub fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

/// One worker's counters.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counters {
    conns: AtomicU64,
    inpkts: AtomicU64,
    outpkts: AtomicU64,
    inbytes: AtomicU64,
    outbytes: AtomicU64,
}

/// Add `n` to a counter only its worker writes.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Counters {
    /// Count a new connection.
    #[inline]
    pub fn conn(&self) {
        bump(&self.conns);
    }

    /// Count a packet from the client side of `len` bytes (IP length).
    #[inline]
    pub(crate) fn packet_in(&self, len: usize) {
        bump(&self.inpkts);
        add(&self.inbytes, len as u64);
    }

    /// Count a packet from the real-server side.
    #[inline]
    pub(crate) fn packet_out(&self, len: usize) {
        bump(&self.outpkts);
        add(&self.outbytes, len as u64);
    }

    /// Count `n` packets of `bytes` in all from the client side, carried elsewhere (the
    /// offload program) and merged here.
    pub(crate) fn packets_in(&self, n: u64, bytes: u64) {
        add(&self.inpkts, n);
        add(&self.inbytes, bytes);
    }

    /// Count `n` packets of `bytes` in all from the real-server side, carried elsewhere.
    pub(crate) fn packets_out(&self, n: u64, bytes: u64) {
        add(&self.outpkts, n);
        add(&self.outbytes, bytes);
    }
}

/// Summed counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Self) {
        self.conns += o.conns;
        self.inpkts += o.inpkts;
        self.outpkts += o.outpkts;
        self.inbytes += o.inbytes;
        self.outbytes += o.outbytes;
    }
}

/// The balancer's totals, summed from its services rather than counted a third time per
/// packet: the services of the current snapshot, the removed ones that connections still
/// count on, and what the removed ones counted before they went.
#[derive(Debug, Default)]
pub struct BalancerTotals {
    removed: Vec<Arc<Stats>>,
    gone: Totals,
    est: Estimator,
}

impl BalancerTotals {
    /// Keep the counters of the services of `old` (their stats) that `next` no longer has.
    pub fn retire<'a>(
        &mut self,
        old: impl IntoIterator<Item = &'a Arc<Stats>>,
        next: impl IntoIterator<Item = &'a Arc<Stats>>,
    ) {
        let next: Vec<&Arc<Stats>> = next.into_iter().collect();
        for s in old {
            if !next.iter().any(|n| Arc::ptr_eq(n, s)) {
                self.removed.push(s.clone());
            }
        }
    }

    /// Sum everything counted so far; `live` are the current services' stats.
    pub fn totals<'a>(&mut self, live: impl IntoIterator<Item = &'a Arc<Stats>>) -> Totals {
        let gone = &mut self.gone;
        self.removed.retain(|s| {
            // No connection holds it any more: it will not count again.
            if Arc::strong_count(s) == 1 {
                *gone += s.totals();
                false
            } else {
                true
            }
        });
        let mut t = self.gone;
        for s in &self.removed {
            t += s.totals();
        }
        for s in live {
            t += s.totals();
        }
        t
    }

    /// Zero the balancer's counters and rates with its services' (`live`, whose real servers
    /// the caller zeroes): `ipvsadm -Z` without a service.
    pub fn zero<'a>(&mut self, live: impl IntoIterator<Item = &'a Arc<Stats>>) {
        for s in live {
            s.zero();
        }
        for s in &self.removed {
            s.zero();
        }
        self.gone = Totals::default();
        self.est = Estimator::default();
    }

    /// Take a 2-second estimator sample of the totals.
    pub fn sample<'a>(&mut self, live: impl IntoIterator<Item = &'a Arc<Stats>>) {
        let t = self.totals(live);
        self.est.sample(t);
    }

    /// The estimated rates.
    pub fn rates(&self) -> Rates {
        self.est.rates()
    }
}

/// Rates, as `ipvsadm --rate` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

/// `struct ip_vs_estimator`: the last totals and the smoothed, scaled rates.
#[derive(Debug, Default, Clone)]
pub(crate) struct Estimator {
    last: Totals,
    cps: i64,
    inpps: i64,
    outpps: i64,
    inbps: i64,
    outbps: i64,
}

impl Estimator {
    /// Take one 2-second sample (`estimation_timer`).
    pub fn sample(&mut self, t: Totals) {
        fn ewma(avg: &mut i64, rate: u64) {
            *avg += (rate as i64 - *avg) >> 2;
        }
        let d = |now: u64, last: u64| now.wrapping_sub(last);
        ewma(&mut self.cps, d(t.conns, self.last.conns) << 9);
        ewma(&mut self.inpps, d(t.inpkts, self.last.inpkts) << 9);
        ewma(&mut self.outpps, d(t.outpkts, self.last.outpkts) << 9);
        ewma(&mut self.inbps, d(t.inbytes, self.last.inbytes) << 4);
        ewma(&mut self.outbps, d(t.outbytes, self.last.outbytes) << 4);
        self.last = t;
    }

    /// Read the rates out (`ip_vs_read_estimator`).
    pub fn rates(&self) -> Rates {
        let pps = |v: i64| (v.max(0) as u64 + 0x1FF) >> 10;
        let bps = |v: i64| (v.max(0) as u64 + 0xF) >> 5;
        Rates {
            cps: pps(self.cps),
            inpps: pps(self.inpps),
            outpps: pps(self.outpps),
            inbps: bps(self.inbps),
            outbps: bps(self.outbps),
        }
    }
}

/// The counters of one service, real server or of the whole balancer: a slot per worker and
/// the estimator the control loop updates.
#[derive(Debug)]
pub struct Stats {
    slots: Box<[Counters]>,
    est: Mutex<Estimator>,
    /// What was counted when the counters were last zeroed (`ipvsadm -Z`): IPVS keeps such
    /// a base too (`kstats0`), so that zeroing never races the workers' counting.
    base: Mutex<Totals>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            slots: (0..STAT_SLOTS).map(|_| Counters::default()).collect(),
            est: Mutex::new(Estimator::default()),
            base: Mutex::new(Totals::default()),
        }
    }
}

impl Stats {
    /// The counters of worker `w` (workers beyond `MAX_WORKERS` share the last slot's
    /// cache line but still count correctly only if single-writer; the daemon refuses more).
    #[inline]
    pub fn worker(&self, w: usize) -> &Counters {
        &self.slots[w.min(STAT_SLOTS - 1)]
    }

    /// Sum the workers' counters, since they were last zeroed.
    pub fn totals(&self) -> Totals {
        let raw = self.raw();
        let b = *self.base.lock();
        Totals {
            conns: raw.conns.saturating_sub(b.conns),
            inpkts: raw.inpkts.saturating_sub(b.inpkts),
            outpkts: raw.outpkts.saturating_sub(b.outpkts),
            inbytes: raw.inbytes.saturating_sub(b.inbytes),
            outbytes: raw.outbytes.saturating_sub(b.outbytes),
        }
    }

    fn raw(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.slots.iter() {
            t.conns += s.conns.load(Relaxed);
            t.inpkts += s.inpkts.load(Relaxed);
            t.outpkts += s.outpkts.load(Relaxed);
            t.inbytes += s.inbytes.load(Relaxed);
            t.outbytes += s.outbytes.load(Relaxed);
        }
        t
    }

    /// Zero the counters and the rates (`ip_vs_zero_stats`).
    pub fn zero(&self) {
        *self.base.lock() = self.raw();
        *self.est.lock() = Estimator::default();
    }

    /// Take a 2-second sample for the estimator.
    pub fn sample(&self) {
        let t = self.totals();
        self.est.lock().sample(t);
    }

    /// The estimated rates.
    pub fn rates(&self) -> Rates {
        self.est.lock().rates()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroing_starts_the_counts_and_rates_again() {
        let s = Arc::new(Stats::default());
        s.worker(0).conn();
        s.worker(1).packet_in(100);
        s.sample();
        assert_eq!(s.totals().conns, 1);
        let mut b = BalancerTotals::default();
        b.zero([&s]);
        assert_eq!(s.totals(), Totals::default());
        assert_eq!(s.rates(), Rates::default());
        assert_eq!(b.totals([&s]), Totals::default());
        s.worker(0).packet_in(60);
        assert_eq!((s.totals().inpkts, s.totals().inbytes), (1, 60));
        assert_eq!(b.totals([&s]).inbytes, 60);
    }

    #[test]
    fn steady_rate_converges_to_the_true_rate() {
        // 1000 connections and 2 MB per second, sampled every 2 s; after 80 samples the
        // EWMA's remaining error, (3/4)^80, is below rounding.
        let mut e = Estimator::default();
        let mut t = Totals::default();
        let mut seen = Vec::new();
        for _ in 0..80 {
            t.conns += 2000;
            t.inpkts += 20_000;
            t.inbytes += 4_000_000;
            e.sample(t);
            seen.push(e.rates().cps);
        }
        let r = e.rates();
        assert_eq!(r.cps, 1000);
        assert_eq!(r.inpps, 10_000);
        assert_eq!(r.inbps, 2_000_000);
        assert_eq!(r.outpps, 0);
        // W = 1/4: a quarter of the way after the first sample, ~8 s to get close.
        assert_eq!(seen[0], 250);
        assert!(seen[3] > 650 && seen[3] < 700, "{seen:?}");
    }

    #[test]
    fn rates_decay_when_traffic_stops() {
        let mut e = Estimator::default();
        let mut t = Totals::default();
        for _ in 0..30 {
            t.conns += 200;
            e.sample(t);
        }
        assert_eq!(e.rates().cps, 100);
        for _ in 0..40 {
            e.sample(t);
        }
        assert_eq!(e.rates().cps, 0);
    }

    #[test]
    fn workers_sum() {
        let s = Stats::default();
        s.worker(0).conn();
        s.worker(1).conn();
        s.worker(1).packet_in(100);
        s.worker(3).packet_out(1500);
        let t = s.totals();
        assert_eq!(
            (t.conns, t.inpkts, t.inbytes, t.outpkts, t.outbytes),
            (2, 1, 100, 1, 1500)
        );
    }
}
