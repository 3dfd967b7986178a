//! The thin shell around the datapath: it moves frames and holds no policy.
//!
//! - [`socket`]: AF_PACKET sockets with vnet headers in a fanout group (the only `unsafe`
//!   besides the ring);
//! - [`worker`]: one thread per core, each on its own io_uring, feeding frames to
//!   [`crate::datapath::Datapath::process`] and sending what it returns;
//! - [`nft`]: the nftables table that keeps the kernel from also handling wvs's packets;
//! - [`neigh`]: interfaces and next hops (routes and neighbours) read over rtnetlink.

pub mod bufring;
pub mod neigh;
pub mod nft;
pub mod socket;
pub mod worker;
