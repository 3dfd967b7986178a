//! Directors side by side behind ECMP: a flow the routers move from one to another (a TCP
//! segment other than a SYN, on a director that never saw the flow) reaches the real
//! server the first one picked when the scheduler is consistent (`sloppy_tcp`), and
//! `sloppy_consistent_only` keeps other schedulers from guessing.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket};

use super::*;
use crate::spec::Service;
use crate::testkit::{CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, Harness, VIP, real, service};

const RS: [&str; 5] = [
    "198.19.0.11:8080",
    "198.19.0.12:8080",
    "198.19.0.13:8080",
    "198.19.0.14:8080",
    "198.19.0.15:8080",
];

/// mh with mh-port: the client's port picks the table entry, so one client's flows spread.
fn mh(reals: &[&str]) -> Service {
    Service {
        flags: wvs_sdk::svc_flags::SCHED2,
        ..service(
            Protocol::Tcp,
            80,
            "mh",
            reals.iter().map(|r| real(r)).collect(),
        )
    }
}

fn director(services: &[Service], sloppy: bool, consistent_only: bool) -> Harness {
    let mut h = Harness::new(
        Snapshot::build_native(services, &Snapshot::default()),
        1 << 14,
        1,
    );
    h.snap.sysctl.sloppy_tcp = sloppy;
    h.snap.sysctl.sloppy_consistent_only = consistent_only;
    h
}

fn seg(cport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(cport, 80, 1000, 65535);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, b"x").unwrap();
    v
}

/// Where the director sent the segment: the real server's address, or the verdict.
fn sent_to(h: &Harness, f: Vec<u8>) -> Result<Ipv4Addr, Verdict> {
    let mut f = f;
    match h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f) {
        Verdict::Tx { .. } => {}
        v => return Err(v),
    }
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    match p.net {
        Some(NetSlice::Ipv4(ip)) => Ok(ip.header().destination_addr()),
        _ => panic!("not IPv4"),
    }
}

#[test]
fn a_moved_flow_reaches_the_server_the_first_director_picked() {
    let first = director(&[mh(&RS)], true, true);
    let others = [
        director(&[mh(&RS)], true, true),
        director(&[mh(&RS)], true, true),
    ];
    let mut picked = HashMap::new();
    for port in 20_000..20_300u16 {
        let rs = sent_to(&first, seg(port, true)).unwrap();
        *picked.entry(rs).or_insert(0) += 1;
        for d in &others {
            assert_eq!(sent_to(d, seg(port, false)), Ok(rs), "port {port}");
        }
    }
    assert_eq!(
        picked.len(),
        RS.len(),
        "mh-port spreads one client: {picked:?}"
    );
    for d in &others {
        assert_eq!(d.dp.stats.unknown_flows.load(Relaxed), 300);
        assert_eq!(d.dp.stats.conns.load(Relaxed), 300);
    }
    assert_eq!(first.dp.stats.unknown_flows.load(Relaxed), 0);
}

#[test]
fn consistent_only_keeps_other_schedulers_from_guessing() {
    let rr = || crate::testkit::rr(Protocol::Tcp, 80, RS.iter().map(|r| real(r)).collect());
    // IPVS's sloppy_tcp: any scheduler takes the segment.
    let any = director(&[rr()], true, false);
    assert!(sent_to(&any, seg(30_000, false)).is_ok());
    assert_eq!(any.dp.stats.unknown_flows.load(Relaxed), 1);
    // Only the consistent ones: rr answers as without sloppy_tcp (a reset), mh takes it.
    let only = director(&[rr()], true, true);
    assert_eq!(
        sent_to(&only, seg(30_001, false)),
        Err(Verdict::Drop(DropReason::NoConnIn))
    );
    assert_eq!(only.dp.stats.unknown_flows.load(Relaxed), 0);
    assert!(
        sent_to(&only, seg(30_002, true)).is_ok(),
        "a SYN still schedules"
    );
    let only_mh = director(&[mh(&RS)], true, true);
    assert!(sent_to(&only_mh, seg(30_003, false)).is_ok());
    // Without sloppy_tcp nothing changes.
    let off = director(&[mh(&RS)], false, true);
    assert_eq!(
        sent_to(&off, seg(30_004, false)),
        Err(Verdict::Drop(DropReason::NoConnIn))
    );
}

#[test]
fn a_server_removed_on_every_director_moves_mostly_its_own_flows() {
    // Before: five servers; after: the third gone (health or configuration), on both.
    // Maglev is not perfectly minimal (the paper: a few entries of the servers that stay
    // change too), so some of those flows move as well; the mh plugin's tests measure the
    // table itself.
    let before = director(&[mh(&RS)], true, true);
    let less: Vec<&str> = RS.iter().copied().filter(|r| *r != RS[2]).collect();
    let after = director(&[mh(&less)], true, true);
    let gone: Ipv4Addr = "198.19.0.13".parse().unwrap();
    let (mut on_gone, mut stayed, mut moved) = (0, 0, 0);
    for port in 40_000..42_000u16 {
        let a = sent_to(&before, seg(port, true)).unwrap();
        let b = sent_to(&after, seg(port, false)).unwrap();
        assert_ne!(b, gone);
        if a == gone {
            on_gone += 1;
        } else if a == b {
            stayed += 1;
        } else {
            moved += 1;
        }
    }
    // About 1/5 were on the server that left; of the others, a few percent move.
    assert!(
        (300..500).contains(&on_gone),
        "{on_gone} of 2000 on the removed server"
    );
    assert!(
        moved * 100 < (stayed + moved) * 6,
        "{moved} of {} moved",
        stayed + moved
    );
}

#[test]
fn a_udp_flow_goes_to_the_same_server_on_every_director() {
    // UDP has no handshake: every director schedules any datagram of a flow it does not
    // know (sloppy_udp or not), and mh picks the same server on each.
    let svc = || Service {
        flags: wvs_sdk::svc_flags::SCHED2,
        ..service(
            Protocol::Udp,
            53,
            "mh",
            RS.iter().map(|r| real(r)).collect(),
        )
    };
    let dirs = [
        director(&[svc()], false, true),
        director(&[svc()], false, true),
    ];
    let dgram = |port: u16| {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
            .ipv4(CLIENT, VIP, 64)
            .udp(port, 53)
            .write(&mut v, b"q")
            .unwrap();
        v
    };
    for port in 50_000..50_200u16 {
        let a = sent_to(&dirs[0], dgram(port)).unwrap();
        assert_eq!(sent_to(&dirs[1], dgram(port)), Ok(a), "port {port}");
    }
    // Not counted as unknown flows: a UDP flow's first datagram starts it anywhere.
    assert_eq!(dirs[1].dp.stats.unknown_flows.load(Relaxed), 0);
}
