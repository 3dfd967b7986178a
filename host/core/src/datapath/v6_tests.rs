//! The datapath over IPv6 (`ip_vs_in`/`ip_vs_out` for AF_INET6): NAT66 both ways with
//! checksums etherparse agrees with, the hop limit, extension headers stepped over,
//! fragments, the methods that carry IPv6 so far and those that refuse it, and IPv4 and
//! IPv6 services side by side.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

use super::*;
use crate::model::Protocol;
use crate::spec::Service;
use crate::testkit::{
    CLIENT, CLIENT_IF_MAC, CLIENT_MAC, CLIENT6, FROM_CLIENT as COMPLETE, FROM_RS, Harness, IPIP,
    SERVER_IF_MAC, VIP, VIP6, real, real_by, rr, rs_mac, rs6, service6, v6,
};

fn addr(a: [u8; 16]) -> Ipv6Addr {
    Ipv6Addr::from(a)
}

fn rs6_at(last: u8, port: u16) -> String {
    format!("[{}]:{port}", addr(rs6(last)))
}

fn harness_of(services: &[Service]) -> Harness {
    Harness::new(
        Snapshot::build_native(services, &Snapshot::default()),
        1 << 12,
        1,
    )
}

/// Round robin on [VIP6]:80 (TCP) over three servers, on [VIP6]:9000 (UDP) over two,
/// listed last to first as IPVS's schedulers see them newest first.
fn harness() -> Harness {
    harness_of(&[
        service6(
            Protocol::Tcp,
            80,
            "rr",
            [13, 12, 11].map(|n| real(&rs6_at(n, 8080))).into(),
        ),
        service6(
            Protocol::Udp,
            9000,
            "rr",
            [12, 11].map(|n| real(&rs6_at(n, 9000))).into(),
        ),
    ])
}

#[derive(Clone, Copy)]
enum F {
    Syn,
    SynAck,
    Ack,
}

fn tcp6(src: ([u8; 16], u16), dst: ([u8; 16], u16), f: F, hops: u8, payload: &[u8]) -> Vec<u8> {
    let (smac, dmac) = if dst.0 == VIP6 || src.0 == CLIENT6 {
        (CLIENT_MAC, CLIENT_IF_MAC)
    } else {
        (rs_mac(src.0[15]), SERVER_IF_MAC)
    };
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv6(src.0, dst.0, hops)
        .tcp(src.1, dst.1, 1000, 65535);
    let b = match f {
        F::Syn => b.syn(),
        F::SynAck => b.syn().ack(1001),
        F::Ack => b.ack(1),
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("a frame");
    v
}

fn client_syn(cport: u16) -> Vec<u8> {
    tcp6((CLIENT6, cport), (VIP6, 80), F::Syn, 64, b"")
}

/// The addresses, ports and hop limit of an IPv6 frame, its L4 checksum checked by
/// etherparse.
fn check6(frame: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16, u8) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("frame parses");
    let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
        panic!("not ipv6")
    };
    let payload = h.payload.slice();
    let (sport, dport) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            let c = t.calc_checksum_ipv6(ip, payload).expect("checksum");
            assert_eq!(t.checksum, c, "tcp checksum");
            (t.source_port, t.destination_port)
        }
        Some(TransportHeader::Udp(u)) => {
            let c = u.calc_checksum_ipv6(ip, payload).expect("checksum");
            assert_eq!(u.checksum, c, "udp checksum");
            (u.source_port, u.destination_port)
        }
        _ => panic!("no transport"),
    };
    (
        ip.source.into(),
        sport,
        ip.destination.into(),
        dport,
        ip.hop_limit,
    )
}

#[test]
fn nat66_both_ways_with_valid_checksums() {
    let h = harness();
    let mut syn = client_syn(40000);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    let (s, sp, d, dp, hops) = check6(&syn);
    assert_eq!((s, sp), (addr(CLIENT6), 40000), "the client is kept (NAT)");
    assert_eq!((d, dp), (addr(rs6(11)), 8080));
    assert_eq!(hops, 63, "one hop less, as IPVS's decrement_ttl for IPv6");
    assert_eq!(&syn[0..6], &rs_mac(11));
    assert_eq!(&syn[6..12], &SERVER_IF_MAC);

    let mut synack = tcp6((rs6(11), 8080), (CLIENT6, 40000), F::SynAck, 64, b"");
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut synack),
        Verdict::Tx { iface: 0 }
    );
    let (s, sp, d, dp, hops) = check6(&synack);
    assert_eq!(
        (s, sp, d, dp),
        (addr(VIP6), 80, addr(CLIENT6), 40000),
        "the reply comes from the VIP"
    );
    assert_eq!(hops, 63);
    assert_eq!(&synack[0..6], &CLIENT_MAC);

    let mut ack = tcp6(
        (CLIENT6, 40000),
        (VIP6, 80),
        F::Ack,
        64,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert_eq!(
        h.dp.process(&h.snap, 2, COMPLETE, &mut ack),
        Verdict::Tx { iface: 1 }
    );
    check6(&ack);
    let mut state = None;
    h.conns
        .for_each(|c| state = Some((c.state, c.caddr(), c.vaddr(), c.raddr())));
    assert_eq!(
        state,
        Some((
            TcpState::Established,
            IpAddr::from(CLIENT6),
            IpAddr::from(VIP6),
            IpAddr::from(rs6(11))
        ))
    );
}

#[test]
fn round_robin_over_thirty_ipv6_connections_beside_an_ipv4_service() {
    // The same port on an IPv4 VIP: neither family's connections touch the other's.
    let mut services = vec![service6(
        Protocol::Tcp,
        80,
        "rr",
        [13, 12, 11].map(|n| real(&rs6_at(n, 8080))).into(),
    )];
    services.push(rr(
        Protocol::Tcp,
        80,
        ["198.19.0.12:8080", "198.19.0.11:8080"].map(real).into(),
    ));
    let h = harness_of(&services);
    let mut per = std::collections::HashMap::new();
    for p in 0..30u16 {
        let mut f = client_syn(50000 + p);
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut f),
            Verdict::Tx { iface: 1 }
        );
        *per.entry(check6(&f).2).or_insert(0) += 1;
        let mut f4 = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
            .ipv4(CLIENT, VIP, 64)
            .tcp(50000 + p, 80, 1000, 65535)
            .syn()
            .write(&mut f4, b"")
            .expect("a frame");
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut f4),
            Verdict::Tx { iface: 1 }
        );
    }
    assert_eq!(per.len(), 3);
    assert!(per.values().all(|&n| n == 10), "{per:?}");
    let v6_dests: Vec<_> = h.snap.dests().filter(|d| d.addr.is_ipv6()).collect();
    assert!(v6_dests.iter().all(|d| d.activeconns.load(Relaxed) == 10));
    let v4_dests: Vec<_> = h.snap.dests().filter(|d| d.addr.is_ipv4()).collect();
    assert!(v4_dests.iter().all(|d| d.activeconns.load(Relaxed) == 15));
    assert_eq!(h.dp.stats().conns.load(Relaxed), 60);
}

#[test]
fn udp_over_ipv6_both_ways() {
    let h = harness();
    let mut q = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv6(CLIENT6, VIP6, 64)
        .udp(5353, 9000)
        .write(&mut q, b"hello")
        .expect("a frame");
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut q),
        Verdict::Tx { iface: 1 }
    );
    let (_, _, d, dp, _) = check6(&q);
    assert_eq!((d, dp), (addr(rs6(11)), 9000));
    let mut a = Vec::new();
    PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
        .ipv6(rs6(11), CLIENT6, 64)
        .udp(9000, 5353)
        .write(&mut a, b"rs1")
        .expect("a frame");
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut a),
        Verdict::Tx { iface: 0 }
    );
    let (s, sp, ..) = check6(&a);
    assert_eq!((s, sp), (addr(VIP6), 9000));
}

/// A destination-options header (8 bytes of padding) between the fixed header and TCP.
fn with_dest_opts(frame: &[u8]) -> Vec<u8> {
    const ETH: usize = 14;
    let mut v = frame[..ETH + 40].to_vec();
    let next = v[ETH + 6];
    v[ETH + 6] = 60;
    let plen = u16::from_be_bytes([v[ETH + 4], v[ETH + 5]]) + 8;
    v[ETH + 4..ETH + 6].copy_from_slice(&plen.to_be_bytes());
    // Next header, length 0 (8 bytes), PadN of 4.
    v.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    v.extend_from_slice(&frame[ETH + 40..]);
    v
}

#[test]
fn extension_headers_are_stepped_over_and_kept() {
    let h = harness();
    let mut syn = with_dest_opts(&client_syn(40001));
    let before = syn.clone();
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    let (_, sp, d, dp, _) = check6(&syn);
    assert_eq!((sp, d, dp), (40001, addr(rs6(11)), 8080));
    assert_eq!(
        &syn[14 + 40..14 + 48],
        &before[14 + 40..14 + 48],
        "the options go on untouched"
    );
}

#[test]
fn fragments_of_a_service_are_dropped_as_ipv4_s_are() {
    let h = harness();
    // A first fragment (offset 0, M set) and a later one, each to the service.
    for (offset, more) in [(0u16, true), (185, false)] {
        let syn = client_syn(40002);
        let mut v = syn[..14 + 40].to_vec();
        let next = v[14 + 6];
        v[14 + 6] = 44;
        let plen = u16::from_be_bytes([v[14 + 4], v[14 + 5]]) + 8;
        v[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
        let off = (offset << 3) | u16::from(more);
        v.extend_from_slice(&[next, 0]);
        v.extend_from_slice(&off.to_be_bytes());
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(&syn[14 + 40..]);
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut v),
            Verdict::Drop(DropReason::IpFragment),
            "offset {offset}"
        );
    }
    assert!(h.conns.is_empty());
}

#[test]
fn the_hop_limit_runs_out_at_the_balancer() {
    let h = harness();
    let mut syn = tcp6((CLIENT6, 40003), (VIP6, 80), F::Syn, 1, b"");
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Drop(DropReason::TtlExceeded)
    );
}

#[test]
fn ipv6_is_never_fragmented_on_the_way_a_too_long_packet_is_refused_with_the_mtu() {
    let h = harness();
    for d in h.snap.dests() {
        d.set_mtu(1280);
    }
    let mut syn = client_syn(40004);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    let big = |len: usize| tcp6((CLIENT6, 40004), (VIP6, 80), F::Ack, 64, &vec![7u8; len]);
    // 40 + 20 + 1220 = 1280 bytes fit; one more does not (IPv6 has no DF: every packet is).
    let mut fits = big(1220);
    assert_eq!(
        h.dp.process(&h.snap, 1, COMPLETE, &mut fits),
        Verdict::Tx { iface: 1 }
    );
    // (`process` drops what `process_in_buffer` answers: Packet Too Big, tested below.)
    let mut long = big(1221);
    assert_eq!(
        h.dp.process(&h.snap, 2, COMPLETE, &mut long),
        Verdict::Drop(DropReason::FragNeeded)
    );
}

#[test]
fn direct_routing_and_full_nat_carry_ipv6() {
    // Direct routing: only the MAC changes (and the hop limit).
    let dr = harness_of(&[service6(
        Protocol::Tcp,
        80,
        "rr",
        vec![real_by(&addr(rs6(21)).to_string(), Forward::Route)],
    )]);
    let mut syn = client_syn(40005);
    assert_eq!(
        dr.dp.process(&dr.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    let (s, _, d, dp, hops) = check6(&syn);
    assert_eq!((s, d, dp, hops), (addr(CLIENT6), addr(VIP6), 80, 63));
    assert_eq!(&syn[0..6], &rs_mac(21));

    // Full NAT with an IPv4 and an IPv6 local address: the server's family is taken.
    let laddr6 = v6([0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1]);
    let svc = Service {
        laddrs: vec![
            "198.19.0.1".parse().expect("an address"),
            IpAddr::from(laddr6),
        ],
        ..service6(
            Protocol::Tcp,
            80,
            "rr",
            vec![real_by(&rs6_at(21, 8080), Forward::FullNat)],
        )
    };
    let h = harness_of(&[svc]);
    let mut syn = client_syn(40006);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    let (s, lport, d, dp, _) = check6(&syn);
    assert_eq!((s, d, dp), (addr(laddr6), addr(rs6(21)), 8080));
    let mut synack = tcp6((rs6(21), 8080), (laddr6, lport), F::SynAck, 64, b"");
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut synack),
        Verdict::Tx { iface: 0 }
    );
    assert_eq!(check6(&synack), (addr(VIP6), 80, addr(CLIENT6), 40006, 63));
}

#[test]
fn a_method_that_cannot_carry_the_family_drops_it_counted() {
    // An IPv6 service whose real server is IPv4: NAT cannot translate the header, nor can
    // direct routing hand the server a packet of another family.
    for r in [
        real("198.19.0.21:8080"),
        real_by("198.19.0.21", Forward::Route),
    ] {
        let h = harness_of(&[service6(Protocol::Tcp, 80, "rr", vec![r.clone()])]);
        let mut syn = client_syn(40007);
        assert_eq!(
            h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
            Verdict::Drop(DropReason::FamilyMismatch),
            "{r:?}"
        );
        assert_eq!(h.dp.stats().drops(DropReason::FamilyMismatch), 1);
    }
}

#[test]
fn the_lookup_hint_covers_ipv6() {
    let h = harness();
    let syn = client_syn(40008);
    let headers = Headers::parse(&syn);
    assert!(h.dp.lookup_hint(&headers).is_some());
}

#[test]
fn a_real_server_s_reply_of_no_connection_is_dropped() {
    let h = harness();
    let mut r = tcp6((rs6(11), 8080), (CLIENT6, 9), F::Ack, 64, b"");
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_RS, &mut r),
        Verdict::Drop(DropReason::NoConnOut)
    );
}

/// `process_in_buffer` on `frame` in a slot with room to answer.
fn answered(h: &Harness, now: u64, meta: RxMeta, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut slot = vec![0u8; 4096];
    slot[..frame.len()].copy_from_slice(frame);
    let headers = Headers::parse(&slot[..frame.len()]);
    let v = h.dp.process_in_buffer(
        &h.snap,
        now,
        meta,
        &headers,
        &mut slot,
        &mut crate::xmit::gso::NoSink,
    );
    (v, slot)
}

/// The ICMPv6 message of `frame`: its outer addresses, type (checksum verified by
/// etherparse) and the quote.
fn icmp6_of(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr, etherparse::Icmpv6Type, Vec<u8>) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("frame parses");
    let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
        panic!("not ipv6")
    };
    let Some(TransportHeader::Icmpv6(icmp)) = &h.transport else {
        panic!("not icmpv6: {:?}", h.transport)
    };
    let payload = h.payload.slice();
    let want = icmp
        .icmp_type
        .calc_checksum(ip.source, ip.destination, payload)
        .expect("checksum");
    assert_eq!(icmp.checksum, want, "icmpv6 checksum");
    (
        ip.source.into(),
        ip.destination.into(),
        icmp.icmp_type,
        payload.to_vec(),
    )
}

#[test]
fn a_service_without_servers_answers_icmpv6_port_unreachable_from_the_vip() {
    let h = harness_of(&[service6(Protocol::Tcp, 80, "rr", vec![])]);
    let syn = client_syn(40010);
    let (v, out) = answered(&h, 0, COMPLETE, &syn);
    let Verdict::Send { iface: 0, len, .. } = v else {
        panic!("{v:?}")
    };
    let (src, dst, t, quote) = icmp6_of(&out[..len]);
    assert_eq!((src, dst), (addr(VIP6), addr(CLIENT6)));
    assert_eq!(
        t,
        etherparse::Icmpv6Type::DestinationUnreachable(
            etherparse::icmpv6::DestUnreachableCode::Port
        )
    );
    assert_eq!(quote, syn[14..], "the whole packet is quoted (it fits)");
    assert_eq!(&out[0..6], &CLIENT_MAC, "back to the client's MAC");
    assert_eq!(h.dp.stats().icmp_sent.load(Relaxed), 1);
}

#[test]
fn a_too_long_packet_gets_packet_too_big_with_the_mtu_quoting_1232_bytes() {
    let h = harness();
    for d in h.snap.dests() {
        d.set_mtu(1280);
    }
    let mut syn = client_syn(40011);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    let long = tcp6((CLIENT6, 40011), (VIP6, 80), F::Ack, 64, &[7u8; 1400]);
    let (v, out) = answered(&h, 1, COMPLETE, &long);
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(len, 14 + 1280, "as long as IPv6's least MTU allows");
    let (src, dst, t, quote) = icmp6_of(&out[..len]);
    assert_eq!((src, dst), (addr(VIP6), addr(CLIENT6)));
    assert_eq!(t, etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 });
    assert_eq!(quote, long[14..14 + 1232]);
}

#[test]
fn the_hop_limit_running_out_is_answered_time_exceeded_from_the_vip() {
    let h = harness();
    let syn = tcp6((CLIENT6, 40012), (VIP6, 80), F::Syn, 1, b"");
    let (v, out) = answered(&h, 0, COMPLETE, &syn);
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    let (src, dst, t, _) = icmp6_of(&out[..len]);
    assert_eq!((src, dst), (addr(VIP6), addr(CLIENT6)));
    assert_eq!(
        t,
        etherparse::Icmpv6Type::TimeExceeded(
            etherparse::icmpv6::TimeExceededCode::HopLimitExceeded
        )
    );
}

#[test]
fn a_segment_of_no_connection_is_reset_from_the_vip() {
    let h = harness();
    let ack = with_dest_opts(&tcp6((CLIENT6, 40013), (VIP6, 80), F::Ack, 64, b"lost"));
    let (v, out) = answered(&h, 0, COMPLETE, &ack);
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(len, 14 + 40 + 20);
    let (s, sp, d, dp, _) = check6(&out[..len]);
    assert_eq!((s, sp, d, dp), (addr(VIP6), 80, addr(CLIENT6), 40013));
    let tcp = etherparse::TcpHeaderSlice::from_slice(&out[14 + 40..len]).expect("tcp");
    assert!(
        tcp.rst() && !tcp.ack(),
        "an ACK is answered by RST from its ack number"
    );
    assert_eq!(tcp.sequence_number(), 1);
    assert_eq!(h.dp.stats().resets_sent.load(Relaxed), 1);
}

/// An ICMPv6 error frame from `from` (MAC, address) to `to` quoting `quoted` (a frame).
fn icmp6_frame(
    macs: ([u8; 6], [u8; 6]),
    from: [u8; 16],
    to: [u8; 16],
    t: etherparse::Icmpv6Type,
    quoted: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv6(from, to, 64)
        .icmpv6(t)
        .write(&mut v, &quoted[14..])
        .expect("a frame");
    v
}

#[test]
fn icmpv6_errors_are_relayed_both_ways_with_the_quote_translated() {
    let h = harness();
    let mut syn = client_syn(40014);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    // A router on the client's side says a reply (VIP6:80 -> client) was too big: it goes
    // to the real server, about the packet the server sent.
    let reply = tcp6((VIP6, 80), (CLIENT6, 40014), F::SynAck, 64, &[1u8; 64]);
    let router = v6([0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0xfe]);
    let mut ptb = icmp6_frame(
        (CLIENT_MAC, CLIENT_IF_MAC),
        router,
        VIP6,
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 },
        &reply,
    );
    assert_eq!(
        h.dp.process(&h.snap, 1, COMPLETE, &mut ptb),
        Verdict::Tx { iface: 1 }
    );
    let (src, dst, t, quote) = icmp6_of(&ptb);
    assert_eq!((src, dst), (addr(router), addr(rs6(11))));
    assert_eq!(t, etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 });
    let (q, rest) = etherparse::Ipv6Header::from_slice(&quote).expect("quote");
    assert_eq!((q.source, q.destination), (rs6(11), CLIENT6));
    assert_eq!(&rest[..4], &[0x1f, 0x90, 0x9c, 0x4e], "ports 8080 -> 40014");
    assert_eq!(&ptb[0..6], &rs_mac(11));
    // The server's side says the client's packet (client -> rs:8080) could not be
    // delivered: it goes to the client, about the packet it sent to the VIP.
    let fwd = tcp6((CLIENT6, 40014), (rs6(11), 8080), F::Ack, 63, b"data");
    let mut unreach = icmp6_frame(
        (rs_mac(11), SERVER_IF_MAC),
        rs6(11),
        CLIENT6,
        etherparse::Icmpv6Type::DestinationUnreachable(
            etherparse::icmpv6::DestUnreachableCode::Port,
        ),
        &fwd,
    );
    assert_eq!(
        h.dp.process(&h.snap, 2, FROM_RS, &mut unreach),
        Verdict::Tx { iface: 0 }
    );
    let (src, dst, _, quote) = icmp6_of(&unreach);
    assert_eq!((src, dst), (addr(VIP6), addr(CLIENT6)));
    let (q, rest) = etherparse::Ipv6Header::from_slice(&quote).expect("quote");
    assert_eq!((q.source, q.destination), (CLIENT6, VIP6));
    assert_eq!(&rest[..4], &[0x9c, 0x4e, 0, 80], "ports 40014 -> 80");
    // Echo and neighbour discovery are the kernel's.
    let mut echo = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv6(CLIENT6, VIP6, 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut echo, b"ping")
        .expect("a frame");
    assert_eq!(h.dp.process(&h.snap, 3, COMPLETE, &mut echo), Verdict::Pass);
    // An error whose checksum fails is dropped, not made good.
    let mut bad = icmp6_frame(
        (CLIENT_MAC, CLIENT_IF_MAC),
        router,
        VIP6,
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 },
        &reply,
    );
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert_eq!(
        h.dp.process(&h.snap, 4, COMPLETE, &mut bad),
        Verdict::Drop(DropReason::IcmpBadChecksum)
    );
}

/// A tunnel server's frame: its outer IPv6 header's next header, payload length, hop
/// limit and addresses, and what follows.
fn outer6(frame: &[u8]) -> (u8, usize, u8, Ipv6Addr, Ipv6Addr, &[u8]) {
    assert_eq!(&frame[12..14], &[0x86, 0xdd], "an IPv6 frame");
    let ip = &frame[14..];
    let (h, rest) = etherparse::Ipv6Header::from_slice(ip).expect("outer ipv6");
    (
        u8::from(h.next_header),
        usize::from(h.payload_length),
        h.hop_limit,
        h.source.into(),
        h.destination.into(),
        rest,
    )
}

#[test]
fn tunnels_over_ipv6_carry_either_family_as_ipvs_builds_them() {
    use crate::model::{TunCsum, TunKind};
    use crate::testkit::{SOURCE6, tunnel};
    // IPv6 in IPv6 (next header 41): the inner packet one hop less, the outer's hop limit
    // from it, from wvs's address on the route.
    let h = harness_of(&[service6(
        Protocol::Tcp,
        80,
        "rr",
        vec![real_by(&addr(rs6(21)).to_string(), IPIP)],
    )]);
    let syn = client_syn(40020);
    let (v, out) = answered(&h, 0, COMPLETE, &syn);
    let Verdict::Send { iface: 1, len, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(len, syn.len() + 40);
    let (next, plen, hops, src, dst, inner) = outer6(&out[..len]);
    assert_eq!((next, plen, hops), (41, syn.len() - 14, 63));
    assert_eq!((src, dst), (addr(SOURCE6), addr(rs6(21))));
    let mut want = syn[14..].to_vec();
    want[7] = 63;
    assert_eq!(inner, want, "the client's packet, one hop less");
    assert_eq!(&out[0..6], &rs_mac(21));

    // GUE over IPv6 with its checksum, carrying IPv6: UDP to the port, protocol 41.
    let h = harness_of(&[service6(
        Protocol::Tcp,
        80,
        "rr",
        vec![real_by(
            &addr(rs6(22)).to_string(),
            tunnel(TunKind::Gue, 6080, TunCsum::Csum),
        )],
    )]);
    let (v, out) = answered(&h, 0, COMPLETE, &client_syn(40021));
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    let p = PacketHeaders::from_ethernet_slice(&out[..len]).expect("parses");
    let (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Udp(u))) = (&p.net, &p.transport)
    else {
        panic!("not UDP over IPv6: {p:?}")
    };
    assert_eq!(u.destination_port, 6080);
    let payload = p.payload.slice();
    assert_eq!(u.checksum, u.calc_checksum_ipv6(ip, payload).expect("sum"));
    assert_eq!(&payload[..4], &[0, 41, 0, 0], "GUE version 0 carrying IPv6");

    // An IPv4 service's tunnel server of IPv6 (IPVS allows the families to differ for
    // tunnels only), and the other way round.
    let mut v4svc = rr(
        Protocol::Tcp,
        80,
        vec![real_by(&addr(rs6(23)).to_string(), IPIP)],
    );
    v4svc.reals[0].port = 80;
    let h = harness_of(&[v4svc]);
    let mut syn4 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40022, 80, 1000, 65535)
        .syn()
        .write(&mut syn4, b"")
        .expect("a frame");
    let (v, out) = answered(&h, 0, COMPLETE, &syn4);
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    let (next, _, hops, _, dst, inner) = outer6(&out[..len]);
    assert_eq!((next, hops, dst), (4, 63, addr(rs6(23))), "IPv4 in IPv6");
    assert_eq!(inner[0] >> 4, 4);
    let h = harness_of(&[service6(
        Protocol::Tcp,
        80,
        "rr",
        vec![real_by(
            "198.19.0.24",
            tunnel(TunKind::Gre, 0, TunCsum::None),
        )],
    )]);
    let (v, out) = answered(&h, 0, COMPLETE, &client_syn(40023));
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    let p = PacketHeaders::from_ethernet_slice(&out[..len]).expect("parses");
    let Some(NetHeaders::Ipv4(ip, _)) = &p.net else {
        panic!("not IPv4 outside")
    };
    assert_eq!(u8::from(ip.protocol), 47);
    assert!(!ip.dont_fragment, "no DF from an IPv6 packet");
    let gre = &out[14 + 20..];
    assert_eq!(&gre[..4], &[0, 0, 0x86, 0xdd], "GRE carrying IPv6");
    assert_eq!(gre[4] >> 4, 6);
}

#[test]
fn a_tunnel_over_ipv6_needs_1280_bytes_inside() {
    let h = harness_of(&[service6(
        Protocol::Tcp,
        80,
        "rr",
        vec![real_by(&addr(rs6(21)).to_string(), IPIP)],
    )]);
    // 1300 on the path leaves 1260 inside: less than IPv6 allows, nothing goes
    // (`__ip_vs_get_out_rt_v6`), not even a SYN; 1320 leaves 1280.
    for d in h.snap.dests() {
        d.set_mtu(1300);
    }
    let mut syn = client_syn(40024);
    assert_eq!(
        h.dp.process(&h.snap, 0, COMPLETE, &mut syn),
        Verdict::Drop(DropReason::TooBig)
    );
    for d in h.snap.dests() {
        d.set_mtu(1320);
    }
    let (v, _) = answered(&h, 1, COMPLETE, &client_syn(40025));
    assert!(matches!(v, Verdict::Send { .. }), "{v:?}");
    let long = tcp6((CLIENT6, 40025), (VIP6, 80), F::Ack, 64, &[7u8; 1300]);
    let (v, out) = answered(&h, 2, COMPLETE, &long);
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    let (_, _, t, _) = icmp6_of(&out[..len]);
    assert_eq!(t, etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 });
}

/// A full-NAT service on `vip_v6`'s VIP (IPv6 or IPv4) over one real server `at` of the
/// other family, with local addresses of both families.
fn cross_harness(vip_v6: bool, at: &str) -> Harness {
    let laddrs = vec![
        "198.19.0.1".parse().expect("an address"),
        IpAddr::from(crate::testkit::SOURCE6),
    ];
    let reals = vec![real_by(at, Forward::FullNat)];
    let svc = if vip_v6 {
        service6(Protocol::Tcp, 80, "rr", reals.clone())
    } else {
        rr(Protocol::Tcp, 80, reals.clone())
    };
    let udp = if vip_v6 {
        service6(Protocol::Udp, 9000, "rr", reals)
    } else {
        rr(Protocol::Udp, 9000, reals)
    };
    harness_of(&[
        Service {
            laddrs: laddrs.clone(),
            ..svc
        },
        Service { laddrs, ..udp },
    ])
}

/// An IPv4 frame's addresses, ports and TTL, its checksums verified by etherparse, and DF.
fn check4(frame: &[u8]) -> (std::net::Ipv4Addr, u16, std::net::Ipv4Addr, u16, u8, bool) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("frame parses");
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not ipv4")
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "ip checksum");
    let payload = h.payload.slice();
    let (sp, dp) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, payload).expect("sum"));
            (t.source_port, t.destination_port)
        }
        Some(TransportHeader::Udp(u)) => {
            assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, payload).expect("sum"));
            (u.source_port, u.destination_port)
        }
        _ => panic!("no transport"),
    };
    (
        ip.source.into(),
        sp,
        ip.destination.into(),
        dp,
        ip.time_to_live,
        ip.dont_fragment,
    )
}

#[test]
fn full_nat_serves_an_ipv4_client_from_an_ipv6_server_and_back() {
    use crate::testkit::SOURCE6;
    let h = cross_harness(false, &rs6_at(31, 8080));
    let mut syn = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40030, 80, 1000, 65535)
        .syn()
        .write(&mut syn, b"hello")
        .expect("a frame");
    let (v, out) = answered(&h, 0, COMPLETE, &syn);
    let Verdict::Send { iface: 1, len, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(len, syn.len() + 20, "IPv6's header is 20 bytes longer");
    let (s, lport, d, dp, hops) = check6(&out[..len]);
    assert_eq!((s, d, dp, hops), (addr(SOURCE6), addr(rs6(31)), 8080, 63));
    assert_eq!(&out[len - 5..len], b"hello");
    // The server's answer, to the local address: back to the client over IPv4 from the VIP.
    let reply = tcp6((rs6(31), 8080), (SOURCE6, lport), F::SynAck, 64, b"world!");
    let (v, out) = answered(&h, 1, FROM_RS, &reply);
    let Verdict::Send { iface: 0, len, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(len, reply.len() - 20);
    let (s, sp, d, dp, ttl, df) = check4(&out[..len]);
    assert_eq!(
        (s, sp, d, dp, ttl, df),
        (VIP.into(), 80, CLIENT.into(), 40030, 63, true)
    );
    assert_eq!(&out[..6], &CLIENT_MAC);
    // A UDP datagram without a checksum gets one: IPv6 has no "none".
    let mut q = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(40031, 9000)
        .write(&mut q, b"who")
        .expect("a frame");
    q[14 + 20 + 6..14 + 20 + 8].fill(0);
    let (v, out) = answered(&h, 2, COMPLETE, &q);
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    let (_, _, d, dp, _) = check6(&out[..len]);
    assert_eq!((d, dp), (addr(rs6(31)), 8080));
}

#[test]
fn full_nat_serves_an_ipv6_client_from_an_ipv4_server_and_back() {
    let h = cross_harness(true, "198.19.0.31:8080");
    let syn = client_syn(40032);
    let (v, out) = answered(&h, 0, COMPLETE, &syn);
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(len, syn.len() - 20);
    let (s, lport, d, dp, ttl, df) = check4(&out[..len]);
    assert_eq!(
        (s, d, dp, ttl, df),
        (
            "198.19.0.1".parse().expect("a"),
            "198.19.0.31".parse().expect("a"),
            8080,
            63,
            true
        )
    );
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(rs_mac(31), SERVER_IF_MAC)
        .ipv4([198, 19, 0, 31], [198, 19, 0, 1], 64)
        .tcp(8080, lport, 5000, 65535)
        .syn()
        .ack(1001)
        .write(&mut reply, b"")
        .expect("a frame");
    let (v, out) = answered(&h, 1, FROM_RS, &reply);
    let Verdict::Send { iface: 0, len, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(
        check6(&out[..len]),
        (addr(VIP6), 80, addr(CLIENT6), 40032, 63)
    );
}

#[test]
fn a_super_packet_into_the_other_family_is_cut_into_segments() {
    let h = cross_harness(false, &rs6_at(31, 8080));
    let mut syn = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40033, 80, 1000, 65535)
        .syn()
        .write(&mut syn, b"")
        .expect("a frame");
    let _ = answered(&h, 0, COMPLETE, &syn);
    let mut big = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40033, 80, 1001, 65535)
        .ack(1)
        .write(&mut big, &[9u8; 3000])
        .expect("a frame");
    let meta = RxMeta {
        gso_size: 1000,
        ..COMPLETE
    };
    let mut sink = crate::xmit::gso::TestSink::default();
    let mut slot = vec![0u8; 8192];
    slot[..big.len()].copy_from_slice(&big);
    let headers = Headers::parse(&slot[..big.len()]);
    let v =
        h.dp.process_in_buffer(&h.snap, 1, meta, &headers, &mut slot, &mut sink);
    assert_eq!(v, Verdict::Segmented { count: 3 });
    for (iface, f) in &sink.sent {
        assert_eq!(*iface, 1);
        let (_, _, d, dp, _) = check6(f);
        assert_eq!((d, dp), (addr(rs6(31)), 8080));
        assert_eq!(f.len(), 14 + 40 + 20 + 1000);
    }
}

/// A full-NAT connection between the families: an error from the server's side (ICMPv6)
/// reaches the client as ICMP, and one from the client's side (ICMP) the server as
/// ICMPv6, each quoting the packet as its receiver sent it (RFC 7915); one with no
/// counterpart is dropped, counted.
#[test]
fn icmp_errors_between_the_families_are_rebuilt_in_the_receiver_s_family() {
    use crate::testkit::SOURCE6;
    let h = cross_harness(false, &rs6_at(31, 8080));
    let mut syn = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40040, 80, 1000, 65535)
        .syn()
        .write(&mut syn, b"")
        .expect("a frame");
    let (v, out) = answered(&h, 0, COMPLETE, &syn);
    let Verdict::Send { len, .. } = v else {
        panic!("{v:?}")
    };
    let (_, lport, _, _, _) = check6(&out[..len]);
    // The server's network: the forwarded packet (local address -> server) is too big.
    let fwd = tcp6((SOURCE6, lport), (rs6(31), 8080), F::Ack, 63, &[7u8; 100]);
    let ptb = icmp6_frame(
        (rs_mac(31), SERVER_IF_MAC),
        rs6(31),
        SOURCE6,
        etherparse::Icmpv6Type::PacketTooBig { mtu: 1300 },
        &fwd,
    );
    let (v, out) = answered(&h, 1, FROM_RS, &ptb);
    let Verdict::Send { iface: 0, len, .. } = v else {
        panic!("{v:?}")
    };
    let frame = &out[..len];
    assert_eq!(&frame[12..14], &[0x08, 0x00], "an IPv4 frame");
    assert_eq!(&frame[..6], &CLIENT_MAC);
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).expect("ipv4");
    assert_eq!(ip.to_header().calc_header_checksum(), ip.header_checksum());
    assert_eq!((ip.source(), ip.destination()), (VIP, CLIENT));
    assert_eq!(usize::from(ip.total_len()), len - 14);
    let icmp = &frame[34..];
    assert_eq!(crate::wire::checksum::compute(icmp), 0, "icmp checksum");
    assert_eq!(&icmp[..2], &[3, 4], "fragmentation needed");
    assert_eq!(&icmp[6..8], &1280u16.to_be_bytes(), "1300 less 20");
    let q = etherparse::Ipv4HeaderSlice::from_slice(&icmp[8..]).expect("quote");
    assert_eq!(
        (q.source(), q.destination(), q.protocol()),
        (CLIENT, VIP, etherparse::IpNumber::TCP)
    );
    assert_eq!(
        usize::from(q.total_len()),
        20 + 20 + 100,
        "the packet's length in IPv4"
    );
    assert_eq!(q.to_header().calc_header_checksum(), q.header_checksum());
    assert_eq!(&icmp[28..32], &[0x9c, 0x68, 0, 80], "ports 40040 -> 80");
    assert_eq!(&icmp[48..52], &[7; 4], "the quoted payload as it came");
    // The client's network: a reply (VIP -> client) ran out of hops.
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(CLIENT_IF_MAC, CLIENT_MAC)
        .ipv4(VIP, CLIENT, 1)
        .tcp(80, 40040, 5000, 65535)
        .ack(1001)
        .write(&mut reply, b"")
        .expect("a frame");
    let router = [198, 18, 0, 254];
    let mut te = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(router, VIP, 64)
        .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut te, &reply[14..])
        .expect("a frame");
    let (v, out) = answered(&h, 2, COMPLETE, &te);
    let Verdict::Send { iface: 1, len, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(&out[12..14], &[0x86, 0xdd], "an IPv6 frame");
    let (src, dst, t, quote) = icmp6_of(&out[..len]);
    assert_eq!((src, dst), (addr(SOURCE6), addr(rs6(31))));
    assert_eq!(
        t,
        etherparse::Icmpv6Type::TimeExceeded(
            etherparse::icmpv6::TimeExceededCode::HopLimitExceeded
        )
    );
    let (q, rest) = etherparse::Ipv6Header::from_slice(&quote).expect("quote");
    assert_eq!((q.source, q.destination), (rs6(31), SOURCE6));
    assert_eq!((q.payload_length, q.hop_limit), (20, 1));
    assert_eq!(
        &rest[..4],
        &[0x1f, 0x90, (lport >> 8) as u8, lport as u8],
        "8080 -> lport"
    );
    // Source quench has no ICMPv6 counterpart.
    let mut sq = te.clone();
    sq[34] = 4;
    sq[35] = 0;
    sq[36..38].fill(0);
    let c = crate::wire::checksum::compute(&sq[34..]);
    sq[36..38].copy_from_slice(&c.to_be_bytes());
    let (v, _) = answered(&h, 3, COMPLETE, &sq);
    assert_eq!(v, Verdict::Drop(DropReason::IcmpUntranslatable));
}
