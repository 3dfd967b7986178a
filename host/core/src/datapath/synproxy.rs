//! The synproxy on the datapath (see [`crate::synproxy`] for the cookie and the joining):
//! a SYN to a service that answers with cookies gets its SYN-ACK in place; an ACK that
//! returns a cookie makes the connection and leaves as the server's SYN, written in its
//! place and sent through the connection's transmitter; the server's SYN-ACK joins the
//! halves and leaves as the ACK that completes the server's handshake, with a window
//! update to the client from a transmit buffer of the I/O layer's. Until the server answers,
//! each packet of the client's sends the server the SYN again; a server's reset goes to
//! the client as a reset of its handshake.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

use super::{DropReason, L4Info, Offloads, Rx, Verdict, stats};
use crate::conn::app::SeqAdj;
use crate::model::NextHop;
use crate::service::VirtualService;
use crate::spec::SynproxyMode;
use crate::synproxy::{self, Data, Join, Phase, flag};
use crate::wire::checksum::{self, CsumMode};
use crate::wire::{ETHERNET_HEADER_LEN, ipv4_field, ipv6_field, tcp_field};
use crate::xmit;

/// A TCP segment wvs writes whole.
struct Seg<'a> {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: &'a [u8],
    payload: &'a [u8],
}

/// TTL (hop limit) of the segments wvs writes.
const TTL: u8 = 64;

/// Write `seg` as an IPv4 or IPv6 packet after the Ethernet header of `buf` (whose MAC
/// addresses are left as they are): a fresh IP header (DF, no options or extension
/// headers), the TCP header with `opts` (whole words), the payload, both checksums
/// complete. Returns the IP header's length and the IP packet's, or `None` if it does
/// not fit or the families differ.
fn write_tcp(buf: &mut [u8], seg: &Seg<'_>) -> Option<(usize, usize)> {
    let l4_len = tcp_field::MIN_HEADER_LEN + seg.opts.len() + seg.payload.len();
    let ip_len = match seg.src.0 {
        IpAddr::V4(_) => ipv4_field::MIN_HEADER_LEN,
        IpAddr::V6(_) => ipv6_field::HEADER_LEN,
    };
    let total = ip_len + l4_len;
    let frame = buf.get_mut(..ETHERNET_HEADER_LEN + total)?;
    let (eth, ip) = frame.split_at_mut(ETHERNET_HEADER_LEN);
    let (hdr, l4) = ip.split_at_mut(ip_len);
    hdr.fill(0);
    match (seg.src.0, seg.dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            eth[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut iph = crate::wire::Ipv4Packet::new_unchecked(&mut *hdr);
            iph.set_version(4);
            iph.set_header_len(ipv4_field::MIN_HEADER_LEN as u8);
            iph.set_total_len(u16::try_from(total).ok()?);
            iph.set_dont_frag(true);
            iph.set_hop_limit(TTL);
            iph.set_next_header(crate::wire::IpProtocol::Tcp);
            iph.set_src_addr(s);
            iph.set_dst_addr(d);
            let c = checksum::compute(&hdr[..]);
            crate::wire::Ipv4Packet::new_unchecked(&mut *hdr).set_checksum(c);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            eth[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut h = crate::wire::Ipv6Packet::new_unchecked(&mut *hdr);
            h.set_version(6);
            h.set_payload_len(u16::try_from(l4_len).ok()?);
            h.set_next_header(crate::wire::IpProtocol::Tcp);
            h.set_hop_limit(TTL);
            h.set_src_addr(s);
            h.set_dst_addr(d);
        }
        _ => return None,
    }
    let hl = tcp_field::MIN_HEADER_LEN + seg.opts.len();
    l4[..hl].fill(0);
    l4[0..2].copy_from_slice(&seg.src.1.to_be_bytes());
    l4[2..4].copy_from_slice(&seg.dst.1.to_be_bytes());
    l4[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    l4[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    l4[12] = ((hl / 4) as u8) << 4;
    l4[13] = seg.flags;
    l4[14..16].copy_from_slice(&seg.window.to_be_bytes());
    l4[tcp_field::MIN_HEADER_LEN..hl].copy_from_slice(seg.opts);
    l4[hl..].copy_from_slice(seg.payload);
    let c = checksum::l4(seg.src.0, seg.dst.0, 6, l4);
    l4[tcp_field::CHECKSUM..tcp_field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    Some((ip_len, total))
}

/// The parts of a received TCP segment the synproxy reads.
struct Tcp {
    seq: u32,
    ack: u32,
    window: u16,
    opts: synproxy::SynOpts,
    /// Where its payload is in the frame, and how long it is.
    payload: (usize, usize),
}

fn read_tcp(buf: &[u8], info: &L4Info) -> Option<Tcp> {
    let l4 = ETHERNET_HEADER_LEN + info.l4_off;
    let end = ETHERNET_HEADER_LEN + info.total_len;
    let seg = buf.get(l4..end)?;
    let u32_at = |at: usize| u32::from_be_bytes([seg[at], seg[at + 1], seg[at + 2], seg[at + 3]]);
    let doff = usize::from(*seg.get(tcp_field::DATA_OFF)? >> 4) * 4;
    if doff < tcp_field::MIN_HEADER_LEN || doff > seg.len() {
        return None;
    }
    Some(Tcp {
        seq: u32_at(tcp_field::SEQ),
        ack: u32_at(tcp_field::ACK),
        window: u16::from_be_bytes([seg[14], seg[15]]),
        opts: synproxy::parse_options(&seg[tcp_field::MIN_HEADER_LEN..doff]),
        payload: (l4 + doff, seg.len() - doff),
    })
}

/// Swap a frame's MAC addresses: an answer goes back where the frame came from.
fn swap_macs(buf: &mut [u8]) {
    if let Some(eth) = buf.get_mut(..12) {
        let (d, s) = eth.split_at_mut(6);
        d.swap_with_slice(s);
    }
}

impl super::Datapath {
    /// Whether `svc` answers a new connection's SYN with a cookie now: its own mode, or
    /// the defense's; never for a method whose replies bypass wvs (their sequence numbers
    /// could not be shifted).
    pub(super) fn synproxy_on(&self, svc: &VirtualService) -> bool {
        self.conns.defense().synproxy_for(svc)
    }

    /// Whether an ACK of no connection to `svc` may return a cookie (one sent before the
    /// mode changed counts too).
    pub(super) fn synproxy_may(&self, svc: &VirtualService) -> bool {
        svc.synproxy_capable
            && match svc.spec.synproxy {
                Some(SynproxyMode::Off) => false,
                Some(_) => true,
                None => self.conns.defense().synproxy_mode() != 0,
            }
    }

    /// Answer a client's SYN with the cookie's SYN-ACK, in place.
    pub(super) fn synproxy_syn(&self, rx: &Rx<'_>, buf: &mut [u8]) -> Verdict {
        let info = &rx.info;
        let Some(t) = read_tcp(buf, info) else {
            return Verdict::Drop(DropReason::TcpTruncated);
        };
        let v6 = info.saddr.is_ipv6();
        let data = Data::of(&t.opts, v6);
        let client = (info.saddr, info.sport);
        let vip = (info.daddr, info.dport);
        let secret = self.conns.defense().secret();
        let (cookie, tsval) = secret.cookie(client, vip, t.seq, rx.now, data);
        let mut opts = [0u8; 40];
        let n = synproxy::write_options(
            &mut opts,
            data.mss(v6),
            data.sack(),
            t.opts.ts.map(|(val, _)| (tsval, val)),
            data.wscale().map(|_| synproxy::DEFAULT_WSCALE),
        );
        let seg = Seg {
            src: vip,
            dst: client,
            seq: cookie,
            ack: t.seq.wrapping_add(1),
            flags: flag::SYN | flag::ACK,
            // Nothing until the server's own window: see `crate::synproxy`.
            window: 0,
            opts: &opts[..n],
            payload: &[],
        };
        let Some((_, total)) = write_tcp(buf, &seg) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        swap_macs(buf);
        stats::bump(&self.stats.synproxy.cookies_sent);
        Verdict::Send {
            iface: rx.meta.iface,
            len: ETHERNET_HEADER_LEN + total,
            offloads: Offloads::None,
        }
    }

    /// A client's ACK of no connection: if it returns a cookie, the connection is made
    /// (scheduled now) and the frame leaves as the server's SYN. `None`: no cookie of ours.
    pub(super) fn synproxy_ack(
        &self,
        rx: &mut Rx<'_>,
        svc: &VirtualService,
        client_hop: NextHop,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Option<Verdict> {
        let info = rx.info;
        if !info.flags.ack || info.flags.syn || info.flags.rst {
            return None;
        }
        let t = read_tcp(buf, &info)?;
        let client = (info.saddr, info.sport);
        let vip = (info.daddr, info.dport);
        let isn = t.seq.wrapping_sub(1);
        let cookie = t.ack.wrapping_sub(1);
        let secret = self.conns.defense().secret();
        let data = secret.check(client, vip, isn, cookie, rx.now)?;
        stats::bump(&self.stats.synproxy.acks_accepted);
        let v6 = info.saddr.is_ipv6();
        let (p_at, p_len) = t.payload;
        let held = (p_len > 0).then(|| Box::<[u8]>::from(&buf[p_at..p_at + p_len]));
        let (client_tsval, our_tsval) = t.opts.ts.unwrap_or((0, 0));
        let join = Join {
            phase: Phase::Half,
            client_isn: isn,
            cookie,
            data,
            mss: data.mss(v6),
            our_ws: synproxy::DEFAULT_WSCALE,
            client_win: t.window,
            client_tsval,
            our_tsval,
            held,
            server_ws: None,
            ts_delta: 0,
            server_isn: 0,
        };
        // Scheduled as the client's SYN would have been.
        let mut syn = info;
        syn.flags = crate::conn::TcpFlags {
            syn: true,
            ack: false,
            fin: false,
            rst: false,
        };
        let key = info.key();
        let sysctl = rx.snap.sysctl;
        let found = match self.new_conn(
            svc,
            rx.now,
            (client_hop, Some(join.clone())),
            (&syn, buf),
            &key,
            sysctl,
        ) {
            Ok(f) => f,
            // Another worker made it meanwhile: the SYN goes again from there.
            Err(None) => return Some(Verdict::Drop(DropReason::NoConnIn)),
            Err(Some(r)) => return Some(Verdict::Drop(r)),
        };
        let super::InLookup::Forward(f) = found else {
            return Some(Verdict::Drop(DropReason::NoConnIn));
        };
        Some(self.synproxy_send_syn(rx, &join, &f, buf, sink))
    }

    /// Send the server the client's SYN, written in place of the client's packet.
    fn synproxy_send_syn(
        &self,
        rx: &mut Rx<'_>,
        j: &Join,
        f: &super::InForward,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Verdict {
        let info = rx.info;
        let mut opts = [0u8; 40];
        let cws = j.data.wscale();
        let n = synproxy::write_options(
            &mut opts,
            j.mss,
            j.data.sack(),
            j.data.ts().then_some((j.client_tsval, 0)),
            cws,
        );
        let seg = Seg {
            src: (info.saddr, info.sport),
            dst: (info.daddr, info.dport),
            seq: j.client_isn,
            ack: 0,
            flags: flag::SYN,
            window: synproxy::rescale(j.client_win, cws.unwrap_or(0), 0),
            opts: &opts[..n],
            payload: &[],
        };
        self.synproxy_to_real(rx, f, &seg, buf, sink)
    }

    /// Send `seg` (from the client to the VIP) to the connection's real server as its
    /// packets go.
    fn synproxy_to_real(
        &self,
        rx: &mut Rx<'_>,
        f: &super::InForward,
        seg: &Seg<'_>,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Verdict {
        let Some((ip_len, total)) = write_tcp(buf, seg) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        rx.info.l4_off = ip_len;
        rx.info.total_len = total;
        rx.meta.csum = CsumMode::Complete;
        rx.meta.gso_size = 0;
        let link = match self.link_in(f.fwd, f.hop, rx.meta.iface) {
            Ok(l) => l,
            Err(r) => return Verdict::Drop(r),
        };
        let target = xmit::Target {
            fwd: f.fwd,
            daddr: f.daddr,
            dport: f.dport,
            src: f.src,
            flow_hash: super::flow_hash(&rx.info),
            mtu: f.mtu,
            local: f.local,
            pmtu_disc: rx.snap.sysctl.pmtu_disc,
        };
        let mut pkt = self.packet(buf, rx.meta, &rx.info);
        let r = xmit::to_real(&mut pkt, &target, link);
        self.resized(r, &mut pkt, f.mtu, sink)
    }

    /// A client's packet while its server has not answered: the server is sent the SYN
    /// again (the client's retransmissions and window probes pace the retries).
    pub(super) fn synproxy_half_in(
        &self,
        rx: &mut Rx<'_>,
        f: &super::InForward,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Option<Verdict> {
        let ctx = f.app.as_ref()?;
        if !ctx.app.synproxy_half.load(Relaxed) {
            return None;
        }
        let j = ctx.app.inner.lock().sp.clone()?;
        if j.phase != Phase::Half {
            return None;
        }
        stats::bump(&self.stats.synproxy.syns_resent);
        Some(self.synproxy_send_syn(rx, &j, f, buf, sink))
    }

    /// A server's packet of a synproxied connection that needs more than translation: its
    /// SYN-ACK (the join, or a retransmission of it after the join), or its reset before
    /// the join. `None`: translate it as any other.
    pub(super) fn synproxy_out(
        &self,
        rx: &mut Rx<'_>,
        ctx: &super::app::AppCtx,
        buf: &mut [u8],
        sink: &mut dyn xmit::gso::SegmentSink,
    ) -> Option<Verdict> {
        let info = rx.info;
        let flags = info.flags;
        let half = ctx.app.synproxy_half.load(Relaxed);
        if !(flags.syn || (half && flags.rst)) {
            if half {
                // Nothing else comes from a server that was only sent a SYN.
                return Some(Verdict::Drop(DropReason::NoConnOut));
            }
            return None;
        }
        let t = read_tcp(buf, &info)?;
        let mut g = ctx.app.inner.lock();
        let inner = &mut *g;
        let j = inner.sp.as_mut()?;
        let (c_ip, c_port) = (ctx.caddr(), ctx.cport());
        let vip = (ctx.vaddr(), ctx.vport());
        let hop = ctx.client_hop();
        if flags.rst {
            if j.phase != Phase::Half || (flags.ack && t.ack != j.client_isn.wrapping_add(1)) {
                return Some(Verdict::Drop(DropReason::NoConnOut));
            }
            let seg = Seg {
                src: vip,
                dst: (c_ip, c_port),
                seq: j.cookie.wrapping_add(1),
                ack: 0,
                flags: flag::RST,
                window: 0,
                opts: &[],
                payload: &[],
            };
            drop(g);
            ctx.app.end_half();
            stats::bump(&self.stats.synproxy.server_resets);
            self.conns.with_conn(
                crate::conn::table::KeyDir::Out,
                &info.key(),
                |c: &mut crate::conn::Conn| c.set_expire_now(true),
            );
            return self.synproxy_to_client(hop, &seg, buf);
        }
        if !flags.ack || t.ack != j.client_isn.wrapping_add(1) {
            return Some(Verdict::Drop(DropReason::NoConnOut));
        }
        let first = j.phase == Phase::Half;
        if first {
            j.phase = Phase::Joined;
            j.server_isn = t.seq;
            j.server_ws = t.opts.wscale.filter(|_| j.data.wscale().is_some());
            if let Some((sval, _)) = t.opts.ts {
                j.ts_delta = j.our_tsval.wrapping_sub(sval);
            }
            let delta = j.cookie.wrapping_sub(t.seq) as i32;
            inner.out_seq = SeqAdj {
                init_seq: t.seq,
                delta,
                previous_delta: delta,
                set: true,
            };
            inner.out_isn = Some(t.seq);
            inner.in_isn = Some(j.client_isn);
            ctx.app.end_half();
            stats::bump(&self.stats.synproxy.joined);
        }
        let j = j.clone();
        let held = if first { j.held.as_deref() } else { None };
        drop(g);
        let server_tsval = t.opts.ts.map(|(v, _)| v);
        // The window update to the client, from a transmit buffer (without one, the
        // client learns the window from the server's first segment).
        if first && let Some(out) = sink.buf() {
            let mut opts = [0u8; 12];
            let n = match server_tsval.filter(|_| j.data.ts()) {
                Some(v) => ts_option(&mut opts, j.timestamps(true, (v, j.client_tsval))),
                None => 0,
            };
            let seg = Seg {
                src: vip,
                dst: (c_ip, c_port),
                seq: j.cookie.wrapping_add(1),
                ack: j.client_isn.wrapping_add(1),
                flags: flag::ACK,
                // A SYN-ACK's window is not scaled.
                window: synproxy::rescale(t.window, 0, j.data.wscale().map_or(0, |_| j.our_ws)),
                opts: &opts[..n],
                payload: &[],
            };
            if let Some(len) = self.client_frame(hop, &seg, out) {
                sink.send(xmit::gso::SegmentTo::Iface(hop.iface), len);
            }
        }
        // The ACK that completes the server's handshake, with what the client sent with
        // its own.
        let mut opts = [0u8; 12];
        let n = match server_tsval.filter(|_| j.data.ts()) {
            Some(v) => ts_option(&mut opts, (j.client_tsval, v)),
            None => 0,
        };
        let payload = held.map(<[u8]>::to_vec).unwrap_or_default();
        let seg = Seg {
            src: (c_ip, c_port),
            dst: vip,
            seq: j.client_isn.wrapping_add(1),
            ack: t.seq.wrapping_add(1),
            flags: flag::ACK | if payload.is_empty() { 0 } else { flag::PSH },
            window: j.window(false, j.client_win),
            opts: &opts[..n],
            payload: &payload,
        };
        let f = ctx.forward()?;
        Some(self.synproxy_to_real(rx, &f, &seg, buf, sink))
    }

    /// Write `seg` (from the VIP) as a frame to the client behind `hop` in `out`; its
    /// length.
    fn client_frame(&self, hop: NextHop, seg: &Seg<'_>, out: &mut [u8]) -> Option<usize> {
        let our = self.ifaces.get(usize::from(hop.iface))?.mac();
        let (_, total) = write_tcp(out, seg)?;
        let eth = out.get_mut(..12)?;
        eth[..6].copy_from_slice(&hop.mac);
        eth[6..12].copy_from_slice(&our);
        Some(ETHERNET_HEADER_LEN + total)
    }

    /// Send `seg` (from the VIP) to the client behind `hop`, in place.
    fn synproxy_to_client(&self, hop: NextHop, seg: &Seg<'_>, buf: &mut [u8]) -> Option<Verdict> {
        let len = self.client_frame(hop, seg, buf)?;
        Some(Verdict::Send {
            iface: hop.iface,
            len,
            offloads: Offloads::None,
        })
    }
}

/// A NOP NOP TS option; its length.
fn ts_option(out: &mut [u8; 12], (val, ecr): (u32, u32)) -> usize {
    out[..4].copy_from_slice(&[1, 1, 8, 10]);
    out[4..8].copy_from_slice(&val.to_be_bytes());
    out[8..12].copy_from_slice(&ecr.to_be_bytes());
    12
}

/// Translate a joined connection's segment beyond its sequence numbers: the window into
/// its receiver's scale, the timestamps into its receiver's clock. `out`: from the server.
pub(super) fn adjust(j: &Join, out: bool, seg: &mut [u8], complete: bool) {
    let doff = usize::from(seg[tcp_field::DATA_OFF] >> 4) * 4;
    let doff = doff.min(seg.len());
    let w = u16::from_be_bytes([seg[14], seg[15]]);
    let nw = j.window(out, w);
    if nw != w {
        super::app::write_bytes(seg, 14, &nw.to_be_bytes(), complete);
    }
    if j.data.ts()
        && doff > tcp_field::MIN_HEADER_LEN
        && let Some(at) = synproxy::find_ts(&seg[tcp_field::MIN_HEADER_LEN..doff])
    {
        let at = tcp_field::MIN_HEADER_LEN + at;
        let rd = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (val, ecr) = j.timestamps(out, (rd(seg, at), rd(seg, at + 4)));
        super::app::write_bytes(seg, at, &val.to_be_bytes(), complete);
        super::app::write_bytes(seg, at + 4, &ecr.to_be_bytes(), complete);
    }
}
