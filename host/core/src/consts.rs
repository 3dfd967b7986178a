//! Every tunable constant of wvs in one place (Katran keeps its `balancer_consts.h` the same way).
//!
//! Values that IPVS defines carry the kernel's name and value; the others say why they are what
//! they are.

/// IPVS TCP state timeouts in seconds, indexed by [`crate::conn::TcpState`]
/// (`tcp_timeouts[]` in `ip_vs_proto_tcp.c`):
/// NONE, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK,
/// LISTEN, SYNACK.
pub const TCP_TIMEOUTS_SECS: [u32; 11] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];

/// IPVS SCTP state timeouts in seconds, indexed by [`crate::model::SctpState`]
/// (`sctp_timeouts[]` in `ip_vs_proto_sctp.c`; 61 is `IP_VS_SCTP_MAX_RTO`, INIT1 and
/// REJECTED's 4 are `(0 + 3 + 1) * HZ`): NONE, INIT1, INIT, C-SENT, C-REPLIED, C-WAIT,
/// COOKIE, C-ECHOED, ESTABLISHED, S-SENT, S-RECEIVED, S-ACK-SENT, REJECTED, CLOSED.
/// ipvsadm's `--set` changes none of them.
pub const SCTP_TIMEOUTS_SECS: [u32; 14] = [2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61];

/// IPVS UDP timeout in seconds (`udp_timeouts[IP_VS_UDP_S_NORMAL] = 5*60*HZ`).
pub const UDP_TIMEOUT_SECS: u32 = 300;

/// Default bound on tracked connections. IPVS is bounded only by memory; a user-space table
/// needs a number, and one million entries fit in well under 256 MiB.
pub const DEFAULT_MAX_CONNS: usize = 1 << 20;

/// Shards of the connection table. A power of two; many more than worker threads, so two
/// workers rarely meet on one shard lock and an expiry sweep holds each lock only briefly.
pub const CONN_SHARDS: usize = 256;

/// The local ports full NAT hands out, per local address (DPVS's range: the unprivileged
/// ports), so a local address carries up to 64,512 connections at once.
pub const FULLNAT_PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;

/// Random slots a full shard looks at for a half-open entry to evict before it refuses a
/// new connection: bounded work per refused packet in a flood, and with a flood's entries
/// filling the shard, one is nearly always found.
pub const CONN_EVICT_PROBES: usize = 8;

/// How often the expiry timer sweeps the connection table. Connections live at most this much
/// longer than their state's timeout.
pub const CONN_SWEEP_INTERVAL_MS: u64 = 1000;

/// Size of the `struct virtio_net_hdr` that `PACKET_VNET_HDR` puts before every frame.
pub const VNET_HDR_LEN: usize = 10;

/// Bytes per packet buffer: the largest GRO/GSO super-packet the kernel hands a packet socket
/// (64 KiB of IP datagram) plus the vnet and Ethernet headers, rounded up.
pub const SLOT_SIZE: usize = 65536 + 512;

/// Transmit buffers per worker for the segments of GSO super-packets wvs cuts itself
/// (into tunnels): a 64 KiB super-packet at MTU 1500 makes 45.
pub const SEG_BUFFERS: u16 = 256;

/// Size of a segment buffer: a vnet header and a frame of up to a 9000-byte MTU.
pub const SEG_SLOT: usize = 9216;

/// Bytes of a slot of the packet rings (`--io ring`): a 1500-byte MTU frame with its
/// `tpacket2_hdr`, address and vnet header (76 bytes before the frame) and room for what
/// wvs adds (a tunnel header, an ICMP error written in place). Larger frames are copied
/// through the socket instead (see `io::ring`).
pub const RING_FRAME_SIZE: usize = 2048;

/// Bytes of a ring block: the unit the kernel allocates (16 slots, one order-2 page set).
pub const RING_BLOCK_SIZE: usize = 1 << 15;

/// Slots of each receive ring (one per worker and interface): 4 MiB, a few milliseconds of
/// line rate at the packet rates of the benchmarks.
pub const RING_RX_FRAMES: u32 = 2048;

/// Slots of each transmit ring: a slot stays the kernel's until the skb made from it is
/// freed (at the next hop's socket, for a veth), so there are more than one batch's worth.
pub const RING_TX_FRAMES: u32 = 1024;

/// Most frames a worker takes from one ring before it sends what it has and looks at the
/// other rings and its completions.
pub const RING_BATCH: u32 = 256;

/// Bytes of an AF_XDP UMEM chunk (`--io xdp`): one frame each. The kernel writes a frame
/// 256 bytes in (`XDP_PACKET_HEADROOM`), where wvs puts the vnet header the datapath reads;
/// 4 KiB leaves room for the largest frame XDP on a veth takes (its MTU is capped at about
/// 3.5 KB without multi-buffer XDP).
pub const XSK_CHUNK_SIZE: u32 = 4096;

/// Chunks of each AF_XDP socket's UMEM (16 MiB), all of them in its fill ring at once.
pub const XSK_CHUNKS: u32 = 4096;

/// Descriptors of each AF_XDP socket's RX ring.
pub const XSK_RX_RING: u32 = 2048;

/// Descriptors of the completion ring, which the kernel requires and wvs does not use (it
/// sends through the packet sockets' TX rings, see `io::xdp`).
pub const XSK_COMPLETION_RING: u32 = 64;

/// Packet buffers per worker, shared by its sockets through one provided-buffer ring. A
/// power of two. Enough for a burst between two wake-ups of a worker plus the frames in
/// flight to the egress socket; only the bytes frames touch become resident memory.
pub const BUFFERS_PER_WORKER: u16 = 1024;

/// Completion-queue entries drained before submitting the resulting sends and receives in
/// one `io_uring_enter`.
pub const URING_ENTRIES: u32 = 1024;

/// How long a worker blocks in `io_uring_enter` before it looks at its stop flag.
pub const WORKER_WAKE_MS: i64 = 200;
/// How often a worker asks the kernel how many frames its sockets' full receive queues
/// dropped (one `getsockopt` per socket).
pub const QUEUE_DROPS_POLL_MS: u64 = 100;

/// Socket receive buffer per packet socket (`SO_RCVBUFFORCE`).
pub const SOCKET_RCVBUF: i32 = 8 << 20;

/// How often next hops (route and neighbour of every real server) are re-read from the kernel.
pub const NEIGH_REFRESH_MS: u64 = 1000;

/// How soon a real server with no known next hop is looked up again.
pub const NEIGH_RETRY_MS: u64 = 100;

/// How often the VIPs held for the routing daemon (`wvs run --announce`) are compared with
/// the servers' health: a VIP whose last server fails is withdrawn within this much of
/// the check's verdict.
pub const ANNOUNCE_TICK_MS: u64 = 200;

/// UDP port the neighbour resolver sends an empty datagram to, to make the kernel resolve a
/// next hop's link-layer address (discard service, RFC 863).
pub const NEIGH_PROBE_PORT: u16 = 9;

/// Name of the nftables table wvs installs in its network namespace.
pub const NFT_TABLE: &str = "wvs";

/// How long an `nft` run may take before it is killed and its change refused.
pub const NFT_TIMEOUT_MS: u64 = 10_000;

/// Priority of wvs's netdev ingress chain: before anything else may see the packet.
pub const NFT_PRIORITY: i32 = -500;

/// Interval of the statistics line in the log.
pub const STATS_LOG_INTERVAL_MS: u64 = 10_000;

/// Period of the plugin runtime's epoch timer (wasmtime epoch interruption), in µs. The
/// timer ticks on absolute times, so the period holds on average whatever the sleep's
/// overshoot; it runs only while plugins are called.
pub const PLUGIN_EPOCH_US: u64 = 100;

/// Ticks with no plugin call running or started after which the epoch timer sleeps until
/// the next call (then it uses no CPU): 5 ms, so that a steady stream of calls (200 new
/// connections a second or more) keeps it ticking instead of waking it for each, and a
/// trickle costs 50 ticks a call.
pub const PLUGIN_EPOCH_IDLE_TICKS: u32 = 50;

/// Epochs of wall-clock time after which a plugin call's running time is examined: 7 ticks
/// (0.6 to 0.7 ms, the first tick may come at once); then
/// [`PLUGIN_OVERRUN_RUNNING_WINDOWS`] windows of [`PLUGIN_OVERRUN_WINDOW_TICKS`] in which it
/// must have run to be interrupted, so a runaway call ends within 1.1 ms. A scheduler call
/// takes about a microsecond: a call this long is a runaway plugin holding a worker, not a
/// slow one.
pub const PLUGIN_DEADLINE_EPOCHS: u64 = 7;
/// The window, in ticks, over which the thread's CPU clock tells a running call (at least
/// half of it on the CPU) from a preempted one (given another window).
pub const PLUGIN_OVERRUN_WINDOW_TICKS: u64 = 2;
/// Windows in a row a call must have run in to be interrupted: two, since the CPU clock
/// of one window may hold a burst of the kernel's work (a fresh instance's page faults,
/// a softirq that ran in the worker's time), which took a helper of a CI run's FTP
/// session for a runaway one and cut the session.
pub const PLUGIN_OVERRUN_RUNNING_WINDOWS: u32 = 2;
/// Windows after which a call is interrupted however little it ran (10 ms of wall time).
pub const PLUGIN_OVERRUN_MAX_WINDOWS: u32 = 50;
/// Deadline of a plugin's instantiation and ABI checks, in epochs (1 s): on the control
/// thread, never per packet, and long enough for a slow or emulated machine, where 10 ms
/// refused the built-in plugins at start.
pub const PLUGIN_SETUP_DEADLINE_EPOCHS: u64 = 10_000;

/// A scheduler call that takes longer than this (µs) is slow: a hundred times what the
/// built-in ones take.
pub const PLUGIN_SLOW_CALL_US: u64 = 100;
/// A scheduler plugin's slowness score rises by this much on a slow call and falls by one
/// on another; at [`PLUGIN_SLOW_SCORE_LIMIT`] the service falls back. 16 slow calls in a
/// row, or more than one call in five for long, make a plugin too slow; a rare slow call
/// (a preemption in the middle of it) does not.
pub const PLUGIN_SLOW_SCORE_STEP: u32 = 4;
/// See [`PLUGIN_SLOW_SCORE_STEP`].
pub const PLUGIN_SLOW_SCORE_LIMIT: u32 = 64;

/// Most linear memory a plugin instance may have (bytes). The built-in schedulers use about
/// 1 MiB (Rust's default stack plus the shared table).
pub const PLUGIN_MAX_MEMORY: usize = 16 << 20;

/// Seconds a module from outside may take to compile (in its own process, killed after).
/// The built-in schedulers take milliseconds; a large real plugin a second or two here.
pub const PLUGIN_COMPILE_SECS: u64 = 30;

/// Address space a module from outside may take to compile, bytes: Cranelift's working
/// memory and the compiler's threads' stacks.
pub const PLUGIN_COMPILE_MEMORY: u64 = 2 << 30;

/// Most elements a plugin's tables may hold together. A Rust or C plugin's function table
/// has one entry per function called indirectly, a few hundred at most; without a bound a
/// `table.grow` loop takes host memory at will (wasmtime's table storage is host memory).
pub const PLUGIN_MAX_TABLE_ELEMENTS: usize = 10_000;

/// The wait before a helper instance whose call failed is built again (off the datapath),
/// doubled with each failure in a row up to [`HELPER_REBUILD_BACKOFF_MAX_MS`]. Meanwhile
/// the worker's new connections pass the helper by, as after a fault.
pub const HELPER_REBUILD_BACKOFF_MS: u64 = 100;
/// The longest wait before a helper instance is built again.
pub const HELPER_REBUILD_BACKOFF_MAX_MS: u64 = 30_000;

/// Most expected connections one helper call may register (an FTP reply asks for one).
pub const HELPER_MAX_EXPECTS_PER_CALL: usize = 4;

/// Expected connections one control connection may have waiting at once (no packet has
/// used them): a newer one replaces the oldest. IPVS's FTP helper asks for one per
/// `PORT`/`PASV`, so a client has one waiting; a few allow for pipelined commands.
pub const HELPER_MAX_EXPECTS_PER_CONN: usize = 4;

/// How long an expected connection waits for its first packet unless the helper says
/// otherwise: IPVS's LISTEN timeout (`ip_vs_tcp_conn_listen`, 2 minutes).
pub const HELPER_EXPECT_TIMEOUT_MS: u64 = 120_000;

/// The lowest port of the range a helper that expects connections claims on its service's
/// virtual and real addresses (with port 20): IPVS's FTP service lookup takes port 20 and
/// every port that needs no privilege to bind (`inet_port_requires_bind_service`).
pub const HELPER_DATA_PORTS_FROM: u16 = 1024;

/// The MTU a resized segment is held to when the path's is not known (Ethernet's): a
/// helper's segment that grows past it is cut in two or more.
pub const DEFAULT_MTU: u32 = 1500;

/// The helpers built into the binary (`plugins/ftp`, `plugins/proxy-v2`).
pub const BUILTIN_HELPERS: &[&str] = &["ftp", "proxy-v2"];

/// The persistence engines built into the binary (`plugins/sip`).
pub const BUILTIN_PES: &[&str] = &["sip"];

/// The well-known FTP control port: NAT services on it get the `ftp` helper unless they
/// name their helpers (as `ip_vs_ftp` loaded with its default `ports=21`).
pub const FTP_PORT: u16 = 21;

/// Most datapath workers (the per-worker counter slots of every service and real server).
pub const MAX_WORKERS: usize = 64;

/// The counter slot of the offload keeper, which merges what the kernel carried for
/// offloaded flows (`offload::merge`): after the workers' own.
pub const OFFLOAD_SLOT: usize = MAX_WORKERS;

/// Counter slots of every service and real server: the workers' and the offload keeper's.
pub const STAT_SLOTS: usize = MAX_WORKERS + 1;

/// Client packets a connection shows, in a state that needs no decision, before wvs hands
/// it to the offload program: a short connection (a request and its answer) costs less
/// through wvs than its map entries and their merge cost (BENCHMARKS.md, "Flow offload").
pub const OFFLOAD_AFTER_PACKETS: u32 = 8;

/// Longest gap between a UDP flow's packets (ms) at its `OFFLOAD_AFTER_PACKETS`th client
/// packet (and every such count after) for the flow to be offloaded: a busy flow (100
/// packets a second or more) is carried by the kernel at its speed (a single 1400-byte
/// flow: 1.07 times DNAT's rate, through wvs's rings 0.65 times), and many quiet ones stay
/// with the rings, which take them in batches on every core (64k flows of 64-byte
/// datagrams: 1.44 times DNAT's rate; carried, 0.95 times; BENCHMARKS.md, "Flow offload").
pub const OFFLOAD_UDP_GAP_MS: u64 = 10;

/// Most flows the offload map holds (two per NAT connection, one per direct-routing one);
/// a connection offered to a full map stays with wvs.
pub const OFFLOAD_FLOWS: u32 = 262_144;

/// How often the offload keeper merges what the kernel carried into the connections and
/// their counters, and takes out the flows of connections that ended or moved on (ms).
/// Well under every state's timeout, so that an offloaded connection never expires while
/// the kernel carries its packets.
pub const OFFLOAD_MERGE_MS: u64 = 1000;
/// How often `--io xdp` tells its program which services answer SYNs with cookies (their
/// mode or the defense's, which flips at most once a second) and reads how many it sent
/// (ms). A service that answers in between is answered by the datapath.
pub const SYNPROXY_SYNC_MS: u64 = 1000;

/// Longest an API read of counters or connections waits for a merge that begins after it
/// asked (ms), so that it reads what the kernel carried until then, as IPVS's counters
/// read at once; past it, the read answers with the last merge's figures.
pub const OFFLOAD_FRESH_MS: u64 = 250;

/// Interval of IPVS's rate estimator (`ip_vs_est.c`: 2 s).
pub const ESTIMATOR_INTERVAL_MS: u64 = 2000;

/// ICMP errors (port unreachable for a service with no available real server) each worker
/// may send per second, and its burst. The kernel's `icmp_ratelimit` is of this order.
pub const ICMP_REPLY_RATE: u32 = 100;
/// Burst of the ICMP reply rate limit.
pub const ICMP_REPLY_BURST: u32 = 100;

/// Highest real-server weight (IPVS takes 0..=INT_MAX; ipvsadm and keepalived use 0..=65535).
pub const MAX_WEIGHT: u32 = 65535;

/// Persistence timeout `ipvsadm -p` gives when no value follows it
/// (`IPVS_SVC_PERSISTENT_TIMEOUT`, 6 minutes).
pub const DEFAULT_PERSISTENT_SECS: u32 = 6 * 60;

/// Longest connection timeout `--set` accepts, in seconds (ipvsadm's `MAX_TIMEOUT`, 31 days).
pub const MAX_TIMEOUT_SECS: u32 = 86400 * 31;

/// Longest persistence timeout accepted (one year).
pub const MAX_PERSISTENT_SECS: u32 = 365 * 24 * 3600;

/// The name an SMTP check's `HELO` gives unless told (keepalived's `helo_name` default).
pub const CHECK_SMTP_HELO: &str = "smtpchecker.keepalived.org";

/// Most bytes of an SMTP check's reply line read before it is judged.
pub const CHECK_SMTP_MAX_REPLY: usize = 4096;

/// Most mark rules' matches (each rule's prefixes × port ranges, as the XDP program and the
/// nftables table read them one by one): a classifier is a short list, read for every
/// packet of a new connection.
pub const MAX_MARK_MATCHES: usize = 256;

/// Where `wvs run` keeps its state (configuration, API token, uploaded plugins) by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wvs";

/// The environment variable that may hold the API token: no program wvs starts (nft, the
/// socket broker, the plugin compiler, misc checks) gets it.
pub const API_TOKEN_ENV: &str = "WVS_API_TOKEN";

/// Set by `wvs run` when it executes itself again to leave [`API_TOKEN_ENV`] out of its
/// environment: the descriptor of the anonymous memory file that holds the token.
pub const API_TOKEN_FD_ENV: &str = "WVS_API_TOKEN_FD";

/// Name of that memory file (`/proc/PID/fd` shows `/memfd:` and it).
pub const API_TOKEN_MEMFD: &str = "wvs-api-token";

/// `PATH` of a misc health check's program, whose environment has nothing else of wvs's
/// (but `WVS_REAL_ADDR` and `WVS_REAL_PORT`).
pub const MISC_CHECK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a real server's `notify_up` / `notify_down` program may run before it is
/// killed (keepalived's scripts have no bound; one that hangs must not pile up).
pub const CHECK_NOTIFY_TIMEOUT_MS: u64 = 60_000;

/// The user `wvs run` becomes once set up when started as root (`--user`); created as a
/// system user if missing.
pub const DEFAULT_USER: &str = "wvs";

/// Address the REST API listens on by default.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:9080";

/// Name of the directory uploaded plugins are kept in, in the state directory.
pub const PLUGIN_DIR: &str = "plugins";

/// Name of the API token file in the state directory.
pub const TOKEN_FILE: &str = "api-token";

/// Largest JSON request body the API accepts.
pub const API_MAX_JSON: usize = 1 << 20;

/// Largest plugin module the API accepts.
pub const API_MAX_PLUGIN: usize = 16 << 20;

/// Time an API client has to send a request's header, from connecting or from the last
/// answer on a kept-alive connection; an idle socket is closed after it.
pub const API_HEADER_TIMEOUT_MS: u64 = 10_000;

/// Time the API has to answer a request, its body's upload included (a 16 MiB plugin over
/// a slow link, then its compilation).
pub const API_REQUEST_TIMEOUT_MS: u64 = 120_000;

/// Most API connections open at once; at the cap, the oldest idle one makes room for a new
/// one. Well under the 1024 file descriptors a process gets by default.
pub const API_MAX_CONNS: usize = 256;

/// Most connections one listing returns (the rest are counted, not listed).
pub const API_MAX_CONN_LIST: usize = 100_000;

/// Persistence templates kept per shard at most (they are bounded like connections).
pub const PERSIST_SHARDS: usize = 64;
/// A template whose time is up while it still controls connections is re-armed with this
/// timeout, which it keeps from then on (`ip_vs_conn_expire`'s `expire_later`: 60 s).
pub const TEMPLATE_EXPIRE_LATER_MS: u64 = 60_000;

/// How long a change through the API waits for the next hops of its real servers.
pub const API_RESOLVE_WAIT_MS: u64 = 2000;

/// The IPVS version whose behaviour wvs follows, as `ipvsadm -L` prints it.
pub const IPVS_VERSION: &str = "1.2.1";

/// Seconds between health checks when `interval` is not given. keepalived's `delay_loop`
/// defaults to 60 s; wvs checks more often by default, as HAProxy (2 s) and Envoy do,
/// because a down server found a minute late fails that many clients.
pub const CHECK_DEFAULT_INTERVAL_MS: u64 = 5000;

/// A health check's whole deadline when `timeout` is not given (keepalived's
/// `connect_timeout` default, 5 s).
pub const CHECK_DEFAULT_TIMEOUT_MS: u64 = 5000;

/// keepalived's `delay_before_retry` default (1 s; HTTP_GET and SSL_GET: 3 s).
pub const CHECK_DEFAULT_RETRY_DELAY_MS: u64 = 1000;

/// keepalived's `delay_before_retry` default for HTTP_GET and SSL_GET
/// (`check_http.c`'s `default_delay_before_retry`).
pub const CHECK_HTTP_RETRY_DELAY_MS: u64 = 3000;

/// The shortest check interval and timeout: below this a check is a load test.
pub const CHECK_MIN_MS: u64 = 50;

/// The longest check time that may be written (a day).
pub const CHECK_MAX_MS: u64 = 86_400_000;

/// Results each check keeps for the API and the dashboard.
pub const CHECK_HISTORY: usize = 20;

/// Bytes of an HTTP check's response read at most: a health page is small, and a server that
/// streams without end must not hold the checker.
pub const CHECK_HTTP_MAX_RESPONSE: usize = 1 << 20;

/// How often the checker looks for a new configuration (probes added or removed).
pub const CHECK_RECONCILE_MS: u64 = 200;

/// The longest grace period of a drained real server (a day).
pub const MAX_DRAIN_SECS: u32 = 86_400;

/// How often drained real servers are looked at (connections left, period over).
pub const DRAIN_SWEEP_MS: u64 = 250;

/// Checks of DR and tunnel real servers through the VIP (`health::via`): the TUN device the
/// balancer's stack sends them into, its MTU (room for a tunnel's header within 1500), the
/// mark their sockets carry, and the routing table and rule priority that send marked
/// packets to the device.
pub const CHECK_TUN: &str = "wvs-check";
/// See [`CHECK_TUN`].
pub const CHECK_TUN_MTU: u32 = 1400;
/// See [`CHECK_TUN`] ("WV" in ASCII, then 1).
pub const CHECK_MARK: u32 = 0x5756_0001;
/// See [`CHECK_TUN`].
pub const CHECK_TABLE: u32 = 0x5756;
/// What a check through a VIP that is one of the director's own addresses connects to
/// instead ([`crate::conn::own`]): the check path makes it the VIP on the way out, the
/// datapath makes the VIP it again in the answer. RFC 7600's IPv4 dummy address: never on
/// the wire, nobody's address.
pub const CHECK_STANDIN: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 0, 8);
/// See [`CHECK_TUN`]: before the main table's rule (32766).
pub const CHECK_RULE_PRIORITY: u32 = 1000;

// --- Connection synchronisation (ip_vs_sync.c) ---

/// `sync_threshold`'s default first value: a connection is sent at its third packet.
pub const SYNC_THRESHOLD: u32 = 3;
/// `sync_threshold`'s default second value (`sync_period`): and every 50 packets after.
pub const SYNC_PERIOD: u32 = 50;
/// `IPVS_SYNC_PORTS_MAX`: at most this many sync threads, each on its own port.
pub const SYNC_PORTS_MAX: u32 = 64;
/// A master wakes to send what is queued after this long (`IPVS_SYNC_SEND_DELAY`, HZ/50).
pub const SYNC_SEND_DELAY_MS: u64 = 20;
/// A message that is not full is sent once its first record is this old
/// (`IPVS_SYNC_FLUSH_TIME`).
pub const SYNC_FLUSH_MS: u64 = 2_000;
/// The message size a master uses by default: 1500 less the IPv4 and UDP headers
/// (`ip_vs_sync.c` clamps the MTU to 1500 for the master).
pub const SYNC_MAXLEN_V4: u16 = 1500 - 20 - 8;
/// The same over IPv6 (40-byte header).
pub const SYNC_MAXLEN_V6: u16 = 1500 - 40 - 8;
/// A persistence template's timeout when a version 0 message carries none (3 minutes).
pub const SYNC_TEMPLATE_TIMEOUT_SECS: u32 = 180;
/// The records one worker may have queued for the master before new ones are dropped and
/// counted, unless `sync_qlen_max` says fewer (IPVS counts whole messages; wvs records).
pub const SYNC_QUEUE_RECORDS: usize = 16_384;

/// How long a synproxied connection waits for its server's SYN-ACK; then it goes, and the
/// client's next packet is answered with a reset. DPVS waits 3 s (`conn_init_timeout`),
/// retrying the SYN; wvs sends it again on each of the client's packets meanwhile.
pub const SYNPROXY_CONNECT_TIMEOUT_MS: u64 = 3_000;

/// The SYN cookie's time unit, as a shift of the datapath's milliseconds (2^16 ms, about
/// 65 s): the period's low two bits are in the cookie (`crate::synproxy`), and the tc
/// program computes the same (host/bpf/wvs_offload.c).
pub const SYNPROXY_COUNT_SHIFT: u32 = 16;

/// The window scale wvs's SYN-ACK offers a client: Linux's for its default buffers, so
/// that windows pass unchanged to and from most servers.
pub const SYNPROXY_WSCALE: u8 = 7;

/// How many virtual services the tc program answers SYNs for at once (its map's size).
pub const SYNPROXY_SERVICES: u32 = 4_096;
