//! Checks of DR and tunnel real servers the way client traffic goes: to the VIP, with the
//! real server's MAC address (DR) or through the tunnel (TUN), so that a server that is up
//! but not set up for the VIP (no VIP on its loopback, no tunnel end) is seen as down.
//! keepalived cannot do this: its checks go to the server's own address.
//!
//! How: a check's socket carries the mark [`CHECK_MARK`]; a routing rule sends marked
//! packets to table [`CHECK_TABLE`], whose only route is the TUN device [`CHECK_TUN`]. wvs
//! reads what the stack writes there, finds the real server by the check's source port (each
//! check binds its port first and registers it), and sends the packet with the same
//! transmitter as a client's (`xmit::to_real`). The server answers from the VIP to wvs's
//! own address, directly; the datapath leaves that to the stack (it is no service's), whose
//! socket takes it.
//!
//! While the VIP is one of the director's own addresses (keepalived's VRRP master holds
//! it), a socket connected to it would be answered by the director's own stack, and the
//! answer from it is a martian there: such a check connects to a stand-in address instead,
//! made the VIP here on the way out and turned back by the datapath ([`crate::conn::own`]).
//! Whether the VIP is local is looked at for every check, so a VIP that moves is followed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::conn::ConnTable;
use crate::consts::{
    CHECK_MARK, CHECK_RULE_PRIORITY, CHECK_STANDIN, CHECK_TABLE, CHECK_TUN, CHECK_TUN_MTU,
    VNET_HDR_LEN,
};
use crate::io::neigh::IfaceInfo;
use crate::io::socket::PacketSocket;
use crate::io::tun::{Tun, TunError};
use crate::model::{Forward, Protocol};
use crate::service::Dest;
use crate::wire::checksum::CsumMode;
use crate::wire::{ETHERNET_HEADER_LEN, EthernetFrame, EthernetProtocol, Ipv4Packet};
use crate::xmit;

/// Why the check path could not be set up (checks then go to the servers' own addresses):
/// the TUN device, a route or rule ([`TunError::Netlink`]), or a packet socket.
pub type ViaError = TunError;

/// A check in flight: the real server it is for, and the VIP when it connected to the
/// stand-in address.
type InFlight = (Arc<Dest>, Option<SocketAddrV4>);

/// The path checks of DR and tunnel servers take.
#[derive(Debug)]
pub struct CheckPath {
    /// Checks in flight: their protocol and source port, the real server each is for, and
    /// the VIP a check connected to the stand-in address is for.
    flights: Mutex<HashMap<(Protocol, u16), InFlight>>,
    /// wvs's interfaces (by their index in `--iface`): a socket to send on, and the MAC.
    links: Vec<(PacketSocket, crate::datapath::Iface)>,
    /// The connection table, whose registry of checks through a local VIP the datapath
    /// reads.
    conns: Arc<ConnTable>,
    /// Whether every check through a VIP connects to the stand-in address, not only those
    /// through a local one: under `--io xdp`, whose program hands wvs the answers from a
    /// VIP's checked ports (`answers_through_vips`), which the kernel then never sees.
    standin_always: bool,
}

/// A check in flight: its source port is known to the path until it is dropped.
#[derive(Debug)]
pub struct Flight {
    path: Arc<CheckPath>,
    key: (Protocol, u16),
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some((_, Some(_))) = self.path.flights.lock().remove(&self.key) {
            self.path.conns.own().remove(self.key.0, self.key.1);
        }
    }
}

impl CheckPath {
    /// Create the TUN device, its route and rule, and the thread that forwards what the
    /// stack writes into it. Runs on the control runtime at start.
    pub async fn setup(
        handle: &rtnetlink::Handle,
        ifaces: &[IfaceInfo],
        conns: Arc<ConnTable>,
        standin_always: bool,
    ) -> Result<Arc<Self>, ViaError> {
        let (tun, index) = Tun::open_up(handle, CHECK_TUN, Some(CHECK_TUN_MTU)).await?;
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .table_id(CHECK_TABLE)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        handle.route().add(route).replace().execute().await?;
        // One rule: remove one left by a wvs that was killed, then add it.
        let _ = check_rule(handle, false, false).await;
        check_rule(handle, false, true).await?;
        // The same for IPv6 services' checks, where the kernel has IPv6.
        let route6 = rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .output_interface(index)
            .table_id(CHECK_TABLE)
            .build();
        let _ = check_rule(handle, true, false).await;
        if let Err(e) = handle.route().add(route6).replace().execute().await {
            tracing::warn!("no IPv6 route for checks through the VIP: {e}");
        } else if let Err(e) = check_rule(handle, true, true).await {
            tracing::warn!("no IPv6 rule for checks through the VIP: {e}");
        }
        let links = ifaces
            .iter()
            .map(|i| {
                Ok((
                    PacketSocket::open_tx(i.index)?,
                    crate::datapath::Iface::new(i.mac),
                ))
            })
            .collect::<Result<Vec<_>, std::io::Error>>()?;
        let path = Arc::new(Self {
            flights: Mutex::new(HashMap::new()),
            links,
            conns,
            standin_always,
        });
        let fwd = path.clone();
        std::thread::Builder::new()
            .name("wvs-check-path".into())
            .spawn(move || {
                // Started while wvs still holds every capability; it needs none.
                crate::privs::drop_all_in_this_thread();
                fwd.forward_all(&tun)
            })?;
        tracing::info!(
            device = CHECK_TUN,
            table = CHECK_TABLE,
            mark = CHECK_MARK,
            "checks of DR and tunnel servers go through the VIP"
        );
        Ok(path)
    }

    /// Follow interface `slot` to its new index and address (it was created again).
    pub fn relink(&self, slot: usize, index: u32, mac: [u8; 6]) -> std::io::Result<()> {
        if let Some((sock, iface)) = self.links.get(slot) {
            sock.rebind_tx(index)?;
            iface.set_mac(mac);
        }
        Ok(())
    }

    /// Remove the rules (the device and its routes go with the process).
    pub async fn teardown(handle: &rtnetlink::Handle) {
        for v6 in [false, true] {
            let _ = check_rule(handle, v6, false).await;
        }
    }

    /// Forward what the stack writes into the device until the process ends.
    fn forward_all(&self, tun: &Tun) {
        let mut buf = vec![0u8; VNET_HDR_LEN + ETHERNET_HEADER_LEN + 65_536 + 256];
        loop {
            let at = VNET_HDR_LEN + ETHERNET_HEADER_LEN;
            let n = match tun.read(&mut buf[at..at + 65_536]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("{}: {e}; checks through the VIP stop", tun.name);
                    return;
                }
            };
            // The virtio header stays zero: no offload.
            buf[..VNET_HDR_LEN].fill(0);
            if let Some((len, iface)) = self.forward_one(&mut buf[VNET_HDR_LEN..], n)
                && let Some((sock, _)) = self.links.get(usize::from(iface))
                && let Err(e) = sock.send(&buf[..VNET_HDR_LEN + len])
            {
                tracing::debug!("a check's packet was not sent: {e}");
            }
        }
    }

    /// Turn the IP packet of `n` bytes after the Ethernet header of `frame` into the frame
    /// to send; returns its length and interface. `None`: no check of ours, or no way to the
    /// server yet (the check times out, as a client's connection would).
    fn forward_one(&self, frame: &mut [u8], n: usize) -> Option<(usize, u8)> {
        let ip = frame.get(ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + n)?;
        let (proto, sport, ihl) = flight_of(ip)?;
        let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
        let Some((dest, standin)) = self.flights.lock().get(&(proto, sport)).cloned() else {
            tracing::trace!(?proto, sport, "not a check's packet");
            return None;
        };
        if let Some(vip) = standin {
            // Connected to the stand-in address: to the VIP it stands for.
            let ip = frame.get_mut(ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + n)?;
            xmit::nat::rewrite_v4(
                ip,
                ihl,
                proto,
                xmit::nat::Rewrite::Dst,
                *vip.ip(),
                vip.port(),
                CsumMode::Complete,
            );
        }
        let Some(hop) = dest.next_hop() else {
            tracing::trace!(real = %dest.addr, "no next hop to the real server yet");
            return None;
        };
        let (_, iface) = self.links.get(usize::from(hop.iface))?;
        let mac = &iface.mac();
        // The stack wrote an IP packet: the frame around it is ours to fill.
        EthernetFrame::new_unchecked(&mut *frame).set_ethertype(if v6 {
            EthernetProtocol::Ipv6
        } else {
            EthernetProtocol::Ipv4
        });
        let target = xmit::Target {
            fwd: dest.forward(),
            daddr: dest.addr,
            dport: dest.port,
            src: dest.source(),
            flow_hash: u32::from(sport),
            mtu: 0,
            local: (Ipv4Addr::UNSPECIFIED.into(), 0),
            pmtu_disc: true,
        };
        let mut pkt = xmit::Packet {
            buf: frame,
            l4_off: ihl,
            total_len: n,
            proto,
            csum: CsumMode::Complete,
            gso_size: 0,
        };
        let link = xmit::Link {
            iface: hop.iface,
            src_mac: *mac,
            dst_mac: hop.mac,
        };
        match xmit::to_real(&mut pkt, &target, link) {
            Ok(xmit::Sent::InPlace { iface }) => Some((ETHERNET_HEADER_LEN + n, iface)),
            Ok(xmit::Sent::Whole { len, iface }) => Some((len, iface)),
            other => {
                tracing::trace!(real = %dest.addr, ?other, "a check's packet was refused");
                None
            }
        }
    }

    /// Open a socket of `kind` for a check of `dest` through `vip`: marked, bound to wvs's
    /// address towards the server, its port registered; returns it with the address to
    /// connect to (the VIP, or the stand-in address while the VIP is local).
    fn socket(
        self: &Arc<Self>,
        kind: socket2::Type,
        proto: Protocol,
        dest: &Arc<Dest>,
        vip: SocketAddr,
    ) -> Result<(socket2::Socket, Flight, SocketAddr), String> {
        let src = dest.source();
        if src.is_unspecified() {
            return Err("no route to the real server yet".into());
        }
        let domain = if vip.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let s = socket2::Socket::new(domain, kind, None)
            .and_then(|s| {
                s.set_mark(CHECK_MARK)?;
                s.set_nonblocking(true)?;
                s.bind(&SocketAddr::new(src, 0).into())?;
                Ok(s)
            })
            .map_err(|e| format!("check socket: {e}"))?;
        let port = s
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .ok_or("check socket: no local port")?;
        let standin = match vip {
            SocketAddr::V4(v) if self.standin_always || vip_is_local(vip.ip()) => Some(v),
            _ => None,
        };
        // The datapath's registry first: the answer may come as soon as the SYN leaves.
        if let Some(v) = standin {
            self.conns.own().insert(proto, port, v);
        }
        self.flights
            .lock()
            .insert((proto, port), (dest.clone(), standin));
        let to = standin.map_or(vip, |v| SocketAddr::new(CHECK_STANDIN.into(), v.port()));
        Ok((
            s,
            Flight {
                path: self.clone(),
                key: (proto, port),
            },
            to,
        ))
    }

    /// A TCP connection to `vip` that reaches `dest` as a client's would.
    pub async fn tcp(
        self: &Arc<Self>,
        dest: &Arc<Dest>,
        vip: SocketAddr,
    ) -> Result<(tokio::net::TcpStream, Flight), std::io::Error> {
        let (s, flight, to) = self
            .socket(socket2::Type::STREAM, Protocol::Tcp, dest, vip)
            .map_err(std::io::Error::other)?;
        let s = tokio::net::TcpSocket::from_std_stream(s.into());
        Ok((s.connect(to).await?, flight))
    }

    /// A UDP socket connected to `vip` whose datagrams reach `dest` as a client's would.
    pub async fn udp(
        self: &Arc<Self>,
        dest: &Arc<Dest>,
        vip: SocketAddr,
    ) -> Result<(tokio::net::UdpSocket, Flight), std::io::Error> {
        let (s, flight, to) = self
            .socket(socket2::Type::DGRAM, Protocol::Udp, dest, vip)
            .map_err(std::io::Error::other)?;
        let s = tokio::net::UdpSocket::from_std(s.into())?;
        s.connect(to).await?;
        Ok((s, flight))
    }
}

/// Whether a check of a server forwarded by `fwd` goes through the VIP.
pub(crate) fn goes_via(fwd: Forward) -> bool {
    matches!(fwd, Forward::Route | Forward::Tunnel(_))
}

/// Whether `vip` is one of this host's addresses (keepalived's VRRP puts it there). Read
/// from the interfaces' addresses, not by binding to it, which `ip_nonlocal_bind` (often on
/// where keepalived runs) lets succeed for any address.
pub(crate) fn vip_is_local(vip: IpAddr) -> bool {
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs.into_iter().any(|a| {
            a.address.is_some_and(|s| match vip {
                IpAddr::V4(v) => s.as_sockaddr_in().is_some_and(|x| x.ip() == v),
                IpAddr::V6(v) => s.as_sockaddr_in6().is_some_and(|x| x.ip() == v),
            })
        }),
        Err(e) => {
            tracing::debug!("cannot list this host's addresses: {e}");
            false
        }
    }
}

/// The protocol and source port of a check's IP packet (a socket's: an IPv6 one carries no
/// extension header), and where its upper layer starts.
fn flight_of(ip: &[u8]) -> Option<(Protocol, u16, usize)> {
    let (next, l4_off) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            (u8::from(p.next_header()), usize::from(p.header_len()))
        }
        6 => {
            let p = crate::wire::Ipv6Packet::new_checked(ip).ok()?;
            (
                u8::from(p.next_header()),
                crate::wire::ipv6_field::HEADER_LEN,
            )
        }
        _ => return None,
    };
    let proto = match next {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return None,
    };
    let l4 = ip.get(l4_off..l4_off + 2)?;
    Some((proto, u16::from_be_bytes([l4[0], l4[1]]), l4_off))
}

/// The routing rule that sends marked packets (checks) to the check table, of a family:
/// added (`add`) or removed.
async fn check_rule(
    handle: &rtnetlink::Handle,
    v6: bool,
    add: bool,
) -> Result<(), rtnetlink::Error> {
    macro_rules! rule {
        ($r:expr) => {{
            let mut r = $r
                .fw_mark(CHECK_MARK)
                .table_id(CHECK_TABLE)
                .priority(CHECK_RULE_PRIORITY)
                .action(rtnetlink::packet_route::rule::RuleAction::ToTable);
            if add {
                r.execute().await
            } else {
                handle.rule().del(r.message_mut().clone()).execute().await
            }
        }};
    }
    if v6 {
        rule!(handle.rule().add().v6())
    } else {
        rule!(handle.rule().add().v4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checks_packet_is_known_by_its_protocol_and_source_port() {
        // IPv4, 20-byte header, TCP, then the TCP source port 40000.
        let mut ip = vec![0u8; 40];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
        assert_eq!(flight_of(&ip), Some((Protocol::Tcp, 40000, 20)));
        ip[9] = 17;
        assert_eq!(flight_of(&ip), Some((Protocol::Udp, 40000, 20)));
        ip[9] = 1;
        assert_eq!(flight_of(&ip), None, "ICMP is no check's");
        assert_eq!(flight_of(&ip[..10]), None, "a truncated header");
    }

    #[test]
    fn dr_and_tunnel_servers_go_through_the_vip() {
        assert!(goes_via(Forward::Route));
        assert!(!goes_via(Forward::Masq));
        assert!(!goes_via(Forward::FullNat));
    }
}
