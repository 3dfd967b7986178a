//! Source hashing, as `ip_vs_sh_schedule` (net/netfilter/ipvs/ip_vs_sh.c, the `hash_32`
//! version): a 256-bucket table filled by walking the servers, each repeated `weight` times;
//! the client address (and with `sh-port` its port) picks the bucket. With `sh-fallback`, an
//! unavailable server's clients go round the table to the next available one instead of
//! being refused.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler, hash_32, svc_flags};

/// `CONFIG_IP_VS_SH_TAB_BITS`.
pub const TAB_BITS: u32 = 8;
/// Buckets in the table.
pub const TAB_SIZE: usize = 1 << TAB_BITS;

/// `sh-fallback` (`IP_VS_SVC_F_SCHED_SH_FALLBACK`).
pub const SH_FALLBACK: u32 = svc_flags::SCHED1;
/// `sh-port` (`IP_VS_SVC_F_SCHED_SH_PORT`).
pub const SH_PORT: u32 = svc_flags::SCHED2;

/// The bucket table: a server index per bucket (`u16::MAX` when there is no server).
#[derive(Debug)]
pub struct Sh {
    buckets: [u16; TAB_SIZE],
}

impl Default for Sh {
    fn default() -> Self {
        Self {
            buckets: [u16::MAX; TAB_SIZE],
        }
    }
}

/// `ip_vs_sh_hashkey`.
pub fn hashkey(addr_fold: u32, port: u16, offset: u32) -> usize {
    (offset.wrapping_add(hash_32(u32::from(port).wrapping_add(addr_fold), TAB_BITS)) as usize)
        & (TAB_SIZE - 1)
}

impl Sh {
    fn bucket<'a>(&self, dests: &'a [DestInfo], hash: usize) -> Option<(usize, &'a DestInfo)> {
        let i = usize::from(self.buckets[hash]);
        dests.get(i).map(|d| (i, d))
    }
}

impl Scheduler for Sh {
    const NAME: &'static str = "sh";
    /// Its choice depends only on the connection and the real servers.
    const FLAGS: u32 = wvs_sdk::sched_flags::CONSISTENT;

    /// `ip_vs_sh_reassign`: walk the servers circularly, giving each `weight` buckets in a
    /// row (and at least one).
    fn update(&mut self, dests: &[DestInfo], _svc_flags: u32) {
        if dests.is_empty() {
            self.buckets = [u16::MAX; TAB_SIZE];
            return;
        }
        let (mut p, mut count) = (0usize, 0i32);
        for b in self.buckets.iter_mut() {
            *b = p as u16;
            count += 1;
            if count >= dests[p].weight {
                p = (p + 1) % dests.len();
                count = 0;
            }
        }
    }

    fn schedule(
        &mut self,
        conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        let port = if conn.has_flag(SH_PORT) {
            conn.sport
        } else {
            0
        };
        let addr = conn.saddr_fold();
        let ihash = hashkey(addr, port, 0);
        let (i, d) = self.bucket(dests, ihash)?;
        if d.schedulable() {
            return Some(i);
        }
        if !conn.has_flag(SH_FALLBACK) {
            return None;
        }
        // ip_vs_sh_get_fallback: go round the table from the original bucket.
        (0..TAB_SIZE as u32).find_map(|offset| {
            let roffset = (offset + ihash as u32) % TAB_SIZE as u32;
            let (i, d) = self.bucket(dests, hashkey(addr, port, roffset))?;
            d.schedulable().then_some(i)
        })
    }
}

wvs_sdk::export_scheduler!(Sh);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn table_follows_weights() {
        let d = dests(&[2, 1, 0]);
        let s: Sh = ready(&d, 0);
        // 2 buckets for the first, 1 for the second, 1 for the quiesced third, repeating.
        assert_eq!(&s.buckets[..8], &[0, 0, 1, 2, 0, 0, 1, 2]);
        assert_eq!(s.buckets.iter().filter(|b| **b == 0).count(), 128);
    }

    #[test]
    fn a_client_sticks_and_ports_spread_with_sh_port() {
        let d = dests(&[1, 1, 1]);
        let mut s: Sh = ready(&d, 0);
        let mut host = TestHost::default();
        let first = s.schedule(&conn(7, 1000), &d, &mut host);
        for p in 1001..1100 {
            assert_eq!(
                s.schedule(&conn(7, p), &d, &mut host),
                first,
                "same client, same server"
            );
        }
        let mut with_port = conn(7, 0);
        with_port.svc_flags = SH_PORT;
        let mut seen = [false; 3];
        for p in 1000..1100 {
            with_port.sport = p;
            seen[s.schedule(&with_port, &d, &mut host).unwrap()] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn hash_matches_the_kernel_formula() {
        // 198.18.0.2, no port: hash_32(0xC6120002, 8) = (0xC6120002 * 0x61C88647) >> 24.
        let want = (0xC612_0002u32.wrapping_mul(0x61C8_8647) >> 24) as usize;
        assert_eq!(hashkey(0xC612_0002, 0, 0), want);
        assert_eq!(hashkey(0xC612_0002, 0, 3), (want + 3) & 255);
    }

    #[test]
    fn unavailable_refuses_or_falls_back() {
        let mut d = dests(&[1, 1, 1]);
        let mut s: Sh = ready(&d, 0);
        let mut host = TestHost::default();
        let c = conn(9, 1);
        let home = s.schedule(&c, &d, &mut host).unwrap();
        d[home] = overloaded(d[home]);
        assert_eq!(s.schedule(&c, &d, &mut host), None, "no fallback: refused");
        let mut cf = c;
        cf.svc_flags = SH_FALLBACK;
        let other = s.schedule(&cf, &d, &mut host).unwrap();
        assert_ne!(other, home);
        for x in d.iter_mut() {
            x.weight = 0;
        }
        assert_eq!(s.schedule(&cf, &d, &mut host), None);
    }
}
