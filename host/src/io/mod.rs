//! The thin shell around the datapath: it moves frames and holds no policy.
//!
//! - [`socket`]: AF_PACKET sockets with vnet headers in a fanout group;
//! - [`ring`]: the same sockets with memory-mapped RX and TX rings (`--io ring`, the
//!   default);
//! - [`xdp`]: AF_XDP sockets fed by wvs's own XDP program (`--io xdp`), sending through
//!   the ring backend's TX rings;
//! - [`bufring`]: io_uring's provided buffers for the `--io uring` backend;
//! - [`worker`]: one thread per core, each on its own io_uring, feeding frames to
//!   [`crate::datapath::Datapath::process`] and sending what it returns;
//! - [`nft`]: the nftables table that keeps the kernel from also handling wvs's packets;
//! - [`neigh`]: interfaces and next hops (routes and neighbours) read over rtnetlink;
//! - [`netdev`]: what an interface's XDP can do, over generic netlink;
//! - [`offload`]: the flow offload's tc program (`--offload tc`);
//! - [`synproxy`]: the maps of the SYN cookies' first point in the BPF programs;
//! - [`broker`]: the process that keeps CAP_NET_RAW, for the sockets of an interface that
//!   comes back.

pub mod announce;
pub mod broker;
pub mod bufring;
pub mod neigh;
pub mod netdev;
pub mod nft;
pub mod offload;
pub mod ring;
pub mod socket;
pub mod sync;
pub mod synproxy;
pub mod tun;
pub mod worker;
pub mod xdp;

/// How a worker moves frames (`wvs run --io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Packet sockets with memory-mapped RX and TX rings ([`ring`]).
    #[default]
    Ring,
    /// Packet sockets read and written through io_uring, one operation per frame.
    Uring,
    /// AF_XDP sockets fed by wvs's XDP program, sending through TX rings ([`xdp`]).
    Xdp,
}

impl Backend {
    /// The name `--io` takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ring => "ring",
            Backend::Uring => "uring",
            Backend::Xdp => "xdp",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ring" => Ok(Backend::Ring),
            "uring" => Ok(Backend::Uring),
            "xdp" => Ok(Backend::Xdp),
            _ => Err(format!("unknown I/O backend {s:?}: ring, uring or xdp")),
        }
    }
}
