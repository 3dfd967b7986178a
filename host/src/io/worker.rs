//! A worker: one thread, one io_uring, and per interface the way frames come in and go out,
//! which is the backend's (`wvs run --io`):
//!
//! - `ring` (the default): a packet socket with an RX and a TX ring ([`PacketRing`]). A
//!   multishot poll on each socket wakes the worker; it takes every frame the rings hold
//!   (up to a batch per ring), processes each in its slot, copies what is to be sent into a
//!   TX slot, and sends each TX ring's batch with one send, queued on the io_uring with the
//!   wait for the next wake-up (one `io_uring_enter` per round).
//! - `uring`: a plain packet socket with one multishot receive armed; the kernel puts every
//!   frame into a buffer of the worker's provided-buffer ring ([`BufRing`]), which is
//!   processed in place and sent from the same buffer; when that send completes, the buffer
//!   goes back to the ring.
//! - `xdp`: per receive queue of each interface an AF_XDP socket ([`Xsk`]), split over the
//!   workers, woken by a multishot poll as the ring backend is; frames are processed in
//!   their UMEM chunk and copied into the TX rings of send-only packet sockets, which are
//!   flushed as under `ring`.
//!
//! Nothing is allocated per packet. The thread sleeps in `io_uring_enter` when there is no
//! traffic (no busy polling), waking at least every `WORKER_WAKE_MS` to see the stop flag.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::bufring::BufRing;
use super::ring::PacketRing;
use super::socket::{PacketSocket, StackSocket};
use super::xdp::{XdpPassed, Xsk};
use crate::consts::{
    BUFFERS_PER_WORKER, QUEUE_DROPS_POLL_MS, RING_BATCH, SEG_BUFFERS, SEG_SLOT, SLOT_SIZE,
    URING_ENTRIES, VNET_HDR_LEN, WORKER_WAKE_MS,
};
use crate::datapath::{
    Datapath, DatapathStats, DropReason, Headers, Offloads, RxMeta, SegmentTo, Verdict, stats,
};
use crate::service::Snapshot;
use crate::wire::checksum::CsumMode;
use crate::wire::vnet::VnetHeader;

/// What an io_uring operation of a worker is, as its user data carries it: the kind in
/// the high 32 bits, its object in the low ones (a buffer, a segment slot, a port; for a
/// receive or a poll the interface in the low 16 bits and its sockets' generation above,
/// so that a completion of a replaced socket's operation is told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// A multishot receive on interface `iface` (uring).
    Recv { iface: usize, gen_: u16 },
    /// The send of receive buffer `bid` (uring).
    Send { bid: u16 },
    /// A cancellation.
    Cancel,
    /// The send of segment slot `slot` (uring).
    Seg { slot: u16 },
    /// A multishot poll of socket `iface` (ring, xdp).
    Poll { iface: usize, gen_: u16 },
    /// A TX ring's flush on port `port` (ring, xdp).
    Flush { port: usize },
}

impl Op {
    const RECV: u64 = 1;
    const SEND: u64 = 2;
    const CANCEL: u64 = 3;
    const SEG: u64 = 4;
    const POLL: u64 = 5;
    const FLUSH: u64 = 6;
    const IFACE_MASK: u64 = 0xffff;

    fn encode(self) -> u64 {
        let iface = |i: usize, g: u16| (u64::from(g) << 16) | (i as u64 & Self::IFACE_MASK);
        let (kind, low) = match self {
            Self::Recv { iface: i, gen_ } => (Self::RECV, iface(i, gen_)),
            Self::Send { bid } => (Self::SEND, u64::from(bid)),
            Self::Cancel => (Self::CANCEL, 0),
            Self::Seg { slot } => (Self::SEG, u64::from(slot)),
            Self::Poll { iface: i, gen_ } => (Self::POLL, iface(i, gen_)),
            Self::Flush { port } => (Self::FLUSH, port as u64 & 0xffff_ffff),
        };
        kind << 32 | low
    }

    fn decode(ud: u64) -> Option<Self> {
        let low = ud & 0xffff_ffff;
        let (iface, gen_) = ((low & Self::IFACE_MASK) as usize, (low >> 16) as u16);
        Some(match ud >> 32 {
            Self::RECV => Self::Recv { iface, gen_ },
            Self::SEND => Self::Send { bid: low as u16 },
            Self::CANCEL => Self::Cancel,
            Self::SEG => Self::Seg { slot: low as u16 },
            Self::POLL => Self::Poll { iface, gen_ },
            Self::FLUSH => Self::Flush { port: low as usize },
            _ => return None,
        })
    }
}

/// Cancel every operation on `ring` and wait (at most 2 s) for the `inflight` ones to end,
/// so that the kernel is done with the buffers before they are freed. `ends` says whether
/// a completion ends an operation that counted.
fn cancel_all(
    ring: &mut IoUring<squeue::Entry, cqueue::Entry>,
    args: &types::SubmitArgs<'_, '_>,
    mut inflight: usize,
    ends: impl Fn(Option<Op>, u32) -> bool,
) -> io::Result<()> {
    let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
        .build()
        .user_data(Op::Cancel.encode());
    push(ring, &cancel)?;
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    while inflight > 0 && Instant::now() < deadline {
        let _ = ring.submitter().submit_with_args(1, args);
        for c in ring.completion() {
            if ends(Op::decode(c.user_data()), c.flags()) {
                inflight -= 1;
            }
        }
    }
    Ok(())
}

/// Sockets for an interface that was created again, for one worker to take.
pub(crate) enum NewPort {
    /// `--io ring`.
    Ring(RingPort),
    /// `--io uring`.
    Uring(PacketSocket),
    /// `--io xdp`: where the interface's frames leave, and the XDP sockets of those of its
    /// receive queues this worker reads (perhaps none).
    Xdp {
        /// The sending socket.
        tx: RingPort,
        /// The XDP sockets.
        xsks: Vec<Xsk>,
    },
}

/// Where the control thread leaves a worker the new sockets of an interface that returned;
/// the worker looks once per round (one atomic load), not per frame.
#[derive(Default)]
pub(crate) struct Mailbox {
    pending: AtomicBool,
    ports: parking_lot::Mutex<Vec<(usize, NewPort)>>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

impl Mailbox {
    /// Leave the sockets of interface `iface` for the worker.
    pub fn post(&self, iface: usize, port: NewPort) {
        self.ports.lock().push((iface, port));
        self.pending
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn take(&self) -> Vec<(usize, NewPort)> {
        if !self
            .pending
            .swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return Vec::new();
        }
        std::mem::take(&mut *self.ports.lock())
    }
}

/// Everything a worker needs.
pub(crate) struct Worker {
    /// Worker number, for logs.
    pub id: usize,
    /// The way frames come and go, one port per interface in `--iface` order.
    pub ports: Ports,
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
    /// New sockets for an interface that returned.
    pub mail: Arc<Mailbox>,
}

/// A worker's interfaces, per backend.
pub(crate) enum Ports {
    /// `--io ring`: per interface, a socket with packet rings, and a plain socket for what
    /// does not fit a TX slot.
    Ring(Vec<RingPort>),
    /// `--io uring`: per interface, a plain packet socket.
    Uring(Vec<PacketSocket>),
    /// `--io xdp`: the worker's XDP sockets (some queues of some interfaces), and per
    /// interface a send-only socket with a TX ring.
    Xdp {
        /// The XDP sockets this worker reads.
        xsks: Vec<Xsk>,
        /// The XDP program's count of frames it passed to the kernel (one worker reads it
        /// into its `passed` counter).
        passed: Option<XdpPassed>,
        /// Per interface, where frames leave (the rings have no RX ring).
        tx: Vec<RingPort>,
    },
}

/// One interface of the ring backend.
pub(crate) struct RingPort {
    /// The socket with the RX and TX rings, in the interface's fanout group.
    pub ring: PacketRing,
    /// A send-only socket for frames larger than a TX slot, or when the TX ring is full.
    pub tx: PacketSocket,
}

/// The ring and the buffers it uses, dropped in that order (fields drop in declaration
/// order), so the kernel is done with the buffers before they are freed.
struct Uring {
    ring: IoUring<squeue::Entry, cqueue::Entry>,
    bufs: BufRing,
    segs: SegPool,
}

/// The io_uring backend's loop state: the ring, the sockets and what is armed on them.
struct UringLoop {
    u: Uring,
    sockets: Vec<PacketSocket>,
    fds: Vec<types::Fd>,
    /// Each interface's sockets' generation (a replaced socket's completions are told
    /// apart).
    gens: Vec<u16>,
    /// The interfaces whose receive is to be armed (again).
    rearm: Vec<bool>,
    /// Operations submitted and not ended.
    inflight: usize,
    /// The last round's completions (user data, result, flags), kept for its capacity.
    completions: Vec<(u64, i32, u32)>,
}

impl UringLoop {
    /// Arm a multishot receive on every interface that needs one.
    fn arm(&mut self) -> io::Result<()> {
        for (i, r) in self.rearm.iter_mut().enumerate() {
            if std::mem::take(r) {
                let e = opcode::RecvMulti::new(self.fds[i], self.u.bufs.bgid())
                    .flags(libc::MSG_TRUNC)
                    .build()
                    .user_data(
                        Op::Recv {
                            iface: i,
                            gen_: self.gens[i],
                        }
                        .encode(),
                    );
                push(&mut self.u.ring, &e)?;
                self.inflight += 1;
            }
        }
        Ok(())
    }

    /// Send the segments the datapath cut from the last frame.
    fn send_segments(
        &mut self,
        stack: &StackSocket,
        stats: &crate::datapath::DatapathStats,
    ) -> io::Result<()> {
        self.u.segs.settle(stack, stats);
        for (i, to, len) in std::mem::take(&mut self.u.segs.ready) {
            let SegmentTo::Iface(iface) = to else {
                continue;
            };
            let Some(fd) = self.fds.get(usize::from(iface)) else {
                self.u.segs.free.push(i);
                continue;
            };
            let slot = self.u.segs.slot(i);
            let e = opcode::Send::new(*fd, slot.as_ptr(), len as u32)
                .build()
                .user_data(Op::Seg { slot: i }.encode());
            push(&mut self.u.ring, &e)?;
            self.inflight += 1;
        }
        Ok(())
    }
}

/// The ring and XDP backends' loop state.
struct RingLoop {
    ring: IoUring<squeue::Entry, cqueue::Entry>,
    /// Each interface's rings (with XDP, only their TX side is used).
    ports: Vec<RingPort>,
    /// `--io xdp`: this worker's XDP sockets, and the program's passed-frame counter.
    xsks: Option<Vec<Xsk>>,
    passed: Option<XdpPassed>,
    segs: SegPool,
    /// A frame too large for a slot comes whole off the socket into this buffer.
    big: Box<[u8]>,
    /// The headers of a batch's frames, read once before it is processed (for the
    /// prefetch, the checksum detection and the datapath).
    heads: Vec<Headers>,
    /// What is polled: the RX rings, or the XDP sockets.
    fds: Vec<types::Fd>,
    rearm: Vec<bool>,
    gens: Vec<u16>,
    /// With --io xdp: the generation of every XDP socket's poll (renewed together).
    xdp_gen: u16,
    inflight: usize,
}

impl RingLoop {
    /// A multishot poll on every socket that needs one.
    fn arm(&mut self) -> io::Result<()> {
        for (i, r) in self.rearm.iter_mut().enumerate() {
            if std::mem::take(r) {
                let e = opcode::PollAdd::new(self.fds[i], libc::POLLIN as u32)
                    .multi(true)
                    .build()
                    .user_data(
                        Op::Poll {
                            iface: i,
                            gen_: self.gens[i],
                        }
                        .encode(),
                    );
                push(&mut self.ring, &e)?;
                self.inflight += 1;
            }
        }
        Ok(())
    }

    /// Each TX ring's batch is sent by the same io_uring_enter that waits for the next
    /// frames: a send with no data makes the kernel take the queued slots.
    fn flush_tx(&mut self) -> io::Result<()> {
        for (i, p) in self.ports.iter().enumerate() {
            if p.ring.take_queued() > 0 {
                let e = opcode::Send::new(types::Fd(p.ring.as_raw_fd()), std::ptr::null(), 0)
                    .flags(libc::MSG_DONTWAIT)
                    .build()
                    .user_data(Op::Flush { port: i }.encode());
                push(&mut self.ring, &e)?;
                self.inflight += 1;
            }
        }
        Ok(())
    }
}

/// Transmit buffers for the segments of GSO super-packets the datapath cuts (into a
/// tunnel), allocated once: each a vnet header (zero: nothing left for the kernel) and a
/// frame of up to a jumbo MTU.
/// A received frame as [`Worker::handle`] takes it: `len` bytes, its vnet header first,
/// from interface `iface`, with its headers when the batch read them already.
struct Arrived {
    len: usize,
    iface: usize,
    headers: Option<Headers>,
}

struct SegPool {
    mem: Box<[u8]>,
    free: Vec<u16>,
    /// Written and waiting to be sent: (buffer, where to, length as the datapath gave it).
    ready: Vec<(u16, SegmentTo, usize)>,
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

    /// Take back a buffer the datapath was lent but did not mark, and hand the segments
    /// for the balancer's own stack to it (a raw socket's send is synchronous); what is
    /// left in `ready` goes out of interfaces: (buffer, interface, frame length).
    fn settle(&mut self, stack: &StackSocket, stats: &crate::datapath::DatapathStats) {
        if let Some(i) = self.lent.take() {
            self.free.push(i);
        }
        // In order: a super-packet's segments reach the stack as they were cut.
        let mut ready = std::mem::take(&mut self.ready);
        ready.retain(|&(i, to, len)| {
            let SegmentTo::Stack(daddr) = to else {
                return true;
            };
            let at = VNET_HDR_LEN + crate::wire::ETHERNET_HEADER_LEN;
            match self
                .slot(i)
                .get(at..at + len)
                .map(|p| stack.send_to(p, daddr))
            {
                Some(Ok(_)) => stats::bump(&stats.tx),
                _ => stats.count_drop(DropReason::TxError),
            }
            self.free.push(i);
            false
        });
        self.ready = ready;
    }
}

/// The segment pool as the datapath sees it.
struct Sink<'a> {
    pool: &'a mut SegPool,
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

    fn send(&mut self, to: SegmentTo, len: usize) {
        if let Some(i) = self.pool.lent.take() {
            let len = match to {
                SegmentTo::Iface(_) => VNET_HDR_LEN + len,
                SegmentTo::Stack(_) => len,
            };
            self.pool.ready.push((i, to, len));
        }
    }
}

/// What the one event loop ([`Worker::drive`]) drives: the io_uring backend
/// ([`UringLoop`]) or the packet-ring one ([`RingLoop`], with XDP sockets or not).
trait Backend {
    /// Its name in logs.
    fn name(&self) -> &'static str;
    /// The ring the loop waits on.
    fn ring(&self) -> &IoUring<squeue::Entry, cqueue::Entry>;
    /// Take the new sockets of interfaces that returned.
    fn take_mail(&mut self, w: &Worker) -> io::Result<()>;
    /// Arm what ended and queue what is to be sent, for the next wait.
    fn prepare(&mut self) -> io::Result<()>;
    /// Handle what completed and what arrived; whether frames were left waiting.
    fn step(&mut self, w: &Worker, now: u64) -> io::Result<bool>;
    /// Add what the kernel dropped to the drop counts.
    fn count_drops(&mut self, w: &Worker);
    /// Cancel what is in flight and wait for it to end; count the last drops.
    fn finish(&mut self, w: &Worker, args: &types::SubmitArgs<'_, '_>) -> io::Result<()>;
}

impl UringLoop {
    fn new(sockets: Vec<PacketSocket>) -> io::Result<Self> {
        let ring: IoUring<squeue::Entry, cqueue::Entry> = IoUring::builder()
            .setup_cqsize(u32::from(BUFFERS_PER_WORKER) * 2 + URING_ENTRIES)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(URING_ENTRIES)?;
        let bufs = BufRing::new(&ring, BUFFERS_PER_WORKER, 0)?;
        let n = sockets.len();
        Ok(Self {
            u: Uring {
                ring,
                bufs,
                segs: SegPool::new(),
            },
            fds: sockets.iter().map(|s| types::Fd(s.as_raw_fd())).collect(),
            sockets,
            gens: vec![0u16; n],
            rearm: vec![true; n],
            inflight: 0,
            completions: Vec::with_capacity(usize::from(BUFFERS_PER_WORKER) * 2),
        })
    }
}

impl Backend for UringLoop {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn ring(&self) -> &IoUring<squeue::Entry, cqueue::Entry> {
        &self.u.ring
    }

    fn take_mail(&mut self, w: &Worker) -> io::Result<()> {
        w.uring_mail(self)
    }

    fn prepare(&mut self) -> io::Result<()> {
        self.arm()
    }

    fn step(&mut self, w: &Worker, now: u64) -> io::Result<bool> {
        let mut completions = std::mem::take(&mut self.completions);
        completions.clear();
        completions.extend(
            self.u
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        if !completions.is_empty() {
            let snap = w.snapshot.load();
            for &c in &completions {
                w.uring_completion(self, &snap, now, c)?;
            }
            self.u.bufs.publish();
        }
        self.completions = completions;
        Ok(false)
    }

    fn count_drops(&mut self, w: &Worker) {
        w.count_queue_drops(
            DropReason::RxQueueFull,
            self.sockets.iter().map(|s| s.take_queue_drops()),
        );
    }

    fn finish(&mut self, w: &Worker, args: &types::SubmitArgs<'_, '_>) -> io::Result<()> {
        // The armed receives and the sends end before the buffers are freed.
        cancel_all(
            &mut self.u.ring,
            args,
            self.inflight,
            |op, flags| match op {
                Some(Op::Recv { .. }) => !cqueue::more(flags),
                Some(Op::Send { .. } | Op::Seg { .. }) => true,
                _ => false,
            },
        )?;
        self.count_drops(w);
        Ok(())
    }
}

impl RingLoop {
    /// The loop state of the ring backend, and of the XDP backend with `xdp` given: frames
    /// then come from the XDP sockets, and `ports` only send.
    fn new(ports: Vec<RingPort>, xdp: Option<(Vec<Xsk>, Option<XdpPassed>)>) -> io::Result<Self> {
        let (xsks, passed) = match xdp {
            Some((x, p)) => (Some(x), p),
            None => (None, None),
        };
        let ring: IoUring<squeue::Entry, cqueue::Entry> = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(URING_ENTRIES)?;
        // What wakes the worker: the RX rings, or the XDP sockets.
        let fds: Vec<types::Fd> = match &xsks {
            Some(x) => x.iter().map(|x| types::Fd(x.as_raw_fd())).collect(),
            None => ports
                .iter()
                .map(|p| types::Fd(p.ring.as_raw_fd()))
                .collect(),
        };
        let n = fds.len();
        Ok(Self {
            ring,
            ports,
            xsks,
            passed,
            segs: SegPool::new(),
            big: vec![0u8; SLOT_SIZE].into_boxed_slice(),
            heads: Vec::with_capacity(RING_BATCH as usize),
            fds,
            rearm: vec![true; n],
            gens: vec![0u16; n],
            xdp_gen: 0,
            inflight: 0,
        })
    }
}

impl Backend for RingLoop {
    fn name(&self) -> &'static str {
        if self.xsks.is_some() { "xdp" } else { "ring" }
    }

    fn ring(&self) -> &IoUring<squeue::Entry, cqueue::Entry> {
        &self.ring
    }

    fn take_mail(&mut self, w: &Worker) -> io::Result<()> {
        w.ring_mail(self)
    }

    fn prepare(&mut self) -> io::Result<()> {
        self.arm()?;
        self.flush_tx()
    }

    fn step(&mut self, w: &Worker, now: u64) -> io::Result<bool> {
        w.ring_completions(self);
        let snap = w.snapshot.load();
        Ok(w.drain_all(&snap, now, self))
    }

    fn count_drops(&mut self, w: &Worker) {
        w.count_ring_drops(&self.ports, self.xsks.as_deref_mut());
        w.count_xdp_passed(self.passed.as_mut());
    }

    fn finish(&mut self, w: &Worker, args: &types::SubmitArgs<'_, '_>) -> io::Result<()> {
        for p in &self.ports {
            let _ = p.ring.flush();
        }
        cancel_all(&mut self.ring, args, self.inflight, |op, flags| match op {
            Some(Op::Poll { .. }) => !cqueue::more(flags),
            Some(Op::Flush { .. }) => true,
            _ => false,
        })?;
        self.count_drops(w);
        Ok(())
    }
}

impl Worker {
    /// Run until the stop flag is set: the backend its ports are for, driven by [`drive`].
    ///
    /// [`drive`]: Self::drive
    pub fn run(mut self) -> io::Result<()> {
        match std::mem::replace(&mut self.ports, Ports::Uring(Vec::new())) {
            Ports::Ring(ports) => self.drive(RingLoop::new(ports, None)?),
            Ports::Uring(sockets) => self.drive(UringLoop::new(sockets)?),
            Ports::Xdp { xsks, passed, tx } => self.drive(RingLoop::new(tx, Some((xsks, passed)))?),
        }
    }

    /// The one event loop: new sockets in, what ended armed again, one wait in the kernel
    /// (which also sends what was queued), then what completed and arrived handled, the
    /// kernel's drop counters read every `QUEUE_DROPS_POLL_MS`; at the stop, everything in
    /// flight cancelled before the buffers go.
    fn drive(&self, mut b: impl Backend) -> io::Result<()> {
        tracing::debug!(worker = self.id, io = b.name(), "worker started");
        let ts = wake_interval();
        let args = types::SubmitArgs::new().timespec(&ts);
        let mut last_queue_poll = 0u64;
        let mut more = false;
        while !self.stop.load(Relaxed) {
            b.take_mail(self)?;
            b.prepare()?;
            // With frames left (a full batch was taken), do not wait.
            enter(b.ring(), usize::from(!more), &args)?;
            let now = self.epoch.elapsed().as_millis() as u64;
            if now.saturating_sub(last_queue_poll) >= QUEUE_DROPS_POLL_MS {
                last_queue_poll = now;
                b.count_drops(self);
            }
            more = b.step(self, now)?;
        }
        b.finish(self, &args)?;
        tracing::debug!(worker = self.id, "worker stopped");
        Ok(())
    }

    /// New sockets for a returning interface: the old one's receive is cancelled, and
    /// the new one's armed under a new generation.
    fn uring_mail(&self, st: &mut UringLoop) -> io::Result<()> {
        for (i, port) in self.mail.take() {
            let NewPort::Uring(sock) = port else { continue };
            let Some(g) = st.gens.get_mut(i) else {
                continue;
            };
            let cancel = opcode::AsyncCancel::new(Op::Recv { iface: i, gen_: *g }.encode())
                .build()
                .user_data(Op::Cancel.encode());
            push(&mut st.u.ring, &cancel)?;
            *g = g.wrapping_add(1);
            st.fds[i] = types::Fd(sock.as_raw_fd());
            st.sockets[i] = sock;
            st.rearm[i] = true;
            tracing::debug!(
                worker = self.id,
                iface = i,
                "new socket for a returning interface"
            );
        }
        Ok(())
    }

    /// One completion: a received frame handled (and its send, or its buffer given back),
    /// the segments cut from it sent; a send's buffer or segment slot given back.
    fn uring_completion(
        &self,
        st: &mut UringLoop,
        snap: &Snapshot,
        now: u64,
        (ud, res, flags): (u64, i32, u32),
    ) -> io::Result<()> {
        let stats = self.datapath.stats();
        match Op::decode(ud) {
            Some(Op::Recv { iface, gen_: g }) => {
                if !cqueue::more(flags) {
                    // The multishot receive ended (out of buffers, or an error): arm it
                    // again in the next round, unless its socket was replaced.
                    st.inflight -= 1;
                    if st.gens.get(iface) == Some(&g) {
                        st.rearm[iface] = true;
                    }
                }
                let Some(bid) = cqueue::buffer_select(flags) else {
                    if res < 0 && res != -libc::ENOBUFS {
                        tracing::debug!(worker = self.id, err = -res, "receive failed");
                    }
                    return Ok(());
                };
                if let Some(e) = self.on_recv(snap, now, &st.fds, &mut st.u, (iface, bid, res)) {
                    push(&mut st.u.ring, &e)?;
                    st.inflight += 1;
                } else {
                    st.u.bufs.give(bid);
                }
                st.send_segments(&self.stack, stats)?;
            }
            Some(Op::Send { bid }) => {
                st.inflight -= 1;
                if res < 0 {
                    stats.count_drop(DropReason::TxError);
                    tracing::trace!(worker = self.id, err = -res, "send failed");
                } else {
                    stats::bump(&stats.tx);
                }
                st.u.bufs.give(bid);
            }
            Some(Op::Seg { slot }) => {
                st.inflight -= 1;
                if res < 0 {
                    stats.count_drop(DropReason::TxError);
                } else {
                    stats::bump(&stats.tx);
                }
                st.u.segs.free.push(slot);
            }
            _ => {}
        }
        Ok(())
    }

    /// New sockets for a returning interface. XDP: the polls are per XDP socket, and
    /// their number may change: all are cancelled and the new set polled, under a
    /// generation none of the old polls has (so their ends re-arm nothing). Ring: that
    /// interface's poll moves to the new ring.
    fn ring_mail(&self, st: &mut RingLoop) -> io::Result<()> {
        for (i, port) in self.mail.take() {
            match (port, st.xsks.as_mut()) {
                (NewPort::Xdp { tx, xsks: new }, Some(have)) if i < st.ports.len() => {
                    for (k, g) in st.gens.iter().enumerate() {
                        let cancel =
                            opcode::AsyncCancel::new(Op::Poll { iface: k, gen_: *g }.encode())
                                .build()
                                .user_data(Op::Cancel.encode());
                        push(&mut st.ring, &cancel)?;
                    }
                    st.ports[i] = tx;
                    have.retain(|x| usize::from(x.port) != i);
                    have.extend(new);
                    st.xdp_gen = st.xdp_gen.wrapping_add(1);
                    st.fds = have.iter().map(|x| types::Fd(x.as_raw_fd())).collect();
                    st.gens = vec![st.xdp_gen; st.fds.len()];
                    st.rearm = vec![true; st.fds.len()];
                    tracing::debug!(
                        worker = self.id,
                        iface = i,
                        queues = ?have.iter().map(|x| (x.port, x.queue)).collect::<Vec<_>>(),
                        "new XDP sockets for a returning interface"
                    );
                }
                (NewPort::Ring(p), None) => {
                    let Some(g) = st.gens.get_mut(i) else {
                        continue;
                    };
                    let cancel = opcode::AsyncCancel::new(Op::Poll { iface: i, gen_: *g }.encode())
                        .build()
                        .user_data(Op::Cancel.encode());
                    push(&mut st.ring, &cancel)?;
                    *g = g.wrapping_add(1);
                    st.fds[i] = types::Fd(p.ring.as_raw_fd());
                    st.ports[i] = p;
                    st.rearm[i] = true;
                    tracing::debug!(
                        worker = self.id,
                        iface = i,
                        "new sockets for a returning interface"
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The polls that ended (to be armed again unless their socket was replaced) and the
    /// flushes.
    fn ring_completions(&self, st: &mut RingLoop) {
        // One at a time: the handler needs the loop state the queue is borrowed from (these
        // are few, a poll's end or a flush, never one per frame).
        loop {
            let Some(c) = st.ring.completion().next() else {
                break;
            };
            self.ring_completion(st, (c.user_data(), c.result(), c.flags()));
        }
    }

    /// One completion of the ring or XDP backend's io_uring (`user_data`, result, flags):
    /// a multishot poll that ended is armed again unless its socket was replaced since; a
    /// TX ring's flush is over.
    fn ring_completion(&self, st: &mut RingLoop, (user_data, res, flags): (u64, i32, u32)) {
        match Op::decode(user_data) {
            Some(Op::Poll { iface: i, gen_: g }) if !cqueue::more(flags) => {
                st.inflight -= 1;
                if st.gens.get(i) == Some(&g)
                    && let Some(r) = st.rearm.get_mut(i)
                {
                    *r = true;
                }
                if res < 0 {
                    tracing::debug!(worker = self.id, err = -res, "poll failed");
                }
            }
            Some(Op::Flush { .. }) => {
                st.inflight -= 1;
                if res < 0 {
                    tracing::trace!(worker = self.id, err = -res, "ring send failed");
                }
            }
            _ => {}
        }
    }

    /// Take a batch of frames from every XDP socket or RX ring; whether one was left with
    /// more (then the next wait does not block).
    fn drain_all(&self, snap: &Snapshot, now: u64, st: &mut RingLoop) -> bool {
        let mut more = false;
        match st.xsks.as_deref_mut() {
            Some(xsks) => {
                for x in xsks {
                    more |=
                        self.drain_xsk(snap, now, x, &mut st.ports, &mut st.segs, &mut st.heads);
                }
            }
            None => {
                for i in 0..st.ports.len() {
                    let scratch = (&mut st.segs, &mut st.big[..], &mut st.heads);
                    more |= self.drain_ring(snap, now, &mut st.ports, i, scratch);
                }
            }
        }
        more
    }

    /// Add the frames the XDP program passed to the kernel to the `passed` count.
    fn count_xdp_passed(&self, passed: Option<&mut XdpPassed>) {
        if let Some(p) = passed {
            match p.take() {
                Ok(n) => {
                    self.datapath
                        .stats()
                        .passed
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::debug!(worker = self.id, err = %e, "XDP pass count"),
            }
        }
    }

    /// Add what the kernel dropped at full RX rings (or XDP sockets) to the drop counts.
    fn count_ring_drops(&self, ports: &[RingPort], xsks: Option<&mut [Xsk]>) {
        let Some(xsks) = xsks else {
            self.count_queue_drops(
                DropReason::RxRingFull,
                ports.iter().map(|p| p.ring.take_ring_drops()),
            );
            return;
        };
        let stats = self.datapath.stats();
        for x in xsks {
            match x.take_drops() {
                Ok((full, other)) => {
                    if full > 0 {
                        stats.count_drops(DropReason::RxRingFull, full);
                    }
                    if other > 0 {
                        stats.count_drops(DropReason::XskRxDropped, other);
                    }
                }
                Err(e) => tracing::debug!(worker = self.id, err = %e, "XDP socket statistics"),
            }
        }
    }

    /// Process up to `RING_BATCH` frames of XDP socket `x`; returns whether frames are left
    /// in it. As [`drain_ring`](Self::drain_ring): the batch's headers and connection-table
    /// shards are prefetched first. Each frame is processed in its chunk (a vnet header
    /// written before it, which the kernel left room for), copied into a TX slot, and its
    /// chunk goes back to the fill ring.
    fn drain_xsk(
        &self,
        snap: &Snapshot,
        now: u64,
        x: &mut Xsk,
        ports: &mut [RingPort],
        segs: &mut SegPool,
        heads: &mut Vec<Headers>,
    ) -> bool {
        let stats = self.datapath.stats();
        let ready = x.rx_ready(RING_BATCH);
        if ready == 0 {
            return false;
        }
        heads.clear();
        if ready > 1 {
            for k in 0..ready {
                let b = x.rx_bytes(k);
                super::ring::prefetch(b.as_ptr());
                super::ring::prefetch(b.as_ptr().wrapping_add(64));
            }
            for k in 0..ready {
                let h = Headers::parse(x.rx_bytes(k));
                if let Some(hint) = self.datapath.lookup_hint(&h) {
                    hint.iter().for_each(|&p| super::ring::prefetch(p));
                }
                heads.push(h);
            }
        }
        let iface = usize::from(x.port);
        for k in 0..ready {
            let f = x.rx_frame(k);
            if f.len == 0 {
                stats::bump(&stats.rx);
                stats.count_drop(DropReason::RxTruncated);
            } else {
                let buf = x.frame_buf(&f);
                let len = VNET_HDR_LEN + f.len;
                let headers = heads
                    .get(k as usize)
                    .copied()
                    .unwrap_or_else(|| Headers::parse(&buf[VNET_HDR_LEN..len]));
                let partial = super::xdp::partial_csum(&headers, &buf[VNET_HDR_LEN..len]);
                if let Some(mut h) = VnetHeader::new_checked(&mut *buf) {
                    h.set_plain(partial);
                }
                let rx = Arrived {
                    len,
                    iface,
                    headers: Some(headers),
                };
                if let Some((e, out)) = self.handle(snap, now, buf, rx, segs) {
                    let e = usize::from(e);
                    let data = &buf[..out];
                    if ports.get_mut(e).is_some_and(|p| p.ring.tx_push(data)) {
                        stats::bump(&stats.tx);
                    } else {
                        self.send_plain(ports, e, data);
                    }
                }
                self.send_segments(ports, segs);
            }
            x.fill_push(f.chunk);
        }
        x.rx_release(ready);
        x.fill_commit();
        ready == RING_BATCH && x.rx_ready(1) > 0
    }

    /// Process up to `RING_BATCH` frames of port `i`'s RX ring; returns whether frames are
    /// left in it. The batch's frames and the connection-table shards they will lock are
    /// prefetched first, so those loads overlap instead of stalling one packet at a time.
    fn drain_ring(
        &self,
        snap: &Snapshot,
        now: u64,
        ports: &mut [RingPort],
        i: usize,
        (segs, big, heads): (&mut SegPool, &mut [u8], &mut Vec<Headers>),
    ) -> bool {
        let stats = self.datapath.stats();
        let mut ready = 0;
        while ready < RING_BATCH && ports[i].ring.rx_prefetch(ready) {
            ready += 1;
        }
        if ready == 0 {
            return false;
        }
        heads.clear();
        if ready > 1 {
            for k in 0..ready {
                let h = Headers::parse(ports[i].ring.rx_frame_at(k));
                if let Some(hint) = self.datapath.lookup_hint(&h) {
                    hint.iter().for_each(|&p| super::ring::prefetch(p));
                }
                heads.push(h);
            }
        }
        for k in 0..ready as usize {
            let Some(f) = ports[i].ring.rx_peek() else {
                break;
            };
            if f.copied {
                // The whole frame is on the socket, in the order of the slots.
                let got = ports[i].ring.recv_copy(big);
                ports[i].ring.rx_release();
                match got {
                    Ok(len) => {
                        // Read whole now: the slot held only its start.
                        let rx = Arrived {
                            len,
                            iface: i,
                            headers: None,
                        };
                        if let Some((e, out)) = self.handle(snap, now, big, rx, segs) {
                            self.send_plain(ports, usize::from(e), &big[..out]);
                        }
                    }
                    Err(e) => {
                        stats::bump(&stats.rx);
                        stats.count_drop(DropReason::RxTruncated);
                        tracing::debug!(worker = self.id, err = %e, "copied frame missing");
                    }
                }
            } else if f.snaplen < f.len || f.snaplen == 0 {
                // Too large for the slot and not copied (the socket's buffer was full).
                ports[i].ring.rx_release();
                stats::bump(&stats.rx);
                stats.count_drop(DropReason::RxTruncated);
            } else {
                let start = f.mac - VNET_HDR_LEN;
                let len = VNET_HDR_LEN + f.snaplen;
                let rx = Arrived {
                    len,
                    iface: i,
                    headers: heads.get(k).copied(),
                };
                let out = {
                    let slot = &mut ports[i].ring.rx_slot()[start..];
                    self.handle(snap, now, slot, rx, segs)
                };
                if let Some((e, out_len)) = out {
                    self.send_from_rx(ports, i, usize::from(e), start, out_len);
                }
                ports[i].ring.rx_release();
            }
            self.send_segments(ports, segs);
        }
        ready == RING_BATCH && ports[i].ring.rx_peek().is_some()
    }

    /// Queue `len` bytes at `start` of port `i`'s head RX slot on port `e`'s TX ring.
    fn send_from_rx(&self, ports: &mut [RingPort], i: usize, e: usize, start: usize, len: usize) {
        let queued = if e == i {
            ports[i].ring.tx_push_own_rx(start, len)
        } else if let Some((src, dst)) = pair_mut(ports, i, e) {
            dst.ring.tx_push(&src.ring.rx_bytes()[start..start + len])
        } else {
            self.datapath.stats().count_drop(DropReason::TxError);
            return;
        };
        if queued {
            stats::bump(&self.datapath.stats().tx);
        } else {
            let data = &ports[i].ring.rx_bytes()[start..start + len];
            self.send_plain(ports, e, data);
        }
    }

    /// Send a frame that does not go through a TX ring (too large for a slot, or the ring
    /// is full), after what the ring holds, so that frames leave in order.
    fn send_plain(&self, ports: &[RingPort], e: usize, frame: &[u8]) {
        let stats = self.datapath.stats();
        let Some(p) = ports.get(e) else {
            stats.count_drop(DropReason::TxError);
            return;
        };
        let _ = p.ring.flush();
        match p.tx.send(frame) {
            Ok(_) => stats::bump(&stats.tx),
            Err(err) => {
                stats.count_drop(DropReason::TxError);
                tracing::trace!(worker = self.id, err = %err, "send failed");
            }
        }
    }

    /// Send the segments the datapath cut from the last frame.
    fn send_segments(&self, ports: &mut [RingPort], segs: &mut SegPool) {
        segs.settle(&self.stack, self.datapath.stats());
        for k in 0..segs.ready.len() {
            let (idx, SegmentTo::Iface(iface), len) = segs.ready[k] else {
                continue;
            };
            let e = usize::from(iface);
            let data = &segs.slot(idx)[..len];
            if ports.get_mut(e).is_some_and(|p| p.ring.tx_push(data)) {
                stats::bump(&self.datapath.stats().tx);
            } else {
                self.send_plain(ports, e, data);
            }
            segs.free.push(idx);
        }
        segs.ready.clear();
    }

    /// Add what the kernel dropped at full receive queues or rings to the drop counts.
    fn count_queue_drops(&self, reason: DropReason, drops: impl Iterator<Item = io::Result<u32>>) {
        for d in drops {
            match d {
                Ok(0) => {}
                Ok(n) => self.datapath.stats().count_drops(reason, u64::from(n)),
                Err(e) => tracing::debug!(worker = self.id, err = %e, "socket statistics"),
            }
        }
    }

    /// Handle a frame received on interface `iface` into buffer `bid` (`res`: its length,
    /// or an error); return the send to queue, if any. Without one, the caller gives the
    /// buffer back.
    fn on_recv(
        &self,
        snap: &Snapshot,
        now: u64,
        fds: &[types::Fd],
        u: &mut Uring,
        (iface, bid, res): (usize, u16, i32),
    ) -> Option<squeue::Entry> {
        let len = usize::try_from(res).ok()?;
        let slot = u.bufs.buf(bid);
        let rx = Arrived {
            len,
            iface,
            headers: None,
        };
        let (iface, out_len) = self.handle(snap, now, slot, rx, &mut u.segs)?;
        let fd = fds.get(usize::from(iface))?;
        Some(
            opcode::Send::new(*fd, slot.as_ptr(), out_len as u32)
                .build()
                .user_data(Op::Send { bid }.encode()),
        )
    }

    /// Process the frame `rx` (its vnet header first) at the start of `slot`, in place.
    /// Returns the interface to send it on and its new length (vnet header
    /// included), the header made ready for sending; `None` when nothing is to be sent from
    /// the slot (dropped, passed, handed to the stack, or cut into segments).
    fn handle(
        &self,
        snap: &Snapshot,
        now: u64,
        slot: &mut [u8],
        rx: Arrived,
        segs: &mut SegPool,
    ) -> Option<(u8, usize)> {
        let Arrived {
            len,
            iface,
            headers,
        } = rx;
        let stats = self.datapath.stats();
        if len > slot.len() {
            stats::bump(&stats.rx);
            stats.count_drop(DropReason::RxTruncated);
            return None;
        }
        let headers = match headers {
            Some(h) => h,
            None => Headers::parse(slot.get(VNET_HDR_LEN..len)?),
        };
        // SCTP's CRC32c left to the device by a local sender: completed here, once.
        if let Some(l4) = headers.sctp_offset() {
            let (vnet, frame) = slot.split_at_mut(VNET_HDR_LEN);
            if let Some(mut h) = VnetHeader::new_checked(vnet) {
                h.complete_sctp(&mut frame[..len - VNET_HDR_LEN], l4);
            }
        }
        let meta = rx_meta(&VnetHeader::new_checked(&slot[..len])?, iface, stats);
        let mut sink = Sink { pool: segs };
        let verdict = self.datapath.process_in_buffer(
            snap,
            now,
            meta,
            &headers,
            &mut slot[VNET_HDR_LEN..],
            &mut sink,
        );
        self.act(verdict, slot, len)
    }

    /// Do what the datapath said with the frame of `len` bytes (vnet header included) at
    /// the start of `slot`: as [`handle`](Self::handle) returns.
    fn act(&self, verdict: Verdict, slot: &mut [u8], len: usize) -> Option<(u8, usize)> {
        let stats = self.datapath.stats();
        match verdict {
            Verdict::Tx { iface } => {
                if let Some(mut h) = VnetHeader::new_checked(&mut *slot) {
                    h.prepare_tx();
                }
                Some((iface, len))
            }
            Verdict::Send {
                iface,
                len: n,
                offloads: Offloads::AsReceived,
            } => {
                // Offloads as received, at the length a helper made.
                if let Some(mut h) = VnetHeader::new_checked(&mut *slot) {
                    h.prepare_tx();
                }
                Some((iface, VNET_HDR_LEN + n))
            }
            Verdict::Send {
                iface,
                len: n,
                offloads: Offloads::None,
            } => {
                // A packet wvs wrote whole: complete checksums, no segmentation.
                slot[..VNET_HDR_LEN].fill(0);
                Some((iface, VNET_HDR_LEN + n))
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
                None
            }
            Verdict::Drop(_)
            | Verdict::Refused { .. }
            | Verdict::Pass
            | Verdict::Segmented { .. } => None,
        }
    }
}

/// What a received frame's vnet header says (its GSO size, counted, and whether its
/// checksum is partial), as the datapath takes it.
fn rx_meta(vnet: &VnetHeader<&[u8]>, iface: usize, stats: &DatapathStats) -> RxMeta {
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
    RxMeta {
        iface: iface as u8,
        csum,
        gso_size,
    }
}

/// Submit what is queued and wait for `want` completions, or until the wake-up interval
/// passes (a timeout, an interruption or a full completion queue is no error).
fn enter(ring: &IoUring, want: usize, args: &types::SubmitArgs<'_, '_>) -> io::Result<()> {
    match ring.submitter().submit_with_args(want, args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// How long a worker sleeps at most in `io_uring_enter` before it looks at the stop flag.
fn wake_interval() -> types::Timespec {
    types::Timespec::new()
        .sec((WORKER_WAKE_MS / 1000) as u64)
        .nsec(((WORKER_WAKE_MS % 1000) * 1_000_000) as u32)
}

/// Two different ports, mutably.
fn pair_mut(ports: &mut [RingPort], a: usize, b: usize) -> Option<(&mut RingPort, &mut RingPort)> {
    if a == b || a >= ports.len() || b >= ports.len() {
        return None;
    }
    if a < b {
        let (l, r) = ports.split_at_mut(b);
        Some((&mut l[a], &mut r[0]))
    } else {
        let (l, r) = ports.split_at_mut(a);
        Some((&mut r[0], &mut l[b]))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker with no interfaces over an empty snapshot, and the io_uring backend's
    /// loop state; nothing here needs a privilege.
    fn uring_worker() -> (Worker, UringLoop) {
        let conns = Arc::new(crate::conn::ConnTable::new(16));
        let ifaces: Arc<[crate::datapath::Iface]> = Vec::new().into();
        let datapath = Datapath::new(
            conns,
            ifaces,
            Arc::new(crate::datapath::DatapathStats::default()),
            0,
        );
        let w = Worker {
            id: 0,
            ports: Ports::Uring(Vec::new()),
            stack: StackSocket::stand_in().unwrap(),
            datapath,
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            stop: Arc::new(AtomicBool::new(false)),
            epoch: Instant::now(),
            mail: Arc::new(Mailbox::default()),
        };
        let mut st = UringLoop::new(Vec::new()).unwrap();
        // As if interface 0 had a socket of generation 1.
        st.gens = vec![1];
        st.rearm = vec![false];
        (w, st)
    }

    /// The completion core fed completions by hand: sends and segments end (counted,
    /// their buffers back), a multishot receive that ended is armed again unless its socket
    /// was replaced since.
    #[test]
    fn completions_move_the_loop_as_they_say() {
        let (w, mut st) = uring_worker();
        let snap = w.snapshot.load();
        let stats = w.datapath.stats().clone();
        st.inflight = 5;
        let feed = |st: &mut UringLoop, op: Op, res: i32, flags: u32| {
            w.uring_completion(st, &snap, 0, (op.encode(), res, flags))
                .unwrap();
        };
        feed(&mut st, Op::Send { bid: 3 }, 64, 0);
        assert_eq!((st.inflight, stats.tx.load(Relaxed)), (4, 1));
        feed(&mut st, Op::Send { bid: 4 }, -libc::EIO, 0);
        assert_eq!(st.inflight, 3);
        assert_eq!(stats.drops(DropReason::TxError), 1);
        let free = st.u.segs.free.len();
        feed(&mut st, Op::Seg { slot: 9 }, 64, 0);
        assert_eq!((st.inflight, st.u.segs.free.len()), (2, free + 1));
        assert_eq!(st.u.segs.free.last(), Some(&9));
        // A receive of an old generation ended: nothing is armed for it.
        feed(&mut st, Op::Recv { iface: 0, gen_: 0 }, -libc::ENOBUFS, 0);
        assert_eq!((st.inflight, st.rearm[0]), (1, false));
        // The current one ended (no more flag): armed again next round.
        feed(&mut st, Op::Recv { iface: 0, gen_: 1 }, -libc::ENOBUFS, 0);
        assert_eq!((st.inflight, st.rearm[0]), (0, true));
        // A cancellation's completion changes nothing.
        feed(&mut st, Op::Cancel, 0, 0);
        assert_eq!(st.inflight, 0);
        // Arming takes what is marked (a receive on a UDP socket stands in).
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        st.fds = vec![types::Fd(udp.as_raw_fd())];
        st.arm().unwrap();
        assert_eq!((st.inflight, st.rearm[0]), (1, false));
    }

    /// The ring backend's completions fed by hand: a poll that goes on changes nothing, one
    /// that ended is armed again unless its socket was replaced since, a flush ends, and
    /// what is not the ring backend's (a uring send) is ignored.
    #[test]
    fn ring_completions_move_the_loop_as_they_say() {
        let (w, _) = uring_worker();
        let mut st = RingLoop::new(Vec::new(), None).unwrap();
        st.gens = vec![1];
        st.rearm = vec![false];
        st.inflight = 4;
        let more = 1 << 1; // IORING_CQE_F_MORE
        let mut feed = |op: Op, res: i32, flags: u32| {
            w.ring_completion(&mut st, (op.encode(), res, flags));
            (st.inflight, st.rearm[0])
        };
        assert_eq!(feed(Op::Poll { iface: 0, gen_: 1 }, 1, more), (4, false));
        // An old generation's poll ended: nothing is armed for it.
        assert_eq!(
            feed(Op::Poll { iface: 0, gen_: 0 }, -libc::ECANCELED, 0),
            (3, false)
        );
        // The current one ended: armed again next round.
        assert_eq!(
            feed(Op::Poll { iface: 0, gen_: 1 }, -libc::ECANCELED, 0),
            (2, true)
        );
        assert_eq!(feed(Op::Flush { port: 0 }, -libc::EIO, 0), (1, true));
        assert_eq!(feed(Op::Flush { port: 0 }, 0, 0), (0, true));
        assert_eq!(feed(Op::Send { bid: 1 }, 64, 0), (0, true));
        // Arming takes what is marked (a UDP socket stands in for an RX ring).
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        st.fds = vec![types::Fd(udp.as_raw_fd())];
        st.arm().unwrap();
        assert_eq!((st.inflight, st.rearm[0]), (1, false));
    }

    /// Every operation comes back from its user data as it went in, kinds apart, and an
    /// interface's generation survives (a replaced socket's completion is told apart).
    #[test]
    fn user_data_round_trips() {
        let ops = [
            Op::Recv {
                iface: 3,
                gen_: 0xfffe,
            },
            Op::Send { bid: 4095 },
            Op::Cancel,
            Op::Seg { slot: 7 },
            Op::Poll {
                iface: 254,
                gen_: 1,
            },
            Op::Flush { port: 2 },
        ];
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            let ud = op.encode();
            assert!(seen.insert(ud), "{op:?} encodes as another does");
            assert_eq!(Op::decode(ud), Some(op));
        }
        assert_ne!(
            Op::Recv { iface: 1, gen_: 1 }.encode(),
            Op::Recv { iface: 1, gen_: 2 }.encode()
        );
        assert_eq!(Op::decode(0), None, "no operation is 0");
        assert_eq!(Op::decode(9 << 32), None);
    }
}
