//! A worker: one thread, one io_uring, one packet socket per interface.
//!
//! Every buffer slot belongs to one socket and always has exactly one operation in flight:
//! a receive into it, or the send of the frame it holds. A received frame is processed in
//! place and, if the datapath says so, sent from the same buffer on the egress socket; when
//! that send completes, the slot receives again. Nothing is copied and nothing is allocated
//! per packet. All the operations that one batch of completions produces are submitted with
//! a single `io_uring_enter`, which also waits for the next completions; the thread sleeps
//! there when there is no traffic (no busy polling).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::socket::PacketSocket;
use crate::consts::{SLOT_SIZE, SLOTS_PER_SOCKET, URING_ENTRIES, VNET_HDR_LEN, WORKER_WAKE_MS};
use crate::datapath::{Datapath, DropReason, RxMeta, Verdict, stats};
use crate::service::Snapshot;
use crate::wire::vnet::VnetHeader;
use crate::xmit::nat::CsumMode;

const OP_RECV: u64 = 1 << 32;
const OP_SEND: u64 = 2 << 32;
const OP_CANCEL: u64 = 3 << 32;
const SLOT_MASK: u64 = 0xffff_ffff;

/// Everything a worker needs.
pub struct Worker {
    /// Worker number, for logs.
    pub id: usize,
    /// One socket per interface, in `--iface` order.
    pub sockets: Vec<PacketSocket>,
    /// The datapath with this worker's counters.
    pub datapath: Datapath,
    /// The published service snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// Start of the datapath clock.
    pub epoch: Instant,
}

/// Page-aligned packet buffers, allocated once per worker and zero-filled lazily by the
/// kernel, so a slot costs resident memory only for the bytes frames actually used.
struct Buffers {
    mem: Vec<u8>,
}

impl Buffers {
    fn new(slots: usize) -> Self {
        Self {
            mem: vec![0u8; slots * SLOT_SIZE],
        }
    }

    fn slot(&mut self, i: usize) -> &mut [u8] {
        &mut self.mem[i * SLOT_SIZE..(i + 1) * SLOT_SIZE]
    }
}

impl Worker {
    /// Run until the stop flag is set.
    pub fn run(self) -> io::Result<()> {
        let n_if = self.sockets.len();
        let slots = n_if * SLOTS_PER_SOCKET;
        let mut bufs = Buffers::new(slots);
        let mut ring: IoUring<squeue::Entry, cqueue::Entry> = IoUring::builder()
            .setup_cqsize((slots as u32 * 2).max(URING_ENTRIES * 2))
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(URING_ENTRIES)?;
        let fds: Vec<types::Fd> = self.sockets.iter().map(|s| types::Fd(s.as_raw_fd())).collect();
        let mut completions: Vec<(u64, i32)> = Vec::with_capacity(slots * 2);
        let mut inflight = 0usize;
        let stats = self.datapath.stats().clone();

        for slot in 0..slots {
            let e = recv_entry(&fds, &mut bufs, slot);
            push(&mut ring, &e)?;
            inflight += 1;
        }
        tracing::debug!(worker = self.id, slots, "worker started");
        let ts = types::Timespec::new()
            .sec((WORKER_WAKE_MS / 1000) as u64)
            .nsec(((WORKER_WAKE_MS % 1000) * 1_000_000) as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        while !self.stop.load(Relaxed) {
            match ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            completions.clear();
            completions.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            if completions.is_empty() {
                continue;
            }
            let snap = self.snapshot.load();
            let now = self.epoch.elapsed().as_millis() as u64;
            for &(ud, res) in &completions {
                inflight -= 1;
                let slot = (ud & SLOT_MASK) as usize;
                let next = match ud & !SLOT_MASK {
                    OP_RECV => self.on_recv(&snap, now, &fds, &mut bufs, slot, res),
                    OP_SEND => {
                        if res < 0 {
                            stats.count_drop(DropReason::TxError);
                            tracing::trace!(worker = self.id, err = -res, "send failed");
                        } else {
                            stats::bump(&stats.tx);
                        }
                        recv_entry(&fds, &mut bufs, slot)
                    }
                    _ => continue,
                };
                push(&mut ring, &next)?;
                inflight += 1;
            }
        }
        // Cancel the receives still posted and wait for every operation to end, so the kernel
        // is done with the buffers before they are freed.
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(OP_CANCEL);
        push(&mut ring, &cancel)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while inflight > 0 && Instant::now() < deadline {
            let _ = ring.submitter().submit_with_args(1, &args);
            for c in ring.completion() {
                if c.user_data() & !SLOT_MASK != OP_CANCEL {
                    inflight -= 1;
                }
            }
        }
        tracing::debug!(worker = self.id, "worker stopped");
        Ok(())
    }

    /// Handle a completed receive and return the slot's next operation.
    fn on_recv(
        &self,
        snap: &Snapshot,
        now: u64,
        fds: &[types::Fd],
        bufs: &mut Buffers,
        slot: usize,
        res: i32,
    ) -> squeue::Entry {
        let stats = self.datapath.stats();
        if res < 0 {
            tracing::trace!(worker = self.id, err = -res, "receive failed");
            return recv_entry(fds, bufs, slot);
        }
        let len = res as usize;
        if len > SLOT_SIZE {
            stats::bump(&stats.rx);
            stats.count_drop(DropReason::RxTruncated);
            return recv_entry(fds, bufs, slot);
        }
        let buf = &mut bufs.slot(slot)[..len];
        let Some(vnet) = VnetHeader::new_checked(&*buf) else {
            return recv_entry(fds, bufs, slot);
        };
        let csum = if vnet.needs_csum() { CsumMode::Partial } else { CsumMode::Complete };
        let meta = RxMeta {
            iface: (slot / SLOTS_PER_SOCKET) as u8,
            csum,
        };
        match self.datapath.process(snap, now, meta, &mut buf[VNET_HDR_LEN..]) {
            Verdict::Tx { iface } => {
                if let Some(mut h) = VnetHeader::new_checked(&mut *buf) {
                    h.prepare_tx();
                }
                let Some(fd) = fds.get(usize::from(iface)) else {
                    return recv_entry(fds, bufs, slot);
                };
                opcode::Send::new(*fd, buf.as_ptr(), len as u32)
                    .build()
                    .user_data(OP_SEND | slot as u64)
            }
            Verdict::Drop(_) | Verdict::Pass => recv_entry(fds, bufs, slot),
        }
    }
}

/// The receive operation for a slot, on the socket the slot belongs to. `MSG_TRUNC` makes the
/// result the frame's real length, so a frame larger than the slot is detected, not cut.
fn recv_entry(fds: &[types::Fd], bufs: &mut Buffers, slot: usize) -> squeue::Entry {
    let fd = fds[slot / SLOTS_PER_SOCKET];
    let buf = bufs.slot(slot);
    opcode::Recv::new(fd, buf.as_mut_ptr(), SLOT_SIZE as u32)
        .flags(libc::MSG_TRUNC)
        .build()
        .user_data(OP_RECV | slot as u64)
}

/// Queue an operation, submitting first if the submission queue is full.
fn push(ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every entry points into the worker's `Buffers`, which outlive the ring's
        // use of them: the worker cancels and reaps all operations before dropping them, and
        // each slot has at most one operation in flight.
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}
