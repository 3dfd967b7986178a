//! Compile the XDP program of `wvs run --io xdp` (`bpf/wvs_xdp.c`) and the flow offload of
//! `--offload tc` (`bpf/wvs_offload.c`) with `clang -target bpf`, and tell the end-to-end
//! tests where the example plugins are.
//!
//! Without clang the build goes on with empty objects and a warning: wvs then runs with
//! the other I/O backends and without offload, and says why `--io xdp` or `--offload tc`
//! cannot start. The wasm32 plugins are built
//! by wvs-core's build script (host/core/build.rs), which runs before this crate compiles.

// A build script fails by panicking, with the reason: that is what `expect` is for here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

/// The example custom scheduler (examples/lat2).
const EXAMPLE: &str = "wvs-example-lat2";
/// The example custom helper (examples/tftp-helper).
const EXAMPLE_HELPER: &str = "wvs-example-tftp";
/// The example persistence engine (examples/pe-session).
const EXAMPLE_PE: &str = "wvs-example-pe-session";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("host/ is in the workspace")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    // Where host/core/build.rs builds the wasm32 plugins.
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let wasm_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins")
        .join("wasm32-unknown-unknown")
        .join("wasm");
    // The dashboard, embedded by rust-embed (src/api/web.rs): a release build must see
    // `web/dist` appear after `npm run build`.
    println!("cargo:rerun-if-changed={}", root.join("web/dist").display());
    println!(
        "cargo:rustc-env=WVS_EXAMPLE_LAT2_WASM={}",
        wasm_dir
            .join(format!("{}.wasm", EXAMPLE.replace('-', "_")))
            .display()
    );
    println!(
        "cargo:rustc-env=WVS_EXAMPLE_TFTP_WASM={}",
        wasm_dir
            .join(format!("{}.wasm", EXAMPLE_HELPER.replace('-', "_")))
            .display()
    );
    println!(
        "cargo:rustc-env=WVS_EXAMPLE_PE_WASM={}",
        wasm_dir
            .join(format!("{}.wasm", EXAMPLE_PE.replace('-', "_")))
            .display()
    );
    // The built-in helpers' files too: the end-to-end tests load them as plugins from
    // files (a helper replaced while connections use it).
    println!(
        "cargo:rustc-env=WVS_HELPER_FTP_WASM={}",
        wasm_dir.join("wvs_helper_ftp.wasm").display()
    );
    build_bpf(&manifest_dir, &out);
}

/// Compile wvs's BPF programs into `OUT_DIR` (embedded by `src/io/xdp.rs` and
/// `src/io/offload.rs`): `bpf/wvs_xdp.c` and `bpf/wvs_offload.c`.
fn build_bpf(manifest_dir: &std::path::Path, out: &std::path::Path) {
    // Which ports are an expected connection's: the program's rule is the datapath's
    // (`Snapshot::is_data_port`), from the same constants.
    let consts_rs = manifest_dir.join("core").join("src").join("consts.rs");
    println!("cargo:rerun-if-changed={}", consts_rs.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let consts = std::fs::read_to_string(&consts_rs).expect("read core/src/consts.rs");
    let ftp = rust_const(&consts, "FTP_PORT");
    let from = rust_const(&consts, "HELPER_DATA_PORTS_FROM");
    let marks = rust_const_of(&consts, "MAX_MARK_MATCHES", "usize");
    let flows = rust_const_of(&consts, "OFFLOAD_FLOWS", "u32");
    let sp_services = rust_const_of(&consts, "SYNPROXY_SERVICES", "u32");
    let sp_shift = rust_const_of(&consts, "SYNPROXY_COUNT_SHIFT", "u32");
    let sp_wscale = rust_const_of(&consts, "SYNPROXY_WSCALE", "u8");
    compile_bpf(
        manifest_dir,
        out,
        "wvs_xdp",
        &[
            format!("-DWVS_FTP_DATA_PORT={}", ftp - 1),
            format!("-DWVS_DATA_PORTS_FROM={from}"),
            format!("-DWVS_MAX_MARK_MATCHES={marks}"),
            format!("-DWVS_SYNPROXY_SERVICES={sp_services}"),
            format!("-DWVS_SYNPROXY_COUNT_SHIFT={sp_shift}"),
            format!("-DWVS_SYNPROXY_WSCALE={sp_wscale}"),
        ],
        "`--io xdp`",
    );
    compile_bpf(
        manifest_dir,
        out,
        "wvs_offload",
        &[
            format!("-DWVS_OFFLOAD_FLOWS={flows}"),
            format!("-DWVS_SYNPROXY_SERVICES={sp_services}"),
            format!("-DWVS_SYNPROXY_COUNT_SHIFT={sp_shift}"),
            format!("-DWVS_SYNPROXY_WSCALE={sp_wscale}"),
        ],
        "`--offload tc`",
    );
}

/// Compile `bpf/NAME.c` into `OUT_DIR/NAME.o`; without clang, an empty object and a warning
/// that `what` will not start.
fn compile_bpf(
    manifest_dir: &std::path::Path,
    out: &std::path::Path,
    name: &str,
    defines: &[String],
    what: &str,
) {
    let src = manifest_dir.join("bpf").join(format!("{name}.c"));
    let obj = out.join(format!("{name}.o"));
    println!("cargo:rerun-if-changed={}", src.display());
    // What both programs include.
    for h in ["wvs_bpf.h", "wvs_synproxy.h"] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join("bpf").join(h).display()
        );
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // -g: the BTF that describes the maps; -O2: the verifier wants the bounds checks as
    // written, not spilled to the stack.
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-c"])
        .args(defines)
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} could not compile {}: {s}", src.display()),
        Err(e) => {
            println!(
                "cargo:warning=cannot run {clang} ({e}): wvs is built without {name}.o, \
                 so {what} will not start (install clang, as scripts/setup.sh does)"
            );
            std::fs::write(&obj, b"").expect("write an empty BPF object");
        }
    }
}

/// The value of `pub const NAME: u16 = VALUE;` in `text` (core/src/consts.rs).
fn rust_const(text: &str, name: &str) -> u32 {
    rust_const_of(text, name, "u16")
}

/// The value of `pub const NAME: TY = N;` in `text`.
fn rust_const_of(text: &str, name: &str, ty: &str) -> u32 {
    let decl = format!("pub const {name}: {ty} = ");
    text.lines()
        .find_map(|l| l.strip_prefix(&decl))
        .and_then(|v| v.trim_end_matches(';').replace('_', "").parse().ok())
        .unwrap_or_else(|| panic!("core/src/consts.rs has no `{decl}…;`"))
}
