//! wvs: a programmable Layer-4 load balancer that does what Linux IPVS does, in user space.
//!
//! This crate is the daemon around the sans-io core (`wvs-core`, host/core, re-exported
//! here under the same module names: [`model`], [`spec`], [`wire`], [`conn`], [`service`],
//! [`xmit`], [`plugin`], [`datapath`], [`stats`], [`consts`]). The daemon's own parts:
//! - [`io`]: the thin shell that moves frames (AF_PACKET, io_uring, XDP, nftables, netlink);
//! - [`health`]: the real servers' health checks (keepalived's checkers), on their own thread;
//! - [`control`]: the owner of the running configuration, changes all or nothing, the state file;
//! - [`api`]: the REST API, its OpenAPI document, `/metrics` and the embedded dashboard;
//! - [`adm`]: `wvs adm`, ipvsadm's command line and output formats over the REST API;
//! - [`config`] and [`run`]: the configuration file and the daemon that ties it together;
//! - [`budget`]: compiling an uploaded plugin in a child process within a time and memory budget;
//! - [`privs`]: the user, capabilities and sandbox wvs runs with;
//! - [`layers`]: which module may name which, and the test that keeps it;
//! - [`schema`]: what each string the file and API forms take may be, for the OpenAPI document.
//!
//! Every tunable number is in [`consts`]. docs/architecture.md draws the layers.

#![warn(missing_docs)]

pub use wvs_core::{
    conn, consts, datapath, model, offload, plugin, service, spec, stats, synproxy, wire, xmit,
};

pub mod adm;
pub mod api;
pub mod budget;
pub mod config;
pub mod control;
pub mod health;
pub mod io;
pub mod layers;
pub mod privs;
pub mod run;
pub mod schema;
