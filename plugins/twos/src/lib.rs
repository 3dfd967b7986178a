//! Power of two choices, as `ip_vs_twos_schedule` (net/netfilter/ipvs/ip_vs_twos.c): two
//! servers drawn at random in proportion to their weights, then the one with the lower
//! overhead per weight.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Stateless (randomness comes from the host).
#[derive(Debug, Default)]
pub struct Twos;

impl Scheduler for Twos {
    const NAME: &'static str = "twos";

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        host: &mut dyn Host,
    ) -> Option<usize> {
        let total: i64 = dests
            .iter()
            .filter(|d| !d.overloaded() && d.weight > 0)
            .map(|d| i64::from(d.weight))
            .sum();
        if total == 0 {
            return None;
        }
        // Random weights in [0, total], both ends included, as the kernel draws them.
        let span = (total + 1) as u64;
        let mut r1 = (u64::from(host.random()) % span) as i64;
        let mut r2 = (u64::from(host.random()) % span) as i64;
        let (mut c1, mut c2) = (None, None);
        for (i, d) in dests.iter().enumerate() {
            if d.overloaded() || d.weight <= 0 {
                continue;
            }
            r1 -= i64::from(d.weight);
            r2 -= i64::from(d.weight);
            if r1 <= 0 && c1.is_none() {
                c1 = Some(i);
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some(i);
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        let (c1, c2) = (c1?, c2?);
        let (a, b) = (&dests[c1], &dests[c2]);
        if i64::from(b.weight) * i64::from(a.overhead())
            > i64::from(a.weight) * i64::from(b.overhead())
        {
            Some(c2)
        } else {
            Some(c1)
        }
    }
}

wvs_sdk::export_scheduler!(Twos);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    fn pick(d: &[DestInfo], r: [u32; 2]) -> Option<usize> {
        Twos.schedule(&conn(1, 1), d, &mut TestHost::scripted(&r))
    }

    #[test]
    fn draws_and_compares() {
        let d = [
            with_conns(dest(0, 1), 5, 0),
            with_conns(dest(1, 2), 1, 0),
            with_conns(dest(2, 1), 0, 0),
        ];
        // total 4: r in 0..=4. r=0 or 1 -> server 0; 2, 3 -> server 1; 4 -> server 2.
        assert_eq!(pick(&d, [0, 3]), Some(1), "5*256/1 > 1*256/2");
        assert_eq!(pick(&d, [4, 1]), Some(2), "idle server 2 beats server 0");
        assert_eq!(pick(&d, [1, 1]), Some(0), "the same server twice");
        assert_eq!(pick(&[dest(0, 0), overloaded(dest(1, 1))], [0, 0]), None);
    }

    #[test]
    fn spreads_by_weight_when_idle() {
        let d = dests(&[1, 1, 2]);
        let mut host = TestHost::scripted(&[]);
        let mut t = [0usize; 3];
        for _ in 0..4000 {
            t[Twos.schedule(&conn(1, 1), &d, &mut host).unwrap()] += 1;
        }
        assert!(t.iter().all(|&n| n > 500), "{t:?}");
    }
}
