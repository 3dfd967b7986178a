//! Shortest expected delay, as `ip_vs_sed_schedule` (net/netfilter/ipvs/ip_vs_sed.c): the
//! least (active + 1) / weight; inactive connections do not count.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Stateless.
#[derive(Debug, Default)]
pub struct Sed;

/// `ip_vs_sed_dest_overhead`: active connections plus the one being scheduled.
pub fn sed_overhead(d: &DestInfo) -> u32 {
    d.activeconns.wrapping_add(1)
}

impl Scheduler for Sed {
    const NAME: &'static str = "sed";

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        wvs_sdk::least_weighted(dests, sed_overhead)
    }
}

wvs_sdk::export_scheduler!(Sed);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn expected_delay() {
        let mut s = Sed;
        // (1+1)/1 = 2 vs (2+1)/2 = 1.5: the second; inactive ignored.
        let d = [
            with_conns(dest(0, 1), 1, 0),
            with_conns(dest(1, 2), 2, 1000),
        ];
        assert_eq!(picks(&mut s, &d, 1), [Some(1)]);
        // Idle servers: (0+1)/1 vs (0+1)/3: the heavier one.
        let d = [dest(0, 1), dest(1, 3)];
        assert_eq!(picks(&mut s, &d, 1), [Some(1)]);
        assert_eq!(picks(&mut s, &[dest(0, 0)], 1), [None]);
    }
}
