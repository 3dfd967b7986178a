//! End to end, NAT mode: real nginx and socat behind the real `wvs` binary, in namespaces.
//! Needs root, iproute2, nftables, nginx, socat and curl (scripts/setup.sh installs them).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Topo, VIP, Wvs, example};

/// The I/O backends (`wvs run --io`): the tests of the forwarding basics run on each.
macro_rules! on_every_backend {
    ($body:ident: $($name:ident => $io:literal),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $body($io)
            }
        )+
    };
}

on_every_backend!(http_round_robin_is_exact:
    http_round_robin_is_exact_ring => "ring",
    http_round_robin_is_exact_uring => "uring",
    http_round_robin_is_exact_xdp => "xdp",
    http_round_robin_is_exact_ring_tc => "ring+tc",
);

fn http_round_robin_is_exact(io: &str) {
    let topo = Topo::new(&format!("rr{}", io.replace('+', "")), false);
    let _wvs = Wvs::start_io(&topo, Some(example()), io);
    let answers: Vec<String> = (0..30)
        .map(|_| topo.curl(&format!("http://{VIP}/")))
        .collect();
    let tally = Topo::tally(answers);
    let want = Topo::even(30);
    assert_eq!(
        tally.into_iter().collect::<Vec<_>>(),
        want,
        "30 requests over 3 servers, rr"
    );
}

on_every_backend!(udp_is_balanced_and_answered_from_the_vip:
    udp_is_balanced_and_answered_from_the_vip_ring => "ring",
    udp_is_balanced_and_answered_from_the_vip_uring => "uring",
    udp_is_balanced_and_answered_from_the_vip_xdp => "xdp",
    udp_is_balanced_and_answered_from_the_vip_ring_tc => "ring+tc",
);

fn udp_is_balanced_and_answered_from_the_vip(io: &str) {
    let topo = Topo::new(&format!("udp{}", io.replace('+', "")), false);
    let _wvs = Wvs::start_io(&topo, Some(example()), io);
    // Every datagram from a new source port: a new UDP connection each time.
    let answers: Vec<String> = (0..30).map(|i| topo.udp_ask(41000 + i)).collect();
    let tally = Topo::tally(answers);
    let want = Topo::even(30);
    assert_eq!(
        tally.into_iter().collect::<Vec<_>>(),
        want,
        "each reply came back from {VIP}:9000"
    );
}

on_every_backend!(download_of_100_mb_is_byte_exact:
    download_of_100_mb_is_byte_exact_ring => "ring",
    download_of_100_mb_is_byte_exact_uring => "uring",
    download_of_100_mb_is_byte_exact_xdp => "xdp",
    download_of_100_mb_is_byte_exact_ring_tc => "ring+tc",
    download_of_100_mb_is_byte_exact_uring_tc => "uring+tc",
);

fn download_of_100_mb_is_byte_exact(io: &str) {
    let topo = Topo::new(&format!("big{}", io.replace('+', "")), true);
    let wvs = Wvs::start_io(&topo, Some(example()), io);
    let have = topo.download_big(None);
    let want = std::fs::read(topo.dir.join("big")).expect("source file");
    assert_eq!(have.len(), 100_000_000);
    assert!(
        have == want,
        "the downloaded bytes differ from the served file"
    );
    // The servers' TCP stack hands the veth 64 KiB super-packets (TSO): they crossed wvs
    // whole, with their vnet headers, and were segmented after it. (With the offload, the
    // tc program carried them whole, and the keeper's merge, every second, counted them.)
    let offload = common::offloads(&common::io_args(io));
    if offload {
        std::thread::sleep(Duration::from_millis(1500));
    }
    let lines_before = wvs.log_text().matches(" stats").count();
    wvs.signal("USR1");
    wvs.wait_log_n(" stats", lines_before + 1, Duration::from_secs(5));
    let log = wvs.log_text();
    // The largest `name=` of the log's `kind` lines.
    let logged = |kind: &str, name: &str| -> u64 {
        log.lines()
            .filter(|l| l.contains(kind))
            .filter_map(|l| {
                l.split(&format!("{name}="))
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    let stat = |name: &str| logged(" stats", name);
    let gso = stat("rx_gso");
    if offload {
        // The connection was handed to the program at its client's 8th packet: the
        // download passed wvs by, bar the frames in its rings until then.
        assert_eq!(stat("offloaded"), 1, "one connection offloaded:\n{log}");
        assert!(
            stat("rx") < 1000,
            "the download went through wvs's rings ({} frames):\n{log}",
            stat("rx")
        );
    } else if io == "xdp" {
        // While an XDP program is attached to a veth, the kernel turns GSO off on its peer
        // (veth_xdp_set): every frame comes at the MTU, and none is a super-packet.
        assert_eq!(gso, 0, "a GSO super-packet came through XDP:\n{log}");
    } else {
        assert!(gso > 0, "no GSO super-packet went through wvs:\n{log}");
    }
    // The traffic counters saw the download: 100 MB of payload plus the IP and TCP headers
    // (counted once per super-packet, as IPVS counts skb->len).
    let traffic = logged(" traffic", "outbytes");
    assert!(
        (100_000_000..104_000_000).contains(&traffic),
        "outbytes {traffic}:\n{log}"
    );
}

const THREE: &str = r#"
[[service]]
protocol = "tcp"
address = "198.18.100.1:80"
scheduler = "rr"
[[service.real]]
address = "198.19.0.11:80"
[[service.real]]
address = "198.19.0.12:80"
[[service.real]]
address = "198.19.0.13:80"
"#;

#[test]
fn removed_real_server_gets_no_new_connections() {
    let topo = Topo::new("rm", false);
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(&cfg, THREE).expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let before = Topo::tally((0..6).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(before.get("rs3"), Some(&2));

    let two = THREE.replace("[[service.real]]\naddress = \"198.19.0.13:80\"\n", "");
    assert!(!two.contains(".13"));
    std::fs::write(&cfg, two).expect("config");
    wvs.signal("HUP");
    wvs.wait_log("configuration reloaded", Duration::from_secs(10));
    let after = Topo::tally((0..30).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(after.get("rs3"), None, "{after:?}");
    assert_eq!(
        (after.get("rs1"), after.get("rs2")),
        (Some(&15), Some(&15)),
        "{after:?}"
    );

    // A file that does not validate changes nothing.
    std::fs::write(
        &cfg,
        "[[service]]\nprotocol = 'tcp'\naddress = 'nonsense'\n",
    )
    .expect("config");
    wvs.signal("HUP");
    wvs.wait_log("configuration not reloaded", Duration::from_secs(10));
    let still = Topo::tally((0..4).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(
        (still.get("rs1"), still.get("rs2")),
        (Some(&2), Some(&2)),
        "{still:?}"
    );
}

on_every_backend!(stopped_wvs_leaves_no_table_and_no_socket:
    stopped_wvs_leaves_no_table_and_no_socket_ring => "ring",
    stopped_wvs_leaves_no_table_and_no_socket_uring => "uring",
    stopped_wvs_leaves_no_table_and_no_socket_xdp => "xdp",
);

fn stopped_wvs_leaves_no_table_and_no_socket(io: &str) {
    let topo = Topo::new(&format!("stop{io}"), false);
    let mut wvs = Wvs::start_io(&topo, Some(example()), io);
    let during = topo.exec("lb", &["nft", "list", "tables"]);
    assert!(
        String::from_utf8_lossy(&during.stdout).contains("netdev wvs"),
        "table installed while running"
    );
    let packet_sockets = |t: &Topo| {
        let out = t.exec("lb", &["cat", "/proc/net/packet"]);
        String::from_utf8_lossy(&out.stdout).lines().skip(1).count()
    };
    assert!(
        packet_sockets(&topo) >= 2,
        "one packet socket per interface and worker"
    );
    // Round robin starts with the real server configured last: IPVS's list is newest first.
    assert_eq!(topo.curl(&format!("http://{VIP}/")), "rs3");
    // Under XDP, wvs's program is on both interfaces while it runs (`ip link` shows it).
    if io == "xdp" {
        assert_eq!(xdp_programs(&topo), 2, "XDP program attached while running");
    }

    let status = wvs.stop();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        wvs.log_text()
    );
    let after = topo.exec("lb", &["nft", "list", "tables"]);
    assert!(after.status.success());
    assert_eq!(
        String::from_utf8_lossy(&after.stdout).trim(),
        "",
        "no nftables table left"
    );
    assert_eq!(packet_sockets(&topo), 0, "no packet socket left");
    assert_eq!(xdp_programs(&topo), 0, "no XDP program left");
    assert!(wvs.log_text().contains("nftables table removed"));
}

#[test]
fn icmp_errors_are_relayed_with_the_vip_restored() {
    // Nothing listens on port 9001 of the real servers: each answers a datagram with an ICMP
    // port unreachable addressed to the client and quoting the datagram it got (client ->
    // real server). wvs must hand it to the client quoting client -> VIP, or the client's
    // connected socket never learns that the port is closed.
    let topo = Topo::new("icmp", false);
    let cfg = topo.dir.join("wvs.toml");
    std::fs::write(
        &cfg,
        "[[service]]\nprotocol = \"udp\"\naddress = \"198.18.100.1:9001\"\n\
         [[service.real]]\naddress = \"198.19.0.11:9001\"\n",
    )
    .expect("config");
    let _wvs = Wvs::start(&topo, Some(&cfg));
    let err = udp_to_a_closed_port(&topo, "cli", &format!("{VIP}:9001"));
    assert!(
        err.contains("Connection refused"),
        "the client saw no port unreachable: {err:?}"
    );
}

on_every_backend!(a_flood_of_malformed_frames_is_counted_and_survived:
    a_flood_of_malformed_frames_is_counted_and_survived_ring => "ring",
    a_flood_of_malformed_frames_is_counted_and_survived_uring => "uring",
    a_flood_of_malformed_frames_is_counted_and_survived_xdp => "xdp",
);

fn a_flood_of_malformed_frames_is_counted_and_survived(io: &str) {
    // 100,000 frames to the VIP's port 80, as fast as the sender goes, through the real
    // interfaces: half with random version/IHL, total length, id, fragment bits and header
    // checksum; half well-formed but for a random header checksum; all with random TCP
    // header bytes.
    let topo = Topo::new(&format!("fuzz{io}"), false);
    let mut wvs = Wvs::start_io(&topo, Some(example()), io);
    let mac = |ns: &str, dev: &str| {
        let out = topo.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The frames are sent by a small sender of our own, not trafgen: trafgen's TX ring gives
    // up when the veth pushes back ("Flushing TX_RING failed: Resource temporarily
    // unavailable", seen in CI under XDP), and the test counts every frame. This one
    // retries a frame the device cannot take yet, and says how many it sent.
    let (lb, cli) = (mac("lb", "c0"), mac("cli", "eth0"));
    let flood = |n: &str| {
        let out = topo.exec(
            "cli",
            &[
                "timeout",
                "60",
                "python3",
                "-c",
                MALFORMED_SENDER,
                "eth0",
                &lb,
                &cli,
                n,
            ],
        );
        assert!(
            out.status.success(),
            "the sender: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(sent, n, "frames sent");
    };
    flood("100000");
    std::thread::sleep(Duration::from_millis(500));
    // Still serving, exactly as before.
    let t = Topo::tally((0..6).map(|_| topo.curl(&format!("http://{VIP}/"))));
    assert_eq!(t.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{t:?}");
    let s = wvs.stats();
    eprintln!("counters after the flood: {s:?}");
    // Under XDP, a frame that is not an IPv4 packet of a service (a random version or
    // header length) is the kernel's: the program passes it, and wvs counts it as passed.
    let accounted = |s: &std::collections::BTreeMap<String, u64>| {
        let passed = if io == "xdp" {
            s.get("passed").copied().unwrap_or(0)
        } else {
            0
        };
        s.get("dropped").copied().unwrap_or(0) + passed
    };
    let dropped = accounted(&s);
    if io == "xdp" {
        assert!(
            s.get("passed").copied().unwrap_or(0) > 40_000,
            "the frames that are not IPv4 were passed: {s:?}"
        );
    }
    // Every frame is accounted for: dropped by wvs for what it is, or, when the flood
    // outran the worker, at the full packet ring or socket queue (the kernel's count, read
    // by wvs as `rx_ring_full` or `rx_queue_full`).
    assert!(
        dropped >= 95_000,
        "the malformed frames were counted as drops: {s:?}"
    );
    // (A frame of the namespace's own traffic, IPv6 neighbour discovery or ARP, that meets
    // the full ring is lost and counted with the flood.)
    assert!(dropped <= 100_050, "{s:?}");
    // 60,000 more while wvs is stopped: the ring (or the socket's queue) holds some, the
    // kernel drops the rest, and wvs counts those too once it runs again.
    wvs.signal("STOP");
    flood("60000");
    wvs.signal("CONT");
    std::thread::sleep(Duration::from_millis(1000));
    let after = accounted(&wvs.stats());
    // (A random frame can be well-formed, as in the first flood: 1 in 65,536 checksums;
    // and a neighbour's frame that meets the full queue is lost with the flood.)
    assert!(
        (59_500..=60_050).contains(&(after - dropped)),
        "every frame of the second flood was counted as a drop: {dropped} then {after}"
    );
    // What the kernel dropped at the full ring (or queue) is in /metrics under its own name.
    let full = if io == "uring" {
        "rx_queue_full"
    } else {
        "rx_ring_full"
    };
    assert!(wvs.drops(full) > 0, "no {full} in /metrics");
    assert!(wvs.stop().success(), "{}", wvs.log_text());
    let log = wvs.log_text();
    let reasons: &[&str] = if io == "xdp" {
        &[full, "ip_truncated", "ip_bad_csum"]
    } else {
        &[
            full,
            "ip_bad_version",
            "ip_bad_ihl",
            "ip_truncated",
            "ip_bad_csum",
        ]
    };
    for reason in reasons {
        assert!(log.contains(reason), "no {reason} drops counted:\n{log}");
    }
}

/// Send N frames out of DEV from SRC_MAC to DST_MAC (argv: DEV DST_MAC SRC_MAC N), to the
/// VIP's port 80 from the client, alternately: an IPv4 header with a random version and
/// header length, total length, ID, fragment bits and checksum; and a well-formed header
/// but for a random checksum; each with 16 random TCP bytes after the ports. A frame the
/// device cannot take yet is sent again. Prints how many were sent.
const MALFORMED_SENDER: &str = r#"
import errno, os, socket, sys, time
dev, dst, src, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
eth = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + b"\x08\x00"
addrs = bytes([198, 18, 0, 2, 198, 18, 100, 1])
sent = 0
for i in range(n):
    r = os.urandom(25)
    if i % 2 == 0:
        f = eth + r[0:1] + b"\x00" + r[1:3] + r[3:7] + bytes([64, 6]) + r[7:9] + addrs + bytes([0x9c, 0x40, 0, 0x50]) + r[9:25]
    else:
        f = eth + bytes([0x45, 0, 0, 0x28]) + r[0:2] + bytes([0x40, 0, 64, 6]) + r[2:4] + addrs + bytes([0x9c, 0x41, 0, 0x50]) + r[4:20]
    while True:
        try:
            s.send(f)
            break
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ENOBUFS):
                raise
            time.sleep(0.0001)
    sent += 1
print(sent)
"#;

/// A client in the client namespace that opens one keep-alive HTTP connection to the VIP,
/// asks once, then waits for a line on stdin and asks again on the same connection,
/// printing what became of the second request and how long it took.
const HELD_CLIENT: &str = r#"
import socket, sys, time
s = socket.create_connection(("198.18.100.1", 80), timeout=10)
req = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"
s.sendall(req)
print("first:", s.recv(4096).split(b"\r\n\r\n", 1)[1].decode().strip(), flush=True)
sys.stdin.readline()
t0 = time.monotonic()
try:
    s.sendall(req)
    data = s.recv(4096)
    print("second: data", data[:12], flush=True)
except ConnectionResetError:
    print("second: reset after %d ms" % ((time.monotonic() - t0) * 1000), flush=True)
except socket.timeout:
    print("second: timeout", flush=True)
"#;

#[test]
fn a_connection_held_across_a_restart_gets_a_reset() {
    // IPVS lets a segment of no connection through to the director's stack, which resets
    // it; wvs answers the same reset, so a client whose connection was lost in a restart
    // learns it at once instead of retransmitting until its own timeout.
    use std::io::{BufRead, BufReader, Write};
    let topo = Topo::new("rst", false);
    let sd = topo.dir.join("state");
    let sd = sd.to_str().expect("path");
    let mut wvs = Wvs::start_with(&topo, Some(example()), &["--state-dir", sd]);
    let mut client = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "python3",
            "-c",
            HELD_CLIENT,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first answer");
    assert!(line.starts_with("first: rs"), "{line}");
    assert!(wvs.stop().success());
    let wvs = Wvs::start_with(&topo, None, &["--state-dir", sd]);
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    line.clear();
    out.read_line(&mut line).expect("second answer");
    let _ = client.wait();
    let ms: u64 = line
        .trim()
        .strip_prefix("second: reset after ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reset: {line:?}"));
    assert!(
        ms < 1000,
        "the reset came at once, not after retransmissions: {ms} ms"
    );
    let stats = wvs.get_json("/api/v1/stats");
    assert_eq!(stats["datapath"]["resets_sent"], 1, "{stats}");
}

#[test]
fn icmp_errors_about_the_kernels_own_flows_reach_the_kernel() {
    // The balancer itself sends a datagram from its own address to a closed port of a real
    // server: the port unreachable that comes back is about a flow of the kernel's, not of a
    // service, so the nftables table must leave it to the kernel, whose socket then sees
    // the refusal.
    let topo = Topo::new("kicmp", false);
    let _wvs = Wvs::start(&topo, Some(example()));
    let err = udp_to_a_closed_port(&topo, "lb", "198.19.0.11:9999");
    assert!(
        err.contains("Connection refused"),
        "the balancer's kernel saw no port unreachable: {err:?}"
    );
}

/// Send a datagram from namespace `ns` to `target` on a connected UDP socket (socat), keep
/// the socket open 1.5 s for an ICMP error to come back, and return socat's stderr, which
/// says "Connection refused" if a port unreachable reached the socket.
fn udp_to_a_closed_port(topo: &Topo, ns: &str, target: &str) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns(ns),
            "socat",
            "-T",
            "5",
            "-",
            &format!("UDP4:{target}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let mut stdin = c.stdin.take().expect("stdin");
            stdin.write_all(b"anyone?\n")?;
            // Keep stdin open so that socat waits for the answer (or the error); once the
            // error arrived socat has exited and this write may fail, which is fine.
            std::thread::sleep(Duration::from_millis(1500));
            let _ = stdin.write_all(b"still?\n");
            drop(stdin);
            c.wait_with_output()
        })
        .expect("socat");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn xdp_refuses_a_veth_it_cannot_serve_and_leaves_nothing() {
    // XDP on a veth takes frames of up to a page: with the server side's peer at a 9000-byte
    // MTU the kernel refuses the program. wvs must say what to change, and leave no program
    // (the client side's was attached first), no table and no socket behind.
    let topo = Topo::new("xdpmtu", false);
    for (ns, dev) in [("sw", "p0"), ("lb", "s0")] {
        let out = topo.exec(ns, &["ip", "link", "set", dev, "mtu", "9000"]);
        assert!(out.status.success(), "mtu 9000 on {dev}");
    }
    let out = std::process::Command::new("timeout")
        .args([
            "30",
            "ip",
            "netns",
            "exec",
            &topo.ns("lb"),
            common::wvs_bin(),
            "run",
        ])
        .args(["--iface", "c0", "--iface", "s0", "--io", "xdp", "--config"])
        .arg(example())
        .arg("--state-dir")
        .arg(topo.dir.join("state"))
        .output()
        .expect("run wvs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wvs started:\n{err}");
    assert!(
        err.contains("cannot attach wvs's XDP program to s0") && err.contains("MTU"),
        "the refusal names the interface and the MTU:\n{err}"
    );
    assert_eq!(xdp_programs(&topo), 0, "an XDP program was left");
    let tables = topo.exec("lb", &["nft", "list", "tables"]);
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "",
        "a table was left"
    );
}

#[test]
fn a_killed_wvs_leaves_no_xdp_program() {
    // The program hangs on a BPF link that wvs holds: when wvs dies without a chance to
    // clean up (SIGKILL), the kernel closes the link and takes the program off, so the
    // interfaces pass everything to the kernel again. (The nftables table stays until the
    // next start replaces it, as after any crash.)
    let topo = Topo::new("xdpkill", false);
    let mut wvs = Wvs::start_io(&topo, Some(example()), "xdp");
    assert_eq!(topo.curl(&format!("http://{VIP}/")), "rs3");
    assert_eq!(xdp_programs(&topo), 2, "XDP program attached while running");
    wvs.signal("KILL");
    let status = wvs.stop();
    assert!(!status.success(), "wvs was killed");
    assert_eq!(xdp_programs(&topo), 0, "an XDP program outlived wvs");
}

/// How many of the balancer's interfaces have an XDP program (`ip -d link` shows it).
fn xdp_programs(t: &Topo) -> usize {
    ["c0", "s0"]
        .into_iter()
        .filter(|dev| {
            let out = t.exec("lb", &["ip", "-d", "link", "show", "dev", dev]);
            String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
        })
        .count()
}

#[test]
fn xdp_follows_services_added_and_removed_while_running() {
    // The XDP program redirects only what the running configuration claims: a service added
    // with `wvs adm` is served at once, and once it is deleted its packets are the kernel's
    // again (which has no such address and drops them).
    let topo = Topo::new("xdpedit", false);
    let wvs = Wvs::start_io(&topo, Some(example()), "xdp");
    let url = format!("http://{VIP}:8080/");
    let answers = |t: &Topo| {
        let out = t.exec("cli", &["curl", "-sS", "-m", "2", &url]);
        out.status.success()
    };
    assert!(!answers(&topo), "no service on port 8080 yet");
    let svc = format!("{VIP}:8080");
    wvs.adm_ok(&["-A", "-t", &svc, "-s", "rr"]);
    wvs.adm_ok(&["-a", "-t", &svc, "-r", "198.19.0.11:80", "-m"]);
    assert_eq!(topo.curl(&url), "rs1", "the new service is served");
    wvs.adm_ok(&["-D", "-t", &svc]);
    assert!(!answers(&topo), "the deleted service is not served");
    // The services of the configuration were untouched by both changes.
    assert_eq!(topo.curl(&format!("http://{VIP}/")), "rs3");
}

/// One client port asking `n` times, on an unbound (unconnected) socket: each answer with
/// the address it came from. A datagram unanswered within 2 s is asked again (a loaded
/// machine may lose one); with one-packet scheduling the repeat is a new connection.
const OPS_ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
for _ in range(int(sys.argv[3])):
    for _try in range(3):
        s.sendto(b"who\n", (sys.argv[1], 9000))
        s.settimeout(2)
        try:
            d, a = s.recvfrom(2048)
            print(d.decode(errors="replace").strip(), a[0])
            break
        except socket.timeout:
            pass
"#;

#[test]
fn one_packet_scheduling_spreads_one_client_port_and_keeps_no_connection() {
    let topo = Topo::new("ops", false);
    let wvs = Wvs::start(&topo, Some(example()));
    wvs.adm_ok(&["-E", "-u", &format!("{VIP}:9000"), "-s", "rr", "-o"]);
    let saved = wvs.adm_ok(&["-S", "-n"]);
    assert!(
        saved.contains(&format!("-A -u {VIP}:9000 -s rr -o\n")),
        "{saved}"
    );
    let out = topo.exec("cli", &["python3", "-c", OPS_ASK, VIP, "42000", "30"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let answers: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(answers.len(), 30, "every datagram answered:\n{text}");
    // Every server answered the one client port.
    let tally = Topo::tally(answers.iter().map(|(name, _)| name.clone()));
    assert_eq!(
        tally.len(),
        3,
        "one client port over every server: {tally:?}"
    );
    // A NAT server's answer has no connection to be rewritten by: it leaves as the server
    // sent it, from its own address, as with IPVS.
    for (name, from) in &answers {
        let want = format!("198.19.0.1{}", &name[2..]);
        assert_eq!(from, &want, "{name} answered from {from}");
    }
    let conns = wvs.adm_ok(&["-L", "-c", "-n"]);
    assert!(!conns.contains(":42000"), "no entry is kept:\n{conns}");
    let stats = wvs.adm_ok(&["-L", "-n", "--stats", "-u", &format!("{VIP}:9000")]);
    let line = stats
        .lines()
        .find(|l| l.starts_with("UDP"))
        .unwrap_or_else(|| panic!("{stats}"));
    let n: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(n >= 30, "each datagram counted as a connection: {stats}");
    // Round robin datagram by datagram, whatever the client repeated after a slow answer:
    // the servers' scheduled counts differ by one at most, and make the service's.
    let per: Vec<u64> = stats
        .lines()
        .filter(|l| l.trim_start().starts_with("->") && !l.contains("RemoteAddress"))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(per.len(), 3, "{stats}");
    assert_eq!(per.iter().sum::<u64>(), n, "{stats}");
    assert!(
        per.iter().max().unwrap() - per.iter().min().unwrap() <= 1,
        "{stats}"
    );
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!("UDP  {VIP}:9000 rr ops\n")),
        "{listing}"
    );
}

/// From one client port, one UDP datagram to VIP:9000 per payload (each sent up to three
/// times when no answer comes within 2 s); prints each answer's server, or `-` for none.
const PE_ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.settimeout(2)
out = []
for p in sys.argv[3:]:
    name = "-"
    for _try in range(3):
        s.sendto(p.encode().replace(b"|", b"\r\n"), (sys.argv[1], 9000))
        try:
            d, a = s.recvfrom(2048)
            name = d.decode(errors="replace").strip()
            break
        except socket.timeout:
            pass
    out.append(name)
print(" ".join(out))
"#;

/// A SIP OPTIONS message with `call_id` (none: `-`), its lines joined by `|`.
fn sip_options(call_id: &str) -> String {
    let id = if call_id == "-" {
        String::new()
    } else {
        format!("Call-ID: {call_id}|")
    };
    format!("OPTIONS sip:{VIP} SIP/2.0|Via: SIP/2.0/UDP 198.18.0.2|{id}CSeq: 1 OPTIONS||")
}

/// The persistence engines (`--pe`): the built-in `sip` keeps each SIP call (Call-ID) of
/// one client on its own server with one-packet scheduling and drops a datagram without
/// one; the SDK's example engine, uploaded as a plugin, keys by a datagram's first word.
#[test]
fn persistence_engines_keep_a_call_on_one_server_and_calls_apart() {
    let topo = Topo::new("pe", false);
    let wvs = Wvs::start(&topo, Some(example()));
    let svc = format!("{VIP}:9000");
    wvs.adm_ok(&[
        "-E", "-u", &svc, "-s", "rr", "-p", "60", "-o", "--pe", "sip",
    ]);
    let ask = |port: &str, payloads: &[String]| -> Vec<String> {
        let mut args = vec!["python3", "-c", PE_ASK, VIP, port];
        args.extend(payloads.iter().map(String::as_str));
        let out = topo.exec("cli", &args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let got: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        assert_eq!(got.len(), payloads.len(), "{text}");
        got
    };
    let calls = ["a1@cli", "b2@cli", "a1@cli", "c3", "b2@cli", "c3", "a1@cli"];
    let got = ask("5060", &calls.map(sip_options));
    assert!(
        got.iter().all(|n| n.starts_with("rs")),
        "every message answered: {got:?}"
    );
    assert!(
        got[0] == got[2] && got[2] == got[6] && got[1] == got[4] && got[3] == got[5],
        "a call stays on its server: {got:?}"
    );
    assert!(
        got[0] != got[1] && got[1] != got[3] && got[0] != got[3],
        "three calls of one client port on three servers: {got:?}"
    );
    // No Call-ID: dropped, as IPVS drops what its engine cannot key.
    assert_eq!(ask("5061", &[sip_options("-")]), ["-"]);
    let conns = wvs.adm_ok(&["-L", "-n", "-c", "--persistent-conn"]);
    for id in ["a1@cli", "b2@cli", "c3"] {
        assert!(
            conns
                .lines()
                .any(|l| l.starts_with("UDP") && l.contains(" sip ") && l.ends_with(id)),
            "the template of {id} with the engine and its key:\n{conns}"
        );
    }
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains(&format!("UDP  {svc} rr persistent 60 pe sip ops\n")),
        "{listing}"
    );
    let saved = wvs.adm_ok(&["-S", "-n"]);
    assert!(
        saved.contains(&format!("-A -u {svc} -s rr -p 60 --pe sip -o\n")),
        "{saved}"
    );
    // The example engine of the SDK, uploaded: a datagram's first word is its key.
    wvs.adm_ok(&["--plugin-load", "session", env!("WVS_EXAMPLE_PE_WASM")]);
    wvs.adm_ok(&[
        "-E", "-u", &svc, "-s", "rr", "-p", "60", "-o", "--pe", "session",
    ]);
    let words = ["tokA 1", "tokB 1", "tokA 2", "tokB 2", "tokC 1", "tokA 3"].map(String::from);
    let got = ask("5062", &words);
    assert!(
        got[0] == got[2] && got[2] == got[5] && got[1] == got[3] && got[0] != got[1],
        "a session's datagrams on one server, two sessions apart: {got:?}"
    );
    // An engine's name that is none: refused, nothing changed.
    let (code, _, err) = wvs.adm(&["-E", "-u", &svc, "-s", "rr", "-p", "60", "--pe", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("persistence engine"), "{err}");
}

/// Listeners started in namespaces for a test, stopped and reaped when it ends.
struct Listeners(Vec<std::process::Child>);

impl Listeners {
    /// On every server `rsI`, the command `cmd(I)` (its program and arguments).
    fn each(topo: &Topo, cmd: impl Fn(usize) -> Vec<String>) -> Self {
        Self(
            (1..=3)
                .map(|i| {
                    std::process::Command::new("ip")
                        .args(["netns", "exec", &topo.ns(&format!("rs{i}"))])
                        .args(cmd(i))
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .expect("a listener")
                })
                .collect(),
        )
    }

    /// On every server, a TCP port answering with the server's name.
    fn names(topo: &Topo, port: u16) -> Self {
        Self::each(topo, |i| {
            vec![
                "socat".into(),
                format!("TCP-LISTEN:{port},reuseaddr,fork"),
                format!("SYSTEM:echo rs{i}"),
            ]
        })
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

on_every_backend!(an_all_port_service_keeps_a_client_on_one_server_across_ports:
    an_all_port_service_keeps_a_client_on_one_server_across_ports_ring => "ring",
    an_all_port_service_keeps_a_client_on_one_server_across_ports_uring => "uring",
    an_all_port_service_keeps_a_client_on_one_server_across_ports_xdp => "xdp",
);

/// Every port of the VIP claimed from the kernel (nftables, or the XDP program) and
/// served by one persistent service.
fn an_all_port_service_keeps_a_client_on_one_server_across_ports(io: &str) {
    let topo = Topo::new(&format!("all{io}"), false);
    let wvs = Wvs::start_io(&topo, None, io);
    // ipvsadm's words: a service without a port is port 0, which needs -p.
    let (code, _, err) = wvs.adm(&["-A", "-t", VIP, "-s", "rr"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Zero port specified for non-persistent service"),
        "{err}"
    );
    wvs.adm_ok(&["-A", "-t", VIP, "-s", "rr", "-p", "120"]);
    for i in 1..=3 {
        wvs.adm_ok(&[
            "-a",
            "-t",
            &format!("{VIP}:0"),
            "-r",
            &format!("198.19.0.1{i}"),
            "-m",
        ]);
    }
    let saved = wvs.adm_ok(&["-S", "-n"]);
    assert!(
        saved.contains(&format!("-A -t {VIP}:0 -s rr -p 120\n"))
            && saved.contains(&format!("-a -t {VIP}:0 -r 198.19.0.11:0 -m -w 1\n")),
        "{saved}"
    );
    // A second TCP port on every server, answering with the server's name.
    let _listeners = Listeners::names(&topo, 8081);
    std::thread::sleep(Duration::from_millis(300));
    let first = topo.curl(&format!("http://{VIP}/"));
    for _ in 0..5 {
        assert_eq!(topo.curl(&format!("http://{VIP}/")), first, "port 80");
    }
    let out = topo.exec(
        "cli",
        &["socat", "-T", "5", "-", &format!("TCP4:{VIP}:8081")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        first,
        "port 8081 follows the client's template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One template for every port, listed as ipvsadm lists it (ports 0).
    let conns = wvs.adm_ok(&["-L", "-c", "-n"]);
    let n = first.trim_start_matches("rs");
    let templates: Vec<&str> = conns.lines().filter(|l| l.contains(":0 ")).collect();
    assert_eq!(templates.len(), 1, "{conns}");
    let f: Vec<&str> = templates[0].split_whitespace().collect();
    assert_eq!(
        f[3..],
        [
            "198.18.0.2:0",
            &format!("{VIP}:0"),
            &format!("198.19.0.1{n}:0")
        ],
        "{conns}"
    );
}

on_every_backend!(a_fwmark_service_keeps_a_client_on_one_server_across_ports_and_addresses:
    a_fwmark_service_keeps_a_client_on_one_server_across_ports_and_addresses_ring => "ring",
    a_fwmark_service_keeps_a_client_on_one_server_across_ports_and_addresses_uring => "uring",
    a_fwmark_service_keeps_a_client_on_one_server_across_ports_and_addresses_xdp => "xdp",
);

/// `ipvsadm -A -f 1 -p`: wvs's mark rules put two ports of a /28 of VIPs (routed to the
/// balancer, none its own) in one persistent fwmark service, claimed from the kernel by
/// the nftables table or the XDP program; one template holds a client's every address and
/// port; the rules and the service go through -S, -C and -R unchanged.
fn a_fwmark_service_keeps_a_client_on_one_server_across_ports_and_addresses(io: &str) {
    let topo = Topo::new(&format!("fwm{io}"), false);
    let wvs = Wvs::start_io(&topo, None, io);
    let rule = "ip daddr 198.18.1.0/28 tcp dport { 80, 8081 } mark 1";
    wvs.adm_ok(&["--add-mark-rule", rule]);
    wvs.adm_ok(&["-A", "-f", "1", "-s", "rr", "-p", "120"]);
    for i in 1..=3 {
        wvs.adm_ok(&["-a", "-f", "1", "-r", &format!("198.19.0.1{i}"), "-m"]);
    }
    let saved = wvs.adm_ok(&["-S", "-n"]);
    assert!(
        saved.starts_with(&format!("--add-mark-rule {rule}\n"))
            && saved.contains("-A -f 1 -s rr -p 120\n")
            && saved.contains("-a -f 1 -r 198.19.0.11:0 -m -w 1\n"),
        "{saved}"
    );
    let listing = wvs.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains("FWM  1 rr persistent 120\n  -> 198.19.0.11:0"),
        "{listing}"
    );
    // -C takes the rules too; -R gives back the same table.
    wvs.adm_ok(&["-C"]);
    assert_eq!(wvs.adm_ok(&["--list-mark-rules"]), "");
    let (code, _, err) = wvs.adm_stdin(&["-R"], &saved);
    assert_eq!(code, 0, "{err}");
    assert_eq!(wvs.adm_ok(&["-S", "-n"]), saved);
    let _listeners = Listeners::names(&topo, 8081);
    std::thread::sleep(Duration::from_millis(300));
    let first = topo.curl("http://198.18.1.1/");
    for last in [1, 7, 15] {
        assert_eq!(
            topo.curl(&format!("http://198.18.1.{last}/")),
            first,
            "port 80 of .{last}"
        );
    }
    let out = topo.exec("cli", &["socat", "-T", "5", "-", "TCP4:198.18.1.9:8081"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        first,
        "port 8081 of another address follows the client's template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One template (IPPROTO_IP, the mark as its address), and connections to the
    // addresses the client used, as ipvsadm -L -c lists them.
    let conns = wvs.adm_ok(&["-L", "-c", "-n"]);
    let n = first.trim_start_matches("rs");
    let templates: Vec<&str> = conns.lines().filter(|l| l.starts_with("IP ")).collect();
    assert_eq!(templates.len(), 1, "{conns}");
    let f: Vec<&str> = templates[0].split_whitespace().collect();
    assert_eq!(
        f[3..],
        ["198.18.0.2:0", "0.0.0.1:0", &format!("198.19.0.1{n}:0")],
        "{conns}"
    );
    assert!(
        conns.contains("198.18.1.9:8081") && conns.contains("198.18.1.15:80"),
        "{conns}"
    );
    let one = wvs.adm_ok(&["-L", "-c", "-n", "-f", "1"]);
    assert_eq!(one.lines().count(), conns.lines().count(), "{one}");
}

/// The oracle's scripted SCTP endpoints (raw sockets: the kernels wvs is developed on have
/// no SCTP; the oracle's `sctp` scenario runs the same script through the kernel's IPVS).
const SCTPSEQ: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/oracle/scenarios/sctpseq.py"
);

on_every_backend!(sctp_associations_are_balanced_with_checksums_tshark_accepts:
    sctp_associations_are_balanced_with_checksums_tshark_accepts_ring => "ring",
    sctp_associations_are_balanced_with_checksums_tshark_accepts_uring => "uring",
    sctp_associations_are_balanced_with_checksums_tshark_accepts_xdp => "xdp",
);

/// `ipvsadm --sctp-service`: three associations from one client, each set up, used and
/// shut down, on the three NAT servers in turn (two on another port than the VIP's, so wvs
/// rewrites their ports and recomputes the CRC32c both ways); every packet wvs sent has a
/// CRC32c that tshark's SCTP dissector finds good; -L, -S and -L -c as ipvsadm prints them.
fn sctp_associations_are_balanced_with_checksums_tshark_accepts(io: &str) {
    let topo = Topo::new(&format!("sctp{io}"), false);
    let wvs = Wvs::start_io(&topo, None, io);
    let svc = format!("{VIP}:5060");
    wvs.adm_ok(&["-A", "--sctp-service", &svc, "-s", "rr"]);
    for rs in ["198.19.0.11:5060", "198.19.0.12:3868", "198.19.0.13:3868"] {
        wvs.adm_ok(&["-a", "--sctp-service", &svc, "-r", rs, "-m"]);
    }
    let logs: Vec<_> = (1..=3)
        .map(|i| topo.dir.join(format!("sctp-rs{i}.log")))
        .collect();
    let _servers = Listeners::each(&topo, |i| {
        vec![
            "python3".into(),
            SCTPSEQ.into(),
            "server".into(),
            format!("rs{i}"),
            format!("198.19.0.1{i}"),
            logs[i - 1].display().to_string(),
        ]
    });
    // What wvs sends is captured where it arrives (its own sends bypass the qdisc, which
    // a capture on its interfaces would not see): at the client, and at rs2.
    let capture = |ns: &str| {
        let pcap = topo.dir.join(format!("sctp-{ns}.pcap"));
        let child = topo.tshark(ns, "eth0", "sctp", &["-a", "duration:12"], &pcap);
        (child, pcap)
    };
    let captures = [capture("cli"), capture("rs2")];
    for cport in ["41001", "41002", "41003"] {
        let out = topo.exec(
            "cli",
            &[
                "python3",
                SCTPSEQ,
                "client",
                VIP,
                "5060",
                cport,
                "init",
                "cookie",
                "data",
                "hb",
                "shutdown",
                "shutdown-complete",
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!(
                "{cport}: init>INIT_ACK cookie>COOKIE_ACK data>SACK hb>HEARTBEAT_ACK \
                 shutdown>SHUTDOWN_ACK shutdown-complete>-"
            ),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // rr, newest server first (IPVS adds at the head): rs3, rs2, rs1; each saw its whole
    // association on its own port, every CRC32c right.
    for (i, cport) in [(3, 41001), (2, 41002), (1, 41003)] {
        let log = std::fs::read_to_string(&logs[i - 1]).expect("a server's log");
        let port = if i == 1 { 5060 } else { 3868 };
        let want: Vec<String> = [
            "INIT",
            "COOKIE_ECHO",
            "DATA",
            "HEARTBEAT",
            "SHUTDOWN",
            "SHUTDOWN_COMPLETE",
        ]
        .iter()
        .map(|c| format!("rs{i} got {c} 198.18.0.2:{cport} -> :{port} crc ok"))
        .collect();
        assert_eq!(log.lines().collect::<Vec<_>>(), want, "rs{i}");
    }
    assert!(
        wvs.adm_ok(&["-L", "-n"])
            .contains(&format!("SCTP {svc} rr\n  -> 198.19.0.11:5060")),
        "{}",
        wvs.adm_ok(&["-L", "-n"])
    );
    let saved = wvs.adm_ok(&["-S", "-n"]);
    assert!(
        saved.starts_with(&format!(
            "-A --sctp-service {svc} -s rr\n-a --sctp-service {svc} -r 198.19.0.11:5060 -m -w 1\n"
        )),
        "{saved}"
    );
    let conns = wvs.adm_ok(&["-L", "-c", "-n"]);
    let closed: Vec<&str> = conns
        .lines()
        .filter(|l| l.starts_with("SCTP") && l.contains(" CLOSED "))
        .collect();
    assert_eq!(closed.len(), 3, "{conns}");
    // Each association: 6 packets from the client and 5 answers; rs2 had one of them.
    for ((mut child, pcap), want) in captures.into_iter().zip([3 * 11, 11]) {
        let _ = child.wait();
        let status = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&pcap)
            .args(["-o", "sctp.checksum:CRC 32c", "-T", "fields"])
            .args(["-e", "sctp.srcport", "-e", "sctp.checksum.status"])
            .output()
            .expect("tshark -r");
        let text = String::from_utf8_lossy(&status.stdout);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), want, "{}: {text}", pcap.display());
        assert!(
            rows.iter().all(|r| r.ends_with("\t1")),
            "a bad CRC32c: {text}"
        );
    }
}

/// The client of [`offloaded_connections_are_counted_listed_and_leave_with_their_server`]:
/// one keep-alive connection to the VIP, 50 requests, then (once the file named by argv[1]
/// exists) one more with a 2 s timeout.
const KEEPALIVE_CLIENT: &str = r#"
import os, socket, sys, time
s = socket.create_connection(("198.18.100.1", 80), timeout=5)
def ask():
    s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise EOFError
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        body += s.recv(4096)
for i in range(50):
    ask()
print("asked 50", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
s.settimeout(2)
try:
    ask()
    print("after: answered", flush=True)
except socket.timeout:
    print("after: timeout", flush=True)
except (EOFError, OSError) as e:
    print("after: " + type(e).__name__, flush=True)
"#;

/// With `--offload tc`: a keep-alive connection's requests pass wvs by, yet its counters,
/// its connection listing and the connection's timer read as without the offload; removing
/// its server takes its flows out of the program at once, and its next request goes to wvs,
/// which ended the connection with its server (expire_nodest_conn, wvs's default) and
/// answers with a reset.
#[test]
fn offloaded_connections_are_counted_listed_and_leave_with_their_server() {
    use std::io::BufRead;
    let topo = Topo::new("offka", false);
    let wvs = Wvs::start_with(&topo, Some(example()), &["--offload", "tc"]);
    let go = topo.dir.join("go");
    let mut client = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "python3",
            "-c",
            KEEPALIVE_CLIENT,
        ])
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = std::io::BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "asked 50", "the client's 50 requests were answered");
    // What the program carried is merged before the API answers (no wait here).
    let stats = wvs.stats();
    assert_eq!(stats.get("offloaded"), Some(&1), "{stats:?}");
    assert!(
        stats.get("rx").copied().unwrap_or(u64::MAX) < 60,
        "the requests went through wvs's rings: {stats:?}"
    );
    let svc = format!("{VIP}:80");
    let listing = wvs.adm_ok(&["-L", "-n", "--stats", "-t", &svc]);
    let line = listing
        .lines()
        .find(|l| l.starts_with("TCP"))
        .unwrap_or_else(|| panic!("{listing}"));
    let col = |n: usize| -> u64 { line.split_whitespace().nth(n).unwrap().parse().unwrap() };
    // Conns, InPkts, OutPkts: the 50 requests' segments and their answers.
    assert_eq!(col(2), 1, "{listing}");
    assert!(col(3) >= 50 && col(4) >= 50, "packets merged: {listing}");
    let conns = wvs.get_json("/api/v1/connections");
    let list = conns["connections"].as_array().expect("a list");
    let c = list
        .iter()
        .find(|c| c["protocol"] == "tcp" && c["state"] == "ESTABLISHED")
        .unwrap_or_else(|| panic!("{conns}"));
    assert_eq!(c["offloaded"], true, "{c}");
    // Its timer counts from the last carried packet: ESTABLISHED's 900 s, less a few.
    let left = c["expires_ms"].as_u64().unwrap();
    assert!((890_000..=900_000).contains(&left), "{c}");
    // The server goes: its flows leave the program's map with the change.
    let real = c["real"].as_str().unwrap().to_string();
    wvs.adm_ok(&["-d", "-t", &svc, "-r", &real]);
    let flows = || {
        let (_, text) = wvs.api("GET", "/metrics", None, None, None);
        text.lines()
            .find_map(|l| {
                l.strip_prefix("wvs_offload_flows ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(u64::MAX)
    };
    let t = std::time::Instant::now();
    while flows() != 0 && t.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(flows(), 0, "the removed server's flows left the map");
    std::fs::write(&go, "").expect("go");
    let after = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(
        after, "after: ConnectionResetError",
        "wvs, not the gone server, answers the next request"
    );
    assert!(wvs.stats().get("resets_sent").copied().unwrap_or(0) >= 1);
    let _ = client.wait();
}

/// iperf3's UDP test from client port `cport`, datagrams of `len` bytes at `rate` for 2 s,
/// through the VIP: the datagrams it sent.
fn iperf3_udp(topo: &Topo, cport: u16, len: u16, rate: &str) -> u64 {
    use std::process::Command;
    let server = Command::new("ip")
        .args(["netns", "exec", &topo.ns("rs1"), "iperf3", "-s", "-1", "-D"])
        .status()
        .expect("iperf3 -s");
    assert!(server.success());
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.ns("cli"), "iperf3", "-c", VIP, "-u"])
        .args(["--cport", &cport.to_string(), "-l", &len.to_string()])
        .args(["-b", rate, "-t", "2", "-J"])
        .output()
        .expect("iperf3 -c");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "iperf3: {text}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("iperf3 json");
    report["end"]["sum"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("{text}"))
}

/// With `--offload tc`, a busy UDP flow is carried by the program after its 8th datagram
/// and counted as if wvs had forwarded each one; a quiet flow (a datagram every 25 ms)
/// stays with wvs, whose rings take many such flows faster (consts::OFFLOAD_UDP_GAP_MS).
#[test]
fn a_busy_udp_flow_is_offloaded_and_counted_exactly() {
    let topo = Topo::new("offudp", false);
    let cfg = common::iperf3_config(&topo);
    let wvs = Wvs::start_with(&topo, Some(&cfg), &["--offload", "tc"]);
    let udp_in = || {
        let svc = wvs.get_json(&format!("/api/v1/services/udp/{VIP}:5201"));
        let s = &svc["stats"];
        (
            s["inpkts"].as_u64().expect("inpkts"),
            s["inbytes"].as_u64().expect("inbytes"),
        )
    };
    let conn = |cport: u16| {
        let conns = wvs.get_json("/api/v1/connections");
        conns["connections"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|c| {
                c["protocol"] == "udp"
                    && c["client"]
                        .as_str()
                        .is_some_and(|a| a.ends_with(&format!(":{cport}")))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no UDP connection from port {cport}: {conns}"))
    };

    // 1200-byte datagrams (1228 in IP), 4,000 a second: carried.
    let rx0 = wvs.stats().get("rx").copied().unwrap_or(0);
    let sent = iperf3_udp(&topo, 41001, 1200, "40M");
    let (pkts, bytes) = udp_in();
    // iperf3 also sends a datagram or two of 4 bytes to open the flow (32 in IP).
    let small = pkts - sent;
    assert!(small <= 3, "UDP packets in: {pkts} for {sent} sent");
    assert_eq!(bytes, sent * 1228 + small * 32, "UDP bytes in, exactly");
    let stats = wvs.stats();
    let through = stats.get("rx").copied().unwrap_or(u64::MAX) - rx0;
    assert!(
        sent > 5000 && through < sent / 10,
        "{through} frames through wvs's rings of {sent} datagrams: {stats:?}"
    );
    let c = conn(41001);
    assert_eq!(c["offloaded"], true, "{c}");

    // 40 datagrams of 100 bytes a second: through wvs, every one.
    let rx0 = wvs.stats().get("rx").copied().unwrap_or(0);
    let (pkts0, _) = udp_in();
    let sent = iperf3_udp(&topo, 41002, 100, "32K");
    let (pkts, _) = udp_in();
    assert!(
        pkts - pkts0 >= sent && pkts - pkts0 <= sent + 3,
        "{pkts0} → {pkts} for {sent}"
    );
    let through = wvs.stats().get("rx").copied().unwrap_or(0) - rx0;
    assert!(
        through >= sent,
        "{through} frames through wvs for {sent} datagrams"
    );
    let c = conn(41002);
    assert!(
        c.get("offloaded").is_none(),
        "not offloaded (no field): {c}"
    );
}
