//! The interface watch: wvs's interfaces followed through deletion and re-creation.

use std::sync::Arc;

use crate::datapath::Iface;
use crate::io::Backend;
use crate::io::neigh::{self, Resolver};
use crate::io::ring::PacketRing;
use crate::io::socket::PacketSocket;
use crate::io::worker::RingPort;
use crate::io::xdp::{XdpProgram, Xsk};

/// wvs's interfaces as last seen. One that disappears is logged; when one of the same name
/// is there again (a new index, perhaps a new address), the workers get new sockets on it
/// from the broker, the datapath and the check path its address, the resolver its index,
/// and the nftables table is written again (its hook went with the old interface).
pub(super) struct Links {
    pub(super) ifaces: Vec<neigh::IfaceInfo>,
    /// Per interface: its index and address, `None` while it is gone.
    pub(super) seen: Vec<Option<(u32, [u8; 6])>>,
    pub(super) dp: Arc<[Iface]>,
    pub(super) mail: Vec<Arc<crate::io::worker::Mailbox>>,
    pub(super) broker: Option<crate::io::broker::Broker>,
    pub(super) io: Backend,
    pub(super) workers: usize,
    /// `--io xdp`: the program, to be attached to an interface that comes back.
    pub(super) xdp: Option<Arc<parking_lot::Mutex<XdpProgram>>>,
    /// `--offload tc`: the program, to be attached to an interface that comes back and to
    /// its new sockets.
    pub(super) offload: Option<Arc<parking_lot::Mutex<crate::io::offload::Offload>>>,
}

impl Links {
    pub(super) async fn check(
        &mut self,
        handle: &rtnetlink::Handle,
        resolver: &mut Resolver,
        api: &crate::api::ApiState,
        check_path: Option<&crate::health::via::CheckPath>,
    ) {
        for slot in 0..self.ifaces.len() {
            let name = self.ifaces[slot].name.clone();
            let now = match neigh::lookup_iface(handle, &name).await {
                Ok(info) => Some(info),
                Err(neigh::NeighError::NoSuchIface(_)) => None,
                Err(e) => {
                    // Not an answer about the interface: look again next time.
                    tracing::warn!(iface = name, "cannot look the interface up: {e}");
                    continue;
                }
            };
            let before = self.seen[slot];
            match (&now, before) {
                (None, Some((index, _))) => {
                    tracing::warn!(
                        iface = name,
                        index,
                        "interface gone: its traffic stops until it is back"
                    );
                    self.seen[slot] = None;
                }
                (Some(info), Some((index, mac))) if info.index == index => {
                    if info.mac != mac {
                        tracing::info!(iface = name, mac = %neigh::fmt_mac(&info.mac), "interface address changed");
                        self.dp[slot].set_mac(info.mac);
                        if let Some(p) = check_path {
                            let _ = p.relink(slot, info.index, info.mac);
                        }
                        self.seen[slot] = Some((index, info.mac));
                    }
                }
                (Some(info), _) => {
                    match self.rebind(slot, info, check_path) {
                        Ok(()) => {
                            tracing::info!(iface = name, index = info.index, mac = %neigh::fmt_mac(&info.mac), "interface back: bound again");
                            self.seen[slot] = Some((info.index, info.mac));
                            self.ifaces[slot] = info.clone();
                            resolver.set_iface(slot, info.clone());
                            match api.control.lock().await.reinstall_nft() {
                                Ok(()) => tracing::info!(
                                    iface = name,
                                    "nftables table written again: its hook is on the new interface"
                                ),
                                Err(e) => tracing::error!(
                                    iface = name,
                                    "cannot write the nftables table again: {e}"
                                ),
                            }
                        }
                        Err(e) => {
                            // Tried again on the next look.
                            tracing::warn!(
                                iface = name,
                                "interface back, but it cannot be bound again: {e}"
                            );
                        }
                    }
                }
                (None, None) => {}
            }
        }
    }

    /// New sockets on interface `slot`'s new index for every worker.
    fn rebind(
        &self,
        slot: usize,
        info: &neigh::IfaceInfo,
        check_path: Option<&crate::health::via::CheckPath>,
    ) -> std::io::Result<()> {
        use crate::io::worker::NewPort;
        let Some(broker) = &self.broker else {
            return Err(std::io::Error::other(
                "no socket broker (see the log at start): restart wvs",
            ));
        };
        if let Some(prog) = &self.xdp {
            return self.rebind_xdp(prog, broker, slot, info, check_path);
        }
        let group =
            (self.workers > 1).then(|| (std::process::id() as u16).wrapping_add(info.index as u16));
        let mut ports = Vec::with_capacity(self.workers);
        for _ in 0..self.workers {
            ports.push(match self.io {
                Backend::Uring => NewPort::Uring(PacketSocket::open_on(
                    broker.packet_socket()?,
                    info.index,
                    group,
                )?),
                _ => NewPort::Ring(RingPort {
                    ring: PacketRing::open_on(broker.packet_socket()?, info.index, group)?,
                    tx: PacketSocket::open_tx_on(broker.packet_socket()?, info.index)?,
                }),
            });
        }
        if let Some(off) = &self.offload {
            use std::os::fd::AsFd;
            let mut off = off.lock();
            for p in &ports {
                match p {
                    NewPort::Uring(s) => off.filter(s.as_fd()),
                    NewPort::Ring(r) => off.filter(r.ring.as_fd()),
                    // Not with --io xdp (refused at start).
                    NewPort::Xdp { .. } => Ok(()),
                }
                .map_err(std::io::Error::other)?;
            }
            off.set_ifindex(slot, info.index);
            off.attach(&info.name).map_err(std::io::Error::other)?;
        }
        self.dp[slot].set_mac(info.mac);
        if let Some(p) = check_path {
            p.relink(slot, info.index, info.mac)?;
        }
        for (m, p) in self.mail.iter().zip(ports) {
            m.post(slot, p);
        }
        Ok(())
    }
}

impl Links {
    /// `--io xdp`: new XDP sockets for the new interface's receive queues (queue `q` to
    /// worker `(slot + q) % workers`, as the first interfaces were dealt out on a veth with
    /// one queue) in the program's maps in place of the old interface's, a sending socket
    /// for every worker, and the program attached to it.
    fn rebind_xdp(
        &self,
        prog: &parking_lot::Mutex<XdpProgram>,
        broker: &crate::io::broker::Broker,
        slot: usize,
        info: &neigh::IfaceInfo,
        check_path: Option<&crate::health::via::CheckPath>,
    ) -> std::io::Result<()> {
        use crate::io::worker::NewPort;
        let mut xsks: Vec<Vec<Xsk>> = (0..self.workers).map(|_| Vec::new()).collect();
        for queue in 0..crate::io::xdp::rx_queues(&info.name) {
            let x = Xsk::open_on(broker.xdp_socket()?, info.index, queue, slot as u8)?;
            xsks[(slot + queue as usize) % self.workers].push(x);
        }
        let mut tx = Vec::with_capacity(self.workers);
        for _ in 0..self.workers {
            tx.push(RingPort {
                ring: PacketRing::open_tx_only_on(broker.packet_socket()?, info.index)?,
                tx: PacketSocket::open_tx_on(broker.packet_socket()?, info.index)?,
            });
        }
        {
            let mut p = prog.lock();
            // The interface as it was before it went (updated once this succeeds).
            p.forget_iface(self.ifaces[slot].index);
            for x in xsks.iter().flatten() {
                p.add_socket(info.index, x.queue, x)
                    .map_err(std::io::Error::other)?;
            }
            p.attach(&info.name).map_err(std::io::Error::other)?;
        }
        self.dp[slot].set_mac(info.mac);
        if let Some(p) = check_path {
            p.relink(slot, info.index, info.mac)?;
        }
        for ((m, tx), xsks) in self.mail.iter().zip(tx).zip(xsks) {
            m.post(slot, NewPort::Xdp { tx, xsks });
        }
        Ok(())
    }
}
