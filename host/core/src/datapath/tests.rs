//! Datapath tests with synthetic frames: NAT both ways with valid checksums, the IPVS state
//! and counter rules, scheduling, and malformed input counted and dropped without a panic.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use proptest::prelude::*;

use super::*;
use crate::model::{TunCsum, TunKind};
use crate::spec::{Real, Service};
use crate::testkit::{
    CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT as COMPLETE, FROM_RS, Harness, IPIP,
    SERVER_IF_MAC, VIP, real, real_by, rr, rs_mac, tunnel,
};
use crate::xmit::gso::TestSink;

/// The snapshot the control plane publishes next: the round-robin TCP service on the VIP
/// with `reals` (listed as in the configuration file), `h`'s state carried over.
fn next_snapshot(h: &Harness, reals: &[&str]) -> Snapshot {
    let svc = rr(Protocol::Tcp, 80, reals.iter().map(|r| real(r)).collect());
    Snapshot::build_native(&[svc], &h.snap)
}

fn harness_with(max_conns: usize) -> Harness {
    // Real servers are listed last to first: schedulers see them newest first, as IPVS
    // does, so round robin starts at .11.
    let services = [
        rr(
            Protocol::Tcp,
            80,
            ["198.19.0.13:8080", "198.19.0.12:8080", "198.19.0.11:8080"]
                .map(real)
                .into(),
        ),
        rr(
            Protocol::Udp,
            9000,
            ["198.19.0.12:9000", "198.19.0.11:9000"].map(real).into(),
        ),
    ];
    harness_of(&services, max_conns)
}

/// A harness over `services`, every real server reachable on interface 1.
fn harness_of(services: &[Service], max_conns: usize) -> Harness {
    Harness::new(
        Snapshot::build_native(services, &Snapshot::default()),
        max_conns,
        1,
    )
}

/// `process_in_buffer` on the frame of `len` bytes at the start of `buf`, its headers read
/// as the I/O layer reads them.
fn in_buffer(
    h: &Harness,
    now: u64,
    meta: RxMeta,
    buf: &mut [u8],
    len: usize,
    sink: &mut dyn crate::xmit::gso::SegmentSink,
) -> Verdict {
    let headers = Headers::parse(&buf[..len]);
    h.dp.process_in_buffer(&h.snap, now, meta, &headers, buf, sink)
}

fn harness() -> Harness {
    harness_with(1 << 16)
}

#[derive(Clone, Copy)]
pub(super) enum F {
    Syn,
    SynAck,
    Ack,
    Fin,
    Rst,
    Psh,
}

pub(super) fn tcp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    f: F,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, 1000, 65535);
    let b = match f {
        F::Syn => b.syn(),
        F::SynAck => b.syn().ack(1001),
        F::Ack => b.ack(1),
        F::Fin => b.fin().ack(1),
        F::Rst => b.rst(),
        F::Psh => b.psh(),
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub(super) fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, 64)
        .udp(src.1, dst.1)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// A TCP segment from the client's `cport` to the VIP's port 80.
fn client_seg(cport: u16, f: F, payload: &[u8]) -> Vec<u8> {
    tcp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, cport),
        (VIP, 80),
        f,
        payload,
    )
}

/// A TCP segment from rs1's port 8080 to the client's `cport`.
fn rs1_seg(cport: u16, f: F, payload: &[u8]) -> Vec<u8> {
    tcp_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        ([198, 19, 0, 11], 8080),
        (CLIENT, cport),
        f,
        payload,
    )
}

fn client_syn(cport: u16) -> Vec<u8> {
    client_seg(cport, F::Syn, b"")
}

/// Parse a frame with etherparse and check every checksum independently of our code.
fn check_frame(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16, u8) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("frame parses");
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not ipv4")
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "ip checksum");
    let payload = h.payload.slice();
    let (sport, dport) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(ip, payload).unwrap(),
                "tcp checksum"
            );
            (t.source_port, t.destination_port)
        }
        Some(TransportHeader::Udp(u)) => {
            if u.checksum != 0 {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv4(ip, payload).unwrap(),
                    "udp checksum"
                );
            }
            (u.source_port, u.destination_port)
        }
        _ => panic!("no transport"),
    };
    (
        Ipv4Addr::from(ip.source),
        sport,
        Ipv4Addr::from(ip.destination),
        dport,
        ip.time_to_live,
    )
}

#[test]
fn tcp_nat_both_ways_with_valid_checksums() {
    let h = harness();
    let mut syn = client_syn(40000);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    let (s, sp, d, dp, ttl) = check_frame(&syn);
    assert_eq!(
        (s, sp),
        (Ipv4Addr::from(CLIENT), 40000),
        "client address is preserved (NAT)"
    );
    assert_eq!((d, dp), ("198.19.0.11".parse().unwrap(), 8080));
    assert_eq!(
        ttl, 63,
        "forwarded: one hop less, as IPVS's decrement_ttl in __ip_vs_get_out_rt"
    );
    assert_eq!(&syn[0..6], &rs_mac(11), "to the real server's MAC");
    assert_eq!(
        &syn[6..12],
        &SERVER_IF_MAC,
        "from the server-side interface"
    );

    let rs = [198, 19, 0, 11];
    let mut synack = rs1_seg(40000, F::SynAck, b"");
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut synack),
        Verdict::Tx { iface: 0 }
    );
    let (s, sp, d, dp, ttl) = check_frame(&synack);
    assert_eq!(
        (s, sp, d, dp),
        (Ipv4Addr::from(VIP), 80, Ipv4Addr::from(CLIENT), 40000)
    );
    assert_eq!(ttl, 63, "replies are forwarded: one hop less");
    assert_eq!(
        &synack[0..6],
        &CLIENT_MAC,
        "back to the MAC the client's packets came from"
    );
    assert_eq!(&synack[6..12], &CLIENT_IF_MAC);

    let dest = h
        .snap
        .dests()
        .find(|d| d.addr == IpAddr::V4(rs.into()) && d.port == 8080)
        .unwrap()
        .clone();
    assert_eq!(
        (
            dest.activeconns.load(Relaxed),
            dest.inactconns.load(Relaxed)
        ),
        (1, 0),
        "SYN_RECV is active (tcp_state_active)"
    );
    let mut ack = client_seg(40000, F::Ack, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        h.dp.process(&h.snap, 2, COMPLETE, &mut ack),
        Verdict::Tx { iface: 1 }
    );
    check_frame(&ack);
    assert_eq!(
        (
            dest.activeconns.load(Relaxed),
            dest.inactconns.load(Relaxed)
        ),
        (1, 0),
        "ESTABLISHED is active"
    );
    let mut state = None;
    h.conns.for_each(|c| state = Some((c.state, c.expires)));
    assert_eq!(state, Some((TcpState::Established, 2 + 900_000)));

    // Client closes: FIN -> CLOSE_WAIT, inactive again; after its 60 s timeout it is swept.
    let mut fin = client_seg(40000, F::Fin, b"");
    assert_eq!(
        h.dp.process(&h.snap, 3, COMPLETE, &mut fin),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(
        (
            dest.activeconns.load(Relaxed),
            dest.inactconns.load(Relaxed)
        ),
        (0, 1)
    );
    assert_eq!(h.conns.sweep(3 + 59_999), 0);
    assert_eq!(h.conns.sweep(3 + 60_000), 1);
    assert_eq!(
        (
            dest.activeconns.load(Relaxed),
            dest.inactconns.load(Relaxed)
        ),
        (0, 0)
    );
}

#[test]
fn round_robin_over_thirty_connections() {
    let h = harness();
    let mut per = std::collections::HashMap::new();
    for p in 0..30u16 {
        let mut f = client_syn(50000 + p);
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut f),
            Verdict::Tx { iface: 1 }
        );
        *per.entry(check_frame(&f).2).or_insert(0) += 1;
    }
    assert_eq!(per.len(), 3);
    assert!(per.values().all(|&n| n == 10), "{per:?}");
    assert_eq!(h.dp.stats().conns.load(Relaxed), 30);
}

#[test]
fn only_syn_starts_a_tcp_connection() {
    let h = harness();
    // IPVS schedules on SYN without RST, SYN+ACK included (for active FTP): only these don't.
    for f in [F::Ack, F::Fin, F::Rst, F::Psh] {
        let mut fr = tcp_frame(CLIENT_MAC, CLIENT_IF_MAC, (CLIENT, 1234), (VIP, 80), f, b"");
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut fr),
            Verdict::Drop(DropReason::NoConnIn)
        );
    }
    assert!(h.conns.is_empty());
    // A reply from a real server port that no connection expects.
    let mut r = rs1_seg(9, F::Ack, b"");
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_RS, &mut r),
        Verdict::Drop(DropReason::NoConnOut)
    );
    assert_eq!(h.dp.stats().drops(DropReason::NoConnIn), 4);
}

#[test]
fn udp_nat_and_zero_checksum() {
    let h = harness();
    let mut q = udp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, 5353),
        (VIP, 9000),
        b"hello",
    );
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut q),
        Verdict::Tx { iface: 1 }
    );
    let (_, _, d, dp, _) = check_frame(&q);
    assert_eq!((d, dp), ("198.19.0.11".parse().unwrap(), 9000));
    let dest = h
        .snap
        .dests()
        .find(|x| x.addr == IpAddr::V4(d) && x.port == 9000)
        .unwrap();
    assert_eq!(
        (
            dest.activeconns.load(Relaxed),
            dest.inactconns.load(Relaxed)
        ),
        (0, 1),
        "UDP flows count as inactive, as the kernel's IPVS lists them"
    );

    let mut a = udp_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        ([198, 19, 0, 11], 9000),
        (CLIENT, 5353),
        b"rs1",
    );
    // Without a UDP checksum (0): it must stay 0.
    a[14 + 20 + 6] = 0;
    a[14 + 20 + 7] = 0;
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut a),
        Verdict::Tx { iface: 0 }
    );
    assert_eq!(&a[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    let (s, sp, ..) = check_frame(&a);
    assert_eq!((s, sp), (Ipv4Addr::from(VIP), 9000));
    let mut expires = 0;
    h.conns.for_each(|c| expires = c.expires);
    assert_eq!(
        expires,
        1 + 300_000,
        "UDP timeout 300 s, re-armed by each packet"
    );
}

/// Partial (offloaded) checksums: after the rewrite the field must hold the pseudo-header
/// sum of the *new* header, so that the kernel's completion yields a correct checksum.
#[test]
fn partial_checksum_tracks_the_pseudo_header() {
    let h = harness();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let (mut f, dport, l4_len, off) = match proto {
            Protocol::Tcp => (client_seg(40100, F::Syn, b"x"), 80, 21u16, 16),
            Protocol::Udp => (
                udp_frame(
                    CLIENT_MAC,
                    CLIENT_IF_MAC,
                    (CLIENT, 40100),
                    (VIP, 9000),
                    b"x",
                ),
                9000,
                9u16,
                6,
            ),
            Protocol::Sctp => unreachable!("SCTP's checksum is never partial here"),
        };
        let _ = dport;
        let pseudo = |src: [u8; 4], dst: [u8; 4]| {
            let mut ph = Vec::new();
            ph.extend_from_slice(&src);
            ph.extend_from_slice(&dst);
            ph.extend_from_slice(&[0, proto.number()]);
            ph.extend_from_slice(&l4_len.to_be_bytes());
            checksum::fold(checksum::sum_words(0, &ph))
        };
        let at = 14 + 20 + off;
        f[at..at + 2].copy_from_slice(&pseudo(CLIENT, VIP).to_be_bytes());
        let meta = RxMeta {
            iface: 0,
            csum: CsumMode::Partial,
            gso_size: 0,
        };
        assert_eq!(
            h.dp.process(&h.snap, 0, meta, &mut f),
            Verdict::Tx { iface: 1 }
        );
        let d: [u8; 4] = f[14 + 16..14 + 20].try_into().unwrap();
        let got = u16::from_be_bytes([f[at], f[at + 1]]);
        let want = pseudo(CLIENT, d);
        assert!(
            got == want || (got ^ want) == 0xffff && (got == 0 || got == 0xffff),
            "{proto:?}: {got:#x} != {want:#x}"
        );
    }
}

#[test]
fn removed_real_server_drops_and_reschedules() {
    let h = harness();
    let mut syn = client_syn(40200);
    h.dp.process(&h.snap, 0, COMPLETE, &mut syn);
    let first = check_frame(&syn).2;
    // The control plane publishes a snapshot without that server.
    let next = next_snapshot(&h, &["198.19.0.12:8080", "198.19.0.13:8080"]);
    h.snap.retire_into(&next);
    let mut ack = client_seg(40200, F::Ack, b"");
    assert_eq!(
        h.dp.process(&next, 1, COMPLETE, &mut ack),
        Verdict::Drop(DropReason::DestGone)
    );
    assert!(
        h.conns.is_empty(),
        "expire_nodest_conn: the connection went with the packet"
    );
    // A SYN on the same ports gets a live server at once.
    let mut syn2 = client_syn(40200);
    assert_eq!(
        h.dp.process(&next, 2, COMPLETE, &mut syn2),
        Verdict::Tx { iface: 1 }
    );
    assert_ne!(check_frame(&syn2).2, first);
    for _ in 0..10 {
        let mut s = client_syn(41000 + h.conns.len() as u16);
        h.dp.process(&next, 3, COMPLETE, &mut s);
        assert_ne!(
            check_frame(&s).2,
            first,
            "no new connection to a removed server"
        );
    }
}

/// A connection from client port `port` to rs1, through its handshake and both FINs.
fn to_time_wait(h: &Harness, snap: &Snapshot, port: u16) {
    let mut steps: Vec<(RxMeta, Vec<u8>)> = vec![
        (COMPLETE, client_syn(port)),
        (FROM_RS, rs1_seg(port, F::SynAck, b"")),
        (COMPLETE, client_seg(port, F::Ack, b"")),
        (FROM_RS, rs1_seg(port, F::Fin, b"")),
        (COMPLETE, client_seg(port, F::Fin, b"")),
    ];
    for (m, f) in steps.iter_mut() {
        assert!(matches!(h.dp.process(snap, 0, *m, f), Verdict::Tx { .. }));
    }
}

#[test]
fn syn_in_time_wait_starts_a_new_connection() {
    let h = harness();
    to_time_wait(&h, &h.snap, 40300);
    let mut st = None;
    h.conns.for_each(|c| st = Some(c.state));
    assert_eq!(st, Some(TcpState::TimeWait));
    let mut syn = client_syn(40300);
    assert_eq!(
        h.dp.process(&h.snap, 1, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(
        check_frame(&syn).2,
        "198.19.0.12".parse::<Ipv4Addr>().unwrap(),
        "rescheduled: next in rotation"
    );
    assert_eq!(h.conns.len(), 1);
}

#[test]
fn without_expire_nodest_conn_a_removed_servers_packets_are_dropped_and_it_stays() {
    let h = harness();
    let mut syn = client_syn(40250);
    h.dp.process(&h.snap, 0, COMPLETE, &mut syn);
    let mut next = next_snapshot(&h, &["198.19.0.12:8080"]);
    next.sysctl.expire_nodest_conn = false;
    h.snap.retire_into(&next);
    for (t, mut seg) in [(1, client_seg(40250, F::Ack, b"")), (2, client_syn(40250))] {
        assert_eq!(
            h.dp.process(&next, t, COMPLETE, &mut seg),
            Verdict::Drop(DropReason::DestGone),
            "IPVS's default: dropped"
        );
    }
    assert_eq!(h.conns.len(), 1, "the connection waits for its timeout");
}

#[test]
fn conn_reuse_mode_0_sends_a_syn_in_time_wait_to_the_old_connection() {
    let h = harness();
    let mut next = next_snapshot(
        &h,
        &["198.19.0.13:8080", "198.19.0.12:8080", "198.19.0.11:8080"],
    );
    next.sysctl.conn_reuse_mode = 0;
    to_time_wait(&h, &next, 40310);
    let mut syn = client_syn(40310);
    assert_eq!(
        h.dp.process(&next, 1, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(
        check_frame(&syn).2,
        "198.19.0.11".parse::<Ipv4Addr>().unwrap(),
        "the old connection's server, not the next in rotation"
    );
}

#[test]
fn what_is_not_ours_passes() {
    let h = harness();
    // Another destination MAC (flooded by a bridge), a broadcast, another IP, ARP.
    let mut other_mac = tcp_frame(
        CLIENT_MAC,
        [2, 9, 9, 9, 9, 9],
        (CLIENT, 1),
        (VIP, 80),
        F::Syn,
        b"",
    );
    let mut other_ip = tcp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, 1),
        ([198, 18, 0, 1], 22),
        F::Syn,
        b"",
    );
    let mut other_port = tcp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, 1),
        (VIP, 81),
        F::Syn,
        b"",
    );
    let mut arp = vec![0xffu8; 42];
    arp[6..12].copy_from_slice(&CLIENT_MAC);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    for f in [&mut other_mac, &mut other_ip, &mut other_port, &mut arp] {
        let before = f.clone();
        assert_eq!(h.dp.process(&h.snap, 0, COMPLETE, f), Verdict::Pass);
        assert_eq!(*f, before, "left untouched");
    }
    // Not ours even if malformed: a fragment or a short header to another address.
    let mut frag = tcp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, 1),
        ([198, 18, 0, 1], 22),
        F::Syn,
        b"",
    );
    frag[14 + 6] |= 0x20;
    assert_eq!(h.dp.process(&h.snap, 0, COMPLETE, &mut frag), Verdict::Pass);
    assert_eq!(h.dp.stats().passed.load(Relaxed), 5);
}

/// Each malformed frame to the VIP is dropped under its own reason and never creates state.
#[test]
fn malformed_frames_are_counted_and_dropped() {
    let h = harness();
    let good = client_syn(40400);
    let ip = 14;
    let mut cases: Vec<(&str, Vec<u8>, DropReason)> = Vec::new();
    cases.push(("runt", good[..10].to_vec(), DropReason::L2Truncated));
    cases.push((
        "short ip",
        good[..14 + 12].to_vec(),
        DropReason::IpTruncated,
    ));
    let mut v = good.clone();
    v[ip] = 0x65;
    cases.push(("version 6 in an IPv4 frame", v, DropReason::IpBadVersion));
    let mut v = good.clone();
    v[ip] = 0x44;
    cases.push(("IHL 4", v, DropReason::IpBadIhl));
    let mut v = good.clone();
    v[ip + 2..ip + 4].copy_from_slice(&10u16.to_be_bytes());
    cases.push(("total length below IHL", v, DropReason::IpBadLength));
    let mut v = good.clone();
    v[ip + 2..ip + 4].copy_from_slice(&1500u16.to_be_bytes());
    cases.push(("total length beyond the frame", v, DropReason::IpTruncated));
    let mut v = good.clone();
    v[ip + 10] ^= 0xff;
    cases.push(("bad IP checksum", v, DropReason::IpBadChecksum));
    let mut v = good.clone();
    v[ip + 6] |= 0x20; // MF
    fix_ip_csum(&mut v);
    cases.push(("first fragment", v, DropReason::IpFragment));
    let mut v = good.clone();
    v[ip + 7] = 8; // offset 64 bytes
    fix_ip_csum(&mut v);
    cases.push(("later fragment", v, DropReason::IpFragment));
    let mut v = good.clone();
    v[ip + 20 + 12] = 0x40; // data offset 4 words
    cases.push(("TCP data offset 4", v, DropReason::TcpTruncated));
    let mut v = good.clone();
    v[ip + 20 + 12] = 0xf0; // data offset 60 bytes > segment
    cases.push(("TCP data offset past the end", v, DropReason::TcpTruncated));
    let mut v = good[..14 + 20 + 10].to_vec();
    v[ip + 2..ip + 4].copy_from_slice(&30u16.to_be_bytes());
    fix_ip_csum(&mut v);
    cases.push(("TCP header cut at 10 bytes", v, DropReason::TcpTruncated));
    let mut v = good[..14 + 22].to_vec();
    v[ip + 2..ip + 4].copy_from_slice(&22u16.to_be_bytes());
    fix_ip_csum(&mut v);
    cases.push(("2 bytes of L4", v, DropReason::TcpTruncated));
    let mut u = udp_frame(CLIENT_MAC, CLIENT_IF_MAC, (CLIENT, 1), (VIP, 9000), b"abc");
    u[ip + 20 + 4..ip + 20 + 6].copy_from_slice(&4u16.to_be_bytes());
    cases.push(("UDP length 4", u, DropReason::UdpTruncated));
    let mut u = udp_frame(CLIENT_MAC, CLIENT_IF_MAC, (CLIENT, 1), (VIP, 9000), b"abc");
    u[ip + 20 + 4..ip + 20 + 6].copy_from_slice(&400u16.to_be_bytes());
    cases.push((
        "UDP length beyond the datagram",
        u,
        DropReason::UdpTruncated,
    ));

    for (name, mut f, want) in cases {
        let before = h.dp.stats().drops(want);
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut f),
            Verdict::Drop(want),
            "{name}"
        );
        assert_eq!(h.dp.stats().drops(want), before + 1, "{name} counted");
    }
    assert!(h.conns.is_empty());
}

#[test]
fn ip_options_are_skipped_not_misread() {
    let h = harness();
    // IHL 6: one 4-byte option (NOP NOP NOP EOL) between the IP and TCP headers.
    let f = client_syn(40500);
    let mut v = Vec::new();
    v.extend_from_slice(&f[..14 + 20]);
    v.extend_from_slice(&[1, 1, 1, 0]);
    v.extend_from_slice(&f[14 + 20..]);
    v[14] = 0x46;
    let tl = u16::from_be_bytes([v[16], v[17]]) + 4;
    v[16..18].copy_from_slice(&tl.to_be_bytes());
    fix_ip_csum(&mut v);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut v),
        Verdict::Tx { iface: 1 }
    );
    let (_, sp, d, dp, _) = check_frame(&v);
    assert_eq!((sp, d, dp), (40500, "198.19.0.11".parse().unwrap(), 8080));
}

/// A full table takes a new connection in place of a half-open one (a SYN flood's), and
/// refuses it only when its shard holds none: established connections are never evicted.
#[test]
fn a_full_table_evicts_half_open_entries_not_established_ones() {
    // One entry per shard: 256 in all.
    let h = harness_with(crate::consts::CONN_SHARDS);
    for p in 0..2000u16 {
        let mut f = client_syn(p + 1);
        assert!(matches!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut f),
            Verdict::Tx { .. }
        ));
    }
    assert!(h.conns.len() <= crate::consts::CONN_SHARDS);
    let evicted = h.conns.defense().evicted.load(Relaxed) as usize;
    assert_eq!(
        h.conns.len() + evicted,
        2000,
        "every SYN took a half-open entry's place"
    );

    let h = harness_with(crate::consts::CONN_SHARDS);
    let mut refused = 0;
    for p in 0..2000u16 {
        let mut f = client_syn(p + 1);
        match h.dp.process(&h.snap, 0, COMPLETE, &mut f) {
            Verdict::Drop(DropReason::ConnTableFull) => refused += 1,
            v => {
                assert!(matches!(v, Verdict::Tx { .. }), "{v:?}");
                let mut ack = client_seg(p + 1, F::Ack, b"");
                assert!(matches!(
                    h.dp.process(&h.snap, 0, COMPLETE, &mut ack),
                    Verdict::Tx { .. }
                ));
            }
        }
    }
    assert!(refused > 0);
    assert_eq!(h.conns.len() + refused, 2000);
    assert_eq!(h.conns.defense().evicted.load(Relaxed), 0);
    h.conns
        .for_each(|c| assert_eq!(c.state, TcpState::Established, "{}", c.cport));
    let active: i32 = h
        .snap
        .dests()
        .map(|d| d.activeconns.load(Relaxed) + d.inactconns.load(Relaxed))
        .sum();
    assert_eq!(
        active as usize,
        h.conns.len(),
        "refused connections are not counted on servers"
    );
}

/// `secure_tcp` on: the client's ACK does not make a NAT connection ESTABLISHED (a spoofed
/// one would otherwise hold an entry for 15 minutes); the server's answer does.
#[test]
fn secure_tcp_waits_for_the_real_server() {
    let h = harness();
    h.conns
        .defense()
        .configure(crate::conn::defense::DefenseSettings {
            secure_tcp: 3,
            ..Default::default()
        });
    let mut syn = client_syn(40980);
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { .. }
    ));
    let mut ack = client_seg(40980, F::Ack, b"");
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut ack),
        Verdict::Tx { .. }
    ));
    let state = || {
        let mut st = None;
        h.conns.for_each(|c| st = Some(c.state));
        st
    };
    assert_eq!(state(), Some(TcpState::SynRecv));
    let mut synack = rs1_seg(40980, F::SynAck, b"");
    let v = h.dp.process(&h.snap, 0, FROM_RS, &mut synack);
    if matches!(v, Verdict::Tx { .. }) {
        assert_eq!(state(), Some(TcpState::SynAck));
        let mut ack = rs1_seg(40980, F::Ack, b"");
        assert!(matches!(
            h.dp.process(&h.snap, 0, FROM_RS, &mut ack),
            Verdict::Tx { .. }
        ));
        assert_eq!(state(), Some(TcpState::Established));
    } else {
        // The connection went to another server than rs1: answer from it.
        panic!("rs1 did not get the connection: {v:?}");
    }
}

/// `drop_packet` in mode 3 drops one new connection in `am_droprate`, before scheduling;
/// packets of existing connections are never dropped.
#[test]
fn drop_packet_drops_a_share_of_new_connections_only() {
    let h = harness();
    let mut syn = client_syn(40990);
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { .. }
    ));
    h.conns
        .defense()
        .configure(crate::conn::defense::DefenseSettings {
            drop_packet: 3,
            am_droprate: 5,
            ..Default::default()
        });
    let dropped = (0..50u16)
        .filter(|p| {
            let mut f = client_syn(41000 + p);
            h.dp.process(&h.snap, 0, COMPLETE, &mut f) == Verdict::Drop(DropReason::DefenseDrop)
        })
        .count();
    assert_eq!(dropped, 10);
    for _ in 0..20 {
        let mut ack = client_seg(40990, F::Ack, b"");
        assert!(matches!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut ack),
            Verdict::Tx { .. }
        ));
    }
    assert_eq!(h.dp.stats().drops(DropReason::DefenseDrop), 10);
    assert_eq!(h.conns.defense().dropped_packets.load(Relaxed), 10);
}

#[test]
fn no_next_hop_is_counted_and_asked_for() {
    let h = harness();
    for d in h.snap.dests() {
        d.set_next_hop(None);
        d.resolve_wanted.store(false, Relaxed);
    }
    let mut f = client_syn(40600);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut f),
        Verdict::Drop(DropReason::NoNextHop)
    );
    assert!(h.snap.dests().any(|d| d.resolve_wanted.load(Relaxed)));
    assert!(
        h.conns.is_empty(),
        "the retransmitted SYN will schedule again"
    );
}

fn fix_ip_csum(v: &mut [u8]) {
    let ihl = usize::from(v[14] & 0xf) * 4;
    v[14 + 10] = 0;
    v[14 + 11] = 0;
    let c = checksum::compute(&v[14..14 + ihl]);
    v[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic, and whatever is sent out is a well-formed frame.
    #[test]
    fn random_frames_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), to_vip in any::<bool>()) {
        let h = harness();
        if to_vip && bytes.len() >= 34 {
            bytes[0..6].copy_from_slice(&CLIENT_IF_MAC);
            bytes[12..14].copy_from_slice(&[0x08, 0x00]);
            bytes[14 + 16..14 + 20].copy_from_slice(&VIP);
        }
        let _ = h.dp.process(&h.snap, 0, COMPLETE, &mut bytes);
    }

    /// Mutating any byte of a valid SYN to the VIP never panics.
    #[test]
    fn mutated_syn_never_panics(at in 0usize..54, val in any::<u8>(), cut in 0usize..60) {
        let h = harness();
        let mut f = client_syn(40700);
        f[at] = val;
        f.truncate(cut.max(1).min(f.len()));
        let _ = h.dp.process(&h.snap, 0, COMPLETE, &mut f);
    }

    /// For any client, ports and payload, NAT in and out yields valid checksums and restores
    /// the client's view exactly.
    #[test]
    fn nat_round_trip(client in any::<[u8; 4]>(), cport in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..64), udp in any::<bool>()) {
        prop_assume!(client[0] != 198 && client[0] != 0);
        let h = harness();
        let (mut q, vport) = if udp {
            (udp_frame(CLIENT_MAC, CLIENT_IF_MAC, (client, cport), (VIP, 9000), &payload), 9000)
        } else {
            (tcp_frame(CLIENT_MAC, CLIENT_IF_MAC, (client, cport), (VIP, 80), F::Syn, &payload), 80)
        };
        prop_assert_eq!(h.dp.process(&h.snap, 0, COMPLETE, &mut q), Verdict::Tx { iface: 1 });
        let (_, _, d, dp, _) = check_frame(&q);
        let mut r = if udp {
            udp_frame(rs_mac(11), SERVER_IF_MAC, (d.octets(), dp), (client, cport), &payload)
        } else {
            tcp_frame(rs_mac(11), SERVER_IF_MAC, (d.octets(), dp), (client, cport), F::SynAck, &payload)
        };
        prop_assert_eq!(h.dp.process(&h.snap, 0, FROM_RS, &mut r), Verdict::Tx { iface: 0 });
        let (s, sp, c, cp, _) = check_frame(&r);
        prop_assert_eq!((s, sp, c, cp), (Ipv4Addr::from(VIP), vport, Ipv4Addr::from(client), cport));
    }
}

/// An ICMP error frame from `src` to `dst` quoting `quote` (IP header + 8 bytes or more).
pub(super) fn icmp_error_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ty: u8,
    code: u8,
    quote: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0, 0, 0, 0x05, 0xdc]; // frag-needed: next-hop MTU 1500
    icmp.extend_from_slice(quote);
    let c = checksum::compute(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .write(&mut v, etherparse::IpNumber::ICMP, &icmp)
        .unwrap();
    v
}

/// The first `n` bytes of the IP packet inside an Ethernet frame.
pub(super) fn quote_of(frame: &[u8], n: usize) -> Vec<u8> {
    frame[14..14 + n].to_vec()
}

pub(super) fn check_icmp(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, Vec<u8>) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("frame parses");
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not ipv4")
    };
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "outer ip checksum"
    );
    let icmp = &frame[14 + 20..];
    assert_eq!(checksum::compute(icmp), 0, "icmp checksum");
    let inner = &icmp[8..];
    let ihl = usize::from(inner[0] & 0xf) * 4;
    assert_eq!(checksum::compute(&inner[..ihl]), 0, "quoted ip checksum");
    (
        Ipv4Addr::from(ip.source),
        Ipv4Addr::from(ip.destination),
        ip.time_to_live,
        inner.to_vec(),
    )
}

#[test]
fn icmp_error_about_a_reply_goes_to_the_real_server() {
    let h = harness();
    let mut syn = client_syn(40800);
    h.dp.process(&h.snap, 0, COMPLETE, &mut syn);
    // A router on the client side cannot forward a reply VIP:80 -> client:40800.
    let reply = tcp_frame(
        CLIENT_IF_MAC,
        CLIENT_MAC,
        (VIP, 80),
        (CLIENT, 40800),
        F::Ack,
        b"data",
    );
    let mut e = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        VIP,
        3,
        4,
        &quote_of(&reply, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 1, COMPLETE, &mut e),
        Verdict::Tx { iface: 1 }
    );
    let (s, d, ttl, inner) = check_icmp(&e);
    assert_eq!(
        (s, d),
        (
            "198.18.0.254".parse().unwrap(),
            "198.19.0.11".parse().unwrap()
        )
    );
    assert_eq!(ttl, 64);
    assert_eq!(
        &inner[12..16],
        &[198, 19, 0, 11],
        "quoted source is the real server now"
    );
    assert_eq!(&inner[16..20], &CLIENT);
    assert_eq!(
        &inner[20..22],
        &8080u16.to_be_bytes(),
        "quoted source port is the real port"
    );
    assert_eq!(&e[0..6], &rs_mac(11));
}

#[test]
fn icmp_error_about_a_forwarded_packet_goes_to_the_client() {
    let h = harness();
    let mut syn = client_syn(40900);
    h.dp.process(&h.snap, 0, COMPLETE, &mut syn);
    // The real server (or a router before it) reports on the forwarded SYN.
    let mut e = icmp_error_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        [198, 19, 0, 11],
        CLIENT,
        3,
        4,
        &quote_of(&syn, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut e),
        Verdict::Tx { iface: 0 }
    );
    let (s, d, ttl, inner) = check_icmp(&e);
    assert_eq!((s, d), (Ipv4Addr::from(VIP), Ipv4Addr::from(CLIENT)));
    assert_eq!(ttl, 63);
    assert_eq!(&inner[12..16], &CLIENT);
    assert_eq!(&inner[16..20], &VIP, "quoted destination is the VIP again");
    assert_eq!(
        &inner[22..24],
        &80u16.to_be_bytes(),
        "quoted destination port is the virtual port"
    );
    assert_eq!(&e[0..6], &CLIENT_MAC);
}

#[test]
fn icmp_errors_that_match_nothing_or_are_cut_short() {
    let h = harness();
    let reply = tcp_frame(
        CLIENT_IF_MAC,
        CLIENT_MAC,
        (VIP, 80),
        (CLIENT, 41000),
        F::Ack,
        b"",
    );
    let mut no_conn = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        VIP,
        3,
        4,
        &quote_of(&reply, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut no_conn),
        Verdict::Drop(DropReason::IcmpNoConn)
    );
    let mut short = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        VIP,
        3,
        4,
        &quote_of(&reply, 24),
    );
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut short),
        Verdict::Drop(DropReason::IcmpTruncated)
    );
    let mut q = quote_of(&reply, 28);
    q[0] = 0x43;
    let mut bad_ihl =
        icmp_error_frame(CLIENT_MAC, CLIENT_IF_MAC, [198, 18, 0, 254], VIP, 11, 0, &q);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut bad_ihl),
        Verdict::Drop(DropReason::IcmpInnerBad)
    );
    // A bad ICMP checksum: dropped as IPVS does, counted.
    let mut bad_csum = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        VIP,
        3,
        4,
        &quote_of(&reply, 28),
    );
    let at = 14 + 20 + 2;
    bad_csum[at] ^= 0x5a;
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut bad_csum),
        Verdict::Drop(DropReason::IcmpBadChecksum)
    );
    assert_eq!(h.dp.stats().drops(DropReason::IcmpBadChecksum), 1);
    // Not errors, or not about a service: the kernel's.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"")
        .unwrap();
    assert_eq!(h.dp.process(&h.snap, 0, COMPLETE, &mut ping), Verdict::Pass);
    let other = tcp_frame(
        CLIENT_IF_MAC,
        CLIENT_MAC,
        ([198, 18, 0, 1], 22),
        (CLIENT, 41000),
        F::Ack,
        b"",
    );
    let mut elsewhere = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        CLIENT,
        [198, 18, 0, 1],
        3,
        3,
        &quote_of(&other, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut elsewhere),
        Verdict::Pass
    );
}

#[test]
fn no_schedulable_server_drops_and_counts() {
    let h = harness();
    for d in h.snap.dests() {
        d.set_weight(0);
    }
    let mut f = client_syn(41100);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut f),
        Verdict::Drop(DropReason::NoDest)
    );
    assert_eq!(h.dp.stats().drops(DropReason::NoDest), 1);
    assert!(h.conns.is_empty());
}

#[test]
fn traffic_is_counted_per_server_service_and_balancer() {
    let h = harness();
    let mut traffic = crate::stats::BalancerTotals::default();
    let rs = [198, 19, 0, 11];
    let mut syn = client_syn(41200);
    let mut synack = rs1_seg(41200, F::SynAck, b"");
    let mut ack = client_seg(41200, F::Ack, b"hello");
    let (l1, l2, l3) = (syn.len() - 14, synack.len() - 14, ack.len() - 14);
    h.dp.process(&h.snap, 0, COMPLETE, &mut syn);
    h.dp.process(&h.snap, 0, FROM_RS, &mut synack);
    h.dp.process(&h.snap, 0, COMPLETE, &mut ack);
    let want = crate::stats::Totals {
        conns: 1,
        inpkts: 2,
        outpkts: 1,
        inbytes: (l1 + l3) as u64,
        outbytes: l2 as u64,
    };
    let dest = h
        .snap
        .dests()
        .find(|d| d.addr == IpAddr::V4(rs.into()) && d.port == 8080)
        .unwrap();
    let svc = h
        .snap
        .service(Protocol::Tcp, IpAddr::V4(VIP.into()), 80)
        .unwrap();
    assert_eq!(dest.stats.totals(), want);
    assert_eq!(svc.stats.totals(), want);
    assert_eq!(traffic.totals(h.snap.service_stats()), want);
    // A packet that is dropped is not traffic.
    let mut stray = client_seg(9, F::Ack, b"");
    h.dp.process(&h.snap, 0, COMPLETE, &mut stray);
    assert_eq!(traffic.totals(h.snap.service_stats()), want);
    // The service goes: what it counted stays in the balancer's totals, also once its last
    // connection has gone.
    let next = Snapshot::build_native::<()>(&[], &h.snap);
    h.snap.retire_into(&next);
    traffic.retire(h.snap.service_stats(), next.service_stats());
    assert_eq!(traffic.totals(next.service_stats()), want);
    assert_eq!(h.conns.sweep(0), 1, "its server went with it");
    assert_eq!(
        traffic.totals(next.service_stats()),
        want,
        "kept after the last connection went"
    );
}

#[test]
fn no_server_answers_port_unreachable_from_the_vip_rate_limited() {
    let h = harness();
    for d in h.snap.dests() {
        d.set_weight(0);
    }
    let syn = client_syn(41300);
    let mut buf = vec![0u8; 2048];
    buf[..syn.len()].copy_from_slice(&syn);
    let v = in_buffer(
        &h,
        0,
        COMPLETE,
        &mut buf,
        syn.len(),
        &mut crate::xmit::gso::NoSink,
    );
    let Verdict::Send {
        iface: 0,
        len,
        offloads: Offloads::None,
    } = v
    else {
        panic!("{v:?}")
    };
    let out = &buf[..len];
    assert_eq!(&out[0..6], &CLIENT_MAC, "back to the client");
    assert_eq!(&out[6..12], &CLIENT_IF_MAC);
    let (s, d, ttl, inner) = check_icmp(out);
    assert_eq!(
        (s, d, ttl),
        (Ipv4Addr::from(VIP), Ipv4Addr::from(CLIENT), 64)
    );
    assert_eq!(
        &out[14 + 20..14 + 22],
        &[3, 3],
        "destination unreachable, port unreachable"
    );
    assert_eq!(
        inner,
        syn[14..14 + 28].to_vec(),
        "quotes the SYN's IP header and 8 bytes"
    );
    assert_eq!(
        h.dp.stats().drops(DropReason::NoDest),
        1,
        "the SYN itself is still a drop"
    );
    assert_eq!(h.dp.stats().icmp_sent.load(Relaxed), 1);
    // Rate limited: the burst, then nothing until tokens come back (100 per second).
    let sent = 1 + answers(&h, &syn, 200, 0);
    assert_eq!(sent, crate::consts::ICMP_REPLY_BURST as usize);
    buf[..syn.len()].copy_from_slice(&syn);
    assert!(matches!(
        in_buffer(
            &h,
            1000,
            COMPLETE,
            &mut buf,
            syn.len(),
            &mut crate::xmit::gso::NoSink
        ),
        Verdict::Send {
            offloads: Offloads::None,
            ..
        }
    ));
    // Without room in the buffer there is no reply, only the drop.
    let mut tight = syn.clone();
    let n = tight.len();
    assert_eq!(
        in_buffer(
            &h,
            2000,
            COMPLETE,
            &mut tight,
            n,
            &mut crate::xmit::gso::NoSink
        ),
        Verdict::Drop(DropReason::NoDest)
    );
}

/// The TCP header of a frame wvs wrote, checked (checksums) and parsed.
fn tcp_of(frame: &[u8]) -> etherparse::TcpHeader {
    check_frame(frame);
    match PacketHeaders::from_ethernet_slice(frame).unwrap().transport {
        Some(TransportHeader::Tcp(t)) => t,
        _ => panic!("not tcp"),
    }
}

#[test]
fn a_segment_of_no_connection_gets_a_reset_from_the_vip() {
    let h = harness();
    let mut buf = [0u8; 2048];
    // With ACK (what a client sends after losing its connection): RST, seq = its ack.
    let seg = client_seg(40500, F::Ack, b"more data");
    buf[..seg.len()].copy_from_slice(&seg);
    let v = in_buffer(
        &h,
        0,
        COMPLETE,
        &mut buf,
        seg.len(),
        &mut crate::xmit::gso::NoSink,
    );
    let Verdict::Send {
        iface: 0,
        len,
        offloads: Offloads::None,
    } = v
    else {
        panic!("{v:?}")
    };
    let out = &buf[..len];
    assert_eq!(len, 14 + 20 + 20);
    assert_eq!(
        (&out[0..6], &out[6..12]),
        (&CLIENT_MAC[..], &CLIENT_IF_MAC[..])
    );
    assert_eq!(
        check_frame(out),
        (Ipv4Addr::from(VIP), 80, Ipv4Addr::from(CLIENT), 40500, 64)
    );
    let t = tcp_of(out);
    assert!(t.rst && !t.ack && !t.syn && !t.fin);
    assert_eq!(t.sequence_number, 1, "the segment's acknowledgment number");
    assert_eq!(h.conns.len(), 0, "no connection is made");
    assert_eq!(h.dp.stats().drops(DropReason::NoConnIn), 1);
    assert_eq!(h.dp.stats().resets_sent.load(Relaxed), 1);

    // Without ACK: RST+ACK, seq 0, acknowledging the segment's data and FIN.
    let seg = client_seg(40501, F::Psh, b"12345");
    buf[..seg.len()].copy_from_slice(&seg);
    let Verdict::Send {
        len,
        offloads: Offloads::None,
        ..
    } = in_buffer(
        &h,
        0,
        COMPLETE,
        &mut buf,
        seg.len(),
        &mut crate::xmit::gso::NoSink,
    )
    else {
        panic!("no reset")
    };
    let t = tcp_of(&buf[..len]);
    assert!(t.rst && t.ack);
    assert_eq!((t.sequence_number, t.acknowledgment_number), (0, 1005));

    // A reset is never answered, and the UDP service is not concerned.
    let seg = client_seg(40502, F::Rst, b"");
    buf[..seg.len()].copy_from_slice(&seg);
    assert_eq!(
        in_buffer(
            &h,
            0,
            COMPLETE,
            &mut buf,
            seg.len(),
            &mut crate::xmit::gso::NoSink
        ),
        Verdict::Drop(DropReason::NoConnIn)
    );
    assert_eq!(h.dp.stats().resets_sent.load(Relaxed), 2);
}

#[test]
fn resets_share_the_answer_rate_limit() {
    let h = harness();
    let seg = client_seg(40600, F::Ack, b"");
    assert_eq!(
        answers(&h, &seg, 300, 0),
        crate::consts::ICMP_REPLY_BURST as usize
    );
}

/// Give `frame` to the datapath `n` times at `now`; return how many times it answered.
fn answers(h: &Harness, frame: &[u8], n: usize, now: u64) -> usize {
    let mut buf = [0u8; 2048];
    (0..n)
        .filter(|_| {
            buf[..frame.len()].copy_from_slice(frame);
            matches!(
                in_buffer(
                    h,
                    now,
                    COMPLETE,
                    &mut buf,
                    frame.len(),
                    &mut crate::xmit::gso::NoSink
                ),
                Verdict::Send {
                    offloads: Offloads::None,
                    ..
                }
            )
        })
        .count()
}

/// Open a connection from `cport` (SYN, ACK), then end it with a RST (to CLOSE) or a FIN.
fn finish_conn(h: &Harness, cport: u16, rst: bool) -> Ipv4Addr {
    let mut syn = client_syn(cport);
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { .. }
    ));
    let rs = check_frame(&syn).2;
    let mut ack = client_seg(cport, F::Ack, b"");
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut ack),
        Verdict::Tx { .. }
    ));
    let mut last = tcp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, cport),
        (VIP, 80),
        if rst { F::Rst } else { F::Fin },
        b"",
    );
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut last),
        Verdict::Tx { .. }
    ));
    rs
}

#[test]
fn a_syn_reusing_a_closed_connection_is_rescheduled() {
    let h = harness();
    let first = finish_conn(&h, 40700, true);
    let mut st = None;
    h.conns.for_each(|c| st = Some(c.state));
    assert_eq!(st, Some(TcpState::Close));
    let mut syn = client_syn(40700);
    assert_eq!(
        h.dp.process(&h.snap, 1, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    assert_ne!(check_frame(&syn).2, first, "rescheduled: next in rotation");
    assert_eq!(h.conns.len(), 1);
}

fn persistent_harness() -> Harness {
    let svc = Service {
        persistent: Some(1),
        ..rr(
            Protocol::Tcp,
            80,
            vec![real("198.19.0.11:8080"), real("198.19.0.12:8080")],
        )
    };
    let mut h = harness();
    h.snap = Snapshot::build_native(&[svc], &Snapshot::default());
    for d in h.snap.dests() {
        let IpAddr::V4(a) = d.addr else {
            unreachable!()
        };
        d.set_next_hop(Some(NextHop {
            iface: 1,
            mac: rs_mac(a.octets()[3]),
        }));
    }
    h
}

#[test]
fn a_template_lives_while_its_connections_do_and_keeps_its_reused_ports() {
    let h = persistent_harness();
    let mut syn = client_syn(40800);
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { .. }
    ));
    let rs = check_frame(&syn).2;
    // 1 s of persistence is long past, but the connection is open: the template stays.
    h.conns.sweep(5_000);
    assert_eq!(h.conns.persist().len(), 1);
    let mut other = client_syn(40801);
    h.dp.process(&h.snap, 5_000, COMPLETE, &mut other);
    assert_eq!(
        check_frame(&other).2,
        rs,
        "the template still places connections"
    );
    let template_state = || {
        let mut s = "";
        h.conns.persist().for_each(|_, t| s = t.state_name());
        s
    };
    assert_eq!(template_state(), "NONE");
    // Established, then closed by a reset: a SYN on the same ports is not rescheduled
    // while a template controls the connection (is_new_conn_expected); the state table
    // takes it, on the same server. ESTABLISHED assures the template, as the kernel's
    // IPVS lists it in the oracle.
    let mut ack = client_seg(40800, F::Ack, b"");
    h.dp.process(&h.snap, 5_000, COMPLETE, &mut ack);
    assert_eq!(template_state(), "ASSURED");
    let mut rst = client_seg(40800, F::Rst, b"");
    h.dp.process(&h.snap, 5_000, COMPLETE, &mut rst);
    let mut st = Vec::new();
    h.conns.for_each(|c| st.push((c.cport, c.state)));
    assert!(st.contains(&(40800, TcpState::Close)), "{st:?}");
    let mut again = client_syn(40800);
    h.dp.process(&h.snap, 5_001, COMPLETE, &mut again);
    assert_eq!(check_frame(&again).2, rs);
    assert_eq!(h.conns.len(), 2);
    let mut states = Vec::new();
    h.conns.for_each(|c| states.push((c.cport, c.state)));
    states.sort_by_key(|s| s.0);
    assert_eq!(
        states,
        [(40800, TcpState::SynRecv), (40801, TcpState::SynRecv)]
    );
    // Once every connection is gone, the template goes at its (re-armed, 60 s) time.
    h.conns.sweep(10_000_000);
    assert_eq!(h.conns.len(), 0);
    h.conns
        .sweep(10_000_001 + crate::consts::TEMPLATE_EXPIRE_LATER_MS);
    assert_eq!(h.conns.persist().len(), 0);
}

#[test]
fn source_quench_is_relayed_and_icmp_errors_are_counted_as_ipvs_does() {
    let h = harness();
    let mut syn = client_syn(41100);
    h.dp.process(&h.snap, 0, COMPLETE, &mut syn);
    let svc = h
        .snap
        .service(Protocol::Tcp, IpAddr::V4(VIP.into()), 80)
        .unwrap();
    let dest = h
        .snap
        .dests()
        .find(|d| d.addr == IpAddr::V4([198, 19, 0, 11].into()) && d.port == 8080)
        .unwrap();
    let counts = |s: &crate::stats::Stats| {
        let t = s.totals();
        (t.inpkts, t.outpkts)
    };
    assert_eq!(counts(&svc.stats), (1, 0));
    // Source quench from the real server's side about the forwarded SYN: relayed to the
    // client, counted outbound (ip_vs_out_icmp: ip_vs_out_stats).
    let mut e = icmp_error_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        [198, 19, 0, 11],
        CLIENT,
        4,
        0,
        &quote_of(&syn, 28),
    );
    let len = e.len() - 14;
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut e),
        Verdict::Tx { iface: 0 }
    );
    assert_eq!(counts(&svc.stats), (1, 1));
    assert_eq!(counts(&dest.stats), (1, 1));
    assert_eq!(svc.stats.totals().outbytes, len as u64);
    // Time exceeded on the client side about a reply: relayed to the server, counted
    // inbound (ip_vs_in_icmp: ip_vs_in_stats).
    let reply = tcp_frame(
        CLIENT_IF_MAC,
        CLIENT_MAC,
        (VIP, 80),
        (CLIENT, 41100),
        F::Ack,
        b"",
    );
    let mut e = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        VIP,
        11,
        0,
        &quote_of(&reply, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 1, COMPLETE, &mut e),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(counts(&svc.stats), (2, 1));
    // Parameter problem is not one IPVS relays: the kernel's.
    let mut e = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        VIP,
        12,
        0,
        &quote_of(&reply, 28),
    );
    assert_eq!(h.dp.process(&h.snap, 1, COMPLETE, &mut e), Verdict::Pass);
    assert_eq!(counts(&svc.stats), (2, 1));
}

/// `--set` reaches existing connections at their next packet (IPVS's `state_transition`
/// takes the state's timeout from the table on every packet); the states it does not name
/// keep IPVS's values.
#[test]
fn set_timeouts_take_effect_at_the_next_packet() {
    let mut h = harness();
    let udp = || udp_frame(CLIENT_MAC, CLIENT_IF_MAC, (CLIENT, 5353), (VIP, 9000), b"q");
    let conn = |h: &Harness, proto| {
        let mut e = None;
        h.conns.for_each(|c| {
            if c.proto == proto {
                e = Some((c.state, c.expires))
            }
        });
        e.expect("a connection")
    };
    let tx = Verdict::Tx { iface: 1 };
    assert_eq!(h.dp.process(&h.snap, 0, COMPLETE, &mut udp()), tx);
    assert_eq!(conn(&h, Protocol::Udp).1, 300_000);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut client_syn(40000)),
        tx
    );

    let t = crate::spec::Timeouts {
        tcp: 45,
        tcpfin: 5,
        udp: 7,
    };
    let specs: Vec<_> = h.snap.services().map(|s| s.spec.clone()).collect();
    h.snap = Snapshot::build(&specs, &t, &h.snap, &|n| {
        crate::service::SchedChoice::native(
            crate::model::Scheduler::from_name(n).expect("built in"),
        )
    });
    assert_eq!(
        conn(&h, Protocol::Udp).1,
        300_000,
        "unchanged until a packet"
    );
    assert_eq!(h.dp.process(&h.snap, 10, COMPLETE, &mut udp()), tx);
    assert_eq!(conn(&h, Protocol::Udp).1, 10 + 7_000);

    // ESTABLISHED takes `tcp`, FIN_WAIT `tcpfin`; CLOSE_WAIT keeps IPVS's 60 s.
    let mut ack = client_seg(40000, F::Ack, b"");
    assert_eq!(h.dp.process(&h.snap, 20, COMPLETE, &mut ack), tx);
    assert_eq!(
        conn(&h, Protocol::Tcp),
        (TcpState::Established, 20 + 45_000)
    );
    let mut fin = rs1_seg(40000, F::Fin, b"");
    assert_eq!(
        h.dp.process(&h.snap, 30, FROM_RS, &mut fin),
        Verdict::Tx { iface: 0 }
    );
    assert_eq!(conn(&h, Protocol::Tcp), (TcpState::FinWait, 30 + 5_000));
}

/// A TCP service on VIP:80 and a UDP one on VIP:9000 whose real server is `real` (the
/// same for both), with next hops on interface 1 and wvs's source address 198.19.0.1.
fn method_harness(real: Real) -> Harness {
    let services = [
        rr(Protocol::Tcp, 80, vec![real.clone()]),
        rr(Protocol::Udp, 9000, vec![real]),
    ];
    harness_of(&services, 1 << 10)
}

fn state_of(h: &Harness) -> TcpState {
    let mut st = None;
    h.conns.for_each(|c| st = Some(c.state));
    st.expect("a connection")
}

#[test]
fn direct_routing_changes_the_macs_and_the_ttl_only() {
    let h = method_harness(real_by("198.19.0.21", Forward::Route));
    let syn = client_syn(40000);
    let mut out = syn.clone();
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut out),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(&out[0..6], &rs_mac(21), "to the real server's MAC");
    assert_eq!(&out[6..12], &SERVER_IF_MAC, "from wvs's");
    let (s, sp, d, dp, ttl) = check_frame(&out);
    assert_eq!(
        (s, sp, d, dp, ttl),
        (Ipv4Addr::from(CLIENT), 40000, Ipv4Addr::from(VIP), 80, 63),
        "the packet as the client sent it, one hop less"
    );
    // Nothing else changed: past the TTL and the header checksum, every byte is the same.
    assert_eq!(out[12..22], syn[12..22]);
    assert_eq!(out[23..24], syn[23..24]);
    assert_eq!(out[26..], syn[26..]);
    assert_eq!(state_of(&h), TcpState::SynRecv);
    // INPUT_ONLY: the server's replies never pass, so the client's FIN after the handshake
    // means FIN_WAIT (the INPUT rows would say CLOSE_WAIT).
    for (f, want) in [
        (F::Ack, TcpState::Established),
        (F::Fin, TcpState::FinWait),
        (F::Ack, TcpState::FinWait),
        (F::Rst, TcpState::Close),
    ] {
        let mut seg = client_seg(40000, f, b"");
        assert_eq!(
            h.dp.process(&h.snap, 1, COMPLETE, &mut seg),
            Verdict::Tx { iface: 1 }
        );
        assert_eq!(state_of(&h), want);
    }
    // What the server sends from its own address is none of wvs's: it is no NAT server.
    let mut own = tcp_frame(
        rs_mac(21),
        SERVER_IF_MAC,
        ([198, 19, 0, 21], 80),
        (CLIENT, 40000),
        F::Ack,
        b"",
    );
    assert_eq!(h.dp.process(&h.snap, 2, FROM_RS, &mut own), Verdict::Pass);
}

#[test]
fn a_packet_that_would_outlive_its_ttl_gets_time_exceeded_from_the_vip() {
    for real in [
        real_by("198.19.0.21", Forward::Route),
        real_by("198.19.0.21", IPIP),
        real("198.19.0.21:80"),
    ] {
        let h = method_harness(real.clone());
        let mut v = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
            .ipv4(CLIENT, VIP, 1)
            .tcp(40000, 80, 1000, 65535)
            .syn()
            .write(&mut v, b"")
            .unwrap();
        let mut buf = vec![0u8; 2048];
        buf[..v.len()].copy_from_slice(&v);
        let Verdict::Send {
            iface: 0,
            len,
            offloads: Offloads::None,
        } = in_buffer(
            &h,
            0,
            COMPLETE,
            &mut buf,
            v.len(),
            &mut crate::xmit::gso::NoSink,
        )
        else {
            panic!("{real:?}: no answer")
        };
        let (s, d, _, quote) = check_icmp(&buf[..len]);
        assert_eq!(
            (s, d),
            (Ipv4Addr::from(VIP), Ipv4Addr::from(CLIENT)),
            "{real:?}"
        );
        assert_eq!(buf[34..36], [11, 0], "{real:?}: time exceeded in transit");
        assert_eq!(
            quote[..28],
            v[14..42],
            "{real:?}: the packet quoted as it came"
        );
        assert_eq!(buf[..6], CLIENT_MAC, "back to the client's hop");
        assert_eq!(h.dp.stats().drops(DropReason::TtlExceeded), 1);
    }
}

#[test]
fn a_packet_too_long_for_the_path_gets_fragmentation_needed_with_the_mtu() {
    // Path MTU 1400 towards the servers; a tunnel's is 20 (IPIP) or 32 (GUE) bytes less.
    for (real, mtu) in [
        (real("198.19.0.21:80"), 1400u16),
        (real_by("198.19.0.21", Forward::Route), 1400),
        (real_by("198.19.0.21", IPIP), 1380),
        (
            real_by("198.19.0.21", tunnel(TunKind::Gue, 6080, TunCsum::None)),
            1368,
        ),
    ] {
        let h = method_harness(real.clone());
        for d in h.snap.dests() {
            d.set_mtu(1400);
        }
        let big = |cport: u16, df: bool, len: usize| {
            let mut v = Vec::new();
            let mut ip =
                etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, CLIENT, VIP).unwrap();
            ip.dont_fragment = df;
            PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
                .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
                .tcp(cport, 80, 1000, 65535)
                .ack(1)
                .write(&mut v, &vec![7u8; len - 40])
                .unwrap();
            v
        };
        // The handshake first (small), then data of exactly the MTU: it passes.
        let mut syn = client_syn(40010);
        let mut slot = vec![0u8; 4096];
        slot[..syn.len()].copy_from_slice(&syn);
        assert!(matches!(
            in_buffer(
                &h,
                0,
                COMPLETE,
                &mut slot,
                syn.len(),
                &mut crate::xmit::gso::NoSink
            ),
            Verdict::Tx { .. }
                | Verdict::Send {
                    offloads: Offloads::None,
                    ..
                }
        ));
        syn.clear();
        let fits = big(40010, true, usize::from(mtu));
        slot[..fits.len()].copy_from_slice(&fits);
        assert!(
            matches!(
                in_buffer(
                    &h,
                    1,
                    COMPLETE,
                    &mut slot,
                    fits.len(),
                    &mut crate::xmit::gso::NoSink
                ),
                Verdict::Tx { .. }
                    | Verdict::Send {
                        offloads: Offloads::None,
                        ..
                    }
            ),
            "{real:?}: {mtu} bytes fit"
        );
        // One byte more with DF: fragmentation needed, with the MTU, from the VIP.
        let over = big(40010, true, usize::from(mtu) + 1);
        slot[..over.len()].copy_from_slice(&over);
        let Verdict::Send {
            iface: 0,
            len,
            offloads: Offloads::None,
        } = in_buffer(
            &h,
            2,
            COMPLETE,
            &mut slot,
            over.len(),
            &mut crate::xmit::gso::NoSink,
        )
        else {
            panic!("{real:?}: no answer")
        };
        let (s, d, _, quote) = check_icmp(&slot[..len]);
        assert_eq!((s, d), (Ipv4Addr::from(VIP), Ipv4Addr::from(CLIENT)));
        assert_eq!(slot[34..36], [3, 4], "{real:?}: fragmentation needed");
        assert_eq!(slot[40..42], mtu.to_be_bytes(), "{real:?}: next-hop MTU");
        assert_eq!(quote[..28], over[14..42]);
        // Without DF: not sent, counted (IPVS would fragment it).
        let nodf = big(40010, false, usize::from(mtu) + 1);
        slot[..nodf.len()].copy_from_slice(&nodf);
        assert_eq!(
            in_buffer(
                &h,
                3,
                COMPLETE,
                &mut slot,
                nodf.len(),
                &mut crate::xmit::gso::NoSink
            ),
            Verdict::Drop(DropReason::TooBig)
        );
        // A GSO super-packet by the size of its segments: small on the wire here, but
        // cut into 1448-byte payloads it would not fit.
        let gso = RxMeta {
            gso_size: 1448,
            ..COMPLETE
        };
        let seg = big(40010, true, 200);
        slot[..seg.len()].copy_from_slice(&seg);
        let v = in_buffer(
            &h,
            4,
            gso,
            &mut slot,
            seg.len(),
            &mut crate::xmit::gso::NoSink,
        );
        assert!(
            matches!(
                v,
                Verdict::Send {
                    offloads: Offloads::None,
                    ..
                }
            ),
            "{real:?}: {v:?}"
        );
        assert_eq!(slot[40..42], mtu.to_be_bytes(), "{real:?}: next-hop MTU");
        assert_eq!(h.dp.stats().drops(DropReason::FragNeeded), 2);
    }
}

/// Check an encapsulated frame: Ethernet to the real server, an outer IPv4 header from
/// wvs (checksum, TTL, DF, TOS, protocol), and return the protocol and what follows it.
fn outer(frame: &[u8], rs: u8) -> (u8, Vec<u8>) {
    assert_eq!(&frame[0..6], &rs_mac(rs));
    assert_eq!(&frame[6..12], &SERVER_IF_MAC);
    let (ip, rest) = etherparse::Ipv4Header::from_slice(&frame[14..]).expect("outer ipv4");
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "outer checksum"
    );
    assert_eq!(
        ip.source,
        [198, 19, 0, 1],
        "from wvs's address on the route"
    );
    assert_eq!(ip.destination, [198, 19, 0, rs]);
    assert_eq!(ip.time_to_live, 63, "the inner TTL after its decrement");
    assert!(ip.dont_fragment, "DF copied from the inner packet");
    assert_eq!(usize::from(ip.total_len), frame.len() - 14);
    (ip.protocol.0, rest.to_vec())
}

/// The inner packet, checked as the real server's stack will: both checksums, the TTL.
fn inner_ok(inner: &[u8], sport: u16, dport: u16) {
    let mut eth = vec![0u8; 12];
    eth.extend_from_slice(&[0x08, 0x00]);
    eth.extend_from_slice(inner);
    let (s, sp, d, dp, ttl) = check_frame(&eth);
    assert_eq!(
        (s, sp, d, dp, ttl),
        (
            Ipv4Addr::from(CLIENT),
            sport,
            Ipv4Addr::from(VIP),
            dport,
            63
        )
    );
}

#[test]
fn tunnels_carry_the_packet_whole_as_linux_takes_it_apart() {
    for (tun, proto) in [
        (IPIP, 4),
        (tunnel(TunKind::Ipip, 0, TunCsum::None), 4),
        (tunnel(TunKind::Gue, 6080, TunCsum::None), 17),
        (tunnel(TunKind::Gue, 6080, TunCsum::Csum), 17),
        (tunnel(TunKind::Gre, 0, TunCsum::None), 47),
        (tunnel(TunKind::Gre, 0, TunCsum::Csum), 47),
    ] {
        let h = method_harness(real_by("198.19.0.22", tun));
        for (frame, sport, dport) in [
            (client_seg(40001, F::Syn, b""), 40001, 80),
            (
                udp_frame(
                    CLIENT_MAC,
                    CLIENT_IF_MAC,
                    (CLIENT, 40002),
                    (VIP, 9000),
                    b"who",
                ),
                40002,
                9000,
            ),
        ] {
            let mut buf = vec![0u8; 2048];
            buf[..frame.len()].copy_from_slice(&frame);
            let v = in_buffer(
                &h,
                0,
                COMPLETE,
                &mut buf,
                frame.len(),
                &mut crate::xmit::gso::NoSink,
            );
            let Verdict::Send {
                iface: 1,
                len,
                offloads: Offloads::None,
            } = v
            else {
                panic!("{tun:?}: {v:?}")
            };
            let (p, rest) = outer(&buf[..len], 22);
            assert_eq!(p, proto, "{tun:?}");
            let inner = match p {
                4 => rest,
                17 => {
                    let (udp, gue) = etherparse::UdpHeader::from_slice(&rest).unwrap();
                    assert_eq!(udp.destination_port, 6080);
                    assert!((32768..=60999).contains(&udp.source_port));
                    assert_eq!(usize::from(udp.length), rest.len());
                    if matches!(tun, Forward::Tunnel(t) if t.csum == TunCsum::Csum) {
                        let ip = etherparse::Ipv4Header::from_slice(&buf[14..len]).unwrap().0;
                        assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, gue).unwrap());
                    } else {
                        assert_eq!(udp.checksum, 0, "{tun:?}: no checksum");
                    }
                    assert_eq!(gue[..4], [0, 4, 0, 0], "GUE version 0 carrying IPIP");
                    gue[4..].to_vec()
                }
                _ => {
                    if matches!(tun, Forward::Tunnel(t) if t.csum == TunCsum::Csum) {
                        assert_eq!(rest[..4], [0x80, 0, 0x08, 0x00]);
                        assert_eq!(checksum::compute(&rest), 0, "GRE checksum");
                        rest[8..].to_vec()
                    } else {
                        assert_eq!(rest[..4], [0, 0, 0x08, 0x00]);
                        rest[4..].to_vec()
                    }
                }
            };
            inner_ok(&inner, sport, dport);
        }
    }
}

#[test]
fn a_tunnel_completes_a_partial_checksum_and_refuses_what_it_cannot_carry() {
    let h = method_harness(real_by("198.19.0.22", IPIP));
    let mut f = client_seg(40003, F::Syn, b"");
    // What a local sender that offloads leaves in the field: the pseudo-header sum.
    let mut ph = Vec::new();
    ph.extend_from_slice(&CLIENT);
    ph.extend_from_slice(&VIP);
    ph.extend_from_slice(&[0, 6]);
    ph.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
    let partial = checksum::fold(checksum::sum_words(0, &ph));
    f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&partial.to_be_bytes());
    let partial_meta = RxMeta {
        iface: 0,
        csum: CsumMode::Partial,
        gso_size: 0,
    };
    let mut buf = vec![0u8; 2048];
    buf[..f.len()].copy_from_slice(&f);
    let Verdict::Send {
        len,
        offloads: Offloads::None,
        ..
    } = in_buffer(
        &h,
        0,
        partial_meta,
        &mut buf,
        f.len(),
        &mut crate::xmit::gso::NoSink,
    )
    else {
        panic!("not sent")
    };
    inner_ok(&outer(&buf[..len], 22).1, 40003, 80);
    // A GSO super-packet: the kernel could not cut it inside a tunnel.
    let gso = RxMeta {
        gso_size: 1448,
        ..COMPLETE
    };
    let mut seg = client_seg(40003, F::Ack, b"data");
    let n = seg.len();
    seg.resize(2048, 0);
    assert_eq!(
        in_buffer(&h, 1, gso, &mut seg, n, &mut crate::xmit::gso::NoSink),
        Verdict::Drop(DropReason::TunnelGso)
    );
    // With transmit buffers to cut it into, it goes as the segments the kernel would have
    // cut, each in its own tunnel packet.
    let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let big = client_seg(40003, F::Psh, &payload);
    let mut buf = big.clone();
    buf.resize(big.len() + 64, 0);
    let mut sink = TestSink::default();
    assert_eq!(
        in_buffer(&h, 3, gso, &mut buf, big.len(), &mut sink),
        Verdict::Segmented { count: 3 }
    );
    let mut data = Vec::new();
    for (iface, f) in &sink.sent {
        assert_eq!(*iface, 1);
        let (proto, inner) = outer(f, 22);
        assert_eq!(proto, 4);
        inner_ok(&inner, 40003, 80);
        data.extend_from_slice(&inner[40..]);
    }
    assert_eq!(data, payload, "the payload whole and in order");
    // No room after the frame for the outer header.
    let mut tight = client_seg(40003, F::Ack, b"data");
    assert_eq!(
        h.dp.process(&h.snap, 2, COMPLETE, &mut tight),
        Verdict::Drop(DropReason::NoRoom)
    );
}

/// A full-NAT harness: the TCP and UDP services with local addresses `laddrs` and one
/// full-NAT real server, 198.19.0.21:8080 (UDP: :9000).
fn fullnat_harness(laddrs: &[&str]) -> Harness {
    fullnat_harness_with(laddrs, 1 << 12)
}

fn fullnat_harness_with(laddrs: &[&str], max_conns: usize) -> Harness {
    let laddrs: Vec<IpAddr> = laddrs
        .iter()
        .map(|a| a.parse().expect("an address"))
        .collect();
    let services = [
        (Protocol::Tcp, 80, "198.19.0.21:8080"),
        (Protocol::Udp, 9000, "198.19.0.21:9000"),
    ]
    .map(|(proto, port, at)| Service {
        laddrs: laddrs.clone(),
        ..rr(proto, port, vec![real_by(at, Forward::FullNat)])
    });
    harness_of(&services, max_conns)
}

#[test]
fn full_nat_rewrites_both_ends_and_matches_replies_by_local_port() {
    let h = fullnat_harness(&["198.19.0.1", "198.19.0.2"]);
    let mut ports = std::collections::HashSet::new();
    for cport in 40000..40100u16 {
        let mut out = client_syn(cport);
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut out),
            Verdict::Tx { iface: 1 }
        );
        let (s, sp, d, dp, ttl) = check_frame(&out);
        assert_eq!((d, dp, ttl), (Ipv4Addr::new(198, 19, 0, 21), 8080, 63));
        assert!(
            s == Ipv4Addr::new(198, 19, 0, 1) || s == Ipv4Addr::new(198, 19, 0, 2),
            "from a local address: {s}"
        );
        assert!(sp >= 1024, "a local port from the range: {sp}");
        assert!(ports.insert((s, sp)), "no two connections share {s}:{sp}");
        // The server answers the local address and port; the reply goes to the client from
        // the VIP.
        let mut reply = tcp_frame(
            rs_mac(21),
            SERVER_IF_MAC,
            ([198, 19, 0, 21], 8080),
            (s.octets(), sp),
            F::SynAck,
            b"",
        );
        assert_eq!(
            h.dp.process(&h.snap, 1, FROM_RS, &mut reply),
            Verdict::Tx { iface: 0 }
        );
        assert_eq!(&reply[0..6], &CLIENT_MAC);
        assert_eq!(
            check_frame(&reply),
            (Ipv4Addr::from(VIP), 80, Ipv4Addr::from(CLIENT), cport, 63)
        );
    }
    assert!(
        ports.iter().any(|(a, _)| a.octets()[3] == 1)
            && ports.iter().any(|(a, _)| a.octets()[3] == 2),
        "both local addresses in use"
    );
    let used = |a: [u8; 4]| {
        h.conns
            .laddr_usage(Protocol::Tcp, Ipv4Addr::from(a).into())
            .0
    };
    assert_eq!(used([198, 19, 0, 1]) + used([198, 19, 0, 2]), 100);
    // Expired connections give their ports back.
    h.conns.sweep(u64::MAX);
    assert_eq!(used([198, 19, 0, 1]) + used([198, 19, 0, 2]), 0);
}

#[test]
fn full_nat_without_local_address_or_free_port_is_refused_and_counted() {
    let h = fullnat_harness(&[]);
    let mut out = client_syn(40000);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut out),
        Verdict::Drop(DropReason::NoLocalAddr)
    );
    // One local address: 64,512 ports, spread over the shards; flows from many clients
    // take them until none is left in a client's shard.
    let h = fullnat_harness_with(&["198.19.0.1"], 1 << 20);
    let mut refused = 0;
    let mut ok = 0;
    // Enough flows that every shard's share of the ports runs out.
    for i in 0..200_000u32 {
        let c = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let mut f = udp_frame(CLIENT_MAC, CLIENT_IF_MAC, (c, 5000), (VIP, 9000), b"x");
        match h.dp.process(&h.snap, 0, COMPLETE, &mut f) {
            Verdict::Tx { .. } => ok += 1,
            Verdict::Drop(DropReason::NoLocalPort) => refused += 1,
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(ok, 64512, "every port of the local address is used once");
    assert_eq!(refused, 200_000 - 64512);
    let (used, exhausted) = h
        .conns
        .laddr_usage(Protocol::Udp, Ipv4Addr::new(198, 19, 0, 1).into());
    assert_eq!((used, exhausted), (64512, refused));
    assert_eq!(h.dp.stats().drops(DropReason::NoLocalPort), refused);
}

#[test]
fn a_local_real_server_gets_the_packet_unchanged_through_the_stack() {
    let h = method_harness(real_by("198.19.0.21", Forward::Route));
    for d in h.snap.dests() {
        d.set_local(true);
        d.set_next_hop(None);
    }
    let mut f = client_seg(40000, F::Syn, b"");
    let orig = f.clone();
    let v = h.dp.process(&h.snap, 0, COMPLETE, &mut f);
    assert_eq!(
        v,
        Verdict::Stack {
            daddr: Ipv4Addr::from(VIP).into(),
            len: orig.len() - ETHERNET_HEADER_LEN
        }
    );
    assert_eq!(f, orig, "not even the TTL changes: the stack receives it");
    let mut fwd = None;
    h.conns.for_each(|c| fwd = Some(c.fwd));
    assert_eq!(fwd, Some(Forward::Local));
}

#[test]
fn bypass_sends_a_packet_of_no_server_on_to_its_destination() {
    let mut h = method_harness(Real {
        weight: 0,
        ..real("198.19.0.21")
    });
    let mut f = client_syn(40000);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut f),
        Verdict::Drop(DropReason::NoDest)
    );
    h.snap.sysctl.cache_bypass = true;
    let mut f = client_seg(40000, F::Syn, b"");
    let n = f.len() - ETHERNET_HEADER_LEN;
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut f),
        Verdict::Stack {
            daddr: Ipv4Addr::from(VIP).into(),
            len: n
        }
    );
    let (_, _, d, dp, ttl) = check_frame(&f);
    assert_eq!(
        (d, dp, ttl),
        (Ipv4Addr::from(VIP), 80, 63),
        "routed on, one hop less"
    );
    // A super-packet goes in segments (a raw socket takes none whole).
    let gso = RxMeta {
        gso_size: 1000,
        ..COMPLETE
    };
    let big = client_seg(40000, F::Psh, &[9u8; 2500]);
    let mut buf = big.clone();
    let mut sink = TestSink::default();
    assert_eq!(
        in_buffer(&h, 1, gso, &mut buf, big.len(), &mut sink),
        Verdict::Segmented { count: 3 }
    );
    for (iface, f) in &sink.sent {
        assert_eq!(*iface, u8::MAX, "to the stack");
        let (_, _, d, dp, ttl) = check_frame(f);
        assert_eq!((d, dp, ttl), (Ipv4Addr::from(VIP), 80, 63));
    }
    // The connection sticks to bypass even when a server can take connections again.
    for d in h.snap.dests() {
        d.set_weight(1);
    }
    let mut f = client_seg(40000, F::Ack, b"");
    assert!(matches!(
        h.dp.process(&h.snap, 1, COMPLETE, &mut f),
        Verdict::Stack { .. }
    ));
}

#[test]
fn nat_icmp_send_answers_a_server_packet_of_no_connection() {
    let mut h = harness();
    let frame = rs1_seg(40000, F::Ack, b"");
    let mut buf = frame.clone();
    buf.resize(2048, 0);
    assert_eq!(
        in_buffer(
            &h,
            0,
            FROM_RS,
            &mut buf,
            frame.len(),
            &mut crate::xmit::gso::NoSink
        ),
        Verdict::Drop(DropReason::NoConnOut),
        "off by default"
    );
    h.snap.sysctl.nat_icmp_send = true;
    let mut buf = frame.clone();
    buf.resize(2048, 0);
    let v = in_buffer(
        &h,
        0,
        FROM_RS,
        &mut buf,
        frame.len(),
        &mut crate::xmit::gso::NoSink,
    );
    let Verdict::Send {
        iface: 1,
        len,
        offloads: Offloads::None,
    } = v
    else {
        panic!("{v:?}")
    };
    let (src, dst, _, quote) = check_icmp(&buf[..len]);
    assert_eq!(
        (src, dst, buf[34], buf[35]),
        (
            Ipv4Addr::new(198, 19, 0, 1),
            Ipv4Addr::new(198, 19, 0, 11),
            3,
            3
        ),
        "port unreachable from wvs's own address to the server"
    );
    assert_eq!(quote[..28], quote_of(&frame, 28)[..]);
    // Never for a reset.
    let rst = rs1_seg(40000, F::Rst, b"");
    let mut buf = rst.clone();
    buf.resize(2048, 0);
    assert_eq!(
        in_buffer(
            &h,
            0,
            FROM_RS,
            &mut buf,
            rst.len(),
            &mut crate::xmit::gso::NoSink
        ),
        Verdict::Drop(DropReason::NoConnOut)
    );
}

#[test]
fn what_a_real_server_sends_the_balancers_own_address_goes_to_its_stack() {
    // A health check's probe goes from wvs's own address towards the server (198.19.0.1 ->
    // rs1:8080); the server's answer, and an ICMP error about the probe, are the stack's.
    let h = harness();
    let answer = tcp_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        ([198, 19, 0, 11], 8080),
        ([198, 19, 0, 1], 50000),
        F::SynAck,
        b"",
    );
    let mut f = answer.clone();
    let v = h.dp.process(&h.snap, 0, FROM_RS, &mut f);
    assert_eq!(
        v,
        Verdict::Stack {
            daddr: Ipv4Addr::new(198, 19, 0, 1).into(),
            len: answer.len() - ETHERNET_HEADER_LEN
        }
    );
    assert_eq!(f, answer, "unchanged");
    let probe = udp_frame(
        SERVER_IF_MAC,
        rs_mac(11),
        ([198, 19, 0, 1], 50001),
        ([198, 19, 0, 11], 8080),
        b"probe",
    );
    let mut e = icmp_error_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        [198, 19, 0, 11],
        [198, 19, 0, 1],
        3,
        3,
        &quote_of(&probe, 28),
    );
    let n = e.len() - ETHERNET_HEADER_LEN;
    let orig = e.clone();
    // The harness's service is TCP: a UDP probe's error is nobody's.
    assert_eq!(h.dp.process(&h.snap, 0, FROM_RS, &mut e), Verdict::Pass);
    let tcp_probe = tcp_frame(
        SERVER_IF_MAC,
        rs_mac(11),
        ([198, 19, 0, 1], 50001),
        ([198, 19, 0, 11], 8080),
        F::Syn,
        b"",
    );
    let mut e = icmp_error_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        [198, 19, 0, 11],
        [198, 19, 0, 1],
        3,
        3,
        &quote_of(&tcp_probe, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_RS, &mut e),
        Verdict::Stack {
            daddr: Ipv4Addr::new(198, 19, 0, 1).into(),
            len: n
        }
    );
    assert_eq!(e.len(), orig.len());
    // About a packet from another address, the same error belongs to no connection.
    let stray = tcp_frame(
        SERVER_IF_MAC,
        rs_mac(11),
        ([198, 19, 0, 9], 50001),
        ([198, 19, 0, 11], 8080),
        F::Syn,
        b"",
    );
    let mut other = icmp_error_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        [198, 19, 0, 11],
        [198, 19, 0, 9],
        3,
        3,
        &quote_of(&stray, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_RS, &mut other),
        Verdict::Drop(DropReason::IcmpNoConn)
    );
}

#[test]
fn a_tunnel_fragments_the_outer_packet_without_df_or_with_pmtu_disc_off() {
    let mut h = method_harness(real_by("198.19.0.22", IPIP));
    for d in h.snap.dests() {
        d.set_mtu(1400);
    }
    // 1438 bytes of IP: with the outer header, 58 over the path's 1400. Without DF: the
    // outer packet goes in fragments.
    let payload = vec![0x42u8; 1410];
    let mut f = udp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, 5000),
        (VIP, 9000),
        &payload,
    );
    // etherparse sets DF on what it builds; clear it (and fix the header checksum).
    f[14 + 6] &= !0x40;
    fix_ip_csum(&mut f);
    let n = f.len();
    let mut buf = f.clone();
    buf.resize(n + 64, 0);
    let mut sink = TestSink::default();
    assert_eq!(
        in_buffer(&h, 1, COMPLETE, &mut buf, n, &mut sink),
        Verdict::Segmented { count: 2 }
    );
    let mut outer_payload = Vec::new();
    for (k, (_, fr)) in sink.sent.iter().enumerate() {
        let (ip, rest) = etherparse::Ipv4Header::from_slice(&fr[14..]).expect("fragment");
        assert!(fr.len() - 14 <= 1400, "fits the path");
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert_eq!(u8::from(ip.protocol), 4);
        assert_eq!((ip.more_fragments, ip.dont_fragment), (k == 0, false));
        outer_payload.extend_from_slice(&rest[..usize::from(ip.total_len) - 20]);
    }
    let mut inner = vec![0u8; 12];
    inner.extend_from_slice(&[0x08, 0x00]);
    inner.extend_from_slice(&outer_payload);
    let (s, _, d, dp, ttl) = check_frame(&inner);
    assert_eq!(
        (s, d, dp, ttl),
        (Ipv4Addr::from(CLIENT), Ipv4Addr::from(VIP), 9000, 63)
    );
    // With DF: fragmentation needed with the tunnel's MTU, unless pmtu_disc is off.
    let mut df = udp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, 5001),
        (VIP, 9000),
        &payload,
    );
    let n = df.len();
    df.resize(n + 64, 0);
    let mut sink = TestSink::default();
    let v = in_buffer(&h, 2, COMPLETE, &mut df.clone(), n, &mut sink);
    assert!(
        matches!(
            v,
            Verdict::Send {
                offloads: Offloads::None,
                ..
            }
        ),
        "{v:?}"
    );
    h.snap.sysctl.pmtu_disc = false;
    assert_eq!(
        in_buffer(&h, 3, COMPLETE, &mut df, n, &mut sink),
        Verdict::Segmented { count: 2 }
    );
    let (ip, _) = etherparse::Ipv4Header::from_slice(&sink.sent[0].1[14..]).expect("fragment");
    assert!(!ip.dont_fragment, "the outer packet goes without DF");
}

#[test]
fn icmp_errors_of_full_nat_connections_are_translated_at_both_ends() {
    let h = fullnat_harness(&["198.19.0.1"]);
    let mut syn = client_syn(40901);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    let (laddr, lport, _, _, _) = check_frame(&syn);
    // The server reports on the SYN it got (local address -> server), to the local address:
    // the client gets it about its own SYN (client -> VIP), from the VIP.
    let mut e = icmp_error_frame(
        rs_mac(21),
        SERVER_IF_MAC,
        [198, 19, 0, 21],
        laddr.octets(),
        3,
        4,
        &quote_of(&syn, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut e),
        Verdict::Tx { iface: 0 }
    );
    let (s, d, _, inner) = check_icmp(&e);
    assert_eq!((s, d), (Ipv4Addr::from(VIP), Ipv4Addr::from(CLIENT)));
    assert_eq!(&inner[12..16], &CLIENT, "quoted source: the client");
    assert_eq!(&inner[16..20], &VIP, "quoted destination: the VIP");
    assert_eq!(&inner[20..22], &40901u16.to_be_bytes());
    assert_eq!(&inner[22..24], &80u16.to_be_bytes());
    // A router on the client's side reports on a reply (VIP -> client), to the VIP: the
    // server gets it about its own reply (server -> local address).
    let reply = tcp_frame(
        rs_mac(21),
        SERVER_IF_MAC,
        ([198, 19, 0, 21], 8080),
        (laddr.octets(), lport),
        F::SynAck,
        b"",
    );
    let mut out = reply.clone();
    assert_eq!(
        h.dp.process(&h.snap, 2, FROM_RS, &mut out),
        Verdict::Tx { iface: 0 }
    );
    let mut e = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        VIP,
        11,
        0,
        &quote_of(&out, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 3, COMPLETE, &mut e),
        Verdict::Tx { iface: 1 }
    );
    let (s, d, _, inner) = check_icmp(&e);
    assert_eq!(
        (s, d),
        (
            Ipv4Addr::new(198, 18, 0, 254),
            Ipv4Addr::new(198, 19, 0, 21)
        )
    );
    assert_eq!(
        &inner[12..16],
        &[198, 19, 0, 21],
        "quoted source: the server"
    );
    assert_eq!(
        &inner[16..20],
        &laddr.octets(),
        "quoted destination: the local address"
    );
    assert_eq!(&inner[20..22], &8080u16.to_be_bytes());
    assert_eq!(&inner[22..24], &lport.to_be_bytes());
}

#[test]
fn both_packets_of_a_connection_hint_at_the_same_shard() {
    // The I/O layer prefetches what `lookup_hint` names for a whole batch: the client's
    // packet (looked up by its own endpoint) and the server's reply (looked up by the
    // client's endpoint, its destination) must name the shard their lookups will lock.
    let h = harness();
    let fwd =
        h.dp.lookup_hint(&Headers::parse(&client_syn(40000)))
            .expect("a TCP frame has hints");
    let back =
        h.dp.lookup_hint(&Headers::parse(&rs1_seg(40000, F::SynAck, b"")))
            .expect("hints");
    assert_eq!(
        fwd[0], back[1],
        "the client's key and the reply's key share a shard"
    );
    let udp = udp_frame(CLIENT_MAC, CLIENT_IF_MAC, (CLIENT, 40000), (VIP, 53), b"q");
    assert!(h.dp.lookup_hint(&Headers::parse(&udp)).is_some());
    // Not TCP or UDP over IPv4: nothing to prefetch.
    let mut arp = client_syn(40000);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert!(h.dp.lookup_hint(&Headers::parse(&arp)).is_none());
    assert!(h.dp.lookup_hint(&Headers::parse(&arp[..10])).is_none());
}

/// A SYN, FIN or RST with a wrong checksum changes nothing: dropped and counted before it
/// reaches the state table (a forged RST cannot close a connection, a damaged SYN takes no
/// entry). A data segment's checksum is the real server's to check; a partial one (an
/// offloading local sender) is not a complete checksum to verify.
#[test]
fn state_changing_segments_with_bad_checksums_change_nothing() {
    let h = harness();
    let corrupt = |mut f: Vec<u8>| {
        // The TCP checksum field: Ethernet 14 + IPv4 20 + 16.
        f[14 + 20 + 16] ^= 0x5a;
        f
    };
    let mut bad_syn = corrupt(client_syn(40900));
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut bad_syn),
        Verdict::Drop(DropReason::L4BadChecksum)
    );
    let mut n = 0;
    h.conns.for_each(|_| n += 1);
    assert_eq!(n, 0, "a damaged SYN takes no entry");
    let mut syn = client_syn(40900);
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { .. }
    ));
    let mut ack = client_seg(40900, F::Ack, b"");
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut ack),
        Verdict::Tx { .. }
    ));
    for f in [F::Rst, F::Fin] {
        let mut bad = corrupt(client_seg(40900, f, b""));
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut bad),
            Verdict::Drop(DropReason::L4BadChecksum)
        );
    }
    let mut st = None;
    h.conns.for_each(|c| st = Some(c.state));
    assert_eq!(st, Some(TcpState::Established), "still established");
    assert_eq!(h.dp.stats.drops(DropReason::L4BadChecksum), 3);
    // A data segment is forwarded as it is; so is a RST whose checksum is partial.
    let mut data = corrupt(client_seg(40900, F::Psh, b"hello"));
    assert!(matches!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut data),
        Verdict::Tx { .. }
    ));
    let partial = RxMeta {
        csum: CsumMode::Partial,
        ..COMPLETE
    };
    let mut rst = corrupt(client_seg(40900, F::Rst, b""));
    assert!(matches!(
        h.dp.process(&h.snap, 0, partial, &mut rst),
        Verdict::Tx { .. }
    ));
    let mut st = None;
    h.conns.for_each(|c| st = Some(c.state));
    assert_eq!(st, Some(TcpState::Close));
}

/// No ICMP error and no reset goes to an address that is not one host's (RFC 1122): a
/// packet "from" a broadcast, multicast, loopback or reserved address gets no answer, only
/// its drop counted.
#[test]
fn no_answer_goes_to_an_address_that_is_not_one_hosts() {
    let h = harness();
    let mut buf = [0u8; 2048];
    let mut run = |f: &[u8]| {
        buf[..f.len()].copy_from_slice(f);
        in_buffer(
            &h,
            0,
            COMPLETE,
            &mut buf,
            f.len(),
            &mut crate::xmit::gso::NoSink,
        )
    };
    for src in [
        [0, 0, 0, 0],
        [127, 0, 0, 1],
        [224, 0, 0, 1],
        [240, 0, 0, 1],
        [255, 255, 255, 255],
    ] {
        // A segment of no connection: a reset's case.
        let ack = tcp_frame(
            CLIENT_MAC,
            CLIENT_IF_MAC,
            (src, 40950),
            (VIP, 80),
            F::Ack,
            b"",
        );
        assert_eq!(run(&ack), Verdict::Drop(DropReason::NoConnIn), "{src:?}");
    }
    // A host's address is answered.
    let ack = tcp_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        (CLIENT, 40950),
        (VIP, 80),
        F::Ack,
        b"",
    );
    assert!(matches!(
        run(&ack),
        Verdict::Send {
            offloads: Offloads::None,
            ..
        }
    ));
    assert_eq!(h.dp.stats().resets_sent.load(Relaxed), 1);
    assert!(one_host(Ipv4Addr::new(198, 18, 0, 2)));
    assert!(!one_host(Ipv4Addr::BROADCAST));
}

/// The answer to the director's own check through a VIP it holds (conn::own) goes to its
/// stack from the stand-in address the check connected to, its checksums right; the same
/// packet once the check is over is no one's.
#[test]
fn the_answer_to_a_check_through_a_local_vip_goes_to_the_stack_from_the_stand_in() {
    let h = harness();
    let own_addr = [198, 19, 0, 1];
    let vip: std::net::SocketAddrV4 = std::net::SocketAddrV4::new(VIP.into(), 80);
    let answer = || {
        tcp_frame(
            [0x02, 0, 0, 0, 0, 0x11],
            SERVER_IF_MAC,
            (VIP, 80),
            (own_addr, 45105),
            F::SynAck,
            b"",
        )
    };
    let mut f = answer();
    assert_eq!(h.dp.process(&h.snap, 0, FROM_RS, &mut f), Verdict::Pass);
    h.conns.own().insert(Protocol::Tcp, 45105, vip);
    let mut f = answer();
    let n = f.len() - ETHERNET_HEADER_LEN;
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_RS, &mut f),
        Verdict::Stack {
            daddr: Ipv4Addr::from(own_addr).into(),
            len: n
        }
    );
    let (s, sp, d, dp, _) = check_frame(&f);
    assert_eq!(
        (s, sp, d, dp),
        (
            crate::consts::CHECK_STANDIN,
            80,
            Ipv4Addr::from(own_addr),
            45105
        )
    );
    // From another port of the VIP: not the check's.
    let mut other = tcp_frame(
        [0x02, 0, 0, 0, 0, 0x11],
        SERVER_IF_MAC,
        (VIP, 81),
        (own_addr, 45105),
        F::SynAck,
        b"",
    );
    assert_eq!(h.dp.process(&h.snap, 0, FROM_RS, &mut other), Verdict::Pass);
    h.conns.own().remove(Protocol::Tcp, 45105);
    let mut f = answer();
    assert_eq!(h.dp.process(&h.snap, 0, FROM_RS, &mut f), Verdict::Pass);
}
