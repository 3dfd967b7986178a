//! The synproxy with synthetic frames: the cookie's SYN-ACK, the server's SYN from the
//! client's ACK, the join (an ACK to the server, a window update to the client), the
//! translation of both directions afterwards, forged ACKs, a refusing server and a silent
//! one.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

use super::*;
use crate::spec::{Service, SynproxyMode};
use crate::synproxy::{SynOpts, parse_options, write_options};
use crate::testkit::{CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, FROM_RS, Harness, VIP};
use crate::xmit::gso::TestSink;

const RS: [u8; 4] = [198, 19, 0, 11];

fn harness(mode: Option<SynproxyMode>) -> Harness {
    let mut svc = crate::testkit::rr(
        Protocol::Tcp,
        80,
        vec![crate::testkit::real("198.19.0.11:8080")],
    );
    svc.synproxy = mode;
    Harness::new(
        Snapshot::build_native(&[svc], &Snapshot::default()),
        1 << 12,
        1,
    )
}

/// A TCP segment's fields: (seq, ack, syn, ack flag, rst, window, options, payload).
struct Seg {
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    rst: bool,
    window: u16,
    opts: Vec<u8>,
    payload: Vec<u8>,
}

fn seg(seq: u32, ack: Option<u32>, syn: bool, window: u16, opts: &[u8], payload: &[u8]) -> Seg {
    Seg {
        seq,
        ack,
        syn,
        rst: false,
        window,
        opts: opts.to_vec(),
        payload: payload.to_vec(),
    }
}

/// The frame of segment `s` from `src` to `dst` (IPv4 or IPv6), between `macs`.
fn frame_of(
    macs: ([u8; 6], [u8; 6]),
    src: (std::net::IpAddr, u16),
    dst: (std::net::IpAddr, u16),
    s: &Seg,
) -> Vec<u8> {
    use std::net::IpAddr;
    let b = PacketBuilder::ethernet2(macs.0, macs.1);
    let b = match (src.0, dst.0) {
        (IpAddr::V4(a), IpAddr::V4(d)) => b.ipv4(a.octets(), d.octets(), 64),
        (IpAddr::V6(a), IpAddr::V6(d)) => b.ipv6(a.octets(), d.octets(), 64),
        _ => unreachable!("one family"),
    };
    let b = b.tcp(src.1, dst.1, s.seq, s.window);
    let b = if s.syn { b.syn() } else { b };
    let b = if s.rst { b.rst() } else { b };
    let b = match s.ack {
        Some(a) => b.ack(a),
        None => b,
    };
    let b = b.options_raw(&s.opts).unwrap();
    let mut out = Vec::new();
    b.write(&mut out, &s.payload).unwrap();
    out.resize(2048, 0);
    out
}

/// A frame of the client's (`from_client`) to VIP:80, or of the real server's back to it.
fn frame(from_client: bool, cport: u16, s: &Seg) -> Vec<u8> {
    let (client, rs) = (
        (Ipv4Addr::from(CLIENT).into(), cport),
        (Ipv4Addr::from(RS).into(), 8080),
    );
    if from_client {
        frame_of(
            (CLIENT_MAC, CLIENT_IF_MAC),
            client,
            (Ipv4Addr::from(VIP).into(), 80),
            s,
        )
    } else {
        let macs = (crate::testkit::rs_mac(11), crate::testkit::SERVER_IF_MAC);
        frame_of(macs, rs, client, s)
    }
}

/// What a frame wvs sent holds: addresses, ports and the segment.
struct Out {
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: (bool, bool, bool),
    window: u16,
    opts: Vec<u8>,
    payload: Vec<u8>,
}

fn read(f: &[u8]) -> Out {
    let p = PacketHeaders::from_ethernet_slice(f).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = p.net else {
        panic!("not IPv4")
    };
    let Some(TransportHeader::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    // Both checksums hold.
    let ip_bytes = &f[14..14 + usize::from(ip.total_len)];
    assert_eq!(crate::wire::checksum::compute(&ip_bytes[..20]), 0);
    let src = Ipv4Addr::from(ip.source);
    let dst = Ipv4Addr::from(ip.destination);
    assert_eq!(
        crate::wire::checksum::l4(src.into(), dst.into(), 6, &ip_bytes[20..]),
        0,
        "TCP checksum"
    );
    Out {
        src: (src, t.source_port),
        dst: (dst, t.destination_port),
        seq: t.sequence_number,
        ack: t.acknowledgment_number,
        flags: (t.syn, t.ack, t.rst),
        window: t.window_size,
        opts: t.options.as_slice().to_vec(),
        payload: p.payload.slice().to_vec(),
    }
}

fn ts(val: u32, ecr: u32) -> Vec<u8> {
    let mut v = vec![1, 1, 8, 10];
    v.extend(val.to_be_bytes());
    v.extend(ecr.to_be_bytes());
    v
}

fn syn_opts(mss: u16, ts: Option<(u32, u32)>, ws: Option<u8>) -> Vec<u8> {
    let mut b = [0u8; 40];
    let n = write_options(&mut b, mss, true, ts, ws);
    b[..n].to_vec()
}

fn run(h: &Harness, now: u64, meta: RxMeta, f: &mut [u8], sink: &mut TestSink) -> Verdict {
    let headers = Headers::parse(f);
    h.dp.process_in_buffer(&h.snap, now, meta, &headers, f, sink)
}

fn sent(v: Verdict, f: &[u8]) -> (u8, Out) {
    match v {
        Verdict::Send { iface, len, .. } => (iface, read(&f[..len])),
        Verdict::Tx { iface } => (iface, read(f)),
        v => panic!("not sent: {v:?}"),
    }
}

/// Client's SYN → cookie SYN-ACK; returns (cookie, our tsval).
fn handshake(h: &Harness, now: u64, cport: u16) -> (u32, u32) {
    let mut f = frame(
        true,
        cport,
        &seg(
            1000,
            None,
            true,
            64240,
            &syn_opts(1460, Some((100, 0)), Some(9)),
            &[],
        ),
    );
    let mut sink = TestSink::default();
    let (iface, o) = sent(run(h, now, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!(iface, 0);
    assert_eq!(o.src, (Ipv4Addr::from(VIP), 80));
    assert_eq!(o.dst, (Ipv4Addr::from(CLIENT), cport));
    assert_eq!(o.flags, (true, true, false));
    assert_eq!((o.ack, o.window), (1001, 0));
    assert_eq!(&f[..6], &CLIENT_MAC, "back to the client's MAC");
    let opts = parse_options(&o.opts);
    let (tsval, tsecr) = opts.ts.unwrap();
    assert_eq!(
        (opts.mss, opts.wscale, opts.sack, tsecr),
        (1460, Some(7), true, 100)
    );
    (o.seq, tsval)
}

#[test]
fn a_synproxied_connection_is_made_joined_and_translated() {
    let h = harness(Some(SynproxyMode::On));
    let now = 1_000_000;
    let (cookie, our_ts) = handshake(&h, now, 40000);
    assert_eq!(h.conns.len(), 0, "a SYN makes no entry");
    // A forged ACK: dropped, no entry.
    let mut f = frame(
        true,
        40001,
        &seg(5, Some(12345), false, 502, &ts(101, our_ts), &[]),
    );
    let mut sink = TestSink::default();
    // Answered as a segment of no connection: a reset from the VIP.
    let (iface, o) = sent(run(&h, now, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!(
        (iface, o.src, o.flags),
        (0, (Ipv4Addr::from(VIP), 80), (false, false, true))
    );
    assert_eq!(o.seq, 12345);
    assert_eq!(h.dp.stats().drops(DropReason::SynproxyBadAck), 1);
    assert_eq!(h.conns.len(), 0);
    // The client's ACK: the server gets the client's SYN.
    let mut f = frame(
        true,
        40000,
        &seg(1001, Some(cookie + 1), false, 502, &ts(101, our_ts), &[]),
    );
    let (iface, o) = sent(run(&h, now + 1, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!(iface, 1);
    assert_eq!(o.src, (Ipv4Addr::from(CLIENT), 40000));
    assert_eq!(o.dst, (Ipv4Addr::from(RS), 8080));
    assert_eq!(o.flags, (true, false, false));
    assert_eq!(o.seq, 1000);
    assert_eq!(o.window, u16::MAX, "502 << 9, unscaled in a SYN");
    assert_eq!(
        parse_options(&o.opts),
        SynOpts {
            mss: 1460,
            wscale: Some(9),
            sack: true,
            ts: Some((101, 0))
        }
    );
    assert_eq!(h.conns.len(), 1);
    // A probe of the client's while the server is silent: the SYN again.
    let mut f = frame(
        true,
        40000,
        &seg(1000, Some(cookie + 1), false, 502, &ts(102, our_ts), &[]),
    );
    let (_, o) = sent(run(&h, now + 200, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!((o.flags, o.seq), ((true, false, false), 1000));
    // The server's SYN-ACK: an ACK to the server, a window update to the client.
    let mut f = frame(
        false,
        40000,
        &seg(
            7_000_000,
            Some(1001),
            true,
            65160,
            &syn_opts(1400, Some((9000, 101)), Some(7)),
            &[],
        ),
    );
    let mut sink = TestSink::default();
    let (iface, o) = sent(run(&h, now + 2, FROM_RS, &mut f, &mut sink), &f);
    assert_eq!(iface, 1);
    assert_eq!(o.dst, (Ipv4Addr::from(RS), 8080));
    assert_eq!(o.flags, (false, true, false));
    assert_eq!((o.seq, o.ack, o.window), (1001, 7_000_001, 502));
    assert_eq!(parse_options(&o.opts).ts, Some((101, 9000)));
    assert_eq!(sink.sent.len(), 1);
    let (iface, wu) = (sink.sent[0].0, read(&sink.sent[0].1));
    assert_eq!(iface, 0);
    assert_eq!(&sink.sent[0].1[..6], &CLIENT_MAC);
    assert_eq!(wu.src, (Ipv4Addr::from(VIP), 80));
    assert_eq!(wu.flags, (false, true, false));
    assert_eq!((wu.seq, wu.ack, wu.window), (cookie + 1, 1001, 65160 >> 7));
    assert_eq!(parse_options(&wu.opts).ts, Some((our_ts, 101)));
    // The server's data: in the cookie's sequence space and timestamps.
    let mut f = frame(
        false,
        40000,
        &seg(7_000_001, Some(1001), false, 500, &ts(9005, 101), b"hello"),
    );
    let (iface, o) = sent(run(&h, now + 3, FROM_RS, &mut f, &mut sink), &f);
    assert_eq!(iface, 0);
    assert_eq!(o.src, (Ipv4Addr::from(VIP), 80));
    assert_eq!((o.seq, o.ack, o.window), (cookie + 1, 1001, 500));
    assert_eq!(parse_options(&o.opts).ts, Some((our_ts + 5, 101)));
    assert_eq!(o.payload, b"hello");
    // The client's answer: in the server's.
    let mut f = frame(
        true,
        40000,
        &seg(
            1001,
            Some(cookie + 6),
            false,
            600,
            &ts(103, our_ts + 5),
            b"hi",
        ),
    );
    let (iface, o) = sent(run(&h, now + 4, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!(iface, 1);
    assert_eq!((o.seq, o.ack, o.window), (1001, 7_000_006, 600));
    assert_eq!(parse_options(&o.opts).ts, Some((103, 9005)));
    assert_eq!(o.payload, b"hi");
    let s = StatsSum::of([&**h.dp.stats()]);
    assert_eq!(s.synproxy, [1, 1, 1, 1, 1, 0]);
}

#[test]
fn a_refusing_server_resets_the_client_and_leaves_nothing() {
    let h = harness(Some(SynproxyMode::On));
    let now = 5_000_000;
    let (cookie, our_ts) = handshake(&h, now, 40010);
    let mut f = frame(
        true,
        40010,
        &seg(1001, Some(cookie + 1), false, 502, &ts(101, our_ts), &[]),
    );
    let mut sink = TestSink::default();
    sent(run(&h, now, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!(h.conns.len(), 1);
    let mut rst = seg(0, Some(1001), false, 0, &[], &[]);
    rst.rst = true;
    let mut f = frame(false, 40010, &rst);
    let (iface, o) = sent(run(&h, now + 1, FROM_RS, &mut f, &mut sink), &f);
    assert_eq!(iface, 0);
    assert_eq!(o.dst, (Ipv4Addr::from(CLIENT), 40010));
    assert_eq!(o.flags, (false, false, true));
    assert_eq!(o.seq, cookie + 1);
    assert_eq!(h.conns.len(), 0, "the connection went with the reset");
}

/// Whatever a side sends twice: a client's SYN gets the same SYN-ACK and still no entry;
/// its ACK again makes no second connection (the server, silent so far, gets the SYN
/// again); the server's SYN-ACK again gets the ACK again, without a second window update
/// to the client; after the join the client's ACK again is translated and passed on.
#[test]
fn retransmitted_syns_acks_and_syn_acks() {
    let h = harness(Some(SynproxyMode::On));
    let now = 12_000_000;
    let (cookie, our_ts) = handshake(&h, now, 40040);
    assert_eq!(handshake(&h, now + 1000, 40040), (cookie, our_ts));
    assert_eq!(h.conns.len(), 0);
    let ack = || {
        frame(
            true,
            40040,
            &seg(1001, Some(cookie + 1), false, 502, &ts(101, our_ts), &[]),
        )
    };
    let mut sink = TestSink::default();
    for _ in 0..2 {
        let mut f = ack();
        let (iface, o) = sent(run(&h, now + 1001, FROM_CLIENT, &mut f, &mut sink), &f);
        assert_eq!((iface, o.flags, o.seq), (1, (true, false, false), 1000));
        assert_eq!(h.conns.len(), 1);
    }
    let syn_ack = || {
        frame(
            false,
            40040,
            &seg(
                7_000_000,
                Some(1001),
                true,
                65160,
                &syn_opts(1400, Some((9000, 101)), Some(7)),
                &[],
            ),
        )
    };
    for updates in [1, 0] {
        let mut sink = TestSink::default();
        let mut f = syn_ack();
        let (iface, o) = sent(run(&h, now + 1002, FROM_RS, &mut f, &mut sink), &f);
        assert_eq!((iface, o.flags), (1, (false, true, false)));
        assert_eq!((o.seq, o.ack), (1001, 7_000_001));
        assert_eq!(sink.sent.len(), updates, "window updates to the client");
    }
    let mut f = ack();
    let (iface, o) = sent(run(&h, now + 1003, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!((iface, o.flags), (1, (false, true, false)));
    assert_eq!((o.seq, o.ack), (1001, 7_000_001));
    assert_eq!(h.conns.len(), 1);
    let s = StatsSum::of([&**h.dp.stats()]);
    // Cookies sent, ACKs accepted and rejected, SYNs sent again, joins, server resets.
    assert_eq!(s.synproxy, [2, 1, 0, 1, 1, 0]);
}

#[test]
fn a_client_without_options_and_with_data_in_its_ack() {
    let h = harness(Some(SynproxyMode::On));
    let now = 9_000_000;
    let mut f = frame(true, 40020, &seg(77, None, true, 8192, &[], &[]));
    let mut sink = TestSink::default();
    let (_, o) = sent(run(&h, now, FROM_CLIENT, &mut f, &mut sink), &f);
    let opts = parse_options(&o.opts);
    assert_eq!(
        (opts.mss, opts.wscale, opts.sack, opts.ts),
        (536, None, false, None)
    );
    let cookie = o.seq;
    let mut f = frame(
        true,
        40020,
        &seg(
            78,
            Some(cookie + 1),
            false,
            8192,
            &[],
            b"GET / HTTP/1.0\r\n\r\n",
        ),
    );
    let (_, o) = sent(run(&h, now, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!((o.flags, o.seq, o.window), ((true, false, false), 77, 8192));
    assert!(o.payload.is_empty(), "the data waits for the server");
    let mut f = frame(
        false,
        40020,
        &seg(555, Some(78), true, 29200, &syn_opts(1460, None, None), &[]),
    );
    let (_, o) = sent(run(&h, now, FROM_RS, &mut f, &mut sink), &f);
    assert_eq!((o.seq, o.ack), (78, 556));
    assert_eq!(o.payload, b"GET / HTTP/1.0\r\n\r\n");
    assert!(o.opts.is_empty());
    let wu = read(&sink.sent[0].1);
    assert_eq!((wu.seq, wu.ack, wu.window), (cookie + 1, 78, 29200));
}

#[test]
fn auto_follows_the_defense_and_off_passes_syns_on() {
    // Off: the SYN goes to the server as IPVS sends it.
    let h = harness(Some(SynproxyMode::Off));
    let mut f = frame(true, 40030, &seg(1, None, true, 8192, &[], &[]));
    let mut sink = TestSink::default();
    let (iface, o) = sent(run(&h, 1, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!((iface, o.dst.0), (1, Ipv4Addr::from(RS)));
    // The default (defense.synproxy = 1): off until the table is short.
    let h = harness(None);
    let mut f = frame(true, 40031, &seg(1, None, true, 8192, &[], &[]));
    let (iface, _) = sent(run(&h, 1, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!(iface, 1);
    // 4000 entries used of 4096 (threshold 75 %): short.
    h.conns.defense().update(4000, 4096, None);
    assert!(h.conns.defense().synproxy());
    let mut f = frame(true, 40032, &seg(1, None, true, 8192, &[], &[]));
    let (iface, o) = sent(run(&h, 1, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!((iface, o.flags), (0, (true, true, false)));
    h.conns.defense().update(10, 4096, None);
    assert!(!h.conns.defense().synproxy());
    let n = h.dp.stats().synproxy.cookies_sent.load(Relaxed);
    assert_eq!(n, 1);
}

/// The join over IPv6 and over full NAT: the same steps with other addresses. `v6`: the
/// service and its server are IPv6; `fullnat`: the server sees a local address.
fn join_over(v6: bool, fullnat: bool) {
    use std::net::{IpAddr, Ipv6Addr};
    let (client, vip, rs, laddr): (IpAddr, IpAddr, IpAddr, IpAddr) = if v6 {
        (
            Ipv6Addr::from(crate::testkit::CLIENT6).into(),
            Ipv6Addr::from(crate::testkit::VIP6).into(),
            Ipv6Addr::from(crate::testkit::rs6(11)).into(),
            "2001:db8:19::100".parse().unwrap(),
        )
    } else {
        (
            Ipv4Addr::from(CLIENT).into(),
            Ipv4Addr::from(VIP).into(),
            Ipv4Addr::from(RS).into(),
            "198.19.0.100".parse().unwrap(),
        )
    };
    let fwd = if fullnat {
        Forward::FullNat
    } else {
        Forward::Masq
    };
    let rs_at = match rs {
        IpAddr::V6(a) => format!("[{a}]:8080"),
        a => format!("{a}:8080"),
    };
    let mut svc = Service {
        reals: vec![crate::testkit::real_by(&rs_at, fwd)],
        laddrs: if fullnat { vec![laddr] } else { vec![] },
        ..Service::new(Protocol::Tcp, vip, 80, "rr")
    };
    svc.synproxy = Some(SynproxyMode::On);
    let h = Harness::new(
        Snapshot::build_native(&[svc], &Snapshot::default()),
        1 << 12,
        1,
    );
    // A frame from `src` to `dst` (MACs as the client's, or the server's, link has them).
    let frame = |from_client: bool, src: (IpAddr, u16), dst: (IpAddr, u16), s: &Seg| {
        let macs = if from_client {
            (CLIENT_MAC, CLIENT_IF_MAC)
        } else {
            (crate::testkit::rs_mac(11), crate::testkit::SERVER_IF_MAC)
        };
        frame_of(macs, src, dst, s)
    };
    // (src, dst, seq, ack, syn, window, options, payload) of a frame wvs sent.
    let read_any = |f: &[u8]| {
        let p = PacketHeaders::from_ethernet_slice(f).unwrap();
        let (src, dst): (IpAddr, IpAddr) = match p.net {
            Some(NetHeaders::Ipv4(ip, _)) => (
                Ipv4Addr::from(ip.source).into(),
                Ipv4Addr::from(ip.destination).into(),
            ),
            Some(NetHeaders::Ipv6(ip, _)) => (
                Ipv6Addr::from(ip.source).into(),
                Ipv6Addr::from(ip.destination).into(),
            ),
            _ => panic!("not IP"),
        };
        let Some(TransportHeader::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        let l4 = 14 + if src.is_ipv6() { 40 } else { 20 };
        let end = l4 + t.header_len() + p.payload.slice().len();
        assert_eq!(
            crate::wire::checksum::l4(src, dst, 6, &f[l4..end]),
            0,
            "TCP checksum"
        );
        (
            (src, t.source_port),
            (dst, t.destination_port),
            t.sequence_number,
            t.acknowledgment_number,
            t.syn,
            t.window_size,
            t.options.as_slice().to_vec(),
        )
    };
    let got = |v: Verdict, f: &[u8]| match v {
        Verdict::Send { len, .. } => read_any(&f[..len]),
        Verdict::Tx { .. } => read_any(f),
        v => panic!("not sent: {v:?}"),
    };
    let c = (client, 40100);
    let v = (vip, 80);
    let mut sink = TestSink::default();
    let mss = if v6 { 1440 } else { 1460 };
    let mut f = frame(
        true,
        c,
        v,
        &seg(
            500,
            None,
            true,
            64240,
            &syn_opts(mss, Some((100, 0)), Some(9)),
            &[],
        ),
    );
    let (src, dst, cookie, ack, syn, win, opts) =
        got(run(&h, 1, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!((src, dst, ack, syn, win), (v, c, 501, true, 0));
    let our_ts = parse_options(&opts).ts.unwrap().0;
    let mut f = frame(
        true,
        c,
        v,
        &seg(501, Some(cookie + 1), false, 502, &ts(101, our_ts), &[]),
    );
    let (src, dst, seq, _, syn, _, opts) = got(run(&h, 2, FROM_CLIENT, &mut f, &mut sink), &f);
    let seen = if fullnat { laddr } else { client };
    assert_eq!((src.0, dst, seq, syn), (seen, (rs, 8080), 500, true));
    assert_eq!(parse_options(&opts).mss, mss);
    let lport = src.1;
    let mut f = frame(
        false,
        (rs, 8080),
        (seen, lport),
        &seg(
            9_000,
            Some(501),
            true,
            65160,
            &syn_opts(1400, Some((9000, 101)), Some(7)),
            &[],
        ),
    );
    let mut sink = TestSink::default();
    let (src, dst, seq, ack, _, _, _) = got(run(&h, 3, FROM_RS, &mut f, &mut sink), &f);
    assert_eq!(
        (src, dst, seq, ack),
        ((seen, lport), (rs, 8080), 501, 9_001)
    );
    let wu = read_any(&sink.sent[0].1);
    assert_eq!((wu.0, wu.1, wu.2, wu.3), (v, c, cookie + 1, 501));
    // Data both ways.
    let mut f = frame(
        false,
        (rs, 8080),
        (seen, lport),
        &seg(9_001, Some(501), false, 500, &ts(9005, 101), b"hello"),
    );
    let (src, dst, seq, _, _, _, opts) = got(run(&h, 4, FROM_RS, &mut f, &mut sink), &f);
    assert_eq!((src, dst, seq), (v, c, cookie + 1));
    assert_eq!(parse_options(&opts).ts, Some((our_ts + 5, 101)));
    let mut f = frame(
        true,
        c,
        v,
        &seg(
            501,
            Some(cookie + 6),
            false,
            600,
            &ts(103, our_ts + 5),
            b"hi",
        ),
    );
    let (src, dst, _, ack, _, _, opts) = got(run(&h, 5, FROM_CLIENT, &mut f, &mut sink), &f);
    assert_eq!((src, dst, ack), ((seen, lport), (rs, 8080), 9_006));
    assert_eq!(parse_options(&opts).ts, Some((103, 9005)));
}

#[test]
fn the_join_holds_over_ipv6_and_full_nat() {
    join_over(true, false);
    join_over(false, true);
    join_over(true, true);
}
