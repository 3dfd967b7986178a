//! AF_XDP (`wvs run --io xdp`): frames come to wvs through XDP sockets, before the kernel
//! builds an skb for them.
//!
//! - [`XdpProgram`]: wvs's own XDP program (`host/bpf/wvs_xdp.c`, compiled by the build with
//!   `clang -target bpf`, loaded with aya), attached in driver mode to every interface. It
//!   redirects what is wvs's (the [`Claims`] of the running snapshot, kept in a hash map by
//!   [`XdpFilter`]) to the socket of the queue the frame came in on, and passes the rest
//!   (ARP, SSH, the host's own traffic) to the kernel as usual. It is attached through a
//!   BPF link, which the kernel removes when wvs exits, however it exits. It also answers
//!   SYNs to services answering with cookies (`wvs_synproxy.h`, [`super::synproxy`]),
//!   where the kernel says a frame redirected back out leaves ([`XdpTx`]).
//! - [`Xsk`]: one socket per interface and receive queue, with its own UMEM: a fill ring
//!   that hands every chunk to the kernel, an RX ring wvs reads frames from, processed in
//!   their chunk. Bound with `XDP_USE_NEED_WAKEUP`, zero-copy where the driver has it, copy
//!   mode otherwise (veth). A worker waits for it through io_uring (a multishot poll).
//! - Frames leave through the ring backend's packet sockets with TX rings (one per worker
//!   and interface, sending only): a frame is written into a TX slot as under `--io ring`,
//!   and the datapath's vnet-header conventions (GSO, partial checksums) hold unchanged.
//!   An XDP socket's own TX ring would save nothing here: in copy mode it also builds an
//!   skb per frame from a copy.
//!
//! XDP on a veth has limits the kernel enforces when the program is attached, reported
//! with what to change: the peer's MTU must fit a page (about 3.5 KB, no multi-buffer XDP
//! here), and the device needs as many receive queues as its peer has transmit queues.
//! While a program is attached the peer does not send GSO super-frames, so every frame
//! fits a chunk. The third limit, an XDP program on the receiving peer for frames
//! redirected into a veth, does not arise: the program redirects only into wvs's sockets,
//! never into another interface.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpMode};

use super::nft::Claims;
use super::socket::check;
use crate::consts::{VNET_HDR_LEN, XSK_CHUNK_SIZE, XSK_CHUNKS, XSK_COMPLETION_RING, XSK_RX_RING};
use crate::datapath::Headers;
use crate::service::Snapshot;

/// The compiled XDP program (empty when the build had no clang).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wvs_xdp.o"));

/// The program's name and its maps' (in `wvs_xdp.c`).
const PROGRAM: &str = "wvs_xdp";
const MAP_TUPLES: &str = "wvs_tuples";
const MAP_QUEUES: &str = "wvs_queues";
const MAP_XSKS: &str = "wvs_xsks";
const MAP_PASSED: &str = "wvs_passed";
const MAP_MARKS: &str = "wvs_marks";
const MAP_SP_TX: &str = "wvs_synproxy_tx";
/// `max_entries` of `wvs_xsks` and `wvs_queues`.
const MAX_SOCKETS: u32 = 1024;

/// What a tuple of `wvs_tuples` is: `enum { KIND_... }` in `wvs_xdp.c`.
mod kind {
    pub const VIP: u8 = 1;
    pub(crate) const REAL: u8 = 2;
    pub(crate) const VIP_ADDR: u8 = 3;
    pub(crate) const REAL_ADDR: u8 = 4;
    /// The data ports (20, 1024 up) of a virtual address whose helper expects connections.
    pub(crate) const DATA_VIP: u8 = 5;
    /// The data ports of such a service's real server.
    pub(crate) const DATA_REAL: u8 = 6;
}

/// A key of `wvs_tuples` (`struct tuple` in `wvs_xdp.c`): address and port as on the wire,
/// an IPv4 address mapped into IPv6's.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Tuple {
    addr: [u8; 16],
    proto: u8,
    kind: u8,
    port: [u8; 2],
}

// SAFETY: plain data of 20 bytes without padding, valid for every bit pattern.
unsafe impl aya::Pod for Tuple {}

/// An entry of `wvs_marks` (`struct mark_match` in `wvs_xdp.c`): one match of a mark rule
/// of a fwmark service; `protos` 0 ends the list.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct MarkMatch {
    daddr: [u8; 16],
    dmask: [u8; 16],
    saddr: [u8; 16],
    smask: [u8; 16],
    dport_lo: u16,
    dport_hi: u16,
    sport_lo: u16,
    sport_hi: u16,
    protos: u8,
    pad: [u8; 3],
}

// SAFETY: plain data of 76 bytes (its padding spelled out), valid for every bit pattern.
unsafe impl aya::Pod for MarkMatch {}

/// The entries of `wvs_marks` for `rules`: each rule's destinations × sources × port
/// ranges, in order.
fn mark_matches(rules: &[crate::spec::MarkRule]) -> Vec<MarkMatch> {
    use crate::model::Protocol;
    // A prefix as the map holds it: IPv4's mapped, its mask over the mapped prefix too.
    let wide_net = |n: &ipnet::IpNet| -> ([u8; 16], [u8; 16]) {
        let (addr, len) = match n {
            ipnet::IpNet::V4(v) => (v.network().to_ipv6_mapped(), 96 + v.prefix_len()),
            ipnet::IpNet::V6(v) => (v.network(), v.prefix_len()),
        };
        let mask = u128::MAX.checked_shl(u32::from(128 - len)).unwrap_or(0);
        (addr.octets(), mask.to_be_bytes())
    };
    let any = |v: bool| -> ([u8; 16], [u8; 16]) {
        // Any address of the family: ::ffff:0:0/96 for IPv4, ::/0 for IPv6.
        if v {
            ([0; 16], [0; 16])
        } else {
            wide_net(&ipnet::IpNet::V4(ipnet::Ipv4Net::default()))
        }
    };
    let full = [(0u16, u16::MAX)];
    let mut out = Vec::new();
    for r in rules {
        let v6 = r.daddr.first().is_some_and(|n| n.addr().is_ipv6());
        let bit = |p: &Protocol| match p {
            Protocol::Tcp => 1,
            Protocol::Udp => 2,
            Protocol::Sctp => 4,
        };
        let protos = if r.protos.is_empty() {
            Protocol::ALL.iter().fold(0, |b, p| b | bit(p))
        } else {
            r.protos.iter().fold(0, |b, p| b | bit(p))
        };
        let saddrs: Vec<_> = if r.saddr.is_empty() {
            vec![any(v6)]
        } else {
            r.saddr.iter().map(wide_net).collect()
        };
        let dports = if r.dport.is_empty() {
            &full[..]
        } else {
            &r.dport[..]
        };
        let sports = if r.sport.is_empty() {
            &full[..]
        } else {
            &r.sport[..]
        };
        for d in &r.daddr {
            let (daddr, dmask) = wide_net(d);
            for &(saddr, smask) in &saddrs {
                for &(dport_lo, dport_hi) in dports {
                    for &(sport_lo, sport_hi) in sports {
                        out.push(MarkMatch {
                            daddr,
                            dmask,
                            saddr,
                            smask,
                            dport_lo,
                            dport_hi,
                            sport_lo,
                            sport_hi,
                            protos,
                            pad: [0; 3],
                        });
                    }
                }
            }
        }
    }
    out
}

/// A key of `wvs_queues` (`struct ifq`): which socket a queue's frames go to.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Ifq {
    ifindex: u32,
    queue: u32,
}

// SAFETY: plain data of 8 bytes without padding, valid for every bit pattern.
unsafe impl aya::Pod for Ifq {}

/// Why the XDP backend could not start or follow a change.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The binary was built without clang.
    #[error(
        "this wvs was built without its XDP program (clang was missing at build time): \
         install clang (scripts/setup.sh does) and rebuild, or use --io ring"
    )]
    NotBuilt,
    /// The program or a map could not be loaded or used.
    #[error("XDP program: {0}")]
    Program(String),
    /// The program could not be attached to an interface.
    #[error("cannot attach wvs's XDP program to {iface}: {reason}")]
    Attach {
        /// The interface.
        iface: String,
        /// What the kernel said, and what to change.
        reason: String,
    },
    /// An XDP socket could not be set up.
    #[error("XDP socket on {iface} queue {queue}: {source}")]
    Socket {
        /// The interface.
        iface: String,
        /// The receive queue.
        queue: u32,
        /// The error.
        source: io::Error,
    },
}

fn program_err(e: impl std::fmt::Display) -> XdpError {
    XdpError::Program(e.to_string())
}

/// The loaded program, its sockets' maps and its attachments; dropping it detaches it.
pub(crate) struct XdpProgram {
    ebpf: Ebpf,
    queues: BpfHashMap<MapData, Ifq, u32>,
    xsks: XskMap<MapData>,
    slots: Slots,
    attached: Vec<String>,
}

/// Which slot of `wvs_xsks` each interface queue's socket has. The slots of an interface
/// that went go to the sockets of one that comes, so that an interface deleted and created
/// again any number of times never runs out of them.
#[derive(Debug, Default)]
struct Slots {
    of: std::collections::HashMap<Ifq, u32>,
    free: Vec<u32>,
    /// Slots ever handed out.
    used: u32,
}

impl Slots {
    /// The slot for `q`: its own, else a free one, else a new one; `None` past
    /// `MAX_SOCKETS`. It is `q`'s once [`Self::take`] says so.
    fn pick(&self, q: Ifq) -> Option<u32> {
        self.of
            .get(&q)
            .or(self.free.last())
            .copied()
            .or((self.used < MAX_SOCKETS).then_some(self.used))
    }

    /// `q` has `slot` (from [`Self::pick`]).
    fn take(&mut self, q: Ifq, slot: u32) {
        if self.of.insert(q, slot).is_none() {
            if self.free.last() == Some(&slot) {
                self.free.pop();
            } else {
                self.used += 1;
            }
        }
    }

    /// Interface `ifindex` is gone: its queues, whose slots are free again.
    fn forget(&mut self, ifindex: u32) -> Vec<Ifq> {
        let gone: Vec<Ifq> = self
            .of
            .keys()
            .filter(|q| q.ifindex == ifindex)
            .copied()
            .collect();
        for q in &gone {
            if let Some(slot) = self.of.remove(q) {
                self.free.push(slot);
            }
        }
        gone
    }
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram")
            .field("sockets", &self.slots.of.len())
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

impl XdpProgram {
    /// Load the program into the kernel (not attached yet), and hand out the filter that
    /// the control plane keeps in step with the snapshot and the count of passed frames.
    pub fn load() -> Result<(Self, XdpFilter, XdpPassed), XdpError> {
        if OBJECT.is_empty() {
            return Err(XdpError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(program_err)?;
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| XdpError::Program(format!("map {name} missing")))
        };
        let tuples = BpfHashMap::try_from(take(&mut ebpf, MAP_TUPLES)?).map_err(program_err)?;
        let queues = BpfHashMap::try_from(take(&mut ebpf, MAP_QUEUES)?).map_err(program_err)?;
        let xsks = XskMap::try_from(take(&mut ebpf, MAP_XSKS)?).map_err(program_err)?;
        let passed = PerCpuArray::try_from(take(&mut ebpf, MAP_PASSED)?).map_err(program_err)?;
        let marks = aya::maps::Array::try_from(take(&mut ebpf, MAP_MARKS)?).map_err(program_err)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Program(format!("program {PROGRAM} missing")))?
            .try_into()
            .map_err(program_err)?;
        prog.load().map_err(program_err)?;
        Ok((
            Self {
                ebpf,
                queues,
                xsks,
                slots: Slots::default(),
                attached: Vec::new(),
            },
            XdpFilter {
                map: tuples,
                current: HashSet::new(),
                marks,
                current_marks: Vec::new(),
            },
            XdpPassed {
                map: passed,
                last: 0,
            },
        ))
    }

    /// Handles on the program's synproxy maps (its SYN cookies at the first point).
    pub fn synproxy(&self) -> Result<super::synproxy::SpMaps, XdpError> {
        super::synproxy::SpMaps::open(&self.ebpf).map_err(program_err)
    }

    /// The map of interfaces where the program answers SYNs itself, kept for `ifaces`.
    pub fn synproxy_tx(&self, ifaces: Vec<String>) -> Result<XdpTx, XdpError> {
        let map = super::synproxy::own(&self.ebpf, MAP_SP_TX).map_err(program_err)?;
        Ok(XdpTx {
            map: BpfHashMap::try_from(aya::maps::Map::HashMap(map)).map_err(program_err)?,
            netdev: None,
            ifaces,
            on: std::collections::HashMap::new(),
        })
    }

    /// Send the frames of `ifindex`'s receive queue `queue` to `socket`.
    pub(crate) fn add_socket(
        &mut self,
        ifindex: u32,
        queue: u32,
        socket: &Xsk,
    ) -> Result<(), XdpError> {
        let ifq = Ifq { ifindex, queue };
        let slot = self.slots.pick(ifq).ok_or_else(|| {
            XdpError::Program(format!("more than {MAX_SOCKETS} interface queues"))
        })?;
        self.xsks
            .set(slot, socket.as_raw_fd(), 0)
            .map_err(program_err)?;
        self.queues.insert(ifq, slot, 0).map_err(program_err)?;
        self.slots.take(ifq, slot);
        Ok(())
    }

    /// Interface `ifindex` is gone: its queues' slots are free for another's sockets. (The
    /// kernel takes a socket out of `wvs_xsks` itself when it closes.)
    pub(crate) fn forget_iface(&mut self, ifindex: u32) {
        for q in self.slots.forget(ifindex) {
            let _ = self.queues.remove(&q);
        }
    }

    /// Attach the program to `iface` in driver mode.
    pub fn attach(&mut self, iface: &str) -> Result<(), XdpError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Program(format!("program {PROGRAM} missing")))?
            .try_into()
            .map_err(program_err)?;
        prog.attach(iface, XdpMode::Driver)
            .map_err(|e| XdpError::Attach {
                iface: iface.to_string(),
                reason: attach_reason(&e),
            })?;
        if !self.attached.iter().any(|a| a == iface) {
            self.attached.push(iface.to_string());
        }
        tracing::info!(iface, mode = "driver", "XDP program attached");
        Ok(())
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        // The links go with the program (aya detaches them as it drops it); said here so
        // that the log shows the interfaces were left clean.
        if !self.attached.is_empty() {
            tracing::info!(ifaces = ?self.attached, "XDP program detached");
        }
    }
}

/// The kernel's refusal, with what to change.
fn attach_reason(e: &ProgramError) -> String {
    let (errno, e) = match e {
        ProgramError::SyscallError(s) => (
            s.io_error.raw_os_error(),
            format!("{} failed: {}", s.call, s.io_error),
        ),
        _ => (None, e.to_string()),
    };
    match errno {
        Some(libc::ERANGE) => format!(
            "{e}: the MTU of the interface or its veth peer is too large for XDP \
             (at most about 3,500 bytes on a veth without multi-buffer XDP): lower it"
        ),
        Some(libc::ENOSPC) => format!(
            "{e}: the interface has fewer receive queues than its veth peer has transmit \
             queues: give it more (ethtool -L IFACE rx N) or the peer fewer (ethtool -L PEER \
             tx N)"
        ),
        Some(libc::EBUSY | libc::EEXIST) => format!(
            "{e}: another XDP program is attached to it: remove it \
             (ip link set dev IFACE xdp off) or use --io ring"
        ),
        Some(libc::EOPNOTSUPP) => format!("{e}: the driver has no native XDP: use --io ring"),
        _ => e,
    }
}

/// The program's view of which frames are wvs's: a hash map of tuples, kept equal to the
/// snapshot's [`Claims`] (entries added before stale ones are removed, so a change never
/// passes a frame of a service that stays).
pub(crate) struct XdpFilter {
    map: BpfHashMap<MapData, Tuple, u8>,
    current: HashSet<Tuple>,
    marks: aya::maps::Array<MapData, MarkMatch>,
    current_marks: Vec<MarkMatch>,
}

impl std::fmt::Debug for XdpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpFilter")
            .field("tuples", &self.current.len())
            .finish_non_exhaustive()
    }
}

impl XdpFilter {
    /// Make the map hold `snap`'s claims, and the answers to checks through a VIP
    /// (`check_answers`: VIP, protocol, port); on failure it holds what it held.
    pub fn update(
        &mut self,
        snap: &Snapshot,
        check_answers: Vec<(std::net::Ipv4Addr, crate::model::Protocol, u16)>,
    ) -> Result<(), XdpError> {
        let claims = Claims {
            check_answers,
            ..Claims::of(snap)
        };
        let next = tuples(&claims);
        let marks = mark_matches(&claims.marked);
        apply_tuples(&mut self.map, &self.current, &next)?;
        self.current = next;
        if marks != self.current_marks {
            // In order, then the end: a packet read meanwhile sees old and new entries
            // mixed for a moment, never a list cut short of what stays.
            let end = marks.len().max(self.current_marks.len());
            for i in 0..end {
                let m = marks.get(i).copied().unwrap_or_default();
                let i = u32::try_from(i).map_err(program_err)?;
                self.marks.set(i, m, 0).map_err(program_err)?;
            }
            self.current_marks = marks;
        }
        Ok(())
    }
}

/// The tuple map as [`apply_tuples`] changes it (the kernel's map, or a test's).
trait TupleMap {
    fn put(&mut self, t: Tuple) -> Result<(), XdpError>;
    fn take(&mut self, t: &Tuple);
}

impl TupleMap for BpfHashMap<MapData, Tuple, u8> {
    fn put(&mut self, t: Tuple) -> Result<(), XdpError> {
        self.insert(t, 1, 0).map_err(program_err)
    }

    fn take(&mut self, t: &Tuple) {
        // A tuple already gone is no error: the map is wvs's alone.
        let _ = self.remove(t);
    }
}

/// Change a map holding `current` to hold `next`: the new tuples first, then the old ones
/// removed. An insert that fails takes out the tuples inserted before it, so that the map
/// holds `current` again (the running snapshot's claims).
fn apply_tuples(
    map: &mut impl TupleMap,
    current: &HashSet<Tuple>,
    next: &HashSet<Tuple>,
) -> Result<(), XdpError> {
    let added: Vec<Tuple> = next.difference(current).copied().collect();
    for (i, t) in added.iter().enumerate() {
        if let Err(e) = map.put(*t) {
            for done in &added[..i] {
                map.take(done);
            }
            return Err(e);
        }
    }
    for t in current.difference(next) {
        map.take(t);
    }
    Ok(())
}

/// The interfaces where the program answers SYNs with cookies itself (`wvs_synproxy_tx`):
/// those that send what an XDP program redirects into them, as the kernel says (see
/// [`super::netdev`]). A veth's answer
/// changes with its peer's GRO, so [`XdpTx::refresh`] asks again each time.
pub struct XdpTx {
    map: BpfHashMap<MapData, u32, u8>,
    /// Opened at the first refresh (none: the kernel has no netdev family).
    netdev: Option<super::netdev::Netdev>,
    ifaces: Vec<String>,
    /// Each interface's index and answer at the last refresh.
    on: std::collections::HashMap<String, (u32, bool)>,
}

impl std::fmt::Debug for XdpTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpTx")
            .field("on", &self.on)
            .finish_non_exhaustive()
    }
}

impl XdpTx {
    /// Ask the kernel again about every interface, and put into the map those whose
    /// redirected frames leave; a change is logged.
    pub fn refresh(&mut self) {
        use super::netdev::{Netdev, XDP_ACT_BASIC, XDP_ACT_NDO_XMIT};
        if self.netdev.is_none() {
            match Netdev::open() {
                Ok(n) => self.netdev = Some(n),
                Err(e) => {
                    tracing::info!(
                        "the kernel does not say where XDP redirects send ({e}): the datapath \
                         answers SYNs with cookies"
                    );
                    // Not asked again: an empty list.
                    self.ifaces.clear();
                    return;
                }
            }
        }
        let Some(netdev) = self.netdev.as_mut() else {
            return;
        };
        for name in &self.ifaces {
            let Ok(ifindex) = nix::net::if_::if_nametoindex(name.as_str()) else {
                continue;
            };
            let ok = netdev
                .xdp_features(ifindex)
                .is_ok_and(|f| f & XDP_ACT_BASIC != 0 && f & XDP_ACT_NDO_XMIT != 0);
            let was = self.on.insert(name.clone(), (ifindex, ok));
            if was == Some((ifindex, ok)) {
                continue;
            }
            if let Some((old, true)) = was {
                let _ = self.map.remove(&old);
            }
            if ok {
                if let Err(e) = self.map.insert(ifindex, 1, 0) {
                    tracing::warn!(iface = name, "the XDP program's interface map: {e}");
                }
                tracing::info!(iface = name, "the XDP program answers SYNs with cookies");
            } else {
                tracing::info!(
                    iface = name,
                    "the datapath answers SYNs with cookies: the kernel would drop what \
                     an XDP program sends here (a veth whose peer has neither GRO nor an XDP \
                     program: `ethtool -K PEER gro on` lets the XDP program answer)"
                );
            }
        }
    }
}

/// How many frames the program passed to the kernel (it counts them per CPU).
pub(crate) struct XdpPassed {
    map: PerCpuArray<MapData, u64>,
    last: u64,
}

impl std::fmt::Debug for XdpPassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPassed")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl XdpPassed {
    /// Frames passed since the last call.
    pub fn take(&mut self) -> Result<u64, XdpError> {
        let per_cpu = self.map.get(&0, 0).map_err(program_err)?;
        let total: u64 = per_cpu.iter().sum();
        let new = total.saturating_sub(self.last);
        self.last = total;
        Ok(new)
    }
}

/// The map's keys for `c`: IPv4's and IPv6's in one map, an IPv4 address mapped.
fn tuples(c: &Claims) -> HashSet<Tuple> {
    use std::net::IpAddr;
    let port = |a: IpAddr, p: crate::model::Protocol, port: u16, kind| Tuple {
        addr: wide(a),
        proto: p.number(),
        kind,
        port: port.to_be_bytes(),
    };
    let addr = |a: IpAddr, kind| Tuple {
        addr: wide(a),
        proto: 0,
        kind,
        port: [0; 2],
    };
    let data = |a: IpAddr, p: crate::model::Protocol, kind| Tuple {
        proto: p.number(),
        ..addr(a, kind)
    };
    let c6 = &c.v6;
    c.vips
        .iter()
        .map(|&(a, p, n)| port(a.into(), p, n, kind::VIP))
        .chain(
            c.reals
                .iter()
                .map(|&(a, p, n)| port(a.into(), p, n, kind::REAL)),
        )
        // The answers to checks through a VIP, from it: as a NAT server's replies are.
        .chain((c.check_answers.iter()).map(|&(a, p, n)| port(a.into(), p, n, kind::REAL)))
        .chain(c.vip_addrs.iter().map(|&a| addr(a.into(), kind::VIP_ADDR)))
        .chain(
            c.real_addrs
                .iter()
                .map(|&a| addr(a.into(), kind::REAL_ADDR)),
        )
        .chain(
            c.data_vips
                .iter()
                .map(|&(a, p)| data(a.into(), p, kind::DATA_VIP)),
        )
        .chain(
            c.data_reals
                .iter()
                .map(|&(a, p)| data(a.into(), p, kind::DATA_REAL)),
        )
        .chain(
            c6.vips
                .iter()
                .map(|&(a, p, n)| port(a.into(), p, n, kind::VIP)),
        )
        .chain(
            c6.reals
                .iter()
                .map(|&(a, p, n)| port(a.into(), p, n, kind::REAL)),
        )
        .chain(c6.vip_addrs.iter().map(|&a| addr(a.into(), kind::VIP_ADDR)))
        .chain(
            c6.real_addrs
                .iter()
                .map(|&a| addr(a.into(), kind::REAL_ADDR)),
        )
        .chain(
            c6.data_vips
                .iter()
                .map(|&(a, p)| data(a.into(), p, kind::DATA_VIP)),
        )
        .chain(
            c6.data_reals
                .iter()
                .map(|&(a, p)| data(a.into(), p, kind::DATA_REAL)),
        )
        .collect()
}

/// An address as the map keys it: IPv6's octets, IPv4's mapped (::ffff:a.b.c.d).
fn wide(a: std::net::IpAddr) -> [u8; 16] {
    match a {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

/// The UMEM: `len` bytes of fresh anonymous memory, populated.
fn map_umem(len: usize) -> io::Result<*mut u8> {
    // SAFETY: fresh anonymous memory; the result is checked, unmapped only on drop (or by
    // the caller if the socket cannot be set up).
    let umem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if umem == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mmap(UMEM): {e}")));
    }
    Ok(umem.cast::<u8>())
}

/// Register the UMEM with socket `s` and map its RX, fill and completion rings.
fn rings(s: libc::c_int, umem: *mut u8, umem_len: usize) -> io::Result<(Ring, Ring, Ring)> {
    let reg = libc::xdp_umem_reg {
        addr: umem as u64,
        len: umem_len as u64,
        chunk_size: XSK_CHUNK_SIZE,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(s, libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")?;
    setsockopt(
        s,
        libc::XDP_UMEM_FILL_RING,
        &XSK_CHUNKS,
        "XDP_UMEM_FILL_RING",
    )?;
    setsockopt(
        s,
        libc::XDP_UMEM_COMPLETION_RING,
        &XSK_COMPLETION_RING,
        "XDP_UMEM_COMPLETION_RING",
    )?;
    setsockopt(s, libc::XDP_RX_RING, &XSK_RX_RING, "XDP_RX_RING")?;
    let off: libc::xdp_mmap_offsets = getsockopt(s, libc::XDP_MMAP_OFFSETS, "XDP_MMAP_OFFSETS")?;
    let rx = Ring::map(
        s,
        &off.rx,
        XSK_RX_RING,
        std::mem::size_of::<libc::xdp_desc>(),
        libc::XDP_PGOFF_RX_RING,
        "RX ring",
    )?;
    let fill = Ring::map(
        s,
        &off.fr,
        XSK_CHUNKS,
        8,
        libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
        "fill ring",
    )?;
    let completion = Ring::map(
        s,
        &off.cr,
        XSK_COMPLETION_RING,
        8,
        libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        "completion ring",
    )?;
    Ok((rx, fill, completion))
}

/// Bind socket `s` to queue `queue` of interface `ifindex`, woken when it needs to be.
fn bind_xsk(s: libc::c_int, ifindex: u32, queue: u32) -> io::Result<()> {
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: libc::XDP_USE_NEED_WAKEUP,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `addr` lives across the call and its exact size is passed.
    let ret = unsafe {
        libc::bind(
            s,
            (&addr as *const libc::sockaddr_xdp).cast(),
            std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    check(ret, "bind(AF_XDP)").map(drop)
}

/// One mapped ring of an XDP socket: the shared producer and consumer indexes, the flags
/// word, and the descriptors.
struct Ring {
    map: *mut u8,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
    /// Our side's index: the consumer for the RX ring, the producer for the fill ring.
    head: u32,
}

impl Ring {
    /// Map ring `size` (descriptors of `desc_size` bytes) of socket `fd` at `pgoff`.
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        desc_size: usize,
        pgoff: libc::off_t,
        what: &str,
    ) -> io::Result<Self> {
        let map_len = off.desc as usize + size as usize * desc_size;
        // SAFETY: maps the socket's ring at the offset the kernel defines for it; the result
        // is checked, and unmapped only on drop.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if map == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("mmap({what}): {e}")));
        }
        let map = map.cast::<u8>();
        // SAFETY: the kernel's offsets (XDP_MMAP_OFFSETS) are inside the mapping it made,
        // and the indexes and flags are 4-byte aligned u32s it updates atomically.
        let ring = unsafe {
            let producer = map.add(off.producer as usize).cast::<AtomicU32>();
            let consumer = map.add(off.consumer as usize).cast::<AtomicU32>();
            Self {
                map,
                map_len,
                producer,
                consumer,
                flags: map.add(off.flags as usize).cast::<AtomicU32>(),
                desc: map.add(off.desc as usize),
                mask: size - 1,
                head: 0,
            }
        };
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the mapping (see `map`), alive as long as `self`.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as `producer`.
        unsafe { &*self.consumer }
    }

    fn flags(&self) -> u32 {
        // SAFETY: as `producer`.
        unsafe { &*self.flags }.load(Ordering::Relaxed)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `map` with this length; nothing borrows it now.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// An AF_XDP socket bound to one receive queue of one interface, with its own UMEM.
pub(crate) struct Xsk {
    // Rings before the socket and the UMEM: fields drop in order, and the rings are
    // mappings of the socket.
    rx: Ring,
    fill: Ring,
    _completion: Ring,
    fd: OwnedFd,
    umem: *mut u8,
    umem_len: usize,
    /// The interface's position in `--iface` (the datapath's interface number).
    pub port: u8,
    /// The receive queue.
    pub queue: u32,
    /// Zero-copy (the driver's) rather than copy mode.
    pub zero_copy: bool,
    last: libc::xdp_statistics,
}

// SAFETY: the UMEM and the rings are owned by this value alone (unmapped on drop) and only
// the worker thread that owns the value touches them; moving it to that thread is sound.
unsafe impl Send for Xsk {}

impl AsRawFd for Xsk {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A received frame: where its chunk starts in the UMEM, where the frame starts, its length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct XskFrame {
    /// Offset of the chunk.
    pub chunk: u64,
    /// Offset of the first byte of the frame.
    pub addr: usize,
    /// Bytes of the frame.
    pub len: usize,
}

impl Xsk {
    /// Open a socket on queue `queue` of interface `ifindex` (number `port` in `--iface`).
    pub fn open(ifindex: u32, queue: u32, port: u8) -> io::Result<Self> {
        Self::open_on(xsk_fd()?, ifindex, queue, port)
    }

    /// As [`Self::open`], on a socket opened elsewhere (the [`super::broker`]'s).
    pub(crate) fn open_on(fd: OwnedFd, ifindex: u32, queue: u32, port: u8) -> io::Result<Self> {
        let s = fd.as_raw_fd();
        let umem_len = (XSK_CHUNKS * XSK_CHUNK_SIZE) as usize;
        let umem = map_umem(umem_len)?;
        let (rx, fill, completion) = match rings(s, umem, umem_len) {
            Ok(r) => r,
            Err(e) => {
                drop(fd);
                // SAFETY: the mapping just made, not yet owned by a value.
                unsafe { libc::munmap(umem.cast(), umem_len) };
                return Err(e);
            }
        };
        let mut x = Self {
            rx,
            fill,
            _completion: completion,
            fd,
            umem,
            umem_len,
            port,
            queue,
            zero_copy: false,
            // SAFETY: a plain C struct of integers, valid zeroed.
            last: unsafe { std::mem::zeroed() },
        };
        // Every chunk to the kernel: the fill ring is exactly as large as the UMEM.
        for c in 0..XSK_CHUNKS {
            x.fill_push(u64::from(c) * u64::from(XSK_CHUNK_SIZE));
        }
        x.fill_commit();
        bind_xsk(s, ifindex, queue)?;
        let opts: libc::xdp_options = getsockopt(s, libc::XDP_OPTIONS, "XDP_OPTIONS")?;
        x.zero_copy = opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
        Ok(x)
    }

    /// How many received frames are ready, up to `max`; prefetches nothing.
    pub(crate) fn rx_ready(&self, max: u32) -> u32 {
        let prod = self.rx.producer().load(Ordering::Acquire);
        prod.wrapping_sub(self.rx.head).min(max)
    }

    /// The `ahead`-th ready frame (below what [`rx_ready`](Self::rx_ready) returned). A
    /// descriptor that would put the frame outside its chunk, or leave no room for the
    /// vnet header before it, has no bytes.
    pub(crate) fn rx_frame(&self, ahead: u32) -> XskFrame {
        let i = (self.rx.head.wrapping_add(ahead) & self.rx.mask) as usize;
        // SAFETY: `i` is below the ring's size, so the descriptor is inside the mapping;
        // the kernel wrote it before publishing the producer index we read (Acquire).
        let d = unsafe { self.rx.desc.cast::<libc::xdp_desc>().add(i).read_volatile() };
        let size = u64::from(XSK_CHUNK_SIZE);
        let chunk = d.addr & !(size - 1);
        let off = (d.addr - chunk) as usize;
        let len = d.len as usize;
        let valid = d.addr < self.umem_len as u64
            && off >= VNET_HDR_LEN
            && off + len <= XSK_CHUNK_SIZE as usize;
        XskFrame {
            chunk,
            addr: d.addr as usize,
            len: if valid { len } else { 0 },
        }
    }

    /// The frame's chunk from `VNET_HDR_LEN` bytes before the frame to the chunk's end.
    pub(crate) fn frame_buf(&mut self, f: &XskFrame) -> &mut [u8] {
        let start = f.addr.saturating_sub(VNET_HDR_LEN).max(f.chunk as usize);
        let end = f.chunk as usize + XSK_CHUNK_SIZE as usize;
        // SAFETY: `chunk` is a chunk of the UMEM (the descriptor was checked by `rx_frame`:
        // the range lies inside the UMEM and inside one chunk), the user's until it goes
        // back to the fill ring; the borrow of `self` ends before that can happen.
        unsafe { std::slice::from_raw_parts_mut(self.umem.add(start), end - start) }
    }

    /// The first bytes of the `ahead`-th ready frame, to prefetch and peek at.
    pub(crate) fn rx_bytes(&self, ahead: u32) -> &[u8] {
        let f = self.rx_frame(ahead);
        // SAFETY: as `frame_buf`, shared and only the frame's bytes.
        unsafe { std::slice::from_raw_parts(self.umem.add(f.addr), f.len) }
    }

    /// Hand `n` read descriptors back to the kernel.
    pub(crate) fn rx_release(&mut self, n: u32) {
        self.rx.head = self.rx.head.wrapping_add(n);
        self.rx.consumer().store(self.rx.head, Ordering::Release);
    }

    /// Put a chunk back in the fill ring (published by [`fill_commit`](Self::fill_commit)).
    /// It always fits: the ring has a place for every chunk of the UMEM.
    pub(crate) fn fill_push(&mut self, chunk: u64) {
        let i = (self.fill.head & self.fill.mask) as usize;
        // SAFETY: `i` is below the ring's size, so the slot is inside the mapping; the
        // kernel reads it only after the producer index moves past it.
        unsafe { self.fill.desc.cast::<u64>().add(i).write_volatile(chunk) };
        self.fill.head = self.fill.head.wrapping_add(1);
    }

    /// Publish the chunks put back since the last call, and wake the driver if it asked
    /// (`XDP_RING_NEED_WAKEUP`; a zero-copy driver waits for it, copy mode never asks).
    pub(crate) fn fill_commit(&mut self) {
        self.fill
            .producer()
            .store(self.fill.head, Ordering::Release);
        if self.fill.flags() & libc::XDP_RING_NEED_WAKEUP != 0 {
            // SAFETY: a receive of nothing, which only kicks the driver.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
    }

    /// Frames the kernel dropped since the last call: (RX ring full, other reasons: no free
    /// chunk in the fill ring, a frame too large for a chunk).
    pub(crate) fn take_drops(&mut self) -> io::Result<(u64, u64)> {
        let s: libc::xdp_statistics =
            getsockopt(self.as_raw_fd(), libc::XDP_STATISTICS, "XDP_STATISTICS")?;
        let full = s.rx_ring_full.saturating_sub(self.last.rx_ring_full);
        let other = (s.rx_dropped + s.rx_fill_ring_empty_descs)
            .saturating_sub(self.last.rx_dropped + self.last.rx_fill_ring_empty_descs);
        self.last = s;
        Ok((full, other))
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // The rings (fields) are unmapped after this, then the socket closed; the UMEM is
        // unmapped here, which is sound because the kernel holds its own reference to the
        // pages registered with XDP_UMEM_REG until the socket is gone.
        // SAFETY: the mapping was made in `open` with this length; nothing borrows it now.
        unsafe { libc::munmap(self.umem.cast(), self.umem_len) };
    }
}

/// A new `AF_XDP` socket, not yet bound (creating one takes CAP_NET_RAW).
pub(super) fn xsk_fd() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    let raw = check(raw, "socket(AF_XDP)")?;
    // SAFETY: `raw` is a new, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The receive queues in use on interface `name` (each gets an XDP socket): the driver's
/// count (`ETHTOOL_GCHANNELS`: its RX-only and combined channels; a veth's are its
/// `real_num_rx_queues`), else the `queues/rx-*` entries of sysfs, else one.
pub(crate) fn rx_queues(name: &str) -> u32 {
    /// `struct ethtool_channels` (`linux/ethtool.h`).
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    let mut ch = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    let from_driver = (|| {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a new, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value to start from.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        let bytes = name.as_bytes();
        if bytes.len() >= ifr.ifr_name.len() {
            return None;
        }
        for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_data = (&mut ch as *mut Channels).cast();
        // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at `ch`, which lives
        // across the call and is as large as the command's struct.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
        (ret == 0).then_some(ch.rx_count + ch.combined_count)
    })();
    if let Some(n) = from_driver.filter(|&n| n > 0) {
        return n;
    }
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(0)
        .max(1)
}

/// Where a frame's L4 checksum is, if its sender left it partial.
///
/// A frame redirected by XDP comes without the skb's metadata, and a local sender on a veth
/// (a client or server namespace of the tests, a container) offloads its checksums: the
/// field then holds the pseudo-header sum alone, which the packet-socket backends learn from
/// the vnet header (`NEEDS_CSUM`). Here it is recognised by its value; the frame is then
/// sent on with `NEEDS_CSUM`, so the kernel completes the checksum as it would have. A
/// complete checksum that happens to equal that sum (one frame in 65,536) is completed to
/// the same value, since the sum it stands for is the one the completion adds.
pub fn partial_csum(headers: &Headers, frame: &[u8]) -> Option<(u16, u16)> {
    use crate::wire::checksum::{pseudo_v4, pseudo_v6};
    let (next, l4_off, total_len) = if let Some(ip) = headers.ipv4() {
        if ip.fragment {
            return None;
        }
        (ip.next, ip.ihl, ip.total_len)
    } else {
        let ip = headers.ipv6()?;
        if ip.fragment.is_some() {
            return None;
        }
        (ip.next, ip.l4_off, ip.total_len)
    };
    let offset: usize = match next {
        6 => 16,
        17 => 6,
        132 => crate::wire::sctp::field::CHECKSUM.start,
        _ => return None,
    };
    let start = crate::wire::ETHERNET_HEADER_LEN + l4_off;
    let l4 = frame.get(start..crate::wire::ETHERNET_HEADER_LEN + total_len)?;
    if next == 132 {
        // SCTP's CRC32c left to the device reads 0 (`sctp_packet_pack`); one that is 0
        // and does not verify is taken as such, and completed when the frame is handled
        // (as the packet-socket backends complete it from the vnet header).
        let p = crate::wire::sctp::SctpPacket::new_checked(l4).ok()?;
        return (p.checksum() == 0 && !p.verify_checksum())
            .then_some((start as u16, offset as u16));
    }
    let field = l4.get(offset..offset + 2)?;
    let check = u16::from_be_bytes([field[0], field[1]]);
    let pseudo = match (headers.ipv4(), headers.ipv6()) {
        (Some(ip), _) => pseudo_v4(
            ip.saddr.octets(),
            ip.daddr.octets(),
            next,
            u16::try_from(l4.len()).ok()?,
        ),
        (None, Some(ip)) => pseudo_v6(ip.saddr.octets(), ip.daddr.octets(), next, l4.len() as u32),
        (None, None) => return None,
    };
    // UDP's 0 is "no checksum", never a partial one.
    (check == pseudo && check != 0).then_some((start as u16, offset as u16))
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T, what: &str) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its exact size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(ret, what).map(|_| ())
}

fn getsockopt<T>(fd: RawFd, name: libc::c_int, what: &str) -> io::Result<T> {
    // SAFETY: the option structs of SOL_XDP are plain C structs of integers, valid zeroed.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes across the call.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    check(ret, what)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(frame: &[u8]) -> Option<(u16, u16)> {
        partial_csum(&Headers::parse(frame), frame)
    }

    #[test]
    fn an_interface_that_comes_back_takes_the_slots_of_the_one_that_went() {
        let q = |ifindex, queue| Ifq { ifindex, queue };
        let mut s = Slots::default();
        for (i, queue) in [(2, 0), (2, 1), (3, 0)] {
            let slot = s.pick(q(i, queue)).expect("room");
            s.take(q(i, queue), slot);
        }
        assert_eq!(s.pick(q(2, 1)), Some(1), "a queue keeps its slot");
        // Interface 2 goes and comes back as 7, a thousand times: slots 0 and 1 again.
        for n in 0..1000 {
            let (old, new) = if n == 0 { (2, 7) } else { (7, 7) };
            let mut gone = s.forget(old);
            gone.sort_by_key(|g| g.queue);
            assert_eq!(gone, [q(old, 0), q(old, 1)]);
            let mut got = Vec::new();
            for queue in 0..2 {
                let slot = s.pick(q(new, queue)).expect("room");
                s.take(q(new, queue), slot);
                got.push(slot);
            }
            got.sort();
            assert_eq!(got, [0, 1]);
        }
        assert_eq!(s.used, 3);
        assert_eq!(s.pick(q(9, 0)), Some(3), "a new interface, a new slot");
        s.used = MAX_SOCKETS;
        assert_eq!(s.pick(q(9, 0)), None, "no more than the map holds");
    }

    #[test]
    fn tuples_follow_the_claims() {
        let cfg = crate::config::parse(
            "[[service]]\nprotocol = \"udp\"\naddress = \"198.18.100.1:53\"\n\
             [[service.real]]\naddress = \"198.19.0.11:5353\"\n\
             [[service.real]]\naddress = \"198.19.0.12\"\nforward = \"dr\"\n",
        )
        .expect("config");
        let snap = Snapshot::build_native(&cfg.services, &Snapshot::default());
        let t = tuples(&Claims::of(&snap));
        assert_eq!(t.len(), 4, "{t:?}");
        let v4 = |a: [u8; 4]| wide(std::net::Ipv4Addr::from(a).into());
        assert!(t.contains(&Tuple {
            addr: v4([198, 18, 100, 1]),
            proto: 17,
            kind: kind::VIP,
            port: [0, 53],
        }));
        assert!(t.contains(&Tuple {
            addr: v4([198, 19, 0, 11]),
            proto: 17,
            kind: kind::REAL,
            port: 5353u16.to_be_bytes(),
        }));
        assert!(t.contains(&Tuple {
            addr: v4([198, 18, 100, 1]),
            proto: 0,
            kind: kind::VIP_ADDR,
            port: [0; 2],
        }));
        // A DR server's packets are the kernel's.
        assert!(!t.iter().any(|t| t.addr == v4([198, 19, 0, 12])));
    }

    #[test]
    fn ipv6_services_share_the_map_with_their_own_addresses() {
        let cfg = crate::config::parse(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"[2001:db8:18:100::1]:80\"\n\
             [[service.real]]\naddress = \"[2001:db8:19::11]:8080\"\n\
             [[service]]\nprotocol = \"tcp\"\naddress = \"198.18.100.1:80\"\n\
             [[service.real]]\naddress = \"198.19.0.11:8080\"\n",
        )
        .expect("config");
        let snap = Snapshot::build_native(&cfg.services, &Snapshot::default());
        let t = tuples(&Claims::of(&snap));
        assert_eq!(t.len(), 8, "{t:?}");
        let vip6: std::net::Ipv6Addr = "2001:db8:18:100::1".parse().expect("v6");
        assert!(t.contains(&Tuple {
            addr: vip6.octets(),
            proto: 6,
            kind: kind::VIP,
            port: 80u16.to_be_bytes(),
        }));
        let rs6: std::net::Ipv6Addr = "2001:db8:19::11".parse().expect("v6");
        assert!(t.contains(&Tuple {
            addr: rs6.octets(),
            proto: 0,
            kind: kind::REAL_ADDR,
            port: [0; 2],
        }));
    }

    #[test]
    fn partial_checksums_are_recognised() {
        use crate::wire::checksum::{l4_v4, pseudo_v4};
        let (src, dst) = ([198, 18, 0, 2], [198, 18, 100, 1]);
        let mut seg = *b"\x9c\x40\x00\x35\x00\x10\x00\x00payload!";
        let frame = |seg: &[u8]| {
            let mut f = vec![0u8; 14 + 20];
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14] = 0x45;
            f[16..18].copy_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
            f[22] = 64;
            f[23] = 17;
            f[26..30].copy_from_slice(&src);
            f[30..34].copy_from_slice(&dst);
            f.extend_from_slice(seg);
            f
        };
        let pseudo = pseudo_v4(src, dst, 17, seg.len() as u16);
        seg[6..8].copy_from_slice(&pseudo.to_be_bytes());
        assert_eq!(partial(&frame(&seg)), Some((34, 6)));
        seg[6..8].copy_from_slice(&[0, 0]);
        let full = l4_v4(src, dst, 17, &seg);
        seg[6..8].copy_from_slice(&full.to_be_bytes());
        assert_eq!(partial(&frame(&seg)), None);
        // No checksum at all (UDP's 0).
        seg[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(partial(&frame(&seg)), None);
        // SCTP: a CRC32c left to the device is 0; a computed one is not taken for it.
        let mut sctp = vec![
            0x9c, 0x40, 0x13, 0xc4, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 8, 1, 2, 3, 4,
        ];
        let mut f = frame(&sctp);
        f[23] = 132;
        assert_eq!(partial(&f), Some((34, 8)));
        crate::wire::sctp::SctpPacket::new_unchecked(&mut sctp[..]).fill_checksum();
        let mut f = frame(&sctp);
        f[23] = 132;
        assert_eq!(partial(&f), None);
    }

    #[test]
    fn ipv6_partial_checksums_are_recognised() {
        use crate::wire::checksum::{l4_v6, pseudo_v6};
        let src: [u8; 16] = "2001:db8:18::2"
            .parse::<std::net::Ipv6Addr>()
            .expect("a")
            .octets();
        let dst: [u8; 16] = "2001:db8:18:100::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("a")
            .octets();
        let mut seg = *b"\x9c\x40\x00\x35\x00\x10\x00\x00payload!";
        let frame = |seg: &[u8]| {
            let mut f = vec![0u8; 14 + 40];
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f[14] = 0x60;
            f[18..20].copy_from_slice(&(seg.len() as u16).to_be_bytes());
            f[20] = 17;
            f[21] = 64;
            f[22..38].copy_from_slice(&src);
            f[38..54].copy_from_slice(&dst);
            f.extend_from_slice(seg);
            f
        };
        let pseudo = pseudo_v6(src, dst, 17, seg.len() as u32);
        seg[6..8].copy_from_slice(&pseudo.to_be_bytes());
        assert_eq!(partial(&frame(&seg)), Some((54, 6)));
        seg[6..8].copy_from_slice(&[0, 0]);
        let full = l4_v6(src, dst, 17, &seg);
        seg[6..8].copy_from_slice(&full.to_be_bytes());
        assert_eq!(partial(&frame(&seg)), None);
    }

    #[test]
    fn the_program_is_embedded() {
        // The build compiles it whenever clang is there (CI installs it).
        assert!(!OBJECT.is_empty(), "built without clang");
    }

    /// A map that fails its `fail_at`-th insert.
    #[derive(Default)]
    struct FlakyMap {
        held: HashSet<Tuple>,
        inserts: usize,
        fail_at: Option<usize>,
    }

    impl TupleMap for FlakyMap {
        fn put(&mut self, t: Tuple) -> Result<(), XdpError> {
            self.inserts += 1;
            if Some(self.inserts) == self.fail_at {
                return Err(XdpError::Program("map full (test)".into()));
            }
            self.held.insert(t);
            Ok(())
        }

        fn take(&mut self, t: &Tuple) {
            self.held.remove(t);
        }
    }

    fn tuple(n: u8) -> Tuple {
        Tuple {
            addr: wide(std::net::Ipv4Addr::new(198, 18, 100, n).into()),
            proto: 6,
            kind: 0,
            port: 80u16.to_be_bytes(),
        }
    }

    /// An update that fails half-way leaves the map as it was: what it inserted is taken
    /// out, what it was to remove stays.
    #[test]
    fn a_failed_map_update_leaves_the_running_claims() {
        let current: HashSet<Tuple> = (1..=3).map(tuple).collect();
        let next: HashSet<Tuple> = (3..=8).map(tuple).collect();
        let mut m = FlakyMap {
            held: current.clone(),
            fail_at: Some(3),
            ..Default::default()
        };
        assert!(apply_tuples(&mut m, &current, &next).is_err());
        assert_eq!(m.held, current);
        let mut m = FlakyMap {
            held: current.clone(),
            ..Default::default()
        };
        apply_tuples(&mut m, &current, &next).expect("applied");
        assert_eq!(m.held, next);
    }

    /// Run the program on `frame` (`BPF_PROG_TEST_RUN`: nothing is sent): its verdict and
    /// the frame as it left the program.
    fn run(prog: &XdpProgram, frame: &[u8]) -> (u32, Vec<u8>) {
        use aya::programs::{TestRun, TestRunOptions};
        let mut out = vec![0u8; frame.len() + 256];
        let Some(aya::programs::Program::Xdp(p)) = prog.ebpf.program(PROGRAM) else {
            panic!("no XDP program");
        };
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// The program answers a SYN to a synproxied service, redirected back where it came
    /// in, byte for byte as the datapath (and the tc program) would (`synproxy::cases`),
    /// where redirected frames leave; other SYNs, and one with data, are left to wvs
    /// (passed here: no socket takes them). Needs root.
    #[test]
    fn the_program_answers_a_syn_as_the_datapath_does() {
        const XDP_PASS: u32 = 2;
        const XDP_REDIRECT: u32 = 4;
        for v6 in [false, true] {
            let c = crate::io::synproxy::cases::of(v6);
            let (prog, _filter, _passed) =
                XdpProgram::load().expect("the XDP program loads (root?)");
            let mut sp = prog.synproxy().expect("its synproxy maps");
            sp.start(c.h.conns.defense(), std::time::Instant::now())
                .expect("the key");
            // Nothing answered before the services are known.
            assert_eq!(run(&prog, &c.answered[0].0).0, XDP_PASS);
            sp.sync(&c.snap.load(), c.h.conns.defense());
            // Nor on an interface that would not send it (a test run's frames come
            // in on the loopback device).
            assert_eq!(run(&prog, &c.answered[0].0).0, XDP_PASS);
            let mut tx = prog.synproxy_tx(Vec::new()).expect("its interface map");
            tx.map.insert(1, 1, 0).expect("lo in the map");
            for (i, (syn, answer)) in c.answered.iter().enumerate() {
                let (r, bpf) = run(&prog, syn);
                assert_eq!(r, XDP_REDIRECT, "v6 {v6}, options {i}");
                assert_eq!(&bpf, answer, "v6 {v6}, options {i}");
            }
            for syn in &c.left {
                assert_eq!(run(&prog, syn).0, XDP_PASS);
            }
            assert_eq!(sp.sent(), Some(c.answered.len() as u64));
        }
    }
}
