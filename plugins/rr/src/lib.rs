//! Round robin, as `ip_vs_rr_schedule` (net/netfilter/ipvs/ip_vs_rr.c): starting after the
//! server chosen last, the first one with weight above 0 that is not overloaded.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Round-robin state: the index of the server chosen last (`svc->sched_data`), `None` for
/// the head of the list.
#[derive(Debug, Default)]
pub struct Rr {
    last: Option<usize>,
}

impl Scheduler for Rr {
    const NAME: &'static str = "rr";

    fn update(&mut self, dests: &[DestInfo], _svc_flags: u32) {
        // ip_vs_rr_del_dest keeps the cursor in the list; an index past the end restarts.
        if self.last.is_some_and(|l| l >= dests.len()) {
            self.last = None;
        }
    }

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        let n = dests.len();
        let start = self.last.map_or(0, |l| l + 1);
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| dests[i].schedulable())?;
        self.last = Some(i);
        Some(i)
    }
}

wvs_sdk::export_scheduler!(Rr);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn rotates_skipping_quiesced_and_overloaded() {
        let d = dests(&[1, 1, 1]);
        let mut s: Rr = ready(&d, 0);
        assert_eq!(picks(&mut s, &d, 7), [0, 1, 2, 0, 1, 2, 0].map(Some));
        let d2 = vec![d[0], dest(1, 0), overloaded(d[2])];
        assert_eq!(
            picks(&mut s, &d2, 3),
            [Some(0); 3],
            "only the first is eligible"
        );
        assert_eq!(picks(&mut s, &dests(&[0, 0]), 1), [None]);
        assert_eq!(picks(&mut s, &[], 1), [None]);
    }

    #[test]
    fn thirty_over_three_is_ten_each() {
        let d = dests(&[1, 5, 1]);
        let mut s: Rr = ready(&d, 0);
        assert_eq!(
            tally(&picks(&mut s, &d, 30), 3),
            [10, 10, 10],
            "rr ignores weights"
        );
    }
}
