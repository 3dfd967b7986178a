//! ipvsadm's output formats, byte for byte (`ipvsadm.c`: `print_title`,
//! `print_service_entry`, `print_largenum`, `list_conn`), trailing spaces included.

use std::fmt::Write;

use crate::api::{ConnView, ServiceView};

/// Which listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Weights and connection counts.
    Plain,
    /// --stats.
    Stats,
    /// --rate.
    Rate,
    /// --thresholds.
    Thresholds,
    /// --persistent-conn.
    PersistentConn,
    /// --tun-info.
    TunInfo,
}

/// ipvsadm's name of a forwarding method (`fwd_name`) and its switch (`fwd_switch`).
fn method(forward: &str) -> (&'static str, &'static str) {
    match forward {
        "dr" => ("Route", "-g"),
        "tunnel" => ("Tunnel", "-i"),
        // DPVS's ipvsadm.
        "fullnat" => ("FullNat", "-b"),
        // LOCALNODE: ipvsadm's fwd_switch saves it as direct routing.
        "local" => ("Local", "-g"),
        _ => ("Masq", "-m"),
    }
}

/// A tunnel's `--tun-info` column (`fwd_tun_info`): `ipip`, `gue:PORT:CSUM`, `gre:CSUM`,
/// the checksum option in ipvsadm's short names (`-c`, `+c`, `r+c`; the oracle's `xmit`).
fn tun_info(r: &crate::api::RealView) -> Option<String> {
    if r.forward != "tunnel" {
        return None;
    }
    let csum = match r.tun_csum.as_deref() {
        Some("csum") => "+c",
        Some("remcsum") => "r+c",
        _ => "-c",
    };
    Some(match r.tun_type.as_deref().unwrap_or("ipip") {
        "gue" => format!("gue:{}:{csum}", r.tun_port.unwrap_or(0)),
        "gre" => format!("gre:{csum}"),
        k => k.to_string(),
    })
}

/// A number as `print_largenum` prints it: 9 wide, or scaled with K/M/G/T unless `exact`.
pub(crate) fn largenum(out: &mut String, i: u64, exact: bool) {
    let _ = if exact {
        let len = i.to_string().len();
        let w = if len <= 8 { 9 } else { len + 1 };
        write!(out, "{i:>w$}")
    } else if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1_000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

/// The title lines of a listing.
pub(crate) fn title(out: &mut String, l: Listing) {
    let _ = match l {
        Listing::Stats => writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        Listing::Rate => writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
        Listing::Thresholds => writeln!(
            out,
            "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        ),
        Listing::PersistentConn => writeln!(
            out,
            "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        ),
        Listing::Plain => writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        ),
        Listing::TunInfo => writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn"
        ),
    };
}

/// ipvsadm cuts an IPv4 service's or server's name at `n` bytes; an IPv6 one (in
/// brackets) is printed whole.
fn truncate(s: &str, n: usize) -> &str {
    if s.contains('[') {
        return s;
    }
    &s[..s.len().min(n)]
}

/// Five counters in a row, as `print_largenum` prints each.
fn numbers(out: &mut String, values: [u64; 5], exact: bool) {
    for v in values {
        largenum(out, v, exact);
    }
}

fn totals(t: &crate::api::views::Totals) -> [u64; 5] {
    [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes]
}

/// wvs's own `--check` options of a health check, as `-S` writes them.
fn check_args(out: &mut String, c: &crate::health::CheckDef) {
    let arg = match c.kind.as_str() {
        "http" | "https" => format!("{}:{}", c.kind, c.path.as_deref().unwrap_or("/")),
        "dns" => format!("dns:{}", c.name.as_deref().unwrap_or(".")),
        "misc" => format!("misc:{}", c.program.as_deref().unwrap_or("")),
        k => k.to_string(),
    };
    let quoted = if arg.contains(' ') {
        format!("'{arg}'")
    } else {
        arg
    };
    let _ = write!(out, " --check {quoted}");
    let secs = |s: u64| {
        if s.is_multiple_of(1000) {
            (s / 1000).to_string()
        } else {
            format!("{}", s as f64 / 1000.0)
        }
    };
    if let Some(i) = c.interval {
        let _ = write!(out, " --check-interval {}", secs(i.0));
    }
    if let Some(t) = c.timeout {
        let _ = write!(out, " --check-timeout {}", secs(t.0));
    }
    if let Some(r) = c.rise {
        let _ = write!(out, " --rise {r}");
    }
    if let Some(f) = c.fall.or(c.retry.map(|r| r + 1)) {
        let _ = write!(out, " --fall {f}");
    }
    if c.inhibit_on_failure {
        out.push_str(" --inhibit-on-failure");
    }
    // The rest, as wvs's own options: -S then -R gives the same check back.
    let q = |v: &str| {
        if v.is_empty() || v.contains(|ch: char| ch.is_whitespace() || ch == '\'' || ch == '"') {
            format!("'{}'", v.replace('\'', "'\\''"))
        } else {
            v.to_string()
        }
    };
    for (opt, v) in [
        ("port", c.port.map(|p| p.to_string())),
        ("host", c.host.clone()),
        ("status", (!c.status.is_empty()).then(|| c.status.join(","))),
        ("digest", c.digest.clone()),
        ("contains", c.contains.clone()),
        ("payload", c.payload.clone()),
        ("expect", c.expect.clone()),
        ("qtype", c.qtype.clone()),
    ] {
        if let Some(v) = v {
            let _ = write!(out, " --check-{opt} {}", q(&v));
        }
    }
}

/// A service's real servers in ipvsadm's order (sorted by address and port), without those
/// a health check took out of scheduling (keepalived deletes them from IPVS).
fn sorted_reals(s: &ServiceView) -> Vec<&crate::api::RealView> {
    // Those being drained are listed with weight 0, as IPVS lists a quiesced server.
    let mut reals: Vec<_> = s
        .reals
        .iter()
        .filter(|r| r.scheduled)
        .chain(s.draining.iter())
        .collect();
    reals.sort_by_key(|r| r.address.parse::<std::net::SocketAddr>().ok());
    reals
}

/// Every real server of a service, sorted as ipvsadm sorts them (what `-S` saves); not a
/// sorry server, which ipvsadm's rules cannot express (as keepalived's never reach them).
fn all_reals(s: &ServiceView) -> Vec<&crate::api::RealView> {
    let mut reals: Vec<_> = s.reals.iter().collect();
    reals.sort_by_key(|r| r.address.parse::<std::net::SocketAddr>().ok());
    reals
}

/// One service and its real servers, as `-L` prints them.
pub fn service(out: &mut String, s: &ServiceView, l: Listing, exact: bool) {
    let name = match s.protocol.as_str() {
        "fwm" => format!("FWM  {}", s.address),
        "fwm6" => format!("FWM  {} IPv6", s.address),
        // ipvsadm's "%-4s %s": TCP and UDP get two spaces, SCTP one.
        p => format!("{:<4} {}", p.to_ascii_uppercase(), s.address),
    };
    let name = truncate(&name, 33);
    match l {
        Listing::Stats => {
            let _ = write!(out, "{name:<33}");
            numbers(out, totals(&s.stats), exact);
        }
        Listing::Rate => {
            let r = &s.rates;
            let _ = write!(out, "{name:<33}");
            numbers(out, [r.cps, r.inpps, r.outpps, r.inbps, r.outbps], exact);
        }
        _ => {
            let _ = write!(out, "{name} {}", s.scheduler);
            if !s.flags.is_empty() {
                let _ = write!(out, " ({})", s.flags.join(","));
            }
            if let Some(t) = s.persistent {
                let _ = write!(out, " persistent {t}");
                if s.netmask != "255.255.255.255" && s.netmask != "128" {
                    let _ = write!(out, " mask {}", s.netmask);
                }
            }
            if let Some(pe) = &s.pe {
                let _ = write!(out, " pe {pe}");
            }
            if s.ops {
                out.push_str(" ops");
            }
            // wvs's own: the application helpers (ipvsadm lists ip_vs_app elsewhere).
            if !s.helpers.is_empty() {
                let _ = write!(out, " helper {}", s.helpers.join(","));
            }
            // wvs's own, as DPVS's ipvsadm shows its synproxy flag: when set on the service.
            if let Some(m) = &s.synproxy {
                let _ = write!(out, " synproxy {m}");
            }
        }
    }
    out.push('\n');
    for r in sorted_reals(s) {
        let d = truncate(&r.address, 28);
        let _ = match l {
            Listing::Stats => {
                let _ = write!(out, "  -> {d:<28}");
                numbers(out, totals(&r.stats), exact);
                writeln!(out)
            }
            Listing::Rate => {
                let _ = write!(
                    out,
                    "  -> {d:<28} {:>8} {:>8} {:>8}",
                    r.rates.cps as u32, r.rates.inpps as u32, r.rates.outpps as u32
                );
                largenum(out, r.rates.inbps, exact);
                largenum(out, r.rates.outbps, exact);
                writeln!(out)
            }
            Listing::Thresholds => writeln!(
                out,
                "  -> {d:<28} {:<10} {:<10} {:<10} {:<10}",
                r.upper_threshold, r.lower_threshold, r.active_conns, r.inactive_conns
            ),
            Listing::PersistentConn => writeln!(
                out,
                "  -> {d:<28} {:<9} {:<11} {:<10} {:<10}",
                r.weight, r.persist_conns, r.active_conns, r.inactive_conns
            ),
            Listing::Plain => writeln!(
                out,
                "  -> {d:<28} {:<7} {:<6} {:<10} {:<10}",
                method(&r.forward).0,
                r.weight,
                r.active_conns,
                r.inactive_conns
            ),
            Listing::TunInfo => writeln!(
                out,
                "  -> {d:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
                method(&r.forward).0,
                tun_info(r).unwrap_or_else(|| "n/a".into()),
                r.weight,
                r.active_conns,
                r.inactive_conns
            ),
        };
    }
}

/// The whole table, as `ipvsadm -L -n` prints it.
pub fn list(
    out: &mut String,
    version: &str,
    size: usize,
    services: &[ServiceView],
    l: Listing,
    exact: bool,
) {
    let _ = writeln!(out, "IP Virtual Server version {version} (size={size})");
    title(out, l);
    for s in services {
        service(out, s, l, exact);
    }
}

/// The rules, as `ipvsadm -S -n` prints them.
pub fn save(out: &mut String, services: &[ServiceView]) {
    for s in services {
        // The service as ipvsadm names it: -t/-u ADDR, or -f MARK (-6 after it for IPv6).
        let id = match s.protocol.as_str() {
            "udp" => format!("-u {}", s.address),
            "sctp" => format!("--sctp-service {}", s.address),
            "fwm" => format!("-f {}", s.address),
            "fwm6" => format!("-f {} -6", s.address),
            _ => format!("-t {}", s.address),
        };
        let _ = write!(out, "-A {id} -s {}", s.scheduler);
        // After the persistence, as ipvsadm -S writes them (the oracle's `outputs`).
        if let Some(t) = s.persistent {
            let _ = write!(out, " -p {t}");
            if s.netmask != "255.255.255.255" && s.netmask != "128" {
                let _ = write!(out, " -M {}", s.netmask);
            }
        }
        if let Some(pe) = &s.pe {
            let _ = write!(out, " --pe {pe}");
        }
        if !s.flags.is_empty() {
            let _ = write!(out, " -b {}", s.flags.join(","));
        }
        if s.ops {
            out.push_str(" -o");
        }
        if !s.helpers_default {
            let h = if s.helpers.is_empty() {
                "none".to_string()
            } else {
                s.helpers.join(",")
            };
            let _ = write!(out, " --helper {h}");
        }
        if let Some(u) = &s.udp_on_failure {
            let _ = write!(out, " --udp-on-failure {u}");
        }
        if let Some(m) = &s.synproxy {
            let _ = write!(out, " --synproxy {m}");
        }
        if let Some(c) = &s.check {
            check_args(out, c);
        }
        out.push('\n');
        for r in all_reals(s) {
            let _ = write!(
                out,
                "-a {id} -r {} {} -w {}",
                r.address,
                method(&r.forward).1,
                r.configured_weight.unwrap_or(r.weight)
            );
            // print_tunnel_rule: the type, GUE's port, the checksum option but for IPIP.
            if r.forward == "tunnel" {
                let kind = r.tun_type.as_deref().unwrap_or("ipip");
                let _ = write!(out, " --tun-type {kind}");
                if let Some(p) = r.tun_port {
                    let _ = write!(out, " --tun-port {p}");
                }
                if kind != "ipip" {
                    let csum = r.tun_csum.as_deref().unwrap_or("nocsum");
                    let _ = write!(out, " --tun-{csum}");
                }
            }
            if r.hint != 0 {
                let _ = write!(out, " --hint {}", r.hint);
            }
            if r.sorry {
                out.push_str(" --sorry");
            }
            if let Some(c) = &r.check {
                check_args(out, c);
            }
            out.push('\n');
        }
        for l in &s.laddrs {
            let _ = writeln!(out, "-P {id} -z {}", l.address);
        }
    }
}

/// Full NAT's local addresses, as DPVS's `ipvsadm --get-laddr` prints them: a title,
/// then each service with its count and each address with its exhaustion count
/// ("CONFLICTS") and connections.
pub fn laddrs(out: &mut String, services: &[ServiceView]) {
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:<20} {:<10} {:<10}",
        "VIP:VPORT", "TOTAL", "LADDR", "CONFLICTS", "CONNS"
    );
    for s in services {
        let _ = writeln!(out, "{:<20} {:<8} ", s.address, s.laddrs.len());
        for l in &s.laddrs {
            let _ = writeln!(
                out,
                "{:<20} {:<8} {:<20} {:<10} {:<10}",
                "", "", l.address, l.exhausted, l.conns
            );
        }
    }
}

/// The connection table, as `ipvsadm -L -n -c` prints it; with `--persistent-conn`
/// (`pe`), the persistence engine's name and key of the templates an engine keyed, in
/// ipvsadm's columns (its header and rows are not of one width, as ipvsadm's are not).
pub fn conns(out: &mut String, conns: &[ConnView], pe: bool) {
    out.push_str("IPVS connection entries\n");
    let _ = if pe {
        writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        )
    } else {
        writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        )
    };
    for c in conns {
        // Whole seconds left, rounded down as IPVS's `(expires - jiffies) / HZ`: a
        // connection just armed for 60 s shows 00:59 (the oracle's `state` scenario).
        let secs = c.expires_ms / 1000;
        let expire = format!("{:02}:{:02}", secs / 60, secs % 60);
        let _ = write!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} ",
            c.protocol.to_ascii_uppercase(),
            expire,
            c.state,
            c.client,
            c.virtual_address,
        );
        let _ = match (&c.pe_name, &c.pe_data) {
            (Some(name), Some(data)) if pe => {
                writeln!(out, "{:<16} {:<18} {data}", c.real, name)
            }
            _ => writeln!(out, "{}", c.real),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RealView;
    use crate::api::views::{Rates, Totals};

    fn real(addr: &str, w: u32, act: i64, inact: i64) -> RealView {
        RealView {
            address: addr.into(),
            weight: w,
            forward: "nat".into(),
            tun_type: None,
            tun_port: None,
            tun_csum: None,
            upper_threshold: 0,
            lower_threshold: 0,
            hint: 0,
            active_conns: act,
            inactive_conns: inact,
            persist_conns: 0,
            overloaded: false,
            reachable: true,
            configured_weight: None,
            check: None,
            checks: Vec::new(),
            health: None,
            checks_health: Vec::new(),
            scheduled: true,
            drain_until_ms: None,
            sorry: false,
            stats: Totals::default(),
            rates: Rates::default(),
        }
    }

    fn svc() -> ServiceView {
        ServiceView {
            protocol: "tcp".into(),
            address: "192.168.10.1:80".into(),
            scheduler: "wlc".into(),
            scheduler_runs: "wasm".into(),
            flags: vec![],
            persistent: Some(300),
            netmask: "255.255.255.255".into(),
            helpers: vec![],
            helpers_default: true,
            check: None,
            udp_on_failure: None,
            synproxy: None,
            ops: false,
            pe: None,
            quorum: None,
            hysteresis: None,
            quorum_up: None,
            quorum_down: None,
            omega: false,
            quorum_lost: false,
            draining: vec![],
            stats: Totals {
                conns: 5123,
                inpkts: 61234,
                outpkts: 58002,
                inbytes: 4923411,
                outbytes: 81234567,
            },
            rates: Rates::default(),
            laddrs: vec![],
            reals: vec![
                real("10.0.0.3:80", 2, 25, 81),
                real("10.0.0.2:80", 1, 12, 40),
            ],
        }
    }

    #[test]
    fn methods_and_tunnels_print_as_ipvsadm_does() {
        // As ipvsadm 1.31 prints them in the oracle's `xmit` scenario.
        let mut s = svc();
        s.persistent = None;
        let tunnel = |addr: &str, kind: &str, port: Option<u32>, csum: Option<&str>| RealView {
            forward: "tunnel".into(),
            tun_type: Some(kind.into()),
            tun_port: port,
            tun_csum: csum.map(str::to_string),
            ..real(addr, 1, 0, 0)
        };
        s.reals = vec![
            RealView {
                forward: "dr".into(),
                ..real("10.0.0.1:80", 1, 0, 0)
            },
            tunnel("10.0.0.2:80", "ipip", None, None),
            tunnel("10.0.0.3:80", "gue", Some(6080), Some("remcsum")),
            tunnel("10.0.0.4:80", "gre", None, Some("csum")),
        ];
        let mut out = String::new();
        service(&mut out, &s, Listing::TunInfo, false);
        assert_eq!(
            out,
            "TCP  192.168.10.1:80 wlc\n  \
             -> 10.0.0.1:80                  Route   n/a           1      0          0         \n  \
             -> 10.0.0.2:80                  Tunnel  ipip          1      0          0         \n  \
             -> 10.0.0.3:80                  Tunnel  gue:6080:r+c  1      0          0         \n  \
             -> 10.0.0.4:80                  Tunnel  gre:+c        1      0          0         \n"
        );
        let mut out = String::new();
        save(&mut out, &[s]);
        assert_eq!(
            out,
            "-A -t 192.168.10.1:80 -s wlc\n\
             -a -t 192.168.10.1:80 -r 10.0.0.1:80 -g -w 1\n\
             -a -t 192.168.10.1:80 -r 10.0.0.2:80 -i -w 1 --tun-type ipip\n\
             -a -t 192.168.10.1:80 -r 10.0.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum\n\
             -a -t 192.168.10.1:80 -r 10.0.0.4:80 -i -w 1 --tun-type gre --tun-csum\n"
        );
    }

    #[test]
    fn plain_listing_matches_ipvsadm() {
        let mut out = String::new();
        list(&mut out, "1.2.1", 4096, &[svc()], Listing::Plain, false);
        assert_eq!(
            out,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  192.168.10.1:80 wlc persistent 300\n  \
             -> 10.0.0.2:80                  Masq    1      12         40        \n  \
             -> 10.0.0.3:80                  Masq    2      25         81        \n"
        );
    }

    /// As the kernel's ipvsadm printed it in the oracle (`sched`): the scheduler's flags in
    /// parentheses after its name.
    #[test]
    fn scheduler_flags_follow_the_scheduler() {
        let mut out = String::new();
        let mut s = svc();
        s.scheduler = "sh".into();
        s.flags = vec!["sh-fallback".into(), "sh-port".into()];
        s.reals.clear();
        service(&mut out, &s, Listing::Plain, false);
        assert_eq!(
            out,
            "TCP  192.168.10.1:80 sh (sh-fallback,sh-port) persistent 300\n"
        );
    }

    /// ipvsadm's order: ` persistent T`, ` mask M`, then ` ops` (`-L`); `-p T -M M`, then
    /// `-o` (`-S`), which `-R` reads back.
    #[test]
    fn one_packet_scheduling_is_listed_and_saved() {
        let mut s = svc();
        s.protocol = "udp".into();
        s.address = "192.168.10.1:53".into();
        s.ops = true;
        s.netmask = "255.255.255.0".into();
        s.reals.clear();
        let mut out = String::new();
        service(&mut out, &s, Listing::Plain, false);
        assert_eq!(
            out,
            "UDP  192.168.10.1:53 wlc persistent 300 mask 255.255.255.0 ops\n"
        );
        let mut out = String::new();
        save(&mut out, &[s]);
        assert_eq!(
            out,
            "-A -u 192.168.10.1:53 -s wlc -p 300 -M 255.255.255.0 -o\n"
        );
        let words: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        let a = crate::adm::parse::parse(&words).expect("-R reads it");
        assert!(a.ops);
    }

    #[test]
    fn stats_listing_matches_ipvsadm() {
        let mut out = String::new();
        let mut s = svc();
        s.reals.clear();
        list(&mut out, "1.2.1", 4096, &[s], Listing::Stats, false);
        assert_eq!(
            out,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  \
             -> RemoteAddress:Port\n\
             TCP  192.168.10.1:80                  5123    61234    58002  4923411 81234567\n"
        );
    }

    #[test]
    fn large_numbers() {
        let f = |i, exact| {
            let mut s = String::new();
            largenum(&mut s, i, exact);
            s
        };
        assert_eq!(f(99_999_999, false), " 99999999");
        assert_eq!(f(123_456_789, false), "  123456K");
        assert_eq!(f(12_345_678_901, false), "   12345M");
        assert_eq!(f(123_456_789_012, false), "     123G");
        assert_eq!(f(123_456_789, true), " 123456789");
        assert_eq!(f(5, true), "        5");
    }

    #[test]
    fn get_laddr_format_as_dpvs() {
        let mut s = svc();
        s.laddrs = vec![crate::api::LaddrView {
            address: "10.0.0.100".into(),
            conns: 12,
            exhausted: 1,
        }];
        let mut out = String::new();
        laddrs(&mut out, &[s]);
        assert_eq!(
            out,
            "VIP:VPORT            TOTAL    LADDR                CONFLICTS  CONNS     \n\
             192.168.10.1:80      1        \n                              \
             10.0.0.100           1          12        \n"
        );
    }

    #[test]
    fn save_format() {
        let mut out = String::new();
        let mut s = svc();
        s.netmask = "255.255.255.0".into();
        save(&mut out, &[s]);
        assert_eq!(
            out,
            "-A -t 192.168.10.1:80 -s wlc -p 300 -M 255.255.255.0\n\
             -a -t 192.168.10.1:80 -r 10.0.0.2:80 -m -w 1\n\
             -a -t 192.168.10.1:80 -r 10.0.0.3:80 -m -w 2\n"
        );
    }

    #[test]
    fn connection_rows() {
        let mut out = String::new();
        conns(
            &mut out,
            &[ConnView {
                protocol: "tcp".into(),
                client: "172.16.0.9:51234".into(),
                virtual_address: "192.168.10.1:80".into(),
                real: "10.0.0.2:80".into(),
                state: "ESTABLISHED".into(),
                expires_ms: 899_000,
                pe_name: None,
                pe_data: None,
                offloaded: false,
                key: None,
            }],
            false,
        );
        assert_eq!(
            out.lines().nth(2),
            Some("TCP 14:59  ESTABLISHED 172.16.0.9:51234   192.168.10.1:80    10.0.0.2:80")
        );
    }

    /// `--persistent-conn`: a persistence engine's template with its name and key, in
    /// ipvsadm's columns (the kernel's record of the oracle's `pe` scenario); a row
    /// without an engine as without the option.
    #[test]
    fn connection_rows_with_the_persistence_engine() {
        let row = |pe: bool| ConnView {
            protocol: "udp".into(),
            client: "198.18.0.10:0".into(),
            virtual_address: "198.18.100.1:5060".into(),
            real: "198.19.0.11:5060".into(),
            state: "NONE".into(),
            expires_ms: 51_300,
            pe_name: pe.then(|| "sip".into()),
            pe_data: pe.then(|| "c3".into()),
            offloaded: false,
            key: None,
        };
        let mut out = String::new();
        conns(&mut out, &[row(true), row(false)], true);
        assert_eq!(
            out,
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination        pe name          pe_data\n\
             UDP 00:51  NONE        198.18.0.10:0      198.18.100.1:5060  198.19.0.11:5060 sip                c3\n\
             UDP 00:51  NONE        198.18.0.10:0      198.18.100.1:5060  198.19.0.11:5060\n"
        );
    }
}
