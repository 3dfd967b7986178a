//! The daemon: loads the configuration, sets up interfaces, nftables and workers, and runs
//! the control loop (signals, next-hop resolution, expiry, statistics) until told to stop.
//!
//! Threads: one datapath worker per core (std threads, each on its own io_uring), one
//! expiry timer, and the control loop on a single-threaded tokio runtime. The control loop
//! never touches a packet; the workers never wait for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{self, Config, ConfigError};
use crate::conn::ConnTable;
use crate::consts::{NEIGH_REFRESH_MS, NEIGH_RETRY_MS, STATS_LOG_INTERVAL_MS};
use crate::control::{Controller, StateFile};
use crate::datapath::{Datapath, DatapathStats, Iface, StatsSum};
use crate::io::Backend;
use crate::io::neigh::{self, NeighError, Resolver};
use crate::io::nft::{NftError, NftTable};
use crate::io::offload::{Keeper, Offload};
use crate::io::ring::PacketRing;
use crate::io::socket::{PacketSocket, StackSocket};
use crate::io::worker::{Ports, RingPort, Worker};
use crate::io::xdp::{XdpError, XdpFilter, XdpPassed, XdpProgram, Xsk};
use crate::plugin::{Registry, Runtime};
use crate::service::Snapshot;

mod expiry;
mod links;

use links::Links;

/// What `wvs run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Interfaces to serve, in order (their index is the datapath's interface number).
    pub ifaces: Vec<String>,
    /// Configuration file; `None` uses the embedded example configuration.
    pub config: Option<PathBuf>,
    /// Number of datapath workers.
    pub workers: usize,
    /// How the workers move frames.
    pub io: crate::io::Backend,
    /// Carry decided flows in wvs's tc-BPF program (`--offload`).
    pub offload: OffloadMode,
    /// Bound on tracked connections.
    pub max_conns: usize,
    /// Run the built-in schedulers as WebAssembly plugins (else natively).
    pub wasm_schedulers: bool,
    /// Directory of the compiled-plugin cache (`None`: no cache).
    pub plugin_cache: Option<PathBuf>,
    /// What compiling a plugin from outside may take: time, and address space in bytes.
    pub plugin_compile: (Duration, u64),
    /// Directory of the state file (`None`: changes are not saved).
    pub state_dir: Option<PathBuf>,
    /// Address the REST API listens on (`None`: no API).
    pub api: Option<std::net::SocketAddr>,
    /// Host names the API answers to besides IP addresses and `localhost`.
    pub api_hosts: Vec<String>,
    /// The API's TLS certificate chain and private key, PEM files (`None`: plain HTTP).
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// The API token given in the environment (`WVS_API_TOKEN`).
    pub token: Option<String>,
    /// A file holding the API token.
    pub token_file: Option<PathBuf>,
    /// The user to run as once set up, when started as root (`--user`).
    pub user: String,
    /// Changes over the API may add misc health checks (`--allow-misc-checks`).
    pub allow_misc_checks: bool,
    /// The TUN device that holds the VIPs this balancer can serve, for a routing daemon
    /// to announce (`--announce`).
    pub announce: Option<String>,
    /// This balancer's name in a fleet: a `node` label on every metric (`--node`).
    pub node: Option<String>,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Interfaces or next hops could not be read.
    #[error(transparent)]
    Neigh(#[from] NeighError),
    /// The nftables table could not be installed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The XDP program or its sockets could not be set up (`--io xdp`).
    #[error(transparent)]
    Xdp(#[from] crate::io::xdp::XdpError),
    /// The flow offload could not start.
    #[error(transparent)]
    Offload(#[from] crate::io::offload::OffloadError),
    /// The API's TLS certificate or key could not be used.
    #[error("the API's TLS certificate: {0}")]
    Tls(#[from] crate::api::server::TlsError),
    /// A plugin could not be loaded.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] crate::control::StateError),
    /// The user to run as.
    #[error(transparent)]
    User(#[from] crate::privs::UserError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Bad command-line arguments.
    #[error("{0}")]
    Usage(String),
}

/// `--offload`: as given, or its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadMode {
    /// `tc`: carried by the tc program, or wvs does not start.
    Tc,
    /// `off`: every packet through wvs.
    Off,
    /// Not given: `tc` where the kernel and the I/O backend allow it, else `off`, said
    /// with a warning (the faster on the benchmark, BENCHMARKS.md "Flow offload").
    Default,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// Run the daemon until SIGINT or SIGTERM.
pub fn run(opts: RunOptions) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("cannot start the control runtime"))?;
    rt.block_on(run_async(opts))
}

fn load_specs(path: &Option<PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => config::load(p),
        // Like IPVS, a first start with nothing to restore has no services.
        None => Ok(Config::default()),
    }
}

/// `--workers` when not given: one per core, at most [`crate::consts::MAX_WORKERS`] (a
/// machine with more cores starts rather than refuse its own default).
pub fn default_workers(cores: usize) -> usize {
    cores.clamp(1, crate::consts::MAX_WORKERS)
}

async fn run_async(mut opts: RunOptions) -> Result<(), RunError> {
    check_usage(&opts)?;
    // Started as root: the user wvs becomes once set up, who owns its directories.
    let run_as = crate::privs::resolve_user(&opts.user)?;
    let start = load_state(&opts, run_as.as_ref())?;
    let handle = neigh::connect()?;
    let ifaces = neigh::lookup_ifaces(&handle, &opts.ifaces).await?;
    for i in &ifaces {
        tracing::info!(iface = i.name, index = i.index, mac = %neigh::fmt_mac(&i.mac), "interface");
    }
    let dp_ifaces: Arc<[Iface]> = ifaces.iter().map(|i| Iface::new(i.mac)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let sockets = open_sockets(&opts, &ifaces)?;
    // What runs, from here on.
    opts.offload = if sockets.offload.is_some() {
        OffloadMode::Tc
    } else {
        OffloadMode::Off
    };
    let conns = Arc::new(ConnTable::new(opts.max_conns));
    let held = set_up_privileged(&opts, run_as.as_ref(), &handle, &ifaces, &conns).await?;
    // The API's token is read from (or made in) the state directory.
    let token_state = start.state.clone();
    let mut control = build_control(&opts, start)?;
    let snapshot = control.snapshot().clone();
    conns.defense().configure(snapshot.load().defense);
    control.set_sync(crate::io::sync::Daemons::new(
        conns.clone(),
        snapshot.clone(),
        epoch,
    ));
    let xdp = attach_xdp(sockets.xdp, &mut control, &snapshot, &ifaces)?;
    let offload = sockets.offload;
    let sinks = (0..opts.workers)
        .map(|_| offload.as_ref().map(Offload::sink).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let mut workers = start_workers(
        &opts,
        sockets.per_worker,
        sinks,
        WorkerShare {
            conns: &conns,
            ifaces: &dp_ifaces,
            snapshot: &snapshot,
            stop: &stop,
            epoch,
        },
    )?;
    let sweeper = expiry::start(conns.clone(), stop.clone(), snapshot.clone(), epoch)
        .map_err(io_err("cannot start the expiry thread"))?;
    let keeper = match &offload {
        Some(o) => {
            let (kick, kicked) = std::sync::mpsc::sync_channel(1);
            o.counters.set_kick(kick.clone());
            control.set_offload_kick(kick);
            Some(start_keeper(
                o.keeper(conns.clone(), epoch)?
                    .with_snapshot(snapshot.clone()),
                kicked,
                stop.clone(),
            )?)
        }
        None => None,
    };
    // `--io xdp`: its program answers SYNs with cookies too (under `--offload tc` as well,
    // as it sees them first).
    let sp_keeper = match (&xdp, workers.stats.first()) {
        (Some(x), Some(stats)) => Some(start_sp_keeper(
            {
                let x = x.lock();
                (
                    x.synproxy()?,
                    x.synproxy_tx(ifaces.iter().map(|i| i.name.clone()).collect())?,
                )
            },
            SpShare {
                conns: conns.clone(),
                snapshot: snapshot.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                epoch,
            },
        )?),
        _ => None,
    };
    let offload_counters = offload.as_ref().map(|o| o.counters.clone());
    let offload = offload.map(|o| Arc::new(parking_lot::Mutex::new(o)));
    // The health checks: their own thread and runtime, reading the published snapshot.
    let _health =
        crate::health::Monitor::start(snapshot.clone(), stop.clone(), held.check_path.clone())
            .map_err(io_err("cannot start the health checker".to_string()))?;
    let api = start_api(
        &opts,
        control,
        token_state.as_ref(),
        &conns,
        (&workers.stats, offload_counters),
        epoch,
        held.api_listener,
    )
    .await?;
    let mut resolver = Resolver::new(handle.clone(), ifaces.clone());
    let links = Links {
        seen: ifaces.iter().map(|i| Some((i.index, i.mac))).collect(),
        ifaces: ifaces.clone(),
        dp: dp_ifaces.clone(),
        mail: std::mem::take(&mut workers.mail),
        broker: held.broker,
        io: opts.io,
        workers: opts.workers,
        xdp: xdp.clone(),
        offload: offload.clone(),
    };
    wait_for_next_hops(&mut resolver, &snapshot).await?;
    // Taken before readiness is announced: a signal sent on seeing it is never the
    // default action's (which would end wvs without removing its table).
    let signals = Signals::new()?;
    tracing::info!(
        workers = opts.workers,
        io = opts.io.name(),
        offload = if opts.offload == OffloadMode::Tc { "tc" } else { "off" },
        ifaces = ?opts.ifaces,
        "ready"
    );
    let neighbours = watch(links, resolver, &handle, &api, held.check_path.clone());
    let announcing = held.announcer.map(|a| announce(a, &api, &conns));
    let result = serve(&opts, signals, &api, &conns, &mut workers).await;
    // Withdrawn first, so that the routers stop sending while wvs still forwards.
    if let Some(t) = announcing {
        t.abort();
        let _ = t.await;
        tracing::info!("the announced VIPs are withdrawn");
    }
    neighbours.abort();
    let _ = neighbours.await;
    shutdown(
        Running {
            stop,
            workers,
            sweeper,
            keeper,
            sp_keeper,
            xdp,
            offload,
            check_path: held.check_path,
        },
        &api,
        &conns,
        &handle,
    )
    .await?;
    result
}

/// What runs until the end, to be stopped in order.
struct Running {
    stop: Arc<AtomicBool>,
    workers: Workers,
    sweeper: std::thread::JoinHandle<()>,
    keeper: Option<std::thread::JoinHandle<()>>,
    /// `--io xdp`: the thread that keeps its program's synproxy maps.
    sp_keeper: Option<std::thread::JoinHandle<()>>,
    xdp: Option<Arc<parking_lot::Mutex<XdpProgram>>>,
    offload: Option<Arc<parking_lot::Mutex<Offload>>>,
    check_path: Option<Arc<crate::health::via::CheckPath>>,
}

/// Stop the threads, log the last counters, then take out of the kernel what wvs put
/// there: the XDP program, the check path's rule, the nftables table.
async fn shutdown(
    r: Running,
    api: &crate::api::ApiState,
    conns: &ConnTable,
    handle: &rtnetlink::Handle,
) -> Result<(), RunError> {
    r.stop.store(true, Relaxed);
    for t in r.workers.threads {
        let _ = t.join();
    }
    let _ = r.sweeper.join();
    for k in [r.keeper, r.sp_keeper].into_iter().flatten() {
        let _ = k.join();
    }
    let mut control = api.control.lock().await;
    log_stats(
        &StatsSum::of(r.workers.stats.iter().map(|s| s.as_ref())),
        conns.len(),
        &mut control,
    );
    // The XDP program goes before the nftables table, so that no frame of a service reaches
    // the kernel unfiltered in between (the interface watch, which shared it, has ended).
    drop(r.xdp);
    // The offload program too: from here on every packet goes to the kernel's own path
    // (and to the table below).
    drop(r.offload);
    if r.check_path.is_some() {
        crate::health::via::CheckPath::teardown(handle).await;
    }
    control.remove_nft()?;
    tracing::info!(
        table = crate::consts::NFT_TABLE,
        "nftables table removed; stopped"
    );
    Ok(())
}

/// The arguments' own rules, before anything is touched.
fn check_usage(opts: &RunOptions) -> Result<(), RunError> {
    if opts.ifaces.is_empty() || opts.ifaces.len() > usize::from(u8::MAX) {
        return Err(RunError::Usage("give between 1 and 255 --iface".into()));
    }
    if opts.offload == OffloadMode::Tc && opts.io == Backend::Xdp {
        return Err(RunError::Usage(
            "--offload tc works with --io ring or uring (under --io xdp the XDP program \
             takes the frames before tc sees them): give one of those, or --offload off"
                .into(),
        ));
    }
    let mut names = opts.ifaces.clone();
    names.sort();
    names.dedup();
    if names.len() != opts.ifaces.len() {
        return Err(RunError::Usage("an interface is given twice".into()));
    }
    if let Some(n) = &opts.node
        && !crate::io::announce::valid_node(n)
    {
        return Err(RunError::Usage(format!(
            "--node {n:?}: give 1 to 63 letters, digits, '.', '-' or '_'"
        )));
    }
    if let Some(d) = &opts.announce
        && !crate::io::announce::valid_device(d)
    {
        return Err(RunError::Usage(format!(
            "--announce {d:?}: not an interface name (1 to 15 characters, no '/', ':' or space)"
        )));
    }
    if opts.workers == 0 || opts.workers > crate::consts::MAX_WORKERS {
        return Err(RunError::Usage(format!(
            "--workers must be between 1 and {}",
            crate::consts::MAX_WORKERS
        )));
    }
    Ok(())
}

/// What the run starts from: the state directory (held), the configuration to serve,
/// and the `--config` file as it is now.
struct Start {
    state: Option<StateFile>,
    cfg: Config,
    /// What a SIGHUP compares the file with, to apply its changes.
    file_base: Option<Config>,
}

/// What to start with: the saved state if there is one, else the --config file, else
/// nothing (services are then added over the API or with `wvs adm`). The directories are
/// given to the user wvs becomes first.
fn load_state(opts: &RunOptions, run_as: Option<&crate::privs::RunAs>) -> Result<Start, RunError> {
    if let Some(u) = run_as {
        for d in opts.state_dir.iter().chain(opts.plugin_cache.iter()) {
            crate::privs::give_dir(d, u)?;
        }
    }
    let owner = run_as.map_or_else(nix::unistd::geteuid, |u| u.uid).as_raw();
    let state = opts
        .state_dir
        .as_deref()
        .map(|d| StateFile::open(d, owner))
        .transpose()?;
    let saved = match &state {
        Some(st) => st.load()?,
        None => None,
    };
    let file_base = opts.config.as_ref().and_then(|p| match config::load(p) {
        Ok(c) => Some(c),
        Err(e) => {
            if saved.is_some() {
                tracing::warn!(
                    "--config does not load now (a SIGHUP will apply it whole once it does): {e}"
                );
            }
            None
        }
    });
    let cfg = match saved {
        Some(c) => {
            let st = state
                .as_ref()
                .map(|s| s.path().display().to_string())
                .unwrap_or_default();
            if opts.config.is_some() {
                tracing::warn!(
                    state = st,
                    "the saved state is restored; --config applies on SIGHUP (the file's \
                     changes from now on, merged into the running configuration)"
                );
            }
            tracing::info!(
                state = st,
                services = c.services.len(),
                plugins = c.plugins.len(),
                "configuration restored"
            );
            c
        }
        None => {
            let c = load_specs(&opts.config)?;
            match &opts.config {
                Some(p) => tracing::info!(
                    config = %p.display(),
                    services = c.services.len(),
                    plugins = c.plugins.len(),
                    "configuration loaded"
                ),
                None => tracing::info!(
                    "no saved state and no --config: starting with no services \
                     (add them with `wvs adm` or the REST API)"
                ),
            }
            c
        }
    };
    Ok(Start {
        state,
        cfg,
        file_base,
    })
}

/// Every socket of the run, opened before any worker starts, so that a failure leaves
/// nothing running.
struct Sockets {
    /// `--io xdp`: the program (attached once the services are known) and its filter.
    xdp: Option<(XdpProgram, XdpFilter)>,
    /// Each worker's ports and its socket to the own stack.
    per_worker: Vec<(Ports, StackSocket)>,
    /// `--offload tc`: the program, attached to every interface and every receiving
    /// socket.
    offload: Option<Offload>,
}

fn open_sockets(opts: &RunOptions, ifaces: &[neigh::IfaceInfo]) -> Result<Sockets, RunError> {
    // The XDP filter is filled once the services are known.
    let (xdp, xsks, mut passed) = if opts.io == Backend::Xdp {
        let x = setup_xdp(ifaces, opts.workers, &Snapshot::default())?;
        (Some((x.prog, x.filter)), x.per_worker, Some(x.passed))
    } else {
        (None, Vec::new(), None)
    };
    let mut xsks = xsks.into_iter();
    let mut per_worker = Vec::with_capacity(opts.workers);
    for _ in 0..opts.workers {
        let mut socks = match opts.io {
            Backend::Ring => Ports::Ring(Vec::with_capacity(ifaces.len())),
            Backend::Uring => Ports::Uring(Vec::with_capacity(ifaces.len())),
            Backend::Xdp => Ports::Xdp {
                xsks: xsks.next().unwrap_or_default(),
                passed: passed.take(),
                tx: Vec::with_capacity(ifaces.len()),
            },
        };
        for i in ifaces {
            let group = (opts.workers > 1)
                .then(|| (std::process::id() as u16).wrapping_add(i.index as u16));
            let what = || format!("packet socket on {}", i.name);
            match &mut socks {
                Ports::Ring(v) => v.push(RingPort {
                    ring: PacketRing::open(i.index, group).map_err(io_err(what()))?,
                    tx: PacketSocket::open_tx(i.index).map_err(io_err(what()))?,
                }),
                Ports::Uring(v) => {
                    v.push(PacketSocket::open(i.index, group).map_err(io_err(what()))?)
                }
                Ports::Xdp { tx, .. } => tx.push(RingPort {
                    ring: PacketRing::open_tx_only(i.index).map_err(io_err(what()))?,
                    tx: PacketSocket::open_tx(i.index).map_err(io_err(what()))?,
                }),
            }
        }
        let stack =
            StackSocket::new().map_err(io_err("raw socket to the own stack".to_string()))?;
        per_worker.push((socks, stack));
    }
    let offload = match opts.offload {
        OffloadMode::Off => None,
        OffloadMode::Tc => Some(setup_offload(ifaces, &per_worker)?),
        // Its XDP program takes the frames before tc.
        OffloadMode::Default if opts.io == Backend::Xdp => None,
        OffloadMode::Default => match setup_offload(ifaces, &per_worker) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(
                    "flow offload is off: {e} (it is the default where it works;                      --offload off starts without trying, docs/running.md)"
                );
                None
            }
        },
    };
    Ok(Sockets {
        xdp,
        per_worker,
        offload,
    })
}

/// `--offload tc`: load the program, keep what it carries out of every receiving socket,
/// and attach it to every interface. Its map is empty until the workers offer flows, so
/// until then it carries nothing.
fn setup_offload(
    ifaces: &[neigh::IfaceInfo],
    per_worker: &[(Ports, StackSocket)],
) -> Result<Offload, RunError> {
    use std::os::fd::AsFd;
    let indexes: Vec<u32> = ifaces.iter().map(|i| i.index).collect();
    let mut off = Offload::load(&indexes)?;
    // The tc program first: where the kernel has no tcx it fails here, with no socket
    // filtered yet (a program dropped takes its links with it).
    for i in ifaces {
        off.attach(&i.name)?;
    }
    for (ports, _) in per_worker {
        match ports {
            Ports::Ring(v) => v.iter().try_for_each(|p| off.filter(p.ring.as_fd()))?,
            Ports::Uring(v) => v.iter().try_for_each(|s| off.filter(s.as_fd()))?,
            Ports::Xdp { .. } => {}
        }
    }
    Ok(off)
}

/// What is set up with privileges, before they are dropped.
struct Privileged {
    /// The socket broker (new sockets for an interface that comes back).
    broker: Option<crate::io::broker::Broker>,
    /// The path checks of DR and tunnel servers take through the VIP.
    check_path: Option<Arc<crate::health::via::CheckPath>>,
    /// The API's socket and TLS settings.
    api_listener: Option<ApiListener>,
    /// The device that holds the announced VIPs (`--announce`).
    announcer: Option<crate::io::announce::Announcer>,
}

/// The API's listening socket and its TLS settings (`None`: plain HTTP).
type ApiListener = (
    tokio::net::TcpListener,
    Option<Arc<tokio_rustls::rustls::ServerConfig>>,
);

/// The user wvs runs as, the broker, the check path and the API's port: what needs
/// privileges comes before any thread starts (capabilities are each thread's own; a
/// thread inherits its creator's). Then they are dropped, for every thread to come.
async fn set_up_privileged(
    opts: &RunOptions,
    run_as: Option<&crate::privs::RunAs>,
    handle: &rtnetlink::Handle,
    ifaces: &[neigh::IfaceInfo],
    conns: &Arc<ConnTable>,
) -> Result<Privileged, RunError> {
    // First the user wvs runs as (root's setresuid changes every thread, and one that has
    // dropped its capabilities could not follow): the capabilities stay permitted for
    // the setup below, until they are dropped.
    if let Some(u) = run_as {
        crate::privs::become_user(u)?;
    }
    // The sockets of an interface that is deleted and comes back are new ones, which take
    // CAP_NET_RAW: the broker keeps it, apart from wvs.
    // It runs as wvs's user, so that wvs can stop it: CAP_NET_RAW goes to it through
    // the ambient set (cleared again when wvs drops its capabilities).
    crate::privs::pass_on(caps::Capability::CAP_NET_RAW);
    let broker = match crate::io::broker::Broker::start() {
        Ok(b) => {
            tracing::debug!(pid = b.pid(), "socket broker started");
            Some(b)
        }
        Err(e) => {
            tracing::warn!(
                "cannot start the socket broker: an interface deleted and created again \
                 will need a restart of wvs: {e}"
            );
            None
        }
    };
    // Checks of DR and tunnel servers go through the VIP when the path can be set up.
    let check_path = match crate::health::via::CheckPath::setup(
        handle,
        ifaces,
        conns.clone(),
        opts.io == Backend::Xdp,
    )
    .await
    {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(
                "checks of DR and tunnel servers go to their own addresses: the path through the VIP cannot be set up: {e}"
            );
            None
        }
    };
    let api_listener = match opts.api {
        Some(addr) => Some(listen_api(opts, addr).await?),
        None => None,
    };
    // Asked for, it must work: a balancer that cannot announce would not be found.
    let announcer = match &opts.announce {
        Some(name) => Some(
            crate::io::announce::Announcer::open(handle, name)
                .await
                .map_err(|e| RunError::Usage(format!("--announce {name}: {e}")))?,
        ),
        None => None,
    };
    crate::privs::raise_nofile();
    match crate::privs::drop_to_kept(opts.io == Backend::Xdp, opts.offload == OffloadMode::Tc) {
        Ok(d) => tracing::info!(kept = ?d.kept, dropped = d.dropped.len(), "capabilities dropped"),
        Err(e) => tracing::warn!("cannot drop capabilities, running with all of them: {e}"),
    }
    Ok(Privileged {
        broker,
        check_path,
        api_listener,
        announcer,
    })
}

/// The API's port, with its TLS settings if given.
async fn listen_api(
    opts: &RunOptions,
    addr: std::net::SocketAddr,
) -> Result<ApiListener, RunError> {
    let tls = opts
        .api_tls
        .as_ref()
        .map(|(cert, key)| crate::api::server::load_tls(cert, key))
        .transpose()?;
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the API listens beyond this machine over plain HTTP: its token and the \
             client addresses it lists cross the network in the clear (give \
             --api-tls-cert and --api-tls-key)"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io_err(format!("cannot listen on {addr} for the API")))?;
    Ok((listener, tls))
}

/// The plugins (their runtime starts threads), the services' first snapshot, the
/// nftables table and the controller that changes them.
fn build_control(opts: &RunOptions, start: Start) -> Result<Controller, RunError> {
    let Start {
        state,
        cfg,
        file_base,
    } = start;
    let t0 = Instant::now();
    let cache = crate::control::state::plugin_cache_dir(opts.plugin_cache.as_deref());
    let runtime = Runtime::new(cache)?;
    runtime.set_workers(opts.workers);
    match crate::budget::Budget::new(cache) {
        Ok(mut b) => {
            (b.time, b.memory) = opts.plugin_compile;
            runtime.set_gate(b.into_gate())
        }
        Err(e) => tracing::warn!("plugins compile without a time and memory budget: {e}"),
    }
    let mut registry = Registry::new(runtime, opts.wasm_schedulers)?;
    registry.load(&cfg.plugins)?;
    tracing::info!(
        ms = t0.elapsed().as_millis() as u64,
        builtin = if opts.wasm_schedulers {
            "wasm"
        } else {
            "native"
        },
        custom = cfg.plugins.len(),
        "schedulers compiled"
    );
    crate::control::check_kinds(&registry, registry.custom(), &cfg)
        .map_err(|e| RunError::Usage(e.to_string()))?;
    let first = cfg.snapshot(&Snapshot::default(), &registry, registry.custom());
    let snapshot = Arc::new(ArcSwap::from_pointee(first));
    let nft = NftTable::install(&opts.ifaces, &snapshot.load())?;
    tracing::info!(table = crate::consts::NFT_TABLE, "nftables table installed");
    let mut control = Controller::new(cfg, snapshot, registry, nft, state);
    control.set_allow_misc(opts.allow_misc_checks);
    control.set_file_base(file_base);
    // A full or read-only disk does not stop a start that loaded a valid state: wvs
    // serves it, and each change that cannot be saved is refused with the reason.
    if let Err(e) = control.save() {
        tracing::warn!(
            "cannot save the state at start (serving it; changes that cannot be saved will be refused): {e}"
        );
    }
    Ok(control)
}

/// `--io xdp`: the filter filled from the services and handed to the controller, then the
/// program attached: frames are redirected from here on (and wait in the sockets' rings
/// for the workers). Shared with the interface watch, which attaches it to an interface
/// that comes back.
fn attach_xdp(
    xdp: Option<(XdpProgram, XdpFilter)>,
    control: &mut Controller,
    snapshot: &ArcSwap<Snapshot>,
    ifaces: &[neigh::IfaceInfo],
) -> Result<Option<Arc<parking_lot::Mutex<XdpProgram>>>, RunError> {
    let Some((mut prog, mut filter)) = xdp else {
        return Ok(None);
    };
    let snap = snapshot.load();
    filter.update(&snap, crate::health::answers_through_vips(&snap))?;
    control.set_xdp_filter(filter);
    for i in ifaces {
        prog.attach(&i.name)?;
    }
    Ok(Some(Arc::new(parking_lot::Mutex::new(prog))))
}

/// What every worker shares.
struct WorkerShare<'a> {
    conns: &'a Arc<ConnTable>,
    ifaces: &'a Arc<[Iface]>,
    snapshot: &'a Arc<ArcSwap<Snapshot>>,
    stop: &'a Arc<AtomicBool>,
    epoch: Instant,
}

/// The running workers.
struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Each one's counters.
    stats: Vec<Arc<DatapathStats>>,
    /// Each one's mailbox (new sockets from the interface watch).
    mail: Vec<Arc<crate::io::worker::Mailbox>>,
    /// A worker that ends says so here, with why.
    exits: tokio::sync::mpsc::UnboundedReceiver<(usize, std::io::Result<()>)>,
}

/// The offload keeper's thread: merges what the program carried until `stop`.
fn start_keeper(
    keeper: Keeper,
    kicked: std::sync::mpsc::Receiver<()>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, RunError> {
    std::thread::Builder::new()
        .name("wvs-offload".into())
        .spawn(move || keeper.run(&stop, &kicked))
        .map_err(io_err("cannot start the offload keeper"))
}

/// What the XDP program's synproxy keeper reads and counts into.
struct SpShare {
    conns: Arc<ConnTable>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// The worker whose `cookies_sent` counts the program's SYN-ACKs.
    stats: Arc<DatapathStats>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
}

/// The XDP program's synproxy keeper: gives it the cookies' key and clock, then every
/// `SYNPROXY_SYNC_MS` the interfaces where its redirects leave and the services answering
/// with cookies, and counts what it sent.
fn start_sp_keeper(
    (mut sp, mut tx): (crate::io::synproxy::SpMaps, crate::io::xdp::XdpTx),
    share: SpShare,
) -> Result<std::thread::JoinHandle<()>, RunError> {
    sp.start(share.conns.defense(), share.epoch)
        .map_err(|e| XdpError::Program(e.to_string()))?;
    let every = std::time::Duration::from_millis(crate::consts::SYNPROXY_SYNC_MS);
    std::thread::Builder::new()
        .name("wvs-synproxy".into())
        .spawn(move || {
            let mut last = 0;
            loop {
                tx.refresh();
                sp.sync(&share.snapshot.load(), share.conns.defense());
                if let Some(n) = sp.sent() {
                    share
                        .stats
                        .synproxy
                        .cookies_sent
                        .fetch_add(n.saturating_sub(last), Relaxed);
                    last = last.max(n);
                }
                if share.stop.load(Relaxed) {
                    break;
                }
                // In short naps, so that a stop is seen within one.
                let until = Instant::now() + every;
                while Instant::now() < until && !share.stop.load(Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        })
        .map_err(io_err("cannot start the synproxy keeper"))
}

fn start_workers(
    opts: &RunOptions,
    per_worker: Vec<(Ports, StackSocket)>,
    sinks: Vec<Option<crate::io::offload::MapSink>>,
    share: WorkerShare<'_>,
) -> Result<Workers, RunError> {
    let (exit_tx, exits) = tokio::sync::mpsc::unbounded_channel::<(usize, std::io::Result<()>)>();
    let mut w = Workers {
        threads: Vec::with_capacity(opts.workers),
        stats: Vec::with_capacity(opts.workers),
        mail: Vec::with_capacity(opts.workers),
        exits,
    };
    for (id, ((sockets, stack), sink)) in per_worker.into_iter().zip(sinks).enumerate() {
        let stats = Arc::new(DatapathStats::default());
        let mut datapath =
            Datapath::new(share.conns.clone(), share.ifaces.clone(), stats.clone(), id);
        if let Some(s) = sink {
            datapath.set_offload(Box::new(s));
        }
        let mailbox = Arc::new(crate::io::worker::Mailbox::default());
        w.mail.push(mailbox.clone());
        w.stats.push(stats.clone());
        let worker = Worker {
            id,
            ports: sockets,
            stack,
            datapath,
            snapshot: share.snapshot.clone(),
            stop: share.stop.clone(),
            epoch: share.epoch,
            mail: mailbox,
        };
        let tx = exit_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("wvs-worker-{id}"))
            .spawn(move || {
                // A panicking worker must stop the daemon (and so remove the nftables
                // table) rather than leave its share of the traffic unserved.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()))
                    .unwrap_or_else(|_| Err(std::io::Error::other("worker panicked")));
                let _ = tx.send((id, r));
            })
            .map_err(io_err("cannot start a worker thread"))?;
        w.threads.push(t);
    }
    Ok(w)
}

/// The API's state (the controller goes into it), its token, the drain sweep and, with
/// a listener, the server.
async fn start_api(
    opts: &RunOptions,
    control: Controller,
    token_state: Option<&StateFile>,
    conns: &Arc<ConnTable>,
    (stats, offload): (
        &[Arc<DatapathStats>],
        Option<Arc<crate::io::offload::OffloadCounters>>,
    ),
    epoch: Instant,
    listener: Option<ApiListener>,
) -> Result<Arc<crate::api::ApiState>, RunError> {
    let (token, token_source) = match token_state {
        Some(st) => {
            crate::api::load_token(opts.token.clone(), opts.token_file.as_deref(), st.dir())
                .map_err(io_err("cannot read or create the API token"))?
        }
        None => {
            let dir = crate::control::state::TrustedDir::open(
                std::path::Path::new(crate::consts::DEFAULT_STATE_DIR),
                nix::unistd::geteuid().as_raw(),
            )?;
            crate::api::load_token(opts.token.clone(), opts.token_file.as_deref(), &dir)
                .map_err(io_err("cannot read or create the API token"))?
        }
    };
    let snapshot = control.snapshot().clone();
    let api = Arc::new(crate::api::ApiState {
        control: tokio::sync::Mutex::new(control),
        snapshot,
        conns: conns.clone(),
        datapath: stats.to_vec(),
        token,
        epoch,
        token_source,
        max_conns: opts.max_conns,
        api_hosts: opts.api_hosts.clone(),
        server: Default::default(),
        conn_walk: tokio::sync::Semaphore::new(1),
        node: opts.node.clone(),
        announced: Default::default(),
        offload,
    });
    {
        // Drained real servers leave once their connections end or their period is over.
        let st = api.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(crate::consts::DRAIN_SWEEP_MS)).await;
                st.control.lock().await.sweep_drains();
            }
        });
    }
    if let Some((listener, tls)) = listener {
        let addr = listener.local_addr().ok();
        let st = api.clone();
        let https = tls.is_some();
        tokio::spawn(async move {
            if let Err(e) = crate::api::serve(listener, st, tls).await {
                tracing::error!("the API stopped: {e}");
            }
        });
        tracing::info!(addr = ?addr, https, "REST API listening");
    }
    Ok(api)
}

/// Resolve every real server before announcing readiness, so the first connections are
/// not dropped for want of a MAC address (at most 3 s; the rest in the background).
async fn wait_for_next_hops(
    resolver: &mut Resolver,
    snapshot: &ArcSwap<Snapshot>,
) -> Result<(), RunError> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let missing = resolver.refresh(&snapshot.load(), false).await?;
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            tracing::warn!(
                missing,
                "some real servers have no next hop yet; retrying in the background"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(NEIGH_RETRY_MS)).await;
    }
}

/// Next hops and interfaces are looked up over netlink, which can be slow (an emulated
/// machine takes a while per request): in a task of their own, so that the rate
/// estimators' ticks and the signals are never held behind them.
fn watch(
    mut links: Links,
    mut resolver: Resolver,
    handle: &rtnetlink::Handle,
    api: &Arc<crate::api::ApiState>,
    check_path: Option<Arc<crate::health::via::CheckPath>>,
) -> tokio::task::JoinHandle<()> {
    let (snapshot, handle, api) = (api.snapshot.clone(), handle.clone(), api.clone());
    tokio::spawn(async move {
        let mut resolve_tick = tokio::time::interval(Duration::from_millis(NEIGH_RETRY_MS));
        resolve_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_full = Instant::now();
        loop {
            resolve_tick.tick().await;
            let all = last_full.elapsed() >= Duration::from_millis(NEIGH_REFRESH_MS);
            if all {
                last_full = Instant::now();
                links
                    .check(&handle, &mut resolver, &api, check_path.as_deref())
                    .await;
            }
            if let Err(e) = resolver.refresh(&snapshot.load(), all).await {
                tracing::warn!("next-hop refresh failed: {e}");
            }
        }
    })
}

/// Keep the announced VIPs as the servers' health and the sync daemon say, every
/// `ANNOUNCE_TICK_MS`. Aborting the task drops the device, which withdraws them all.
fn announce(
    mut a: crate::io::announce::Announcer,
    api: &Arc<crate::api::ApiState>,
    conns: &Arc<ConnTable>,
) -> tokio::task::JoinHandle<()> {
    let (api, conns) = (api.clone(), conns.clone());
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(Duration::from_millis(crate::consts::ANNOUNCE_TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let snap = api.snapshot.load();
            let serving = !(snap.sysctl.backup_only && conns.sync().is_backup());
            let want = crate::io::announce::wanted(&snap, serving);
            match a.reconcile(&want).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(device = a.name(), "cannot change the announced VIPs: {e}");
                }
                Err(_) => {}
            }
            *api.announced.lock() = Some((a.name().to_string(), a.held().clone()));
        }
    })
}

/// The signals wvs handles.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, RunError> {
        let on = |k| signal(k).map_err(io_err("signal handler"));
        Ok(Self {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
            usr1: on(SignalKind::user_defined1())?,
        })
    }
}

/// Serve until a signal to stop or a worker's end: SIGHUP reloads the file, SIGUSR1 logs
/// the counters; the rate estimators tick, and the counters are logged when they moved.
async fn serve(
    opts: &RunOptions,
    mut sig: Signals,
    api: &crate::api::ApiState,
    conns: &ConnTable,
    workers: &mut Workers,
) -> Result<(), RunError> {
    let mut stats_tick = tokio::time::interval(Duration::from_millis(STATS_LOG_INTERVAL_MS));
    let mut est_tick =
        tokio::time::interval(Duration::from_millis(crate::consts::ESTIMATOR_INTERVAL_MS));
    let mut last_logged = StatsSum::default();
    let sum = |w: &Workers| StatsSum::of(w.stats.iter().map(|s| s.as_ref()));
    loop {
        tokio::select! {
            _ = sig.int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(()); }
            _ = sig.term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(()); }
            _ = sig.hup.recv() => reload(&opts.config, &mut *api.control.lock().await),
            _ = sig.usr1.recv() => log_stats(&sum(workers), conns.len(), &mut *api.control.lock().await),
            Some((id, r)) = workers.exits.recv() => {
                return match r {
                    Ok(()) => Err(RunError::Usage(format!("worker {id} stopped unexpectedly"))),
                    Err(e) => Err(RunError::Io { what: format!("worker {id}"), source: e }),
                };
            }
            _ = est_tick.tick() => {
                let snap = api.snapshot.load();
                api.control.lock().await.traffic().sample(snap.service_stats());
                for svc in snap.services() {
                    svc.stats.sample();
                    for d in &svc.dests {
                        d.stats.sample();
                    }
                }
            }
            _ = stats_tick.tick() => {
                let s = sum(workers);
                if s != last_logged {
                    log_stats(&s, conns.len(), &mut *api.control.lock().await);
                    last_logged = s;
                }
            }
        }
    }
}

/// Load the XDP program, fill its filter from `snap`, and open an XDP socket per receive
/// queue of every interface, dealt out to the workers in turn (a veth has one queue, so
/// with two interfaces and two workers each worker reads one interface). The program is
/// attached later, once every socket of the run exists.
fn setup_xdp(
    ifaces: &[neigh::IfaceInfo],
    workers: usize,
    snap: &Snapshot,
) -> Result<XdpSetup, RunError> {
    let (mut prog, mut filter, passed) = XdpProgram::load()?;
    filter.update(snap, crate::health::answers_through_vips(snap))?;
    let mut per_worker: Vec<Vec<Xsk>> = (0..workers).map(|_| Vec::new()).collect();
    let mut n = 0usize;
    for (port, i) in ifaces.iter().enumerate() {
        for queue in 0..crate::io::xdp::rx_queues(&i.name) {
            let x = Xsk::open(i.index, queue, port as u8).map_err(|source| XdpError::Socket {
                iface: i.name.clone(),
                queue,
                source,
            })?;
            prog.add_socket(i.index, queue, &x)?;
            tracing::info!(
                iface = i.name,
                queue,
                worker = n % workers,
                mode = if x.zero_copy { "zero-copy" } else { "copy" },
                "XDP socket"
            );
            per_worker[n % workers].push(x);
            n += 1;
        }
    }
    Ok(XdpSetup {
        prog,
        filter,
        passed,
        per_worker,
    })
}

/// What `--io xdp` sets up before the workers start.
struct XdpSetup {
    prog: XdpProgram,
    filter: XdpFilter,
    passed: XdpPassed,
    /// Each worker's XDP sockets.
    per_worker: Vec<Vec<Xsk>>,
}

/// Reload the configuration file (SIGHUP). A bad file, or a plugin that does not compile,
/// changes nothing. Plugins are compiled before anything is swapped; a service whose module
/// changed gets a fresh instance of the new one, while its connections keep their servers.
fn reload(path: &Option<PathBuf>, control: &mut Controller) {
    let Some(p) = path else {
        tracing::warn!("SIGHUP: no --config file to reload; keeping the running configuration");
        return;
    };
    let file = match config::load(p) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: configuration not reloaded, the running one stays: {e}");
            return;
        }
    };
    // The file's changes since it was last applied, merged into the running configuration:
    // what `wvs adm` and the API changed elsewhere stays (docs/running.md).
    let base = control.file_base().cloned().unwrap_or_default();
    let (next, changes) = control.config().merge_file(&base, &file);
    if changes.is_empty() {
        control.set_file_base(Some(file));
        tracing::info!(
            config = %p.display(),
            changes = 0,
            "configuration reloaded (the file has not changed since it was applied)"
        );
        return;
    }
    let (services, plugins) = (next.services.len(), next.plugins.len());
    match control.apply(next) {
        Ok(()) => {
            for c in &changes {
                tracing::info!(config = %p.display(), "SIGHUP: {c}");
            }
            control.set_file_base(Some(file));
            tracing::info!(
                config = %p.display(),
                services,
                plugins,
                changes = changes.len(),
                "configuration reloaded"
            )
        }
        Err(e) => tracing::error!("SIGHUP: configuration not reloaded, the running one stays: {e}"),
    }
}

fn log_stats(s: &StatsSum, conns: usize, control: &mut Controller) {
    let snap = control.snapshot().load_full();
    let plugins = &control.registry().runtime().stats;
    use std::sync::atomic::Ordering::Relaxed;
    let drops: Vec<String> = s
        .drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{}={n}", r.name()))
        .collect();
    tracing::info!(
        rx = s.rx,
        tx = s.tx,
        passed = s.passed,
        rx_gso = s.rx_gso,
        icmp_sent = s.icmp_sent,
        resets_sent = s.resets_sent,
        conns_created = s.conns,
        conns_now = conns,
        offloaded = s.offloaded,
        dropped = s.dropped(),
        drops = %drops.join(","),
        plugin_calls = plugins.calls.load(Relaxed),
        plugin_traps = plugins.traps.load(Relaxed),
        plugin_invalid = plugins.invalid.load(Relaxed),
        plugin_fallbacks = plugins.fallbacks.load(Relaxed),
        "stats"
    );
    let traffic = control.traffic();
    let (t, r) = (traffic.totals(snap.service_stats()), traffic.rates());
    tracing::info!(
        conns = t.conns,
        inpkts = t.inpkts,
        outpkts = t.outpkts,
        inbytes = t.inbytes,
        outbytes = t.outbytes,
        cps = r.cps,
        inpps = r.inpps,
        outpps = r.outpps,
        inbps = r.inbps,
        outbps = r.outbps,
        "traffic"
    );
}

#[cfg(test)]
mod default_workers_tests {
    use super::*;

    #[test]
    fn the_default_worker_count_is_one_per_core_up_to_the_bound() {
        assert_eq!(default_workers(0), 1);
        assert_eq!(default_workers(2), 2);
        assert_eq!(default_workers(64), 64);
        assert_eq!(default_workers(96), 64, "96 cores start with 64 workers");
    }
}
