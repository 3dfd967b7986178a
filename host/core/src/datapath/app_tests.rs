//! The helper path with synthetic frames and the built-in `ftp` and `proxy-v2` helpers as
//! wasm: checksums verified, passive replies rewritten, IPVS's sequence rules through
//! retransmissions, SACK blocks, expected connections, a grown segment cut at the MTU.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TcpOptionElement, TransportHeader};

use super::*;
use crate::spec::{Real, Service};
use crate::testkit::{
    CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, FROM_RS, Harness as H, SERVER_IF_MAC, VIP, rr,
    rs_mac,
};
use crate::xmit::gso::TestSink;

const RS: [u8; 4] = [198, 19, 0, 11];

/// One round-robin TCP service on `port` with NAT real server 198.19.0.11 (port 0: the
/// same), as `tweak` leaves it, interface 1 with MTU `mtu` towards it.
fn harness(port: u16, tweak: impl FnOnce(&mut Service), mtu: u32) -> H {
    let mut svc = rr(
        Protocol::Tcp,
        port,
        vec![Real::new(Ipv4Addr::from(RS).into(), 0)],
    );
    tweak(&mut svc);
    let h = H::new(crate::testkit::snapshot(&[svc]), 1 << 12, 0);
    for d in h.snap.dests() {
        d.set_mtu(mtu);
    }
    h
}

#[derive(Default, Clone, Copy)]
struct Seg {
    syn: bool,
    rst: bool,
    ack: Option<u32>,
    sack: Option<(u32, u32)>,
}

/// A TCP frame, client to VIP or real server to client.
fn frame(from_client: bool, ports: (u16, u16), seq: u32, s: Seg, payload: &[u8]) -> Vec<u8> {
    let b = if from_client {
        PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
            .ipv4(CLIENT, VIP, 64)
            .tcp(ports.0, ports.1, seq, 65535)
    } else {
        PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
            .ipv4(RS, CLIENT, 64)
            .tcp(ports.0, ports.1, seq, 65535)
    };
    let mut b = if s.syn { b.syn() } else { b };
    if s.rst {
        b = b.rst();
    }
    if let Some(a) = s.ack {
        b = b.ack(a);
    }
    if let Some(block) = s.sack {
        b = b
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::SelectiveAcknowledgement(block, [None, None, None]),
            ])
            .unwrap();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// What left: (seq, ack, SACK block, payload), with every checksum checked.
#[derive(Debug, PartialEq, Eq)]
struct Out {
    seq: u32,
    ack: u32,
    sack: Option<(u32, u32)>,
    payload: Vec<u8>,
}

fn parse(f: &[u8]) -> Out {
    let h = PacketHeaders::from_ethernet_slice(f).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IP checksum");
    let Some(TransportHeader::Tcp(t)) = &h.transport else {
        panic!("not TCP")
    };
    let body = h.payload.slice();
    assert_eq!(
        usize::from(ip.total_len),
        ip.header_len() + t.header_len() + body.len(),
        "IP length"
    );
    assert_eq!(
        t.checksum,
        t.calc_checksum_ipv4(ip, body).unwrap(),
        "TCP checksum"
    );
    let sack = t.options_iterator().find_map(|o| match o {
        Ok(TcpOptionElement::SelectiveAcknowledgement(b, _)) => Some(b),
        _ => None,
    });
    Out {
        seq: t.sequence_number,
        ack: t.acknowledgment_number,
        sack,
        payload: body.to_vec(),
    }
}

/// Process `f` in a roomy buffer; returns the verdict and every frame that left.
fn send(h: &H, meta: RxMeta, f: &[u8]) -> (Verdict, Vec<Vec<u8>>) {
    send_at(h, 0, meta, f)
}

/// As [`send`], at time `now` (ms).
fn send_at(h: &H, now: u64, meta: RxMeta, f: &[u8]) -> (Verdict, Vec<Vec<u8>>) {
    let mut buf = vec![0u8; 4096];
    buf[..f.len()].copy_from_slice(f);
    let mut sink = TestSink::default();
    let v = h.dp.process_in_buffer(
        &h.snap,
        now,
        meta,
        &Headers::parse(&buf[..f.len()]),
        &mut buf,
        &mut sink,
    );
    let out = match v {
        Verdict::Tx { .. } => vec![buf[..f.len()].to_vec()],
        Verdict::Send { len, .. } => vec![buf[..len].to_vec()],
        Verdict::Segmented { .. } => sink.sent.into_iter().map(|(_, f)| f).collect(),
        _ => vec![],
    };
    (v, out)
}

fn one(h: &H, meta: RxMeta, f: &[u8]) -> Out {
    let (v, out) = send(h, meta, f);
    assert_eq!(out.len(), 1, "{v:?}");
    parse(&out[0])
}

const C0: u32 = 1000;
const S0: u32 = 5000;
const CP: (u16, u16) = (40000, 21);
const SP: (u16, u16) = (21, 40000);

/// The control connection up to ESTABLISHED.
fn handshake(h: &H) {
    let syn = Seg {
        syn: true,
        ..Default::default()
    };
    one(h, FROM_CLIENT, &frame(true, CP, C0, syn, b""));
    let synack = Seg {
        syn: true,
        ack: Some(C0 + 1),
        ..Default::default()
    };
    one(h, FROM_RS, &frame(false, SP, S0, synack, b""));
    let ack = Seg {
        ack: Some(S0 + 1),
        ..Default::default()
    };
    one(h, FROM_CLIENT, &frame(true, CP, C0 + 1, ack, b""));
}

const REPLY: &[u8] = b"227 Entering Passive Mode (198,19,0,11,195,80).\r\n";
const REWRITTEN: &[u8] = b"227 Entering Passive Mode (198,18,100,1,195,80).\r\n";

/// A segment acknowledging `a`.
fn ack(a: u32) -> Seg {
    Seg {
        ack: Some(a),
        ..Default::default()
    }
}

/// The control connection up, a `PASV` and its reply: a data connection to VIP:50000 is
/// expected.
fn passive(h: &H) {
    handshake(h);
    one(
        h,
        FROM_CLIENT,
        &frame(true, CP, C0 + 1, ack(S0 + 1), b"PASV\r\n"),
    );
    one(h, FROM_RS, &frame(false, SP, S0 + 1, ack(C0 + 7), REPLY));
}

#[test]
fn passive_reply_is_rewritten_and_the_stream_shifted() {
    let h = harness(21, |_| (), 0);
    handshake(&h);
    let ack = |a| Seg {
        ack: Some(a),
        ..Default::default()
    };
    let pasv = one(
        &h,
        FROM_CLIENT,
        &frame(true, CP, C0 + 1, ack(S0 + 1), b"PASV\r\n"),
    );
    assert_eq!(pasv.payload, b"PASV\r\n");
    // The reply grows by one byte ("198,19,0,11" to "198,18,100,1").
    let grow = (REWRITTEN.len() - REPLY.len()) as u32;
    assert_eq!(grow, 1);
    let r = one(&h, FROM_RS, &frame(false, SP, S0 + 1, ack(C0 + 7), REPLY));
    assert_eq!(r.payload, REWRITTEN);
    assert_eq!((r.seq, r.ack), (S0 + 1, C0 + 7));
    let next = S0 + 1 + REPLY.len() as u32;
    // The server's next segment is shifted; the client's acknowledgement of it, back.
    let r2 = one(
        &h,
        FROM_RS,
        &frame(false, SP, next, ack(C0 + 7), b"150 Here.\r\n"),
    );
    assert_eq!(r2.seq, next + grow);
    let c = one(
        &h,
        FROM_CLIENT,
        &frame(true, CP, C0 + 7, ack(next + grow + 11), b""),
    );
    assert_eq!(c.ack, next + 11);
    // An ack of the rewritten reply only (before its end) and one of its start.
    let c = one(&h, FROM_CLIENT, &frame(true, CP, C0 + 7, ack(S0 + 1), b""));
    assert_eq!(c.ack, S0 + 1);
    // A retransmission of the reply is rewritten again, keeps its sequence number, and
    // does not count twice.
    let again = one(&h, FROM_RS, &frame(false, SP, S0 + 1, ack(C0 + 7), REPLY));
    assert_eq!((again.seq, again.payload.as_slice()), (S0 + 1, REWRITTEN));
    let r3 = one(
        &h,
        FROM_RS,
        &frame(false, SP, next + 11, ack(C0 + 7), b"226 Done.\r\n"),
    );
    assert_eq!(r3.seq, next + 11 + grow);
    // A SACK block of the client's about the shifted stream is shifted back.
    let sacked = Seg {
        ack: Some(next + grow),
        sack: Some((next + grow + 11, next + grow + 22)),
        ..Default::default()
    };
    let c = one(&h, FROM_CLIENT, &frame(true, CP, C0 + 7, sacked, b""));
    assert_eq!(c.ack, next);
    assert_eq!(c.sack, Some((next + 11, next + 22)));
    let s = h.dp.stats();
    assert_eq!(
        s.helper.expects.load(Relaxed),
        1,
        "one expectation (the repeat exists)"
    );
    assert!(s.helper.rewrites.load(Relaxed) >= 2);

    // The data connection: from any client port to VIP:50000, to the same server.
    let data = Seg {
        syn: true,
        ..Default::default()
    };
    let d = send(&h, FROM_CLIENT, &frame(true, (50123, 50000), 77, data, b""));
    assert!(matches!(d.0, Verdict::Tx { iface: 1 }), "{:?}", d.0);
    let hd = PacketHeaders::from_ethernet_slice(&d.1[0]).unwrap();
    let Some(TransportHeader::Tcp(t)) = &hd.transport else {
        panic!()
    };
    assert_eq!(t.destination_port, 50000);
    assert_eq!(s.helper.expects_matched.load(Relaxed), 1);
    // Its reply goes back as the VIP's port 50000.
    let back = Seg {
        syn: true,
        ack: Some(78),
        ..Default::default()
    };
    let b = send(&h, FROM_RS, &frame(false, (50000, 50123), 9, back, b""));
    assert!(matches!(b.0, Verdict::Tx { iface: 0 }), "{:?}", b.0);
    // The control connection is held while its data connection lives: the data
    // connection, ESTABLISHED at 600 s, outlives the control connection's 900 s.
    let est = Seg {
        ack: Some(10),
        ..Default::default()
    };
    send_at(
        &h,
        600_000,
        FROM_CLIENT,
        &frame(true, (50123, 50000), 78, est, b""),
    );
    assert_eq!(h.conns.len(), 2);
    assert_eq!(h.conns.sweep(901_000), 0, "held by its data connection");
    assert_eq!(h.conns.sweep(1_501_000), 1, "the data connection goes");
    // The control connection's timer was re-armed when it was held (IPVS's expire later).
    assert_eq!(h.conns.sweep(1_801_001), 1);
}

#[test]
fn a_closed_data_connection_reused_by_the_client_stays_with_its_server() {
    // IPVS's is_new_conn_expected: a controlled connection is not rescheduled when a SYN
    // reuses its ports once it is over. An FTP data connection's port is no service, so
    // a new schedule would find none, and the client would get a reset.
    let h = harness(21, |_| (), 0);
    passive(&h);
    let syn = Seg {
        syn: true,
        ..Default::default()
    };
    let data = (50123, 50000);
    let d = send(&h, FROM_CLIENT, &frame(true, data, 77, syn, b""));
    assert!(matches!(d.0, Verdict::Tx { iface: 1 }), "{:?}", d.0);
    // ESTABLISHED, then reset by the client: CLOSE.
    send(&h, FROM_CLIENT, &frame(true, data, 78, ack(10), b""));
    let rst = Seg {
        rst: true,
        ..Default::default()
    };
    send(&h, FROM_CLIENT, &frame(true, data, 78, rst, b""));
    let mut states = Vec::new();
    h.conns.for_each(|c| states.push((c.cport, c.state)));
    assert!(states.contains(&(50123, TcpState::Close)), "{states:?}");
    // The client's next data connection from the same port to the same server port.
    let again = send(&h, FROM_CLIENT, &frame(true, data, 9000, syn, b""));
    assert!(matches!(again.0, Verdict::Tx { iface: 1 }), "{:?}", again.0);
    let hd = PacketHeaders::from_ethernet_slice(&again.1[0]).unwrap();
    let (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(t))) = (&hd.net, &hd.transport)
    else {
        panic!("not TCP/IPv4")
    };
    assert_eq!((ip.destination, t.destination_port), (RS, 50000));
    assert_eq!(h.dp.stats().resets_sent.load(Relaxed), 0);
}

#[test]
fn a_bad_checksum_never_reaches_the_helper() {
    let h = harness(21, |_| (), 0);
    handshake(&h);
    let mut f = frame(
        true,
        CP,
        C0 + 1,
        Seg {
            ack: Some(S0 + 1),
            ..Default::default()
        },
        b"PASV\r\n",
    );
    let last = f.len() - 1;
    f[last] ^= 0x20;
    let (v, _) = send(&h, FROM_CLIENT, &f);
    assert_eq!(v, Verdict::Drop(DropReason::L4BadChecksum));
    assert_eq!(h.dp.stats().helper.calls.load(Relaxed), 0);
}

#[test]
fn active_mode_expects_the_servers_connection_from_port_20() {
    let h = harness(21, |_| (), 0);
    handshake(&h);
    let ack = Seg {
        ack: Some(S0 + 1),
        ..Default::default()
    };
    one(
        &h,
        FROM_CLIENT,
        &frame(true, CP, C0 + 1, ack, b"PORT 198,18,0,2,4,1\r\n"),
    );
    // The server connects from its port 20 to the client's 1025: out as VIP:20.
    let syn = Seg {
        syn: true,
        ..Default::default()
    };
    let (v, out) = send(&h, FROM_RS, &frame(false, (20, 1025), 300, syn, b""));
    assert!(matches!(v, Verdict::Tx { iface: 0 }), "{v:?}");
    let hd = PacketHeaders::from_ethernet_slice(&out[0]).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &hd.net else {
        panic!()
    };
    assert_eq!(ip.source, VIP);
    // A PORT naming another host is refused (no FTP bounce through the VIP).
    one(
        &h,
        FROM_CLIENT,
        &frame(true, CP, C0 + 22, ack, b"PORT 198,18,0,9,4,1\r\n"),
    );
    assert_eq!(h.dp.stats().helper.expects_refused.load(Relaxed), 1);
}

/// One control connection sending `PORT` after `PORT`: each asks for an expected
/// connection, but no more than `HELPER_MAX_EXPECTS_PER_CONN` wait at once (a newer one
/// replaces the oldest), so a client cannot fill the table with them.
#[test]
fn a_hundred_thousand_port_commands_leave_a_handful_of_entries() {
    let h = harness(21, |_| (), 0);
    handshake(&h);
    let mut seq = C0 + 1;
    for i in 0..100_000u32 {
        let port = 1024 + (i % 60_000) as u16;
        let cmd = format!("PORT 198,18,0,2,{},{}\r\n", port >> 8, port & 0xff);
        let (v, _) = send(
            &h,
            FROM_CLIENT,
            &frame(true, CP, seq, ack(S0 + 1), cmd.as_bytes()),
        );
        assert!(!matches!(v, Verdict::Drop(_)), "{i}: {v:?}");
        seq = seq.wrapping_add(cmd.len() as u32);
    }
    let hs = &h.dp.stats().helper;
    assert_eq!(hs.expects.load(Relaxed), 100_000);
    assert_eq!(
        hs.expects_replaced.load(Relaxed),
        100_000 - crate::consts::HELPER_MAX_EXPECTS_PER_CONN as u64
    );
    assert_eq!(
        h.conns.len(),
        1 + crate::consts::HELPER_MAX_EXPECTS_PER_CONN,
        "the control connection and the last few"
    );
    // The newest still works: the server connects from port 20 to it.
    let last = 1024 + (99_999 % 60_000) as u16;
    let syn = Seg {
        syn: true,
        ..Default::default()
    };
    let (v, _) = send(&h, FROM_RS, &frame(false, (20, last), 300, syn, b""));
    assert!(matches!(v, Verdict::Tx { iface: 0 }), "{v:?}");
}

/// A passive reply naming another service's port (80, below 1024) is left alone and
/// expects nothing: the client's next connection to VIP:80 must reach port 80's service.
#[test]
fn a_passive_reply_naming_a_privileged_port_expects_nothing() {
    let h = harness(21, |_| (), 0);
    handshake(&h);
    one(
        &h,
        FROM_CLIENT,
        &frame(true, CP, C0 + 1, ack(S0 + 1), b"PASV\r\n"),
    );
    let reply = b"227 Entering Passive Mode (198,19,0,11,0,80).\r\n";
    send(&h, FROM_RS, &frame(false, SP, S0 + 1, ack(C0 + 7), reply));
    let hs = &h.dp.stats().helper;
    assert_eq!(hs.expects.load(Relaxed), 0);
    assert_eq!(hs.expects_refused.load(Relaxed), 1);
    assert_eq!(h.conns.len(), 1, "only the control connection");
}

#[test]
fn proxy_header_goes_before_the_first_byte_and_a_grown_segment_is_cut() {
    // MTU 600 towards the server: a 560-byte first segment plus the 28-byte header is too
    // long, and leaves in two segments.
    let h = harness(
        8080,
        |s| {
            s.laddrs = vec![Ipv4Addr::new(198, 19, 0, 1).into()];
            s.helpers = Some(vec!["proxy-v2".into()]);
        },
        600,
    );
    let cfg_fwd = |h: &H| {
        for d in h.snap.dests() {
            d.set_forward(crate::model::Forward::FullNat);
        }
    };
    cfg_fwd(&h);
    let cp = (40000, 8080);
    let syn = Seg {
        syn: true,
        ..Default::default()
    };
    let s = one(&h, FROM_CLIENT, &frame(true, cp, C0, syn, b""));
    let body = vec![b'x'; 560];
    let ack = Seg {
        ack: Some(1),
        ..Default::default()
    };
    let (v, out) = send(&h, FROM_CLIENT, &frame(true, cp, C0 + 1, ack, &body));
    assert!(matches!(v, Verdict::Segmented { count: 2 }), "{v:?}");
    let segs: Vec<Out> = out.iter().map(|f| parse(f)).collect();
    let all: Vec<u8> = segs.iter().flat_map(|o| o.payload.clone()).collect();
    assert_eq!(all.len(), 28 + 560);
    assert_eq!(&all[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(&all[16..20], &CLIENT);
    assert_eq!(&all[28..], &body[..]);
    assert_eq!(segs[0].seq, C0 + 1);
    assert_eq!(segs[1].seq, C0 + 1 + segs[0].payload.len() as u32);
    assert_eq!(h.dp.stats().helper.segmented.load(Relaxed), 1);
    // The next segment is shifted by the header.
    let n = one(&h, FROM_CLIENT, &frame(true, cp, C0 + 561, ack, b"more"));
    assert_eq!(n.seq, C0 + 561 + 28);
    assert_eq!(n.payload, b"more");
    let _ = s;
}

#[test]
fn an_expected_connection_is_controlled_by_the_template_too() {
    // A persistent FTP service: the template counts the control connection and the data
    // connection it expected (IPVS's n_control), so it outlives neither.
    let h = harness(21, |s| s.persistent = Some(300), 0);
    handshake(&h);
    let ack = |a| Seg {
        ack: Some(a),
        ..Default::default()
    };
    one(
        &h,
        FROM_CLIENT,
        &frame(true, CP, C0 + 1, ack(S0 + 1), b"PASV\r\n"),
    );
    one(&h, FROM_RS, &frame(false, SP, S0 + 1, ack(C0 + 7), REPLY));
    let mut controls = Vec::new();
    h.conns
        .persist()
        .for_each(|_, t| controls.push(t.controls()));
    assert_eq!(controls, [2]);
}

#[test]
fn icmp_errors_about_data_connections_are_relayed() {
    let h = harness(21, |_| (), 0);
    passive(&h);
    let syn = Seg {
        syn: true,
        ..Default::default()
    };
    one(&h, FROM_CLIENT, &frame(true, (50123, 50000), 77, syn, b""));
    // A router on the client's side cannot forward a reply VIP:50000 -> client:50123.
    let mut quote = frame(false, (50000, 50123), 9, ack(78), b"data")[14..42].to_vec();
    quote[12..16].copy_from_slice(&VIP);
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
    icmp.extend_from_slice(&quote);
    let c = checksum::compute(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut e = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4([198, 18, 0, 254], VIP, 64)
        .write(&mut e, etherparse::IpNumber::ICMP, &icmp)
        .unwrap();
    let (v, out) = send(&h, FROM_CLIENT, &e);
    assert_eq!(v, Verdict::Tx { iface: 1 }, "to the real server");
    assert_eq!(&out[0][14 + 16..14 + 20], &RS, "addressed to it");
}
