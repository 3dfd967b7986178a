//! ipvsadm's command line, parsed the way popt parses it: short options may be bundled
//! (`-Ln`) and take their argument attached or as the next word (`-t1.2.3.4:80`,
//! `-t 1.2.3.4:80`), long ones as `--opt value` or `--opt=value`; `-p` takes a timeout only
//! if the next word is not an option.

use crate::consts::DEFAULT_PERSISTENT_SECS;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// -A
    AddService,
    /// -E
    EditService,
    /// -D
    DeleteService,
    /// -C
    Clear,
    /// -R
    Restore,
    /// -S
    Save,
    /// -a
    AddReal,
    /// -e
    EditReal,
    /// -d
    DeleteReal,
    /// -L / -l
    List,
    /// -Z
    Zero,
    /// -h
    Help,
    /// -v / --version
    Version,
    /// --set tcp tcpfin udp
    SetTimeouts,
    /// -P / --add-laddr (DPVS)
    AddLaddr,
    /// -Q / --del-laddr (DPVS)
    DelLaddr,
    /// -G / --get-laddr (DPVS)
    GetLaddr,
    /// --import-keepalived FILE (wvs's own)
    ImportKeepalived,
    /// --plugin-load NAME FILE (wvs's own)
    PluginLoad,
    /// --plugin-list (wvs's own)
    PluginList,
    /// --plugin-delete NAME (wvs's own)
    PluginDelete,
    /// --start-daemon master|backup
    StartDaemon,
    /// --add-mark-rule RULE (wvs's own)
    AddMarkRule,
    /// --delete-mark-rule RULE (wvs's own)
    DeleteMarkRule,
    /// --list-mark-rules (wvs's own)
    ListMarkRules,
    /// --stop-daemon master|backup
    StopDaemon,
}

/// Forwarding method flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// -g
    Route,
    /// -i
    Tunnel,
    /// -m
    Masq,
    /// -b / --fullnat with -a or -e (DPVS)
    FullNat,
}

/// A parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// The command (exactly one).
    pub cmd: Option<Cmd>,
    /// `tcp` or `udp` and the address, from -t / -u.
    pub service: Option<(String, String)>,
    /// -f MARK, as given; [`parse`] turns it (with -6) into `service` (`fwm`/`fwm6`).
    pub fwmark: Option<String>,
    /// --add-mark-rule / --delete-mark-rule: the rule, read from its words.
    pub mark_rule: Option<crate::config::mark::MarkRuleDef>,
    /// The first word of the rule (the option's value), until the rest is read.
    pub mark_words: Option<String>,
    /// -6: ipvsadm's family of a fwmark service (-f); -t and -u say theirs by their
    /// address, so it changes nothing for them.
    pub ipv6: bool,
    /// -s.
    pub scheduler: Option<String>,
    /// -p [timeout].
    pub persistent: Option<u32>,
    /// -M.
    pub netmask: Option<String>,
    /// -b (comma-separated).
    pub sched_flags: Vec<String>,
    /// --helper NAME[,NAME] or none (wvs's own).
    pub helper: Option<String>,
    /// -r.
    pub real: Option<String>,
    /// -z / --laddr (DPVS).
    pub laddr: Option<String>,
    /// -g / -i / -m.
    pub fwd: Option<Fwd>,
    /// --tun-type.
    pub tun_type: Option<String>,
    /// --tun-port.
    pub tun_port: Option<u32>,
    /// --tun-nocsum / --tun-csum / --tun-remcsum, as the option's name.
    pub tun_csum: Option<&'static str>,
    /// --tun-info (with -L: the tunnel column).
    pub tun_info: bool,
    /// --check TYPE[:ARG] (wvs's own, with -A/-E/-a/-e).
    pub check: Option<String>,
    /// --check-interval SECONDS.
    pub check_interval: Option<String>,
    /// --check-timeout SECONDS.
    pub check_timeout: Option<String>,
    /// --rise N.
    pub rise: Option<u32>,
    /// --fall N.
    pub fall: Option<u32>,
    /// --inhibit-on-failure.
    pub inhibit_on_failure: bool,
    /// --drain SECONDS (with -d).
    pub drain: Option<u32>,
    /// -w.
    pub weight: Option<u32>,
    /// -x.
    pub u_threshold: Option<u32>,
    /// -y.
    pub l_threshold: Option<u32>,
    /// -n.
    pub numeric: bool,
    /// -c.
    pub connections: bool,
    /// --stats.
    pub stats: bool,
    /// --rate.
    pub rate: bool,
    /// --thresholds.
    pub thresholds: bool,
    /// --persistent-conn.
    pub persistent_conn: bool,
    /// --exact / -X.
    pub exact: bool,
    /// --nosort.
    pub nosort: bool,
    /// --timeout (with -L: list the timeouts).
    pub timeout: bool,
    /// The values of --set: tcp, tcpfin, udp (0 keeps one).
    pub timeouts: Option<[u32; 3]>,
    /// --api ADDR (wvs's own).
    pub api: Option<String>,
    /// --api-ca FILE (wvs's own): the certificate (or its CA) of an API served over HTTPS.
    pub api_ca: Option<String>,
    /// --token-file FILE (wvs's own).
    pub token_file: Option<String>,
    /// --import-keepalived FILE (wvs's own).
    pub import: Option<String>,
    /// --hint N (wvs's own, with -a/-e): the number custom schedulers read.
    pub hint: Option<u32>,
    /// --udp-on-failure keep|move (wvs's own, with -A): a failed server's UDP flows.
    pub udp_on_failure: Option<String>,
    /// --synproxy on|off|auto (wvs's own, as DPVS's `-j`; with -A/-E).
    pub synproxy: Option<String>,
    /// -o/--ops (with -A/-E): one-packet scheduling.
    pub ops: bool,
    /// --pe NAME (with -A/-E): the persistence engine.
    pub pe: Option<String>,
    /// --sorry (wvs's own, with -a): a sorry server (keepalived's `sorry_server`).
    pub sorry: bool,
    /// --check-port, --check-host, --check-status, --check-digest, --check-contains,
    /// --check-payload, --check-expect, --check-qtype, --check-retry (wvs's own): the rest
    /// of a health check, as its TOML keys.
    pub check_more: Vec<(&'static str, String)>,
    /// --plugin-load NAME FILE / --plugin-delete NAME: the plugin's name.
    pub plugin: Option<String>,
    /// --plugin-load NAME FILE: the module's file.
    pub plugin_file: Option<String>,
    /// --start-daemon / --stop-daemon's state.
    pub daemon_state: Option<crate::config::daemon::DaemonState>,
    /// --daemon (with -L: the sync daemons).
    pub list_daemon: bool,
    /// --mcast-interface, --syncid, --sync-maxlen, --mcast-group, --mcast-port,
    /// --mcast-ttl: the daemon's settings.
    pub mcast_interface: Option<String>,
    /// --syncid.
    pub syncid: Option<u8>,
    /// --sync-maxlen.
    pub sync_maxlen: Option<u16>,
    /// --mcast-group.
    pub mcast_group: Option<std::net::IpAddr>,
    /// --mcast-port.
    pub mcast_port: Option<u16>,
    /// --mcast-ttl.
    pub mcast_ttl: Option<u8>,
}

/// A usage error, with ipvsadm's wording where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// How an option is spelled: short letter, long name, and whether it takes a value.
struct Opt {
    short: Option<char>,
    long: &'static str,
    arg: ArgKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ArgKind {
    None,
    Required,
    Optional,
}

const OPTS: &[Opt] = &[
    opt(Some('A'), "add-service", ArgKind::None),
    opt(Some('E'), "edit-service", ArgKind::None),
    opt(Some('D'), "delete-service", ArgKind::None),
    opt(Some('C'), "clear", ArgKind::None),
    opt(Some('R'), "restore", ArgKind::None),
    opt(Some('S'), "save", ArgKind::None),
    opt(Some('a'), "add-server", ArgKind::None),
    opt(Some('e'), "edit-server", ArgKind::None),
    opt(Some('d'), "delete-server", ArgKind::None),
    opt(Some('L'), "list", ArgKind::None),
    opt(Some('l'), "list", ArgKind::None),
    opt(Some('Z'), "zero", ArgKind::None),
    opt(Some('h'), "help", ArgKind::None),
    opt(Some('v'), "version", ArgKind::None),
    opt(Some('t'), "tcp-service", ArgKind::Required),
    opt(Some('u'), "udp-service", ArgKind::Required),
    opt(None, "sctp-service", ArgKind::Required),
    opt(Some('f'), "fwmark-service", ArgKind::Required),
    opt(Some('s'), "scheduler", ArgKind::Required),
    opt(Some('p'), "persistent", ArgKind::Optional),
    opt(Some('M'), "netmask", ArgKind::Required),
    opt(Some('b'), "sched-flags", ArgKind::Required),
    opt(None, "helper", ArgKind::Required),
    opt(Some('r'), "real-server", ArgKind::Required),
    opt(Some('g'), "gatewaying", ArgKind::None),
    opt(Some('i'), "ipip", ArgKind::None),
    opt(Some('m'), "masquerading", ArgKind::None),
    opt(None, "fullnat", ArgKind::None),
    opt(Some('P'), "add-laddr", ArgKind::None),
    opt(Some('Q'), "del-laddr", ArgKind::None),
    opt(Some('G'), "get-laddr", ArgKind::None),
    opt(Some('z'), "laddr", ArgKind::Required),
    opt(None, "tun-type", ArgKind::Required),
    opt(None, "tun-port", ArgKind::Required),
    opt(None, "tun-nocsum", ArgKind::None),
    opt(None, "tun-csum", ArgKind::None),
    opt(None, "tun-remcsum", ArgKind::None),
    opt(None, "tun-info", ArgKind::None),
    opt(None, "check", ArgKind::Required),
    opt(None, "check-interval", ArgKind::Required),
    opt(None, "check-timeout", ArgKind::Required),
    opt(None, "rise", ArgKind::Required),
    opt(None, "fall", ArgKind::Required),
    opt(None, "inhibit-on-failure", ArgKind::None),
    opt(None, "drain", ArgKind::Required),
    opt(Some('w'), "weight", ArgKind::Required),
    opt(Some('x'), "u-threshold", ArgKind::Required),
    opt(Some('y'), "l-threshold", ArgKind::Required),
    opt(Some('n'), "numeric", ArgKind::None),
    opt(Some('c'), "connection", ArgKind::None),
    opt(Some('X'), "exact", ArgKind::None),
    opt(Some('6'), "ipv6", ArgKind::None),
    opt(Some('o'), "ops", ArgKind::None),
    opt(None, "stats", ArgKind::None),
    opt(None, "rate", ArgKind::None),
    opt(None, "thresholds", ArgKind::None),
    opt(None, "persistent-conn", ArgKind::None),
    opt(None, "sort", ArgKind::None),
    opt(None, "nosort", ArgKind::None),
    opt(None, "pe", ArgKind::Required),
    opt(None, "timeout", ArgKind::None),
    opt(None, "set", ArgKind::None),
    opt(None, "start-daemon", ArgKind::Required),
    opt(None, "stop-daemon", ArgKind::Required),
    opt(None, "daemon", ArgKind::None),
    opt(None, "mcast-interface", ArgKind::Required),
    opt(None, "syncid", ArgKind::Required),
    opt(None, "sync-maxlen", ArgKind::Required),
    opt(None, "mcast-group", ArgKind::Required),
    opt(None, "mcast-port", ArgKind::Required),
    opt(None, "mcast-ttl", ArgKind::Required),
    opt(None, "api", ArgKind::Required),
    opt(None, "token-file", ArgKind::Required),
    opt(None, "api-ca", ArgKind::Required),
    opt(None, "import-keepalived", ArgKind::Required),
    opt(None, "hint", ArgKind::Required),
    opt(None, "sorry", ArgKind::None),
    opt(None, "udp-on-failure", ArgKind::Required),
    opt(None, "synproxy", ArgKind::Required),
    opt(None, "check-port", ArgKind::Required),
    opt(None, "check-host", ArgKind::Required),
    opt(None, "check-status", ArgKind::Required),
    opt(None, "check-digest", ArgKind::Required),
    opt(None, "check-contains", ArgKind::Required),
    opt(None, "check-payload", ArgKind::Required),
    opt(None, "check-expect", ArgKind::Required),
    opt(None, "check-qtype", ArgKind::Required),
    opt(None, "check-retry", ArgKind::Required),
    opt(None, "plugin-load", ArgKind::Required),
    opt(None, "plugin-list", ArgKind::None),
    opt(None, "plugin-delete", ArgKind::Required),
    opt(None, "add-mark-rule", ArgKind::Required),
    opt(None, "delete-mark-rule", ArgKind::Required),
    opt(None, "list-mark-rules", ArgKind::None),
];

const fn opt(short: Option<char>, long: &'static str, arg: ArgKind) -> Opt {
    Opt { short, long, arg }
}

fn number(what: &str, v: &str, max: u32) -> Result<u32, UsageError> {
    match v.parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(usage(format!("illegal {what} specified: {v:?}"))),
    }
}

/// Parse one command line (without the program name).
pub fn parse(words: &[String]) -> Result<Args, UsageError> {
    let mut a = Args::default();
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        let Some(items) = options_in(w, a.cmd)? else {
            // A word that is no option: --set's values (ipvsadm reads them after the
            // options), or a mistake, told below.
            positional.push(w.clone());
            continue;
        };
        for (o, attached) in items {
            let v = value_of(o, attached, words, &mut i)?.unwrap_or_default();
            apply(&mut a, o.long, &v)?;
        }
    }
    finish(a, positional)
}

/// An option as given, with the value attached to it if any.
type Given = (&'static Opt, Option<String>);

/// The (option, attached value) pairs one word gives: `--opt[=value]`, or short options
/// bundled (`-Ln`, `-t1.2.3.4:80`); `None` for a word that is no option. `cmd` is the
/// command so far (DPVS's `-b` is full NAT for a real server, ipvsadm's a service's
/// scheduler flags).
fn options_in(w: &str, cmd: Option<Cmd>) -> Result<Option<Vec<Given>>, UsageError> {
    let mut items = Vec::new();
    if let Some(long) = w.strip_prefix("--") {
        let (name, val) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (long, None),
        };
        let o = OPTS
            .iter()
            .find(|o| o.long == name)
            .ok_or_else(|| usage(format!("unknown option --{name}")))?;
        items.push((o, val));
        return Ok(Some(items));
    }
    let Some(shorts) = w.strip_prefix('-').filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let chars: Vec<char> = shorts.chars().collect();
    let real_cmd = matches!(cmd, Some(Cmd::AddReal | Cmd::EditReal));
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        let o = OPTS
            .iter()
            .find(|o| {
                if c == 'b' && real_cmd {
                    o.long == "fullnat"
                } else {
                    o.short == Some(c)
                }
            })
            .ok_or_else(|| usage(format!("unknown option -{c}")))?;
        k += 1;
        if o.arg != ArgKind::None && k < chars.len() {
            items.push((o, Some(chars[k..].iter().collect())));
            break;
        }
        items.push((o, None));
    }
    Ok(Some(items))
}

/// An option's value: attached, or the next word (`words[*i]`, then taken) when it
/// needs one, or when it may take one and the next word is not an option.
fn value_of(
    o: &Opt,
    attached: Option<String>,
    words: &[String],
    i: &mut usize,
) -> Result<Option<String>, UsageError> {
    Ok(match (o.arg, attached) {
        (ArgKind::None, Some(_)) => {
            return Err(usage(format!("option --{} takes no value", o.long)));
        }
        (ArgKind::None, None) => None,
        (_, Some(v)) => Some(v),
        (ArgKind::Required, None) => {
            let v = words
                .get(*i)
                .ok_or_else(|| usage(format!("option --{} needs a value", o.long)))?;
            *i += 1;
            Some(v.clone())
        }
        (ArgKind::Optional, None) => match words.get(*i) {
            Some(v) if !v.starts_with('-') => {
                *i += 1;
                Some(v.clone())
            }
            _ => None,
        },
    })
}

fn set_cmd(a: &mut Args, c: Cmd) -> Result<(), UsageError> {
    if a.cmd.is_some_and(|old| old != c) {
        return Err(usage("multiple commands specified"));
    }
    a.cmd = Some(c);
    Ok(())
}

/// Take option `long` with its value `v`, by the kind of thing it says.
fn apply(a: &mut Args, long: &'static str, v: &str) -> Result<(), UsageError> {
    if command(a, long, v)?
        || service_option(a, long, v)?
        || real_option(a, long, v)?
        || check_option(a, long, v)?
        || listing_option(a, long, v)?
        || daemon_option(a, long, v)?
    {
        return Ok(());
    }
    Err(usage(format!("--{long} is not supported by wvs")))
}

/// The sync daemon's commands and settings, with ipvsadm's checks and words.
fn daemon_option(a: &mut Args, long: &str, v: &str) -> Result<bool, UsageError> {
    use crate::config::daemon::DaemonState;
    let state = |what: &str| match v {
        "master" => Ok(DaemonState::Master),
        "backup" => Ok(DaemonState::Backup),
        _ => Err(usage(format!("illegal {what} parameter specified"))),
    };
    match long {
        "start-daemon" => {
            set_cmd(a, Cmd::StartDaemon)?;
            a.daemon_state = Some(state("start-daemon")?);
        }
        "stop-daemon" => {
            set_cmd(a, Cmd::StopDaemon)?;
            a.daemon_state = Some(state("stop-daemon")?);
        }
        "daemon" => a.list_daemon = true,
        "mcast-interface" => {
            if v.is_empty() || v.len() > 15 {
                return Err(usage("illegal mcast-interface specified"));
            }
            a.mcast_interface = Some(v.into());
        }
        "syncid" => a.syncid = Some(number("syncid", v, 255)? as u8),
        "sync-maxlen" => match v.parse::<u16>() {
            Ok(n) if (1..=65535 - 20 - 8).contains(&n) => a.sync_maxlen = Some(n),
            _ => return Err(usage("illegal sync-maxlen specified")),
        },
        "mcast-group" => match v.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            Ok(g) if g.is_multicast() => a.mcast_group = Some(g),
            _ => return Err(usage("illegal mcast-group specified")),
        },
        "mcast-port" => match v.parse::<u16>() {
            Ok(n) if n > 0 => a.mcast_port = Some(n),
            _ => return Err(usage("illegal mcast-port specified")),
        },
        "mcast-ttl" => match v.parse::<u8>() {
            Ok(n) if n > 0 => a.mcast_ttl = Some(n),
            _ => return Err(usage("illegal mcast-ttl specified")),
        },
        _ => return Ok(false),
    }
    Ok(true)
}

/// The commands (one per line), with the value some take.
fn command(a: &mut Args, long: &str, v: &str) -> Result<bool, UsageError> {
    let c = match long {
        "add-service" => Cmd::AddService,
        "edit-service" => Cmd::EditService,
        "delete-service" => Cmd::DeleteService,
        "clear" => Cmd::Clear,
        "restore" => Cmd::Restore,
        "save" => Cmd::Save,
        "add-server" => Cmd::AddReal,
        "edit-server" => Cmd::EditReal,
        "delete-server" => Cmd::DeleteReal,
        "list" => Cmd::List,
        "zero" => Cmd::Zero,
        "help" => Cmd::Help,
        "version" => Cmd::Version,
        "set" => Cmd::SetTimeouts,
        "add-laddr" => Cmd::AddLaddr,
        "del-laddr" => Cmd::DelLaddr,
        "get-laddr" => Cmd::GetLaddr,
        "import-keepalived" => {
            a.import = Some(v.into());
            Cmd::ImportKeepalived
        }
        "plugin-load" => {
            a.plugin = Some(v.into());
            Cmd::PluginLoad
        }
        "plugin-list" => Cmd::PluginList,
        "add-mark-rule" | "delete-mark-rule" => {
            a.mark_words = Some(v.into());
            if long == "add-mark-rule" {
                Cmd::AddMarkRule
            } else {
                Cmd::DeleteMarkRule
            }
        }
        "list-mark-rules" => Cmd::ListMarkRules,
        "plugin-delete" => {
            a.plugin = Some(v.into());
            Cmd::PluginDelete
        }
        _ => return Ok(false),
    };
    set_cmd(a, c)?;
    Ok(true)
}

/// What names a service and how it schedules.
fn service_option(a: &mut Args, long: &str, v: &str) -> Result<bool, UsageError> {
    match long {
        "tcp-service" | "udp-service" | "sctp-service" | "fwmark-service" => {
            if a.service.is_some() || a.fwmark.is_some() {
                return Err(usage("more than one service specified"));
            }
            match long {
                "tcp-service" => a.service = Some(("tcp".into(), with_port(v))),
                "udp-service" => a.service = Some(("udp".into(), with_port(v))),
                "sctp-service" => a.service = Some(("sctp".into(), with_port(v))),
                _ => a.fwmark = Some(v.into()),
            }
        }
        "scheduler" => a.scheduler = Some(v.into()),
        "persistent" => {
            a.persistent = Some(if v.is_empty() {
                DEFAULT_PERSISTENT_SECS
            } else {
                match v.parse::<u32>() {
                    Ok(t) if t >= 1 => t,
                    _ => return Err(usage(format!("illegal timeout specified: {v:?}"))),
                }
            })
        }
        "netmask" => a.netmask = Some(v.into()),
        "helper" => a.helper = Some(v.into()),
        "sched-flags" => a
            .sched_flags
            .extend(v.split(',').filter(|f| !f.is_empty()).map(str::to_string)),
        "udp-on-failure" => a.udp_on_failure = Some(v.into()),
        "synproxy" => a.synproxy = Some(v.into()),
        "ops" => a.ops = true,
        "pe" => a.pe = Some(v.into()),
        "laddr" => a.laddr = Some(v.into()),
        "ipv6" => a.ipv6 = true,
        _ => return Ok(false),
    }
    Ok(true)
}

/// A service address as ipvsadm reads it: without a port, port 0 (every port).
fn with_port(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, 0).to_string(),
        Err(_) => match addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => format!("{addr}:0"),
            _ => addr.to_string(),
        },
    }
}

/// What describes a real server: its address, method, tunnel, weight and thresholds.
fn real_option(a: &mut Args, long: &'static str, v: &str) -> Result<bool, UsageError> {
    match long {
        "real-server" => a.real = Some(v.into()),
        "gatewaying" => a.fwd = Some(Fwd::Route),
        "ipip" => a.fwd = Some(Fwd::Tunnel),
        "masquerading" => a.fwd = Some(Fwd::Masq),
        "fullnat" => a.fwd = Some(Fwd::FullNat),
        "tun-type" => {
            if crate::model::TunKind::from_name(v).is_none() {
                return Err(usage(format!("illegal tunnel type specified: {v:?}")));
            }
            a.tun_type = Some(v.into())
        }
        "tun-port" => a.tun_port = Some(number("tunnel port", v, 65535)?),
        "tun-nocsum" | "tun-csum" | "tun-remcsum" => {
            if let Some(old) = a.tun_csum.filter(|old| *old != long) {
                return Err(usage(format!(
                    "The option '--{long}' conflicts with the '--{old}' option"
                )));
            }
            a.tun_csum = Some(long);
        }
        "hint" => a.hint = Some(number("hint", v, u32::MAX)?),
        "sorry" => a.sorry = true,
        "drain" => a.drain = Some(number("drain period", v, crate::consts::MAX_DRAIN_SECS)?),
        "weight" => a.weight = Some(number("weight", v, crate::consts::MAX_WEIGHT)?),
        "u-threshold" => a.u_threshold = Some(number("upper threshold", v, i32::MAX as u32)?),
        "l-threshold" => a.l_threshold = Some(number("lower threshold", v, i32::MAX as u32)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// A health check's options (wvs's own).
fn check_option(a: &mut Args, long: &str, v: &str) -> Result<bool, UsageError> {
    let more = match long {
        "check" => {
            a.check = Some(v.into());
            return Ok(true);
        }
        "check-interval" => {
            a.check_interval = Some(v.into());
            return Ok(true);
        }
        "check-timeout" => {
            a.check_timeout = Some(v.into());
            return Ok(true);
        }
        "rise" => {
            a.rise = Some(number("rise", v, 100)?);
            return Ok(true);
        }
        "fall" => {
            a.fall = Some(number("fall", v, 100)?);
            return Ok(true);
        }
        "inhibit-on-failure" => {
            a.inhibit_on_failure = true;
            return Ok(true);
        }
        "check-port" => "port",
        "check-host" => "host",
        "check-status" => "status",
        "check-digest" => "digest",
        "check-contains" => "contains",
        "check-payload" => "payload",
        "check-expect" => "expect",
        "check-qtype" => "qtype",
        "check-retry" => "retry",
        _ => return Ok(false),
    };
    a.check_more.push((more, v.into()));
    Ok(true)
}

/// How `-L` lists, and how `wvs adm` reaches the API.
fn listing_option(a: &mut Args, long: &str, v: &str) -> Result<bool, UsageError> {
    match long {
        "numeric" => a.numeric = true,
        "connection" => a.connections = true,
        "exact" => a.exact = true,
        "stats" => a.stats = true,
        "rate" => a.rate = true,
        "thresholds" => a.thresholds = true,
        "persistent-conn" => a.persistent_conn = true,
        "sort" => a.nosort = false,
        "nosort" => a.nosort = true,
        "timeout" => a.timeout = true,
        "tun-info" => a.tun_info = true,
        "api" => a.api = Some(v.into()),
        "token-file" => a.token_file = Some(v.into()),
        "api-ca" => a.api_ca = Some(v.into()),
        _ => return Ok(false),
    }
    Ok(true)
}

/// The words after the options: `--set`'s three timeouts, `--plugin-load`'s file, and
/// nothing else.
fn finish(mut a: Args, positional: Vec<String>) -> Result<Args, UsageError> {
    let mut rest = positional.into_iter();
    if a.cmd == Some(Cmd::SetTimeouts) {
        let mut t = [0u32; 3];
        for v in &mut t {
            let w = rest
                .next()
                .ok_or_else(|| usage("--set option requires 3 timeout values"))?;
            *v = match w.parse::<u32>() {
                Ok(n) if n <= crate::consts::MAX_TIMEOUT_SECS => n,
                _ => return Err(usage(format!("invalid timeout value `{w}' specified"))),
            };
        }
        a.timeouts = Some(t);
    }
    if a.cmd == Some(Cmd::PluginLoad) {
        a.plugin_file = Some(
            rest.next()
                .ok_or_else(|| usage("--plugin-load takes a name and a .wasm file"))?,
        );
    }
    if let Some(first) = a.mark_words.take() {
        // The rule's words: the option's value and every word after it (quoted as one
        // or not, as -S writes it and -R reads it).
        let text = std::iter::once(first)
            .chain(rest.by_ref())
            .collect::<Vec<_>>()
            .join(" ");
        a.mark_rule = Some(
            crate::config::mark::parse_words(&text)
                .map_err(|e| usage(format!("mark rule {text:?}: {e}")))?,
        );
    }
    if let Some(w) = rest.next() {
        return Err(usage(format!("unexpected argument {w}")));
    }
    // -f MARK [-6]: the fwmark service's identity, as the API names it.
    if let Some(m) = a.fwmark.take() {
        let mark = m
            .parse::<u32>()
            .ok()
            .filter(|&m| m != 0)
            .ok_or_else(|| usage(format!("illegal fwmark specified: {m:?}")))?;
        let proto = if a.ipv6 { "fwm6" } else { "fwm" };
        a.service = Some((proto.into(), mark.to_string()));
    }
    let daemon_settings = a.mcast_interface.is_some()
        || a.syncid.is_some()
        || a.sync_maxlen.is_some()
        || a.mcast_group.is_some()
        || a.mcast_port.is_some()
        || a.mcast_ttl.is_some();
    if daemon_settings && a.cmd != Some(Cmd::StartDaemon) {
        return Err(usage(
            "--mcast-interface, --syncid, --sync-maxlen and --mcast-* go with --start-daemon",
        ));
    }
    if a.list_daemon && a.cmd.is_some_and(|c| c != Cmd::List) {
        return Err(usage("--daemon goes with -L"));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, UsageError> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn daemon_options_as_ipvsadm() {
        use crate::config::daemon::DaemonState;
        let a = p(
            "--start-daemon master --mcast-interface eth1 --syncid 7 --sync-maxlen 1400 \
                   --mcast-group 224.0.0.99 --mcast-port 9000 --mcast-ttl 2",
        )
        .unwrap();
        assert_eq!(
            (
                a.cmd,
                a.daemon_state,
                a.mcast_interface.as_deref(),
                a.syncid
            ),
            (
                Some(Cmd::StartDaemon),
                Some(DaemonState::Master),
                Some("eth1"),
                Some(7)
            )
        );
        assert_eq!(
            (a.sync_maxlen, a.mcast_port, a.mcast_ttl),
            (Some(1400), Some(9000), Some(2))
        );
        assert_eq!(a.mcast_group, Some("224.0.0.99".parse().unwrap()));
        let s = p("--stop-daemon backup").unwrap();
        assert_eq!(
            (s.cmd, s.daemon_state),
            (Some(Cmd::StopDaemon), Some(DaemonState::Backup))
        );
        assert!(p("-L --daemon").unwrap().list_daemon);
        for (bad, msg) in [
            (
                "--start-daemon primary",
                "illegal start-daemon parameter specified",
            ),
            ("--stop-daemon x", "illegal stop-daemon parameter specified"),
            (
                "--start-daemon master --syncid 256",
                "illegal syncid specified: \"256\"",
            ),
            (
                "--start-daemon master --mcast-ttl 0",
                "illegal mcast-ttl specified",
            ),
            (
                "--start-daemon master --mcast-port 0",
                "illegal mcast-port specified",
            ),
            (
                "--start-daemon master --mcast-group 10.0.0.1",
                "illegal mcast-group specified",
            ),
            (
                "--start-daemon master --sync-maxlen 65508",
                "illegal sync-maxlen specified",
            ),
        ] {
            assert_eq!(p(bad).unwrap_err().0, msg, "{bad}");
        }
        assert!(p("-A -t 1.2.3.4:80 --syncid 1").is_err());
    }

    #[test]
    fn set_takes_three_timeouts_as_ipvsadm() {
        let a = p("--set 10 0 30").unwrap();
        assert_eq!(
            (a.cmd, a.timeouts),
            (Some(Cmd::SetTimeouts), Some([10, 0, 30]))
        );
        assert_eq!(
            p("--set 10 20").unwrap_err().0,
            "--set option requires 3 timeout values"
        );
        assert_eq!(
            p("--set 10 x 30").unwrap_err().0,
            "invalid timeout value `x' specified"
        );
        assert_eq!(
            p("--set 1 2 2678401").unwrap_err().0,
            "invalid timeout value `2678401' specified"
        );
        assert_eq!(p("--set 1 2 3 4").unwrap_err().0, "unexpected argument 4");
        assert_eq!(p("-L 5").unwrap_err().0, "unexpected argument 5");
        let l = p("-L --timeout").unwrap();
        assert!(l.timeout && l.cmd == Some(Cmd::List));
    }

    #[test]
    fn save_lines_parse() {
        let a = p("-A -t 192.168.10.1:80 -s wlc -p 300 -M 255.255.255.0").unwrap();
        assert_eq!(a.cmd, Some(Cmd::AddService));
        assert_eq!(a.service, Some(("tcp".into(), "192.168.10.1:80".into())));
        assert_eq!(a.scheduler.as_deref(), Some("wlc"));
        assert_eq!(a.persistent, Some(300));
        assert_eq!(a.netmask.as_deref(), Some("255.255.255.0"));
        let a = p("-a -u 192.168.10.1:53 -r 10.0.0.2:53 -m -w 2").unwrap();
        assert_eq!(a.cmd, Some(Cmd::AddReal));
        assert_eq!(a.fwd, Some(Fwd::Masq));
        assert_eq!(a.weight, Some(2));
        assert_eq!(a.real.as_deref(), Some("10.0.0.2:53"));
    }

    #[test]
    fn dpvs_full_nat_options() {
        // -b: full NAT for a real server (DPVS), scheduler flags for a service (ipvsadm).
        let a = p("-a -t 192.168.10.1:80 -r 10.0.0.2:8080 -b").unwrap();
        assert_eq!(a.fwd, Some(Fwd::FullNat));
        assert!(a.sched_flags.is_empty());
        let a = p("-e -t 192.168.10.1:80 -r 10.0.0.2 --fullnat -w 3").unwrap();
        assert_eq!((a.fwd, a.weight), (Some(Fwd::FullNat), Some(3)));
        let a = p("-A -t 192.168.10.1:80 -s sh -b sh-port").unwrap();
        assert_eq!(a.sched_flags, vec!["sh-port".to_string()]);
        assert_eq!(a.fwd, None);
        let a = p("--add-laddr -t 192.168.10.1:80 -z 10.0.0.100").unwrap();
        assert_eq!(a.cmd, Some(Cmd::AddLaddr));
        assert_eq!(a.laddr.as_deref(), Some("10.0.0.100"));
        assert_eq!(
            p("-Q -t 192.168.10.1:80 -z10.0.0.100").unwrap().cmd,
            Some(Cmd::DelLaddr)
        );
        assert_eq!(p("-G").unwrap().cmd, Some(Cmd::GetLaddr));
    }

    #[test]
    fn popt_forms() {
        let a = p("-Ln --stats --exact").unwrap();
        assert!(a.numeric && a.stats && a.exact && a.cmd == Some(Cmd::List));
        let a = p("-A -t1.2.3.4:80 -p -s rr").unwrap();
        assert_eq!(
            a.persistent,
            Some(DEFAULT_PERSISTENT_SECS),
            "-p without a value"
        );
        assert_eq!(a.scheduler.as_deref(), Some("rr"));
        let a = p("--add-service --tcp-service=1.2.3.4:80 --scheduler=sh -b sh-port,sh-fallback")
            .unwrap();
        assert_eq!(a.sched_flags, ["sh-port", "sh-fallback"]);
        let a = p("-lnc").unwrap();
        assert!(a.connections);
    }

    #[test]
    fn usage_errors() {
        for (s, want) in [
            ("-A -D -t 1.2.3.4:80", "multiple commands"),
            ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w heavy", "illegal weight"),
            ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w 70000", "illegal weight"),
            ("-A -t 1.2.3.4:80 -u 1.2.3.4:80", "more than one service"),
            ("-A -t", "needs a value"),
            ("-J", "unknown option"),
            ("--frobnicate", "unknown option"),
            ("stray", "unexpected argument"),
            (
                "-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type vxlan",
                "illegal tunnel type",
            ),
            (
                "-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-port 0x10",
                "illegal tunnel port",
            ),
            (
                "-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gue --tun-port 1 --tun-csum --tun-nocsum",
                "conflicts with",
            ),
        ] {
            let e = p(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
