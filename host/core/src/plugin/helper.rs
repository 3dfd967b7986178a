//! Application helper instances (IPVS's `ip_vs_app`): one per helper plugin and worker,
//! shared by every connection the helper is bound to, which keep their own helper state in
//! the connection ([`crate::conn::app`]). A worker calls only its own instance, so helper
//! calls never wait for one another.

use parking_lot::Mutex;
use std::sync::atomic::Ordering::{AcqRel, Relaxed, Release};
use wasmtime::{Caller, Linker, Memory, Store, TypedFunc};
use wvs_sdk::{
    Expect, HELPER_EXPECT_OFFSET, HELPER_MAX_PAYLOAD, HELPER_PAYLOAD_OFFSET, HELPER_PKT_OFFSET,
    HELPER_STATE_LEN, HELPER_STATE_OFFSET, HelperShared, PacketInfo, abi,
};

use super::sched::StoreData;
use super::{Plugin, PluginError};
use crate::consts::{
    HELPER_MAX_EXPECTS_PER_CALL, HELPER_REBUILD_BACKOFF_MAX_MS, HELPER_REBUILD_BACKOFF_MS,
    MAX_WORKERS, PLUGIN_SETUP_DEADLINE_EPOCHS,
};

/// What the host lets a helper's `expect` call ask for, set before each call.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ExpectScope {
    /// Where the shared region lies in the instance's memory.
    shared: usize,
    /// The connection's client and real server (IPv4 mapped).
    caddr: [u8; 16],
    daddr: [u8; 16],
    /// Expectations may be registered (NAT connections; not full NAT).
    allowed: bool,
    /// The expectations of this call.
    got: [Expect; HELPER_MAX_EXPECTS_PER_CALL],
    n: usize,
    /// Refused ones.
    refused: u32,
}

/// The `expect` import.
pub(super) fn link_expect(l: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    l.func_wrap(
        abi::IMPORT_MODULE,
        abi::EXPECT_FN,
        |mut c: Caller<'_, StoreData>| -> i32 {
            let Some(mem) = c.get_export("memory").and_then(|e| e.into_memory()) else {
                return -1;
            };
            let at = c.data().expect.shared + HELPER_EXPECT_OFFSET;
            let mut e = Expect::default();
            let bytes = bytemuck::bytes_of_mut(&mut e);
            let Some(src) = mem.data(&c).get(at..at + bytes.len()) else {
                return -1;
            };
            bytes.copy_from_slice(src);
            let scope = &mut c.data_mut().expect;
            let ok = scope.allowed
                && scope.n < scope.got.len()
                && e.caddr == scope.caddr
                && (e.daddr == [0; 16] || e.daddr == scope.daddr)
                && matches!(e.proto, 6 | 17);
            if !ok {
                scope.refused += 1;
                return -1;
            }
            e.daddr = scope.daddr;
            scope.got[scope.n] = e;
            scope.n += 1;
            0
        },
    )?;
    Ok(())
}

/// A helper's answer for one packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Send it as it is.
    Keep,
    /// Drop it.
    Drop,
    /// Send it with this payload.
    Replace(&'a [u8]),
}

/// One instance of a helper plugin.
pub struct WasmHelper {
    name: String,
    store: Store<StoreData>,
    memory: Memory,
    shared: usize,
    packet: TypedFunc<(), i32>,
    clock: std::sync::Arc<super::EpochClock>,
    flags: u32,
    /// Called before (the first call is timed from its start, as a scheduler's).
    warm: bool,
}

impl std::fmt::Debug for WasmHelper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHelper")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WasmHelper {
    pub(super) fn new(p: &Plugin) -> Result<Self, PluginError> {
        let abi_err = |msg: String| PluginError::Abi {
            name: p.name.clone(),
            msg,
        };
        let (mut store, instance, memory) = super::sched::instantiate(p)?;
        let shared_fn: TypedFunc<(), u32> =
            super::sched::export(p, &mut store, &instance, abi::HELPER_SHARED_FN)?;
        let packet = super::sched::export(p, &mut store, &instance, abi::HELPER_PACKET_FN)?;
        let flags_fn: TypedFunc<(), u32> =
            super::sched::export(p, &mut store, &instance, abi::HELPER_FLAGS_FN)?;
        // Under the deadline as every call: a helper whose `flags` or `shared` never
        // returns must not hang the thread that builds it.
        let (r, _) = super::sched::call(
            &p.runtime.clock,
            &mut store,
            PLUGIN_SETUP_DEADLINE_EPOCHS,
            super::sched::CallKind::Quick,
            |store| {
                let flags = flags_fn.call(&mut *store, ())?;
                let shared = shared_fn.call(&mut *store, ())?;
                wasmtime::Result::<(u32, u32)>::Ok((flags, shared))
            },
        );
        let (flags, shared) = r.map_err(|e| abi_err(format!("{e:#}")))?;
        let shared = shared as usize;
        if shared
            .checked_add(std::mem::size_of::<HelperShared>())
            .is_none_or(|end| end > memory.data_size(&store))
        {
            return Err(abi_err("the shared region lies outside its memory".into()));
        }
        store.data_mut().expect.shared = shared;
        Ok(Self {
            name: p.name.clone(),
            store,
            memory,
            shared,
            packet,
            clock: p.runtime.clock.clone(),
            flags,
            warm: false,
        })
    }

    /// Show the helper one packet: `pkt` (with `len` set to the payload's length and
    /// `max_len` to the most a replacement may have), the connection's `state` for it (written
    /// back), the payload. `allow_expect`: the connection may have expected connections.
    pub fn packet(
        &mut self,
        pkt: &PacketInfo,
        state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        allow_expect: bool,
        now: u64,
    ) -> Result<Answer<'_>, PluginError> {
        let shared = self.shared;
        let oob = |name: &str| PluginError::Abi {
            name: name.into(),
            msg: "shared region out of bounds".into(),
        };
        {
            let mem = self.memory.data_mut(&mut self.store);
            let region = mem
                .get_mut(shared..shared + HELPER_PAYLOAD_OFFSET + payload.len())
                .ok_or_else(|| oob(&self.name))?;
            let pb = bytemuck::bytes_of(pkt);
            region[HELPER_PKT_OFFSET..HELPER_PKT_OFFSET + pb.len()].copy_from_slice(pb);
            region[HELPER_STATE_OFFSET..HELPER_STATE_OFFSET + HELPER_STATE_LEN]
                .copy_from_slice(state);
            region[HELPER_PAYLOAD_OFFSET..].copy_from_slice(payload);
        }
        let d = self.store.data_mut();
        d.now = now;
        d.expect.caddr = pkt.caddr;
        d.expect.daddr = pkt.daddr;
        d.expect.allowed = allow_expect;
        d.expect.n = 0;
        let packet = &self.packet;
        let kind = if self.warm {
            super::sched::CallKind::Quick
        } else {
            super::sched::CallKind::Measured
        };
        let (r, _) = super::sched::call(
            &self.clock,
            &mut self.store,
            self.clock.deadline(),
            kind,
            |store| packet.call(store, ()),
        );
        self.warm = true;
        let answer = r.map_err(|e| PluginError::Trap {
            name: self.name.clone(),
            msg: format!("{e:#}"),
        })?;
        let mem = self.memory.data(&self.store);
        let st = mem
            .get(shared + HELPER_STATE_OFFSET..shared + HELPER_STATE_OFFSET + HELPER_STATE_LEN)
            .ok_or_else(|| oob(&self.name))?;
        state.copy_from_slice(st);
        match answer {
            wvs_sdk::helper_answer::KEEP => Ok(Answer::Keep),
            wvs_sdk::helper_answer::DROP => Ok(Answer::Drop),
            n if n >= 0 && n as u32 <= pkt.max_len && (n as usize) <= HELPER_MAX_PAYLOAD => {
                let at = shared + HELPER_PAYLOAD_OFFSET;
                mem.get(at..at + n as usize)
                    .map(Answer::Replace)
                    .ok_or_else(|| oob(&self.name))
            }
            n => Err(PluginError::BadAnswer {
                name: self.name.clone(),
                answer: n,
                n: pkt.max_len as usize,
            }),
        }
    }

    /// Its [`wvs_sdk::helper_flags`].
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The expected connections the last call registered.
    pub fn expects(&self) -> &[Expect] {
        let s = &self.store.data().expect;
        &s.got[..s.n]
    }

    /// Expectations refused since the instance was made.
    pub fn refused(&self) -> u32 {
        self.store.data().expect.refused
    }
}

/// A helper plugin with an instance per worker. The instances are built off the datapath:
/// those of the workers that run when the pool is made (on the control thread), and after
/// a failed call by a rebuilder thread after a back-off, so that a worker never compiles,
/// instantiates or waits for a helper that fails on every call.
pub struct HelperPool {
    /// The plugin.
    pub plugin: Plugin,
    /// Its [`wvs_sdk::helper_flags`].
    pub flags: u32,
    shared: std::sync::Arc<PoolShared>,
}

/// What the workers and the rebuilder share.
struct PoolShared {
    slots: Box<[Mutex<Option<WasmHelper>>]>,
    /// Failures since the last call that succeeded: the rebuild's back-off doubles with each.
    failures: std::sync::atomic::AtomicU32,
    /// A rebuilder is waiting or building.
    rebuilding: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for HelperPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperPool")
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

impl HelperPool {
    /// A pool for a helper plugin (`flags` from its compilation: [`Plugin::kind`]), with
    /// the instances of the runtime's workers built now.
    pub fn new(plugin: Plugin) -> Self {
        let flags = match plugin.kind {
            super::PluginKind::Helper { flags } => flags,
            super::PluginKind::Scheduler => 0,
        };
        let shared = std::sync::Arc::new(PoolShared {
            slots: (0..MAX_WORKERS).map(|_| Mutex::new(None)).collect(),
            failures: Default::default(),
            rebuilding: Default::default(),
        });
        let pool = Self {
            plugin,
            flags,
            shared,
        };
        let workers = pool.plugin.runtime.workers().clamp(1, MAX_WORKERS);
        for slot in &pool.shared.slots[..workers] {
            match WasmHelper::new(&pool.plugin) {
                Ok(h) => *slot.lock() = Some(h),
                Err(e) => {
                    tracing::warn!(helper = %pool.plugin.name, "helper instance: {e}");
                    pool.shared.failures.fetch_add(1, Relaxed);
                    pool.rebuild();
                    break;
                }
            }
        }
        pool
    }

    /// The helper's name.
    pub fn name(&self) -> &str {
        &self.plugin.name
    }

    /// Whether it registers expected connections.
    pub fn expects(&self) -> bool {
        self.flags & wvs_sdk::helper_flags::EXPECTS != 0
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
        f: impl FnOnce(&mut WasmHelper) -> Result<R, PluginError>,
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
            .name("wvs-helper-build".into())
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
                    match WasmHelper::new(&plugin) {
                        Ok(h) => *slot.lock() = Some(h),
                        Err(e) => {
                            tracing::warn!(helper = %plugin.name, "helper instance: {e}");
                            failed = true;
                            break;
                        }
                    }
                }
                shared.rebuilding.store(false, Release);
                if failed {
                    shared.failures.fetch_add(1, Relaxed);
                    let pool = HelperPool {
                        flags: 0,
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
