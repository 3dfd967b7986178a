//! Port-0 services (`ipvsadm -t VIP:0 -p`): every port of the address, after the services
//! of exact ports (`ip_vs_service_find`); one template per client holds all its ports
//! (`<proto, client, 0, vaddr, 0>`), and each connection keeps the client's port.

use std::net::Ipv4Addr;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use super::*;
use crate::spec::Service;
use crate::testkit::{CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, FROM_RS, Harness, VIP};
use crate::testkit::{SERVER_IF_MAC, real, rr, rs_mac};

fn harness(reals: &[&str]) -> Harness {
    let all = Service {
        persistent: Some(300),
        ..rr(Protocol::Tcp, 0, reals.iter().map(|r| real(r)).collect())
    };
    // An exact port of the same address: its own service first.
    let exact = rr(Protocol::Tcp, 22, vec![real("198.19.0.19:22")]);
    Harness::new(
        Snapshot::build_native(&[all, exact], &Snapshot::default()),
        1 << 10,
        1,
    )
}

fn syn(cport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(cport, dport, 1, 65535)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

/// Where the segment went: the server's address and port.
fn sent_to(h: &Harness, now: u64, mut f: Vec<u8>) -> (Ipv4Addr, u16) {
    assert_eq!(
        h.dp.process(&h.snap, now, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    let ip = match p.net {
        Some(NetSlice::Ipv4(ip)) => ip.header().destination_addr(),
        _ => panic!("not IPv4"),
    };
    match p.transport {
        Some(TransportSlice::Tcp(t)) => (ip, t.destination_port()),
        _ => panic!("not TCP"),
    }
}

#[test]
fn every_port_of_a_client_goes_to_one_server_on_its_own_port() {
    let h = harness(&["198.19.0.12", "198.19.0.11"]);
    let (server, port) = sent_to(&h, 0, syn(40000, 80));
    assert_eq!(port, 80);
    for (i, dport) in [443u16, 8080, 21, 30000].into_iter().enumerate() {
        assert_eq!(
            sent_to(&h, i as u64 + 1, syn(40001 + i as u16, dport)),
            (server, dport),
            "port {dport} follows the client's template"
        );
    }
    assert_eq!(h.conns.persist().len(), 1, "one template for every port");
    // Another client starts elsewhere (rr) with its own template.
    let mut other = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4([198, 18, 0, 99], VIP, 64)
        .tcp(40000, 443, 1, 65535)
        .syn()
        .write(&mut other, &[])
        .unwrap();
    assert_ne!(sent_to(&h, 9, other).0, server);
    assert_eq!(h.conns.persist().len(), 2);
}

#[test]
fn an_exact_port_has_its_own_service() {
    let h = harness(&["198.19.0.11"]);
    assert_eq!(
        sent_to(&h, 0, syn(40000, 22)),
        ("198.19.0.19".parse().unwrap(), 22)
    );
    assert_eq!(h.conns.persist().len(), 0, "not the port-0 service's");
}

#[test]
fn a_servers_reply_from_any_port_comes_back_from_the_vip() {
    // The server's own port in the configuration is not the connection's: a port-0
    // service's connections keep the client's port (ip_vs_sched_persist).
    let h = harness(&["198.19.0.11:8080"]);
    assert_eq!(
        sent_to(&h, 0, syn(40000, 443)),
        ("198.19.0.11".parse().unwrap(), 443)
    );
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
        .ipv4([198, 19, 0, 11], CLIENT, 64)
        .tcp(443, 40000, 1, 65535)
        .syn()
        .ack(2)
        .write(&mut reply, &[])
        .unwrap();
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut reply),
        Verdict::Tx { iface: 0 }
    );
    let p = SlicedPacket::from_ethernet(&reply).unwrap();
    match (p.net, p.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) => {
            assert_eq!(ip.header().source_addr(), Ipv4Addr::from(VIP));
            assert_eq!(t.source_port(), 443);
        }
        _ => panic!("not TCP/IPv4"),
    }
}
