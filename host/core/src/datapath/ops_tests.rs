//! One-packet scheduling (`ipvsadm -o`, `IP_VS_SVC_F_ONEPACKET`): each UDP datagram of a
//! service is scheduled on its own and leaves no connection behind; a persistent one still
//! keeps its client on one server through the template; a NAT server's reply finds no
//! connection and is routed on as the server sent it, as IPVS's `ip_vs_out` accepts it.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket};

use super::*;
use crate::spec::Service;
use crate::testkit::{CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, FROM_RS, Harness, VIP};
use crate::testkit::{SERVER_IF_MAC, real, rr, rs_mac};

const RS: [&str; 3] = ["198.19.0.13:53", "198.19.0.12:53", "198.19.0.11:53"];

fn ops(persistent: Option<u32>) -> Harness {
    let svc = Service {
        ops: true,
        persistent,
        ..rr(Protocol::Udp, 53, RS.map(real).into())
    };
    Harness::new(
        Snapshot::build_native(&[svc], &Snapshot::default()),
        1 << 10,
        1,
    )
}

fn datagram(cport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(cport, 53)
        .write(&mut v, b"query")
        .unwrap();
    v
}

/// The real server the datagram went to.
fn sent_to(h: &Harness, now: u64, mut f: Vec<u8>) -> Ipv4Addr {
    assert_eq!(
        h.dp.process(&h.snap, now, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    match SlicedPacket::from_ethernet(&f).unwrap().net {
        Some(NetSlice::Ipv4(ip)) => ip.header().destination_addr(),
        _ => panic!("not IPv4"),
    }
}

#[test]
fn each_datagram_is_scheduled_and_none_is_kept() {
    let h = ops(None);
    // One client port: without -o the flow would stay on its first server.
    let to: Vec<_> = (0..6).map(|i| sent_to(&h, i, datagram(5353))).collect();
    let ips: Vec<Ipv4Addr> = ["198.19.0.11", "198.19.0.12", "198.19.0.13"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(
        to,
        [ips.clone(), ips].concat(),
        "round robin, datagram by datagram"
    );
    assert_eq!(h.conns.len(), 0, "no connection entry is kept");
    // Every datagram counts as a connection, none stays on a server's counts.
    let svc = h.snap.services().next().unwrap();
    let t = svc.stats.totals();
    assert_eq!((t.conns, t.inpkts, t.inbytes), (6, 6, 6 * (20 + 8 + 5)));
    for d in h.snap.dests() {
        assert_eq!(
            (d.activeconns.load(Relaxed), d.inactconns.load(Relaxed)),
            (0, 0)
        );
        assert_eq!(d.stats.totals().conns, 2);
    }
}

#[test]
fn a_persistent_one_keeps_its_client_on_one_server() {
    let h = ops(Some(60));
    let first = sent_to(&h, 0, datagram(5000));
    for port in 5001..5010 {
        assert_eq!(sent_to(&h, u64::from(port), datagram(port)), first);
    }
    assert_eq!(h.conns.len(), 0, "no connection entry");
    assert_eq!(h.conns.persist().len(), 1, "one template, as IPVS keeps");
    // The template controls no connection: it expires on its own timeout.
    let svc = h.snap.services().next().unwrap();
    assert_eq!(svc.stats.totals().conns, 10);
}

#[test]
fn a_servers_reply_is_routed_on_as_it_was_sent() {
    let h = ops(None);
    sent_to(&h, 0, datagram(5353));
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
        .ipv4([198, 19, 0, 11], CLIENT, 64)
        .udp(53, 5353)
        .write(&mut reply, b"answer")
        .unwrap();
    let before = reply.clone();
    let len = reply.len() - 14;
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut reply),
        Verdict::Stack {
            daddr: Ipv4Addr::from(CLIENT).into(),
            len
        }
    );
    // Routed on: only the TTL (and the header checksum) changed.
    assert_eq!(reply[14 + 8], before[14 + 8] - 1);
    assert_eq!(
        reply[14 + 12..],
        before[14 + 12..],
        "addresses, ports, payload"
    );
    // With nat_icmp_send, IPVS answers it with port unreachable instead.
    let mut h = h;
    h.snap.sysctl.nat_icmp_send = true;
    let mut again = before.clone();
    assert!(matches!(
        h.dp.process(&h.snap, 2, FROM_RS, &mut again),
        Verdict::Refused { .. } | Verdict::Drop(DropReason::NoConnOut)
    ));
}

#[test]
fn tcp_services_ignore_it_as_ipvs_does() {
    // IPVS sets the connection's ONE_PACKET only for UDP; the configuration refuses -o on a
    // TCP service, but a snapshot built otherwise keeps TCP connections whole.
    let svc = Service {
        ops: true,
        ..rr(Protocol::Tcp, 80, vec![real("198.19.0.11:80")])
    };
    let h = Harness::new(Snapshot::build_native(&[svc], &Snapshot::default()), 64, 1);
    let mut syn = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .write(&mut syn, &[])
        .unwrap();
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut syn),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(h.conns.len(), 1);
}
