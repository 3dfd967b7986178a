//! One scheduler plugin instance: the store, the shared table in its memory, and the calls.

use wasmtime::{
    Caller, Engine, Instance, Linker, Memory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc,
};
use wvs_sdk::{ConnInfo, DestInfo, SHARED_CONN_OFFSET, SHARED_DESTS_OFFSET, SHARED_N_OFFSET, abi};

use super::{MAX_MEMORY, Plugin, PluginError};
use crate::consts::{
    PLUGIN_DEADLINE_EPOCHS, PLUGIN_EPOCH_US, PLUGIN_MAX_TABLE_ELEMENTS, PLUGIN_OVERRUN_MAX_WINDOWS,
    PLUGIN_OVERRUN_RUNNING_WINDOWS, PLUGIN_OVERRUN_WINDOW_TICKS, PLUGIN_SETUP_DEADLINE_EPOCHS,
    PLUGIN_SLOW_SCORE_LIMIT, PLUGIN_SLOW_SCORE_STEP,
};
use std::time::Duration;

/// Per-instance host state.
pub(super) struct StoreData {
    pub(super) limits: Limits,
    rng: u64,
    pub(super) now: u64,
    /// What a helper's `expect` may register, and what it did (helpers only).
    pub(super) expect: super::helper::ExpectScope,
    /// The current call's overrun, once its deadline passed.
    overrun: Option<Overrun>,
    /// The thread's CPU time when the current call started, for a call timed from its
    /// start ([`CallKind::Measured`]).
    cpu_start: Option<Duration>,
    /// The current call's deadline, in ticks.
    deadline_ticks: u64,
}

/// wasmtime's per-store limits, with [`PLUGIN_MAX_TABLE_ELEMENTS`] as the bound of every
/// table together (wasmtime's own bound is per table, so four tables could hold four times
/// as much).
pub(super) struct Limits {
    store: StoreLimits,
    /// Elements of every table so far (tables never shrink).
    table_elements: usize,
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.store.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_add(desired.saturating_sub(current));
        if total > PLUGIN_MAX_TABLE_ELEMENTS {
            // A refused grow traps (as `trap_on_grow_failure`), a refused creation fails
            // the instantiation.
            return Err(wasmtime::format_err!(
                "the plugin's tables would hold {total} elements together, over {PLUGIN_MAX_TABLE_ELEMENTS}"
            ));
        }
        let ok = self.store.table_growing(current, desired, maximum)?;
        if ok {
            self.table_elements = total;
        }
        Ok(ok)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.store.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.store.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.store.instances()
    }

    fn tables(&self) -> usize {
        self.store.tables()
    }

    fn memories(&self) -> usize {
        self.store.memories()
    }
}

/// A call past its deadline, as measured so far.
#[derive(Debug, Clone, Copy)]
struct Overrun {
    /// The thread's CPU time at the start of the window being measured (of the call, for
    /// a [`CallKind::Measured`] one).
    start: Duration,
    /// Windows measured.
    windows: u32,
    /// The last windows in a row in which the call ran at least half of the time.
    running: u32,
}

/// How a call's overrun is judged once its deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallKind {
    /// A call of the fast path (microseconds): judged by a window after the deadline, with
    /// no clock read before it.
    Quick,
    /// A call that may take a few hundred microseconds of CPU (a scheduler's update
    /// building its table, an instance's first call touching its memory): the thread's
    /// CPU clock is read at its start, and it is interrupted once it has run for its
    /// deadline in all. A window would take such a call, preempted half-way on a busy
    /// machine, for a runaway one when it resumed.
    Measured,
}

fn thread_cpu() -> Option<Duration> {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .ok()
}

impl StoreData {
    pub(super) fn new(limits: StoreLimits) -> Self {
        Self {
            limits: Limits {
                store: limits,
                table_elements: 0,
            },
            rng: rand::random::<u64>() | 1,
            now: 0,
            expect: Default::default(),
            overrun: None,
            cpu_start: None,
            deadline_ticks: PLUGIN_DEADLINE_EPOCHS,
        }
    }

    /// The call's deadline passed (in wall-clock ticks). Interrupt it if it was running:
    /// the thread's CPU clock must show it ran at least half of each of
    /// `PLUGIN_OVERRUN_RUNNING_WINDOWS` windows of `PLUGIN_OVERRUN_WINDOW_TICKS` in a row
    /// after the deadline. A worker preempted in the middle
    /// of a short call (a busy machine) gets more windows, up to
    /// `PLUGIN_OVERRUN_MAX_WINDOWS`, instead of its plugin being taken for a runaway one.
    fn deadline_passed(&mut self) -> wasmtime::UpdateDeadline {
        let Some(now) = thread_cpu() else {
            return wasmtime::UpdateDeadline::Interrupt;
        };
        let window = PLUGIN_OVERRUN_WINDOW_TICKS;
        if let Some(start) = self.cpu_start {
            // Measured from its start: interrupted once it ran for its deadline.
            let o = self.overrun.get_or_insert(Overrun {
                start,
                windows: 0,
                running: 0,
            });
            o.windows += 1;
            let budget = Duration::from_micros(PLUGIN_EPOCH_US * self.deadline_ticks);
            return if now.saturating_sub(start) >= budget || o.windows >= PLUGIN_OVERRUN_MAX_WINDOWS
            {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Continue(window)
            };
        }
        let Some(o) = &mut self.overrun else {
            self.overrun = Some(Overrun {
                start: now,
                windows: 0,
                running: 0,
            });
            return wasmtime::UpdateDeadline::Continue(window);
        };
        o.windows += 1;
        // The thread's CPU clock also counts what the kernel did in its time (page faults,
        // and interrupts and softirqs where their time is not accounted apart): one window
        // of it is no proof, windows in a row are.
        if now.saturating_sub(o.start) >= Duration::from_micros(PLUGIN_EPOCH_US * window / 2) {
            o.running += 1;
        } else {
            o.running = 0;
        }
        if o.running >= PLUGIN_OVERRUN_RUNNING_WINDOWS || o.windows >= PLUGIN_OVERRUN_MAX_WINDOWS {
            wasmtime::UpdateDeadline::Interrupt
        } else {
            o.start = now;
            wasmtime::UpdateDeadline::Continue(window)
        }
    }
}

/// Run `f`, calls into a plugin, with their deadline `ticks` epochs away and the epoch
/// timer kept awake meanwhile; returns what `f` returned and how long it took. The order
/// matters: the timer is woken first, then the deadline armed and the clock read, since
/// waking it may cost this thread its CPU for a while (the woken timer runs first), which
/// is no part of the call.
pub(super) fn call<R>(
    clock: &super::EpochClock,
    store: &mut Store<StoreData>,
    ticks: u64,
    kind: CallKind,
    f: impl FnOnce(&mut Store<StoreData>) -> R,
) -> (R, Duration) {
    let _running = clock.enter();
    let d = store.data_mut();
    d.overrun = None;
    d.cpu_start = match kind {
        CallKind::Quick => None,
        CallKind::Measured => thread_cpu(),
    };
    d.deadline_ticks = ticks;
    store.set_epoch_deadline(ticks);
    let t0 = std::time::Instant::now();
    let r = f(store);
    (r, t0.elapsed())
}

/// A per-connection or per-packet call of an instance (`warm`: called before): the first
/// measured from its start (its code is cold then), the rest [`CallKind::Quick`], under
/// the clock's deadline; a trap is [`PluginError::Trap`] of plugin `name`.
pub(super) fn call_warm<R>(
    name: &str,
    clock: &super::EpochClock,
    store: &mut Store<StoreData>,
    warm: &mut bool,
    f: impl FnOnce(&mut Store<StoreData>) -> wasmtime::Result<R>,
) -> Result<(R, Duration), PluginError> {
    let kind = if *warm {
        CallKind::Quick
    } else {
        CallKind::Measured
    };
    let (r, took) = call(clock, store, clock.deadline(), kind, f);
    *warm = true;
    r.map(|v| (v, took)).map_err(|e| PluginError::Trap {
        name: name.to_string(),
        msg: format!("{e:#}"),
    })
}

/// The host functions a plugin imports.
pub(super) fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    let mut l = Linker::new(engine);
    l.func_wrap(
        abi::IMPORT_MODULE,
        abi::RANDOM_FN,
        |mut c: Caller<'_, StoreData>| -> u32 {
            let d = c.data_mut();
            d.rng ^= d.rng << 13;
            d.rng ^= d.rng >> 7;
            d.rng ^= d.rng << 17;
            (d.rng >> 32) as u32
        },
    )?;
    l.func_wrap(
        abi::IMPORT_MODULE,
        abi::NOW_MS_FN,
        |c: Caller<'_, StoreData>| -> u64 { c.data().now },
    )?;
    super::helper::link_expect(&mut l)?;
    Ok(l)
}

/// A new store and instance of `p` (either kind), under the limits every plugin gets,
/// with its memory found and its ABI version checked.
pub(super) fn instantiate(p: &Plugin) -> Result<(Store<StoreData>, Instance, Memory), PluginError> {
    let abi_err = |msg: String| PluginError::Abi {
        name: p.name.clone(),
        msg,
    };
    let data = StoreData::new(
        StoreLimitsBuilder::new()
            .memory_size(MAX_MEMORY)
            .table_elements(PLUGIN_MAX_TABLE_ELEMENTS)
            .instances(1)
            .tables(4)
            .memories(1)
            // A refused `memory.grow` or `table.grow` traps (and the plugin falls back)
            // instead of returning -1 to a loop that would ask again until its deadline.
            .trap_on_grow_failure(true)
            .build(),
    );
    let mut store = Store::new(&p.runtime.engine, data);
    store.limiter(|d| &mut d.limits);
    store.epoch_deadline_callback(|mut c| Ok(c.data_mut().deadline_passed()));
    let (r, _) = call(
        &p.runtime.clock,
        &mut store,
        PLUGIN_SETUP_DEADLINE_EPOCHS,
        CallKind::Quick,
        |store| {
            let instance: Instance = p
                .runtime
                .linker
                .instantiate(&mut *store, &p.module)
                .map_err(|e| abi_err(format!("{e:#}")))?;
            let memory = instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| abi_err("no exported memory".into()))?;
            let version: TypedFunc<(), u32> = export(p, store, &instance, abi::ABI_VERSION_FN)?;
            let v = version
                .call(&mut *store, ())
                .map_err(|e| abi_err(format!("{e:#}")))?;
            Ok::<_, PluginError>((instance, memory, v))
        },
    );
    let (instance, memory, v) = r?;
    if v != wvs_sdk::ABI_VERSION {
        return Err(abi_err(format!("it was built for ABI version {v}")));
    }
    Ok((store, instance, memory))
}

/// The exported function `name` of `instance`, with its signature checked.
pub(super) fn export<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    p: &Plugin,
    store: &mut Store<StoreData>,
    instance: &Instance,
    name: &str,
) -> Result<TypedFunc<P, R>, PluginError> {
    instance
        .get_typed_func(&mut *store, name)
        .map_err(|e| PluginError::Abi {
            name: p.name.clone(),
            msg: format!("{name}: {e}"),
        })
}

/// A plugin instance bound to one service.
pub struct WasmScheduler {
    name: String,
    store: Store<StoreData>,
    memory: Memory,
    shared: usize,
    update: TypedFunc<(u32, u32), ()>,
    schedule: TypedFunc<u32, i32>,
    clock: std::sync::Arc<super::EpochClock>,
    /// Slowness: up by `PLUGIN_SLOW_SCORE_STEP` per slow call, down by one per other call.
    slow_score: u32,
    /// Called before: the first call is timed from its start (it touches the instance's
    /// memory for the first time), the others by a window.
    warm: bool,
    /// Above this a call is slow (µs).
    slow_call_us: u64,
    /// What it declared ([`wvs_sdk::sched_flags`]; 0 without `wvs_sched_flags`).
    flags: u32,
}

impl std::fmt::Debug for WasmScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmScheduler")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl WasmScheduler {
    pub(super) fn new(p: &Plugin) -> Result<Self, PluginError> {
        let abi_err = |msg: String| PluginError::Abi {
            name: p.name.clone(),
            msg,
        };
        let (mut store, instance, memory) = instantiate(p)?;
        let shared_fn: TypedFunc<(), u32> = export(p, &mut store, &instance, abi::SHARED_FN)?;
        let update = export(p, &mut store, &instance, abi::UPDATE_FN)?;
        let schedule = export(p, &mut store, &instance, abi::SCHEDULE_FN)?;
        let (r, _) = call(
            &p.runtime.clock,
            &mut store,
            PLUGIN_SETUP_DEADLINE_EPOCHS,
            CallKind::Quick,
            |store| shared_fn.call(store, ()),
        );
        let shared = r.map_err(|e| abi_err(format!("{e:#}")))? as usize;
        // Optional: a module without it declares nothing; one with another signature is
        // refused.
        let flags = if instance
            .get_export(&mut store, abi::SCHED_FLAGS_FN)
            .is_some()
        {
            let f: TypedFunc<(), u32> = export(p, &mut store, &instance, abi::SCHED_FLAGS_FN)?;
            let (r, _) = call(
                &p.runtime.clock,
                &mut store,
                PLUGIN_SETUP_DEADLINE_EPOCHS,
                CallKind::Quick,
                |store| f.call(store, ()),
            );
            r.map_err(|e| abi_err(format!("{}: {e:#}", abi::SCHED_FLAGS_FN)))?
        } else {
            0
        };
        let size = SHARED_DESTS_OFFSET + wvs_sdk::MAX_DESTS * std::mem::size_of::<DestInfo>();
        if shared
            .checked_add(size)
            .is_none_or(|end| end > memory.data_size(&store))
        {
            return Err(abi_err("the shared table lies outside its memory".into()));
        }
        Ok(Self {
            name: p.name.clone(),
            store,
            memory,
            shared,
            update,
            schedule,
            clock: p.runtime.clock.clone(),
            slow_score: 0,
            warm: false,
            flags,
            slow_call_us: p
                .runtime
                .slow_call_us
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// What it declared about itself ([`wvs_sdk::sched_flags`]).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Return the plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn trap(&self, e: wasmtime::Error) -> PluginError {
        PluginError::Trap {
            name: self.name.clone(),
            msg: format!("{e:#}"),
        }
    }

    /// Write the real servers into the shared table. Returns how many were written.
    fn write_dests(&mut self, dests: &[DestInfo]) -> Result<usize, PluginError> {
        let n = dests.len().min(wvs_sdk::MAX_DESTS);
        let at = self.shared + SHARED_DESTS_OFFSET;
        let bytes: &[u8] = bytemuck::cast_slice(&dests[..n]);
        let mem = self.memory.data_mut(&mut self.store);
        // The bounds were checked at instantiation and memory only grows; check anyway,
        // since the plugin controls its memory.
        let dst = mem
            .get_mut(at..at + bytes.len())
            .ok_or_else(|| PluginError::Abi {
                name: self.name.clone(),
                msg: "shared table out of bounds".into(),
            })?;
        dst.copy_from_slice(bytes);
        if let Some(nb) =
            mem.get_mut(self.shared + SHARED_N_OFFSET..self.shared + SHARED_N_OFFSET + 4)
        {
            nb.copy_from_slice(&(n as u32).to_le_bytes());
        }
        Ok(n)
    }

    /// The real servers changed (`wvs_update`).
    pub fn update(&mut self, dests: &[DestInfo], flags: u32) -> Result<(), PluginError> {
        let n = self.write_dests(dests)?;
        let update = &self.update;
        let (r, _) = call(
            &self.clock,
            &mut self.store,
            self.clock.deadline(),
            CallKind::Measured,
            |store| update.call(store, (n as u32, flags)),
        );
        r.map_err(|e| self.trap(e))
    }

    /// Pick a real server for a connection (`wvs_schedule`).
    pub fn schedule(
        &mut self,
        conn: &ConnInfo,
        dests: &[DestInfo],
        now: u64,
    ) -> Result<Option<usize>, PluginError> {
        let n = self.write_dests(dests)?;
        let at = self.shared + SHARED_CONN_OFFSET;
        let cb: &[u8] = bytemuck::bytes_of(conn);
        if let Some(dst) = self
            .memory
            .data_mut(&mut self.store)
            .get_mut(at..at + cb.len())
        {
            dst.copy_from_slice(cb);
        }
        self.store.data_mut().now = now;
        let schedule = &self.schedule;
        let (answer, took) = call_warm(
            &self.name,
            &self.clock,
            &mut self.store,
            &mut self.warm,
            |store| schedule.call(store, n as u32),
        )?;
        let took_us = took.as_micros() as u64;
        if took_us > self.slow_call_us {
            self.slow_score += PLUGIN_SLOW_SCORE_STEP;
            if self.slow_score >= PLUGIN_SLOW_SCORE_LIMIT {
                return Err(PluginError::Slow {
                    name: self.name.clone(),
                    limit_us: self.slow_call_us,
                    took_us,
                });
            }
        } else {
            self.slow_score = self.slow_score.saturating_sub(1);
        }
        match answer {
            -1 => Ok(None),
            a if a >= 0 && (a as usize) < n => Ok(Some(a as usize)),
            a => Err(PluginError::BadAnswer {
                name: self.name.clone(),
                answer: a,
                n,
            }),
        }
    }
}
