//! A received frame's headers, read once.
//!
//! The I/O layer reads a batch's headers before it processes the batch (to prefetch the
//! connection table's shards, and for an XDP frame to find a partial checksum); the datapath
//! starts from the same reading instead of parsing the frame again. [`Headers::parse`]
//! takes no policy: what is missing or wrong is recorded with the reason the datapath counts
//! it under, and whether the frame is wvs's at all is the datapath's decision (a frame for
//! another MAC passes whatever its IP header says).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::DropReason;
use crate::model::Protocol;
use crate::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Packet, Ipv6ExtHeader,
    Ipv6FragmentHeader, Ipv6Packet, ipv4_field, ipv6_field,
};

/// What a frame's Ethernet and IP headers say, checked: every field was in the frame.
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
    /// The network header.
    pub net: Net,
}

/// The network header a frame carries, by its EtherType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// IPv4: its checked header, or why it is unusable.
    Ipv4(Result<Ipv4Header, DropReason>),
    /// IPv6: its checked header and extension-header chain, or why it is unusable.
    Ipv6(Result<Ipv6Header, DropReason>),
    /// Anything else (ARP, VLAN tags, ...).
    Other,
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
    /// Source and destination port, when the payload is TCP, UDP or SCTP and has them.
    pub ports: Option<(u16, u16)>,
}

impl Headers {
    /// Read the headers of `frame`.
    pub fn parse(frame: &[u8]) -> Self {
        let eth = EthernetFrame::new_checked(frame).ok().map(|eth| EthHeader {
            dst: eth.dst_addr(),
            src: eth.src_addr(),
            net: match eth.ethertype() {
                EthernetProtocol::Ipv4 => Net::Ipv4(Ipv4Header::parse(eth.payload())),
                EthernetProtocol::Ipv6 => Net::Ipv6(Ipv6Header::parse(eth.payload())),
                _ => Net::Other,
            },
        });
        Self {
            len: frame.len(),
            eth,
        }
    }

    /// Where an SCTP header starts in the frame, if the frame carries one (not in a
    /// later fragment).
    #[inline]
    pub fn sctp_offset(&self) -> Option<usize> {
        let eth = crate::wire::ETHERNET_HEADER_LEN;
        match &self.eth.as_ref()?.net {
            Net::Ipv4(Ok(h)) if h.next == 132 && !h.fragment => Some(eth + h.ihl),
            Net::Ipv6(Ok(h)) if h.l4_proto() == Some(Protocol::Sctp) => Some(eth + h.l4_off),
            _ => None,
        }
    }

    /// The IPv4 header, if the frame has a good one.
    #[inline]
    pub fn ipv4(&self) -> Option<&Ipv4Header> {
        match &self.eth.as_ref()?.net {
            Net::Ipv4(Ok(h)) => Some(h),
            _ => None,
        }
    }

    /// The IPv6 header, if the frame has a good one.
    #[inline]
    pub fn ipv6(&self) -> Option<&Ipv6Header> {
        match &self.eth.as_ref()?.net {
            Net::Ipv6(Ok(h)) => Some(h),
            _ => None,
        }
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
            6 | 17 | 132 => ip.get(ihl..total_len).and_then(ports_of),
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

    /// TCP, UDP or SCTP, by the protocol number.
    #[inline]
    pub fn l4_proto(&self) -> Option<Protocol> {
        Protocol::from_number(self.next)
    }
}

/// A checked IPv6 header with its extension-header chain followed, as IPVS follows it
/// (`ipv6_find_hdr`): hop-by-hop, routing, destination options, authentication and the
/// fragment header are stepped over up to the upper-layer header; a fragment that is not
/// the first ends the walk (it carries no upper-layer header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Source address.
    pub saddr: Ipv6Addr,
    /// Destination address.
    pub daddr: Ipv6Addr,
    /// The hop limit (IPv4's TTL).
    pub hop_limit: u8,
    /// Length of the packet, fixed header included (40 + the payload length).
    pub total_len: usize,
    /// Where the upper-layer header starts, from the start of the IPv6 header: 40 plus
    /// the extension headers stepped over.
    pub l4_off: usize,
    /// The protocol number where the walk ended: the upper layer's (6, 17, 58, ...), or
    /// the header it stopped at (ESP, No Next Header, one past the bound).
    pub next: u8,
    /// The fragment header, if the packet is a fragment.
    pub fragment: Option<Ipv6Fragment>,
    /// Source and destination port, when the upper layer is TCP, UDP or SCTP and has them.
    pub ports: Option<(u16, u16)>,
}

/// What an IPv6 fragment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Where the fragment header starts, from the start of the IPv6 header.
    pub at: usize,
    /// Offset of the fragment's data in the original packet, in 8-byte units.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// The identification shared by the packet's fragments.
    pub ident: u32,
}

/// Where an IPv6 packet's extension-header chain ends.
struct Chain {
    /// The protocol number where the walk stopped.
    next: u8,
    /// Where that header starts, from the start of the IPv6 header.
    off: usize,
    /// The fragment header met on the way.
    fragment: Option<Ipv6Fragment>,
    /// Whether an upper-layer header can follow (not for a later fragment).
    upper: bool,
}

impl Chain {
    /// Step over the extension headers of `packet` (an IPv6 packet up to its length)
    /// from the fixed header's next header `next` on, at most `MAX_EXT_HEADERS` of them.
    fn walk(packet: &[u8], mut next: u8) -> Result<Self, DropReason> {
        let mut off = ipv6_field::HEADER_LEN;
        let mut fragment = None;
        for _ in 0..ipv6_field::MAX_EXT_HEADERS {
            let rest = packet.get(off..).unwrap_or_default();
            // Every extension header starts with its next header and a length byte.
            if !matches!(
                next,
                ipv6_field::HOP_BY_HOP
                    | ipv6_field::ROUTING
                    | ipv6_field::DEST_OPTS
                    | ipv6_field::AUTH
                    | ipv6_field::FRAGMENT
            ) {
                break;
            }
            if rest.len() < 2 {
                return Err(DropReason::IpTruncated);
            }
            let h = Ipv6ExtHeader::new_unchecked(rest);
            let len = match next {
                ipv6_field::AUTH => (usize::from(h.header_len()) + 2) * 4,
                ipv6_field::FRAGMENT => {
                    // The length byte is reserved here (ignored on receipt, RFC 8200 4.5).
                    let f = rest
                        .get(2..ipv6_field::FRAGMENT_LEN)
                        .and_then(|b| Ipv6FragmentHeader::new_checked(b).ok())
                        .ok_or(DropReason::IpTruncated)?;
                    let frag = Ipv6Fragment {
                        at: off,
                        offset: f.frag_offset(),
                        more: f.more_frags(),
                        ident: f.ident(),
                    };
                    fragment = Some(frag);
                    if frag.offset != 0 {
                        // Not the first: no upper-layer header follows.
                        return Ok(Self {
                            next: u8::from(h.next_header()),
                            off: off + ipv6_field::FRAGMENT_LEN,
                            fragment,
                            upper: false,
                        });
                    }
                    ipv6_field::FRAGMENT_LEN
                }
                _ => (usize::from(h.header_len()) + 1) * 8,
            };
            if rest.len() < len {
                return Err(DropReason::IpTruncated);
            }
            next = u8::from(h.next_header());
            off += len;
        }
        Ok(Self {
            next,
            off,
            fragment,
            upper: true,
        })
    }
}

impl Ipv6Header {
    /// Read and check the IPv6 header at the start of `ip`, and follow its chain.
    fn parse(ip: &[u8]) -> Result<Self, DropReason> {
        let pkt = Ipv6Packet::new_checked(ip).map_err(|_| DropReason::IpTruncated)?;
        if pkt.version() != 6 {
            return Err(DropReason::IpBadVersion);
        }
        let payload_len = usize::from(pkt.payload_len());
        let total_len = ipv6_field::HEADER_LEN + payload_len;
        // A payload length of 0 with bytes after the header is a jumbogram (RFC 2675),
        // which no link wvs serves carries.
        if total_len > ip.len() || (payload_len == 0 && ip.len() > ipv6_field::HEADER_LEN) {
            return Err(if total_len > ip.len() {
                DropReason::IpTruncated
            } else {
                DropReason::IpBadLength
            });
        }
        let packet = &ip[..total_len];
        let Chain {
            next,
            off,
            fragment,
            upper,
        } = Chain::walk(packet, u8::from(pkt.next_header()))?;
        let ports = match next {
            6 | 17 | 132 if upper => packet.get(off..).and_then(ports_of),
            _ => None,
        };
        Ok(Self {
            saddr: pkt.src_addr(),
            daddr: pkt.dst_addr(),
            hop_limit: pkt.hop_limit(),
            total_len,
            l4_off: off,
            next,
            fragment,
            ports,
        })
    }

    /// TCP, UDP or SCTP, by the protocol number (never for a fragment past the first).
    #[inline]
    pub fn l4_proto(&self) -> Option<Protocol> {
        if self.fragment.is_some_and(|f| f.offset != 0) {
            return None;
        }
        Protocol::from_number(self.next)
    }
}

/// The packet an ICMPv6 error quotes (RFC 4443: as much of it as fits, so its payload
/// length says more than is there): its TCP or UDP endpoints and where its upper layer
/// starts in the quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quote6 {
    pub proto: Protocol,
    pub saddr: Ipv6Addr,
    pub sport: u16,
    pub daddr: Ipv6Addr,
    pub dport: u16,
    pub l4_off: usize,
}

impl Quote6 {
    /// Read the quote `q`: `Ok(None)` if it is not TCP or UDP with its ports (a later
    /// fragment, another protocol), `Err` if it is no IPv6 packet or its chain runs out.
    pub(crate) fn parse(q: &[u8]) -> Result<Option<Self>, DropReason> {
        let pkt = Ipv6Packet::new_checked(q).map_err(|_| DropReason::IcmpTruncated)?;
        if pkt.version() != 6 {
            return Err(DropReason::IcmpInnerBad);
        }
        let chain =
            Chain::walk(q, u8::from(pkt.next_header())).map_err(|_| DropReason::IcmpTruncated)?;
        let proto = match chain.next {
            6 if chain.upper => Protocol::Tcp,
            17 if chain.upper => Protocol::Udp,
            _ => return Ok(None),
        };
        let (sport, dport) = q
            .get(chain.off..)
            .and_then(ports_of)
            .ok_or(DropReason::IcmpTruncated)?;
        Ok(Some(Self {
            proto,
            saddr: pkt.src_addr(),
            sport,
            daddr: pkt.dst_addr(),
            dport,
            l4_off: chain.off,
        }))
    }
}

/// The source and destination port at the start of a TCP or UDP header, if it has them.
fn ports_of(l4: &[u8]) -> Option<(u16, u16)> {
    let p = l4.get(..4)?;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
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

    /// An IPv6 frame: `ext` (extension headers, each starting with its next header) then a
    /// UDP header from port 40000 to 80 and two bytes.
    fn udp6(first: u8, ext: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        let payload = ext.len() + 10;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload as u16).to_be_bytes());
        f.extend_from_slice(&[first, 64]);
        f.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"2001:db8:100::1".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(ext);
        f.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 10, 0, 0, 1, 2]);
        f
    }

    #[test]
    fn an_ipv6_chain_is_followed_to_the_upper_layer() {
        let h = Headers::parse(&udp6(17, &[]));
        let ip = h.ipv6().unwrap();
        assert_eq!((ip.l4_off, ip.next, ip.total_len), (40, 17, 50));
        assert_eq!(ip.ports, Some((40000, 80)));
        assert_eq!(ip.l4_proto(), Some(Protocol::Udp));
        assert_eq!(ip.daddr, "2001:db8:100::1".parse::<Ipv6Addr>().unwrap());
        assert!(h.ipv4().is_none());
        // Hop-by-hop (8 bytes), destination options (16), a first fragment, then UDP.
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[44, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 7]);
        let h = Headers::parse(&udp6(0, &ext));
        let ip = h.ipv6().unwrap();
        assert_eq!((ip.l4_off, ip.next, ip.ports), (72, 17, Some((40000, 80))));
        let f = ip.fragment.unwrap();
        assert_eq!((f.at, f.offset, f.more, f.ident), (64, 0, true, 7));
        // Authentication header: its length counts 4-byte units less two (here 12 bytes).
        let ah = [17, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        let ip = *Headers::parse(&udp6(51, &ah)).ipv6().unwrap();
        assert_eq!((ip.l4_off, ip.ports), (52, Some((40000, 80))));
    }

    #[test]
    fn a_later_ipv6_fragment_has_no_upper_layer_and_a_cut_chain_is_truncated() {
        let later = [17, 0, 0x05, 0x38, 0, 0, 0, 9];
        let ip = *Headers::parse(&udp6(44, &later)).ipv6().unwrap();
        assert_eq!((ip.next, ip.ports, ip.l4_proto()), (17, None, None));
        assert_eq!(ip.fragment.unwrap().offset, 167);
        // A hop-by-hop header that says it is longer than the packet.
        let long = [17, 9, 0, 0, 0, 0, 0, 0];
        let eth = Headers::parse(&udp6(0, &long)).eth.unwrap();
        assert_eq!(eth.net, Net::Ipv6(Err(DropReason::IpTruncated)));
        // A payload length past the frame.
        let mut f = udp6(17, &[]);
        f[19] = 200;
        assert_eq!(
            Headers::parse(&f).eth.unwrap().net,
            Net::Ipv6(Err(DropReason::IpTruncated))
        );
        // More extension headers than wvs follows: no upper layer.
        let mut ext = Vec::new();
        for _ in 0..9 {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let ip = *Headers::parse(&udp6(60, &ext)).ipv6().unwrap();
        assert_eq!((ip.next, ip.ports), (60, None));
    }

    proptest::proptest! {
        /// Whatever follows an IPv6 header, the walk ends inside the packet, and the
        /// ports it reports are the bytes at the upper layer's start.
        #[test]
        fn an_ipv6_walk_stays_inside(first in proptest::sample::select(vec![0u8, 6, 17, 43, 44, 51, 60]),
                                     ext in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let f = udp6(first, &ext);
            if let Some(ip) = Headers::parse(&f).ipv6() {
                proptest::prop_assert!(ip.l4_off <= ip.total_len);
                proptest::prop_assert!(ip.total_len + 14 <= f.len());
                if let Some((sport, dport)) = ip.ports {
                    let at = 14 + ip.l4_off;
                    proptest::prop_assert_eq!(sport, u16::from_be_bytes([f[at], f[at + 1]]));
                    proptest::prop_assert_eq!(dport, u16::from_be_bytes([f[at + 2], f[at + 3]]));
                }
            }
        }
    }

    #[test]
    fn what_is_wrong_is_recorded_not_decided() {
        assert_eq!(Headers::parse(&[0; 10]).eth, None);
        let long = Headers::parse(&frame(&udp4(60, 0)));
        assert_eq!(
            long.eth.unwrap().net,
            Net::Ipv4(Err(DropReason::IpTruncated))
        );
        let mut v6 = udp4(28, 0);
        v6[0] = 0x65;
        assert_eq!(
            Headers::parse(&frame(&v6)).eth.unwrap().net,
            Net::Ipv4(Err(DropReason::IpBadVersion))
        );
        let frag = Headers::parse(&frame(&udp4(28, 0x2000)));
        assert!(frag.ipv4().unwrap().fragment);
        let mut arp = frame(&[0; 28]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(Headers::parse(&arp).eth.unwrap().net, Net::Other);
        // Too short for the ports: none, and the datapath says what that means.
        let short = Headers::parse(&frame(&udp4(22, 0)[..22]));
        assert_eq!(short.ipv4().unwrap().ports, None);
    }
}
