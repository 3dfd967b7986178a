//! Software segmentation (`skb_gso_segment` for TCPv4, TCPv6 and UDP_L4): a GSO super-packet that
//! must be encapsulated (or routed on by the balancer's stack, bypass) is cut into the
//! segments the kernel would have cut it into, each of which then goes through the
//! transmitter as a plain packet. The kernel cannot do it for wvs: a packet socket can hand
//! it a GSO packet only with the headers it knows (TCP or UDP right after the IP header),
//! not inside a tunnel, and a raw socket none at all.
//!
//! Each segment gets the headers of the super-packet with its own length, IPv4 ID (one more
//! per segment, as the kernel counts) and checksums; a TCP segment its sequence number, and
//! FIN and PSH on the last only, CWR on the first only (`tcp_gso_segment`). Segments are
//! written into buffers the I/O layer lends ([`SegmentSink`]), so nothing is allocated.

use super::{Packet, Refused, Sent};
use crate::model::Protocol;
use crate::wire::checksum::{self, CsumMode};
use crate::wire::{ETHERNET_HEADER_LEN, Ipv4Packet, Ipv6Packet, ipv6_field, tcp_field, udp_field};

/// Where segments go: the I/O layer's transmit buffers. Nothing is sent during the
/// datapath's call: the I/O layer sends what was marked when the call returns.
pub trait SegmentSink {
    /// A free buffer to write the next frame in, or `None` when none is free.
    fn buf(&mut self) -> Option<&mut [u8]>;
    /// Mark the frame just written in the last buffer for sending to `to`: `len` bytes of
    /// frame out of an interface, or `len` bytes of IP packet (after the Ethernet header)
    /// for the balancer's own stack.
    fn send(&mut self, to: SegmentTo, len: usize);
}

/// Where a segment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentTo {
    /// Out of this interface (its index in the `--iface` list), as a frame.
    Iface(u8),
    /// To the balancer's own stack, as an IP packet addressed to this address.
    Stack(std::net::IpAddr),
}

/// A sink without buffers: nothing can be segmented.
#[derive(Debug, Default)]
pub struct NoSink;

impl SegmentSink for NoSink {
    fn buf(&mut self) -> Option<&mut [u8]> {
        None
    }
    fn send(&mut self, _to: SegmentTo, _len: usize) {}
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
const TCP_FLAGS: usize = 13;
const TCP_SEQ: usize = 4;

/// Cut the super-packet `pkt` into segments of `pkt.gso_size` payload bytes and hand each
/// to `xmit` in a buffer of `sink`, which sends what `xmit` made of it. Returns how many
/// were sent and how many there were: when the sink runs out of buffers the rest are lost
/// (`Refused::TunnelGso` if none could be sent). Stops at the first refusal: every segment
/// would be refused alike.
pub fn segment(
    pkt: &Packet<'_>,
    sink: &mut dyn SegmentSink,
    mut xmit: impl FnMut(&mut Packet<'_>) -> Result<Sent, Refused>,
) -> Result<(usize, usize), Refused> {
    let ip = &pkt.buf[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + pkt.total_len];
    let sp = Super::of(pkt, ip)?;
    let payload = &ip[sp.hdrs..];
    let n = payload.len().div_ceil(sp.gso).max(1);
    let mut sent = 0;
    for (k, chunk) in payload.chunks(sp.gso).enumerate() {
        let seg_len = sp.hdrs + chunk.len();
        let Some(out) = sink.buf() else {
            return if sent == 0 {
                Err(Refused::TunnelGso)
            } else {
                Ok((sent, n))
            };
        };
        if out.len() < ETHERNET_HEADER_LEN + seg_len {
            return Err(Refused::NoRoom);
        }
        out[..ETHERNET_HEADER_LEN].copy_from_slice(&pkt.buf[..ETHERNET_HEADER_LEN]);
        let seg = &mut out[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + seg_len];
        seg[..sp.hdrs].copy_from_slice(&ip[..sp.hdrs]);
        seg[sp.hdrs..].copy_from_slice(chunk);
        sp.fix_headers(seg, k, k + 1 == n);
        let mut p = Packet {
            buf: &mut *out,
            l4_off: sp.l4_off,
            total_len: seg_len,
            proto: pkt.proto,
            csum: CsumMode::Complete,
            gso_size: 0,
        };
        match xmit(&mut p)? {
            Sent::Whole { iface, len } => sink.send(SegmentTo::Iface(iface), len),
            Sent::InPlace { iface } => {
                sink.send(SegmentTo::Iface(iface), ETHERNET_HEADER_LEN + seg_len)
            }
            Sent::Stack { daddr, len } => sink.send(SegmentTo::Stack(daddr), len),
            Sent::Fragment { .. } => return Err(Refused::TooBig),
        }
        sent += 1;
    }
    Ok((sent, n))
}

/// What every segment of a super-packet takes from it.
struct Super {
    proto: Protocol,
    /// Where its upper layer starts, and where its payload does.
    l4_off: usize,
    hdrs: usize,
    /// Payload bytes per segment.
    gso: usize,
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    /// The IPv4 ID of the first segment (IPv6 has none outside a fragment header).
    id: Option<u16>,
    /// TCP: the first segment's sequence number and the flags.
    seq: u32,
    flags: u8,
}

impl Super {
    fn of(pkt: &Packet<'_>, ip: &[u8]) -> Result<Self, Refused> {
        let l4_off = pkt.l4_off;
        let l4_hdr = match pkt.proto {
            Protocol::Tcp => ip
                .get(l4_off + 12)
                .map_or(tcp_field::MIN_HEADER_LEN, |b| usize::from(b >> 4) * 4),
            Protocol::Udp => udp_field::HEADER_LEN,
            // SCTP is cut at chunk boundaries by its own stack, never by bytes.
            Protocol::Sctp => return Err(Refused::TooBig),
        };
        let hdrs = l4_off + l4_hdr;
        if hdrs > ip.len() {
            return Err(Refused::NoRoom);
        }
        let (src, dst, id) = if pkt.is_v6() {
            let iph = Ipv6Packet::new_unchecked(&ip[..l4_off]);
            (iph.src_addr().into(), iph.dst_addr().into(), None)
        } else {
            let iph = Ipv4Packet::new_unchecked(&ip[..l4_off]);
            (
                iph.src_addr().into(),
                iph.dst_addr().into(),
                Some(iph.ident()),
            )
        };
        let (seq, flags) = match pkt.proto {
            Protocol::Tcp => (
                u32::from_be_bytes([
                    ip[l4_off + TCP_SEQ],
                    ip[l4_off + TCP_SEQ + 1],
                    ip[l4_off + TCP_SEQ + 2],
                    ip[l4_off + TCP_SEQ + 3],
                ]),
                ip[l4_off + TCP_FLAGS],
            ),
            Protocol::Udp | Protocol::Sctp => (0, 0),
        };
        Ok(Self {
            proto: pkt.proto,
            l4_off,
            hdrs,
            gso: usize::from(pkt.gso_size.max(1)),
            src,
            dst,
            id,
            seq,
            flags,
        })
    }

    /// The headers of segment `k` (the `last` or not), whose payload is in place: its
    /// length, IPv4 ID and checksums; TCP's sequence number, FIN and PSH on the last only,
    /// CWR on the first only (`tcp_gso_segment`).
    fn fix_headers(&self, seg: &mut [u8], k: usize, last: bool) {
        let seg_len = seg.len();
        let (hdr, l4) = seg.split_at_mut(self.l4_off);
        if let Some(id) = self.id {
            let mut h = Ipv4Packet::new_unchecked(&mut *hdr);
            h.set_total_len(seg_len as u16);
            h.set_ident(id.wrapping_add(k as u16));
            h.set_checksum(0);
            let c = checksum::compute(hdr);
            Ipv4Packet::new_unchecked(&mut *hdr).set_checksum(c);
        } else {
            let payload = seg_len.saturating_sub(ipv6_field::HEADER_LEN);
            Ipv6Packet::new_unchecked(&mut *hdr).set_payload_len(payload as u16);
        }
        match self.proto {
            Protocol::Tcp => {
                let s = self.seq.wrapping_add((k * self.gso) as u32);
                l4[TCP_SEQ..TCP_SEQ + 4].copy_from_slice(&s.to_be_bytes());
                let mut f = self.flags;
                if !last {
                    f &= !(TCP_FIN | TCP_PSH);
                }
                if k > 0 {
                    f &= !TCP_CWR;
                }
                l4[TCP_FLAGS] = f;
                l4[tcp_field::CHECKSUM..tcp_field::CHECKSUM + 2].fill(0);
                let c = checksum::l4(self.src, self.dst, 6, l4);
                l4[tcp_field::CHECKSUM..tcp_field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
            }
            Protocol::Udp => {
                let len = l4.len() as u16;
                l4[4..6].copy_from_slice(&len.to_be_bytes());
                l4[udp_field::CHECKSUM..udp_field::CHECKSUM + 2].fill(0);
                let mut c = checksum::l4(self.src, self.dst, 17, l4);
                if c == 0 {
                    c = 0xffff;
                }
                l4[udp_field::CHECKSUM..udp_field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
            }
            // Refused by `Super::of`.
            Protocol::Sctp => {}
        }
    }
}

/// Transmit buffers for tests, each frame sent kept with its interface.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct TestSink {
    bufs: Vec<Vec<u8>>,
    /// What was sent: (interface, frame).
    pub(crate) sent: Vec<(u8, Vec<u8>)>,
}

#[cfg(test)]
impl SegmentSink for TestSink {
    fn buf(&mut self) -> Option<&mut [u8]> {
        self.bufs.push(vec![0; 2048]);
        self.bufs.last_mut().map(|b| &mut b[..])
    }
    fn send(&mut self, to: SegmentTo, len: usize) {
        // What goes to the stack is kept as a frame on interface 255.
        let (iface, len) = match to {
            SegmentTo::Iface(i) => (i, len),
            SegmentTo::Stack(_) => (u8::MAX, ETHERNET_HEADER_LEN + len),
        };
        if let Some(b) = self.bufs.last() {
            self.sent.push((iface, b[..len].to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

    #[test]
    fn a_tcp_super_packet_becomes_the_segments_the_kernel_would_send() {
        let payload: Vec<u8> = (0..3500u32).map(|i| i as u8).collect();
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 2], [198, 18, 100, 1], 64)
            .tcp(40000, 80, 1000, 65535)
            .psh()
            .fin()
            .ack(7)
            .write(&mut frame, &payload)
            .unwrap();
        let total_len = frame.len() - ETHERNET_HEADER_LEN;
        let pkt = Packet {
            buf: &mut frame,
            l4_off: 20,
            total_len,
            proto: Protocol::Tcp,
            csum: CsumMode::Complete,
            gso_size: 1448,
        };
        let mut sink = TestSink::default();
        let n = segment(&pkt, &mut sink, |_| Ok(Sent::InPlace { iface: 3 })).unwrap();
        assert_eq!(n, (3, 3));
        let mut data = Vec::new();
        for (k, (iface, f)) in sink.sent.iter().enumerate() {
            assert_eq!(*iface, 3);
            let h = PacketHeaders::from_ethernet_slice(f).unwrap();
            let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
                panic!()
            };
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            let Some(TransportHeader::Tcp(t)) = &h.transport else {
                panic!()
            };
            let body = h.payload.slice();
            assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, body).unwrap());
            assert_eq!(t.sequence_number, 1000 + (k as u32) * 1448);
            assert_eq!(body.len(), if k < 2 { 1448 } else { 3500 - 2 * 1448 });
            assert_eq!(
                (t.fin, t.psh),
                (k == 2, k == 2),
                "FIN and PSH on the last only"
            );
            assert!(t.ack);
            data.extend_from_slice(body);
        }
        assert_eq!(data, payload);
    }

    #[test]
    fn a_udp_super_packet_becomes_datagrams() {
        let payload = vec![7u8; 2500];
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 18, 0, 2], [198, 18, 100, 1], 64)
            .udp(40000, 9000)
            .write(&mut frame, &payload)
            .unwrap();
        let total_len = frame.len() - ETHERNET_HEADER_LEN;
        let pkt = Packet {
            buf: &mut frame,
            l4_off: 20,
            total_len,
            proto: Protocol::Udp,
            csum: CsumMode::Complete,
            gso_size: 1000,
        };
        let mut sink = TestSink::default();
        assert_eq!(
            segment(&pkt, &mut sink, |_| Ok(Sent::InPlace { iface: 0 })).unwrap(),
            (3, 3)
        );
        for (_, f) in &sink.sent {
            let h = PacketHeaders::from_ethernet_slice(f).unwrap();
            let (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u))) =
                (&h.net, &h.transport)
            else {
                panic!()
            };
            assert_eq!(
                u.checksum,
                u.calc_checksum_ipv4(ip, h.payload.slice()).unwrap()
            );
        }
    }
}
