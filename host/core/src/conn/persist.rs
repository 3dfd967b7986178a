//! Persistence templates (`IP_VS_CONN_F_TEMPLATE`): a persistent service sends every new
//! connection from the same client network to the same real server for as long as the
//! template lives, as `ip_vs_sched_persist` does.
//!
//! A template is keyed by protocol, the client address under the service's netmask and the
//! virtual address and port. It points at its real server (counted in `persistconns`), and
//! lives the service's persistence timeout past the last connection it placed, and beyond
//! that for as long as a connection it placed is still open: each such connection holds a
//! [`Control`] (IPVS's `cp->control`, counted in the template's `n_control`), and a template
//! whose time is up while it controls connections is re-armed with 60 s, as
//! `ip_vs_conn_expire` does. It is dropped when its server is gone; a quiesced server
//! (weight 0) keeps its templates, as IPVS does with `expire_quiescent_template` at its
//! default of 0.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32};

use parking_lot::Mutex;

use crate::consts::{PERSIST_SHARDS, TEMPLATE_EXPIRE_LATER_MS};
use crate::model::Protocol;
use crate::service::Dest;

/// A persistence engine's name and the key it gave (IPVS's `pe`, `pe_data`).
pub type PeKey<'a> = (&'a Arc<str>, &'a [u8]);

/// What a template is found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// Protocol (TCP for a fwmark service's: IPVS's `IPPROTO_IP`, one template for every
    /// protocol of the mark).
    pub proto: Protocol,
    /// The fwmark service's mark (0: an address service's template).
    pub fwmark: u32,
    /// Client address under the service's netmask.
    pub client: IpAddr,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// A hash of the persistence engine's key (IPVS's `pe_data`; 0: none). The key's
    /// bytes are the template's ([`Template::pe_data`]), compared on every match, as
    /// `ip_vs_sip_ct_match` compares them.
    pub pe: u64,
}

/// A template.
#[derive(Debug)]
pub struct Template {
    /// The real server its connections go to.
    pub dest: Arc<Dest>,
    /// When it expires (ms on the datapath clock), unless it still controls connections.
    pub expires: u64,
    /// Its timeout: the service's persistence timeout, or 60 s once re-armed.
    pub timeout_ms: u64,
    /// What its connections share with it.
    link: Arc<Link>,
}

/// What a template shares with the connections it placed.
#[derive(Debug)]
pub(crate) struct Link {
    /// The template's key, for the sync daemon's record of it.
    pub(crate) key: TemplateKey,
    /// Its timeout when made, seconds (the record's timeout).
    pub(crate) timeout_s: u32,
    /// Packets of the connections it placed (`ct->in_pkts`, counted by the sync daemon).
    pub(crate) in_pkts: AtomicU32,
    /// The sync daemon's `sync_endtime` (see `conn::sync`).
    pub(crate) sync_endtime: AtomicU32,
    /// How many open connections it placed (`n_control`).
    n_control: AtomicU32,
    /// Whether one of them was answered: IPVS's `IP_VS_CTPL_S_ASSURED`, set by
    /// `ip_vs_control_assure_ct` when a TCP connection it placed becomes ESTABLISHED or a
    /// UDP one carries a reply. `ipvsadm -L -c` shows the template as ASSURED, else NONE.
    assured: AtomicBool,
    /// The persistence engine that keyed it and its key (`pe`, `pe_data`), if one did.
    pe: Option<(Arc<str>, Box<[u8]>)>,
}

impl Template {
    /// What it shares with its connections.
    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    /// How many open connections it controls.
    pub(crate) fn controls(&self) -> u32 {
        self.link.n_control.load(Relaxed)
    }

    /// The persistence engine's key (`pe_data`: a SIP Call-ID), if an engine keyed it.
    pub fn pe_data(&self) -> Option<&[u8]> {
        self.link.pe_data()
    }

    /// The name of the engine that keyed it (`ipvsadm -L -c --persistent-conn`'s `pe name`).
    pub fn pe_name(&self) -> Option<&str> {
        self.link.pe_name()
    }

    /// Its state as `ipvsadm -L -c` names it: ASSURED once a connection it placed was
    /// answered, NONE before.
    pub fn state_name(&self) -> &'static str {
        if self.link.assured.load(Relaxed) {
            "ASSURED"
        } else {
            "NONE"
        }
    }

    /// Whether it can place another connection at `now` (`ip_vs_check_template`).
    fn valid(&self, now: u64) -> bool {
        (self.expires > now || self.controls() > 0)
            && self.dest.available()
            && !self.dest.draining()
            // A server a health check took out is gone for templates too, as keepalived's
            // DELDEST makes it (an inhibited one, at weight 0, keeps them, as IPVS does).
            && self.dest.in_scheduling()
    }
}

/// A connection's link to the template that placed it (`cp->control`): while the connection
/// holds it, the template lives. Dropped with the connection.
#[derive(Debug)]
pub struct Control(Arc<Link>);

impl Link {
    fn new(key: TemplateKey, timeout_ms: u64) -> Arc<Self> {
        Self::with_pe(key, timeout_ms, None)
    }

    fn with_pe(key: TemplateKey, timeout_ms: u64, pe: Option<PeKey<'_>>) -> Arc<Self> {
        Arc::new(Self {
            pe: pe.map(|(name, data)| (name.clone(), Box::from(data))),
            key,
            timeout_s: (timeout_ms / 1000).min(u64::from(u32::MAX)) as u32,
            in_pkts: AtomicU32::new(0),
            sync_endtime: AtomicU32::new(0),
            n_control: AtomicU32::new(0),
            assured: AtomicBool::new(false),
        })
    }

    /// Whether a connection it placed was answered.
    pub(crate) fn assured(&self) -> bool {
        self.assured.load(Relaxed)
    }

    /// The persistence engine's key, if an engine keyed the template.
    pub(crate) fn pe_data(&self) -> Option<&[u8]> {
        self.pe.as_ref().map(|(_, d)| &d[..])
    }

    /// The engine that keyed the template, if one did.
    pub(crate) fn pe_name(&self) -> Option<&str> {
        self.pe.as_ref().map(|(n, _)| &n[..])
    }
}

impl Control {
    /// What it links to.
    pub(crate) fn link(&self) -> &Link {
        &self.0
    }

    fn new(link: &Arc<Link>) -> Self {
        link.n_control.fetch_add(1, Relaxed);
        Self(link.clone())
    }

    /// Another link to the same template, counted there (an expected connection is
    /// controlled by its controlling connection's template too, so the template lives as
    /// long as the connections it controls).
    pub fn share(&self) -> Self {
        Self::new(&self.0)
    }

    /// The connection was answered: the template becomes ASSURED (once; a plain load
    /// first, so that later packets do not write the shared line).
    #[inline]
    pub(crate) fn assure(&self) {
        if !self.0.assured.load(Relaxed) {
            self.0.assured.store(true, Relaxed);
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.0.n_control.fetch_sub(1, Relaxed);
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        self.dest.persistconns.fetch_sub(1, Relaxed);
    }
}

/// An index map, not a hash map: a listing in pages resumes at a template's position
/// (a hash map's iteration has no position to resume at; skipping a count makes a listing
/// quadratic). A removal moves the last template into the gap (`swap_remove`), so a page
/// written meanwhile may miss that one, as a listing of a live table may.
type Shard = Mutex<indexmap::IndexMap<TemplateKey, Template, foldhash::fast::RandomState>>;

/// Why a synced template was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPutError {
    /// No such real server here.
    NoDest,
    /// The table is full.
    Full,
}

/// Every persistence template, sharded by key.
#[derive(Debug)]
pub struct PersistTable {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
    /// Hashes persistence engines' keys into [`TemplateKey::pe`].
    pe_hasher: foldhash::fast::RandomState,
    per_shard_max: usize,
}

impl PersistTable {
    /// A table for at most about `max` templates.
    pub fn new(max: usize) -> Self {
        Self {
            shards: (0..PERSIST_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            pe_hasher: foldhash::fast::RandomState::default(),
            per_shard_max: max.div_ceil(PERSIST_SHARDS).max(1),
        }
    }

    fn shard(&self, k: &TemplateKey) -> &Shard {
        &self.shards[(self.hasher.hash_one(k) >> 40) as usize % PERSIST_SHARDS]
    }

    /// The real server for a new connection of a persistent service, and the connection's
    /// link to its template: the template's server if it has a valid one, else the one
    /// `schedule` picks, remembered for `timeout_ms`. Returns `None` when there is no valid
    /// template and `schedule` finds no server. When the table is full the connection is
    /// placed without a template (as a full connection table would remember nothing).
    pub fn dest_for(
        &self,
        key: TemplateKey,
        now: u64,
        timeout_ms: u64,
        expire_quiescent: bool,
        schedule: impl FnOnce() -> Option<Arc<Dest>>,
    ) -> Option<(Arc<Dest>, Option<Control>)> {
        self.dest_for_pe(key, None, now, timeout_ms, expire_quiescent, schedule)
    }

    /// As [`dest_for`](Self::dest_for), with a persistence engine's key (`pe_data`) as
    /// part of the template's: `key.pe` is set from it here. A template whose key hashes
    /// alike but differs (a collision of 64-bit hashes) is left alone and the connection
    /// is scheduled without one. A new template copies the key (one allocation per new
    /// template, not per packet).
    pub fn dest_for_pe(
        &self,
        mut key: TemplateKey,
        pe: Option<PeKey<'_>>,
        now: u64,
        timeout_ms: u64,
        expire_quiescent: bool,
        schedule: impl FnOnce() -> Option<Arc<Dest>>,
    ) -> Option<(Arc<Dest>, Option<Control>)> {
        let pe_data = pe.map(|(_, d)| d);
        key.pe = pe_data.map_or(0, |d| self.pe_hasher.hash_one(d) | 1);
        let mut shard = self.shard(&key).lock();
        if let Some(t) = shard.get_mut(&key) {
            if t.link.pe_data() != pe_data {
                return schedule().map(|d| (d, None));
            }
            // expire_quiescent_template: a template on a server of weight 0 is given up
            // (ip_vs_check_template).
            if t.valid(now) && !(expire_quiescent && t.dest.weight() == 0) {
                // ip_vs_conn_put(ct): re-armed with the template's own timeout.
                t.expires = now + t.timeout_ms;
                return Some((t.dest.clone(), Some(Control::new(&t.link))));
            }
            shard.swap_remove(&key);
        }
        let dest = schedule()?;
        if shard.len() >= self.per_shard_max {
            return Some((dest, None));
        }
        dest.persistconns.fetch_add(1, Relaxed);
        let link = Link::with_pe(key, timeout_ms, pe);
        let control = Control::new(&link);
        shard.insert(
            key,
            Template {
                dest: dest.clone(),
                expires: now + timeout_ms,
                timeout_ms,
                link,
            },
        );
        Some((dest, Some(control)))
    }

    /// A template a sync message describes (`ip_vs_proc_conn` for a template): one that
    /// exists is re-armed with the message's timeout and keeps its server; a new one takes
    /// the server `find` gives. `Ok(true)` when one was made; `Err` when there is no such
    /// server or no room.
    pub fn sync_put(
        &self,
        key: TemplateKey,
        now: u64,
        timeout_ms: u64,
        assured: bool,
        find: impl FnOnce() -> Option<Arc<Dest>>,
    ) -> Result<bool, SyncPutError> {
        let mut shard = self.shard(&key).lock();
        if let Some(t) = shard.get_mut(&key) {
            t.timeout_ms = timeout_ms;
            t.expires = now + timeout_ms;
            if assured {
                t.link.assured.store(true, Relaxed);
            }
            return Ok(false);
        }
        let dest = find().ok_or(SyncPutError::NoDest)?;
        if shard.len() >= self.per_shard_max {
            return Err(SyncPutError::Full);
        }
        dest.persistconns.fetch_add(1, Relaxed);
        let link = Link::new(key, timeout_ms);
        link.assured.store(assured, Relaxed);
        shard.insert(
            key,
            Template {
                dest,
                expires: now + timeout_ms,
                timeout_ms,
                link,
            },
        );
        Ok(true)
    }

    /// Remove the templates whose time is up and that control no connection, and those
    /// whose server is gone; re-arm with 60 s those whose time is up but still control
    /// connections. Returns how many were removed.
    pub fn sweep(&self, now: u64) -> usize {
        let mut n = 0;
        for s in self.shards.iter() {
            let mut g = s.lock();
            let before = g.len();
            g.retain(|_, t| {
                if !t.dest.available() {
                    return false;
                }
                if t.expires > now {
                    return true;
                }
                if t.controls() > 0 {
                    t.timeout_ms = TEMPLATE_EXPIRE_LATER_MS;
                    t.expires = now + TEMPLATE_EXPIRE_LATER_MS;
                    return true;
                }
                false
            });
            n += before - g.len();
        }
        n
    }

    /// Visit the templates from position `at` of shard `shard` on (a listing's cursor:
    /// reached at once, not by counting), with their shard and position; `f` returns
    /// `false` to stop.
    pub fn walk_from(
        &self,
        shard: usize,
        at: usize,
        mut f: impl FnMut(usize, usize, &TemplateKey, &Template) -> bool,
    ) {
        for (si, s) in self.shards.iter().enumerate().skip(shard) {
            let g = s.lock();
            let first = if si == shard { at } else { 0 };
            let Some(rest) = g.get_range(first..) else {
                continue;
            };
            for (i, (k, t)) in rest.iter().enumerate() {
                if !f(si, first + i, k, t) {
                    return;
                }
            }
        }
    }

    /// Visit every template (listings); one shard lock at a time.
    pub fn for_each(&self, mut f: impl FnMut(&TemplateKey, &Template)) {
        for s in self.shards.iter() {
            for (k, t) in s.lock().iter() {
                f(k, t);
            }
        }
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client address a template is keyed by: under the netmask (IPv4), or the first
/// `netmask` bits (IPv6: a prefix length; above 128, the whole address).
pub fn masked(addr: IpAddr, netmask: u32) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & netmask).into()),
        // An IPv6 service's `netmask` is a prefix length (`ipv6_addr_prefix`).
        IpAddr::V6(a) => {
            let plen = netmask.min(128);
            let mask = u128::MAX.checked_shl(128 - plen).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> TemplateKey {
        TemplateKey {
            proto: Protocol::Tcp,
            fwmark: 0,
            client: masked(c.parse().unwrap(), 0xffff_ff00),
            vaddr: "198.18.100.1".parse().unwrap(),
            vport: 80,
            pe: 0,
        }
    }

    #[test]
    fn same_network_same_server_until_expiry() {
        let t = PersistTable::new(1000);
        let a = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        let b = Arc::new(Dest::new("198.19.0.12".parse().unwrap(), 80));
        let pick = |client, now, d: &Arc<Dest>| {
            // The connection closes at once: it does not hold the template.
            t.dest_for(key(client), now, 1000, false, || Some(d.clone()))
                .unwrap()
                .0
        };
        let d = pick("198.18.0.2", 0, &a);
        assert!(Arc::ptr_eq(&d, &a));
        assert_eq!(a.persistconns.load(Relaxed), 1);
        // Another client of the same /24 within the timeout: the template's server.
        let d = pick("198.18.0.77", 900, &b);
        assert!(Arc::ptr_eq(&d, &a), "template refreshed to 1900");
        // Quiesced: the template still holds (expire_quiescent_template = 0) …
        a.set_weight(0);
        let d = pick("198.18.0.2", 1800, &b);
        assert!(Arc::ptr_eq(&d, &a));
        // … and with expire_quiescent_template, another client of the /24 is scheduled
        // again (the template is given up), as IPVS's ip_vs_check_template does.
        let (d, _) = t
            .dest_for(key("198.18.0.3"), 1900, 1000, true, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&d, &b), "scheduled again");
        let (d, _) = t
            .dest_for(key("198.18.0.2"), 1950, 1000, false, || Some(a.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&d, &b), "the new template holds");
        // Expired: scheduled again.
        let d = pick("198.18.0.2", 5000, &b);
        assert!(Arc::ptr_eq(&d, &b));
        assert_eq!(
            (a.persistconns.load(Relaxed), b.persistconns.load(Relaxed)),
            (0, 1)
        );
        // Server gone: the template goes.
        b.set_available(false);
        assert_eq!(t.sweep(5001), 1);
        assert!(t.is_empty());
        assert_eq!(b.persistconns.load(Relaxed), 0);
    }

    #[test]
    fn template_lives_while_it_controls_connections() {
        let t = PersistTable::new(1000);
        let a = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        let b = Arc::new(Dest::new("198.19.0.12".parse().unwrap(), 80));
        let (d, control) = t
            .dest_for(key("198.18.0.2"), 0, 1000, false, || Some(a.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&d, &a));
        let control = control.expect("a template was made");
        // Its time is up, but the connection it placed is open: re-armed with 60 s.
        assert_eq!(t.sweep(1000), 0);
        let mut seen = None;
        t.for_each(|_, tp| seen = Some((tp.expires, tp.timeout_ms, tp.controls())));
        assert_eq!(seen, Some((61_000, 60_000, 1)));
        // And it still places new connections, refreshed with its new 60 s timeout.
        let (d, c2) = t
            .dest_for(key("198.18.0.9"), 30_000, 1000, false, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&d, &a));
        t.for_each(|_, tp| seen = Some((tp.expires, tp.timeout_ms, tp.controls())));
        assert_eq!(seen, Some((90_000, 60_000, 2)));
        drop(c2);
        drop(control);
        // No connection left: it goes when its time is up.
        assert_eq!(t.sweep(89_999), 0);
        assert_eq!(t.sweep(90_000), 1);
        assert!(t.is_empty());
        assert_eq!(a.persistconns.load(Relaxed), 0);
    }
}
