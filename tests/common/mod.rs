//! The end-to-end harness: a topology of network namespaces with real nginx and socat, and
//! the real `wvs` binary in the balancer's namespace. Everything a test creates is removed by
//! guards on drop, also when the test fails, and every name is unique so tests run in
//! parallel.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const VIP: &str = "198.18.100.1";
/// The IPv6 virtual address of the dual-stack topology (scripts/topology.sh).
pub const VIP6: &str = "2001:db8:18:100::1";

/// The client of [`Topo::udp_ask`]: a socket connected to `VIP PORT` from port `SPORT`
/// (SO_REUSEADDR, as the previous question's socket may linger), asking "who" until an
/// answer comes (0.5, 1, 2, 3, 5 and 8 s apart), which it prints.
const UDP_ASK: &str = r#"
import socket, sys
v6 = ":" in sys.argv[1]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if v6 else "0.0.0.0", int(sys.argv[3])))
s.connect((sys.argv[1], int(sys.argv[2])))
for wait in (0.5, 1, 2, 3, 5, 8):
    s.send(b"who\n")
    s.settimeout(wait)
    try:
        print(s.recv(2048).decode(errors="replace").strip())
        break
    except (socket.timeout, ConnectionRefusedError):
        pass
"#;

/// An address as a URL's host: an IPv6 one in brackets.
pub fn url_host(a: &str) -> String {
    if a.contains(':') {
        format!("[{a}]")
    } else {
        a.to_string()
    }
}

pub const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/topology.sh");

/// The two-director topology's script (`Topo::pair`).
pub const PAIR_TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pair.sh");
/// Three directors behind a router's ECMP (scripts/ecmp.sh).
pub const ECMP_TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ecmp.sh");
/// The `wvs` binary the tests run: `$WVS_BIN` when set (scripts/test.sh sets it to the
/// release binary, so that the flood and load tests measure what users run and one build
/// serves the end-to-end tests, the demo and the oracle), else the debug binary cargo
/// built beside the tests.
pub fn wvs_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var("WVS_BIN") {
        Ok(p) if !p.is_empty() => {
            assert!(
                Path::new(&p).is_file(),
                "WVS_BIN={p} is not a file (cargo build --release -p wvs)"
            );
            eprintln!("e2e: running {p} (WVS_BIN)");
            p
        }
        _ => env!("CARGO_BIN_EXE_wvs").to_string(),
    })
}
/// The example configuration: the demo topology's services (TCP 80 and UDP 9000, rr).
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/wvs.toml");

/// [`EXAMPLE`] as a path.
pub fn example() -> &'static Path {
    Path::new(EXAMPLE)
}

/// Three real servers behind one balancer; see scripts/topology.sh.
pub struct Topo {
    pub prefix: String,
    pub dir: PathBuf,
    /// One-armed: client, router, and the balancer beside the servers on the switch.
    pub onearm: bool,
    /// Two directors (scripts/pair.sh).
    pub pair: bool,
    /// Three directors behind a router's ECMP (scripts/ecmp.sh).
    pub ecmp: bool,
}

/// How the topology is built (`topology.sh up PREFIX [onearm|pair]`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    TwoArmed,
    OneArm,
    Pair,
    Ecmp,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Topo {
    /// Build the namespaces and start nginx (with a 100 MB file if `big`) and socat.
    pub fn new(name: &str, big: bool) -> Self {
        Self::build(name, big, Shape::TwoArmed)
    }

    /// Two directors (lb1 holding the floating gateways, lb2 beside it) in front of the
    /// servers, as an LVS pair: see scripts/topology.sh.
    pub fn pair(name: &str, big: bool) -> Self {
        Self::build(name, big, Shape::Pair)
    }

    /// The one-armed topology (DR and TUN as they are deployed): the client behind a
    /// router, the balancer on the servers' switch, the servers answering via the router.
    pub fn onearm(name: &str, big: bool) -> Self {
        Self::build(name, big, Shape::OneArm)
    }

    /// Three one-armed directors (lb1..lb3) behind a router (rt) that spreads the VIPs'
    /// flows over them, the real servers set up for direct routing (the VIPs on their
    /// loopback): scripts/ecmp.sh. No route to the VIPs until the directors announce them.
    pub fn ecmp(name: &str) -> Self {
        let t = Self::build(name, false, Shape::Ecmp);
        t.script("dr");
        t
    }

    fn build(name: &str, big: bool, shape: Shape) -> Self {
        let onearm = matches!(shape, Shape::OneArm | Shape::Ecmp);
        let prefix = format!("w{}{:04x}", name, rand_u16());
        let dir = std::env::temp_dir().join(format!("wvs-e2e-{prefix}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // Built before anything it owns, so that a failure half-way still cleans up.
        let t = Topo {
            prefix,
            dir,
            onearm,
            pair: shape == Shape::Pair,
            ecmp: shape == Shape::Ecmp,
        };
        let mut up = Command::new("bash");
        if t.pair {
            up.args([PAIR_TOPOLOGY, "up", &t.prefix]);
        } else if t.ecmp {
            up.args([ECMP_TOPOLOGY, "up", &t.prefix]);
        } else {
            up.args([TOPOLOGY, "up", &t.prefix]);
        }
        if shape == Shape::OneArm {
            up.arg("onearm");
        }
        run(&mut up);
        let mut nginx = Command::new("bash");
        nginx.args([TOPOLOGY, "nginx", &t.prefix]).arg(&t.dir);
        if big {
            nginx.arg("big");
        }
        run(&mut nginx);
        // socat runs in the background of the script's shell; it stays in its namespace.
        run(Command::new("bash")
            .args([TOPOLOGY, "socat", &t.prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null()));
        t
    }

    /// Run a topology.sh command on this topology (pair.sh's `takeover` and `release` on
    /// a pair). Its output is not kept: what it starts in the background (socat) would
    /// hold a pipe open.
    pub fn script(&self, cmd: &str) {
        let mut words = cmd.split(' ');
        let verb = words.next().unwrap_or_default();
        let script = if self.pair && ["takeover", "release"].contains(&verb) {
            PAIR_TOPOLOGY
        } else if self.ecmp && ["dead", "alive"].contains(&verb) {
            ECMP_TOPOLOGY
        } else {
            TOPOLOGY
        };
        let st = Command::new("bash")
            .args([script, verb, &self.prefix])
            .args(words)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("bash");
        assert!(st.success(), "topology.sh {cmd} failed");
    }

    pub fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Run a command in namespace `n` and return its output (whatever its exit status).
    pub fn exec(&self, n: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(n)])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Start tshark on `iface` of namespace `n`, writing what `filter` (a capture filter)
    /// lets through into `pcap`, with `more` arguments (how it stops: `-a duration:N`,
    /// `-c N`), and return once it captures: tshark writes the file's header then, and a
    /// fixed wait let a loaded machine's capture start after the traffic had begun (an SCTP
    /// test's first association missing from it in CI). Its error output is piped.
    pub fn tshark(&self, n: &str, iface: &str, filter: &str, more: &[&str], pcap: &Path) -> Child {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(n), "tshark", "-q", "-i", iface])
            .args(["-f", filter])
            .args(more)
            .arg("-w")
            .arg(pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::fs::metadata(pcap).map_or(0, |m| m.len()) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        child
    }

    /// Run `wvs run --iface c0 --iface s0 ARGS` in the balancer's namespace when it is
    /// meant to refuse to start: it must exit with status 1 within 20 s; its error output.
    /// Its state directory is the test's own unless ARGS name one: a state saved in the
    /// default one (/var/lib/wvs, a real installation's) would be restored instead.
    pub fn wvs_refused(&self, args: &[&std::ffi::OsStr]) -> String {
        let state = self.dir.join("refused-state");
        let own_state = !args.iter().any(|a| *a == "--state-dir");
        let out = Command::new("timeout")
            .args([
                "20",
                "ip",
                "netns",
                "exec",
                &self.ns("lb"),
                wvs_bin(),
                "run",
            ])
            .args(["--iface", "c0", "--iface", "s0"])
            .args(own_state.then_some("--state-dir"))
            .args(own_state.then_some(&state))
            .args(args)
            .output()
            .expect("wvs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        err
    }

    /// Download `http://VIP/big` from the client (its first `bytes` bytes, or all) into
    /// the test's directory and return what arrived.
    pub fn download_big(&self, bytes: Option<usize>) -> Vec<u8> {
        self.download_big_from(VIP, bytes)
    }

    /// As [`Topo::download_big`], from virtual address `vip` (an IPv6 one bare, without
    /// brackets).
    pub fn download_big_from(&self, vip: &str, bytes: Option<usize>) -> Vec<u8> {
        let got = self.dir.join("got");
        let range = bytes.map(|n| format!("0-{}", n - 1));
        let mut args = vec![
            "curl",
            "-sS",
            "-m",
            "120",
            "-o",
            got.to_str().expect("path"),
        ];
        if let Some(r) = &range {
            args.extend(["-r", r.as_str()]);
        }
        let url = format!("http://{}/big", url_host(vip));
        args.push(&url);
        let out = self.exec("cli", &args);
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&got).expect("downloaded file")
    }

    /// GET a URL from the client; returns the body.
    pub fn curl(&self, url: &str) -> String {
        let out = self.exec("cli", &["curl", "-sS", "-m", "5", url]);
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Send one datagram to VIP:9000 from the client's UDP port `sport` on a connected UDP
    /// socket and return the reply. A connected socket only accepts datagrams from the address
    /// it is connected to, so a reply at all proves that it came from the VIP, not from a real
    /// server. The port is the caller's: an ephemeral port that happened to repeat would
    /// rightly reuse its UDP connection (and its real server) for 300 s.
    pub fn udp_ask(&self, sport: u16) -> String {
        self.udp_ask_to(VIP, sport)
    }

    /// As [`Topo::udp_ask`], to virtual address `vip` (IPv4 or IPv6).
    pub fn udp_ask_to(&self, vip: &str, sport: u16) -> String {
        // UDP may lose a datagram when parallel tests load the machine (the per-CPU backlog
        // of veth devices is shared by every namespace), and a loaded machine may answer
        // late (the responders fork a shell per datagram; a tunnel end runs in user space):
        // ask again from the same socket after 0.5, 1, 2, 3, 5 and 8 s, returning on the
        // first answer. A repeat belongs to the same connection, so it reaches the same
        // server and changes no tally. (socat's client gives an answer only its fixed 0.5 s
        // after the question, and a fresh socat per attempt had a busy machine miss all
        // three. With a busy loop on each core, the IPIP and GRE tests of one run in three
        // each had one of their 30 questions unanswered for all of 6.5 s, likely while a
        // parallel test's 20 MiB download went through a user-space tunnel end and veth's
        // per-CPU backlog, shared by every namespace, dropped while softirqs waited for a
        // CPU: the last two waits outlast such a spell.)
        let out = self.exec(
            "cli",
            &["python3", "-c", UDP_ASK, vip, "9000", &sport.to_string()],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The tally of `n` answers spread evenly over rs1, rs2 and rs3.
    pub fn even(n: usize) -> Vec<(String, usize)> {
        ["rs1", "rs2", "rs3"]
            .iter()
            .map(|s| (s.to_string(), n / 3))
            .collect()
    }

    /// Count answers by body.
    pub fn tally(answers: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for a in answers {
            *m.entry(a).or_insert(0) += 1;
        }
        m
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        let script = if self.pair {
            PAIR_TOPOLOGY
        } else if self.ecmp {
            ECMP_TOPOLOGY
        } else {
            TOPOLOGY
        };
        let _ = Command::new("bash")
            .args([script, "down", &self.prefix])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `wvs run`'s arguments for a backend as the tests name it: `ring`, or `ring+tc` for
/// `--io ring --offload tc`.
pub fn io_args(io: &str) -> Vec<&str> {
    match io.split_once('+') {
        Some((io, offload)) => vec!["--io", io, "--offload", offload],
        None => vec!["--io", io],
    }
}

/// A configuration with iperf3's two services on the VIP's port 5201, UDP (its test) and
/// TCP (its control connection), each to rs1's port 5201; written in `topo`'s directory.
pub fn iperf3_config(topo: &Topo) -> PathBuf {
    let cfg = topo.dir.join("iperf3.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[service]]\nprotocol = \"udp\"\naddress = \"{VIP}:5201\"\nscheduler = \"rr\"\n\
             [[service.real]]\naddress = \"198.19.0.11:5201\"\n\
             [[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:5201\"\nscheduler = \"rr\"\n\
             [[service.real]]\naddress = \"198.19.0.11:5201\"\n"
        ),
    )
    .expect("config");
    cfg
}

/// `--offload MODE` from `WVS_TEST_OFFLOAD` (`off`: scripts/test.sh's pass with the flow
/// offload forced off; `tc`: on, refusing to start without it), unless the test names an
/// offload itself. Unset, wvs runs on its default (the offload where it works).
pub fn offload_args(extra: &[&str]) -> Vec<String> {
    match std::env::var("WVS_TEST_OFFLOAD") {
        Ok(mode) if !mode.is_empty() && !extra.contains(&"--offload") && !xdp(extra) => {
            vec!["--offload".into(), mode]
        }
        _ => Vec::new(),
    }
}

fn xdp(extra: &[&str]) -> bool {
    extra.windows(2).any(|w| w == ["--io", "xdp"])
}

/// Whether `wvs run` with these arguments offloads flows: `--offload tc` named (or from
/// [`offload_args`]), or none named and the default's (not under `--io xdp`).
pub fn offloads(extra: &[&str]) -> bool {
    let mut all: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    all.extend(offload_args(extra));
    match all.iter().position(|a| a == "--offload") {
        Some(i) => all.get(i + 1).is_some_and(|m| m == "tc"),
        None => !xdp(extra),
    }
}

/// The real `wvs` binary running in the balancer's namespace; stopped (SIGTERM, then SIGKILL)
/// on drop.
pub struct Wvs {
    child: Option<Child>,
    pub log: PathBuf,
    /// Its state directory (the API token is in it).
    pub state_dir: PathBuf,
    /// The balancer's namespace.
    pub ns: String,
}

impl Wvs {
    /// Start `wvs run --iface c0 --iface s0 [--config FILE]` (one-armed: `--iface s0`) and
    /// wait until it is ready.
    pub fn start(topo: &Topo, config: Option<&Path>) -> Self {
        Self::start_with(topo, config, &[])
    }

    /// As [`Wvs::start`], on I/O backend `io` (`--io`); `ring+tc` is `--io ring --offload
    /// tc`.
    pub fn start_io(topo: &Topo, config: Option<&Path>, io: &str) -> Self {
        Self::start_with(topo, config, &io_args(io))
    }

    /// As [`Wvs::start`], with more arguments.
    pub fn start_with(topo: &Topo, config: Option<&Path>, extra: &[&str]) -> Self {
        Self::start_with_env(topo, config, extra, &[])
    }

    /// As [`Wvs::start_with`], with environment variables.
    pub fn start_with_env(
        topo: &Topo,
        config: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_wrapped(topo, config, extra, env, &[])
    }

    /// As [`Wvs::start_with_env`], run through `wrapper` (e.g. `setpriv ARGS`).
    pub fn start_wrapped(
        topo: &Topo,
        config: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Self {
        Self::start_full(topo, "lb", config, extra, env, wrapper)
    }

    /// As [`Wvs::start_with`], in director `lb` (`lb1` or `lb2` of [`Topo::pair`]).
    pub fn start_in(topo: &Topo, lb: &str, config: Option<&Path>, extra: &[&str]) -> Self {
        Self::start_full(topo, lb, config, extra, &[], &[])
    }

    fn start_full(
        topo: &Topo,
        lb: &str,
        config: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Self {
        let log = topo.dir.join(format!("wvs-{}.log", rand_u16()));
        let f = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.ns(lb)])
            .args(wrapper)
            .args([wvs_bin(), "run"]);
        let ifaces: &[&str] = if topo.onearm { &["s0"] } else { &["c0", "s0"] };
        for i in ifaces {
            cmd.args(["--iface", i]);
        }
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        // Each run keeps its state in the test's directory unless the test names one, so
        // that no test restores another's configuration from the default state directory.
        let state_dir = match extra.iter().position(|a| *a == "--state-dir") {
            Some(i) => PathBuf::from(extra[i + 1]),
            None => {
                let d = topo.dir.join(format!("state-{}", rand_u16()));
                cmd.arg("--state-dir").arg(&d);
                d
            }
        };
        cmd.args(extra);
        cmd.args(offload_args(extra));
        cmd.env("WVS_LOG", "info").stdout(Stdio::null()).stderr(f);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start wvs");
        let w = Wvs {
            child: Some(child),
            log,
            state_dir,
            ns: topo.ns(lb),
        };
        w.wait_log("ready", Duration::from_secs(20));
        w
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log has `n` lines containing `needle`.
    pub fn wait_log_n(&self, needle: &str, n: usize, timeout: Duration) {
        let t0 = Instant::now();
        while self.log_text().matches(needle).count() < n {
            assert!(
                t0.elapsed() < timeout,
                "wvs did not log {needle:?} in time:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_log_n(needle, 1, timeout);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }

    /// Kill it (SIGKILL: no clean-up of its own) and wait for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stop with SIGTERM and return the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let t0 = Instant::now();
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("wvs did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Wvs {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ (std::process::id() << 8) ^ (t >> 16)) as u16
}

impl Wvs {
    /// Run `wvs adm ARGS` in the balancer's namespace with the daemon's token; returns the
    /// exit code, stdout and stderr.
    pub fn adm(&self, args: &[&str]) -> (i32, String, String) {
        self.adm_stdin(args, "")
    }

    /// As [`Wvs::adm`], with `input` on stdin.
    pub fn adm_stdin(&self, args: &[&str], input: &str) -> (i32, String, String) {
        use std::io::Write;
        let token = self.state_dir.join("api-token");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, wvs_bin(), "adm", "--token-file"])
            .arg(&token)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wvs adm");
        if let Some(mut i) = child.stdin.take() {
            i.write_all(input.as_bytes()).expect("stdin");
        }
        let out = child.wait_with_output().expect("wvs adm");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `wvs adm ARGS`, which must succeed; returns its stdout.
    pub fn adm_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.adm(args);
        assert_eq!(code, 0, "wvs adm {args:?} failed: {err}");
        out
    }

    /// The API token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("api-token"))
            .expect("token file")
            .trim()
            .to_string()
    }

    /// An API request with curl in the balancer's namespace: returns (status, body).
    /// `auth` is the Authorization header's value, if any.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        content_type: Option<&str>,
        body: Option<&Path>,
    ) -> (u16, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "curl", "-s", "-X", method])
            .args(["-w", "\n%{http_code}"]);
        if let Some(a) = auth {
            cmd.args(["-H", &format!("Authorization: {a}")]);
        }
        if let Some(c) = content_type {
            cmd.args(["-H", &format!("Content-Type: {c}")]);
        }
        if let Some(b) = body {
            cmd.arg("--data-binary").arg(format!("@{}", b.display()));
        }
        cmd.arg(format!("http://127.0.0.1:9080{path}"));
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// GET a JSON document from the API.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let auth = format!("Bearer {}", self.token());
        let (code, body) = self.api("GET", path, Some(&auth), None, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Ask for the counters (SIGUSR1) and return the numbers of the stats line it logs.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let before = self.log_text().matches(" stats").count();
        self.signal("USR1");
        self.wait_log_n(" stats", before + 1, Duration::from_secs(5));
        let log = self.log_text();
        let line = log
            .lines()
            .rfind(|l| l.contains(" stats"))
            .unwrap_or_default()
            .to_string();
        line.split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.trim_matches('"').parse().ok()?))
            })
            .collect()
    }

    /// The datapath's drop count for `reason`, from `/metrics`.
    pub fn drops(&self, reason: &str) -> u64 {
        let (code, text) = self.api("GET", "/metrics", None, None, None);
        assert_eq!(code, 200, "/metrics: {text}");
        let want = format!("wvs_drops_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(want.as_str())?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    }

    /// Rewrite the configuration file, send SIGHUP and wait until wvs has reloaded it.
    pub fn reload(&self, path: &Path, config: &str) {
        let before = self.log_text().matches("configuration reloaded").count();
        std::fs::write(path, config).expect("config");
        self.signal("HUP");
        self.wait_log_n(
            "configuration reloaded",
            before + 1,
            Duration::from_secs(10),
        );
    }
}
