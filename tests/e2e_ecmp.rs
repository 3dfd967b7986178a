//! Active-active directors behind a router's ECMP (scripts/ecmp.sh, examples/ecmp): each
//! runs wvs with `--announce` and BIRD 2 (Debian's) announcing what wvs holds over BGP; the
//! router runs BIRD too and installs one multipath route over every director that
//! announces the VIP, hashing flows by layer 4. The directors send by direct routing, so
//! any of them can carry any flow: a flow that moves reaches a director that never saw it,
//! which schedules it (`sloppy_tcp`) with Maglev hashing to the server the others picked.
//!
//! A director's death is simulated as a machine's: its namespace stops sending and
//! receiving (an nftables table drops everything), then wvs and BIRD are killed with
//! SIGKILL, so the router learns of it only by its BGP hold timer (3 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Topo, Wvs};

const VIP: &str = "198.18.100.1";
/// The BGP hold time of examples/ecmp's configurations.
const HOLD: Duration = Duration::from_secs(3);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/ecmp")
        .join(name)
}

/// A BIRD daemon in a namespace, in the foreground (its PID is ours to kill), with its
/// own control socket.
struct Bird {
    child: Option<Child>,
}

impl Bird {
    fn start(topo: &Topo, ns: &str, conf: &Path) -> Self {
        let log = topo.dir.join(format!("bird-{ns}.log"));
        let f = std::fs::File::create(&log).expect("bird log");
        let child = Command::new("ip")
            .args(["netns", "exec", &topo.ns(ns), "bird", "-f", "-c"])
            .arg(conf)
            .arg("-s")
            .arg(topo.dir.join(format!("bird-{ns}.ctl")))
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("start bird (Debian's bird2: scripts/setup.sh installs it)");
        Bird { child: Some(child) }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The router's next hops for the VIP (its ECMP route), sorted.
fn hops(topo: &Topo) -> Vec<String> {
    let out = topo.exec("rt", &["ip", "route", "show", VIP]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<String> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    v.sort();
    v
}

/// Wait until the router's next hops are `want`; how long it took.
fn wait_hops(topo: &Topo, want: &[&str], within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let h = hops(topo);
        if h == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "the router's next hops for {VIP} are {h:?}, not {want:?}, after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Director `lb` (lb1..lb3): wvs announcing on wvs-vip, and BIRD.
fn director(topo: &Topo, lb: &str, state: &Path) -> (Wvs, Bird) {
    let state = state.to_str().expect("utf-8 path");
    let w = Wvs::start_in(
        topo,
        lb,
        Some(&example("wvs.toml")),
        &["--announce", "wvs-vip", "--node", lb, "--state-dir", state],
    );
    let b = Bird::start(topo, lb, &example("bird-director.conf"));
    (w, b)
}

/// scripts/held-conns.py in the client's namespace.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn start(topo: &Topo) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/held-conns.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &topo.ns("cli"), "python3"])
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Client {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, cmd: &str) -> serde_json::Value {
        writeln!(self.stdin, "{cmd}").expect("write to held-conns.py");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read held-conns.py");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("held-conns.py said {line:?}: {e}"))
    }

    /// Open `n` connections; each one's server.
    fn open(&mut self, n: usize) -> Vec<String> {
        let r = self.ask(&format!("open {VIP} 80 {n}"));
        assert_eq!(r["failed"], 0, "every connection opens: {r}");
        r["opened"]
            .as_array()
            .expect("opened")
            .iter()
            .map(|c| c["server"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Every connection so far still answers, from its own server: the report.
    fn all_alive(&mut self, n: u64) -> serde_json::Value {
        let r = self.ask("report");
        assert_eq!(r["conns"], n, "{r}");
        assert_eq!(r["lost"], serde_json::json!([]), "connections lost: {r}");
        assert_eq!(r["moved"], serde_json::json!([]), "connections moved: {r}");
        r
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A counter of a director's /metrics (no token on loopback), with its node label.
fn metric(topo: &Topo, lb: &str, name: &str) -> u64 {
    let out = topo.exec(
        lb,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "http://127.0.0.1:9080/metrics",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{name}{{node=\"{lb}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{lb}: no {prefix:?} in /metrics:\n{text}"))
}

/// Connections a director started from a SYN (all it created, less the unknown flows).
fn syn_started(topo: &Topo, lb: &str) -> u64 {
    metric(topo, lb, "node_ipvs_connections_total") - metric(topo, lb, "wvs_unknown_flows_total")
}

#[test]
fn three_directors_lose_no_connection_when_one_dies_and_comes_back() {
    let topo = Topo::ecmp("ecmp");
    let _rt = Bird::start(&topo, "rt", &example("bird-router.conf"));
    let states: Vec<PathBuf> = (1..=3)
        .map(|i| topo.dir.join(format!("state-lb{i}")))
        .collect();
    let mut lbs: Vec<(Wvs, Bird)> = (1..=3)
        .map(|i| director(&topo, &format!("lb{i}"), &states[i - 1]))
        .collect();
    let all = ["198.19.0.1", "198.19.0.2", "198.19.0.3"];
    let t = wait_hops(&topo, &all, Duration::from_secs(30));
    eprintln!("the router has three next hops for {VIP} after {t:?}");
    let text = String::from_utf8_lossy(
        &topo
            .exec("lb1", &["curl", "-s", "http://127.0.0.1:9080/metrics"])
            .stdout,
    )
    .to_string();
    assert!(
        text.contains(&format!("wvs_announced{{node=\"lb1\",vip=\"{VIP}\"}} 1")),
        "{text}"
    );

    // 300 long-lived connections, spread over the directors and the servers.
    let mut client = Client::start(&topo);
    let servers = client.open(300);
    for rs in ["rs1", "rs2", "rs3"] {
        assert!(
            servers.iter().any(|s| s == rs),
            "{rs} has none: {servers:?}"
        );
    }
    let started: Vec<u64> = ["lb1", "lb2", "lb3"]
        .iter()
        .map(|lb| syn_started(&topo, lb))
        .collect();
    eprintln!("connections started per director: {started:?}");
    assert_eq!(started.iter().sum::<u64>(), 300, "{started:?}");
    assert!(
        started.iter().all(|&n| n > 0),
        "every director has some: {started:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    client.all_alive(300);

    // lb2 dies: its machine goes silent, then wvs and BIRD are killed.
    topo.script("dead lb2");
    let t0 = Instant::now();
    lbs[1].0.kill9();
    lbs[1].1.kill9();
    let withdrawn = wait_hops(
        &topo,
        &["198.19.0.1", "198.19.0.3"],
        HOLD + Duration::from_secs(2),
    );
    eprintln!(
        "lb2 killed: the router withdrew it after {:?} (hold time {HOLD:?})",
        t0.elapsed()
    );
    assert!(
        withdrawn <= HOLD + Duration::from_millis(500),
        "{withdrawn:?}"
    );
    // The flows lb2 carried stalled until then; TCP retransmits them to lb1 and lb3,
    // which never saw them and send them on to the same servers.
    std::thread::sleep(Duration::from_secs(8));
    let r = client.all_alive(300);
    eprintln!("after lb2's death: {r}");
    let taken: u64 = ["lb1", "lb3"]
        .iter()
        .map(|lb| metric(&topo, lb, "wvs_unknown_flows_total"))
        .sum();
    assert!(
        taken >= started[1],
        "lb1 and lb3 took lb2's {} flows: {taken}",
        started[1]
    );

    // New connections go to the two that remain.
    let before: Vec<u64> = ["lb1", "lb3"]
        .iter()
        .map(|lb| syn_started(&topo, lb))
        .collect();
    client.open(60);
    let after: Vec<u64> = ["lb1", "lb3"]
        .iter()
        .map(|lb| syn_started(&topo, lb))
        .collect();
    let new: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!("60 new connections over lb1 and lb3: {new:?}");
    assert_eq!(new.iter().sum::<u64>(), 60);
    assert!(new.iter().all(|&n| n > 0), "{new:?}");

    // lb2 comes back (an empty table) and takes its share again, breaking nothing.
    topo.script("alive lb2");
    let t0 = Instant::now();
    lbs[1] = director(&topo, "lb2", &states[1]);
    wait_hops(&topo, &all, Duration::from_secs(30));
    eprintln!("lb2 back in the route after {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    client.all_alive(360);
    let back = syn_started(&topo, "lb2");
    client.open(60);
    let r = client.all_alive(420);
    let lb2_new = syn_started(&topo, "lb2") - back;
    eprintln!(
        "lb2 started {lb2_new} of 60 new connections and took {} moved flows; {r}",
        metric(&topo, "lb2", "wvs_unknown_flows_total")
    );
    assert!(lb2_new > 0, "lb2 takes new connections again");
    drop(client);
    for (w, b) in lbs.iter_mut() {
        w.stop();
        let _ = b;
    }
}

#[test]
fn the_announcement_follows_the_servers_health_and_the_process() {
    let topo = Topo::ecmp("anno");
    let _rt = Bird::start(&topo, "rt", &example("bird-router.conf"));
    let state = topo.dir.join("state-lb1");
    let (mut w, _bird) = director(&topo, "lb1", &state);
    wait_hops(&topo, &["198.19.0.1"], Duration::from_secs(30));
    assert_eq!(
        topo.curl(&format!("http://{VIP}/")).trim().len(),
        3,
        "a server answers through the announced route"
    );

    // No server passes its check: withdrawn; one passes again: announced.
    let pids: Vec<String> = (1..=3)
        .map(|i| {
            std::fs::read_to_string(topo.dir.join(format!("rs{i}/nginx.pid"))).expect("nginx pid")
        })
        .collect();
    let t0 = Instant::now();
    for p in &pids {
        let _ = Command::new("kill").args(["-TERM", p.trim()]).status();
    }
    wait_hops(&topo, &[], Duration::from_secs(15));
    eprintln!("no server up: withdrawn after {:?}", t0.elapsed());
    w.wait_log(
        "withdrawn: no server takes connections",
        Duration::from_secs(5),
    );
    topo.script(&format!("nginx {}", topo.dir.display()));
    let t0 = Instant::now();
    wait_hops(&topo, &["198.19.0.1"], Duration::from_secs(15));
    eprintln!("servers up again: announced after {:?}", t0.elapsed());

    // wvs killed (BIRD goes on): its device goes with it, and BIRD withdraws at once.
    let t0 = Instant::now();
    w.kill9();
    let t = wait_hops(&topo, &[], Duration::from_secs(2));
    eprintln!(
        "wvs killed with SIGKILL: withdrawn after {:?}",
        t0.elapsed()
    );
    assert!(t < Duration::from_secs(1), "{t:?}");

    // Started again, announced; stopped (SIGTERM), withdrawn before it exits.
    let mut w = Wvs::start_in(
        &topo,
        "lb1",
        Some(&example("wvs.toml")),
        &[
            "--announce",
            "wvs-vip",
            "--node",
            "lb1",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    wait_hops(&topo, &["198.19.0.1"], Duration::from_secs(15));
    assert!(w.stop().success());
    wait_hops(&topo, &[], Duration::from_secs(2));
    assert!(
        std::fs::read_to_string(&w.log)
            .unwrap_or_default()
            .contains("the announced VIPs are withdrawn")
    );
}

/// Where the scheduler is not consistent (rr), the directors keep each other's connections
/// with IPVS's sync daemon instead: each runs a master and a backup on one multicast group,
/// so each knows every connection and a flow moved to it goes on as it was.
#[test]
fn without_a_consistent_scheduler_the_sync_daemon_keeps_the_connections() {
    let topo = Topo::ecmp("esync");
    let config = topo.dir.join("wvs-rr-sync.toml");
    let mh = std::fs::read_to_string(example("wvs.toml")).expect("examples/ecmp/wvs.toml");
    let rr = mh
        .replace("scheduler = \"mh\"", "scheduler = \"rr\"")
        .replace("flags = [\"mh-port\", \"mh-fallback\"]", "")
        .replace("sloppy_tcp = true", "sloppy_tcp = false");
    assert!(
        rr.contains("scheduler = \"rr\"") && rr.contains("sloppy_tcp = false"),
        "{rr}"
    );
    std::fs::write(
        &config,
        format!(
            "{rr}\n[[daemon]]\nstate = \"master\"\nmcast_interface = \"s0\"\nsyncid = 1\n\n\
             [[daemon]]\nstate = \"backup\"\nmcast_interface = \"s0\"\nsyncid = 1\n"
        ),
    )
    .expect("config");
    let _rt = Bird::start(&topo, "rt", &example("bird-router.conf"));
    let mut lbs: Vec<(Wvs, Bird)> = (1..=3)
        .map(|i| {
            let lb = format!("lb{i}");
            let w = Wvs::start_in(
                &topo,
                &lb,
                Some(&config),
                &["--announce", "wvs-vip", "--node", &lb],
            );
            (w, Bird::start(&topo, &lb, &example("bird-director.conf")))
        })
        .collect();
    wait_hops(
        &topo,
        &["198.19.0.1", "198.19.0.2", "198.19.0.3"],
        Duration::from_secs(30),
    );
    let mut client = Client::start(&topo);
    client.open(90);
    // Every connection passes the sync threshold (its third packet) and the masters send
    // their last partial message within 2 s.
    std::thread::sleep(Duration::from_secs(4));
    client.all_alive(90);
    let started = syn_started(&topo, "lb2");
    assert!(started > 0, "lb2 carries some");
    topo.script("dead lb2");
    lbs[1].0.kill9();
    lbs[1].1.kill9();
    wait_hops(
        &topo,
        &["198.19.0.1", "198.19.0.3"],
        HOLD + Duration::from_secs(2),
    );
    std::thread::sleep(Duration::from_secs(8));
    let r = client.all_alive(90);
    eprintln!("rr with sync, lb2 (carrying {started}) killed: {r}");
    for lb in ["lb1", "lb3"] {
        assert_eq!(
            metric(&topo, lb, "wvs_unknown_flows_total"),
            0,
            "{lb} knew them all"
        );
    }
    drop(client);
    for lb in [0, 2] {
        lbs[lb].0.stop();
    }
}
