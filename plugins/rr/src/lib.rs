//! Round robin, as `ip_vs_rr_schedule` (net/netfilter/ipvs/ip_vs_rr.c): starting after the
//! server chosen last, the first one with weight above 0 that is not overloaded.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// A server's identity across updates: its address and port.
type Id = ([u8; 16], u16);

fn id(d: &DestInfo) -> Id {
    (d.addr, d.port)
}

/// Round-robin state: IPVS keeps a pointer to the server chosen last (`svc->sched_data`),
/// which stays on that server when others are added or removed; here, its index and, to
/// find it again after a change, its identity and that of the server before it.
#[derive(Debug, Default)]
pub struct Rr {
    /// Index of the server chosen last; `None` for the head of the list.
    last: Option<usize>,
    /// That server.
    last_id: Option<Id>,
    /// The server before it in the list (`None`: the head).
    prev_id: Option<Id>,
}

impl Rr {
    fn set_last(&mut self, dests: &[DestInfo], i: Option<usize>) {
        self.last = i;
        self.last_id = i.map(|i| id(&dests[i]));
        self.prev_id = i.and_then(|i| i.checked_sub(1)).map(|p| id(&dests[p]));
    }
}

impl Scheduler for Rr {
    const NAME: &'static str = "rr";

    /// The pointer follows its server (a server added at the head of the list moves it down
    /// by one); when its server is removed, it moves to the one before (`ip_vs_rr_del_dest`),
    /// so the rotation goes on with the one after.
    fn update(&mut self, dests: &[DestInfo], _svc_flags: u32) {
        let find = |want: Option<Id>| want.and_then(|w| dests.iter().position(|d| id(d) == w));
        let at = match find(self.last_id) {
            Some(i) => Some(i),
            None if self.last_id.is_some() => find(self.prev_id),
            None => None,
        };
        self.set_last(dests, at);
    }

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        let n = dests.len();
        let start = self.last.filter(|&l| l < n).map_or(0, |l| l + 1);
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| dests[i].schedulable())?;
        self.set_last(dests, Some(i));
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

    /// As IPVS's pointer: a server added at the head does not move the rotation; removing
    /// the server chosen last continues with the one after it.
    #[test]
    fn the_rotation_follows_its_server_across_changes() {
        let d = dests(&[1, 1, 1]); // s0 s1 s2
        let mut s: Rr = ready(&d, 0);
        assert_eq!(picks(&mut s, &d, 2), [0, 1].map(Some), "s0 s1");
        // s3 added at the head: [s3 s0 s1 s2]; after s1 come s2, s3, s0.
        let added: Vec<_> = [dest(3, 1)].into_iter().chain(d.iter().copied()).collect();
        s.update(&added, 0);
        assert_eq!(picks(&mut s, &added, 3), [3, 0, 1].map(Some), "s2 s3 s0");
        // s0, chosen last, goes: [s3 s1 s2]; the rotation goes on with s1.
        let removed = vec![added[0], added[2], added[3]];
        s.update(&removed, 0);
        assert_eq!(picks(&mut s, &removed, 2), [1, 2].map(Some), "s1 s2");
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
