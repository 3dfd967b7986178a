//! The `wvs` command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "wvs",
    version,
    about = "wvs: a Layer-4 load balancer that does what Linux IPVS does, in user space",
    long_about = "wvs balances TCP and UDP connections to virtual services over real servers, \
        like Linux IPVS in NAT (masquerading) mode, from user space: frames are read and sent \
        through AF_PACKET sockets driven by io_uring, and the kernel's copy of wvs's packets \
        is dropped by an nftables table that wvs installs and removes itself."
)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive list).
    #[arg(long, global = true, env = "WVS_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the load balancer on the given interfaces until SIGINT or SIGTERM.
    ///
    /// What it starts with: the configuration saved in --state-dir by an earlier run; at a
    /// first start (nothing saved), the services of --config; with neither, no services at
    /// all, as IPVS starts (add them with `wvs adm` or the REST API). Every change is saved
    /// to --state-dir.
    ///
    /// SIGHUP reloads the --config file; a file that does not validate changes nothing.
    /// SIGUSR1 logs the counters at once (they are also logged every 10 s while they change).
    /// wvs needs CAP_NET_ADMIN and CAP_NET_RAW (run it as root) and the `nft` command.
    Run {
        /// An interface to serve (clients and real servers are reached through these).
        /// Give it once per interface.
        #[arg(long = "iface", value_name = "IF", required = true)]
        ifaces: Vec<String>,
        /// TOML file with the virtual services and real servers (see examples/wvs.toml).
        /// Read at the first start, when the state directory holds no saved state; after
        /// that the saved state wins and this file applies on SIGHUP. Without either, wvs
        /// starts with no services: add them with `wvs adm` or the REST API.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Datapath worker threads [default: one per core, at most 64].
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// How the workers move frames: `ring`, packet sockets with memory-mapped receive
        /// and transmit rings (frames handed over as they arrive, each batch sent with one
        /// system call); `uring`, packet sockets read and written through io_uring one
        /// frame per operation (a copy and an skb per frame each way); or `xdp`, AF_XDP
        /// sockets fed by wvs's own XDP program (attached to each --iface in driver mode
        /// while wvs runs; frames before the kernel builds an skb, the rest passed to the
        /// kernel), sending through TX rings as `ring` does. See BENCHMARKS.md.
        #[arg(long = "io", value_name = "BACKEND", default_value = "ring", value_parser = ["ring", "uring", "xdp"])]
        io: String,
        /// Flow offload: `tc`, the packets of long connections wvs has decided (past their
        /// first 8 client packets: TCP in ESTABLISHED, busy UDP flows; NAT, full NAT and
        /// direct routing) are carried by wvs's tc-BPF program on each --iface, in the
        /// sender's softirq, and never copied to wvs; SYN, FIN, RST and anything that needs
        /// an answer still come to wvs, and what the program carried is merged into the
        /// counters and timers every second and before the API reads them. `off`: every
        /// packet goes through wvs. Default: `tc` with --io ring or uring where the kernel
        /// can (6.6 or later, CAP_BPF), else `off` with a warning; `off` under --io xdp.
        /// See docs/running.md and BENCHMARKS.md.
        #[arg(long, value_name = "MODE", value_parser = ["tc", "off"])]
        offload: Option<String>,
        /// Most connections tracked at once.
        #[arg(long, value_name = "N", default_value_t = wvs::consts::DEFAULT_MAX_CONNS)]
        max_conns: usize,
        /// How the built-in IPVS schedulers run: as WebAssembly plugins embedded in the
        /// binary (wasm), or compiled in (native). Plugins from files always run as wasm.
        #[arg(long, value_name = "MODE", default_value = "wasm", value_parser = ["wasm", "native"])]
        sched_runtime: String,
        /// Directory of the compiled-plugin cache, so that a restart does not compile again.
        #[arg(long, value_name = "DIR", default_value = "/var/cache/wvs/plugins")]
        plugin_cache: PathBuf,
        /// Do not cache compiled plugins on disk.
        #[arg(long)]
        no_plugin_cache: bool,
        /// Seconds an uploaded or configured plugin may take to compile (in a process of
        /// its own, killed after; the upload is refused).
        #[arg(long, value_name = "SECS", default_value_t = wvs::consts::PLUGIN_COMPILE_SECS,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        plugin_compile_timeout: u64,
        /// MiB of address space a plugin's compilation may take (its process's limit).
        #[arg(long, value_name = "MIB", default_value_t = wvs::consts::PLUGIN_COMPILE_MEMORY >> 20,
              value_parser = clap::value_parser!(u64).range(64..=65536))]
        plugin_compile_memory: u64,
        /// State directory: the configuration is saved there atomically after every change
        /// and restored at start (it wins over --config, which then applies on SIGHUP);
        /// uploaded plugins and the generated API token live there too.
        #[arg(long, value_name = "DIR", default_value = wvs::consts::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Address of the REST API, the dashboard and /metrics.
        #[arg(long, value_name = "ADDR", default_value = wvs::consts::DEFAULT_API_ADDR)]
        api: std::net::SocketAddr,
        /// Do not serve the REST API.
        #[arg(long)]
        no_api: bool,
        /// A host name the API answers to, besides IP addresses and `localhost`
        /// (repeatable). A request whose Host header names another is refused, so that a
        /// web page on a name that resolves here (DNS rebinding) cannot use the API from
        /// a browser.
        #[arg(long, value_name = "NAME")]
        api_host: Vec<String>,
        /// The API's TLS certificate chain (PEM): the API, the dashboard and /metrics are
        /// served over HTTPS. Needs --api-tls-key.
        #[arg(long, value_name = "FILE", requires = "api_tls_key")]
        api_tls_cert: Option<PathBuf>,
        /// The private key of --api-tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
        #[arg(long, value_name = "FILE", requires = "api_tls_cert")]
        api_tls_key: Option<PathBuf>,
        /// File holding the API token. Without it (and without WVS_API_TOKEN), a random
        /// token is written to STATE_DIR/api-token (mode 0600) and used.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Started as root, the user wvs runs as once its sockets are open, keeping only
        /// the capabilities it needs; the state directory and plugin cache are made its.
        /// The default user is created as a system user if missing. `--user root` keeps
        /// uid 0 (warned about).
        #[arg(long, value_name = "NAME", default_value = wvs::consts::DEFAULT_USER)]
        user: String,
        /// Let the REST API and `wvs adm` add misc health checks (programs wvs runs, as
        /// its user, with no capability and a minimal environment). Without it only the
        /// --config file may name them.
        #[arg(long)]
        allow_misc_checks: bool,
        /// Hold each VIP this balancer can serve as an address of a TUN device of this
        /// name (created by wvs, gone with it), for a routing daemon to announce: BIRD's
        /// `protocol direct`, FRR's `redistribute connected`. A VIP leaves the device when
        /// none of its services has a server taking connections, and every VIP leaves
        /// when wvs stops, crashes or is killed. See docs/scaling-out.md.
        #[arg(long, value_name = "IF")]
        announce: Option<String>,
        /// This balancer's name in a fleet: every /metrics series carries
        /// node="NAME", so that one Prometheus scrapes the directors apart.
        #[arg(long, value_name = "NAME", env = "WVS_NODE")]
        node: Option<String>,
    },
    /// Compile a plugin module from standard input within a memory budget (internal:
    /// `wvs run` compiles uploads this way, and kills it after its time budget).
    #[command(hide = true)]
    PluginCompile {
        /// Address-space limit, bytes.
        #[arg(long)]
        memory: u64,
        /// The compiled-plugin cache to fill.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// The socket broker `wvs run` starts for itself (internal): it keeps CAP_NET_RAW and
    /// hands wvs new packet sockets over its standard input, for an interface that returns.
    #[command(hide = true)]
    SocketBroker,
    /// Show or change a running wvs the way ipvsadm does, over the REST API.
    ///
    /// Takes ipvsadm's options (-A -E -D -C -a -e -d -L -S -R, -t -u, -s -p -M -b,
    /// -r -m -w -x -y, -n -c --stats --rate --exact) and prints ipvsadm's formats, so that
    /// existing scripts and `ipvsadm-save -n` files work. `wvs adm -h` lists them.
    #[command(disable_help_flag = true)]
    Adm {
        /// ipvsadm's arguments.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if matches!(cli.command, Command::Run { .. }) {
        // Before any thread: the token must not stay in what /proc shows of wvs.
        wvs::privs::reexec_without_env_token();
    }
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, without a backtrace: these are operator errors.
            eprintln!("wvs: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::SocketBroker => wvs::io::broker::serve()?,
        Command::PluginCompile { memory, cache } => {
            wvs::budget::child_main(memory, cache.as_deref()).map_err(anyhow::Error::msg)?
        }
        Command::Adm { args } => {
            let code = wvs::adm::main(&args);
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Run {
            ifaces,
            config,
            workers,
            io,
            offload,
            max_conns,
            sched_runtime,
            plugin_cache,
            no_plugin_cache,
            plugin_compile_timeout,
            plugin_compile_memory,
            state_dir,
            api,
            no_api,
            api_host,
            api_tls_cert,
            api_tls_key,
            token_file,
            user,
            allow_misc_checks,
            announce,
            node,
        } => {
            // One per core, up to the most wvs runs (a 96-core machine starts with 64).
            let workers = workers.unwrap_or_else(|| {
                wvs::run::default_workers(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                )
            });
            wvs::run::run(wvs::run::RunOptions {
                ifaces,
                config,
                workers,
                io: io.parse().map_err(anyhow::Error::msg)?,
                offload: match offload.as_deref() {
                    Some("tc") => wvs::run::OffloadMode::Tc,
                    Some(_) => wvs::run::OffloadMode::Off,
                    None => wvs::run::OffloadMode::Default,
                },
                max_conns,
                wasm_schedulers: sched_runtime == "wasm",
                plugin_cache: (!no_plugin_cache).then_some(plugin_cache),
                plugin_compile: (
                    std::time::Duration::from_secs(plugin_compile_timeout),
                    plugin_compile_memory << 20,
                ),
                state_dir: Some(state_dir),
                api: (!no_api).then_some(api),
                api_hosts: api_host,
                api_tls: api_tls_cert.zip(api_tls_key),
                token: wvs::privs::take_env_token(),
                token_file,
                user,
                allow_misc_checks,
                announce,
                node,
            })?;
        }
    }
    Ok(())
}
