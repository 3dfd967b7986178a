//! A check's state, fed results and time: the rise/fall machine. No I/O here, so every rule
//! is tested without a server.
//!
//! keepalived takes an up server down after `retry` + 1 failed checks, the repeats
//! `delay_before_retry` apart, and brings it back on one pass; wvs counts `fall` failures
//! and `rise` passes, with the same spacing: repeats after a failure of an up server come
//! `retry_delay` apart, every other check `interval` apart.

use std::collections::VecDeque;

use crate::config::check::Timing;
use crate::consts::CHECK_HISTORY;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    /// Passed.
    pub ok: bool,
    /// When it ended, ms since the Unix epoch.
    pub at_ms: u64,
    /// How long it took, µs.
    pub latency_us: u64,
    /// What was seen: `HTTP 200`, `connection refused`, `timed out after 1 s`, …
    pub detail: String,
    /// The weight it set (a misc check with `dynamic`: its exit code less 2; a file check
    /// with a weight: the configured weight plus the file's number times it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// The state of one probe (a check of one address and port, shared by every service that
/// has it).
#[derive(Debug, Clone)]
pub struct Health {
    up: bool,
    since_ms: u64,
    passes: u32,
    failures: u32,
    history: VecDeque<Outcome>,
}

impl Health {
    /// A server not checked yet is up (keepalived without `alpha`): a configuration change
    /// must not take servers out until a check says so.
    pub fn new(now_ms: u64) -> Self {
        Self::starting(now_ms, true)
    }

    /// A server not checked yet, up or (keepalived's `alpha`) down until its checks pass.
    pub fn starting(now_ms: u64, up: bool) -> Self {
        Self {
            up,
            since_ms: now_ms,
            passes: 0,
            failures: 0,
            history: VecDeque::with_capacity(CHECK_HISTORY),
        }
    }

    /// Whether the server is up.
    pub fn up(&self) -> bool {
        self.up
    }

    /// When the state last changed (or the check started), ms since the epoch.
    pub(crate) fn since_ms(&self) -> u64 {
        self.since_ms
    }

    /// Consecutive passes and failures, the latest run (one of them is 0).
    pub fn runs(&self) -> (u32, u32) {
        (self.passes, self.failures)
    }

    /// The latest results, oldest first.
    pub(crate) fn history(&self) -> &VecDeque<Outcome> {
        &self.history
    }

    /// Record a result; returns the new state when it changed.
    pub(crate) fn record(&mut self, o: Outcome, t: &Timing) -> Option<bool> {
        let now = o.at_ms;
        if o.ok {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
        }
        if self.history.len() == CHECK_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(o);
        let change = if self.up && self.failures >= t.fall {
            Some(false)
        } else if !self.up && self.passes >= t.rise {
            Some(true)
        } else {
            None
        };
        if let Some(up) = change {
            self.up = up;
            self.since_ms = now;
        }
        change
    }

    /// Milliseconds until the next check: a failed check of an up server is repeated after
    /// `retry_delay`, as keepalived's retries; otherwise `interval`.
    pub(crate) fn next_delay_ms(&self, t: &Timing) -> u64 {
        if self.up && self.failures > 0 {
            t.retry_delay_ms
        } else {
            t.interval_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(rise: u32, fall: u32) -> Timing {
        Timing {
            interval_ms: 1000,
            timeout_ms: 500,
            retry_delay_ms: 200,
            rise,
            fall,
            start_down: false,
            warmup_ms: None,
        }
    }

    fn o(ok: bool, at_ms: u64) -> Outcome {
        Outcome {
            weight: None,
            ok,
            at_ms,
            latency_us: 10,
            detail: String::new(),
        }
    }

    #[test]
    fn fall_failures_in_a_row_take_it_down_and_rise_passes_bring_it_back() {
        let t = timing(2, 3);
        let mut h = Health::new(0);
        assert!(h.up());
        assert_eq!(h.record(o(false, 1), &t), None);
        assert_eq!(
            h.next_delay_ms(&t),
            200,
            "a retry, delay_before_retry later"
        );
        assert_eq!(h.record(o(true, 2), &t), None, "a pass resets the count");
        assert_eq!(h.next_delay_ms(&t), 1000);
        assert_eq!(h.record(o(false, 3), &t), None);
        assert_eq!(h.record(o(false, 4), &t), None);
        assert_eq!(h.record(o(false, 5), &t), Some(false));
        assert_eq!((h.up(), h.since_ms()), (false, 5));
        assert_eq!(
            h.next_delay_ms(&t),
            1000,
            "a down server is checked each interval"
        );
        assert_eq!(h.record(o(false, 6), &t), None);
        assert_eq!(h.record(o(true, 7), &t), None);
        assert_eq!(
            h.record(o(false, 8), &t),
            None,
            "rise counts passes in a row"
        );
        assert_eq!(h.record(o(true, 9), &t), None);
        assert_eq!(h.record(o(true, 10), &t), Some(true));
        assert_eq!((h.up(), h.since_ms(), h.runs()), (true, 10, (2, 0)));
    }

    #[test]
    fn keepalived_timing_one_pass_back() {
        // retry 1 (fall 2), rise 1: keepalived's TCP_CHECK.
        let t = timing(1, 2);
        let mut h = Health::new(0);
        assert_eq!(h.record(o(false, 1), &t), None);
        assert_eq!(h.record(o(false, 2), &t), Some(false));
        assert_eq!(h.record(o(true, 3), &t), Some(true));
    }

    /// keepalived's `alpha`: down from the start, up at the first pass (rise 1), with
    /// nothing said before a check ended.
    #[test]
    fn a_server_started_down_comes_up_at_its_first_pass() {
        let t = timing(1, 2);
        let mut h = Health::starting(0, false);
        assert!(!h.up());
        assert_eq!(h.record(o(false, 1), &t), None, "down already");
        assert_eq!(h.record(o(true, 2), &t), Some(true));
    }

    #[test]
    fn history_is_bounded() {
        let t = timing(1, 1);
        let mut h = Health::new(0);
        for i in 0..100 {
            h.record(o(i % 2 == 0, i), &t);
        }
        assert_eq!(h.history().len(), CHECK_HISTORY);
        assert_eq!(h.history().back().map(|o| o.at_ms), Some(99));
    }
}
