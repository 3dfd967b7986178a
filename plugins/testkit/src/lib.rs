//! Helpers for the table-driven tests of the scheduler plugins: real servers and connections
//! built from short literals, a host with scripted random numbers, and a driver that feeds a
//! scheduler a sequence of connections and records its choices.

#![warn(missing_docs)]

use wvs_sdk::{ConnInfo, DestInfo, Host, Scheduler, dest_flags, v4_mapped};

/// Real server `198.19.0.(11+i)`, port 80, with a weight.
pub fn dest(i: usize, weight: i32) -> DestInfo {
    DestInfo {
        addr: v4_mapped(0xC613_0000 | (11 + i as u32)),
        port: 80,
        weight,
        last_weight: weight,
        flags: dest_flags::AVAILABLE,
        ..Default::default()
    }
}

/// Real servers with these weights.
pub fn dests(weights: &[i32]) -> Vec<DestInfo> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| dest(i, *w))
        .collect()
}

/// Set a server's active and inactive connection counts.
pub fn with_conns(mut d: DestInfo, active: u32, inactive: u32) -> DestInfo {
    d.activeconns = active;
    d.inactconns = inactive;
    d
}

/// Mark a server overloaded.
pub fn overloaded(mut d: DestInfo) -> DestInfo {
    d.flags |= dest_flags::OVERLOAD;
    d
}

/// A TCP connection from `198.18.x.y:sport` to `198.18.100.1:80`.
pub fn conn(client: u32, sport: u16) -> ConnInfo {
    ConnInfo {
        saddr: v4_mapped(0xC612_0000 | (client & 0xffff)),
        daddr: v4_mapped(0xC612_6401),
        sport,
        dport: 80,
        proto: 6,
        af: 4,
        ..Default::default()
    }
}

/// A host whose random numbers come from a script (then from a xorshift generator).
#[derive(Debug, Default)]
pub struct TestHost {
    /// Numbers `random` returns first, in order.
    pub script: Vec<u32>,
    state: u32,
    /// The clock.
    pub now: u64,
}

impl TestHost {
    /// A host returning these numbers first.
    pub fn scripted(script: &[u32]) -> Self {
        Self {
            script: script.iter().rev().copied().collect(),
            state: 0x9e37_79b9,
            now: 0,
        }
    }
}

impl Host for TestHost {
    fn random(&mut self) -> u32 {
        if let Some(v) = self.script.pop() {
            return v;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        self.state
    }

    fn now_ms(&self) -> u64 {
        self.now
    }
}

/// Schedule `n` connections (client ports 1000..) and return the chosen indexes.
pub fn picks<S: Scheduler>(s: &mut S, dests: &[DestInfo], n: usize) -> Vec<Option<usize>> {
    let mut host = TestHost::scripted(&[]);
    (0..n)
        .map(|i| s.schedule(&conn(2, 1000 + i as u16), dests, &mut host))
        .collect()
}

/// A new scheduler, updated for `dests`.
pub fn ready<S: Scheduler>(dests: &[DestInfo], flags: u32) -> S {
    let mut s = S::default();
    s.update(dests, flags);
    s
}

/// Count picks per server.
pub fn tally(picks: &[Option<usize>], n: usize) -> Vec<usize> {
    let mut out = vec![0; n];
    for p in picks.iter().flatten() {
        out[*p] += 1;
    }
    out
}
