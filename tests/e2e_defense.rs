//! Floods against a bounded table (docs/defense.md): a million spoofed SYNs, or a million
//! one-packet UDP flows, from random sources at the VIP while a client makes 200 real
//! requests. wvs runs with `--max-conns 100000`; the flood takes it past the defense's
//! threshold (75 %) in a few seconds, and the table must never exceed its bound,
//! wvs's memory must stay bounded, at least 99 % of the client's requests must be served,
//! and the defense must be seen acting and then, once the flood's entries are gone,
//! standing down.
//!
//! The flood comes from trafgen in the client's namespace, with sources in 198.18.128.0/17
//! (addresses no namespace holds: the real servers' answers to them go back through wvs to
//! the client's link and end there).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{Topo, VIP, Wvs};

const MAX_CONNS: u64 = 100_000;
const FLOOD: &str = "1000000";
/// What the release binary the tests run (scripts/test.sh sets WVS_BIN) keeps up with on
/// a two-core machine shared with trafgen, the real servers and the clients, also with a
/// busy loop on each core (each spoofed SYN is two frames in: the SYN and the server's
/// SYN-ACK); 1,000,000 take 40 s. The debug binary (no WVS_BIN) kept up with 10,000 a
/// second, so the flood is slowed to that for it.
fn rate() -> &'static str {
    if std::env::var_os("WVS_BIN").is_some() {
        "25000pps"
    } else {
        "10000pps"
    }
}

/// The services of the example, with a 20 s UDP timeout (as an operator sets with
/// `ipvsadm --set`), so that a UDP flood's entries go within the test, and the UDP
/// service's real servers on port 9001, where [`Responders`] answer.
fn config(topo: &Topo) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(common::example())
        .expect("example")
        .replace(":9000\"\n", ":9001\"\n")
        .replacen(":9001\"\nscheduler", ":9000\"\nscheduler", 1);
    text += "\n[timeouts]\ntcp = 900\ntcpfin = 120\nudp = 20\n";
    let p = topo.dir.join("defense.toml");
    std::fs::write(&p, text).expect("config");
    p
}

fn mac(topo: &Topo, ns: &str, dev: &str) -> String {
    let out = topo.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// trafgen sending `FLOOD` frames of `l4` (a trafgen header function) from random sources
/// at [`rate`], bounded in time.
fn flood(topo: &Topo, l4: &str) -> Child {
    let conf = topo.dir.join("flood.cfg");
    std::fs::write(
        &conf,
        format!(
            "{{ eth(da={lb}, sa={cli}), ipv4(saddr=dinc(3323101184, 3323133951), daddr={VIP}, ttl=64), {l4} }}\n",
            lb = mac(topo, "lb", "c0"),
            cli = mac(topo, "cli", "eth0"),
        ),
    )
    .expect("trafgen config");
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "timeout",
            "150",
            "trafgen",
        ])
        .args(["--dev", "eth0", "--conf"])
        .arg(&conf)
        .args([
            "--cpus",
            "1",
            "--no-sock-mem",
            "-q",
            "--num",
            FLOOD,
            "--rate",
            rate(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trafgen")
}

/// A UDP responder on port 9001 in each real server that answers a question with the
/// server's name and drops empty (all-zero) datagrams without a word, as a DNS server
/// drops garbage: the topology's socat responders fork a process per datagram, which no
/// flood leaves standing, and the test is of the balancer, not of them.
struct Responders(Vec<Child>);

impl Responders {
    fn start(topo: &Topo) -> Self {
        const PY: &str = "import socket, sys\n\
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)\n\
            s.bind(('0.0.0.0', 9001))\n\
            print('ready', flush=True)\n\
            while True:\n\
            \x20   d, a = s.recvfrom(2048)\n\
            \x20   if d.strip(b'\\0'):\n\
            \x20       s.sendto((sys.argv[1] + '\\n').encode(), a)\n";
        let all = (1..=3)
            .map(|i| {
                let mut c = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &topo.ns(&format!("rs{i}")),
                        "python3",
                        "-c",
                        PY,
                    ])
                    .arg(format!("rs{i}"))
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("python3");
                let mut line = String::new();
                use std::io::BufRead;
                std::io::BufReader::new(c.stdout.take().expect("stdout"))
                    .read_line(&mut line)
                    .expect("responder");
                assert_eq!(line.trim(), "ready");
                c
            })
            .collect();
        Self(all)
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What a watcher saw, polling the API every 100 ms.
#[derive(Debug, Default)]
struct Seen {
    most_conns: u64,
    most_rss_kib: u64,
    active: bool,
}

struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Seen>,
}

impl Watch {
    fn start(w: &Wvs) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (pid, ns) = (w.pid(), w.ns.clone());
        let auth = format!("Authorization: Bearer {}", w.token());
        let thread = std::thread::spawn(move || {
            let mut seen = Seen::default();
            while !flag.load(Relaxed) {
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns, "curl", "-s", "-m", "2", "-H", &auth])
                    .arg("http://127.0.0.1:9080/api/v1/stats")
                    .output()
                    .expect("curl");
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                    seen.most_conns = seen.most_conns.max(v["connections"].as_u64().unwrap_or(0));
                    seen.active |= v["defense"]["active"].as_bool().unwrap_or(false);
                }
                seen.most_rss_kib = seen.most_rss_kib.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        Self { stop, thread }
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Relaxed);
        self.thread.join().expect("watcher")
    }
}

/// The flood runs; once it has filled the table, 200 requests by `ask` (one every 20 ms);
/// returns how many were answered by a real server.
fn served_during(
    w: &Wvs,
    topo: &Topo,
    l4: &str,
    ask: impl Fn(u16) -> bool + Sync,
) -> (usize, Seen, u64) {
    let rss0 = rss_kib(w.pid());
    let watch = Watch::start(w);
    let f = flood(topo, l4);
    // Past the defense's threshold (75 % of the table) after a few seconds: wait for it to act.
    let t0 = Instant::now();
    while w.get_json("/api/v1/stats")["defense"]["active"] != true {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the flood did not bring the defense out: {}",
            w.get_json("/api/v1/stats")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Four clients of 50 requests each, so that all 200 fit in the flood's time.
    let flooding = std::sync::Mutex::new(f);
    let (served, during) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u16)
            .map(|k| {
                let (ask, flooding) = (&ask, &flooding);
                s.spawn(move || {
                    let (mut served, mut during) = (0, 0);
                    for i in 0..50u16 {
                        std::thread::sleep(Duration::from_millis(20));
                        served += usize::from(ask(k * 50 + i));
                        let running = flooding
                            .lock()
                            .map(|mut f| f.try_wait().ok().flatten().is_none())
                            .unwrap_or(false);
                        during += usize::from(running);
                    }
                    (served, during)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|t| t.join().expect("client"))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    let mut f = flooding.into_inner().expect("trafgen");
    eprintln!("{during} of the 200 requests ended during the flood");
    // The flood went on while the clients asked (a loaded machine starts them slowly).
    assert!(
        during >= 150,
        "only {during} of the 200 requests ended during the flood"
    );
    let status = f.wait().expect("trafgen");
    assert!(status.success(), "trafgen: {status:?}");
    (served, watch.finish(), rss0)
}

/// After the flood: the table empties (drop_entry, then the timeouts) and the defense
/// stands down within `limit`.
fn stands_down(w: &Wvs, limit: Duration) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let s = w.get_json("/api/v1/stats");
        if s["defense"]["active"] == false {
            return s;
        }
        assert!(t0.elapsed() < limit, "the defense did not stand down: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn bounded(seen: &Seen, rss0: u64) {
    assert!(
        seen.most_conns <= MAX_CONNS,
        "the table went over its bound: {seen:?}"
    );
    // The flood took the table past the defense's threshold (which then held it there or
    // evicted to take new connections).
    assert!(seen.most_conns >= MAX_CONNS * 3 / 4, "{seen:?}");
    // 100,000 entries take some tens of MiB; anything near 256 MiB more is a leak.
    assert!(
        seen.most_rss_kib < rss0 + 256 * 1024,
        "wvs grew from {rss0} KiB to {} KiB",
        seen.most_rss_kib
    );
    assert!(seen.active, "the defense never acted: {seen:?}");
}

/// One flood at a time: two would share the machine's two cores with two balancers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_syn_flood_does_not_deny_service() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let topo = Topo::new("dsyn", false);
    let w = Wvs::start_with(&topo, Some(&config(&topo)), &["--max-conns", "100000"]);
    let (served, seen, rss0) =
        served_during(&w, &topo, "tcp(sp=drnd(), dp=80, seq=drnd(), syn)", |_| {
            let out = topo.exec("cli", &["curl", "-s", "-m", "4", &format!("http://{VIP}/")]);
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .starts_with("rs")
        });
    eprintln!("SYN flood: {served}/200 served; {seen:?}; RSS before {rss0} KiB");
    assert!(served >= 198, "{served} of 200 requests served");
    bounded(&seen, rss0);
    let s = w.get_json("/api/v1/stats");
    eprintln!("after the SYN flood's end: {}", s["datapath"]);
    let d = &s["defense"];
    assert!(d["evicted"].as_u64().unwrap_or(0) > 0, "{d}");
    assert_eq!(
        w.drops("l4_bad_csum"),
        0,
        "the flood's checksums are right: {d}"
    );
    // SYN_RECV entries: drop_entry takes those of a random 32nd each second, and the rest
    // go at their 60 s timeout.
    let s = stands_down(&w, Duration::from_secs(75));
    eprintln!("after the SYN flood: {}", s["defense"]);
    assert!(
        s["defense"]["dropped_entries"].as_u64().unwrap_or(0) > 0,
        "{s}"
    );
    assert_eq!(s["defense"]["secure_tcp"], 1, "back to automatic and idle");
    // Serving as before.
    let t = Topo::tally((0..6).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(t.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{t:?}");
}

#[test]
fn a_udp_flood_does_not_deny_service() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let topo = Topo::new("dudp", false);
    let _responders = Responders::start(&topo);
    let w = Wvs::start_with(&topo, Some(&config(&topo)), &["--max-conns", "100000"]);
    let (served, seen, rss0) =
        served_during(&w, &topo, "udp(sp=drnd(), dp=9000), fill(0x00, 18)", |i| {
            topo.udp_ask(42000 + i).starts_with("rs")
        });
    eprintln!("UDP flood: {served}/200 served; {seen:?}; RSS before {rss0} KiB");
    assert!(served >= 198, "{served} of 200 questions answered");
    bounded(&seen, rss0);
    assert!(
        w.get_json("/api/v1/stats")["defense"]["evicted"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );
    // One-packet flows: gone at the 20 s UDP timeout.
    stands_down(&w, Duration::from_secs(45));
    let u = Topo::tally((0..6).map(|i| topo.udp_ask(43000 + i)));
    assert_eq!(u.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{u:?}");
}
