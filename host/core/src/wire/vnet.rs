//! The `struct virtio_net_hdr` that a packet socket with `PACKET_VNET_HDR` puts before each
//! frame it receives and expects before each frame it sends (`include/uapi/linux/virtio_net.h`).
//!
//! It is how wvs handles GRO/GSO super-packets and offloaded checksums correctly: a received
//! super-packet is forwarded whole with its GSO fields intact (the kernel segments it where it
//! must), and a frame whose checksum a local sender left partial is forwarded with
//! `NEEDS_CSUM`, so the kernel completes the checksum after our rewrite. Fields are in the
//! host's byte order for modern (little-endian) virtio, which is what packet sockets use.

use crate::consts::VNET_HDR_LEN;

mod field {
    pub(super) const FLAGS: usize = 0;
    pub(super) const GSO_TYPE: usize = 1;
    pub(super) const GSO_SIZE: core::ops::Range<usize> = 4..6;
    pub(super) const CSUM_START: core::ops::Range<usize> = 6..8;
    pub(super) const CSUM_OFFSET: core::ops::Range<usize> = 8..10;
}

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum holds only the pseudo-header sum.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the receiver verified the checksum (receive only).
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;

/// A view over the 10-byte vnet header at the start of a packet buffer.
#[derive(Debug)]
pub struct VnetHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VnetHeader<T> {
    /// Wrap a buffer that starts with a vnet header, checking its length.
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= VNET_HDR_LEN).then_some(Self { buffer })
    }

    /// Return the flags field.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Return the GSO type field.
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }

    /// Return the GSO segment size: the payload bytes of each segment the kernel will cut.
    pub fn gso_size(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::GSO_SIZE.start], b[field::GSO_SIZE.start + 1]])
    }

    /// Return the checksum start offset (from the start of the frame).
    pub fn csum_start(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::CSUM_START.start], b[field::CSUM_START.start + 1]])
    }

    /// Return the checksum field offset (from `csum_start`).
    pub fn csum_offset(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::CSUM_OFFSET.start], b[field::CSUM_OFFSET.start + 1]])
    }

    /// Whether the frame's L4 checksum is partial and left for the kernel to complete.
    pub fn needs_csum(&self) -> bool {
        self.flags() & F_NEEDS_CSUM != 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VnetHeader<T> {
    /// Make a received header valid for sending: keep GSO and `NEEDS_CSUM`, drop the
    /// receive-only `DATA_VALID`.
    pub fn prepare_tx(&mut self) {
        self.buffer.as_mut()[field::FLAGS] &= F_NEEDS_CSUM;
    }

    /// Complete an SCTP checksum the sender left to the device (`NEEDS_CSUM` at offset 8
    /// of an SCTP header starting `l4` bytes into `frame`), as the kernel's
    /// `skb_crc32c_csum_help` does: a virtio header can only ask for the Internet checksum,
    /// so the frame must leave complete. Returns whether it did anything.
    pub fn complete_sctp(&mut self, frame: &mut [u8], l4: usize) -> bool {
        if !self.needs_csum()
            || usize::from(self.csum_start()) != l4
            || usize::from(self.csum_offset()) != super::sctp::field::CHECKSUM.start
        {
            return false;
        }
        let Some(seg) = frame.get_mut(l4..) else {
            return false;
        };
        if seg.len() < super::sctp::field::HEADER_LEN {
            return false;
        }
        super::sctp::SctpPacket::new_unchecked(seg).fill_checksum();
        self.buffer.as_mut()[field::FLAGS] &= !F_NEEDS_CSUM;
        true
    }

    /// Make it the header of a frame that came without one: no GSO, and either a complete
    /// checksum or, with `partial` = (start, offset), `NEEDS_CSUM` for the L4 checksum at
    /// `offset` bytes into the header starting `start` bytes into the frame.
    pub fn set_plain(&mut self, partial: Option<(u16, u16)>) {
        let b = self.buffer.as_mut();
        b[..VNET_HDR_LEN].fill(0);
        if let Some((start, offset)) = partial {
            b[field::FLAGS] = F_NEEDS_CSUM;
            b[field::CSUM_START].copy_from_slice(&start.to_le_bytes());
            b[field::CSUM_OFFSET].copy_from_slice(&offset.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_prepare() {
        let mut b = [F_NEEDS_CSUM | F_DATA_VALID, 1, 54, 0, 0xa8, 5, 34, 0, 16, 0];
        let mut h = VnetHeader::new_checked(&mut b[..]).unwrap();
        assert!(h.needs_csum());
        assert_eq!(h.gso_type(), 1);
        assert_eq!(h.gso_size(), 0x05a8);
        assert_eq!(h.csum_start(), 34);
        assert_eq!(h.csum_offset(), 16);
        h.prepare_tx();
        assert_eq!(h.flags(), F_NEEDS_CSUM);
        assert!(VnetHeader::new_checked(&b[..9]).is_none());
    }
}
