//! End to end, the control plane: `wvs adm` and the REST API drive the real daemon in the
//! test topology with real traffic flowing. Needs root.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Topo, VIP, Wvs};

/// A daemon with no services, its state in the test's directory.
fn start_empty(topo: &Topo) -> Wvs {
    let cfg = topo.dir.join("empty.toml");
    std::fs::write(&cfg, "# no services\n").expect("config");
    Wvs::start(topo, Some(&cfg))
}

fn tally(topo: &Topo, url: &str, n: usize) -> Vec<(String, usize)> {
    Topo::tally((0..n).map(|_| topo.curl(url)))
        .into_iter()
        .collect()
}

fn pairs(v: &[(&str, usize)]) -> Vec<(String, usize)> {
    v.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

#[test]
fn adm_adds_edits_deletes_saves_and_restores_with_traffic() {
    let topo = Topo::new("adm", false);
    let mut wvs = start_empty(&topo);
    let svc = format!("{VIP}:80");
    let url = format!("http://{VIP}/");

    wvs.adm_ok(&["-A", "-t", &svc, "-s", "rr"]);
    wvs.adm_ok(&["-a", "-t", &svc, "-r", "198.19.0.11:80", "-m"]);
    // No port: the service's, as ipvsadm does.
    wvs.adm_ok(&["-a", "-t", &svc, "-r", "198.19.0.12", "-m", "-w", "1"]);
    assert_eq!(tally(&topo, &url, 20), pairs(&[("rs1", 10), ("rs2", 10)]));

    // Edit: weighted round robin 3:1 with a third server; then quiesce rs1.
    wvs.adm_ok(&["-E", "-t", &svc, "-s", "wrr"]);
    wvs.adm_ok(&["-e", "-t", &svc, "-r", "198.19.0.11:80", "-m", "-w", "3"]);
    assert_eq!(tally(&topo, &url, 40), pairs(&[("rs1", 30), ("rs2", 10)]));
    wvs.adm_ok(&["-a", "-t", &svc, "-r", "198.19.0.13:80", "-m", "-w", "2"]);
    wvs.adm_ok(&["-e", "-t", &svc, "-r", "198.19.0.11:80", "-m", "-w", "0"]);
    // wrr 1:2 without rs1 (IPVS's wrr keeps its current weight across an edit, so the
    // first pass after it may start mid-cycle: one pick either way).
    let t = Topo::tally((0..30).map(|_| topo.curl(&url)));
    assert!(!t.contains_key("rs1"), "{t:?}");
    let rs2 = t.get("rs2").copied().unwrap_or(0);
    assert!(
        (9..=11).contains(&rs2) && t.get("rs3") == Some(&(30 - rs2)),
        "{t:?}"
    );
    wvs.adm_ok(&["-d", "-t", &svc, "-r", "198.19.0.11:80"]);

    // A UDP service beside it.
    wvs.adm_ok(&["-A", "-u", &format!("{VIP}:9000"), "-s", "sh"]);
    wvs.adm_ok(&[
        "-a",
        "-u",
        &format!("{VIP}:9000"),
        "-r",
        "198.19.0.12:9000",
        "-m",
    ]);
    assert_eq!(topo.udp_ask(40001), "rs2");

    let saved = wvs.adm_ok(&["-S", "-n"]);
    assert_eq!(
        saved,
        format!(
            "-A -t {VIP}:80 -s wrr\n\
             -a -t {VIP}:80 -r 198.19.0.12:80 -m -w 1\n\
             -a -t {VIP}:80 -r 198.19.0.13:80 -m -w 2\n\
             -A -u {VIP}:9000 -s sh\n\
             -a -u {VIP}:9000 -r 198.19.0.12:9000 -m -w 1\n"
        )
    );
    // The listing, in ipvsadm's format (the connection counts vary; the rest does not).
    let list = wvs.adm_ok(&["-L", "-n"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "IP Virtual Server version 1.2.1 (size=1048576)");
    assert_eq!(lines[1], "Prot LocalAddress:Port Scheduler Flags");
    assert_eq!(
        lines[2],
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
    );
    assert_eq!(lines[3], format!("TCP  {VIP}:80 wrr"));
    assert!(
        lines[4].starts_with("  -> 198.19.0.12:80               Masq    1      "),
        "{list}"
    );
    assert_eq!(lines[6], format!("UDP  {VIP}:9000 sh"));
    assert_eq!(lines.len(), 8, "{list}");
    // --stats counts what was sent: 20 + 40 + 30 connections to the TCP service.
    let stats = wvs.adm_ok(&["-L", "-n", "--stats", "--exact", "-t", &svc]);
    let conns: u64 = stats
        .lines()
        .nth(2)
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(conns, 90, "{stats}");
    // -Z of the service zeroes its counters and its servers' (ipvsadm -Z -t), and -Z all of
    // them; new traffic counts from there.
    wvs.adm_ok(&["-Z", "-t", &svc]);
    let zeroed = wvs.adm_ok(&["-L", "-n", "--stats", "--exact", "-t", &svc]);
    let row = |text: &str, n: usize| -> Vec<u64> {
        text.lines()
            .nth(n)
            .map(|l| {
                l.split_whitespace()
                    .skip(2)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(row(&zeroed, 2), [0, 0, 0, 0, 0], "{zeroed}");
    assert_eq!(
        row(&zeroed, 3),
        [0, 0, 0, 0, 0],
        "a real server's: {zeroed}"
    );
    topo.curl(&format!("http://{VIP}/"));
    let after = wvs.adm_ok(&["-L", "-n", "--stats", "--exact", "-t", &svc]);
    assert_eq!(row(&after, 2).first(), Some(&1), "{after}");
    wvs.adm_ok(&["-Z"]);
    let all = wvs.adm_ok(&["-L", "-n", "--stats", "--exact"]);
    assert!(
        all.lines()
            .skip(3)
            .all(|l| l.split_whitespace().skip(2).all(|v| v == "0")),
        "{all}"
    );
    let c = wvs.adm_ok(&["-L", "-n", "-c"]);
    assert!(c.starts_with("IPVS connection entries\npro expire state       source             virtual            destination\n"), "{c}");
    assert!(c.contains("TIME_WAIT   198.18.0.2:"), "{c}");
    assert!(
        c.lines().any(|l| l.starts_with("UDP ")
            && l.contains(" UDP ")
            && l.ends_with("198.19.0.12:9000")),
        "{c}"
    );

    // Timeouts, as ipvsadm --set (0 keeps one); a TIME_WAIT connection keeps its 120 s.
    assert_eq!(
        wvs.adm_ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    wvs.adm_ok(&["--set", "600", "0", "20"]);
    assert_eq!(
        wvs.adm_ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 600 120 20\n"
    );
    let (code, _, err) = wvs.adm(&["--set", "1", "2"]);
    assert!(
        code == 2 && err.starts_with("wvs adm: --set option requires 3 timeout values\n"),
        "{code} {err}"
    );

    // Saved, and restored by a restart: same rules, same traffic, same timeouts.
    let state = std::fs::read_to_string(wvs.state_dir.join("wvs-state.toml")).expect("state");
    assert!(
        state.contains("wrr") && state.contains("198.19.0.13:80"),
        "{state}"
    );
    assert!(wvs.stop().success());
    let wvs = Wvs::start_with(
        &topo,
        None,
        &["--state-dir", wvs.state_dir.to_str().expect("path")],
    );
    assert_eq!(wvs.adm_ok(&["-S", "-n"]), saved);
    assert_eq!(
        wvs.adm_ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 600 120 20\n"
    );
    assert_eq!(tally(&topo, &url, 30), pairs(&[("rs2", 10), ("rs3", 20)]));

    // Delete one service, then clear.
    wvs.adm_ok(&["-D", "-u", &format!("{VIP}:9000")]);
    assert!(!wvs.adm_ok(&["-S", "-n"]).contains("9000"));
    wvs.adm_ok(&["-C"]);
    assert_eq!(wvs.adm_ok(&["-S", "-n"]), "");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "curl",
            "-s",
            "-m",
            "2",
            &url,
        ])
        .output()
        .expect("curl");
    assert!(!out.status.success(), "no service: no answer");
}

/// What `ipvsadm-save -n` writes for a NAT setup, as keepalived users have it.
const SAVE_FILE: &str = "\
-A -t 198.18.100.1:80 -s wlc -p 120 -M 255.255.255.0
-a -t 198.18.100.1:80 -r 198.19.0.11:80 -m -w 1
-a -t 198.18.100.1:80 -r 198.19.0.12:80 -m -w 1
-a -t 198.18.100.1:80 -r 198.19.0.13:80 -m -w 1
-A -t 198.18.100.1:8080 -s wrr
-a -t 198.18.100.1:8080 -r 198.19.0.11:80 -m -w 2
-a -t 198.18.100.1:8080 -r 198.19.0.12:80 -m -w 1
-A -u 198.18.100.1:9000 -s rr
-a -u 198.18.100.1:9000 -r 198.19.0.11:9000 -m -w 1
-a -u 198.18.100.1:9000 -r 198.19.0.13:9000 -m -w 1
";

#[test]
fn an_ipvsadm_save_file_restores_as_is_and_a_bad_one_changes_nothing() {
    let topo = Topo::new("rst", false);
    let wvs = start_empty(&topo);
    // A bad file (last line has an unknown scheduler) restores nothing.
    let bad = format!("{SAVE_FILE}-A -t 198.18.100.1:81 -s fastest\n");
    let (code, _, err) = wvs.adm_stdin(&["-R"], &bad);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("unknown scheduler") && err.contains("fastest"),
        "{err}"
    );
    assert_eq!(wvs.adm_ok(&["-S", "-n"]), "", "all or nothing");

    let (code, _, err) = wvs.adm_stdin(&["-R"], SAVE_FILE);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        wvs.adm_ok(&["-S", "-n"]),
        SAVE_FILE,
        "saved back byte for byte"
    );

    // Persistent wlc over a /24: every connection from the client goes to one server, and
    // the template shows in the connection table as ipvsadm shows one (ASSURED once a
    // connection it placed was established, as the kernel's IPVS lists it).
    let first = topo.curl(&format!("http://{VIP}/"));
    let t = tally(&topo, &format!("http://{VIP}/"), 15);
    assert_eq!(t, vec![(first.clone(), 15)], "persistent");
    let c = wvs.adm_ok(&["-L", "-n", "-c"]);
    let n = first.trim_start_matches("rs");
    assert!(
        c.lines().any(|l| l.starts_with("TCP ")
            && l.contains(" ASSURED     198.18.0.0:0       198.18.100.1:80    ")
            && l.ends_with(&format!("198.19.0.1{n}:80"))),
        "{c}"
    );
    let pc = wvs.adm_ok(&["-L", "-n", "--persistent-conn", "-t", &format!("{VIP}:80")]);
    assert!(
        pc.contains(&format!(
            "  -> 198.19.0.1{n}:80               1         1           "
        )),
        "{pc}"
    );
    // wrr 2:1 on the second service, rr on UDP.
    assert_eq!(
        tally(&topo, &format!("http://{VIP}:8080/"), 30),
        pairs(&[("rs1", 20), ("rs2", 10)])
    );
    let u = Topo::tally((0..10).map(|i| topo.udp_ask(41000 + i)));
    assert_eq!(
        u.into_iter().collect::<Vec<_>>(),
        pairs(&[("rs1", 5), ("rs3", 5)])
    );
}

#[test]
fn the_token_is_enforced_and_bad_input_is_refused_with_nothing_changed() {
    let topo = Topo::new("tok", false);
    let wvs = start_empty(&topo);
    // DNS rebinding: a Host header naming another host is refused, reads included.
    let out = topo.exec(
        "lb",
        &[
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "Host: evil.example:9080",
            "http://127.0.0.1:9080/api/v1/services",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n403") && text.contains("--api-host"),
        "{text}"
    );
    wvs.adm_ok(&["-A", "-t", &format!("{VIP}:80"), "-s", "rr"]);
    wvs.adm_ok(&[
        "-a",
        "-t",
        &format!("{VIP}:80"),
        "-r",
        "198.19.0.11:80",
        "-m",
    ]);
    let token_file = wvs.state_dir.join("api-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).expect("token").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the generated token is private");
    let before_rules = wvs.adm_ok(&["-S", "-n"]);
    let state_file = wvs.state_dir.join("wvs-state.toml");
    let before_state = std::fs::read(&state_file).expect("state");
    let bearer = format!("Bearer {}", wvs.token());
    let body = |name: &str, text: &[u8]| {
        let p = topo.dir.join(name);
        std::fs::write(&p, text).expect("body");
        p
    };
    let good = body(
        "good.json",
        br#"{"protocol":"tcp","address":"198.18.100.1:81","scheduler":"rr"}"#,
    );

    // No token, a wrong token: 401, for the API and for wvs adm.
    let (code, msg) = wvs.api(
        "POST",
        "/api/v1/services",
        None,
        Some("application/json"),
        Some(&good),
    );
    assert_eq!(code, 401, "{msg}");
    assert!(msg.contains("Bearer"), "{msg}");
    let (code, _) = wvs.api(
        "POST",
        "/api/v1/services",
        Some("Bearer nope"),
        Some("application/json"),
        Some(&good),
    );
    assert_eq!(code, 401);
    let (code, _) = wvs.api("DELETE", "/api/v1/services", Some("Basic abc"), None, None);
    assert_eq!(code, 401);
    let wrong = topo.dir.join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").expect("token");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("lb"),
            common::wvs_bin(),
            "adm",
            "--token-file",
        ])
        .arg(&wrong)
        .args(["-D", "-t", &format!("{VIP}:80")])
        .output()
        .expect("adm");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong bearer token"));
    // Reading needs the token too: the tables hold client addresses. The document and the
    // dashboard's files do not.
    for path in [
        "/api/v1/services",
        "/api/v1/connections",
        "/api/v1/stats",
        "/api/v1/info",
        "/api/v1/settings",
    ] {
        let (code, body) = wvs.api("GET", path, None, None, None);
        assert_eq!(code, 401, "GET {path} without the token: {body}");
        assert!(body.contains("token"), "{body}");
        let (code, _) = wvs.api("GET", path, Some("Bearer nope"), None, None);
        assert_eq!(code, 401, "GET {path} with a wrong token");
        wvs.get_json(path);
    }
    for path in ["/api/v1/openapi.json", "/", "/metrics"] {
        let (code, _) = wvs.api("GET", path, None, None, None);
        assert_eq!(
            code, 200,
            "GET {path} needs no token (metrics: on a loopback address)"
        );
    }

    // Bad inputs: each a 4xx with a message saying what is wrong.
    let big = vec![b' '; 2 << 20];
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        std::path::PathBuf,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("POST", "/api/v1/services", Some("application/json"), body("syntax.json", b"{\"protocol\": "), 400, "EOF"),
        ("POST", "/api/v1/services", Some("application/json"), body("unknown.json", br#"{"protocol":"tcp","address":"198.18.100.1:81","colour":"red"}"#), 400, "unknown field `colour`"),
        ("POST", "/api/v1/services", Some("application/json"), body("addr.json", br#"{"protocol":"tcp","address":"198.18.100.300:81"}"#), 400, "not an IP:port"),
        ("POST", "/api/v1/services", Some("application/json"), body("port.json", br#"{"protocol":"tcp","address":"198.18.100.1:70000"}"#), 400, "not an IP:port"),
        ("POST", "/api/v1/services", Some("application/json"), body("proto.json", br#"{"protocol":"dccp","address":"198.18.100.1:81"}"#), 400, "protocol"),
        ("POST", "/api/v1/services", Some("application/json"), body("sched.json", br#"{"protocol":"tcp","address":"198.18.100.1:81","scheduler":"fastest"}"#), 409, "unknown scheduler \"fastest\""),
        ("POST", "/api/v1/services", Some("application/json"), body("dup.json", br#"{"protocol":"tcp","address":"198.18.100.1:80"}"#), 409, "exists already"),
        ("POST", "/api/v1/services", Some("text/plain"), good.clone(), 415, "Content-Type"),
        ("POST", "/api/v1/services", Some("application/json"), body("big.json", &big), 413, "length limit"),
        ("POST", "/api/v1/services/tcp/198.18.100.1:80/reals", Some("application/json"), body("weight.json", br#"{"address":"198.19.0.12:80","weight":70000}"#), 400, "above 65535"),
        ("POST", "/api/v1/services/tcp/198.18.100.1:80/reals", Some("application/json"), body("fwd.json", br#"{"address":"198.19.0.12:80","forward":"snat"}"#), 400, "unknown forwarding method"),
        ("POST", "/api/v1/services/tcp/198.18.100.1:80/reals", Some("application/json"), body("gue.json", br#"{"address":"198.19.0.12:80","forward":"tunnel","tun_type":"gue"}"#), 409, "needs a tunnel port"),
        ("POST", "/api/v1/services/tcp/198.18.100.1:80/reals", Some("application/json"), body("drport.json", br#"{"address":"198.19.0.12:8080","forward":"dr"}"#), 409, "forwards to the virtual port 80"),
        ("DELETE", "/api/v1/services/tcp/198.18.100.1:99", None, body("none", b""), 404, "no service"),
        ("POST", "/api/v1/batch", Some("application/json"), body("batch.json", br#"{"changes":[{"op":"add_service","service":{"protocol":"tcp","address":"198.18.100.1:82"}},{"op":"delete_real","protocol":"tcp","address":"198.18.100.1:80","real":"198.19.0.13:80"}]}"#), 404, "change 1 (delete_real)"),
        ("PUT", "/api/v1/plugins/evil", Some("application/wasm"), body("evil.wasm", b"MZ not wasm"), 400, "not a WebAssembly module"),
        ("PUT", "/api/v1/plugins/bad%20name", Some("application/wasm"), body("ok.wasm", b"\0asm\x01\0\0\0"), 400, "plugin name"),
        ("PUT", "/api/v1/plugins/empty", Some("application/wasm"), body("ok2.wasm", b"\0asm\x01\0\0\0"), 400, "ABI"),
    ];
    for (method, path, ct, file, want, says) in cases {
        let (code, msg) = wvs.api(method, path, Some(&bearer), ct, Some(&file));
        assert_eq!(code, want, "{method} {path} {}: {msg}", file.display());
        let err: serde_json::Value = serde_json::from_str(&msg).expect("a JSON error body");
        let text = err["error"].as_str().expect("an error message");
        assert!(
            text.contains(says),
            "{method} {path}: {text:?} should say {says:?}"
        );
    }
    // wvs adm refuses bad input before sending anything.
    let (code, _, err) = wvs.adm(&[
        "-a",
        "-t",
        &format!("{VIP}:80"),
        "-r",
        "198.19.0.12:80",
        "-w",
        "heavy",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("illegal weight"), "{err}");

    // Nothing changed: not the rules, not the saved state, and traffic flows as before.
    assert_eq!(wvs.adm_ok(&["-S", "-n"]), before_rules);
    assert_eq!(std::fs::read(&state_file).expect("state"), before_state);
    assert_eq!(
        tally(&topo, &format!("http://{VIP}/"), 5),
        pairs(&[("rs1", 5)])
    );
    let plugins = wvs.get_json("/api/v1/plugins");
    assert!(
        plugins
            .as_array()
            .expect("list")
            .iter()
            .all(|p| p["kind"] == "builtin"),
        "{plugins}"
    );
    assert_eq!(
        std::fs::read_dir(wvs.state_dir.join("plugins"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no refused plugin left on disk"
    );
}

#[test]
fn the_token_comes_from_the_environment_or_a_file() {
    let topo = Topo::new("tenv", false);
    let cfg = topo.dir.join("empty.toml");
    std::fs::write(&cfg, "").expect("config");
    let tf = topo.dir.join("token");
    std::fs::write(&tf, "from-a-file\n").expect("token");
    let w = Wvs::start_with(
        &topo,
        Some(&cfg),
        &["--token-file", tf.to_str().expect("path")],
    );
    let svc = topo.dir.join("svc.json");
    std::fs::write(&svc, br#"{"protocol":"udp","address":"198.18.100.1:53"}"#).expect("body");
    let (code, _) = w.api(
        "POST",
        "/api/v1/services",
        Some("Bearer from-a-file"),
        Some("application/json"),
        Some(&svc),
    );
    assert_eq!(code, 201);
    assert!(
        !w.state_dir.join("api-token").exists(),
        "no token generated when one is given"
    );
    drop(w);

    let mut w = Wvs::start_with_env(&topo, Some(&cfg), &[], &[("WVS_API_TOKEN", "from-env")]);
    // wvs executes itself again without the token in its environment: what /proc shows of
    // it (to its user and root, and to every program it starts) never held it.
    let environ = std::fs::read(format!("/proc/{}/environ", w.pid())).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("from-env") && !environ.contains("WVS_API_TOKEN="),
        "{environ}"
    );
    let (code, _) = w.api(
        "DELETE",
        "/api/v1/services",
        Some("Bearer from-env"),
        None,
        None,
    );
    assert_eq!(code, 204);
    let (code, _) = w.api(
        "DELETE",
        "/api/v1/services",
        Some("Bearer from-a-file"),
        None,
        None,
    );
    assert_eq!(code, 401);
    assert!(w.stop().success());
}

#[test]
fn parallel_writers_never_show_a_reader_half_a_change() {
    let topo = Topo::new("par", false);
    let wvs = start_empty(&topo);
    let bearer = format!("Bearer {}", wvs.token());
    // Each writer owns a port; a change adds its service with three real servers of equal
    // weight, or deletes it, or sets all three weights to one new value, in one batch.
    let writers = 3;
    let rounds = 25;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            let (wvs, stop, seen) = (&wvs, &stop, &seen);
            s.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v = wvs.get_json("/api/v1/services");
                    for svc in v.as_array().expect("list") {
                        let reals = svc["reals"].as_array().expect("reals");
                        assert_eq!(reals.len(), 3, "half a change seen: {svc}");
                        let w0 = &reals[0]["weight"];
                        assert!(
                            reals.iter().all(|r| &r["weight"] == w0),
                            "half an edit seen: {svc}"
                        );
                        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
        let mut hs = Vec::new();
        for w in 0..writers {
            let (wvs, topo, bearer) = (&wvs, &topo, &bearer);
            hs.push(s.spawn(move || {
                let port = 1000 + w;
                let addr = format!("198.18.100.1:{port}");
                let file = topo.dir.join(format!("w{w}.json"));
                for round in 0..rounds {
                    let reals: Vec<String> = (1..=3)
                        .map(|i| format!(r#"{{"address":"198.19.0.1{i}:80","weight":{}}}"#, round + 1))
                        .collect();
                    let add = format!(
                        r#"{{"changes":[{{"op":"add_service","service":{{"protocol":"tcp","address":"{addr}","scheduler":"wrr"}}}},{}]}}"#,
                        reals.iter().map(|r| format!(r#"{{"op":"add_real","protocol":"tcp","address":"{addr}","real":{r}}}"#)).collect::<Vec<_>>().join(",")
                    );
                    let edit = format!(
                        r#"{{"changes":[{}]}}"#,
                        (1..=3).map(|i| format!(r#"{{"op":"edit_real","protocol":"tcp","address":"{addr}","real":{{"address":"198.19.0.1{i}:80","weight":{}}}}}"#, round + 7)).collect::<Vec<_>>().join(",")
                    );
                    let del = format!(r#"{{"changes":[{{"op":"delete_service","protocol":"tcp","address":"{addr}"}}]}}"#);
                    for b in [add, edit, del] {
                        std::fs::write(&file, &b).expect("body");
                        let (code, msg) = wvs.api("POST", "/api/v1/batch", Some(bearer), Some("application/json"), Some(&file));
                        assert_eq!(code, 200, "{b}: {msg}");
                    }
                }
            }));
        }
        for h in hs {
            h.join().expect("writer");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let n = seen.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "readers checked {n} services during {} changes",
        writers * rounds * 3
    );
    assert!(
        n > 50,
        "the readers saw services while the writers worked ({n})"
    );
}

/// Sum of one metric's samples in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn counters_and_rates_match_the_traffic_sent() {
    let topo = Topo::new("cnt", false);
    let cfg = common::iperf3_config(&topo);
    let wvs = Wvs::start(&topo, Some(&cfg));
    // iperf3 in rs1 (stopped with the topology), a steady 2000 datagrams of 1000 bytes a
    // second from the client for 50 s: the EWMA of 2 s samples (weight 1/4) is within
    // 0.75^23 = 0.14 % of a steady rate after 46 s, well inside the 1 % asked.
    let server = Command::new("ip")
        .args(["netns", "exec", &topo.ns("rs1"), "iperf3", "-s", "-1", "-D"])
        .status()
        .expect("iperf3 -s");
    assert!(server.success());
    std::thread::sleep(Duration::from_millis(500));
    let secs = 50;
    let client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "iperf3",
            "-c",
            VIP,
            "-u",
            "-l",
            "1000",
            "-b",
            "16M",
            "-t",
        ])
        .arg(secs.to_string())
        .args(["--pacing-timer", "100", "-J"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("iperf3 -c");
    // Read the rates near the end of the run, while traffic still flows.
    std::thread::sleep(Duration::from_secs(secs - 3));
    let svc = wvs.get_json(&format!("/api/v1/services/udp/{VIP}:5201"));
    let rates = svc["rates"].clone();
    let out = client.wait_with_output().expect("iperf3");
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    let sent = report["end"]["sum"]["packets"].as_u64().expect("packets");
    let secs_sent = report["end"]["sum"]["seconds"].as_f64().expect("seconds");
    let pps = sent as f64 / secs_sent;
    eprintln!("iperf3 sent {sent} datagrams in {secs_sent:.2} s ({pps:.0}/s); wvs rates {rates}");

    let within = |got: f64, want: f64, what: &str| {
        let err = (got - want).abs() / want;
        assert!(
            err <= 0.01,
            "{what}: wvs {got} vs sent {want} ({:.2} % off)",
            err * 100.0
        );
    };
    // Counters: every datagram counted, with its 1028 IP bytes.
    std::thread::sleep(Duration::from_millis(300));
    let svc = wvs.get_json(&format!("/api/v1/services/udp/{VIP}:5201"));
    let inpkts = svc["stats"]["inpkts"].as_u64().expect("inpkts");
    let inbytes = svc["stats"]["inbytes"].as_u64().expect("inbytes");
    within(inpkts as f64, sent as f64, "packets in");
    within(inbytes as f64, (sent * 1028) as f64, "bytes in");
    assert_eq!(svc["reals"][0]["stats"]["inpkts"], svc["stats"]["inpkts"]);
    // Rates: the estimator's packets and bytes per second.
    within(
        rates["inpps"].as_f64().expect("inpps"),
        pps,
        "packets per second",
    );
    within(
        rates["inbps"].as_f64().expect("inbps"),
        pps * 1028.0,
        "bytes per second",
    );

    // The global counters and /metrics show the same numbers.
    let stats = wvs.get_json("/api/v1/stats");
    let tcp = wvs.get_json(&format!("/api/v1/services/tcp/{VIP}:5201"));
    assert_eq!(
        stats["totals"]["inpkts"].as_u64(),
        Some(inpkts + tcp["stats"]["inpkts"].as_u64().expect("tcp"))
    );
    let (code, text) = wvs.api("GET", "/metrics", None, None, None);
    assert_eq!(code, 200);
    assert_eq!(
        metric(&text, "node_ipvs_incoming_packets_total") as u64,
        stats["totals"]["inpkts"].as_u64().expect("inpkts")
    );
    assert_eq!(
        metric(&text, "node_ipvs_connections_total") as u64,
        stats["totals"]["conns"].as_u64().expect("conns")
    );
    assert!(text.contains(&format!(
        "node_ipvs_backend_weight{{local_address=\"{VIP}\",local_port=\"5201\",remote_address=\"198.19.0.11\",remote_port=\"5201\",proto=\"UDP\",local_mark=\"\"}} 1"
    )), "{text}");
    for m in [
        "wvs_plugin_calls_total",
        "wvs_plugin_traps_total",
        "wvs_plugin_fallbacks_total",
        "wvs_drops_total",
        "wvs_connection_table_entries",
        "wvs_service_incoming_packets_total",
    ] {
        assert!(text.contains(&format!("\n{m}")), "{m} missing");
    }
    assert_eq!(
        metric(&text, "wvs_plugin_calls_total") as u64,
        stats["plugins"]["calls"].as_u64().expect("calls")
    );
}

#[test]
fn plugins_are_uploaded_used_and_deleted_when_unused() {
    let topo = Topo::new("plg", false);
    let wvs = start_empty(&topo);
    let bearer = format!("Bearer {}", wvs.token());
    let wasm = std::path::PathBuf::from(env!("WVS_EXAMPLE_LAT2_WASM"));
    let (code, msg) = wvs.api(
        "PUT",
        "/api/v1/plugins/lat2",
        Some(&bearer),
        Some("application/wasm"),
        Some(&wasm),
    );
    assert_eq!(code, 201, "{msg}");
    let svc = format!("{VIP}:80");
    wvs.adm_ok(&["-A", "-t", &svc, "-s", "lat2"]);
    for i in 1..=3 {
        wvs.adm_ok(&["-a", "-t", &svc, "-r", &format!("198.19.0.1{i}:80"), "-m"]);
    }
    let t = tally(&topo, &format!("http://{VIP}/"), 30);
    assert_eq!(t.iter().map(|(_, n)| n).sum::<usize>(), 30, "{t:?}");
    let v = wvs.get_json(&format!("/api/v1/services/tcp/{svc}"));
    assert_eq!(
        (v["scheduler"].as_str(), v["scheduler_runs"].as_str()),
        (Some("lat2"), Some("wasm")),
        "{v}"
    );
    let plugins = wvs.get_json("/api/v1/plugins");
    let lat2 = plugins
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p["name"] == "lat2")
        .expect("lat2")
        .clone();
    assert_eq!(lat2["kind"], "custom");
    assert_eq!(lat2["used_by"][0], format!("tcp {svc}"));
    // In use: refused. Unused: deleted, with its file.
    let (code, msg) = wvs.api("DELETE", "/api/v1/plugins/lat2", Some(&bearer), None, None);
    assert_eq!(code, 409, "{msg}");
    assert!(msg.contains("used by"), "{msg}");
    wvs.adm_ok(&["-E", "-t", &svc, "-s", "rr"]);
    let (code, msg) = wvs.api("DELETE", "/api/v1/plugins/lat2", Some(&bearer), None, None);
    assert_eq!(code, 204, "{msg}");
    assert_eq!(
        std::fs::read_dir(wvs.state_dir.join("plugins"))
            .expect("dir")
            .count(),
        0
    );
    assert_eq!(
        tally(&topo, &format!("http://{VIP}/"), 30),
        pairs(&[("rs1", 10), ("rs2", 10), ("rs3", 10)])
    );
    // The OpenAPI document describes the endpoints used here.
    let doc = wvs.get_json("/api/v1/openapi.json");
    assert!(doc["paths"]["/api/v1/plugins/{name}"]["put"].is_object());
    assert!(doc["paths"]["/api/v1/batch"]["post"].is_object());
}

#[test]
fn a_client_port_reused_through_another_service_to_the_same_server_connects() {
    let topo = Topo::new("reuse", false);
    let wvs = start_empty(&topo);
    for port in ["80", "8080"] {
        wvs.adm_ok(&["-A", "-t", &format!("{VIP}:{port}"), "-s", "rr"]);
        wvs.adm_ok(&[
            "-a",
            "-t",
            &format!("{VIP}:{port}"),
            "-r",
            "198.19.0.11:80",
            "-m",
        ]);
    }
    // The same client port to both services: the second connection has the reply key
    // (rs1:80 -> client:45123) of the first, which wvs holds in TIME_WAIT.
    for port in ["80", "8080"] {
        // socat with reuseaddr: the client's own TIME_WAIT (to VIP:80) must not stop the bind.
        let mut child = Command::new("ip")
            .args(["netns", "exec", &topo.ns("cli"), "socat", "-T", "3", "-"])
            .arg(format!("TCP4:{VIP}:{port},sourceport=45123,reuseaddr"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("socat");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .expect("request");
        let out = child.wait_with_output().expect("socat");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.trim_end().ends_with("rs1"),
            "port {port}: {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = wvs.adm_ok(&["-L", "-n", "-c"]);
    assert!(c.contains(&format!("198.18.0.2:45123   {VIP}:8080")), "{c}");
}

/// `GET/PUT /api/v1/settings`: the timeouts, IPVS's switches and the defense strategies as
/// one change, validated (a mode of 4 is refused and nothing changes), saved (a restart
/// keeps them) and applied (the defense takes its new mode within its one-second update).
#[test]
fn settings_are_one_validated_saved_change() {
    let topo = Topo::new("sets", false);
    let mut wvs = start_empty(&topo);
    let s = wvs.get_json("/api/v1/settings");
    assert_eq!(s["defense"]["secure_tcp"], 1, "{s}");
    assert_eq!(s["defense"]["drop_packet"], 0, "{s}");
    assert_eq!(s["timeouts"]["tcp"], 900, "{s}");
    let auth = format!("Bearer {}", wvs.token());
    let body = |text: &str| {
        let p = topo.dir.join("settings.json");
        std::fs::write(&p, text).expect("body");
        p
    };
    let bad = body(r#"{"defense": {"secure_tcp": 4}}"#);
    let (code, msg) = wvs.api(
        "PUT",
        "/api/v1/settings",
        Some(&auth),
        Some("application/json"),
        Some(&bad),
    );
    assert_eq!(code, 400, "{msg}");
    assert_eq!(wvs.get_json("/api/v1/settings"), s, "nothing changed");
    let good = body(
        r#"{"timeouts": {"tcp": 600, "tcpfin": 60, "udp": 30}, "sysctl": {"nat_icmp_send": true},
            "defense": {"secure_tcp": 3, "threshold": 60}}"#,
    );
    let (code, msg) = wvs.api(
        "PUT",
        "/api/v1/settings",
        Some(&auth),
        Some("application/json"),
        Some(&good),
    );
    assert_eq!(code, 200, "{msg}");
    let now = wvs.get_json("/api/v1/settings");
    assert_eq!(
        (
            &now["timeouts"]["udp"],
            &now["sysctl"]["nat_icmp_send"],
            &now["defense"]["threshold"]
        ),
        (
            &serde_json::json!(30),
            &serde_json::json!(true),
            &serde_json::json!(60)
        ),
        "{now}"
    );
    assert_eq!(
        now["defense"]["drop_entry"], 1,
        "an absent field is its default"
    );
    let t0 = std::time::Instant::now();
    while wvs.get_json("/api/v1/stats")["defense"]["secure_tcp"] != 3 {
        assert!(
            t0.elapsed().as_secs() < 5,
            "the defense did not take mode 3"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(wvs.get_json("/api/v1/stats")["defense"]["active"], true);
    assert_eq!(
        wvs.adm_ok(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 600 60 30\n"
    );
    // Saved: a restart on the same state directory has them.
    let state = wvs.state_dir.clone();
    wvs.stop();
    let again = Wvs::start_with(&topo, None, &["--state-dir", state.to_str().expect("path")]);
    assert_eq!(again.get_json("/api/v1/settings"), now);
}

/// Holds a TCP connection to VIP:80 from the client (saying nothing) for `secs`.
fn hold_connection(topo: &Topo, secs: u32) -> std::process::Child {
    Command::new("ip")
        .args(["netns", "exec", &topo.ns("cli"), "python3", "-c"])
        .arg(format!(
            "import socket, time\ns = socket.create_connection(('{VIP}', 80), timeout=5)\n\
             print('connected', flush=True)\ntime.sleep({secs})\n"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3")
}

#[test]
fn expire_nodest_conn_decides_whether_a_removed_servers_connections_stay() {
    let topo = Topo::new("nodest", false);
    let wvs = start_empty(&topo);
    wvs.adm_ok(&["-A", "-t", &format!("{VIP}:80"), "-s", "rr"]);
    let auth = format!("Bearer {}", wvs.token());
    let put = |json: &str| {
        let p = topo.dir.join("sysctl.json");
        std::fs::write(&p, json).expect("body");
        let (code, msg) = wvs.api(
            "PUT",
            "/api/v1/sysctl",
            Some(&auth),
            Some("application/json"),
            Some(&p),
        );
        assert_eq!(code, 200, "{msg}");
    };
    let s = wvs.get_json("/api/v1/sysctl");
    assert_eq!(
        (
            &s["expire_nodest_conn"],
            &s["expire_quiescent_template"],
            &s["conn_reuse_mode"]
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(false),
            &serde_json::json!(1)
        ),
        "{s}"
    );
    let conns = || {
        wvs.adm_ok(&["-L", "-n", "-c"])
            .lines()
            .filter(|l| l.contains("198.19.0.11:80"))
            .count()
    };
    for (nodest, stays) in [(true, false), (false, true)] {
        put(&format!(
            r#"{{"expire_nodest_conn": {nodest}, "conn_reuse_mode": 1}}"#
        ));
        wvs.adm_ok(&[
            "-a",
            "-t",
            &format!("{VIP}:80"),
            "-r",
            "198.19.0.11:80",
            "-m",
        ]);
        let mut held = hold_connection(&topo, 8);
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(held.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "connected");
        assert_eq!(conns(), 1, "the held connection is listed");
        wvs.adm_ok(&["-d", "-t", &format!("{VIP}:80"), "-r", "198.19.0.11:80"]);
        // The expiry thread runs every second.
        std::thread::sleep(std::time::Duration::from_millis(2500));
        assert_eq!(
            conns() == 1,
            stays,
            "expire_nodest_conn={nodest}: the connection {}",
            if stays {
                "stays until its timeout"
            } else {
                "goes with its server"
            }
        );
        let _ = held.kill();
        let _ = held.wait();
    }
    // Out of range: refused, nothing changed.
    let p = topo.dir.join("bad.json");
    std::fs::write(&p, r#"{"conn_reuse_mode": 4}"#).expect("body");
    let (code, msg) = wvs.api(
        "PUT",
        "/api/v1/sysctl",
        Some(&auth),
        Some("application/json"),
        Some(&p),
    );
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("conn_reuse_mode"), "{msg}");
}

/// `-S` then `-R` is a full backup: a configuration using every option `wvs adm` can
/// express (persistence, flags, helpers, every forwarding method with its options, hints,
/// thresholds, a sorry server, local addresses, a UDP policy, checks with every field) is
/// saved, cleared, restored, and saved again to the same text.
#[test]
fn save_then_restore_gives_back_every_option() {
    let topo = Topo::new("sr", false);
    let cfg = topo.dir.join("all.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[[service]]
protocol = "tcp"
address = "{VIP}:80"
scheduler = "sh"
flags = ["sh-port", "sh-fallback"]
persistent = 300
netmask = "255.255.255.0"
helpers = ["proxy-v2"]
laddrs = ["198.19.0.100"]
check = {{ type = "http", path = "/health", host = "www.example", status = ["200", "301-302"], digest = "9b3a0c85a887a256d6939da88aabd8cd", contains = "it's ok", port = 8080, interval = 2.5, timeout = 1, rise = 2, fall = 3, inhibit_on_failure = true }}
[[service.real]]
address = "198.19.0.11:80"
forward = "nat"
weight = 3
hint = 77
upper_threshold = 100
lower_threshold = 50
[[service.real]]
address = "198.19.0.12:80"
forward = "tunnel"
tun_type = "gue"
tun_port = 6080
tun_csum = "remcsum"
[[service.real]]
address = "198.19.0.13:80"
forward = "fullnat"
check = {{ type = "tcp", port = 81 }}
[[service.real]]
address = "198.19.0.14:80"
forward = "nat"
sorry = true

[[service]]
protocol = "udp"
address = "{VIP}:53"
scheduler = "rr"
udp_on_failure = "move"
check = {{ type = "dns", name = "example.", qtype = "A", interval = 3 }}
[[service.real]]
address = "198.19.0.11:53"
forward = "dr"
check = {{ type = "udp", payload = "ping me", expect = "pong" }}
"#
        ),
    )
    .expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    let first = w.adm_ok(&["-S", "-n"]);
    for want in [
        "--hint 77",
        "--sorry",
        "--check-status 200,301-302",
        "--check-digest 9b3a0c85a887a256d6939da88aabd8cd",
        "--check-host www.example",
        "--check-contains 'it'\\''s ok'",
        "--udp-on-failure move",
        "--check-qtype A",
        "--check-payload 'ping me'",
    ] {
        assert!(first.contains(want), "-S lacks {want}:\n{first}");
    }
    w.adm_ok(&["-C"]);
    assert_eq!(
        w.get_json("/api/v1/services").as_array().map(Vec::len),
        Some(0)
    );
    let (code, _, err) = w.adm_stdin(&["-R"], &first);
    assert_eq!(code, 0, "{err}");
    let again = w.adm_ok(&["-S", "-n"]);
    assert_eq!(again, first, "-S of the round trip is the original");
    // -e keeps the hint unless --hint sets it.
    let vip = format!("{VIP}:80");
    w.adm_ok(&["-e", "-t", &vip, "-r", "198.19.0.11:80", "-m", "-w", "5"]);
    let hint = |w: &Wvs| {
        w.get_json(&format!("/api/v1/services/tcp/{vip}"))["reals"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["address"] == "198.19.0.11:80"))
            .map(|r| r["hint"].as_u64())
    };
    assert_eq!(hint(&w), Some(Some(77)));
    w.adm_ok(&[
        "-e",
        "-t",
        &vip,
        "-r",
        "198.19.0.11:80",
        "-m",
        "--hint",
        "9",
    ]);
    assert_eq!(hint(&w), Some(Some(9)));
}

/// Plugins from the command line: `wvs adm --plugin-load NAME FILE`, `--plugin-list`,
/// `--plugin-delete NAME`, as the REST API does them.
#[test]
fn plugins_are_loaded_listed_and_deleted_by_adm() {
    let topo = Topo::new("admplg", false);
    let w = start_empty(&topo);
    let wasm = env!("WVS_EXAMPLE_LAT2_WASM");
    let out = w.adm_ok(&["--plugin-load", "lat2", wasm]);
    assert!(out.contains("lat2"), "{out}");
    let svc = format!("{VIP}:80");
    w.adm_ok(&["-A", "-t", &svc, "-s", "lat2"]);
    let list = w.adm_ok(&["--plugin-list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with("lat2 "))
        .unwrap_or_default();
    assert!(
        line.contains("custom") && line.contains(&format!("tcp {svc}")),
        "{list}"
    );
    let (code, _, err) = w.adm(&["--plugin-delete", "lat2"]);
    assert_ne!(code, 0);
    assert!(err.contains("used by"), "{err}");
    w.adm_ok(&["-E", "-t", &svc, "-s", "rr"]);
    w.adm_ok(&["--plugin-delete", "lat2"]);
    assert!(!w.adm_ok(&["--plugin-list"]).contains("lat2 "));
    let (code, _, err) = w.adm(&["--plugin-load", "bad", "/nonexistent.wasm"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read /nonexistent.wasm"), "{err}");
}
