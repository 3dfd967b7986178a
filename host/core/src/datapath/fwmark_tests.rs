//! Fwmark services (`ipvsadm -f MARK`): the classifier's mark rules choose the service
//! whatever the packet's address and port (`ip_vs_service_find` tries the mark first); a
//! persistent one keeps a client on one server across every port and protocol of the mark
//! (`<IPPROTO_IP, client, 0, mark, 0>`); connections keep the client's port when the server
//! has none; the replies come back from the address the client used; the ICMP errors about
//! them reach the server (the seed's `ip_vs_forward_icmp`).

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use super::tests::{F, check_icmp, icmp_error_frame, quote_of, tcp_frame, udp_frame};
use super::*;
use crate::spec::{Family, MarkRule, Service};
use crate::testkit::{CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, FROM_RS, Harness};
use crate::testkit::{SERVER_IF_MAC, real, rr, rs_mac};

/// A /28 of VIPs that no address service has.
const NET: [u8; 4] = [198, 18, 1, 0];

fn rule(mark: u32, daddr: &str, protos: &[Protocol], dport: &[(u16, u16)]) -> MarkRule {
    MarkRule {
        mark,
        family: Some(Family::V4),
        protos: protos.to_vec(),
        saddr: Vec::new(),
        daddr: vec![daddr.parse().expect("prefix")],
        sport: Vec::new(),
        dport: dport.to_vec(),
    }
}

fn harness(services: &[Service], rules: &[MarkRule]) -> Harness {
    let mut snap = Snapshot::build_native(services, &Snapshot::default());
    snap.set_marks(rules);
    Harness::new(snap, 1 << 10, 1)
}

fn fwm(mark: u32, persistent: Option<u32>, reals: &[&str]) -> Service {
    Service {
        persistent,
        reals: reals.iter().map(|r| real(r)).collect(),
        ..Service::fwmark(mark, false, "rr")
    }
}

fn to(vip: [u8; 4], cport: u16, dport: u16, proto: Protocol) -> Vec<u8> {
    match proto {
        Protocol::Tcp => tcp_frame(
            CLIENT_MAC,
            CLIENT_IF_MAC,
            (CLIENT, cport),
            (vip, dport),
            F::Syn,
            b"",
        ),
        Protocol::Udp => udp_frame(
            CLIENT_MAC,
            CLIENT_IF_MAC,
            (CLIENT, cport),
            (vip, dport),
            b"q",
        ),
        Protocol::Sctp => unreachable!("these tests mark TCP and UDP"),
    }
}

/// Where a client's packet went (the server's address and port), or what became of it.
fn sent_to(h: &Harness, now: u64, mut f: Vec<u8>) -> Result<(Ipv4Addr, u16), Verdict> {
    match h.dp.process(&h.snap, now, FROM_CLIENT, &mut f) {
        Verdict::Tx { iface: 1 } => {}
        v => return Err(v),
    }
    let p = SlicedPacket::from_ethernet(&f).expect("frame");
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    let port = match p.transport {
        Some(TransportSlice::Tcp(t)) => t.destination_port(),
        Some(TransportSlice::Udp(u)) => u.destination_port(),
        _ => panic!("not TCP or UDP"),
    };
    Ok((ip.header().destination_addr(), port))
}

/// Server 198.19.0.11's SYN-ACK from `port` to the client's 40000, through the datapath
/// (sent to the client's side).
fn reply_of(h: &Harness, port: u16) -> Vec<u8> {
    let mut reply = tcp_frame(
        rs_mac(11),
        SERVER_IF_MAC,
        ([198, 19, 0, 11], port),
        (CLIENT, 40000),
        F::SynAck,
        b"",
    );
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut reply),
        Verdict::Tx { iface: 0 }
    );
    reply
}

/// A TCP/IPv4 frame's source address and port.
fn source_of(frame: &[u8]) -> (Ipv4Addr, u16) {
    let p = SlicedPacket::from_ethernet(frame).expect("frame");
    match (p.net, p.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) => {
            (ip.header().source_addr(), t.source_port())
        }
        _ => panic!("not TCP/IPv4"),
    }
}

#[test]
fn a_persistent_mark_keeps_a_client_on_one_server_across_ports_addresses_and_protocols() {
    let h = harness(
        &[fwm(1, Some(300), &["198.19.0.11", "198.19.0.12"])],
        &[rule(1, "198.18.1.0/28", &[], &[(80, 80), (443, 443)])],
    );
    let vip = |last| [198, 18, 1, last];
    let (server, port) = sent_to(&h, 0, to(vip(1), 40000, 80, Protocol::Tcp)).expect("HTTP");
    assert_eq!(port, 80, "a server without a port takes the client's");
    for (i, (last, dport, proto)) in [
        (1, 443, Protocol::Tcp),
        (9, 80, Protocol::Tcp),
        (15, 443, Protocol::Udp),
    ]
    .into_iter()
    .enumerate()
    {
        let got = sent_to(
            &h,
            1 + i as u64,
            to(vip(last), 40001 + i as u16, dport, proto),
        );
        assert_eq!(got, Ok((server, dport)), "{proto:?} to .{last}:{dport}");
    }
    // One template for all of it: IPPROTO_IP, the mark as its address, port 0.
    assert_eq!(h.conns.persist().len(), 1);
    h.conns.persist().for_each(|k, _| {
        assert_eq!((k.fwmark, k.vport), (1, 0));
        assert_eq!(k.vaddr, IpAddr::V4(Ipv4Addr::new(0, 0, 0, 1)));
    });
    // Each connection knows its mark (the sync daemon's records carry it).
    let mut marks = Vec::new();
    h.conns.for_each(|c| marks.push(c.fwmark()));
    assert_eq!(marks, [1, 1, 1, 1]);
    // Outside the rule: not wvs's (the prefix, the port).
    assert_eq!(
        sent_to(&h, 9, to(vip(16), 40009, 80, Protocol::Tcp)),
        Err(Verdict::Pass)
    );
    assert_eq!(
        sent_to(&h, 9, to(vip(1), 40009, 22, Protocol::Tcp)),
        Err(Verdict::Pass)
    );
}

#[test]
fn without_persistence_a_server_with_a_port_takes_it_and_servers_take_turns() {
    let h = harness(
        &[fwm(7, None, &["198.19.0.11:8080", "198.19.0.12:8080"])],
        &[rule(7, "198.18.1.0/28", &[Protocol::Tcp], &[])],
    );
    let a = sent_to(&h, 0, to([198, 18, 1, 3], 40000, 80, Protocol::Tcp)).expect("first");
    let b = sent_to(&h, 1, to([198, 18, 1, 3], 40001, 443, Protocol::Tcp)).expect("second");
    assert_eq!(
        (a.1, b.1),
        (8080, 8080),
        "ip_vs_schedule: dest->port ?: vport"
    );
    assert_ne!(a.0, b.0, "rr");
    assert_eq!(h.conns.persist().len(), 0);
    // UDP is not in the rule.
    assert_eq!(
        sent_to(&h, 2, to([198, 18, 1, 3], 40002, 53, Protocol::Udp)),
        Err(Verdict::Pass)
    );
}

#[test]
fn the_mark_comes_before_the_address_and_the_last_rule_wins() {
    let addr = rr(Protocol::Tcp, 80, vec![real("198.19.0.19")]);
    let h = harness(
        &[
            addr,
            fwm(1, None, &["198.19.0.11"]),
            fwm(2, None, &["198.19.0.12"]),
        ],
        &[
            rule(1, "198.18.100.1/32", &[], &[]),
            rule(2, "198.18.100.1/32", &[], &[(443, 443)]),
            // Mark 3 has no service: the packet goes by its address.
            rule(3, "198.18.100.1/32", &[], &[(8443, 8443)]),
        ],
    );
    let vip = [198, 18, 100, 1];
    assert_eq!(
        sent_to(&h, 0, to(vip, 40000, 80, Protocol::Tcp)).map(|s| s.0),
        Ok(Ipv4Addr::new(198, 19, 0, 11)),
        "marked 1 over the address service"
    );
    assert_eq!(
        sent_to(&h, 1, to(vip, 40001, 443, Protocol::Tcp)).map(|s| s.0),
        Ok(Ipv4Addr::new(198, 19, 0, 12)),
        "the later rule's mark"
    );
    assert_eq!(
        sent_to(&h, 2, to(vip, 40002, 8443, Protocol::Tcp)),
        Err(Verdict::Pass),
        "mark 3: no service, no address service of 8443"
    );
    let mut snap = Snapshot::build_native(
        &[rr(Protocol::Tcp, 80, vec![real("198.19.0.19")])],
        &Snapshot::default(),
    );
    snap.set_marks(&[rule(9, "198.18.100.1/32", &[], &[])]);
    let h = Harness::new(snap, 1 << 10, 1);
    assert_eq!(
        sent_to(&h, 0, to(vip, 40003, 80, Protocol::Tcp)).map(|s| s.0),
        Ok(Ipv4Addr::new(198, 19, 0, 19)),
        "a mark without a service: the address's"
    );
}

#[test]
fn replies_come_from_the_address_the_client_used_and_icmp_errors_about_them_reach_the_server() {
    // A persistent service's connections keep the client's port whatever the server's
    // (ip_vs_sched_persist), and its replies from that port are wvs's.
    let h = harness(
        &[fwm(1, Some(300), &["198.19.0.11:9999"])],
        &[rule(1, "198.18.1.0/28", &[Protocol::Tcp], &[])],
    );
    let vip = [198, 18, 1, 5];
    assert_eq!(
        sent_to(&h, 0, to(vip, 40000, 8000, Protocol::Tcp)),
        Ok((Ipv4Addr::new(198, 19, 0, 11), 8000))
    );
    let reply = reply_of(&h, 8000);
    assert_eq!(source_of(&reply), (Ipv4Addr::from(vip), 8000));
    // A router on the client's side cannot forward that reply: its error, addressed to
    // the marked address (no VIP of wvs's), goes to the server.
    let mut e = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        vip,
        3,
        4,
        &quote_of(&reply, 28),
    );
    assert_eq!(
        h.dp.process(&h.snap, 2, FROM_CLIENT, &mut e),
        Verdict::Tx { iface: 1 }
    );
    let (s, d, _, inner) = check_icmp(&e);
    assert_eq!(
        (s, d),
        (
            Ipv4Addr::new(198, 18, 0, 254),
            Ipv4Addr::new(198, 19, 0, 11)
        )
    );
    assert_eq!(
        &inner[12..16],
        &[198, 19, 0, 11],
        "the quote's source is the server's"
    );
    // About a flow of no rule's: the kernel's.
    let other = tcp_frame(
        CLIENT_IF_MAC,
        CLIENT_MAC,
        ([198, 18, 2, 5], 8000),
        (CLIENT, 40000),
        F::Ack,
        b"",
    );
    let mut e = icmp_error_frame(
        CLIENT_MAC,
        CLIENT_IF_MAC,
        [198, 18, 0, 254],
        [198, 18, 2, 5],
        3,
        4,
        &quote_of(&other, 28),
    );
    assert_eq!(h.dp.process(&h.snap, 3, FROM_CLIENT, &mut e), Verdict::Pass);
}

/// A rule wide enough to hold the clients' addresses does not take a server's reply to
/// one of them for a client's packet: it is a reply.
#[test]
fn a_servers_reply_is_never_marked() {
    let h = harness(
        &[fwm(1, Some(300), &["198.19.0.11"])],
        &[rule(1, "198.18.0.0/15", &[Protocol::Tcp], &[])],
    );
    let vip = [198, 18, 1, 5];
    assert_eq!(
        sent_to(&h, 0, to(vip, 40000, 80, Protocol::Tcp)),
        Ok((Ipv4Addr::new(198, 19, 0, 11), 80))
    );
    let reply = reply_of(&h, 80);
    assert_eq!(
        source_of(&reply).0,
        Ipv4Addr::from(vip),
        "rewritten as a reply"
    );
    assert_eq!(h.conns.len(), 1, "no connection of the server's");
}

#[test]
fn an_ipv6_mark_is_its_own_service() {
    let mut r = rule(1, "2001:db8:18:1::/64", &[], &[]);
    r.family = Some(Family::V6);
    let h = harness(&[fwm(1, None, &["198.19.0.11"])], &[r]);
    // The IPv4 service of mark 1 does not take an IPv6 packet's mark.
    assert!(
        h.snap
            .fwmark_service(1, "2001:db8:18:1::1".parse().expect("ip"))
            .is_none()
    );
    assert!(h.snap.fwmark_service(1, NET.into()).is_some());
}
