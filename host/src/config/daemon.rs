//! The sync daemons' settings: ipvsadm's `--start-daemon` and its options, in the file, the
//! state and the API alike.
//!
//! ```toml
//! [[daemon]]
//! state = "master"             # or "backup"; one of each may run
//! mcast_interface = "eth1"     # where the messages go (and come from)
//! syncid = 1                   # 0-255; a backup with 0 takes every master's
//! # sync_maxlen = 1472         # bytes of UDP payload per message
//! # mcast_group = "224.0.0.81" # or an IPv6 group
//! # mcast_port = 8848
//! # mcast_ttl = 1
//! ```

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::wire::sync::{DEFAULT_GROUP, DEFAULT_PORT};

/// Which daemon.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    /// Sends this director's connections.
    Master,
    /// Receives another director's.
    Backup,
}

impl DaemonState {
    /// ipvsadm's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Backup => "backup",
        }
    }
}

/// One sync daemon, as `ipvsadm --start-daemon` starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncDaemon {
    /// `master` or `backup`.
    pub state: DaemonState,
    /// The interface the messages are sent on or received from (`--mcast-interface`): a
    /// Linux interface name, 1 to 15 printable ASCII characters but `/` and `:`.
    #[schema(pattern = "^[!-.0-9;-~]{1,15}$")]
    pub mcast_interface: String,
    /// `--syncid`, 0-255: a master puts it in its messages; a backup takes only its own
    /// master's, or every master's with 0. Default 0.
    #[serde(default, deserialize_with = "crate::config::whole::u8")]
    #[schema(minimum = 0, maximum = 255)]
    pub syncid: u8,
    /// `--sync-maxlen`: the most UDP payload bytes per message. Default: 1472 over IPv4,
    /// 1452 over IPv6 (a 1500-byte MTU, as IPVS's master). Taken within what the kernel
    /// takes: at least 1024 for a backup and one record for a master, at most what an IP
    /// packet holds (listed as used).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u16"
    )]
    #[schema(minimum = 1, maximum = 65507)]
    pub sync_maxlen: Option<u16>,
    /// `--mcast-group`: the multicast group, IPv4 or IPv6. Default 224.0.0.81.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::MulticastAddress>)]
    pub mcast_group: Option<IpAddr>,
    /// `--mcast-port`: the UDP port (sync thread `n` uses the port plus `n`). Default 8848.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u16"
    )]
    #[schema(minimum = 1, maximum = 65535)]
    pub mcast_port: Option<u16>,
    /// `--mcast-ttl`, 1-255: the multicast TTL (hop limit) of a master's messages.
    /// Default 1: the messages stay on the link.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::whole::opt_u8"
    )]
    #[schema(minimum = 1, maximum = 255)]
    pub mcast_ttl: Option<u8>,
}

impl SyncDaemon {
    /// The group, its default filled in.
    pub fn group(&self) -> IpAddr {
        self.mcast_group.unwrap_or(IpAddr::V4(DEFAULT_GROUP))
    }

    /// The port, its default filled in.
    pub fn port(&self) -> u16 {
        self.mcast_port.unwrap_or(DEFAULT_PORT)
    }

    /// The TTL, its default filled in.
    pub fn ttl(&self) -> u8 {
        self.mcast_ttl.unwrap_or(1)
    }

    /// The message size, its default filled in and clamped as the kernel clamps it.
    pub fn maxlen(&self) -> u16 {
        let v6 = self.group().is_ipv6();
        let Some(m) = self.sync_maxlen else {
            return if v6 {
                crate::consts::SYNC_MAXLEN_V6
            } else {
                crate::consts::SYNC_MAXLEN_V4
            };
        };
        let top = if v6 { 65535 - 48 } else { 65535 - 28 };
        let bottom = match self.state {
            DaemonState::Master => 8 + crate::wire::sync::conn::LEN_V6 as u16,
            DaemonState::Backup => 1024,
        };
        m.clamp(bottom, top)
    }

    /// Check the values on their own (ipvsadm's and the kernel's ranges).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.mcast_interface;
        let char_ok = |b: u8| (0x21..=0x7e).contains(&b) && b != b'/' && b != b':';
        if n.is_empty() || n.len() > 15 || !n.bytes().all(char_ok) {
            return Err(invalid(format!(
                "sync daemon: interface name {n:?}: 1 to 15 printable ASCII characters, \
                 no '/' or ':'"
            )));
        }
        if !self.group().is_multicast() {
            return Err(invalid(format!(
                "sync daemon: mcast_group {} is not a multicast address",
                self.group()
            )));
        }
        if self.mcast_ttl == Some(0) {
            return Err(invalid("sync daemon: mcast_ttl is 1 to 255".into()));
        }
        if self.mcast_port == Some(0) {
            return Err(invalid("sync daemon: mcast_port is 1 to 65535".into()));
        }
        // ipvsadm's range; the kernel then clamps it (maxlen()).
        if let Some(m) = self.sync_maxlen
            && !(1..=65535 - 28).contains(&m)
        {
            return Err(invalid(format!(
                "sync daemon: sync_maxlen {m} is 1 to {}",
                65535 - 28
            )));
        }
        Ok(())
    }
}

/// Check the daemons against each other: one master and one backup at most.
pub(crate) fn check(daemons: &[SyncDaemon]) -> Result<(), ConfigError> {
    for (i, d) in daemons.iter().enumerate() {
        d.validate()?;
        if daemons[..i].iter().any(|o| o.state == d.state) {
            return Err(super::conflict(format!(
                "two {} sync daemons: one of each may run",
                d.state.name()
            )));
        }
    }
    Ok(())
}
