//! wvs: a programmable Layer-4 load balancer that does what Linux IPVS does, in user space.
//!
//! The crate is split the way the work is:
//! - [`model`]: the shared words (protocol, service key, scheduler names, forwarding methods);
//! - [`wire`]: typed views over packet bytes and checksum arithmetic;
//! - [`conn`]: connections, the IPVS TCP state machine and the shared connection table;
//! - [`service`]: virtual services and real servers, published as immutable snapshots;
//! - [`xmit`]: the transmitters, one per forwarding method (NAT, DR, tunnels);
//! - [`plugin`]: the WebAssembly runtime that runs schedulers (wasmtime);
//! - [`datapath`]: the sans-io core, a pure function from a frame to a verdict;
//! - [`io`]: the thin shell that moves frames (AF_PACKET, io_uring, nftables, netlink);
//! - [`stats`]: traffic counters per service and real server, and IPVS's rate estimator;
//! - [`health`]: the real servers' health checks (keepalived's checkers), on their own thread;
//! - [`control`]: the owner of the running configuration, changes all or nothing, the state file;
//! - [`api`]: the REST API, its OpenAPI document, `/metrics` and the embedded dashboard;
//! - [`adm`]: `wvs adm`, ipvsadm's command line and output formats over the REST API;
//! - [`config`] and [`run`]: the configuration file and the daemon that ties it together.
//!
//! Every tunable number is in [`consts`].

#![warn(missing_docs)]

pub mod adm;
pub mod api;
pub mod config;
pub mod conn;
pub mod consts;
pub mod control;
pub mod datapath;
pub mod health;
pub mod io;
pub mod model;
pub mod plugin;
pub mod privs;
pub mod run;
pub mod service;
pub mod stats;
pub mod wire;
pub mod xmit;
