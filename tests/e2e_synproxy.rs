//! The synproxy end to end (docs/defense.md, "Synproxy"): real curl, nginx, vsftpd and
//! hping3 in namespaces, the real `wvs` binary. A service with `synproxy = "on"` answers
//! every SYN with a cookie from the VIP; only a client that completes the handshake makes
//! a connection, whose server is then sent the client's own SYN. Checked: HTTP and a
//! 100 MB download byte-exact with the client's and the server's `ss -i` showing
//! timestamps, SACK and window scaling negotiated; persistence; FTP with its helper; a
//! server that refuses (the client gets a reset at once, nothing stays) and one that never
//! answers (a reset after the connect timeout); and a flood of spoofed SYNs that makes no
//! entry and reaches no server while real clients are served.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TOPOLOGY, Topo, VIP, Wvs};

/// VIP:port over the three servers' `rport`, round robin, with `extra` lines.
fn config(topo: &Topo, port: u16, rport: u16, extra: &str) -> PathBuf {
    let p = topo.dir.join("synproxy.toml");
    let mut c = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:{port}\"\nscheduler = \"rr\"\n\
         synproxy = \"on\"\n{extra}\n"
    );
    for i in 1..=3 {
        c += &format!("[[service.real]]\naddress = \"198.19.0.1{i}:{rport}\"\n");
    }
    std::fs::write(&p, c).expect("config");
    p
}

fn synproxy(w: &Wvs) -> serde_json::Value {
    w.get_json("/api/v1/stats")["datapath"]["synproxy"].clone()
}

fn event(w: &Wvs, name: &str) -> u64 {
    synproxy(w)[name].as_u64().unwrap_or(0)
}

/// The TCP connections `ss -tin` lists in namespace `ns` with `peer` (address:port).
fn ss(topo: &Topo, ns: &str, peer: &str) -> String {
    let out = topo.exec(ns, &["ss", "-tin", "dst", peer]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The sources of the SYNs (without ACK) in the capture files `pcaps`.
fn syn_sources(pcaps: &[PathBuf]) -> Vec<String> {
    pcaps
        .iter()
        .flat_map(|p| {
            let out = Command::new("tshark")
                .arg("-r")
                .arg(p)
                .args(["-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0"])
                .args(["-T", "fields", "-e", "ip.src"])
                .output()
                .expect("tshark -r");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// hping3 sending SYNs from random sources to VIP:80 from the client's namespace, paced by
/// `pace` (`-i uN -c N`, or `--flood`), for at most `secs`.
fn hping3(topo: &Topo, secs: u32, pace: &[&str]) -> std::process::Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "timeout",
            &secs.to_string(),
        ])
        .args(["hping3", "-q", "-S", "-p", "80", "--rand-source"])
        .args(pace)
        .arg(VIP)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hping3")
}

#[test]
fn http_and_a_100_mb_download_through_the_synproxy_with_every_option() {
    let topo = Topo::new("sphttp", true);
    let w = Wvs::start(&topo, Some(&config(&topo, 80, 80, "")));
    let list = w.adm_ok(&["-L", "-n"]);
    assert!(list.contains(":80 rr synproxy on"), "{list}");
    let answers: Vec<String> = (0..30)
        .map(|_| topo.curl(&format!("http://{VIP}/")))
        .collect();
    assert_eq!(
        Topo::tally(answers).into_iter().collect::<Vec<_>>(),
        Topo::even(30),
        "30 requests over 3 servers, rr"
    );
    assert_eq!(event(&w, "cookies_sent"), 30, "{}", synproxy(&w));
    assert_eq!(event(&w, "acks_accepted"), 30, "{}", synproxy(&w));
    assert_eq!(event(&w, "joined"), 30, "{}", synproxy(&w));
    assert_eq!(event(&w, "half_joined"), 0, "{}", synproxy(&w));
    // One connection's handshakes, seen on the client's link and the servers': the
    // client's SYN and wvs's cookie SYN-ACK, then wvs's SYN (the client's) and the
    // server's SYN-ACK, each with SACK permitted, timestamps and a window scale.
    let pcaps: Vec<(String, PathBuf)> = ["cli", "rs1", "rs2", "rs3"]
        .iter()
        .map(|n| (n.to_string(), topo.dir.join(format!("syn-{n}.pcap"))))
        .collect();
    let mut caps: Vec<_> = pcaps
        .iter()
        .map(|(n, p)| {
            topo.tshark(
                n,
                "eth0",
                "tcp[tcpflags] & tcp-syn != 0",
                &["-a", "duration:4"],
                p,
            )
        })
        .collect();
    // A held connection, while both ends' TCP say what they negotiated (`ss -i`: the window
    // scales, and an MSS 12 bytes short of the path's for the timestamps; this iproute2
    // prints no `ts` or `sack` for any connection, so the capture shows those).
    let mut hold = Command::new("ip")
        .args(["netns", "exec", &topo.ns("cli"), "python3", "-c"])
        .arg(format!(
            "import socket,time; s=socket.create_connection(('{VIP}',80)); time.sleep(3)"
        ))
        .spawn()
        .expect("python3");
    std::thread::sleep(Duration::from_millis(1000));
    let client = ss(&topo, "cli", &format!("{VIP}:80"));
    let server: String = (1..=3)
        .map(|i| ss(&topo, &format!("rs{i}"), "198.18.0.2"))
        .collect();
    assert!(hold.wait().expect("python3").success());
    for c in &mut caps {
        c.wait().expect("tshark");
    }
    for (side, text) in [("client", &client), ("server", &server)] {
        assert!(text.contains("ESTAB"), "{side}: {text}");
        assert!(text.contains("wscale:"), "{side}: {text}");
        assert!(
            text.contains("mss:1448"),
            "{side} without timestamps: {text}"
        );
    }
    // The client was told wvs's window scale (7); the server the client's own.
    assert!(client.contains("wscale:7,"), "{client}");
    let client_rcv = client
        .split("wscale:7,")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the client's scale");
    assert!(
        server.contains(&format!("wscale:{client_rcv},")),
        "the server got the client's scale {client_rcv}: {server}"
    );
    let mut handshakes = Vec::new();
    for (n, p) in &pcaps {
        let out = Command::new("tshark")
            .args(["-r"])
            .arg(p)
            .args(["-T", "fields", "-E", "separator=,"])
            .args(["-e", "tcp.flags.ack", "-e", "tcp.options.sack_perm"])
            .args([
                "-e",
                "tcp.options.timestamp.tsval",
                "-e",
                "tcp.options.wscale.shift",
            ])
            .output()
            .expect("tshark -r");
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            handshakes.push(format!("{n} {l}"));
        }
    }
    let complete = |syn_ack: &str| {
        handshakes.iter().any(|l| {
            let f: Vec<&str> = l.split([',', ' ']).collect();
            f.len() == 5
                && f[1] == syn_ack
                && !f[2].is_empty()
                && !f[3].is_empty()
                && !f[4].is_empty()
        })
    };
    assert!(
        handshakes.iter().filter(|l| l.starts_with("cli")).count() >= 2,
        "{handshakes:?}"
    );
    assert!(
        handshakes.iter().filter(|l| l.starts_with("rs")).count() >= 2,
        "{handshakes:?}"
    );
    assert!(complete("0") && complete("1"), "{handshakes:?}");
    assert!(
        handshakes.iter().all(|l| {
            let f: Vec<&str> = l.split([',', ' ']).collect();
            f.len() == 5 && !f[2].is_empty() && !f[3].is_empty() && !f[4].is_empty()
        }),
        "a SYN or SYN-ACK without SACK, timestamps or window scale: {handshakes:?}"
    );
    // 100 MB, byte for byte.
    let have = topo.download_big(None);
    let want = std::fs::read(topo.dir.join("big")).expect("source file");
    assert_eq!(have.len(), 100_000_000);
    assert!(
        have == want,
        "the downloaded bytes differ from the served file"
    );
    assert_eq!(w.drops("l4_bad_csum"), 0);
}

#[test]
fn persistence_and_the_ftp_helper_over_synproxied_connections() {
    let topo = Topo::new("spftp", false);
    let st = Command::new("bash")
        .args([TOPOLOGY, "vsftpd", &topo.prefix])
        .arg(&topo.dir)
        .status()
        .expect("bash");
    assert!(st.success(), "topology.sh vsftpd failed");
    let w = Wvs::start(&topo, Some(&config(&topo, 21, 21, "persistent = 300")));
    let want = std::fs::read(topo.dir.join("5m")).expect("the 5 MB file");
    for (k, mode) in [&[][..], &["--disable-epsv"][..], &["-P", "198.18.0.2"][..]]
        .iter()
        .enumerate()
    {
        let to = topo.dir.join(format!("got{k}"));
        let mut args = vec!["curl", "-sS", "-m", "60"];
        args.extend(mode.iter());
        let url = format!("ftp://{VIP}/5m");
        args.extend(["-o", to.to_str().expect("path"), &url]);
        let out = topo.exec("cli", &args);
        assert!(
            out.status.success(),
            "curl {mode:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::read(&to).expect("downloaded") == want, "{mode:?}");
    }
    // Three control connections, each synproxied and joined, all to one server (the
    // persistence template's); the data connections were expected, not synproxied.
    assert_eq!(event(&w, "joined"), 3, "{}", synproxy(&w));
    let list = w.adm_ok(&["-L", "-n", "--stats"]);
    let busy = list
        .lines()
        .filter(|l| l.trim_start().starts_with("->"))
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|c| c.parse::<u64>().ok())
                .is_some_and(|c| c > 0)
        })
        .count();
    assert_eq!(busy, 1, "persistence kept one server:\n{list}");
    let helpers = w.get_json("/api/v1/stats")["datapath"]["helpers"].clone();
    // The passive modes' data connections came to expected connections at the VIP.
    assert!(
        helpers["expects_matched"].as_u64().unwrap_or(0) >= 2,
        "{helpers}"
    );
    assert_eq!(helpers["faults"].as_u64().unwrap_or(0), 0, "{helpers}");
}

#[test]
fn a_refusing_server_and_a_silent_one_reset_the_client() {
    let topo = Topo::new("sprst", false);
    // Port 81: nothing listens there on the servers.
    let w = Wvs::start(&topo, Some(&config(&topo, 81, 81, "")));
    let t0 = Instant::now();
    let out = topo.exec(
        "cli",
        &["curl", "-sS", "-m", "10", &format!("http://{VIP}:81/")],
    );
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    // Reset: at once, while curl still checks its connect (7, "Couldn't connect"), or once
    // it sent its request (56, "Connection reset").
    assert!(matches!(out.status.code(), Some(7 | 56)), "curl: {err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(event(&w, "server_resets"), 1, "{}", synproxy(&w));
    let conns = w.adm_ok(&["-L", "-n", "-c"]);
    assert!(!conns.contains(":81"), "nothing stays:\n{conns}");
    // Port 82 is dropped on the servers: they never answer. The client's handshake was
    // done (with wvs); its request waits for a window, its probes send the SYN again, and
    // once the connect timeout (3 s) is over its next probe gets a reset.
    drop(w);
    let w = Wvs::start(&topo, Some(&config(&topo, 82, 82, "")));
    // (The namespaces, and these tables with them, go with the topology.)
    for i in 1..=3 {
        let out = topo.exec(
            &format!("rs{i}"),
            &[
                "nft",
                "table inet spdrop { chain input { type filter hook input priority 0; \
                 tcp dport 82 drop; }; }",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t0 = Instant::now();
    let out = topo.exec(
        "cli",
        &["curl", "-sS", "-m", "30", &format!("http://{VIP}:82/")],
    );
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(56), "curl: {err}");
    assert!(err.contains("reset"), "{err}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "reset after {took:?}"
    );
    assert!(event(&w, "syns_resent") >= 1, "{}", synproxy(&w));
    assert_eq!(event(&w, "joined"), 0, "{}", synproxy(&w));
}

#[test]
fn spoofed_syns_make_no_entry_and_reach_no_server() {
    spoofed_syns("spflood", "ring");
}

/// Under `--io xdp` the XDP program answers the SYNs, redirected back out, where that
/// sends: a veth sends such frames only into a peer that can take them (GRO on, or an XDP
/// program of its own). Until the client's side turns GRO on, wvs's datapath answers.
#[test]
fn spoofed_syns_make_no_entry_and_reach_no_server_xdp() {
    spoofed_syns("spfloodx", "xdp");
}

fn spoofed_syns(name: &str, io: &str) {
    let topo = Topo::new(name, false);
    let args = common::io_args(io);
    let w = Wvs::start_with(&topo, Some(&config(&topo, 80, 80, "")), &args);
    if io == "xdp" {
        w.wait_log(
            "the datapath answers SYNs with cookies: the kernel would drop",
            Duration::from_secs(5),
        );
        for _ in 0..5 {
            topo.curl(&format!("http://{VIP}/"));
        }
        assert_eq!(event(&w, "cookies_sent"), 5, "{}", synproxy(&w));
        let on = topo.exec("cli", &["ethtool", "-K", "eth0", "gro", "on"]);
        assert!(on.status.success(), "{on:?}");
        w.wait_log(
            "the XDP program answers SYNs with cookies",
            Duration::from_secs(5),
        );
    }
    // (The keeper tells the program at start which services answer with cookies, and
    // again every second.)
    std::thread::sleep(Duration::from_millis(1500));
    // Every SYN that reaches a real server (their stacks' own counters are no measure:
    // a connection whose ACK from wvs and first segment from the client cross counts two
    // passive opens in Linux).
    let pcaps: Vec<PathBuf> = (1..=3)
        .map(|i| topo.dir.join(format!("flood-rs{i}.pcap")))
        .collect();
    let mut caps: Vec<_> = pcaps
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let filter = "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn";
            topo.tshark(
                &format!("rs{}", i + 1),
                "eth0",
                filter,
                &["-a", "duration:14"],
                p,
            )
        })
        .collect();
    // 40,000 SYNs from random sources, about 20,000 a second, beside 50 real requests.
    let mut flood = hping3(&topo, 30, &["-i", "u50", "-c", "40000"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut served = 0;
    for _ in 0..50 {
        let out = topo.exec(
            "cli",
            &["curl", "-sS", "-m", "2", &format!("http://{VIP}/")],
        );
        served += usize::from(out.status.success());
    }
    flood.wait().expect("hping3");
    assert_eq!(served, 50, "real requests served during the flood");
    let cookies = event(&w, "cookies_sent");
    assert!(cookies >= 30_000, "{}", synproxy(&w));
    // With the offload (the default), the tc program answered the SYNs where the frames
    // arrived, and its socket filter kept them out of wvs's rings; under `--io xdp`, the
    // XDP program: wvs received the real clients' frames and not the flood's.
    if common::offloads(&args) || io == "xdp" {
        let rx = w.get_json("/api/v1/stats")["datapath"]["rx"]
            .as_u64()
            .unwrap_or(u64::MAX);
        assert!(rx < 5_000, "wvs received {rx} frames: {}", synproxy(&w));
    }
    // Only the real clients' connections were made, and only they reached a server.
    let before: usize = if io == "xdp" { 5 } else { 0 };
    assert_eq!(
        event(&w, "acks_accepted"),
        before as u64 + 50,
        "{}",
        synproxy(&w)
    );
    for c in &mut caps {
        c.wait().expect("tshark");
    }
    let sources = syn_sources(&pcaps);
    assert_eq!(sources.len(), 50, "SYNs at the servers: {sources:?}");
    assert!(sources.iter().all(|s| s == "198.18.0.2"), "{sources:?}");
    let conns = w.adm_ok(&["-L", "-n", "-c"]);
    let entries = conns.lines().filter(|l| l.starts_with("TCP")).count();
    assert!(entries <= before + 50, "{entries} entries:\n{conns}");
    assert!(
        !conns
            .lines()
            .any(|l| l.starts_with("TCP") && !l.contains("198.18.0.2:")),
        "an entry of a spoofed source:\n{conns}"
    );
}

/// trafgen sending SYNs from 32,768 sources in 198.18.128.0/17 to VIP:80 from the client's
/// namespace, as fast as it can, for at most `secs`.
fn trafgen(topo: &Topo, secs: u32) -> std::process::Child {
    let mac = |ns: &str, dev: &str| {
        let out = topo.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let conf = topo.dir.join("flood.cfg");
    std::fs::write(
        &conf,
        format!(
            "{{ eth(da={}, sa={}), ipv4(saddr=dinc(3323101184, 3323133951), daddr={VIP}, \
             ttl=64), tcp(sp=drnd(), dp=80, seq=drnd(), syn) }}\n",
            mac("lb", "c0"),
            mac("cli", "eth0")
        ),
    )
    .expect("trafgen's configuration");
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns("cli"),
            "timeout",
            &secs.to_string(),
        ])
        .args([
            "trafgen",
            "--dev",
            "eth0",
            "--cpus",
            "1",
            "--no-sock-mem",
            "-q",
            "--conf",
        ])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("trafgen")
}

/// The issue's flood: hping3 `--flood --rand-source` at the VIP, as fast as it sends, with
/// `--max-conns 100000`, while a client makes 200 requests with curl's 2 s timeout: at
/// least 199 served; the servers accept only the client's connections; the table holds
/// no entry of a spoofed source. (`scripts/synflood.sh served` runs the same flood through
/// nftables DNAT and wvs's default mode, for comparison.)
#[test]
fn a_flood_at_full_rate_leaves_the_real_clients_served() {
    full_rate("spfull", "hping3");
}

/// The same with trafgen at the highest rate it reaches.
#[test]
fn a_flood_at_full_rate_leaves_the_real_clients_served_trafgen() {
    full_rate("spfullt", "trafgen");
}

fn full_rate(name: &str, tool: &str) {
    let topo = Topo::new(name, false);
    let w = Wvs::start_with(
        &topo,
        Some(&config(&topo, 80, 80, "")),
        &["--max-conns", "100000"],
    );
    // The keeper's first merge tells the tc program which services answer with cookies.
    std::thread::sleep(Duration::from_millis(1500));
    let mut flood = if tool == "trafgen" {
        trafgen(&topo, 40)
    } else {
        hping3(&topo, 40, &["--flood"])
    };
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let mut served = 0;
    for _ in 0..200 {
        let out = topo.exec(
            "cli",
            &[
                "curl",
                "-sS",
                "-m",
                "2",
                "-o",
                "/dev/null",
                &format!("http://{VIP}/"),
            ],
        );
        served += usize::from(out.status.success());
    }
    let took = t0.elapsed();
    let cookies_mid = event(&w, "cookies_sent");
    // Stop the flood (hping3 and trafgen leave on SIGINT, as timeout would have it).
    let _ = Command::new("kill")
        .args(["-INT", &flood.id().to_string()])
        .status();
    flood.wait().expect("the flood");
    eprintln!(
        "full-rate flood ({tool}): {served} of 200 served in {took:?}; synproxy {}; wvs frames {}",
        synproxy(&w),
        w.get_json("/api/v1/stats")["datapath"]["rx"]
    );
    assert!(
        served >= 199,
        "{served} of 200 served during the flood ({took:?}): {}",
        synproxy(&w)
    );
    assert!(
        cookies_mid > 100_000,
        "the flood's SYNs were answered: {}",
        synproxy(&w)
    );
    // Only the client's connections were made, and the table holds nothing else.
    let accepted = event(&w, "acks_accepted");
    assert!((200..=210).contains(&accepted), "{}", synproxy(&w));
    let conns = w.adm_ok(&["-L", "-n", "-c"]);
    assert!(
        !conns
            .lines()
            .any(|l| l.starts_with("TCP") && !l.contains("198.18.0.2:")),
        "an entry of a spoofed source:\n{conns}"
    );
    let served_by = w.adm_ok(&["-L", "-n", "--stats"]);
    let to_servers: u64 = served_by
        .lines()
        .filter(|l| l.trim_start().starts_with("->"))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        to_servers, accepted,
        "connections to the servers:\n{served_by}"
    );
}
