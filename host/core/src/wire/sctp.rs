//! SCTP's common header and chunk headers (RFC 9260 3.1 and 3.2), as IPVS reads them
//! (`ip_vs_proto_sctp.c`): the ports, the checksum, and the type of the first chunk and of
//! the one after it.
//!
//! smoltcp has no SCTP; this view follows its contract: once [`SctpPacket::new_checked`]
//! succeeded (the common header and one chunk header are there), no accessor panics.

/// Field offsets and sizes.
pub mod field {
    use core::ops::Range;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Verification tag.
    pub const VTAG: Range<usize> = 4..8;
    /// CRC32c of the packet with this field zero (RFC 9260 appendix A).
    pub const CHECKSUM: Range<usize> = 8..12;
    /// Length of the common header.
    pub const HEADER_LEN: usize = 12;
    /// Length of a chunk header (type, flags, length).
    pub const CHUNK_HEADER_LEN: usize = 4;
    /// A chunk's length, from the start of its header.
    pub const CHUNK_LENGTH: Range<usize> = 2..4;
}

/// Chunk types IPVS's state table tells apart (`SCTP_CID_*`).
pub mod chunk {
    /// Payload data.
    pub const DATA: u8 = 0;
    /// Initiation.
    pub const INIT: u8 = 1;
    /// Initiation acknowledgement.
    pub const INIT_ACK: u8 = 2;
    /// Abort.
    pub const ABORT: u8 = 6;
    /// Shutdown.
    pub const SHUTDOWN: u8 = 7;
    /// Shutdown acknowledgement.
    pub const SHUTDOWN_ACK: u8 = 8;
    /// Operation error.
    pub const ERROR: u8 = 9;
    /// State cookie.
    pub const COOKIE_ECHO: u8 = 10;
    /// Cookie acknowledgement.
    pub const COOKIE_ACK: u8 = 11;
    /// Shutdown complete.
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

/// A read-only or writable view of an SCTP packet.
#[derive(Debug)]
pub struct SctpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// The packet is shorter than a common header and one chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("SCTP packet truncated")]
pub struct Truncated;

impl<T: AsRef<[u8]>> SctpPacket<T> {
    /// Wrap `buffer` without checking its length.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wrap `buffer`, which must hold the common header and the first chunk's header.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Whether the common header and one chunk header are there.
    pub fn check_len(&self) -> Result<(), Truncated> {
        if self.buffer.as_ref().len() < field::HEADER_LEN + field::CHUNK_HEADER_LEN {
            Err(Truncated)
        } else {
            Ok(())
        }
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// The checksum as carried (CRC32c, stored little-endian as the kernel's `__le32`).
    pub fn checksum(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The first chunk's type.
    pub fn first_chunk(&self) -> u8 {
        self.buffer.as_ref()[field::HEADER_LEN]
    }

    /// The type of the chunk after the first, if the packet holds its header
    /// (`ALIGN(length, 4)` past the first; IPVS looks there for an ABORT bundled after a
    /// COOKIE ECHO or COOKIE ACK). A first chunk shorter than its own header has no next.
    pub fn second_chunk(&self) -> Option<u8> {
        let b = self.buffer.as_ref();
        let first = &b[field::HEADER_LEN..];
        let len = usize::from(u16::from_be_bytes([
            first[field::CHUNK_LENGTH.start],
            first[field::CHUNK_LENGTH.start + 1],
        ]));
        if len < field::CHUNK_HEADER_LEN {
            return None;
        }
        let at = field::HEADER_LEN.checked_add(len.checked_add(3)? & !3)?;
        b.get(at..at.checked_add(field::CHUNK_HEADER_LEN)?)
            .map(|h| h[0])
    }

    /// Whether the checksum is the packet's CRC32c.
    pub fn verify_checksum(&self) -> bool {
        compute(self.buffer.as_ref()) == self.checksum()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SctpPacket<T> {
    /// Set the source port (the checksum is the caller's to fill again).
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Set the destination port (the checksum is the caller's to fill again).
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Compute the packet's CRC32c and store it (`sctp_compute_cksum`). SCTP's checksum
    /// covers no pseudo-header: a changed address leaves it valid, a changed port does not.
    pub fn fill_checksum(&mut self) {
        let c = compute(self.buffer.as_ref());
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_le_bytes());
    }
}

/// The CRC32c of `packet` (an SCTP packet at least a common header long) with its
/// checksum field taken as zero.
fn compute(packet: &[u8]) -> u32 {
    let (head, rest) = packet.split_at(field::CHECKSUM.start.min(packet.len()));
    let c = crc32c::crc32c(head);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, rest.get(4..).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An INIT from port 40000 to 5060 (verification tag 0, as RFC 9260 8.5.1 asks).
    fn init() -> Vec<u8> {
        let mut p = vec![
            0x9c,
            0x40,
            0x13,
            0xc4,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0, // common header
            chunk::INIT,
            0,
            0,
            20, // INIT, 20 bytes
            0x11,
            0x22,
            0x33,
            0x44,
            0,
            1,
            0,
            0,
            0,
            10,
            0,
            10,
            0xaa,
            0xbb,
            0xcc,
            0xdd,
        ];
        SctpPacket::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn reads_what_the_header_says() {
        let p = init();
        let v = SctpPacket::new_checked(&p[..]).unwrap();
        assert_eq!((v.src_port(), v.dst_port()), (40000, 5060));
        assert_eq!(v.first_chunk(), chunk::INIT);
        assert_eq!(v.second_chunk(), None);
        assert!(v.verify_checksum());
    }

    #[test]
    fn crc32c_is_rfc_9260s() {
        // RFC 3720 B.4's test vector: 32 bytes of zeros.
        assert_eq!(crc32c::crc32c(&[0; 32]), 0x8a91_36aa);
        let mut p = init();
        p[20] ^= 1;
        assert!(!SctpPacket::new_unchecked(&p[..]).verify_checksum());
        let mut v = SctpPacket::new_unchecked(&mut p[..]);
        v.set_dst_port(80);
        v.fill_checksum();
        assert!(SctpPacket::new_unchecked(&p[..]).verify_checksum());
    }

    #[test]
    fn finds_an_abort_after_a_cookie_echo() {
        let mut p = vec![0u8; 12];
        p.extend([chunk::COOKIE_ECHO, 0, 0, 7, 1, 2, 3, 0]); // 7 bytes, padded to 8
        p.extend([chunk::ABORT, 0, 0, 4]);
        let v = SctpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(v.second_chunk(), Some(chunk::ABORT));
        p.truncate(22);
        assert_eq!(
            SctpPacket::new_checked(&p[..]).unwrap().second_chunk(),
            None
        );
    }

    #[test]
    fn short_or_odd_packets_never_panic() {
        for n in 0..40 {
            let p = vec![0xffu8; n];
            if let Ok(v) = SctpPacket::new_checked(&p[..]) {
                let _ = (v.second_chunk(), v.verify_checksum(), v.first_chunk());
            }
        }
    }
}
