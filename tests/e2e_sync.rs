//! End to end, two directors: IPVS's connection sync between two real `wvs` processes
//! (scripts/pair.sh), its messages as tshark's IPVS dissector reads them, and
//! a takeover in which the backup carries on the master's connections on the same servers.
//! Needs root, iproute2, nftables, nginx, curl, python3 and tshark (scripts/setup.sh).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Topo, VIP, Wvs};

/// Both directors' configuration: the same NAT service, and the daemon `daemon`.
fn config(topo: &Topo, name: &str, daemon: &str) -> std::path::PathBuf {
    let mut t =
        format!("[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n");
    for i in 1..=3 {
        t += &format!("[[service.real]]\naddress = \"198.19.0.1{i}:80\"\nforward = \"nat\"\n");
    }
    t += &format!("[[daemon]]\n{daemon}\n");
    let p = topo.dir.join(format!("{name}.toml"));
    std::fs::write(&p, t).unwrap();
    p
}

/// A client holding `n` keep-alive connections to VIP:80: it asks once on each and prints
/// the servers; given a line on stdin, it asks again on each and prints the servers (or
/// the error of the first that failed).
const HOLDER: &str = r#"
import socket, sys
n, vip = int(sys.argv[1]), sys.argv[2]
conns = [socket.create_connection((vip, 80), timeout=10) for _ in range(n)]
def ask(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
    while len(body) < n:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed")
        body += chunk
    return body.strip().decode()
def round_():
    out = []
    for s in conns:
        try:
            out.append("%d=%s" % (s.getsockname()[1], ask(s)))
        except Exception as e:
            out.append("%d=ERR:%s" % (s.getsockname()[1], str(e).replace(" ", "_") or type(e).__name__))
    print(" ".join(out), flush=True)
round_()
for line in sys.stdin:
    round_()
"#;

struct Holder {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn start(topo: &Topo, n: usize) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &topo.ns("cli"), "python3", "-c", HOLDER])
            .args([&n.to_string(), VIP])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let out = BufReader::new(child.stdout.take().unwrap());
        Self { child, out }
    }

    /// One round's answers: client port -> server (or the error).
    fn round(&mut self) -> Vec<(u16, String)> {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("holder output");
        line.split_whitespace()
            .map(|w| {
                let (p, s) = w.split_once('=').unwrap();
                (p.parse().unwrap(), s.to_string())
            })
            .collect()
    }

    fn again(&mut self) -> Vec<(u16, String)> {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        self.round()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TCP connections a director lists (`-L -c -n`): (state, client, virtual, server).
fn listed(w: &Wvs) -> BTreeSet<(String, String, String, String)> {
    w.adm_ok(&["-L", "-c", "-n"])
        .lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 6 && f[0] == "TCP").then(|| {
                (
                    f[2].to_string(),
                    f[3].to_string(),
                    f[4].to_string(),
                    f[5].to_string(),
                )
            })
        })
        .collect()
}

fn metric(w: &Wvs, name: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &w.ns, "curl", "-sS", "-m", "5"])
        .arg("http://127.0.0.1:9080/metrics")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The 100 MB file downloaded from VIP:80 by the client at `rate` (curl's `--limit-rate`),
/// in the background.
struct Download {
    child: Child,
    got: std::path::PathBuf,
    want: std::path::PathBuf,
}

impl Download {
    fn start(topo: &Topo, rate: &str, max_secs: u32) -> Self {
        let got = topo.dir.join("got");
        let child = Command::new("ip")
            .args(["netns", "exec", &topo.ns("cli"), "curl", "-sS"])
            .args(["-m", &max_secs.to_string(), "--limit-rate", rate, "-o"])
            .arg(&got)
            .arg(format!("http://{VIP}/big"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl");
        Self {
            child,
            got,
            want: topo.dir.join("big"),
        }
    }

    /// Wait for it; it must have succeeded, byte for byte (`context` goes with a failure).
    fn finish(self, context: impl FnOnce() -> String) {
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "curl failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            context()
        );
        let want = std::fs::read(&self.want).unwrap();
        let have = std::fs::read(&self.got).unwrap();
        assert!(
            have == want,
            "the download differs ({} of {} bytes)",
            have.len(),
            want.len()
        );
    }
}

/// Move the floating gateways to director `lb` (scripts/pair.sh).
fn takeover(topo: &Topo, lb: &str) {
    let out = Command::new("bash")
        .args([common::PAIR_TOPOLOGY, "takeover", &topo.prefix, lb])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Wait until director `w` lists every established connection of `of` (another
/// director's listing), as sync made them.
fn wait_knows(what: &str, w: &Wvs, of: &BTreeSet<(String, String, String, String)>) {
    wait_for(what, Duration::from_secs(5), || {
        let b = listed(w);
        of.iter()
            .filter(|c| c.0 == "ESTABLISHED")
            .all(|c| b.contains(c))
    });
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_backup_takes_over_the_masters_connections_on_the_same_servers() {
    let topo = Topo::pair("sync", true);
    let master = Wvs::start_in(
        &topo,
        "lb1",
        Some(&config(
            &topo,
            "lb1",
            "state = \"master\"\nmcast_interface = \"s0\"\nsyncid = 7",
        )),
        &[],
    );
    let backup = Wvs::start_in(
        &topo,
        "lb2",
        Some(&config(
            &topo,
            "lb2",
            "state = \"backup\"\nmcast_interface = \"s0\"\nsyncid = 7",
        )),
        &[],
    );
    assert_eq!(
        master.adm_ok(&["-L", "--daemon"]),
        "master sync daemon (mcast=s0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
    );
    assert_eq!(
        backup.adm_ok(&["-L", "--daemon"]),
        "backup sync daemon (mcast=s0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
    );
    // What goes over the wire, as tshark's dissector reads it.
    let pcap = topo.dir.join("sync.pcap");
    let mut tshark = topo.tshark("lb2", "s0", "udp port 8848", &["-a", "duration:8"], &pcap);

    // 20 keep-alive connections, and a 100 MB download at 10 MB/s.
    let mut holder = Holder::start(&topo, 20);
    let first = holder.round();
    assert_eq!(first.len(), 20);
    assert!(first.iter().all(|(_, s)| s.starts_with("rs")), "{first:?}");
    let download = Download::start(&topo, "10M", 60);

    // The backup lists the master's established connections, on the same servers.
    let mut on_master = BTreeSet::new();
    wait_for(
        "the master has 21 connections",
        Duration::from_secs(5),
        || {
            on_master = listed(&master);
            on_master.len() >= 21
        },
    );
    wait_knows("the backup has every connection", &backup, &on_master);
    assert!(metric(&backup, "wvs_sync_events_total{event=\"created\"}") >= 21);
    let _ = tshark.wait();
    let fields = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-E", "separator=,", "-E", "occurrence=f"])
        .args([
            "-e",
            "ipvs.syncid",
            "-e",
            "ipvs.version",
            "-e",
            "ipvs.conncount",
        ])
        .args(["-e", "ipvs.proto", "-e", "ipvs.state", "-e", "ipvs.caddr"])
        .args(["-e", "ipvs.vaddr", "-e", "ipvs.vport", "-e", "ipvs.daddr"])
        .args([
            "-e",
            "ipvs.dport",
            "-e",
            "ipvs.timeout",
            "-e",
            "ipvs.flags.v1",
        ])
        .output()
        .expect("tshark -r");
    let text = String::from_utf8_lossy(&fields.stdout).into_owned();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert!(!rows.is_empty(), "no sync message captured");
    for r in &rows {
        // syncid, version 1, a TCP record, ESTABLISHED from the client to the VIP on a
        // real server, 900 s, NAT and active.
        assert_eq!(&r[..2], ["7", "1"], "{text}");
        assert_eq!(
            (r[3], r[4], r[5], r[6], r[7], r[9], r[10], r[11]),
            (
                "0x06",
                "0x0001",
                "198.18.0.2",
                VIP,
                "80",
                "80",
                "900",
                "0x00000000"
            ),
            "{text}"
        );
        assert!(r[8].starts_with("198.19.0.1"), "{text}");
    }
    // The download's client packets count toward `sync_threshold` on the master, also
    // while the flow offload carries them (its keeper counts them at each merge): its
    // connection goes again and again (its 3rd packet, then every 50th), not once.
    let cports = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-e", "ipvs.cport"])
        .args(["-E", "occurrence=a", "-E", "aggregator= "])
        .output()
        .expect("tshark -r");
    let mut per_port = std::collections::BTreeMap::<String, usize>::new();
    for p in String::from_utf8_lossy(&cports.stdout).split_whitespace() {
        *per_port.entry(p.to_string()).or_default() += 1;
    }
    eprintln!("sync records by client port: {per_port:?}");
    let most = per_port.values().copied().max().unwrap_or(0);
    assert!(most >= 3, "records by client port: {per_port:?}");
    if common::offloads(&[]) {
        assert!(
            metric(&master, "wvs_offload_packets_total") > 0,
            "the master's offload carried nothing: {per_port:?}"
        );
    }

    // The master dies; the backup takes the gateways.
    master.signal("KILL");
    let killed = Instant::now();
    takeover(&topo, "lb2");
    let mut first_served = None;
    wait_for(
        "a new connection served by the backup",
        Duration::from_secs(10),
        || {
            let ok = topo
                .exec(
                    "cli",
                    &["curl", "-sS", "-m", "1", &format!("http://{VIP}/")],
                )
                .status
                .success();
            if ok {
                first_served = Some(killed.elapsed());
            }
            ok
        },
    );
    eprintln!("takeover: first new request served {first_served:?} after the kill");
    // Every held connection goes on, on its server.
    let second = holder.again();
    assert_eq!(second, first, "the held connections after the takeover");
    // The download finishes, byte for byte.
    download.finish(String::new);
    assert_eq!(
        metric(&backup, "wvs_sync_events_total{event=\"bad_messages\"}"),
        0
    );
}

const PAIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lvs-pair");

/// keepalived (VRRP only) on director `lb`, from examples/lvs-pair/keepalived.conf: lb2's
/// router id and priority, and the notify script run with this test's wvs and token.
struct Keepalived {
    child: Child,
}

impl Keepalived {
    fn start(topo: &Topo, lb: &str, wvs: &Wvs) -> Self {
        let example = std::fs::read_to_string(format!("{PAIR}/keepalived.conf")).unwrap();
        let notify = format!(
            "/usr/bin/env WVS={} WVS_TOKEN_FILE={} {PAIR}/wvs-sync-notify.sh",
            common::wvs_bin(),
            wvs.state_dir.join("api-token").display()
        );
        let mut conf = example.replace("/etc/keepalived/wvs-sync-notify.sh", &notify);
        if lb == "lb2" {
            conf = conf
                .replace("router_id wvs-lb1", "router_id wvs-lb2")
                .replace("priority 150", "priority 100");
        }
        let path = topo.dir.join(format!("keepalived-{lb}.conf"));
        std::fs::write(&path, conf).unwrap();
        let log = std::fs::File::create(topo.dir.join(format!("keepalived-{lb}.log"))).unwrap();
        let pid = |k: &str| topo.dir.join(format!("{k}-{lb}.pid"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.ns(lb),
                "keepalived",
                "--vrrp",
                "-n",
                "-l",
                "-D",
            ])
            .arg("-f")
            .arg(&path)
            .arg("-p")
            .arg(pid("keepalived"))
            .arg("-r")
            .arg(pid("vrrp"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("keepalived");
        Self { child }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether director `lb` holds the clients' gateway.
fn holds_gateway(topo: &Topo, lb: &str) -> bool {
    let out = topo.exec(lb, &["ip", "-4", "addr", "show", "dev", "c0"]);
    String::from_utf8_lossy(&out.stdout).contains("198.18.0.1/24")
}

fn daemon_role(w: &Wvs) -> String {
    let (_, out, _) = w.adm(&["-L", "--daemon"]);
    out.split_whitespace().next().unwrap_or("").to_string()
}

/// The wvs configuration of examples/lvs-pair with forwarding method `fwd`.
fn pair_config(topo: &Topo, fwd: &str) -> std::path::PathBuf {
    let t = std::fs::read_to_string(format!("{PAIR}/wvs.toml"))
        .unwrap()
        .replace("forward = \"nat\"", &format!("forward = \"{fwd}\""));
    let p = topo.dir.join(format!("pair-{fwd}.toml"));
    std::fs::write(&p, t).unwrap();
    p
}

/// keepalived's VRRP moves the gateways between two wvs directors whose sync daemons
/// keepalived's notify scripts switch: a master killed with SIGKILL loses none of its
/// connections, and neither does its return (preempt).
fn vrrp_failover_and_preempt(fwd: &str) {
    let topo = Topo::pair(&format!("vr{fwd}"), true);
    topo.script("release");
    if fwd == "dr" {
        // The servers hold the VIP; their replies go through the serving director's kernel.
        topo.script("dr");
        for lb in ["lb1", "lb2"] {
            topo.exec(lb, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
    }
    let cfg = pair_config(&topo, fwd);
    let lb1 = Wvs::start_in(&topo, "lb1", Some(&cfg), &[]);
    let lb2 = Wvs::start_in(&topo, "lb2", Some(&cfg), &[]);
    let _k1 = Keepalived::start(&topo, "lb1", &lb1);
    wait_for("lb1 is VRRP master", Duration::from_secs(15), || {
        holds_gateway(&topo, "lb1") && daemon_role(&lb1) == "master"
    });
    let _k2 = Keepalived::start(&topo, "lb2", &lb2);
    wait_for(
        "lb2 runs the backup daemon",
        Duration::from_secs(15),
        || daemon_role(&lb2) == "backup",
    );
    assert!(!holds_gateway(&topo, "lb2"));

    let mut holder = Holder::start(&topo, 20);
    let first = holder.round();
    assert_eq!(first.len(), 20);
    assert!(first.iter().all(|(_, s)| s.starts_with("rs")), "{first:?}");
    let download = Download::start(&topo, "4M", 90);
    let mut on_lb1 = BTreeSet::new();
    wait_for("lb1 has 21 connections", Duration::from_secs(5), || {
        on_lb1 = listed(&lb1);
        on_lb1.iter().filter(|c| c.0 == "ESTABLISHED").count() >= 21
    });
    wait_knows("lb2 has lb1's connections", &lb2, &on_lb1);

    // kill -9: keepalived's check fails, lb1 gives the gateways up, lb2 takes them.
    let state = lb1.state_dir.clone();
    lb1.signal("KILL");
    let killed = Instant::now();
    let mut failover = Duration::ZERO;
    wait_for(
        "a new request served after the kill",
        Duration::from_secs(20),
        || {
            let ok = topo
                .exec(
                    "cli",
                    &["curl", "-sS", "-m", "1", &format!("http://{VIP}/")],
                )
                .status
                .success();
            failover = killed.elapsed();
            ok
        },
    );
    assert!(holds_gateway(&topo, "lb2"));
    wait_for("lb2 runs the master daemon", Duration::from_secs(5), || {
        daemon_role(&lb2) == "master"
    });
    let second = holder.again();
    assert_eq!(second, first, "the held connections through lb2");
    drop(lb1);

    // lb1 comes back: backup daemon first, the full resync, then preempt.
    let lb1 = Wvs::start_in(
        &topo,
        "lb1",
        Some(&cfg),
        &["--state-dir", state.to_str().unwrap()],
    );
    let back = Instant::now();
    wait_for(
        "lb1 runs the backup daemon",
        Duration::from_secs(10),
        || daemon_role(&lb1) == "backup",
    );
    let on_lb2 = listed(&lb2);
    wait_knows("lb1 knows lb2's connections", &lb1, &on_lb2);
    wait_for(
        "lb1 serves again (preempt)",
        Duration::from_secs(15),
        || holds_gateway(&topo, "lb1") && daemon_role(&lb1) == "master",
    );
    let preempt = back.elapsed();
    wait_for("lb2 is backup again", Duration::from_secs(5), || {
        daemon_role(&lb2) == "backup"
    });
    let third = holder.again();
    assert_eq!(third, first, "the held connections through lb1 again");
    download.finish(|| {
        format!(
            "{failover:?} failover, {preempt:?} back
lb1: {}
lb2: {}",
            lb1.log_text(),
            lb2.log_text()
        )
    });
    eprintln!(
        "{fwd}: failover (kill -9 to the first new request served) {failover:?}; \
         lb1 back to serving again {preempt:?}; held connections lost: 0 of 20; \
         download byte-exact"
    );
}

#[test]
fn vrrp_failover_and_preempt_lose_no_connection_nat() {
    vrrp_failover_and_preempt("nat");
}

#[test]
fn vrrp_failover_and_preempt_lose_no_connection_dr() {
    vrrp_failover_and_preempt("dr");
}

/// Without sync, a director that takes over resets the connections it was never told of;
/// with `sloppy_tcp` it takes their next segment as a new connection, scheduled as IPVS
/// would schedule it: with `sh` both directors pick the same server, so the clients go on.
#[test]
fn sloppy_tcp_takes_over_unknown_connections() {
    let topo = Topo::pair("sloppy", false);
    let mut t =
        format!("[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"sh\"\n");
    for i in 1..=3 {
        t += &format!("[[service.real]]\naddress = \"198.19.0.1{i}:80\"\nforward = \"nat\"\n");
    }
    let cfg = topo.dir.join("sh.toml");
    std::fs::write(&cfg, t).unwrap();
    let _lb1 = Wvs::start_in(&topo, "lb1", Some(&cfg), &[]);
    let lb2 = Wvs::start_in(&topo, "lb2", Some(&cfg), &[]);
    let takeover = |lb: &str| takeover(&topo, lb);

    let mut a = Holder::start(&topo, 5);
    let before = a.round();
    assert!(
        before.iter().all(|(_, s)| s.starts_with("rs")),
        "{before:?}"
    );
    takeover("lb2");
    let after = a.again();
    assert!(
        after.iter().all(|(_, s)| s.starts_with("ERR")),
        "sloppy_tcp off: reset, as IPVS: {after:?}"
    );
    drop(a);

    takeover("lb1");
    let mut b = Holder::start(&topo, 5);
    let before = b.round();
    let body = topo.dir.join("sysctl.json");
    std::fs::write(&body, r#"{"sloppy_tcp": true}"#).unwrap();
    let (code, msg) = lb2.api(
        "PUT",
        "/api/v1/sysctl",
        Some(&format!("Bearer {}", lb2.token())),
        Some("application/json"),
        Some(&body),
    );
    assert_eq!(code, 200, "{msg}");
    takeover("lb2");
    assert_eq!(
        b.again(),
        before,
        "sloppy_tcp on: the same servers, nothing lost"
    );
    let on_lb2 = listed(&lb2);
    assert_eq!(
        on_lb2.iter().filter(|c| c.0 == "ESTABLISHED").count(),
        5,
        "{on_lb2:?}"
    );
}

/// keepalived's own `lvs_sync_daemon` line, imported: both daemons run on each director
/// (as keepalived runs them without an instance), and a takeover keeps the connections.
#[test]
fn keepalived_lvs_sync_daemon_is_imported() {
    let topo = Topo::pair("kimp", false);
    let cfg = config(
        &topo,
        "both",
        "state = \"master\"\nmcast_interface = \"s0\"\nsyncid = 9",
    );
    // The daemons come from keepalived.conf: none in wvs's own file.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let plain = topo.dir.join("plain.toml");
    std::fs::write(&plain, &text[..text.find("[[daemon]]").unwrap()]).unwrap();
    let lb1 = Wvs::start_in(&topo, "lb1", Some(&plain), &[]);
    let lb2 = Wvs::start_in(&topo, "lb2", Some(&plain), &[]);
    let conf = topo.dir.join("keepalived.conf");
    std::fs::write(
        &conf,
        "global_defs {\n    router_id LVS\n    lvs_sync_daemon s0 VI_1 id 9\n}\n\
         vrrp_instance VI_1 {\n    interface c0\n    virtual_router_id 51\n    priority 100\n}\n",
    )
    .unwrap();
    for w in [&lb1, &lb2] {
        let (code, _, err) = w.adm(&["--import-keepalived", conf.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("VI_1"), "{err}");
        assert_eq!(
            w.adm_ok(&["-L", "--daemon"]),
            "master sync daemon (mcast=s0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
             backup sync daemon (mcast=s0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
    }
    let mut h = Holder::start(&topo, 5);
    let before = h.round();
    let on_lb1 = listed(&lb1);
    wait_knows("lb2 has lb1's connections", &lb2, &on_lb1);
    takeover(&topo, "lb2");
    assert_eq!(h.again(), before);
}
