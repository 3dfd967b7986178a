//! IPv4 fragmentation (`ip_do_fragment`), for the outer packet of a tunnel that does not
//! fit the path: IPVS lets the output path fragment a packet without DF (`ignore_df`), and
//! with `pmtu_disc` off a tunnel's outer packet goes without DF whatever the inner one
//! says. Each fragment carries the packet's header with its own length, offset and MF flag
//! and a fresh checksum, and a multiple of 8 bytes of its payload but for the last
//! (RFC 791). Fragments are written into the I/O layer's transmit buffers.

use super::Refused;
use super::gso::SegmentSink;
use crate::wire::{ETHERNET_HEADER_LEN, Ipv4Packet, checksum};

/// Cut the IPv4 packet in `frame` (an Ethernet header, then the packet) into fragments of
/// at most `mtu` bytes, each sent out of `iface` with the frame's Ethernet header. Returns
/// how many were sent and how many there were.
pub fn fragment(
    frame: &[u8],
    mtu: u32,
    iface: u8,
    sink: &mut dyn SegmentSink,
) -> Result<(usize, usize), Refused> {
    let ip = frame.get(ETHERNET_HEADER_LEN..).ok_or(Refused::TooBig)?;
    let iph = Ipv4Packet::new_unchecked(ip);
    let ihl = usize::from(iph.header_len());
    let total = usize::from(iph.total_len()).min(ip.len());
    let per = (mtu as usize).saturating_sub(ihl) & !7;
    if per == 0 || total <= ihl {
        return Err(Refused::TooBig);
    }
    let payload = &ip[ihl..total];
    let n = payload.len().div_ceil(per);
    let mut sent = 0;
    for (k, chunk) in payload.chunks(per).enumerate() {
        let Some(out) = sink.buf() else {
            return if sent == 0 {
                Err(Refused::TooBig)
            } else {
                Ok((sent, n))
            };
        };
        let len = ihl + chunk.len();
        if out.len() < ETHERNET_HEADER_LEN + len {
            return Err(Refused::TooBig);
        }
        out[..ETHERNET_HEADER_LEN].copy_from_slice(&frame[..ETHERNET_HEADER_LEN]);
        let f = &mut out[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + len];
        f[..ihl].copy_from_slice(&ip[..ihl]);
        f[ihl..].copy_from_slice(chunk);
        let (hdr, _) = f.split_at_mut(ihl);
        let mut h = Ipv4Packet::new_unchecked(&mut *hdr);
        h.set_total_len(len as u16);
        h.set_dont_frag(false);
        h.set_more_frags(k + 1 < n);
        h.set_frag_offset((k * per) as u16);
        h.set_checksum(0);
        let c = checksum::compute(hdr);
        Ipv4Packet::new_unchecked(&mut *hdr).set_checksum(c);
        sink.send(
            super::gso::SegmentTo::Iface(iface),
            ETHERNET_HEADER_LEN + len,
        );
        sent += 1;
    }
    Ok((sent, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpFragOffset, Ipv4Header};

    #[test]
    fn fragments_reassemble_to_the_packet() {
        let payload: Vec<u8> = (0..3001u32).map(|i| (i * 7) as u8).collect();
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([198, 19, 0, 1], [198, 19, 0, 11], 62)
            .udp(40000, 6080)
            .write(&mut frame, &payload)
            .unwrap();
        let mut sink = crate::xmit::gso::TestSink::default();
        assert_eq!(fragment(&frame, 1400, 0, &mut sink).unwrap(), (3, 3));
        let mut whole = Vec::new();
        for (k, (_, f)) in sink.sent.iter().enumerate() {
            assert_eq!(f[..14], frame[..14]);
            let (h, rest) = Ipv4Header::from_slice(&f[14..]).unwrap();
            assert!(f.len() - 14 <= 1400);
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            assert_eq!(h.more_fragments, k < 2);
            assert!(!h.dont_fragment);
            assert_eq!(
                h.fragment_offset,
                IpFragOffset::try_new((k * 1376 / 8) as u16).unwrap()
            );
            assert_eq!(
                h.identification,
                Ipv4Header::from_slice(&frame[14..])
                    .unwrap()
                    .0
                    .identification
            );
            whole.extend_from_slice(&rest[..usize::from(h.total_len) - 20]);
        }
        assert_eq!(whole[..], frame[14 + 20..]);
    }
}
