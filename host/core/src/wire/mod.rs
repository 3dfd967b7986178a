//! Typed views over packet bytes.
//!
//! Ethernet, IPv4, IPv6, TCP, UDP and ICMP views come from `smoltcp::wire`: zero-copy
//! `Packet<&mut [u8]>` types whose contract is that once `new_checked` (or `check_len`)
//! succeeded, no accessor or setter panics. This module adds what smoltcp does not have:
//! SCTP's headers and checksum ([`sctp`]), the `virtio_net_hdr` that packet sockets put before each frame ([`vnet`]) and the RFC 1624
//! incremental checksum update that NAT needs ([`checksum`]).

pub mod checksum;
pub mod sctp;
pub mod sync;
pub mod vnet;

pub use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpProtocol,
    Ipv4Packet, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet, TcpPacket, UdpPacket,
};

/// TCP header field offsets used by the in-place NAT rewrite (RFC 9293).
pub mod tcp_field {
    /// Offset of the sequence number.
    pub const SEQ: usize = 4;
    /// Offset of the acknowledgement number.
    pub const ACK: usize = 8;
    /// Offset of the data offset (high 4 bits, in 32-bit words).
    pub const DATA_OFF: usize = 12;
    /// Offset of the checksum field.
    pub const CHECKSUM: usize = 16;
    /// The SACK option's kind (RFC 2018).
    pub const OPT_SACK: u8 = 5;
    /// Length of a TCP header without options.
    pub const MIN_HEADER_LEN: usize = 20;
}

/// UDP header field offsets used by the in-place NAT rewrite (RFC 768).
pub mod udp_field {
    /// Offset of the length field.
    pub const LENGTH: usize = 4;
    /// Offset of the checksum field.
    pub const CHECKSUM: usize = 6;
    /// Length of the UDP header.
    pub const HEADER_LEN: usize = 8;
}

/// IPv4 header field offsets used by the in-place NAT rewrite (RFC 791).
pub mod ipv4_field {
    /// Length of an IPv4 header without options.
    pub const MIN_HEADER_LEN: usize = 20;
}

/// IPv6 header sizes and the protocol numbers of its extension headers (RFC 8200).
pub mod ipv6_field {
    /// Length of the fixed IPv6 header.
    pub const HEADER_LEN: usize = 40;
    /// The smallest MTU an IPv6 link has: no Packet Too Big asks for less.
    pub const MIN_MTU: usize = 1280;
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (its length counts 4-byte units, RFC 4302).
    pub const AUTH: u8 = 51;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
    /// Length of a fragment header.
    pub const FRAGMENT_LEN: usize = 8;
    /// How many extension headers a packet may chain before wvs stops following them (the
    /// walk is bounded; what lies past is not wvs's).
    pub const MAX_EXT_HEADERS: usize = 8;
}

/// Ethernet header length (no VLAN tag).
pub const ETHERNET_HEADER_LEN: usize = 14;
