//! Locality-based least connection with replication, as `ip_vs_lblcr_schedule`
//! (net/netfilter/ipvs/ip_vs_lblcr.c): each destination address maps to a set of servers;
//! the least loaded of the set serves it unless overloaded, in which case a server picked by
//! weighted least connection joins the set. A set that has not grown for
//! `lblcr_expiration` (24 h) loses its most loaded member.
//!
//! Where IPVS's table and sets grow without bound, this one holds [`CAPACITY`] addresses of
//! at most [`SET_SIZE`] servers, replacing the least recently used address when full.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestId, DestInfo, Host, Scheduler, dest_flags};

/// Destination addresses remembered at most.
pub const CAPACITY: usize = 256;
/// Servers per destination address at most.
pub const SET_SIZE: usize = 8;
/// `sysctl_lblcr_expiration` default (24 h), in ms.
pub const EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;
/// `CHECK_EXPIRE_INTERVAL` (60 s), in ms.
pub const CHECK_INTERVAL_MS: u64 = 60 * 1000;

/// A server set, most recently added first (`list_add_rcu` at the head).
#[derive(Debug, Clone, Copy, Default)]
struct Set {
    members: [DestId; SET_SIZE],
    size: usize,
    lastmod: u64,
}

impl Set {
    /// `ip_vs_dest_set_insert(set, dest, check = true)`.
    fn insert(&mut self, d: DestId, now: u64) {
        if self.members[..self.size].contains(&d) {
            return;
        }
        let keep = self.size.min(SET_SIZE - 1);
        self.members.copy_within(0..keep, 1);
        self.members[0] = d;
        self.size = keep + 1;
        self.lastmod = now;
    }

    fn erase(&mut self, at: usize) {
        self.members.copy_within(at + 1..self.size, at);
        self.size -= 1;
    }

    /// `ip_vs_dest_set_min`: the member with the least overhead per weight among the
    /// available ones, the first of equals.
    fn min(&self, dests: &[DestInfo]) -> Option<usize> {
        let mut it = self.members[..self.size]
            .iter()
            .filter_map(|m| m.find(dests));
        let mut least = loop {
            let i = it.next()?;
            let d = &dests[i];
            if d.overloaded() {
                continue;
            }
            if d.weight > 0 && d.flags & dest_flags::AVAILABLE != 0 {
                break i;
            }
        };
        let mut loh = i64::from(dests[least].overhead());
        for i in it {
            let d = &dests[i];
            if d.overloaded() {
                continue;
            }
            let doh = i64::from(d.overhead());
            if loh * i64::from(d.weight) > doh * i64::from(dests[least].weight)
                && d.flags & dest_flags::AVAILABLE != 0
            {
                least = i;
                loh = doh;
            }
        }
        Some(least)
    }

    /// `ip_vs_dest_set_max`: the position in the set of the member with the most overhead
    /// per weight, among members with weight.
    fn max(&self, dests: &[DestInfo]) -> Option<usize> {
        let mut it =
            (0..self.size).filter_map(|p| self.members[p].find(dests).map(|i| (p, &dests[i])));
        let (mut most, mut md) = loop {
            let (p, d) = it.next()?;
            if d.weight > 0 {
                break (p, d);
            }
        };
        let mut moh = i64::from(md.overhead());
        for (p, d) in it {
            let doh = i64::from(d.overhead());
            if moh * i64::from(d.weight) < doh * i64::from(md.weight) && d.weight > 0 {
                most = p;
                md = d;
                moh = doh;
            }
        }
        Some(most)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    used: bool,
    daddr: [u8; 16],
    set: Set,
    lastuse: u64,
}

/// The destination-address cache of server sets.
#[derive(Debug)]
pub struct Lblcr {
    entries: [Entry; CAPACITY],
    last_check: u64,
}

impl Default for Lblcr {
    fn default() -> Self {
        Self {
            entries: [Entry::default(); CAPACITY],
            last_check: 0,
        }
    }
}

impl Scheduler for Lblcr {
    const NAME: &'static str = "lblcr";

    fn schedule(
        &mut self,
        conn: &ConnInfo,
        dests: &[DestInfo],
        host: &mut dyn Host,
    ) -> Option<usize> {
        let now = host.now_ms();
        if now.saturating_sub(self.last_check) >= CHECK_INTERVAL_MS {
            self.last_check = now;
            for e in self.entries.iter_mut().filter(|e| e.used) {
                if now.saturating_sub(e.lastuse) > EXPIRATION_MS {
                    e.used = false;
                }
            }
        }
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.used && e.daddr == conn.daddr)
        {
            e.lastuse = now;
            let min = e.set.min(dests);
            // A set that has not changed for a while sheds its most loaded member.
            if e.set.size > 1
                && now > e.set.lastmod + EXPIRATION_MS
                && let Some(p) = e.set.max(dests)
            {
                e.set.erase(p);
            }
            if let Some(i) = min
                && !wvs_sdk::lblc_overloaded(&dests[i], dests)
            {
                return Some(i);
            }
            let i = wvs_sdk::lblc_wlc(dests)?;
            e.set.insert(DestId::of(&dests[i]), now);
            return Some(i);
        }
        let i = wvs_sdk::lblc_wlc(dests)?;
        let slot = match self.entries.iter().position(|e| !e.used) {
            Some(s) => s,
            None => (0..CAPACITY)
                .min_by_key(|&s| self.entries[s].lastuse)
                .unwrap_or(0),
        };
        let mut set = Set::default();
        set.insert(DestId::of(&dests[i]), now);
        self.entries[slot] = Entry {
            used: true,
            daddr: conn.daddr,
            set,
            lastuse: now,
        };
        Some(i)
    }
}

wvs_sdk::export_scheduler!(Lblcr);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn the_set_grows_when_its_best_is_overloaded_and_shrinks_with_time() {
        let mut s = Lblcr::default();
        let mut host = TestHost::default();
        let c = conn(1, 1);
        let mut d = dests(&[2, 2, 2]);
        assert_eq!(s.schedule(&c, &d, &mut host), Some(0));
        d[0] = with_conns(d[0], 3, 0); // overloaded: 3 > 2 while others idle
        assert_eq!(
            s.schedule(&c, &d, &mut host),
            Some(1),
            "WLC adds server 1 to the set"
        );
        assert_eq!(s.entries[0].set.size, 2);
        // The set's least loaded member serves while it can.
        d[1] = with_conns(d[1], 1, 0);
        assert_eq!(s.schedule(&c, &d, &mut host), Some(1));
        // Used just before a day has passed: the entry stays, the set does not change yet.
        host.now = EXPIRATION_MS - 10;
        assert_eq!(s.schedule(&c, &d, &mut host), Some(1));
        assert_eq!(s.entries[0].set.size, 2);
        // A day without changes to the set: its most loaded member (server 0) leaves.
        host.now = EXPIRATION_MS + 1;
        assert_eq!(s.schedule(&c, &d, &mut host), Some(1));
        assert_eq!(s.entries[0].set.size, 1);
        assert_eq!(s.entries[0].set.members[0].find(&d), Some(1));
    }

    #[test]
    fn unused_entries_expire() {
        let mut s = Lblcr::default();
        let mut host = TestHost::default();
        s.schedule(&conn(1, 1), &dests(&[1]), &mut host);
        host.now = EXPIRATION_MS + CHECK_INTERVAL_MS;
        s.schedule(&conn(2, 2), &dests(&[1]), &mut host);
        assert_eq!(s.entries.iter().filter(|e| e.used).count(), 1);
    }

    #[test]
    fn no_server_no_answer() {
        let mut s = Lblcr::default();
        assert_eq!(
            s.schedule(&conn(1, 1), &dests(&[0, 0]), &mut TestHost::default()),
            None
        );
    }
}
