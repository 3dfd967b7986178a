//! Interfaces and next hops, read from the kernel over rtnetlink.
//!
//! wvs sends frames itself, so it needs for every real server the interface and MAC address
//! the kernel would use: a route lookup (`RTM_GETROUTE` for the server's address gives the
//! output interface and gateway) and the neighbour table (`RTM_GETNEIGH` gives the gateway's
//! or server's MAC). Results are published into each [`Dest`](crate::service::Dest) as one
//! atomic word the fast path reads. When the kernel has no usable neighbour entry, wvs
//! sends an empty UDP datagram to the server's discard port so that the kernel resolves it
//! (ARP, or IPv6's neighbour discovery) and looks again shortly after; a known MAC stays in
//! use meanwhile.
//!
//! Replies to clients need no lookup: they go back to the MAC and interface the client's
//! packets came from, which each connection remembers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMetric};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::consts::NEIGH_PROBE_PORT;
use crate::service::{NextHop, Snapshot};

/// Why interfaces or next hops could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// An interface given with `--iface` does not exist.
    #[error("interface {0:?} not found in this network namespace")]
    NoSuchIface(String),
    /// An interface has no Ethernet address.
    #[error("interface {0:?} has no Ethernet (6-byte) address")]
    NotEthernet(String),
}

/// One of wvs's interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Name.
    pub name: String,
    /// Kernel interface index.
    pub index: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU (when the kernel says; 1500 otherwise).
    pub mtu: u32,
}

/// Open an rtnetlink connection, running its I/O task on the current tokio runtime.
pub fn connect() -> Result<Handle, NeighError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NeighError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Look up the interfaces named on the command line.
pub async fn lookup_ifaces(
    handle: &Handle,
    names: &[String],
) -> Result<Vec<IfaceInfo>, NeighError> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(lookup_iface(handle, name).await?);
    }
    Ok(out)
}

/// Look up one interface by name.
/// `NoSuchIface` only when the kernel says so (ENODEV, or no answer); any other failure is
/// `Netlink`, so that a caller does not take a passing error for a vanished interface.
pub async fn lookup_iface(handle: &Handle, name: &str) -> Result<IfaceInfo, NeighError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    let msg = match links.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(NeighError::NoSuchIface(name.to_string())),
        Err(rtnetlink::Error::NetlinkError(m))
            if m.code.map(|c| c.get().abs()) == Some(libc::ENODEV) =>
        {
            return Err(NeighError::NoSuchIface(name.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let mtu = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(1500);
    let mac = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(v) if v.len() == 6 => <[u8; 6]>::try_from(v.as_slice()).ok(),
            _ => None,
        })
        .ok_or_else(|| NeighError::NotEthernet(name.to_string()))?;
    Ok(IfaceInfo {
        name: name.to_string(),
        index: msg.header.index,
        mac,
        mtu,
    })
}

/// What a route lookup gives: next hop, source address, MTU.
/// What the route to a real server says: the next hop, wvs's source address, the MTU, and
/// whether the address is the balancer's own (a local route).
type Resolved = (Option<NextHop>, Option<IpAddr>, Option<u32>, bool);

/// Resolves real servers' next hops.
#[derive(Debug)]
pub(crate) struct Resolver {
    handle: Handle,
    ifaces: Vec<IfaceInfo>,
    warned: HashMap<IpAddr, String>,
}

impl Resolver {
    /// A resolver for real servers reachable through `ifaces`.
    pub fn new(handle: Handle, ifaces: Vec<IfaceInfo>) -> Self {
        Self {
            handle,
            ifaces,
            warned: HashMap::new(),
        }
    }

    /// Follow interface `slot` to what it is now (it was created again).
    pub(crate) fn set_iface(&mut self, slot: usize, info: IfaceInfo) {
        if let Some(i) = self.ifaces.get_mut(slot) {
            *i = info;
        }
    }

    /// Look up the next hop of every real server that has none or asked for one, or of all
    /// of them when `all`. Returns how many real servers still have no next hop.
    pub async fn refresh(&mut self, snap: &Snapshot, all: bool) -> Result<usize, NeighError> {
        let mut todo: Vec<IpAddr> = snap
            .dests()
            .filter(|d| {
                all || d.next_hop().is_none()
                    || d.resolve_wanted.load(std::sync::atomic::Ordering::Relaxed)
            })
            .map(|d| d.addr)
            .collect();
        todo.sort();
        todo.dedup();
        if todo.is_empty() {
            return Ok(0);
        }
        let neighbours = self.neighbours().await?;
        let mut unresolved = 0;
        for addr in todo {
            let (hop, src, mtu, local) = self.resolve(addr, &neighbours).await?;
            let mut changed = false;
            for d in snap.dests().filter(|d| d.addr == addr) {
                d.resolve_wanted
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                if d.forward() != crate::model::Forward::Local && local {
                    tracing::info!(real = %addr, "the balancer's own address: a local real server");
                }
                d.set_local(local);
                if local {
                    continue;
                }
                if let Some(a) = src {
                    d.set_source(a);
                }
                if let Some(m) = mtu {
                    d.set_mtu(m);
                }
                match hop {
                    Some(h) => {
                        changed |= d.next_hop() != Some(h);
                        d.set_next_hop(Some(h));
                    }
                    None if d.next_hop().is_none() => unresolved += 1,
                    None => {}
                }
            }
            if let (true, Some(h)) = (changed, hop) {
                let iface = &self.ifaces[usize::from(h.iface)].name;
                tracing::info!(real = %addr, iface, mac = %fmt_mac(&h.mac), "next hop");
            }
        }
        Ok(unresolved)
    }

    /// The next hop towards `addr`, wvs's source address on that route (a tunnel's outer
    /// source, as IPVS takes the route's `saddr`) and the route's MTU (its `mtu` metric,
    /// else its interface's: IPVS's `dst_mtu`).
    async fn resolve(
        &mut self,
        addr: IpAddr,
        neighbours: &HashMap<(u32, IpAddr), [u8; 6]>,
    ) -> Result<Resolved, NeighError> {
        let msg = match addr {
            IpAddr::V4(a) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .build(),
        };
        let mut routes = self.handle.route().get(msg).execute();
        // No route is the operator's to fix, not a reason to stop: warn, and look again.
        let route = match routes.try_next().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.warn_once(addr, "no route to this real server".into());
                return Ok((None, None, None, false));
            }
            Err(e) => {
                self.warn_once(addr, format!("no route to this real server: {e}"));
                return Ok((None, None, None, false));
            }
        };
        if route.header.kind == rtnetlink::packet_route::route::RouteType::Local {
            return Ok((None, None, None, true));
        }
        let mut oif = None;
        let mut gateway = None;
        let mut src = None;
        let mut route_mtu = None;
        for a in &route.attributes {
            match a {
                RouteAttribute::Metrics(m) => {
                    route_mtu = m.iter().find_map(|x| match x {
                        RouteMetric::Mtu(v) if *v > 0 => Some(*v),
                        _ => None,
                    })
                }
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
                RouteAttribute::PrefSource(RouteAddress::Inet(a)) => src = Some(IpAddr::V4(*a)),
                RouteAttribute::PrefSource(RouteAddress::Inet6(a)) => src = Some(IpAddr::V6(*a)),
                _ => {}
            }
        }
        let Some(oif) = oif else {
            return Ok((None, src, route_mtu, false));
        };
        let Some(slot) = self.ifaces.iter().position(|i| i.index == oif) else {
            self.warn_once(
                addr,
                format!("the route to this real server leaves through interface {oif}, which wvs does not own (add it with --iface)"),
            );
            return Ok((None, src, route_mtu, false));
        };
        let mtu = Some(route_mtu.unwrap_or(self.ifaces[slot].mtu));
        let via = gateway.unwrap_or(addr);
        match neighbours.get(&(oif, via)) {
            Some(mac) => Ok((
                Some(NextHop {
                    iface: slot as u8,
                    mac: *mac,
                }),
                src,
                mtu,
                false,
            )),
            None => {
                probe(addr);
                Ok((None, src, mtu, false))
            }
        }
    }

    async fn neighbours(&self) -> Result<HashMap<(u32, IpAddr), [u8; 6]>, NeighError> {
        let mut out = HashMap::new();
        let mut dump = self.handle.neighbours().get().execute();
        while let Some(n) = dump.try_next().await? {
            let usable = matches!(
                n.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            );
            if !usable {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                        ip = Some(IpAddr::V4(*v))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                        ip = Some(IpAddr::V6(*v))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.insert((n.header.ifindex, ip), mac);
            }
        }
        Ok(out)
    }

    fn warn_once(&mut self, addr: IpAddr, why: String) {
        if self.warned.get(&addr) != Some(&why) {
            tracing::warn!(real = %addr, "{why}");
            self.warned.insert(addr, why);
        }
    }
}

/// Make the kernel resolve `addr`'s next hop by sending it an empty datagram (discard port).
fn probe(addr: IpAddr) {
    let bind = match addr {
        IpAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    };
    let sent = UdpSocket::bind(bind).and_then(|s| s.send_to(&[], (addr, NEIGH_PROBE_PORT)));
    if let Err(e) = sent {
        tracing::debug!(real = %addr, "neighbour probe failed: {e}");
    }
}

/// Format a MAC address as `aa:bb:cc:dd:ee:ff`.
pub(crate) fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
