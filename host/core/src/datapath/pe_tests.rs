//! Persistence engines (`ipvsadm --pe`, IPVS's `ip_vs_pe`): the built-in `sip` engine
//! keys a persistent service's templates by a SIP message's Call-ID besides the client, so
//! with one-packet scheduling one client's calls go to their own servers and every message
//! of a call to the same one; a datagram with no Call-ID is dropped, as IPVS drops it.

use std::net::Ipv4Addr;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket};

use super::*;
use crate::spec::Service;
use crate::testkit::{CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, Harness, VIP};
use crate::testkit::{real, rr};

const RS: [&str; 3] = ["198.19.0.13:5060", "198.19.0.12:5060", "198.19.0.11:5060"];

fn sip_service(ops: bool) -> Harness {
    let svc = Service {
        ops,
        persistent: Some(60),
        pe: Some("sip".into()),
        ..rr(Protocol::Udp, 5060, RS.map(real).into())
    };
    // Worker 0: the engine's pool has an instance for each worker the runtime runs (one).
    Harness::new(crate::testkit::snapshot(&[svc]), 1 << 10, 0)
}

fn options(cport: u16, call_id: Option<&str>) -> Vec<u8> {
    let mut msg = "OPTIONS sip:198.18.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2\r\n".to_string();
    if let Some(id) = call_id {
        msg += &format!("Call-ID: {id}\r\n");
    }
    msg += "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(cport, 5060)
        .write(&mut v, msg.as_bytes())
        .unwrap();
    v
}

/// Where the datagram went: the real server, or the verdict when it was not sent.
fn sent_to(h: &Harness, now: u64, mut f: Vec<u8>) -> Result<Ipv4Addr, Verdict> {
    match h.dp.process(&h.snap, now, FROM_CLIENT, &mut f) {
        Verdict::Tx { .. } => match SlicedPacket::from_ethernet(&f).unwrap().net {
            Some(NetSlice::Ipv4(ip)) => Ok(ip.header().destination_addr()),
            _ => panic!("not IPv4"),
        },
        v => Err(v),
    }
}

#[test]
fn a_call_stays_on_its_server_and_another_call_of_the_client_goes_elsewhere() {
    let h = sip_service(true);
    let calls = [
        "a1@198.18.0.2",
        "b2@198.18.0.2",
        "a1@198.18.0.2",
        "c3",
        "b2@198.18.0.2",
        "c3",
    ];
    let to: Vec<_> = calls
        .iter()
        .enumerate()
        .map(|(i, id)| sent_to(&h, i as u64, options(5060, Some(id))).unwrap())
        .collect();
    assert_eq!(to[0], to[2], "the same Call-ID, the same server");
    assert_eq!(to[1], to[4]);
    assert_eq!(to[3], to[5]);
    assert!(
        to[0] != to[1] && to[1] != to[3] && to[0] != to[3],
        "three calls of one client on three servers (rr): {to:?}"
    );
    assert_eq!(
        h.conns.len(),
        0,
        "one-packet scheduling keeps no connection"
    );
    // One template per call, each with its engine and key.
    let mut keys = Vec::new();
    h.conns.persist().for_each(|k, t| {
        assert_eq!(
            (k.client, k.vport),
            (std::net::IpAddr::V4(CLIENT.into()), 5060)
        );
        keys.push((
            t.pe_name().map(str::to_string),
            t.pe_data().map(|d| String::from_utf8_lossy(d).into_owned()),
        ));
    });
    keys.sort();
    assert_eq!(
        keys,
        ["a1@198.18.0.2", "b2@198.18.0.2", "c3"]
            .map(|k| (Some("sip".to_string()), Some(k.to_string())))
    );
}

#[test]
fn a_datagram_without_a_call_id_is_dropped() {
    let h = sip_service(true);
    assert_eq!(
        sent_to(&h, 0, options(5060, None)),
        Err(Verdict::Drop(DropReason::PeDrop))
    );
    assert_eq!(h.dp.stats.drops(DropReason::PeDrop), 1);
    assert!(h.conns.persist().is_empty());
}

#[test]
fn without_one_packet_scheduling_a_new_client_port_finds_its_call() {
    // A new connection per client port: each looks its Call-ID's template up.
    let h = sip_service(false);
    let first = sent_to(&h, 0, options(40000, Some("x"))).unwrap();
    let other = sent_to(&h, 1, options(40001, Some("y"))).unwrap();
    assert_ne!(first, other);
    assert_eq!(sent_to(&h, 2, options(40002, Some("x"))).unwrap(), first);
    assert_eq!(h.conns.len(), 3);
}
