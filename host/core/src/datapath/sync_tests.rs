//! Connection sync through the datapath: what a master queues for which packet
//! (`ip_vs_sync_conn_needed`), and a backup that takes the records and serves the clients
//! on the master's servers (`ip_vs_proc_conn`), with `sloppy_tcp` and `backup_only`.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::*;
use crate::conn::sync::{Applied, Ignored, apply};
use crate::spec::{Service, SyncSettings};
use crate::testkit::{
    CLIENT, CLIENT_IF_MAC, CLIENT_MAC, FROM_CLIENT, FROM_RS, Harness, SERVER_IF_MAC, VIP, real, rr,
    rs_mac,
};
use crate::wire::sync::{Message, MessageWriter, SyncConn, flag};

const RS: [&str; 3] = ["198.19.0.13:8080", "198.19.0.12:8080", "198.19.0.11:8080"];

fn director(services: &[Service]) -> Harness {
    Harness::new(
        Snapshot::build_native(services, &Snapshot::default()),
        1 << 12,
        1,
    )
}

fn tcp_rr() -> Service {
    rr(Protocol::Tcp, 80, RS.map(real).into())
}

fn udp_rr() -> Service {
    rr(
        Protocol::Udp,
        9000,
        ["198.19.0.12:9000", "198.19.0.11:9000"].map(real).into(),
    )
}

fn master() -> Harness {
    let h = director(&[tcp_rr(), udp_rr()]);
    h.conns.sync().start_master(1024);
    h
}

fn seg(cport: u16, syn: bool, ack: bool, fin: bool, rst: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(cport, 80, 1000, 65535);
    let b = if syn { b.syn() } else { b };
    let b = if ack { b.ack(1) } else { b };
    let b = if fin { b.fin() } else { b };
    let b = if rst { b.rst() } else { b };
    let mut v = Vec::new();
    b.write(&mut v, b"x").unwrap();
    v
}

fn syn(cport: u16) -> Vec<u8> {
    seg(cport, true, false, false, false)
}

fn ack(cport: u16) -> Vec<u8> {
    seg(cport, false, true, false, false)
}

fn udp(cport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(cport, 9000)
        .write(&mut v, b"q")
        .unwrap();
    v
}

fn send(h: &Harness, now: u64, mut f: Vec<u8>) -> (Verdict, Vec<u8>) {
    let v = h.dp.process(&h.snap, now, FROM_CLIENT, &mut f);
    (v, f)
}

pub(super) fn drain(h: &Harness) -> Vec<SyncConn> {
    let mut all = Vec::new();
    let mut v = Vec::new();
    for w in 0..h.conns.sync().workers() {
        h.conns.sync().drain(w, &mut v);
        all.append(&mut v);
    }
    all
}

/// Where a forwarded client frame went.
fn to(frame: &[u8]) -> (Ipv4Addr, u16) {
    let ip = &frame[14..];
    let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = &ip[usize::from(ip[0] & 0xf) * 4..];
    (d, u16::from_be_bytes([l4[2], l4[3]]))
}

#[test]
fn tcp_is_sent_at_its_third_packet_then_every_fiftieth_and_on_closing_states() {
    let h = master();
    send(&h, 0, syn(40000));
    // The server's SYN-ACK, then the client's ACK: ESTABLISHED at its second packet.
    let mut f = Vec::new();
    PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
        .ipv4([198, 19, 0, 11], CLIENT, 64)
        .tcp(8080, 40000, 5000, 65535)
        .syn()
        .ack(1001)
        .write(&mut f, b"")
        .unwrap();
    assert_eq!(
        h.dp.process(&h.snap, 1, FROM_RS, &mut f),
        Verdict::Tx { iface: 0 }
    );
    send(&h, 2, ack(40000));
    assert!(
        drain(&h).is_empty(),
        "SYN_RECV is not synced; ESTABLISHED waits for packet 3"
    );
    send(&h, 3, ack(40000));
    let r = drain(&h);
    assert_eq!(r.len(), 1);
    let c = r[0];
    assert_eq!(
        (c.protocol, c.state, c.cport, c.vport, c.dport, c.timeout),
        (6, TcpState::Established as u16, 40000, 80, 8080, 900)
    );
    assert_eq!(c.flags, flag::MASQ, "NAT, active, replies seen");
    assert_eq!(
        (c.caddr, c.vaddr, c.daddr),
        (
            IpAddr::from(CLIENT),
            IpAddr::from(VIP),
            "198.19.0.11".parse().unwrap()
        )
    );
    for n in 4..=52 {
        send(&h, 4, ack(40000));
        assert!(drain(&h).is_empty(), "packet {n}");
    }
    send(&h, 5, ack(40000));
    assert_eq!(drain(&h).len(), 1, "packet 53 = 3 + 50");
    // A FIN moves it to CLOSE_WAIT: a state change other than to ESTABLISHED goes at once.
    send(&h, 6, seg(40000, false, true, true, false));
    let r = drain(&h);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].state, TcpState::CloseWait as u16);
    assert_eq!(r[0].flags, flag::MASQ | flag::INACTIVE);
    assert_eq!(r[0].timeout, 60);
}

#[test]
fn udp_goes_at_packet_three_and_nothing_goes_without_a_master() {
    let h = master();
    for n in 1..=3 {
        send(&h, 0, udp(5353));
        assert_eq!(drain(&h).len(), usize::from(n == 3), "packet {n}");
    }
    let r = h.conns.sync();
    r.stop_master();
    for _ in 0..60 {
        send(&h, 0, udp(5354));
    }
    assert!(drain(&h).is_empty());
}

#[test]
fn sync_threshold_with_period_0_sends_once() {
    let mut h = master();
    h.snap.sysctl.sync = SyncSettings {
        threshold: 2,
        period: 0,
        ..SyncSettings::default()
    };
    let mut n = 0;
    for _ in 0..100 {
        send(&h, 0, udp(6000));
        n += drain(&h).len();
    }
    assert_eq!(n, 1);
}

#[test]
fn sync_refresh_period_sends_again_only_when_the_expiry_moved() {
    let mut h = master();
    h.snap.sysctl.sync = SyncSettings {
        threshold: 3,
        period: 0,
        refresh_period: 20,
        retries: 0,
        ..SyncSettings::default()
    };
    // UDP, 300 s timeout: sent at its first packet (refresh lets through any count), then
    // not until its expiry moved by 20 s.
    let mut sent = Vec::new();
    for t in 0..60u64 {
        send(&h, t * 1000, udp(6001));
        if !drain(&h).is_empty() {
            sent.push(t);
        }
    }
    assert_eq!(sent, vec![0, 20, 40], "{sent:?}");
}

/// The master's records as a backup receives them: through a version 1 message.
pub(super) fn through_the_wire(recs: &[SyncConn]) -> Vec<u8> {
    let mut buf = vec![0u8; 1472];
    let mut w = MessageWriter::new(&mut buf, 1).unwrap();
    for r in recs {
        assert!(w.push(r, None));
    }
    w.bytes().to_vec()
}

/// An established NAT connection of the client from `cport` to VIP:`vport`, on
/// 198.19.0.11:`dport`, as a master sends it.
fn established(cport: u16, vport: u16, dport: u16) -> SyncConn {
    SyncConn {
        protocol: 6,
        flags: flag::MASQ,
        state: 1,
        cport,
        vport,
        dport,
        fwmark: 0,
        timeout: 900,
        caddr: IpAddr::from(CLIENT),
        vaddr: IpAddr::from(VIP),
        daddr: "198.19.0.11".parse().unwrap(),
        seq: None,
    }
}

pub(super) fn apply_all(b: &Harness, msg: &[u8], now: u64) -> Vec<Result<Applied, Ignored>> {
    let m = Message::parse(msg).unwrap();
    m.conns()
        .map(|r| apply(&b.conns, &b.snap, &r.unwrap().unwrap(), now, 3))
        .collect()
}

#[test]
fn a_backup_serves_the_masters_connections_on_the_masters_servers() {
    let a = master();
    // Three connections: rr gives them .11, .12 and .13.
    for p in 0..3u16 {
        send(&a, 0, syn(41000 + p));
        for _ in 0..2 {
            send(&a, 1, ack(41000 + p));
        }
    }
    let recs = drain(&a);
    assert_eq!(
        recs.len(),
        3,
        "INPUT_ONLY: ESTABLISHED on the ACK, sent at packet 3"
    );
    let b = director(&[tcp_rr(), udp_rr()]);
    b.conns.sync().set_backup(true);
    let msg = through_the_wire(&recs);
    assert_eq!(apply_all(&b, &msg, 10), vec![Ok(Applied::Created); 3]);
    assert_eq!(b.conns.len(), 3);
    // The same message again refreshes them.
    assert_eq!(apply_all(&b, &msg, 11), vec![Ok(Applied::Updated); 3]);
    let dests: Vec<_> = b.snap.dests().cloned().collect();
    let active: i32 = dests
        .iter()
        .map(|d| d.activeconns.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(active, 3, "counted active on the backup's servers");
    // The clients' next segments go where the master sent them, and the reply path is
    // learnt from them.
    for p in 0..3u16 {
        let want = recs.iter().find(|r| r.cport == 41000 + p).unwrap();
        let (v, f) = send(&b, 12, ack(41000 + p));
        assert_eq!(v, Verdict::Tx { iface: 1 });
        assert_eq!(IpAddr::from(to(&f).0), want.daddr);
        assert_eq!(to(&f).1, want.dport);
    }
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(rs_mac(12), SERVER_IF_MAC)
        .ipv4([198, 19, 0, 12], CLIENT, 64)
        .tcp(8080, 41001, 5000, 65535)
        .ack(2)
        .write(&mut reply, b"ok")
        .unwrap();
    assert_eq!(
        b.dp.process(&b.snap, 13, FROM_RS, &mut reply),
        Verdict::Tx { iface: 0 }
    );
    assert_eq!(&reply[0..6], &CLIENT_MAC);
    // Its timeout is the message's: 900 s from the last record.
    let mut exp = Vec::new();
    b.conns.for_each(|c| exp.push((c.synced(), c.state)));
    assert!(exp.iter().all(|&(s, st)| s && st == TcpState::Established));
}

#[test]
fn the_backup_binds_to_its_own_servers_method_and_refuses_what_it_cannot_place() {
    let b = director(&[rr(
        Protocol::Tcp,
        80,
        vec![crate::testkit::real_by("198.19.0.11:8080", Forward::Route)],
    )]);
    let base = established(42000, 80, 8080);
    let other_vip = SyncConn {
        vaddr: "198.18.100.9".parse().unwrap(),
        ..base
    };
    let other_rs = SyncConn {
        cport: 42001,
        daddr: "198.19.0.99".parse().unwrap(),
        ..base
    };
    let bad_state = SyncConn {
        cport: 42002,
        state: 11,
        ..base
    };
    // ESP: no service of IPVS's protocols (an SCTP record finds its SCTP service).
    let esp = SyncConn {
        cport: 42003,
        protocol: 50,
        ..base
    };
    let msg = through_the_wire(&[base, other_vip, other_rs, bad_state, esp]);
    assert_eq!(
        apply_all(&b, &msg, 0),
        vec![
            Ok(Applied::Created),
            Err(Ignored::NoService),
            Err(Ignored::NoDest),
            Err(Ignored::State),
            Err(Ignored::Protocol),
        ]
    );
    let mut fwd = None;
    b.conns.for_each(|c| fwd = Some(c.fwd));
    assert_eq!(
        fwd,
        Some(Forward::Route),
        "ip_vs_bind_dest: the method of its own server"
    );
    // A record naming another server for an active connection replaces it; an inactive one
    // (the end of the connection that was replaced) is ignored.
    let moved = SyncConn {
        daddr: "198.19.0.11".parse().unwrap(),
        dport: 9999,
        flags: flag::INACTIVE,
        ..base
    };
    let msg = through_the_wire(&[moved]);
    assert_eq!(apply_all(&b, &msg, 1), vec![Err(Ignored::Stale)]);
}

#[test]
fn templates_are_sent_with_their_connections_and_rebuilt_on_the_backup() {
    let svc = Service {
        persistent: Some(300),
        ..tcp_rr()
    };
    let a = director(std::slice::from_ref(&svc));
    a.conns.sync().start_master(1024);
    send(&a, 0, syn(43000));
    let (_, f) = send(&a, 0, ack(43000));
    let server = to(&f);
    send(&a, 0, ack(43000));
    let recs = drain(&a);
    // Templates go with every client packet (sync_period lets them through), the
    // connection at its third.
    let tpl: Vec<_> = recs
        .iter()
        .filter(|r| r.flags & flag::TEMPLATE != 0)
        .collect();
    assert_eq!(tpl.len(), 3);
    let t = tpl[2];
    assert_eq!(
        (t.cport, t.vport, t.dport, t.timeout, t.state),
        (0, 80, 8080, 300, 1)
    );
    assert_eq!(
        t.caddr,
        IpAddr::from(CLIENT),
        "netmask /32; ASSURED once its connection was established"
    );
    let b = director(&[svc]);
    let msg = through_the_wire(&recs);
    let r = apply_all(&b, &msg, 0);
    assert_eq!(r[0], Ok(Applied::Created));
    assert_eq!(b.conns.persist().len(), 1);
    // A new connection of the same client on the backup goes to the template's server.
    let (v, f) = send(&b, 1, syn(43001));
    assert_eq!(v, Verdict::Tx { iface: 1 });
    assert_eq!(to(&f), server);
}

#[test]
fn sloppy_tcp_lets_a_mid_flow_segment_start_a_connection() {
    let mut b = director(&[tcp_rr()]);
    assert_eq!(
        send(&b, 0, ack(44000)).0,
        Verdict::Drop(DropReason::NoConnIn)
    );
    b.snap.sysctl.sloppy_tcp = true;
    assert_eq!(send(&b, 0, ack(44000)).0, Verdict::Tx { iface: 1 });
    let mut st = None;
    b.conns.for_each(|c| st = Some(c.state));
    assert_eq!(st, Some(TcpState::Established), "an ACK on sNO goes to sES");
    // A reset never starts one.
    assert_eq!(
        send(&b, 0, seg(44001, false, false, false, true)).0,
        Verdict::Drop(DropReason::NoConnIn)
    );
}

#[test]
fn backup_only_leaves_packets_to_the_stack_while_the_backup_runs() {
    let mut b = director(&[tcp_rr()]);
    b.snap.sysctl.backup_only = true;
    assert_eq!(send(&b, 0, syn(45000)).0, Verdict::Tx { iface: 1 });
    b.conns.sync().set_backup(true);
    assert_eq!(send(&b, 0, syn(45001)).0, Verdict::Pass);
    b.snap.sysctl.backup_only = false;
    assert_eq!(send(&b, 0, syn(45002)).0, Verdict::Tx { iface: 1 });
}

#[test]
fn a_reply_before_the_client_spoke_goes_through_the_stack() {
    let a = master();
    send(&a, 0, syn(46000));
    for _ in 0..2 {
        send(&a, 1, ack(46000));
    }
    let recs = drain(&a);
    let b = director(&[tcp_rr()]);
    apply_all(&b, &through_the_wire(&recs), 2);
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(rs_mac(11), SERVER_IF_MAC)
        .ipv4([198, 19, 0, 11], CLIENT, 64)
        .tcp(8080, 46000, 5000, 65535)
        .ack(2)
        .write(&mut reply, b"data the client waits for")
        .unwrap();
    let v = b.dp.process(&b.snap, 3, FROM_RS, &mut reply);
    let Verdict::Stack { daddr, len } = v else {
        panic!("{v:?}");
    };
    assert_eq!(daddr, IpAddr::from(CLIENT));
    let ip = &reply[14..14 + len];
    let h = etherparse::Ipv4HeaderSlice::from_slice(ip).unwrap();
    assert_eq!(h.source(), VIP, "from the VIP");
    let tcp = etherparse::TcpHeaderSlice::from_slice(&ip[20..]).unwrap();
    assert_eq!(tcp.source_port(), 80);
    let want = tcp
        .to_header()
        .calc_checksum_ipv4(&h.to_header(), &ip[20 + tcp.slice().len()..])
        .unwrap();
    assert_eq!(tcp.checksum(), want, "checksum complete");
}

#[test]
fn an_ftp_data_connection_is_placed_through_the_control_ports_service() {
    let ftp = Service {
        helpers: Some(vec!["ftp".into()]),
        ..rr(Protocol::Tcp, 21, vec![real("198.19.0.11:21")])
    };
    let snap = crate::testkit::snapshot(&[ftp]);
    let b = Harness::new(snap, 1 << 10, 1);
    let data = established(47000, 30000, 30000);
    let low = SyncConn {
        cport: 47001,
        vport: 999,
        dport: 999,
        ..data
    };
    let msg = through_the_wire(&[data, low]);
    assert_eq!(
        apply_all(&b, &msg, 0),
        vec![Ok(Applied::Created), Err(Ignored::NoService)],
        "the data ports are 20 and the unprivileged ones"
    );
    let mut got = None;
    b.conns
        .for_each(|c| got = Some((c.vport, c.rport, c.app().is_some())));
    assert_eq!(
        got,
        Some((30000, 30000, false)),
        "on the data port, no helper"
    );
}

/// A fwmark service's connections and template carry its mark (the template as IPVS's
/// `IPPROTO_IP` record, `0.0.0.1` its address), and a backup with the same service and
/// mark rules rebuilds both on its servers (`ip_vs_find_dest` by `cp->fwmark`).
#[test]
fn fwmark_connections_and_templates_carry_their_mark() {
    let rules = [crate::spec::MarkRule {
        mark: 5,
        family: Some(crate::spec::Family::V4),
        protos: Vec::new(),
        saddr: Vec::new(),
        daddr: vec!["198.18.100.0/24".parse().unwrap()],
        sport: Vec::new(),
        dport: Vec::new(),
    }];
    let svc = Service {
        persistent: Some(300),
        reals: ["198.19.0.12", "198.19.0.11"].map(real).into(),
        ..Service::fwmark(5, false, "rr")
    };
    let dir = || {
        let mut snap = Snapshot::build_native(std::slice::from_ref(&svc), &Snapshot::default());
        snap.set_marks(&rules);
        Harness::new(snap, 1 << 12, 1)
    };
    let a = dir();
    a.conns.sync().start_master(1024);
    send(&a, 0, syn(43100));
    let (_, f) = send(&a, 0, ack(43100));
    let server = to(&f);
    send(&a, 0, ack(43100));
    let recs = drain(&a);
    let conn = recs
        .iter()
        .find(|r| r.flags & flag::TEMPLATE == 0)
        .expect("the connection");
    assert_eq!(
        (conn.protocol, conn.fwmark, conn.vport, conn.dport),
        (6, 5, 80, 80)
    );
    let t = recs
        .iter()
        .find(|r| r.flags & flag::TEMPLATE != 0)
        .expect("the template");
    assert_eq!((t.protocol, t.fwmark, t.vport, t.dport), (0, 5, 0, 0));
    assert_eq!(t.vaddr, IpAddr::from([0, 0, 0, 5]));
    let b = dir();
    let r = apply_all(&b, &through_the_wire(&recs), 0);
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    assert_eq!(b.conns.persist().len(), 1);
    let mut marks = Vec::new();
    b.conns.for_each(|c| marks.push(c.fwmark()));
    assert_eq!(marks, [5]);
    // The client's next connection, to another port, follows the template on the backup.
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(43101, 443, 1000, 65535)
        .syn()
        .write(&mut v, b"")
        .unwrap();
    let (verdict, f) = send(&b, 1, v);
    assert_eq!(verdict, Verdict::Tx { iface: 1 });
    assert_eq!(to(&f), (server.0, 443));
}
