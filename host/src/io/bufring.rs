//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`) and the packet buffers it hands out.
//!
//! With a buffer ring, one multishot receive per socket delivers every frame into a buffer
//! the kernel takes from the ring. Keeping one request armed per socket, instead of one per
//! buffer, matters: each armed receive waits on the socket, and every arriving frame woke all
//! of them (measured here: 256 armed receives per socket cost half the packet rate).

use std::alloc::Layout;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::{IoUring, cqueue, squeue};

use crate::consts::SLOT_SIZE;

const PAGE: usize = 4096;

/// The ring of buffer descriptors shared with the kernel, and the buffers.
pub(crate) struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    mask: u16,
    tail: u16,
    bufs: Vec<u8>,
    count: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocate `count` buffers (a power of two) of `SLOT_SIZE` bytes, register them as
    /// buffer group `bgid` of `ring`, and hand all of them to the kernel.
    pub fn new(
        ring: &IoUring<squeue::Entry, cqueue::Entry>,
        count: u16,
        bgid: u16,
    ) -> io::Result<Self> {
        assert!(
            count.is_power_of_two(),
            "buffer count must be a power of two"
        );
        let ring_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            PAGE,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: the layout has a non-zero size; zeroed descriptors (tail 0) are what the
        // kernel expects of a new ring.
        let ring_ptr = unsafe { std::alloc::alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        if ring_ptr.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut br = Self {
            ring: ring_ptr,
            ring_layout,
            mask: count - 1,
            tail: 0,
            // Zero-filled lazily by the kernel: a buffer costs memory only where frames wrote.
            bufs: vec![0u8; usize::from(count) * SLOT_SIZE],
            count,
            bgid,
        };
        // SAFETY: `ring_ptr` is a page-aligned allocation of `count` descriptors that lives
        // until `self` is dropped, after the ring (and so the kernel's use of it) is gone.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_ptr as u64, count, bgid, 0)?
        };
        for bid in 0..count {
            br.give(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Return the buffer group id.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The bytes of buffer `bid`.
    pub fn buf(&mut self, bid: u16) -> &mut [u8] {
        let start = usize::from(bid % self.count) * SLOT_SIZE;
        &mut self.bufs[start..start + SLOT_SIZE]
    }

    /// Queue buffer `bid` for return to the kernel; [`publish`](Self::publish) makes it visible.
    pub fn give(&mut self, bid: u16) {
        let addr = self.buf(bid).as_mut_ptr() as u64;
        // SAFETY: the index is masked into the ring's `count` descriptors; the kernel does not
        // read descriptors past the published tail, so writing this one races with nothing.
        let e = unsafe { &mut *self.ring.add(usize::from(self.tail & self.mask)) };
        e.set_addr(addr);
        e.set_len(SLOT_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publish the buffers given back since the last call (one release store of the tail).
    pub(crate) fn publish(&self) {
        // SAFETY: the ring is initialised and its tail field is a naturally aligned u16 that
        // the kernel reads; an atomic release store orders the descriptor writes before it.
        let tail = unsafe { &*BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the owning ring was dropped first (the
        // worker declares the ring after this), so the kernel no longer reads it.
        unsafe { std::alloc::dealloc(self.ring.cast(), self.ring_layout) };
    }
}
