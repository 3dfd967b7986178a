//! The WebAssembly plugin runtime (wasmtime).
//!
//! - Modules are compiled once, off the fast path, when the configuration is loaded; compiled
//!   code is cached on disk (wasmtime's cache, in `--plugin-cache`), so a restart does not
//!   compile again.
//! - Each virtual service gets its own instance of its scheduler's module: a scheduler's state
//!   belongs to its service. The instance is called under the service's scheduler lock, once
//!   per new connection; packets of existing connections never call a plugin.
//! - Every call runs under a deadline (wasmtime epoch interruption; a timer thread advances
//!   the epoch every millisecond) and a memory limit. A trap, a timeout or an answer out of
//!   range is counted, logged (once per plugin and service, not per packet), and the service
//!   falls back to the native build of a safe IPVS scheduler until the plugin is replaced.
//! - The built-in schedulers are embedded in the binary as wasm ([`builtin`]), built from
//!   `plugins/` by `host/build.rs`.

pub mod builtin {
    //! The embedded built-in scheduler modules.
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

mod helper;
mod pe;
mod pool;
mod sched;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::Duration;

pub use helper::HelperPool;
pub use helper::{Answer, WasmHelper};
pub use pe::{PeAnswer, PePool, WasmPe};
pub use pool::{Instance, Pool};
pub use sched::WasmScheduler;

use crate::consts::{PLUGIN_EPOCH_IDLE_TICKS, PLUGIN_EPOCH_US, PLUGIN_MAX_MEMORY};

/// Why a plugin could not be loaded or called.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The module is not valid WebAssembly or could not be compiled.
    #[error("cannot compile plugin {name}: {msg}")]
    Compile {
        /// Plugin name.
        name: String,
        /// What wasmtime said.
        msg: String,
    },
    /// The module does not have the exports of the ABI, or the wrong ABI version.
    #[error(
        "plugin {name} does not follow the wvs ABI version {}: {msg}",
        wvs_sdk::ABI_VERSION
    )]
    Abi {
        /// Plugin name.
        name: String,
        /// What is missing or wrong.
        msg: String,
    },
    /// A call trapped (including running past its deadline).
    #[error("plugin {name} trapped: {msg}")]
    Trap {
        /// Plugin name.
        name: String,
        /// The trap.
        msg: String,
    },
    /// A scheduler call named a real server that takes no new connection (weight 0, or
    /// over its upper threshold), which no IPVS scheduler does.
    #[error("plugin {name} picked {addr}, which {why}")]
    Unavailable {
        /// Plugin name.
        name: String,
        /// The server it picked.
        addr: String,
        /// Why that server may not take it.
        why: &'static str,
    },
    /// Scheduler calls kept taking longer than `PLUGIN_SLOW_CALL_US`.
    #[error(
        "plugin {name} is too slow: its calls keep taking over {limit_us} µs (the last {took_us} µs)"
    )]
    Slow {
        /// Plugin name.
        name: String,
        /// The bound.
        limit_us: u64,
        /// The last call's time.
        took_us: u64,
    },
    /// A helper has no instance on this worker: its last call failed and the rebuilder
    /// has not made a new one yet (it waits a back-off first).
    #[error("helper {name} has no instance on this worker yet (rebuilding after a failure)")]
    NoInstance {
        /// Plugin name.
        name: String,
    },
    /// A call returned an index that is not a real server.
    #[error("plugin {name} answered {answer} with {n} real servers")]
    BadAnswer {
        /// Plugin name.
        name: String,
        /// The answer.
        answer: i32,
        /// How many servers there were.
        n: usize,
    },
}

/// Counters of plugin calls, shared by every service.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Scheduler calls.
    pub calls: AtomicU64,
    /// Calls that trapped or timed out.
    pub traps: AtomicU64,
    /// Calls that returned an invalid answer.
    pub invalid: AtomicU64,
    /// Plugins taken out for being repeatedly slow.
    pub slow: AtomicU64,
    /// Services switched to their fallback scheduler.
    pub fallbacks: AtomicU64,
}

/// What a plugin is, from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// A scheduler (`wvs_schedule`).
    Scheduler,
    /// An application helper (`wvs_helper_packet`), with its flags.
    Helper {
        /// [`wvs_sdk::helper_flags`].
        flags: u32,
    },
    /// A persistence engine (`wvs_pe_key`).
    Pe,
}

/// A compiled module, ready to instantiate.
#[derive(Clone)]
pub struct Plugin {
    /// Name services refer to it by.
    pub name: String,
    /// Scheduler or helper.
    pub kind: PluginKind,
    /// SHA-256 of the module's bytes.
    pub digest: [u8; 32],
    /// The module's bytes: two plugins are the same when name, digest and bytes are.
    wasm: Arc<[u8]>,
    module: wasmtime::Module,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Plugin {
    fn eq(&self, other: &Self) -> bool {
        self.is(&other.name, &other.digest, &other.wasm)
    }
}

impl Plugin {
    /// Whether it is the module `wasm` (with `digest`) under the name `name`: the digest
    /// first, then the bytes, so that no crafted digest collision can pass for another
    /// module.
    pub fn is(&self, name: &str, digest: &[u8; 32], wasm: &[u8]) -> bool {
        self.name == name && self.digest == *digest && *self.wasm == *wasm
    }
}

/// The SHA-256 of a module's bytes (names its file in the state directory).
pub fn digest(wasm: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(wasm).into()
}

/// A digest in hexadecimal.
pub fn digest_hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The epoch timer's switch: it ticks (every `PLUGIN_EPOCH_US`, so that a plugin call's
/// deadline can pass) only while a plugin call runs or has just run, and sleeps once none
/// has run for `PLUGIN_EPOCH_IDLE_TICKS` ticks, so that a wvs with a few new connections a
/// second does not wake ten thousand times a second (on an emulated machine that alone
/// took half of its CPU). A call wakes it; a call's deadline counts ticks from the call's
/// start, so a timer that was asleep before the call loses nothing.
#[derive(Debug, Default)]
pub(crate) struct EpochClock {
    calls: std::sync::atomic::AtomicU64,
    /// Calls in progress: the timer never sleeps under one, however long it runs.
    running: std::sync::atomic::AtomicU32,
    asleep: AtomicBool,
    thread: std::sync::OnceLock<std::thread::Thread>,
    /// A call's deadline in ticks, beyond `PLUGIN_DEADLINE_EPOCHS` (0: that).
    deadline_ticks: AtomicU64,
}

impl EpochClock {
    /// A call's deadline, in ticks.
    pub(crate) fn deadline(&self) -> u64 {
        match self.deadline_ticks.load(Relaxed) {
            0 => crate::consts::PLUGIN_DEADLINE_EPOCHS,
            t => t,
        }
    }

    /// Say a call is about to start (on the worker's side of the store/load pair with
    /// the timer: either the timer sees the new count or the caller sees it asleep); the
    /// call runs until the guard is dropped.
    #[must_use = "the call runs while the guard lives"]
    pub(crate) fn enter(&self) -> Running<'_> {
        self.running.fetch_add(1, SeqCst);
        self.calls.fetch_add(1, SeqCst);
        if self.asleep.load(SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        Running(self)
    }

    /// Nothing started since the timer last saw `seen` calls and nothing runs.
    fn quiet(&self, seen: u64) -> bool {
        self.running.load(SeqCst) == 0 && self.calls.load(SeqCst) == seen
    }
}

/// A plugin call in progress (see [`EpochClock::enter`]).
pub(crate) struct Running<'a>(&'a EpochClock);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

/// The wasmtime engine, its epoch timer and the plugin counters.
pub struct Runtime {
    engine: wasmtime::Engine,
    linker: wasmtime::Linker<sched::StoreData>,
    /// Counters.
    pub stats: PluginStats,
    stop: Arc<AtomicBool>,
    clock: Arc<EpochClock>,
    /// Above this a scheduler call is slow (µs); `PLUGIN_SLOW_CALL_US` unless set.
    slow_call_us: AtomicU64,
    /// What a module from outside must pass before it is compiled here (unset: nothing;
    /// tests). The daemon's compiles it first in a child process within a budget.
    gate: std::sync::OnceLock<Gate>,
    /// Modules compiled ahead, off the control thread (an upload), for the change that
    /// follows: with their bytes, the last few.
    ahead: parking_lot::Mutex<Vec<(Arc<[u8]>, wasmtime::Module)>>,
    /// The datapath workers, each with its own helper instances (1 until set).
    workers: std::sync::atomic::AtomicUsize,
}

/// A check of a module from outside, by name and bytes: `Err` refuses it.
pub(crate) type GateFn = dyn Fn(&str, &[u8]) -> Result<(), PluginError> + Send + Sync;

/// A check a module from outside passes before the runtime compiles it.
pub struct Gate(pub Box<GateFn>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

/// The engine's settings, with the compiled-code cache in `cache_dir` (a directory the
/// caller made sure is wvs's own): wvs's and a compiler process's are the same, so that
/// what one puts in the cache the other finds.
pub fn engine_config(cache_dir: Option<&Path>) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    if let Some(dir) = cache_dir {
        let mut cc = wasmtime::CacheConfig::new();
        cc.with_directory(dir);
        match wasmtime::Cache::new(cc) {
            Ok(cache) => {
                config.cache(Some(cache));
            }
            Err(e) => tracing::warn!(dir = %dir.display(), "plugin cache disabled: {e}"),
        }
    }
    config
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.clock.thread.get() {
            t.unpark();
        }
    }
}

impl Runtime {
    /// An engine with epoch interruption, its timer thread, and a compiled-code cache in
    /// `cache_dir` (none if `None` or if the directory cannot be used).
    pub fn new(cache_dir: Option<&Path>) -> Result<Arc<Self>, PluginError> {
        let config = engine_config(cache_dir);
        let engine = wasmtime::Engine::new(&config).map_err(|e| PluginError::Compile {
            name: "(engine)".into(),
            msg: e.to_string(),
        })?;
        let linker = sched::linker(&engine).map_err(|e| PluginError::Compile {
            name: "(linker)".into(),
            msg: e.to_string(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let clock = Arc::new(EpochClock::default());
        {
            let (engine, stop, tick) = (engine.clone(), stop.clone(), clock.clone());
            let t = std::thread::Builder::new()
                .name("wvs-epoch".into())
                .spawn(move || {
                    let clock = tick;
                    let mut seen = clock.calls.load(SeqCst);
                    let mut idle = 0u32;
                    let period = Duration::from_micros(PLUGIN_EPOCH_US);
                    let mut next = std::time::Instant::now();
                    while !stop.load(Relaxed) {
                        if idle >= PLUGIN_EPOCH_IDLE_TICKS {
                            // No call started for that many ticks and none runs: sleep
                            // until the next one, looking at the stop flag now and then.
                            clock.asleep.store(true, SeqCst);
                            if clock.quiet(seen) {
                                std::thread::park_timeout(Duration::from_secs(1));
                            }
                            clock.asleep.store(false, SeqCst);
                            if clock.quiet(seen) {
                                continue;
                            }
                            (seen, idle) = (clock.calls.load(SeqCst), 0);
                            next = std::time::Instant::now();
                        }
                        // Tick at absolute times: each sleep overshoots (timer slack), the
                        // next one is shorter by as much.
                        next += period;
                        let now = std::time::Instant::now();
                        match next.checked_duration_since(now) {
                            Some(d) => std::thread::sleep(d),
                            // Far behind (the thread was not scheduled): start again from
                            // now rather than tick in a burst.
                            None if now - next > period * 10 => next = now,
                            None => {}
                        }
                        engine.increment_epoch();
                        let now = clock.calls.load(SeqCst);
                        if now == seen && clock.running.load(SeqCst) == 0 {
                            idle += 1;
                        } else {
                            (seen, idle) = (now, 0);
                        }
                    }
                })
                .map_err(|e| PluginError::Compile {
                    name: "(epoch timer)".into(),
                    msg: e.to_string(),
                })?;
            let _ = clock.thread.set(t.thread().clone());
        }
        Ok(Arc::new(Self {
            engine,
            linker,
            stats: PluginStats::default(),
            stop,
            clock,
            slow_call_us: AtomicU64::new(crate::consts::PLUGIN_SLOW_CALL_US),
            gate: std::sync::OnceLock::new(),
            ahead: parking_lot::Mutex::new(Vec::new()),
            workers: std::sync::atomic::AtomicUsize::new(1),
        }))
    }

    /// Pass modules from outside through `g` before compiling them, from now on.
    pub fn set_gate(&self, g: Gate) {
        let _ = self.gate.set(g);
    }

    /// Compile a module from outside now, off the control thread (a blocking task), so that
    /// the change that installs it finds it compiled; checks it as [`Self::compile`] does.
    pub fn compile_ahead(self: &Arc<Self>, name: &str, wasm: &[u8]) -> Result<(), PluginError> {
        let plugin = self.compile(name, wasm)?;
        let mut ahead = self.ahead.lock();
        if ahead.len() >= 4 {
            ahead.remove(0);
        }
        ahead.push((Arc::from(wasm), plugin.module));
        Ok(())
    }

    /// Say how many datapath workers run: helper pools build an instance for each.
    pub fn set_workers(&self, n: usize) {
        self.workers.store(n, Relaxed);
    }

    /// The datapath workers helper pools build instances for.
    pub fn workers(&self) -> usize {
        self.workers.load(Relaxed)
    }

    /// Give every call `us` microseconds (of the thread's CPU clock) before it is taken for
    /// a runaway, instead of `PLUGIN_DEADLINE_EPOCHS` ticks. For the tests: a debug build
    /// on a shared machine, whose thread CPU clock also counts what the hypervisor took
    /// (steal), is not where a deadline is judged.
    pub fn set_call_deadline_us(&self, us: u64) {
        let ticks = us.div_ceil(crate::consts::PLUGIN_EPOCH_US).max(1);
        self.clock.deadline_ticks.store(ticks, Relaxed);
    }

    /// Set the time above which a scheduler call is slow, for instances made from now on.
    #[cfg(test)]
    pub(crate) fn set_slow_call_us(&self, us: u64) {
        self.slow_call_us.store(us, Relaxed);
    }

    /// Compile a module (from the disk cache when it was compiled before) and check that it
    /// has the ABI's exports, by instantiating it once.
    pub fn compile(self: &Arc<Self>, name: &str, wasm: &[u8]) -> Result<Plugin, PluginError> {
        self.plugin_of(name, wasm, self.module(name, wasm, true)?)
    }

    /// The compiled module: one compiled ahead, else compiled now (through the gate when
    /// it comes from `outside` the binary).
    fn module(
        &self,
        name: &str,
        wasm: &[u8],
        outside: bool,
    ) -> Result<wasmtime::Module, PluginError> {
        let ready = self
            .ahead
            .lock()
            .iter()
            .find(|(w, _)| **w == *wasm)
            .map(|(_, m)| m.clone());
        if let Some(m) = ready {
            return Ok(m);
        }
        if outside && let Some(g) = self.gate.get() {
            (g.0)(name, wasm)?;
        }
        wasmtime::Module::new(&self.engine, wasm).map_err(|e| PluginError::Compile {
            name: name.into(),
            msg: format!("{e:#}"),
        })
    }

    /// A plugin of a compiled module, checked against the ABI by instantiating it once.
    fn plugin_of(
        self: &Arc<Self>,
        name: &str,
        wasm: &[u8],
        module: wasmtime::Module,
    ) -> Result<Plugin, PluginError> {
        let exports = |name: &str| module.exports().any(|e| e.name() == name);
        let helper = exports(wvs_sdk::abi::HELPER_PACKET_FN);
        let pe = exports(wvs_sdk::abi::PE_KEY_FN);
        let mut plugin = Plugin {
            name: name.into(),
            kind: PluginKind::Scheduler,
            digest: digest(wasm),
            wasm: Arc::from(wasm),
            module,
            runtime: self.clone(),
        };
        if helper {
            let flags = WasmHelper::new(&plugin)?.flags();
            plugin.kind = PluginKind::Helper { flags };
        } else if pe {
            WasmPe::new(&plugin)?;
            plugin.kind = PluginKind::Pe;
        } else {
            plugin.instantiate()?;
        }
        Ok(plugin)
    }

    /// Compile every embedded built-in scheduler.
    pub fn builtins(self: &Arc<Self>) -> Result<Vec<Plugin>, PluginError> {
        // Embedded in the binary: compiled here, without the budget's child process.
        builtin::BUILTIN
            .iter()
            .map(|(name, wasm)| self.plugin_of(name, wasm, self.module(name, wasm, false)?))
            .collect()
    }
}

impl Plugin {
    /// The runtime (and its counters) the plugin belongs to.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A new instance for one service.
    pub fn instantiate(&self) -> Result<WasmScheduler, PluginError> {
        WasmScheduler::new(self)
    }
}

/// Every scheduler the configuration can name: the built-in plugins, compiled once at
/// start, and the plugins of the configuration file, compiled at each load.
#[derive(Debug)]
pub struct Registry {
    runtime: Arc<Runtime>,
    builtins: Vec<Plugin>,
    custom: Vec<Plugin>,
    /// Run the built-in schedulers as wasm plugins (else natively).
    wasm_builtins: bool,
}

impl Registry {
    /// Compile the built-in plugins.
    pub fn new(runtime: Arc<Runtime>, wasm_builtins: bool) -> Result<Self, PluginError> {
        let builtins = runtime.builtins()?;
        Ok(Self {
            runtime,
            builtins,
            custom: Vec::new(),
            wasm_builtins,
        })
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Compile the plugins of a configuration without installing them: a change is
    /// checked whole before anything of it takes effect. A plugin installed already with
    /// the same name and the same bytes (by digest) is taken as it is: a change that does
    /// not touch a plugin compiles nothing.
    pub fn prepare(&self, specs: &[crate::spec::Plugin]) -> Result<Vec<Plugin>, PluginError> {
        specs
            .iter()
            .map(|s| {
                let wasm = std::fs::read(&s.path).map_err(|e| PluginError::Compile {
                    name: s.name.clone(),
                    msg: format!("cannot read {}: {e}", s.path.display()),
                })?;
                let d = digest(&wasm);
                if let Some(p) = self.custom.iter().find(|p| p.is(&s.name, &d, &wasm)) {
                    return Ok(p.clone());
                }
                self.runtime.compile(&s.name, &wasm)
            })
            .collect()
    }

    /// The plugins from files now installed.
    pub fn custom(&self) -> &[Plugin] {
        &self.custom
    }

    /// Install plugins that [`prepare`](Self::prepare) compiled.
    pub fn commit(&mut self, custom: Vec<Plugin>) {
        self.custom = custom;
    }

    /// Compile and install the plugins of a configuration; on failure nothing changes.
    pub fn load(&mut self, specs: &[crate::spec::Plugin]) -> Result<(), PluginError> {
        let custom = self.prepare(specs)?;
        self.commit(custom);
        Ok(())
    }

    /// The plugin that runs the scheduler called `name`: the one from a file by that name,
    /// else the built-in one when built-ins run as plugins (`None`: run it natively).
    pub fn plugin_for(&self, name: &str) -> Option<Plugin> {
        self.plugin_in(&self.custom, name)
    }

    /// As [`plugin_for`](Self::plugin_for), with `custom` as the plugins from files.
    pub fn plugin_in(&self, custom: &[Plugin], name: &str) -> Option<Plugin> {
        custom
            .iter()
            .find(|p| p.name == name && p.kind == PluginKind::Scheduler)
            .or_else(|| {
                self.builtins.iter().find(|p| {
                    self.wasm_builtins && p.name == name && p.kind == PluginKind::Scheduler
                })
            })
            .cloned()
    }

    /// The helper called `name`: the plugin from a file by that name, else the built-in
    /// one (helpers always run as plugins). `None`: there is no such helper.
    pub fn helper_in(&self, custom: &[Plugin], name: &str) -> Option<Plugin> {
        self.named_in(custom, name)
            .filter(|p| matches!(p.kind, PluginKind::Helper { .. }))
    }

    /// The persistence engine called `name`, found as [`helper_in`](Self::helper_in)
    /// finds a helper. `None`: there is no such engine.
    pub fn pe_in(&self, custom: &[Plugin], name: &str) -> Option<Plugin> {
        self.named_in(custom, name)
            .filter(|p| p.kind == PluginKind::Pe)
    }

    /// The helper or persistence engine called `name` (what a service binds by name
    /// besides its scheduler), found as [`helper_in`](Self::helper_in) finds a helper.
    pub fn extension_in(&self, custom: &[Plugin], name: &str) -> Option<Plugin> {
        self.named_in(custom, name)
            .filter(|p| p.kind != PluginKind::Scheduler)
    }

    /// The plugin from a file called `name`, else the built-in one.
    fn named_in(&self, custom: &[Plugin], name: &str) -> Option<Plugin> {
        custom
            .iter()
            .find(|p| p.name == name)
            .or_else(|| self.builtins.iter().find(|p| p.name == name))
            .cloned()
    }
}

/// Memory a plugin instance may use, in bytes.
pub(crate) const MAX_MEMORY: usize = PLUGIN_MAX_MEMORY;

#[cfg(test)]
mod tests;
