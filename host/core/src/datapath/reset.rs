//! The reset a director's own stack sends for a TCP segment of no connection.
//!
//! IPVS lets a non-SYN segment to a virtual service that has no connection go on
//! (`tcp_conn_schedule` schedules only on SYN; `ip_vs_in` then returns `NF_ACCEPT`), so the
//! director's stack, which has the VIP and no socket for it, answers with a reset. A client
//! whose connection was lost (across a restart of the balancer, say) learns it at once
//! instead of retransmitting until its own timeout. wvs answers the same reset, from the VIP,
//! as RFC 9293 section 3.10.7.1 and Linux's `tcp_v4_send_reset` build it: with the
//! segment's acknowledgment number as its sequence number if the segment had ACK, else
//! sequence 0 and an ACK of everything the segment occupied.

use std::net::IpAddr;

use smoltcp::wire::TcpSeqNumber;

use crate::wire::{
    ETHERNET_HEADER_LEN, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, checksum, ipv4_field,
    ipv6_field, tcp_field,
};

/// Turn the Ethernet/IPv4/TCP or Ethernet/IPv6/TCP frame of `len` bytes at the start of
/// `buf` into the reset its receiver would answer, in place. `l4_off`: where an IPv6
/// packet's TCP header starts (after its extension headers). Returns the new frame's
/// length, or `None` if the frame is not a whole TCP segment, or is itself a reset (never
/// answered, RFC 9293).
pub(super) fn tcp_reset(buf: &mut [u8], len: usize, l4_off: usize) -> Option<usize> {
    const IP: usize = ETHERNET_HEADER_LEN;
    let ip = buf.get(IP..len)?;
    let (client, vip, seg) = match ip.first()? >> 4 {
        4 => {
            let pkt = Ipv4Packet::new_checked(ip).ok()?;
            if pkt.next_header() != IpProtocol::Tcp {
                return None;
            }
            let ihl = usize::from(pkt.header_len());
            let total = usize::from(pkt.total_len());
            let addrs = (IpAddr::V4(pkt.src_addr()), IpAddr::V4(pkt.dst_addr()));
            (addrs.0, addrs.1, ip.get(ihl..total)?)
        }
        6 => {
            let pkt = Ipv6Packet::new_checked(ip).ok()?;
            let total = ipv6_field::HEADER_LEN + usize::from(pkt.payload_len());
            let addrs = (IpAddr::V6(pkt.src_addr()), IpAddr::V6(pkt.dst_addr()));
            (addrs.0, addrs.1, ip.get(l4_off..total)?)
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(seg).ok()?;
    if tcp.rst() {
        return None;
    }
    let payload = seg.len().saturating_sub(usize::from(tcp.header_len()));
    let (cport, vport) = (tcp.src_port(), tcp.dst_port());
    let (seq, ack, ack_flag) = if tcp.ack() {
        (tcp.ack_number(), TcpSeqNumber(0), false)
    } else {
        let occupied = payload + usize::from(tcp.syn()) + usize::from(tcp.fin());
        (
            TcpSeqNumber(0),
            TcpSeqNumber(tcp.seq_number().0.wrapping_add(occupied as i32)),
            true,
        )
    };
    let (l4, ip_len) = match (vip, client) {
        (IpAddr::V4(v), IpAddr::V4(c)) => (
            super::answer_headers(buf, v, c, IpProtocol::Tcp, tcp_field::MIN_HEADER_LEN, true)?,
            ipv4_field::MIN_HEADER_LEN,
        ),
        (IpAddr::V6(v), IpAddr::V6(c)) => (
            super::answer_headers_v6(buf, v, c, 6, tcp_field::MIN_HEADER_LEN)?,
            ipv6_field::HEADER_LEN,
        ),
        _ => return None,
    };
    l4.fill(0);
    let mut t = TcpPacket::new_unchecked(&mut *l4);
    t.set_src_port(vport);
    t.set_dst_port(cport);
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_header_len(tcp_field::MIN_HEADER_LEN as u8);
    t.set_rst(true);
    t.set_ack(ack_flag);
    // Pseudo-header (RFC 9293 3.1, RFC 8200 8.1) and the header itself.
    let c = checksum::l4(vip, client, 6, l4);
    l4[tcp_field::CHECKSUM..tcp_field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    Some(IP + ip_len + tcp_field::MIN_HEADER_LEN)
}
