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
use crate::consts::{
    CONN_SWEEP_INTERVAL_MS, NEIGH_REFRESH_MS, NEIGH_RETRY_MS, STATS_LOG_INTERVAL_MS,
};
use crate::control::{Controller, StateFile};
use crate::datapath::{Datapath, DatapathStats, Iface, StatsSum};
use crate::io::Backend;
use crate::io::neigh::{self, NeighError, Resolver};
use crate::io::nft::{NftError, NftTable};
use crate::io::ring::PacketRing;
use crate::io::socket::{PacketSocket, StackSocket};
use crate::io::worker::{Ports, RingPort, Worker};
use crate::io::xdp::{XdpError, XdpFilter, XdpPassed, XdpProgram, Xsk};
use crate::plugin::{Registry, Runtime};
use crate::service::Snapshot;

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

async fn run_async(opts: RunOptions) -> Result<(), RunError> {
    if opts.ifaces.is_empty() || opts.ifaces.len() > usize::from(u8::MAX) {
        return Err(RunError::Usage("give between 1 and 255 --iface".into()));
    }
    let mut names = opts.ifaces.clone();
    names.sort();
    names.dedup();
    if names.len() != opts.ifaces.len() {
        return Err(RunError::Usage("an interface is given twice".into()));
    }
    if opts.workers == 0 || opts.workers > crate::consts::MAX_WORKERS {
        return Err(RunError::Usage(format!(
            "--workers must be between 1 and {}",
            crate::consts::MAX_WORKERS
        )));
    }
    // What to start with: the saved state if there is one, else the --config file, else
    // nothing (services are then added over the API or with `wvs adm`).
    // Started as root: the user wvs becomes once set up, who owns its directories.
    let run_as = crate::privs::resolve_user(&opts.user)?;
    if let Some(u) = &run_as {
        for d in opts.state_dir.iter().chain(opts.plugin_cache.iter()) {
            crate::privs::give_dir(d, u)?;
        }
    }
    let owner = run_as
        .as_ref()
        .map_or_else(nix::unistd::geteuid, |u| u.uid)
        .as_raw();
    let state = opts
        .state_dir
        .as_deref()
        .map(|d| StateFile::open(d, owner))
        .transpose()?;
    let saved = match &state {
        Some(st) => st.load()?,
        None => None,
    };
    // The file as it is now: what a SIGHUP compares the file with, to apply its changes.
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
    let handle = neigh::connect()?;
    let ifaces = neigh::lookup_ifaces(&handle, &opts.ifaces).await?;
    for i in &ifaces {
        tracing::info!(iface = i.name, index = i.index, mac = %neigh::fmt_mac(&i.mac), "interface");
    }

    let dp_ifaces: Arc<[Iface]> = ifaces.iter().map(|i| Iface::new(i.mac)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();

    // Open every socket before starting any worker, so a failure leaves nothing running.
    // The XDP filter is filled once the services are known (below).
    let (xdp, xsks, mut passed, xdp_filter) = if opts.io == Backend::Xdp {
        let x = setup_xdp(&ifaces, opts.workers, &Snapshot::default())?;
        (Some(x.prog), x.per_worker, Some(x.passed), Some(x.filter))
    } else {
        (None, Vec::new(), None, None)
    };
    let mut xsks = xsks.into_iter();
    let mut worker_sockets = Vec::with_capacity(opts.workers);
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
        for i in &ifaces {
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
        worker_sockets.push((socks, stack));
    }
    // First the user wvs runs as (root's setresuid changes every thread, and one that has
    // dropped its capabilities could not follow): the capabilities stay permitted for
    // the setup below, until they are dropped.
    if let Some(u) = &run_as {
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
    // What needs privileges comes before any thread starts (capabilities are each thread's
    // own; a thread inherits its creator's): the sockets above, the check path's TUN device
    // and routing rule, the API's port. Then they are dropped, for every thread to come.
    // Checks of DR and tunnel servers go through the VIP when the path can be set up.
    let conns = Arc::new(ConnTable::new(opts.max_conns));
    let check_path = match crate::health::via::CheckPath::setup(
        &handle,
        &ifaces,
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
        Some(addr) => {
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
            Some((listener, tls))
        }
        None => None,
    };
    crate::privs::raise_nofile();
    match crate::privs::drop_to_kept(opts.io == Backend::Xdp) {
        Ok(d) => tracing::info!(kept = ?d.kept, dropped = d.dropped.len(), "capabilities dropped"),
        Err(e) => tracing::warn!("cannot drop capabilities, running with all of them: {e}"),
    }

    // Then the plugins (their runtime starts threads), the services and the nftables table.
    let t0 = Instant::now();
    let runtime = Runtime::new(opts.plugin_cache.as_deref())?;
    runtime.set_workers(opts.workers);
    match crate::plugin::budget::Budget::new(opts.plugin_cache.as_deref()) {
        Ok(mut b) => {
            (b.time, b.memory) = opts.plugin_compile;
            runtime.set_budget(b)
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
    let mut first = Snapshot::build_with_helpers(
        &cfg.services,
        &cfg.timeouts,
        &Snapshot::default(),
        &|name| crate::service::SchedChoice::new(name, registry.plugin_for(name)),
        &|name| registry.helper_in(registry.custom(), name),
    );
    first.sysctl = cfg.sysctl;
    first.defense = cfg.defense;
    let snapshot = Arc::new(ArcSwap::from_pointee(first));
    let nft = NftTable::install(&opts.ifaces, &snapshot.load())?;
    tracing::info!(table = crate::consts::NFT_TABLE, "nftables table installed");
    // The token is read from (or made in) the state directory once the API starts.
    let token_state = state.clone();
    let mut control = Controller::new(cfg, snapshot.clone(), registry, nft, state);
    control.set_allow_misc(opts.allow_misc_checks);
    control.set_file_base(file_base);
    // A full or read-only disk does not stop a start that loaded a valid state: wvs
    // serves it, and each change that cannot be saved is refused with the reason.
    if let Err(e) = control.save() {
        tracing::warn!(
            "cannot save the state at start (serving it; changes that cannot be saved will be refused): {e}"
        );
    }
    conns.defense().configure(snapshot.load().defense);
    if let Some(mut filter) = xdp_filter {
        filter.update(&snapshot.load())?;
        control.set_xdp_filter(filter);
    }
    // Frames are redirected from here on (and wait in the sockets' rings for the workers).
    let mut xdp = xdp;
    if let Some(prog) = &mut xdp {
        for i in &ifaces {
            prog.attach(&i.name)?;
        }
    }
    // Shared with the interface watch, which attaches it to an interface that comes back.
    let xdp = xdp.map(|p| Arc::new(parking_lot::Mutex::new(p)));
    let (exit_tx, mut exit_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, std::io::Result<()>)>();
    let mut all_stats: Vec<Arc<DatapathStats>> = Vec::new();
    let mut threads = Vec::new();
    let mut mail = Vec::with_capacity(opts.workers);
    for (id, (sockets, stack)) in worker_sockets.into_iter().enumerate() {
        let stats = Arc::new(DatapathStats::default());
        let mailbox = Arc::new(crate::io::worker::Mailbox::default());
        mail.push(mailbox.clone());
        all_stats.push(stats.clone());
        let worker = Worker {
            id,
            ports: sockets,
            stack,
            datapath: Datapath::new(conns.clone(), dp_ifaces.clone(), stats, id),
            snapshot: snapshot.clone(),
            stop: stop.clone(),
            epoch,
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
        threads.push(t);
    }
    let sweeper = {
        let (conns, stop, snapshot) = (conns.clone(), stop.clone(), snapshot.clone());
        std::thread::Builder::new()
            .name("wvs-expire".into())
            .spawn(move || {
                let mut settings = snapshot.load().defense;
                while !stop.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(CONN_SWEEP_INTERVAL_MS));
                    let now = epoch.elapsed().as_millis() as u64;
                    conns.set_expire_nodest(snapshot.load().sysctl.expire_nodest_conn);
                    let n = conns.sweep(now);
                    if n > 0 {
                        tracing::trace!(expired = n, "connections expired");
                    }
                    // defense_work_handler: the level from how full the table (and memory)
                    // is, then drop_entry's scan.
                    let defense = conns.defense();
                    let now_settings = snapshot.load().defense;
                    if now_settings != settings {
                        defense.configure(now_settings);
                        settings = now_settings;
                    }
                    defense.update(
                        conns.len(),
                        conns.max_conns(),
                        crate::conn::defense::avail_pages(),
                    );
                    if defense.drop_entry() {
                        let n = conns.random_dropentry(now);
                        if n > 0 {
                            tracing::debug!(dropped = n, "drop_entry expired connections");
                        }
                    }
                }
            })
            .map_err(io_err("cannot start the expiry thread"))?
    };

    // The health checks: their own thread and runtime, reading the published snapshot.
    let _health = crate::health::Monitor::start(snapshot.clone(), stop.clone(), check_path.clone())
        .map_err(io_err("cannot start the health checker".to_string()))?;

    let (token, token_source) = match &token_state {
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
    let api = Arc::new(crate::api::ApiState {
        control: tokio::sync::Mutex::new(control),
        snapshot: snapshot.clone(),
        conns: conns.clone(),
        datapath: all_stats.clone(),
        token,
        epoch,
        token_source,
        max_conns: opts.max_conns,
        api_hosts: opts.api_hosts.clone(),
        server: Default::default(),
        conn_walk: tokio::sync::Semaphore::new(1),
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
    if let Some((listener, tls)) = api_listener {
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

    let mut resolver = Resolver::new(handle.clone(), ifaces.clone());
    let mut links = Links {
        seen: ifaces.iter().map(|i| Some((i.index, i.mac))).collect(),
        ifaces: ifaces.clone(),
        dp: dp_ifaces.clone(),
        mail,
        broker,
        io: opts.io,
        workers: opts.workers,
        xdp: xdp.clone(),
    };
    // Resolve every real server before announcing readiness, so the first connections are
    // not dropped for want of a MAC address.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let missing = resolver.refresh(&snapshot.load(), false).await?;
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                missing,
                "some real servers have no next hop yet; retrying in the background"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(NEIGH_RETRY_MS)).await;
    }
    tracing::info!(workers = opts.workers, io = opts.io.name(), ifaces = ?opts.ifaces, "ready");

    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("signal handler"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("signal handler"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(io_err("signal handler"))?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(io_err("signal handler"))?;
    // Next hops and interfaces are looked up over netlink, which can be slow (an emulated
    // machine takes a while per request): in a task of their own, so that the rate
    // estimators' ticks and the signals are never held behind them.
    let neighbours = {
        let (snapshot, handle, api, check_path) = (
            snapshot.clone(),
            handle.clone(),
            api.clone(),
            check_path.clone(),
        );
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
    };
    let mut stats_tick = tokio::time::interval(Duration::from_millis(STATS_LOG_INTERVAL_MS));
    let mut est_tick =
        tokio::time::interval(Duration::from_millis(crate::consts::ESTIMATOR_INTERVAL_MS));
    let mut last_logged = StatsSum::default();
    let result = loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break Ok(()); }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break Ok(()); }
            _ = sighup.recv() => reload(&opts.config, &mut *api.control.lock().await),
            _ = sigusr1.recv() => log_stats(&StatsSum::of(all_stats.iter().map(|s| s.as_ref())), conns.len(), &mut *api.control.lock().await),
            Some((id, r)) = exit_rx.recv() => {
                break match r {
                    Ok(()) => Err(RunError::Usage(format!("worker {id} stopped unexpectedly"))),
                    Err(e) => Err(RunError::Io { what: format!("worker {id}"), source: e }),
                };
            }
            _ = est_tick.tick() => {
                let snap = snapshot.load();
                api.control.lock().await.traffic().sample(snap.service_stats());
                for svc in snap.services() {
                    svc.stats.sample();
                    for d in &svc.dests {
                        d.stats.sample();
                    }
                }
            }
            _ = stats_tick.tick() => {
                let s = StatsSum::of(all_stats.iter().map(|s| s.as_ref()));
                if s != last_logged {
                    log_stats(&s, conns.len(), &mut *api.control.lock().await);
                    last_logged = s;
                }
            }
        }
    };

    neighbours.abort();
    let _ = neighbours.await;
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = sweeper.join();
    let mut control = api.control.lock().await;
    log_stats(
        &StatsSum::of(all_stats.iter().map(|s| s.as_ref())),
        conns.len(),
        &mut control,
    );
    // The XDP program goes before the nftables table, so that no frame of a service reaches
    // the kernel unfiltered in between (the interface watch, which shared it, has ended).
    drop(xdp);
    if check_path.is_some() {
        crate::health::via::CheckPath::teardown(&handle).await;
    }
    control.remove_nft()?;
    tracing::info!(
        table = crate::consts::NFT_TABLE,
        "nftables table removed; stopped"
    );
    result
}

/// wvs's interfaces as last seen. One that disappears is logged; when one of the same name
/// is there again (a new index, perhaps a new address), the workers get new sockets on it
/// from the broker, the datapath and the check path its address, the resolver its index,
/// and the nftables table is written again (its hook went with the old interface).
struct Links {
    ifaces: Vec<neigh::IfaceInfo>,
    /// Per interface: its index and address, `None` while it is gone.
    seen: Vec<Option<(u32, [u8; 6])>>,
    dp: Arc<[Iface]>,
    mail: Vec<Arc<crate::io::worker::Mailbox>>,
    broker: Option<crate::io::broker::Broker>,
    io: Backend,
    workers: usize,
    /// `--io xdp`: the program, to be attached to an interface that comes back.
    xdp: Option<Arc<parking_lot::Mutex<XdpProgram>>>,
}

impl Links {
    async fn check(
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
    filter.update(snap)?;
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
