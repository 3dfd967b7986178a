//! A worker: one thread, one io_uring, one packet socket per interface.
//!
//! Each socket has one multishot receive armed; the kernel puts every frame into a buffer
//! from the worker's provided-buffer ring ([`BufRing`]). A received frame is processed in
//! place and, if the datapath says so, sent from the same buffer on the egress socket; when
//! that send completes, the buffer goes back to the ring. Nothing is copied and nothing is
//! allocated per packet. All the operations that one batch of completions produces are
//! submitted with a single `io_uring_enter`, which also waits for the next completions; the
//! thread sleeps there when there is no traffic (no busy polling).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::bufring::BufRing;
use super::socket::{PacketSocket, StackSocket};
use crate::consts::{
    BUFFERS_PER_WORKER, QUEUE_DROPS_POLL_MS, SEG_BUFFERS, SEG_SLOT, SLOT_SIZE, URING_ENTRIES,
    VNET_HDR_LEN, WORKER_WAKE_MS,
};
use crate::datapath::{Datapath, DropReason, RxMeta, Verdict, stats};
use crate::service::Snapshot;
use crate::wire::checksum::CsumMode;
use crate::wire::vnet::VnetHeader;

const OP_RECV: u64 = 1 << 32;
const OP_SEND: u64 = 2 << 32;
const OP_CANCEL: u64 = 3 << 32;
const OP_SEG: u64 = 4 << 32;
const LOW_MASK: u64 = 0xffff_ffff;

/// Everything a worker needs.
pub struct Worker {
    /// Worker number, for logs.
    pub id: usize,
    /// One socket per interface, in `--iface` order.
    pub sockets: Vec<PacketSocket>,
    /// The way to the balancer's own stack.
    pub stack: StackSocket,
    /// The datapath with this worker's counters.
    pub datapath: Datapath,
    /// The published service snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set to stop the worker.
    pub stop: Arc<AtomicBool>,
    /// Start of the datapath clock.
    pub epoch: Instant,
}

/// The ring and the buffers it uses, dropped in that order (fields drop in declaration
/// order), so the kernel is done with the buffers before they are freed.
struct Uring {
    ring: IoUring<squeue::Entry, cqueue::Entry>,
    bufs: BufRing,
    segs: SegPool,
}

/// Transmit buffers for the segments of GSO super-packets the datapath cuts (into a
/// tunnel), allocated once: each a vnet header (zero: nothing left for the kernel) and a
/// frame of up to a jumbo MTU.
struct SegPool {
    mem: Box<[u8]>,
    free: Vec<u16>,
    /// Written and waiting to be queued: (buffer, interface, frame length).
    ready: Vec<(u16, u8, usize)>,
    /// Lent to the datapath, not sent (yet).
    lent: Option<u16>,
}

impl SegPool {
    fn new() -> Self {
        Self {
            mem: vec![0u8; usize::from(SEG_BUFFERS) * SEG_SLOT].into_boxed_slice(),
            free: (0..SEG_BUFFERS).collect(),
            ready: Vec::with_capacity(usize::from(SEG_BUFFERS)),
            lent: None,
        }
    }

    fn slot(&mut self, i: u16) -> &mut [u8] {
        let at = usize::from(i) * SEG_SLOT;
        &mut self.mem[at..at + SEG_SLOT]
    }

    /// Take back a buffer the datapath was lent but did not send.
    fn settle(&mut self) {
        if let Some(i) = self.lent.take() {
            self.free.push(i);
        }
    }
}

/// The segment pool as the datapath sees it, with the way to the own stack.
struct Sink<'a> {
    pool: &'a mut SegPool,
    stack: &'a StackSocket,
    stats: &'a crate::datapath::DatapathStats,
}

impl crate::datapath::SegmentSink for Sink<'_> {
    fn buf(&mut self) -> Option<&mut [u8]> {
        let p = &mut *self.pool;
        let i = match p.lent {
            Some(i) => i,
            None => p.free.pop()?,
        };
        p.lent = Some(i);
        let slot = p.slot(i);
        slot[..VNET_HDR_LEN].fill(0);
        Some(&mut slot[VNET_HDR_LEN..])
    }

    fn send(&mut self, iface: u8, len: usize) {
        if let Some(i) = self.pool.lent.take() {
            self.pool.ready.push((i, iface, VNET_HDR_LEN + len));
        }
    }

    fn to_stack(&mut self, daddr: std::net::Ipv4Addr, len: usize) {
        let Some(i) = self.pool.lent else { return };
        let at = VNET_HDR_LEN + crate::wire::ETHERNET_HEADER_LEN;
        let sent = self
            .pool
            .slot(i)
            .get(at..at + len)
            .map(|pkt| self.stack.send_to(pkt, daddr));
        // Sent (or not) at once: the buffer stays lent for the next segment.
        match sent {
            Some(Ok(_)) => stats::bump(&self.stats.tx),
            _ => self.stats.count_drop(DropReason::TxError),
        }
    }
}

impl Worker {
    /// Run until the stop flag is set.
    pub fn run(self) -> io::Result<()> {
        let ring: IoUring<squeue::Entry, cqueue::Entry> = IoUring::builder()
            .setup_cqsize(u32::from(BUFFERS_PER_WORKER) * 2 + URING_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(URING_ENTRIES)?;
        let bufs = BufRing::new(&ring, BUFFERS_PER_WORKER, 0)?;
        let mut u = Uring {
            ring,
            bufs,
            segs: SegPool::new(),
        };
        let fds: Vec<types::Fd> = self
            .sockets
            .iter()
            .map(|s| types::Fd(s.as_raw_fd()))
            .collect();
        let mut completions: Vec<(u64, i32, u32)> =
            Vec::with_capacity(usize::from(BUFFERS_PER_WORKER) * 2);
        let mut rearm = vec![true; fds.len()];
        let mut inflight = 0usize;
        let stats = self.datapath.stats().clone();
        let mut last_queue_poll = 0u64;

        tracing::debug!(
            worker = self.id,
            buffers = BUFFERS_PER_WORKER,
            "worker started"
        );
        let ts = types::Timespec::new()
            .sec((WORKER_WAKE_MS / 1000) as u64)
            .nsec(((WORKER_WAKE_MS % 1000) * 1_000_000) as u32);
        let args = types::SubmitArgs::new().timespec(&ts);
        while !self.stop.load(Relaxed) {
            for (i, r) in rearm.iter_mut().enumerate() {
                if std::mem::take(r) {
                    let e = opcode::RecvMulti::new(fds[i], u.bufs.bgid())
                        .flags(libc::MSG_TRUNC)
                        .build()
                        .user_data(OP_RECV | i as u64);
                    push(&mut u.ring, &e)?;
                    inflight += 1;
                }
            }
            match u.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
            let now = self.epoch.elapsed().as_millis() as u64;
            if now.saturating_sub(last_queue_poll) >= QUEUE_DROPS_POLL_MS {
                last_queue_poll = now;
                self.count_queue_drops();
            }
            completions.clear();
            completions.extend(
                u.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if completions.is_empty() {
                continue;
            }
            let snap = self.snapshot.load();
            for &(ud, res, flags) in &completions {
                let low = (ud & LOW_MASK) as usize;
                match ud & !LOW_MASK {
                    OP_RECV => {
                        if !cqueue::more(flags) {
                            // The multishot receive ended (out of buffers, or an error): arm
                            // it again in the next round.
                            inflight -= 1;
                            rearm[low] = true;
                        }
                        let Some(bid) = cqueue::buffer_select(flags) else {
                            if res < 0 && res != -libc::ENOBUFS {
                                tracing::debug!(worker = self.id, err = -res, "receive failed");
                            }
                            continue;
                        };
                        if let Some(e) =
                            self.on_recv(&snap, now, &fds, &mut u.bufs, &mut u.segs, low, bid, res)
                        {
                            push(&mut u.ring, &e)?;
                            inflight += 1;
                        } else {
                            u.bufs.give(bid);
                        }
                        u.segs.settle();
                        for (i, iface, len) in std::mem::take(&mut u.segs.ready) {
                            let Some(fd) = fds.get(usize::from(iface)) else {
                                u.segs.free.push(i);
                                continue;
                            };
                            let slot = u.segs.slot(i);
                            let e = opcode::Send::new(*fd, slot.as_ptr(), len as u32)
                                .build()
                                .user_data(OP_SEG | u64::from(i));
                            push(&mut u.ring, &e)?;
                            inflight += 1;
                        }
                    }
                    OP_SEND => {
                        inflight -= 1;
                        if res < 0 {
                            stats.count_drop(DropReason::TxError);
                            tracing::trace!(worker = self.id, err = -res, "send failed");
                        } else {
                            stats::bump(&stats.tx);
                        }
                        u.bufs.give(low as u16);
                    }
                    OP_SEG => {
                        inflight -= 1;
                        if res < 0 {
                            stats.count_drop(DropReason::TxError);
                        } else {
                            stats::bump(&stats.tx);
                        }
                        u.segs.free.push(low as u16);
                    }
                    _ => {}
                }
            }
            u.bufs.publish();
        }
        // Cancel the armed receives and wait for every operation to end, so the kernel is
        // done with the buffers before they are freed.
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(OP_CANCEL);
        push(&mut u.ring, &cancel)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while inflight > 0 && Instant::now() < deadline {
            let _ = u.ring.submitter().submit_with_args(1, &args);
            for c in u.ring.completion() {
                match c.user_data() & !LOW_MASK {
                    OP_RECV if !cqueue::more(c.flags()) => inflight -= 1,
                    OP_SEND | OP_SEG => inflight -= 1,
                    _ => {}
                }
            }
        }
        self.count_queue_drops();
        tracing::debug!(worker = self.id, "worker stopped");
        Ok(())
    }

    /// Add what the kernel dropped at the sockets' full receive queues to the drop counts.
    fn count_queue_drops(&self) {
        for s in &self.sockets {
            match s.take_queue_drops() {
                Ok(0) => {}
                Ok(n) => self
                    .datapath
                    .stats()
                    .count_drops(DropReason::RxQueueFull, u64::from(n)),
                Err(e) => tracing::debug!(worker = self.id, err = %e, "socket statistics"),
            }
        }
    }

    /// Handle a received frame in buffer `bid`; return the send to queue, if any. Without
    /// one, the caller gives the buffer back.
    #[allow(clippy::too_many_arguments)]
    fn on_recv(
        &self,
        snap: &Snapshot,
        now: u64,
        fds: &[types::Fd],
        bufs: &mut BufRing,
        segs: &mut SegPool,
        iface: usize,
        bid: u16,
        res: i32,
    ) -> Option<squeue::Entry> {
        let stats = self.datapath.stats();
        if res < 0 {
            return None;
        }
        let len = res as usize;
        if len > SLOT_SIZE {
            stats::bump(&stats.rx);
            stats.count_drop(DropReason::RxTruncated);
            return None;
        }
        let buf = &mut bufs.buf(bid)[..len];
        let vnet = VnetHeader::new_checked(&*buf)?;
        let gso_size = if vnet.gso_type() != crate::wire::vnet::GSO_NONE {
            vnet.gso_size().max(1)
        } else {
            0
        };
        if gso_size != 0 {
            stats::bump(&stats.rx_gso);
        }
        let csum = if vnet.needs_csum() {
            CsumMode::Partial
        } else {
            CsumMode::Complete
        };
        let meta = RxMeta {
            iface: iface as u8,
            csum,
            gso_size,
        };
        let slot = bufs.buf(bid);
        let mut sink = Sink {
            pool: segs,
            stack: &self.stack,
            stats,
        };
        let verdict = self.datapath.process_seg(
            snap,
            now,
            meta,
            &mut slot[VNET_HDR_LEN..],
            len - VNET_HDR_LEN,
            &mut sink,
        );
        let (iface, out_len) = match verdict {
            Verdict::Tx { iface } => {
                if let Some(mut h) = VnetHeader::new_checked(&mut *slot) {
                    h.prepare_tx();
                }
                (iface, len)
            }
            Verdict::Reply { iface, len: n } | Verdict::Whole { iface, len: n } => {
                // A packet wvs wrote whole: complete checksums, no segmentation.
                slot[..VNET_HDR_LEN].fill(0);
                (iface, VNET_HDR_LEN + n)
            }
            Verdict::Stack { daddr, len: n } => {
                // Not the fast path (a local real server, or bypass): a plain send, done
                // when it returns, so the buffer goes back at once.
                let at = VNET_HDR_LEN + crate::wire::ETHERNET_HEADER_LEN;
                let sent = slot
                    .get(at..at + n)
                    .map(|pkt| self.stack.send_to(pkt, daddr));
                match sent {
                    Some(Ok(_)) => stats::bump(&stats.tx),
                    Some(Err(e)) => {
                        stats.count_drop(DropReason::TxError);
                        tracing::trace!(worker = self.id, err = %e, "send to the stack failed");
                    }
                    None => stats.count_drop(DropReason::TxError),
                }
                return None;
            }
            Verdict::Drop(_) | Verdict::Pass | Verdict::Segmented { .. } => return None,
        };
        let fd = fds.get(usize::from(iface))?;
        Some(
            opcode::Send::new(*fd, slot.as_ptr(), out_len as u32)
                .build()
                .user_data(OP_SEND | u64::from(bid)),
        )
    }
}

/// Queue an operation, submitting first if the submission queue is full.
fn push(ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every entry points into the worker's buffer ring, which outlives the ring's
        // use of it (see `Uring`), and a buffer is in at most one operation at a time: the
        // kernel's receive until it completes, then our send until it completes.
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}
