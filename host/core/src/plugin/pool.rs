//! A plugin with an instance per datapath worker (helpers and persistence engines, which
//! worker threads call on their own packets): a worker calls only its own instance, so
//! calls never wait for one another.

use parking_lot::Mutex;
use std::sync::atomic::Ordering::{AcqRel, Relaxed, Release};

use super::{Plugin, PluginError};
use crate::consts::{HELPER_REBUILD_BACKOFF_MAX_MS, HELPER_REBUILD_BACKOFF_MS, MAX_WORKERS};

/// An instance of a plugin kind that a pool holds.
pub trait Instance: Sized + Send + 'static {
    /// A new instance of `p`.
    fn new(p: &Plugin) -> Result<Self, PluginError>;
}

/// A plugin with an instance per worker. The instances are built off the datapath: those
/// of the workers that run when the pool is made (on the control thread), and after a
/// failed call by a rebuilder thread after a back-off, so that a worker never compiles,
/// instantiates or waits for a plugin that fails on every call.
pub struct Pool<I> {
    /// The plugin.
    pub plugin: Plugin,
    /// Its flags, from its compilation (a helper's [`wvs_sdk::helper_flags`]; 0 for
    /// other kinds).
    pub flags: u32,
    /// Its name, shared with what it keys (a persistence template holds its engine's).
    pub label: std::sync::Arc<str>,
    shared: std::sync::Arc<PoolShared<I>>,
}

/// What the workers and the rebuilder share.
struct PoolShared<I> {
    slots: Box<[Mutex<Option<I>>]>,
    /// Failures since the last call that succeeded: the rebuild's back-off doubles with each.
    failures: std::sync::atomic::AtomicU32,
    /// A rebuilder is waiting or building.
    rebuilding: std::sync::atomic::AtomicBool,
}

impl<I> std::fmt::Debug for Pool<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.plugin.name)
            .finish_non_exhaustive()
    }
}

/// The wait before rebuilding after `failures` failures in a row.
pub(crate) fn rebuild_backoff(failures: u32) -> std::time::Duration {
    let ms = HELPER_REBUILD_BACKOFF_MS
        .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
        .min(HELPER_REBUILD_BACKOFF_MAX_MS);
    std::time::Duration::from_millis(ms)
}

impl<I: Instance> Pool<I> {
    /// A pool for `plugin`, with the instances of the runtime's workers built now.
    pub fn new(plugin: Plugin) -> Self {
        let flags = match plugin.kind {
            super::PluginKind::Helper { flags } => flags,
            _ => 0,
        };
        let shared = std::sync::Arc::new(PoolShared {
            slots: (0..MAX_WORKERS).map(|_| Mutex::new(None)).collect(),
            failures: Default::default(),
            rebuilding: Default::default(),
        });
        let pool = Self {
            label: plugin.name.as_str().into(),
            plugin,
            flags,
            shared,
        };
        let workers = pool.plugin.runtime.workers().clamp(1, MAX_WORKERS);
        for slot in &pool.shared.slots[..workers] {
            match I::new(&pool.plugin) {
                Ok(h) => *slot.lock() = Some(h),
                Err(e) => {
                    tracing::warn!(plugin = %pool.plugin.name, "plugin instance: {e}");
                    pool.shared.failures.fetch_add(1, Relaxed);
                    pool.rebuild();
                    break;
                }
            }
        }
        pool
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// Whether worker `worker` has an instance now.
    pub fn ready(&self, worker: usize) -> bool {
        self.shared.slots[worker % MAX_WORKERS].lock().is_some()
    }

    /// Run `f` on worker `worker`'s instance. A call that fails drops the instance; so
    /// does a worker find none ([`PluginError::NoInstance`]) until the rebuilder, after
    /// its back-off, has made a new one.
    pub fn with<R>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut I) -> Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        let mut g = self.shared.slots[worker % MAX_WORKERS].lock();
        let Some(h) = g.as_mut() else {
            drop(g);
            self.rebuild();
            return Err(PluginError::NoInstance {
                name: self.plugin.name.clone(),
            });
        };
        let r = f(h);
        match r {
            Ok(_) => {
                if self.shared.failures.load(Relaxed) != 0 {
                    self.shared.failures.store(0, Relaxed);
                }
            }
            Err(_) => {
                *g = None;
                drop(g);
                self.shared.failures.fetch_add(1, Relaxed);
                self.rebuild();
            }
        }
        r
    }

    /// Start the rebuilder unless it runs: after the back-off it fills every empty slot of
    /// the workers the runtime has (and the one asked for).
    fn rebuild(&self) {
        if self.shared.rebuilding.swap(true, AcqRel) {
            return;
        }
        let shared = std::sync::Arc::downgrade(&self.shared);
        let plugin = self.plugin.clone();
        let wait = rebuild_backoff(self.shared.failures.load(Relaxed).max(1));
        let spawned = std::thread::Builder::new()
            .name("wvs-plugin-build".into())
            .spawn(move || {
                std::thread::sleep(wait);
                // The pool went (a new configuration): nothing to rebuild.
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let workers = plugin.runtime.workers().clamp(1, MAX_WORKERS);
                let mut failed = false;
                for slot in &shared.slots[..workers] {
                    if slot.lock().is_some() {
                        continue;
                    }
                    match I::new(&plugin) {
                        Ok(h) => *slot.lock() = Some(h),
                        Err(e) => {
                            tracing::warn!(plugin = %plugin.name, "plugin instance: {e}");
                            failed = true;
                            break;
                        }
                    }
                }
                shared.rebuilding.store(false, Release);
                if failed {
                    shared.failures.fetch_add(1, Relaxed);
                    let pool = Pool {
                        flags: 0,
                        label: plugin.name.as_str().into(),
                        plugin,
                        shared,
                    };
                    pool.rebuild();
                }
            });
        if spawned.is_err() {
            self.shared.rebuilding.store(false, Release);
        }
    }
}
