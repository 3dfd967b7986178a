//! Application helpers end to end: real vsftpd servers behind VIP:21 with the built-in
//! `ftp` helper, nginx behind a full-NAT service with `proxy-v2`, real curl as the client.
//! Run as root (network namespaces).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TOPOLOGY, Topo, VIP, VIP6, Wvs};

/// Three anonymous vsftpd servers (see scripts/topology.sh `vsftpd`).
fn ftp_topo(name: &str) -> Topo {
    let topo = Topo::new(name, false);
    let st = Command::new("bash")
        .args([TOPOLOGY, "vsftpd", &topo.prefix])
        .arg(&topo.dir)
        .status()
        .expect("bash");
    assert!(st.success(), "topology.sh vsftpd failed");
    topo
}

/// VIP:21 to the three servers, round robin, with `extra` lines in the service.
fn ftp_config(topo: &Topo, extra: &str) -> PathBuf {
    let p = topo.dir.join("ftp.toml");
    let mut c = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:21\"\nscheduler = \"rr\"\n{extra}\n"
    );
    for i in 1..=3 {
        c += &format!("[[service.real]]\naddress = \"198.19.0.1{i}:21\"\n");
    }
    std::fs::write(&p, c).expect("config");
    p
}

/// curl from the client with `args`; panics with its error unless it succeeds.
fn curl(topo: &Topo, args: &[&str]) -> String {
    let mut all = vec!["curl", "-sS", "-m", "60"];
    all.extend(args);
    let out = topo.exec("cli", &all);
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn five_mb(topo: &Topo) -> Vec<u8> {
    std::fs::read(topo.dir.join("5m")).expect("the 5 MB file")
}

/// Download `ftp://VIP/5m` with curl's `mode` flags into `to` and check it byte for byte.
fn download(topo: &Topo, mode: &[&str], to: &Path) {
    let url = format!("ftp://{VIP}/5m");
    let mut args = mode.to_vec();
    args.extend(["-o", to.to_str().expect("path"), &url]);
    curl(topo, &args);
    let got = std::fs::read(to).expect("downloaded");
    assert!(
        got == five_mb(topo),
        "{mode:?}: {} bytes, not the file",
        got.len()
    );
}

fn helper_events(w: &Wvs) -> serde_json::Value {
    w.get_json("/api/v1/stats")["datapath"]["helpers"].clone()
}

fn event(w: &Wvs, name: &str) -> u64 {
    helper_events(w)[name].as_u64().unwrap_or(0)
}

/// The four modes curl has: EPSV (its default), PASV, EPRT and PORT (active, the server
/// connecting back from port 20 through the VIP), each several times, byte-exact.
#[test]
fn ftp_downloads_in_every_mode_through_the_vip() {
    let topo = ftp_topo("ftp");
    let w = Wvs::start(&topo, Some(&ftp_config(&topo, "")));
    // The default for port 21: the ftp helper, shown by -L.
    let list = w.adm_ok(&["-L", "-n"]);
    assert!(list.contains(":21 rr helper ftp"), "{list}");
    let client = "198.18.0.2";
    let modes: [(&str, Vec<&str>); 4] = [
        ("epsv", vec![]),
        ("pasv", vec!["--disable-epsv"]),
        ("eprt", vec!["-P", client]),
        ("port", vec!["-P", client, "--disable-eprt"]),
    ];
    for (name, flags) in &modes {
        for k in 0..3 {
            download(&topo, flags, &topo.dir.join(format!("got-{name}-{k}")));
        }
    }
    // PASV's reply was rewritten (a length change: 198,19,0,1x to 198,18,100,1); every
    // data connection was expected and taken.
    assert!(event(&w, "rewrites") >= 3, "{}", helper_events(&w));
    assert!(event(&w, "expects") >= 12, "{}", helper_events(&w));
    assert!(event(&w, "expects_matched") >= 6, "{}", helper_events(&w));
    assert_eq!(event(&w, "faults"), 0);
    assert_eq!(w.drops("l4_bad_csum"), 0);
}

/// FTP over IPv6 as IPVS helps it (`ip_vs_ftp.c`: EPSV and EPRT `|2|`): a second vsftpd
/// in each real server listening on its IPv6 address, [VIP6]:21 over them, and curl's two
/// IPv6 modes (EPSV, its default, and EPRT, the server connecting back from port 20),
/// each several times, byte-exact; an upload arrives whole.
#[test]
fn ftp_over_ipv6_downloads_in_epsv_and_eprt_and_uploads() {
    let topo = ftp_topo("ftp6");
    for i in 1..=3 {
        let d = topo.dir.join(format!("rs{i}"));
        let conf = std::fs::read_to_string(d.join("vsftpd.conf"))
            .expect("vsftpd.conf")
            .replace(
                "listen=YES",
                &format!("listen=NO\nlisten_ipv6=YES\nlisten_address6=2001:db8:19::1{i}"),
            )
            .replace("vsftpd.log", "vsftpd6.log");
        let path = d.join("vsftpd6.conf");
        std::fs::write(&path, conf).expect("vsftpd6.conf");
        let out = topo.exec(&format!("rs{i}"), &["vsftpd", path.to_str().expect("path")]);
        assert!(
            out.status.success(),
            "vsftpd6: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cfg = topo.dir.join("ftp6.toml");
    let mut c =
        format!("[[service]]\nprotocol = \"tcp\"\naddress = \"[{VIP6}]:21\"\nscheduler = \"rr\"\n");
    for i in 1..=3 {
        c += &format!("[[service.real]]\naddress = \"[2001:db8:19::1{i}]:21\"\n");
    }
    std::fs::write(&cfg, c).expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    let url = format!("ftp://[{VIP6}]/5m");
    for (name, flags) in [("epsv", vec![]), ("eprt", vec!["-P", "2001:db8:18::2"])] {
        for k in 0..3 {
            let to = topo.dir.join(format!("got6-{name}-{k}"));
            let mut args = flags.clone();
            args.extend(["-o", to.to_str().expect("path"), &url]);
            curl(&topo, &args);
            let got = std::fs::read(&to).expect("downloaded");
            assert!(
                got == five_mb(&topo),
                "{name}: {} bytes, not the file",
                got.len()
            );
        }
    }
    let src = topo.dir.join("5m");
    curl(
        &topo,
        &[
            "-T",
            src.to_str().expect("path"),
            &format!("ftp://[{VIP6}]/incoming/up6"),
        ],
    );
    let copies: Vec<Vec<u8>> = (1..=3)
        .filter_map(|i| std::fs::read(topo.dir.join(format!("rs{i}/ftp/incoming/up6"))).ok())
        .collect();
    assert_eq!(copies.len(), 1, "one server has the upload");
    assert!(copies[0] == five_mb(&topo), "the upload arrived whole");
    assert!(event(&w, "expects") >= 7, "{}", helper_events(&w));
    // The passive ones (the client's port filled in when it connects): 3 and the upload.
    assert!(event(&w, "expects_matched") >= 4, "{}", helper_events(&w));
    assert_eq!(event(&w, "faults"), 0);
    assert_eq!(w.drops("l4_bad_csum"), 0);
}

/// An upload (STOR) arrives whole on one server; one control session runs several
/// transfers, each with its own data connection.
#[test]
fn ftp_upload_and_several_transfers_in_one_session() {
    let topo = ftp_topo("ftpu");
    let w = Wvs::start(&topo, Some(&ftp_config(&topo, "")));
    let src = topo.dir.join("5m");
    curl(
        &topo,
        &[
            "-T",
            src.to_str().expect("path"),
            &format!("ftp://{VIP}/incoming/up"),
        ],
    );
    let copies: Vec<Vec<u8>> = (1..=3)
        .filter_map(|i| std::fs::read(topo.dir.join(format!("rs{i}/ftp/incoming/up"))).ok())
        .collect();
    assert_eq!(copies.len(), 1, "one server has the upload");
    assert!(copies[0] == five_mb(&topo), "the upload arrived whole");

    // One curl, one control connection (curl reuses it), three transfers, each with a
    // data connection of its own: all from the server that holds the session.
    let dir = topo.dir.to_str().expect("path").to_string();
    let out = curl(
        &topo,
        &[
            "-w",
            "%{num_connects}\n",
            "--disable-epsv",
            "-o",
            &format!("{dir}/s1"),
            &format!("ftp://{VIP}/5m"),
            "-o",
            &format!("{dir}/s2"),
            &format!("ftp://{VIP}/name"),
            "-o",
            &format!("{dir}/s3"),
            &format!("ftp://{VIP}/5m"),
        ],
    );
    let connects: Vec<&str> = out.lines().collect();
    assert_eq!(
        connects,
        ["2", "1", "1"],
        "the control connection and one data connection, then data connections: {out}"
    );
    assert!(std::fs::read(topo.dir.join("s1")).expect("s1") == five_mb(&topo));
    assert!(std::fs::read(topo.dir.join("s3")).expect("s3") == five_mb(&topo));
    let name = std::fs::read_to_string(topo.dir.join("s2")).expect("s2");
    assert!(name.starts_with("rs"), "{name}");
    drop(w);
}

/// `--helper none` leaves FTP's passive reply alone (the client is told the real
/// server's address, which it cannot reach), and `-S` keeps the choice; `--helper ftp`
/// brings it back.
#[test]
fn helpers_are_bound_by_adm_and_saved() {
    let topo = ftp_topo("ftpn");
    let w = Wvs::start(&topo, None);
    let vip = format!("{VIP}:21");
    w.adm_ok(&["-A", "-t", &vip, "-s", "rr", "--helper", "none"]);
    for i in 1..=3 {
        w.adm_ok(&["-a", "-t", &vip, "-r", &format!("198.19.0.1{i}:21"), "-m"]);
    }
    let save = w.adm_ok(&["-S", "-n"]);
    assert!(save.contains("--helper none"), "{save}");
    let out = topo.exec(
        "cli",
        &[
            "curl",
            "-sS",
            "-m",
            "8",
            "--disable-epsv",
            "-o",
            "/dev/null",
            &format!("ftp://{VIP}/name"),
        ],
    );
    assert!(
        !out.status.success(),
        "no helper: PASV names the real server"
    );
    w.adm_ok(&["-E", "-t", &vip, "-s", "rr", "--helper", "ftp"]);
    let list = w.adm_ok(&["-L", "-n"]);
    assert!(list.contains("rr helper ftp"), "{list}");
    let save = w.adm_ok(&["-S", "-n"]);
    assert!(save.contains("--helper ftp"), "{save}");
    // -R takes -S's lines back, helpers included.
    w.adm_ok(&["-C"]);
    let (code, _, err) = w.adm_stdin(&["-R"], &save);
    assert_eq!(code, 0, "{err}");
    assert_eq!(w.adm_ok(&["-S", "-n"]), save);
    let name = curl(&topo, &["--disable-epsv", &format!("ftp://{VIP}/name")]);
    assert!(name.starts_with("rs"), "{name}");
    // A scheduler is not a helper, and an unknown name is refused.
    let (code, _, err) = w.adm(&["-E", "-t", &vip, "-s", "rr", "--helper", "wrr"]);
    assert_ne!(code, 0);
    assert!(err.contains("not an application helper"), "{err}");
    let (code, _, err) = w.adm(&["-E", "-t", &vip, "-s", "rr", "--helper", "gopher"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown helper"), "{err}");
}

/// Passive and active mode on the other packet I/O backends: under `--io xdp` the XDP
/// program must redirect the data ports (20, 1024 up) of the VIP and of the servers too.
fn ftp_on(io: &str) {
    let topo = ftp_topo(&format!("f{}", &io[..1]));
    let w = Wvs::start_io(&topo, Some(&ftp_config(&topo, "")), io);
    for (name, flags) in [
        ("epsv", vec![]),
        ("pasv", vec!["--disable-epsv"]),
        ("port", vec!["-P", "198.18.0.2", "--disable-eprt"]),
    ] {
        download(&topo, &flags, &topo.dir.join(format!("got-{name}")));
    }
    assert!(event(&w, "expects_matched") >= 2, "{}", helper_events(&w));
}

#[test]
fn ftp_on_uring() {
    ftp_on("uring");
}

#[test]
fn ftp_on_xdp() {
    ftp_on("xdp");
}

/// A helper that traps on every call (WebAssembly text; wasmtime compiles it).
const TRAP_HELPER: &str = r#"(module
  (memory (export "memory") 2)
  (func (export "wvs_abi_version") (result i32) i32.const 1)
  (func (export "wvs_helper_shared") (result i32) i32.const 1024)
  (func (export "wvs_helper_flags") (result i32) i32.const 0)
  (func (export "wvs_helper_packet") (result i32) unreachable))"#;

/// A helper that traps is counted once per connection and the connection goes on
/// unmodified: FTP control sessions keep working (curl -I: SIZE and MDTM, no data
/// connection), and wvs with them.
#[test]
fn a_trapping_helper_leaves_control_sessions_working() {
    let topo = ftp_topo("ftpt");
    let trap = topo.dir.join("trap.wat");
    std::fs::write(&trap, TRAP_HELPER).expect("wat");
    let cfg = ftp_config(&topo, "helpers = [\"trap\", \"ftp\"]");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        format!(
            "[[plugin]]\nname = \"trap\"\npath = \"{}\"\n\n{text}",
            trap.display()
        ),
    )
    .expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    for k in 1..=3 {
        let head = curl(&topo, &["-I", &format!("ftp://{VIP}/5m")]);
        assert!(head.contains("Content-Length: 5000000"), "{head}");
        assert_eq!(event(&w, "faults"), k, "one fault per connection");
        // The failed instance is built again after a back-off (100, 200 ms...): a
        // connection before then passes the helper by without calling it.
        std::thread::sleep(std::time::Duration::from_millis(1000));
    }
    let traps = w.get_json("/api/v1/stats")["plugins"]["traps"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(traps, 3);
    // The same service without the trapping helper serves transfers again.
    w.reload(
        &cfg,
        &std::fs::read_to_string(ftp_config(&topo, "")).expect("config"),
    );
    download(&topo, &["--disable-epsv"], &topo.dir.join("after"));
}

/// The FTP helper replaced (by a plugin from a file, then by the built-in one again)
/// while a control session runs transfers: each transfer of the session is served, by
/// whichever helper is in place, from the connection's own helper state.
#[test]
fn the_ftp_helper_is_replaced_while_a_session_runs() {
    let topo = ftp_topo("ftps");
    let cfg = ftp_config(&topo, "");
    let w = Wvs::start(&topo, Some(&cfg));
    // The same module with a custom section: another plugin to wvs (another digest).
    let mut wasm = std::fs::read(env!("WVS_HELPER_FTP_WASM")).expect("ftp wasm");
    wasm.extend_from_slice(&[0, 5, 4, b'w', b'v', b's', b'2']);
    let file = topo.dir.join("ftp2.wasm");
    std::fs::write(&file, &wasm).expect("wasm");
    let base = std::fs::read_to_string(&cfg).expect("config");
    let swapped = format!(
        "[[plugin]]\nname = \"ftp\"\npath = \"{}\"\n\n{base}",
        file.display()
    );
    let dir = topo.dir.display().to_string();
    // Verbose: should it fail, its messages tell which connection and which reply.
    let mut args: Vec<String> = ["curl", "-sS", "-v", "-m", "60", "--disable-epsv"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for k in 0..4 {
        args.extend([
            "-o".into(),
            format!("{dir}/s{k}"),
            format!("ftp://{VIP}/5m"),
        ]);
    }
    // The servers send at 16 Mbit/s (curl's own --limit-rate does not hold back a fast
    // local transfer in Debian's curl 7.88), so each transfer lasts about 2.5 s.
    for i in 1..=3 {
        let rs = format!("rs{i}");
        let out = topo.exec(
            &rs,
            &[
                "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "16mbit",
            ]
            .into_iter()
            .chain(["burst", "32kb", "latency", "400ms"])
            .collect::<Vec<_>>(),
        );
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ns = topo.ns("cli");
    let t0 = std::time::Instant::now();
    let session = std::thread::spawn(move || {
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(&args)
            .output()
    });
    // A transfer's file has bytes once it started. The first swap lands during transfer 0 and before transfer 1 starts, the
    // second during transfer 1 or 2 and before transfer 3 starts.
    let started =
        |k: usize| std::fs::metadata(topo.dir.join(format!("s{k}"))).is_ok_and(|m| m.len() > 0);
    let wait_start = |k: usize| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !started(k) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            started(k),
            "transfer {k} never started ({:?})",
            t0.elapsed()
        );
    };
    wait_start(0);
    w.reload(&cfg, &swapped);
    let plugins = w.get_json("/api/v1/plugins").to_string();
    assert!(plugins.contains("\"ftp\""), "{plugins}");
    let first = (started(1), t0.elapsed());
    wait_start(1);
    w.reload(&cfg, &base);
    let second = (started(3), t0.elapsed());
    let out = session.join().expect("thread").expect("curl");
    eprintln!(
        "swaps at {:?} and {:?}, session {:?}",
        first.1,
        second.1,
        t0.elapsed()
    );
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail = |t: &str, n: usize| {
            let l: Vec<&str> = t.lines().filter(|l| !l.starts_with("{ [")).collect();
            l[l.len().saturating_sub(n)..].join("\n")
        };
        panic!(
            "curl after {:?}:\n{}\nhelper events: {}\ndrops: {}\nwvs:\n{}",
            t0.elapsed(),
            tail(&err, 40),
            helper_events(&w),
            w.get_json("/api/v1/stats")["datapath"]["drops"],
            tail(&w.log_text(), 30)
        );
    }
    assert!(
        !first.0,
        "transfer 1 started before the first swap ({:?})",
        first.1
    );
    assert!(
        !second.0,
        "transfer 3 started before the second swap ({:?})",
        second.1
    );
    for k in 0..4 {
        let got = std::fs::read(topo.dir.join(format!("s{k}"))).expect("file");
        assert!(got == five_mb(&topo), "transfer {k}: {} bytes", got.len());
    }
    assert!(event(&w, "rewrites") >= 4, "{}", helper_events(&w));
    assert_eq!(event(&w, "faults"), 0);
}

/// nginx with `listen 8080 proxy_protocol` in each real server: it logs, and answers with,
/// the address the PROXY header gives and the one the connection came from.
fn nginx_proxy_protocol(topo: &Topo) {
    for i in 1..=3 {
        let d = topo.dir.join(format!("pp{i}"));
        std::fs::create_dir_all(d.join("tmp")).expect("dir");
        let d = d.display();
        let conf = format!(
            "daemon on; user root; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               log_format pp '$proxy_protocol_addr:$proxy_protocol_port via $remote_addr \"$request\"';\n\
               access_log {d}/access.log pp;\n\
               server {{ listen 8080 proxy_protocol;\n\
                 location / {{ return 200 \"$proxy_protocol_addr:$proxy_protocol_port $remote_addr rs{i}\\n\"; }} }}\n\
             }}\n"
        );
        let path = topo.dir.join(format!("pp{i}.conf"));
        std::fs::write(&path, conf).expect("nginx.conf");
        let out = topo.exec(
            &format!("rs{i}"),
            &["nginx", "-c", path.to_str().expect("path")],
        );
        assert!(
            out.status.success(),
            "nginx: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Behind full NAT the real servers see the balancer's local address as the source; the
/// `proxy-v2` helper tells them the client's. nginx logs the client's real address and
/// port; a 5 MB upload behind the header arrives byte for byte (every later segment shifted
/// by the header's 28 bytes, every acknowledgement shifted back).
#[test]
fn proxy_v2_tells_full_nat_servers_the_client() {
    let topo = Topo::new("pv2", false);
    nginx_proxy_protocol(&topo);
    // Upload sinks: each server writes what its one connection brings to a file.
    let mut sinks = Vec::new();
    for i in 1..=3 {
        let f = topo.dir.join(format!("up{i}"));
        let sink = Command::new("ip")
            .args(["netns", "exec", &topo.ns(&format!("rs{i}")), "socat", "-u"])
            .arg("TCP-LISTEN:8081,reuseaddr")
            .arg(format!("CREATE:{}", f.display()))
            .spawn()
            .expect("socat");
        sinks.push(sink);
    }
    let mut text = String::new();
    for port in [8080, 8081] {
        text += &format!(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:{port}\"\nscheduler = \"rr\"\n\
             laddrs = [\"198.19.0.1\"]\nhelpers = [\"proxy-v2\"]\n"
        );
        for i in 1..=3 {
            text += &format!(
                "[[service.real]]\naddress = \"198.19.0.1{i}:{port}\"\nforward = \"fullnat\"\n"
            );
        }
    }
    let cfg = topo.dir.join("pv2.toml");
    std::fs::write(&cfg, text).expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    let mut servers = std::collections::BTreeSet::new();
    for k in 0..6 {
        let port = 41000 + k;
        let body = curl(
            &topo,
            &[
                "--local-port",
                &port.to_string(),
                &format!("http://{VIP}:8080/k{k}"),
            ],
        );
        let f: Vec<&str> = body.split_whitespace().collect();
        assert_eq!(f.len(), 3, "{body}");
        assert_eq!(
            f[0],
            format!("198.18.0.2:{port}"),
            "the client, from the header"
        );
        assert_eq!(f[1], "198.19.0.1", "the connection: the local address");
        servers.insert(f[2].to_string());
    }
    assert_eq!(servers.len(), 3, "{servers:?}");
    let logs: String = (1..=3)
        .map(|i| {
            std::fs::read_to_string(topo.dir.join(format!("pp{i}/access.log"))).unwrap_or_default()
        })
        .collect();
    for k in 0..6 {
        let want = format!(
            "198.18.0.2:{} via 198.19.0.1 \"GET /k{k} HTTP/1.1\"",
            41000 + k
        );
        assert!(logs.contains(&want), "{want} in\n{logs}");
    }

    let src = topo.dir.join("big-up");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).expect("file");
    let out = topo.exec(
        "cli",
        &[
            "socat",
            "-u",
            &format!("FILE:{}", src.display()),
            &format!("TCP:{VIP}:8081,sourceport=42000"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = Vec::new();
    for _ in 0..50 {
        got = (1..=3)
            .filter_map(|i| std::fs::read(topo.dir.join(format!("up{i}"))).ok())
            .find(|v| !v.is_empty())
            .unwrap_or_default();
        if got.len() >= data.len() + 28 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(got.len(), data.len() + 28, "header and data");
    assert_eq!(&got[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(&got[16..20], &[198, 18, 0, 2]);
    assert_eq!(&got[24..26], &42000u16.to_be_bytes());
    assert!(
        got[28..] == data[..],
        "the stream after the header is the client's"
    );
    assert_eq!(event(&w, "faults"), 0);
    assert_eq!(w.drops("l4_bad_csum"), 0);
}

/// The example helper (examples/tftp-helper), loaded as a user would: a UDP service on
/// port 69 in front of tftpd-hpa, curl's `tftp://` as the client. The transfer comes from
/// each server's new port, expected by the helper, and reaches curl as the VIP's.
#[test]
fn the_tftp_example_helper_serves_files_through_the_vip() {
    let topo = Topo::new("tftp", false);
    let st = Command::new("bash")
        .args([TOPOLOGY, "tftpd", &topo.prefix])
        .arg(&topo.dir)
        .status()
        .expect("bash");
    assert!(st.success(), "topology.sh tftpd failed");
    let mut c = format!(
        "[[plugin]]\nname = \"tftp\"\npath = \"{}\"\n\n\
         [[service]]\nprotocol = \"udp\"\naddress = \"{VIP}:69\"\nscheduler = \"rr\"\n\
         helpers = [\"tftp\"]\n",
        env!("WVS_EXAMPLE_TFTP_WASM")
    );
    for i in 1..=3 {
        c += &format!("[[service.real]]\naddress = \"198.19.0.1{i}:69\"\n");
    }
    let cfg = topo.dir.join("tftp.toml");
    std::fs::write(&cfg, c).expect("config");
    let w = Wvs::start(&topo, Some(&cfg));
    let want = std::fs::read(topo.dir.join("1m")).expect("1m");
    let mut names = std::collections::BTreeSet::new();
    for k in 0..3 {
        let got = topo.dir.join(format!("t{k}"));
        curl(
            &topo,
            &[
                "--local-port",
                &(43000 + k).to_string(),
                "-o",
                got.to_str().expect("path"),
                &format!("tftp://{VIP}/1m"),
            ],
        );
        assert!(std::fs::read(&got).expect("file") == want, "transfer {k}");
        names.insert(curl(
            &topo,
            &[
                "--local-port",
                &(43100 + k).to_string(),
                &format!("tftp://{VIP}/name"),
            ],
        ));
    }
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(event(&w, "expects_matched") >= 6, "{}", helper_events(&w));
}

/// A passive request seen on the wire: the 227 reply names the VIP, and the expected data
/// connection waits in LISTEN with client port 0, listed by `wvs adm -L -n -c` as ipvsadm
/// lists IPVS's.
#[test]
fn an_expected_connection_is_listed_in_listen() {
    let topo = ftp_topo("ftpl");
    let w = Wvs::start(&topo, Some(&ftp_config(&topo, "")));
    let out = topo.exec(
        "cli",
        &[
            "bash",
            "-c",
            &format!(
                "(printf 'USER anonymous\\r\\nPASS x\\r\\n'; sleep 0.5; printf 'PASV\\r\\n'; sleep 1) \
                 | socat -t 2 - TCP:{VIP}:21"
            ),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let reply = text
        .lines()
        .find(|l| l.starts_with("227 "))
        .unwrap_or_else(|| panic!("no 227 in {text}"));
    assert!(reply.contains("(198,18,100,1,"), "{reply}");
    let list = w.adm_ok(&["-L", "-n", "-c"]);
    let listen: Vec<&str> = list.lines().filter(|l| l.contains("LISTEN")).collect();
    assert_eq!(listen.len(), 1, "{list}");
    let f: Vec<&str> = listen[0].split_whitespace().collect();
    assert_eq!(f[0], "TCP");
    assert_eq!(f[3], "198.18.0.2:0", "{list}");
    assert!(f[4].starts_with(&format!("{VIP}:")), "{list}");
    assert!(f[5].starts_with("198.19.0.1"), "{list}");
    let vport = f[4].rsplit(':').next().expect("port");
    assert_eq!(
        f[5].rsplit(':').next(),
        Some(vport),
        "the same port on both sides"
    );
}

/// A helper module whose `flags` and `packet` exports run the given bodies.
fn helper_wat(flags: &str, packet: &str) -> String {
    format!(
        r#"(module
  (memory (export "memory") 2)
  (func (export "wvs_abi_version") (result i32) i32.const 1)
  (func (export "wvs_helper_shared") (result i32) i32.const 1024)
  (func (export "wvs_helper_flags") (result i32) {flags})
  (func (export "wvs_helper_packet") (result i32) {packet}))"#
    )
}

/// Helpers that never return, from every place one is called: a helper whose `packet`
/// loops bound to a service (its connections' first segments), one whose `flags` loops
/// uploaded over the API and named by the configuration at a SIGHUP and at a start. Each
/// call is interrupted: requests are served, the API answers, SIGTERM stops wvs.
#[test]
fn helpers_that_never_return_leave_the_api_sigterm_and_forwarding_live() {
    let topo = Topo::new("hspin", false);
    let spin = topo.dir.join("spin.wat");
    std::fs::write(
        &spin,
        helper_wat("i32.const 0", "(loop $l (br $l)) i32.const -1"),
    )
    .expect("wat");
    // Binary, as the API takes it.
    let flagloop = topo.dir.join("flagloop.wasm");
    let wasm =
        wat::parse_str(helper_wat("(loop $l (br $l)) i32.const 0", "i32.const -1")).expect("wat");
    std::fs::write(&flagloop, wasm).expect("wasm");
    let cfg = topo.dir.join("wvs.toml");
    let mut services = format!(
        "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:80\"\nscheduler = \"rr\"\nhelpers = [\"spin\"]\n"
    );
    for i in 1..=3 {
        services += &format!("[[service.real]]\naddress = \"198.19.0.1{i}:80\"\n");
    }
    let with_spin = format!(
        "[[plugin]]\nname = \"spin\"\npath = \"{}\"\n\n{services}",
        spin.display()
    );
    std::fs::write(&cfg, &with_spin).expect("config");
    let mut w = Wvs::start(&topo, Some(&cfg));
    let served = |what: &str| {
        let t0 = std::time::Instant::now();
        for _ in 0..6 {
            let body = topo.curl(&format!("http://{VIP}/"));
            assert!(!body.is_empty(), "{what}: an answer");
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{what}");
    };
    served("a helper whose packet loops");
    assert!(event(&w, "faults") >= 1, "{}", helper_events(&w));
    // Uploaded: refused within the call's deadline, with the reason.
    let bearer = format!("Bearer {}", w.token());
    let t0 = std::time::Instant::now();
    let (code, msg) = w.api(
        "PUT",
        "/api/v1/plugins/flagloop",
        Some(&bearer),
        Some("application/wasm"),
        Some(&flagloop),
    );
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("interrupt"), "{msg}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    assert!(w.get_json("/api/v1/info")["connections"].is_u64());
    // Named by the file at a SIGHUP: refused, the running configuration stays.
    let before = w.log_text().matches("configuration not reloaded").count();
    std::fs::write(
        &cfg,
        format!(
            "[[plugin]]\nname = \"flagloop\"\npath = \"{}\"\n\n{with_spin}",
            flagloop.display()
        ),
    )
    .expect("config");
    w.signal("HUP");
    w.wait_log_n(
        "configuration not reloaded",
        before + 1,
        std::time::Duration::from_secs(10),
    );
    served("after the refused reload");
    assert!(w.get_json("/api/v1/services").is_array());
    assert!(w.stop().success(), "SIGTERM stops it");
    // Named by the file at a start: refused with the reason, promptly.
    let t0 = std::time::Instant::now();
    let err = topo.wvs_refused(&["--config".as_ref(), cfg.as_os_str()]);
    assert!(
        err.contains("flagloop") && err.contains("interrupt"),
        "{err}"
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(15));
}
