//! Weighted least connection, IPVS's default, as `ip_vs_wlc_schedule`
//! (net/netfilter/ipvs/ip_vs_wlc.c): the least overhead / weight, compared without division
//! (`loh * w(dest) > doh * w(least)`).

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Stateless.
#[derive(Debug, Default)]
pub struct Wlc;

impl Scheduler for Wlc {
    const NAME: &'static str = "wlc";

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        wvs_sdk::least_weighted(dests, DestInfo::overhead)
    }
}

wvs_sdk::export_scheduler!(Wlc);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn overhead_per_weight() {
        let mut s = Wlc;
        // 2*256/2 = 256 vs 1*256/1 = 256: tie keeps the first.
        let d = [with_conns(dest(0, 2), 2, 0), with_conns(dest(1, 1), 1, 0)];
        assert_eq!(picks(&mut s, &d, 1), [Some(0)]);
        // 3*256/2 = 384 > 256: the second.
        let d = [with_conns(dest(0, 2), 3, 0), with_conns(dest(1, 1), 1, 0)];
        assert_eq!(picks(&mut s, &d, 1), [Some(1)]);
        let d = [
            dest(0, 0),
            overloaded(dest(1, 3)),
            with_conns(dest(2, 1), 100, 0),
        ];
        assert_eq!(picks(&mut s, &d, 1), [Some(2)]);
        assert_eq!(picks(&mut s, &[], 1), [None]);
    }
}
