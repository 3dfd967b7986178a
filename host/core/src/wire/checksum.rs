//! Internet checksum arithmetic: incremental update (RFC 1624) and full computation.
//!
//! NAT changes a few 16-bit words of a header; recomputing a TCP checksum over a 64 KiB
//! super-packet for that would cost more than everything else on the fast path. RFC 1624
//! eqn. 3 updates a checksum in constant time: `HC' = ~(~HC + ~m + m')`. No crate offers the
//! in-place update for both complete and partial (offloaded) checksums, so it is written here;
//! property tests check it against a full recomputation.
//!
//! A *partial* checksum is what a sender that offloads checksumming leaves in a TCP/UDP header
//! (`CHECKSUM_PARTIAL`, `VIRTIO_NET_HDR_F_NEEDS_CSUM`): the folded, uncomplemented sum of the
//! pseudo-header only. The device (or the receiving kernel) completes it later over the real
//! payload. So an address change, which is in the pseudo-header, is added to it directly, and
//! a port change, which the final computation will see anyway, does not touch it.

/// State of the L4 checksum of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumMode {
    /// The checksum field holds a complete checksum.
    Complete,
    /// The sender offloaded the checksum: the field holds the pseudo-header sum only, and the
    /// kernel completes it when the frame is sent on (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
    Partial,
}

/// Add `data` as big-endian 16-bit words to a 32-bit one's-complement accumulator.
#[inline]
pub(crate) fn sum_words(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so the accumulator never overflows, whatever the length.
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Fold a 32-bit accumulator to 16 bits (no complement).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Update a complete checksum for a change of `old` to `new` (each of an even length; RFC 1624).
#[inline]
pub fn update(check: u16, old: &[u8], new: &[u8]) -> u16 {
    // Words out, words in: an IPv4 pseudo-header's addresses may become an IPv6 one's.
    debug_assert!(old.len().is_multiple_of(2) && new.len().is_multiple_of(2));
    let mut acc = u32::from(!check);
    acc = sub_words(acc, old);
    acc = sum_words(acc, new);
    !fold(acc)
}

/// Update a partial (pseudo-header only, uncomplemented) checksum for a pseudo-header change.
#[inline]
pub(crate) fn update_partial(check: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let mut acc = u32::from(check);
    acc = sub_words(acc, old);
    acc = sum_words(acc, new);
    fold(acc)
}

/// Add the one's complement of each word of `data` (subtraction in one's-complement arithmetic).
#[inline]
fn sub_words(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(!u16::from_be_bytes([c[0], c[1]])));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    debug_assert!(
        chunks.remainder().is_empty(),
        "incremental update needs whole words"
    );
    acc
}

/// Compute the checksum of `data` from scratch (used by tests and for ICMP bodies).
pub fn compute(data: &[u8]) -> u16 {
    !fold(sum_words(0, data))
}

/// The TCP/UDP checksum of `segment` (header and payload, its checksum field zero) between
/// IPv4 `src` and `dst`: the pseudo-header (RFC 9293 3.1, RFC 768) and the segment. A UDP
/// result of 0 must be sent as 0xffff (0 means "no checksum"); that is the caller's.
pub fn l4_v4(src: [u8; 4], dst: [u8; 4], proto: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u16;
    let mut acc = sum_words(0, &src);
    acc = sum_words(acc, &dst);
    acc = sum_words(acc, &[0, proto]);
    acc = sum_words(acc, &len.to_be_bytes());
    !fold(sum_words(acc, segment))
}

/// The pseudo-header sum a sender that offloads leaves in the L4 checksum field of an IPv4
/// segment of `len` bytes: folded, not complemented.
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u16 {
    let mut acc = sum_words(0, &src);
    acc = sum_words(acc, &dst);
    acc = sum_words(acc, &[0, proto]);
    fold(sum_words(acc, &len.to_be_bytes()))
}

/// The TCP/UDP/ICMPv6 checksum of `segment` (its checksum field zero) between IPv6 `src`
/// and `dst`: the pseudo-header of RFC 8200 8.1 (addresses, upper-layer length as 32 bits,
/// three zero bytes, the next header) and the segment.
pub fn l4_v6(src: [u8; 16], dst: [u8; 16], proto: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    let mut acc = sum_words(0, &src);
    acc = sum_words(acc, &dst);
    acc = sum_words(acc, &len.to_be_bytes());
    acc = sum_words(acc, &[0, proto]);
    !fold(sum_words(acc, segment))
}

/// The pseudo-header sum an offloading sender leaves in the checksum field of an IPv6
/// segment of `len` bytes: folded, not complemented.
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: u32) -> u16 {
    let mut acc = sum_words(0, &src);
    acc = sum_words(acc, &dst);
    acc = sum_words(acc, &len.to_be_bytes());
    fold(sum_words(acc, &[0, proto]))
}

/// The TCP/UDP checksum of `segment` between `src` and `dst` of either family (both of
/// one: a packet has one IP header).
pub fn l4(src: std::net::IpAddr, dst: std::net::IpAddr, proto: u8, segment: &[u8]) -> u16 {
    use std::net::IpAddr;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => l4_v4(s.octets(), d.octets(), proto, segment),
        (s, d) => l4_v6(v6_octets(s), v6_octets(d), proto, segment),
    }
}

/// An address as IPv6 octets (IPv4 as IPv4-mapped).
fn v6_octets(a: std::net::IpAddr) -> [u8; 16] {
    match a {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

/// Complete a partial checksum in software, as the device would have (`skb_checksum_help`):
/// the field at `field` of `segment` holds the pseudo-header sum; the result covers it and
/// every byte of the segment. Returns the value written. `field` must leave room for two
/// bytes in `segment`.
pub(crate) fn complete_partial(segment: &mut [u8], field: usize) -> u16 {
    let c = !fold(sum_words(0, segment));
    segment[field..field + 2].copy_from_slice(&c.to_be_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example words: 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(0, &data)), 0xddf2);
        assert_eq!(compute(&data), !0xddf2);
    }

    #[test]
    fn completing_a_partial_checksum_gives_the_full_one() {
        let (src, dst) = ([198, 18, 0, 2], [198, 19, 0, 11]);
        let mut seg = *b"\x9c\x40\x00\x50\x00\x10\x00\x00payload!";
        let full = l4_v4(src, dst, 17, &seg);
        // What a sender that offloads leaves: the folded pseudo-header sum.
        let mut ph = Vec::new();
        ph.extend_from_slice(&src);
        ph.extend_from_slice(&dst);
        ph.extend_from_slice(&[0, 17, 0, seg.len() as u8]);
        let partial = fold(sum_words(0, &ph));
        seg[6..8].copy_from_slice(&partial.to_be_bytes());
        assert_eq!(complete_partial(&mut seg, 6), full);
    }

    proptest! {
        /// Incremental update equals recomputation for any buffer and any 4-byte rewrite.
        #[test]
        fn update_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 8..256usize),
            at in 0usize..64,
            new in any::<[u8; 4]>(),
        ) {
            if data.len() % 2 == 1 { data.pop(); }
            let at = (at * 2) % (data.len() - 4);
            let before = compute(&data);
            let old: [u8; 4] = data[at..at + 4].try_into().unwrap();
            data[at..at + 4].copy_from_slice(&new);
            let after = compute(&data);
            let inc = update(before, &old, &new);
            // 0x0000 and 0xffff are the same number in one's complement.
            prop_assert!(inc == after || (inc ^ after) == 0xffff && (inc == 0 || inc == 0xffff));
        }

        /// A partial checksum updated for an address change equals the partial checksum of the
        /// new pseudo-header.
        #[test]
        fn partial_update_matches(old in any::<[u8; 4]>(), new in any::<[u8; 4]>(), rest in any::<[u8; 8]>()) {
            let mut ph = [0u8; 12];
            ph[..4].copy_from_slice(&old);
            ph[4..].copy_from_slice(&rest);
            let before = fold(sum_words(0, &ph));
            ph[..4].copy_from_slice(&new);
            let after = fold(sum_words(0, &ph));
            let inc = update_partial(before, &old, &new);
            prop_assert!(inc == after || (inc ^ after) == 0xffff && (inc == 0 || inc == 0xffff));
        }
    }
}
