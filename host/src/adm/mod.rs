//! `wvs adm`: ipvsadm's command line and output over wvs's REST API.
//!
//! Every change goes to `POST /api/v1/batch`, so a `-R` restore is applied all or nothing
//! (ipvsadm applies its lines one by one and stops half way on an error).

pub mod format;
pub mod keepalived;
pub mod parse;

use std::io::Read;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::api::{ConnList, ErrorBody, InfoView, ServiceView};
use crate::config::{RealDef, ServiceDef};
use crate::control::edit::Change;
use format::Listing;
use parse::{Args, Cmd, Fwd, UsageError};

const HELP: &str = "\
wvs adm: ipvsadm's commands for a running wvs, over its REST API

Usage:
  wvs adm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
          [-o] [--helper name[,name]|none] [check options]
  wvs adm -D virtual-service
  wvs adm -C
  wvs adm -R                      (reads -S lines from stdin; applied all or nothing)
  wvs adm -S [-n]
  wvs adm -a|e virtual-service -r server-address [-g|-i|-m|-b] [-w weight] [-x upper] [-y lower]
          [--tun-type ipip|gue|gre] [--tun-port port] [--tun-nocsum|--tun-csum|--tun-remcsum]
          [check options]
  wvs adm -d virtual-service -r server-address [--drain seconds]
  wvs adm -L|l [virtual-service] [-n] [-c] [--stats|--rate|--thresholds|--persistent-conn|--tun-info] [--exact]
  wvs adm -L|l --timeout
  wvs adm --start-daemon master|backup [--mcast-interface IF] [--syncid N] [--sync-maxlen N]
          [--mcast-group ADDR] [--mcast-port PORT] [--mcast-ttl TTL]
  wvs adm --stop-daemon master|backup
  wvs adm -L|l --daemon
  wvs adm -Z [virtual-service]    (zero the counters: all, or one service's)
  wvs adm --set tcp tcpfin udp    (seconds; 0 keeps a value)
  wvs adm -P|Q virtual-service -z local-address   (full NAT's local addresses, as DPVS's)
  wvs adm -G [virtual-service]
  wvs adm --add-mark-rule RULE | --delete-mark-rule RULE | --list-mark-rules
  wvs adm --import-keepalived FILE
  wvs adm --plugin-load NAME FILE | --plugin-list | --plugin-delete NAME
  wvs adm -h | -v

virtual-service:
  --tcp-service  -t service-address   service-address is host:port
  --udp-service  -u service-address
  --sctp-service    service-address   (IPVS's SCTP state table and timeouts)
  --fwmark-service -f fwmark          fwmark is an integer greater than zero: the
                                      packets wvs's mark rules give it (-6: IPv6's)

Options:
  --scheduler    -s scheduler   rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos,
                                or an uploaded plugin's name; the default is wlc
  --persistent   -p [timeout]   persistent service (default timeout 360 s)
  --netmask      -M netmask     persistence granularity, e.g. 255.255.255.0
  --sched-flags  -b flags       (with -A/-E) sh-fallback sh-port mh-fallback mh-port
                                flag-1 flag-2 flag-3
  --ipv6         -6             with -f: the fwmark service of IPv6
  --ops          -o             one-packet scheduling (UDP services): each datagram is
                                scheduled on its own, no connection is kept
  --pe           name           persistence engine of a persistent service: sip (a SIP
                                call's datagrams by their Call-ID) or an engine plugin
  --real-server  -r address     ip[:port]; without a port, the service's port
  --gatewaying   -g             direct routing (the default, as ipvsadm's): the server
                                shares a segment with wvs and holds the VIP
  --ipip         -i             tunnelling: IPIP, or GUE/GRE with --tun-type
  --masquerading -m             NAT: replies return through wvs
  --fullnat      -b             full NAT (with -a/-e, as DPVS's ipvsadm): the source
                                becomes a local address of the service (-P), so the
                                server needs no route to the clients
  --add-laddr    -P             add a local address to a service (with -z)
  --del-laddr    -Q             remove one (its connections keep it until they end)
  --get-laddr    -G             list them, with their connections and exhaustions
  --laddr        -z address     the local address: one of wvs's host's on the servers' side
  --tun-type     type           ipip (default), gue or gre
  --tun-port     port           GUE's UDP port (needed for gue)
  --tun-nocsum / --tun-csum / --tun-remcsum
                                the tunnel's checksum (csum: gue, gre; remcsum: gue)
  --weight       -w weight      0..65535, default 1; 0 quiesces the server
  --u-threshold  -x uthreshold  upper connection threshold
  --l-threshold  -y lthreshold  lower connection threshold
  --numeric      -n             numeric output (wvs never resolves names)
  --connection   -c             list the connection table
  --stats / --rate / --thresholds / --persistent-conn / --exact (-X) / --sort / --nosort
  --zero         -Z             zero the counters
  --list         -L / -l        list the services (-c: the connections)
  --version      -v             wvs adm's version (not ipvsadm's line: wvs is no kernel)

wvs's own:
  --helper NAMES      (with -A/-E) application helpers bound to the service's NAT
                      connections, in order: ftp, proxy-v2, or a helper plugin's name;
                      none for none; without it, -A gives port 21 ftp and -E keeps them
  --check TYPE        (with -A/-E: the service's real servers' default; with -a/-e: the
                      server's own) a health check: tcp, http:PATH, https:PATH, udp,
                      dns:NAME, smtp[:HELO], ping, misc:PROGRAM, or none; without it, -e
                      keeps the check
  --check-interval S  seconds between checks (keepalived's delay_loop; default 5)
  --check-timeout S   seconds one whole check may take (connect_timeout; default 5)
  --rise N / --fall N passes that bring a server back (default 1) and failures that take
                      it out (default 2)
  --check-port P / --check-host H / --check-status CODES / --check-digest MD5 /
  --check-contains TEXT / --check-payload TEXT / --check-expect TEXT / --check-qtype T /
  --check-retry N     the rest of a check, as its TOML keys (port, host, status...)
  --hint N            (with -a/-e) a number custom schedulers read; -e keeps it unless given
  --udp-on-failure keep|move
                      (with -A) a failed server's UDP flows stay (IPVS's way) or move
  --synproxy on|off|auto
                      (with -A/-E, TCP) answer new connections' SYNs with SYN cookies from
                      the VIP (as DPVS's synproxy): on always, auto while the connection
                      table is short; without it, the daemon's defense.synproxy decides
  --sorry             (with -a) a sorry server: scheduled only while no other can take a
                      connection (keepalived's sorry_server)
  --drain S           (with -d) remove the server gracefully: no new connections, its
                      connections go on until they end or S seconds are over
  --add-mark-rule RULE  add a rule to wvs's classifier, which marks packets for fwmark
                      services (-f) as `nft ... meta mark set` would: nft's match words
                      and the mark, e.g. 'ip daddr 198.18.1.10 tcp dport { 80, 443 } mark 1'
                      (ip/ip6 daddr and saddr, meta l4proto, tcp/udp/sctp/th dport and sport;
                      daddr is required; the last rule that matches a packet wins)
  --delete-mark-rule RULE  remove a rule, written as it was added
  --list-mark-rules   the rules, in order (-S saves them first; -C clears them)
  --inhibit-on-failure  a failed server gets weight 0 (its connections go on) instead of
                      leaving scheduling
  --import-keepalived FILE
                      apply keepalived.conf's virtual_server blocks (with their real
                      servers, checkers and sorry_server; includes followed) as one change,
                      all or nothing: every keyword wvs cannot honour is listed with its
                      file and line and nothing is applied; VRRP sections are skipped
  --plugin-load NAME FILE
                      upload a scheduler, helper or persistence engine plugin (a .wasm module) under NAME,
                      compiled and checked before it is taken; it replaces a plugin of that
                      name in the services that use it (the built-in ones too)
  --plugin-list       the plugins: built-in and uploaded, their size and their users
  --plugin-delete NAME
                      delete an uploaded plugin no service uses (with its file)
  --start-daemon master|backup
                      run IPVS's connection sync daemon (docs/sync.md): a master sends its
                      connections to the backups, a backup keeps them so that it can take
                      the clients over; one of each may run
  --mcast-interface IF  the interface its messages use (default eth0)
  --syncid N          0-255: a master's id; a backup takes only that master's (0: any)
  --sync-maxlen N     bytes of UDP payload per message (default 1472; 1452 over IPv6)
  --mcast-group ADDR  the multicast group, IPv4 or IPv6 (default 224.0.0.81)
  --mcast-port PORT   its UDP port (default 8848)
  --mcast-ttl TTL     1-255, the master's multicast TTL (default 1)
  --api ADDR          the API's address (default $WVS_API or 127.0.0.1:9080);
                      https://HOST:PORT when it is served over TLS
  --api-ca FILE       with https: the API's certificate, or its CA's (PEM)
  --token-file FILE   the API token (default $WVS_API_TOKEN, else /var/lib/wvs/api-token)

Not supported: none of ipvsadm's options (docs/ipvs-differences.md lists what behaves
otherwise)
";

/// Run `wvs adm` with `words` (the arguments after `adm`); returns the exit code.
pub fn main(words: &[String]) -> i32 {
    let args = match parse::parse(words) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wvs adm: {e}\nTry `wvs adm -h' for more information.");
            return 2;
        }
    };
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(Failure::Usage(e)) => {
            eprintln!("wvs adm: {e}\nTry `wvs adm -h' for more information.");
            2
        }
        Err(Failure::Api(e)) => {
            eprintln!("wvs adm: {e}");
            1
        }
    }
}

enum Failure {
    Usage(UsageError),
    Api(String),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Self::Usage(e)
    }
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(UsageError(msg.into()))
}

fn run(a: &Args) -> Result<String, Failure> {
    let mut out = String::new();
    let Some(cmd) = a.cmd else {
        // ipvsadm with no command lists the table.
        return run(&Args {
            cmd: Some(Cmd::List),
            ..a.clone()
        });
    };
    match cmd {
        Cmd::Help => return Ok(HELP.into()),
        Cmd::Version => {
            return Ok(format!(
                "wvs adm {} (ipvsadm-compatible)\n",
                env!("CARGO_PKG_VERSION")
            ));
        }
        _ => {}
    }
    let client = Client::new(a)?;
    match cmd {
        Cmd::List if a.timeout => list_timeouts(&client, &mut out)?,
        Cmd::List if a.list_daemon => list_daemons(&client, &mut out)?,
        Cmd::List if a.connections => list_connections(a, &client, &mut out)?,
        Cmd::List => list(a, &client, &mut out)?,
        Cmd::Save => save(&client, &mut out)?,
        Cmd::GetLaddr => get_laddrs(a, &client, &mut out)?,
        Cmd::Restore => restore(&client)?,
        Cmd::PluginLoad => plugin_load(a, &client, &mut out)?,
        Cmd::PluginDelete => plugin_delete(a, &client)?,
        Cmd::PluginList => plugin_list(&client, &mut out)?,
        Cmd::ImportKeepalived => import_keepalived(a, &client)?,
        Cmd::Zero => zero(a, &client)?,
        Cmd::ListMarkRules => list_mark_rules(&client, &mut out)?,
        _ => edit(a, &client)?,
    }
    Ok(out)
}

/// `-L --daemon`: the sync daemons, as ipvsadm prints what the kernel reports.
fn list_daemons(client: &Client, out: &mut String) -> Result<(), Failure> {
    let ds: Vec<serde_json::Value> = client.get("/api/v1/daemons")?;
    for d in ds {
        let e = &d["effective"];
        *out += &format!(
            "{} sync daemon (mcast={}, syncid={}, maxlen={}, group={}, port={}, ttl={})\n",
            d["state"].as_str().unwrap_or("?"),
            d["mcast_interface"].as_str().unwrap_or("?"),
            d["syncid"],
            e["sync_maxlen"],
            e["mcast_group"].as_str().unwrap_or("?"),
            e["mcast_port"],
            e["mcast_ttl"],
        );
    }
    Ok(())
}

/// `--list-mark-rules`: the classifier's rules, in order, as `--add-mark-rule` takes them.
fn list_mark_rules(client: &Client, out: &mut String) -> Result<(), Failure> {
    let rules: Vec<crate::config::mark::MarkRuleDef> = client.get("/api/v1/mark-rules")?;
    for r in rules {
        let rule = r.validate().map_err(|e| Failure::Api(e.to_string()))?;
        *out += &crate::config::mark::words(&rule);
        out.push('\n');
    }
    Ok(())
}

/// `-L --timeout`: the three timeouts.
fn list_timeouts(client: &Client, out: &mut String) -> Result<(), Failure> {
    let t: crate::config::Timeouts = client.get("/api/v1/timeouts")?;
    *out += &format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcpfin, t.udp
    );
    Ok(())
}

/// `-L -c`: the connections, read page by page as /proc/net/ip_vs_conn is read (a
/// table of millions is not one answer).
fn list_connections(a: &Args, client: &Client, out: &mut String) -> Result<(), Failure> {
    let mut path = "/api/v1/connections?".to_string();
    if let Some((p, addr)) = &a.service {
        path += &format!("service={p}/{addr}&");
    }
    // Page by page, as /proc/net/ip_vs_conn is read: a table of millions is not
    // one answer.
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(c) => format!("{path}cursor={c}"),
            None => path.clone(),
        };
        let list: ConnList = client.get(&page)?;
        all.extend(list.connections);
        match list.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    format::conns(out, &all, a.persistent_conn);
    Ok(())
}

/// `-L`: the table, or one service, in the listing the options ask for.
fn list(a: &Args, client: &Client, out: &mut String) -> Result<(), Failure> {
    let listing = if a.stats {
        Listing::Stats
    } else if a.rate {
        Listing::Rate
    } else if a.thresholds {
        Listing::Thresholds
    } else if a.persistent_conn {
        Listing::PersistentConn
    } else if a.tun_info {
        Listing::TunInfo
    } else {
        Listing::Plain
    };
    match &a.service {
        Some((p, addr)) => {
            let s: ServiceView = client.get(&format!("/api/v1/services/{p}/{addr}"))?;
            format::title(out, listing);
            format::service(out, &s, listing, a.exact);
        }
        None => {
            let info: InfoView = client.get("/api/v1/info")?;
            // Listed in ipvsadm's sorted order; --nosort is accepted and lists the same.
            let services: Vec<ServiceView> = client.get("/api/v1/services")?;
            format::list(
                out,
                &info.ipvs_version,
                info.conn_table_size,
                &services,
                listing,
                a.exact,
            );
        }
    }
    Ok(())
}

/// `-S`: the rules that make the table again.
fn save(client: &Client, out: &mut String) -> Result<(), Failure> {
    // The mark rules first (wvs's own: ipvsadm's table has none), then the services.
    let mut rules = String::new();
    list_mark_rules(client, &mut rules)?;
    for r in rules.lines() {
        *out += &format!("--add-mark-rule {r}\n");
    }
    let services: Vec<ServiceView> = client.get("/api/v1/services")?;
    format::save(out, &services);
    Ok(())
}

/// `-G` (DPVS): the full-NAT local addresses.
fn get_laddrs(a: &Args, client: &Client, out: &mut String) -> Result<(), Failure> {
    let services: Vec<ServiceView> = match &a.service {
        Some((p, addr)) => vec![client.get(&format!("/api/v1/services/{p}/{addr}"))?],
        None => client
            .get::<Vec<ServiceView>>("/api/v1/services")?
            .into_iter()
            .filter(|s| !s.laddrs.is_empty())
            .collect(),
    };
    format::laddrs(out, &services);
    Ok(())
}

/// `-R`: rules from standard input, applied as one change.
fn restore(client: &Client) -> Result<(), Failure> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::Api(format!("cannot read the rules from stdin: {e}")))?;
    let mut changes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Words as a shell splits them: -S quotes what has spaces in it.
        let words: Vec<String> = shlex::split(line)
            .ok_or_else(|| usage(format!("line {}: unbalanced quotes: {line}", n + 1)))?;
        let words = if words.first().is_some_and(|w| w == "ipvsadm") {
            &words[1..]
        } else {
            &words[..]
        };
        let la = parse::parse(words).map_err(|e| usage(format!("line {}: {e}: {line}", n + 1)))?;
        changes.push(change(&la).map_err(|e| match e {
            Failure::Usage(u) => usage(format!("line {}: {u}: {line}", n + 1)),
            other => other,
        })?);
    }
    let n = changes.len();
    client.batch(changes)?;
    eprintln!("wvs adm: {n} rules restored");
    Ok(())
}

/// `--plugin-load NAME FILE`.
fn plugin_load(a: &Args, client: &Client, out: &mut String) -> Result<(), Failure> {
    let name = a.plugin.clone().unwrap_or_default();
    let file = a.plugin_file.clone().unwrap_or_default();
    let wasm =
        std::fs::read(&file).map_err(|e| Failure::Api(format!("cannot read {file}: {e}")))?;
    let _: Option<Vec<crate::api::PluginView>> =
        client.send("PUT", &format!("/api/v1/plugins/{name}"), Some(wasm))?;
    *out += &format!("plugin {name} loaded from {file}\n");
    Ok(())
}

/// `--plugin-delete NAME`.
fn plugin_delete(a: &Args, client: &Client) -> Result<(), Failure> {
    let name = a.plugin.clone().unwrap_or_default();
    let _: Option<()> = client.send("DELETE", &format!("/api/v1/plugins/{name}"), None)?;
    Ok(())
}

/// `--plugin-list`.
fn plugin_list(client: &Client, out: &mut String) -> Result<(), Failure> {
    let all: Vec<crate::api::PluginView> = client.get("/api/v1/plugins")?;
    *out += &format!(
        "{:<16} {:<8} {:>8}  {}\n",
        "Name", "Kind", "Bytes", "Used by"
    );
    for p in all {
        *out += &format!(
            "{:<16} {:<8} {:>8}  {}\n",
            p.name,
            p.kind,
            p.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            if p.used_by.is_empty() {
                "-".to_string()
            } else {
                p.used_by.join(", ")
            }
        );
    }
    Ok(())
}

/// `--import-keepalived FILE`: all of it, or nothing with every problem said.
fn import_keepalived(a: &Args, client: &Client) -> Result<(), Failure> {
    let file = a.import.clone().unwrap_or_default();
    let found = keepalived::import(std::path::Path::new(&file));
    for n in &found.notes {
        eprintln!("wvs adm: note: {n}");
    }
    if !found.problems.is_empty() {
        for p in &found.problems {
            eprintln!("wvs adm: {p}");
        }
        return Err(Failure::Api(format!(
            "{file}: {} thing{} wvs cannot import; nothing was applied",
            found.problems.len(),
            if found.problems.len() == 1 { "" } else { "s" }
        )));
    }
    // track_file's init_file: written before the checks read them, as keepalived does.
    for (path, value, overwrite) in &found.init_files {
        let p = std::path::Path::new(path);
        if *overwrite || !p.exists() {
            std::fs::write(p, format!("{value}\n"))
                .map_err(|e| Failure::Api(format!("init_file {path}: {e}")))?;
            eprintln!("wvs adm: note: init_file: {path} holds {value}");
        }
    }
    let daemons = found.daemons.len();
    let (services, reals) = (
        found.services.len(),
        found.services.iter().map(|s| s.reals.len()).sum::<usize>(),
    );
    // global_defs' lvs_flush: keepalived starts from an empty table.
    let mut changes: Vec<Change> = Vec::new();
    if found.flush {
        changes.push(Change::Clear {});
    }
    if let Some([tcp, tcpfin, udp]) = found.timeouts {
        changes.push(Change::SetTimeouts { tcp, tcpfin, udp });
    }
    changes.extend(
        found
            .services
            .into_iter()
            .map(|service| Change::AddService { service }),
    );
    // keepalived's lvs_sync_daemon: its daemons replace those that run.
    if !found.daemons.is_empty() {
        let running: Vec<crate::config::daemon::SyncDaemon> = client.get("/api/v1/daemons")?;
        for d in running {
            changes.push(Change::StopDaemon { state: d.state });
        }
        for daemon in &found.daemons {
            changes.push(Change::StartDaemon {
                daemon: daemon.clone(),
            });
        }
    }
    client.batch(changes)?;
    eprintln!(
        "wvs adm: imported {services} virtual server{} with {reals} real server{}{} from {file}",
        if services == 1 { "" } else { "s" },
        if reals == 1 { "" } else { "s" },
        if daemons > 0 {
            " and the sync daemons"
        } else {
            ""
        }
    );
    Ok(())
}

/// `-Z`: the counters of one service or all.
fn zero(a: &Args, client: &Client) -> Result<(), Failure> {
    let path = match &a.service {
        Some((p, addr)) => format!("/api/v1/services/{p}/{addr}/stats/zero"),
        None => "/api/v1/stats/zero".to_string(),
    };
    let _: crate::api::Zeroed = client.post(&path)?;
    Ok(())
}

/// The commands that change the table (`-A -E -D -C -a -e -d -P -Q --set`).
fn edit(a: &Args, client: &Client) -> Result<(), Failure> {
    let mut c = change(a)?;
    // -e sets what ipvsadm's -e sets; the hint (wvs's own) stays unless --hint.
    if let (
        Change::EditReal {
            protocol,
            address,
            real,
        },
        None,
    ) = (&mut c, a.hint)
    {
        let svc: ServiceView = client.get(&format!("/api/v1/services/{protocol}/{address}"))?;
        if let Some(r) = svc.reals.iter().find(|r| r.address == real.address) {
            real.hint = r.hint;
        }
    }
    client.batch(vec![c])
}

/// The service of a command: (protocol, address).
fn service_of(a: &Args) -> Result<(String, String), Failure> {
    a.service
        .clone()
        .ok_or_else(|| usage("no virtual service given (-t, -u or -f)"))
}

/// The change a command asks for.
fn change(a: &Args) -> Result<Change, Failure> {
    let cmd = a.cmd.ok_or_else(|| usage("no command given"))?;
    if cmd == Cmd::Clear {
        return Ok(Change::Clear {});
    }
    if let (Cmd::SetTimeouts, Some([tcp, tcpfin, udp])) = (cmd, a.timeouts) {
        return Ok(Change::SetTimeouts { tcp, tcpfin, udp });
    }
    if let (Cmd::AddMarkRule | Cmd::DeleteMarkRule, Some(rule)) = (cmd, a.mark_rule.clone()) {
        return Ok(if cmd == Cmd::AddMarkRule {
            Change::AddMarkRule { rule }
        } else {
            Change::DeleteMarkRule { rule }
        });
    }
    if let (Cmd::StartDaemon | Cmd::StopDaemon, Some(state)) = (cmd, a.daemon_state) {
        return Ok(if cmd == Cmd::StopDaemon {
            Change::StopDaemon { state }
        } else {
            Change::StartDaemon {
                daemon: crate::config::daemon::SyncDaemon {
                    state,
                    // ipvsadm's default interface.
                    mcast_interface: a.mcast_interface.clone().unwrap_or_else(|| "eth0".into()),
                    syncid: a.syncid.unwrap_or(0),
                    sync_maxlen: a.sync_maxlen,
                    mcast_group: a.mcast_group,
                    mcast_port: a.mcast_port,
                    mcast_ttl: a.mcast_ttl,
                },
            }
        });
    }
    let (protocol, address) = service_of(a)?;
    if matches!(cmd, Cmd::AddLaddr | Cmd::DelLaddr) {
        let laddr = a
            .laddr
            .clone()
            .ok_or_else(|| usage("no local address given (-z)"))?;
        return Ok(if cmd == Cmd::AddLaddr {
            Change::AddLaddr {
                protocol,
                address,
                laddr,
            }
        } else {
            Change::DeleteLaddr {
                protocol,
                address,
                laddr,
            }
        });
    }
    let check = check_def(a)?;
    // ipvsadm takes -o for a fwmark service too (one whose marks are UDP's).
    if a.ops && !matches!(protocol.as_str(), "udp" | "fwm" | "fwm6") {
        return Err(usage(
            "One-Packet Scheduling is only for UDP virtual services",
        ));
    }
    if matches!(cmd, Cmd::AddService | Cmd::EditService)
        && a.persistent.is_none()
        && address.ends_with(":0")
    {
        return Err(usage("Zero port specified for non-persistent service"));
    }
    Ok(match cmd {
        Cmd::AddService => Change::AddService {
            service: ServiceDef {
                check,
                ..service_def(a, &protocol, &address)
            },
        },
        Cmd::EditService => {
            let d = service_def(a, &protocol, &address);
            Change::EditService {
                settings: crate::config::ServiceSettings {
                    scheduler: d.scheduler,
                    flags: d.flags,
                    persistent: d.persistent,
                    netmask: d.netmask,
                    helpers: d.helpers,
                    check,
                    udp_on_failure: None,
                    synproxy: d.synproxy,
                    ops: d.ops,
                    pe: d.pe,

                    quorum: None,

                    hysteresis: None,

                    quorum_up: None,

                    quorum_down: None,

                    omega: None,
                },
                protocol,
                address,
            }
        }
        Cmd::DeleteService => Change::DeleteService { protocol, address },
        Cmd::AddReal => Change::AddReal {
            real: real_def(a, &address, check)?,
            protocol,
            address,
        },
        Cmd::EditReal => Change::EditReal {
            real: real_def(a, &address, check)?,
            protocol,
            address,
        },
        Cmd::DeleteReal => Change::DeleteReal {
            real: real_addr(a, &address)?,
            protocol,
            address,
            drain_timeout: a.drain,
        },
        other => return Err(usage(format!("{other:?} is not a change"))),
    })
}

/// The service `-A`/`-E` describe (without its check and real servers).
fn service_def(a: &Args, protocol: &str, address: &str) -> ServiceDef {
    ServiceDef {
        protocol: protocol.into(),
        address: address.into(),
        scheduler: a.scheduler.clone().unwrap_or_else(|| "wlc".into()),
        flags: a.sched_flags.clone(),
        persistent: a.persistent,
        netmask: a.netmask.clone(),
        helpers: a.helper.as_deref().map(parse_helpers),
        check: None,
        udp_on_failure: a.udp_on_failure.clone(),
        synproxy: a.synproxy.clone(),
        ops: a.ops,
        pe: a.pe.clone(),

        quorum: None,

        hysteresis: None,

        quorum_up: None,

        quorum_down: None,

        omega: None,
        laddrs: Vec::new(),
        reals: vec![],
    }
}

/// `-r`'s address; without a port, the service's (ipvsadm's rule).
fn real_addr(a: &Args, service: &str) -> Result<String, Failure> {
    let r = a
        .real
        .clone()
        .ok_or_else(|| usage("no real server given (-r)"))?;
    // A bare address (an IPv6 one too, as ipvsadm's inet_pton takes it) gets the port.
    if let Ok(ip) = r.parse::<std::net::IpAddr>() {
        let port = service
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0);
        return Ok(std::net::SocketAddr::new(ip, port).to_string());
    }
    Ok(r)
}

/// The real server `-a`/`-e` describe, of the service at `service`.
fn real_def(
    a: &Args,
    service: &str,
    check: Option<crate::health::CheckDef>,
) -> Result<RealDef, Failure> {
    let tunnel_opts = a.tun_type.is_some() || a.tun_port.is_some() || a.tun_csum.is_some();
    // ipvsadm: direct routing when no method is given, to -a and -e alike.
    let fwd = a.fwd.unwrap_or(Fwd::Route);
    if tunnel_opts && fwd != Fwd::Tunnel {
        return Err(usage("Tunnel options conflict with forward method"));
    }
    let mut real = real_addr(a, service)?;
    // ipvsadm: DR and tunnels deliver to the service's port, whatever -r said.
    if !matches!(fwd, Fwd::Masq | Fwd::FullNat)
        && let (Some((host, _)), Some((_, port))) =
            (real.rsplit_once(':'), service.rsplit_once(':'))
    {
        real = format!("{host}:{port}");
    }
    Ok(RealDef {
        address: real,
        weight: a.weight.unwrap_or(1),
        forward: match fwd {
            Fwd::Masq => "nat",
            Fwd::Route => "dr",
            Fwd::Tunnel => "tunnel",
            Fwd::FullNat => "fullnat",
        }
        .into(),
        tun_type: a.tun_type.clone(),
        tun_port: a.tun_port,
        tun_csum: a.tun_csum.map(|c| c.trim_start_matches("tun-").to_string()),
        upper_threshold: a.u_threshold.unwrap_or(0),
        lower_threshold: a.l_threshold.unwrap_or(0),
        hint: a.hint.unwrap_or(0),
        check,
        checks: Vec::new(),
        sorry: a.sorry,
    })
}

struct Client {
    agent: ureq::Agent,
    base: String,
    token_file: String,
    token: Option<String>,
}

impl Client {
    fn new(a: &Args) -> Result<Self, Failure> {
        let addr = a
            .api
            .clone()
            .or_else(|| std::env::var("WVS_API").ok())
            .unwrap_or_else(|| crate::consts::DEFAULT_API_ADDR.into());
        let token_file = a.token_file.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                crate::consts::DEFAULT_STATE_DIR,
                crate::consts::TOKEN_FILE
            )
        });
        let token = match &a.token_file {
            Some(_) => None,
            None => std::env::var("WVS_API_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)));
        let base = if let Some(rest) = addr.strip_prefix("https://") {
            let ca = a.api_ca.as_deref().ok_or_else(|| {
                usage("an https:// API needs --api-ca FILE: its certificate or its CA's (PEM)")
            })?;
            let pem = std::fs::read(ca)
                .map_err(|e| Failure::Api(format!("cannot read --api-ca {ca}: {e}")))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(Failure::Api(format!("--api-ca {ca}: no certificate in it")));
            }
            // The same rustls and crypto provider as the daemon's.
            let provider =
                std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::Rustls)
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
                    .unversioned_rustls_crypto_provider(provider)
                    .build(),
            );
            format!("https://{}", rest.trim_end_matches('/'))
        } else {
            format!(
                "http://{}",
                addr.trim_start_matches("http://").trim_end_matches('/')
            )
        };
        Ok(Self {
            agent: config.build().into(),
            base,
            token_file,
            token,
        })
    }

    fn token(&self) -> Result<String, Failure> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim().to_string())
            .map_err(|e| {
                Failure::Api(format!(
                    "cannot read the API token from {}: {e} (set WVS_API_TOKEN or --token-file)",
                    self.token_file
                ))
            })
    }

    fn unreachable(&self, e: ureq::Error) -> Failure {
        let text = e.to_string();
        let hint = if text.contains("CaUsedAsEndEntity") {
            "the API's certificate is marked as a CA's: make it with basicConstraints=CA:FALSE, \
             or sign it with a CA and give that to --api-ca"
        } else if text.contains("certificate") {
            "--api-ca must be the API's certificate or its CA's"
        } else {
            "is `wvs run` running? --api sets the address"
        };
        Failure::Api(format!(
            "cannot reach wvs at {}: {text} ({hint})",
            self.base
        ))
    }

    fn answer<T: DeserializeOwned>(
        &self,
        mut r: ureq::http::Response<ureq::Body>,
    ) -> Result<T, Failure> {
        let status = r.status();
        let text = r
            .body_mut()
            .read_to_string()
            .map_err(|e| Failure::Api(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            return Err(Failure::Api(msg));
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::Api(format!("unexpected answer from wvs: {e}")))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        // Reads need the token too: the tables hold client addresses.
        let token = self.token()?;
        let r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .map_err(|e| self.unreachable(e))?;
        self.answer(r)
    }

    fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let token = self.token()?;
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .send_empty()
            .map_err(|e| self.unreachable(e))?;
        self.answer(r)
    }

    /// A `PUT` with a module's bytes, or a `DELETE`; an empty answer (204) is `None`.
    fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Option<T>, Failure> {
        let token = self.token()?;
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {token}");
        let r = match (method, body) {
            ("PUT", Some(b)) => self
                .agent
                .put(url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/wasm")
                .send(&b[..]),
            _ => self.agent.delete(url).header("Authorization", &auth).call(),
        }
        .map_err(|e| self.unreachable(e))?;
        if r.status() == ureq::http::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.answer(r).map(Some)
    }

    fn batch(&self, changes: Vec<Change>) -> Result<(), Failure> {
        let token = self.token()?;
        let r = self
            .agent
            .post(format!("{}/api/v1/batch", self.base))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(serde_json::json!({ "changes": changes }))
            .map_err(|e| self.unreachable(e))?;
        let _: Vec<ServiceView> = self.answer(r)?;
        Ok(())
    }
}

/// The health check `--check` and its options give (`None` without `--check`).
fn check_def(a: &Args) -> Result<Option<crate::health::CheckDef>, Failure> {
    let Some(c) = &a.check else {
        if a.check_interval.is_some()
            || a.check_timeout.is_some()
            || a.rise.is_some()
            || a.fall.is_some()
            || a.inhibit_on_failure
            || !a.check_more.is_empty()
        {
            return Err(usage(
                "--check-interval, --check-timeout, --rise, --fall, --inhibit-on-failure and the other --check-* options need --check",
            ));
        }
        return Ok(None);
    };
    let mut d = crate::health::CheckDef::from_arg(c).map_err(usage)?;
    let secs =
        |what: &str, v: &Option<String>| -> Result<Option<crate::config::check::Period>, Failure> {
            v.as_deref()
                .map(|s| match s.parse::<f64>() {
                    Ok(f) if f.is_finite() && (0.05..=86400.0).contains(&f) => {
                        Ok(crate::config::check::Secs((f * 1000.0).round() as u64))
                    }
                    _ => Err(usage(format!(
                        "illegal {what} specified: {s:?} (seconds, 0.05 to 86400)"
                    ))),
                })
                .transpose()
        };
    d.interval = secs("check interval", &a.check_interval)?;
    d.timeout = secs("check timeout", &a.check_timeout)?;
    d.rise = a.rise;
    d.fall = a.fall;
    d.inhibit_on_failure = a.inhibit_on_failure;
    for (key, v) in &a.check_more {
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| usage(format!("illegal check {key} specified: {v:?}")))
        };
        match *key {
            "port" => d.port = Some(num(v)?),
            "retry" => d.retry = Some(num(v)?),
            "host" => d.host = Some(v.clone()),
            "status" => d.status = v.split(',').map(str::to_string).collect(),
            "digest" => d.digest = Some(v.clone()),
            "contains" => d.contains = Some(v.clone()),
            "payload" => d.payload = Some(v.clone()),
            "expect" => d.expect = Some(v.clone()),
            _ => d.qtype = Some(v.clone()),
        }
    }
    Ok(Some(d))
}

/// `--helper NAME[,NAME]`, or `none` for none.
fn parse_helpers(v: &str) -> Vec<String> {
    if v == "none" {
        return Vec::new();
    }
    v.split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> Result<Change, String> {
        let a = parse::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
            .map_err(|e| e.to_string())?;
        change(&a).map_err(|e| match e {
            Failure::Usage(u) => u.to_string(),
            Failure::Api(m) => m,
        })
    }

    #[test]
    fn a_service_without_a_port_is_port_0_and_persistent() {
        let c = ch("-A -t 198.18.100.1 -s rr -p 60").unwrap();
        assert!(
            matches!(&c, Change::AddService { service } if service.address == "198.18.100.1:0"),
            "{c:?}"
        );
        let c = ch("-A -u [2001:db8::1] -p").unwrap();
        assert!(
            matches!(&c, Change::AddService { service } if service.address == "[2001:db8::1]:0"),
            "{c:?}"
        );
        for s in ["-A -t 198.18.100.1", "-E -t 198.18.100.1:0 -s rr"] {
            assert_eq!(
                ch(s).unwrap_err(),
                "Zero port specified for non-persistent service",
                "{s}"
            );
        }
        // A server without a port on it: port 0, the client's.
        let c = ch("-a -t 198.18.100.1 -r 198.19.0.11 -m").unwrap();
        assert!(
            matches!(&c, Change::AddReal { real, .. } if real.address == "198.19.0.11:0"),
            "{c:?}"
        );
    }

    #[test]
    fn one_packet_scheduling_is_for_udp_services() {
        let c = ch("-A -u 198.18.100.1:53 -s rr -o").unwrap();
        assert!(
            matches!(&c, Change::AddService { service } if service.ops),
            "{c:?}"
        );
        let c = ch("-E -u 198.18.100.1:53 -s rr --ops").unwrap();
        assert!(
            matches!(&c, Change::EditService { settings, .. } if settings.ops),
            "{c:?}"
        );
        // Without -o, -E turns it off, as ipvsadm's -E sets the flags given.
        let c = ch("-E -u 198.18.100.1:53 -s rr").unwrap();
        assert!(
            matches!(&c, Change::EditService { settings, .. } if !settings.ops),
            "{c:?}"
        );
        assert_eq!(
            ch("-A -t 198.18.100.1:80 -o").unwrap_err(),
            "One-Packet Scheduling is only for UDP virtual services"
        );
    }

    #[test]
    fn commands_become_changes() {
        let c = ch("-A -t 198.18.100.1:80 -s rr -p 60 -M 255.255.255.0").unwrap();
        let Change::AddService { service } = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            (
                service.scheduler.as_str(),
                service.persistent,
                service.netmask.as_deref()
            ),
            ("rr", Some(60), Some("255.255.255.0"))
        );
        let c = ch("-E -t 198.18.100.1:80").unwrap();
        assert!(matches!(c, Change::EditService { settings, .. } if settings.scheduler == "wlc"));
        let c = ch("-a -t 198.18.100.1:80 -r 198.19.0.11 -w 3 -m").unwrap();
        assert!(
            matches!(&c, Change::AddReal { real, .. } if real.address == "198.19.0.11:80" && real.weight == 3 && real.forward == "nat"),
            "{c:?}"
        );
        // A bare IPv6 address, as ipvsadm's inet_pton reads it: the service's port added
        // in brackets (not run together with the address's last group).
        let c = ch("-a -t [2001:db8:18:100::1]:80 -r 2001:db8:19::12 -i").unwrap();
        assert!(
            matches!(&c, Change::AddReal { real, .. } if real.address == "[2001:db8:19::12]:80"),
            "{c:?}"
        );
        let c = ch("-a -t 198.18.100.2:80 -r 2001:db8:19::12 -i").unwrap();
        assert!(
            matches!(&c, Change::AddReal { real, .. } if real.address == "[2001:db8:19::12]:80"),
            "{c:?}"
        );
        // ipvsadm: direct routing without a method, to the service's port whatever -r says.
        for args in [
            "-a -t 198.18.100.1:80 -r 198.19.0.11:8080",
            "-e -t 198.18.100.1:80 -r 198.19.0.11:8080 -g",
        ] {
            let c = ch(args).unwrap();
            let real = match &c {
                Change::AddReal { real, .. } | Change::EditReal { real, .. } => real.clone(),
                _ => panic!("{c:?}"),
            };
            assert_eq!(
                (real.address.as_str(), real.forward.as_str()),
                ("198.19.0.11:80", "dr"),
                "{args}"
            );
        }
        let c =
            ch("-a -t 198.18.100.1:80 -r 198.19.0.11 -i --tun-type gue --tun-port 6080 --tun-csum")
                .unwrap();
        assert!(
            matches!(&c, Change::AddReal { real, .. } if real.forward == "tunnel"
                && real.tun_type.as_deref() == Some("gue") && real.tun_port == Some(6080)
                && real.tun_csum.as_deref() == Some("csum")),
            "{c:?}"
        );
        assert!(
            ch("-a -t 198.18.100.1:80 -r 198.19.0.11 -g --tun-type gre")
                .unwrap_err()
                .contains("Tunnel options conflict with forward method")
        );
        // -f MARK [-6]: the fwmark service fwm/MARK (fwm6 for IPv6); -o is taken for it.
        assert!(matches!(ch("-A -f 7 -s rr -o").unwrap(),
            Change::AddService { service } if service.protocol == "fwm" && service.address == "7" && service.ops));
        assert!(matches!(ch("-a -f 7 -6 -r [2001:db8::1]:80 -m").unwrap(),
            Change::AddReal { protocol, address, .. } if protocol == "fwm6" && address == "7"));
        assert!(ch("-A -f 0 -s rr").unwrap_err().contains("illegal fwmark"));
        assert!(ch("-A -f x -s rr").unwrap_err().contains("illegal fwmark"));
        // Mark rules: the words after the option, quoted as one or not.
        for line in [
            "--add-mark-rule 'ip daddr 198.18.1.10 tcp dport { 80, 443 } mark 1'",
            "--add-mark-rule ip daddr 198.18.1.10 tcp dport { 80, 443 } mark 1",
            "--add-mark-rule=ip daddr 198.18.1.10 tcp dport {80,443} mark 1",
        ] {
            let words = shlex::split(line).expect("words");
            let a = parse::parse(&words).expect(line);
            let c = change(&a).map_err(|_| line).expect(line);
            assert!(
                matches!(&c, Change::AddMarkRule { rule } if rule.mark == 1
                && rule.daddr == ["198.18.1.10"] && rule.dport == ["80", "443"]),
                "{line}: {c:?}"
            );
        }
        assert!(
            matches!(ch("--delete-mark-rule ip daddr 198.18.1.0/28 mark 2").unwrap(),
            Change::DeleteMarkRule { rule } if rule.mark == 2)
        );
        assert!(
            ch("--add-mark-rule ip daddr 198.18.1.10")
                .unwrap_err()
                .contains("no mark")
        );
        assert!(
            ch("-a -t 198.18.100.1:80")
                .unwrap_err()
                .contains("no real server")
        );
        assert!(matches!(ch("-C").unwrap(), Change::Clear {}));
    }
}
