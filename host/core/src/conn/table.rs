//! The connection table: finds a connection from a packet of either direction.
//!
//! Design:
//! - Sharded. The shard is chosen by hashing the *client* endpoint (protocol, address,
//!   port), which both directions' keys contain, so a connection and both of its index entries
//!   live in one shard: one lock per packet, and insertion and removal are atomic. Workers
//!   contend only when they touch the same shard at the same instant; there is no global lock.
//! - Hashed with a random key chosen at start (`foldhash`'s `RandomState`), as IPVS seeds its
//!   hash with `ip_vs_conn_rnd`, so no client can aim its flows at one bucket.
//! - Each shard keeps its connections in a slab and one `hashbrown::HashTable` of slab
//!   indices, tagged with the direction of the key they stand for; an index entry costs 4
//!   bytes, not a copy of the key.
//! - Bounded: the table holds at most `max_conns` and each shard at most its share; a full
//!   shard (or table) takes a new connection in place of a half-open one, or refuses it and
//!   the caller counts the drop (docs/defense.md).
//! - Expired by a timer: [`ConnTable::sweep`] removes connections whose time is up, or whose
//!   real server is gone, and is called every `CONN_SWEEP_INTERVAL_MS` by the host.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use hashbrown::HashTable;
use parking_lot::Mutex;
use slab::Slab;

use super::{Conn, ConnKey};
use crate::consts::CONN_SHARDS;
use crate::model::Protocol;

/// Which of a connection's two keys an index entry or a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyDir {
    /// Client -> VIP key.
    In,
    /// Real server -> client key.
    Out,
}

const OUT_TAG: u32 = 1 << 31;

/// Why a connection could not be added.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// The table (this connection's shard of it) holds as many connections as it may.
    #[error("connection table full")]
    Full(Conn),
    /// A connection with the same key was added meanwhile by another worker.
    #[error("connection exists")]
    Exists(Conn),
    /// Full NAT: no local address of the service has a free port for this client.
    #[error("no free local port")]
    NoLocalPort(Conn),
}

impl InsertError {
    /// Give the refused connection back.
    pub(crate) fn into_conn(self) -> Conn {
        match self {
            Self::Full(c) | Self::Exists(c) | Self::NoLocalPort(c) => c,
        }
    }
}

#[repr(align(128))]
struct Shard {
    inner: Mutex<ShardInner>,
}

struct ShardInner {
    index: HashTable<u32>,
    conns: Slab<Conn>,
    /// Full NAT's free local ports of this shard, per protocol and local address.
    lports: LocalPortPools,
}

/// The shared connection table.
pub struct ConnTable {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
    per_shard_max: usize,
    len: AtomicUsize,
    /// Expected connections still waiting for a port (IPVS's `no_cport_conns`): while
    /// there are none, a lookup that misses looks no further.
    wildcards: AtomicUsize,
    /// `expire_nodest_conn`: the sweep also removes connections whose server is gone.
    expire_nodest: std::sync::atomic::AtomicBool,
    persist: super::persist::PersistTable,
    defense: super::defense::Defense,
    own: super::own::OwnChecks,
    pub(super) sync: super::sync::Outbox,
    max_conns: usize,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len())
            .finish()
    }
}

impl ConnTable {
    /// An empty table for at most `max_conns` connections.
    pub fn new(max_conns: usize) -> Self {
        let shards = (0..CONN_SHARDS)
            .map(|_| Shard {
                inner: Mutex::new(ShardInner {
                    index: HashTable::new(),
                    conns: Slab::new(),
                    lports: LocalPortPools::default(),
                }),
            })
            .collect();
        Self {
            shards,
            hasher: foldhash::fast::RandomState::default(),
            per_shard_max: max_conns.div_ceil(CONN_SHARDS).max(1),
            len: AtomicUsize::new(0),
            wildcards: AtomicUsize::new(0),
            expire_nodest: std::sync::atomic::AtomicBool::new(true),
            persist: super::persist::PersistTable::new(max_conns),
            defense: super::defense::Defense::default(),
            own: super::own::OwnChecks::default(),
            sync: super::sync::Outbox::default(),
            max_conns,
        }
    }

    /// The defense strategies' state.
    pub fn defense(&self) -> &super::defense::Defense {
        &self.defense
    }

    /// The director's own checks through a local VIP, whose answers the datapath hands to
    /// its stack.
    pub fn own(&self) -> &super::own::OwnChecks {
        &self.own
    }

    /// The table's bound.
    pub fn max_conns(&self) -> usize {
        self.max_conns
    }

    /// Whether a new connection from `key` (a client's packet) would find room in its
    /// shard, evicting a half-open entry there if it is full; checked before the scheduler
    /// is called, so that a flood against a full table costs no scheduling.
    pub(crate) fn has_room(&self, key: &ConnKey) -> bool {
        let mut g = self.shard_for(KeyDir::In, key).inner.lock();
        (g.conns.len() < self.per_shard_max && self.len() < self.max_conns)
            || self.evict_locked(&mut g, false)
    }

    /// Evict one half-open entry of a full shard (a few random slots are looked at, so a
    /// flood's insert costs a bounded amount); whether one was. `pass_place`: its place in
    /// the table's count goes to the connection about to be inserted, with no moment at
    /// which the count is off by one either way (another worker could take a freed place,
    /// and the API reads the count).
    fn evict_locked(&self, inner: &mut ShardInner, pass_place: bool) -> bool {
        let cap = inner.conns.capacity();
        if cap == 0 {
            return false;
        }
        // Random slots first (a shard's slab is at least half full when the shard is), then
        // the first entries in order: either way a bounded look.
        let probed = (0..crate::consts::CONN_EVICT_PROBES)
            .map(|_| rand::random::<u32>() as usize % cap)
            .find(|&i| inner.conns.get(i).is_some_and(Conn::half_open));
        let found = probed.or_else(|| {
            inner
                .conns
                .iter()
                .take(crate::consts::CONN_EVICT_PROBES * 8)
                .find(|(_, c)| c.half_open())
                .map(|(i, _)| i)
        });
        let Some(idx) = found else {
            return false;
        };
        if pass_place {
            self.take_locked(inner, idx);
        } else {
            self.remove_locked(inner, idx);
        }
        self.defense.evicted.fetch_add(1, Relaxed);
        true
    }

    /// `ip_vs_random_dropentry`, once a second while `drop_entry` acts: a random 1/32 of
    /// the table (that share of its shards) is scanned, and entries in their handshake,
    /// and idle ones (60 s untouched) with few packets (`todrop_entry`), are expired.
    /// Returns how many were.
    pub fn random_dropentry(&self, now: u64) -> usize {
        let mut counters = [0u8; 9];
        let mut removed = 0;
        for _ in 0..(CONN_SHARDS / 32).max(1) {
            let shard = &self.shards[rand::random::<u32>() as usize % CONN_SHARDS];
            let mut g = shard.inner.lock();
            let ShardInner {
                index,
                conns,
                lports,
            } = &mut *g;
            conns.retain(|idx, c| {
                let controls = c.app().is_some_and(|a| a.controls());
                let waiting = c.waiting_expectation();
                if !waiting && (controls || c.wildcard()) {
                    return true;
                }
                let idle = now >= (c.expires - c.timeout_ms().min(c.expires)) + 60_000;
                let drop = waiting
                    || match (c.proto, c.state) {
                        (Protocol::Tcp, super::TcpState::SynRecv | super::TcpState::SynAck) => true,
                        (Protocol::Tcp, super::TcpState::Established) | (Protocol::Udp, _) => {
                            idle && super::defense::todrop_entry(c.in_pkts, &mut counters)
                        }
                        // SCTP: INIT1 and INIT at once, ESTABLISHED as TCP's.
                        (Protocol::Sctp, _) => match c.sctp_state() {
                            super::SctpState::Init1 | super::SctpState::Init => true,
                            super::SctpState::Established => {
                                idle && super::defense::todrop_entry(c.in_pkts, &mut counters)
                            }
                            _ => false,
                        },
                        _ => false,
                    };
                if !drop {
                    return true;
                }
                self.unindex(index, idx as u32, c);
                give_back(lports, c);
                removed += 1;
                false
            });
        }
        self.len.fetch_sub(removed, Relaxed);
        self.defense
            .dropped_entries
            .fetch_add(removed as u64, Relaxed);
        removed
    }

    /// The persistence templates.
    pub fn persist(&self) -> &super::persist::PersistTable {
        &self.persist
    }

    /// Number of connections in the table.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn shard(&self, proto: Protocol, caddr: IpAddr, cport: u16) -> &Shard {
        &self.shards[self.shard_index(proto, caddr, cport)]
    }

    #[inline]
    fn shard_index(&self, proto: Protocol, caddr: IpAddr, cport: u16) -> usize {
        let h = self.hasher.hash_one((proto, caddr, cport));
        // Mixed again (Fibonacci hashing) before the high bits pick the shard: foldhash's
        // bits alone, for one client's consecutive ports, left a few shards short under some
        // seeds (a table refusing connections before it was full). hashbrown's own bits
        // come from another hash (`hash`), so the two do not correlate.
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % CONN_SHARDS
    }

    #[inline]
    fn shard_for(&self, dir: KeyDir, key: &ConnKey) -> &Shard {
        match dir {
            KeyDir::In => self.shard(key.proto, key.saddr, key.sport),
            KeyDir::Out => self.shard(key.proto, key.daddr, key.dport),
        }
    }

    #[inline]
    fn hash(&self, dir: KeyDir, key: &ConnKey) -> u64 {
        self.hasher.hash_one((dir == KeyDir::Out, key))
    }

    /// The address of the shard a packet with `key` (travelling in `dir`) would lock, for
    /// a prefetch: a worker touches the shards of a whole received batch before it
    /// processes the batch, so the lock's cache line is on its way while earlier packets
    /// are handled. (hashbrown does not expose where a key's control bytes are, so those
    /// and the slab entry are not prefetched.)
    #[inline]
    pub(crate) fn shard_hint(&self, dir: KeyDir, key: &ConnKey) -> *const u8 {
        (self.shard_for(dir, key) as *const Shard).cast()
    }

    /// Find the connection a packet with `key` (travelling in `dir`) belongs to and run `f`
    /// on it under its shard's lock. If `f` sets `expire_now`, the connection is removed.
    #[inline]
    pub(crate) fn with_conn<R>(
        &self,
        dir: KeyDir,
        key: &ConnKey,
        f: impl FnOnce(&mut Conn) -> R,
    ) -> Option<R> {
        let shard = self.shard_for(dir, key);
        let hash = self.hash(dir, key);
        let mut g = shard.inner.lock();
        let inner = &mut *g;
        let conns = &inner.conns;
        let tagged = *inner.index.find(hash, |&t| tagged_eq(conns, t, key))?;
        let idx = (tagged & !OUT_TAG) as usize;
        let conn = inner.conns.get_mut(idx)?;
        let r = f(conn);
        if conn.expire_now() {
            self.remove_locked(inner, idx);
        }
        Some(r)
    }

    /// Remove the expected connection with `key` (its client-side key as asked for) if no
    /// packet has used it yet; whether one was.
    pub(crate) fn remove_waiting_expectation(&self, key: &ConnKey) -> bool {
        self.with_conn(KeyDir::In, key, |c| {
            if c.waiting_expectation() {
                c.set_expire_now(true);
            }
            c.expire_now()
        })
        .unwrap_or(false)
    }

    /// Whether expected connections wait for a port.
    #[inline]
    pub(crate) fn has_wildcards(&self) -> bool {
        self.wildcards.load(Relaxed) > 0
    }

    /// A packet with `key` (travelling in `dir`) found no connection: if an expected
    /// connection waits for it with the port this packet fills in (the client's, coming in;
    /// the real server's, going out), give it that port (`ip_vs_conn_fill_cport`) and
    /// return true; the caller looks the packet up again.
    pub(crate) fn fill_wildcard(&self, dir: KeyDir, key: &ConnKey) -> bool {
        if !self.has_wildcards() {
            return false;
        }
        let wild = ConnKey { sport: 0, ..*key };
        let shard = self.shard_for(dir, &wild);
        let mut g = shard.inner.lock();
        let inner = &mut *g;
        let conns = &inner.conns;
        let hash = self.hash(dir, &wild);
        let Some(&tagged) = inner.index.find(hash, |&t| tagged_eq(conns, t, &wild)) else {
            return false;
        };
        let idx = (tagged & !OUT_TAG) as usize;
        match dir {
            KeyDir::Out => self.fill_server_port(inner, idx, key.sport),
            KeyDir::In => {
                // The client's port decides the shard: move the connection there.
                if !inner.conns.get(idx).is_some_and(|c| c.no_cport()) {
                    return false;
                }
                let Some(mut conn) = inner.conns.try_remove(idx) else {
                    return false;
                };
                self.unindex_both(inner, idx, conn.in_key(), conn.out_key());
                self.len.fetch_sub(1, Relaxed);
                self.wildcards.fetch_sub(1, Relaxed);
                drop(g);
                conn.cport = key.sport;
                conn.lport = key.sport;
                conn.set_wildcard_ports(false, conn.no_dport());
                match self.insert(conn) {
                    Ok(()) => true,
                    Err(e) => {
                        e.into_conn().release();
                        false
                    }
                }
            }
        }
    }

    /// Give the expected connection at `idx`, waiting for its server's port, the port
    /// `sport` its server's first packet came from. The client's endpoint is known, so the
    /// connection stays in its shard: it is indexed again under its full keys.
    fn fill_server_port(&self, inner: &mut ShardInner, idx: usize, sport: u16) -> bool {
        let Some(c) = inner.conns.get(idx) else {
            return false;
        };
        if !c.no_dport() {
            return false;
        }
        let (old_in, old_out) = (c.in_key(), c.out_key());
        let vport = if c.vport == 0 { sport } else { c.vport };
        let new_in = ConnKey {
            dport: vport,
            ..old_in
        };
        let new_out = ConnKey { sport, ..old_out };
        let conns = &inner.conns;
        if inner
            .index
            .find(self.hash(KeyDir::In, &new_in), |&t| {
                tagged_eq(conns, t, &new_in)
            })
            .is_some()
        {
            // Another connection holds the filled key: this one cannot have it.
            return false;
        }
        if let Some(c) = inner.conns.get_mut(idx) {
            c.rport = sport;
            c.vport = vport;
            c.set_wildcard_ports(c.no_cport(), false);
        }
        self.unindex_both(inner, idx, old_in, old_out);
        let hasher = |t: &u32| rehash(self, &inner.conns, *t);
        inner
            .index
            .insert_unique(self.hash(KeyDir::In, &new_in), idx as u32, hasher);
        let hasher = |t: &u32| rehash(self, &inner.conns, *t);
        inner.index.insert_unique(
            self.hash(KeyDir::Out, &new_out),
            idx as u32 | OUT_TAG,
            hasher,
        );
        self.wildcards.fetch_sub(1, Relaxed);
        true
    }

    /// Take the index entries of the connection at `idx` (its keys `in_key` and `out_key`,
    /// as it was indexed) out of its shard's index.
    fn unindex_both(&self, inner: &mut ShardInner, idx: usize, in_key: ConnKey, out_key: ConnKey) {
        for (d, k, tag) in [
            (KeyDir::In, in_key, idx as u32),
            (KeyDir::Out, out_key, idx as u32 | OUT_TAG),
        ] {
            if let Ok(e) = inner.index.find_entry(self.hash(d, &k), |&t| t == tag) {
                e.remove();
            }
        }
    }

    /// Add a new connection under both of its keys.
    // The refused connection comes back by value: boxing it would allocate on the refusal
    // path, which a flood makes hot (a full table refuses every new connection).
    #[allow(clippy::result_large_err)]
    pub fn insert(&self, conn: Conn) -> Result<(), InsertError> {
        let shard = self.shard_for(KeyDir::In, &conn.in_key());
        let mut g = shard.inner.lock();
        self.insert_locked(&mut g, conn)
    }

    /// Add a new full-NAT connection with a local address and port from the pools of those
    /// of `laddrs` of its real server's family (tried from the `first` of them on, round
    /// the list), and return them. The port is one whose reply key
    /// falls in the client's shard, as DPVS picks a port whose replies reach the client's
    /// core: a connection and both its keys stay under one lock, and no two connections
    /// hold the same local address and port.
    // The refused connection comes back by value: boxing it would allocate on the refusal
    // path, which a flood makes hot (a full table refuses every new connection).
    #[allow(clippy::result_large_err)]
    pub(crate) fn insert_fullnat(
        &self,
        mut conn: Conn,
        laddrs: &[IpAddr],
        first: usize,
    ) -> Result<(IpAddr, u16), InsertError> {
        let si = self.shard_index(conn.proto, conn.caddr(), conn.cport);
        let mut g = self.shards[si].inner.lock();
        let inner = &mut *g;
        let v6 = conn.raddr().is_ipv6();
        let of_family = || laddrs.iter().filter(move |a| a.is_ipv6() == v6);
        let n = of_family().count();
        let mut taken = None;
        for &a in of_family().cycle().skip(first % n.max(1)).take(n) {
            let pool = inner
                .lports
                .entry((conn.proto, a))
                .or_insert_with(|| LocalPorts::new(self, si, conn.proto, a));
            match pool.take() {
                Some(p) => {
                    taken = Some((a, p));
                    break;
                }
                None => pool.exhausted += 1,
            }
        }
        let Some((a, p)) = taken else {
            return Err(InsertError::NoLocalPort(conn));
        };
        conn.set_local(a, p);
        conn.set_lport_held(true);
        self.insert_locked(inner, conn)
            .map(|()| (a, p))
            .map_err(|e| {
                let mut c = e;
                let conn = match &mut c {
                    InsertError::Full(c) | InsertError::Exists(c) | InsertError::NoLocalPort(c) => {
                        c
                    }
                };
                give_back(&mut inner.lports, conn);
                conn.set_lport_held(false);
                c
            })
    }

    /// How many connections hold a port of local address `addr` (protocol `proto`), and how
    /// many times a new connection found none free there.
    pub fn laddr_usage(&self, proto: Protocol, addr: IpAddr) -> (u64, u64) {
        let (mut used, mut exhausted) = (0, 0);
        for shard in self.shards.iter() {
            if let Some(p) = shard.inner.lock().lports.get(&(proto, addr)) {
                used += p.used;
                exhausted += p.exhausted;
            }
        }
        (used, exhausted)
    }

    // The refused connection comes back by value: boxing it would allocate on the refusal
    // path, which a flood makes hot (a full table refuses every new connection).
    #[allow(clippy::result_large_err)]
    fn insert_locked(&self, inner: &mut ShardInner, conn: Conn) -> Result<(), InsertError> {
        let in_key = conn.in_key();
        let out_key = conn.out_key();
        let (hin, hout) = (
            self.hash(KeyDir::In, &in_key),
            self.hash(KeyDir::Out, &out_key),
        );
        // A finished TCP connection (TIME_WAIT or CLOSE) or SCTP association (CLOSED, or
        // REJECTED: never made) holding the same reply key is replaced: the same client
        // port reaching the same real server port through another service (or after a
        // reschedule) starts a new connection, as the server sees it, and its replies must
        // not be taken for the old one's. (IPVS's one hash table lets both be.)
        // Two connections whose replies bypass wvs (DR, tunnels) may share a reply key, as
        // IPVS's one hash table lets them: no reply is ever looked up by it.
        let bypass = !conn.fwd.sees_replies();
        for (h, key, out) in [(hin, &in_key, false), (hout, &out_key, true)] {
            let conns = &inner.conns;
            let Some(&t) = inner.index.find(h, |&t| tagged_eq(conns, t, key)) else {
                continue;
            };
            let idx = (t & !OUT_TAG) as usize;
            if out && bypass && conns.get(idx).is_some_and(|c| !c.fwd.sees_replies()) {
                continue;
            }
            let finished = conns.get(idx).is_some_and(|c| match c.proto {
                Protocol::Tcp => {
                    matches!(c.state, super::TcpState::TimeWait | super::TcpState::Close)
                }
                Protocol::Sctp => matches!(
                    c.sctp_state(),
                    super::SctpState::Closed | super::SctpState::Rejected
                ),
                Protocol::Udp => false,
            });
            if !finished {
                return Err(InsertError::Exists(conn));
            }
            self.remove_locked(inner, idx);
        }
        // A place in the whole table is reserved first, only below `max_conns`, so that
        // workers inserting at once in different shards never take it past the bound, nor
        // its count (which the API shows); a full table gives the new connection the place
        // of a half-open entry, a full shard takes one's room, or the connection is refused.
        let max = self.max_conns;
        let reserved = self
            .len
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok();
        let room = if reserved {
            inner.conns.len() < self.per_shard_max || self.evict_locked(inner, false)
        } else {
            self.evict_locked(inner, true)
        };
        if !room {
            if reserved {
                self.len.fetch_sub(1, Relaxed);
            }
            return Err(InsertError::Full(conn));
        }
        let idx = inner.conns.insert(conn) as u32;
        let hasher = |t: &u32| rehash(self, &inner.conns, *t);
        inner.index.insert_unique(hin, idx, hasher);
        let hasher = |t: &u32| rehash(self, &inner.conns, *t);
        inner.index.insert_unique(hout, idx | OUT_TAG, hasher);
        if inner.conns.get(idx as usize).is_some_and(Conn::wildcard) {
            self.wildcards.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// Follow the `expire_nodest_conn` switch (the sweeper sets it from the snapshot).
    pub fn set_expire_nodest(&self, on: bool) {
        self.expire_nodest.store(on, Relaxed);
    }

    /// Remove every connection whose time is up at `now` or, with `expire_nodest_conn`,
    /// whose real server is gone (as IPVS since 5.9 flushes them after a server's removal;
    /// without it they wait for their timeout). Returns how many were removed.
    pub fn sweep(&self, now: u64) -> usize {
        let nodest = self.expire_nodest.load(Relaxed);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut g = shard.inner.lock();
            let ShardInner {
                index,
                conns,
                lports,
            } = &mut *g;
            conns.retain(|idx, c| {
                if c.expires > now && (c.dest.available() || !nodest) {
                    return true;
                }
                // A connection that controls expected ones waits for them
                // (`ip_vs_conn_expire`: `n_control` set, expire later).
                if c.dest.available() && c.app().is_some_and(|a| a.controls()) {
                    c.expires = now + c.timeout_ms();
                    return true;
                }
                self.unindex(index, idx as u32, c);
                give_back(lports, c);
                removed += 1;
                false
            });
        }
        self.len.fetch_sub(removed, Relaxed);
        self.persist.sweep(now);
        removed
    }

    /// Visit the connections from shard `shard` on, in that shard those with a slot above
    /// `after` (a listing's cursor: slots do not move while a connection lives), with
    /// their shard and slot; `f` returns `false` to stop.
    pub fn walk_from(
        &self,
        shard: usize,
        after: Option<usize>,
        mut f: impl FnMut(usize, usize, &Conn) -> bool,
    ) {
        for (si, s) in self.shards.iter().enumerate().skip(shard) {
            let g = s.inner.lock();
            for (idx, c) in g.conns.iter() {
                if si == shard && after.is_some_and(|a| idx <= a) {
                    continue;
                }
                if !f(si, idx, c) {
                    return;
                }
            }
        }
    }

    /// Visit every connection (for listings and tests); holds one shard lock at a time.
    pub fn for_each(&self, mut f: impl FnMut(&Conn)) {
        for shard in self.shards.iter() {
            let g = shard.inner.lock();
            for (_, c) in g.conns.iter() {
                f(c);
            }
        }
    }

    fn remove_locked(&self, inner: &mut ShardInner, idx: usize) {
        if self.take_locked(inner, idx) {
            self.len.fetch_sub(1, Relaxed);
        }
    }

    /// Remove entry `idx` but leave the table's count as it is (its caller passes the
    /// place on); whether there was one.
    fn take_locked(&self, inner: &mut ShardInner, idx: usize) -> bool {
        let Some(conn) = inner.conns.try_remove(idx) else {
            return false;
        };
        self.unindex(&mut inner.index, idx as u32, &conn);
        give_back(&mut inner.lports, &conn);
        true
    }

    /// Remove a connection's two index entries and uncount it on its real server.
    fn unindex(&self, index: &mut HashTable<u32>, idx: u32, conn: &Conn) {
        if conn.wildcard() {
            self.wildcards.fetch_sub(1, Relaxed);
        }
        for (dir, key, tag) in [
            (KeyDir::In, conn.in_key(), idx),
            (KeyDir::Out, conn.out_key(), idx | OUT_TAG),
        ] {
            if let Ok(e) = index.find_entry(self.hash(dir, &key), |&t| t == tag) {
                e.remove();
            }
        }
        conn.release();
    }
}

/// The free local ports of one shard, per protocol and local address.
type LocalPortPools = std::collections::HashMap<(Protocol, IpAddr), LocalPorts>;

/// One shard's share of a local address's ports: those whose reply key hashes to it.
struct LocalPorts {
    /// Free ports, handed out oldest-freed first, so that a port is reused as late as it
    /// can be (the real server may keep the last connection on it in TIME_WAIT).
    free: std::collections::VecDeque<u16>,
    /// Ports held by connections.
    used: u64,
    /// Times a connection found none free.
    exhausted: u64,
}

impl LocalPorts {
    fn new(table: &ConnTable, shard: usize, proto: Protocol, addr: IpAddr) -> Self {
        let free = crate::consts::FULLNAT_PORTS
            .filter(|&p| table.shard_index(proto, addr, p) == shard)
            .collect();
        Self {
            free,
            used: 0,
            exhausted: 0,
        }
    }

    fn take(&mut self) -> Option<u16> {
        let p = self.free.pop_front()?;
        self.used += 1;
        Some(p)
    }
}

/// Return a full-NAT connection's local port to its pool.
fn give_back(pools: &mut LocalPortPools, conn: &Conn) {
    if !conn.lport_held() {
        return;
    }
    if let Some(p) = pools.get_mut(&(conn.proto, conn.laddr())) {
        p.free.push_back(conn.lport);
        p.used = p.used.saturating_sub(1);
    }
}

#[inline]
fn tagged_eq(conns: &Slab<Conn>, tagged: u32, key: &ConnKey) -> bool {
    let Some(c) = conns.get((tagged & !OUT_TAG) as usize) else {
        return false;
    };
    if tagged & OUT_TAG == 0 {
        c.in_key() == *key
    } else {
        c.out_key() == *key
    }
}

fn rehash(table: &ConnTable, conns: &Slab<Conn>, tagged: u32) -> u64 {
    match conns.get((tagged & !OUT_TAG) as usize) {
        Some(c) if tagged & OUT_TAG == 0 => table.hash(KeyDir::In, &c.in_key()),
        Some(c) => table.hash(KeyDir::Out, &c.out_key()),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::TcpState;
    use crate::model::NextHop;
    use crate::service::Dest;
    use std::sync::Arc;

    fn key(cport: u16) -> ConnKey {
        ConnKey {
            proto: Protocol::Tcp,
            saddr: "198.18.0.2".parse().unwrap(),
            sport: cport,
            daddr: "198.18.100.1".parse().unwrap(),
            dport: 80,
        }
    }

    fn hop() -> NextHop {
        NextHop {
            iface: 0,
            mac: [2, 0, 0, 0, 0, 1],
        }
    }

    #[test]
    fn both_directions_find_one_conn() {
        let t = ConnTable::new(1000);
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 8080));
        let c = Conn::new(&key(40000), d.clone(), Default::default(), hop(), 0);
        let out = c.out_key();
        t.insert(c).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(d.inactconns.load(Relaxed), 1);
        assert_eq!(
            t.with_conn(KeyDir::In, &key(40000), |c| c.rport),
            Some(8080)
        );
        assert_eq!(t.with_conn(KeyDir::Out, &out, |c| c.vport), Some(80));
        assert!(t.with_conn(KeyDir::In, &key(40001), |_| ()).is_none());
        assert!(
            t.with_conn(KeyDir::Out, &key(40000), |_| ()).is_none(),
            "directions are distinct"
        );
        let again = Conn::new(&key(40000), d.clone(), Default::default(), hop(), 0);
        assert!(matches!(t.insert(again), Err(InsertError::Exists(_))));
        // The refused duplicate was counted by Conn::new; the caller unbinds it.
        d.unbind(true);
        t.with_conn(KeyDir::In, &key(40000), |c| c.set_expire_now(true));
        assert_eq!(t.len(), 0);
        assert_eq!(d.inactconns.load(Relaxed), 0);
        assert!(t.with_conn(KeyDir::Out, &out, |_| ()).is_none());
    }

    #[test]
    fn drop_entry_takes_handshakes_and_idle_one_packet_entries_only() {
        // One shard's worth is scanned per 1/32: fill every shard, then scan until each
        // shard was seen.
        let t = ConnTable::new(100_000);
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        let states = [
            TcpState::SynRecv,
            TcpState::Established,
            TcpState::TimeWait,
            TcpState::Established,
        ];
        for p in 0..4000u16 {
            let mut c = Conn::new(&key(p), d.clone(), Default::default(), hop(), 0);
            c.state = states[usize::from(p) % 4];
            // Established entries: one with 1 packet, idle; one with 100 packets.
            c.in_pkts = if p % 4 == 1 { 1 } else { 100 };
            c.timeout_ms = 900_000;
            c.expires = 900_000;
            t.insert(c).unwrap();
        }
        let mut dropped = 0;
        for _ in 0..2000 {
            dropped += t.random_dropentry(60_000);
        }
        assert_eq!(
            dropped, 2000,
            "the handshakes and the idle one-packet entries"
        );
        let mut left = [0; 4];
        t.for_each(|c| left[usize::from(c.cport) % 4] += 1);
        assert_eq!(left, [0, 0, 1000, 1000]);
        assert_eq!(t.defense().dropped_entries.load(Relaxed), 2000);
        // Not idle for 60 s yet: kept.
        let t = ConnTable::new(1000);
        let mut c = Conn::new(&key(1), d.clone(), Default::default(), hop(), 0);
        (c.state, c.in_pkts, c.timeout_ms, c.expires) =
            (TcpState::Established, 1, 900_000, 900_000);
        t.insert(c).unwrap();
        for _ in 0..500 {
            t.random_dropentry(59_999);
        }
        assert_eq!(t.len(), 1);
    }

    /// Expected connections no packet has used are as cheap to ask for as a SYN: a full
    /// shard evicts them and `drop_entry` reclaims them; once used they are kept as any.
    #[test]
    fn the_defense_reclaims_waiting_expectations_only() {
        let t = ConnTable::new(100_000);
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        let app = crate::conn::app::AppConn::new(std::iter::empty());
        for p in 0..4000u16 {
            let mut c = Conn::new(&key(p), d.clone(), Default::default(), hop(), 0);
            c.state = TcpState::Listen;
            c.set_controller(crate::conn::app::Controller::new(&app));
            if p % 2 == 1 {
                c.controller_mut().unwrap().used();
            }
            (c.timeout_ms, c.expires) = (120_000, 120_000);
            assert_eq!(c.half_open(), p % 2 == 0);
            t.insert(c).unwrap();
        }
        let mut dropped = 0;
        for _ in 0..2000 {
            dropped += t.random_dropentry(1);
        }
        assert_eq!(dropped, 2000, "every waiting one, none used");
        t.for_each(|c| assert!(!c.waiting_expectation()));
        assert_eq!(app.n_control.load(Relaxed), 2000);
        // By its key, as a newer expectation of its controller replaces it.
        let mut c = Conn::new(&key(9000), d.clone(), Default::default(), hop(), 0);
        c.set_controller(crate::conn::app::Controller::new(&app));
        t.insert(c).unwrap();
        assert!(!t.remove_waiting_expectation(&key(1)), "used: kept");
        assert!(t.remove_waiting_expectation(&key(9000)));
        assert_eq!(t.len(), 2000);
    }

    #[test]
    fn the_whole_table_never_exceeds_its_bound() {
        // 1000 does not divide into 256 shards: the shares round up, the table does not.
        // 20,000 keys: every shard is offered its share (with 5,000, a shard got fewer
        // than 4 in about one run in a thousand).
        let t = ConnTable::new(1000);
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        for p in 0..20_000u16 {
            if let Err(e) = t.insert(Conn::new(&key(p), d.clone(), Default::default(), hop(), 0)) {
                e.into_conn().release();
            }
        }
        assert_eq!(t.len(), 1000);
        let mut n = 0;
        t.for_each(|_| n += 1);
        assert_eq!(n, 1000);
    }

    /// A full table whose new connections take half-open entries' places: its count,
    /// which the API shows, never reads past the bound, not for a moment (it read one over
    /// while a place was reserved before the eviction gave one back: CI, 2026-12-07).
    #[test]
    fn a_full_table_never_counts_past_its_bound() {
        let t = Arc::new(ConnTable::new(1000));
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 9000));
        let udp = |client: u8, cport: u16| ConnKey {
            proto: Protocol::Udp,
            saddr: std::net::IpAddr::from([198, 18, 1, client]),
            sport: cport,
            daddr: "198.18.100.1".parse().unwrap(),
            dport: 9000,
        };
        let fill = |t: &ConnTable, client: u8| {
            for p in 0..20_000u16 {
                let c = Conn::new(&udp(client, p), d.clone(), Default::default(), hop(), 0);
                if let Err(e) = t.insert(c) {
                    e.into_conn().release();
                }
            }
        };
        fill(&t, 1);
        assert_eq!(t.len(), 1000);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (t, done) = (t.clone(), done.clone());
            std::thread::spawn(move || {
                let mut most = 0;
                while !done.load(Relaxed) {
                    most = most.max(t.len());
                }
                most
            })
        };
        std::thread::scope(|s| {
            for client in 2..4 {
                let t = &t;
                s.spawn(move || fill(t, client));
            }
        });
        done.store(true, Relaxed);
        assert_eq!(reader.join().unwrap(), 1000);
        let mut n = 0;
        t.for_each(|_| n += 1);
        assert_eq!((n, t.len()), (1000, 1000));
        assert!(t.defense().evicted.load(Relaxed) >= 40_000 - 1000);
    }

    #[test]
    fn bounded_and_swept() {
        let t = ConnTable::new(CONN_SHARDS); // one per shard
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        let mut full = 0;
        for p in 0..4000u16 {
            match t.insert(Conn::new(&key(p), d.clone(), Default::default(), hop(), 0)) {
                Ok(()) => {}
                Err(e) => {
                    assert!(matches!(e, InsertError::Full(_)));
                    e.into_conn().release();
                    full += 1;
                }
            }
        }
        assert!(t.len() <= CONN_SHARDS);
        assert_eq!(t.len() + full, 4000);
        // TCP NONE times out after 2 s.
        assert_eq!(t.sweep(1999), 0);
        let n = t.len();
        assert_eq!(t.sweep(2000), n);
        assert!(t.is_empty());
        assert_eq!(d.inactconns.load(Relaxed), 0);
    }

    /// Several threads adding, finding and expiring connections at once: every connection
    /// is found from both directions and the counts add up.
    #[test]
    fn a_finished_connection_with_the_same_reply_key_is_replaced() {
        let t = ConnTable::new(1000);
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        // Client port 40000 reached rs1:80 through VIP:80; then through VIP:8080, which
        // maps to the same real server port: the same reply key.
        let mut other = key(40000);
        other.dport = 8080;
        t.insert(Conn::new(
            &key(40000),
            d.clone(),
            Default::default(),
            hop(),
            0,
        ))
        .unwrap();
        let busy = Conn::new(&other, d.clone(), Default::default(), hop(), 0);
        assert!(
            matches!(t.insert(busy), Err(InsertError::Exists(_))),
            "a live connection keeps its key"
        );
        d.unbind(false);
        t.with_conn(KeyDir::In, &key(40000), |c| c.state = TcpState::TimeWait);
        let fresh = Conn::new(&other, d.clone(), Default::default(), hop(), 0);
        t.insert(fresh).unwrap();
        assert_eq!(t.len(), 1);
        assert!(t.with_conn(KeyDir::In, &key(40000), |_| ()).is_none());
        let vport = t.with_conn(
            KeyDir::Out,
            &Conn::new(&other, d.clone(), Default::default(), hop(), 0).out_key(),
            |c| c.vport,
        );
        assert_eq!(vport, Some(8080), "replies belong to the new connection");
    }

    #[test]
    fn concurrent_workers_agree() {
        let t = Arc::new(ConnTable::new(1 << 20));
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        let threads: Vec<_> = (0..4u16)
            .map(|w| {
                let (t, d) = (t.clone(), d.clone());
                std::thread::spawn(move || {
                    for i in 0..5000u16 {
                        let mut k = key(i);
                        k.saddr =
                            std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, w as u8));
                        let c = Conn::new(&k, d.clone(), Default::default(), hop(), 0);
                        let out = c.out_key();
                        t.insert(c).unwrap();
                        assert!(t.with_conn(KeyDir::In, &k, |_| ()).is_some());
                        assert!(t.with_conn(KeyDir::Out, &out, |_| ()).is_some());
                        if i % 2 == 0 {
                            t.with_conn(KeyDir::Out, &out, |c| c.set_expire_now(true));
                        }
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.len(), 4 * 2500);
        assert_eq!(d.inactconns.load(Relaxed), 4 * 2500);
        assert_eq!(t.sweep(u64::MAX), 4 * 2500);
        assert_eq!(d.inactconns.load(Relaxed), 0);
    }

    #[test]
    fn gone_dest_is_swept() {
        let t = ConnTable::new(1000);
        let d = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        t.insert(Conn::new(&key(1), d.clone(), Default::default(), hop(), 0))
            .unwrap();
        assert_eq!(t.sweep(1), 0);
        d.set_available(false);
        assert_eq!(t.sweep(1), 1);
    }
}
