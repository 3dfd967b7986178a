//! Persistence templates (`IP_VS_CONN_F_TEMPLATE`): a persistent service sends every new
//! connection from the same client network to the same real server for as long as the
//! template lives, as `ip_vs_sched_persist` does.
//!
//! A template is keyed by protocol, the client address under the service's netmask and the
//! virtual address and port. It points at its real server (counted in `persistconns`), and
//! lives the service's persistence timeout past the last connection it placed. It is dropped
//! when its server is gone; a quiesced server (weight 0) keeps its templates, as IPVS does
//! with `expire_quiescent_template` at its default of 0.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::Mutex;

use crate::consts::PERSIST_SHARDS;
use crate::service::{Dest, Protocol};

/// What a template is found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// Protocol.
    pub proto: Protocol,
    /// Client address under the service's netmask.
    pub client: IpAddr,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
}

/// A template.
#[derive(Debug)]
pub struct Template {
    /// The real server its connections go to.
    pub dest: Arc<Dest>,
    /// When it expires (ms on the datapath clock).
    pub expires: u64,
}

impl Drop for Template {
    fn drop(&mut self) {
        self.dest.persistconns.fetch_sub(1, Relaxed);
    }
}

type Shard = Mutex<HashMap<TemplateKey, Template, foldhash::fast::RandomState>>;

/// Every persistence template, sharded by key.
#[derive(Debug)]
pub struct PersistTable {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
    per_shard_max: usize,
}

impl PersistTable {
    /// A table for at most about `max` templates.
    pub fn new(max: usize) -> Self {
        Self {
            shards: (0..PERSIST_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            per_shard_max: max.div_ceil(PERSIST_SHARDS).max(1),
        }
    }

    fn shard(&self, k: &TemplateKey) -> &Shard {
        &self.shards[(self.hasher.hash_one(k) >> 40) as usize % PERSIST_SHARDS]
    }

    /// The real server for a new connection of a persistent service: the template's if it
    /// has a valid one, else the one `schedule` picks, remembered for `timeout_ms`. Returns
    /// `None` when there is no valid template and `schedule` finds no server, or the table is
    /// full.
    pub fn dest_for(
        &self,
        key: TemplateKey,
        now: u64,
        timeout_ms: u64,
        schedule: impl FnOnce() -> Option<Arc<Dest>>,
    ) -> Option<Arc<Dest>> {
        let mut shard = self.shard(&key).lock();
        if let Some(t) = shard.get_mut(&key) {
            if t.expires > now && t.dest.available() {
                t.expires = now + timeout_ms;
                return Some(t.dest.clone());
            }
            shard.remove(&key);
        }
        let dest = schedule()?;
        if shard.len() >= self.per_shard_max {
            // Full: place the connection, but remember nothing (as a full conn table would).
            return Some(dest);
        }
        dest.persistconns.fetch_add(1, Relaxed);
        shard.insert(
            key,
            Template {
                dest: dest.clone(),
                expires: now + timeout_ms,
            },
        );
        Some(dest)
    }

    /// Remove expired templates and those whose server is gone; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let mut n = 0;
        for s in self.shards.iter() {
            let mut g = s.lock();
            let before = g.len();
            g.retain(|_, t| t.expires > now && t.dest.available());
            n += before - g.len();
        }
        n
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

/// The client address a template is keyed by: under the netmask (IPv4).
pub fn masked(addr: IpAddr, netmask: u32) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & netmask).into()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> TemplateKey {
        TemplateKey {
            proto: Protocol::Tcp,
            client: masked(c.parse().unwrap(), 0xffff_ff00),
            vaddr: "198.18.100.1".parse().unwrap(),
            vport: 80,
        }
    }

    #[test]
    fn same_network_same_server_until_expiry() {
        let t = PersistTable::new(1000);
        let a = Arc::new(Dest::new("198.19.0.11".parse().unwrap(), 80));
        let b = Arc::new(Dest::new("198.19.0.12".parse().unwrap(), 80));
        let d = t
            .dest_for(key("198.18.0.2"), 0, 1000, || Some(a.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&d, &a));
        assert_eq!(a.persistconns.load(Relaxed), 1);
        // Another client of the same /24 within the timeout: the template's server.
        let d = t
            .dest_for(key("198.18.0.77"), 900, 1000, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&d, &a), "template refreshed to 1900");
        // Quiesced: the template still holds (expire_quiescent_template = 0).
        a.set_weight(0);
        let d = t
            .dest_for(key("198.18.0.2"), 1800, 1000, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&d, &a));
        // Expired: scheduled again.
        let d = t
            .dest_for(key("198.18.0.2"), 5000, 1000, || Some(b.clone()))
            .unwrap();
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
}
