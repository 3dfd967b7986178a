//! Locality-based least connection, as `ip_vs_lblc_schedule`
//! (net/netfilter/ipvs/ip_vs_lblc.c): remember which server each destination address was
//! sent to, and keep sending it there while that server is available, has weight and is not
//! overloaded (more active connections than its weight while another server is under half of
//! its own); otherwise pick by weighted least connection and remember that.
//!
//! Entries unused for `lblc_expiration` (24 h) are collected, checked every minute as IPVS's
//! timer does. Where IPVS's table grows without bound, this one holds [`CAPACITY`] entries
//! and replaces the least recently used when full.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestId, DestInfo, Host, Scheduler, dest_flags};

/// Destination addresses remembered at most.
pub const CAPACITY: usize = 1024;
/// `sysctl_lblc_expiration` default (`DEFAULT_EXPIRATION`, 24 h), in ms.
pub const EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;
/// `CHECK_EXPIRE_INTERVAL` (60 s), in ms.
pub const CHECK_INTERVAL_MS: u64 = 60 * 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    used: bool,
    daddr: [u8; 16],
    dest: DestId,
    lastuse: u64,
}

/// The destination-address cache.
#[derive(Debug)]
pub struct Lblc {
    entries: [Entry; CAPACITY],
    last_check: u64,
}

impl Default for Lblc {
    fn default() -> Self {
        Self {
            entries: [Entry::default(); CAPACITY],
            last_check: 0,
        }
    }
}

impl Lblc {
    fn expire(&mut self, now: u64) {
        if now.saturating_sub(self.last_check) < CHECK_INTERVAL_MS {
            return;
        }
        self.last_check = now;
        for e in self.entries.iter_mut().filter(|e| e.used) {
            if now.saturating_sub(e.lastuse) > EXPIRATION_MS {
                e.used = false;
            }
        }
    }

    fn find(&mut self, daddr: &[u8; 16]) -> Option<&mut Entry> {
        self.entries
            .iter_mut()
            .find(|e| e.used && e.daddr == *daddr)
    }

    /// `ip_vs_lblc_new`: remember (or update) the server for a destination address.
    fn remember(&mut self, daddr: &[u8; 16], dest: DestId, now: u64) {
        if let Some(e) = self.find(daddr) {
            e.dest = dest;
            return;
        }
        let slot = match self.entries.iter().position(|e| !e.used) {
            Some(i) => i,
            None => (0..CAPACITY)
                .min_by_key(|&i| self.entries[i].lastuse)
                .unwrap_or(0),
        };
        self.entries[slot] = Entry {
            used: true,
            daddr: *daddr,
            dest,
            lastuse: now,
        };
    }
}

impl Scheduler for Lblc {
    const NAME: &'static str = "lblc";

    fn schedule(
        &mut self,
        conn: &ConnInfo,
        dests: &[DestInfo],
        host: &mut dyn Host,
    ) -> Option<usize> {
        let now = host.now_ms();
        self.expire(now);
        if let Some(e) = self.find(&conn.daddr) {
            e.lastuse = now;
            if let Some(i) = e.dest.find(dests) {
                let d = &dests[i];
                // IPVS checks available, weight and its own overload rule here; the
                // threshold flag (OVERLOAD) is checked too, so that no scheduler ever gives a
                // server over its upper threshold a new connection.
                if d.flags & dest_flags::AVAILABLE != 0
                    && d.weight > 0
                    && !d.overloaded()
                    && !wvs_sdk::lblc_overloaded(d, dests)
                {
                    return Some(i);
                }
            }
        }
        let i = wvs_sdk::lblc_wlc(dests)?;
        self.remember(&conn.daddr, DestId::of(&dests[i]), now);
        Some(i)
    }
}

wvs_sdk::export_scheduler!(Lblc);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;
    use wvs_sdk::v4_mapped;

    fn to(c: &mut ConnInfo, daddr: u32) {
        c.daddr = v4_mapped(daddr);
    }

    #[test]
    fn a_destination_sticks_until_its_server_is_overloaded() {
        let mut s = Lblc::default();
        let mut host = TestHost::default();
        let mut c = conn(1, 1);
        to(&mut c, 0x0a00_0001);
        let mut d = dests(&[2, 2, 2]);
        d[0] = with_conns(d[0], 0, 5); // least loaded: server 1
        assert_eq!(s.schedule(&c, &d, &mut host), Some(1));
        d[1] = with_conns(d[1], 2, 0); // busier now, but at its weight: still not overloaded
        assert_eq!(s.schedule(&c, &d, &mut host), Some(1), "cached");
        d[1] = with_conns(d[1], 3, 0); // above its weight while server 2 is idle: overloaded
        assert_eq!(
            s.schedule(&c, &d, &mut host),
            Some(2),
            "WLC again, and remembered"
        );
        d[1] = with_conns(d[1], 0, 0);
        assert_eq!(s.schedule(&c, &d, &mut host), Some(2));
        // Another destination address is scheduled on its own.
        to(&mut c, 0x0a00_0002);
        assert_eq!(s.schedule(&c, &d, &mut host), Some(1));
    }

    #[test]
    fn gone_or_quiesced_servers_are_replaced_and_entries_expire() {
        let mut s = Lblc::default();
        let mut host = TestHost::default();
        let c = conn(1, 1);
        let d = dests(&[1, 1]);
        assert_eq!(s.schedule(&c, &d, &mut host), Some(0));
        assert_eq!(
            s.schedule(&c, &[d[1]], &mut host),
            Some(0),
            "server 0 gone: the other, re-indexed"
        );
        let mut q = d.clone();
        q[1].weight = 0;
        assert_eq!(s.schedule(&c, &q, &mut host), Some(0));
        host.now = EXPIRATION_MS + 2 * CHECK_INTERVAL_MS;
        s.schedule(&conn(2, 2), &d, &mut host); // runs the collection
        assert_eq!(
            s.entries.iter().filter(|e| e.used).count(),
            1,
            "the idle entry expired; the new one stays"
        );
    }
}
