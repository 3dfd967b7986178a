//! A health check as written (`check = { … }` on a real server or a service, in TOML, JSON
//! and `wvs adm --check`) and as validated.
//!
//! The parameters are keepalived's (`delay_loop` is `interval`, `connect_timeout` is
//! `timeout`, `retry`, `delay_before_retry` is `retry_delay`), with two changes its users
//! ask for: `timeout` bounds the whole check, not each read (keepalived#1822), and `rise` /
//! `fall` count consecutive results before the state changes (keepalived has `retry` only).

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::consts::{
    CHECK_DEFAULT_INTERVAL_MS, CHECK_DEFAULT_RETRY_DELAY_MS, CHECK_DEFAULT_TIMEOUT_MS,
    CHECK_HTTP_RETRY_DELAY_MS, CHECK_MAX_MS, CHECK_MIN_MS,
};

/// A duration written in seconds (fractions allowed, as keepalived's timers), kept in
/// milliseconds; at least `MIN` ms and at most a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Secs<const MIN: u64 = 0>(pub u64);

/// An interval or timeout: at least [`CHECK_MIN_MS`].
pub(crate) type Period = Secs<CHECK_MIN_MS>;

impl<const MIN: u64> Serialize for Secs<MIN> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1000) {
            s.serialize_u64(self.0 / 1000)
        } else {
            s.serialize_f64(self.0 as f64 / 1000.0)
        }
    }
}

impl<'de, const MIN: u64> Deserialize<'de> for Secs<MIN> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        let ms = v * 1000.0;
        if !(ms.is_finite() && ms >= MIN as f64 && ms <= CHECK_MAX_MS as f64) {
            return Err(serde::de::Error::custom(format!(
                "{v} is not a number of seconds from {} to {}",
                MIN as f64 / 1000.0,
                CHECK_MAX_MS / 1000
            )));
        }
        Ok(Secs((ms.round() as u64).max(MIN)))
    }
}

/// A health check as written. `type` says what is checked; the other keys belong to some
/// types only (an option of another type is an error).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckDef {
    /// `tcp` (a connect, keepalived's TCP_CHECK), `http` and `https` (a GET, HTTP_GET and
    /// SSL_GET), `udp` (a payload sent, a reply expected), `dns` (a query, DNS_CHECK),
    /// `misc` (a program, MISC_CHECK), or `none` (a real server's way out of its service's
    /// default check).
    #[serde(rename = "type")]
    #[schema(value_type = crate::schema::CheckType)]
    pub kind: String,
    /// The port checked; default the real server's (keepalived's `connect_port`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u32"
    )]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u32>,
    /// http/https: the path requested; default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckPath>)]
    pub path: Option<String>,
    /// http/https: the `Host` header (and TLS server name); default the server's address
    /// (keepalived's `virtualhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckHost>)]
    pub host: Option<String>,
    /// http/https: the status codes that pass, each a code or a range `"200-299"`; default
    /// 200-299 (keepalived's `status_code`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::schema::CheckStatus>)]
    pub status: Vec<String>,
    /// http/https: the MD5 digest of the body, 32 hex digits (keepalived's `digest`, made by
    /// its `genhash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckDigest>)]
    pub digest: Option<String>,
    /// http/https: a string the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// http/https: the URLs requested in turn, each on a connection of its own, all of
    /// which must pass (keepalived's several `url` blocks); instead of `path`, `status`,
    /// `digest` and `contains`, which describe one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<UrlDef>,
    /// udp: the payload sent (text); default empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// udp: a string the reply must contain; default any reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// udp: the payload sent, in hexadecimal (keepalived's UDP_CHECK `payload`), instead
    /// of `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^([0-9a-fA-F]{2})+$")]
    pub payload_hex: Option<String>,
    /// udp: whether a reply is needed (default true). Without (keepalived's UDP_CHECK
    /// without `require_reply`), the check passes unless an ICMP unreachable comes back
    /// within its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_reply: Option<bool>,
    /// udp: what the reply must start with, in hexadecimal, `x` a nibble that may be
    /// anything (keepalived's `require_reply HEX`); compared over the shorter of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^([0-9a-fA-FxX]{2})+$")]
    pub reply_hex: Option<String>,
    /// udp: the fewest bytes a reply may have (keepalived's `min_reply_length`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u32"
    )]
    #[schema(minimum = 0, maximum = 65535)]
    pub min_reply_length: Option<u32>,
    /// udp: the most bytes a reply may have (keepalived's `max_reply_length`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u32"
    )]
    #[schema(minimum = 0, maximum = 65535)]
    pub max_reply_length: Option<u32>,
    /// dns: the name queried; default `.` (keepalived's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckDnsName>)]
    pub name: Option<String>,
    /// dns: the query type (A, NS, CNAME, SOA, MX, TXT, AAAA); default SOA (keepalived's
    /// `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckQtype>)]
    pub qtype: Option<String>,
    /// misc: the program and its arguments, split at spaces and run without a shell
    /// (keepalived's `misc_path`); it passes when it exits 0 within `timeout`.
    /// `WVS_REAL_ADDR` and `WVS_REAL_PORT` in its environment say which server it checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckProgram>)]
    pub program: Option<String>,
    /// misc: the exit code sets the server's weight (keepalived's `misc_dynamic`): 0 passes
    /// and leaves the weight, 1 fails, 2 to 255 pass and set the weight to the code less 2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic: bool,
    /// file: the file whose number decides (keepalived's FILE_CHECK and its `track_file`),
    /// an absolute path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^/")]
    pub file: Option<String>,
    /// file: what the number does: 0 (the default) makes any number but 0 a failure;
    /// another weight adds the number times it to the server's weight (keepalived's
    /// `weight` of a FILE_CHECK or `track_file`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_i32"
    )]
    #[schema(minimum = -65535, maximum = 65535)]
    pub file_weight: Option<i32>,
    /// file: the number's sense reversed (keepalived's `weight W reverse`): with weight 0,
    /// 0 fails and any other number passes; otherwise the number is subtracted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverse: bool,
    /// Seconds between checks (keepalived's `delay_loop`); default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, minimum = 0.05, maximum = 86400)]
    pub interval: Option<Period>,
    /// Seconds the whole check may take, connect, request and reply (keepalived's
    /// `connect_timeout`, there per read); default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, minimum = 0.05, maximum = 86400)]
    pub timeout: Option<Period>,
    /// keepalived's `retry`: checks repeated after a failure before an up server is taken
    /// down, that is `fall` = `retry` + 1. Default 1 (dns 3, misc 0).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u32"
    )]
    #[schema(minimum = 0, maximum = 99)]
    pub retry: Option<u32>,
    /// Seconds before a failed check of an up server is repeated (keepalived's
    /// `delay_before_retry`); default 1 (http and https 3, dns the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 86400)]
    pub retry_delay: Option<Secs>,
    /// Consecutive passes that bring a down server back; default 1 (keepalived).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u32"
    )]
    #[schema(minimum = 1, maximum = 100)]
    pub rise: Option<u32>,
    /// Consecutive failures that take an up server down; default `retry` + 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u32"
    )]
    #[schema(minimum = 1, maximum = 100)]
    pub fall: Option<u32>,
    /// A failed server keeps its place with weight 0 (its connections continue, no new
    /// ones) instead of leaving scheduling (keepalived's `inhibit_on_failure`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inhibit_on_failure: bool,
    /// The server starts down and takes clients once its first checks pass (`rise` of
    /// them), instead of starting up (keepalived's `alpha`): for a service that must not
    /// send a client to a server nobody checked yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_down: bool,
    /// The first check waits a random time up to this many seconds, so that many checks
    /// do not start at once (keepalived's `warmup`); 0: at once. Default: up to the
    /// interval, at most one second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 86400)]
    pub warmup: Option<Secs>,
    /// A program run when the real server comes up (keepalived's `notify_up`): split at
    /// spaces and run without a shell, as `program`, with `WVS_REAL_ADDR`,
    /// `WVS_REAL_PORT`, `WVS_SERVICE` and `WVS_STATE` (`up`) in its environment. With
    /// several checks, a server comes up when the last of them passes. From the API only
    /// behind `--allow-misc-checks`, as a misc check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckProgram>)]
    pub notify_up: Option<String>,
    /// A program run when the real server goes down (keepalived's `notify_down`), as
    /// `notify_up` (`WVS_STATE` is `down`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckProgram>)]
    pub notify_down: Option<String>,
}

/// One URL of an HTTP check (keepalived's `url` block): the path requested and what its
/// reply must be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlDef {
    /// The path requested.
    #[schema(value_type = crate::schema::CheckPath)]
    pub path: String,
    /// The status codes that pass (codes or ranges); default 200-299.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::schema::CheckStatus>)]
    pub status: Vec<String>,
    /// The MD5 digest of the body, 32 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::CheckDigest>)]
    pub digest: Option<String>,
    /// A string the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

/// A URL an HTTP check requests, and what its reply must be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    /// The path.
    pub path: String,
    /// Status code ranges that pass.
    pub status: Vec<(u16, u16)>,
    /// MD5 of the body.
    pub digest: Option<[u8; 16]>,
    /// A string the body must contain.
    pub contains: Option<String>,
}

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.0 GET of each URL in turn, over TLS (`tls`) or not.
    Http {
        /// HTTPS.
        tls: bool,
        /// The `Host` header and TLS server name (`None`: the address).
        host: Option<String>,
        /// The URLs (at least one), all of which must pass.
        urls: Vec<HttpUrl>,
    },
    /// A UDP datagram and its reply.
    Udp {
        /// Sent.
        payload: Vec<u8>,
        /// The reply must contain it.
        expect: Option<Vec<u8>>,
        /// What the reply must say: each byte's value and the bits that count (a nibble
        /// `x` counts none of its four).
        reply: Vec<(u8, u8)>,
        /// Whether a reply is needed (else only an ICMP unreachable fails).
        require: bool,
        /// The reply's length bounds.
        len: (u32, u32),
    },
    /// A DNS query over UDP.
    Dns {
        /// The name.
        name: String,
        /// The query type's number.
        qtype: u16,
    },
    /// A program.
    Misc {
        /// Program and arguments.
        argv: Vec<String>,
        /// Its exit code sets the weight (`misc_dynamic`).
        dynamic: bool,
    },
    /// An ICMP (ICMPv6) echo answered (keepalived's PING_CHECK).
    Ping,
    /// A number read from a file (keepalived's FILE_CHECK).
    File {
        /// The file.
        path: String,
        /// 0: any number but 0 fails; else the number times it is added to the weight.
        weight: i32,
        /// The sense reversed.
        reverse: bool,
    },
    /// An SMTP greeting (220), `HELO` answered with 250, then `QUIT` (keepalived's
    /// SMTP_CHECK).
    Smtp {
        /// The name `HELO` gives (keepalived's `helo_name`).
        helo: String,
    },
}

impl Probe {
    /// The check's type name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http { tls: false, .. } => "http",
            Self::Http { tls: true, .. } => "https",
            Self::Udp { .. } => "udp",
            Self::Dns { .. } => "dns",
            Self::Misc { .. } => "misc",
            Self::Smtp { .. } => "smtp",
            Self::Ping => "ping",
            Self::File { .. } => "file",
        }
    }
}

/// A validated check: what is probed, when, and what a result changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// As written (kept for saving and listing).
    pub def: CheckDef,
    /// `None`: `type = "none"`, no check.
    pub probe: Option<Probe>,
    /// The port checked (`None`: the real server's).
    pub port: Option<u16>,
    /// Timing and counts.
    pub timing: Timing,
    /// Weight 0 on failure instead of leaving scheduling.
    pub inhibit: bool,
    /// A real server's further checks (keepalived's several checkers on one server): each
    /// runs on its own, and the server is up only while every one of them passes.
    pub also: Vec<CheckSpec>,
    /// Given as a list (`checks`, even of one): written back as one.
    pub listed: bool,
    /// Programs run when its server comes up and goes down (argv).
    pub notify: Notify,
}

/// Programs run when a real server changes state (keepalived's `notify_up`,
/// `notify_down`), each split into its argv.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Notify {
    /// When it comes up.
    pub up: Option<Vec<String>>,
    /// When it goes down.
    pub down: Option<Vec<String>>,
}

impl Notify {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.up.is_none() && self.down.is_none()
    }
}

impl CheckSpec {
    /// This check and its further ones, in order.
    pub fn all(&self) -> impl Iterator<Item = &CheckSpec> {
        std::iter::once(self).chain(&self.also)
    }
}

/// When a check runs and how many results change the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Between checks, ms.
    pub interval_ms: u64,
    /// The whole check's deadline, ms.
    pub timeout_ms: u64,
    /// Before a failed check of an up server is repeated, ms.
    pub retry_delay_ms: u64,
    /// Passes to come back.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// Starts down (keepalived's `alpha`).
    pub start_down: bool,
    /// The most the first check waits, ms (`None`: up to the interval, at most a second).
    pub warmup_ms: Option<u64>,
}

const DNS_TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
];

fn invalid(who: &str, msg: String) -> ConfigError {
    ConfigError::Invalid(format!("{who}: check: {msg}"))
}

fn conflict(who: &str, msg: String) -> ConfigError {
    ConfigError::Conflict(format!("{who}: check: {msg}"))
}

impl CheckDef {
    /// A check of type `kind` with every other key at its default.
    pub fn of(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            ..Self::default()
        }
    }

    /// Parse `wvs adm --check`'s value: `tcp`, `http:PATH`, `https:PATH`, `udp`,
    /// `dns:NAME`, `misc:PROGRAM` or `none`.
    pub(crate) fn from_arg(arg: &str) -> Result<Self, String> {
        let (kind, rest) = match arg.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (arg, None),
        };
        let mut d = Self::of(kind);
        match (kind, rest) {
            ("tcp" | "udp" | "smtp" | "ping" | "none", None) => {}
            ("smtp", Some(h)) if !h.is_empty() => d.host = Some(h.into()),
            ("http" | "https", r) => d.path = r.filter(|p| !p.is_empty()).map(Into::into),
            ("dns", r) => d.name = r.filter(|p| !p.is_empty()).map(Into::into),
            ("misc", Some(p)) if !p.trim().is_empty() => d.program = Some(p.into()),
            _ => {
                return Err(format!(
                    "--check {arg:?}: use tcp, http:PATH, https:PATH, udp, dns:NAME, smtp[:HELO], ping, misc:PROGRAM or none"
                ));
            }
        }
        Ok(d)
    }

    /// Validate the check of `who` (a real server or service, for messages): first every
    /// value on its own (malformed: [`ConfigError::Invalid`], what the OpenAPI schema
    /// says), then how they fit together ([`ConfigError::Conflict`]).
    pub fn validate(&self, who: &str) -> Result<CheckSpec, ConfigError> {
        self.check_values(who)?;
        self.check_fit(who)?;
        let probe = self.probe(who)?;
        let timing = self.timing(who)?;
        Ok(CheckSpec {
            def: self.clone(),
            probe,
            port: self.port.map(|p| p as u16),
            timing,
            inhibit: self.inhibit_on_failure,
            also: Vec::new(),
            listed: false,
            notify: Notify {
                up: self.notify_up.as_deref().map(argv),
                down: self.notify_down.as_deref().map(argv),
            },
        })
    }

    /// Each setting belongs to the check's kind.
    fn check_fit(&self, who: &str) -> Result<(), ConfigError> {
        let kind = self.kind.as_str();
        let http = matches!(kind, "http" | "https");
        let only = |set: bool, name: &str, ok: bool| -> Result<(), ConfigError> {
            if set && !ok {
                Err(conflict(
                    who,
                    format!("{name} does not apply to a {kind} check"),
                ))
            } else {
                Ok(())
            }
        };
        only(self.path.is_some(), "path", http)?;
        only(self.host.is_some(), "host", http || kind == "smtp")?;
        only(!self.status.is_empty(), "status", http)?;
        only(self.digest.is_some(), "digest", http)?;
        only(self.contains.is_some(), "contains", http)?;
        only(!self.urls.is_empty(), "urls", http)?;
        if !self.urls.is_empty()
            && (self.path.is_some()
                || !self.status.is_empty()
                || self.digest.is_some()
                || self.contains.is_some())
        {
            return Err(conflict(
                who,
                "urls describes every URL: give path, status, digest and contains in its \
                 entries, not beside it"
                    .into(),
            ));
        }
        only(self.payload.is_some(), "payload", kind == "udp")?;
        only(self.expect.is_some(), "expect", kind == "udp")?;
        for (set, name) in [
            (self.payload_hex.is_some(), "payload_hex"),
            (self.require_reply.is_some(), "require_reply"),
            (self.reply_hex.is_some(), "reply_hex"),
            (self.min_reply_length.is_some(), "min_reply_length"),
            (self.max_reply_length.is_some(), "max_reply_length"),
        ] {
            only(set, name, kind == "udp")?;
        }
        if self.payload.is_some() && self.payload_hex.is_some() {
            return Err(conflict(
                who,
                "give payload or payload_hex, not both".into(),
            ));
        }
        if self.require_reply == Some(false)
            && (self.expect.is_some()
                || self.reply_hex.is_some()
                || self.min_reply_length.is_some()
                || self.max_reply_length.is_some())
        {
            return Err(conflict(
                who,
                "require_reply = false: there is no reply to compare (expect, reply_hex, \
                 min_reply_length, max_reply_length)"
                    .into(),
            ));
        }
        if let (Some(lo), Some(hi)) = (self.min_reply_length, self.max_reply_length)
            && lo > hi
        {
            return Err(conflict(
                who,
                format!("min_reply_length {lo} is above max_reply_length {hi}"),
            ));
        }
        only(self.name.is_some(), "name", kind == "dns")?;
        only(self.qtype.is_some(), "qtype", kind == "dns")?;
        only(self.program.is_some(), "program", kind == "misc")?;
        // keepalived's PING_CHECK pings the server's address, FILE_CHECK reads a file: no
        // port.
        only(
            self.port.is_some(),
            "port",
            !matches!(kind, "ping" | "file"),
        )?;
        only(self.dynamic, "dynamic", kind == "misc")?;
        only(self.file_weight.is_some(), "file_weight", kind == "file")?;
        only(self.reverse, "reverse", kind == "file")?;
        match (kind, &self.file) {
            ("file", None) => return Err(conflict(who, "a file check needs its file".into())),
            ("file", Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(conflict(
                    who,
                    format!("file does not apply to a {kind} check"),
                ));
            }
        }
        Ok(())
    }

    /// What the check sends and expects.
    fn probe(&self, who: &str) -> Result<Option<Probe>, ConfigError> {
        let kind = self.kind.as_str();
        Ok(match kind {
            "none" => None,
            "tcp" => Some(Probe::Tcp),
            "ping" => Some(Probe::Ping),
            "file" => Some(Probe::File {
                path: self.file.clone().unwrap_or_default(),
                weight: self.file_weight.unwrap_or(0),
                reverse: self.reverse,
            }),
            "smtp" => Some(Probe::Smtp {
                helo: self
                    .host
                    .clone()
                    .unwrap_or_else(|| crate::consts::CHECK_SMTP_HELO.into()),
            }),
            "http" | "https" => Some(self.http(who, kind == "https")?),
            "udp" => Some(Probe::Udp {
                payload: match &self.payload_hex {
                    Some(h) => hex_pattern(h)
                        .map_or_else(Vec::new, |p| p.into_iter().map(|(v, _)| v).collect()),
                    None => self.payload.clone().unwrap_or_default().into_bytes(),
                },
                expect: self.expect.clone().map(String::into_bytes),
                reply: self
                    .reply_hex
                    .as_deref()
                    .and_then(hex_pattern)
                    .unwrap_or_default(),
                require: self.require_reply.unwrap_or(true),
                len: (
                    self.min_reply_length.unwrap_or(0),
                    self.max_reply_length.unwrap_or(u32::MAX),
                ),
            }),
            "dns" => Some(Probe::Dns {
                name: self.name.clone().unwrap_or_else(|| ".".into()),
                qtype: DNS_TYPES
                    .iter()
                    .find(|(n, _)| Some(*n) == self.qtype.as_deref().or(Some("SOA")))
                    .map_or(6, |(_, v)| *v),
            }),
            _ => {
                let argv = argv(self.program.as_deref().unwrap_or(""));
                if argv.is_empty() {
                    return Err(conflict(who, "a misc check needs program".into()));
                }
                Some(Probe::Misc {
                    argv,
                    dynamic: self.dynamic,
                })
            }
        })
    }

    /// When the check runs and how many results in a row change the server's state,
    /// with keepalived's defaults for its kind.
    fn timing(&self, who: &str) -> Result<Timing, ConfigError> {
        let kind = self.kind.as_str();
        let interval_ms = self.interval.map_or(CHECK_DEFAULT_INTERVAL_MS, |s| s.0);
        let timeout_ms = self.timeout.map_or(CHECK_DEFAULT_TIMEOUT_MS, |s| s.0);
        let retry_delay_ms = match (self.retry_delay, kind) {
            (Some(s), _) => s.0,
            (None, "http" | "https") => CHECK_HTTP_RETRY_DELAY_MS,
            (None, "dns") => interval_ms,
            (None, _) => CHECK_DEFAULT_RETRY_DELAY_MS,
        };
        let default_retry = match kind {
            "dns" => 3,
            "misc" => 0,
            _ => 1,
        };
        let fall = match (self.fall, self.retry) {
            (Some(f), Some(r)) if f != r + 1 => {
                return Err(conflict(
                    who,
                    format!("fall {f} contradicts retry {r} (fall is retry + 1; give one)"),
                ));
            }
            (Some(f), _) => f,
            (None, r) => r.unwrap_or(default_retry) + 1,
        };
        Ok(Timing {
            interval_ms,
            timeout_ms,
            retry_delay_ms,
            rise: self.rise.unwrap_or(1),
            fall,
            start_down: self.start_down,
            warmup_ms: self.warmup.map(|w| w.0),
        })
    }

    /// Each value on its own, as the OpenAPI document's schema describes it.
    fn check_values(&self, who: &str) -> Result<(), ConfigError> {
        const KINDS: [&str; 10] = [
            "tcp", "http", "https", "udp", "dns", "smtp", "ping", "file", "misc", "none",
        ];
        if !KINDS.contains(&self.kind.as_str()) {
            return Err(invalid(
                who,
                format!(
                    "unknown type {:?} (tcp, http, https, udp, dns, smtp, ping, file, misc or none)",
                    self.kind
                ),
            ));
        }
        if let Some(p) = self.port
            && !(1..=65535).contains(&p)
        {
            return Err(invalid(who, format!("port {p} is not in 1-65535")));
        }
        url_values(
            who,
            self.path.as_deref(),
            &self.status,
            self.digest.as_deref(),
        )?;
        for u in &self.urls {
            url_values(who, Some(&u.path), &u.status, u.digest.as_deref())?;
        }
        if let Some(h) = &self.host
            && !printable(h)
        {
            return Err(invalid(who, format!("host {h:?} is not a host name")));
        }
        if let Some(n) = &self.name
            && !dns_name_ok(n)
        {
            return Err(invalid(who, format!("dns name {n:?} is not a domain name")));
        }
        if let Some(t) = &self.qtype
            && !DNS_TYPES.iter().any(|(n, _)| n == t)
        {
            return Err(invalid(
                who,
                format!("dns qtype {t:?}: use A, NS, CNAME, SOA, MX, TXT or AAAA"),
            ));
        }
        if let Some(w) = self.file_weight
            && !(-65535..=65535).contains(&w)
        {
            return Err(invalid(who, format!("file_weight {w}: -65535 to 65535")));
        }
        if self.file.as_deref().is_some_and(|f| !f.starts_with('/')) {
            return Err(invalid(who, "file: an absolute path".into()));
        }
        for (name, h, wild) in [
            ("payload_hex", &self.payload_hex, false),
            ("reply_hex", &self.reply_hex, true),
        ] {
            if let Some(h) = h
                && (hex_pattern(h).is_none() || (!wild && h.contains(['x', 'X'])))
            {
                return Err(invalid(
                    who,
                    format!("{name} {h:?} is not pairs of hexadecimal digits"),
                ));
            }
        }
        for (name, v) in [
            ("min_reply_length", self.min_reply_length),
            ("max_reply_length", self.max_reply_length),
        ] {
            if let Some(v) = v
                && v > 65535
            {
                return Err(invalid(who, format!("{name} {v} is not in 0-65535")));
            }
        }
        for (name, p) in [
            ("program", &self.program),
            ("notify_up", &self.notify_up),
            ("notify_down", &self.notify_down),
        ] {
            if let Some(p) = p
                && p.trim().is_empty()
            {
                return Err(invalid(who, format!("{name} is empty")));
            }
        }
        if let Some(r) = self.retry
            && r > 99
        {
            return Err(invalid(who, format!("retry {r} is not in 0-99")));
        }
        for (name, v) in [("rise", self.rise), ("fall", self.fall)] {
            if let Some(v) = v
                && !(1..=100).contains(&v)
            {
                return Err(invalid(who, format!("{name} {v} is not in 1-100")));
            }
        }
        Ok(())
    }

    fn http(&self, who: &str, tls: bool) -> Result<Probe, ConfigError> {
        let urls = if self.urls.is_empty() {
            vec![http_url(
                who,
                self.path.as_deref().unwrap_or("/"),
                &self.status,
                self.digest.as_deref(),
                self.contains.as_deref(),
            )?]
        } else {
            (self.urls.iter())
                .map(|u| {
                    let (d, c) = (u.digest.as_deref(), u.contains.as_deref());
                    http_url(who, &u.path, &u.status, d, c)
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Probe::Http {
            tls,
            host: self.host.clone(),
            urls,
        })
    }
}

/// Hexadecimal in pairs, `x` (or `X`) a nibble that may be anything: each byte's value and
/// the bits of it that count. `None` unless it is pairs of such digits.
pub(crate) fn hex_pattern(h: &str) -> Option<Vec<(u8, u8)>> {
    if h.is_empty() || !h.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| -> Option<(u8, u8)> {
        match c {
            b'x' | b'X' => Some((0, 0)),
            _ => (c as char).to_digit(16).map(|d| (d as u8, 0xf)),
        }
    };
    h.as_bytes()
        .chunks(2)
        .map(|p| {
            let (hv, hm) = nibble(p[0])?;
            let (lv, lm) = nibble(p[1])?;
            Some((hv << 4 | lv, hm << 4 | lm))
        })
        .collect()
}

/// A program and its arguments, split at spaces (run without a shell).
fn argv(p: &str) -> Vec<String> {
    p.split_whitespace().map(Into::into).collect()
}

fn printable(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// An HTTP check's path, status codes and digest, each on its own.
fn url_values(
    who: &str,
    path: Option<&str>,
    status: &[String],
    digest: Option<&str>,
) -> Result<(), ConfigError> {
    if let Some(p) = path
        && !(p.starts_with('/') && (p.len() == 1 || printable(&p[1..])))
    {
        return Err(invalid(
            who,
            format!("path {p:?} must start with / and be printable ASCII without spaces"),
        ));
    }
    for st in status {
        if status_range(st).is_none() {
            return Err(invalid(
                who,
                format!("status {st:?}: use a code or a range of codes from 100 to 599"),
            ));
        }
    }
    if let Some(h) = digest
        && parse_md5(h).is_none()
    {
        return Err(invalid(
            who,
            format!("digest {h:?} is not 32 hexadecimal digits"),
        ));
    }
    Ok(())
}

/// One URL of an HTTP check, its values checked before.
fn http_url(
    who: &str,
    path: &str,
    status: &[String],
    digest: Option<&str>,
    contains: Option<&str>,
) -> Result<HttpUrl, ConfigError> {
    let mut ranges = Vec::new();
    for s in status {
        match status_range(s) {
            Some((lo, hi)) if lo <= hi => ranges.push((lo, hi)),
            _ => {
                return Err(conflict(
                    who,
                    format!("status range {s:?} runs from high to low"),
                ));
            }
        }
    }
    if ranges.is_empty() {
        ranges.push((200, 299));
    }
    Ok(HttpUrl {
        path: path.into(),
        status: ranges,
        digest: digest.and_then(parse_md5),
        contains: contains.map(Into::into),
    })
}

/// `NNN` or `NNN-NNN`, codes 100-599 (the bounds' order is checked apart).
fn status_range(s: &str) -> Option<(u16, u16)> {
    let code = |c: &str| {
        (c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
            .then(|| c.parse::<u16>().ok())
            .flatten()
            .filter(|c| (100..=599).contains(c))
    };
    match s.split_once('-') {
        Some((lo, hi)) => Some((code(lo)?, code(hi)?)),
        None => code(s).map(|c| (c, c)),
    }
}

/// `.`, or labels of 1-63 letters, digits, '-' and '_', at most 253 characters.
fn dns_name_ok(n: &str) -> bool {
    if n == "." {
        return true;
    }
    let body = n.strip_suffix('.').unwrap_or(n);
    n.len() <= 253
        && !body.is_empty()
        && body.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_md5(h: &str) -> Option<[u8; 16]> {
    if h.len() != 32 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(s: &str) -> CheckDef {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn keepalived_defaults() {
        let t = CheckDef::of("tcp").validate("x").unwrap();
        assert_eq!(t.probe, Some(Probe::Tcp));
        assert_eq!(
            (t.timing.rise, t.timing.fall, t.timing.retry_delay_ms),
            (1, 2, 1000)
        );
        let h = CheckDef::of("http").validate("x").unwrap();
        assert_eq!(h.timing.retry_delay_ms, 3000, "check_http's default");
        let Some(Probe::Http { urls, .. }) = h.probe else {
            panic!()
        };
        assert_eq!(
            (&urls[0].status, urls[0].path.as_str()),
            (&vec![(200, 299)], "/")
        );
        let d = CheckDef::of("dns").validate("x").unwrap();
        assert_eq!(d.timing.fall, 4, "DNS_CHECK retries 3 times");
        assert_eq!(d.timing.retry_delay_ms, d.timing.interval_ms);
        let m = toml("type = 'misc'\nprogram = '/bin/true'")
            .validate("x")
            .unwrap();
        assert_eq!(m.timing.fall, 1, "MISC_CHECK does not retry");
    }

    #[test]
    fn times_are_seconds_and_counts_are_checked() {
        let c = toml("type = 'tcp'\ninterval = 0.5\ntimeout = 2\nrise = 2\nfall = 3")
            .validate("x")
            .unwrap();
        assert_eq!(
            (
                c.timing.interval_ms,
                c.timing.timeout_ms,
                c.timing.rise,
                c.timing.fall
            ),
            (500, 2000, 2, 3)
        );
        assert_eq!(
            serde_json::to_string(&c.def).unwrap(),
            r#"{"type":"tcp","interval":0.5,"timeout":2,"rise":2,"fall":3}"#
        );
        assert!(
            toml("type = 'tcp'\nretry = 2")
                .validate("x")
                .unwrap()
                .timing
                .fall
                == 3
        );
        assert!(matches!(
            toml("type = 'tcp'\nretry = 2\nfall = 2").validate("x"),
            Err(ConfigError::Conflict(_))
        ));
        assert!(toml("type = 'tcp'\nrise = 0").validate("x").is_err());
        assert!(toml::from_str::<CheckDef>("type = 'tcp'\ninterval = 0.01").is_err());
        assert!(toml::from_str::<CheckDef>("type = 'tcp'\ninterval = -1").is_err());
        assert_eq!(
            toml("type = 'tcp'\nretry_delay = 0").retry_delay,
            Some(Secs(0))
        );
    }

    #[test]
    fn options_belong_to_their_types() {
        let e = toml("type = 'tcp'\npath = '/'").validate("rs").unwrap_err();
        assert!(
            e.to_string().contains("path does not apply to a tcp check"),
            "{e}"
        );
        assert!(
            matches!(e, ConfigError::Conflict(_)),
            "well-formed, but not for tcp"
        );
        assert!(matches!(
            toml("type = 'http'\nstatus = ['299-200']").validate("x"),
            Err(ConfigError::Conflict(_))
        ));
        assert!(matches!(
            toml("type = 'http'\npath = 'x'").validate("x"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(toml("type = 'dns'\nname = 'a..b'").validate("x").is_err());
        assert!(toml("type = 'dns'\nqtype = 'soa'").validate("x").is_err());
        assert!(
            toml("type = 'dns'\nname = 'example.org.'")
                .validate("x")
                .is_ok()
        );
        assert!(toml("type = 'ping'").validate("x").is_ok());
        assert!(toml("type = 'icmp'").validate("x").is_err());
        assert!(toml("type = 'ping'\nport = 80").validate("x").is_err());
        assert!(toml("type = 'misc'").validate("x").is_err());
        assert!(
            toml("type = 'http'\nstatus = ['200-2']")
                .validate("x")
                .is_err()
        );
        assert!(toml("type = 'http'\ndigest = 'abc'").validate("x").is_err());
        let h = toml("type = 'https'\npath = '/h'\nstatus = ['503', '200-204']\ndigest = '9e107d9d372bb6826bd81d3542a419d6'")
            .validate("x")
            .unwrap();
        let Some(Probe::Http { tls, urls, .. }) = h.probe else {
            panic!()
        };
        assert!(tls);
        assert_eq!(urls[0].status, vec![(503, 503), (200, 204)]);
        assert_eq!(urls[0].digest.unwrap()[0], 0x9e);
    }

    /// keepalived's several url blocks: `urls`, each its own path, codes and digest; beside
    /// the one-url keys a conflict; a bad value in an entry as bad as beside.
    #[test]
    fn several_urls() {
        let c = toml(
            "type = 'http'\nurls = [{ path = '/' }, { path = '/mrtg/', status = ['200-204'], \
             digest = 'eff5bc1ef8ec9d03e640fc4370f5eacd' }]",
        )
        .validate("rs")
        .unwrap();
        let Some(Probe::Http { urls, .. }) = c.probe else {
            panic!("{:?}", c.probe);
        };
        assert_eq!(
            urls.iter()
                .map(|u| (u.path.as_str(), u.status.clone(), u.digest.is_some()))
                .collect::<Vec<_>>(),
            [
                ("/", vec![(200, 299)], false),
                ("/mrtg/", vec![(200, 204)], true)
            ]
        );
        let e = toml("type = 'http'\npath = '/'\nurls = [{ path = '/a' }]")
            .validate("rs")
            .unwrap_err();
        assert!(matches!(e, ConfigError::Conflict(_)), "{e}");
        let e = toml("type = 'tcp'\nurls = [{ path = '/a' }]")
            .validate("rs")
            .unwrap_err();
        assert!(e.to_string().contains("urls does not apply"), "{e}");
        for bad in [
            "{ path = 'x' }",
            "{ path = '/', status = ['99'] }",
            "{ path = '/', digest = 'zz' }",
        ] {
            let e = toml(&format!("type = 'https'\nurls = [{bad}]"))
                .validate("rs")
                .unwrap_err();
            assert!(matches!(e, ConfigError::Invalid(_)), "{bad}: {e}");
        }
        let e = toml("type = 'http'\nurls = [{ path = '/', status = ['299-200'] }]")
            .validate("rs")
            .unwrap_err();
        assert!(matches!(e, ConfigError::Conflict(_)), "{e}");
    }

    /// UDP_CHECK's keys: hex payloads and reply patterns (x: any nibble), the reply's
    /// length bounds, and no reply needed; what does not go together refused.
    #[test]
    fn udp_reply_rules() {
        assert_eq!(hex_pattern("6869"), Some(vec![(0x68, 0xff), (0x69, 0xff)]));
        assert_eq!(hex_pattern("7x"), Some(vec![(0x70, 0xf0)]));
        assert_eq!(hex_pattern("xX"), Some(vec![(0, 0)]));
        for bad in ["", "6", "6g", "686"] {
            assert_eq!(hex_pattern(bad), None, "{bad}");
        }
        let c =
            toml("type = 'udp'\npayload_hex = '6869'\nreply_hex = '72x1'\nmax_reply_length = 8")
                .validate("rs")
                .unwrap();
        let Some(Probe::Udp {
            payload,
            reply,
            require,
            len,
            ..
        }) = c.probe
        else {
            panic!("{:?}", c.probe);
        };
        assert_eq!(
            (payload, reply, require, len),
            (
                b"hi".to_vec(),
                vec![(0x72, 0xff), (0x01, 0x0f)],
                true,
                (0, 8)
            )
        );
        for (bad, conflict) in [
            ("payload_hex = '7x'", false),
            ("reply_hex = 'zz'", false),
            ("max_reply_length = 70000", false),
            ("payload = 'a'\npayload_hex = '61'", true),
            ("require_reply = false\nexpect = 'ok'", true),
            ("min_reply_length = 9\nmax_reply_length = 8", true),
        ] {
            let e = toml(&format!("type = 'udp'\n{bad}"))
                .validate("rs")
                .unwrap_err();
            assert_eq!(
                matches!(e, ConfigError::Conflict(_)),
                conflict,
                "{bad}: {e}"
            );
        }
        let e = toml("type = 'tcp'\nrequire_reply = true")
            .validate("rs")
            .unwrap_err();
        assert!(
            e.to_string().contains("require_reply does not apply"),
            "{e}"
        );
    }

    #[test]
    fn adm_arguments() {
        assert_eq!(CheckDef::from_arg("tcp").unwrap(), CheckDef::of("tcp"));
        let h = CheckDef::from_arg("http:/health").unwrap();
        assert_eq!(h.path.as_deref(), Some("/health"));
        assert_eq!(
            CheckDef::from_arg("dns:example.org")
                .unwrap()
                .name
                .as_deref(),
            Some("example.org")
        );
        assert_eq!(
            CheckDef::from_arg("misc:/bin/check --quiet")
                .unwrap()
                .program
                .as_deref(),
            Some("/bin/check --quiet")
        );
        assert!(CheckDef::from_arg("misc:").is_err());
        assert!(CheckDef::from_arg("tcp:80").is_err());
        assert!(CheckDef::from_arg("icmp").is_err());
    }
}
