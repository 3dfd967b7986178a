//! The VIPs this balancer can serve, held as addresses of a TUN device of wvs's own, for
//! a routing daemon to announce (`wvs run --announce IF`).
//!
//! Several balancers behind the routers' ECMP each announce the VIP over BGP; a balancer
//! that cannot serve must stop announcing, or the routers keep sending it flows. wvs holds
//! no BGP code: the operator's BIRD or FRR announces the addresses of the device (BIRD's
//! `protocol direct`, FRR's `redistribute connected`) and withdraws what leaves it. A VIP
//! is on the device while one of its services has a real server that takes connections
//! (weight above 0, not taken out by its health check), and not while the backup sync
//! daemon runs with `backup_only`.
//!
//! The device is not persistent: it goes with wvs's file descriptor, so a wvs that is
//! stopped, crashes or is killed (`kill -9`) takes its addresses with it and the daemon
//! withdraws them at once; a machine that dies is withdrawn by the routers' hold timer.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};

use crate::io::tun::{Tun, TunError};
use crate::service::Snapshot;

/// Why the device could not be set up or changed: the device, or an address on it
/// ([`TunError::Netlink`]).
pub type AnnounceError = TunError;

/// The device and the VIPs it holds.
#[derive(Debug)]
pub struct Announcer {
    /// Kept open: the device lives as long as this descriptor.
    tun: Tun,
    index: u32,
    held: BTreeSet<IpAddr>,
    handle: rtnetlink::Handle,
}

/// The VIPs to announce: each one with a service that has a server taking connections,
/// unless this balancer does not serve (`serving` false).
pub fn wanted(snap: &Snapshot, serving: bool) -> BTreeSet<IpAddr> {
    if !serving {
        return BTreeSet::new();
    }
    snap.services()
        .filter(|s| s.dests.iter().any(|d| d.in_scheduling() && d.weight() > 0))
        .map(|s| s.key.addr)
        .collect()
}

/// A `--node` name: what a Prometheus label value and a host name both take.
pub fn valid_node(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// A device name Linux takes (`dev_valid_name`).
pub fn valid_device(n: &str) -> bool {
    (1..libc::IFNAMSIZ).contains(&n.len())
        && n != "."
        && n != ".."
        && !n
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

impl Announcer {
    /// Create the device `name`, up, with no address yet.
    pub async fn open(handle: &rtnetlink::Handle, name: &str) -> Result<Self, AnnounceError> {
        let (tun, index) = Tun::open_up(handle, name, None).await?;
        Ok(Self {
            tun,
            index,
            held: BTreeSet::new(),
            handle: handle.clone(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.tun.name
    }

    /// The VIPs on the device now.
    pub fn held(&self) -> &BTreeSet<IpAddr> {
        &self.held
    }

    /// Put `want` on the device and take off what is not in it (each change logged).
    pub async fn reconcile(&mut self, want: &BTreeSet<IpAddr>) -> Result<(), AnnounceError> {
        let new: Vec<IpAddr> = want.difference(&self.held).copied().collect();
        for a in new {
            let len = if a.is_ipv6() { 128 } else { 32 };
            if let Err(e) = self
                .handle
                .address()
                .add(self.index, a, len)
                .execute()
                .await
            {
                // Already there (added before a failure further on): held all the same.
                if !self.has(a).await? {
                    return Err(e.into());
                }
            }
            tracing::info!(vip = %a, device = self.name(), "announced: a server takes connections");
            self.held.insert(a);
        }
        let gone: Vec<IpAddr> = self.held.difference(want).copied().collect();
        if gone.is_empty() {
            return Ok(());
        }
        for (a, m) in self.addresses().await? {
            if gone.contains(&a) {
                self.handle.address().del(m).execute().await?;
                tracing::info!(vip = %a, device = self.name(), "withdrawn: no server takes connections");
            }
        }
        for a in gone {
            self.held.remove(&a);
        }
        Ok(())
    }

    /// Whether the device has the address `a`.
    async fn has(&self, a: IpAddr) -> Result<bool, AnnounceError> {
        Ok(self.addresses().await?.iter().any(|(x, _)| *x == a))
    }

    /// The device's addresses, each with its message (what deleting it takes).
    async fn addresses(&self) -> Result<Vec<(IpAddr, AddressMessage)>, AnnounceError> {
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = msgs.try_next().await? {
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(a) | AddressAttribute::Address(a) => Some(*a),
                _ => None,
            });
            if let Some(a) = addr {
                out.push((a, m));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;
    use crate::spec::{Real, Service};

    fn svc(addr: &str, port: u16, weights: &[u32]) -> Service {
        Service {
            reals: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Real {
                    weight: *w,
                    ..Real::new(format!("198.19.0.{}", 11 + i).parse().unwrap(), 80)
                })
                .collect(),
            ..Service::new(Protocol::Tcp, addr.parse().unwrap(), port, "mh")
        }
    }

    #[test]
    fn a_vip_is_wanted_while_one_of_its_services_has_a_server() {
        let snap = Snapshot::build_native(
            &[
                svc("198.18.100.1", 80, &[1, 0]),
                svc("198.18.100.2", 80, &[0, 0]),
                svc("198.18.100.2", 443, &[]),
                svc("198.18.100.3", 80, &[0]),
                svc("198.18.100.3", 443, &[2]),
            ],
            &Snapshot::default(),
        );
        let ips = |v: &[&str]| {
            v.iter()
                .map(|a| a.parse().unwrap())
                .collect::<BTreeSet<IpAddr>>()
        };
        assert_eq!(wanted(&snap, true), ips(&["198.18.100.1", "198.18.100.3"]));
        assert_eq!(wanted(&snap, false), ips(&[]));
        // A server its health check took out counts as none.
        let vip1: IpAddr = "198.18.100.1".parse().unwrap();
        let s1 = snap.services().find(|s| s.key.addr == vip1).unwrap();
        s1.dests.iter().for_each(|d| d.set_health(true, false));
        assert_eq!(wanted(&snap, true), ips(&["198.18.100.3"]));
        // Inhibited (weight 0 while down): none either.
        s1.dests.iter().for_each(|d| d.set_health(true, true));
        assert_eq!(wanted(&snap, true), ips(&["198.18.100.3"]));
        s1.dests.iter().for_each(|d| d.set_health(false, false));
        assert_eq!(wanted(&snap, true), ips(&["198.18.100.1", "198.18.100.3"]));
    }
}
