//! Connection synchronisation, the datapath's half (`ip_vs_sync.c`).
//!
//! A master director tells its backups about its connections so that, when a backup takes
//! the virtual addresses over, the clients it inherits keep their real servers. The datapath
//! decides per client packet whether the connection (and its persistence template) is to
//! be sent, as `ip_vs_sync_conn_needed` does, and leaves a record in its worker's
//! [`Outbox`] queue: no allocation, no lock but the worker's own. The daemon's sync thread
//! drains the queues into messages ([`crate::wire::sync`]) and sends them.
//!
//! A backup hands each record it receives to [`apply`], which creates or refreshes the
//! connection or template as `ip_vs_proc_conn` does and binds it to the backup's own real
//! server, whose forwarding method it takes (`ip_vs_bind_dest`). Such a connection is
//! served as soon as its packets arrive; the client's next hop is learnt from its first
//! packet.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;

use super::persist::{Link, SyncPutError, TemplateKey};
use super::{Conn, ConnKey, ConnTable, Flags, InsertError, SctpState, TcpState};
use crate::consts::{STAT_SLOTS, SYNC_TEMPLATE_TIMEOUT_SECS};
use crate::model::{Forward, NextHop, Protocol};
use crate::service::Snapshot;
use crate::spec::SyncSettings;
use crate::wire::sync::{Record, Seq, SyncConn, flag};

/// `IP_VS_CTPL_S_ASSURED`: a template one of whose connections was answered.
const TEMPLATE_ASSURED: u16 = 1;
/// `IP_VS_CTPL_S_LAST`.
const TEMPLATE_STATES: u16 = 2;

/// The records the workers left for the master, and whether the daemons run.
#[derive(Debug)]
pub struct Outbox {
    master: AtomicBool,
    backup: AtomicBool,
    queues: Box<[Mutex<Vec<SyncConn>>]>,
    cap: AtomicUsize,
    /// Records queued.
    pub queued: AtomicU64,
    /// Records dropped because a worker's queue was full (`sync_qlen_max`).
    pub dropped: AtomicU64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            master: AtomicBool::new(false),
            backup: AtomicBool::new(false),
            // One per worker, and the offload keeper's (`OFFLOAD_SLOT`), which counts the
            // packets the kernel carried.
            queues: (0..STAT_SLOTS).map(|_| Mutex::new(Vec::new())).collect(),
            cap: AtomicUsize::new(0),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Outbox {
    /// Whether a master daemon runs: the datapath queues records.
    #[inline]
    pub fn is_master(&self) -> bool {
        self.master.load(Relaxed)
    }

    /// Whether a backup daemon runs (`backup_only` looks at it).
    #[inline]
    pub fn is_backup(&self) -> bool {
        self.backup.load(Relaxed)
    }

    /// Start queueing, at most `cap` records per worker: the room is taken now, so a
    /// worker's push never allocates.
    pub fn start_master(&self, cap: usize) {
        let cap = cap.max(1);
        self.cap.store(cap, Relaxed);
        for q in self.queues.iter() {
            let mut q = q.lock();
            q.clear();
            q.reserve_exact(cap);
        }
        self.master.store(true, Relaxed);
    }

    /// Stop queueing and free the queues.
    pub fn stop_master(&self) {
        self.master.store(false, Relaxed);
        for q in self.queues.iter() {
            *q.lock() = Vec::new();
        }
    }

    /// Say whether a backup daemon runs.
    pub fn set_backup(&self, on: bool) {
        self.backup.store(on, Relaxed);
    }

    #[inline]
    fn push(&self, worker: usize, rec: SyncConn) {
        let Some(q) = self.queues.get(worker) else {
            return;
        };
        let mut q = q.lock();
        if q.len() < self.cap.load(Relaxed).min(q.capacity()) {
            q.push(rec);
            self.queued.fetch_add(1, Relaxed);
        } else {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Take worker `worker`'s records: `into` (emptied) is swapped in as its new queue, so
    /// give it the queue's room back ([`Outbox::room`]) and reuse it.
    pub fn drain(&self, worker: usize, into: &mut Vec<SyncConn>) {
        into.clear();
        let cap = self.cap.load(Relaxed);
        if into.capacity() < cap {
            into.reserve_exact(cap);
        }
        if let Some(q) = self.queues.get(worker) {
            std::mem::swap(&mut *q.lock(), into);
        }
    }

    /// How many records a worker's queue holds at most.
    pub fn room(&self) -> usize {
        self.cap.load(Relaxed)
    }

    /// How many worker queues there are.
    pub fn workers(&self) -> usize {
        self.queues.len()
    }
}

/// `sync_endtime` as wvs keeps it in 16 bits: the expiry in seconds, modulo 2^14, above
/// the two bits of the retry count (IPVS keeps jiffies with the retries in the low bits).
const ENDTIME_MASK: u32 = 0x3fff;

fn endtime_word(end_s: u32) -> u32 {
    (end_s & ENDTIME_MASK) << 2
}

/// The signed distance from `b` to `a` in the 14-bit seconds space.
fn endtime_diff(a: u32, b: u32) -> i32 {
    let d = (a >> 2).wrapping_sub(b >> 2) & ENDTIME_MASK;
    if d >= 0x2000 {
        d as i32 - 0x4000
    } else {
        d as i32
    }
}

/// The refresh rule of `ip_vs_sync_conn_needed`: `Some(n)`, the new `sync_endtime`, if
/// the record may go now, `None` if not.
fn refresh(orig: u32, now_s: u32, timeout_s: u32, s: &SyncSettings) -> Option<u32> {
    let mut n = endtime_word(now_s.wrapping_add(timeout_s));
    if s.refresh_period > 0 {
        let min_diff = (timeout_s / 2).max(10);
        if endtime_diff(n, orig).unsigned_abs() < s.refresh_period.min(min_diff) {
            let retries = orig & 3;
            if retries >= u32::from(s.retries) {
                return None;
            }
            // Retries go at refresh_period / 8 after the last send.
            let last = (orig >> 2).wrapping_sub(timeout_s) & ENDTIME_MASK;
            if (now_s.wrapping_sub(last) & ENDTIME_MASK) < s.refresh_period / 8 {
                return None;
            }
            n |= retries + 1;
        }
    }
    Some(n)
}

impl Conn {
    /// `ip_vs_sync_conn_needed` for a connection whose client packet count is now `pkts`.
    pub(crate) fn sync_needed(&mut self, pkts: u32, now: u64, s: &SyncSettings) -> bool {
        if s.persist_mode && self.template.is_some() {
            return false;
        }
        let now_s = (now / 1000) as u32;
        let timeout_s = (self.timeout_ms() / 1000) as u32;
        if self.proto != Protocol::Udp {
            if !self.state_synced() {
                return false;
            }
            // A change to another synced state goes at once; to ESTABLISHED, at the
            // next packet the counts let through.
            if self.flags.contains(Flags::STATE_CHANGED) && !self.established() {
                self.flags.remove(Flags::STATE_CHANGED);
                self.sync_endtime = endtime_word(now_s.wrapping_add(timeout_s)) as u16;
                return true;
            }
        }
        let Some(n) = refresh(u32::from(self.sync_endtime), now_s, timeout_s, s) else {
            return false;
        };
        if s.period > 0 {
            if pkts % s.period != s.threshold {
                return false;
            }
        } else if s.refresh_period == 0 && pkts != s.threshold {
            return false;
        }
        self.flags.remove(Flags::STATE_CHANGED);
        self.sync_endtime = n as u16;
        true
    }

    /// Whether IPVS syncs a connection in its state (`ip_vs_sync_conn_needed`): TCP's
    /// ESTABLISHED and closing states, SCTP's ESTABLISHED, shutdown states and CLOSED,
    /// every UDP flow.
    fn state_synced(&self) -> bool {
        match self.proto {
            Protocol::Tcp => matches!(
                self.state,
                TcpState::Established
                    | TcpState::FinWait
                    | TcpState::Close
                    | TcpState::CloseWait
                    | TcpState::TimeWait
            ),
            Protocol::Sctp => matches!(
                self.sctp_state(),
                SctpState::Established
                    | SctpState::ShutdownSent
                    | SctpState::ShutdownReceived
                    | SctpState::ShutdownAckSent
                    | SctpState::Closed
            ),
            Protocol::Udp => true,
        }
    }

    /// Whether it is ESTABLISHED (TCP or SCTP).
    fn established(&self) -> bool {
        self.state == TcpState::Established || self.sctp_state() == SctpState::Established
    }

    /// The connection as a sync message carries it.
    pub fn sync_record(&self) -> SyncConn {
        let mut flags = fwd_flag(self.fwd);
        if self.no_output() {
            flags |= flag::NOOUTPUT;
        }
        if self.inactive() {
            flags |= flag::INACTIVE;
        }
        if self.no_cport() {
            flags |= flag::NO_CPORT;
        }
        if self.flags.contains(Flags::SYNCED) {
            flags |= flag::SYNC;
        }
        let seq = self.app().and_then(|a| {
            let g = a.inner.lock();
            let (i, o) = (g.in_seq, g.out_seq);
            if i.set {
                flags |= flag::IN_SEQ;
            }
            if o.set {
                flags |= flag::OUT_SEQ;
            }
            (i.set || o.set).then(|| [wire_seq(&i), wire_seq(&o)])
        });
        SyncConn {
            protocol: self.proto.number(),
            flags,
            state: u16::from(self.state_index()),
            cport: self.cport,
            vport: self.vport,
            dport: self.rport,
            fwmark: self.fwmark(),
            timeout: (self.timeout_ms() / 1000).min(u64::from(u32::MAX)) as u32,
            caddr: self.caddr(),
            vaddr: self.vaddr(),
            daddr: self.raddr(),
            seq,
        }
    }

    /// Whether it was made from a sync message (`IP_VS_CONN_F_SYNC`).
    pub fn synced(&self) -> bool {
        self.flags.contains(Flags::SYNCED)
    }
}

fn wire_seq(a: &super::app::SeqAdj) -> Seq {
    Seq {
        init_seq: a.init_seq,
        delta: a.delta as u32,
        previous_delta: a.previous_delta as u32,
    }
}

fn seq_adj(s: &Seq, set: bool) -> super::app::SeqAdj {
    super::app::SeqAdj {
        init_seq: s.init_seq,
        delta: s.delta as i32,
        previous_delta: s.previous_delta as i32,
        set,
    }
}

/// `IP_VS_CONN_F_FWD_MASK`'s value for a method (full NAT, which IPVS lacks, is never sent).
fn fwd_flag(f: Forward) -> u32 {
    match f {
        Forward::Masq | Forward::FullNat => flag::MASQ,
        Forward::Local => flag::LOCALNODE,
        Forward::Tunnel(_) => flag::TUNNEL,
        Forward::Route => flag::DROUTE,
        Forward::Bypass => flag::BYPASS,
    }
}

impl Link {
    /// `ip_vs_sync_conn_needed` for a template after `n` packets of its connections (one
    /// through wvs, or those the offload carried since its last merge): counted by them,
    /// never forced, and let through by `sync_period` whatever the count.
    pub(crate) fn sync_needed(&self, n: u32, now: u64, s: &SyncSettings) -> bool {
        let old = self.in_pkts.fetch_add(n, Relaxed);
        let orig = self.sync_endtime.load(Relaxed);
        let Some(end) = refresh(orig, (now / 1000) as u32, self.timeout_s, s) else {
            return false;
        };
        // Whether one of the `n` counts was the threshold.
        let hit = (1..=n).contains(&s.threshold.wrapping_sub(old));
        if s.period == 0 && s.refresh_period == 0 && !hit {
            return false;
        }
        self.sync_endtime
            .compare_exchange(orig, end, Relaxed, Relaxed)
            .is_ok()
    }

    /// The template as a sync message carries it, for its server `dest` (the server of
    /// the connections it placed).
    pub(crate) fn sync_record(&self, dest: &crate::service::Dest, rport: u16) -> SyncConn {
        let fwd = dest.forward();
        let mut flags = flag::TEMPLATE | fwd_flag(fwd) | flag::INACTIVE;
        if !fwd.sees_replies() {
            flags |= flag::NOOUTPUT;
        }
        SyncConn {
            // A fwmark service's template: IPPROTO_IP, its mark in the record.
            protocol: if self.key.fwmark != 0 {
                0
            } else {
                self.key.proto.number()
            },
            flags,
            state: if self.assured() { TEMPLATE_ASSURED } else { 0 },
            cport: 0,
            vport: self.key.vport,
            // A template of every port (port-0 and fwmark services') has none of its
            // server's either: <proto, caddr, 0, vaddr, 0, daddr, 0>.
            dport: if self.key.vport == 0 { 0 } else { rport },
            fwmark: self.key.fwmark,
            timeout: self.timeout_s,
            caddr: self.key.client,
            vaddr: self.key.vaddr,
            daddr: dest.addr,
            seq: None,
        }
    }
}

impl ConnTable {
    /// Send what a client's packet on `c` calls for to the backups: the connection and the
    /// template that placed it, each when `ip_vs_sync_conn_needed` says so.
    #[inline]
    pub(crate) fn sync_in(&self, worker: usize, c: &mut Conn, now: u64, s: &SyncSettings) {
        let out = &self.sync;
        // A full-NAT connection's local address and port have no place in the message.
        if c.fwd != Forward::FullNat && c.sync_needed(c.in_pkts, now, s) {
            out.push(worker, c.sync_record());
        }
        // A persistence engine's template is not synced: the v1 message's PE_NAME and
        // PE_DATA options are not written (yet); the backup keeps its connections.
        if let Some(t) = &c.template
            && t.link().pe_data().is_none()
        {
            let link = t.link();
            if link.sync_needed(1, now, s) {
                out.push(worker, link.sync_record(&c.dest, c.rport));
            }
        }
    }

    /// What `n` client packets of `c` that the offload carried call for, as [`sync_in`]
    /// for each of them would have: `c.in_pkts` went from `old` to `old + n` (saturating),
    /// and the connection is sent once, at the last of those counts its rule lets through
    /// (or at the last count, which `sync_refresh_period` may let through), its template
    /// counted by all `n`. `now` is the last carried packet's time. Records go out up to a
    /// merge later than IPVS sends them (`OFFLOAD_MERGE_MS`), and of a burst of several
    /// periods in one merge only one.
    ///
    /// [`sync_in`]: ConnTable::sync_in
    pub(crate) fn sync_carried(
        &self,
        slot: usize,
        c: &mut Conn,
        (old, n): (u32, u32),
        now: u64,
        s: &SyncSettings,
    ) {
        let out = &self.sync;
        let new = old.saturating_add(n);
        let pkts = if s.period > 0 {
            // The greatest count in (old, new] that is `threshold` modulo `period`.
            new.checked_sub((new % s.period + s.period - s.threshold % s.period) % s.period)
                .filter(|&p| p > old)
                .unwrap_or(new)
        } else if (old.saturating_add(1)..=new).contains(&s.threshold) {
            s.threshold
        } else {
            new
        };
        if c.fwd != Forward::FullNat && c.sync_needed(pkts, now, s) {
            out.push(slot, c.sync_record());
        }
        if let Some(t) = &c.template
            && t.link().pe_data().is_none()
        {
            let link = t.link();
            if link.sync_needed(n, now, s) {
                out.push(slot, link.sync_record(&c.dest, c.rport));
            }
        }
    }

    /// The sync daemon's queues and switches.
    pub fn sync(&self) -> &Outbox {
        &self.sync
    }
}

impl ConnTable {
    /// Every connection and template a master would sync, as records (wvs's full resync,
    /// `sync_full_period`: a director that comes back as backup learns the connections that
    /// carry no packet meanwhile, which IPVS's per-packet rule never sends again).
    pub fn sync_all(&self, s: &SyncSettings, mut f: impl FnMut(SyncConn)) {
        self.for_each(|c| {
            if c.state_synced()
                && c.fwd != Forward::FullNat
                && !c.wildcard()
                && !(s.persist_mode && c.template.is_some())
            {
                f(c.sync_record());
            }
        });
        self.persist().for_each(|k, t| {
            if t.pe_data().is_some() {
                return;
            }
            let rport = if t.dest.port == 0 {
                k.vport
            } else {
                t.dest.port
            };
            f(t.link().sync_record(&t.dest, rport));
        });
    }
}

/// What a backup did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new connection or template.
    Created,
    /// One it had, refreshed.
    Updated,
}

/// Why a backup left a record out (the kernel's reasons, and wvs's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// Neither TCP nor UDP.
    #[error("unsupported protocol")]
    Protocol,
    /// A state the protocol does not have.
    #[error("invalid state")]
    State,
    /// A persistence engine's data: wvs has no engines yet.
    #[error("no such persistence engine")]
    PersistenceEngine,
    /// No such virtual service here.
    #[error("no such virtual service")]
    NoService,
    /// No such real server in the service here.
    #[error("no such real server")]
    NoDest,
    /// The backup's server is full NAT, which needs a local address the message lacks.
    #[error("full NAT server")]
    FullNat,
    /// The table is full.
    #[error("connection table full")]
    Full,
    /// The end of a connection the backup already replaced.
    #[error("stale")]
    Stale,
}

/// Create or refresh what `r` describes (`ip_vs_proc_conn`), bound to `snap`'s servers.
/// `threshold` is `sync_threshold`, which a synced connection's packet count starts at.
pub fn apply(
    table: &ConnTable,
    snap: &Snapshot,
    r: &Record<'_>,
    now: u64,
    threshold: u32,
) -> Result<Applied, Ignored> {
    let c = &r.conn;
    let flags = (c.flags & flag::BACKUP_MASK) | flag::SYNC;
    let template = flags & flag::TEMPLATE != 0;
    let proto = match c.protocol {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        132 => Protocol::Sctp,
        // A fwmark service's template (IPPROTO_IP): keyed as wvs keys them.
        0 if template && c.fwmark != 0 => Protocol::Tcp,
        _ => return Err(Ignored::Protocol),
    };
    // The service: a fwmark service by the record's mark (`ip_vs_find_dest` with
    // `cp->fwmark`), else by its address and port.
    let service = |vport: u16| match c.fwmark {
        0 => snap.service(proto, c.vaddr, vport),
        mark => snap.fwmark_service(mark, c.vaddr),
    };
    if !template {
        let states = match proto {
            Protocol::Tcp => TcpState::ALL.len() as u16,
            Protocol::Udp => 1,
            Protocol::Sctp => SctpState::ALL.len() as u16,
        };
        if c.state >= states {
            return Err(Ignored::State);
        }
    }
    if r.pe_data.is_some() {
        return Err(Ignored::PersistenceEngine);
    }
    let find = || {
        if let Some(svc) = service(c.vport) {
            let d = (svc.dests.iter().chain(svc.draining.iter()))
                // A template of every port names no port of its server.
                .find(|d| {
                    d.addr == c.daddr
                        && (d.port == c.dport || d.port == 0 || (template && c.dport == 0))
                })?;
            return Some((svc, d));
        }
        // An FTP data connection: ip_vs_service_find's fallback from the data ports (20,
        // and the unprivileged ones) to the control port's service with a helper, whose
        // server of that address it goes to, on the data port.
        if template || c.fwmark != 0 || !(c.vport == 20 || c.vport >= 1024) {
            return None;
        }
        let svc = service(crate::consts::FTP_PORT).filter(|s| !s.helpers.is_empty())?;
        let d = (svc.dests.iter().chain(svc.draining.iter())).find(|d| d.addr == c.daddr)?;
        Some((svc, d))
    };
    if template {
        let timeout_s = if c.timeout == 0 {
            SYNC_TEMPLATE_TIMEOUT_SECS
        } else {
            c.timeout
        };
        let key = TemplateKey {
            proto,
            fwmark: c.fwmark,
            client: c.caddr,
            vaddr: c.vaddr,
            vport: c.vport,
            pe: 0,
        };
        let mut missing = Ignored::NoService;
        let r = table.persist().sync_put(
            key,
            now,
            u64::from(timeout_s) * 1000,
            c.state == TEMPLATE_ASSURED && c.state < TEMPLATE_STATES,
            || match find() {
                Some((_, d)) => Some(d.clone()),
                None => {
                    if service(c.vport).is_some() {
                        missing = Ignored::NoDest;
                    }
                    None
                }
            },
        );
        return match r {
            Ok(true) => Ok(Applied::Created),
            Ok(false) => Ok(Applied::Updated),
            Err(SyncPutError::NoDest) => Err(missing),
            Err(SyncPutError::Full) => Err(Ignored::Full),
        };
    }
    // Checked above: below the protocol's count of states.
    let (state, sctp) = match proto {
        Protocol::Tcp => (TcpState::ALL[usize::from(c.state)], SctpState::None),
        Protocol::Udp => (TcpState::None, SctpState::None),
        Protocol::Sctp => (
            TcpState::None,
            SctpState::from_index(c.state as u8).unwrap_or(SctpState::None),
        ),
    };
    let key = ConnKey {
        proto,
        saddr: c.caddr,
        sport: c.cport,
        daddr: c.vaddr,
        dport: c.vport,
    };
    let timeouts = service(c.vport).map_or(&snap.timeouts, |s| &s.timeouts);
    let timeout_ms = if c.timeout != 0 {
        u64::from(c.timeout) * 1000
    } else {
        match proto {
            Protocol::Tcp => timeouts.tcp(state),
            Protocol::Udp => timeouts.udp(),
            Protocol::Sctp => sctp.timeout_ms(),
        }
    };
    let inactive = flags & flag::INACTIVE != 0;
    let refresh = |cp: &mut Conn| {
        if cp.raddr() != c.daddr || cp.rport != c.dport {
            if inactive {
                // The end of a connection this backup already replaced.
                return Err(Ignored::Stale);
            }
            cp.set_expire_now(true);
            return Ok(false);
        }
        if cp.inactive() != inactive {
            cp.dest.set_inactive(inactive);
            cp.flags.set(Flags::INACTIVE, inactive);
        }
        set_seq(cp, flags, c.seq.as_ref());
        cp.state = state;
        cp.set_sctp_state(sctp);
        cp.flags.remove(Flags::STATE_CHANGED);
        cp.in_pkts = threshold;
        cp.set_timeout_ms(timeout_ms);
        cp.touch(now);
        Ok(true)
    };
    match table.with_conn(super::table::KeyDir::In, &key, refresh) {
        Some(Ok(true)) => return Ok(Applied::Updated),
        Some(Err(e)) => return Err(e),
        // Replaced: the old one is gone, a new one is made below.
        Some(Ok(false)) | None => {}
    }
    let Some((svc, dest)) = find() else {
        return Err(if service(c.vport).is_some() {
            Ignored::NoDest
        } else {
            Ignored::NoService
        });
    };
    if dest.forward() == Forward::FullNat {
        return Err(Ignored::FullNat);
    }
    let mut cp = Conn::new(&key, dest.clone(), svc.stats.clone(), NextHop::UNKNOWN, now);
    // The record's port: a data connection's differs from its server's control port.
    cp.rport = c.dport;
    cp.flags.insert(Flags::SYNCED);
    if !inactive {
        cp.dest.set_inactive(false);
        cp.flags.remove(Flags::INACTIVE);
    }
    // ip_vs_bind_app: the helpers of the service, for the methods whose replies pass here.
    // (Not for an FTP data connection found through the control port's service.)
    if !svc.helpers.is_empty() && cp.fwd == Forward::Masq && svc.key.port == c.vport {
        cp.set_app(super::app::AppConn::new(
            svc.helpers.iter().map(|h| Arc::from(h.name())),
        ));
    }
    set_seq(&mut cp, flags, c.seq.as_ref());
    cp.state = state;
    cp.set_sctp_state(sctp);
    cp.in_pkts = threshold;
    cp.set_timeout_ms(timeout_ms);
    cp.touch(now);
    match table.insert(cp) {
        Ok(()) => Ok(Applied::Created),
        Err(e) => {
            let full = matches!(e, InsertError::Full(_));
            e.into_conn().release();
            if full {
                Err(Ignored::Full)
            } else {
                Ok(Applied::Updated)
            }
        }
    }
}

/// The helpers' sequence adjustments from a record: what the options carry for the
/// directions its flags name, zero for a flag without options (the kernel's fix for
/// messages that have the flags and no data).
fn set_seq(cp: &mut Conn, flags: u32, seq: Option<&[Seq; 2]>) {
    let Some(app) = cp.app() else {
        return;
    };
    let zero = [Seq::default(); 2];
    let s = seq.unwrap_or(&zero);
    let mut g = app.inner.lock();
    g.in_seq = seq_adj(&s[0], flags & flag::IN_SEQ != 0);
    g.out_seq = seq_adj(&s[1], flags & flag::OUT_SEQ != 0);
}

/// Where the sync records of a connection go when there are several sync threads
/// (`sync_ports`): one thread per client endpoint, so a connection's records stay in order.
pub fn thread_of(c: &SyncConn, threads: usize) -> usize {
    if threads <= 1 {
        return 0;
    }
    let a = match c.caddr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    };
    let h = a.wrapping_mul(0x9e37_79b1) ^ u32::from(c.cport).wrapping_mul(0x85eb_ca6b);
    (h >> 16) as usize % threads
}
