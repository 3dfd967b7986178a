//! End to end, the dashboard in a real browser: headless Chromium (through chromedriver and
//! fantoccini) adds a service and two real servers through the page, curl reaches them
//! through the VIP, the page's counters rise, and hostile input shows as text; the same
//! for an IPv6 service. Screenshots
//! are kept in `artifacts/`. Needs root, chromium and chromium-driver.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Topo, VIP, VIP6, Wvs};
use fantoccini::{Client, ClientBuilder, Locator};

/// chromedriver in the balancer's namespace (so the browser reaches the API on its
/// loopback), and a socat bridge from this namespace's loopback to it.
struct Driver {
    children: Vec<Child>,
    port: u16,
}

impl Driver {
    fn start(topo: &Topo) -> Self {
        // One bridge port per browser: the tests of this file run side by side.
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20000 + (std::process::id() % 20000) as u16 + next;
        let driver = Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.ns("lb"),
                "chromedriver",
                "--port=9515",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt install chromium-driver)");
        let bridge = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!(
                "EXEC:ip netns exec {} socat STDIO TCP\\:127.0.0.1\\:9515",
                topo.ns("lb")
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        let d = Driver {
            children: vec![driver, bridge],
            port,
        };
        // Ready when chromedriver answers through the bridge.
        let t0 = Instant::now();
        loop {
            let ok = Command::new("curl")
                .args(["-sf", "-m", "1", &format!("http://127.0.0.1:{port}/status")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1800"]
        }),
    );
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

/// The text of the element `css` names. As with [`click`], the element found may be
/// redrawn before its text is read (a stale reference, which read as "" and failed a
/// test in CI once): find it again, a few times at most.
async fn text(c: &Client, css: &str) -> String {
    let mut attempt = 0;
    loop {
        let e = c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match e.text().await {
            Ok(t) => return t,
            Err(e) if attempt < 10 && e.to_string().contains("stale element") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("text of {css}: {e}"),
        }
    }
}

/// Wait until `cond` holds for the page (checked every 200 ms), or fail with `what`.
async fn until<F, Fut>(what: &str, secs: u64, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !cond().await {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fill(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.expect(id);
    e.clear().await.expect("clear");
    e.send_keys(value).await.expect("type");
}

/// Click the element `css` names. The dashboard redraws its tables as it polls, so the
/// element found may be replaced before the click lands (a stale reference): find it
/// again and click that one, a few times at most.
async fn click(c: &Client, css: &str) {
    for attempt in 0.. {
        let e = c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match e.click().await {
            Ok(()) => return,
            Err(e) if attempt < 10 && e.to_string().contains("stale element") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

fn artifacts() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts");
    std::fs::create_dir_all(&d).expect("artifacts dir");
    d
}

#[test]
fn the_dashboard_adds_a_service_and_shows_its_traffic() {
    let topo = Topo::new("web", false);
    let cfg = topo.dir.join("empty.toml");
    std::fs::write(&cfg, "").expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let token = wvs.token();
    let driver = Driver::start(&topo);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(driver.port).await;
        c.goto("http://127.0.0.1:9080/").await.expect("the dashboard");
        let src = c.source().await.unwrap_or_default();
        assert!(src.contains("id=\"status\""), "the page: {src}");
        // Reads need the token too (client addresses are personal data): the page asks for it.
        until("the page to ask for the token", 15, || async { text(&c, "#status").await.contains("token") }).await;

        // Without the token a change is refused, and the page says so next to the form.
        fill(&c, "svc-address", &format!("{VIP}:80")).await;
        click(&c, "#svc-submit").await;
        until("the 401 shown", 10, || async {
            text(&c, "#service-form .error[data-for=form]").await.contains("token")
        })
        .await;

        fill(&c, "token", &token).await;
        click(&c, "#token-save").await;
        until("the page to go live", 15, || async { text(&c, "#status").await.starts_with("live") }).await;

        // Hostile input comes back in the API's error message: it must show as text.
        fill(&c, "svc-flags", "<img src=x onerror=\"window.pwned=1\">").await;
        click(&c, "#svc-submit").await;
        until("the flag error next to the field", 10, || async {
            text(&c, "#service-form .error[data-for=flags]").await.contains("<img src=x")
        })
        .await;
        let imgs = c.find_all(Locator::Css("img")).await.expect("query");
        assert!(imgs.is_empty(), "no element was made from the API's text");
        let pwned = c.execute("return window.pwned === undefined", vec![]).await.expect("js");
        assert_eq!(pwned, serde_json::json!(true), "no script ran");

        // Add the service (round robin) and two real servers through the forms.
        fill(&c, "svc-flags", "").await;
        click(&c, "#svc-scheduler option[value=rr]").await;
        click(&c, "#svc-submit").await;
        let svc = format!("[data-service=\"tcp/{VIP}:80\"]");
        until("the service listed", 10, || async {
            c.find(Locator::Css(&svc)).await.is_ok()
        })
        .await;
        for rs in ["198.19.0.11:80", "198.19.0.12:80"] {
            fill(&c, "real-address", rs).await;
            click(&c, "#real-submit").await;
            let row = format!("{svc} tr[data-real=\"{rs}\"]");
            until("the real server listed", 10, || async { c.find(Locator::Css(&row)).await.is_ok() }).await;
        }
        // A bad weight: the API's error shows next to the weight field.
        fill(&c, "real-address", "198.19.0.13:80").await;
        fill(&c, "real-weight", "70000").await;
        click(&c, "#real-submit").await;
        until("the weight error", 10, || async {
            text(&c, "#real-form .error[data-for=weight]").await.contains("65535")
        })
        .await;
        fill(&c, "real-weight", "1").await;

        // Traffic through the VIP reaches both servers, and the page's counters rise.
        let t = Topo::tally((0..10).map(|_| topo.curl(&format!("http://{VIP}/"))));
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            [("rs1".to_string(), 5), ("rs2".to_string(), 5)]
        );
        until("the service's counter to reach 10", 15, || async {
            text(&c, &format!("{svc} [data-testid=service-conns]")).await == "conns 10"
        })
        .await;
        until("the total to reach 10", 15, || async {
            text(&c, "[data-testid=total-conns]").await == "10"
        })
        .await;
        // The flood defense, idle with the table nearly empty; the synproxy automatic
        // (defense.synproxy's default), idle, its counters shown.
        assert_eq!(text(&c, "[data-testid=defense]").await, "idle");
        assert_eq!(text(&c, "[data-testid=synproxy]").await, "auto, idle");
        assert!(
            text(&c, "[data-testid=synproxy-events]")
                .await
                .starts_with("synproxy (0 cookies"),
            "{}",
            text(&c, "[data-testid=synproxy-events]").await
        );

        // Upload a plugin through the form (the browser reads the file from disk), switch
        // the service to it with the edit button, then drain rs1 with its button.
        fill(&c, "plugin-name", "lat2").await;
        c.find(Locator::Id("plugin-file"))
            .await
            .expect("file input")
            .send_keys(env!("WVS_EXAMPLE_LAT2_WASM"))
            .await
            .expect("choose the file");
        click(&c, "#plugin-submit").await;
        until("lat2 listed as a custom plugin", 15, || async {
            text(&c, "#plugins").await.contains("lat2 custom")
        })
        .await;
        click(&c, &format!("{svc} button.edit")).await;
        until("lat2 offered as a scheduler", 10, || async {
            c.find(Locator::Css("#svc-scheduler option[value=lat2]")).await.is_ok()
        })
        .await;
        click(&c, "#svc-scheduler option[value=lat2]").await;
        click(&c, "#svc-submit").await;
        until("the service running lat2", 10, || async {
            text(&c, &format!("{svc} .meta")).await.starts_with("lat2 (wasm)")
        })
        .await;
        click(&c, &format!("{svc} tr[data-real=\"198.19.0.11:80\"] button.drain")).await;
        until("rs1 drained", 10, || async {
            text(&c, &format!("{svc} tr[data-real=\"198.19.0.11:80\"]")).await.contains("drained")
        })
        .await;
        let t = Topo::tally((0..6).map(|_| topo.curl(&format!("http://{VIP}/"))));
        assert_eq!(t.into_iter().collect::<Vec<_>>(), [("rs2".to_string(), 6)], "drained: no new connections to rs1");

        // A tunnel through the form, quiesced (this topology's servers have no tunnel end):
        // GUE without its port is refused next to the tunnel fields; with it, the server is
        // listed as ipvsadm --tun-info shows it, and its drain button keeps the method.
        fill(&c, "real-address", "198.19.0.13:80").await;
        fill(&c, "real-weight", "0").await;
        click(&c, "#real-forward option[value=tunnel]").await;
        click(&c, "#real-tun-type option[value=gue]").await;
        click(&c, "#real-submit").await;
        until("the tunnel error", 10, || async {
            text(&c, "#real-form .error[data-for=tunnel]").await.contains("needs a tunnel port")
        })
        .await;
        fill(&c, "real-tun-port", "6080").await;
        click(&c, "#real-submit").await;
        let rs3 = format!("{svc} tr[data-real=\"198.19.0.13:80\"]");
        until("the tunnel listed", 10, || async {
            match c.find(Locator::Css(&rs3)).await {
                Ok(e) => e.text().await.unwrap_or_default().contains("Tunnel gue:6080:nocsum"),
                Err(_) => false,
            }
        })
        .await;
        click(&c, &format!("{rs3} button.drain")).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(text(&c, &rs3).await.contains("Tunnel gue:6080:nocsum"), "drained as a tunnel");
        // Full NAT through the form, quiesced too: listed as ipvsadm -L lists it.
        // Health checks (set with wvs adm): the health column shows what each finds, with
        // the latest results as a strip of passes and failures.
        let vs = format!("{VIP}:80");
        wvs.adm_ok(&["-e", "-t", &vs, "-r", "198.19.0.11:80", "-m", "--check", "http:/", "--check-interval", "0.2"]);
        wvs.adm_ok(&["-e", "-t", &vs, "-r", "198.19.0.12:80", "-m", "--check", "http:/missing", "--check-interval", "0.2"]);
        let passes = format!("{svc} tr[data-real=\"198.19.0.11:80\"] td[data-health=up] .hist i.pass");
        until("rs1 checked up, with its passes", 15, || async {
            c.find_all(Locator::Css(&passes)).await.map_or(0, |v| v.len()) >= 3
        })
        .await;
        let fails = format!("{svc} tr[data-real=\"198.19.0.12:80\"] td[data-health=down] .hist i.fail");
        until("rs2 checked down (404), with its failures", 15, || async {
            c.find_all(Locator::Css(&fails)).await.map_or(0, |v| v.len()) >= 2
        })
        .await;
        assert!(text(&c, &format!("{svc} tr[data-real=\"198.19.0.12:80\"]")).await.contains("down"));
        for rs in ["198.19.0.11:80", "198.19.0.12:80"] {
            wvs.adm_ok(&["-e", "-t", &vs, "-r", rs, "-m", "--check", "none"]);
        }
        until("rs2 unchecked again", 15, || async {
            text(&c, &format!("{svc} tr[data-real=\"198.19.0.12:80\"]")).await.contains("unchecked")
        })
        .await;

        fill(&c, "real-address", "198.19.0.12:8081").await;
        click(&c, "#real-forward option[value=fullnat]").await;
        click(&c, "#real-submit").await;
        let fnat = format!("{svc} tr[data-real=\"198.19.0.12:8081\"]");
        until("the full-NAT server listed", 10, || async {
            match c.find(Locator::Css(&fnat)).await {
                Ok(e) => e.text().await.unwrap_or_default().contains("FullNat"),
                Err(_) => false,
            }
        })
        .await;
        click(&c, "#real-forward option[value=nat]").await;
        fill(&c, "real-weight", "1").await;

        // The connection view, filtered by service and state.
        click(&c, &format!("#conn-service option[value=\"tcp/{VIP}:80\"]")).await;
        click(&c, "#conn-state option[value=TIME_WAIT]").await;
        click(&c, "#conn-refresh").await;
        until("the 16 connections listed", 10, || async {
            text(&c, "#conn-count").await.starts_with("16 matching")
        })
        .await;

        // Steady traffic for a few seconds: the rates (2 s samples) and the charts move.
        let ns = topo.ns("cli");
        let load = std::thread::spawn(move || {
            for _ in 0..60 {
                let _ = Command::new("ip")
                    .args(["netns", "exec", &ns, "curl", "-s", "-o", "/dev/null", "-m", "2"])
                    .arg(format!("http://{VIP}/"))
                    .status();
                std::thread::sleep(Duration::from_millis(80));
            }
        });
        until("a connection rate on the page", 20, || async {
            let cps = text(&c, "[data-testid=cps]").await;
            !cps.is_empty() && cps != "0"
        })
        .await;
        let _ = tokio::task::spawn_blocking(move || load.join()).await;
        c.execute("window.scrollTo(0, 0)", vec![]).await.expect("scroll");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(artifacts().join("dashboard.png"), &png).expect("save screenshot");
        // A narrow window still shows the services (the layout wraps).
        c.set_window_size(420, 1400).await.expect("resize");
        // The charts follow their boxes at once; the per-service ones at the next refresh.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(artifacts().join("dashboard-narrow.png"), &png).expect("save screenshot");
        let width = c
            .execute("return document.querySelector('main').scrollWidth <= window.innerWidth + 1", vec![])
            .await
            .expect("js");
        let wide = c
            .execute(
                "return [...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll')).slice(0, 5).map(e => e.tagName + '.' + e.className + ' in #' + (e.parentElement.closest('[id]') || {}).id + ' parentw=' + e.parentElement.clientWidth + ':' + Math.round(e.getBoundingClientRect().right))",
                vec![],
            )
            .await
            .expect("js");
        assert_eq!(width, serde_json::json!(true), "no sideways scrolling of the page: {wide}");
        c.close().await.expect("close the browser");
    });
    drop(driver);
    drop(wvs);
}

/// An IPv6 service through the page: added with its bracketed address, two IPv6 real
/// servers through the real-server form, traffic over IPv6 counted on the page, and the
/// connection view filtered by the service listing the IPv6 client.
#[test]
fn the_dashboard_adds_an_ipv6_service_and_lists_its_connections() {
    let topo = Topo::new("web6", false);
    let cfg = topo.dir.join("empty.toml");
    std::fs::write(&cfg, "").expect("config");
    let wvs = Wvs::start(&topo, Some(&cfg));
    let token = wvs.token();
    let driver = Driver::start(&topo);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = browser(driver.port).await;
        c.goto("http://127.0.0.1:9080/")
            .await
            .expect("the dashboard");
        fill(&c, "token", &token).await;
        click(&c, "#token-save").await;
        until("the page to go live", 15, || async {
            text(&c, "#status").await.starts_with("live")
        })
        .await;
        let vs = format!("[{VIP6}]:80");
        fill(&c, "svc-address", &vs).await;
        click(&c, "#svc-scheduler option[value=rr]").await;
        click(&c, "#svc-submit").await;
        let svc = format!("[data-service=\"tcp/{vs}\"]");
        until("the service listed", 10, || async {
            c.find(Locator::Css(&svc)).await.is_ok()
        })
        .await;
        assert_eq!(
            text(&c, &format!("{svc} [data-testid=service-name]")).await,
            format!("TCP {vs}")
        );
        for rs in ["[2001:db8:19::11]:80", "[2001:db8:19::12]:80"] {
            fill(&c, "real-address", rs).await;
            click(&c, "#real-submit").await;
            let row = format!("{svc} tr[data-real=\"{rs}\"]");
            until("the real server listed", 10, || async {
                c.find(Locator::Css(&row)).await.is_ok()
            })
            .await;
        }
        // A real server of the other family is refused next to the form (NAT keeps the family).
        fill(&c, "real-address", "198.19.0.13:80").await;
        click(&c, "#real-submit").await;
        until("the family error", 10, || async {
            text(&c, "#real-form")
                .await
                .contains("different address families")
        })
        .await;
        let t = Topo::tally((0..10).map(|_| topo.curl(&format!("http://{vs}/"))));
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            [("rs1".to_string(), 5), ("rs2".to_string(), 5)]
        );
        until("the service's counter to reach 10", 15, || async {
            text(&c, &format!("{svc} [data-testid=service-conns]")).await == "conns 10"
        })
        .await;
        click(&c, &format!("#conn-service option[value=\"tcp/{vs}\"]")).await;
        click(&c, "#conn-state option[value=TIME_WAIT]").await;
        click(&c, "#conn-refresh").await;
        until("the 10 connections listed", 10, || async {
            text(&c, "#conn-count").await.starts_with("10 matching")
        })
        .await;
        let rows = text(&c, "#conns").await;
        assert!(
            rows.contains("[2001:db8:18::2]:") && rows.contains(&vs),
            "{rows}"
        );
        // The sync daemon, started and stopped from the page, over an IPv6 group.
        fill(&c, "daemon-iface", "s0").await;
        fill(&c, "daemon-syncid", "3").await;
        fill(&c, "daemon-group", "ff02::8848").await;
        click(&c, "#daemon-state option[value=backup]").await;
        click(&c, "#daemon-submit").await;
        until("the daemon listed as running", 10, || async {
            c.find(Locator::Css("[data-testid=daemon-backup]"))
                .await
                .is_ok()
        })
        .await;
        let row = text(&c, "[data-testid=daemon-backup]").await;
        assert!(
            row.contains("s0") && row.contains("ff02::8848") && row.ends_with("yes stop"),
            "{row}"
        );
        assert_eq!(
            wvs.adm_ok(&["-L", "--daemon"]),
            "backup sync daemon (mcast=s0, syncid=3, maxlen=1452, group=ff02::8848, port=8848, ttl=1)\n"
        );
        // A second backup is refused next to the form.
        click(&c, "#daemon-submit").await;
        until("the conflict shown", 10, || async {
            text(&c, "#daemon-form").await.contains("runs already")
        })
        .await;
        click(&c, "[data-testid=daemon-backup] button").await;
        until("the daemon gone", 10, || async {
            c.find(Locator::Css("[data-testid=daemon-backup]"))
                .await
                .is_err()
        })
        .await;
        assert_eq!(wvs.adm_ok(&["-L", "--daemon"]), "");
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(artifacts().join("dashboard-ipv6.png"), &png).expect("save screenshot");
        c.close().await.expect("close the browser");
    });
    drop(driver);
    drop(wvs);
}
