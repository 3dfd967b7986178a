//! Flow offload (`wvs run --offload tc`): the kernel carries the packets of connections wvs
//! has decided (see `wvs_core::offload` for which and when).
//!
//! - [`Offload`]: wvs's tc-BPF program and socket filter (`host/bpf/wvs_offload.c`, built
//!   by the build with `clang -target bpf`, loaded with aya) and their map of flows. The
//!   program is attached to every interface's tc ingress (tcx, a BPF link the kernel
//!   removes when wvs exits); the filter to every packet socket that receives, so that a
//!   frame the program will carry is never copied into a ring.
//! - [`MapSink`]: what a worker's datapath offers flows to; its own handle on the map, so
//!   workers take no lock to write it.
//! - [`Keeper`]: every `OFFLOAD_MERGE_MS`, reads what the program carried for each flow,
//!   merges it into the connection table and the counters (`offload::merge`), and takes
//!   out the flows whose connection ended or moved on.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::{ProgramError, SchedClassifier, SocketFilter, TcAttachType};

use super::synproxy::{SpMaps, monotonic_ns};
use crate::conn::{ConnKey, ConnTable};
use crate::model::Protocol;
use crate::offload::{Carried, Flow, FlowSink, Offered};
use crate::service::Snapshot;
use crate::spec::SyncSettings;

/// The compiled program (empty when the build had no clang).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wvs_offload.o"));

/// The programs' and the map's names (in `wvs_offload.c`).
const PROG_TC: &str = "wvs_offload_tc";
const PROG_SK: &str = "wvs_offload_sk";
const MAP_FLOWS: &str = "wvs_flows";
const MAP_STATS: &str = "wvs_flow_stats";

/// A key of `wvs_flows` (`struct flow_key`): a packet's endpoints as it arrives, addresses
/// and ports as on the wire, an IPv4 address mapped into IPv6's.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
    proto: u8,
    pad: [u8; 3],
}

// SAFETY: plain data of 40 bytes (its padding spelled out), valid for every bit pattern.
unsafe impl aya::Pod for FlowKey {}

/// A value of `wvs_flows` (`struct flow_val`): what the packet becomes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowValue {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
    mtu: u32,
    tun: u8,
    tun_flags: u8,
    ident: [u8; 2],
    gue_sport: [u8; 2],
    gue_dport: [u8; 2],
}

/// `flow_val`'s tunnel kinds and flags.
const TUN_IPIP: u8 = 1;
const TUN_GUE: u8 = 2;
const TUN_GRE: u8 = 3;
const TUN_F_V6: u8 = 1;
const TUN_F_DF: u8 = 2;

// SAFETY: plain data of 64 bytes without padding, valid for every bit pattern.
unsafe impl aya::Pod for FlowValue {}

/// A value of `wvs_flow_stats` (`struct flow_stats`): what the program carried for a flow
/// (written by the program; removed by the keeper alone, once merged).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    packets: u64,
    bytes: u64,
    seen_ns: u64,
}

// SAFETY: plain data of 24 bytes without padding, valid for every bit pattern.
unsafe impl aya::Pod for FlowStats {}

impl FlowKey {
    /// The map's key for `k`.
    pub fn of(k: &ConnKey) -> Self {
        Self {
            saddr: crate::offload::wide(k.saddr),
            daddr: crate::offload::wide(k.daddr),
            sport: k.sport.to_be_bytes(),
            dport: k.dport.to_be_bytes(),
            proto: k.proto.number(),
            pad: [0; 3],
        }
    }

    /// The connection key it stands for (`None`: not a protocol wvs offloads).
    fn conn_key(&self) -> Option<ConnKey> {
        Some(ConnKey {
            proto: Protocol::from_number(self.proto)?,
            saddr: narrow(self.saddr),
            sport: u16::from_be_bytes(self.sport),
            daddr: narrow(self.daddr),
            dport: u16::from_be_bytes(self.dport),
        })
    }
}

/// An address as the map holds it, back: a mapped IPv4 address is IPv4.
fn narrow(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

impl FlowValue {
    /// The map's value for `f`, leaving on the interface of index `ifindex`. A tunnel's
    /// holds the outer header's addresses where the others hold the new ones (its inner
    /// packet keeps its own).
    pub fn of(f: &Flow, ifindex: u32) -> Self {
        let mut v = Self {
            saddr: crate::offload::wide(f.to.saddr),
            daddr: crate::offload::wide(f.to.daddr),
            sport: f.to.sport.to_be_bytes(),
            dport: f.to.dport.to_be_bytes(),
            ifindex,
            smac: f.link.src_mac,
            dmac: f.link.dst_mac,
            mtu: f.mtu,
            ..Self::default()
        };
        if let Some(e) = f.encap {
            v.saddr = crate::offload::wide(e.src);
            v.daddr = crate::offload::wide(e.dst);
            v.tun = match e.kind {
                crate::model::TunKind::Ipip => TUN_IPIP,
                crate::model::TunKind::Gue => TUN_GUE,
                crate::model::TunKind::Gre => TUN_GRE,
            };
            v.tun_flags =
                if e.dst.is_ipv6() { TUN_F_V6 } else { 0 } | if e.pmtu_disc { TUN_F_DF } else { 0 };
            v.ident = e.ident.to_be_bytes();
            v.gue_sport = e.ports.0.to_be_bytes();
            v.gue_dport = e.ports.1.to_be_bytes();
        }
        v
    }
}

/// Why the offload cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// wvs was built without clang.
    #[error(
        "wvs was built without its offload program (clang was missing at build time): \
         install clang (scripts/setup.sh does) and rebuild, or run with --offload off"
    )]
    NotBuilt,
    /// Loading the program or a map failed.
    #[error(
        "offload program: {0} (it needs kernel 6.6 or later for tcx, and CAP_BPF with CAP_NET_ADMIN)"
    )]
    Program(String),
    /// Attaching it to an interface or a socket failed.
    #[error("cannot attach the offload program to {what}: {reason}")]
    Attach {
        /// The interface or socket.
        what: String,
        /// The kernel's answer.
        reason: String,
    },
}

fn program_err(e: impl std::fmt::Display) -> OffloadError {
    OffloadError::Program(e.to_string())
}

/// The loaded programs and their map.
pub struct Offload {
    ebpf: Ebpf,
    /// Kernel interface index of each of wvs's interfaces, by the datapath's number
    /// (updated when an interface comes back under another index).
    ifindex: Arc<[AtomicU32]>,
    attached: Vec<String>,
    /// Flows carried, packets and bytes merged, flows in the map now.
    pub counters: Arc<OffloadCounters>,
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

/// What the keeper counts, for `/metrics`, and a handle on the map for the API's
/// listing of connections.
pub struct OffloadCounters {
    /// Packets the program carried (merged so far).
    pub packets: AtomicU64,
    /// Their bytes (IP length).
    pub bytes: AtomicU64,
    /// Flows in the map at the last merge.
    pub flows: AtomicU64,
    /// SYNs the tc program answered with a cookie (summed at each merge).
    pub cookies: AtomicU64,
    map: parking_lot::Mutex<BpfHashMap<MapData, FlowKey, FlowValue>>,
    /// Merges begun, and (watched) ended: a reader waits for one that began after it asked.
    begun: AtomicU64,
    ended: tokio::sync::watch::Sender<u64>,
    /// Wakes the keeper (a bound of one: a pending wake-up is a merge to come).
    kick: std::sync::OnceLock<std::sync::mpsc::SyncSender<()>>,
}

impl std::fmt::Debug for OffloadCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadCounters")
            .field("packets", &self.packets)
            .field("flows", &self.flows)
            .finish_non_exhaustive()
    }
}

impl OffloadCounters {
    /// Whether the program carries the flow of key `k` now.
    pub fn carries(&self, k: &ConnKey) -> bool {
        self.map.lock().get(&FlowKey::of(k), 0).is_ok()
    }

    /// How the keeper is woken before its time (`Keeper::run`'s receiver).
    pub fn set_kick(&self, kick: std::sync::mpsc::SyncSender<()>) {
        let _ = self.kick.set(kick);
    }

    /// Wake the keeper, and wait (at most `within`) until a merge that began after this
    /// call has ended: the counters then hold what the program carried until now.
    pub async fn fresh(&self, within: Duration) {
        let asked = self.begun.load(SeqCst);
        let mut ended = self.ended.subscribe();
        if let Some(k) = self.kick.get() {
            // Full: a wake-up is pending, and its merge begins after this.
            let _ = k.try_send(());
        }
        let _ = tokio::time::timeout(within, ended.wait_for(|&e| e > asked)).await;
    }
}

impl Offload {
    /// Load the programs and the map into the kernel (nothing attached yet), for the
    /// interfaces of these kernel indexes, in the datapath's order.
    pub fn load(ifindexes: &[u32]) -> Result<Self, OffloadError> {
        if OBJECT.is_empty() {
            return Err(OffloadError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(program_err)?;
        let tc: &mut SchedClassifier = program(&mut ebpf, PROG_TC)?;
        tc.load().map_err(program_err)?;
        let sk: &mut SocketFilter = program(&mut ebpf, PROG_SK)?;
        sk.load().map_err(program_err)?;
        let map = map_handle(&ebpf, MAP_FLOWS)?;
        map_handle::<FlowStats>(&ebpf, MAP_STATS)?;
        Ok(Self {
            ebpf,
            ifindex: ifindexes.iter().map(|&i| AtomicU32::new(i)).collect(),
            attached: Vec::new(),
            counters: Arc::new(OffloadCounters {
                packets: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                flows: AtomicU64::new(0),
                cookies: AtomicU64::new(0),
                map: parking_lot::Mutex::new(map),
                begun: AtomicU64::new(0),
                ended: tokio::sync::watch::Sender::new(0),
                kick: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Attach the tc program to `iface`'s ingress.
    pub fn attach(&mut self, iface: &str) -> Result<(), OffloadError> {
        let tc: &mut SchedClassifier = program(&mut self.ebpf, PROG_TC)?;
        tc.attach(iface, TcAttachType::Ingress)
            .map_err(|e| OffloadError::Attach {
                what: iface.to_string(),
                reason: reason(&e),
            })?;
        if !self.attached.iter().any(|a| a == iface) {
            self.attached.push(iface.to_string());
        }
        tracing::info!(iface, "offload program attached (tc ingress)");
        Ok(())
    }

    /// Keep the frames the program carries out of `socket` (a receiving packet socket).
    pub fn filter(&mut self, socket: BorrowedFd<'_>) -> Result<(), OffloadError> {
        let sk: &mut SocketFilter = program(&mut self.ebpf, PROG_SK)?;
        sk.attach(socket).map_err(|e| OffloadError::Attach {
            what: format!("packet socket {}", socket.as_raw_fd()),
            reason: reason(&e),
        })?;
        Ok(())
    }

    /// Interface `slot` came back as kernel interface `ifindex`.
    pub fn set_ifindex(&self, slot: usize, ifindex: u32) {
        if let Some(i) = self.ifindex.get(slot) {
            i.store(ifindex, Relaxed);
        }
    }

    /// A handle on the flows' map (its own descriptor).
    fn map(&self) -> Result<BpfHashMap<MapData, FlowKey, FlowValue>, OffloadError> {
        map_handle(&self.ebpf, MAP_FLOWS)
    }

    /// A handle on the counters' map.
    fn stats(&self) -> Result<BpfHashMap<MapData, FlowKey, FlowStats>, OffloadError> {
        map_handle(&self.ebpf, MAP_STATS)
    }

    /// A worker's sink.
    pub fn sink(&self) -> Result<MapSink, OffloadError> {
        Ok(MapSink {
            map: RefCell::new(self.map()?),
            stats: RefCell::new(self.stats()?),
            ifindex: self.ifindex.clone(),
        })
    }

    /// The keeper, merging into `conns` on the datapath clock that started at `epoch`. It
    /// gives the tc program the synproxy's key and clock (`conns`' defense's) at once.
    pub fn keeper(&self, conns: Arc<ConnTable>, epoch: Instant) -> Result<Keeper, OffloadError> {
        let mut sp = SpMaps::open(&self.ebpf).map_err(program_err)?;
        sp.start(conns.defense(), epoch).map_err(program_err)?;
        Ok(Keeper {
            sp,
            map: self.map()?,
            stats: self.stats()?,
            ifindex: self.ifindex.clone(),
            conns,
            epoch,
            last: HashMap::new(),
            counters: self.counters.clone(),
            snapshot: None,
        })
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        // The links go with the program (aya detaches them as it drops it).
        if !self.attached.is_empty() {
            tracing::info!(ifaces = ?self.attached, "offload program detached");
        }
    }
}

/// A handle on map `name` (its own descriptor, so that each holder writes it without
/// sharing one).
fn map_handle<V: aya::Pod>(
    ebpf: &Ebpf,
    name: &str,
) -> Result<BpfHashMap<MapData, FlowKey, V>, OffloadError> {
    let data = MapData::from_fd(map_fd(ebpf, name)?).map_err(program_err)?;
    BpfHashMap::try_from(aya::maps::Map::HashMap(data)).map_err(program_err)
}

/// A descriptor of its own for map `name`.
fn map_fd(ebpf: &Ebpf, name: &str) -> Result<std::os::fd::OwnedFd, OffloadError> {
    let Some(aya::maps::Map::HashMap(m)) = ebpf.map(name) else {
        return Err(OffloadError::Program(format!("map {name} missing")));
    };
    m.fd().as_fd().try_clone_to_owned().map_err(program_err)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, OffloadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| OffloadError::Program(format!("program {name} missing")))?
        .try_into()
        .map_err(program_err)
}

/// The kernel's refusal.
fn reason(e: &ProgramError) -> String {
    match e {
        ProgramError::SyscallError(s) => format!("{} failed: {}", s.call, s.io_error),
        _ => e.to_string(),
    }
}

/// `bpf_map_update_elem`'s flag: only a key not in the map.
const BPF_NOEXIST: u64 = 1;

/// The errno of a map operation's failure.
fn errno(e: &aya::maps::MapError) -> Option<i32> {
    match e {
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// A worker's handle on the map: the datapath offers and withdraws flows through it.
pub struct MapSink {
    map: RefCell<BpfHashMap<MapData, FlowKey, FlowValue>>,
    stats: RefCell<BpfHashMap<MapData, FlowKey, FlowStats>>,
    ifindex: Arc<[AtomicU32]>,
}

impl std::fmt::Debug for MapSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapSink").finish_non_exhaustive()
    }
}

impl FlowSink for MapSink {
    fn offer(&self, flows: &[Flow]) -> Offered {
        let mut map = self.map.borrow_mut();
        let mut stats = self.stats.borrow_mut();
        let mut taken = 0;
        for (n, f) in flows.iter().enumerate() {
            let Some(ifindex) = self.ifindex.get(usize::from(f.link.iface)) else {
                return Offered::Refused;
            };
            let v = FlowValue::of(f, ifindex.load(Relaxed));
            let key = FlowKey::of(&f.key);
            // The counters first, so that the program counts from the flow's first packet;
            // ones not merged yet (the flow was here before) stay.
            match stats.insert(key, FlowStats::default(), BPF_NOEXIST) {
                Err(e) if errno(&e) != Some(libc::EEXIST) => return Offered::Refused,
                _ => {}
            }
            match map.insert(key, v, BPF_NOEXIST) {
                Ok(()) => taken += 1,
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(_) => {
                    // Full: none of the connection's new flows, not half of them.
                    for g in &flows[..n] {
                        let _ = map.remove(&FlowKey::of(&g.key));
                    }
                    return Offered::Refused;
                }
            }
        }
        if taken > 0 {
            Offered::Taken
        } else {
            Offered::Held
        }
    }

    fn withdraw(&self, keys: &[ConnKey]) {
        let mut map = self.map.borrow_mut();
        for k in keys {
            let _ = map.remove(&FlowKey::of(k));
        }
    }
}

/// Merges what the program carried, every `OFFLOAD_MERGE_MS` (see the module's doc).
pub struct Keeper {
    /// The services the tc program answers SYNs for, and its count of answers.
    sp: SpMaps,
    map: BpfHashMap<MapData, FlowKey, FlowValue>,
    stats: BpfHashMap<MapData, FlowKey, FlowStats>,
    /// Kernel interface indexes by wvs's interface slot.
    ifindex: Arc<[AtomicU32]>,
    conns: Arc<ConnTable>,
    epoch: Instant,
    /// Each flow's counters at the previous merge.
    last: HashMap<FlowKey, FlowStats>,
    counters: Arc<OffloadCounters>,
    /// The published services, for the sync daemon's settings (none: IPVS's defaults).
    snapshot: Option<Arc<ArcSwap<Snapshot>>>,
}

impl Keeper {
    /// Read the sync daemon's settings (`sync_threshold` and the rest, which the carried
    /// packets count toward while a master runs) from the published `snapshot`.
    pub fn with_snapshot(mut self, snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// Merge every `OFFLOAD_MERGE_MS`, and at once when `kick` says the services changed,
    /// until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool, kick: &std::sync::mpsc::Receiver<()>) {
        let every = Duration::from_millis(crate::consts::OFFLOAD_MERGE_MS);
        // At once: the program learns at start which services answer SYNs with cookies.
        self.synproxy();
        while !stop.load(Relaxed) {
            match kick.recv_timeout(every) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                // No controller any more: on the clock alone.
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(every),
            }
            let n = self.counters.begun.fetch_add(1, SeqCst) + 1;
            self.merge();
            self.counters.ended.send_replace(n);
        }
    }

    /// One merge: every flow's counters, once.
    pub fn merge(&mut self) {
        // The program's clock (CLOCK_MONOTONIC, bpf_ktime_get_ns) against the datapath's
        // (ms since `epoch`).
        let now_ns = monotonic_ns();
        let epoch_ns = now_ns.saturating_sub(self.epoch.elapsed().as_nanos() as u64);
        let mut seen = HashMap::with_capacity(self.last.len());
        let mut gone = Vec::new();
        // In batches (one system call for thousands of flows), or one by one where the
        // kernel has no batch lookup; a flow removed during a one-by-one walk may restart
        // it: each key is merged once.
        let walked = read_all(&self.stats);
        let sync = self
            .snapshot
            .as_ref()
            .map(|s| s.load().sysctl.sync)
            .unwrap_or_default();
        // Where each flow leaves now, against where wvs's neighbour table says it should.
        let hops: HashMap<FlowKey, FlowValue> = read_all(&self.map).into_iter().collect();
        for (key, v) in walked {
            if seen.contains_key(&key) {
                continue;
            }
            let stay = self.take(&key, v, epoch_ns, &sync) && self.hop_holds(&key, hops.get(&key));
            seen.insert(key, v);
            if !stay {
                gone.push(key);
            }
        }
        for k in &gone {
            // The flow first, so that nothing is counted after the last read; then what
            // it carried since the walk.
            let _ = self.map.remove(k);
            if let Ok(v) = self.stats.get(k, 0) {
                if let Some(&was) = seen.get(k) {
                    self.last.insert(*k, was);
                }
                self.take(k, v, epoch_ns, &sync);
            }
            let _ = self.stats.remove(k);
            seen.remove(k);
        }
        self.counters.flows.store(seen.len() as u64, Relaxed);
        self.last = seen;
        self.synproxy();
    }

    /// Tell the tc program which services answer SYNs with cookies now (their own mode,
    /// or the defense's, which flips at most once a second), and read how many it sent.
    fn synproxy(&mut self) {
        if let Some(snap) = &self.snapshot {
            self.sp.sync(&snap.load(), self.conns.defense());
        }
        if let Some(n) = self.sp.sent() {
            self.counters.cookies.store(n, Relaxed);
        }
    }

    /// Whether the flow `key`, carried as `v`, still leaves by its connection's next hop
    /// (none read: not carried now, nothing to say).
    fn hop_holds(&self, key: &FlowKey, v: Option<&FlowValue>) -> bool {
        let Some(v) = v else {
            return true;
        };
        let now = key
            .conn_key()
            .and_then(|k| crate::offload::next_hop(&self.conns, &k));
        now.is_some_and(|(iface, mac)| {
            let ifindex = self.ifindex.get(usize::from(iface));
            ifindex.is_some_and(|i| i.load(Relaxed) == v.ifindex) && mac == v.dmac
        })
    }

    /// Merge what flow `key` carried since the last merge (`v` now); whether it stays.
    fn take(&mut self, key: &FlowKey, v: FlowStats, epoch_ns: u64, sync: &SyncSettings) -> bool {
        let was = self.last.get(key).copied().unwrap_or_default();
        let carried = Carried {
            packets: v.packets.saturating_sub(was.packets),
            bytes: v.bytes.saturating_sub(was.bytes),
            seen: (v.seen_ns != was.seen_ns && v.seen_ns != 0)
                .then(|| v.seen_ns.saturating_sub(epoch_ns) / 1_000_000),
        };
        self.counters.packets.fetch_add(carried.packets, Relaxed);
        self.counters.bytes.fetch_add(carried.bytes, Relaxed);
        key.conn_key().is_some_and(|k| {
            crate::offload::merge(&self.conns, &k, carried, crate::consts::OFFLOAD_SLOT, sync)
        })
    }
}

/// Every entry of `map`: in batches, or one by one where the kernel has no batch lookup.
fn read_all<V: aya::Pod + Default>(map: &BpfHashMap<MapData, FlowKey, V>) -> Vec<(FlowKey, V)> {
    lookup_batch(map).unwrap_or_else(|_| {
        map.iter()
            .filter_map(Result::ok)
            .take(crate::consts::OFFLOAD_FLOWS as usize)
            .collect()
    })
}

/// `bpf(2)`'s command and `union bpf_attr`'s member for it (include/uapi/linux/bpf.h): aya
/// has no batch operations.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

#[repr(C, align(8))]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Flows read per batch.
const BATCH: usize = 4096;

/// Every entry of `map` (the counters' or the flows'), `BATCH` at a time
/// (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6): at 100,000 flows, 25 system calls a merge instead
/// of 200,000.
fn lookup_batch<V: aya::Pod + Default>(
    map: &BpfHashMap<MapData, FlowKey, V>,
) -> std::io::Result<Vec<(FlowKey, V)>> {
    let fd = aya::maps::IterableMap::map(map).fd().as_fd();
    let mut out = Vec::new();
    let mut keys = vec![FlowKey::default(); BATCH];
    let mut values = vec![V::default(); BATCH];
    // The hash map's cursor is a bucket number (u32); room for more.
    let (mut cursor_in, mut cursor_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::addr_of!(cursor_in) as u64
            },
            out_batch: std::ptr::addr_of_mut!(cursor_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is the batch member of `union bpf_attr` with its exact size; the
        // buffers it points to hold `count` keys and values of the map's sizes (FlowKey
        // and `V`, whose sizes aya checked against the map's when it made the handle) and
        // the cursors 8 bytes each, and all live across the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::addr_of_mut!(attr),
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (ret < 0).then(std::io::Error::last_os_error);
        let n = (attr.count as usize).min(BATCH);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match err {
            None => {}
            // The end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(e) => return Err(e),
        }
        if out.len() > crate::consts::OFFLOAD_FLOWS as usize {
            return Ok(out);
        }
        cursor_in = cursor_out;
        first = false;
    }
}

#[cfg(test)]
impl Offload {
    /// Run the tc program on `frame` (`BPF_PROG_TEST_RUN`: nothing is sent): its verdict
    /// and the frame as it left the program.
    fn run_tc(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.test_run(PROG_TC, frame)
    }

    /// Run the socket filter on `frame`: how much of it a packet socket would get.
    fn run_filter(&self, frame: &[u8]) -> u32 {
        // A test run of a socket filter starts the packet after the link-layer header,
        // where a packet socket (SOCK_RAW) starts it at the frame: give it one more.
        let mut f = frame[..14].to_vec();
        f.extend_from_slice(frame);
        self.test_run(PROG_SK, &f).0
    }

    fn test_run(&self, name: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        use aya::programs::{TestRun, TestRunOptions};
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.ebpf.program(name).expect("the program");
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        };
        let r = match prog {
            aya::programs::Program::SchedClassifier(p) => p.test_run(opts),
            aya::programs::Program::SocketFilter(p) => p.test_run(opts),
            _ => panic!("{name} is neither"),
        }
        .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// How many flows the map holds.
    fn flows(&self) -> usize {
        self.map().expect("the map").keys().count()
    }
}

/// The tc program against the datapath: on the frames of established connections of every
/// method it offloads, both families, TCP and UDP, it must write byte for byte what the
/// datapath writes (checksums included), and leave to wvs what the datapath must decide.
/// Needs root (CAP_BPF) and kernel 6.6 or later, as `--offload tc` does.
#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    use super::*;
    use crate::datapath::Verdict;
    use crate::model::Forward;
    use crate::spec::Service;
    use wvs_core::testkit::{
        CLIENT, CLIENT_IF_MAC, CLIENT_MAC, CLIENT6, FROM_CLIENT, FROM_RS, Harness, SERVER_IF_MAC,
        VIP, VIP6, real_by, rr, rs_mac, rs6, service6,
    };

    const TC_ACT_OK: u32 = 0;
    const TC_ACT_REDIRECT: u32 = 7;

    #[derive(Clone, Copy, PartialEq)]
    enum Seg {
        Syn,
        SynAck,
        Ack,
        Data,
        Fin,
    }

    /// A frame between `src` and `dst`, of either family.
    fn frame(
        macs: ([u8; 6], [u8; 6]),
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        proto: Protocol,
        seg: Seg,
        ttl: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(macs.0, macs.1);
        let b = match (src.0, dst.0) {
            (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), ttl),
            _ => panic!("one family"),
        };
        let mut v = Vec::new();
        if proto == Protocol::Udp {
            b.udp(src.1, dst.1).write(&mut v, payload).expect("a frame");
            return v;
        }
        let t = b.tcp(src.1, dst.1, 7000, 64240);
        let t = match seg {
            Seg::Syn => t.syn(),
            Seg::SynAck => t.syn().ack(7001),
            Seg::Ack => t.ack(7001),
            Seg::Data => t.psh().ack(7001),
            Seg::Fin => t.fin().ack(7001),
        };
        t.write(&mut v, payload).expect("a frame");
        v
    }

    /// The source of a frame the datapath sent.
    fn source(f: &[u8]) -> (IpAddr, u16) {
        let p = SlicedPacket::from_ethernet(f).expect("a frame");
        let a = match p.net {
            Some(etherparse::NetSlice::Ipv4(h)) => IpAddr::V4(h.header().source_addr()),
            Some(etherparse::NetSlice::Ipv6(h)) => IpAddr::V6(h.header().source_addr()),
            _ => panic!("IP"),
        };
        let port = match p.transport {
            Some(TransportSlice::Tcp(t)) => t.source_port(),
            Some(TransportSlice::Udp(u)) => u.source_port(),
            _ => panic!("TCP or UDP"),
        };
        (a, port)
    }

    struct Case {
        h: Harness,
        off: Offload,
        proto: Protocol,
        client: (IpAddr, u16),
        vip: (IpAddr, u16),
        server: (IpAddr, u16),
        server_mac: [u8; 6],
        /// Where the server sees the client (the client, or full NAT's local address).
        seen_as: Option<(IpAddr, u16)>,
        now: u64,
    }

    impl Case {
        fn new(svc: Service, server: (IpAddr, u16), v6: bool) -> Self {
            let mut h = Harness::new(
                wvs_core::testkit::snapshot(std::slice::from_ref(&svc)),
                1 << 12,
                0,
            );
            let off = Offload::load(&[11, 12]).expect("the offload program loads (root?)");
            h.dp.set_offload(Box::new(off.sink().expect("a sink")));
            let last = match server.0 {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(a) => a.octets()[15],
            };
            let (client, vip): (IpAddr, IpAddr) = if v6 {
                (Ipv6Addr::from(CLIENT6).into(), Ipv6Addr::from(VIP6).into())
            } else {
                (Ipv4Addr::from(CLIENT).into(), Ipv4Addr::from(VIP).into())
            };
            Self {
                h,
                off,
                proto: svc.proto,
                client: (client, 40000),
                vip: (vip, svc.port),
                server,
                server_mac: rs_mac(last),
                seen_as: None,
                now: 0,
            }
        }

        fn client_frame(&self, seg: Seg, ttl: u8, payload: &[u8]) -> Vec<u8> {
            let m = (CLIENT_MAC, CLIENT_IF_MAC);
            frame(m, self.client, self.vip, self.proto, seg, ttl, payload)
        }

        fn server_frame(&self, seg: Seg, ttl: u8, payload: &[u8]) -> Vec<u8> {
            let to = self.seen_as.expect("the server has seen the client");
            let m = (self.server_mac, SERVER_IF_MAC);
            frame(m, self.server, to, self.proto, seg, ttl, payload)
        }

        /// The datapath on `f`; what it sent (in a buffer with room for a tunnel's outer
        /// header, as the rings' are).
        fn datapath(&mut self, f: &[u8], client: bool) -> (Verdict, Vec<u8>) {
            // A busy flow's pace (OFFLOAD_UDP_GAP_MS).
            self.now += 1;
            let mut out = f.to_vec();
            out.resize(f.len() + 128, 0);
            let meta = if client { FROM_CLIENT } else { FROM_RS };
            let headers = crate::datapath::Headers::parse(f);
            let v = self.h.dp.process_in_buffer(
                &self.h.snap,
                self.now,
                meta,
                &headers,
                &mut out,
                &mut wvs_core::xmit::gso::NoSink,
            );
            out.truncate(match v {
                Verdict::Send { len, .. } => len,
                _ => f.len(),
            });
            (v, out)
        }

        /// Open the connection through the datapath: the client's first packet, the
        /// server's answer when it answers through wvs, the handshake's end.
        fn open(&mut self, replies: bool) {
            let first = if self.proto == Protocol::Tcp {
                Seg::Syn
            } else {
                Seg::Data
            };
            let (v, out) = self.datapath(&self.client_frame(first, 64, b"hello"), true);
            assert!(
                matches!(v, Verdict::Tx { iface: 1 } | Verdict::Send { iface: 1, .. }),
                "the first packet goes to the server: {v:?}"
            );
            if replies {
                self.seen_as = Some(source(&out));
                let answer = if self.proto == Protocol::Tcp {
                    Seg::SynAck
                } else {
                    Seg::Data
                };
                let (v, _) = self.datapath(&self.server_frame(answer, 64, b"hi"), false);
                assert_eq!(v, Verdict::Tx { iface: 0 });
            }
            // Then the client's packets up to the count that makes it a long connection.
            let more = if self.proto == Protocol::Tcp {
                Seg::Ack
            } else {
                Seg::Data
            };
            for _ in 1..crate::consts::OFFLOAD_AFTER_PACKETS {
                assert_eq!(self.off.flows(), 0, "offered early");
                let (v, _) = self.datapath(&self.client_frame(more, 64, b"again"), true);
                assert!(
                    matches!(v, Verdict::Tx { iface: 1 } | Verdict::Send { iface: 1, .. }),
                    "{v:?}"
                );
            }
        }

        /// The program and the datapath on the same frame: the same bytes out.
        fn same(&mut self, f: &[u8], client: bool, what: &str) {
            assert_eq!(self.off.run_filter(f), 0, "{what}: kept out of the rings");
            let (code, by_bpf) = self.off.run_tc(f);
            assert_eq!(code, TC_ACT_REDIRECT, "{what}: carried by the program");
            let (v, by_rust) = self.datapath(f, client);
            assert!(
                matches!(v, Verdict::Tx { .. } | Verdict::Send { .. }),
                "{what}: {v:?}"
            );
            assert_eq!(
                by_bpf, by_rust,
                "{what}: the program's bytes (left) are the datapath's (right)"
            );
        }

        /// The program leaves `f` to wvs, unchanged.
        fn left(&self, f: &[u8], what: &str) {
            let (code, out) = self.off.run_tc(f);
            assert_eq!(code, TC_ACT_OK, "{what}: left to wvs");
            assert_eq!(out, f, "{what}: unchanged");
            assert_ne!(self.off.run_filter(f), 0, "{what}: the ring gets it");
        }
    }

    fn nat(proto: Protocol, fwd: Forward, v6: bool) -> (Service, (IpAddr, u16)) {
        let port = if proto == Protocol::Tcp { 80 } else { 9000 };
        let (at, server): (String, IpAddr) = if v6 {
            let a = Ipv6Addr::from(rs6(21));
            (format!("[{a}]:8080"), a.into())
        } else {
            (
                "198.19.0.21:8080".into(),
                Ipv4Addr::new(198, 19, 0, 21).into(),
            )
        };
        let rport = if fwd == Forward::Route { port } else { 8080 };
        let reals = vec![real_by(&at, fwd)];
        let mut svc = if v6 {
            service6(proto, port, "rr", reals)
        } else {
            rr(proto, port, reals)
        };
        if fwd == Forward::FullNat {
            svc.laddrs = vec![if v6 {
                Ipv6Addr::from(wvs_core::testkit::SOURCE6).into()
            } else {
                Ipv4Addr::from(wvs_core::testkit::SOURCE).into()
            }];
        }
        (svc, (server, rport))
    }

    /// Under the systemd unit wvs has CAP_BPF but not CAP_PERFMON, and the verifier holds
    /// such a program to stricter rules (no variable offsets on packet pointers, no
    /// uninitialised stack): both programs must load so. Capabilities are the thread's
    /// own: this test's thread drops its.
    #[test]
    fn the_programs_load_with_cap_bpf_alone() {
        use caps::{CapSet, Capability};
        for c in [Capability::CAP_PERFMON, Capability::CAP_SYS_ADMIN] {
            caps::drop(None, CapSet::Effective, c).expect("drop a capability");
        }
        assert!(!caps::has_cap(None, CapSet::Effective, Capability::CAP_PERFMON).expect("caps"));
        let off = Offload::load(&[11, 12]);
        assert!(off.is_ok(), "{:?}", off.err());
    }

    /// Every method the program carries, both families, TCP and UDP: an established
    /// connection's packets both ways, byte for byte the datapath's.
    #[test]
    fn the_program_writes_what_the_datapath_writes() {
        for fwd in [Forward::Masq, Forward::FullNat, Forward::Route] {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                for v6 in [false, true] {
                    let what = format!("{fwd:?} {proto:?} v6={v6}");
                    let (svc, server) = nat(proto, fwd, v6);
                    let mut c = Case::new(svc, server, v6);
                    let replies = fwd != Forward::Route;
                    c.open(replies);
                    assert_eq!(
                        c.off.flows(),
                        if replies { 2 } else { 1 },
                        "{what}: offered"
                    );
                    for (n, payload) in [&b"x"[..], b"GET / HTTP/1.1\r\n\r\n", &[0xff; 999]]
                        .iter()
                        .enumerate()
                    {
                        let f = c.client_frame(Seg::Data, 64 - n as u8, payload);
                        c.same(&f, true, &format!("{what}: client's {}", payload.len()));
                        if replies {
                            let f = c.server_frame(Seg::Data, 63, payload);
                            c.same(&f, false, &format!("{what}: server's {}", payload.len()));
                        }
                    }
                    // What wvs decides stays with wvs: a TTL that would reach zero, and the
                    // end of a TCP connection, which takes both directions out of the map.
                    c.left(&c.client_frame(Seg::Data, 1, b"x"), &what);
                    if proto == Protocol::Tcp {
                        let fin = c.client_frame(Seg::Fin, 64, b"");
                        c.left(&fin, &format!("{what}: FIN"));
                        assert_eq!(c.off.flows(), 0, "{what}: the FIN took the flows out");
                        let (v, _) = c.datapath(&fin, true);
                        assert!(matches!(v, Verdict::Tx { .. }), "{what}: wvs has the FIN");
                        c.left(
                            &c.client_frame(Seg::Ack, 64, b""),
                            &format!("{what}: last ACK"),
                        );
                    }
                }
            }
        }
    }

    /// Every tunnel the program carries (IPIP, GUE and GRE without an outer checksum), each
    /// family inside each family, TCP and UDP: the client's packets, byte for byte the
    /// datapath's (the outer header's TOS with ECN encapsulated, DF, ID and checksum
    /// included); what wvs decides stays with wvs.
    #[test]
    fn the_program_tunnels_as_the_datapath_does() {
        use crate::model::{TunCsum, TunKind};
        for (kind, port) in [(TunKind::Ipip, 0), (TunKind::Gue, 6080), (TunKind::Gre, 0)] {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                for (v6, outer6) in [(false, false), (false, true), (true, false), (true, true)] {
                    let what = format!("{kind:?} {proto:?} inner v6={v6} outer v6={outer6}");
                    let vport = if proto == Protocol::Tcp { 80 } else { 9000 };
                    let server: IpAddr = if outer6 {
                        Ipv6Addr::from(rs6(21)).into()
                    } else {
                        Ipv4Addr::new(198, 19, 0, 21).into()
                    };
                    let at = match server {
                        IpAddr::V6(a) => a.to_string(),
                        IpAddr::V4(a) => a.to_string(),
                    };
                    let fwd = wvs_core::testkit::tunnel(kind, port, TunCsum::None);
                    let reals = vec![real_by(&at, fwd)];
                    let svc = if v6 {
                        service6(proto, vport, "rr", reals)
                    } else {
                        rr(proto, vport, reals)
                    };
                    let mut c = Case::new(svc, (server, vport), v6);
                    c.open(false);
                    assert_eq!(c.off.flows(), 1, "{what}: offered");
                    for (n, payload) in [&b"x"[..], b"GET / HTTP/1.1\r\n\r\n", &[0xff; 999]]
                        .iter()
                        .enumerate()
                    {
                        let f = c.client_frame(Seg::Data, 64 - n as u8, payload);
                        c.same(&f, true, &format!("{what}: {}", payload.len()));
                    }
                    // ECN's CE inside is ECT(0) outside (RFC 6040); DSCP is kept.
                    let mut f = c.client_frame(Seg::Data, 64, b"ce");
                    if v6 {
                        f[14] |= 0x0b;
                        f[15] |= 0x80;
                    } else {
                        f[15] = 0xbb;
                        f[24..26].fill(0);
                        let sum = wvs_core::wire::checksum::compute(&f[14..34]);
                        f[24..26].copy_from_slice(&sum.to_be_bytes());
                    }
                    c.same(&f, true, &format!("{what}: CE"));
                    c.left(&c.client_frame(Seg::Data, 1, b"x"), &what);
                    if proto == Protocol::Tcp {
                        let fin = c.client_frame(Seg::Fin, 64, b"");
                        c.left(&fin, &format!("{what}: FIN"));
                        assert_eq!(c.off.flows(), 0, "{what}: the FIN took the flow out");
                    }
                }
            }
        }
    }

    /// A tunnel's packet that would not fit the path with the outer header goes to wvs
    /// (which answers it or cuts it into fragments); one that fits is carried.
    #[test]
    fn a_tunnelled_packet_over_the_mtu_is_left_to_wvs() {
        use crate::model::{TunCsum, TunKind};
        let fwd = wvs_core::testkit::tunnel(TunKind::Gue, 6080, TunCsum::None);
        let svc = rr(Protocol::Tcp, 80, vec![real_by("198.19.0.21", fwd)]);
        let mut c = Case::new(svc, (Ipv4Addr::new(198, 19, 0, 21).into(), 80), false);
        for d in c.h.snap.dests() {
            d.set_mtu(1400);
        }
        c.open(false);
        // 20 + 20 + 1349 = 1389 inside, over 1400 - 32.
        c.left(&c.client_frame(Seg::Data, 64, &[1; 1349]), "1389 over 1368");
        let f = c.client_frame(Seg::Data, 64, &[1; 1328]);
        c.same(&f, true, "1368 inside 1368");
    }

    /// A UDP datagram without a checksum (IPv4's 0) keeps none, as the datapath keeps it.
    #[test]
    fn a_udp_datagram_without_checksum_keeps_none() {
        let (svc, server) = nat(Protocol::Udp, Forward::Masq, false);
        let mut c = Case::new(svc, server, false);
        c.open(true);
        let mut f = c.client_frame(Seg::Data, 64, b"no checksum");
        // The UDP checksum is the last two bytes of its header.
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
        c.same(&f, true, "checksum 0");
        assert_eq!(&c.off.run_tc(&f).1[40..42], &[0, 0]);
    }

    /// A packet longer than the server's path MTU goes to wvs, which answers it.
    #[test]
    fn a_packet_over_the_mtu_is_left_to_wvs() {
        let (svc, server) = nat(Protocol::Tcp, Forward::Masq, false);
        let mut c = Case::new(svc, server, false);
        for d in c.h.snap.dests() {
            d.set_mtu(600);
        }
        c.open(true);
        c.left(
            &c.client_frame(Seg::Data, 64, &[1; 700]),
            "700 bytes over 600",
        );
        let f = c.client_frame(Seg::Data, 64, &[1; 500]);
        c.same(&f, true, "500 bytes under 600");
    }

    /// What the kernel carried comes back: the server's and the service's counters, and
    /// the connection's timer.
    #[test]
    fn the_keeper_merges_counters_and_time() {
        let (svc, server) = nat(Protocol::Tcp, Forward::Masq, false);
        let mut c = Case::new(svc, server, false);
        c.open(true);
        let before = c.h.snap.dests().next().expect("a server").stats.totals();
        for _ in 0..3 {
            let (code, _) = c.off.run_tc(&c.client_frame(Seg::Data, 64, &[7; 100]));
            assert_eq!(code, TC_ACT_REDIRECT);
        }
        let (code, _) = c.off.run_tc(&c.server_frame(Seg::Data, 64, &[7; 60]));
        assert_eq!(code, TC_ACT_REDIRECT);
        let mut k = c
            .off
            .keeper(c.h.conns.clone(), Instant::now())
            .expect("a keeper");
        // Read in one batch (the kernel has BPF_MAP_LOOKUP_BATCH).
        let all = lookup_batch(&k.stats).expect("a batch read");
        assert_eq!(all.len(), 2, "{all:?}");
        k.merge();
        let after = c.h.snap.dests().next().expect("a server").stats.totals();
        assert_eq!(after.inpkts - before.inpkts, 3);
        assert_eq!(after.inbytes - before.inbytes, 3 * (20 + 20 + 100));
        assert_eq!(after.outpkts - before.outpkts, 1);
        assert_eq!(after.outbytes - before.outbytes, 20 + 20 + 60);
        // A second merge adds nothing new.
        k.merge();
        let again = c.h.snap.dests().next().expect("a server").stats.totals();
        assert_eq!(again, after);
        assert_eq!(k.counters.packets.load(Relaxed), 4);
        assert_eq!(k.counters.flows.load(Relaxed), 2);
        // The connection gone, the keeper takes its flows out.
        c.h.conns.sweep(u64::MAX);
        k.merge();
        assert_eq!(c.off.flows(), 0);
        assert_eq!(k.counters.flows.load(Relaxed), 0);
    }

    /// A server that moves to another MAC (its neighbour entry changes): the keeper takes
    /// its flow out, and the connection's next packets through wvs offer it again with the
    /// new next hop; the replies' flow stays.
    #[test]
    fn a_flow_follows_its_servers_new_mac() {
        let (svc, server) = nat(Protocol::Tcp, Forward::Masq, false);
        let mut c = Case::new(svc, server, false);
        c.open(true);
        let mut k = c
            .off
            .keeper(c.h.conns.clone(), Instant::now())
            .expect("a keeper");
        k.merge();
        assert_eq!(c.off.flows(), 2, "both stay while nothing moved");
        let moved = [0x02, 0, 0, 0, 0x77, 0x77];
        let d = c.h.snap.dests().next().expect("a server");
        d.set_next_hop(Some(wvs_core::model::NextHop {
            iface: 1,
            mac: moved,
        }));
        k.merge();
        assert_eq!(
            c.off.flows(),
            1,
            "the client's flow is out, the replies' stays"
        );
        let f = c.client_frame(Seg::Data, 64, b"x");
        c.left(&f, "out of the map");
        for _ in 0..crate::consts::OFFLOAD_AFTER_PACKETS {
            let (v, out) = c.datapath(&f, true);
            assert_eq!(v, Verdict::Tx { iface: 1 });
            assert_eq!(out[..6], moved, "wvs sends it to the new MAC");
        }
        assert_eq!(c.off.flows(), 2, "offered again");
        let (code, out) = c.off.run_tc(&f);
        assert_eq!(code, TC_ACT_REDIRECT);
        assert_eq!(out[..6], moved, "the program too");
        k.merge();
        assert_eq!(c.off.flows(), 2, "and it stays");
    }

    /// A FIN takes the flows out at once, but not what they carried: the keeper merges it.
    #[test]
    fn what_was_carried_before_a_fin_is_merged_after_it() {
        let (svc, server) = nat(Protocol::Tcp, Forward::Masq, false);
        let mut c = Case::new(svc, server, false);
        c.open(true);
        let before = c.h.snap.dests().next().expect("a server").stats.totals();
        for _ in 0..5 {
            let (code, _) = c.off.run_tc(&c.client_frame(Seg::Data, 64, &[7; 100]));
            assert_eq!(code, TC_ACT_REDIRECT);
        }
        let fin = c.client_frame(Seg::Fin, 64, b"");
        assert_ne!(c.off.run_filter(&fin), 0);
        assert_eq!(c.off.flows(), 0, "the FIN took the flows out");
        let (v, _) = c.datapath(&fin, true);
        assert!(matches!(v, Verdict::Tx { .. }));
        let mut k = c
            .off
            .keeper(c.h.conns.clone(), Instant::now())
            .expect("a keeper");
        k.merge();
        let after = c.h.snap.dests().next().expect("a server").stats.totals();
        // The five carried, and the FIN through wvs.
        assert_eq!(after.inpkts - before.inpkts, 6);
        assert_eq!(k.counters.packets.load(Relaxed), 5);
        assert_eq!(k.counters.flows.load(Relaxed), 0, "merged, then removed");
    }

    /// The programs answer a SYN to a synproxied service as the datapath does, byte for
    /// byte (`synproxy::cases`), and keep it out of wvs's rings; other SYNs, and one with
    /// data, are wvs's.
    #[test]
    fn the_programs_answer_a_syn_as_the_datapath_does() {
        for v6 in [false, true] {
            let c = crate::io::synproxy::cases::of(v6);
            let off = Offload::load(&[11, 12]).expect("the offload program loads (root?)");
            let mut k = off
                .keeper(c.h.conns.clone(), Instant::now())
                .expect("a keeper")
                .with_snapshot(c.snap.clone());
            k.merge();
            for (i, (syn, answer)) in c.answered.iter().enumerate() {
                let (r, bpf) = off.run_tc(syn);
                assert_eq!(r, TC_ACT_REDIRECT, "v6 {v6}, options {i}");
                assert_eq!(&bpf, answer, "v6 {v6}, options {i}");
                assert_eq!(off.run_filter(syn), 0, "kept out of the rings");
            }
            for syn in &c.left {
                assert_eq!(off.run_tc(syn).0, TC_ACT_OK);
                assert_ne!(off.run_filter(syn), 0);
            }
            k.merge();
            assert_eq!(k.counters.cookies.load(Relaxed), c.answered.len() as u64);
        }
    }
}
