//! Weighted failover, as `ip_vs_fo_schedule` (net/netfilter/ipvs/ip_vs_fo.c): the server with
//! the highest weight that is not overloaded (the first of equals).

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Stateless.
#[derive(Debug, Default)]
pub struct Fo;

impl Scheduler for Fo {
    const NAME: &'static str = "fo";
    /// Its choice depends only on the connection and the real servers.
    const FLAGS: u32 = wvs_sdk::sched_flags::CONSISTENT;

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        let mut hw = 0;
        let mut best = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.overloaded() && d.weight > hw {
                best = Some(i);
                hw = d.weight;
            }
        }
        best
    }
}

wvs_sdk::export_scheduler!(Fo);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn highest_weight_wins() {
        let mut s = Fo;
        assert_eq!(picks(&mut s, &dests(&[1, 3, 3]), 2), [Some(1); 2]);
        let d = [dest(0, 1), overloaded(dest(1, 3))];
        assert_eq!(
            picks(&mut s, &d, 1),
            [Some(0)],
            "fails over to the next weight"
        );
        assert_eq!(picks(&mut s, &dests(&[0, 0]), 1), [None]);
    }
}
