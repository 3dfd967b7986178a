//! End to end, WebAssembly schedulers: the embedded built-ins, a custom plugin from a file,
//! misbehaving plugins, and hot swaps under load, with real traffic through the real binary.
//! Needs root (see e2e_nat.rs).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Topo, VIP, VIP6, Wvs, example};

fn service(scheduler: &str, reals: &[(u32, u32)], flags: &str) -> String {
    service_on(
        VIP,
        |i| format!("198.19.0.1{i}:80"),
        scheduler,
        reals,
        flags,
    )
}

/// The same service on the IPv6 VIP, over the servers' IPv6 addresses.
fn service6(scheduler: &str, reals: &[(u32, u32)], flags: &str) -> String {
    let vip = format!("[{VIP6}]");
    service_on(
        &vip,
        |i| format!("[2001:db8:19::1{i}]:80"),
        scheduler,
        reals,
        flags,
    )
}

fn service_on(
    vip: &str,
    real: impl Fn(usize) -> String,
    scheduler: &str,
    reals: &[(u32, u32)],
    flags: &str,
) -> String {
    let mut c = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{vip}:80\"\nscheduler = \"{scheduler}\"\n{flags}\n"
    );
    for (i, (w, hint)) in reals.iter().enumerate() {
        c += &format!(
            "[[service.real]]\naddress = \"{}\"\nweight = {w}\nhint = {hint}\n",
            real(i + 1)
        );
    }
    c
}

fn plugin(name: &str, path: &std::path::Path) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\n",
        path.display()
    )
}

fn get(topo: &Topo, n: usize) -> BTreeMap<String, usize> {
    Topo::tally((0..n).map(|_| topo.curl(&format!("http://{VIP}/"))))
}

#[test]
fn builtin_rr_runs_as_wasm_and_is_exact() {
    let topo = Topo::new("prr", false);
    let wvs = Wvs::start(&topo, Some(example()));
    let t = get(&topo, 30);
    assert_eq!(
        t.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{t:?}"
    );
    let s = wvs.stats();
    assert_eq!(
        s.get("plugin_calls"),
        Some(&30),
        "every connection went through the wasm rr: {s:?}"
    );
    assert_eq!(s.get("plugin_traps"), Some(&0));
}

#[test]
fn mh_moves_about_a_third_when_one_of_three_goes() {
    let topo = Topo::new("mh", false);
    let clients: Vec<String> = (10..70).map(|i| format!("198.18.0.{i}")).collect();
    for c in &clients {
        let out = topo.exec(
            "cli",
            &["ip", "addr", "add", &format!("{c}/24"), "dev", "eth0"],
        );
        assert!(out.status.success());
    }
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(&cfg, service("mh", &[(1, 0), (1, 0), (1, 0)], "")).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let ask = |c: &str| {
        let out = topo.exec(
            "cli",
            &[
                "curl",
                "-sS",
                "-m",
                "5",
                "--interface",
                c,
                &format!("http://{VIP}/"),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before: Vec<String> = clients.iter().map(|c| ask(c)).collect();
    for c in &clients {
        assert_eq!(
            ask(c),
            before[clients.iter().position(|x| x == c).unwrap()],
            "mh is sticky"
        );
    }
    wvs.reload(&cfg, &service("mh", &[(1, 0), (1, 0)], ""));
    let after: Vec<String> = clients.iter().map(|c| ask(c)).collect();
    let on_rs3 = before.iter().filter(|s| *s == "rs3").count();
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    let moved_elsewhere = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| *b != "rs3" && b != a)
        .count();
    assert!(after.iter().all(|s| s != "rs3"));
    assert_eq!(moved, on_rs3, "only rs3's clients moved");
    assert_eq!(moved_elsewhere, 0);
    assert!(
        moved * 100 <= 45 * clients.len(),
        "about a third moved: {moved} of {}",
        clients.len()
    );
}

#[test]
fn custom_plugin_from_a_file_schedules() {
    const N: usize = 200;
    let topo = Topo::new("lat", false);
    let wasm = env!("WVS_EXAMPLE_LAT2_WASM");
    let cfg = topo.dir.join("wvs.toml");
    let text = plugin("lat2", std::path::Path::new(wasm))
        + &service("lat2", &[(1, 1000), (1, 10), (1, 1000)], "");
    std::fs::write(&cfg, text).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let t = get(&topo, N);
    // rs2 wins whenever it is one of the two draws: 5/9 of the connections on average, the
    // others 2/9 each. The chance (multinomial, summed exactly) that rs2 still gets no more
    // than another server is 2.7e-3 over 60 connections (a CI run failed so), 2.9e-8 over 200.
    let (r1, r2, r3) = (
        t.get("rs1").copied().unwrap_or(0),
        t.get("rs2").copied().unwrap_or(0),
        t.get("rs3").copied().unwrap_or(0),
    );
    // The counters first, so that a failure says whether the plugin ran or fell back.
    let s = wvs.stats();
    assert!(r2 > r1 && r2 > r3, "{t:?}; {s:?}");
    assert_eq!(r1 + r2 + r3, N);
    assert_eq!(s.get("plugin_calls"), Some(&(N as u64)), "{s:?}");
    assert_eq!(s.get("plugin_fallbacks"), Some(&0));
}

/// A module with the ABI's exports whose `wvs_schedule` runs `body`.
fn bad_plugin(body: &str) -> String {
    format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "wvs_abi_version") (result i32) i32.const 1)
            (func (export "wvs_shared") (result i32) i32.const 1024)
            (func (export "wvs_update") (param i32 i32))
            (func (export "wvs_schedule") (param i32) (result i32) {body}))"#
    )
}

#[test]
fn misbehaving_plugins_do_not_stop_traffic() {
    let topo = Topo::new("bad", false);
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(&cfg, service("rr", &[(1, 0), (1, 0), (1, 0)], "")).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let cases = [
        ("trap", "unreachable"),
        ("loop", "(loop $l (br $l)) i32.const 0"),
        (
            "memory",
            "(block $d (loop $l (br_if $d (i32.eq (memory.grow (i32.const 16)) (i32.const -1))) (br $l))) (loop $l2 (br $l2)) i32.const 0",
        ),
    ];
    for (i, (name, body)) in cases.iter().enumerate() {
        let path = topo.dir.join(format!("{name}.wat"));
        std::fs::write(&path, bad_plugin(body)).expect("plugin");
        wvs.reload(
            &cfg,
            &(plugin(name, &path) + &service(name, &[(1, 0), (1, 0), (1, 0)], "")),
        );
        let t = get(&topo, 6);
        assert_eq!(
            t.values().sum::<usize>(),
            6,
            "{name}: every request was served: {t:?}"
        );
        let s = wvs.stats();
        assert_eq!(
            s.get("plugin_traps"),
            Some(&(i as u64 + 1)),
            "{name}: {s:?}"
        );
        assert_eq!(
            s.get("plugin_fallbacks"),
            Some(&(i as u64 + 1)),
            "{name}: one fallback per fault"
        );
    }
}

#[test]
fn twenty_swaps_under_load_fail_no_request() {
    let topo = Topo::new("swap", false);
    let cfg = topo.dir.join("wvs.toml");
    let lat2 = std::path::Path::new(env!("WVS_EXAMPLE_LAT2_WASM"));
    // Each configuration the same on an IPv4 and an IPv6 VIP, side by side.
    let both = |scheduler: &str, reals: &[(u32, u32)], flags: &str| {
        service(scheduler, reals, flags) + &service6(scheduler, reals, flags)
    };
    let configs = [
        both("rr", &[(1, 0), (1, 0), (1, 0)], ""),
        both("wrr", &[(3, 0), (2, 0), (1, 0)], ""),
        plugin("lat2", lat2) + &both("lat2", &[(1, 100), (1, 10), (1, 100)], ""),
        both("mh", &[(1, 0), (1, 0), (1, 0)], "flags = [\"mh-port\"]"),
    ];
    std::fs::write(&cfg, &configs[0]).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let wrk = |url: String| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.ns("cli"),
                "wrk",
                "-t1",
                "-c8",
                "-d12s",
            ])
            .args(["-H", "Connection: close", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk")
    };
    let loads = [
        wrk(format!("http://{VIP}/")),
        wrk(format!("http://[{VIP6}]/")),
    ];
    std::thread::sleep(Duration::from_millis(1000));
    for i in 1..=20 {
        wvs.reload(&cfg, &configs[i % configs.len()]);
        std::thread::sleep(Duration::from_millis(250));
    }
    for load in loads {
        let out = load.wait_with_output().expect("wrk");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{report}");
        assert!(
            !report.contains("Socket errors"),
            "failed requests during the swaps:\n{report}"
        );
        assert!(!report.contains("Non-2xx"), "{report}");
        let requests: u64 = report
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        assert!(requests > 500, "{report}");
    }
    assert_eq!(wvs.log_text().matches("configuration reloaded").count(), 20);
    let log = wvs.log_text();
    let fell: Vec<&str> = log.lines().filter(|l| l.contains("falls back")).collect();
    assert_eq!(wvs.stats().get("plugin_traps"), Some(&0), "{fell:#?}");
}

/// The repository's root.
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the repository")
        .to_path_buf()
}

/// Compile C for wasm32 with clang and lld, as sdk/ABI.md's recipe does.
fn clang_wasm(args: &[&str]) -> std::process::Output {
    let out = Command::new("clang")
        .args([
            "--target=wasm32",
            "-O2",
            "-ffreestanding",
            "-nostdlib",
            "-Wall",
            "-Werror",
        ])
        .arg("-I")
        .arg(root().join("sdk"))
        .args(args)
        .output()
        .expect("clang (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "clang {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn c_header_layouts_match_the_rust_abi() {
    // Every size and field offset of sdk/wvs.h, asserted at compile time for wasm32 against
    // the values of the Rust definitions (sdk/src/abi.rs), and the constants too.
    use std::mem::{offset_of, size_of};
    use wvs_sdk::{ConnInfo, DestInfo, Shared};
    let mut c = String::from("#include <stddef.h>\n#include \"wvs.h\"\n");
    let mut check = |expr: String, want: usize| {
        c += &format!("_Static_assert({expr} == {want}, \"{expr}\");\n");
    };
    check("sizeof(wvs_dest_info)".into(), size_of::<DestInfo>());
    check("sizeof(wvs_conn_info)".into(), size_of::<ConnInfo>());
    check("sizeof(wvs_shared)".into(), size_of::<Shared>());
    macro_rules! fields {
        ($c:literal, $t:ty: $($f:ident),+) => {
            $(check(format!("offsetof({}, {})", $c, stringify!($f)), offset_of!($t, $f));)+
        };
    }
    fields!("wvs_dest_info", DestInfo: addr, port, reserved, weight, last_weight, flags,
        activeconns, inactconns, persistconns, hint);
    fields!("wvs_conn_info", ConnInfo: saddr, daddr, sport, dport, proto, af, reserved, svc_flags);
    fields!("wvs_shared", Shared: conn, n_dests, dests);
    use wvs_sdk::{Expect, HelperShared, PacketInfo};
    check("sizeof(wvs_packet_info)".into(), size_of::<PacketInfo>());
    check("sizeof(wvs_expect_info)".into(), size_of::<Expect>());
    check(
        "sizeof(wvs_helper_shared)".into(),
        size_of::<HelperShared>(),
    );
    fields!("wvs_packet_info", PacketInfo: caddr, vaddr, daddr, cport, vport, dport, proto, af,
        dir, fwd, tcp_state, reserved, seq, offset, len, max_len);
    fields!("wvs_expect_info", Expect: caddr, daddr, cport, vport, dport, proto, reserved, timeout_ms);
    fields!("wvs_helper_shared", HelperShared: pkt, state, expect, payload);
    check("WVS_HELPER_MAX_PAYLOAD".into(), wvs_sdk::HELPER_MAX_PAYLOAD);
    check("WVS_HELPER_STATE_LEN".into(), wvs_sdk::HELPER_STATE_LEN);
    check("WVS_HELPER_DIR_IN".into(), wvs_sdk::helper_dir::IN as usize);
    check(
        "WVS_HELPER_DIR_OUT".into(),
        wvs_sdk::helper_dir::OUT as usize,
    );
    check(
        "WVS_HELPER_FWD_NAT".into(),
        wvs_sdk::helper_fwd::NAT as usize,
    );
    check(
        "WVS_HELPER_FWD_FULLNAT".into(),
        wvs_sdk::helper_fwd::FULLNAT as usize,
    );
    check(
        "-WVS_HELPER_KEEP".into(),
        (-wvs_sdk::helper_answer::KEEP) as usize,
    );
    check(
        "-WVS_HELPER_DROP".into(),
        (-wvs_sdk::helper_answer::DROP) as usize,
    );
    check(
        "WVS_HELPER_F_EXPECTS".into(),
        wvs_sdk::helper_flags::EXPECTS as usize,
    );
    check("WVS_ABI_VERSION".into(), wvs_sdk::ABI_VERSION as usize);
    check("WVS_MAX_DESTS".into(), wvs_sdk::MAX_DESTS);
    check(
        "WVS_DEST_F_AVAILABLE".into(),
        wvs_sdk::dest_flags::AVAILABLE as usize,
    );
    check(
        "WVS_DEST_F_OVERLOAD".into(),
        wvs_sdk::dest_flags::OVERLOAD as usize,
    );
    check(
        "WVS_SVC_F_PERSISTENT".into(),
        wvs_sdk::svc_flags::PERSISTENT as usize,
    );
    check(
        "WVS_SVC_F_ONEPACKET".into(),
        wvs_sdk::svc_flags::ONEPACKET as usize,
    );
    check(
        "WVS_SVC_F_SCHED1".into(),
        wvs_sdk::svc_flags::SCHED1 as usize,
    );
    check(
        "WVS_SVC_F_SCHED2".into(),
        wvs_sdk::svc_flags::SCHED2 as usize,
    );
    check(
        "WVS_SVC_F_SCHED3".into(),
        wvs_sdk::svc_flags::SCHED3 as usize,
    );
    check(
        "WVS_SCHED_F_CONSISTENT".into(),
        wvs_sdk::sched_flags::CONSISTENT as usize,
    );
    // The export macros compile, the optional flags beside a scheduler's.
    c += "static void up(const wvs_dest_info *d, uint32_t n, uint32_t f) { (void)d; (void)n; (void)f; }\n\
          static int32_t pick(const wvs_conn_info *c, const wvs_dest_info *d, uint32_t n) \
          { (void)c; (void)d; return n ? 0 : -1; }\n\
          WVS_EXPORT_SCHEDULER(up, pick)\nWVS_SCHEDULER_FLAGS(WVS_SCHED_F_CONSISTENT)\n";
    // The C file goes to a directory removed however the test ends.
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = TempDir(std::env::temp_dir().join(format!("wvs-abi-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let file = dir.0.join("layout.c");
    std::fs::write(&file, &c).expect("write layout.c");
    clang_wasm(&["-fsyntax-only", file.to_str().expect("path")]);
}

#[test]
fn c_scheduler_from_clang_schedules() {
    // examples/c-sched, built with clang and lld exactly as its README says, loaded as a
    // plugin: smooth weighted round robin over weights 1, 2, 3 gives exactly 10, 20 and 30
    // of 60 connections, every one through the C code (no trap, no fallback).
    let topo = Topo::new("csched", false);
    let wasm = topo.dir.join("sched.wasm");
    clang_wasm(&[
        "-Wl,--no-entry",
        "-o",
        wasm.to_str().expect("path"),
        root()
            .join("examples/c-sched/sched.c")
            .to_str()
            .expect("path"),
    ]);
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(
        &cfg,
        plugin("swrr", &wasm) + &service("swrr", &[(1, 0), (2, 0), (3, 0)], ""),
    )
    .expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let t = get(&topo, 60);
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        [("rs1".into(), 10), ("rs2".into(), 20), ("rs3".into(), 30)],
        "60 connections by weights 1, 2, 3"
    );
    let s = wvs.stats();
    assert_eq!(s.get("plugin_calls"), Some(&60), "{s:?}");
    assert_eq!(s.get("plugin_traps"), Some(&0), "{s:?}");
    assert_eq!(s.get("plugin_fallbacks"), Some(&0), "{s:?}");
}

/// A helper in C through `sdk/wvs.h`: it drops requests whose method is BLOCK.
const C_HELPER: &str = r#"#include "wvs.h"

static int32_t packet(const wvs_packet_info *pkt, uint8_t *state, const uint8_t *payload,
                      uint8_t *out, uint32_t max) {
    static const char m[] = "BLOCK ";
    (void)state; (void)out; (void)max;
    if (pkt->dir != WVS_HELPER_DIR_IN || pkt->offset != 0 || pkt->len < 6)
        return WVS_HELPER_KEEP;
    for (int i = 0; i < 6; i++)
        if (payload[i] != (uint8_t)m[i])
            return WVS_HELPER_KEEP;
    return WVS_HELPER_DROP;
}

WVS_EXPORT_HELPER(packet, 0)
"#;

#[test]
fn c_helper_from_clang_sees_the_stream() {
    // Built with clang and lld like the C scheduler, bound to the HTTP service: GET is
    // served, the BLOCK method's first segment is dropped every time it is sent.
    let topo = Topo::new("chelp", false);
    let src = topo.dir.join("block.c");
    std::fs::write(&src, C_HELPER).expect("source");
    let wasm = topo.dir.join("block.wasm");
    clang_wasm(&[
        "-Wl,--no-entry",
        "-o",
        wasm.to_str().expect("path"),
        src.to_str().expect("path"),
    ]);
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(
        &cfg,
        plugin("block", &wasm) + &service("rr", &[(1, 0), (1, 0), (1, 0)], "helpers = [\"block\"]"),
    )
    .expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    assert_eq!(get(&topo, 3).len(), 3, "GET is served");
    let out = topo.exec(
        "cli",
        &[
            "curl",
            "-sS",
            "-m",
            "2",
            "-X",
            "BLOCK",
            &format!("http://{VIP}/"),
        ],
    );
    assert!(!out.status.success(), "BLOCK is dropped");
    assert!(wvs.drops("helper_drop") >= 1);
}

/// A valid module (no scheduler ABI: it need not get that far) whose one function is `n`
/// steps of arithmetic: a megabyte of it takes Cranelift hundreds of MiB and seconds (about
/// 2 s for 300 000 steps on a quiet machine of 2026, too close to the 2 s budget tried
/// below: 900 000, some 4 MB).
fn heavy_module(n: usize) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let section = |id: u8, body: &[u8], m: &mut Vec<u8>| {
        m.push(id);
        leb(body.len(), m);
        m.extend_from_slice(body);
    };
    let mut code = vec![0x41, 0x01];
    for k in 0..n {
        code.extend_from_slice(&[0x41, (k & 0x3f) as u8, 0x6a]);
        if k % 3 == 0 {
            code.extend_from_slice(&[0x41, 0x07, 0x6c]);
        }
    }
    code.push(0x0b);
    let mut body = vec![0];
    body.extend_from_slice(&code);
    let mut codes = vec![1];
    leb(body.len(), &mut codes);
    codes.extend_from_slice(&body);
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 1, 0x7f], &mut m);
    section(3, &[1, 0], &mut m);
    section(7, &[1, 1, b'f', 0, 0], &mut m);
    section(10, &codes, &mut m);
    m
}

#[test]
fn a_plugin_that_compiles_too_long_or_too_big_is_refused_and_the_api_goes_on() {
    let topo = Topo::new("budget", false);
    let cfg = topo.dir.join("empty.toml");
    std::fs::write(&cfg, "").expect("config");
    let heavy = topo.dir.join("heavy.wasm");
    std::fs::write(&heavy, heavy_module(900_000)).expect("module");
    let lat2 = std::path::PathBuf::from(env!("WVS_EXAMPLE_LAT2_WASM"));
    for (extra, says) in [
        (["--plugin-compile-timeout", "2"], "longer than 2 s"),
        (["--plugin-compile-memory", "128"], "more than 128 MiB"),
    ] {
        let wvs = Wvs::start_with(&topo, Some(&cfg), &extra);
        let bearer = format!("Bearer {}", wvs.token());
        // While it compiles, the API answers: compilation is off the control thread.
        let upload = {
            let (ns, bearer, heavy) = (wvs.ns.clone(), bearer.clone(), heavy.clone());
            std::thread::spawn(move || {
                let t0 = std::time::Instant::now();
                let out = std::process::Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &ns,
                        "curl",
                        "-s",
                        "-X",
                        "PUT",
                        "-w",
                        "\n%{http_code}",
                    ])
                    .args(["-H", &format!("Authorization: {bearer}")])
                    .args(["-H", "Content-Type: application/wasm", "--data-binary"])
                    .arg(format!("@{}", heavy.display()))
                    .arg("http://127.0.0.1:9080/api/v1/plugins/heavy")
                    .output()
                    .expect("curl");
                (
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    t0.elapsed(),
                )
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(500));
        let t0 = std::time::Instant::now();
        wvs.get_json("/api/v1/info");
        assert!(
            t0.elapsed() < std::time::Duration::from_millis(500),
            "the API waited for the compilation: {:?}",
            t0.elapsed()
        );
        let (text, took) = upload.join().expect("upload");
        assert!(text.ends_with("\n400"), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(took < std::time::Duration::from_secs(15), "{took:?}");
        let plugins = wvs.get_json("/api/v1/plugins").to_string();
        assert!(
            !plugins.contains("heavy"),
            "nothing of it installed: {plugins}"
        );
        // A real plugin fits both budgets.
        let (code, msg) = wvs.api(
            "PUT",
            "/api/v1/plugins/lat2",
            Some(&bearer),
            Some("application/wasm"),
            Some(&lat2),
        );
        assert_eq!(code, 201, "{msg}");
    }
}

/// The plugin template, copied out of the repository as a user would (its `wvs-sdk` path
/// pointed at this checkout's `sdk`), builds with the command its Cargo.toml gives, loads
/// with `wvs adm --plugin-load` and schedules.
#[test]
fn the_plugin_template_builds_outside_the_repository_and_loads() {
    let topo = Topo::new("tmpl", false);
    let dir = topo.dir.join("mysched");
    std::fs::create_dir_all(dir.join("src")).expect("dir");
    let src = root().join("examples/plugin-template");
    let toml = std::fs::read_to_string(src.join("Cargo.toml")).expect("template");
    let sdk = root().join("sdk");
    let toml = toml.replace("../../sdk", sdk.to_str().expect("path"));
    std::fs::write(dir.join("Cargo.toml"), toml).expect("Cargo.toml");
    std::fs::copy(src.join("src/lib.rs"), dir.join("src/lib.rs")).expect("lib.rs");
    let out = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--offline",
            "-q",
        ])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = dir.join("target/wasm32-unknown-unknown/release/my_sched.wasm");
    let cfg = topo.dir.join("empty.toml");
    std::fs::write(&cfg, "# none\n").expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    w.adm_ok(&["--plugin-load", "mysched", wasm.to_str().expect("path")]);
    let svc = format!("{VIP}:80");
    w.adm_ok(&["-A", "-t", &svc, "-s", "mysched"]);
    for i in 1..=3 {
        w.adm_ok(&["-a", "-t", &svc, "-r", &format!("198.19.0.1{i}:80"), "-m"]);
    }
    let t = get(&topo, 6);
    assert_eq!(t.values().sum::<usize>(), 6, "{t:?}");
    let v = w.get_json(&format!("/api/v1/services/tcp/{svc}"));
    assert_eq!(v["scheduler_runs"], "wasm", "{v}");
}
