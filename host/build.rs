//! Build the built-in scheduler plugins for `wasm32-unknown-unknown` and embed them.
//!
//! The plugins are crates of this workspace (`plugins/*`). Cargo cannot build one package
//! for two targets in one invocation on stable, so this script runs a second cargo for the
//! wasm32 target with its own target directory under `OUT_DIR` (so it never waits on the
//! outer build's lock), then writes `builtin_plugins.rs`, which `include_bytes!`s each
//! module. A plain `cargo build` therefore builds everything; the only prerequisite is the
//! wasm32 target (`rustup target add wasm32-unknown-unknown`, done by scripts/setup.sh).
//!
//! It also compiles the XDP program of `wvs run --io xdp` (`bpf/wvs_xdp.c`) with
//! `clang -target bpf`. Without clang the build goes on with an empty object and a warning:
//! wvs then runs with the other I/O backends and says why `--io xdp` cannot start.

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
];

/// The example custom scheduler (examples/lat2).
const EXAMPLE: &str = "wvs-example-lat2";
/// The example custom helper (examples/tftp-helper).
const EXAMPLE_HELPER: &str = "wvs-example-tftp";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("host/ is in the workspace")
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
        "sdk/src",
        "sdk/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        // The dashboard, embedded by rust-embed (src/api/web.rs): a release build must see
        // `web/dist` appear after `npm run build`.
        "web/dist",
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
    cmd.args(["-p", EXAMPLE, "-p", EXAMPLE_HELPER]);
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
    let example = wasm_dir.join(format!("{}.wasm", EXAMPLE.replace('-', "_")));
    println!(
        "cargo:rustc-env=WVS_EXAMPLE_LAT2_WASM={}",
        example.display()
    );
    println!(
        "cargo:rustc-env=WVS_EXAMPLE_TFTP_WASM={}",
        wasm_dir
            .join(format!("{}.wasm", EXAMPLE_HELPER.replace('-', "_")))
            .display()
    );
    // The built-in helpers' files too: the end-to-end tests load them as plugins from
    // files (a helper replaced while connections use it).
    println!(
        "cargo:rustc-env=WVS_HELPER_FTP_WASM={}",
        wasm_dir.join("wvs_helper_ftp.wasm").display()
    );
    std::fs::write(out.join("builtin_plugins.rs"), src).expect("write builtin_plugins.rs");
    build_xdp(&manifest_dir, &out);
}

/// Compile `bpf/wvs_xdp.c` into `OUT_DIR/wvs_xdp.o` (embedded by `src/io/xdp.rs`).
fn build_xdp(manifest_dir: &std::path::Path, out: &std::path::Path) {
    let src = manifest_dir.join("bpf").join("wvs_xdp.c");
    let obj = out.join("wvs_xdp.o");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // -g: the BTF that describes the maps; -O2: the verifier wants the bounds checks as
    // written, not spilled to the stack.
    // Which ports are an expected connection's: the program's rule is the datapath's
    // (`Snapshot::is_data_port`), from the same constants.
    let consts_rs = manifest_dir.join("src").join("consts.rs");
    println!("cargo:rerun-if-changed={}", consts_rs.display());
    let consts = std::fs::read_to_string(&consts_rs).expect("read src/consts.rs");
    let ftp = rust_const(&consts, "FTP_PORT");
    let from = rust_const(&consts, "HELPER_DATA_PORTS_FROM");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-c"])
        .arg(format!("-DWVS_FTP_DATA_PORT={}", ftp - 1))
        .arg(format!("-DWVS_DATA_PORTS_FROM={from}"))
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} could not compile {}: {s}", src.display()),
        Err(e) => {
            println!(
                "cargo:warning=cannot run {clang} ({e}): wvs is built without its XDP program, \
                 so `--io xdp` will not start (install clang, as scripts/setup.sh does)"
            );
            std::fs::write(&obj, b"").expect("write an empty wvs_xdp.o");
        }
    }
}

/// The value of `pub const NAME: u16 = VALUE;` in `text` (src/consts.rs).
fn rust_const(text: &str, name: &str) -> u32 {
    let decl = format!("pub const {name}: u16 = ");
    text.lines()
        .find_map(|l| l.strip_prefix(&decl))
        .and_then(|v| v.trim_end_matches(';').replace('_', "").parse().ok())
        .unwrap_or_else(|| panic!("src/consts.rs has no `{decl}…;`"))
}
