//! The transmitters (`ip_vs_xmit.c`): how a packet of a connection leaves wvs, one module
//! per forwarding method. Each takes the packet as received, with its IP header checked, and
//! does everything its method needs: the TTL, the rewrite or the encapsulation, the
//! checksums, the Ethernet addresses. The datapath calls [`to_real`] for a client's packet
//! and [`to_client`] for a real server's reply; adding a method is a variant of
//! [`Forward`] and its module here.
//!
//! - [`nat`]: masquerading; the destination becomes the real server and replies get the
//!   virtual service back as their source.
//! - [`dr`]: direct routing; only the Ethernet destination changes.
//! - [`tunnel`]: IPIP, GUE or GRE around the packet, to the real server.
//! - [`fullnat`]: masquerading both ways: the source becomes a local address and port too
//!   ([`xlat`] when the real server is of the other family than the client).
//! - [`stack`]: the balancer's own stack takes the packet: a local real server, or the
//!   packet's own destination (bypass).

pub mod dr;
pub mod frag;
pub mod fullnat;
pub mod gso;
pub mod nat;
pub mod stack;
pub mod tunnel;
pub mod xlat;

use std::net::IpAddr;

use crate::model::{Forward, Protocol};
use crate::wire::checksum::CsumMode;
use crate::wire::{
    ETHERNET_HEADER_LEN, EthernetAddress, EthernetFrame, Ipv4Packet, Ipv6Packet, ipv6_field,
    tcp_field, udp_field,
};

/// The link a frame leaves on: which of wvs's interfaces, from and to which MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Index of the interface in the `--iface` list.
    pub iface: u8,
    /// The interface's own address.
    pub src_mac: [u8; 6],
    /// The next hop's address.
    pub dst_mac: [u8; 6],
}

/// A received IPv4 or IPv6 TCP/UDP packet in its buffer, as the datapath checked it.
#[derive(Debug)]
pub struct Packet<'a> {
    /// The buffer: the Ethernet frame from its start, with room after it (the whole slot).
    pub buf: &'a mut [u8],
    /// Where the upper layer starts in the IP packet: IPv4's header length, or IPv6's
    /// fixed header and the extension headers after it.
    pub l4_off: usize,
    /// The IP packet's total length (the frame is `ETHERNET_HEADER_LEN + total_len`).
    pub total_len: usize,
    /// The L4 protocol.
    pub proto: Protocol,
    /// State of the L4 checksum.
    pub csum: CsumMode,
    /// A GSO super-packet's segment payload size (the kernel cuts it on send); 0 if plain.
    pub gso_size: u16,
}

impl Packet<'_> {
    /// The IP packet.
    fn ip(&mut self) -> &mut [u8] {
        &mut self.buf[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + self.total_len]
    }

    /// Whether it is an IPv6 packet (by its version; the datapath checked it).
    pub fn is_v6(&self) -> bool {
        self.buf
            .get(ETHERNET_HEADER_LEN)
            .is_some_and(|b| b >> 4 == 6)
    }
}

/// What a transmitter made of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The frame, rewritten in place at the same length: send it with its offloads (GSO,
    /// partial checksum) as received.
    InPlace {
        /// Index of the interface in the `--iface` list.
        iface: u8,
    },
    /// A new frame of `len` bytes from the start of the buffer, its checksums complete and
    /// nothing left for the kernel to do.
    Whole {
        /// Index of the interface in the `--iface` list.
        iface: u8,
        /// Length of the frame.
        len: usize,
    },
    /// A new frame of `len` bytes from the start of the buffer, longer than the path's
    /// `mtu`: to be sent in fragments ([`frag`]).
    Fragment {
        /// Index of the interface in the `--iface` list.
        iface: u8,
        /// Length of the frame.
        len: usize,
        /// The path's MTU.
        mtu: u32,
    },
    /// The IP packet (after the Ethernet header), checksums complete, for the balancer's
    /// own stack to deliver or route to `daddr`.
    Stack {
        /// The packet's destination.
        daddr: IpAddr,
        /// Length of the IP packet.
        len: usize,
    },
}

/// Why a transmitter did not send the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The TTL would reach zero (IPVS answers ICMP time exceeded).
    TtlExceeded,
    /// The encapsulated packet does not fit in the buffer.
    NoRoom,
    /// A GSO super-packet cannot be encapsulated whole: the kernel segments only what it
    /// knows the headers of, and a packet socket cannot describe a tunnel to it; the
    /// datapath cuts it ([`gso`]) if it has buffers.
    TunnelGso,
    /// Longer than the path's MTU with DF set (any IPv6 packet): IPVS answers ICMP
    /// fragmentation needed, or ICMPv6 Packet Too Big, with this MTU
    /// (`ensure_mtu_is_adequate`).
    FragNeeded {
        /// The MTU to report.
        mtu: u16,
    },
    /// Longer than the path's MTU without DF (IPVS would fragment it).
    TooBig,
    /// The method cannot carry a packet of this family to this real server: NAT and
    /// direct routing between the families, or an IPv6 packet into a tunnel.
    Family,
}

/// What the connection says about where a client's packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The forwarding method.
    pub fwd: Forward,
    /// The real server's address.
    pub daddr: IpAddr,
    /// The real server's port (NAT).
    pub dport: u16,
    /// wvs's source address towards the real server (the outer source of a tunnel).
    pub src: IpAddr,
    /// A hash of the connection, for a tunnel's UDP source port (GUE).
    pub flow_hash: u32,
    /// The path MTU towards the real server (0: not known, not checked).
    pub mtu: u32,
    /// Full NAT: the local address and port the real server sees as the source.
    pub local: (IpAddr, u16),
    /// IPVS's `pmtu_disc`: a tunnel's outer packet keeps the inner DF (else it goes without
    /// DF and is fragmented when too long).
    pub pmtu_disc: bool,
}

/// What the connection says about a real server's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Back {
    /// The forwarding method (masquerading or full NAT).
    pub fwd: Forward,
    /// The virtual address, the reply's new source.
    pub vaddr: IpAddr,
    /// The virtual port.
    pub vport: u16,
    /// The client's address (full NAT: the reply's new destination).
    pub caddr: IpAddr,
    /// The client's port.
    pub cport: u16,
}

/// Send a client's packet to its real server by the connection's method (`cp->packet_xmit`).
pub fn to_real(pkt: &mut Packet<'_>, t: &Target, link: Link) -> Result<Sent, Refused> {
    match t.fwd {
        Forward::Masq => nat::to_real(pkt, t, link),
        Forward::Route => dr::to_real(pkt, t, link),
        Forward::Tunnel(tun) => tunnel::to_real(pkt, t, &tun, link),
        Forward::FullNat => fullnat::to_real(pkt, t, link),
        Forward::Local => stack::local(pkt),
        Forward::Bypass => stack::bypass(pkt),
    }
}

/// Send a real server's reply to the client (NAT and full NAT: the other methods see no
/// reply).
pub(crate) fn to_client(pkt: &mut Packet<'_>, b: &Back, link: Link) -> Result<Sent, Refused> {
    match b.fwd {
        Forward::FullNat => fullnat::to_client(pkt, b, link),
        _ => nat::to_client(pkt, b.vaddr, b.vport, link),
    }
}

/// Complete a partial L4 checksum in software (`skb_checksum_help`), for a packet that
/// leaves without the kernel's offload: an encapsulated one, or one for the own stack.
pub(crate) fn complete_csum(ip: &mut [u8], ihl: usize, proto: Protocol, csum: CsumMode) {
    if csum != CsumMode::Partial {
        return;
    }
    let field = match proto {
        Protocol::Tcp => tcp_field::CHECKSUM,
        Protocol::Udp => udp_field::CHECKSUM,
        // Completed when the frame came in: never partial here.
        Protocol::Sctp => return,
    };
    let l4 = &mut ip[ihl..];
    if crate::wire::checksum::complete_partial(l4, field) == 0 && proto == Protocol::Udp {
        l4[field..field + 2].copy_from_slice(&0xffffu16.to_be_bytes());
    }
}

/// Decrement the IPv4 TTL or the IPv6 hop limit (by the version in `ip`, the header) as a
/// router does (`ip_decrease_ttl`, `decrement_ttl` for IPv6), or refuse when it would reach
/// zero: every transmitter forwards, so every one does this first.
pub(crate) fn decrement_ttl(ip: &mut [u8]) -> Result<(), Refused> {
    let ok = match ip.first().map(|b| b >> 4) {
        Some(6) if ip.len() >= crate::wire::ipv6_field::HEADER_LEN => {
            nat::decrement_hop_limit_v6(ip)
        }
        _ => nat::decrement_ttl_v4(ip),
    };
    if ok {
        Ok(())
    } else {
        Err(Refused::TtlExceeded)
    }
}

/// The checks of `__ip_vs_get_out_rt` before a packet is changed, in its order: the TTL
/// (IPv6's hop limit), then the MTU (`mtu`: the path's, less what the method adds; 0:
/// unknown). Nothing is written, so a refused packet can still be quoted in the answer.
pub fn check(pkt: &Packet<'_>, mtu: u32) -> Result<(), Refused> {
    let ip = &pkt.buf[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + pkt.total_len];
    let v6 = pkt.is_v6();
    let hop_limit = if v6 {
        Ipv6Packet::new_unchecked(&ip[..pkt.l4_off]).hop_limit()
    } else {
        Ipv4Packet::new_unchecked(&ip[..pkt.l4_off]).hop_limit()
    };
    if hop_limit <= 1 {
        return Err(Refused::TtlExceeded);
    }
    if mtu == 0 {
        return Ok(());
    }
    // What goes on the wire: the packet, or each segment the kernel will cut from a GSO
    // super-packet (IPVS leaves GSO to the output path, which checks its segments).
    let len = if pkt.gso_size == 0 {
        pkt.total_len
    } else {
        let l4_hdr = match pkt.proto {
            Protocol::Tcp => ip
                .get(pkt.l4_off + 12)
                .map_or(tcp_field::MIN_HEADER_LEN, |b| usize::from(b >> 4) * 4),
            Protocol::Udp => udp_field::HEADER_LEN,
            Protocol::Sctp => crate::wire::sctp::field::HEADER_LEN,
        };
        pkt.l4_off + l4_hdr + usize::from(pkt.gso_size)
    };
    if len as u64 <= u64::from(mtu) {
        return Ok(());
    }
    // IPv6 routers never fragment: every packet too long is answered with Packet Too Big
    // (`__mtu_check_toobig_v6`), an IPv4 one only with DF.
    let (dont_frag, least) = if v6 {
        (true, ipv6_field::MIN_MTU as u16)
    } else {
        (
            Ipv4Packet::new_unchecked(&ip[..pkt.l4_off]).dont_frag(),
            MIN_IPV4_MTU,
        )
    };
    if dont_frag {
        // Below the family's least MTU the route is broken; IPVS drops there without an
        // answer.
        let mtu = u16::try_from(mtu).map_err(|_| Refused::TooBig)?;
        if mtu < least {
            return Err(Refused::TooBig);
        }
        Err(Refused::FragNeeded { mtu })
    } else {
        Err(Refused::TooBig)
    }
}

/// The least MTU IPv4 allows (RFC 791).
const MIN_IPV4_MTU: u16 = 68;

/// Write the Ethernet addresses of `link` into the frame at the start of `buf`.
pub(crate) fn set_macs(buf: &mut [u8], link: Link) {
    let mut eth = EthernetFrame::new_unchecked(buf);
    eth.set_src_addr(EthernetAddress(link.src_mac));
    eth.set_dst_addr(EthernetAddress(link.dst_mac));
}
