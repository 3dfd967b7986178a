//! Compiling an uploaded module within a time and memory budget.
//!
//! Cranelift's time and memory grow with what a module holds, and an uploaded module is
//! outside input: a crafted one could hold wvs's control thread for minutes or take
//! gigabytes. So a module from outside is first compiled by a child process (`wvs
//! plugin-compile`, wvs's own binary again) with an address-space limit
//! ([`crate::consts::PLUGIN_COMPILE_MEMORY`]), no capabilities, and a deadline
//! ([`crate::consts::PLUGIN_COMPILE_SECS`]) after which it is killed. Only a module the
//! child compiled within both is compiled by wvs itself, and then from the compiled-plugin
//! cache the child filled, when there is one (the same engine settings, so the same key).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::plugin::PluginError;

/// What a compilation may take.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    /// wvs's binary (it runs the child).
    pub exe: PathBuf,
    /// The child's wall-clock time.
    pub time: Duration,
    /// The child's address space, bytes.
    pub memory: u64,
    /// The compiled-plugin cache the child fills.
    pub cache_dir: Option<PathBuf>,
}

impl Budget {
    /// The defaults, with this process's binary.
    pub fn new(cache_dir: Option<&Path>) -> std::io::Result<Self> {
        Ok(Self {
            exe: std::env::current_exe()?,
            time: Duration::from_secs(crate::consts::PLUGIN_COMPILE_SECS),
            memory: crate::consts::PLUGIN_COMPILE_MEMORY,
            cache_dir: cache_dir.map(Path::to_path_buf),
        })
    }

    /// Compile `wasm` in a child within the budget; `Ok` if it compiled.
    pub fn check(&self, name: &str, wasm: &[u8]) -> Result<(), PluginError> {
        let fail = |msg: String| PluginError::Compile {
            name: name.into(),
            msg,
        };
        let mut cmd = Command::new(&self.exe);
        // Nothing of the API's: the token stays with wvs.
        cmd.env_remove(crate::consts::API_TOKEN_ENV)
            .arg("plugin-compile")
            .arg("--memory")
            .arg(self.memory.to_string());
        if let Some(d) = &self.cache_dir {
            cmd.arg("--cache").arg(d);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot start the compiler process: {e}")))?;
        // The child reads all of its input before it compiles.
        if let Some(mut stdin) = child.stdin.take()
            && let Err(e) = stdin.write_all(wasm)
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("cannot hand the module to the compiler: {e}")));
        }
        let t0 = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if t0.elapsed() > self.time => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "compiling took longer than {} s, its budget: refused",
                        self.time.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(fail(format!("waiting for the compiler: {e}"))),
            }
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        if status.success() {
            return Ok(());
        }
        let err = err.trim();
        let out_of_memory = err.contains("memory allocation")
            || err.contains("out of memory")
            || std::os::unix::process::ExitStatusExt::signal(&status).is_some();
        Err(fail(if out_of_memory {
            format!(
                "compiling needs more than {} MiB, its budget: refused ({})",
                self.memory >> 20,
                if err.is_empty() { "killed" } else { err }
            )
        } else if err.is_empty() {
            format!("the compiler failed ({status})")
        } else {
            err.to_string()
        }))
    }
}

/// The child's side (`wvs plugin-compile`): the module on standard input, compiled with
/// no capabilities and at most `memory` bytes of address space. Exits 0 if it compiled,
/// else says why on standard error.
pub fn child_main(memory: u64, cache_dir: Option<&Path>) -> Result<(), String> {
    crate::privs::drop_all_in_this_thread();
    let cache_dir = cache_dir.filter(|d| d.is_dir());
    restrict_writes(cache_dir);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, memory, memory)
        .map_err(|e| format!("cannot limit the compiler's memory: {e}"))?;
    let mut wasm = Vec::new();
    std::io::stdin()
        .read_to_end(&mut wasm)
        .map_err(|e| format!("reading the module: {e}"))?;
    let engine = wasmtime::Engine::new(&crate::plugin::engine_config(cache_dir))
        .map_err(|e| format!("the engine: {e}"))?;
    wasmtime::Module::new(&engine, &wasm).map_err(|e| format!("{e:#}"))?;
    Ok(())
}

/// Landlock: the compiler may write nowhere but the compiled-plugin cache (its output),
/// whatever its user owns. Where the kernel has no Landlock it runs as before, with a note.
fn restrict_writes(cache_dir: Option<&Path>) {
    use landlock::{
        ABI, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
    };
    let abi = ABI::V1;
    let write = AccessFs::from_write(abi);
    let r = Ruleset::default()
        .handle_access(write)
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(cache_dir, write)))
        .and_then(|r| r.restrict_self());
    match r {
        Ok(s) if s.ruleset == RulesetStatus::FullyEnforced => {}
        Ok(_) => eprintln!(
            "note: the kernel does not enforce Landlock: the compiler's writes are not confined"
        ),
        Err(e) => eprintln!("note: cannot confine the compiler's writes: {e}"),
    }
}

impl Budget {
    /// The runtime's gate: compile a module from outside in the child first.
    pub(crate) fn into_gate(self) -> crate::plugin::Gate {
        crate::plugin::Gate(Box::new(move |name, wasm| self.check(name, wasm)))
    }
}
