//! `wvs adm --import-keepalived FILE`: a keepalived.conf's `virtual_server` blocks, with
//! their real servers and checkers, as one batch of changes.
//!
//! keepalived's grammar: a keyword and its values on a line, `{ … }` opening a block (on
//! the same line or the next), `#` and `!` starting a comment, `"…"` quoting a value with
//! spaces, `include PATTERN` reading other files (a glob, relative to the including file's
//! directory). What is read here is only what wvs does: every keyword of a virtual or real
//! server or checker that wvs cannot honour is a problem, listed with its file and line, and
//! nothing is applied. VRRP and the daemon's own sections (`vrrp_*`, `global_defs`,
//! `static_*`, …) are keepalived's business, not a balancer's: they are skipped with a note.

use std::path::{Path, PathBuf};

use crate::config::{RealDef, ServiceDef};
use crate::health::CheckDef;

/// keepalived's default `delay_loop` (seconds), used when a configuration gives none.
const KEEPALIVED_DELAY_LOOP: f64 = 60.0;
/// How deep `include`s may nest (keepalived stops at 8 too).
const MAX_INCLUDE_DEPTH: usize = 8;

/// Where something was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At {
    /// The file, as named.
    pub file: String,
    /// Its line, from 1.
    pub line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A statement: a keyword, its values, and its block if it opens one.
#[derive(Debug, Clone)]
struct Node {
    at: At,
    key: String,
    args: Vec<String>,
    block: Option<Vec<Node>>,
}

/// What an import found.
#[derive(Debug, Default)]
pub struct Import {
    /// The services, with their real servers.
    pub services: Vec<ServiceDef>,
    /// What was skipped and why (VRRP and the daemon's sections).
    pub notes: Vec<String>,
    /// What wvs cannot honour, each with where it is. Not empty: nothing may be applied.
    pub problems: Vec<String>,
    /// The sync daemons of `global_defs`' `lvs_sync_daemon`.
    pub daemons: Vec<crate::config::daemon::SyncDaemon>,
    /// `global_defs`' `lvs_timeouts`: tcp, tcpfin, udp (0 keeps one), as `--set`.
    pub timeouts: Option<[u32; 3]>,
    /// `global_defs`' `lvs_flush`: the table is cleared before the import.
    pub flush: bool,
    /// The `virtual_server_group` blocks, by name.
    groups: std::collections::HashMap<String, Node>,
    /// The `track_file` blocks FILE_CHECKs name, by name.
    files: std::collections::HashMap<String, TrackFile>,
    /// `track_file`'s `init_file`: (path, number, overwrite), written before the import is
    /// applied, as keepalived writes them when it starts.
    pub init_files: Vec<(String, i64, bool)>,
}

/// keepalived's `track_file NAME { file PATH; weight W [reverse]; init_file [N] [overwrite] }`.
#[derive(Debug, Clone)]
struct TrackFile {
    file: String,
    weight: i32,
    reverse: bool,
}

/// Read `file` (and what it includes) and turn its virtual servers into services.
pub fn import(file: &Path) -> Import {
    let mut out = Import::default();
    let mut nodes = Vec::new();
    read_file(file, 0, &mut nodes, &mut out.problems);
    all(&nodes, &mut out);
    if out.services.is_empty()
        && out.daemons.is_empty()
        && out.timeouts.is_none()
        && !out.flush
        && out.problems.is_empty()
    {
        out.problems.push(format!(
            "{}: no virtual_server block or lvs_sync_daemon: nothing to import",
            file.display()
        ));
    }
    out
}

/// Read `text` as a keepalived.conf on its own: an `include` in it is refused (no file is
/// read). What the fuzz target feeds.
pub fn import_str(text: &str) -> Import {
    let mut out = Import::default();
    let nodes = parse(
        "input",
        text,
        Path::new("."),
        MAX_INCLUDE_DEPTH,
        &mut out.problems,
    );
    all(&nodes, &mut out);
    out
}

/// Parse `text` (of `file`) alone, without following includes: for tests.
#[cfg(test)]
fn import_text(file: &str, text: &str) -> Import {
    let mut out = Import::default();
    let nodes = parse(file, text, Path::new("."), 0, &mut out.problems);
    all(&nodes, &mut out);
    out
}

fn read_file(file: &Path, depth: usize, nodes: &mut Vec<Node>, problems: &mut Vec<String>) {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let dir = file.parent().unwrap_or(Path::new("."));
            nodes.extend(parse(
                &file.display().to_string(),
                &text,
                dir,
                depth,
                problems,
            ));
        }
        Err(e) => problems.push(format!("{}: cannot read: {e}", file.display())),
    }
}

/// One token and its line.
struct Tok {
    line: usize,
    text: String,
    /// `{`, `}` or a line's end.
    punct: bool,
}

fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut chars = line.chars().peekable();
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut Vec<Tok>| {
            if !word.is_empty() {
                out.push(Tok {
                    line: line_no,
                    text: std::mem::take(word),
                    punct: false,
                });
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '#' | '!' if word.is_empty() => break,
                '"' => {
                    // A quoted value: up to the closing quote, spaces and all.
                    for q in chars.by_ref() {
                        if q == '"' {
                            break;
                        }
                        word.push(q);
                    }
                    out.push(Tok {
                        line: line_no,
                        text: std::mem::take(&mut word),
                        punct: false,
                    });
                }
                '{' | '}' => {
                    flush(&mut word, &mut out);
                    out.push(Tok {
                        line: line_no,
                        text: c.to_string(),
                        punct: true,
                    });
                }
                c if c.is_whitespace() => flush(&mut word, &mut out),
                c => word.push(c),
            }
        }
        flush(&mut word, &mut out);
        out.push(Tok {
            line: line_no,
            text: "\n".into(),
            punct: true,
        });
    }
    out
}

fn parse(
    file: &str,
    text: &str,
    dir: &Path,
    depth: usize,
    problems: &mut Vec<String>,
) -> Vec<Node> {
    let toks = tokens(text);
    let mut p = Parser {
        file,
        toks: &toks,
        i: 0,
        dir,
        depth,
        problems,
    };
    let mut nodes = Vec::new();
    p.block(&mut nodes, false);
    nodes
}

/// One file's tokens being read into nodes.
struct Parser<'a> {
    file: &'a str,
    toks: &'a [Tok],
    /// The next token.
    i: usize,
    /// The file's directory (where its relative includes are).
    dir: &'a Path,
    /// How deep in includes the file is.
    depth: usize,
    problems: &'a mut Vec<String>,
}

impl Parser<'_> {
    /// Read statements into `nodes` until the end (or a `}` when `nested`).
    fn block(&mut self, nodes: &mut Vec<Node>, nested: bool) -> bool {
        let (file, toks) = (self.file, self.toks);
        while self.i < toks.len() {
            let t = &toks[self.i];
            if t.punct {
                self.i += 1;
                match t.text.as_str() {
                    "}" if nested => return true,
                    "}" => self
                        .problems
                        .push(format!("{file}:{}: a `}}` that closes nothing", t.line)),
                    "{" => {
                        self.problems
                            .push(format!("{file}:{}: a block with no keyword", t.line));
                        let mut skipped = Vec::new();
                        self.block(&mut skipped, true);
                    }
                    _ => {}
                }
                continue;
            }
            let at = At {
                file: file.into(),
                line: t.line,
            };
            let key = t.text.clone();
            self.i += 1;
            let mut args = Vec::new();
            while self.i < toks.len() && !toks[self.i].punct {
                args.push(toks[self.i].text.clone());
                self.i += 1;
            }
            // The block may open on the next line.
            let mut j = self.i;
            while j < toks.len() && toks[j].text == "\n" {
                j += 1;
            }
            let opens = j < toks.len() && toks[j].text == "{";
            let mut node = Node {
                at: at.clone(),
                key,
                args,
                block: None,
            };
            if opens {
                self.i = j + 1;
                let mut children = Vec::new();
                if !self.block(&mut children, true) {
                    self.problems
                        .push(format!("{at}: `{}`'s block is not closed", node.key));
                }
                node.block = Some(children);
            }
            if node.key == "include" && node.block.is_none() {
                include(&node, self.dir, self.depth, nodes, self.problems);
            } else {
                nodes.push(node);
            }
        }
        !nested
    }
}

fn include(
    node: &Node,
    dir: &Path,
    depth: usize,
    nodes: &mut Vec<Node>,
    problems: &mut Vec<String>,
) {
    let [pattern] = node.args.as_slice() else {
        problems.push(format!(
            "{}: include takes one file name or pattern",
            node.at
        ));
        return;
    };
    if depth >= MAX_INCLUDE_DEPTH {
        problems.push(format!(
            "{}: includes nest deeper than {MAX_INCLUDE_DEPTH} (a loop?)",
            node.at
        ));
        return;
    }
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        dir.join(pattern)
    };
    let files: Vec<PathBuf> = match glob::glob(&full.to_string_lossy()) {
        Ok(paths) => paths.filter_map(Result::ok).collect(),
        Err(e) => {
            problems.push(format!("{}: include {pattern:?}: {e}", node.at));
            return;
        }
    };
    if files.is_empty() {
        // keepalived warns and goes on; an import that silently lost a file would be worse.
        problems.push(format!("{}: include {pattern:?} matches no file", node.at));
    }
    for f in files {
        read_file(&f, depth + 1, nodes, problems);
    }
}

/// Sections of keepalived that are not the balancer's: skipped with a note.
const NOT_OURS: &[&str] = &[
    "global_defs",
    "vrrp_instance",
    "vrrp_sync_group",
    "vrrp_script",
    "vrrp_track_process",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_interfaces",
    "bfd_instance",
    "net_namespace",
];

/// The statements of a file: the groups first (a virtual server may name one defined
/// after it), then the rest in order.
fn all(nodes: &[Node], out: &mut Import) {
    for n in nodes.iter().filter(|n| n.key == "virtual_server_group") {
        match (n.args.as_slice(), &n.block) {
            ([name], Some(_)) => {
                if out.groups.insert(name.clone(), n.clone()).is_some() {
                    out.problems.push(format!(
                        "{}: virtual_server_group {name} is defined twice",
                        n.at
                    ));
                }
            }
            _ => out.problems.push(format!(
                "{}: virtual_server_group needs a name and a block",
                n.at
            )),
        }
    }
    for n in nodes.iter().filter(|n| n.key == "track_file") {
        track_file(n, out);
    }
    for n in nodes
        .iter()
        .filter(|n| n.key != "virtual_server_group" && n.key != "track_file")
    {
        top(n, out);
    }
}

/// A `track_file` block, kept by name for the FILE_CHECKs that name it.
fn track_file(n: &Node, out: &mut Import) {
    let (Some(name), Some(body)) = (n.args.first(), &n.block) else {
        out.problems
            .push(format!("{}: track_file needs a name and a block", n.at));
        return;
    };
    // keepalived's default weight of a track_file is 1.
    let (mut file, mut weight, mut reverse) = (None, 1, false);
    for c in body {
        if !no_block(c, out) {
            continue;
        }
        match c.key.as_str() {
            "file" => file = one(c, out).map(String::from),
            "weight" => {
                if let Some((w, r)) = file_weight(c, out) {
                    (weight, reverse) = (w, r);
                }
            }
            "init_file" => {
                let mut value = 0;
                let mut overwrite = false;
                for a in &c.args {
                    match (a.as_str(), a.parse::<i64>()) {
                        ("overwrite", _) => overwrite = true,
                        (_, Ok(v)) => value = v,
                        _ => out
                            .problems
                            .push(format!("{}: init_file [VALUE] [overwrite]: {a}?", c.at)),
                    }
                }
                match &file {
                    Some(f) => out.init_files.push((f.clone(), value, overwrite)),
                    None => out
                        .problems
                        .push(format!("{}: init_file before the track_file's file", c.at)),
                }
            }
            _ => unsupported(c, out, "in a track_file"),
        }
    }
    let Some(file) = file else {
        out.problems
            .push(format!("{}: track_file {name} without its file", n.at));
        return;
    };
    out.files.insert(
        name.clone(),
        TrackFile {
            file,
            weight,
            reverse,
        },
    );
}

/// `weight W [reverse|noreverse]` of a track_file or FILE_CHECK: -65535 to 65535.
fn file_weight(c: &Node, out: &mut Import) -> Option<(i32, bool)> {
    let w = c
        .args
        .first()
        .and_then(|w| w.parse::<i32>().ok())
        .filter(|w| (-65535..=65535).contains(w));
    let reverse = match c.args.get(1).map(String::as_str) {
        None | Some("noreverse") => Some(false),
        Some("reverse") => Some(true),
        Some(_) => None,
    };
    match (w, reverse, c.args.len()) {
        (Some(w), Some(r), 1..=2) => Some((w, r)),
        _ => {
            out.problems.push(format!(
                "{}: weight -65535..65535 [reverse|noreverse]",
                c.at
            ));
            None
        }
    }
}

fn top(n: &Node, out: &mut Import) {
    match n.key.as_str() {
        "virtual_server" => virtual_server(n, out),
        "global_defs" => {
            for d in n.block.iter().flatten() {
                match d.key.as_str() {
                    "lvs_sync_daemon" => lvs_sync_daemon(d, out),
                    "lvs_timeouts" => lvs_timeouts(d, out),
                    "lvs_flush" => out.flush = true,
                    "lvs_flush_on_stop" | "lvs_flush_onstop" => out.notes.push(format!(
                        "{}: {}: wvs keeps its table when it stops (its state directory \
                         holds it); clear it with wvs adm -C",
                        d.at, d.key
                    )),
                    _ => {}
                }
            }
            out.notes.push(format!(
                "{}: global_defs skipped but for its lvs_* keywords: keepalived's own settings stay keepalived's",
                n.at
            ));
        }
        k if NOT_OURS.contains(&k) || k.starts_with("vrrp_") => out.notes.push(format!(
            "{}: {} skipped: VRRP and keepalived's own settings stay keepalived's (wvs balances and checks)",
            n.at, n.key
        )),
        _ => unsupported(n, out, "at the top level"),
    }
}

/// `lvs_timeouts [tcp SECS] [tcpfin SECS] [udp SECS]`: ipvsadm's `--set`, 0 to 31 days
/// each, at least one; those not given are kept.
fn lvs_timeouts(n: &Node, out: &mut Import) {
    let mut t = [0u32; 3];
    let mut it = n.args.iter();
    let mut any = false;
    while let Some(k) = it.next() {
        let i = match k.as_str() {
            "tcp" => 0,
            "tcpfin" => 1,
            "udp" => 2,
            _ => {
                out.problems
                    .push(format!("{}: lvs_timeouts {k}: tcp, tcpfin or udp", n.at));
                return;
            }
        };
        match it.next().and_then(|v| v.parse::<u32>().ok()) {
            Some(v) if v <= crate::consts::MAX_TIMEOUT_SECS => {
                t[i] = v;
                any = true;
            }
            _ => {
                out.problems.push(format!(
                    "{}: lvs_timeouts {k}: seconds from 0 to {}",
                    n.at,
                    crate::consts::MAX_TIMEOUT_SECS
                ));
                return;
            }
        }
    }
    if !any {
        out.problems.push(format!(
            "{}: lvs_timeouts needs tcp, tcpfin or udp and seconds",
            n.at
        ));
        return;
    }
    out.timeouts = Some(t);
}

/// `lvs_sync_daemon <INTERFACE> [[inst] <VRRP_INSTANCE>] [id <SYNC_ID>] [maxlen <LEN>]
/// [port <PORT>] [ttl <TTL>] [group <IP ADDR>]`: keepalived runs IPVS's master and backup
/// daemons with these settings (with an instance, only the one its VRRP state says).
/// wvs cannot see the VRRP state, so both run, as keepalived runs them without an
/// instance: the master sends what this director serves, the backup keeps what the other
/// one serves (docs/sync.md).
fn lvs_sync_daemon(n: &Node, out: &mut Import) {
    use crate::config::daemon::{DaemonState, SyncDaemon};
    let mut args = n.args.iter();
    let Some(iface) = args.next() else {
        out.problems
            .push(format!("{}: lvs_sync_daemon needs an interface", n.at));
        return;
    };
    let mut d = SyncDaemon {
        state: DaemonState::Master,
        mcast_interface: iface.clone(),
        syncid: 0,
        sync_maxlen: None,
        mcast_group: None,
        mcast_port: None,
        mcast_ttl: None,
    };
    let mut instance = None;
    const KEYS: [&str; 6] = ["inst", "id", "maxlen", "port", "ttl", "group"];
    while let Some(k) = args.next() {
        let bad = |what: &str| format!("{}: lvs_sync_daemon: {what}", n.at);
        if !KEYS.contains(&k.as_str()) {
            // The instance may be named without `inst` (keepalived's older form).
            if instance.is_none() {
                instance = Some(k.clone());
                continue;
            }
            out.problems.push(bad(&format!("unknown option {k:?}")));
            return;
        }
        let Some(v) = args.next() else {
            out.problems.push(bad(&format!("{k} needs a value")));
            return;
        };
        let r: Result<(), String> = match k.as_str() {
            "inst" => {
                instance = Some(v.clone());
                Ok(())
            }
            "id" => v
                .parse()
                .map(|x| d.syncid = x)
                .map_err(|_| bad(&format!("id {v:?} is not 0 to 255"))),
            "maxlen" => v
                .parse()
                .map(|x| d.sync_maxlen = Some(x))
                .map_err(|_| bad(&format!("maxlen {v:?} is not a length"))),
            "port" => v
                .parse()
                .map(|x| d.mcast_port = Some(x))
                .map_err(|_| bad(&format!("port {v:?} is not a port"))),
            "ttl" => v
                .parse()
                .map(|x| d.mcast_ttl = Some(x))
                .map_err(|_| bad(&format!("ttl {v:?} is not 1 to 255"))),
            _ => v
                .parse()
                .map(|x| d.mcast_group = Some(x))
                .map_err(|_| bad(&format!("group {v:?} is not an address"))),
        };
        if let Err(e) = r {
            out.problems.push(e);
            return;
        }
    }
    for state in [DaemonState::Master, DaemonState::Backup] {
        let one = SyncDaemon { state, ..d.clone() };
        if let Err(e) = one.validate() {
            out.problems.push(format!("{}: lvs_sync_daemon: {e}", n.at));
            return;
        }
        out.daemons.push(one);
    }
    if let Some(i) = instance {
        out.notes.push(format!(
            "{}: lvs_sync_daemon: both sync daemons run (keepalived runs the one VRRP \
             instance {i}'s state says; for that, use keepalived's notify scripts: \
             examples/lvs-pair/wvs-sync-notify.sh)",
            n.at
        ));
    }
}

/// What keepalived does with a keyword wvs does not take: said with the refusal, so that
/// the operator knows what a configuration without it would lose.
const MEANINGS: &[(&str, &str)] = &[
    (
        "BFD_CHECK",
        "follows a session of keepalived's own BFD daemon, which wvs does not run; a tcp or \
         misc check can stand in",
    ),
    ("bindto", "the checker's source address"),
    ("bind_port", "the checker's source port"),
    ("bind_if", "the checker's interface"),
    ("fwmark", "the mark of the checker's packets"),
    ("smtp_alert", "mail on a state change"),
    ("log_all_failures", "every failed check logged"),
];

fn unsupported(n: &Node, out: &mut Import, where_: &str) {
    let meaning = MEANINGS
        .iter()
        .find(|(k, _)| *k == n.key)
        .map_or(String::new(), |(_, m)| format!(" (keepalived: {m})"));
    out.problems.push(format!(
        "{}: {} is not supported {where_}{meaning}",
        n.at, n.key
    ));
}

/// Defaults a virtual server gives its checkers.
#[derive(Default, Clone)]
struct CheckDefaults {
    delay_loop: Option<f64>,
    connect_timeout: Option<f64>,
    retry: Option<u32>,
    delay_before_retry: Option<f64>,
    virtualhost: Option<String>,
    /// `alpha`: checked servers start down.
    alpha: Option<bool>,
    /// `warmup`: the most the first check waits.
    warmup: Option<f64>,
}

/// `notify_up`/`notify_down SCRIPT [user [group]]`: the script (quoted with its arguments),
/// run as wvs's user whatever user it names (told in a note).
fn notify_program(n: &Node, out: &mut Import) -> Option<String> {
    let Some((script, user)) = n.args.split_first() else {
        out.problems
            .push(format!("{}: {} needs a program", n.at, n.key));
        return None;
    };
    if !user.is_empty() {
        out.notes.push(format!(
            "{}: {}: the program runs as wvs's user, not as {}",
            n.at,
            n.key,
            user.join(" ")
        ));
    }
    Some(script.clone())
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            out.problems
                .push(format!("{}: {} needs a program", n.at, n.key));
            None
        })
}

/// A keepalived boolean: bare (on), or `yes`/`no`, `true`/`false`, `on`/`off`.
fn flag(n: &Node, out: &mut Import) -> Option<bool> {
    match n.args.as_slice() {
        [] => Some(true),
        [v] => match v.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" => Some(true),
            "no" | "false" | "off" => Some(false),
            _ => {
                out.problems
                    .push(format!("{}: {} {v:?} is not yes or no", n.at, n.key));
                None
            }
        },
        _ => {
            out.problems
                .push(format!("{}: {} takes one value", n.at, n.key));
            None
        }
    }
}

fn one<'a>(n: &'a Node, out: &mut Import) -> Option<&'a str> {
    match n.args.as_slice() {
        [v] => Some(v.as_str()),
        _ => {
            out.problems
                .push(format!("{}: {} takes one value", n.at, n.key));
            None
        }
    }
}

fn num<T: std::str::FromStr>(n: &Node, out: &mut Import) -> Option<T> {
    let v = one(n, out)?;
    match v.parse() {
        Ok(x) => Some(x),
        Err(_) => {
            out.problems
                .push(format!("{}: {} {v:?} is not a number", n.at, n.key));
            None
        }
    }
}

fn secs(n: &Node, out: &mut Import) -> Option<f64> {
    num::<f64>(n, out).filter(|v| {
        let ok = v.is_finite() && *v >= 0.0;
        if !ok {
            out.problems
                .push(format!("{}: {} must be a number of seconds", n.at, n.key));
        }
        ok
    })
}

fn no_block(n: &Node, out: &mut Import) -> bool {
    if n.block.is_some() {
        out.problems
            .push(format!("{}: {} takes no block", n.at, n.key));
        return false;
    }
    true
}

/// `ADDR PORT` or `ADDR:PORT` (keepalived takes both) as `a.b.c.d:port`.
fn addr_port(n: &Node, out: &mut Import) -> Option<String> {
    let (addr, port) = match n.args.as_slice() {
        [a, p] => (a.as_str(), p.as_str()),
        // Without a port: port 0 (a virtual server's every port; a real server's, the
        // connection's).
        [a] if a.parse::<std::net::IpAddr>().is_ok() => (a.as_str(), "0"),
        [a] if a.starts_with('[') => {
            let (a, p) = a[1..].split_once("]:")?;
            (a, p)
        }
        [a] if a.contains(':') => a.rsplit_once(':')?,
        _ => {
            out.problems
                .push(format!("{}: {} needs an address and a port", n.at, n.key));
            return None;
        }
    };
    match (addr.parse::<std::net::IpAddr>(), port.parse::<u16>()) {
        (Ok(a), Ok(p)) => Some(std::net::SocketAddr::new(a, p).to_string()),
        _ => {
            out.problems.push(format!(
                "{}: {} {addr} {port}: not an IP address and port",
                n.at, n.key
            ));
            None
        }
    }
}

fn virtual_server(n: &Node, out: &mut Import) {
    if n.args.first().is_some_and(|a| a == "group") {
        virtual_server_group(n, out);
        return;
    }
    let before = out.problems.len();
    // `virtual_server fwmark MARK`: a fwmark service (IPv4's unless ip_family inet6 or
    // its real servers say IPv6, as keepalived decides).
    let fwmark = n.args.first().is_some_and(|a| a == "fwmark");
    let address = if fwmark {
        match n
            .args
            .get(1)
            .and_then(|m| m.parse::<u32>().ok())
            .filter(|&m| m != 0)
        {
            Some(m) if n.args.len() == 2 => m.to_string(),
            _ => {
                out.problems.push(format!(
                    "{}: virtual_server fwmark needs a mark from 1 to {}",
                    n.at,
                    u32::MAX
                ));
                return;
            }
        }
    } else {
        let Some(address) = addr_port(n, out) else {
            return;
        };
        address
    };
    let Some(body) = &n.block else {
        out.problems
            .push(format!("{}: virtual_server without a block", n.at));
        return;
    };
    let svc = ServiceDef {
        protocol: if fwmark { "fwm" } else { "tcp" }.into(),
        address: address.clone(),
        scheduler: "wlc".into(),
        flags: vec![],
        persistent: None,
        netmask: None,
        helpers: None,
        check: None,
        udp_on_failure: None,
        synproxy: None,
        ops: false,
        pe: None,

        quorum: None,

        hysteresis: None,

        quorum_up: None,

        quorum_down: None,

        omega: None,
        laddrs: vec![],
        reals: vec![],
    };
    let mut vs = VsBlock {
        svc,
        method: Method::nat(),
        sorry_method: None,
        weight: None,
        defaults: CheckDefaults::default(),
        inhibit: false,
        reals: Vec::new(),
        sorry: None,
    };
    for c in body {
        let key = c.key.as_str();
        if key != "real_server" && !no_block(c, out) {
            continue;
        }
        vs_keyword(c, &mut vs, out);
    }
    let VsBlock {
        mut svc,
        method,
        sorry_method,
        weight,
        defaults,
        inhibit,
        reals,
        sorry,
    } = vs;
    // keepalived's check_data.c: a virtual server without a port must be persistent, and
    // is made so (360 s) with a warning.
    if svc.address.ends_with(":0") && svc.persistent.is_none() {
        svc.persistent = Some(360);
        out.notes.push(format!(
            "{}: virtual_server {} has no port (every port) and is not persistent: made persistent for 360 s, as keepalived does",
            n.at, n.args[0]
        ));
    }
    if fwmark {
        // Family by the real servers when ip_family did not say (check_data.c).
        if svc.protocol == "fwm"
            && reals
                .first()
                .and_then(|r| r.args.first())
                .is_some_and(|a| a.contains(':'))
        {
            svc.protocol = "fwm6".into();
        }
        out.notes.push(format!(
            "{}: virtual_server fwmark {}: the marks come from your nftables or iptables \
             rules, which wvs does not read: give wvs's classifier the same with \
             wvs adm --add-mark-rule (docs/adm.md)",
            n.at, svc.address
        ));
    }
    // keepalived clears `ops` on a service that is not UDP, with a warning.
    if svc.ops && matches!(svc.protocol.as_str(), "tcp" | "sctp") {
        svc.ops = false;
        out.notes.push(format!(
            "{}: ops (one-packet scheduling) is for UDP services: left out of this {} one, as keepalived does",
            n.at,
            svc.protocol.to_ascii_uppercase()
        ));
    }
    for r in reals {
        if let Some(mut real) = real_server(r, &svc, &method, &defaults, inhibit, out) {
            if let (Some(w), false) = (weight, r.block.iter().flatten().any(|c| c.key == "weight"))
            {
                real.weight = w;
            }
            svc.reals.push(real);
        }
    }
    if let Some(addr) = sorry {
        let m = sorry_method.unwrap_or_else(|| method.clone());
        svc.reals.push(RealDef {
            sorry: true,
            ..plain_real(dr_port(addr, &svc, &m.forward), &m)
        });
    }
    // What wvs would refuse (a bad netmask, say), told here with a line, unless a problem
    // of this block was told already.
    if out.problems.len() == before
        && let Err(e) = svc.validate()
    {
        out.problems.push(format!("{}: {e}", n.at));
    }
    out.services.push(svc);
}

/// Most services one `virtual_server group` makes (its addresses × one each).
const MAX_GROUP_SERVICES: usize = 256;

/// `virtual_server group NAME`: as keepalived without `nftables_ipvs`, one service for
/// each address (ranges and prefixes counted out) and mark of the group, each with the
/// block's settings and real servers.
fn virtual_server_group(n: &Node, out: &mut Import) {
    let Some(name) = n.args.get(1).filter(|_| n.args.len() == 2) else {
        out.problems.push(format!(
            "{}: virtual_server group needs the group's name",
            n.at
        ));
        return;
    };
    let Some(group) = out.groups.get(name).cloned() else {
        out.problems
            .push(format!("{}: no virtual_server_group {name}", n.at));
        return;
    };
    let mut made = Vec::new();
    for e in group.block.iter().flatten() {
        let mut words = std::iter::once(e.key.clone()).chain(e.args.iter().cloned());
        let first = words.next().unwrap_or_default();
        let rest: Vec<String> = words.collect();
        if first == "fwmark" {
            let mut args = vec!["fwmark".to_string()];
            args.extend(rest.first().cloned());
            let family = match rest.get(1).map(String::as_str) {
                None => None,
                Some(f @ ("inet" | "inet6")) => Some(f.to_string()),
                Some(f) => {
                    out.problems
                        .push(format!("{}: fwmark {f}: inet or inet6", e.at));
                    continue;
                }
            };
            made.push((e.at.clone(), args, family));
            continue;
        }
        let Some(range) = group_range(&first) else {
            out.problems.push(format!(
                "{}: {first}: not an address, a range (a.b.c.d-N, start-end) or a prefix",
                e.at
            ));
            continue;
        };
        if made.len() as u128 + range.len() > MAX_GROUP_SERVICES as u128 {
            out.problems.push(format!(
                "{}: virtual_server_group {name} makes more than {MAX_GROUP_SERVICES} services: \
                 give wvs one fwmark service and a mark rule for the range instead (docs/adm.md)",
                e.at
            ));
            return;
        }
        // A port that is all zeros is no port (keepalived 2.0.7).
        let port = rest
            .first()
            .filter(|p| !p.trim_start_matches('0').is_empty())
            .cloned();
        for a in range.addrs() {
            let mut args = vec![a.to_string()];
            args.extend(port.clone());
            made.push((e.at.clone(), args, None));
        }
    }
    if made.is_empty() {
        out.notes.push(format!(
            "{}: virtual_server_group {name} is empty: dropped, as keepalived drops it",
            n.at
        ));
    }
    for (at, args, family) in made {
        let mut block = n.block.clone().unwrap_or_default();
        if let Some(f) = family {
            block.insert(
                0,
                Node {
                    at: at.clone(),
                    key: "ip_family".into(),
                    args: vec![f],
                    block: None,
                },
            );
        }
        let one = Node {
            at: n.at.clone(),
            key: n.key.clone(),
            args,
            block: Some(block),
        };
        virtual_server(&one, out);
    }
}

/// The addresses of a group's entry: one, `a.b.c.d-N` (the last octet; IPv6's last group
/// in hex), `start-end`, or a prefix with its host bits zero.
fn group_range(s: &str) -> Option<GroupRange> {
    use std::net::IpAddr;
    let (lo, hi): (IpAddr, IpAddr) = if let Ok(a) = s.parse::<IpAddr>() {
        (a, a)
    } else if let Some((a, len)) = s.split_once('/') {
        let net = ipnet::IpNet::new(a.parse().ok()?, len.parse().ok()?).ok()?;
        if net.trunc() != net {
            return None;
        }
        (net.network(), net.broadcast())
    } else {
        let (a, b) = s.split_once('-')?;
        let start: IpAddr = a.parse().ok()?;
        let end = match (b.parse::<IpAddr>(), start) {
            (Ok(e), _) => e,
            (Err(_), IpAddr::V4(v)) => {
                let mut o = v.octets();
                o[3] = b.parse().ok()?;
                IpAddr::V4(o.into())
            }
            (Err(_), IpAddr::V6(v)) => {
                let mut g = v.segments();
                g[7] = u16::from_str_radix(b, 16).ok()?;
                IpAddr::V6(g.into())
            }
        };
        (start, end)
    };
    let (lo, hi) = match (lo, hi) {
        (IpAddr::V4(l), IpAddr::V4(h)) => (u128::from(u32::from(l)), u128::from(u32::from(h))),
        (IpAddr::V6(l), IpAddr::V6(h)) => (u128::from(l), u128::from(h)),
        _ => return None,
    };
    (hi >= lo).then_some(GroupRange {
        lo,
        hi,
        v6: s.contains(':'),
    })
}

/// The addresses `lo..=hi` of one family, as integers.
struct GroupRange {
    lo: u128,
    hi: u128,
    v6: bool,
}

impl GroupRange {
    fn len(&self) -> u128 {
        self.hi - self.lo + 1
    }

    fn addrs(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        (self.lo..=self.hi).map(|x| match u32::try_from(x) {
            Ok(v4) if !self.v6 => std::net::IpAddr::V4(v4.into()),
            _ => std::net::IpAddr::V6(x.into()),
        })
    }
}

/// A forwarding method as `lvs_method` says it: wvs's name, and a tunnel's type, port
/// and checksum.
#[derive(Debug, Clone, Default)]
struct Method {
    forward: String,
    tun_type: Option<String>,
    tun_port: Option<u32>,
    tun_csum: Option<String>,
}

impl Method {
    fn nat() -> Self {
        Self {
            forward: "nat".into(),
            ..Self::default()
        }
    }

    /// Give `r` this method.
    fn apply(&self, r: &mut RealDef) {
        r.forward = self.forward.clone();
        r.tun_type = self.tun_type.clone();
        r.tun_port = self.tun_port;
        r.tun_csum = self.tun_csum.clone();
    }
}

/// `lvs_method NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]`, with
/// keepalived's checks: GUE needs its port, only GUE has one, IPIP takes no checksum
/// option, GRE no remcsum.
fn method(c: &Node, out: &mut Import) -> Option<Method> {
    let bad = |out: &mut Import, what: String| {
        out.problems.push(format!("{}: {} {what}", c.at, c.key));
        None
    };
    let Some(kind) = c.args.first() else {
        return bad(out, "needs NAT, DR or TUN".into());
    };
    let forward = match kind.to_ascii_uppercase().as_str() {
        "NAT" => "nat",
        "DR" => "dr",
        "TUN" => "tunnel",
        _ => return bad(out, format!("{kind}: use NAT, DR or TUN")),
    };
    let mut m = Method {
        forward: forward.into(),
        ..Method::default()
    };
    let mut it = c.args[1..].iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            _ if forward != "tunnel" => {
                return bad(out, format!("{kind} {w}: only TUN takes options"));
            }
            "type" => match it.next().map(String::as_str) {
                Some(t @ ("ipip" | "gue" | "gre")) => m.tun_type = Some(t.into()),
                t => return bad(out, format!("type {}: ipip, gue or gre", t.unwrap_or(""))),
            },
            "port" => match it
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|&p| p != 0)
            {
                Some(p) => m.tun_port = Some(u32::from(p)),
                None => return bad(out, "port: 1 to 65535".into()),
            },
            "nocsum" | "csum" | "remcsum" => m.tun_csum = Some(w.clone()),
            _ => return bad(out, format!("{w}: type, port, nocsum, csum or remcsum")),
        }
    }
    let t = m.tun_type.as_deref().unwrap_or("ipip");
    if (t == "gue") != m.tun_port.is_some() {
        return bad(out, "TUN: gue needs a port, and only gue has one".into());
    }
    match (t, m.tun_csum.as_deref()) {
        ("ipip", Some(c)) => return bad(out, format!("TUN type ipip takes no {c}")),
        ("gre", Some("remcsum")) => return bad(out, "TUN type gre takes no remcsum".into()),
        _ => {}
    }
    if m.forward == "tunnel" && m.tun_type.is_none() {
        m.tun_type = Some("ipip".into());
    }
    Some(m)
}

/// A `virtual_server` block as read so far.
struct VsBlock<'a> {
    svc: ServiceDef,
    /// `lb_kind`, as wvs names it.
    method: Method,
    /// `sorry_server_lvs_method`, if given.
    sorry_method: Option<Method>,
    /// `weight`: the real servers' default.
    weight: Option<u32>,
    /// The checks' settings given at this level.
    defaults: CheckDefaults,
    inhibit: bool,
    /// The `real_server` blocks, read once the rest is known.
    reals: Vec<&'a Node>,
    sorry: Option<String>,
}

/// One keyword of a `virtual_server` block.
fn vs_keyword<'a>(c: &'a Node, vs: &mut VsBlock<'a>, out: &mut Import) {
    let key = c.key.as_str();
    match key {
        "lb_algo" | "lvs_sched" => {
            if let Some(v) = one(c, out) {
                const SCHEDULERS: [&str; 14] = [
                    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo",
                    "ovf", "mh", "twos",
                ];
                if SCHEDULERS.contains(&v) {
                    vs.svc.scheduler = v.into();
                } else {
                    out.problems
                        .push(format!("{}: {key} {v}: no such IPVS scheduler", c.at));
                }
            }
        }
        "lb_kind" | "lvs_method" => {
            if let Some(m) = method(c, out) {
                vs.method = m;
            }
        }
        "sorry_server_lvs_method" => vs.sorry_method = method(c, out),
        "sorry_server_inhibit" => out.notes.push(format!(
            "{}: sorry_server_inhibit: wvs keeps a sorry server in its table and schedules it \
             only while no other server can take a connection, so it is the same either way",
            c.at
        )),
        "weight" => vs.weight = num(c, out),
        // The scheduler's flags (ipvsadm -b), as keepalived takes them: sh-* only after
        // lvs_sched sh, mh-* only after lvs_sched mh.
        f @ ("flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port"
        | "mh-fallback") => {
            let sched = vs.svc.scheduler.as_str();
            if f.starts_with("flag-") || f.starts_with(sched) && (sched == "sh" || sched == "mh") {
                vs.svc.flags.push(f.into());
            } else {
                out.notes.push(format!(
                    "{}: {f} left out: it only applies after lvs_sched {}, as keepalived reads it",
                    c.at,
                    &f[..2]
                ));
            }
        }
        "hashed" => out.notes.push(format!(
            "{}: hashed: accepted for compatibility, as keepalived accepts it (it sets no flag)",
            c.at
        )),
        "protocol" if vs.svc.protocol.starts_with("fwm") => {
            // keepalived ignores it for a fwmark service: the mark says which packets.
            out.notes.push(format!(
                "{}: protocol is ignored for a fwmark virtual_server, as keepalived ignores it",
                c.at
            ));
        }
        "protocol" => {
            if let Some(v) = one(c, out) {
                match v.to_ascii_uppercase().as_str() {
                    "TCP" => vs.svc.protocol = "tcp".into(),
                    "UDP" => vs.svc.protocol = "udp".into(),
                    "SCTP" => vs.svc.protocol = "sctp".into(),
                    _ => out.problems.push(format!(
                        "{}: protocol {v} is not supported (TCP, UDP or SCTP)",
                        c.at
                    )),
                }
            }
        }
        "persistence_timeout" if c.args.is_empty() => {
            vs.svc.persistent = Some(crate::consts::DEFAULT_PERSISTENT_SECS);
        }
        "persistence_timeout" => {
            if let Some(t) = num::<u32>(c, out) {
                vs.svc.persistent = Some(t.max(1));
            }
        }
        "persistence_granularity" => {
            if let Some(v) = one(c, out) {
                vs.svc.netmask = Some(v.into());
                // It turns persistence on (360 s) when it is not yet (keepalived).
                vs.svc
                    .persistent
                    .get_or_insert(crate::consts::DEFAULT_PERSISTENT_SECS);
            }
        }
        "delay_loop" => vs.defaults.delay_loop = secs(c, out),
        "connect_timeout" => vs.defaults.connect_timeout = secs(c, out),
        "retry" | "nb_get_retry" => vs.defaults.retry = num(c, out),
        "delay_before_retry" => vs.defaults.delay_before_retry = secs(c, out),
        "virtualhost" => vs.defaults.virtualhost = one(c, out).map(Into::into),
        "alpha" => vs.defaults.alpha = flag(c, out),
        "omega" => vs.svc.omega = flag(c, out),
        // wvs has no VRRP state of its own to pause its checkers by.
        "ha_suspend" => out.notes.push(format!(
            "{}: ha_suspend: wvs's checkers always run (keepalived pauses its checkers while \
             this director is not the VRRP master); a backup director's wvs checks too",
            c.at
        )),
        "warmup" => vs.defaults.warmup = secs(c, out),
        "inhibit_on_failure" => vs.inhibit = true,
        "ops" => vs.svc.ops = true,
        // The LVS and DPVS keepalived's `syn_proxy`: the service's synproxy on (`syn_proxy
        // no`: off).
        "syn_proxy" => {
            if let Some(on) = flag(c, out) {
                vs.svc.synproxy = Some(if on { "on" } else { "off" }.into());
            }
        }
        // IPVS's persistence engine (`--pe`): wvs's built-in `sip`, or an engine plugin.
        "persistence_engine" => vs.svc.pe = one(c, out).map(Into::into),
        "ip_family" if vs.svc.protocol.starts_with("fwm") => match one(c, out) {
            Some("inet") => vs.svc.protocol = "fwm".into(),
            Some("inet6") => vs.svc.protocol = "fwm6".into(),
            Some(f) => out
                .problems
                .push(format!("{}: ip_family {f}: inet or inet6", c.at)),
            None => {}
        },
        "ip_family" => {
            // keepalived's check that the virtual server's address is of the family.
            let v6 = vs.svc.address.starts_with('[');
            match one(c, out) {
                Some("inet") if !v6 => {}
                Some("inet6") if v6 => {}
                Some(f @ ("inet" | "inet6")) => out.problems.push(format!(
                    "{}: ip_family {f}: the virtual server's address is not of it",
                    c.at
                )),
                Some(f) => out
                    .problems
                    .push(format!("{}: ip_family {f}: inet or inet6", c.at)),
                None => {}
            }
        }
        "sorry_server" => vs.sorry = addr_port(c, out),
        "quorum" => {
            vs.svc.quorum = num::<u32>(c, out).filter(|q| {
                let ok = *q >= 1;
                if !ok {
                    out.problems
                        .push(format!("{}: quorum 0 (the least is 1)", c.at));
                }
                ok
            })
        }
        "hysteresis" => vs.svc.hysteresis = num(c, out),
        "quorum_up" => vs.svc.quorum_up = notify_program(c, out),
        "quorum_down" => vs.svc.quorum_down = notify_program(c, out),
        "real_server" => vs.reals.push(c),
        _ => unsupported(c, out, "in a virtual_server"),
    }
}

/// DR and tunnels deliver to the service's port, whatever the real server says (ipvsadm).
/// A fwmark service's virtual port is each packet's own (port 0).
fn dr_port(addr: String, svc: &ServiceDef, method: &str) -> String {
    let vport = match svc.address.rsplit_once(':') {
        _ if svc.protocol.starts_with("fwm") => Some("0"),
        Some((_, port)) => Some(port),
        None => None,
    };
    match (method, addr.rsplit_once(':'), vport) {
        ("dr" | "tunnel", Some((host, _)), Some(port)) => format!("{host}:{port}"),
        _ => addr,
    }
}

fn plain_real(address: String, method: &Method) -> RealDef {
    let mut r = RealDef {
        address,
        weight: 1,
        forward: String::new(),
        tun_type: None,
        tun_port: None,
        tun_csum: None,
        upper_threshold: 0,
        lower_threshold: 0,
        hint: 0,
        check: None,
        checks: Vec::new(),
        sorry: false,
    };
    method.apply(&mut r);
    r
}

fn real_server(
    n: &Node,
    svc: &ServiceDef,
    method: &Method,
    defaults: &CheckDefaults,
    vs_inhibit: bool,
    out: &mut Import,
) -> Option<RealDef> {
    let address = addr_port(n, out)?;
    let Some(body) = &n.block else {
        // keepalived takes a real server without a block: weight 1, no checker.
        return Some(plain_real(dr_port(address, svc, &method.forward), method));
    };
    // Its own lvs_method, if it has one (keepalived's real_server takes one).
    let own = body
        .iter()
        .rfind(|c| c.key == "lvs_method" || c.key == "lb_kind")
        .and_then(|c| self::method(c, out));
    let method = own.as_ref().unwrap_or(method);
    let mut real = plain_real(dr_port(address, svc, &method.forward), method);
    let mut defaults = defaults.clone();
    let mut inhibit = vs_inhibit;
    let mut checkers: Vec<&Node> = Vec::new();
    let (mut notify_up, mut notify_down) = (None, None);
    for c in body {
        let key = c.key.as_str();
        let checker = matches!(
            key,
            "TCP_CHECK"
                | "HTTP_GET"
                | "SSL_GET"
                | "DNS_CHECK"
                | "MISC_CHECK"
                | "SMTP_CHECK"
                | "UDP_CHECK"
                | "PING_CHECK"
                | "FILE_CHECK"
        );
        // A checker wvs has not: said as such, with what it does, not as a block misplaced.
        if !checker && key.ends_with("_CHECK") {
            unsupported(c, out, "in a real_server");
            continue;
        }
        if !checker && !no_block(c, out) {
            continue;
        }
        match key {
            "weight" => {
                if let Some(w) = num::<u32>(c, out) {
                    real.weight = w;
                }
            }
            "inhibit_on_failure" => inhibit = true,
            "lvs_method" | "lb_kind" => {}
            "uthreshold" => real.upper_threshold = num(c, out).unwrap_or(0),
            "lthreshold" => real.lower_threshold = num(c, out).unwrap_or(0),
            "delay_loop" => defaults.delay_loop = secs(c, out),
            "connect_timeout" => defaults.connect_timeout = secs(c, out),
            "retry" | "nb_get_retry" => defaults.retry = num(c, out),
            "delay_before_retry" => defaults.delay_before_retry = secs(c, out),
            "virtualhost" => defaults.virtualhost = one(c, out).map(Into::into),
            "alpha" => defaults.alpha = flag(c, out),
            "warmup" => defaults.warmup = secs(c, out),
            "notify_up" => notify_up = notify_program(c, out),
            "notify_down" => notify_down = notify_program(c, out),
            _ if checker => checkers.push(c),
            _ => unsupported(c, out, "in a real_server"),
        }
    }
    // Each checker a check of its own; several must all pass, as keepalived's.
    let mut checks = Vec::new();
    for c in &checkers {
        if let Some(mut check) = checker(c, &defaults, out) {
            check.inhibit_on_failure = inhibit;
            if let Err(e) = check.validate(&format!("real server {}", real.address)) {
                out.problems.push(format!("{}: {e}", c.at));
            }
            checks.push(check);
        }
    }
    // The server's programs go with its first check (a server changes state when its
    // checks say so); without a checker it never does, as in keepalived.
    match checks.first_mut() {
        Some(first) => {
            first.notify_up = notify_up;
            first.notify_down = notify_down;
        }
        None if notify_up.is_some() || notify_down.is_some() => out.notes.push(format!(
            "{}: real_server {}: notify_up/notify_down without a checker never run",
            n.at, real.address
        )),
        None => {}
    }
    if checks.len() == 1 {
        real.check = checks.pop();
    } else {
        real.checks = checks;
    }
    Some(real)
}

fn checker(n: &Node, defaults: &CheckDefaults, out: &mut Import) -> Option<CheckDef> {
    let kind = match n.key.as_str() {
        "TCP_CHECK" => "tcp",
        "HTTP_GET" => "http",
        "SSL_GET" => "https",
        "DNS_CHECK" => "dns",
        "SMTP_CHECK" => "smtp",
        "UDP_CHECK" => "udp",
        "PING_CHECK" => "ping",
        "FILE_CHECK" => "file",
        _ => "misc",
    };
    let mut d = CheckDef::of(kind);
    let mut t = defaults.clone();
    let mut urls: Vec<crate::config::check::UrlDef> = Vec::new();
    let mut misc_timeout = None;
    let mut own_weight = None;
    let mut named_file = false;
    let within = format!("in a {}", n.key);
    for c in n.block.iter().flatten() {
        let key = c.key.as_str();
        if key != "url" && !no_block(c, out) {
            continue;
        }
        let http = matches!(kind, "http" | "https");
        match key {
            "track_file" if kind == "file" => match c.args.first().and_then(|n| out.files.get(n)) {
                Some(f) => {
                    d.file = Some(f.file.clone());
                    (d.file_weight, d.reverse) = (Some(f.weight), f.reverse);
                }
                None => {
                    named_file = true;
                    out.problems.push(format!(
                        "{}: track_file {} is not defined",
                        c.at,
                        c.args.first().map_or("", String::as_str)
                    ))
                }
            },
            // keepalived: a FILE_CHECK's own weight (0 too), else its track_file's.
            "weight" if kind == "file" => {
                if let Some((w, r)) = file_weight(c, out) {
                    own_weight = Some((w, r));
                }
            }
            "connect_port" if kind == "ping" => out.notes.push(format!(
                "{}: connect_port is ignored in a PING_CHECK, as keepalived ignores it",
                c.at
            )),
            "connect_port" => {
                d.port = num::<u16>(c, out).filter(|p| *p > 0).map(u32::from);
            }
            "connect_ip" => out.problems.push(format!(
                "{}: connect_ip is not supported (wvs checks the real server's own address)",
                c.at
            )),
            "connect_timeout" => t.connect_timeout = secs(c, out),
            "delay_loop" => t.delay_loop = secs(c, out),
            "retry" | "nb_get_retry" => t.retry = num(c, out),
            "delay_before_retry" => t.delay_before_retry = secs(c, out),
            "virtualhost" if http => t.virtualhost = one(c, out).map(Into::into),
            "alpha" => t.alpha = flag(c, out),
            "warmup" => t.warmup = secs(c, out),
            "url" if http => urls.push(url(c, out)),
            "type" if kind == "dns" => d.qtype = one(c, out).map(str::to_ascii_uppercase),
            "name" if kind == "dns" => d.name = one(c, out).map(Into::into),
            "misc_path" if kind == "misc" => {
                if !c.args.is_empty() {
                    d.program = Some(c.args.join(" "));
                } else {
                    out.problems
                        .push(format!("{}: misc_path needs a program", c.at));
                }
            }
            "misc_timeout" if kind == "misc" => misc_timeout = secs(c, out),
            "misc_dynamic" if kind == "misc" => d.dynamic = true,
            "helo_name" if kind == "smtp" => d.host = one(c, out).map(Into::into),
            "payload" if kind == "udp" => d.payload_hex = one(c, out).map(Into::into),
            "require_reply" if kind == "udp" => {
                d.require_reply = Some(true);
                d.reply_hex = c.args.first().cloned();
            }
            "min_reply_length" if kind == "udp" => d.min_reply_length = num(c, out),
            "max_reply_length" if kind == "udp" => d.max_reply_length = num(c, out),
            _ => unsupported(c, out, &within),
        }
    }
    // UDP_CHECK: without require_reply only an ICMP error fails; with it, a reply of at
    // most 255 bytes unless said otherwise (keepalived's defaults).
    if kind == "udp" {
        match d.require_reply {
            Some(true) => {
                d.max_reply_length.get_or_insert(255);
            }
            _ => d.require_reply = Some(false),
        }
    }
    if let Some((w, r)) = own_weight {
        (d.file_weight, d.reverse) = (Some(w), r);
    }
    if kind == "file" && d.file.is_none() {
        if !named_file {
            out.problems
                .push(format!("{}: FILE_CHECK without track_file", n.at));
        }
        return None;
    }
    if kind == "file" && d.file_weight == Some(0) {
        d.file_weight = None;
    }
    if kind == "misc" && d.program.is_none() {
        out.problems
            .push(format!("{}: MISC_CHECK without misc_path", n.at));
    }
    if matches!(kind, "http" | "https") {
        match <[_; 1]>::try_from(urls) {
            // One url: the check's own path, status and digest.
            Ok([u]) => {
                d.path = Some(u.path);
                d.status = u.status;
                d.digest = u.digest;
            }
            // Several: each requested in turn, all must pass (as keepalived).
            Err(urls) if !urls.is_empty() => d.urls = urls,
            Err(_) => out
                .problems
                .push(format!("{}: {} without a url block", n.at, n.key)),
        }
        d.host = t.virtualhost.clone();
    }
    let deadline = if kind == "misc" {
        Deadline::Misc(misc_timeout)
    } else {
        Deadline::Connect
    };
    set_timing(n, &t, deadline, &mut d, out);
    Some(d)
}

/// Which keepalived setting is a check's deadline.
enum Deadline {
    /// `connect_timeout`.
    Connect,
    /// A MISC check's `misc_timeout` (the delay_loop when absent, as keepalived).
    Misc(Option<f64>),
}

/// A check's interval, deadline and retries from keepalived's settings `t`.
fn set_timing(n: &Node, t: &CheckDefaults, deadline: Deadline, d: &mut CheckDef, out: &mut Import) {
    let period = |v: f64, what: &str, out: &mut Import| -> Option<crate::config::check::Period> {
        let ms = (v * 1000.0).round() as u64;
        if !(crate::consts::CHECK_MIN_MS..=crate::consts::CHECK_MAX_MS).contains(&ms) {
            out.problems.push(format!(
                "{}: {what} {v} is out of range ({} to {} seconds)",
                n.at,
                crate::consts::CHECK_MIN_MS as f64 / 1000.0,
                crate::consts::CHECK_MAX_MS / 1000
            ));
            return None;
        }
        Some(crate::config::check::Secs(ms))
    };
    d.interval = period(
        t.delay_loop.unwrap_or(KEEPALIVED_DELAY_LOOP),
        "delay_loop",
        out,
    );
    let timeout = match deadline {
        Deadline::Misc(m) => m.or(t.delay_loop),
        Deadline::Connect => t.connect_timeout,
    };
    if let Some(v) = timeout {
        d.timeout = period(v, "connect_timeout", out);
    }
    d.retry = t.retry;
    d.retry_delay = t
        .delay_before_retry
        .map(|v| crate::config::check::Secs((v * 1000.0).round() as u64));
    d.start_down = t.alpha.unwrap_or(false);
    d.warmup = t
        .warmup
        .map(|v| crate::config::check::Secs((v * 1000.0).round() as u64));
}

/// A `url` block: its path (default `/`), digest and status codes.
fn url(n: &Node, out: &mut Import) -> crate::config::check::UrlDef {
    let mut u = crate::config::check::UrlDef {
        path: "/".into(),
        ..Default::default()
    };
    for c in n.block.iter().flatten() {
        if !no_block(c, out) {
            continue;
        }
        match c.key.as_str() {
            "path" => {
                if let Some(p) = one(c, out) {
                    u.path = p.into();
                }
            }
            "digest" => u.digest = one(c, out).map(str::to_ascii_lowercase),
            "status_code" => u.status.extend(c.args.iter().cloned()),
            _ => unsupported(c, out, "in a url"),
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    // As keepalived's documentation (keepalived.conf(5) and its samples) writes them.
    const SAMPLE: &str = r#"
! Configuration File for keepalived

global_defs {
   notification_email {
     acassen@firewall.loc
   }
   router_id LVS_DEVEL
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        192.168.200.16
    }
}

virtual_server 192.168.200.100 443 {
    delay_loop 6
    lb_algo rr
    lb_kind NAT
    persistence_timeout 50
    protocol TCP

    real_server 192.168.201.100 443 {
        weight 1
        SSL_GET {
            url {
              path /
              digest ff20ad2481f97b1754ef3e12ecd3a9cc
            }
            url {
              path /mrtg/
              digest 9b3a0c85a887a256d6939da88aabd8cd
            }
            connect_timeout 3
            retry 3
            delay_before_retry 3
        }
    }
}

virtual_server 10.10.10.2 1358 {
    delay_loop 6
    lb_algo rr
    lb_kind NAT
    persistence_timeout 50
    protocol TCP

    sorry_server 192.168.200.200 1358

    real_server 192.168.200.2 1358 {
        weight 1
        HTTP_GET {
            url {
              path /testurl/test.jsp
              digest 640205b7b0fc66c1ea91c463fac6334d
              status_code 200
            }
            connect_timeout 3
            retry 3
            delay_before_retry 3
        }
    }
    real_server 192.168.200.3 1358 {
        weight 1
        inhibit_on_failure
        TCP_CHECK {
            connect_port 1358
            connect_timeout 3
        }
    }
}
"#;

    #[test]
    fn syn_proxy_turns_the_services_synproxy_on() {
        let i = import_text(
            "k.conf",
            "virtual_server 198.18.100.1 80 {\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n  syn_proxy\n  real_server 198.19.0.11 80 {\n  }\n}\n\
             virtual_server 198.18.100.2 80 {\n  protocol TCP\n  syn_proxy no\n  real_server 198.19.0.12 80 {\n  }\n}\n\
             virtual_server 198.18.100.3 80 {\n  protocol TCP\n  real_server 198.19.0.13 80 {\n  }\n}\n",
        );
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        let got: Vec<Option<&str>> = i.services.iter().map(|s| s.synproxy.as_deref()).collect();
        assert_eq!(got, [Some("on"), Some("off"), None]);
    }

    #[test]
    fn a_virtual_server_without_a_port_takes_every_port() {
        let i = import_text(
            "k.conf",
            "virtual_server 198.18.100.1 {\n  lvs_sched rr\n  lvs_method NAT\n  protocol TCP\n  persistence_timeout 120\n  real_server 198.19.0.11 {\n  }\n}\n\
             virtual_server 198.18.100.2 {\n  protocol TCP\n  real_server 198.19.0.12 {\n  }\n}\n",
        );
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        assert_eq!(i.services[0].address, "198.18.100.1:0");
        assert_eq!(i.services[0].persistent, Some(120));
        assert_eq!(i.services[0].reals[0].address, "198.19.0.11:0");
        assert_eq!(i.services[1].persistent, Some(360));
        assert!(
            i.notes
                .iter()
                .any(|n| n.starts_with("k.conf:9: virtual_server 198.18.100.2 has no port")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn a_fwmark_virtual_server_is_a_fwmark_service() {
        // keepalived.conf(5): `virtual_server fwmark <INT>`; protocol ignored; the family
        // by ip_family or the real servers.
        let i = import_text(
            "k.conf",
            "virtual_server fwmark 1 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  persistence_timeout 300\n  real_server 198.19.0.11 80 {\n  }\n}\n\
             virtual_server fwmark 2 {\n  real_server 2001:db8:19::11 80 {\n  }\n}\n\
             virtual_server fwmark 3 {\n  ip_family inet6\n  lb_kind NAT\n  real_server 2001:db8:19::12 {\n  }\n}\n\
             virtual_server fwmark 0 {\n}\n",
        );
        assert_eq!(
            i.problems,
            ["k.conf:19: virtual_server fwmark needs a mark from 1 to 4294967295"]
        );
        let s = &i.services;
        assert_eq!(
            (s[0].protocol.as_str(), s[0].address.as_str()),
            ("fwm", "1")
        );
        assert_eq!(s[0].persistent, Some(300));
        assert_eq!(
            s[0].reals[0].address, "198.19.0.11:0",
            "DR: the packet's port"
        );
        assert_eq!(s[0].reals[0].forward, "dr");
        assert_eq!(
            (s[1].protocol.as_str(), s[1].address.as_str()),
            ("fwm6", "2")
        );
        assert_eq!(
            (s[2].protocol.as_str(), s[2].address.as_str()),
            ("fwm6", "3")
        );
        assert!(s.iter().all(|s| s.validate().is_ok()));
        assert!(
            i.notes
                .iter()
                .any(|n| n.starts_with("k.conf:4: protocol is ignored"))
                && i.notes.iter().any(|n| n.contains("--add-mark-rule")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn virtual_server_groups_make_a_service_of_each_entry() {
        // keepalived.conf(5): addresses, a.b.c.d-N ranges, prefixes, and fwmark entries,
        // defined before or after the virtual server that names the group.
        let i = import_text(
            "g.conf",
            "virtual_server group web {\n  lb_algo rr\n  lb_kind DR\n  persistence_timeout\n  real_server 198.19.0.11 80 {\n  }\n}\n\
             virtual_server_group web {\n  198.18.100.1 80\n  198.18.100.10-12 80\n  198.18.101.0/31 443\n  fwmark 7\n  fwmark 8 inet\n}\n\
             virtual_server_group empty {\n}\n\
             virtual_server group empty {\n  real_server 198.19.0.11 80 {\n  }\n}\n\
             virtual_server_group huge {\n  198.18.0.0/16 80\n}\n\
             virtual_server group huge {\n}\n\
             virtual_server group nosuch {\n}\n",
        );
        let ids: Vec<String> = i
            .services
            .iter()
            .map(|s| format!("{}/{}", s.protocol, s.address))
            .collect();
        assert_eq!(
            ids,
            [
                "tcp/198.18.100.1:80",
                "tcp/198.18.100.10:80",
                "tcp/198.18.100.11:80",
                "tcp/198.18.100.12:80",
                "tcp/198.18.101.0:443",
                "tcp/198.18.101.1:443",
                "fwm/7",
                "fwm/8",
            ]
        );
        assert!(
            i.services
                .iter()
                .all(|s| s.persistent == Some(360) && s.scheduler == "rr")
        );
        assert_eq!(
            i.services[4].reals[0].address, "198.19.0.11:443",
            "DR: the service's port"
        );
        assert_eq!(
            i.problems,
            [
                "g.conf:22: virtual_server_group huge makes more than 256 services: give wvs one fwmark service and a mark rule for the range instead (docs/adm.md)",
                "g.conf:26: no virtual_server_group nosuch",
            ]
        );
        assert!(
            i.notes.iter().any(|n| n.contains("group empty is empty")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn global_defs_lvs_keywords_and_the_methods_flags_and_defaults() {
        let i = import_text(
            "m.conf",
            "global_defs {\n  lvs_timeouts tcp 7200 udp 60\n  lvs_flush\n}\n\
             virtual_server 198.18.100.1 80 {\n  lvs_sched sh\n  sh-port\n  mh-fallback\n  flag-3\n  \
             lvs_method TUN type gue port 6080 csum\n  weight 5\n  persistence_granularity 255.255.255.0\n  \
             sorry_server 198.19.0.99 80\n  sorry_server_lvs_method NAT\n  \
             real_server 198.19.0.11 80 {\n  }\n  real_server 198.19.0.12 80 {\n    weight 2\n    lvs_method DR\n  }\n}\n\
             virtual_server 198.18.100.2 80 {\n  lvs_sched twos\n  lvs_method TUN type ipip csum\n  real_server 198.19.0.11 80 {\n  }\n}\n\
             virtual_server 198.18.100.3 80 {\n  lvs_method TUN type gue\n}\n\
             virtual_server 198.18.100.4 80 {\n  lvs_method TUN type gre remcsum\n}\n",
        );
        assert_eq!(i.timeouts, Some([7200, 0, 60]));
        assert!(i.flush);
        let s = &i.services[0];
        assert_eq!(s.flags, ["sh-port", "flag-3"]);
        assert_eq!(
            s.persistent,
            Some(360),
            "a granularity turns persistence on"
        );
        let r = &s.reals;
        assert_eq!(
            (
                r[0].forward.as_str(),
                r[0].tun_type.as_deref(),
                r[0].tun_port,
                r[0].tun_csum.as_deref(),
                r[0].weight
            ),
            ("tunnel", Some("gue"), Some(6080), Some("csum"), 5)
        );
        assert_eq!(
            (r[1].forward.as_str(), r[1].weight),
            ("dr", 2),
            "its own method and weight"
        );
        assert!(r[2].sorry && r[2].forward == "nat" && r[2].address == "198.19.0.99:80");
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        assert_eq!(i.services[1].scheduler, "twos");
        assert_eq!(
            i.problems,
            [
                "m.conf:24: lvs_method TUN type ipip takes no csum",
                "m.conf:29: lvs_method TUN: gue needs a port, and only gue has one",
                "m.conf:32: lvs_method TUN type gre takes no remcsum",
            ]
        );
        assert!(
            i.notes
                .iter()
                .any(|n| n.starts_with("m.conf:8: mh-fallback left out")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn file_checks_as_keepalived_writes_them() {
        let i = import_text(
            "f.conf",
            "track_file t {\n  file \"/run/t\"\n  init_file 3 overwrite\n}\ntrack_file z {\n  file \"/run/z\"\n  weight 0 reverse\n}\nvirtual_server 198.18.100.1 80 {\n  protocol TCP\n  real_server 198.19.0.11 80 {\n    FILE_CHECK {\n      track_file t\n    }\n  }\n  real_server 198.19.0.12 80 {\n    FILE_CHECK {\n      track_file t\n      weight 0\n    }\n  }\n  real_server 198.19.0.13 80 {\n    FILE_CHECK {\n      track_file z\n    }\n    FILE_CHECK {\n      track_file nope\n    }\n  }\n}\n",
        );
        assert_eq!(i.problems, ["f.conf:27: track_file nope is not defined"]);
        assert_eq!(i.init_files, [("/run/t".to_string(), 3, true)]);
        let probe = |r: usize| {
            let c = i.services[0].reals[r]
                .check
                .clone()
                .or_else(|| i.services[0].reals[r].checks.first().cloned())
                .expect("a check");
            c.validate("t").expect("valid").probe
        };
        use crate::config::check::Probe::File;
        // A track_file's weight is 1 unless it says; a FILE_CHECK's own weight wins.
        assert_eq!(
            probe(0),
            Some(File {
                path: "/run/t".into(),
                weight: 1,
                reverse: false
            })
        );
        assert_eq!(
            probe(1),
            Some(File {
                path: "/run/t".into(),
                weight: 0,
                reverse: false
            })
        );
        assert_eq!(
            probe(2),
            Some(File {
                path: "/run/z".into(),
                weight: 0,
                reverse: true
            })
        );
    }

    #[test]
    fn ping_check_as_keepalived_writes_it() {
        let i = import_text(
            "p.conf",
            "virtual_server 198.18.100.1 80 {\n  protocol TCP\n  real_server 198.19.0.11 80 {\n    PING_CHECK {\n      connect_timeout 2\n      retry 2\n      connect_port 80\n    }\n  }\n}\n",
        );
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        assert!(
            i.notes
                .iter()
                .any(|n| n.starts_with("p.conf:7: connect_port is ignored")),
            "{:?}",
            i.notes
        );
        let c = i.services[0].reals[0].check.as_ref().expect("a check");
        assert_eq!((c.kind.as_str(), c.port), ("ping", None));
        let spec = c.validate("test").expect("valid");
        assert_eq!(spec.probe, Some(crate::config::check::Probe::Ping));
        // A port does not fit a ping check in a file or the API either.
        let mut bad = c.clone();
        bad.port = Some(80);
        assert!(bad.validate("test").is_err());
    }

    #[test]
    fn smtp_check_as_keepalived_writes_it() {
        let i = import_text(
            "s.conf",
            "virtual_server 198.18.100.1 25 {\n  protocol TCP\n  real_server 198.19.0.11 25 {\n    SMTP_CHECK {\n      helo_name lb.example\n      connect_port 2525\n      connect_timeout 3\n    }\n  }\n  real_server 198.19.0.12 25 {\n    SMTP_CHECK {\n    }\n  }\n}\n",
        );
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        let c = i.services[0].reals[0].check.as_ref().expect("a check");
        assert_eq!(
            (c.kind.as_str(), c.host.as_deref(), c.port),
            ("smtp", Some("lb.example"), Some(2525))
        );
        let spec = c.validate("test").expect("valid");
        assert_eq!(
            spec.probe,
            Some(crate::config::check::Probe::Smtp {
                helo: "lb.example".into()
            })
        );
        let d = i.services[0].reals[1]
            .check
            .as_ref()
            .expect("a check")
            .validate("test")
            .expect("valid");
        assert_eq!(
            d.probe,
            Some(crate::config::check::Probe::Smtp {
                helo: "smtpchecker.keepalived.org".into()
            })
        );
    }

    #[test]
    fn ops_as_keepalived_reads_it() {
        // keepalived.conf(5): `ops` "one-packet scheduling", UDP only (cleared with a
        // warning on another service).
        let i = import_text(
            "k.conf",
            "virtual_server 198.18.100.1 53 {\n  lvs_sched rr\n  lvs_method DR\n  protocol UDP\n  ops\n  real_server 198.19.0.11 53 {\n  }\n}\n\
             virtual_server 198.18.100.1 80 {\n  protocol TCP\n  ops\n  real_server 198.19.0.11 80 {\n  }\n}\n",
        );
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        assert!(i.services[0].ops);
        assert!(!i.services[1].ops);
        assert!(
            i.notes.iter().any(|n| n.starts_with("k.conf:9: ops")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn lvs_sync_daemon_starts_both_daemons() {
        let i = import_text(
            "k.conf",
            "global_defs {\n  router_id A\n  lvs_sync_daemon eth1 VI_1 id 5 maxlen 1400 port 9000 ttl 2 group 224.0.0.99\n}\n",
        );
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        assert_eq!(i.daemons.len(), 2);
        let m = &i.daemons[0];
        assert_eq!(
            (
                m.mcast_interface.as_str(),
                m.syncid,
                m.sync_maxlen,
                m.mcast_port,
                m.mcast_ttl
            ),
            ("eth1", 5, Some(1400), Some(9000), Some(2))
        );
        assert_eq!(m.mcast_group, Some("224.0.0.99".parse().unwrap()));
        assert!(i.notes.iter().any(|n| n.contains("VI_1")), "{:?}", i.notes);
        let i = import_text(
            "k.conf",
            "global_defs {\n  lvs_sync_daemon eth1 inst VI_1 id 300\n}\n",
        );
        assert_eq!(
            i.problems,
            vec!["k.conf:2: lvs_sync_daemon: id \"300\" is not 0 to 255"]
        );
        let i = import_text("k.conf", "global_defs {\n  lvs_sync_daemon eth1 ttl 0\n}\n");
        assert_eq!(i.problems.len(), 1, "{:?}", i.problems);
    }

    #[test]
    fn a_documented_configuration_imports_and_what_wvs_lacks_is_listed_by_line() {
        let i = import_text("keepalived.conf", SAMPLE);
        assert_eq!(i.notes.len(), 2, "{:?}", i.notes);
        assert!(i.notes[0].starts_with("keepalived.conf:4: global_defs skipped"));
        assert!(i.daemons.is_empty());
        assert!(i.notes[1].starts_with("keepalived.conf:11: vrrp_instance skipped"));
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        assert_eq!(i.services.len(), 2);
        // The first server's two urls: each requested in turn, both must pass.
        let ssl = i.services[0].reals[0].check.as_ref().unwrap();
        assert_eq!(ssl.kind, "https");
        assert_eq!(
            ssl.urls
                .iter()
                .map(|u| (u.path.as_str(), u.digest.as_deref()))
                .collect::<Vec<_>>(),
            [
                ("/", Some("ff20ad2481f97b1754ef3e12ecd3a9cc")),
                ("/mrtg/", Some("9b3a0c85a887a256d6939da88aabd8cd"))
            ]
        );
        assert_eq!((ssl.path.as_ref(), ssl.digest.as_ref()), (None, None));
        ssl.validate("test").expect("valid check");
        let s = &i.services[1];
        assert_eq!(
            (
                s.protocol.as_str(),
                s.address.as_str(),
                s.scheduler.as_str()
            ),
            ("tcp", "10.10.10.2:1358", "rr")
        );
        assert_eq!(s.persistent, Some(50));
        assert_eq!(s.reals.len(), 3);
        let http = s.reals[0].check.as_ref().unwrap();
        assert_eq!(http.kind, "http");
        assert_eq!(http.path.as_deref(), Some("/testurl/test.jsp"));
        assert_eq!(http.status, vec!["200"]);
        assert_eq!(
            http.digest.as_deref(),
            Some("640205b7b0fc66c1ea91c463fac6334d")
        );
        assert_eq!(http.interval, Some(crate::config::check::Secs(6000)));
        assert_eq!(http.timeout, Some(crate::config::check::Secs(3000)));
        assert_eq!(
            (http.retry, http.retry_delay),
            (Some(3), Some(crate::config::check::Secs(3000)))
        );
        let tcp = s.reals[1].check.as_ref().unwrap();
        assert_eq!((tcp.kind.as_str(), tcp.port), ("tcp", Some(1358)));
        assert!(tcp.inhibit_on_failure);
        assert_eq!(s.reals[0].forward, "nat");
        assert!(s.reals[2].sorry && s.reals[2].address == "192.168.200.200:1358");
        for r in &s.reals {
            if let Some(c) = &r.check {
                c.validate("test").expect("valid check");
            }
        }
    }

    #[test]
    fn every_unsupported_keyword_is_listed_and_blocks_may_open_on_the_next_line() {
        let text = "virtual_server 198.18.0.10 80\n{\n  lb_algo wrr\n  lb_kind DR\n  alpha\n  quorum 2\n  real_server 198.19.0.11 8080\n  {\n    weight 3\n    notify_down /bin/false\n    MISC_CHECK {\n      misc_path \"/usr/local/bin/check --fast\"\n      misc_timeout 4\n      misc_dynamic\n    }\n  }\n}\nvirtual_server group web {\n}\n";
        let i = import_text("k.conf", text);
        assert_eq!(i.problems, vec!["k.conf:18: no virtual_server_group web",]);
        let r = &i.services[0].reals[0];
        assert_eq!(
            (r.address.as_str(), r.weight, r.forward.as_str()),
            ("198.19.0.11:80", 3, "dr"),
            "DR goes to the service's port"
        );
        let c = r.check.as_ref().unwrap();
        assert_eq!(c.program.as_deref(), Some("/usr/local/bin/check --fast"));
        assert_eq!(c.timeout, Some(crate::config::check::Secs(4000)));
        assert_eq!(
            c.interval,
            Some(crate::config::check::Secs(60000)),
            "keepalived's default delay_loop"
        );
        assert!(c.start_down, "the virtual server's alpha");
        assert_eq!(
            c.notify_down.as_deref(),
            Some("/bin/false"),
            "the server's notify_down"
        );
        assert!(c.dynamic, "misc_dynamic");
        assert_eq!(i.services[0].quorum, Some(2));
    }

    /// Several checkers on one real server: a check each, all of which must pass; `alpha`
    /// and `warmup` of a real server or a checker.
    #[test]
    fn alpha_and_warmup() {
        let text = "virtual_server 198.18.0.10 80 {\n warmup 3\n real_server 198.19.0.11 80 {\n  alpha no\n  TCP_CHECK {\n  }\n  TCP_CHECK {\n   alpha\n   warmup 0\n  }\n }\n}\n";
        let i = import_text("a.conf", text);
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        let c = &i.services[0].reals[0].checks;
        assert_eq!(
            c.iter()
                .map(|c| (c.start_down, c.warmup))
                .collect::<Vec<_>>(),
            [
                (false, Some(crate::config::check::Secs(3000))),
                (true, Some(crate::config::check::Secs(0)))
            ]
        );
        let i = import_text(
            "a.conf",
            "virtual_server 198.18.0.10 80 {\n alpha maybe\n}\n",
        );
        assert_eq!(i.problems, ["a.conf:2: alpha \"maybe\" is not yes or no"]);
    }

    /// keepalived's UDP_CHECK: `payload` and `require_reply` in hexadecimal (x: any
    /// nibble), the reply's lengths; without require_reply, only an ICMP error fails.
    #[test]
    fn udp_checks() {
        let text = "virtual_server 198.18.0.10 53 {\n protocol UDP\n real_server 198.19.0.11 53 {\n  UDP_CHECK {\n   payload 6869\n   require_reply 72xx\n   min_reply_length 2\n  }\n }\n real_server 198.19.0.12 53 {\n  UDP_CHECK {\n   connect_timeout 4\n  }\n }\n}\n";
        let i = import_text("u.conf", text);
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        let r = &i.services[0].reals;
        let a = r[0].check.as_ref().unwrap();
        assert_eq!(
            (
                a.kind.as_str(),
                a.payload_hex.as_deref(),
                a.require_reply,
                a.reply_hex.as_deref(),
                a.min_reply_length,
                a.max_reply_length
            ),
            (
                "udp",
                Some("6869"),
                Some(true),
                Some("72xx"),
                Some(2),
                Some(255)
            )
        );
        let b = r[1].check.as_ref().unwrap();
        assert_eq!((b.require_reply, b.reply_hex.as_ref()), (Some(false), None));
        i.services[0].validate().expect("valid");
    }

    /// Several checkers on one real server: a check each, all of which must pass.
    #[test]
    fn several_checkers_on_a_real_server() {
        let text = "virtual_server 198.18.0.10 80 {\n protocol TCP\n real_server 198.19.0.11 80 {\n  inhibit_on_failure\n  TCP_CHECK {\n   connect_timeout 2\n  }\n  HTTP_GET {\n   url {\n    path /health\n   }\n  }\n }\n}\n";
        let i = import_text("s.conf", text);
        assert!(i.problems.is_empty(), "{:?}", i.problems);
        let r = &i.services[0].reals[0];
        assert!(r.check.is_none());
        assert_eq!(
            r.checks
                .iter()
                .map(|c| (c.kind.as_str(), c.path.as_deref(), c.inhibit_on_failure))
                .collect::<Vec<_>>(),
            [("tcp", None, true), ("http", Some("/health"), true)]
        );
        i.services[0].validate().expect("valid");
    }

    /// keepalived's checkers wvs has not are refused as checkers, each with what it does
    /// (a BFD_CHECK with why), not as blocks out of place; all of them in one pass.
    #[test]
    fn checkers_wvs_lacks_are_named_with_their_meaning() {
        let text = "virtual_server 198.18.0.10 53 {\n protocol UDP\n real_server 198.19.0.11 53 {\n  UDP_CHECK {\n   connect_timeout 4\n   require_reply\n  }\n  PING_CHECK {\n  }\n  BFD_CHECK {\n   name bfd1\n  }\n }\n}\n";
        let i = import_text("c.conf", text);
        let want = [(
            "10",
            "BFD_CHECK",
            "keepalived's own BFD daemon, which wvs does not run",
        )];
        assert_eq!(i.problems.len(), want.len(), "{:?}", i.problems);
        for (p, (line, key, meaning)) in i.problems.iter().zip(want) {
            assert!(
                p.starts_with(&format!(
                    "c.conf:{line}: {key} is not supported in a real_server (keepalived: "
                )) && p.contains(meaning),
                "{p}"
            );
        }
    }

    #[test]
    fn dns_checks_udp_services_and_malformed_input() {
        let text = "virtual_server 198.18.0.10:53 {\n protocol UDP\n real_server 198.19.0.11 53 {\n  DNS_CHECK {\n   type A\n   name example.test\n   retry 2\n  }\n }\n}\n}\nvirtual_server {\n}\n";
        let i = import_text("d.conf", text);
        assert_eq!(
            i.problems,
            vec![
                "d.conf:11: a `}` that closes nothing",
                "d.conf:12: virtual_server needs an address and a port",
            ]
        );
        let s = &i.services[0];
        assert_eq!(s.protocol, "udp");
        let c = s.reals[0].check.as_ref().unwrap();
        assert_eq!(
            (
                c.kind.as_str(),
                c.name.as_deref(),
                c.qtype.as_deref(),
                c.retry
            ),
            ("dns", Some("example.test"), Some("A"), Some(2))
        );
        let unclosed = import_text("u.conf", "virtual_server 198.18.0.10 80 {\n lb_algo rr\n");
        assert_eq!(
            unclosed.problems,
            vec!["u.conf:1: `virtual_server`'s block is not closed"]
        );
    }

    #[test]
    fn ipv6_virtual_servers_and_their_family() {
        let text = "virtual_server 2001:db8:18:100::1 80 {\n ip_family inet6\n lb_algo sh\n \
                    persistence_timeout 60\n persistence_granularity 64\n \
                    real_server 2001:db8:19::11 8080 {\n  TCP_CHECK {\n  }\n }\n}\n\
                    virtual_server [2001:db8:18:100::2]:443 {\n ip_family inet\n}\n\
                    virtual_server 198.18.0.10 80 {\n ip_family inet6\n}\n";
        let i = import_text("v6.conf", text);
        assert_eq!(
            i.problems,
            vec![
                "v6.conf:12: ip_family inet: the virtual server's address is not of it",
                "v6.conf:15: ip_family inet6: the virtual server's address is not of it",
            ]
        );
        let s = &i.services[0];
        assert_eq!(s.address, "[2001:db8:18:100::1]:80");
        assert_eq!(s.netmask.as_deref(), Some("64"));
        assert_eq!(s.reals[0].address, "[2001:db8:19::11]:8080");
        assert_eq!(i.services[1].address, "[2001:db8:18:100::2]:443");
        // What the import wrote is a configuration wvs takes.
        let spec = s.validate().expect("valid");
        assert_eq!(spec.netmask, 64);
    }

    #[test]
    fn includes_are_followed_relative_to_the_including_file() {
        let dir = std::env::temp_dir().join(format!("wvs-ka-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(
            dir.join("keepalived.conf"),
            "include conf.d/*.conf\ninclude missing/*.conf\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("conf.d/web.conf"),
            "virtual_server 198.18.0.10 80 {\n real_server 198.19.0.11 80 {\n  TCP_CHECK {\n  }\n }\n bogus 1\n}\n",
        )
        .unwrap();
        let i = import(&dir.join("keepalived.conf"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(i.services.len(), 1);
        assert_eq!(i.problems.len(), 2, "{:?}", i.problems);
        assert!(
            i.problems[0]
                .ends_with("keepalived.conf:2: include \"missing/*.conf\" matches no file")
        );
        assert!(
            i.problems[1]
                .ends_with("conf.d/web.conf:6: bogus is not supported in a virtual_server")
        );
    }
}
