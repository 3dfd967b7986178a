//! Build the built-in scheduler and helper plugins for `wasm32-unknown-unknown` and embed
//! them (`plugin::builtin`).
//!
//! The plugins are crates of this workspace (`plugins/*`). Cargo cannot build one package
//! for two targets in one invocation on stable, so this script runs a second cargo for the
//! wasm32 target with its own target directory (so it never waits on the outer build's
//! lock), then writes `builtin_plugins.rs`, which `include_bytes!`s each module. A plain
//! `cargo build` therefore builds everything; the only prerequisite is the wasm32 target
//! (`rustup target add wasm32-unknown-unknown`, done by scripts/setup.sh). The example
//! plugins are built too (not embedded): the daemon's end-to-end tests load them from files.

// A build script fails by panicking, with the reason: that is what `expect` is for here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

/// (scheduler name, package) of every built-in plugin.
const PLUGINS: &[(&str, &str)] = &[
    ("rr", "wvs-sched-rr"),
    ("wrr", "wvs-sched-wrr"),
    ("lc", "wvs-sched-lc"),
    ("wlc", "wvs-sched-wlc"),
    ("sed", "wvs-sched-sed"),
    ("nq", "wvs-sched-nq"),
    ("fo", "wvs-sched-fo"),
    ("ovf", "wvs-sched-ovf"),
    ("twos", "wvs-sched-twos"),
    ("sh", "wvs-sched-sh"),
    ("dh", "wvs-sched-dh"),
    ("mh", "wvs-sched-mh"),
    ("lblc", "wvs-sched-lblc"),
    ("lblcr", "wvs-sched-lblcr"),
    // Application helpers.
    ("ftp", "wvs-helper-ftp"),
    ("proxy-v2", "wvs-helper-proxy-v2"),
    // Persistence engines.
    ("sip", "wvs-pe-sip"),
];

/// The example custom scheduler (examples/lat2).
const EXAMPLE: &str = "wvs-example-lat2";
/// The example custom helper (examples/tftp-helper).
const EXAMPLE_HELPER: &str = "wvs-example-tftp";
/// The example persistence engine (examples/pe-session).
const EXAMPLE_PE: &str = "wvs-example-pe-session";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("host/core/ is in the workspace")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    // One wasm32 build for every build of the host: clippy's, the tests' (debug), the
    // release binary's and the fuzz targets' (their own workspace) all take the plugins from
    // the same directory beside the workspace's target directory, since the `wasm` profile
    // does not depend on the outer profile. Under OUT_DIR each of those four built the same
    // eighteen modules again, with full LTO. The inner cargo locks this directory, not the
    // outer build's, so the two never wait on each other.
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    for dir in [
        "plugins",
        "examples/lat2",
        "examples/tftp-helper",
        "examples/pe-session",
        "sdk/src",
        "sdk/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "wasm",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (_, pkg) in PLUGINS {
        cmd.args(["-p", pkg]);
    }
    // The example custom scheduler is built too (not embedded): the end-to-end tests load it
    // from the file whose path WVS_EXAMPLE_LAT2_WASM gives.
    cmd.args(["-p", EXAMPLE, "-p", EXAMPLE_HELPER, "-p", EXAMPLE_PE]);
    // The outer build's flags are for the host target, not for wasm32.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the wasm32 plugins");
    if !status.success() {
        panic!(
            "building the scheduler plugins for wasm32 failed; is the target installed? \
             (rustup target add wasm32-unknown-unknown, or run scripts/setup.sh)"
        );
    }

    let wasm_dir = target_dir.join("wasm32-unknown-unknown").join("wasm");
    let mut src = String::from(
        "/// The built-in scheduler plugins: (name, WebAssembly module).\npub static BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, pkg) in PLUGINS {
        let file = wasm_dir.join(format!("{}.wasm", pkg.replace('-', "_")));
        assert!(file.exists(), "{} was not built", file.display());
        src += &format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            file.display().to_string()
        );
    }
    src += "];\n";
    std::fs::write(out.join("builtin_plugins.rs"), src).expect("write builtin_plugins.rs");
}
