//! Memory-mapped packet rings (`PACKET_RX_RING` and `PACKET_TX_RING`, `TPACKET_V2`): the
//! kernel writes each received frame into a slot of a ring shared with wvs, and sends the
//! slots wvs fills in the TX ring with one `send` for the whole batch. Per frame, no system
//! call, no socket-queue skb on receive, and on send an skb that points at the ring's pages
//! instead of a copy.
//!
//! Why version 2 and not 3: a `TPACKET_V3` ring hands frames over a block at a time, when
//! the block is full or when its retire timer fires (`prb_retire_rx_blk_timer_expired`), and
//! that timer counts in jiffies: 4 ms on this project's kernels (`HZ=250`). A balancer on a
//! quiet link would hold each packet up to that long; with version 2 each frame is the
//! user's as soon as it is written (`sk_data_ready` per frame), and a batch is whatever has
//! arrived by the time the worker looks.
//!
//! Frames larger than a slot (GSO super-frames of up to 64 KiB, jumbo frames) do not fit; with
//! `PACKET_COPY_THRESH` the kernel still writes the slot, truncated and marked
//! `TP_STATUS_COPY`, and queues the whole frame on the socket, where [`PacketRing::recv_copy`]
//! takes it in order. Such frames leave through a plain packet socket
//! ([`super::socket::PacketSocket::open_tx`]): a TX ring slot is no bigger than an MTU.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::socket::check;
use crate::consts::{
    RING_BLOCK_SIZE, RING_FRAME_SIZE, RING_RX_FRAMES, RING_TX_FRAMES, SOCKET_RCVBUF, VNET_HDR_LEN,
};

/// `tpacket2_hdr`'s fields (`linux/if_packet.h`), as offsets into a slot.
mod hdr {
    pub(crate) const STATUS: usize = 0;
    pub(crate) const LEN: usize = 4;
    pub(crate) const SNAPLEN: usize = 8;
    pub const MAC: usize = 12;
    /// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where a TX slot's data starts.
    pub(crate) const TX_DATA: usize = 32;
}

/// `enum tpacket_versions`' `TPACKET_V2`.
const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_COPY: u32 = 1 << 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 1 << 2;

/// One ring's geometry within the mapping.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    offset: usize,
    frames: u32,
}

/// A packet socket with an RX and a TX ring, bound to one interface.
#[derive(Debug)]
pub(crate) struct PacketRing {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    rx: Geometry,
    tx: Geometry,
    rx_head: u32,
    tx_head: u32,
    tx_queued: Cell<u32>,
}

// SAFETY: the mapping is owned by this value alone (it is unmapped on drop) and only the
// worker thread that owns the value touches it; moving it to that thread is sound.
unsafe impl Send for PacketRing {}

impl AsRawFd for PacketRing {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for PacketRing {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A received frame, still in its slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxFrame {
    /// Offset of the Ethernet header in the slot; the vnet header is just before it.
    pub mac: usize,
    /// Bytes of the frame in the slot.
    pub snaplen: usize,
    /// Bytes of the whole frame on the wire (more than `snaplen` when it did not fit).
    pub len: usize,
    /// The frame did not fit: the whole frame waits on the socket ([`PacketRing::recv_copy`]).
    pub copied: bool,
}

/// The packet socket's options, set before its rings exist (the version and the vnet
/// header must be).
fn socket_options(s: libc::c_int) -> io::Result<()> {
    // A TX slot the kernel cannot send is skipped (`PACKET_LOSS`, and counted by the
    // send's result) instead of stopping every slot behind it; frames larger than a slot
    // are also queued whole on the socket (`PACKET_COPY_THRESH`).
    super::socket::set_options(
        s,
        &[(
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            TPACKET_V2,
            "PACKET_VERSION",
        )],
    )?;
    super::socket::set_options(s, &super::socket::RX_OPTIONS)?;
    super::socket::set_options(
        s,
        &[
            (libc::SOL_PACKET, libc::PACKET_LOSS, 1, "PACKET_LOSS"),
            (
                libc::SOL_PACKET,
                libc::PACKET_COPY_THRESH,
                1,
                "PACKET_COPY_THRESH",
            ),
        ],
    )?;
    super::socket::force_rcvbuf(s, SOCKET_RCVBUF)?;
    // The TX ring's skbs are charged to the socket until the next hop frees them (for a
    // veth, when the receiving socket has read them): with the default send buffer a
    // few hundred frames in flight would make the flush fail with EAGAIN and wait. The
    // ring is the bound that matters.
    super::socket::force_sndbuf(
        s,
        (RING_TX_FRAMES as usize * RING_FRAME_SIZE * 2) as libc::c_int,
    )?;
    Ok(())
}

impl PacketRing {
    /// Open the socket on interface `ifindex`, map its rings and, if `fanout_group` is given,
    /// join the group.
    pub fn open(ifindex: u32, fanout_group: Option<u16>) -> io::Result<Self> {
        Self::open_with(super::socket::packet_fd()?, ifindex, fanout_group, true)
    }

    /// As [`Self::open`], on a socket opened elsewhere (the [`super::broker`]'s).
    pub(crate) fn open_on(
        fd: OwnedFd,
        ifindex: u32,
        fanout_group: Option<u16>,
    ) -> io::Result<Self> {
        Self::open_with(fd, ifindex, fanout_group, true)
    }

    /// Open a socket with a TX ring only, on interface `ifindex`: bound with protocol 0, the
    /// kernel delivers nothing to it (`--io xdp` receives through XDP sockets).
    pub(crate) fn open_tx_only(ifindex: u32) -> io::Result<Self> {
        Self::open_with(super::socket::packet_fd()?, ifindex, None, false)
    }

    /// As [`Self::open_tx_only`], on a socket opened elsewhere (the [`super::broker`]'s).
    pub(crate) fn open_tx_only_on(fd: OwnedFd, ifindex: u32) -> io::Result<Self> {
        Self::open_with(fd, ifindex, None, false)
    }

    fn open_with(
        fd: OwnedFd,
        ifindex: u32,
        fanout_group: Option<u16>,
        rx: bool,
    ) -> io::Result<Self> {
        let s = fd.as_raw_fd();
        socket_options(s)?;
        let rx_req = ring_req(if rx { RING_RX_FRAMES } else { 0 });
        let tx_req = ring_req(RING_TX_FRAMES);
        if rx {
            set_ring(s, libc::PACKET_RX_RING, &rx_req, "PACKET_RX_RING")?;
        }
        set_ring(s, libc::PACKET_TX_RING, &tx_req, "PACKET_TX_RING")?;
        let rx_len = (rx_req.tp_block_size * rx_req.tp_block_nr) as usize;
        let tx_len = (tx_req.tp_block_size * tx_req.tp_block_nr) as usize;
        let map_len = rx_len + tx_len;
        // SAFETY: maps the socket's rings (RX then TX, as the kernel lays them out) into
        // fresh memory; the result is checked, and unmapped only on drop.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                s,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("mmap(packet ring): {e}")));
        }
        let ring = Self {
            fd,
            map: map.cast(),
            map_len,
            rx: Geometry {
                offset: 0,
                frames: rx_req.tp_frame_nr,
            },
            tx: Geometry {
                offset: rx_len,
                frames: tx_req.tp_frame_nr,
            },
            rx_head: 0,
            tx_head: 0,
            tx_queued: Cell::new(0),
        };
        if !rx {
            super::socket::bind_to(s, ifindex, 0)?;
            return Ok(ring);
        }
        super::socket::bind_all(s, ifindex)?;
        if let Some(group) = fanout_group {
            super::socket::join_fanout(s, group)?;
        }
        Ok(ring)
    }

    fn slot_ptr(&self, g: Geometry, i: u32) -> *mut u8 {
        // Frames never straddle blocks: a block holds a whole number of them.
        let per_block = (RING_BLOCK_SIZE / RING_FRAME_SIZE) as u32;
        let at = g.offset
            + (i / per_block) as usize * RING_BLOCK_SIZE
            + (i % per_block) as usize * RING_FRAME_SIZE;
        // SAFETY: `i` is below the ring's frame count, so `at` is inside the mapping.
        unsafe { self.map.add(at) }
    }

    fn status(&self, g: Geometry, i: u32) -> &AtomicU32 {
        // SAFETY: every slot starts with its u32 status, 4-byte aligned (slots are page
        // fractions), shared with the kernel, which reads and writes it atomically too.
        unsafe { &*self.slot_ptr(g, i).add(hdr::STATUS).cast::<AtomicU32>() }
    }

    fn read_u32(&self, g: Geometry, i: u32, at: usize) -> u32 {
        // SAFETY: the offset is a field of the slot's header, inside the slot.
        unsafe { self.slot_ptr(g, i).add(at).cast::<u32>().read_volatile() }
    }

    fn read_u16(&self, g: Geometry, i: u32, at: usize) -> u16 {
        // SAFETY: as `read_u32`.
        unsafe { self.slot_ptr(g, i).add(at).cast::<u16>().read_volatile() }
    }

    /// The frame at the head of the RX ring, if the kernel has handed it over.
    pub(crate) fn rx_peek(&self) -> Option<RxFrame> {
        if self.rx.frames == 0 {
            return None;
        }
        let st = self.status(self.rx, self.rx_head).load(Ordering::Acquire);
        if st & TP_STATUS_USER == 0 {
            return None;
        }
        let (mac, snaplen) = self.frame_span(self.rx_head);
        let len = self.read_u32(self.rx, self.rx_head, hdr::LEN) as usize;
        Some(RxFrame {
            mac,
            snaplen,
            len,
            copied: st & TP_STATUS_COPY != 0,
        })
    }

    /// Whether the `ahead`-th slot after the head holds a frame; if so, start loading the
    /// cache lines of its first bytes (the kernel wrote them on another core).
    pub(crate) fn rx_prefetch(&self, ahead: u32) -> bool {
        if self.rx.frames == 0 {
            return false;
        }
        let i = (self.rx_head + ahead) % self.rx.frames;
        if self.status(self.rx, i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            return false;
        }
        let p = self.slot_ptr(self.rx, i);
        // The frame's headers start 76 bytes into the slot, past the first line.
        prefetch(p.wrapping_add(64));
        prefetch(p.wrapping_add(128));
        true
    }

    /// The frame in the `ahead`-th slot after the head (which [`rx_prefetch`] found ready).
    pub(crate) fn rx_frame_at(&self, ahead: u32) -> &[u8] {
        let i = (self.rx_head + ahead) % self.rx.frames;
        let (mac, snaplen) = self.frame_span(i);
        // SAFETY: the slot is the user's until released, and `frame_span` keeps the range
        // inside it.
        unsafe { std::slice::from_raw_parts(self.slot_ptr(self.rx, i).add(mac), snaplen) }
    }

    /// Where RX slot `i`'s frame starts and how many of its bytes the slot holds. A header
    /// that would put the frame outside its slot is the kernel's bug, not ours to trust:
    /// such a frame has no bytes (and is handed back unread).
    fn frame_span(&self, i: u32) -> (usize, usize) {
        let mac = usize::from(self.read_u16(self.rx, i, hdr::MAC));
        let snaplen = self.read_u32(self.rx, i, hdr::SNAPLEN) as usize;
        if (VNET_HDR_LEN..=RING_FRAME_SIZE).contains(&mac) {
            (mac, snaplen.min(RING_FRAME_SIZE - mac))
        } else {
            (VNET_HDR_LEN, 0)
        }
    }

    /// The head slot's bytes, read-only.
    pub(crate) fn rx_bytes(&self) -> &[u8] {
        // SAFETY: as `rx_slot`, shared.
        unsafe { std::slice::from_raw_parts(self.slot_ptr(self.rx, self.rx_head), RING_FRAME_SIZE) }
    }

    /// The head slot's bytes, from the start of the slot.
    pub(crate) fn rx_slot(&mut self) -> &mut [u8] {
        let p = self.slot_ptr(self.rx, self.rx_head);
        // SAFETY: the head slot is the user's (checked by `rx_peek`) until `rx_release`,
        // and this borrow of `self` ends before that can be called.
        unsafe { std::slice::from_raw_parts_mut(p, RING_FRAME_SIZE) }
    }

    /// Give the head slot back to the kernel and move on.
    pub(crate) fn rx_release(&mut self) {
        self.status(self.rx, self.rx_head)
            .store(TP_STATUS_KERNEL, Ordering::Release);
        self.rx_head = (self.rx_head + 1) % self.rx.frames;
    }

    /// The data area of the next free TX slot (a vnet header, then the frame), or `None`
    /// when the kernel still holds it (the ring is full).
    pub(crate) fn tx_slot(&mut self) -> Option<&mut [u8]> {
        let st = self.status(self.tx, self.tx_head).load(Ordering::Acquire);
        if st != TP_STATUS_AVAILABLE && st != TP_STATUS_WRONG_FORMAT {
            return None;
        }
        let p = self.slot_ptr(self.tx, self.tx_head);
        // SAFETY: the slot is available, so the kernel does not touch it until it is
        // committed; the borrow of `self` ends before `tx_commit` can be called.
        Some(unsafe {
            std::slice::from_raw_parts_mut(p.add(hdr::TX_DATA), RING_FRAME_SIZE - hdr::TX_DATA)
        })
    }

    /// Room for data in a TX slot.
    pub(crate) const TX_ROOM: usize = RING_FRAME_SIZE - hdr::TX_DATA;

    /// Queue the slot [`tx_slot`](Self::tx_slot) returned, holding `len` bytes, for the next
    /// [`flush`](Self::flush).
    pub(crate) fn tx_commit(&mut self, len: usize) {
        let p = self.slot_ptr(self.tx, self.tx_head);
        // A frame that is not a GSO super-frame is copied whole into the skb's linear part
        // (the vnet header's `hdr_len`, what the kernel copies before it maps the rest of
        // the slot as page fragments): fragments of a TX ring are "zero-copy" pages that the
        // receiving namespace's stack must copy again (`skb_copy_ubufs`, with a page
        // allocation) before it may queue them on a socket.
        if len > VNET_HDR_LEN {
            // SAFETY: the slot holds `len` > 10 bytes from TX_DATA: the vnet header's
            // gso_type (byte 1) and hdr_len (bytes 2-3, little-endian) are inside it.
            unsafe {
                let vnet = p.add(hdr::TX_DATA);
                if vnet.add(1).read() == 0 {
                    let frame = ((len - VNET_HDR_LEN) as u16).to_le_bytes();
                    vnet.add(2).write(frame[0]);
                    vnet.add(3).write(frame[1]);
                }
            }
        }
        // SAFETY: the slot is the user's (available); `tp_len` is its second u32.
        unsafe { p.add(hdr::LEN).cast::<u32>().write_volatile(len as u32) };
        self.status(self.tx, self.tx_head)
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx_head = (self.tx_head + 1) % self.tx.frames;
        self.tx_queued.set(self.tx_queued.get() + 1);
    }

    /// Copy `data` (a vnet header, then the frame) into the next TX slot and queue it.
    /// `false` when it does not fit a slot or the ring is full.
    pub(crate) fn tx_push(&mut self, data: &[u8]) -> bool {
        if data.len() > Self::TX_ROOM {
            return false;
        }
        let Some(slot) = self.tx_slot() else {
            return false;
        };
        slot[..data.len()].copy_from_slice(data);
        self.tx_commit(data.len());
        true
    }

    /// As [`tx_push`](Self::tx_push), for `len` bytes at `start` of the head RX slot.
    pub(crate) fn tx_push_own_rx(&mut self, start: usize, len: usize) -> bool {
        if len > Self::TX_ROOM || start + len > RING_FRAME_SIZE {
            return false;
        }
        let src = self.slot_ptr(self.rx, self.rx_head);
        let Some(slot) = self.tx_slot() else {
            return false;
        };
        // SAFETY: the source is inside the head RX slot (checked above), the user's until
        // released; the destination is an available TX slot of at least `len` bytes; the
        // two are different slots of the mapping, so they do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.add(start), slot.as_mut_ptr(), len) };
        self.tx_commit(len);
        true
    }

    /// Slots queued since the last flush; taking them resets the count.
    pub(crate) fn take_queued(&self) -> u32 {
        self.tx_queued.replace(0)
    }

    /// Send every queued slot now (one system call).
    pub fn flush(&self) -> io::Result<()> {
        if self.take_queued() == 0 {
            return Ok(());
        }
        // SAFETY: a send with no data: the kernel takes the frames from the TX ring.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Take the whole frame of a slot marked copied from the socket's queue into `buf`
    /// (vnet header first), without waiting. Returns its length with the vnet header.
    pub(crate) fn recv_copy(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is writable for its length for the duration of the call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Frames the kernel dropped because the ring was full, since the last call.
    pub(crate) fn take_ring_drops(&self) -> io::Result<u32> {
        super::socket::take_drops(self.fd.as_raw_fd())
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `open` with this length and nothing borrows it
        // any more (every borrow is tied to `self`).
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

fn ring_req(frames: u32) -> libc::tpacket_req {
    let per_block = (RING_BLOCK_SIZE / RING_FRAME_SIZE) as u32;
    let blocks = frames.div_ceil(per_block);
    libc::tpacket_req {
        tp_block_size: RING_BLOCK_SIZE as u32,
        tp_block_nr: blocks,
        tp_frame_size: RING_FRAME_SIZE as u32,
        tp_frame_nr: blocks * per_block,
    }
}

fn set_ring(fd: RawFd, which: libc::c_int, req: &libc::tpacket_req, what: &str) -> io::Result<()> {
    // SAFETY: `req` lives across the call and its exact size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            which,
            (req as *const libc::tpacket_req).cast(),
            std::mem::size_of::<libc::tpacket_req>() as libc::socklen_t,
        )
    };
    check(ret, what).map(|_| ())
}

/// Start loading the cache line at `p` (a hint: never faults, changes nothing).
#[inline]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally and cannot fault, whatever `p` is;
    // SSE is part of x86_64's baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
