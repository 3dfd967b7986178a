//! Weighted round robin, as `ip_vs_wrr_schedule` (net/netfilter/ipvs/ip_vs_wrr.c, the
//! version with `last_pass`): walk the list for servers whose weight reaches the current
//! weight `cw`, lowering `cw` by the weights' gcd after each pass, from the largest weight
//! down to 1.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler, gcd};

/// `struct ip_vs_wrr_mark`.
#[derive(Debug, Default)]
pub struct Wrr {
    /// Server chosen last; `None` is the list head.
    cl: Option<usize>,
    /// Current weight.
    cw: i32,
    /// Maximum weight, less `di - 1`, so the last pass runs with `cw` = 1.
    mw: i32,
    /// Gcd of the positive weights.
    di: i32,
}

impl Scheduler for Wrr {
    const NAME: &'static str = "wrr";

    /// `ip_vs_wrr_dest_changed`.
    fn update(&mut self, dests: &[DestInfo], _svc_flags: u32) {
        let g = dests
            .iter()
            .filter(|d| d.weight > 0)
            .fold(0u32, |g, d| gcd(g, d.weight as u32));
        let max = dests.iter().map(|d| d.weight).max().unwrap_or(0).max(0);
        self.cl = None;
        self.di = if g == 0 { 1 } else { g as i32 };
        self.mw = max - (self.di - 1);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        if self.mw <= 0 {
            return None;
        }
        let n = dests.len();
        let last = self.cl.filter(|&l| l < n);
        let mut pos = last;
        let mut stop: Option<usize> = None;
        let (mut last_pass, mut restarted) = (false, false);
        loop {
            let start = pos.map_or(0, |p| p + 1);
            for (i, d) in dests.iter().enumerate().skip(start) {
                if !d.overloaded() && d.weight >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            pos = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                // Stop if the last pass already ran from the first server.
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                // The first walk for weight >= 1 covered only the servers after `last`.
                stop = last;
            }
        }
    }
}

wvs_sdk::export_scheduler!(Wrr);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn weights_3_2_1_give_the_ipvs_sequence() {
        let d = dests(&[3, 2, 1]);
        let mut s: Wrr = ready(&d, 0);
        let p = picks(&mut s, &d, 12);
        assert_eq!(p, [0, 0, 1, 0, 1, 2, 0, 0, 1, 0, 1, 2].map(Some));
        assert_eq!(tally(&picks(&mut s, &d, 60), 3), [30, 20, 10]);
    }

    #[test]
    fn gcd_steps_and_quiesce() {
        let d = dests(&[4, 2, 0]);
        let mut s: Wrr = ready(&d, 0);
        assert_eq!(s.di, 2);
        assert_eq!(s.mw, 3);
        let p = picks(&mut s, &d, 6);
        assert_eq!(p, [0, 0, 1, 0, 0, 1].map(Some), "weight 0 never chosen");
        let none = dests(&[0, 0]);
        let mut s: Wrr = ready(&none, 0);
        assert_eq!(picks(&mut s, &none, 1), [None]);
    }

    #[test]
    fn all_overloaded_gives_none_and_recovers() {
        let mut d = dests(&[2, 1]);
        let mut s: Wrr = ready(&d, 0);
        assert_eq!(picks(&mut s, &d, 1), [Some(0)]);
        d[0] = overloaded(d[0]);
        d[1] = overloaded(d[1]);
        assert_eq!(picks(&mut s, &d, 2), [None, None]);
        let d = dests(&[2, 1]);
        assert_eq!(tally(&picks(&mut s, &d, 30), 2), [20, 10]);
    }
}
