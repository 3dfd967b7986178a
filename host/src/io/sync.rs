//! The sync daemons' threads and sockets (`ip_vs_sync.c`'s `sync_thread_master` and
//! `sync_thread_backup`).
//!
//! A master thread wakes every [`SYNC_SEND_DELAY_MS`], takes the records the workers queued
//! ([`wvs_core::conn::sync::Outbox`]), packs them into version 1 messages of at most
//! `sync_maxlen` bytes and multicasts the full ones; one that is not full goes once its
//! oldest record is [`SYNC_FLUSH_MS`] old, as IPVS flushes a sync buffer. With `sync_ports`
//! above 1, each sync thread's records have their own messages and port (the master's
//! thread sends them all; IPVS runs a thread per port).
//!
//! A backup thread per port reads the messages from the group on its interface, checks
//! them as `ip_vs_process_message` does, and hands each record to
//! [`wvs_core::conn::sync::apply`] under the published snapshot.
//!
//! The sockets are the kernel's UDP sockets: the multicast group joined on the interface
//! (`SO_BINDTODEVICE`, which needs no capability the first time), loop off and the TTL set
//! on a master's, as `make_send_sock` and `make_receive_sock` do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol as SockProto, SockAddr, Socket, Type};

use crate::config::daemon::{DaemonState, SyncDaemon};
use crate::conn::ConnTable;
use crate::conn::sync::{Applied, Ignored, apply, thread_of};
use crate::consts::{SYNC_FLUSH_MS, SYNC_SEND_DELAY_MS};
use crate::service::Snapshot;
use crate::spec::SyncSettings;
use crate::wire::sync::{Message, MessageWriter, SyncConn};

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The interface does not exist.
    #[error("sync daemon: no interface {0:?}")]
    NoInterface(String),
    /// A master over IPv4 needs an IPv4 address on its interface to send from.
    #[error("sync daemon: interface {0:?} has no IPv4 address to send from")]
    NoAddress(String),
    /// A socket call failed.
    #[error("sync daemon ({state} on {iface}): {what}: {source}")]
    Socket {
        /// `master` or `backup`.
        state: &'static str,
        /// The interface.
        iface: String,
        /// The step.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The thread could not be started.
    #[error("sync daemon: cannot start its thread: {0}")]
    Thread(std::io::Error),
}

/// The daemons' counters (`/metrics`).
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Messages a master sent.
    pub sent_messages: AtomicU64,
    /// Records in them.
    pub sent_records: AtomicU64,
    /// Sends that failed.
    pub send_errors: AtomicU64,
    /// Records of full resyncs (`sync_full_period`).
    pub full_records: AtomicU64,
    /// Messages a backup received.
    pub received_messages: AtomicU64,
    /// Messages (or the rest of them) dropped as malformed.
    pub bad_messages: AtomicU64,
    /// Messages of another sync id.
    pub other_syncid: AtomicU64,
    /// Connections and templates a backup created.
    pub created: AtomicU64,
    /// Those it refreshed.
    pub updated: AtomicU64,
    /// Records it left out, by reason (`IGNORED` order).
    pub ignored: [AtomicU64; IGNORED.len()],
}

/// The reasons a backup leaves a record out, with their metric labels.
pub const IGNORED: [(&str, Option<Ignored>); 9] = [
    ("unknown_option", None),
    ("protocol", Some(Ignored::Protocol)),
    ("state", Some(Ignored::State)),
    ("persistence_engine", Some(Ignored::PersistenceEngine)),
    ("no_service", Some(Ignored::NoService)),
    ("no_dest", Some(Ignored::NoDest)),
    ("fullnat", Some(Ignored::FullNat)),
    ("table_full", Some(Ignored::Full)),
    ("stale", Some(Ignored::Stale)),
];

fn ignored_slot(i: Option<Ignored>) -> usize {
    IGNORED.iter().position(|(_, r)| *r == i).unwrap_or(0)
}

/// A running daemon.
#[derive(Debug)]
struct Running {
    def: SyncDaemon,
    settings: SyncSettings,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn stop(self) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Daemons ready to start: their sockets are open.
#[derive(Debug, Default)]
pub struct Prepared {
    start: Vec<(SyncDaemon, SyncSettings, Vec<Socket>)>,
    keep: Vec<DaemonState>,
}

/// The sync daemons of one balancer.
#[derive(Debug)]
pub struct Daemons {
    conns: Arc<ConnTable>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    epoch: Instant,
    stats: Arc<SyncStats>,
    running: Vec<Running>,
}

impl Daemons {
    /// No daemon yet, over the balancer's table and snapshot (`epoch`: the datapath's clock).
    pub fn new(conns: Arc<ConnTable>, snapshot: Arc<ArcSwap<Snapshot>>, epoch: Instant) -> Self {
        Self {
            conns,
            snapshot,
            epoch,
            stats: Arc::default(),
            running: Vec::new(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<SyncStats> {
        &self.stats
    }

    /// The daemons that run.
    pub fn running(&self) -> impl Iterator<Item = &SyncDaemon> {
        self.running.iter().map(|r| &r.def)
    }

    /// Open the sockets of the daemons of `want` that do not run as asked (those that do
    /// are kept); nothing changes yet, and nothing is left open on an error.
    pub fn prepare(&self, want: &[SyncDaemon], s: &SyncSettings) -> Result<Prepared, SyncError> {
        let mut p = Prepared::default();
        for d in want {
            if self
                .running
                .iter()
                .any(|r| r.def == *d && same_sockets(&r.settings, s))
            {
                p.keep.push(d.state);
                continue;
            }
            let socks = (0..u16::from(s.ports.max(1)))
                .map(|id| open(d, id, s.sock_size))
                .collect::<Result<Vec<_>, _>>()?;
            p.start.push((d.clone(), *s, socks));
        }
        Ok(p)
    }

    /// Stop what `p` does not keep and start what it opened.
    pub fn commit(&mut self, p: Prepared) -> Result<(), SyncError> {
        let outbox = self.conns.sync();
        let (keep, stop): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| p.keep.contains(&r.def.state));
        self.running = keep;
        for r in stop {
            tracing::info!(
                state = r.def.state.name(),
                iface = r.def.mcast_interface,
                "sync daemon stopped"
            );
            match r.def.state {
                DaemonState::Master => outbox.stop_master(),
                DaemonState::Backup => outbox.set_backup(false),
            }
            r.stop();
        }
        for (def, settings, socks) in p.start {
            let stop = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            match def.state {
                DaemonState::Master => {
                    outbox.start_master(settings.qlen_max as usize);
                    let m = MasterLoop {
                        conns: self.conns.clone(),
                        snapshot: self.snapshot.clone(),
                        stats: self.stats.clone(),
                        stop: stop.clone(),
                        syncid: def.syncid,
                        maxlen: usize::from(def.maxlen()),
                        socks,
                    };
                    threads.push(
                        std::thread::Builder::new()
                            .name("wvs-sync-master".into())
                            .spawn(move || m.run())
                            .map_err(SyncError::Thread)?,
                    );
                }
                DaemonState::Backup => {
                    outbox.set_backup(true);
                    for (id, sock) in socks.into_iter().enumerate() {
                        let b = BackupLoop {
                            conns: self.conns.clone(),
                            snapshot: self.snapshot.clone(),
                            stats: self.stats.clone(),
                            stop: stop.clone(),
                            syncid: def.syncid,
                            epoch: self.epoch,
                            sock,
                        };
                        threads.push(
                            std::thread::Builder::new()
                                .name(format!("wvs-sync-backup{id}"))
                                .spawn(move || b.run())
                                .map_err(SyncError::Thread)?,
                        );
                    }
                }
            }
            tracing::info!(
                state = def.state.name(),
                iface = def.mcast_interface,
                syncid = def.syncid,
                group = %def.group(),
                port = def.port(),
                "sync daemon started"
            );
            self.running.push(Running {
                def,
                settings,
                stop,
                threads,
            });
        }
        Ok(())
    }
}

/// Whether two settings open the same sockets.
fn same_sockets(a: &SyncSettings, b: &SyncSettings) -> bool {
    (a.ports, a.sock_size, a.qlen_max) == (b.ports, b.sock_size, b.qlen_max)
}

fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// The interface's first IPv4 address (IPVS binds the master's socket to it).
fn ipv4_of(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|i| {
        (i.interface_name == name)
            .then(|| i.address?.as_sockaddr_in().map(|s| s.ip()))
            .flatten()
    })
}

/// A sync socket for thread `id` of `d`, as `make_send_sock` / `make_receive_sock`.
fn open(d: &SyncDaemon, id: u16, sock_size: u32) -> Result<Socket, SyncError> {
    let state = d.state.name();
    let iface = d.mcast_interface.clone();
    let err = |what: &'static str| {
        let iface = iface.clone();
        move |source| SyncError::Socket {
            state,
            iface,
            what,
            source,
        }
    };
    let index = ifindex(&d.mcast_interface)
        .ok_or_else(|| SyncError::NoInterface(d.mcast_interface.clone()))?;
    let group = d.group();
    let dest = SocketAddr::new(group, d.port().wrapping_add(id));
    let domain = if group.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(SockProto::UDP)).map_err(err("socket"))?;
    match d.state {
        DaemonState::Master => {
            s.bind_device(Some(d.mcast_interface.as_bytes()))
                .map_err(err("SO_BINDTODEVICE"))?;
            if sock_size > 0 {
                s.set_send_buffer_size(sock_size as usize)
                    .map_err(err("SO_SNDBUF"))?;
            }
            match group {
                IpAddr::V4(_) => {
                    let a = ipv4_of(&d.mcast_interface)
                        .ok_or_else(|| SyncError::NoAddress(d.mcast_interface.clone()))?;
                    s.set_multicast_if_v4(&a).map_err(err("IP_MULTICAST_IF"))?;
                    s.set_multicast_loop_v4(false)
                        .map_err(err("IP_MULTICAST_LOOP"))?;
                    s.set_multicast_ttl_v4(u32::from(d.ttl()))
                        .map_err(err("IP_MULTICAST_TTL"))?;
                    s.bind(&SockAddr::from(SocketAddr::new(a.into(), 0)))
                        .map_err(err("bind"))?;
                }
                IpAddr::V6(_) => {
                    s.set_multicast_if_v6(index)
                        .map_err(err("IPV6_MULTICAST_IF"))?;
                    s.set_multicast_loop_v6(false)
                        .map_err(err("IPV6_MULTICAST_LOOP"))?;
                    s.set_multicast_hops_v6(u32::from(d.ttl()))
                        .map_err(err("IPV6_MULTICAST_HOPS"))?;
                }
            }
            s.connect(&SockAddr::from(dest)).map_err(err("connect"))?;
            s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
        }
        DaemonState::Backup => {
            s.set_reuse_address(true).map_err(err("SO_REUSEADDR"))?;
            if sock_size > 0 {
                s.set_recv_buffer_size(sock_size as usize)
                    .map_err(err("SO_RCVBUF"))?;
            }
            s.bind_device(Some(d.mcast_interface.as_bytes()))
                .map_err(err("SO_BINDTODEVICE"))?;
            s.bind(&SockAddr::from(dest)).map_err(err("bind"))?;
            match group {
                IpAddr::V4(g) => s
                    .join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(index))
                    .map_err(err("IP_ADD_MEMBERSHIP"))?,
                IpAddr::V6(g) => s
                    .join_multicast_v6(&g, index)
                    .map_err(err("IPV6_JOIN_GROUP"))?,
            }
            s.set_read_timeout(Some(Duration::from_millis(250)))
                .map_err(err("SO_RCVTIMEO"))?;
        }
    }
    Ok(s)
}

/// One sync thread's records waiting for a message.
#[derive(Default)]
struct Pending {
    recs: Vec<SyncConn>,
    since: Option<Instant>,
}

struct MasterLoop {
    conns: Arc<ConnTable>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    stats: Arc<SyncStats>,
    stop: Arc<AtomicBool>,
    syncid: u8,
    maxlen: usize,
    socks: Vec<Socket>,
}

impl MasterLoop {
    fn run(self) {
        crate::privs::drop_all_in_this_thread();
        let outbox = self.conns.sync();
        let mut pending: Vec<Pending> = (0..self.socks.len()).map(|_| Pending::default()).collect();
        let mut taken = Vec::with_capacity(outbox.room());
        let mut buf = vec![0u8; self.maxlen];
        let mut last_full = Instant::now();
        while !self.stop.load(Relaxed) {
            let mut force = false;
            std::thread::sleep(Duration::from_millis(SYNC_SEND_DELAY_MS));
            let s = self.snapshot.load().sysctl.sync;
            // Only from a director that is not a backup too: an idle director's copies would
            // overwrite the serving one's.
            if s.full_period > 0
                && !outbox.is_backup()
                && last_full.elapsed() >= Duration::from_secs(u64::from(s.full_period))
            {
                last_full = Instant::now();
                let n = self.socks.len();
                let mut count = 0u64;
                self.conns.sync_all(&s, |r| {
                    let p = &mut pending[thread_of(&r, n)];
                    p.since.get_or_insert_with(Instant::now);
                    p.recs.push(r);
                    count += 1;
                });
                self.stats.full_records.fetch_add(count, Relaxed);
                // Sent now, not after the flush time.
                force = true;
            }
            for w in 0..outbox.workers() {
                outbox.drain(w, &mut taken);
                for r in taken.drain(..) {
                    let p = &mut pending[thread_of(&r, self.socks.len())];
                    p.since.get_or_insert_with(Instant::now);
                    p.recs.push(r);
                }
            }
            for (id, p) in pending.iter_mut().enumerate() {
                self.send(id, p, &mut buf, force);
            }
        }
    }

    /// Send `p`'s full messages, and the rest once its oldest record waited long enough.
    fn send(&self, id: usize, p: &mut Pending, buf: &mut [u8], force: bool) {
        let due = force
            || p.since
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(SYNC_FLUSH_MS));
        let mut i = 0;
        while i < p.recs.len() {
            let start = i;
            let Some(mut w) = MessageWriter::new(buf, self.syncid) else {
                return;
            };
            while i < p.recs.len() && w.push(&p.recs[i], None) {
                i += 1;
            }
            let full = i < p.recs.len();
            if w.is_empty() {
                // A record no message of this size holds: dropped.
                self.stats.send_errors.fetch_add(1, Relaxed);
                i += 1;
                continue;
            }
            if !full && !due {
                i = start;
                break;
            }
            match self.socks[id].send(w.bytes()) {
                Ok(_) => {
                    self.stats.sent_messages.fetch_add(1, Relaxed);
                    self.stats
                        .sent_records
                        .fetch_add(u64::from(w.count()), Relaxed);
                }
                Err(e) => {
                    self.stats.send_errors.fetch_add(1, Relaxed);
                    tracing::debug!("sync message not sent: {e}");
                }
            }
        }
        p.recs.drain(..i);
        if p.recs.is_empty() {
            p.since = None;
        } else if i > 0 {
            p.since = Some(Instant::now());
        }
    }
}

struct BackupLoop {
    conns: Arc<ConnTable>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    stats: Arc<SyncStats>,
    stop: Arc<AtomicBool>,
    syncid: u8,
    epoch: Instant,
    sock: Socket,
}

impl BackupLoop {
    fn run(self) {
        crate::privs::drop_all_in_this_thread();
        let mut buf = vec![0u8; 65536];
        while !self.stop.load(Relaxed) {
            let n = match std::io::Read::read(&mut &self.sock, &mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::warn!("sync backup: receive: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            self.process(&buf[..n]);
        }
    }

    fn process(&self, msg: &[u8]) {
        let st = &self.stats;
        st.received_messages.fetch_add(1, Relaxed);
        let m = match Message::parse(msg) {
            Ok(m) => m,
            Err(e) => {
                st.bad_messages.fetch_add(1, Relaxed);
                tracing::debug!("sync message dropped: {e}");
                return;
            }
        };
        if self.syncid != 0 && m.syncid != self.syncid {
            st.other_syncid.fetch_add(1, Relaxed);
            return;
        }
        let snap = self.snapshot.load();
        let now = self.epoch.elapsed().as_millis() as u64;
        let threshold = snap.sysctl.sync.threshold;
        for r in m.conns() {
            match r {
                Err(e) => {
                    st.bad_messages.fetch_add(1, Relaxed);
                    tracing::debug!("rest of a sync message dropped: {e}");
                    return;
                }
                Ok(Err(_)) => {
                    st.ignored[ignored_slot(None)].fetch_add(1, Relaxed);
                }
                Ok(Ok(rec)) => match apply(&self.conns, &snap, &rec, now, threshold) {
                    Ok(Applied::Created) => {
                        st.created.fetch_add(1, Relaxed);
                    }
                    Ok(Applied::Updated) => {
                        st.updated.fetch_add(1, Relaxed);
                    }
                    Err(i) => {
                        st.ignored[ignored_slot(Some(i))].fetch_add(1, Relaxed);
                    }
                },
            }
        }
    }
}
