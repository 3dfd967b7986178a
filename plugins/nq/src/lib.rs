//! Never queue, as `ip_vs_nq_schedule` (net/netfilter/ipvs/ip_vs_nq.c): an idle server (no
//! active connection) at once, the first in the list; otherwise shortest expected delay.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Stateless.
#[derive(Debug, Default)]
pub struct Nq;

impl Scheduler for Nq {
    const NAME: &'static str = "nq";

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        let mut least: Option<(usize, i64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.overloaded() || d.weight == 0 {
                continue;
            }
            let doh = i64::from(d.activeconns) + 1;
            if d.activeconns == 0 {
                return Some(i);
            }
            let replace = match least {
                None => true,
                Some((l, loh)) => loh * i64::from(d.weight) > doh * i64::from(dests[l].weight),
            };
            if replace {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }
}

wvs_sdk::export_scheduler!(Nq);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn idle_first_then_sed() {
        let mut s = Nq;
        let d = [
            with_conns(dest(0, 10), 1, 0),
            with_conns(dest(1, 1), 0, 50),
            dest(2, 1),
        ];
        assert_eq!(
            picks(&mut s, &d, 1),
            [Some(1)],
            "the first idle server, even with a low weight"
        );
        let d = [with_conns(dest(0, 1), 1, 0), with_conns(dest(1, 3), 2, 0)];
        assert_eq!(picks(&mut s, &d, 1), [Some(1)], "2/1 > 3/3");
        let d = [dest(0, 0), overloaded(dest(1, 1))];
        assert_eq!(picks(&mut s, &d, 1), [None]);
    }
}
