//! End to end over IPv6, in the dual-stack topology (scripts/topology.sh: 2001:db8::/32
//! inside the namespaces): NAT66, full NAT and direct routing with real nginx and socat,
//! IPv4 and IPv6 services side by side, and `wvs adm` with bracketed addresses and `-6`.
//! Needs root, iproute2, nftables, nginx, socat and curl (scripts/setup.sh installs them).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Topo, VIP, VIP6, Wvs};

/// The real servers' IPv6 addresses.
const RS6: [&str; 3] = ["2001:db8:19::11", "2001:db8:19::12", "2001:db8:19::13"];

/// TCP [VIP6]:80 and UDP [VIP6]:9000 over rs1..rs3 by rr, each real server's lines
/// `method`, and `extra` lines in each service.
fn config(topo: &Topo, method: &str, extra: &str) -> std::path::PathBuf {
    let mut text = String::new();
    for (proto, port) in [("tcp", 80), ("udp", 9000)] {
        text.push_str(&format!(
            "[[service]]\nprotocol = \"{proto}\"\naddress = \"[{VIP6}]:{port}\"\nscheduler = \"rr\"\n{extra}\n"
        ));
        for rs in RS6 {
            text.push_str(&format!(
                "[[service.real]]\naddress = \"[{rs}]:{port}\"\n{method}\n"
            ));
        }
    }
    let path = topo.dir.join("v6.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// 30 requests with `curl -6`, served 10/10/10; 30 UDP questions from distinct ports, the
/// same, each answered from the VIP (a connected socket takes nothing else).
fn serves_evenly(topo: &Topo) {
    let url = format!("http://[{VIP6}]/");
    let out = |_| {
        let o = topo.exec("cli", &["curl", "-6", "-sS", "-m", "5", &url]);
        assert!(
            o.status.success(),
            "curl -6 {url}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let t = Topo::tally((0..30).map(out));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        Topo::even(30),
        "TCP spread"
    );
    let u = Topo::tally((0..30).map(|i| topo.udp_ask_to(VIP6, 42000 + i)));
    assert_eq!(
        u.into_iter().collect::<Vec<_>>(),
        Topo::even(30),
        "UDP spread"
    );
}

/// A download through the IPv6 VIP (`bytes` of it, or all 100 MB), byte for byte the
/// served file.
fn downloads_exactly(topo: &Topo, bytes: Option<usize>) {
    let have = topo.download_big_from(VIP6, bytes);
    let want = std::fs::read(topo.dir.join("big")).expect("source file");
    let n = bytes.unwrap_or(want.len());
    assert_eq!(have.len(), n);
    assert!(
        have[..] == want[..n],
        "the downloaded bytes differ from the served file"
    );
}

macro_rules! on_backends {
    ($body:ident: $($name:ident => $io:literal),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $body($io)
            }
        )+
    };
}

on_backends!(nat66_serves_evenly_and_downloads_100_mb_exactly:
    nat66_serves_evenly_and_downloads_100_mb_exactly_ring => "ring",
    nat66_serves_evenly_and_downloads_100_mb_exactly_uring => "uring",
    nat66_serves_evenly_and_downloads_100_mb_exactly_xdp => "xdp",
);

fn nat66_serves_evenly_and_downloads_100_mb_exactly(io: &str) {
    let topo = Topo::new(&format!("n6{io}"), true);
    let wvs = Wvs::start_io(&topo, Some(&config(&topo, "", "")), io);
    serves_evenly(&topo);
    downloads_exactly(&topo, None);
    let listing = wvs.adm_ok(&["-L", "-n"]);
    for want in [
        format!("TCP  [{VIP6}]:80 rr\n"),
        format!("  -> {:<28} Masq    1      ", "[2001:db8:19::11]:80"),
    ] {
        assert!(listing.contains(&want), "{want:?} in {listing}");
    }
    let saved = wvs.adm_ok(&["-S", "-n"]);
    assert!(
        saved.contains(&format!(
            "-a -u [{VIP6}]:9000 -r [2001:db8:19::12]:9000 -m -w 1\n"
        )),
        "{saved}"
    );
    let conns = wvs.adm_ok(&["-L", "-n", "-c"]);
    assert!(
        conns.contains("UDP ") && conns.contains(&format!("[{VIP6}]:9000")),
        "{conns}"
    );
    // Nothing of it went to the kernel, nor was dropped for the family.
    assert_eq!(wvs.drops("family_mismatch"), 0);
}

#[test]
fn full_nat66_serves_servers_without_a_route_to_the_clients() {
    let topo = Topo::new("f6", true);
    for i in 1..=3 {
        let rs = format!("rs{i}");
        topo.exec(&rs, &["ip", "-6", "route", "del", "default"]);
        let out = topo.exec(&rs, &["ip", "-6", "route", "get", "2001:db8:18::2"]);
        assert!(
            !out.status.success(),
            "rs{i} still has a route to the client"
        );
    }
    topo.exec(
        "lb",
        &[
            "ip",
            "addr",
            "add",
            "2001:db8:19::100/64",
            "dev",
            "s0",
            "nodad",
        ],
    );
    let cfg = config(
        &topo,
        "forward = \"fullnat\"",
        "laddrs = [\"2001:db8:19::1\", \"2001:db8:19::100\"]",
    );
    let wvs = Wvs::start(&topo, Some(&cfg));
    serves_evenly(&topo);
    downloads_exactly(&topo, Some(20 << 20));
    let got = wvs.adm_ok(&["-G", "-t", &format!("[{VIP6}]:80")]);
    let mut total = 0;
    for addr in ["2001:db8:19::1", "2001:db8:19::100"] {
        let l = got
            .lines()
            .find(|l| l.split_whitespace().next() == Some(addr))
            .unwrap_or_else(|| panic!("no {addr} in {got}"));
        let n: u64 = l
            .split_whitespace()
            .nth(2)
            .expect("conns")
            .parse()
            .expect("n");
        assert!(n > 0, "no connection on {addr}: {got}");
        total += n;
    }
    assert_eq!(total, 31, "30 requests and the download: {got}");
    // Local addresses of the other family are refused by the first packet's family, not
    // used: an IPv4 one is kept in the list, and no connection takes it.
    wvs.adm_ok(&[
        "--add-laddr",
        "-t",
        &format!("[{VIP6}]:80"),
        "-z",
        "198.19.0.100",
    ]);
    serves_evenly(&topo);
    let got = wvs.adm_ok(&["-G", "-t", &format!("[{VIP6}]:80")]);
    let v4 = got
        .lines()
        .find(|l| l.split_whitespace().next() == Some("198.19.0.100"))
        .unwrap_or_else(|| panic!("no 198.19.0.100 in {got}"));
    assert_eq!(v4.split_whitespace().nth(2), Some("0"), "{got}");
}

#[test]
fn direct_routing66_serves_evenly_and_downloads_exactly() {
    let topo = Topo::onearm("d6", true);
    topo.script("dr");
    let wvs = Wvs::start(&topo, Some(&config(&topo, "forward = \"dr\"", "")));
    serves_evenly(&topo);
    downloads_exactly(&topo, Some(20 << 20));
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!(
            "  -> {:<28} Route   1      ",
            "[2001:db8:19::11]:80"
        )),
        "{listing}"
    );
}

#[test]
fn ipv4_and_ipv6_vips_side_by_side_and_edited_with_adm() {
    let topo = Topo::new("ds", false);
    let mut text = std::fs::read_to_string(config(&topo, "", "")).expect("v6");
    text.push_str(&format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n"
    ));
    for i in 1..=3 {
        text.push_str(&format!(
            "[[service.real]]\naddress = \"198.19.0.1{i}:80\"\n"
        ));
    }
    let cfg = topo.dir.join("ds.toml");
    std::fs::write(&cfg, text).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    // Interleaved: each family's round robin is its own.
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for _ in 0..30 {
        v4.push(topo.curl(&format!("http://{VIP}/")));
        v6.push(topo.curl(&format!("http://[{VIP6}]/")));
    }
    assert_eq!(
        Topo::tally(v4).into_iter().collect::<Vec<_>>(),
        Topo::even(30)
    );
    assert_eq!(
        Topo::tally(v6).into_iter().collect::<Vec<_>>(),
        Topo::even(30)
    );
    // ipvsadm's -6 (its fwmark services' family) is taken; the address says the family.
    let svc = format!("[{VIP6}]:8080");
    wvs.adm_ok(&["-6", "-A", "-t", &svc, "-s", "wlc", "-p", "60", "-M", "64"]);
    wvs.adm_ok(&["-a", "-t", &svc, "-r", "[2001:db8:19::11]:80", "-m"]);
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!("TCP  {svc} wlc persistent 60 mask 64\n")),
        "{listing}"
    );
    assert_eq!(
        topo.curl(&format!("http://{svc}/")),
        "rs1",
        "the new service serves"
    );
    // A real server of the other family is refused, as IPVS refuses it.
    let (code, _, err) = wvs.adm(&["-a", "-t", &svc, "-r", "198.19.0.12:80", "-m"]);
    assert_ne!(code, 0);
    assert!(err.contains("different address families"), "{err}");
    // An IPv6 prefix length is the granularity; a dotted netmask is not.
    let (code, _, err) = wvs.adm(&[
        "-E",
        "-t",
        &svc,
        "-s",
        "wlc",
        "-p",
        "60",
        "-M",
        "255.255.255.0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("prefix length"), "{err}");
}

/// Lower the MTU of `devs` (namespace, device) to IPv6's least, 1280.
fn mtu_1280(topo: &Topo, devs: &[(&str, &str)]) {
    for (ns, dev) in devs {
        let out = topo.exec(ns, &["ip", "link", "set", "dev", dev, "mtu", "1280"]);
        assert!(
            out.status.success(),
            "{ns} {dev}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Listeners on each real server's port 5001 (IPv6) that count what they receive.
struct Counters(Vec<std::process::Child>);

impl Drop for Counters {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

/// 20 MiB sent to [VIP6]:5001, where each real server counts what it received and
/// answers the count: what the client's socat prints.
fn upload_20_mib(topo: &Topo) -> String {
    use std::process::{Command, Stdio};
    let mut counters = Counters(Vec::new());
    for i in 1..=3 {
        let ns = topo.ns(&format!("rs{i}"));
        counters.0.push(
            Command::new("ip")
                .args(["netns", "exec", &ns, "socat"])
                .args(["TCP6-LISTEN:5001,reuseaddr,fork", "SYSTEM:wc -c"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat"),
        );
    }
    let file = topo.dir.join("up");
    std::fs::write(&file, vec![0x5au8; 20 << 20]).expect("upload file");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.ns("cli"), "timeout", "60"])
        .args(["socat", "-t", "10", "-"])
        .arg(format!("TCP6:[{VIP6}]:5001"))
        .stdin(std::fs::File::open(&file).expect("file"))
        .output()
        .expect("socat");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The servers' side has IPv6's least MTU, 1280 (the balancer's port and the switch's)
/// while the client's and the servers' own are 1500: the servers' MSS does not fit, the
/// client's 1500-byte packets would be lost without a word, and the upload completes only
/// because wvs answers Packet Too Big with 1280 and the client sends smaller ones. A
/// probe whose hop limit runs out at the balancer is answered time exceeded from the VIP.
#[test]
fn nat66_path_mtu_is_learned_from_packet_too_big_and_hop_limit_1_from_time_exceeded() {
    let topo = Topo::new("p6", false);
    mtu_1280(
        &topo,
        &[
            ("lb", "s0"),
            ("sw", "p0"),
            ("sw", "p1"),
            ("sw", "p2"),
            ("sw", "p3"),
        ],
    );
    let mut text = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"[{VIP6}]:5001\"\nscheduler = \"sh\"\n"
    );
    for rs in RS6 {
        text.push_str(&format!("[[service.real]]\naddress = \"[{rs}]:5001\"\n"));
    }
    text.push_str(&format!(
        "[[service]]\nprotocol = \"udp\"\naddress = \"[{VIP6}]:9000\"\nscheduler = \"rr\"\n\
         [[service.real]]\naddress = \"[{}]:9000\"\n",
        RS6[0]
    ));
    let cfg = topo.dir.join("mtu6.toml");
    std::fs::write(&cfg, text).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    assert_eq!(
        upload_20_mib(&topo),
        (20 << 20).to_string(),
        "all bytes arrived"
    );
    let s = wvs.stats();
    assert!(
        s.get("icmp_sent").copied().unwrap_or(0) >= 1,
        "no Packet Too Big sent: {s:?}"
    );
    let route = topo.exec("cli", &["ip", "-6", "route", "get", VIP6]);
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    assert!(
        route.contains("mtu 1280"),
        "the client learned the path MTU: {route}"
    );
    let out = topo.exec(
        "cli",
        &[
            "timeout",
            "20",
            "tracepath",
            "-n",
            "-m",
            "1",
            "-p",
            "9000",
            VIP6,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("1:") && l.contains(VIP6)),
        "tracepath: {text}"
    );
}

/// A datagram to a real server's port where nothing listens: the server's ICMPv6 port
/// unreachable reaches the client translated (from the VIP, quoting the datagram the
/// client sent to the VIP), so the client's connected socket is refused at once.
const REFUSED6: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(3)
for _ in range(3):
    s.send(b"anyone?")
    try:
        s.recv(100)
        print("answered")
        break
    except ConnectionRefusedError:
        print("refused")
        break
    except socket.timeout:
        pass
else:
    print("silence")
"#;

#[test]
fn a_real_server_s_port_unreachable_reaches_the_client_translated() {
    let topo = Topo::new("u6", false);
    let text = format!(
        "[[service]]\nprotocol = \"udp\"\naddress = \"[{VIP6}]:9009\"\nscheduler = \"rr\"\n\
         [[service.real]]\naddress = \"[{}]:9009\"\n",
        RS6[0]
    );
    let cfg = topo.dir.join("unreach6.toml");
    std::fs::write(&cfg, text).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let out = topo.exec("cli", &["python3", "-c", REFUSED6, VIP6, "9009"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "refused",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wvs.drops("icmp_no_conn"), 0);
}

/// The health of real server `real`, as the API reports it.
fn health(w: &Wvs, real: &str) -> serde_json::Value {
    let svcs = w.get_json("/api/v1/services");
    for s in svcs.as_array().cloned().unwrap_or_default() {
        for r in s["reals"].as_array().cloned().unwrap_or_default() {
            if r["address"] == real {
                return r;
            }
        }
    }
    panic!("no real server {real}: {svcs}");
}

/// Wait until `real`'s check state is `state`.
fn wait_state(w: &Wvs, real: &str, state: &str) {
    let t0 = std::time::Instant::now();
    while health(w, real)["health"]["state"] != state {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(8),
            "{real} not {state}: {}",
            health(w, real)
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// IPv6 servers are checked: NAT ones at their own address (an HTTP check, nginx stopped
/// on one), DR ones through the VIP as a client's packets go (one without the VIP on its
/// loopback is down though its own address answers).
#[test]
fn ipv6_servers_are_checked_nat_ones_directly_dr_ones_through_the_vip() {
    let topo = Topo::onearm("h6", false);
    topo.script("dr");
    let vip128 = format!("{VIP6}/128");
    let out = topo.exec("rs3", &["ip", "addr", "del", &vip128, "dev", "lo"]);
    assert!(out.status.success(), "{out:?}");
    let check = "check = { type = \"http\", path = \"/\", interval = 0.3, timeout = 0.5 }";
    let mut text = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"[{VIP6}]:80\"\nscheduler = \"rr\"\n{check}\n"
    );
    for rs in RS6 {
        text.push_str(&format!(
            "[[service.real]]\naddress = \"[{rs}]:80\"\nforward = \"dr\"\n"
        ));
    }
    let cfg = topo.dir.join("health6.toml");
    std::fs::write(&cfg, text).expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    for rs in &RS6[..2] {
        wait_state(&w, &format!("[{rs}]:80"), "up");
    }
    wait_state(&w, "[2001:db8:19::13]:80", "down");
    let own = topo.exec(
        "lb",
        &["curl", "-sS", "-m", "2", "http://[2001:db8:19::13]/"],
    );
    assert_eq!(
        String::from_utf8_lossy(&own.stdout).trim(),
        "rs3",
        "{own:?}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..9 {
        seen.insert(topo.curl(&format!("http://[{VIP6}]/")));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["rs1", "rs2"],
        "no client goes to the server without the VIP"
    );
    let out = topo.exec("rs3", &["ip", "addr", "add", &vip128, "dev", "lo", "nodad"]);
    assert!(out.status.success(), "{out:?}");
    wait_state(&w, "[2001:db8:19::13]:80", "up");
    drop(w);

    // NAT servers at their own addresses, on the two-armed topology.
    let topo = Topo::new("h6n", false);
    let mut text = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"[{VIP6}]:80\"\nscheduler = \"rr\"\n{check}\n"
    );
    for rs in RS6 {
        text.push_str(&format!("[[service.real]]\naddress = \"[{rs}]:80\"\n"));
    }
    let cfg = topo.dir.join("health6n.toml");
    std::fs::write(&cfg, text).expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    wait_state(&w, "[2001:db8:19::12]:80", "up");
    let conf = topo.dir.join("rs2/nginx.conf");
    let out = topo.exec(
        "rs2",
        &["nginx", "-c", conf.to_str().expect("path"), "-s", "stop"],
    );
    assert!(out.status.success(), "{out:?}");
    wait_state(&w, "[2001:db8:19::12]:80", "down");
    let t = Topo::tally((0..6).map(|_| topo.curl(&format!("http://[{VIP6}]/"))));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        [("rs1".to_string(), 3), ("rs3".to_string(), 3)]
    );
}

/// The user-space tunnel ends of tests/decap.py in each real server (the test kernel has
/// no ip6_tunnel nor fou), holding `vip`; stopped and reaped on drop, their counts read
/// by `finish`.
struct Ends(Vec<std::process::Child>);

impl Ends {
    fn start(topo: &Topo, kind: &str, vip: &str) -> Self {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/decap.py");
        let mut all = Ends(Vec::new());
        for i in 1..=3 {
            let mut c = std::process::Command::new("ip")
                .args(["netns", "exec", &topo.ns(&format!("rs{i}"))])
                .args(["python3", script, kind, vip])
                .env("DECAP_COUNT", topo.dir.join(format!("decap-rs{i}")))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("decap.py");
            let mut line = String::new();
            std::io::BufReader::new(c.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("decap.py output");
            assert_eq!(line.trim(), "ready", "decap.py rs{i} did not start");
            all.0.push(c);
        }
        // The VIP now exists on each server: UDP responders that answer from it.
        topo.script("vip_socat");
        all
    }

    /// Stop them; each one's count of packets taken apart and of malformed ones, and in
    /// all, of those whose inner checksum the client's kernel had left for the hardware
    /// (which only the flow offload sends: wvs's rings complete them).
    fn finish(mut self, topo: &Topo) -> (Vec<(u64, u64)>, u64) {
        self.stop();
        let mut partial = 0;
        let counts = (1..=3)
            .map(|i| {
                let c = std::fs::read_to_string(topo.dir.join(format!("decap-rs{i}")))
                    .unwrap_or_default();
                let mut it = c.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
                let took = (it.next().unwrap_or(0), it.next().unwrap_or(u64::MAX));
                partial += it.next().unwrap_or(0);
                took
            })
            .collect();
        (counts, partial)
    }

    fn stop(&mut self) {
        for mut c in self.0.drain(..) {
            let _ = std::process::Command::new("kill")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Ends {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serve through a tunnel over IPv6 to IPv6 servers (`method`: the real servers' lines),
/// the tunnel ends `decap`, and check every one took packets apart, none malformed.
fn tunnel66(name: &str, method: &str, decap: &str) {
    let topo = Topo::onearm(name, true);
    let ends = Ends::start(&topo, decap, VIP6);
    let wvs = Wvs::start(&topo, Some(&config(&topo, method, "")));
    serves_evenly(&topo);
    downloads_exactly(&topo, Some(20 << 20));
    let (counts, carried) = ends.finish(&topo);
    for (i, (took, bad)) in counts.iter().enumerate() {
        assert_eq!(*bad, 0, "rs{}: malformed tunnel packets", i + 1);
        assert!(*took >= 10, "rs{} took {took} packets apart", i + 1);
    }
    // The download's connection carried by the offload (no outer checksum) or not.
    assert_eq!(
        carried > 0,
        common::offloads(&[]) && !method.contains("tun_csum"),
        "{counts:?}, {carried} carried"
    );
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!(
            "  -> {:<28} Tunnel  1      ",
            "[2001:db8:19::11]:80"
        )),
        "{listing}"
    );
}

#[test]
fn ipv6_in_ipv6_tunnel_serves_evenly_and_downloads_exactly() {
    tunnel66("t66", "forward = \"tunnel\"", "ipip6");
}

#[test]
fn gue_over_ipv6_serves_evenly_and_downloads_exactly() {
    tunnel66(
        "g66",
        "forward = \"tunnel\"\ntun_type = \"gue\"\ntun_port = 6080\ntun_csum = \"csum\"",
        "gue6:6080",
    );
}

/// An IPv4 service whose servers are reached through IPv6 tunnels (IPVS lets tunnel
/// servers be of the other family): IPv4 packets inside IPv6 (next header 4), a 20 MiB
/// download's too (the offload, where it runs, carries them: the outer header of the
/// other family).
#[test]
fn an_ipv4_service_is_served_through_ipv6_tunnels() {
    let topo = Topo::onearm("t46", true);
    let ends = Ends::start(&topo, "ipip6", VIP);
    let mut text =
        format!("[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n");
    for rs in RS6 {
        text.push_str(&format!(
            "[[service.real]]\naddress = \"[{rs}]:80\"\nforward = \"tunnel\"\n"
        ));
    }
    let cfg = topo.dir.join("t46.toml");
    std::fs::write(&cfg, text).expect("config");
    let _wvs = Wvs::start(&topo, Some(&cfg));
    let t = Topo::tally((0..30).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(t.into_iter().collect::<Vec<_>>(), Topo::even(30));
    let have = topo.download_big_from(VIP, Some(20 << 20));
    let want = std::fs::read(topo.dir.join("big")).expect("source file");
    assert!(have[..] == want[..20 << 20], "the downloaded bytes differ");
    let (counts, carried) = ends.finish(&topo);
    for (i, (took, bad)) in counts.iter().enumerate() {
        assert_eq!(*bad, 0, "rs{}: malformed tunnel packets", i + 1);
        assert!(*took >= 10, "rs{} took {took} packets apart", i + 1);
    }
    assert_eq!(
        carried > 0,
        common::offloads(&[]),
        "{counts:?}, {carried} carried"
    );
}

/// Full NAT between the families: a server's port unreachable reaches the client in the
/// client's family (ICMPv6 rebuilt as ICMP and the other way, RFC 7915), so the client's
/// connected socket is refused at once, as within one family.
#[test]
fn a_port_unreachable_crosses_the_families_in_full_nat() {
    let topo = Topo::new("x6u", false);
    let text = format!(
        "[[service]]\nprotocol = \"udp\"\naddress = \"{VIP}:9009\"\nscheduler = \"rr\"\n\
         laddrs = [\"2001:db8:19::1\"]\n\
         [[service.real]]\naddress = \"[{}]:9009\"\nforward = \"fullnat\"\n\
         [[service]]\nprotocol = \"udp\"\naddress = \"[{VIP6}]:9010\"\nscheduler = \"rr\"\n\
         laddrs = [\"198.19.0.1\"]\n\
         [[service.real]]\naddress = \"198.19.0.11:9010\"\nforward = \"fullnat\"\n",
        RS6[0]
    );
    let cfg = topo.dir.join("unreach46.toml");
    std::fs::write(&cfg, text).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    for (vip, port) in [(VIP, "9009"), (VIP6, "9010")] {
        let out = topo.exec("cli", &["python3", "-c", REFUSED6, vip, port]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "refused",
            "{vip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(wvs.drops("icmp_untranslatable"), 0);
    assert_eq!(wvs.drops("icmp_no_conn"), 0);
}

/// Full NAT between the families: an IPv4 service on IPv6 servers, through an IPv6 local
/// address (the servers see it, not the client), and the reverse.
#[test]
fn full_nat_serves_ipv4_clients_from_ipv6_servers_and_the_reverse() {
    let topo = Topo::new("x46", true);
    let mut text = String::new();
    for (proto, port) in [("tcp", 80), ("udp", 9000)] {
        text.push_str(&format!(
            "[[service]]\nprotocol = \"{proto}\"\naddress = \"{VIP}:{port}\"\nscheduler = \"rr\"\n\
             laddrs = [\"2001:db8:19::1\"]\n"
        ));
        for rs in RS6 {
            text.push_str(&format!(
                "[[service.real]]\naddress = \"[{rs}]:{port}\"\nforward = \"fullnat\"\n"
            ));
        }
    }
    text.push_str(&format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"[{VIP6}]:80\"\nscheduler = \"rr\"\n\
         laddrs = [\"198.19.0.1\"]\n"
    ));
    for i in 1..=3 {
        text.push_str(&format!(
            "[[service.real]]\naddress = \"198.19.0.1{i}:80\"\nforward = \"fullnat\"\n"
        ));
    }
    let cfg = topo.dir.join("x46.toml");
    std::fs::write(&cfg, text).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let t = Topo::tally((0..30).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        Topo::even(30),
        "IPv4 to IPv6"
    );
    let u = Topo::tally((0..30).map(|i| topo.udp_ask(43000 + i)));
    assert_eq!(u.into_iter().collect::<Vec<_>>(), Topo::even(30), "UDP");
    let have = topo.download_big(Some(20 << 20));
    let want = std::fs::read(topo.dir.join("big")).expect("source file");
    assert!(have[..] == want[..20 << 20], "the download differs");
    let t = Topo::tally((0..30).map(|_| topo.curl(&format!("http://[{VIP6}]/"))));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        Topo::even(30),
        "IPv6 to IPv4"
    );
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!(
            "  -> {:<28} FullNat 1      ",
            "[2001:db8:19::11]:80"
        )),
        "{listing}"
    );
}

/// A server that reads a PROXY v2 header and answers what it says: the family and the
/// client's address.
const PROXY_SERVER: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8000))
s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    h = b""
    while len(h) < 16:
        h += c.recv(16 - len(h))
    n = struct.unpack("!H", h[14:16])[0]
    body = b""
    while len(body) < n:
        body += c.recv(n - len(body))
    if h[13] == 0x11:
        addr = socket.inet_ntop(socket.AF_INET, body[0:4])
        port = struct.unpack("!H", body[8:10])[0]
        fam = "TCP4"
    else:
        addr = socket.inet_ntop(socket.AF_INET6, body[0:16])
        port = struct.unpack("!H", body[32:34])[0]
        fam = "TCP6"
    c.sendall(f"{fam} {addr} {port} via {peer[0]}\n".encode())
    c.close()
"#;

/// The client of the other family's address reaches an IPv6 server behind full NAT in the
/// PROXY v2 header (`proxy-v2` helper), while the connection comes from the local address.
#[test]
fn proxy_v2_tells_an_ipv6_server_its_ipv4_client() {
    use std::io::BufRead;
    let topo = Topo::new("pv6", false);
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("rs1"),
            "python3",
            "-c",
            PROXY_SERVER,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    let text = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:8000\"\nscheduler = \"rr\"\n\
         laddrs = [\"2001:db8:19::1\"]\nhelpers = [\"proxy-v2\"]\n\
         [[service.real]]\naddress = \"[{}]:8000\"\nforward = \"fullnat\"\n",
        RS6[0]
    );
    let cfg = topo.dir.join("pv6.toml");
    std::fs::write(&cfg, text).expect("config");
    let _wvs = Wvs::start(&topo, Some(&cfg));
    let out = topo.exec(
        "cli",
        &[
            "sh",
            "-c",
            &format!("printf x | timeout 10 socat -t 5 - TCP4:{VIP}:8000,sourceport=40123"),
        ],
    );
    let _ = std::process::Command::new("kill")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "TCP4 198.18.0.2 40123 via 2001:db8:19::1",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An IPv6 service through every view of the control plane: `wvs adm` with an address in a
/// form other than the canonical one (listed canonically), the REST API with the address in
/// its path and its filters, `/metrics` (node_exporter's labels, addresses unbracketed), the
/// connection listing, and the state file across a restart.
#[test]
fn ipv6_services_in_the_api_metrics_and_the_state_file_across_a_restart() {
    let topo = Topo::new("c6", false);
    let cfg = topo.dir.join("empty.toml");
    std::fs::write(&cfg, "").expect("config");
    let state_dir = topo.dir.join("state");
    let sd = state_dir.to_str().expect("path");
    let mut wvs = Wvs::start_with(&topo, Some(&cfg), &["--state-dir", sd]);
    let svc = format!("[{VIP6}]:80");
    wvs.adm_ok(&[
        "-A",
        "-t",
        "[2001:DB8:18:100:0:0:0:1]:80",
        "-s",
        "rr",
        "-p",
        "60",
        "-M",
        "64",
    ]);
    wvs.adm_ok(&["-a", "-t", &svc, "-r", "[2001:db8:19:0::11]:80", "-m"]);
    wvs.adm_ok(&["-a", "-t", &svc, "-r", "[2001:db8:19::12]:80", "-m"]);
    let listing = wvs.adm_ok(&["-S", "-n"]);
    assert!(
        listing.contains(&format!("-A -t {svc} -s rr -p 60 -M 64\n"))
            && listing.contains(&format!("-a -t {svc} -r [2001:db8:19::11]:80 -m -w 1\n")),
        "{listing}"
    );
    // Persistence by /64: one client, one server.
    let t = Topo::tally((0..10).map(|_| topo.curl(&format!("http://{svc}/"))));
    assert_eq!(t.len(), 1, "persistent: {t:?}");
    let server = t.keys().next().cloned().unwrap_or_default();
    let path = format!(
        "/api/v1/services/tcp/{}",
        svc.replace('[', "%5B")
            .replace(']', "%5D")
            .replace(':', "%3A")
    );
    let one = wvs.get_json(&path);
    assert_eq!(one["address"], svc.as_str(), "{one}");
    let filtered = wvs.get_json(&format!("/api/v1/services?service=tcp/{svc}"));
    assert_eq!(filtered.as_array().map(Vec::len), Some(1), "{filtered}");
    let conns = wvs.get_json(&format!("/api/v1/connections?service=tcp/{svc}"));
    let list = conns["connections"].as_array().cloned().unwrap_or_default();
    assert!(
        list.iter().any(|c| c["client"]
            .as_str()
            .is_some_and(|a| a.starts_with("[2001:db8:18::2]:"))
            && c["virtual_address"] == svc.as_str()),
        "{conns}"
    );
    let (code, metrics) = wvs.api("GET", "/metrics", None, None, None);
    assert_eq!(code, 200);
    let rs = if server == "rs1" { "11" } else { "12" };
    let row = format!(
        "node_ipvs_backend_connections_inactive{{local_address=\"{VIP6}\",local_port=\"80\",remote_address=\"2001:db8:19::{rs}\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"}} 10"
    );
    assert!(metrics.contains(&row), "{row} not in /metrics:\n{metrics}");
    assert!(wvs.stop().success());

    // The state file holds the canonical address; a restart from it alone serves the same.
    let saved = std::fs::read_to_string(state_dir.join("wvs-state.toml")).expect("state");
    assert!(saved.contains(&format!("address = \"{svc}\"")), "{saved}");
    assert!(saved.contains("netmask = \"64\""), "{saved}");
    let wvs = Wvs::start_with(&topo, None, &["--state-dir", sd]);
    assert_eq!(wvs.adm_ok(&["-S", "-n"]), listing, "restored as saved");
    assert_eq!(topo.curl(&format!("http://{svc}/")), server, "served again");
}
