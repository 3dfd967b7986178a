//! Edits of the configuration, as the REST API, `wvs adm` and batches express them.
//!
//! An edit is a pure function of the running [`Config`]: [`apply_all`] applies a list of
//! changes to a copy and checks the result as a whole, so a batch either yields one valid
//! configuration or an error naming the change that failed, and the running one is never
//! touched on the way. The controller then swaps the result in with one store.

use serde::{Deserialize, Serialize};

use crate::config::{
    Config, ConfigError, RealDef, ServiceDef, ServiceSettings, parse_real_addr, parse_service_id,
};
use crate::model::ServiceKey;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Change {
    /// Add a virtual service (with its real servers, if any): `ipvsadm -A`.
    AddService {
        /// The service.
        service: ServiceDef,
    },
    /// Replace a service's scheduler, flags and persistence, keeping its real servers,
    /// counters and connections: `ipvsadm -E`.
    EditService {
        /// `tcp` or `udp`.
        #[schema(value_type = crate::schema::ProtocolName)]
        protocol: String,
        /// Virtual IP and port.
        #[schema(value_type = crate::schema::VipPort)]
        address: String,
        /// The service's new settings.
        settings: ServiceSettings,
    },
    /// Delete a virtual service: `ipvsadm -D`.
    DeleteService {
        /// `tcp` or `udp`.
        #[schema(value_type = crate::schema::ProtocolName)]
        protocol: String,
        /// Virtual IP and port.
        #[schema(value_type = crate::schema::VipPort)]
        address: String,
    },
    /// Delete every virtual service (and the mark rules, which serve fwmark services
    /// only): `ipvsadm -C`.
    Clear {},
    /// Add a real server to a service: `ipvsadm -a`.
    AddReal {
        /// `tcp` or `udp`.
        #[schema(value_type = crate::schema::ProtocolName)]
        protocol: String,
        /// The service's virtual IP and port.
        #[schema(value_type = crate::schema::VipPort)]
        address: String,
        /// The real server.
        real: RealDef,
    },
    /// Change a real server's weight, thresholds or hint: `ipvsadm -e`.
    EditReal {
        /// `tcp` or `udp`.
        #[schema(value_type = crate::schema::ProtocolName)]
        protocol: String,
        /// The service's virtual IP and port.
        #[schema(value_type = crate::schema::VipPort)]
        address: String,
        /// The real server's new settings.
        real: RealDef,
    },
    /// Remove a real server from a service: `ipvsadm -d`.
    DeleteReal {
        /// `tcp` or `udp`.
        #[schema(value_type = crate::schema::ProtocolName)]
        protocol: String,
        /// The service's virtual IP and port.
        #[schema(value_type = crate::schema::VipPort)]
        address: String,
        /// The real server's address.
        #[schema(value_type = crate::schema::RealAddr)]
        real: String,
        /// A grace period in seconds (`wvs adm -d --drain`): the server gets no new
        /// connections, and its connections go on until they end or the period is over.
        /// Absent or 0: at once (IPVS).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::config::whole::opt_u32"
        )]
        #[schema(minimum = 0, maximum = 86400)]
        drain_timeout: Option<u32>,
    },
    /// Add a full-NAT local address to a service: DPVS's `ipvsadm --add-laddr`.
    AddLaddr {
        /// `tcp` or `udp`.
        #[schema(value_type = crate::schema::ProtocolName)]
        protocol: String,
        /// The service's virtual IP and port.
        #[schema(value_type = crate::schema::VipPort)]
        address: String,
        /// The local address.
        #[schema(value_type = crate::schema::IpAddress)]
        laddr: String,
    },
    /// Remove a full-NAT local address from a service: DPVS's `ipvsadm --del-laddr`. Its
    /// connections keep their address and port until they end.
    DeleteLaddr {
        /// `tcp` or `udp`.
        #[schema(value_type = crate::schema::ProtocolName)]
        protocol: String,
        /// The service's virtual IP and port.
        #[schema(value_type = crate::schema::VipPort)]
        address: String,
        /// The local address.
        #[schema(value_type = crate::schema::IpAddress)]
        laddr: String,
    },
    /// Set the defense strategies against floods (IPVS's `drop_entry`, `drop_packet`,
    /// `secure_tcp`, their threshold; docs/defense.md).
    SetDefense {
        /// The settings.
        defense: crate::config::DefenseSettings,
    },
    /// Set IPVS's switches (`cache_bypass`, `nat_icmp_send`, `pmtu_disc`, `expire_nodest_conn`,
    /// `expire_quiescent_template`, `conn_reuse_mode`, `sloppy_tcp`, `backup_only`, the
    /// sync daemon's `sync_*`).
    SetSysctl {
        /// The switches.
        sysctl: crate::config::Sysctl,
    },
    /// Start a sync daemon: `ipvsadm --start-daemon` (docs/sync.md). One master and one
    /// backup may run at once; starting one that runs is a conflict.
    StartDaemon {
        /// The daemon.
        daemon: crate::config::daemon::SyncDaemon,
    },
    /// Add a mark rule at the end of the classifier's list (`wvs adm --add-mark-rule`).
    AddMarkRule {
        /// The rule.
        rule: crate::config::mark::MarkRuleDef,
    },
    /// Remove a mark rule, given as it was added (`wvs adm --delete-mark-rule`).
    DeleteMarkRule {
        /// The rule.
        rule: crate::config::mark::MarkRuleDef,
    },
    /// Replace every mark rule with these, in order (`PUT /api/v1/mark-rules`).
    SetMarkRules {
        /// The rules.
        rules: Vec<crate::config::mark::MarkRuleDef>,
    },
    /// Stop a sync daemon: `ipvsadm --stop-daemon`.
    StopDaemon {
        /// `master` or `backup`.
        state: crate::config::daemon::DaemonState,
    },
    /// Change the connection timeouts, in seconds; 0 keeps a value: `ipvsadm --set tcp
    /// tcpfin udp`. A connection takes the new value at its next packet.
    SetTimeouts {
        /// An established TCP connection.
        #[serde(deserialize_with = "crate::config::whole::u32")]
        #[schema(minimum = 0, maximum = 2678400)]
        tcp: u32,
        /// A TCP connection in FIN_WAIT.
        #[serde(deserialize_with = "crate::config::whole::u32")]
        #[schema(minimum = 0, maximum = 2678400)]
        tcpfin: u32,
        /// A UDP flow.
        #[serde(deserialize_with = "crate::config::whole::u32")]
        #[schema(minimum = 0, maximum = 2678400)]
        udp: u32,
    },
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EditError {
    /// The change is malformed or makes the configuration invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The service or real server does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The service or real server exists already.
    #[error("{0}")]
    Exists(String),
    /// A change of a batch failed; none of the batch was applied.
    #[error("change {index} ({op}): {source}")]
    InBatch {
        /// Position of the change in the batch, from 0.
        index: usize,
        /// Its operation.
        op: &'static str,
        /// Why it failed.
        source: Box<EditError>,
    },
}

impl Change {
    /// The operation's name, as in JSON.
    pub fn op(&self) -> &'static str {
        match self {
            Self::AddService { .. } => "add_service",
            Self::EditService { .. } => "edit_service",
            Self::DeleteService { .. } => "delete_service",
            Self::Clear {} => "clear",
            Self::AddReal { .. } => "add_real",
            Self::EditReal { .. } => "edit_real",
            Self::DeleteReal { .. } => "delete_real",
            Self::SetTimeouts { .. } => "set_timeouts",
            Self::AddLaddr { .. } => "add_laddr",
            Self::DeleteLaddr { .. } => "delete_laddr",
            Self::SetSysctl { .. } => "set_sysctl",
            Self::SetDefense { .. } => "set_defense",
            Self::StartDaemon { .. } => "start_daemon",
            Self::StopDaemon { .. } => "stop_daemon",
            Self::AddMarkRule { .. } => "add_mark_rule",
            Self::DeleteMarkRule { .. } => "delete_mark_rule",
            Self::SetMarkRules { .. } => "set_mark_rules",
        }
    }

    /// Apply the change to `cfg` (not checked as a whole: see [`apply_all`]).
    pub(crate) fn apply(&self, cfg: &mut Config) -> Result<(), EditError> {
        match self {
            Self::AddService { service } => add_service(cfg, service),
            Self::EditService {
                protocol,
                address,
                settings,
            } => edit_service(cfg, &settings.to_def(protocol, address)),
            Self::DeleteService { protocol, address } => {
                let id = parse_service_id(protocol, address)?;
                find(cfg, id)?;
                cfg.services.retain(|s| s.key() != id);
                Ok(())
            }
            Self::Clear {} => {
                // The mark rules serve the fwmark services only: they go with them.
                cfg.services.clear();
                cfg.marks.clear();
                Ok(())
            }
            Self::AddReal {
                protocol,
                address,
                real,
            } => add_real(cfg, parse_service_id(protocol, address)?, real),
            Self::EditReal {
                protocol,
                address,
                real,
            } => edit_real(cfg, parse_service_id(protocol, address)?, real),
            Self::DeleteReal {
                protocol,
                address,
                real,
                drain_timeout,
            } => delete_real(
                cfg,
                parse_service_id(protocol, address)?,
                real,
                *drain_timeout,
            ),
            Self::AddLaddr {
                protocol,
                address,
                laddr,
            } => add_laddr(cfg, parse_service_id(protocol, address)?, laddr),
            Self::DeleteLaddr {
                protocol,
                address,
                laddr,
            } => delete_laddr(cfg, parse_service_id(protocol, address)?, laddr),
            Self::SetSysctl { sysctl } => {
                cfg.sysctl = (*sysctl).into();
                Ok(())
            }
            Self::SetDefense { defense } => {
                cfg.defense = (*defense)
                    .try_into()
                    .map_err(|m| EditError::Invalid(ConfigError::Invalid(m)))?;
                Ok(())
            }
            Self::SetTimeouts { tcp, tcpfin, udp } => set_timeouts(cfg, [*tcp, *tcpfin, *udp]),
            Self::StartDaemon { daemon } => {
                daemon.validate()?;
                if cfg.daemons.iter().any(|d| d.state == daemon.state) {
                    return Err(EditError::Exists(format!(
                        "a {} sync daemon runs already; stop it first",
                        daemon.state.name()
                    )));
                }
                cfg.daemons.push(daemon.clone());
                cfg.daemons.sort_by_key(|d| d.state);
                Ok(())
            }
            Self::AddMarkRule { rule } => {
                let r = rule.validate()?;
                if cfg.marks.contains(&r) {
                    return Err(EditError::Exists(format!(
                        "mark rule {} exists already",
                        crate::config::mark::words(&r)
                    )));
                }
                cfg.marks.push(r);
                Ok(())
            }
            Self::SetMarkRules { rules } => {
                cfg.marks.clear();
                rules
                    .iter()
                    .try_for_each(|rule| Self::AddMarkRule { rule: rule.clone() }.apply(cfg))
            }
            Self::DeleteMarkRule { rule } => {
                let r = rule.validate()?;
                let n = cfg.marks.len();
                cfg.marks.retain(|m| *m != r);
                if cfg.marks.len() == n {
                    return Err(EditError::NotFound(format!(
                        "no mark rule {}",
                        crate::config::mark::words(&r)
                    )));
                }
                Ok(())
            }
            Self::StopDaemon { state } => {
                if !cfg.daemons.iter().any(|d| d.state == *state) {
                    return Err(EditError::NotFound(format!(
                        "no {} sync daemon runs",
                        state.name()
                    )));
                }
                cfg.daemons.retain(|d| d.state != *state);
                Ok(())
            }
        }
    }
}

fn add_service(cfg: &mut Config, service: &ServiceDef) -> Result<(), EditError> {
    let spec = service.validate()?;
    if cfg.service(spec.key()).is_some() {
        return Err(EditError::Exists(format!(
            "service {} exists already",
            spec.key()
        )));
    }
    cfg.services.push(spec);
    Ok(())
}

/// `-E`: what ipvsadm's -E sets; wvs's own settings are left as they were unless given.
fn edit_service(cfg: &mut Config, def: &ServiceDef) -> Result<(), EditError> {
    let spec = def.validate()?;
    let cur = find(cfg, spec.key())?;
    cur.scheduler = spec.scheduler;
    cur.flags = spec.flags;
    cur.persistent = spec.persistent;
    cur.netmask = spec.netmask;
    cur.ops = spec.ops;
    cur.pe = spec.pe;
    // wvs's own (keepalived's quorum): unchanged unless given.
    let q = spec.quorum;
    if q.quorum.is_some() {
        cur.quorum.quorum = q.quorum;
    }
    if q.hysteresis.is_some() {
        cur.quorum.hysteresis = q.hysteresis;
    }
    if q.up.is_some() {
        cur.quorum.up = q.up;
    }
    if q.down.is_some() {
        cur.quorum.down = q.down;
    }
    if def.omega.is_some() {
        cur.quorum.omega = q.omega;
    }
    if spec.helpers.is_some() {
        cur.helpers = spec.helpers;
    }
    if spec.check.is_some() {
        cur.check = spec.check;
    }
    if spec.udp_on_failure.is_some() {
        cur.udp_on_failure = spec.udp_on_failure;
        cur.udp_move = spec.udp_move;
    }
    if spec.synproxy.is_some() {
        cur.synproxy = spec.synproxy;
    }
    Ok(())
}

fn add_real(cfg: &mut Config, id: ServiceKey, real: &RealDef) -> Result<(), EditError> {
    let spec = real.validate(id)?;
    let svc = find(cfg, id)?;
    if svc
        .reals
        .iter()
        .any(|r| r.addr == spec.addr && r.port == spec.port)
    {
        return Err(EditError::Exists(format!(
            "real server {} of service {id} exists already",
            real.address
        )));
    }
    svc.reals.push(spec);
    Ok(())
}

/// `-e`: the server as given; its check and sorry flag (wvs's own) stay unless given.
fn edit_real(cfg: &mut Config, id: ServiceKey, real: &RealDef) -> Result<(), EditError> {
    let spec = real.validate(id)?;
    let svc = find(cfg, id)?;
    let cur = svc
        .reals
        .iter_mut()
        .find(|r| r.addr == spec.addr && r.port == spec.port)
        .ok_or_else(|| {
            EditError::NotFound(format!("service {id} has no real server {}", real.address))
        })?;
    let check = spec.check.clone().or_else(|| cur.check.take());
    let sorry = cur.sorry;
    *cur = crate::config::RealSpec {
        check,
        sorry,
        ..spec
    };
    Ok(())
}

fn delete_real(
    cfg: &mut Config,
    id: ServiceKey,
    real: &str,
    drain_timeout: Option<u32>,
) -> Result<(), EditError> {
    let ra = parse_real_addr(real)?;
    if let Some(t) = drain_timeout
        && t > crate::consts::MAX_DRAIN_SECS
    {
        return Err(crate::config::ConfigError::Invalid(format!(
            "drain timeout {t} is above {} seconds",
            crate::consts::MAX_DRAIN_SECS
        ))
        .into());
    }
    // Without a port: the service's, as the server was added.
    let port = if ra.port() == 0 { id.port } else { ra.port() };
    let svc = find(cfg, id)?;
    let before = svc.reals.len();
    svc.reals.retain(|r| !(r.addr == ra.ip() && r.port == port));
    if svc.reals.len() == before {
        return Err(EditError::NotFound(format!(
            "service {id} has no real server {real}"
        )));
    }
    Ok(())
}

fn add_laddr(cfg: &mut Config, id: ServiceKey, laddr: &str) -> Result<(), EditError> {
    let a = crate::config::parse_laddr(laddr)?;
    let svc = find(cfg, id)?;
    if svc.laddrs.contains(&a) {
        return Err(EditError::Exists(format!(
            "service {id} has local address {a} already"
        )));
    }
    svc.laddrs.push(a);
    Ok(())
}

fn delete_laddr(cfg: &mut Config, id: ServiceKey, laddr: &str) -> Result<(), EditError> {
    let a = crate::config::parse_laddr(laddr)?;
    let svc = find(cfg, id)?;
    let before = svc.laddrs.len();
    svc.laddrs.retain(|l| *l != a);
    if svc.laddrs.len() == before {
        return Err(EditError::NotFound(format!(
            "service {id} has no local address {a}"
        )));
    }
    Ok(())
}

/// `--set tcp tcpfin udp`: 0 keeps a value.
fn set_timeouts(cfg: &mut Config, [tcp, tcpfin, udp]: [u32; 3]) -> Result<(), EditError> {
    let keep = |new: u32, old: u32| if new == 0 { old } else { new };
    let t = crate::config::Timeouts {
        tcp: keep(tcp, cfg.timeouts.tcp),
        tcpfin: keep(tcpfin, cfg.timeouts.tcpfin),
        udp: keep(udp, cfg.timeouts.udp),
    };
    cfg.timeouts = t.try_into()?;
    Ok(())
}

fn find(cfg: &mut Config, id: ServiceKey) -> Result<&mut crate::config::ServiceSpec, EditError> {
    cfg.service_mut(id)
        .ok_or_else(|| EditError::NotFound(format!("no service {id}")))
}

/// Apply `changes` in order to a copy of `cfg` and check the result: all or nothing.
pub(crate) fn apply_all(cfg: &Config, changes: &[Change]) -> Result<Config, EditError> {
    let mut next = cfg.clone();
    for (index, c) in changes.iter().enumerate() {
        c.apply(&mut next).map_err(|e| {
            if changes.len() == 1 {
                e
            } else {
                EditError::InBatch {
                    index,
                    op: c.op(),
                    source: Box::new(e),
                }
            }
        })?;
    }
    next.check()?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(addr: &str, sched: &str, reals: &[&str]) -> ServiceDef {
        ServiceDef {
            protocol: "tcp".into(),
            address: addr.into(),
            scheduler: sched.into(),
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
            laddrs: Vec::new(),
            reals: reals
                .iter()
                .map(|r| RealDef {
                    address: (*r).into(),
                    weight: 1,
                    forward: "nat".into(),
                    tun_type: None,
                    tun_port: None,
                    tun_csum: None,
                    upper_threshold: 0,
                    lower_threshold: 0,
                    hint: 0,
                    check: None,
                    checks: Vec::new(),
                    sorry: false,
                })
                .collect(),
        }
    }

    #[test]
    fn set_timeouts_keeps_what_is_zero_and_checks_the_rest() {
        let cfg = Config::default();
        let set = |tcp, tcpfin, udp| Change::SetTimeouts { tcp, tcpfin, udp };
        let next = apply_all(&cfg, &[set(60, 0, 10)]).unwrap();
        assert_eq!(
            (next.timeouts.tcp, next.timeouts.tcpfin, next.timeouts.udp),
            (60, 120, 10)
        );
        let again = apply_all(&next, &[set(0, 5, 0)]).unwrap();
        assert_eq!(
            (
                again.timeouts.tcp,
                again.timeouts.tcpfin,
                again.timeouts.udp
            ),
            (60, 5, 10)
        );
        assert!(apply_all(&cfg, &[set(2_678_401, 0, 0)]).is_err());
        let cleared = apply_all(&again, &[Change::Clear {}]).unwrap();
        assert_eq!(cleared.timeouts, again.timeouts, "-C keeps the timeouts");
    }

    #[test]
    fn add_edit_delete() {
        let cfg = Config::default();
        let cfg = apply_all(
            &cfg,
            &[Change::AddService {
                service: svc("198.18.100.1:80", "rr", &["198.19.0.11:80"]),
            }],
        )
        .unwrap();
        let settings = ServiceSettings {
            scheduler: "wrr".into(),
            flags: vec![],
            persistent: Some(60),
            netmask: Some("255.255.255.0".into()),
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
        };
        let cfg = apply_all(
            &cfg,
            &[Change::EditService {
                protocol: "tcp".into(),
                address: "198.18.100.1:80".into(),
                settings,
            }],
        )
        .unwrap();
        let s = &cfg.services[0];
        assert_eq!(
            (s.scheduler.as_str(), s.persistent, s.netmask, s.reals.len()),
            ("wrr", Some(60), 0xffff_ff00, 1)
        );
        let cfg = apply_all(
            &cfg,
            &[Change::DeleteReal {
                drain_timeout: None,
                protocol: "tcp".into(),
                address: "198.18.100.1:80".into(),
                // Without a port: the service's, as ipvsadm -d -r IP means.
                real: "198.19.0.11".into(),
            }],
        )
        .unwrap();
        assert!(cfg.services[0].reals.is_empty());
    }

    #[test]
    fn a_batch_is_all_or_nothing() {
        let cfg = Config::default();
        let err = apply_all(
            &cfg,
            &[
                Change::AddService {
                    service: svc("198.18.100.1:80", "rr", &[]),
                },
                Change::AddReal {
                    protocol: "tcp".into(),
                    address: "198.18.100.1:80".into(),
                    real: svc("x:1", "rr", &["198.19.0.11:80"]).reals[0].clone(),
                },
                Change::AddService {
                    service: svc("198.18.100.1:80", "nope", &[]),
                },
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("change 2 (add_service)"), "{err}");
        assert!(err.contains("exists already"), "{err}");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn refuses_with_reasons() {
        let base = apply_all(
            &Config::default(),
            &[Change::AddService {
                service: svc("198.18.100.1:80", "rr", &["198.19.0.11:80"]),
            }],
        )
        .unwrap();
        let cases: Vec<(Change, &str)> = vec![
            (
                Change::AddService {
                    service: svc("198.18.100.1:80", "rr", &[]),
                },
                "exists already",
            ),
            (
                Change::AddService {
                    service: svc("198.18.100.2:80", "nope", &[]),
                },
                "unknown scheduler",
            ),
            (
                Change::AddService {
                    service: svc("198.18.100.2:99999", "rr", &[]),
                },
                "not an IP:port",
            ),
            (
                Change::DeleteService {
                    protocol: "tcp".into(),
                    address: "198.18.100.9:80".into(),
                },
                "no service",
            ),
            (
                Change::DeleteService {
                    protocol: "icmp".into(),
                    address: "198.18.100.1:80".into(),
                },
                "protocol",
            ),
            (
                Change::EditReal {
                    protocol: "tcp".into(),
                    address: "198.18.100.1:80".into(),
                    real: svc("x", "rr", &["198.19.0.99:80"]).reals[0].clone(),
                },
                "no real server",
            ),
        ];
        for (c, want) in cases {
            let err = apply_all(&base, std::slice::from_ref(&c))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{c:?}: {err}");
        }
    }

    #[test]
    fn json_shape() {
        let c: Change = serde_json::from_str(
            r#"{"op":"add_real","protocol":"tcp","address":"198.18.100.1:80","real":{"address":"198.19.0.11:80","weight":3}}"#,
        )
        .unwrap();
        assert_eq!(c.op(), "add_real");
        assert!(serde_json::from_str::<Change>(r#"{"op":"clear","x":1}"#).is_err());
        assert!(serde_json::from_str::<Change>(r#"{"op":"explode"}"#).is_err());
    }
}
