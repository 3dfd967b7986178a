//! IPVS's defense strategies (`update_defense_level`, `ip_vs_todrop`,
//! `ip_vs_random_dropentry`), triggered by how full the connection table is.
//!
//! IPVS turns its automatic strategies on when free memory falls under `amemthresh`
//! pages; a user-space table has a bound of its own, which is what a flood fills first. So
//! "short of memory" here is: the table holds more than `threshold` percent of
//! `max_conns` (or the host's available memory is under `amemthresh` pages, as IPVS).
//! Each strategy has IPVS's modes: 0 off, 1 automatic and now off, 2 automatic and now on,
//! 3 always on; the automatic ones flip between 1 and 2 as IPVS flips its sysctls.
//!
//! - `drop_entry`: once a second, a random 1/32 of the table is scanned and half-open
//!   entries, and young ones with few packets, are expired (`ip_vs_random_dropentry`).
//! - `drop_packet`: one packet in `rate` that would create a connection is dropped before
//!   the scheduler is called; `rate` is `thresh / (thresh - free)` (1 drops them all), or
//!   `am_droprate` in mode 3.
//! - `secure_tcp`: the TCP state table becomes `tcp_states_dos`: a NAT connection is
//!   ESTABLISHED only once the real server answered, so spoofed ACKs make no 15-minute
//!   entries.
//!
//! - `synproxy` (wvs's, as DPVS's and the kernel's `tcp_syncookies = 1`): new TCP
//!   connections of the services that follow it are answered with SYN cookies, so a SYN
//!   flood makes no entries at all (`crate::synproxy`).
//!
//! The control values are atomics the workers read; the per-second update runs on the
//! expiry thread.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

pub use crate::spec::DefenseSettings;

/// What the strategies do now, as `update_defense_level` leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    /// The modes after the automatic flips (1 and 2).
    pub modes: [u8; 3],
    /// Scan for entries to drop.
    pub drop_entry: bool,
    /// Drop one new connection in this many; 0: none.
    pub drop_rate: u32,
    /// Use `tcp_states_dos`.
    pub secure_tcp: bool,
}

/// `update_defense_level`: the strategies for settings `s` whose modes are now `modes`
/// (IPVS's sysctls, which the automatic modes flip), with `free` of `thresh` units left
/// (entries, or pages): short when `free < thresh`.
pub fn level(s: &DefenseSettings, modes: [u8; 3], free: u64, thresh: u64) -> Level {
    let nomem = free < thresh;
    let [mut de, mut dp, mut st] = modes;
    let drop_entry = match de {
        0 => false,
        1 if nomem => {
            de = 2;
            true
        }
        1 => false,
        2 if nomem => true,
        2 => {
            de = 1;
            false
        }
        _ => true,
    };
    // amemthresh / (amemthresh - availmem): 1 when nothing is left, large near the bound.
    let rate =
        || (thresh / thresh.saturating_sub(free).max(1)).clamp(1, u64::from(u32::MAX)) as u32;
    let drop_rate = match dp {
        0 => 0,
        1 if nomem => {
            dp = 2;
            rate()
        }
        1 => 0,
        2 if nomem => rate(),
        2 => {
            dp = 1;
            0
        }
        _ => s.am_droprate,
    };
    let secure_tcp = match st {
        0 => false,
        1 if nomem => {
            st = 2;
            true
        }
        1 => false,
        2 if nomem => true,
        2 => {
            st = 1;
            false
        }
        _ => true,
    };
    Level {
        modes: [de, dp, st],
        drop_entry,
        drop_rate,
        secure_tcp,
    }
}

/// An automatic mode's flip (`update_defense_level`'s for each strategy): the mode after it
/// and whether the strategy acts, short of room or not.
fn flip(mode: u8, nomem: bool) -> (u8, bool) {
    match mode {
        0 => (0, false),
        1 | 2 if nomem => (2, true),
        1 | 2 => (1, false),
        _ => (mode, true),
    }
}

/// The live defense state: read by the workers, updated once a second.
#[derive(Debug)]
pub struct Defense {
    settings: parking_lot::Mutex<DefenseSettings>,
    modes: [AtomicU8; 3],
    /// The synproxy's mode, 0-3, and whether it acts now.
    synproxy_mode: AtomicU8,
    synproxy: AtomicBool,
    /// The trigger: the table (or memory) is short.
    short: AtomicBool,
    /// The key of the SYN cookies.
    secret: crate::synproxy::Secret,
    drop_entry: AtomicBool,
    drop_rate: AtomicU32,
    secure_tcp: AtomicBool,
    /// Half-open entries a full shard evicted to take a new connection.
    pub evicted: AtomicU64,
    /// Entries `drop_entry` expired.
    pub dropped_entries: AtomicU64,
    /// New connections `drop_packet` dropped.
    pub dropped_packets: AtomicU64,
    /// Times the automatic strategies engaged.
    pub engaged: AtomicU64,
}

impl Default for Defense {
    fn default() -> Self {
        let d = Self {
            settings: parking_lot::Mutex::new(DefenseSettings::default()),
            modes: Default::default(),
            synproxy_mode: AtomicU8::new(0),
            synproxy: AtomicBool::new(false),
            short: AtomicBool::new(false),
            secret: crate::synproxy::Secret::random(),
            drop_entry: AtomicBool::new(false),
            drop_rate: AtomicU32::new(0),
            secure_tcp: AtomicBool::new(false),
            evicted: AtomicU64::new(0),
            dropped_entries: AtomicU64::new(0),
            dropped_packets: AtomicU64::new(0),
            engaged: AtomicU64::new(0),
        };
        d.configure(DefenseSettings::default());
        d
    }
}

/// The defense state now, as the API shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// The modes now (an automatic one reads 2 while it acts).
    pub drop_entry: u8,
    /// See `drop_entry`.
    pub drop_packet: u8,
    /// See `drop_entry`.
    pub secure_tcp: u8,
    /// One new connection in this many is dropped; 0: none.
    pub drop_rate: u32,
    /// The synproxy's mode now (reads 2 while the automatic one acts).
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

impl Defense {
    /// Take new settings: their modes replace the current ones (as writing the sysctls).
    pub fn configure(&self, s: DefenseSettings) {
        *self.settings.lock() = s;
        for (m, v) in self
            .modes
            .iter()
            .zip([s.drop_entry, s.drop_packet, s.secure_tcp])
        {
            m.store(v, Relaxed);
        }
        self.synproxy_mode.store(s.synproxy, Relaxed);
        // Mode 3 acts at once; the automatic ones wait for the next update.
        self.apply(level(&s, self.modes(), 1, 0));
        self.synproxy.store(flip(s.synproxy, false).1, Relaxed);
    }

    fn modes(&self) -> [u8; 3] {
        [0, 1, 2].map(|i| self.modes[i].load(Relaxed))
    }

    fn apply(&self, l: Level) {
        for (m, v) in self.modes.iter().zip(l.modes) {
            m.store(v, Relaxed);
        }
        self.drop_entry.store(l.drop_entry, Relaxed);
        self.drop_rate.store(l.drop_rate, Relaxed);
        self.secure_tcp.store(l.secure_tcp, Relaxed);
    }

    /// The once-a-second update: `len` of `max` entries used, `avail_pages` of memory
    /// available (None: unknown).
    pub fn update(&self, len: usize, max: usize, avail_pages: Option<u64>) -> Level {
        let s = *self.settings.lock();
        let max = max.max(1) as u64;
        // The table's share: short when more than `threshold` % is used.
        let thresh = max * u64::from(100 - s.threshold.min(100)) / 100;
        let (mut free, mut bound) = (max.saturating_sub(len as u64), thresh.max(1));
        // Memory, as IPVS: whichever is the shorter relative to its bound.
        if let Some(avail) = avail_pages
            && avail < u64::from(s.amemthresh)
            && avail * bound < free * u64::from(s.amemthresh)
        {
            (free, bound) = (avail, u64::from(s.amemthresh));
        }
        let was = self.active();
        let l = level(&s, self.modes(), free, bound);
        self.apply(l);
        self.short.store(free < bound, Relaxed);
        let sp_was = self.synproxy();
        let (mode, sp) = flip(self.synproxy_mode.load(Relaxed), free < bound);
        self.synproxy_mode.store(mode, Relaxed);
        self.synproxy.store(sp, Relaxed);
        if sp && !sp_was && mode == 2 {
            tracing::warn!(
                used = len,
                max,
                "the connection table is filling up: new TCP connections are answered with SYN cookies"
            );
        } else if sp_was && !sp {
            tracing::info!(used = len, max, "SYN cookies off");
        }
        if !was && self.active() {
            self.engaged.fetch_add(1, Relaxed);
            tracing::warn!(
                used = len,
                max,
                drop_entry = l.drop_entry,
                drop_rate = l.drop_rate,
                secure_tcp = l.secure_tcp,
                "the connection table is filling up: defense strategies on"
            );
        } else if was && !self.active() {
            tracing::info!(used = len, max, "defense strategies off");
        }
        l
    }

    /// Whether any strategy acts now.
    pub fn active(&self) -> bool {
        self.drop_entry.load(Relaxed)
            || self.drop_rate.load(Relaxed) != 0
            || self.secure_tcp.load(Relaxed)
    }

    /// Whether the services that follow the setting answer new TCP connections with SYN
    /// cookies now.
    #[inline]
    pub fn synproxy(&self) -> bool {
        self.synproxy.load(Relaxed)
    }

    /// Whether `svc` answers a new connection's SYN with a cookie now: its own mode, or
    /// this setting's; never for a service with a server whose replies bypass wvs (their
    /// sequence numbers could not be shifted).
    pub fn synproxy_for(&self, svc: &crate::service::VirtualService) -> bool {
        use crate::spec::SynproxyMode;
        svc.synproxy_capable
            && match svc.spec.synproxy {
                Some(SynproxyMode::On) => true,
                Some(SynproxyMode::Off) => false,
                Some(SynproxyMode::Auto) => self.short(),
                None => self.synproxy(),
            }
    }

    /// The synproxy's mode now (0-3).
    #[inline]
    pub fn synproxy_mode(&self) -> u8 {
        self.synproxy_mode.load(Relaxed)
    }

    /// Whether the table (or memory) is short: the automatic strategies' trigger.
    #[inline]
    pub fn short(&self) -> bool {
        self.short.load(Relaxed)
    }

    /// The key of the SYN cookies.
    #[inline]
    pub fn secret(&self) -> &crate::synproxy::Secret {
        &self.secret
    }

    /// Whether `drop_entry` scans now.
    #[inline]
    pub fn drop_entry(&self) -> bool {
        self.drop_entry.load(Relaxed)
    }

    /// Whether TCP follows `tcp_states_dos`.
    #[inline]
    pub fn secure_tcp(&self) -> bool {
        self.secure_tcp.load(Relaxed)
    }

    /// `ip_vs_todrop`: whether to drop this new connection. `counter` is the worker's own
    /// countdown (IPVS's `drop_counter`), so that no atomic is written per packet.
    #[inline]
    pub(crate) fn todrop(&self, counter: &std::cell::Cell<u32>) -> bool {
        let rate = self.drop_rate.load(Relaxed);
        if rate == 0 {
            return false;
        }
        let c = counter.get();
        if c > 1 && c <= rate {
            counter.set(c - 1);
            return false;
        }
        counter.set(rate);
        self.dropped_packets.fetch_add(1, Relaxed);
        true
    }

    /// The state for the API.
    pub fn status(&self) -> Status {
        let [drop_entry, drop_packet, secure_tcp] = self.modes();
        Status {
            drop_entry,
            drop_packet,
            secure_tcp,
            drop_rate: self.drop_rate.load(Relaxed),
            synproxy: self.synproxy_mode.load(Relaxed),
            active: self.active(),
            evicted: self.evicted.load(Relaxed),
            dropped_entries: self.dropped_entries.load(Relaxed),
            dropped_packets: self.dropped_packets.load(Relaxed),
            engaged: self.engaged.load(Relaxed),
        }
    }
}

/// `todrop_entry`'s rule for an entry with `in_pkts` packets from the client: none of 0 or
/// more than 8; of those with `i` packets, every `i`-th candidate (`counters[i]` counts
/// down), so entries with few packets go first.
pub(crate) fn todrop_entry(in_pkts: u32, counters: &mut [u8; 9]) -> bool {
    let i = in_pkts as usize;
    if !(1..=8).contains(&i) {
        return false;
    }
    if counters[i] > 1 {
        counters[i] -= 1;
        return false;
    }
    counters[i] = i as u8;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn automatic_modes_flip_as_ipvs_flips_its_sysctls() {
        // Plenty left: off, modes stay 1.
        let l = level(&S, [1, 1, 1], 2000, 1024);
        assert_eq!(
            l,
            Level {
                modes: [1, 1, 1],
                ..Level::default()
            }
        );
        // Short: on, modes read 2; the rate is amemthresh / (amemthresh - availmem).
        let l = level(&S, [1, 1, 1], 768, 1024);
        assert_eq!(
            l,
            Level {
                modes: [2, 2, 2],
                drop_entry: true,
                drop_rate: 4,
                secure_tcp: true
            }
        );
        // Still short: on; nothing left: drop every new connection.
        assert_eq!(level(&S, [2, 2, 2], 0, 1024).drop_rate, 1);
        // Recovered: off, back to 1.
        let l = level(&S, [2, 2, 2], 1024, 1024);
        assert_eq!(
            l,
            Level {
                modes: [1, 1, 1],
                ..Level::default()
            }
        );
        // 0 never acts; 3 always, drop_packet at am_droprate.
        assert_eq!(level(&S, [0, 0, 0], 0, 1024), Level::default());
        assert_eq!(
            level(&S, [3, 3, 3], 5000, 1024),
            Level {
                modes: [3, 3, 3],
                drop_entry: true,
                drop_rate: 10,
                secure_tcp: true
            }
        );
    }

    #[test]
    fn the_table_threshold_engages_and_releases() {
        let d = Defense::default();
        d.configure(S);
        assert!(!d.active());
        // 100 of 1000 used: off. 800 (over 75 %): on, 200 left of the last 250: one new
        // connection in 250 / (250 - 200) = 5 dropped; full: all.
        assert!(!d.update(100, 1000, None).secure_tcp);
        let l = d.update(800, 1000, None);
        assert!(l.secure_tcp && l.drop_entry);
        assert_eq!(l.drop_rate, 5);
        assert_eq!(d.status().secure_tcp, 2);
        assert_eq!(d.engaged.load(Relaxed), 1);
        assert_eq!(d.update(1000, 1000, None).drop_rate, 1);
        assert_eq!(d.update(760, 1000, None).drop_rate, 25);
        // Down again: off.
        assert!(!d.update(10, 1000, None).secure_tcp);
        assert!(!d.active());
        assert_eq!(d.status().drop_packet, 1);
        // The defaults: drop_packet off, as IPVS.
        let d = Defense::default();
        let l = d.update(1000, 1000, None);
        assert!(l.secure_tcp && l.drop_entry);
        assert_eq!(l.drop_rate, 0);
        // Memory short while the table is not: on.
        assert!(d.update(10, 1000, Some(100)).secure_tcp);
    }

    #[test]
    fn todrop_drops_one_in_rate_per_worker_countdown() {
        let d = Defense::default();
        d.configure(DefenseSettings {
            drop_packet: 3,
            am_droprate: 4,
            ..S
        });
        let c = std::cell::Cell::new(0);
        let dropped = (0..40).filter(|_| d.todrop(&c)).count();
        assert_eq!(dropped, 10);
        assert_eq!(d.dropped_packets.load(Relaxed), 10);
        d.configure(DefenseSettings {
            drop_packet: 0,
            ..S
        });
        assert!(!(0..40).any(|_| d.todrop(&c)));
    }

    #[test]
    fn todrop_entry_prefers_entries_with_few_packets() {
        let mut c = [0u8; 9];
        let drops = |n: u32, c: &mut [u8; 9]| (0..24).filter(|_| todrop_entry(n, c)).count();
        assert_eq!(drops(0, &mut c), 0);
        assert_eq!(drops(1, &mut c), 24);
        assert_eq!(drops(2, &mut c), 12);
        assert_eq!(drops(8, &mut c), 3);
        assert_eq!(drops(9, &mut c), 0);
    }
}
