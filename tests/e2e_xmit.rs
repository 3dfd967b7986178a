//! The forwarding methods end to end, on the one-armed topology DR and TUN are deployed
//! on (scripts/topology.sh `up PREFIX onearm`): the client behind a router, wvs with one
//! interface on the servers' switch, the servers answering the client through the router.
//!
//! - DR: the real servers hold the VIP on `lo` with `arp_ignore=1` / `arp_announce=2`, as
//!   LVS-DR servers are set up.
//! - TUN: the test kernel has no ipip, fou or gre modules (see /proc/config.gz), so each
//!   server runs `tests/decap.py`, a user-space tunnel end that takes wvs's packets apart
//!   and hands the inner packet to the kernel through a TUN device holding the VIP, as
//!   `tunl0` would. A capture of wvs's tunnel packets is decoded by tshark's dissectors.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use common::{Topo, VIP, Wvs};

/// 20 MiB of the served 100 MB file.
const DOWNLOAD: usize = 20 << 20;

/// A configuration with TCP VIP:80 and UDP VIP:9000 over rs1..rs3 by rr, each real server
/// with `method` (TOML lines of `[[service.real]]`).
fn config(topo: &Topo, method: &str) -> std::path::PathBuf {
    let mut text = String::new();
    for (proto, port) in [("tcp", 80), ("udp", 9000)] {
        text.push_str(&format!(
            "[[service]]\nprotocol = \"{proto}\"\naddress = \"{VIP}:{port}\"\nscheduler = \"rr\"\n"
        ));
        for i in 1..=3 {
            text.push_str(&format!(
                "[[service.real]]\naddress = \"198.19.0.1{i}\"\n{method}\n"
            ));
        }
    }
    let path = topo.dir.join("xmit.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// 30 requests, served 10/10/10; 30 UDP questions from distinct ports, the same.
fn serves_evenly(topo: &Topo) {
    let t = Topo::tally((0..30).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        Topo::even(30),
        "TCP spread"
    );
    let u = Topo::tally((0..30).map(|i| topo.udp_ask(41000 + i)));
    assert_eq!(
        u.into_iter().collect::<Vec<_>>(),
        Topo::even(30),
        "UDP spread"
    );
}

/// A 20 MiB download through the VIP, byte for byte the served file's first 20 MiB.
fn downloads_exactly(topo: &Topo) {
    let have = topo.download_big(Some(DOWNLOAD));
    let want = std::fs::read(topo.dir.join("big")).expect("source file");
    assert_eq!(have.len(), DOWNLOAD);
    assert!(
        have[..] == want[..DOWNLOAD],
        "the downloaded bytes differ from the served file"
    );
}

/// The services' counters: what came in from clients, and that nothing went out (the
/// servers' replies bypass wvs).
fn counted_inbound_only(wvs: &Wvs) {
    let v = wvs.get_json("/api/v1/services");
    for svc in v.as_array().expect("list") {
        let s = &svc["stats"];
        assert!(
            s["inpkts"].as_u64().unwrap_or(0) > 0,
            "nothing counted in: {svc}"
        );
        assert_eq!(s["outpkts"].as_u64(), Some(0), "replies counted: {svc}");
        assert_eq!(s["outbytes"].as_u64(), Some(0), "replies counted: {svc}");
    }
}

#[test]
fn direct_routing_serves_evenly_and_downloads_exactly() {
    let topo = Topo::onearm("dr", true);
    topo.script("dr");
    let wvs = Wvs::start(&topo, Some(&config(&topo, "forward = \"dr\"")));
    serves_evenly(&topo);
    downloads_exactly(&topo);
    counted_inbound_only(&wvs);
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!(
            "  -> {:<28} {:<7} 1      ",
            "198.19.0.11:80", "Route"
        )),
        "{listing}"
    );
    let saved = wvs.adm_ok(&["-S", "-n"]);
    assert!(
        saved.contains(&format!("-a -t {VIP}:80 -r 198.19.0.11:80 -g -w 1\n")),
        "{saved}"
    );
}

/// Processes in the real servers (tunnel ends, listeners); killed and reaped on drop.
struct Decaps(Vec<Child>);

impl Decaps {
    /// Stop them (they write their counts as they go) and return how many packets each
    /// took apart and how many were malformed.
    /// Each server's packets taken apart, malformed ones, and those whose inner checksum
    /// the client's kernel had left for the hardware (only the flow offload sends those).
    fn finish(mut self, topo: &Topo) -> Vec<(u64, u64, u64)> {
        self.stop();
        (1..=3)
            .map(|i| {
                let c = std::fs::read_to_string(topo.dir.join(format!("decap-rs{i}")))
                    .unwrap_or_default();
                let mut it = c.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
                (
                    it.next().unwrap_or(0),
                    it.next().unwrap_or(u64::MAX),
                    it.next().unwrap_or(0),
                )
            })
            .collect()
    }

    fn stop(&mut self) {
        for mut c in self.0.drain(..) {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Decaps {
    fn drop(&mut self) {
        self.stop();
    }
}

fn decaps(topo: &Topo, kind: &str) -> Decaps {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/decap.py");
    let mut all = Decaps(Vec::new());
    for i in 1..=3 {
        let mut c = Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.ns(&format!("rs{i}")),
                "python3",
                script,
                kind,
                VIP,
            ])
            .env("DECAP_COUNT", topo.dir.join(format!("decap-rs{i}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("decap.py");
        let mut line = String::new();
        BufReader::new(c.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("decap.py output");
        assert_eq!(line.trim(), "ready", "decap.py rs{i} did not start");
        all.0.push(c);
    }
    // The VIP now exists on each server: UDP responders that answer from it.
    topo.script("vip_socat");
    all
}

/// Capture up to 20 of wvs's tunnel packets (`filter`) where they enter the switch while
/// `traffic` runs; returns the capture file. (Not on wvs's own interface: frames sent with
/// `PACKET_QDISC_BYPASS` skip the taps of other packet sockets there.)
fn capture(topo: &Topo, filter: &str, traffic: impl FnOnce()) -> std::path::PathBuf {
    let pcap = topo.dir.join("tunnel.pcap");
    let mut dump = topo.tshark(
        "sw",
        "pl",
        filter,
        &["-c", "20", "-a", "duration:60"],
        &pcap,
    );
    let mut err = dump.stderr.take().expect("stderr");
    traffic();
    // 20 packets end it; fewer, an interrupt (which tshark ends on cleanly).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status();
    let st = dump.wait().expect("tshark");
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert!(st.success(), "tshark capture failed: {st}: {rest}");
    pcap
}

/// tshark's fields for each packet of `pcap`, checksums verified by its dissectors.
fn fields(pcap: &std::path::Path, names: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-r"]).arg(pcap);
    for pref in [
        "ip.check_checksum:TRUE",
        "udp.check_checksum:TRUE",
        "tcp.check_checksum:TRUE",
    ] {
        cmd.args(["-o", pref]);
    }
    cmd.args(["-T", "fields", "-E", "separator=|"]);
    for f in names {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark -r");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// Bring a tunnel up, serve through it (capturing), download through it, and check what
/// the tunnel ends saw. `check` gets the capture.
fn tunnel_case(
    name: &str,
    method: &str,
    decap: &str,
    filter: &str,
    check: impl Fn(&std::path::Path),
) {
    let topo = Topo::onearm(name, true);
    let ends = decaps(&topo, decap);
    let wvs = Wvs::start(&topo, Some(&config(&topo, method)));
    let pcap = capture(&topo, filter, || serves_evenly(&topo));
    check(&pcap);
    downloads_exactly(&topo);
    counted_inbound_only(&wvs);
    let counts = ends.finish(&topo);
    for (i, (took, bad, _)) in counts.iter().enumerate() {
        assert_eq!(*bad, 0, "rs{}: malformed tunnel packets", i + 1);
        assert!(*took >= 10, "rs{} took {took} packets apart", i + 1);
    }
    // The download's long connection was carried by the offload program (a tunnel without
    // an outer checksum): the client's packets came as its kernel sent them, their
    // checksums left for the hardware, where wvs's rings complete them.
    let carried: u64 = counts.iter().map(|c| c.2).sum();
    if common::offloads(&[]) && !method.contains("tun_csum") {
        assert!(
            carried > 0,
            "no packet came through the offload: {counts:?}"
        );
    } else {
        assert_eq!(carried, 0, "{counts:?}");
    }
    let listing = wvs.adm_ok(&["-L", "-n", "--tun-info"]);
    assert!(
        listing.contains(&format!("  -> {:<28} {:<7} ", "198.19.0.11:80", "Tunnel")),
        "{listing}"
    );
}

/// The IPv4 fields checked of outer and inner headers: addresses, protocol, TTL, DF and
/// the checksum's status (1: verified good).
const IP_FIELDS: [&str; 6] = [
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.ttl",
    "ip.flags.df",
    "ip.checksum.status",
];

/// One packet's IPv4 fields, outer then inner (tshark lists a repeated field's values
/// with commas): from wvs's address to a real server, TTL and DF from the inner packet
/// (62: the client's 64 less the router's hop and wvs's), checksums good; the inner one
/// from the client to the VIP, TTL 62, DF, checksum good.
fn ip_ok(f: &[String], proto: &str, inner_too: bool) {
    let v = |i: usize| f[i].split(',').collect::<Vec<_>>();
    let n = if inner_too { 2 } else { 1 };
    assert_eq!(
        v(0)[..n],
        ["198.19.0.1", "198.18.0.2"][..n],
        "sources {f:?}"
    );
    assert!(
        v(1)[0].starts_with("198.19.0.1") && v(1)[0].len() == 11,
        "outer destination {f:?}"
    );
    if inner_too {
        assert_eq!(v(1)[1], VIP, "inner destination {f:?}");
    }
    assert_eq!(v(2)[0], proto, "outer protocol {f:?}");
    assert_eq!(v(3)[..n], ["62", "62"][..n], "TTLs {f:?}");
    assert_eq!(v(4)[..n], ["1", "1"][..n], "DF {f:?}");
    assert_eq!(v(5)[..n], ["1", "1"][..n], "IP checksums {f:?}");
}

/// The inner packet's TCP or UDP checksum as tshark verified it.
fn l4_ok(f: &[String]) {
    assert!(f.iter().any(|x| x == "1"), "no L4 checksum verified {f:?}");
}

#[test]
fn ipip_tunnel_serves_evenly_and_downloads_exactly() {
    tunnel_case(
        "ipip",
        "forward = \"tunnel\"",
        "ipip",
        "ip proto 4",
        |pcap| {
            let mut names = IP_FIELDS.to_vec();
            names.extend(["tcp.checksum.status", "udp.checksum.status"]);
            let rows = fields(pcap, &names);
            assert!(rows.len() >= 10, "{rows:?}");
            for f in &rows {
                ip_ok(f, "4", true);
                l4_ok(&f[6..]);
            }
        },
    );
}

#[test]
fn gre_tunnel_serves_evenly_and_downloads_exactly() {
    tunnel_case(
        "gre",
        "forward = \"tunnel\"\ntun_type = \"gre\"\ntun_csum = \"csum\"",
        "gre",
        "ip proto 47",
        |pcap| {
            let mut names = IP_FIELDS.to_vec();
            names.extend([
                "gre.flags.checksum",
                "gre.proto",
                "gre.checksum.status",
                "tcp.checksum.status",
                "udp.checksum.status",
            ]);
            let rows = fields(pcap, &names);
            assert!(rows.len() >= 10, "{rows:?}");
            for f in &rows {
                ip_ok(f, "47", true);
                assert_eq!(f[6], "1", "GRE checksum present {f:?}");
                assert_eq!(f[7], "0x0800", "GRE carries IPv4 {f:?}");
                assert_eq!(f[8], "1", "GRE checksum good {f:?}");
                l4_ok(&f[9..]);
            }
        },
    );
}

/// Wireshark has no GUE dissector: the outer headers are its, the 4-byte GUE header is
/// checked here, and the inner packets go through tshark again as raw IP (text2pcap).
#[test]
fn gue_tunnel_serves_evenly_and_downloads_exactly() {
    tunnel_case(
        "gue",
        "forward = \"tunnel\"\ntun_type = \"gue\"\ntun_port = 6080\ntun_csum = \"csum\"",
        "gue:6080",
        "udp dst port 6080",
        |pcap| {
            let mut names = IP_FIELDS.to_vec();
            names.extend([
                "udp.srcport",
                "udp.dstport",
                "udp.checksum.status",
                "udp.payload",
            ]);
            let rows = fields(pcap, &names);
            assert!(rows.len() >= 10, "{rows:?}");
            let mut dump = String::new();
            for f in &rows {
                ip_ok(f, "17", false);
                let sport: u32 = f[6].parse().unwrap_or(0);
                assert!((32768..=60999).contains(&sport), "GUE source port {f:?}");
                assert_eq!(f[7], "6080", "{f:?}");
                assert_eq!(f[8], "1", "outer UDP checksum good {f:?}");
                let payload = f[9].replace(':', "");
                assert_eq!(
                    &payload[..8],
                    "00040000",
                    "GUE version 0 carrying IPIP {f:?}"
                );
                dump.push_str("0000");
                for b in payload.as_bytes()[8..].chunks(2) {
                    dump.push(' ');
                    dump.push_str(std::str::from_utf8(b).expect("hex"));
                }
                dump.push('\n');
            }
            let hex = pcap.with_extension("inner.txt");
            let inner = pcap.with_extension("inner.pcap");
            std::fs::write(&hex, dump).expect("hex dump");
            let out = Command::new("text2pcap")
                .args(["-q", "-l", "101"])
                .arg(&hex)
                .arg(&inner)
                .output()
                .expect("text2pcap");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut names = IP_FIELDS.to_vec();
            names.extend(["tcp.checksum.status", "udp.checksum.status"]);
            let inner_rows = fields(&inner, &names);
            assert_eq!(inner_rows.len(), rows.len());
            for f in &inner_rows {
                assert_eq!(f[0], "198.18.0.2", "{f:?}");
                assert_eq!(f[1], VIP, "{f:?}");
                assert_eq!(
                    (f[3].as_str(), f[4].as_str(), f[5].as_str()),
                    ("62", "1", "1"),
                    "{f:?}"
                );
                l4_ok(&f[6..]);
            }
        },
    );
}

/// 20 MiB sent to VIP:5001, where each real server counts what it received (`wc -c`) and
/// answers the count: what the client's socat prints.
fn upload_20_mib(topo: &Topo) -> String {
    let mut counters = Decaps(Vec::new());
    for i in 1..=3 {
        let ns = topo.ns(&format!("rs{i}"));
        counters.0.push(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "socat",
                    "TCP-LISTEN:5001,reuseaddr,fork",
                    "SYSTEM:wc -c",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat"),
        );
    }
    let file = topo.dir.join("up");
    std::fs::write(&file, vec![0x5au8; DOWNLOAD]).expect("upload file");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "timeout",
            "60",
            "socat",
            "-t",
            "10",
            "-",
        ])
        .arg(format!("TCP:{VIP}:5001"))
        .stdin(std::fs::File::open(&file).expect("file"))
        .output()
        .expect("socat");
    // (The listeners are stopped and reaped when `counters` goes.)
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Lower the MTU of `devs` (namespace, device) to 1400.
fn mtu_1400(topo: &Topo, devs: &[(&str, &str)]) {
    for (ns, dev) in devs {
        let out = topo.exec(ns, &["ip", "link", "set", "dev", dev, "mtu", "1400"]);
        assert!(
            out.status.success(),
            "{ns} {dev}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The path to the servers has an MTU of 1400 (the switch's ports) while the client's and
/// the servers' own are 1500, so the servers announce an MSS that does not fit: the
/// client's TCP sends 1500-byte packets (as GSO super-packets) with DF, the switch would
/// drop them without a word, and the upload completes only because wvs answers ICMP
/// fragmentation needed and the client sends smaller ones.
fn path_mtu_upload(topo: &Topo, wvs: &Wvs) {
    assert_eq!(
        upload_20_mib(topo),
        DOWNLOAD.to_string(),
        "all bytes arrived"
    );
    let s = wvs.stats();
    assert!(
        s.get("icmp_sent").copied().unwrap_or(0) >= 1,
        "no fragmentation needed sent: {s:?}"
    );
    let route = topo.exec("cli", &["ip", "route", "get", VIP]);
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    assert!(
        route.contains("mtu 1400"),
        "the client learned the path MTU: {route}"
    );
}

fn tcp_5001(topo: &Topo, method: &str) -> std::path::PathBuf {
    let path = topo.dir.join("mtu.toml");
    let mut text =
        format!("[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:5001\"\nscheduler = \"sh\"\n");
    for i in 1..=3 {
        let port = if method.contains("nat") { ":5001" } else { "" };
        text.push_str(&format!(
            "[[service.real]]\naddress = \"198.19.0.1{i}{port}\"\n{method}\n"
        ));
    }
    text.push_str(&format!(
        "[[service]]\nprotocol = \"udp\"\naddress = \"{VIP}:9000\"\nscheduler = \"rr\"\n\
         [[service.real]]\naddress = \"198.19.0.11:9000\"\n"
    ));
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn nat_path_mtu_is_learned_from_fragmentation_needed_and_ttl_1_from_time_exceeded() {
    let topo = Topo::new("pmtun", false);
    mtu_1400(
        &topo,
        &[
            ("lb", "s0"),
            ("sw", "p0"),
            ("sw", "p1"),
            ("sw", "p2"),
            ("sw", "p3"),
        ],
    );
    let wvs = Wvs::start(&topo, Some(&tcp_5001(&topo, "forward = \"nat\"")));
    path_mtu_upload(&topo, &wvs);
    // tracepath's first probe (UDP to the service's port, TTL 1) meets wvs: the balancer
    // answers at hop 1, from the VIP, as IPVS's director does.
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
            VIP,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("1:") && l.contains(VIP)),
        "tracepath: {text}"
    );
}

#[test]
fn dr_path_mtu_follows_the_route_to_the_servers() {
    let topo = Topo::onearm("pmtud", false);
    topo.script("dr");
    mtu_1400(&topo, &[("sw", "p1"), ("sw", "p2"), ("sw", "p3")]);
    // wvs shares its interface with the router (MTU 1500): the operator tells it the
    // servers' MTU on the route to them, as the director's kernel would be told.
    let out = topo.exec(
        "lb",
        &[
            "ip",
            "route",
            "replace",
            "198.19.0.0/24",
            "dev",
            "s0",
            "mtu",
            "1400",
            "proto",
            "kernel",
            "scope",
            "link",
            "src",
            "198.19.0.1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wvs = Wvs::start(&topo, Some(&tcp_5001(&topo, "forward = \"dr\"")));
    path_mtu_upload(&topo, &wvs);
}

/// Full NAT on the two-armed topology with the servers' default route removed: they have
/// no route to the client network at all, and serve it through the local addresses.
#[test]
fn full_nat_serves_servers_without_a_route_to_the_clients() {
    let topo = Topo::new("fnat", true);
    for i in 1..=3 {
        let rs = format!("rs{i}");
        topo.exec(&rs, &["ip", "route", "del", "default"]);
        let out = topo.exec(&rs, &["ip", "route", "get", "198.18.0.2"]);
        assert!(
            !out.status.success(),
            "rs{i} still has a route to the client"
        );
    }
    // Two local addresses of the balancer's on the servers' side (its kernel answers ARP
    // for them); the first is also the address of its interface there.
    topo.exec("lb", &["ip", "addr", "add", "198.19.0.100/24", "dev", "s0"]);
    let mut text = String::new();
    for (proto, port) in [("tcp", 80), ("udp", 9000)] {
        text.push_str(&format!(
            "[[service]]\nprotocol = \"{proto}\"\naddress = \"{VIP}:{port}\"\nscheduler = \"rr\"\n\
             laddrs = [\"198.19.0.1\", \"198.19.0.100\"]\n"
        ));
        for i in 1..=3 {
            text.push_str(&format!(
                "[[service.real]]\naddress = \"198.19.0.1{i}:{port}\"\nforward = \"fullnat\"\n"
            ));
        }
    }
    let cfg = topo.dir.join("fullnat.toml");
    std::fs::write(&cfg, text).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    serves_evenly(&topo);
    downloads_exactly(&topo);
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!(
            "  -> {:<28} {:<7} 1      ",
            "198.19.0.11:80", "FullNat"
        )),
        "{listing}"
    );
    let (_, metrics) = wvs.api("GET", "/metrics", None, None, None);
    assert!(
        metrics.lines().any(|l| l.starts_with("wvs_backend_info{")
            && l.contains("remote_address=\"198.19.0.11\"")
            && l.contains("forward=\"FullNat\"")),
        "{metrics}"
    );
    let saved = wvs.adm_ok(&["-S", "-n"]);
    for want in [
        format!("-a -t {VIP}:80 -r 198.19.0.11:80 -b -w 1\n"),
        format!("-P -t {VIP}:80 -z 198.19.0.100\n"),
    ] {
        assert!(saved.contains(&want), "{want} in {saved}");
    }
    // Both local addresses carry connections (the TCP ones are in TIME_WAIT still).
    let got = wvs.adm_ok(&["-G", "-t", &format!("{VIP}:80")]);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["VIP:VPORT", "TOTAL", "LADDR", "CONFLICTS", "CONNS"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [format!("{VIP}:80").as_str(), "2"]
    );
    let mut total = 0;
    for (l, addr) in lines[2..].iter().zip(["198.19.0.1", "198.19.0.100"]) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((f[0], f[1]), (addr, "0"), "{got}");
        let n: u64 = f[2].parse().expect("conns");
        assert!(n > 0, "no connection on {addr}: {got}");
        total += n;
    }
    assert_eq!(total, 31, "30 requests and the download: {got}");
    // Local addresses are edited like the rest, and a removed one keeps its connections.
    wvs.adm_ok(&["-Q", "-t", &format!("{VIP}:80"), "-z", "198.19.0.100"]);
    wvs.adm_ok(&[
        "--add-laddr",
        "-t",
        &format!("{VIP}:80"),
        "-z",
        "198.19.0.101",
    ]);
    let (code, _, err) = wvs.adm(&["-P", "-t", &format!("{VIP}:80"), "-z", "198.19.0.101"]);
    assert_ne!(code, 0);
    assert!(err.contains("already"), "{err}");
    let v = wvs.get_json(&format!("/api/v1/services/tcp/{VIP}:80"));
    let addrs: Vec<&str> = v["laddrs"]
        .as_array()
        .expect("laddrs")
        .iter()
        .filter_map(|l| l["address"].as_str())
        .collect();
    assert_eq!(addrs, ["198.19.0.1", "198.19.0.101"]);
}

/// A real server whose address is the balancer's own: its stack serves the connections
/// (an nginx on the balancer, on the VIP), beside a NAT server.
#[test]
fn a_local_real_server_answers_through_the_vip() {
    let topo = Topo::new("local", false);
    // As on an IPVS director, the VIP is one of the balancer's addresses, and a server
    // there listens on it.
    topo.exec(
        "lb",
        &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"],
    );
    let d = topo.dir.join("lbweb");
    std::fs::create_dir_all(d.join("tmp")).expect("dir");
    std::fs::write(
        d.join("nginx.conf"),
        format!(
            "daemon on; user root; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
             fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen {VIP}:80; location = / {{ return 200 \"lb\\n\"; }} }} }}\n",
            d = d.display()
        ),
    )
    .expect("nginx.conf");
    let out = topo.exec(
        "lb",
        &["nginx", "-c", d.join("nginx.conf").to_str().expect("path")],
    );
    assert!(
        out.status.success(),
        "nginx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = topo.dir.join("local.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n\
             [[service.real]]\naddress = \"198.19.0.1:80\"\nforward = \"nat\"\n\
             [[service.real]]\naddress = \"198.19.0.11:80\"\nforward = \"nat\"\n"
        ),
    )
    .expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let t = Topo::tally((0..10).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        [("lb".to_string(), 5), ("rs1".to_string(), 5)],
        "the balancer's own server takes its share"
    );
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!(
            "  -> {:<28} {:<7} 1      ",
            "198.19.0.1:80", "Local"
        )),
        "{listing}"
    );
    assert_eq!(wvs.drops("tx_error"), 0);
}

/// cache_bypass: with no real server left, the packets go on to the address they were
/// sent to. Here rs1 holds the VIP (a transparent cache's origin) and the balancer routes
/// to it, as a router in front of it would.
#[test]
fn bypass_sends_traffic_on_to_its_destination_when_no_server_is_left() {
    let topo = Topo::new("bypass", false);
    topo.exec(
        "rs1",
        &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"],
    );
    topo.exec(
        "lb",
        &[
            "ip",
            "route",
            "add",
            &format!("{VIP}/32"),
            "via",
            "198.19.0.11",
        ],
    );
    topo.exec("lb", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let cfg = topo.dir.join("bypass.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sysctl]\ncache_bypass = true\n\
             [[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n\
             [[service.real]]\naddress = \"198.19.0.12:80\"\nforward = \"nat\"\n\
             [[service.real]]\naddress = \"198.19.0.13:80\"\nforward = \"nat\"\n\
             [[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:5001\"\n"
        ),
    )
    .expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    // A service with no server at all: an upload (GSO super-packets from the client's TCP,
    // cut by wvs for the raw socket) reaches the VIP's own host whole.
    assert_eq!(
        upload_20_mib(&topo),
        DOWNLOAD.to_string(),
        "all bytes arrived"
    );
    let t = Topo::tally((0..4).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        [("rs2".to_string(), 2), ("rs3".to_string(), 2)]
    );
    for rs in ["198.19.0.12:80", "198.19.0.13:80"] {
        wvs.adm_ok(&["-d", "-t", &format!("{VIP}:80"), "-r", rs]);
    }
    let t = Topo::tally((0..4).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        t.into_iter().collect::<Vec<_>>(),
        [("rs1".to_string(), 4)],
        "the VIP's own host answers"
    );
    assert_eq!(wvs.drops("no_dest"), 0);
    // Off again: refused at once (port unreachable), as without bypass.
    let body = topo.dir.join("sysctl.json");
    std::fs::write(&body, "{\"cache_bypass\": false}").expect("body");
    let (code, body) = wvs.api(
        "PUT",
        "/api/v1/sysctl",
        Some(&format!("Bearer {}", wvs.token())),
        Some("application/json"),
        Some(&body),
    );
    assert_eq!(code, 200, "{body}");
    let out = topo.exec(
        "cli",
        &["curl", "-sS", "-m", "5", &format!("http://{VIP}/")],
    );
    assert!(!out.status.success());
    assert!(wvs.drops("no_dest") > 0);
}

/// An ICMP error from a real server about a client's datagram is relayed only if its
/// checksum holds: a bad one is dropped and counted (IPVS drops it too), a good one
/// reaches the client's socket.
#[test]
fn an_icmp_error_with_a_bad_checksum_is_dropped_and_counted() {
    let topo = Topo::new("icsum", false);
    let cfg = topo.dir.join("icsum.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[service]]\nprotocol = \"udp\"\naddress = \"{VIP}:9002\"\n\
             [[service.real]]\naddress = \"198.19.0.11:9002\"\n"
        ),
    )
    .expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    // rs1 takes the datagrams in silence, so its kernel sends no error of its own.
    let mut sink = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("rs1"),
            "socat",
            "-u",
            "UDP4-RECV:9002",
            "/dev/null",
        ])
        .spawn()
        .expect("socat");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "socat",
            "-T",
            "10",
            "-",
            &format!("UDP4:{VIP}:9002,sourceport=40123"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("socat");
    let mut stdin = client.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"hello\n").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A port unreachable quoting the datagram as rs1 got it: 198.18.0.2:40123 ->
    // 198.19.0.11:9002.
    let send = |good: bool| {
        let py = format!(
            r#"
import socket, struct
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
udp = struct.pack("!HHHH", 40123, 9002, 14, 0)
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 34, 1, 0, 63, 17, 0,
                 socket.inet_aton("198.18.0.2"), socket.inet_aton("198.19.0.11"))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
icmp = struct.pack("!BBHI", 3, 3, 0, 0) + ip + udp
c = csum(icmp) ^ ({bad})
icmp = icmp[:2] + struct.pack("!H", c) + icmp[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(icmp, ("198.18.0.2", 0))
"#,
            bad = if good { "0" } else { "0x5a5a" }
        );
        let out = topo.exec("rs1", &["python3", "-c", &py]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    send(false);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(wvs.drops("icmp_bad_csum"), 1);
    assert!(
        client.try_wait().expect("socat").is_none(),
        "the client's socket heard of the bad error"
    );
    send(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while client.try_wait().expect("socat").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(stdin);
    let out = client.wait_with_output().expect("socat");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Connection refused"),
        "the good error did not arrive: {err}"
    );
    assert_eq!(wvs.drops("icmp_bad_csum"), 1);
    let _ = sink.kill();
    let _ = sink.wait();
}

/// An upload into an IPIP tunnel: the client's TCP sends GSO super-packets of 1500-byte
/// segments with DF; the tunnel takes 20 bytes of the path's 1500, so wvs answers
/// fragmentation needed with 1480, and then cuts each super-packet into segments itself
/// (the kernel cannot segment inside a tunnel for a packet socket), every one of which the
/// servers' tunnel end takes apart: the 20 MiB arrive whole. With the flow offload, the
/// super-packets of the established connection that fit go whole, marked as a tunnel's
/// for the kernel to cut where it must, as its own tunnels' are.
#[test]
fn a_tunnel_upload_learns_the_tunnel_mtu_and_is_segmented_by_wvs() {
    let topo = Topo::onearm("tunup", false);
    let ends = decaps(&topo, "ipip");
    let wvs = Wvs::start(&topo, Some(&tcp_5001(&topo, "forward = \"tunnel\"")));
    assert_eq!(
        upload_20_mib(&topo),
        DOWNLOAD.to_string(),
        "all bytes arrived"
    );
    let route = topo.exec("cli", &["ip", "route", "get", VIP]);
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    assert!(
        route.contains("mtu 1480"),
        "the client learned the tunnel's MTU: {route}"
    );
    let s = wvs.stats();
    assert!(
        s.get("rx_gso").copied().unwrap_or(0) > 0,
        "no super-packet came: {s:?}"
    );
    assert_eq!(wvs.drops("tunnel_gso"), 0);
    let counts = ends.finish(&topo);
    assert!(
        counts.iter().all(|(_, bad, _)| *bad == 0),
        "malformed tunnel packets: {counts:?}"
    );
    let carried: u64 = counts.iter().map(|c| c.2).sum();
    assert_eq!(
        carried > 0,
        common::offloads(&[]),
        "carried by the offload: {counts:?}"
    );
}

/// A datagram without DF that fits the client's path (1500 bytes) but not the tunnel's: wvs
/// sends the outer packet in two fragments, the server's kernel puts them together, and its
/// tunnel end answers. With DF it would get fragmentation needed instead.
#[test]
fn a_tunnel_fragments_an_outer_packet_without_df() {
    let topo = Topo::onearm("tunfrag", false);
    let _ends = decaps(&topo, "ipip");
    let wvs = Wvs::start(&topo, Some(&config(&topo, "forward = \"tunnel\"")));
    let py = format!(
        r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: no DF
s.bind(("0.0.0.0", 42000))
s.connect(("{VIP}", 9000))
s.settimeout(3)
for _ in range(3):
    s.send(b"x" * 1472)  # 1500 bytes of IP: 1520 in the tunnel
    try:
        print(s.recv(100).decode().strip())
        break
    except socket.timeout:
        pass
"#
    );
    let out = topo.exec("cli", &["python3", "-c", &py]);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer.starts_with("rs"),
        "no answer through the fragmented tunnel: {answer:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(wvs.drops("too_big"), 0);
}

/// A real server's check state (`health.state`) and consecutive passes, by the API.
fn checked(wvs: &Wvs, real: &str) -> (String, u64, serde_json::Value) {
    let v = wvs.get_json("/api/v1/services");
    let r = v
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["reals"].as_array().cloned().unwrap_or_default())
        .find(|r| r["address"] == real)
        .unwrap_or_else(|| panic!("no real server {real}: {v}"));
    let h = &r["health"];
    (
        h["state"].as_str().unwrap_or_default().to_string(),
        h["passes"].as_u64().unwrap_or(0),
        r.clone(),
    )
}

/// Checks of tunnel servers go through the tunnel to the VIP, as clients' packets do: with
/// every tunnel end up each server passes; when rs3's tunnel end goes (and the VIP with it,
/// its nginx still answering on its own address) rs3 is down and gets no client.
#[test]
fn tunnel_servers_are_checked_through_the_tunnel() {
    let topo = Topo::onearm("htun", false);
    let mut ends = decaps(&topo, "ipip");
    let mut text = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n\
         check = {{ type = \"http\", path = \"/\", interval = 0.3, timeout = 0.5 }}\n"
    );
    for i in 1..=3 {
        text +=
            &format!("[[service.real]]\naddress = \"198.19.0.1{i}:80\"\nforward = \"tunnel\"\n");
    }
    let cfg = topo.dir.join("htun.toml");
    std::fs::write(&cfg, text).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let wait = |real: &str, ok: &dyn Fn(&str, u64) -> bool| {
        let t0 = std::time::Instant::now();
        loop {
            let (state, passes, r) = checked(&wvs, real);
            if ok(&state, passes) {
                return;
            }
            assert!(t0.elapsed().as_secs() < 5, "{real}: {r}");
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    };
    for i in 1..=3 {
        wait(&format!("198.19.0.1{i}:80"), &|s, p| s == "up" && p >= 2);
    }
    // rs3's tunnel end goes, and with it the VIP there.
    let mut rs3 = ends.0.remove(2);
    let _ = Command::new("kill").arg(rs3.id().to_string()).status();
    let _ = rs3.wait();
    wait("198.19.0.13:80", &|s, _| s == "down");
    let own = topo.exec("lb", &["curl", "-sS", "-m", "2", "http://198.19.0.13/"]);
    assert_eq!(
        String::from_utf8_lossy(&own.stdout).trim(),
        "rs3",
        "{own:?}"
    );
    let seen = Topo::tally((0..8).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["rs1", "rs2"],
        "no client goes to the server without a tunnel end"
    );
    ends.stop();
}
