//! A connection's part of the application helpers (IPVS's `cp->app`, `cp->in_seq`,
//! `cp->out_seq`): the helpers bound to it with their state, the sequence number deltas a
//! resized payload leaves in each direction, and how many expected connections it controls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use parking_lot::Mutex;
use wvs_sdk::HELPER_STATE_LEN;

use crate::consts::HELPER_MAX_EXPECTS_PER_CONN;

/// The helper part of a connection bound to helpers; shared with the connections it
/// controls.
#[derive(Debug)]
pub struct AppConn {
    /// What the helpers and the sequence adjustment change, under the connection's own lock
    /// (IPVS's `cp->lock`), held while a helper runs: packets of one connection in the two
    /// directions see each other's deltas in order.
    pub inner: Mutex<AppInner>,
    /// A synproxied connection whose server has not answered yet (`AppInner::sp` is in
    /// its half phase): read without the lock by each of the client's packets.
    pub synproxy_half: std::sync::atomic::AtomicBool,
    /// Expected connections it controls (IPVS's `n_control`): it does not expire while
    /// there are any.
    pub n_control: AtomicU32,
    /// The keys (as the client sends) of the last expected connections it asked for, in a
    /// ring: asking for more than [`HELPER_MAX_EXPECTS_PER_CONN`] removes the oldest if no
    /// packet has used it yet, so one control connection cannot fill the table.
    pub expected: Mutex<ExpectRing>,
}

/// The ring of [`AppConn::expected`].
#[derive(Debug, Default)]
pub struct ExpectRing {
    keys: [Option<crate::conn::ConnKey>; HELPER_MAX_EXPECTS_PER_CONN],
    next: usize,
}

impl ExpectRing {
    /// Record `key` and return the key it replaces, if the ring was full.
    pub fn push(&mut self, key: crate::conn::ConnKey) -> Option<crate::conn::ConnKey> {
        let slot = &mut self.keys[self.next];
        self.next = (self.next + 1) % HELPER_MAX_EXPECTS_PER_CONN;
        slot.replace(key)
    }
}

/// The state under [`AppConn::inner`].
#[derive(Debug)]
pub struct AppInner {
    /// The helpers bound at creation, in order, with their state.
    pub helpers: Vec<AppSlot>,
    /// Client to server (`cp->in_seq`).
    pub in_seq: SeqAdj,
    /// Server to client (`cp->out_seq`).
    pub out_seq: SeqAdj,
    /// The initial sequence numbers seen in the SYNs (client's, server's), for stream
    /// offsets.
    pub in_isn: Option<u32>,
    /// The server's.
    pub out_isn: Option<u32>,
    /// A helper failed: the connection is passed through unmodified from then on (its
    /// deltas still apply).
    pub faulted: bool,
    /// A synproxied connection's join (`crate::synproxy`).
    pub sp: Option<crate::synproxy::Join>,
}

/// One bound helper.
#[derive(Debug)]
pub struct AppSlot {
    /// The helper's name (looked up in the running snapshot per packet, so a helper
    /// replaced while the connection lives takes over).
    pub name: Arc<str>,
    /// The connection's state for it.
    pub state: [u8; HELPER_STATE_LEN],
}

impl AppConn {
    /// A connection bound to `helpers`.
    pub fn new(helpers: impl Iterator<Item = Arc<str>>) -> Arc<Self> {
        Self::with_join(helpers, None)
    }

    /// A connection bound to `helpers`, synproxied if `sp` is given.
    pub fn with_join(
        helpers: impl Iterator<Item = Arc<str>>,
        sp: Option<crate::synproxy::Join>,
    ) -> Arc<Self> {
        let half = sp
            .as_ref()
            .is_some_and(|j| j.phase == crate::synproxy::Phase::Half);
        if half {
            crate::synproxy::HALF_JOINED.fetch_add(1, Relaxed);
        }
        Arc::new(Self {
            inner: Mutex::new(AppInner {
                helpers: helpers
                    .map(|name| AppSlot {
                        name,
                        state: [0; HELPER_STATE_LEN],
                    })
                    .collect(),
                in_seq: SeqAdj::default(),
                out_seq: SeqAdj::default(),
                in_isn: None,
                out_isn: None,
                faulted: false,
                sp,
            }),
            synproxy_half: std::sync::atomic::AtomicBool::new(half),
            n_control: AtomicU32::new(0),
            expected: Mutex::new(ExpectRing::default()),
        })
    }

    /// A synproxied connection's server answered (or refused): it is no longer half
    /// joined.
    pub fn end_half(&self) {
        if self.synproxy_half.swap(false, Relaxed) {
            crate::synproxy::HALF_JOINED.fetch_sub(1, Relaxed);
        }
    }

    /// Whether expected connections it controls are alive.
    pub(crate) fn controls(&self) -> bool {
        self.n_control.load(Relaxed) > 0
    }
}

impl Drop for AppConn {
    fn drop(&mut self) {
        self.end_half();
    }
}

/// An expected connection's link to the connection that asked for it (`cp->control`):
/// counted there while it lives.
#[derive(Debug)]
pub struct Controller {
    app: Arc<AppConn>,
    /// No packet has used the expected connection yet: the defense may reclaim it, and a
    /// newer expectation of the same controller may replace it.
    waiting: bool,
}

impl Controller {
    /// Link to `app` and count it there.
    pub fn new(app: &Arc<AppConn>) -> Self {
        app.n_control.fetch_add(1, Relaxed);
        Self {
            app: app.clone(),
            waiting: true,
        }
    }

    /// A packet used the expected connection.
    #[inline]
    pub fn used(&mut self) {
        self.waiting = false;
    }

    /// Whether no packet has used it yet.
    #[inline]
    pub fn waiting(&self) -> bool {
        self.waiting
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.app.n_control.fetch_sub(1, Relaxed);
    }
}

/// One direction's sequence number adjustment (`struct ip_vs_seq`): segments after
/// `init_seq` (the original sequence number of the last resized one) are shifted by
/// `delta`, earlier ones (retransmissions) by `previous_delta`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeqAdj {
    /// The original sequence number of the last resized segment.
    pub init_seq: u32,
    /// Bytes added (or removed, negative) up to and including it.
    pub delta: i32,
    /// Bytes added before it.
    pub previous_delta: i32,
    /// A resize was recorded (`IP_VS_CONN_F_IN_SEQ` / `_OUT_SEQ`).
    pub set: bool,
}

/// `after(a, b)`: `a` comes later than `b` in sequence space.
#[inline]
pub fn after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

impl SeqAdj {
    /// Whether anything is to be adjusted.
    #[inline]
    pub fn active(&self) -> bool {
        self.delta != 0 || self.previous_delta != 0
    }

    /// The sequence number a segment of this direction goes out with (`vs_fix_seq`).
    #[inline]
    pub(crate) fn fix_seq(&self, seq: u32) -> u32 {
        if !self.active() {
            seq
        } else if after(seq, self.init_seq) {
            seq.wrapping_add(self.delta as u32)
        } else {
            seq.wrapping_add(self.previous_delta as u32)
        }
    }

    /// The acknowledgement (or SACK edge) the other side's segment goes out with, for
    /// data of this direction (`vs_fix_ack_seq`): it acknowledges the shifted numbers.
    #[inline]
    pub(crate) fn fix_ack(&self, ack: u32) -> u32 {
        if !self.active() {
            ack
        } else if after(ack, self.init_seq.wrapping_add(self.delta as u32)) {
            ack.wrapping_sub(self.delta as u32)
        } else {
            ack.wrapping_sub(self.previous_delta as u32)
        }
    }

    /// Record that the segment whose original sequence number is `seq` changed length by
    /// `diff` (`vs_seq_update`): a retransmission of it, or of an older one, does not
    /// count again.
    pub fn update(&mut self, seq: u32, diff: i32) {
        if !self.set || after(seq, self.init_seq) {
            self.previous_delta = self.delta;
            self.delta = self.delta.wrapping_add(diff);
            self.init_seq = seq;
            self.set = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipvs_seq_rules() {
        let mut s = SeqAdj::default();
        assert_eq!(s.fix_seq(1000), 1000);
        // Segment 1000..1050 grew by 5.
        s.update(1000, 5);
        assert_eq!(
            s.fix_seq(1000),
            1000,
            "its own retransmission: previous delta (0)"
        );
        assert_eq!(s.fix_seq(1050), 1055);
        // The peer acks 1055 (all of it): it means 1050.
        assert_eq!(s.fix_ack(1055), 1050);
        assert_eq!(s.fix_ack(1000), 1000);
        // A retransmission of the resized segment does not count twice.
        s.update(1000, 5);
        assert_eq!(s.delta, 5);
        // The next resize (at 1050, shrinking by 2).
        s.update(1050, -2);
        assert_eq!((s.delta, s.previous_delta), (3, 5));
        assert_eq!(s.fix_seq(1050), 1055);
        assert_eq!(s.fix_seq(1100), 1103);
    }

    #[test]
    fn wraps_around_sequence_space() {
        let mut s = SeqAdj::default();
        s.update(u32::MAX - 10, 20);
        assert_eq!(s.fix_seq(5), 25);
        assert_eq!(s.fix_ack(25), 5);
    }

    #[test]
    fn controller_counts() {
        let a = AppConn::new(std::iter::empty());
        let c = Controller::new(&a);
        assert!(a.controls());
        drop(c);
        assert!(!a.controls());
    }
}
