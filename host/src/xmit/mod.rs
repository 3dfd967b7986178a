//! Transmitters: how a packet's headers are rewritten for its forwarding method. wvs has
//! one method, NAT (masquerading, `ip_vs_nat_xmit`); the others are refused where a
//! configuration names them.

pub mod nat;
