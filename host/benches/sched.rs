//! What a WebAssembly scheduler costs: one scheduler call, native and wasm, and one new
//! connection through the whole datapath (parse, schedule, insert into the connection table,
//! NAT rewrite), native and wasm.
//!
//! `cargo bench -p wvs --bench sched` (figures in BENCHMARKS.md).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;

use divan::Bencher;
use etherparse::PacketBuilder;
use wvs::conn::ConnTable;
use wvs::datapath::{Datapath, DatapathStats, Iface, RxMeta, Verdict};
use wvs::model::{Protocol, Scheduler};
use wvs::plugin::{Registry, Runtime};
use wvs::service::{NextHop, SchedChoice, SchedState, Snapshot};
use wvs::wire::checksum::CsumMode;
use wvs_core::testkit;
use wvs_sdk::ConnInfo;

fn main() {
    divan::main();
}

fn registry(wasm: bool) -> Registry {
    Registry::new(Runtime::new(None).expect("runtime"), wasm).expect("builtins")
}

fn dests() -> Vec<Arc<wvs::service::Dest>> {
    (0..3)
        .map(|i| {
            Arc::new(wvs::service::Dest::new(
                format!("198.19.0.{}", 11 + i).parse().unwrap(),
                80,
            ))
        })
        .collect()
}

const SCHEDULERS: &[&str] = &["rr", "wlc", "mh"];

/// One scheduler call with a three-server table, through the service's scheduler state
/// (lock, table refresh, call): native.
#[divan::bench(args = SCHEDULERS, sample_size = 1000)]
fn call_native(b: Bencher, name: &str) {
    let st = SchedState::new(&SchedChoice::native(Scheduler::from_name(name).unwrap()), 0);
    let d = dests();
    let mut conn = ConnInfo::default();
    st.schedule(&d, &mut conn, 0); // the first call builds the scheduler's tables
    b.bench_local(|| st.schedule(&d, &mut conn, 0).is_some());
}

/// The same call to the embedded wasm build.
#[divan::bench(args = SCHEDULERS, sample_size = 1000)]
fn call_wasm(b: Bencher, name: &str) {
    let reg = registry(true);
    let st = SchedState::new(&SchedChoice::new(name, reg.plugin_for(name)), 0);
    assert!(st.runs_plugin());
    let d = dests();
    let mut conn = ConnInfo::default();
    st.schedule(&d, &mut conn, 0);
    b.bench_local(|| st.schedule(&d, &mut conn, 0).is_some());
    assert!(st.runs_plugin());
}

/// The plugin call alone: write the connection and the three-server table into the
/// plugin's memory, set the deadline, call `wvs_schedule`, check the answer.
#[divan::bench(args = SCHEDULERS, sample_size = 1000)]
fn plugin_call_only(b: Bencher, name: &str) {
    let reg = registry(true);
    let mut w = reg
        .plugin_for(name)
        .expect("built in")
        .instantiate()
        .expect("instance");
    let table: Vec<_> = dests().iter().map(|d| d.info()).collect();
    w.update(&table, 0).expect("update");
    let conn = ConnInfo::default();
    b.bench_local(|| w.schedule(&conn, &table, 0).expect("call").is_some());
}

/// The snapshot of `services` (wvs_core::testkit's), schedulers as `reg` runs them.
fn built(reg: &Registry, services: &[wvs::spec::Service]) -> Snapshot {
    let snap = Snapshot::build(services, &Default::default(), &Snapshot::default(), &|n| {
        SchedChoice::new(n, reg.plugin_for(n))
    });
    for d in snap.dests() {
        d.set_next_hop(Some(NextHop {
            iface: 1,
            mac: [2, 0, 0, 0, 1, 1],
        }));
    }
    snap
}

fn snapshot(reg: &Registry) -> Snapshot {
    let reals = ["198.19.0.11:80", "198.19.0.12:80", "198.19.0.13:80"].map(testkit::real);
    built(reg, &[testkit::rr(Protocol::Tcp, 80, reals.into())])
}

const CLIENT_IF: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn syn(client: u32, port: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xc1], CLIENT_IF)
        .ipv4(client.to_be_bytes(), [198, 18, 100, 1], 64)
        .tcp(port, 80, 1, 65535)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

/// A datapath with a client-side and a server-side interface, and what a frame from the
/// client side carries.
fn datapath(max_conns: usize) -> (Datapath, RxMeta) {
    let ifaces: Arc<[Iface]> = vec![Iface::new(CLIENT_IF), Iface::new([2, 0, 0, 0, 0, 2])].into();
    let conns = Arc::new(ConnTable::new(max_conns));
    let dp = Datapath::new(conns, ifaces, Arc::new(DatapathStats::default()), 0);
    let meta = RxMeta {
        iface: 0,
        csum: CsumMode::Complete,
        gso_size: 0,
    };
    (dp, meta)
}

/// A new connection through the whole datapath: a SYN from a client never seen before.
fn new_conn(b: Bencher, wasm: bool) {
    let reg = registry(wasm);
    let snap = snapshot(&reg);
    let (dp, meta) = datapath(1 << 24);
    let mut n: u32 = 0;
    // The first connection builds the scheduler's tables.
    let mut first = syn(0x0b00_0001, 1);
    assert!(matches!(
        dp.process(&snap, 0, meta, &mut first),
        Verdict::Tx { .. }
    ));
    b.with_inputs(|| {
        n += 1;
        syn(0x0a00_0000 + (n >> 16), n as u16)
    })
    .bench_local_refs(|f| assert!(matches!(dp.process(&snap, 0, meta, f), Verdict::Tx { .. })));
    let _ = IpAddr::from([0u8; 4]);
}

#[divan::bench(sample_size = 100, sample_count = 500)]
fn new_conn_native(b: Bencher) {
    new_conn(b, false);
}

#[divan::bench(sample_size = 100, sample_count = 500)]
fn new_conn_wasm(b: Bencher) {
    new_conn(b, true);
}

/// A packet of a known connection (the path of nearly every packet): a UDP datagram of one
/// of 65,536 flows already in the table, so the lookup is the table's, not a cache's.
#[divan::bench(sample_size = 100, sample_count = 500)]
fn known_flow(b: Bencher) {
    let reg = registry(false);
    let reals = ["198.19.0.11:9000", "198.19.0.12:9000"].map(testkit::real);
    let snap = built(&reg, &[testkit::rr(Protocol::Udp, 9000, reals.into())]);
    let (dp, meta) = datapath(1 << 20);
    let datagram = |port: u16| {
        let mut v = Vec::with_capacity(64);
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xc1], CLIENT_IF)
            .ipv4([198, 18, 0, 2], [198, 18, 100, 1], 64)
            .udp(port, 9000)
            .write(&mut v, &[0u8; 18])
            .unwrap();
        v
    };
    for p in 0..=u16::MAX {
        let mut f = datagram(p);
        assert!(matches!(
            dp.process(&snap, 0, meta, &mut f),
            Verdict::Tx { .. }
        ));
    }
    let mut n: u16 = 0;
    b.with_inputs(|| {
        n = n.wrapping_add(7919);
        datagram(n)
    })
    .bench_local_refs(|f| assert!(matches!(dp.process(&snap, 0, meta, f), Verdict::Tx { .. })));
}
