//! End to end, the process and its API under hostile conditions: 2,000 idle sockets on the
//! API do not keep `wvs adm` out; HTTPS; capabilities after start read from
//! /proc/PID/status, as root and as the systemd unit's dedicated user; `/metrics` open on a
//! loopback address only. Needs root.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Topo, VIP, Wvs, wvs_bin};

fn start_empty(topo: &Topo, extra: &[&str]) -> Wvs {
    let cfg = topo.dir.join("empty.toml");
    std::fs::write(&cfg, "# no services\n").expect("config");
    Wvs::start_with(topo, Some(&cfg), extra)
}

/// Holds 2,000 idle connections to the API while `wvs adm -L -n` runs, then reports what
/// became of them: closed at once to make room (the cap), and closed after the header
/// timeout (the rest), and how many descriptors wvs held meanwhile.
const IDLE: &str = r#"
import json, os, resource, socket, subprocess, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
pid, adm = sys.argv[1], sys.argv[2:]
token = open(adm[adm.index("--token-file") + 1]).read().strip()
def ask(s):
    s.sendall(("GET /api/v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
               + token + "\r\n\r\n").encode())
    got = b""
    while b"\r\n\r\n" not in got:
        b = s.recv(4096)
        if not b:
            return None
        got += b
    return got.split(b"\r\n", 1)[0].decode()
# The operator's keep-alive connection, which showed the token: the flood must not close it.
op = socket.create_connection(("127.0.0.1", 9080), timeout=5)
first = ask(op)
socks = []
t0 = time.time()
answers = []
for i in range(2000):
    socks.append(socket.create_connection(("127.0.0.1", 9080), timeout=10))
    # The operator asks now and then (its connection idle in between, within the
    # keep-alive header timeout).
    if i % 200 == 199:
        try:
            answers.append(ask(op))
        except OSError as e:
            answers.append(str(e))
opened = time.time() - t0
t0 = time.time()
r = subprocess.run(adm, capture_output=True, text=True, timeout=60)
adm_secs = time.time() - t0
try:
    again = ask(op)
except OSError as e:
    again = str(e)
wvs_fds = len(os.listdir(f"/proc/{pid}/fd"))
def closed(s):
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, OSError):
        return True
time.sleep(0.5)
closed_now = sum(closed(s) for s in socks)
time.sleep(12)
closed_later = sum(closed(s) for s in socks)
print(json.dumps({"opened_secs": opened, "adm_rc": r.returncode, "adm_out": r.stdout,
                  "adm_err": r.stderr, "adm_secs": adm_secs, "wvs_fds": wvs_fds,
                  "closed_now": closed_now, "closed_later": closed_later,
                  "operator": sorted(set([first, again] + answers))}))
"#;

fn metric(w: &Wvs, line_start: &str) -> f64 {
    let (code, text) = w.api("GET", "/metrics", None, None, None);
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

#[test]
fn two_thousand_idle_sockets_do_not_keep_adm_out() {
    let topo = Topo::new("idle", false);
    let w = start_empty(&topo, &[]);
    w.adm_ok(&["-A", "-t", &format!("{VIP}:80"), "-s", "rr"]);
    let token = w.state_dir.join("api-token");
    let out = Command::new("ip")
        .args(["netns", "exec", &w.ns, "python3", "-c", IDLE])
        .arg(w.pid().to_string())
        .args([wvs_bin(), "adm", "--token-file"])
        .arg(&token)
        .args(["-L", "-n"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    eprintln!("idle sockets: {r}");
    assert_eq!(r["adm_rc"], 0, "wvs adm failed: {}", r["adm_err"]);
    assert!(
        r["adm_out"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("{VIP}:80")),
        "{r}"
    );
    assert!(
        r["adm_secs"].as_f64().unwrap_or(99.0) < 5.0,
        "adm was held: {r}"
    );
    // The cap (256) holds: wvs kept no more descriptors than that and its own.
    assert!(r["wvs_fds"].as_u64().unwrap_or(9999) < 256 + 128, "{r}");
    // All but the cap's worth were closed to make room, at once …
    assert!(r["closed_now"].as_u64().unwrap_or(0) >= 2000 - 256, "{r}");
    // … and the rest after the header timeout (10 s).
    assert_eq!(r["closed_later"], 2000, "{r}");
    assert!(metric(&w, "wvs_api_connection_events_total{event=\"evicted\"} ") >= 1700.0);
    // The operator's connection, authenticated before the flood, was kept open.
    assert_eq!(r["operator"], serde_json::json!(["HTTP/1.1 200 OK"]), "{r}");
    // The API answers as before.
    w.get_json("/api/v1/info");
}

#[test]
fn the_api_speaks_https_with_the_given_certificate() {
    let topo = Topo::new("tls", false);
    let (cert, key) = (topo.dir.join("cert.pem"), topo.dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args([
            "-subj",
            "/CN=wvs-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // An end entity's certificate (openssl's default for -x509 is a CA's, which rustls
        // does not take as a server's own).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let c = cert.to_str().expect("path");
    let k = key.to_str().expect("path");
    let w = start_empty(&topo, &["--api-tls-cert", c, "--api-tls-key", k]);
    let auth = format!("Authorization: Bearer {}", w.token());
    let curl = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &w.ns, "curl", "-s", "-m", "5"])
            .args(args)
            .output()
            .expect("curl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (rc, body) = curl(&[
        "--cacert",
        c,
        "-H",
        &auth,
        "https://127.0.0.1:9080/api/v1/info",
    ]);
    assert_eq!(rc, Some(0), "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(info["version"].is_string(), "{body}");
    // A client that does not trust the certificate is refused; plain HTTP gets no answer.
    let (rc, _) = curl(&["https://127.0.0.1:9080/api/v1/info"]);
    assert_ne!(rc, Some(0), "an unknown certificate is refused");
    let (rc, body) = curl(&["-H", &auth, "http://127.0.0.1:9080/api/v1/info"]);
    assert!(
        rc != Some(0) || !body.contains("version"),
        "no plain HTTP: {body}"
    );
    assert!(metric_tls(&w, c) >= 1.0);
    // wvs adm over HTTPS, trusting the certificate it is given.
    let adm = |extra: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &w.ns, wvs_bin(), "adm", "--token-file"])
            .arg(w.state_dir.join("api-token"))
            .args(extra)
            .args(["-A", "-t", &format!("{VIP}:80"), "-s", "rr"])
            .output()
            .expect("wvs adm")
    };
    let out = adm(&["--api", "https://127.0.0.1:9080", "--api-ca", c]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = adm(&["--api", "https://127.0.0.1:9080"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-ca"));
    let listed = Command::new("ip")
        .args(["netns", "exec", &w.ns, wvs_bin(), "adm", "--token-file"])
        .arg(w.state_dir.join("api-token"))
        .args(["--api", "https://127.0.0.1:9080", "--api-ca", c, "-L", "-n"])
        .output()
        .expect("wvs adm");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!("{VIP}:80 rr")),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );

    // A key that is not the certificate's stops the start with a message saying so.
    let other = topo.dir.join("other.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl");
    assert!(made.status.success());
    let sd = topo.dir.join("state-bad");
    let err = topo.wvs_refused(&[
        "--api".as_ref(),
        "127.0.0.1:9081".as_ref(),
        "--state-dir".as_ref(),
        sd.as_os_str(),
        "--api-tls-cert".as_ref(),
        c.as_ref(),
        "--api-tls-key".as_ref(),
        other.as_os_str(),
    ]);
    assert!(err.contains("TLS certificate"), "{err}");
}

/// `/metrics` over HTTPS (loopback: no token): the failed handshakes counted.
fn metric_tls(w: &Wvs, cacert: &str) -> f64 {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &w.ns, "curl", "-s", "-m", "5", "--cacert", cacert,
        ])
        .arg("https://127.0.0.1:9080/metrics")
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("wvs_api_connection_events_total{event=\"tls_failed\"} ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no tls_failed in {text}"))
}

fn t_is_main(status: &std::path::Path, pid: u32) -> bool {
    status.parent().and_then(|t| t.file_name()) == Some(std::ffi::OsStr::new(&pid.to_string()))
}

/// One capability set of /proc/PID/task/TID/status, as a number.
fn cap_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// The uid of the user wvs runs as by default (created by its first start as root).
static WVS_UID: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
    let out = std::process::Command::new("id")
        .args(["-u", "wvs"])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the wvs user exists once wvs has started as root")
});

/// `--user root` keeps uid 0, by explicit choice, with a warning.
#[test]
fn user_root_is_kept_only_when_asked_and_warned_about() {
    let topo = Topo::new("uroot", false);
    let w = start_empty(&topo, &["--user", "root"]);
    assert!(w.log_text().contains("--user root"), "{}", w.log_text());
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).expect("status");
    assert!(status.contains("Uid:\t0\t0\t0\t0"), "{status}");
    drop(w);
    let err = topo.wvs_refused(&["--user".as_ref(), "no-such-user-here".as_ref()]);
    assert!(err.contains("no such user"), "{err}");
}

#[test]
fn after_start_only_cap_net_admin_is_left_and_no_new_privileges() {
    let topo = Topo::new("caps", false);
    // On every address: /metrics is open on the loopback one only, and a warning says that
    // the API is plain HTTP beyond the machine.
    let w = start_empty(&topo, &["--api", "0.0.0.0:9080"]);
    assert!(w.log_text().contains("plain HTTP"), "{}", w.log_text());
    const NET_ADMIN: u64 = 1 << 12;
    // With the flow offload (the default), CAP_BPF too: its maps are written while wvs runs.
    const BPF: u64 = 1 << 39;
    let kept = if common::offloads(&["--api", "0.0.0.0:9080"]) {
        NET_ADMIN | BPF
    } else {
        NET_ADMIN
    };
    let tasks = std::fs::read_dir(format!("/proc/{}/task", w.pid())).expect("tasks");
    let mut n = 0;
    for t in tasks {
        let path = t.expect("task").path().join("status");
        let status = std::fs::read_to_string(&path).expect("status");
        let name = format!(
            "{} {}",
            path.display(),
            status.lines().next().unwrap_or_default()
        );
        // CAP_NET_ADMIN at most (a thread that needs none has none), in every set.
        for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
            assert_eq!(
                cap_field(&status, set) & !kept,
                0,
                "{name} {set}\n{}",
                w.log_text()
            );
        }
        if t_is_main(&path, w.pid()) {
            assert_eq!(
                cap_field(&status, "CapEff:"),
                kept,
                "the main thread runs nft"
            );
        }
        assert!(status.contains("NoNewPrivs:\t1"), "{name}: {status}");
        // Started as root: every thread runs as the user wvs became (`--user`, wvs).
        let u = *WVS_UID;
        let uid = format!("Uid:\t{u}\t{u}\t{u}\t{u}");
        assert!(status.contains(&uid), "{name}: {status}");
        n += 1;
    }
    // Its directories are that user's.
    use std::os::unix::fs::MetadataExt;
    for f in [w.state_dir.clone(), w.state_dir.join("api-token")] {
        let m = std::fs::metadata(&f).expect("state");
        assert_eq!(m.uid(), *WVS_UID, "{}", f.display());
    }
    assert!(
        n >= 3,
        "the main thread, the workers, the expiry and check threads: {n}"
    );

    // What needs CAP_NET_ADMIN still works: a change rewrites the nftables table.
    w.adm_ok(&["-A", "-t", &format!("{VIP}:80"), "-s", "rr"]);
    w.adm_ok(&[
        "-a",
        "-t",
        &format!("{VIP}:80"),
        "-r",
        "198.19.0.11:80",
        "-m",
    ]);
    let nft = topo.exec("lb", &["nft", "list", "table", "netdev", "wvs"]);
    assert!(
        String::from_utf8_lossy(&nft.stdout).contains(&format!("{VIP} . tcp . 80")),
        "{}",
        String::from_utf8_lossy(&nft.stdout)
    );
    let t = Topo::tally((0..4).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(t.get("rs1"), Some(&4), "{t:?}");

    let get = |url: &str| {
        let out = topo.exec(
            "lb",
            &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get("http://127.0.0.1:9080/metrics"), "200");
    assert_eq!(
        get("http://198.18.0.1:9080/metrics"),
        "401",
        "elsewhere it needs the token"
    );
}

/// The unit's `Key=` values (space-separated words).
fn unit_words(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn runs_as_the_units_dedicated_user_with_its_capabilities() {
    let unit_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/wvs.service");
    let unit = std::fs::read_to_string(unit_path).expect("dist/wvs.service");
    let ambient = unit_words(&unit, "AmbientCapabilities");
    assert_eq!(ambient, unit_words(&unit, "CapabilityBoundingSet"));
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("User=wvs"));
    // systemd's own check of the unit (with this build's binary in place of the installed
    // one, which it looks for).
    let checked = std::env::temp_dir().join(format!("wvs-{}.service", std::process::id()));
    std::fs::write(&checked, unit.replace("/usr/local/bin/wvs", wvs_bin())).expect("unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_file(&checked);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What the unit does, with setpriv: a user of its own (an unused uid stands for the
    // `wvs` user), only the unit's capabilities, ambient, and no_new_privs.
    let topo = Topo::new("unit", false);
    const UID: &str = "64123";
    let sd = topo.dir.join("state-unit");
    let cache = topo.dir.join("cache-unit");
    for d in [&sd, &cache] {
        std::fs::create_dir_all(d).expect("dir");
        let out = Command::new("chown")
            .arg(format!("{UID}:{UID}"))
            .arg(d)
            .output()
            .expect("chown");
        assert!(out.status.success());
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
    }
    let caps = ambient
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let cfg = one_server(&topo);
    let (reuid, regid) = (format!("--reuid={UID}"), format!("--regid={UID}"));
    let (inh, amb) = (
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps={caps}"),
    );
    let bnd = format!("--bounding-set=-all,{caps}");
    let w = Wvs::start_wrapped(
        &topo,
        Some(&cfg),
        &[
            "--state-dir",
            sd.to_str().expect("path"),
            "--plugin-cache",
            cache.to_str().expect("path"),
        ],
        &[],
        &[
            "setpriv",
            &reuid,
            &regid,
            "--clear-groups",
            &inh,
            &amb,
            &bnd,
            "--no-new-privs",
        ],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).expect("status");
    assert!(status.contains(&format!("Uid:\t{UID}\t{UID}")), "{status}");
    const NET_ADMIN: u64 = 1 << 12;
    // And CAP_BPF for the flow offload's maps, on by default (the unit grants it).
    const BPF: u64 = 1 << 39;
    let kept = if common::offloads(&[]) {
        NET_ADMIN | BPF
    } else {
        NET_ADMIN
    };
    assert!(
        w.log_text().contains(&format!(
            "offload=\"{}\"",
            if kept & BPF != 0 { "tc" } else { "off" }
        )),
        "{}",
        w.log_text()
    );
    assert_eq!(cap_field(&status, "CapEff:"), kept, "CAP_NET_RAW is gone");
    assert_eq!(cap_field(&status, "CapPrm:"), kept);
    assert_eq!(
        cap_field(&status, "CapAmb:"),
        kept,
        "nft gets CAP_NET_ADMIN"
    );
    let t = Topo::tally((0..3).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(t.get("rs1"), Some(&3), "{t:?}");
    // A change: nft run by the unprivileged user, with its ambient CAP_NET_ADMIN.
    w.adm_ok(&[
        "-a",
        "-t",
        &format!("{VIP}:80"),
        "-r",
        "198.19.0.12:80",
        "-m",
    ]);
    let nft = topo.exec("lb", &["nft", "list", "table", "netdev", "wvs"]);
    assert!(
        String::from_utf8_lossy(&nft.stdout).contains("198.19.0.12 . tcp . 80"),
        "{}",
        String::from_utf8_lossy(&nft.stdout)
    );
}

fn one_server(topo: &Topo) -> std::path::PathBuf {
    let cfg = topo.dir.join("one.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\n\
             [[service.real]]\naddress = \"198.19.0.11:80\"\n"
        ),
    )
    .expect("config");
    cfg
}

fn ip(topo: &Topo, ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", &topo.ns(ns)])
        .args(args)
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn served_by_rs1(topo: &Topo, n: usize) {
    let t = Topo::tally((0..n).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(t.get("rs1"), Some(&n), "{t:?}");
}

#[test]
fn an_interface_deleted_and_created_again_is_bound_again() {
    relink("ring");
}

#[test]
fn an_interface_deleted_and_created_again_is_bound_again_uring() {
    relink("uring");
}

#[test]
fn an_interface_deleted_and_created_again_is_bound_again_xdp() {
    relink("xdp");
}

fn relink(io: &str) {
    let topo = Topo::new(&format!("rl{io}"), false);
    // Two workers: their receive sockets are in a fanout group, which cannot be bound to
    // another interface, so the new ones come from the socket broker.
    let w = Wvs::start_with(
        &topo,
        Some(&one_server(&topo)),
        &["--workers", "2", "--io", io],
    );
    served_by_rs1(&topo, 3);
    ip(&topo, "lb", &["link", "del", "s0"]);
    w.wait_log("interface gone", Duration::from_secs(5));
    // The same name again, with another address (the real servers learn it from the
    // gratuitous ARP the kernel sends when it comes up).
    let sw = topo.ns("sw");
    ip(
        &topo,
        "lb",
        &[
            "link",
            "add",
            "s0",
            "address",
            "02:00:00:00:5e:01",
            "type",
            "veth",
            "peer",
            "name",
            "p0",
            "netns",
            &sw,
        ],
    );
    ip(&topo, "sw", &["link", "set", "p0", "master", "br0"]);
    ip(&topo, "sw", &["link", "set", "p0", "up"]);
    let out = topo.exec("lb", &["sysctl", "-qw", "net.ipv4.conf.s0.arp_notify=1"]);
    assert!(out.status.success());
    ip(&topo, "lb", &["addr", "add", "198.19.0.1/24", "dev", "s0"]);
    ip(&topo, "lb", &["link", "set", "s0", "up"]);
    w.wait_log("interface back", Duration::from_secs(5));
    assert!(
        w.log_text().contains("02:00:00:00:5e:01"),
        "{}",
        w.log_text()
    );
    served_by_rs1(&topo, 5);
    // The nftables table was written again, so that its hook is on the new interface.
    w.wait_log("nftables table written again", Duration::from_secs(2));
    if io == "xdp" {
        // The XDP program is on the new interface: the frames came through new XDP
        // sockets in its maps.
        let link = topo.exec("lb", &["ip", "-d", "link", "show", "dev", "s0"]);
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(link.contains("prog/xdp"), "{link}");
        assert!(
            !w.log_text().contains("cannot be bound again"),
            "{}",
            w.log_text()
        );
    }
}

#[test]
fn a_real_server_whose_mac_address_changes_is_followed() {
    let topo = Topo::new("newmac", false);
    let w = Wvs::start(&topo, Some(&one_server(&topo)));
    served_by_rs1(&topo, 3);
    // The kernel takes a gratuitous ARP for an entry updated less than a second ago as
    // nothing new (locktime).
    std::thread::sleep(Duration::from_millis(1500));
    let out = topo.exec("rs1", &["sysctl", "-qw", "net.ipv4.conf.eth0.arp_notify=1"]);
    assert!(out.status.success());
    ip(
        &topo,
        "rs1",
        &["link", "set", "eth0", "address", "02:00:00:00:aa:01"],
    );
    w.wait_log("mac=02:00:00:00:aa:01", Duration::from_secs(5));
    served_by_rs1(&topo, 3);
}

/// The system calls of a `systemd-analyze syscall-filter` group, its groups expanded.
fn syscall_group(group: &str, out: &mut std::collections::BTreeSet<String>) {
    let o = Command::new("systemd-analyze")
        .args(["syscall-filter", group])
        .output()
        .expect("systemd-analyze syscall-filter");
    assert!(o.status.success(), "{group}");
    for l in String::from_utf8_lossy(&o.stdout).lines().skip(1) {
        let w = l.trim();
        if w.is_empty() || w.starts_with('#') {
            continue;
        }
        if w.starts_with('@') {
            syscall_group(w, out);
        } else {
            out.insert(w.to_string());
        }
    }
}

/// The unit's `SystemCallFilter=` holds every system call wvs makes: wvs traced (with nft,
/// the plugin compiler and the socket broker it starts) while it starts, forwards, takes a
/// change, compiles an upload, reloads and stops.
#[test]
fn every_system_call_wvs_makes_is_in_the_units_filter() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/wvs.service"))
        .expect("unit");
    let mut allowed = std::collections::BTreeSet::new();
    for w in unit_words(&unit, "SystemCallFilter") {
        if w.starts_with('@') {
            syscall_group(&w, &mut allowed);
        } else {
            allowed.insert(w);
        }
    }
    assert!(allowed.contains("io_uring_enter") && allowed.contains("openat"));
    let topo = Topo::new("scall", false);
    let trace = topo.dir.join("strace.log");
    let cfg = topo.dir.join("one.toml");
    std::fs::write(&cfg, format!("[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n[[service.real]]\naddress = \"198.19.0.11:80\"\nforward = \"nat\"\n")).expect("config");
    let tr = trace.to_str().expect("path");
    let mut w = Wvs::start_wrapped(
        &topo,
        Some(&cfg),
        &[],
        &[],
        &["strace", "-f", "-qq", "-o", tr, "--"],
    );
    for _ in 0..3 {
        topo.curl(&format!("http://{VIP}/"));
    }
    w.adm_ok(&[
        "-a",
        "-t",
        &format!("{VIP}:80"),
        "-r",
        "198.19.0.12:80",
        "-m",
    ]);
    w.adm_ok(&["--plugin-load", "lat2", env!("WVS_EXAMPLE_LAT2_WASM")]);
    // Signals go to wvs itself, strace's child.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", w.pid()))
        .expect("strace's children");
    let pid = children
        .split_whitespace()
        .next()
        .expect("wvs under strace")
        .to_string();
    let kill = |sig: &str| {
        let st = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(st.success());
    };
    kill("-HUP");
    w.wait_log("configuration reloaded", std::time::Duration::from_secs(10));
    kill("-TERM");
    let t0 = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "wvs stops"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    w.stop();
    let log = std::fs::read_to_string(&trace).expect("trace");
    let re = regex::Regex::new(r"^\d+\s+([a-z0-9_]+)\(").expect("re");
    let made: std::collections::BTreeSet<String> = log
        .lines()
        .filter_map(|l| re.captures(l).map(|c| c[1].to_string()))
        .collect();
    assert!(made.len() > 30, "traced: {made:?}");
    let outside: Vec<&String> = made.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        outside.is_empty(),
        "system calls the unit's filter refuses: {outside:?}"
    );
}
