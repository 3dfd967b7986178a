//! wvs-core: what wvs decides, without moving a byte.
//!
//! The core is fed validated values ([`spec`]), packets and the time, and says what to do;
//! it opens no socket, reads no configuration file and runs no async runtime. The daemon
//! (`wvs`) converts its file and API forms into [`spec`], owns the sockets and threads, and
//! acts on what the core returns. docs/architecture.md draws the layers.
//!
//! - [`model`]: the shared words (protocol, service key, scheduler names, forwarding methods);
//! - [`spec`]: services, real servers, timeouts and switches as the core takes them, validated;
//! - [`wire`]: typed views over packet bytes and checksum arithmetic;
//! - [`conn`]: connections, the IPVS TCP state machine and the shared connection table;
//! - [`service`]: virtual services and real servers, published as immutable snapshots;
//! - [`xmit`]: the transmitters, one per forwarding method (NAT, DR, tunnels);
//! - [`plugin`]: the WebAssembly runtime that runs schedulers and helpers (wasmtime);
//! - [`datapath`]: a pure function from a frame and the time to what to do with it;
//! - [`synproxy`]: SYN cookies and the joining of a synproxied connection's two halves;
//! - [`stats`]: traffic counters per service and real server, and IPVS's rate estimator;
//! - `testkit` (tests, and the `testkit` feature): the topology and harness the datapath's
//!   tests, the fuzz targets and the benchmarks share.
//!
//! Every tunable number is in [`consts`].

#![warn(missing_docs)]

pub mod conn;
pub mod consts;
pub mod datapath;
pub mod model;
pub mod offload;
pub mod plugin;
pub mod service;
pub mod spec;
pub mod stats;
pub mod synproxy;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod wire;
pub mod xmit;
