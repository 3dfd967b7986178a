//! SCTP services (`ipvsadm --sctp-service`, `ip_vs_proto_sctp.c`): only an INIT starts an
//! association's entry, each packet's first chunk moves it through IPVS's state table, a
//! NAT server's port change recomputes the CRC32c (an address change leaves it valid), and
//! a control chunk with a bad checksum changes nothing.

use std::sync::atomic::Ordering::Relaxed;

use etherparse::{IpNumber, NetSlice, PacketBuilder, SlicedPacket};

use super::*;
use crate::model::SctpState;
use crate::testkit::{CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, FROM_RS, Harness, VIP};
use crate::testkit::{SERVER_IF_MAC, real, rr, rs_mac};
use crate::wire::sctp::{SctpPacket, chunk};

/// Two NAT servers, one on another port (the CRC32c must follow), one on the VIP's.
const RS: [&str; 2] = ["198.19.0.12:5060", "198.19.0.11:3868"];

fn harness() -> Harness {
    Harness::new(
        Snapshot::build_native(
            &[rr(Protocol::Sctp, 5060, RS.map(real).into())],
            &Snapshot::default(),
        ),
        1 << 10,
        1,
    )
}

/// An SCTP packet of `chunks` (type, payload) from `sport` to `dport`, its CRC32c filled.
fn sctp(sport: u16, dport: u16, chunks: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(sport.to_be_bytes());
    p.extend(dport.to_be_bytes());
    p.extend([0, 0, 0, 7, 0, 0, 0, 0]);
    for (t, body) in chunks {
        p.extend([*t, 0]);
        p.extend(((4 + body.len()) as u16).to_be_bytes());
        p.extend(*body);
        p.resize(p.len().next_multiple_of(4), 0);
    }
    SctpPacket::new_unchecked(&mut p[..]).fill_checksum();
    p
}

fn from_client(cport: u16, chunks: &[(u8, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .write(&mut v, IpNumber::SCTP, &sctp(cport, 5060, chunks))
        .unwrap();
    v
}

fn from_server(rs: [u8; 4], rport: u16, cport: u16, chunks: &[(u8, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(rs_mac(rs[3]), SERVER_IF_MAC)
        .ipv4(rs, CLIENT, 64)
        .write(&mut v, IpNumber::SCTP, &sctp(rport, cport, chunks))
        .unwrap();
    v
}

/// The packet's addresses (either family) and ports, and whether its CRC32c is right.
fn seen(f: &[u8]) -> (IpAddr, IpAddr, u16, u16, bool) {
    let (src, dst, l4): (IpAddr, IpAddr, _) = match SlicedPacket::from_ethernet(f).unwrap().net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload().payload,
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload().payload,
        ),
        other => panic!("not IP: {other:?}"),
    };
    let p = SctpPacket::new_checked(l4).unwrap();
    (src, dst, p.src_port(), p.dst_port(), p.verify_checksum())
}

fn state(h: &Harness) -> Vec<(u16, &'static str)> {
    let mut v = Vec::new();
    h.conns.for_each(|c| v.push((c.cport, c.state_name())));
    v.sort();
    v
}

const INIT: (u8, &[u8]) = (
    chunk::INIT,
    &[0, 0, 0, 9, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1],
);

#[test]
fn an_association_through_nat_as_ipvs_tracks_it() {
    let h = harness();
    let rs = [198, 19, 0, 11];
    let mut f = from_client(40000, &[INIT]);
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    // rr takes the newest server first (IPVS adds at the head): 198.19.0.11:3868.
    assert_eq!(
        seen(&f),
        (CLIENT.into(), rs.into(), 40000, 3868, true),
        "port and CRC32c rewritten"
    );
    assert_eq!(state(&h), [(40000, "INIT1")]);
    let d = h.snap.dests().find(|d| d.port == 3868).unwrap();
    assert_eq!(
        (d.activeconns.load(Relaxed), d.inactconns.load(Relaxed)),
        (0, 1)
    );

    let steps: [(bool, u8, &str); 6] = [
        (false, chunk::INIT_ACK, "C-SENT"),
        (true, chunk::COOKIE_ECHO, "C-REPLIED"),
        (false, chunk::COOKIE_ACK, "ESTABLISHED"),
        (true, chunk::SHUTDOWN, "S-RECEIVED"),
        (false, chunk::SHUTDOWN_ACK, "S-ACK-SENT"),
        (true, chunk::SHUTDOWN_COMPLETE, "CLOSED"),
    ];
    for (t, (client, c, want)) in steps.into_iter().enumerate() {
        let now = 1 + t as u64;
        if client {
            let mut f = from_client(40000, &[(c, &[0, 0, 0, 0])]);
            assert_eq!(
                h.dp.process(&h.snap, now, FROM_CLIENT, &mut f),
                Verdict::Tx { iface: 1 }
            );
            assert_eq!(seen(&f).3, 3868);
            assert!(seen(&f).4, "CRC32c of chunk {c}");
        } else {
            let mut f = from_server(rs, 3868, 40000, &[(c, &[0, 0, 0, 0])]);
            assert_eq!(
                h.dp.process(&h.snap, now, FROM_RS, &mut f),
                Verdict::Tx { iface: 0 }
            );
            assert_eq!(
                seen(&f),
                (VIP.into(), CLIENT.into(), 5060, 40000, true),
                "from the VIP and its port, the CRC32c right"
            );
        }
        assert_eq!(state(&h), [(40000, want)], "after chunk {c}");
        if want == "ESTABLISHED" {
            assert_eq!(
                (d.activeconns.load(Relaxed), d.inactconns.load(Relaxed)),
                (1, 0)
            );
        }
    }
    assert_eq!(
        (d.activeconns.load(Relaxed), d.inactconns.load(Relaxed)),
        (0, 1)
    );
    let mut timeout = 0;
    h.conns.for_each(|c| timeout = c.timeout_ms());
    assert_eq!(timeout, SctpState::Closed.timeout_ms());
    assert_eq!(timeout, 61_000, "IP_VS_SCTP_MAX_RTO");
}

#[test]
fn the_drop_entry_defense_takes_unanswered_inits_first() {
    // ip_vs_random_dropentry: SCTP entries in INIT1 or INIT go at once; an ESTABLISHED one
    // only as todrop_entry says (not one younger than a minute).
    let h = harness();
    let mut f = from_client(40300, &[INIT]);
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    let mut f = from_client(40301, &[INIT]);
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    let mut f = from_client(40301, &[(chunk::COOKIE_ECHO, &[0; 4])]);
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    let mut f = from_server([198, 19, 0, 12], 5060, 40301, &[(chunk::COOKIE_ACK, &[])]);
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_RS, &mut f),
        Verdict::Tx { iface: 0 }
    );
    assert_eq!(state(&h), [(40300, "INIT1"), (40301, "ESTABLISHED")]);
    // Each call scans a random 1/32 of the table's shards.
    let dropped: usize = (0..2000).map(|_| h.conns.random_dropentry(1)).sum();
    assert_eq!(dropped, 1);
    assert_eq!(state(&h), [(40301, "ESTABLISHED")]);
}

#[test]
fn only_an_init_starts_one_and_a_bad_crc_changes_nothing() {
    let h = harness();
    // DATA of no association: dropped, no entry.
    let mut f = from_client(40001, &[(chunk::DATA, &[0; 12])]);
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Drop(DropReason::NoConnIn)
    );
    // An INIT whose CRC32c is wrong: dropped before it takes an entry.
    let mut f = from_client(40002, &[INIT]);
    let n = f.len();
    f[n - 1] ^= 0x40;
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Drop(DropReason::L4BadChecksum)
    );
    assert_eq!(h.conns.len(), 0);
    // A real INIT, then a forged ABORT: the entry stays in INIT1.
    let mut f = from_client(40003, &[INIT]);
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    let mut f = from_client(40003, &[(chunk::ABORT, &[])]);
    f[14 + 20 + 8] ^= 1;
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_CLIENT, &mut f),
        Verdict::Drop(DropReason::L4BadChecksum)
    );
    assert_eq!(state(&h), [(40003, "INIT1")]);
    // The server rejects it: an ABORT answers the INIT (REJECTED, 4 s).
    let mut f = from_server([198, 19, 0, 11], 3868, 40003, &[(chunk::ABORT, &[])]);
    assert_eq!(
        h.dp.process(&h.snap, 2, FROM_RS, &mut f),
        Verdict::Tx { iface: 0 }
    );
    assert_eq!(state(&h), [(40003, "REJECTED")]);
    // A truncated packet (no chunk header) is counted as such.
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .write(&mut f, IpNumber::SCTP, &sctp(40004, 5060, &[])[..12])
        .unwrap();
    assert_eq!(
        h.dp.process(&h.snap, 3, FROM_CLIENT, &mut f),
        Verdict::Drop(DropReason::SctpTruncated)
    );
}

#[test]
fn an_abort_bundled_after_a_cookie_echo_ends_it_and_an_init_reuses_a_closed_one() {
    let h = harness();
    let mut f = from_client(40005, &[INIT]);
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    let mut f = from_server([198, 19, 0, 11], 3868, 40005, &[(chunk::INIT_ACK, &[0; 4])]);
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut f),
        Verdict::Tx { iface: 0 }
    );
    let mut f = from_client(
        40005,
        &[(chunk::COOKIE_ECHO, &[1, 2, 3]), (chunk::ABORT, &[])],
    );
    assert_eq!(
        h.dp.process(&h.snap, 2, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(state(&h), [(40005, "CLOSED")]);
    // conn_reuse_mode: a new INIT on the closed entry's ports is scheduled afresh (rr: the
    // other server this time).
    let mut f = from_client(40005, &[INIT]);
    assert_eq!(
        h.dp.process(&h.snap, 3, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(seen(&f).1, IpAddr::from([198, 19, 0, 12]));
    assert_eq!(seen(&f).3, 5060);
    assert_eq!(state(&h), [(40005, "INIT1")]);
}

#[test]
fn direct_routing_moves_by_the_client_s_chunks_alone() {
    // DR: the server answers the client itself; the entry follows IPVS's INPUT_ONLY rows.
    let svc = rr(
        Protocol::Sctp,
        5060,
        vec![crate::testkit::real_by("198.19.0.11:5060", Forward::Route)],
    );
    let h = Harness::new(
        Snapshot::build_native(&[svc], &Snapshot::default()),
        1 << 10,
        1,
    );
    let steps: [(u8, &str); 4] = [
        (chunk::INIT, "INIT1"),
        (chunk::COOKIE_ECHO, "ESTABLISHED"),
        (chunk::SHUTDOWN, "S-RECEIVED"),
        (chunk::SHUTDOWN_COMPLETE, "CLOSED"),
    ];
    for (t, (c, want)) in steps.into_iter().enumerate() {
        let body: &[u8] = if c == chunk::INIT {
            INIT.1
        } else {
            &[0, 0, 0, 0]
        };
        let mut f = from_client(40100, &[(c, body)]);
        let before = f[14..].to_vec();
        assert_eq!(
            h.dp.process(&h.snap, t as u64, FROM_CLIENT, &mut f),
            Verdict::Tx { iface: 1 }
        );
        // Only the frame's MAC addresses changed (and the TTL): the VIP and port stay.
        assert_eq!(f[14 + 12..], before[12..], "chunk {c}");
        assert_eq!(state(&h), [(40100, want)], "after chunk {c}");
    }
}

#[test]
fn a_closed_association_gives_its_server_port_to_the_clients_next_one() {
    // Two VIP ports on one server port: the client's port, closed through the first, opens
    // an association through the second; both entries have the same reply key (the
    // server's port to the client's). Through NAT, whose replies come back, the closed one
    // makes room, as a TIME_WAIT TCP one does; through DR, whose replies never do, both
    // stay, as in IPVS (the oracle's sctp-real saw the kernel list both).
    for (fwd, want) in [
        (Forward::Masq, vec![(5061, "INIT1")]),
        (Forward::Route, vec![(5060, "CLOSED"), (5061, "INIT1")]),
    ] {
        let svc = |port: u16| {
            rr(
                Protocol::Sctp,
                port,
                vec![crate::testkit::real_by("198.19.0.11:5060", fwd)],
            )
        };
        let h = Harness::new(
            Snapshot::build_native(&[svc(5060), svc(5061)], &Snapshot::default()),
            1 << 10,
            1,
        );
        let to = |dport: u16, c: u8, body: &[u8]| {
            let mut v = Vec::new();
            PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
                .ipv4(CLIENT, VIP, 64)
                .write(&mut v, IpNumber::SCTP, &sctp(40200, dport, &[(c, body)]))
                .unwrap();
            v
        };
        for (t, c) in [
            chunk::INIT,
            chunk::COOKIE_ECHO,
            chunk::SHUTDOWN,
            chunk::SHUTDOWN_COMPLETE,
        ]
        .into_iter()
        .enumerate()
        {
            let body: &[u8] = if c == chunk::INIT { INIT.1 } else { &[0; 4] };
            let mut f = to(5060, c, body);
            assert_eq!(
                h.dp.process(&h.snap, t as u64, FROM_CLIENT, &mut f),
                Verdict::Tx { iface: 1 }
            );
        }
        // NAT without the server's answers: INPUT rows; SHUTDOWN_COMPLETE closes either way.
        assert_eq!(state(&h), [(40200, "CLOSED")], "{fwd:?}");
        let mut f = to(5061, chunk::INIT, INIT.1);
        assert_eq!(
            h.dp.process(&h.snap, 5, FROM_CLIENT, &mut f),
            Verdict::Tx { iface: 1 },
            "{fwd:?}: the new association's INIT goes to the server"
        );
        let mut vports = Vec::new();
        h.conns.for_each(|c| vports.push((c.vport, c.state_name())));
        vports.sort();
        assert_eq!(vports, want, "{fwd:?}");
    }
}

#[test]
fn a_master_syncs_an_association_and_a_backup_serves_it() {
    use super::sync_tests::{apply_all, drain, through_the_wire};
    use crate::conn::sync::Applied;
    let m = harness();
    m.conns.sync().start_master(1024);
    let rs = [198, 19, 0, 11];
    let step = |now: u64, client: bool, c: u8, body: &[u8]| {
        let mut f = if client {
            from_client(40400, &[(c, body)])
        } else {
            from_server(rs, 3868, 40400, &[(c, body)])
        };
        let meta = if client { FROM_CLIENT } else { FROM_RS };
        assert!(matches!(
            m.dp.process(&m.snap, now, meta, &mut f),
            Verdict::Tx { .. }
        ));
    };
    step(0, true, chunk::INIT, INIT.1);
    step(1, false, chunk::INIT_ACK, &[0; 4]);
    step(2, true, chunk::COOKIE_ECHO, &[0; 4]);
    step(3, false, chunk::COOKIE_ACK, &[]);
    assert!(
        drain(&m).is_empty(),
        "nothing before ESTABLISHED's third client packet"
    );
    step(4, true, chunk::DATA, &[0; 16]);
    let recs = drain(&m);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        (
            recs[0].protocol,
            recs[0].state,
            recs[0].dport,
            recs[0].timeout
        ),
        (132, SctpState::Established as u16, 3868, 900)
    );
    // The backup makes it, and serves the association's next chunk on the same server.
    let b = harness();
    let msg = through_the_wire(&recs);
    assert_eq!(apply_all(&b, &msg, 0), [Ok(Applied::Created)]);
    assert_eq!(state(&b), [(40400, "ESTABLISHED")]);
    let mut f = from_client(40400, &[(chunk::DATA, &[0; 16])]);
    assert_eq!(
        b.dp.process(&b.snap, 5, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(seen(&f).1, IpAddr::from(rs));
    assert_eq!(seen(&f).3, 3868);
    // A shutdown state goes at once (a change to a state other than ESTABLISHED).
    step(6, true, chunk::SHUTDOWN, &[0; 4]);
    let recs = drain(&m);
    assert_eq!(
        recs.iter().map(|r| r.state).collect::<Vec<_>>(),
        [SctpState::ShutdownReceived as u16]
    );
}

#[test]
fn nat66_rewrites_the_port_and_the_crc32c() {
    use crate::testkit::{CLIENT6, VIP6, rs6, service6};
    let h = Harness::new(
        Snapshot::build_native(
            &[service6(
                Protocol::Sctp,
                5060,
                "rr",
                vec![real("[2001:db8:19::11]:3868")],
            )],
            &Snapshot::default(),
        ),
        1 << 10,
        1,
    );
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv6(CLIENT6, VIP6, 64)
        .write(&mut f, IpNumber::SCTP, &sctp(40500, 5060, &[INIT]))
        .unwrap();
    assert_eq!(
        h.dp.process(&h.snap, 0, FROM_CLIENT, &mut f),
        Verdict::Tx { iface: 1 }
    );
    assert_eq!(
        seen(&f),
        (CLIENT6.into(), rs6(0x11).into(), 40500, 3868, true),
        "to the server's port, the CRC32c recomputed"
    );
    let mut f = Vec::new();
    PacketBuilder::ethernet2(rs_mac(0x11), SERVER_IF_MAC)
        .ipv6(rs6(0x11), CLIENT6, 64)
        .write(
            &mut f,
            IpNumber::SCTP,
            &sctp(3868, 40500, &[(chunk::INIT_ACK, &[0; 4])]),
        )
        .unwrap();
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut f),
        Verdict::Tx { iface: 0 }
    );
    assert_eq!(seen(&f), (VIP6.into(), CLIENT6.into(), 5060, 40500, true));
    assert_eq!(state(&h), [(40500, "C-SENT")]);
}
