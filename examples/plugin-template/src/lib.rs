//! A scheduler plugin to start from: the least-connection server by weight, written with
//! wvs-sdk. Replace `schedule` with your own rule; `hint` is a number per real server an
//! operator sets (`wvs adm -e ... --hint N`), for rules that need one.

#![no_std]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler};

/// The scheduler's state, kept between calls for as long as the service uses it.
#[derive(Debug, Default)]
pub struct MySched;

impl Scheduler for MySched {
    const NAME: &'static str = "mysched";

    fn schedule(
        &mut self,
        _conn: &ConnInfo,
        dests: &[DestInfo],
        _host: &mut dyn Host,
    ) -> Option<usize> {
        // Fewest active connections per unit of weight; `None`: no server can take it.
        dests
            .iter()
            .enumerate()
            .filter(|(_, d)| d.schedulable())
            .min_by_key(|(_, d)| {
                (u64::from(d.activeconns) + 1) * 1_000_000 / (d.weight as u64).max(1)
            })
            .map(|(i, _)| i)
    }
}

wvs_sdk::export_scheduler!(MySched);
