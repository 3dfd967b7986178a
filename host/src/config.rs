//! The TOML configuration file: virtual services and their real servers.
//!
//! ```toml
//! [[plugin]]                    # a scheduler plugin from a file (sdk/ABI.md)
//! name = "lat2"                 # services use it as scheduler = "lat2"
//! path = "lat2.wasm"            # relative to this file
//!
//! [[service]]
//! protocol = "tcp"              # tcp | udp
//! address = "198.18.100.1:80"   # virtual IP and port
//! scheduler = "wlc"            # rr wrr lc wlc sed nq fo ovf twos sh dh; default wlc
//! flags = ["sh-port"]           # scheduler flags, as ipvsadm -b: sh-fallback sh-port
//!                               # mh-fallback mh-port flag-1 flag-2 flag-3
//!
//! [[service.real]]
//! address = "198.19.0.11:80"    # real server; port 0 keeps the virtual port
//! weight = 1                    # 0 quiesces; default 1
//! hint = 0                      # a number for custom schedulers (e.g. latency in µs)
//! forward = "nat"               # forwarding method; NAT (masquerading) is the one built so far
//! ```
//!
//! Parsing is strict (unknown keys are errors) and a file either loads whole or not at all:
//! a bad reload leaves the running configuration untouched.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::service::{Protocol, Scheduler, ServiceKey};

/// The configuration shipped in the binary, used when no `--config` is given: the services
/// of the demo topology (`examples/demo.sh`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/wvs.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path of the file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys. (Not a `#[source]`: the
    /// message already says all of it, and a cause chain would say it twice.)
    #[error("invalid configuration: {0}")]
    Parse(toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    plugin: Vec<PluginToml>,
    #[serde(default)]
    service: Vec<ServiceToml>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PluginToml {
    name: String,
    path: String,
}

/// A scheduler plugin loaded from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Name services use in `scheduler = "…"`; may replace a built-in one.
    pub name: String,
    /// Path of the `.wasm` module (relative paths are relative to the configuration file).
    pub path: std::path::PathBuf,
}

/// A validated configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Scheduler plugins from files.
    pub plugins: Vec<PluginSpec>,
    /// Virtual services.
    pub services: Vec<ServiceSpec>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ServiceToml {
    protocol: String,
    address: String,
    #[serde(default = "default_scheduler")]
    scheduler: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    real: Vec<RealToml>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RealToml {
    address: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default = "default_forward")]
    forward: String,
    #[serde(default)]
    upper_threshold: u32,
    #[serde(default)]
    lower_threshold: u32,
    #[serde(default)]
    hint: u32,
}

fn default_scheduler() -> String {
    // IPVS's (and ipvsadm's) default.
    "wlc".into()
}
fn default_weight() -> u32 {
    1
}
fn default_forward() -> String {
    "nat".into()
}

/// A validated virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Protocol.
    pub proto: Protocol,
    /// Virtual IP.
    pub addr: IpAddr,
    /// Virtual port.
    pub port: u16,
    /// Scheduler name: a built-in IPVS scheduler or a `[[plugin]]`.
    pub scheduler: String,
    /// Service flags (`IP_VS_SVC_F_*`).
    pub flags: u32,
    /// Real servers, in order.
    pub reals: Vec<RealSpec>,
}

impl ServiceSpec {
    /// The service's key.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            proto: self.proto,
            addr: self.addr,
            port: self.port,
        }
    }
}

/// A validated real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealSpec {
    /// Address.
    pub addr: IpAddr,
    /// Port (0 = the virtual port).
    pub port: u16,
    /// Weight, 0..=65535 as in IPVS.
    pub weight: u32,
    /// Upper connection threshold (0 = none).
    pub upper_threshold: u32,
    /// Lower connection threshold (0 = none).
    pub lower_threshold: u32,
    /// Hint for custom schedulers.
    pub hint: u32,
}

/// Read and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut cfg = parse(&text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in &mut cfg.plugins {
        if p.path.is_relative() {
            p.path = base.join(&p.path);
        }
    }
    Ok(cfg)
}

/// Parse and validate configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let file: File = toml::from_str(text)?;
    let mut plugins = Vec::with_capacity(file.plugin.len());
    for p in file.plugin {
        let valid = !p.name.is_empty()
            && p.name.len() <= 32
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(ConfigError::Invalid(format!(
                "plugin name {:?}: use 1 to 32 letters, digits, '-' or '_'",
                p.name
            )));
        }
        if plugins.iter().any(|q: &PluginSpec| q.name == p.name) {
            return Err(ConfigError::Invalid(format!(
                "plugin {:?} is defined twice",
                p.name
            )));
        }
        plugins.push(PluginSpec {
            name: p.name,
            path: p.path.into(),
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(file.service.len());
    for s in file.service {
        let proto = match s.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "protocol {other:?}: expected \"tcp\" or \"udp\""
                )));
            }
        };
        let vip = parse_sockaddr(&s.address, "service address")?;
        if vip.port() == 0 {
            return Err(ConfigError::Invalid(format!(
                "service {}: port 0 services need persistence, which is not built yet",
                s.address
            )));
        }
        if Scheduler::from_name(&s.scheduler).is_none()
            && !plugins.iter().any(|p| p.name == s.scheduler)
        {
            let known: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
            return Err(ConfigError::Invalid(format!(
                "service {}: unknown scheduler {:?} (built in: {}; or a [[plugin]] name)",
                s.address,
                s.scheduler,
                known.join(" ")
            )));
        }
        let scheduler = s.scheduler.clone();
        let mut flags = 0;
        for f in &s.flags {
            flags |= svc_flag(f).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "service {}: unknown flag {f:?} (known: sh-fallback sh-port mh-fallback mh-port flag-1 flag-2 flag-3)",
                    s.address
                ))
            })?;
        }
        if !seen.insert((proto, vip)) {
            return Err(ConfigError::Invalid(format!(
                "service {} {} is defined twice",
                s.protocol, s.address
            )));
        }
        let mut reals = Vec::with_capacity(s.real.len());
        let mut seen_real = HashSet::new();
        for r in s.real {
            let ra = parse_sockaddr(&r.address, "real server address")?;
            if r.forward != "nat" {
                return Err(ConfigError::Invalid(format!(
                    "real server {}: forwarding method {:?} is not supported yet (use \"nat\")",
                    r.address, r.forward
                )));
            }
            if r.weight > 65535 {
                return Err(ConfigError::Invalid(format!(
                    "real server {}: weight {} is above 65535",
                    r.address, r.weight
                )));
            }
            if ra.is_ipv4() != vip.is_ipv4() {
                return Err(ConfigError::Invalid(format!(
                    "real server {} and service {} are of different address families",
                    r.address, s.address
                )));
            }
            if !seen_real.insert(ra) {
                return Err(ConfigError::Invalid(format!(
                    "real server {} is listed twice in service {}",
                    r.address, s.address
                )));
            }
            reals.push(RealSpec {
                addr: ra.ip(),
                port: ra.port(),
                weight: r.weight,
                upper_threshold: r.upper_threshold,
                lower_threshold: r.lower_threshold,
                hint: r.hint,
            });
        }
        out.push(ServiceSpec {
            proto,
            addr: vip.ip(),
            port: vip.port(),
            scheduler,
            flags,
            reals,
        });
    }
    if out.iter().any(|s| s.addr.is_ipv6()) {
        return Err(ConfigError::Invalid(
            "IPv6 services are not supported by the datapath yet".into(),
        ));
    }
    Ok(Config {
        plugins,
        services: out,
    })
}

impl From<toml::de::Error> for ConfigError {
    fn from(e: toml::de::Error) -> Self {
        Self::Parse(e)
    }
}

/// Write a configuration as TOML that [`parse`] reads back to the same configuration.
pub fn to_toml(cfg: &Config) -> String {
    let file = File {
        plugin: cfg
            .plugins
            .iter()
            .map(|p| PluginToml {
                name: p.name.clone(),
                path: p.path.display().to_string(),
            })
            .collect(),
        service: cfg
            .services
            .iter()
            .map(|s| ServiceToml {
                protocol: s.proto.name().into(),
                address: std::net::SocketAddr::new(s.addr, s.port).to_string(),
                scheduler: s.scheduler.clone(),
                flags: flag_names(s.flags),
                real: s
                    .reals
                    .iter()
                    .map(|r| RealToml {
                        address: std::net::SocketAddr::new(r.addr, r.port).to_string(),
                        weight: r.weight,
                        forward: "nat".into(),
                        upper_threshold: r.upper_threshold,
                        lower_threshold: r.lower_threshold,
                        hint: r.hint,
                    })
                    .collect(),
            })
            .collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    toml::to_string(&file).unwrap_or_default()
}

fn flag_names(flags: u32) -> Vec<String> {
    use wvs_sdk::svc_flags::{SCHED1, SCHED2, SCHED3};
    [(SCHED1, "flag-1"), (SCHED2, "flag-2"), (SCHED3, "flag-3")]
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// A scheduler flag as ipvsadm's `-b` spells it.
fn svc_flag(name: &str) -> Option<u32> {
    use wvs_sdk::svc_flags::{SCHED1, SCHED2, SCHED3};
    Some(match name {
        "sh-fallback" | "mh-fallback" | "flag-1" => SCHED1,
        "sh-port" | "mh-port" | "flag-2" => SCHED2,
        "flag-3" => SCHED3,
        _ => return None,
    })
}

fn parse_sockaddr(s: &str, what: &str) -> Result<SocketAddr, ConfigError> {
    s.parse::<SocketAddr>().map_err(|_| {
        ConfigError::Invalid(format!(
            "{what} {s:?} is not an IP:port (IPv6 as [addr]:port)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let specs = parse(EMBEDDED_DEFAULT).unwrap().services;
        assert!(
            specs
                .iter()
                .any(|s| s.proto == Protocol::Tcp && s.reals.len() == 3)
        );
        assert!(specs.iter().any(|s| s.proto == Protocol::Udp));
    }

    #[test]
    fn writes_what_it_reads() {
        let text = "[[plugin]]\nname = 'lat2'\npath = '/x/lat2.wasm'\n\
            [[service]]\nprotocol = 'udp'\naddress = '198.18.100.1:9000'\nscheduler = 'sh'\nflags = ['sh-port', 'sh-fallback']\n\
            [[service.real]]\naddress = '198.19.0.11:9000'\nweight = 3\nhint = 7\nupper_threshold = 10\n\
            [[service]]\nprotocol = 'tcp'\naddress = '198.18.100.1:80'\nscheduler = 'lat2'\n";
        let cfg = parse(text).unwrap();
        assert_eq!(parse(&to_toml(&cfg)).unwrap(), cfg);
        assert_eq!(
            parse(&to_toml(&Config::default())).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let cases = [
            (
                "[[service]]\nprotocol='sctp'\naddress='198.18.100.1:80'",
                "protocol",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1'",
                "IP:port",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nscheduler='nope'",
                "unknown scheduler",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\nflags=['sh-nope']",
                "unknown flag",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\ncolour=1",
                "unknown field",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\n[[service.real]]\naddress='198.19.0.1:80'\nweight=70000",
                "above 65535",
            ),
            (
                "[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'\n[[service]]\nprotocol='tcp'\naddress='198.18.100.1:80'",
                "twice",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
