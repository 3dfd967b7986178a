//! End to end, schedulers: real curl through the real `wvs` binary to real nginx, with the
//! IPVS schedulers chosen in the configuration file. Needs root (see e2e_nat.rs).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Topo, VIP, Wvs};

fn config(topo: &Topo, scheduler: &str, weights: [u32; 3]) -> std::path::PathBuf {
    let mut c = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"{scheduler}\"\n"
    );
    for (i, w) in weights.iter().enumerate() {
        c += &format!(
            "[[service.real]]\naddress = \"198.19.0.1{}:80\"\nweight = {w}\n",
            i + 1
        );
    }
    let p = topo.dir.join("wvs.toml");
    std::fs::write(&p, c).expect("config");
    p
}

fn get(topo: &Topo, n: usize) -> Vec<(String, usize)> {
    Topo::tally((0..n).map(|_| topo.curl(&format!("http://{VIP}/"))))
        .into_iter()
        .collect()
}

fn tally(pairs: &[(&str, usize)]) -> Vec<(String, usize)> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

#[test]
fn wrr_with_weights_3_2_1() {
    let topo = Topo::new("wrr", false);
    let cfg = config(&topo, "wrr", [3, 2, 1]);
    let _wvs = Wvs::start(&topo, Some(&cfg));
    assert_eq!(
        get(&topo, 60),
        tally(&[("rs1", 30), ("rs2", 20), ("rs3", 10)])
    );
}

#[test]
fn wlc_steers_around_long_lived_connections() {
    steers_around_long_lived_connections("wlc");
}

#[test]
fn lc_steers_around_long_lived_connections() {
    steers_around_long_lived_connections("lc");
}

fn steers_around_long_lived_connections(scheduler: &str) {
    let topo = Topo::new(scheduler, false);
    let cfg = config(&topo, scheduler, [1, 1, 1]);
    let wvs = Wvs::start(&topo, Some(&cfg));
    // Two connections held open: (w)lc puts them on rs3, then rs2 (schedulers see the real
    // servers newest first, as IPVS, and ties go to the first; rs3's 256 > 0).
    let mut held = Vec::new();
    for _ in 0..2 {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.ns("cli"),
                "socat",
                "-T",
                "60",
                "-",
                &format!("TCP:{VIP}:80"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        held.push(child);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Each short request leaves an inactive connection (TIME_WAIT) on its server: 1 per
    // request, far below the 256 that one active connection weighs.
    assert_eq!(get(&topo, 10), tally(&[("rs1", 10)]));
    for mut c in held {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(wvs);
}

#[test]
fn sh_keeps_a_client_on_one_server() {
    let topo = Topo::new("sh", false);
    let cfg = config(&topo, "sh", [1, 1, 1]);
    let _wvs = Wvs::start(&topo, Some(&cfg));
    let t = get(&topo, 20);
    assert_eq!(t.len(), 1, "one client, one server: {t:?}");
    assert_eq!(t[0].1, 20);
}

#[test]
fn no_available_server_is_refused_at_once() {
    // All servers quiesced: IPVS answers a new connection with ICMP port unreachable from the
    // VIP, so the client fails at once ("connection refused") instead of timing out.
    let topo = Topo::new("refuse", false);
    let cfg = config(&topo, "wlc", [0, 0, 0]);
    let wvs = Wvs::start(&topo, Some(&cfg));
    let t0 = std::time::Instant::now();
    let out = topo.exec(
        "cli",
        &["curl", "-sS", "-m", "5", &format!("http://{VIP}/")],
    );
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl: couldn't connect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(2),
        "refused at once, not timed out: {took:?}"
    );
    let s = wvs.stats();
    assert!(s.get("icmp_sent").copied().unwrap_or(0) >= 1, "{s:?}");
}
