//! Application helpers on the datapath, as `ip_vs_app.c` and `ip_vs_proto_tcp.c` run them:
//! a segment of a connection bound to helpers has its TCP checksum verified, its sequence
//! and acknowledgement numbers (and SACK blocks, which IPVS leaves alone and conntrack's
//! seqadj fixes) shifted by what earlier resized segments changed, its payload shown to
//! each helper in turn, and, when a helper replaced it, its lengths and checksums redone and
//! the change recorded against its original sequence number. Expected connections the
//! helpers ask for are added to the table as IPVS's `NO_CPORT` entries.
//!
//! Only connections of services with helpers come here: every other packet takes the fast
//! path untouched. A helper runs under its connection's own lock, on the worker's own
//! instance, with a deadline; one that fails leaves the connection to pass unmodified.

use std::net::IpAddr;
use std::sync::Arc;

use wvs_sdk::{Expect, HELPER_MAX_PAYLOAD, PacketInfo, helper_dir, helper_fwd};

use super::{DropReason, L4Info, stats};
use crate::conn::app::{AppConn, Controller, SeqAdj};
use crate::conn::{Conn, ConnKey, TcpState, persist};
use crate::consts::{
    HELPER_DATA_PORTS_FROM, HELPER_EXPECT_TIMEOUT_MS, HELPER_MAX_EXPECTS_PER_CALL,
};
use crate::model::NextHop;
use crate::model::{Forward, Protocol};
use crate::plugin::Answer;
use crate::service::Dest;
use crate::wire::checksum::{self, CsumMode};
use crate::wire::{ETHERNET_HEADER_LEN, Ipv4Packet, Ipv6Packet, ipv6_field, tcp_field, udp_field};

/// What a packet's helpers need of its connection, taken under the table's lock.
pub(super) struct AppCtx {
    pub(super) app: Arc<AppConn>,
    info: PacketInfo,
    vaddr: IpAddr,
    vport: u16,
    caddr: IpAddr,
    cport: u16,
    raddr: IpAddr,
    rport: u16,
    fwd: Forward,
    local: (IpAddr, u16),
    dest: Arc<Dest>,
    svc_stats: Arc<crate::stats::Stats>,
    hop: NextHop,
    template: Option<persist::Control>,
}

pub(super) fn mapped(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl AppCtx {
    /// The context of `c`'s packets, if helpers are bound to it.
    pub(super) fn of(c: &Conn) -> Option<Self> {
        let app = c.app()?.clone();
        Some(Self {
            app,
            info: PacketInfo {
                caddr: mapped(c.caddr()),
                vaddr: mapped(c.vaddr()),
                daddr: mapped(c.raddr()),
                cport: c.cport,
                vport: c.vport,
                dport: c.rport,
                proto: c.proto.number(),
                af: if c.caddr().is_ipv6() { 6 } else { 4 },
                fwd: if c.fwd == Forward::FullNat {
                    helper_fwd::FULLNAT
                } else {
                    helper_fwd::NAT
                },
                tcp_state: c.state as u8,
                ..Default::default()
            },
            vaddr: c.vaddr(),
            vport: c.vport,
            caddr: c.caddr(),
            cport: c.cport,
            raddr: c.raddr(),
            rport: c.rport,
            fwd: c.fwd,
            local: (c.laddr(), c.lport),
            dest: c.dest.clone(),
            svc_stats: c.svc_stats.clone(),
            hop: c.client_hop,
            template: c.template.as_ref().map(persist::Control::share),
        })
    }
}

impl AppCtx {
    /// The client's address.
    pub(super) fn caddr(&self) -> IpAddr {
        self.caddr
    }

    /// The client's port.
    pub(super) fn cport(&self) -> u16 {
        self.cport
    }

    /// The virtual address.
    pub(super) fn vaddr(&self) -> IpAddr {
        self.vaddr
    }

    /// The virtual port.
    pub(super) fn vport(&self) -> u16 {
        self.vport
    }

    /// Where the client's packets leave for.
    pub(super) fn client_hop(&self) -> NextHop {
        self.hop
    }

    /// Where a packet from the client goes, as the connection's lookup says.
    pub(super) fn forward(&self) -> Option<super::InForward> {
        Some(super::InForward {
            daddr: self.raddr,
            dport: self.rport,
            hop: self.dest.next_hop(),
            fwd: self.fwd,
            src: self.dest.source(),
            mtu: self.dest.mtu(),
            local: self.local,
            app: None,
        })
    }
}

/// What the helper path did to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Helped {
    /// Its length changed: it cannot be sent as received.
    pub resized: bool,
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Write a 32-bit field of a TCP segment, updating a complete checksum incrementally.
fn write_u32(seg: &mut [u8], at: usize, v: u32, complete: bool) {
    write_bytes(seg, at, &v.to_be_bytes(), complete);
}

/// Write an even-aligned field of a TCP segment (2 or 4 bytes), updating a complete
/// checksum incrementally.
pub(super) fn write_bytes(seg: &mut [u8], at: usize, new: &[u8], complete: bool) {
    let Some(old) = seg.get_mut(at..at + new.len()) else {
        return;
    };
    if old == new {
        return;
    }
    let mut was = [0u8; 4];
    was[..new.len()].copy_from_slice(old);
    old.copy_from_slice(new);
    if complete {
        let c = tcp_field::CHECKSUM;
        let check = u16::from_be_bytes([seg[c], seg[c + 1]]);
        let check = checksum::update(check, &was[..new.len()], new);
        seg[c..c + 2].copy_from_slice(&check.to_be_bytes());
    }
}

/// Shift the edges of every SACK block of a segment's options by `adj` (the other
/// direction's adjustment, as its acknowledgement).
fn fix_sack(seg: &mut [u8], doff: usize, adj: &SeqAdj, complete: bool) {
    let mut at = tcp_field::MIN_HEADER_LEN;
    while at < doff {
        match seg[at] {
            0 => return,
            1 => at += 1,
            kind => {
                let Some(&len) = seg.get(at + 1) else { return };
                let len = usize::from(len);
                if len < 2 || at + len > doff {
                    return;
                }
                if kind == tcp_field::OPT_SACK {
                    let mut edge = at + 2;
                    while edge + 4 <= at + len {
                        let v = read_u32(seg, edge);
                        write_u32(seg, edge, adj.fix_ack(v), complete);
                        edge += 4;
                    }
                }
                at += len;
            }
        }
    }
}

/// A TCP segment's sequence and acknowledgement numbers (and SACK blocks) through the
/// connection's deltas, its first sequence number noted on a SYN. Returns the header's
/// length and the sequence number as received.
fn seq_adjust(
    inner: &mut crate::conn::app::AppInner,
    flags: crate::conn::TcpFlags,
    dir: u8,
    seg: &mut [u8],
    complete: bool,
) -> (usize, u32) {
    let doff = usize::from(seg[tcp_field::DATA_OFF] >> 4) * 4;
    let seq = read_u32(seg, tcp_field::SEQ);
    if flags.syn {
        if dir == helper_dir::IN {
            inner.in_isn = Some(seq);
        } else {
            inner.out_isn = Some(seq);
        }
    }
    let (mine, theirs) = if dir == helper_dir::IN {
        (inner.in_seq, inner.out_seq)
    } else {
        (inner.out_seq, inner.in_seq)
    };
    write_u32(seg, tcp_field::SEQ, mine.fix_seq(seq), complete);
    if flags.ack {
        let ack = read_u32(seg, tcp_field::ACK);
        write_u32(seg, tcp_field::ACK, theirs.fix_ack(ack), complete);
    }
    if theirs.active() {
        fix_sack(seg, doff.min(seg.len()), &theirs, complete);
    }
    (doff, seq)
}

/// A payload of `plen` bytes became `cur`: the IPv4 total length and checksum (IPv6's
/// payload length), the UDP length, and the L4 checksum (in full, or the pseudo-header's
/// part the kernel completes) follow. Returns the packet's new total length.
fn resize(buf: &mut [u8], info: &L4Info, csum: CsumMode, plen: usize, cur: usize) -> usize {
    let l4 = ETHERNET_HEADER_LEN + info.l4_off;
    let total = info.total_len - plen + cur;
    {
        let ip = &mut buf[ETHERNET_HEADER_LEN..l4];
        if info.saddr.is_ipv6() {
            let payload = total.saturating_sub(ipv6_field::HEADER_LEN);
            Ipv6Packet::new_unchecked(&mut *ip).set_payload_len(payload as u16);
        } else {
            let mut iph = Ipv4Packet::new_unchecked(&mut *ip);
            iph.set_total_len(total as u16);
            iph.set_checksum(0);
            let c = checksum::compute(ip);
            Ipv4Packet::new_unchecked(ip).set_checksum(c);
        }
    }
    let seg = &mut buf[l4..ETHERNET_HEADER_LEN + total];
    let field = match info.proto {
        Protocol::Tcp => tcp_field::CHECKSUM,
        Protocol::Sctp => {
            // CRC32c covers no pseudo-header and is never left to the kernel: in full.
            crate::wire::sctp::SctpPacket::new_unchecked(seg).fill_checksum();
            return total;
        }
        Protocol::Udp => {
            let l = seg.len() as u16;
            seg[udp_field::LENGTH..udp_field::LENGTH + 2].copy_from_slice(&l.to_be_bytes());
            udp_field::CHECKSUM
        }
    };
    let no_udp_csum = info.proto == Protocol::Udp && seg[field] == 0 && seg[field + 1] == 0;
    if csum == CsumMode::Partial {
        // The kernel sums the segment: only the pseudo-header's length changed.
        let proto = info.proto.number();
        let c = match (info.saddr, info.daddr) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                checksum::pseudo_v4(s.octets(), d.octets(), proto, seg.len() as u16)
            }
            (s, d) => checksum::pseudo_v6(mapped(s), mapped(d), proto, seg.len() as u32),
        };
        seg[field..field + 2].copy_from_slice(&c.to_be_bytes());
    } else if !no_udp_csum {
        seg[field..field + 2].fill(0);
        let mut c = checksum::l4(info.saddr, info.daddr, info.proto.number(), seg);
        if c == 0 && info.proto == Protocol::Udp {
            c = 0xffff;
        }
        seg[field..field + 2].copy_from_slice(&c.to_be_bytes());
    }
    total
}

/// What a packet's helpers made of its payload.
struct Called {
    /// Its length now.
    cur: usize,
    /// Whether a helper replaced it.
    changed: bool,
    /// The connections they expect (the first `n_exp`).
    expects: [Expect; HELPER_MAX_EXPECTS_PER_CALL],
    n_exp: usize,
}

impl super::Datapath {
    /// Run a packet of a connection bound to helpers through them (`app_tcp_pkt_in` and
    /// `app_tcp_pkt_out`): `dir` is [`helper_dir`]. Updates `info` and `meta` to the
    /// packet as it now is.
    pub(super) fn help(
        &self,
        rx: &mut super::Rx<'_>,
        ctx: &AppCtx,
        dir: u8,
        buf: &mut [u8],
    ) -> Result<Helped, DropReason> {
        let (snap, now) = (rx.snap, rx.now);
        let (meta, info) = (&mut rx.meta, &mut rx.info);
        let l4 = ETHERNET_HEADER_LEN + info.l4_off;
        let end = ETHERNET_HEADER_LEN + info.total_len;
        let complete = meta.csum == CsumMode::Complete;
        let mut g = ctx.app.inner.lock();
        let inner = &mut *g;
        let (hdr_len, seq) = match info.proto {
            Protocol::Tcp => {
                // tcp_csum_check: a helper never sees (nor a delta records) a segment the
                // server would discard.
                if complete && checksum::l4(info.saddr, info.daddr, 6, &buf[l4..end]) != 0 {
                    return Err(DropReason::L4BadChecksum);
                }
                let r = seq_adjust(inner, info.flags, dir, &mut buf[l4..end], complete);
                if let Some(j) = &inner.sp {
                    super::synproxy::adjust(j, dir == helper_dir::OUT, &mut buf[l4..end], complete);
                }
                r
            }
            Protocol::Udp => (udp_field::HEADER_LEN, 0),
            // No helper is bound to an SCTP connection (IPVS has none); its chunks would
            // follow the common header.
            Protocol::Sctp => (crate::wire::sctp::field::HEADER_LEN, 0),
        };
        let pstart = l4 + hdr_len;
        let plen = end.saturating_sub(pstart);
        let helpers = snap
            .service(info.proto, ctx.vaddr, ctx.vport)
            .map_or(&[][..], |s| &s.helpers[..]);
        if plen == 0 || plen > HELPER_MAX_PAYLOAD || inner.faulted || helpers.is_empty() {
            return Ok(Helped::default());
        }
        let isn = if dir == helper_dir::IN {
            inner.in_isn
        } else {
            inner.out_isn
        };
        // Room for a replacement: the buffer, and what an IP packet's length field holds.
        let room = buf
            .len()
            .saturating_sub(pstart)
            .min(HELPER_MAX_PAYLOAD)
            .min(usize::from(u16::MAX) - info.l4_off - hdr_len);
        let mut pkt = ctx.info;
        pkt.dir = dir;
        pkt.seq = seq;
        pkt.offset = match (info.proto, isn) {
            (Protocol::Tcp, Some(i)) => seq.wrapping_sub(i).wrapping_sub(1),
            _ => u32::MAX,
        };
        pkt.max_len = room as u32;
        let allow = ctx.info.fwd == helper_fwd::NAT;
        let Called {
            cur,
            changed,
            expects,
            n_exp,
        } = self.call_helpers(inner, helpers, &mut pkt, (buf, pstart, plen), (allow, now))?;
        if info.proto == Protocol::Tcp && cur != plen {
            let diff = cur as i64 - plen as i64;
            let adj = if dir == helper_dir::IN {
                &mut inner.in_seq
            } else {
                &mut inner.out_seq
            };
            adj.update(seq, diff as i32);
        }
        drop(g);
        for e in &expects[..n_exp] {
            self.expect(ctx, e, now);
        }
        if !changed {
            return Ok(Helped::default());
        }
        info.total_len = resize(buf, info, meta.csum, plen, cur);
        Ok(Helped {
            resized: cur != plen,
        })
    }

    /// Call the connection's helpers in turn on the payload `buf[pstart..pstart + plen]`,
    /// each seeing what the one before left (`allow`: it may expect connections; `now`:
    /// the time). A helper that fails marks the connection faulted and the rest are not
    /// called; one that drops the packet drops it.
    fn call_helpers(
        &self,
        inner: &mut crate::conn::app::AppInner,
        helpers: &[Arc<crate::plugin::HelperPool>],
        pkt: &mut PacketInfo,
        (buf, pstart, plen): (&mut [u8], usize, usize),
        (allow, now): (bool, u64),
    ) -> Result<Called, DropReason> {
        let mut cur = plen;
        let mut changed = false;
        let mut expects = [Expect::default(); HELPER_MAX_EXPECTS_PER_CALL];
        let mut n_exp = 0;
        let hs = &self.stats.helper;
        for slot in inner.helpers.iter_mut() {
            let Some(pool) = helpers.iter().find(|h| h.name() == &*slot.name) else {
                continue;
            };
            pkt.len = cur as u32;
            stats::bump(&hs.calls);
            let state = &mut slot.state;
            let r = pool.with(self.worker, |h| {
                let refused = h.refused();
                let answer = h.packet(pkt, state, &buf[pstart..pstart + cur], allow, now)?;
                let out = match answer {
                    Answer::Keep => None,
                    Answer::Drop => Some(None),
                    Answer::Replace(b) => {
                        buf[pstart..pstart + b.len()].copy_from_slice(b);
                        Some(Some(b.len()))
                    }
                };
                for e in h.expects() {
                    if n_exp < expects.len() {
                        expects[n_exp] = *e;
                        n_exp += 1;
                    }
                }
                let refused = h.refused().wrapping_sub(refused);
                Ok((out, refused))
            });
            match r {
                Ok((out, refused)) => {
                    stats::add(&hs.expects_refused, u64::from(refused));
                    match out {
                        None => {}
                        Some(None) => return Err(DropReason::HelperDrop),
                        Some(Some(n)) => {
                            cur = n;
                            changed = true;
                            stats::bump(&hs.rewrites);
                        }
                    }
                }
                Err(e) => {
                    // The packet goes on as the earlier helpers left it; the connection
                    // passes through unmodified from now on.
                    inner.faulted = true;
                    stats::bump(&hs.faults);
                    let faults = hs.faults.load(std::sync::atomic::Ordering::Relaxed);
                    // No instance (being rebuilt after a failure) is no new trap.
                    if !matches!(e, crate::plugin::PluginError::NoInstance { .. }) {
                        pool.plugin
                            .runtime()
                            .stats
                            .traps
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Logged at the 1st, 2nd, 4th, 8th... fault: a helper failing on
                    // every connection fills no disk, one failing once is seen.
                    if faults.is_power_of_two() {
                        tracing::warn!(
                            helper = pool.name(),
                            faults,
                            "helper failed: {e}; the connection goes on without it"
                        );
                    } else {
                        tracing::debug!(helper = pool.name(), faults, "helper failed: {e}");
                    }
                    break;
                }
            }
        }
        Ok(Called {
            cur,
            changed,
            expects,
            n_exp,
        })
    }

    /// Add an expected connection (`ip_vs_conn_new` from `ip_vs_ftp`): to the controlling
    /// connection's real server, in LISTEN (TCP) for its timeout, controlled by it.
    fn expect(&self, ctx: &AppCtx, e: &Expect, now: u64) {
        let hs = &self.stats.helper;
        // The expected client is of the service's family.
        let vaddr = ctx.vaddr;
        let caddr = match vaddr {
            IpAddr::V4(_) => std::net::Ipv6Addr::from(e.caddr)
                .to_ipv4_mapped()
                .map(IpAddr::V4),
            IpAddr::V6(_) => Some(IpAddr::V6(e.caddr.into())),
        };
        let Some(caddr) = caddr else {
            stats::bump(&hs.expects_refused);
            return;
        };
        let proto = match e.proto {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => {
                stats::bump(&hs.expects_refused);
                return;
            }
        };
        // Both ports open: nothing would ever tell which packet is the one expected.
        if e.cport == 0 && e.dport == 0 {
            stats::bump(&hs.expects_refused);
            return;
        }
        // Only ports a data connection may use (FTP's 20, and those an unprivileged
        // process binds): a reply naming another service's port (PASV with 80) must not
        // capture a client's next connection to it.
        let data_port = |p: u16| p == 0 || p == 20 || p >= HELPER_DATA_PORTS_FROM;
        if !(data_port(e.cport) && data_port(e.vport) && data_port(e.dport)) {
            stats::bump(&hs.expects_refused);
            return;
        }
        let vport = if e.vport == 0 { e.dport } else { e.vport };
        let key = ConnKey {
            proto,
            saddr: caddr,
            sport: e.cport,
            daddr: vaddr,
            dport: vport,
        };
        let mut conn = Conn::new(&key, ctx.dest.clone(), ctx.svc_stats.clone(), ctx.hop, now);
        conn.rport = e.dport;
        conn.set_wildcard_ports(e.cport == 0, e.dport == 0);
        conn.set_controller(Controller::new(&ctx.app));
        conn.template = ctx.template.as_ref().map(persist::Control::share);
        conn.set_timeout_ms(if e.timeout_ms == 0 {
            HELPER_EXPECT_TIMEOUT_MS
        } else {
            u64::from(e.timeout_ms)
        });
        if proto == Protocol::Tcp {
            conn.state = TcpState::Listen;
        }
        conn.touch(now);
        match self.conns.insert(conn) {
            Ok(()) => {
                stats::bump(&hs.expects);
                stats::bump(&self.stats.conns);
                // One control connection keeps a few waiting at most: the oldest goes.
                let old = ctx.app.expected.lock().push(key);
                if let Some(old) = old
                    && self.conns.remove_waiting_expectation(&old)
                {
                    stats::bump(&hs.expects_replaced);
                }
            }
            Err(err) => {
                // One with the same keys exists already (a repeated PORT): it stays.
                if !matches!(err, crate::conn::InsertError::Exists(_)) {
                    stats::bump(&hs.expects_refused);
                }
                err.into_conn().release();
            }
        }
    }
}

/// Whether a resized plain packet of `total` bytes (IP) is longer than `mtu` (0: the
/// Ethernet default): then it is cut into segments, as the kernel would a GSO packet.
pub(super) fn too_long(total: usize, mtu: u32) -> Option<u16> {
    let mtu = if mtu == 0 {
        crate::consts::DEFAULT_MTU
    } else {
        mtu
    };
    (total as u64 > u64::from(mtu)).then_some(mtu as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sack_edges_follow_the_other_direction() {
        let mut adj = SeqAdj::default();
        adj.update(1000, 10);
        // A header with NOP NOP SACK(1 block).
        let mut seg = vec![0u8; 32];
        seg[tcp_field::DATA_OFF] = 8 << 4;
        seg[20..24].copy_from_slice(&[1, 1, tcp_field::OPT_SACK, 10]);
        seg[24..28].copy_from_slice(&1100u32.to_be_bytes());
        seg[28..32].copy_from_slice(&1200u32.to_be_bytes());
        fix_sack(&mut seg, 32, &adj, false);
        assert_eq!(read_u32(&seg, 24), 1090);
        assert_eq!(read_u32(&seg, 28), 1190);
    }

    #[test]
    fn malformed_options_stop_the_walk() {
        let adj = SeqAdj {
            delta: 5,
            set: true,
            ..Default::default()
        };
        for opts in [[5u8, 0, 0, 0], [5, 40, 0, 0], [2, 1, 0, 0]] {
            let mut seg = vec![0u8; 24];
            seg[20..24].copy_from_slice(&opts);
            fix_sack(&mut seg, 24, &adj, true);
        }
    }
}
