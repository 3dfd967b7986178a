//! A received frame's headers, read once.
//!
//! The I/O layer reads a batch's headers before it processes the batch (to prefetch the
//! connection table's shards, and for an XDP frame to find a partial checksum); the datapath
//! starts from the same reading instead of parsing the frame again. [`Headers::parse`]
//! takes no policy: what is missing or wrong is recorded with the reason the datapath counts
//! it under, and whether the frame is wvs's at all is the datapath's decision (a frame for
//! another MAC passes whatever its IP header says).

use std::net::Ipv4Addr;

use super::DropReason;
use crate::model::Protocol;
use crate::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Packet, ipv4_field};

/// What a frame's Ethernet and IPv4 headers say, checked: every field was in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    /// Length of the frame that was read.
    pub len: usize,
    /// The Ethernet header, or `None` if the frame is shorter than one.
    pub eth: Option<EthHeader>,
}

/// A frame's Ethernet header and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthHeader {
    /// Destination MAC.
    pub dst: EthernetAddress,
    /// Source MAC.
    pub src: EthernetAddress,
    /// The IPv4 header (`Ok(None)`: not IPv4), or why it is unusable.
    pub ipv4: Result<Option<Ipv4Header>, DropReason>,
}

/// A checked IPv4 header: version 4, a header length of at least 20 bytes, a total length
/// that covers the header and fits in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub saddr: Ipv4Addr,
    /// Destination address.
    pub daddr: Ipv4Addr,
    /// Header length in bytes.
    pub ihl: usize,
    /// Total length in bytes (header and payload).
    pub total_len: usize,
    /// The protocol number of the payload.
    pub next: u8,
    /// A fragment (more fragments, or an offset).
    pub fragment: bool,
    /// Source and destination port, when the payload is TCP or UDP and has them.
    pub ports: Option<(u16, u16)>,
}

impl Headers {
    /// Read the headers of `frame`.
    pub fn parse(frame: &[u8]) -> Self {
        let eth = EthernetFrame::new_checked(frame).ok().map(|eth| EthHeader {
            dst: eth.dst_addr(),
            src: eth.src_addr(),
            ipv4: if eth.ethertype() == EthernetProtocol::Ipv4 {
                Ipv4Header::parse(eth.payload()).map(Some)
            } else {
                Ok(None)
            },
        });
        Self {
            len: frame.len(),
            eth,
        }
    }

    /// The IPv4 header, if the frame has a good one.
    #[inline]
    pub fn ipv4(&self) -> Option<&Ipv4Header> {
        self.eth.as_ref()?.ipv4.as_ref().ok()?.as_ref()
    }
}

impl Ipv4Header {
    /// Read and check the IPv4 header at the start of `ip`.
    fn parse(ip: &[u8]) -> Result<Self, DropReason> {
        if ip.len() < ipv4_field::MIN_HEADER_LEN {
            return Err(DropReason::IpTruncated);
        }
        let pkt = Ipv4Packet::new_unchecked(ip);
        if pkt.version() != 4 {
            return Err(DropReason::IpBadVersion);
        }
        let ihl = usize::from(pkt.header_len());
        if ihl < ipv4_field::MIN_HEADER_LEN {
            return Err(DropReason::IpBadIhl);
        }
        let total_len = usize::from(pkt.total_len());
        if total_len < ihl {
            return Err(DropReason::IpBadLength);
        }
        if total_len > ip.len() {
            return Err(DropReason::IpTruncated);
        }
        let next = u8::from(pkt.next_header());
        let ports = match next {
            6 | 17 => ip.get(ihl..total_len).and_then(|l4| l4.get(..4)).map(|p| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                )
            }),
            _ => None,
        };
        Ok(Self {
            saddr: pkt.src_addr(),
            daddr: pkt.dst_addr(),
            ihl,
            total_len,
            next,
            fragment: pkt.more_frags() || pkt.frag_offset() != 0,
            ports,
        })
    }

    /// TCP or UDP, by the protocol number.
    #[inline]
    pub fn l4_proto(&self) -> Option<Protocol> {
        match self.next {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(ip);
        f
    }

    fn udp4(total: u16, frag: u16) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&[198, 18, 0, 2, 198, 18, 100, 1]);
        ip.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 8, 0, 0]);
        ip
    }

    #[test]
    fn a_udp_frame_reads_whole() {
        let h = Headers::parse(&frame(&udp4(28, 0)));
        let ip = h.ipv4().unwrap();
        assert_eq!(ip.l4_proto(), Some(Protocol::Udp));
        assert_eq!(ip.ports, Some((40000, 80)));
        assert_eq!((ip.ihl, ip.total_len, ip.fragment), (20, 28, false));
        assert_eq!(h.eth.unwrap().src, EthernetAddress([2, 0, 0, 0, 0, 2]));
    }

    #[test]
    fn what_is_wrong_is_recorded_not_decided() {
        assert_eq!(Headers::parse(&[0; 10]).eth, None);
        let long = Headers::parse(&frame(&udp4(60, 0)));
        assert_eq!(long.eth.unwrap().ipv4, Err(DropReason::IpTruncated));
        let mut v6 = udp4(28, 0);
        v6[0] = 0x65;
        assert_eq!(
            Headers::parse(&frame(&v6)).eth.unwrap().ipv4,
            Err(DropReason::IpBadVersion)
        );
        let frag = Headers::parse(&frame(&udp4(28, 0x2000)));
        assert!(frag.ipv4().unwrap().fragment);
        let mut arp = frame(&[0; 28]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(Headers::parse(&arp).eth.unwrap().ipv4, Ok(None));
        // Too short for the ports: none, and the datapath says what that means.
        let short = Headers::parse(&frame(&udp4(22, 0)[..22]));
        assert_eq!(short.ipv4().unwrap().ports, None);
    }
}
