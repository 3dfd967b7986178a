//! Least connection, as `ip_vs_lc_schedule` (net/netfilter/ipvs/ip_vs_lc.c): the server with
//! the least overhead (active * 256 + inactive), weights ignored except that 0 quiesces.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Stateless.
#[derive(Debug, Default)]
pub struct Lc;

impl Scheduler for Lc {
    const NAME: &'static str = "lc";

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        let mut least: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if d.overloaded() || d.weight == 0 {
                continue;
            }
            let doh = d.overhead();
            if least.is_none_or(|(_, loh)| doh < loh) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }
}

wvs_sdk::export_scheduler!(Lc);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn least_overhead_first_on_ties() {
        let mut s = Lc;
        let d = [
            with_conns(dest(0, 1), 2, 100),
            with_conns(dest(1, 1), 1, 300),
            with_conns(dest(2, 1), 1, 299),
        ];
        assert_eq!(
            picks(&mut s, &d, 1),
            [Some(2)],
            "256+299 < 256+300 < 512+100"
        );
        let d = [with_conns(dest(0, 5), 1, 0), with_conns(dest(1, 1), 1, 0)];
        assert_eq!(
            picks(&mut s, &d, 1),
            [Some(0)],
            "ties: the first; weights ignored"
        );
        let d = [
            with_conns(dest(0, 0), 0, 0),
            overloaded(dest(1, 1)),
            with_conns(dest(2, 1), 9, 9),
        ];
        assert_eq!(picks(&mut s, &d, 1), [Some(2)]);
        assert_eq!(picks(&mut s, &dests(&[0]), 1), [None]);
    }
}
