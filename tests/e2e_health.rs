//! End to end, health checks: wvs checks its real servers itself (keepalived's checkers,
//! with rise and fall) and schedules around the failed ones. Real nginx servers in
//! namespaces, stopped and started again; real curl clients.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{Topo, VIP, Wvs};

/// VIP:80 to the three nginx servers, round robin, with `check` as the service's check.
fn config(topo: &Topo, check: &str) -> PathBuf {
    let p = topo.dir.join("health.toml");
    let mut c = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n{check}\n"
    );
    for i in 1..=3 {
        c += &format!("[[service.real]]\naddress = \"198.19.0.1{i}:80\"\n");
    }
    std::fs::write(&p, c).expect("config");
    p
}

fn nginx(topo: &Topo, i: u32, up: bool) {
    let conf = topo.dir.join(format!("rs{i}/nginx.conf"));
    let conf = conf.to_str().expect("path");
    let mut args = vec!["nginx", "-c", conf];
    if !up {
        args.extend(["-s", "stop"]);
    }
    let out = topo.exec(&format!("rs{i}"), &args);
    assert!(
        out.status.success(),
        "nginx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if !up {
        // `-s stop` only signals: wait until the port is closed.
        let t0 = Instant::now();
        while !topo
            .exec(&format!("rs{i}"), &["ss", "-Htln", "sport = :80"])
            .stdout
            .is_empty()
        {
            assert!(t0.elapsed() < Duration::from_secs(5), "nginx did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The health of real server `real` of the service, as the API reports it.
fn health(w: &Wvs, real: &str) -> serde_json::Value {
    let svcs = w.get_json("/api/v1/services");
    let list = svcs.as_array().cloned().unwrap_or_default();
    for s in list {
        for r in s["reals"].as_array().cloned().unwrap_or_default() {
            if r["address"] == real {
                return r;
            }
        }
    }
    panic!("no real server {real}: {svcs}");
}

/// Wait until `real`'s check state is `state`; returns how long that took.
fn wait_state(w: &Wvs, real: &str, state: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let r = health(w, real);
        if r["health"]["state"] == state {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{real} not {state} after {limit:?}: {r}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Clients in a loop, one connection each (curl -m 2): every reply's server, and the
/// failures with their times.
struct Load {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, Result<String, String>)>>,
}

impl Load {
    fn start(topo: &Topo) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, ns) = (stop.clone(), topo.ns("cli"));
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let t0 = Instant::now();
            // Bounded in count and time whatever happens.
            while !flag.load(Relaxed) && seen.len() < 5000 && t0.elapsed() < Duration::from_secs(60)
            {
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns, "curl", "-sS", "-m", "2"])
                    .arg(format!("http://{VIP}/"))
                    .output()
                    .expect("curl");
                let r = if out.status.success() {
                    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                };
                seen.push((Instant::now(), r));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, Result<String, String>)> {
        self.stop.store(true, Relaxed);
        self.thread.join().expect("load thread")
    }
}

/// nginx stopped on one server: within fall × interval + timeout the check takes it out,
/// and from then on no request fails; started again, it is served after rise passes.
#[test]
fn a_stopped_server_is_taken_out_and_comes_back() {
    let topo = Topo::new("hck", false);
    let (interval, timeout, rise, fall) = (0.5, 0.4, 2u32, 2u32);
    let cfg = config(
        &topo,
        &format!(
            "check = {{ type = \"http\", path = \"/\", interval = {interval}, timeout = {timeout}, \
             retry_delay = {interval}, rise = {rise}, fall = {fall} }}"
        ),
    );
    let w = Wvs::start(&topo, Some(&cfg));
    for i in 1..=3 {
        wait_state(
            &w,
            &format!("198.19.0.1{i}:80"),
            "up",
            Duration::from_secs(3),
        );
    }
    // Every server has had a check pass before the load starts.
    std::thread::sleep(Duration::from_millis(1200));
    let load = Load::start(&topo);
    std::thread::sleep(Duration::from_millis(1000));

    let stopped = Instant::now();
    nginx(&topo, 2, false);
    let bound = Duration::from_secs_f64(f64::from(fall) * interval + timeout);
    let took = wait_state(&w, "198.19.0.12:80", "down", Duration::from_secs(10));
    let down_at = Instant::now();
    eprintln!("rs2 down {took:?} after nginx stopped (bound {bound:?})");
    // The API is polled every 25 ms: allow that much and the configuration poll.
    assert!(
        took <= bound + Duration::from_millis(300),
        "detection took {took:?}, more than fall × interval + timeout = {bound:?}"
    );
    let r = health(&w, "198.19.0.12:80");
    assert_eq!(r["scheduled"], false, "{r}");
    assert_eq!(r["health"]["last"]["detail"], "connection refused", "{r}");
    assert_eq!(r["health"]["failures"], fall, "{r}");
    // Two seconds of requests to the other two only.
    std::thread::sleep(Duration::from_secs(2));
    let metrics = w.api("GET", "/metrics", None, None, None).1;
    assert!(
        metrics.lines().any(|l| l.starts_with("wvs_backend_up{")
            && l.contains("remote_address=\"198.19.0.12\"")
            && l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains("wvs_backend_check_latency_seconds{"),
        "{metrics}"
    );
    let listing = w.adm_ok(&["-L", "-n"]);
    assert!(
        !listing.contains("198.19.0.12:80"),
        "a server out of scheduling is not listed, as keepalived deletes it:\n{listing}"
    );

    let started = Instant::now();
    nginx(&topo, 2, true);
    let back = wait_state(&w, "198.19.0.12:80", "up", Duration::from_secs(10));
    let rise_bound = Duration::from_secs_f64(f64::from(rise) * interval + timeout);
    eprintln!("rs2 up {back:?} after nginx started (bound {rise_bound:?})");
    assert!(back <= rise_bound + Duration::from_millis(300), "{back:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let seen = load.finish();

    let during: Vec<_> = seen
        .iter()
        .filter(|(t, r)| *t >= stopped && *t < down_at && r.is_err())
        .collect();
    let after: Vec<_> = seen
        .iter()
        .filter(|(t, r)| *t >= down_at && r.is_err())
        .collect();
    let served_after_down = seen
        .iter()
        .filter(|(t, r)| *t >= down_at && *t < started && r.as_deref() == Ok("rs2"))
        .count();
    let rs2_again = seen
        .iter()
        .filter(|(t, r)| *t > started + back && r.as_deref() == Ok("rs2"))
        .count();
    eprintln!(
        "requests: {} in all; failed during detection: {}, after: {}; rs2 served again: {rs2_again}",
        seen.len(),
        during.len(),
        after.len()
    );
    assert!(
        after.is_empty(),
        "requests failed after detection: {after:?}"
    );
    assert_eq!(served_after_down, 0, "rs2 got connections while down");
    assert!(rs2_again > 0, "rs2 is served again once up");
    let log = w.log_text();
    assert!(log.contains("real server DOWN"), "{log}");
    assert!(log.contains("real server UP"), "{log}");
}

/// An HTTP check that expects another status (204; nginx answers 200) marks the server
/// down, and its service sends nothing there.
#[test]
fn an_http_check_expecting_another_status_marks_the_server_down() {
    let topo = Topo::new("hst", false);
    let p = topo.dir.join("health.toml");
    let mut c =
        format!("[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\n");
    for i in 1..=3 {
        c += &format!("[[service.real]]\naddress = \"198.19.0.1{i}:80\"\n");
        if i == 1 {
            c += "check = { type = \"http\", status = [\"204\"], interval = 0.3, timeout = 0.3, retry_delay = 0.3 }\n";
        }
    }
    std::fs::write(&p, c).expect("config");
    let w = Wvs::start(&topo, Some(&p));
    wait_state(&w, "198.19.0.11:80", "down", Duration::from_secs(5));
    let r = health(&w, "198.19.0.11:80");
    assert_eq!(r["health"]["last"]["detail"], "HTTP 200", "{r}");
    assert!(
        health(&w, "198.19.0.12:80")["health"].is_null(),
        "rs2 is not checked"
    );
    let answers: Vec<String> = (0..12)
        .map(|_| topo.curl(&format!("http://{VIP}/")))
        .collect();
    let tally = Topo::tally(answers);
    assert_eq!(
        tally.into_iter().collect::<Vec<_>>(),
        vec![("rs2".to_string(), 6), ("rs3".to_string(), 6)]
    );
}

/// `inhibit_on_failure`, set with `wvs adm`: a failed server keeps its place with weight 0
/// in `wvs adm -L -n`, and `-S` writes the check back.
#[test]
fn inhibit_on_failure_shows_weight_zero() {
    let topo = Topo::new("hin", false);
    let cfg = config(&topo, "");
    let w = Wvs::start(&topo, Some(&cfg));
    w.adm_ok(&[
        "-E",
        "-t",
        &format!("{VIP}:80"),
        "-s",
        "rr",
        "--check",
        "http:/",
        "--check-interval",
        "0.3",
        "--check-timeout",
        "0.3",
        "--fall",
        "1",
        "--inhibit-on-failure",
    ]);
    wait_state(&w, "198.19.0.13:80", "up", Duration::from_secs(3));
    nginx(&topo, 3, false);
    wait_state(&w, "198.19.0.13:80", "down", Duration::from_secs(5));
    let listing = w.adm_ok(&["-L", "-n"]);
    let line = listing
        .lines()
        .find(|l| l.contains("198.19.0.13:80"))
        .unwrap_or_else(|| panic!("rs3 is listed:\n{listing}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[3], "0", "weight 0: {line}");
    let r = health(&w, "198.19.0.13:80");
    assert_eq!(
        (r["weight"].as_u64(), r["scheduled"].as_bool()),
        (Some(0), Some(true))
    );
    let answers: Vec<String> = (0..6)
        .map(|_| topo.curl(&format!("http://{VIP}/")))
        .collect();
    assert!(!answers.iter().any(|a| a == "rs3"), "{answers:?}");
    let saved = w.adm_ok(&["-S", "-n"]);
    assert!(
        saved.contains(
            "--check http:/ --check-interval 0.3 --check-timeout 0.3 --fall 1 --inhibit-on-failure"
        ),
        "{saved}"
    );
    assert!(
        saved.contains("-r 198.19.0.13:80 -m -w 1"),
        "the configured weight is saved: {saved}"
    );
    nginx(&topo, 3, true);
    wait_state(&w, "198.19.0.13:80", "up", Duration::from_secs(5));
    let r = health(&w, "198.19.0.13:80");
    assert_eq!(r["weight"].as_u64(), Some(1), "{r}");
}
