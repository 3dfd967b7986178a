//! Weighted overflow, as `ip_vs_ovf_schedule` (net/netfilter/ipvs/ip_vs_ovf.c): the server
//! with the highest weight whose active connections do not exceed its weight.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Stateless.
#[derive(Debug, Default)]
pub struct Ovf;

impl Scheduler for Ovf {
    const NAME: &'static str = "ovf";

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        let mut h: Option<usize> = None;
        for (i, d) in dests.iter().enumerate() {
            let w = d.weight;
            if d.overloaded() || i64::from(d.activeconns) > i64::from(w) || w == 0 {
                continue;
            }
            if h.is_none_or(|h| w > dests[h].weight) {
                h = Some(i);
            }
        }
        h
    }
}

wvs_sdk::export_scheduler!(Ovf);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn overflows_when_full() {
        let mut s = Ovf;
        let d = [dest(0, 1), with_conns(dest(1, 2), 2, 7)];
        assert_eq!(
            picks(&mut s, &d, 1),
            [Some(1)],
            "2 active do not exceed weight 2"
        );
        let d = [dest(0, 1), with_conns(dest(1, 2), 3, 0)];
        assert_eq!(picks(&mut s, &d, 1), [Some(0)], "3 active exceed weight 2");
        let d = [with_conns(dest(0, 1), 2, 0), dest(1, 0)];
        assert_eq!(picks(&mut s, &d, 1), [None]);
    }
}
