//! Transmitters: how a packet's headers are rewritten for its forwarding method. Only NAT
//! (masquerading) so far; DR, TUN and FullNAT follow.

pub mod nat;
