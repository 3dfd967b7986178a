//! `lat2`: a scheduler IPVS does not have, written with wvs-sdk.
//!
//! Draw two servers at random in proportion to their weights (the power of two choices),
//! then take the one with the lower expected latency: its latency hint (the `hint` an
//! operator sets per real server, in µs; unset counts as 1) times its active connections
//! plus this one. Among equals it behaves like `twos`; a server that answers slowly gets
//! fewer connections without being taken out, and an idle fast one gets more.
//!
//! Build it as a plugin with
//! `cargo build --profile wasm --target wasm32-unknown-unknown -p wvs-example-lat2` and load
//! it with `[[plugin]] name = "lat2"  path = ".../wvs_example_lat2.wasm"`.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// Stateless: everything it needs is in the table and the host's random numbers.
#[derive(Debug, Default)]
pub struct Lat2;

/// Expected latency of one more connection on `d`, per unit of weight, scaled to compare
/// without division: `(active + 1) * hint`, compared as `a * w_b` vs `b * w_a`.
fn cost(d: &DestInfo) -> u64 {
    (u64::from(d.activeconns) + 1) * u64::from(d.hint.max(1))
}

fn draw(dests: &[DestInfo], total: u64, host: &mut dyn Host) -> Option<usize> {
    let mut r = u64::from(host.random()) % total;
    for (i, d) in dests.iter().enumerate() {
        if !d.schedulable() {
            continue;
        }
        let w = d.weight as u64;
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

impl Scheduler for Lat2 {
    const NAME: &'static str = "lat2";

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        host: &mut dyn Host,
    ) -> Option<usize> {
        let total: u64 = dests
            .iter()
            .filter(|d| d.schedulable())
            .map(|d| d.weight as u64)
            .sum();
        if total == 0 {
            return None;
        }
        let a = draw(dests, total, host)?;
        let b = draw(dests, total, host)?;
        let (da, db) = (&dests[a], &dests[b]);
        if cost(db) * (da.weight as u64) < cost(da) * (db.weight as u64) {
            Some(b)
        } else {
            Some(a)
        }
    }
}

wvs_sdk::export_scheduler!(Lat2);

#[cfg(test)]
mod tests {
    use super::*;
    use wvs_sched_testkit::*;

    #[test]
    fn the_faster_of_two_wins() {
        let mut d = dests(&[1, 1, 1]);
        d[0].hint = 1000;
        d[1].hint = 10;
        d[2].hint = 1000;
        let mut host = TestHost::scripted(&[0, 1, 2, 1, 0, 2, 2, 2]);
        let c = conn(1, 1);
        assert_eq!(
            Lat2.schedule(&c, &d, &mut host),
            Some(1),
            "draws 0 and 1: 1 is faster"
        );
        assert_eq!(Lat2.schedule(&c, &d, &mut host), Some(1), "draws 2 and 1");
        assert_eq!(
            Lat2.schedule(&c, &d, &mut host),
            Some(0),
            "draws 0 and 2: equal, the first"
        );
        assert_eq!(Lat2.schedule(&c, &d, &mut host), Some(2), "draws 2 and 2");
    }

    #[test]
    fn load_counts_and_quiesced_servers_are_skipped() {
        let mut d = dests(&[1, 0, 1]);
        d[0] = with_conns(d[0], 9, 0);
        let mut host = TestHost::scripted(&[0, 1]);
        // Weighted draws over servers 0 and 2 only: r=0 -> 0, r=1 -> 2.
        assert_eq!(
            Lat2.schedule(&conn(1, 1), &d, &mut host),
            Some(2),
            "10 x 1 > 1 x 1"
        );
        assert_eq!(Lat2.schedule(&conn(1, 1), &dests(&[0]), &mut host), None);
    }
}
