//! The plugin runtime against real wasmtime: the embedded built-ins agree with their native
//! builds, and misbehaving plugins (traps, endless loops, endless memory, bad answers, wrong
//! ABI) are contained, counted and replaced by the fallback.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use proptest::prelude::*;
use wvs_sdk::ConnInfo;

use super::*;
use crate::model::Scheduler;
use crate::service::{Dest, SchedChoice, SchedState};

fn runtime() -> Arc<Runtime> {
    Runtime::new(None).expect("runtime")
}

fn dests(spec: &[(u32, i32, i32)]) -> Vec<Arc<Dest>> {
    spec.iter()
        .enumerate()
        .map(|(i, &(w, act, inact))| {
            let d = Arc::new(Dest::new(
                format!("198.19.0.{}", 11 + i).parse().unwrap(),
                80,
            ));
            d.set_weight(w);
            d.activeconns.store(act, Relaxed);
            d.inactconns.store(inact, Relaxed);
            d
        })
        .collect()
}

fn conn(c: u32, port: u16) -> ConnInfo {
    ConnInfo {
        saddr: std::net::Ipv4Addr::from(0xC612_0000 | c)
            .to_ipv6_mapped()
            .octets(),
        daddr: std::net::Ipv4Addr::new(198, 18, 100, 1)
            .to_ipv6_mapped()
            .octets(),
        sport: port,
        dport: 80,
        proto: 6,
        af: 4,
        ..Default::default()
    }
}

fn index(d: &[Arc<Dest>], p: Option<&Arc<Dest>>) -> Option<usize> {
    p.map(|p| d.iter().position(|x| Arc::ptr_eq(x, p)).unwrap())
}

/// A module with the ABI's exports and the given body for `wvs_schedule`.
fn wat(version: i32, schedule_body: &str) -> String {
    format!(
        r#"(module
            (import "wvs" "random" (func $random (result i32)))
            (memory (export "memory") 1)
            (func (export "wvs_abi_version") (result i32) i32.const {version})
            (func (export "wvs_shared") (result i32) i32.const 1024)
            (func (export "wvs_update") (param i32 i32))
            (func (export "wvs_schedule") (param i32) (result i32) {schedule_body}))"#
    )
}

/// The calling thread's CPU time.
fn thread_cpu() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(std::time::Duration::from)
        .expect("thread CPU clock")
}

fn custom(rt: &Arc<Runtime>, text: &str) -> Result<Plugin, PluginError> {
    rt.compile("custom", text.as_bytes())
}

#[test]
fn every_builtin_compiles_and_follows_the_abi() {
    let rt = runtime();
    let all = rt.builtins().unwrap();
    let names: Vec<&str> = all
        .iter()
        .filter(|p| p.kind == PluginKind::Scheduler)
        .map(|p| p.name.as_str())
        .collect();
    let want: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(names, want);
    let helpers: Vec<(&str, PluginKind)> = all
        .iter()
        .filter(|p| p.kind != PluginKind::Scheduler)
        .map(|p| (p.name.as_str(), p.kind))
        .collect();
    assert_eq!(
        helpers,
        [
            (
                "ftp",
                PluginKind::Helper {
                    flags: wvs_sdk::helper_flags::EXPECTS
                }
            ),
            ("proxy-v2", PluginKind::Helper { flags: 0 }),
            ("sip", PluginKind::Pe),
        ]
    );
}

fn mapped(a: [u8; 4]) -> [u8; 16] {
    std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets()
}

/// The built-in FTP helper as wasm: the host's side of a call (packet, state, payload,
/// expectation checks) round trip.
#[test]
fn ftp_helper_rewrites_a_passive_reply_and_expects_its_data_connection() {
    let rt = runtime();
    let ftp = rt
        .builtins()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "ftp")
        .unwrap();
    let pool = HelperPool::new(ftp);
    assert!(pool.expects());
    let mut pkt = wvs_sdk::PacketInfo {
        caddr: mapped([198, 18, 0, 2]),
        vaddr: mapped([198, 18, 0, 100]),
        daddr: mapped([198, 19, 0, 11]),
        cport: 40000,
        vport: 21,
        dport: 21,
        proto: 6,
        af: 4,
        tcp_state: 1,
        max_len: 1000,
        ..Default::default()
    };
    let mut state = [0u8; wvs_sdk::HELPER_STATE_LEN];
    let pasv = b"PASV\r\n";
    pkt.len = pasv.len() as u32;
    pool.with(0, |h| {
        assert_eq!(h.packet(&pkt, &mut state, pasv, true, 0)?, Answer::Keep);
        Ok(())
    })
    .unwrap();
    assert_eq!(
        state[0], 1,
        "the helper's state comes back to the connection"
    );
    let reply = b"227 Entering Passive Mode (198,19,0,11,195,80).\r\n";
    pkt.dir = wvs_sdk::helper_dir::OUT;
    pkt.len = reply.len() as u32;
    let (out, expects) = pool
        .with(0, |h| {
            let out = match h.packet(&pkt, &mut state, reply, true, 0)? {
                Answer::Replace(b) => b.to_vec(),
                a => panic!("{a:?}"),
            };
            Ok((out, h.expects().to_vec()))
        })
        .unwrap();
    assert_eq!(out, b"227 Entering Passive Mode (198,18,0,100,195,80).\r\n");
    assert_eq!(expects.len(), 1);
    assert_eq!(
        (expects[0].cport, expects[0].vport, expects[0].dport),
        (0, 50000, 50000)
    );
    // Another client's expectation, or none allowed (full NAT): refused, reply left alone.
    state[0] = 1;
    let refused = pool
        .with(0, |h| {
            let a = h.packet(&pkt, &mut state, reply, false, 0)?;
            assert_eq!(a, Answer::Keep);
            Ok(h.refused())
        })
        .unwrap();
    assert_eq!(refused, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The wasm build of each deterministic built-in makes the same choices as its native
    /// build, connection after connection, whatever the weights and counters.
    #[test]
    fn wasm_and_native_agree(
        spec in proptest::collection::vec((0u32..5, 0i32..4, 0i32..600), 1..6),
        clients in proptest::collection::vec((any::<u32>(), any::<u16>()), 1..20),
        flags in 0u32..4,
    ) {
        static BUILTINS: std::sync::OnceLock<(Arc<Runtime>, Vec<Plugin>)> = std::sync::OnceLock::new();
        let (rt, builtins) = BUILTINS.get_or_init(|| {
            let rt = runtime();
            // Agreement is tested here, not the deadline (see testkit::TEST_CALL_DEADLINE_US).
            rt.set_call_deadline_us(crate::testkit::TEST_CALL_DEADLINE_US);
            let b = rt.builtins().unwrap();
            (rt, b)
        });
        let d = dests(&spec);
        for p in builtins.iter().filter(|p| p.name != "twos" && p.kind == PluginKind::Scheduler) {
            let native = Scheduler::from_name(&p.name).unwrap();
            let svc_flags = (flags & 3) << 3; // SCHED1 and SCHED2
            let w = SchedState::new(&SchedChoice { name: p.name.clone(), plugin: Some(p.clone()), fallback: native }, svc_flags);
            let n = SchedState::new(&SchedChoice::native(native), svc_flags);
            for &(c, port) in &clients {
                let a = index(&d, w.schedule(&d, &mut conn(c, port), 0));
                let b = index(&d, n.schedule(&d, &mut conn(c, port), 0));
                prop_assert_eq!(a, b, "{} differs", p.name);
            }
            prop_assert!(w.runs_plugin(), "{} fell back", p.name);
        }
        prop_assert_eq!(rt.stats.traps.load(Relaxed), 0);
    }
}

/// Run one misbehaving plugin: traffic goes on (the fallback answers), the fault is counted
/// once, and the plugin is not called again.
fn contained(body: &str, counter: fn(&PluginStats) -> &AtomicU64) {
    let rt = runtime();
    let p = custom(&rt, &wat(1, body)).expect("compiles");
    let st = SchedState::new(
        &SchedChoice {
            name: "custom".into(),
            plugin: Some(p),
            fallback: Scheduler::Rr,
        },
        0,
    );
    let d = dests(&[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
    let picks: Vec<_> = (0..6)
        .map(|i| index(&d, st.schedule(&d, &mut conn(1, i), 0)))
        .collect();
    assert_eq!(
        picks,
        [0, 1, 2, 0, 1, 2].map(Some),
        "the fallback (rr) served every connection"
    );
    assert!(!st.runs_plugin());
    assert_eq!(counter(&rt.stats).load(Relaxed), 1);
    assert_eq!(rt.stats.fallbacks.load(Relaxed), 1);
    assert_eq!(
        rt.stats.calls.load(Relaxed),
        1,
        "never called again after the fault"
    );
}

#[test]
fn a_trap_falls_back() {
    contained("unreachable", |s| &s.traps);
}

#[test]
fn an_endless_loop_is_interrupted() {
    let t0 = std::time::Instant::now();
    contained("(loop $l (br $l)) i32.const 0", |s| &s.traps);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "the deadline cut it short"
    );
}

#[test]
fn an_endless_loop_is_interrupted_after_the_epoch_timer_slept() {
    // The timer sleeps soon after the last call; a call must wake it, or its deadline
    // would never pass.
    let rt = runtime();
    let p = custom(&rt, &wat(1, "(loop $l (br $l)) i32.const 0")).expect("compiles");
    let idle = crate::consts::PLUGIN_EPOCH_US * u64::from(crate::consts::PLUGIN_EPOCH_IDLE_TICKS);
    let t0 = std::time::Instant::now();
    while !rt.clock.asleep.load(Relaxed) && t0.elapsed() < std::time::Duration::from_secs(2) {
        std::thread::sleep(std::time::Duration::from_micros(idle));
    }
    assert!(rt.clock.asleep.load(Relaxed), "the timer sleeps when idle");
    let st = SchedState::new(
        &SchedChoice {
            name: "custom".into(),
            plugin: Some(p),
            fallback: Scheduler::Rr,
        },
        0,
    );
    let d = dests(&[(1, 0, 0), (1, 0, 0)]);
    let t0 = std::time::Instant::now();
    assert_eq!(index(&d, st.schedule(&d, &mut conn(1, 1), 0)), Some(0));
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(1),
        "the deadline cut it short: {:?}",
        t0.elapsed()
    );
    assert_eq!(rt.stats.traps.load(Relaxed), 1);
}

#[test]
fn endless_memory_growth_is_refused() {
    // Grow by 16 pages until refused, then trap: the store's limit refuses at 16 MiB.
    contained(
        "(block $done (loop $l (br_if $done (i32.eq (memory.grow (i32.const 16)) (i32.const -1))) (br $l))) unreachable",
        |s| &s.traps,
    );
}

#[test]
fn endless_table_growth_traps_and_falls_back() {
    // A table of its own, grown by 1000 elements until refused: past
    // PLUGIN_MAX_TABLE_ELEMENTS the grow traps, long before the call's deadline.
    let rt = runtime();
    let text = wat(
        1,
        "(loop $l (drop (table.grow $t (ref.null func) (i32.const 1000))) (br $l)) i32.const 0",
    )
    .replace(
        "(memory (export \"memory\") 1)",
        "(memory (export \"memory\") 1) (table $t 1 funcref)",
    );
    let p = custom(&rt, &text).expect("compiles");
    let st = SchedState::new(
        &SchedChoice {
            name: "custom".into(),
            plugin: Some(p),
            fallback: Scheduler::Rr,
        },
        0,
    );
    let d = dests(&[(1, 0, 0), (1, 0, 0)]);
    let t0 = std::time::Instant::now();
    assert_eq!(index(&d, st.schedule(&d, &mut conn(1, 1), 0)), Some(0));
    assert!(!st.runs_plugin(), "fell back");
    assert_eq!(rt.stats.traps.load(Relaxed), 1);
    assert!(
        t0.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn the_deadline_is_about_a_millisecond() {
    // An endless loop is cut short within 1.2 ms of the worker's CPU time (measured by the
    // thread's CPU clock: on a busy machine the wall-clock time of a preempted call is
    // longer, by design).
    let rt = runtime();
    let p = custom(&rt, &wat(1, "(loop $l (br $l)) i32.const 0")).expect("compiles");
    let mut w = crate::plugin::WasmScheduler::new(&p).expect("instance");
    let d: Vec<_> = dests(&[(1, 0, 0)]).iter().map(|d| d.info()).collect();
    let mut best = std::time::Duration::MAX;
    for _ in 0..20 {
        let t0 = thread_cpu();
        let r = w.schedule(&conn(1, 1), &d, 0);
        best = best.min(thread_cpu() - t0);
        assert!(matches!(r, Err(PluginError::Trap { .. })), "{r:?}");
    }
    assert!(
        best < std::time::Duration::from_micros(1200),
        "the fastest interrupted call took {best:?}"
    );
}

#[test]
fn an_update_is_cut_short_by_the_cpu_it_used() {
    // An update (and an instance's first call) is timed by the thread's CPU clock from
    // its start: a preempted one is not taken for a runaway one, an endless one is still
    // cut within 1 ms of CPU.
    let rt = runtime();
    let text = wat(1, "i32.const 0").replace(
        r#"(func (export "wvs_update") (param i32 i32))"#,
        r#"(func (export "wvs_update") (param i32 i32) (loop $l (br $l)))"#,
    );
    let p = custom(&rt, &text).expect("compiles");
    let d: Vec<_> = dests(&[(1, 0, 0)]).iter().map(|d| d.info()).collect();
    let mut best = std::time::Duration::MAX;
    for _ in 0..10 {
        let mut w = crate::plugin::WasmScheduler::new(&p).expect("instance");
        let t0 = thread_cpu();
        let r = w.update(&d, 0);
        best = best.min(thread_cpu() - t0);
        assert!(matches!(r, Err(PluginError::Trap { .. })), "{r:?}");
    }
    assert!(
        best < std::time::Duration::from_micros(1000),
        "the fastest interrupted update took {best:?}"
    );
}

#[test]
fn a_repeatedly_slow_plugin_falls_back() {
    // 10,000 turns of a loop: microseconds, far under the deadline, but over a bound of
    // 1 µs: after PLUGIN_SLOW_SCORE_LIMIT / PLUGIN_SLOW_SCORE_STEP calls it falls back.
    let rt = runtime();
    rt.set_slow_call_us(1);
    let body = "(local $i i32) (local.set $i (i32.const 10000)) \
        (loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1))) \
        (br_if $l (local.get $i))) i32.const 0";
    let p = custom(&rt, &wat(1, body)).expect("compiles");
    let st = SchedState::new(
        &SchedChoice {
            name: "custom".into(),
            plugin: Some(p),
            fallback: Scheduler::Rr,
        },
        0,
    );
    let d = dests(&[(1, 0, 0), (1, 0, 0)]);
    let calls = crate::consts::PLUGIN_SLOW_SCORE_LIMIT / crate::consts::PLUGIN_SLOW_SCORE_STEP;
    for i in 0..(calls - 1) as u16 {
        assert_eq!(index(&d, st.schedule(&d, &mut conn(1, i), 0)), Some(0));
        assert!(st.runs_plugin(), "call {i}");
    }
    st.schedule(&d, &mut conn(1, 99), 0);
    assert!(!st.runs_plugin(), "fell back");
    assert_eq!(rt.stats.slow.load(Relaxed), 1);
    assert_eq!(rt.stats.traps.load(Relaxed), 0);
    assert_eq!(rt.stats.fallbacks.load(Relaxed), 1);
}

#[test]
fn a_plugin_naming_a_quiesced_server_falls_back() {
    // It always answers the first server, whose weight is 0: no IPVS scheduler would.
    let rt = runtime();
    let p = custom(&rt, &wat(1, "i32.const 0")).expect("compiles");
    let st = SchedState::new(
        &SchedChoice {
            name: "custom".into(),
            plugin: Some(p),
            fallback: Scheduler::Rr,
        },
        0,
    );
    let d = dests(&[(0, 0, 0), (1, 0, 0)]);
    assert_eq!(index(&d, st.schedule(&d, &mut conn(1, 1), 0)), Some(1));
    assert!(!st.runs_plugin());
    assert_eq!(rt.stats.invalid.load(Relaxed), 1);
}

#[test]
fn an_unchanged_plugin_is_not_compiled_again() {
    let dir = std::env::temp_dir().join(format!("wvs-prepare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("custom.wat");
    std::fs::write(&path, wat(1, "i32.const 0")).unwrap();
    let spec = crate::spec::Plugin {
        name: "custom".into(),
        path: path.clone(),
    };
    let mut reg = Registry::new(runtime(), false).unwrap();
    reg.load(std::slice::from_ref(&spec)).unwrap();
    let again = reg.prepare(std::slice::from_ref(&spec)).unwrap();
    assert!(wasmtime::Module::same(
        &again[0].module,
        &reg.custom()[0].module
    ));
    // New bytes under the same name: compiled.
    std::fs::write(&path, wat(1, "i32.const -1")).unwrap();
    let changed = reg.prepare(std::slice::from_ref(&spec)).unwrap();
    assert!(!wasmtime::Module::same(
        &changed[0].module,
        &reg.custom()[0].module
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_answer_out_of_range_falls_back() {
    contained("i32.const 7", |s| &s.invalid);
}

#[test]
fn wrong_abi_is_refused_at_load() {
    let rt = runtime();
    let e = custom(&rt, &wat(2, "i32.const 0")).unwrap_err();
    assert!(e.to_string().contains("ABI version 2"), "{e}");
    let e = custom(&rt, "(module (memory (export \"memory\") 1))").unwrap_err();
    assert!(e.to_string().contains("wvs_abi_version"), "{e}");
    let e = custom(&rt, "not wasm").unwrap_err();
    assert!(matches!(e, PluginError::Compile { .. }), "{e}");
    // The shared table must lie inside the memory.
    let outside = wat(1, "i32.const 0").replace("i32.const 1024)", "i32.const 65000)");
    let e = custom(&rt, &outside).unwrap_err();
    assert!(e.to_string().contains("outside"), "{e}");
}

#[test]
fn a_plugin_reads_the_table_the_host_wrote() {
    // Pick the server whose `hint` (offset 44 in each 48-byte entry) is smallest.
    let body = r#"
        (local $i i32) (local $best i32) (local $bh i32) (local $h i32)
        (local.set $best (i32.const -1))
        (local.set $bh (i32.const -1))
        (block $done (loop $l
            (br_if $done (i32.ge_u (local.get $i) (local.get 0)))
            (local.set $h (i32.load (i32.add (i32.const 1116) (i32.mul (local.get $i) (i32.const 48)))))
            (if (i32.lt_u (local.get $h) (local.get $bh)) (then (local.set $bh (local.get $h)) (local.set $best (local.get $i))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $l)))
        (local.get $best)"#;
    let rt = runtime();
    let p = custom(&rt, &wat(1, body)).unwrap();
    let st = SchedState::new(
        &SchedChoice {
            name: "custom".into(),
            plugin: Some(p),
            fallback: Scheduler::Rr,
        },
        0,
    );
    let d = dests(&[(1, 0, 0), (1, 0, 0), (1, 0, 0)]);
    for (i, h) in [300, 100, 200].iter().enumerate() {
        d[i].set_hint(*h);
    }
    assert_eq!(index(&d, st.schedule(&d, &mut conn(1, 1), 0)), Some(1));
    d[2].set_hint(50);
    assert_eq!(
        index(&d, st.schedule(&d, &mut conn(1, 2), 0)),
        Some(2),
        "counters are fresh at every call"
    );
    assert!(st.runs_plugin());
}

/// A helper module whose `flags` and `packet` run the given bodies.
fn helper_wat(flags: &str, packet: &str) -> String {
    format!(
        r#"(module
            (memory (export "memory") 2)
            (func (export "wvs_abi_version") (result i32) i32.const 1)
            (func (export "wvs_helper_shared") (result i32) i32.const 1024)
            (func (export "wvs_helper_flags") (result i32) {flags})
            (func (export "wvs_helper_packet") (result i32) {packet}))"#
    )
}

/// A helper whose `flags` (or `shared`) never returns is interrupted at its first
/// instance, on the thread that compiles it (an upload's, the control thread's), and
/// refused with a message: no thread hangs on it.
#[test]
fn a_helper_whose_flags_loop_is_refused_within_its_deadline() {
    let rt = runtime();
    for (name, wat) in [
        (
            "flags",
            helper_wat("(loop $l (br $l)) i32.const 0", "i32.const -1"),
        ),
        (
            "shared",
            helper_wat("i32.const 0", "i32.const -1").replace(
                "(result i32) i32.const 1024",
                "(result i32) (loop $l (br $l)) i32.const 0",
            ),
        ),
    ] {
        let t0 = std::time::Instant::now();
        let e = rt.compile(name, wat.as_bytes()).expect_err("refused");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "{name}: {:?}",
            t0.elapsed()
        );
        assert!(matches!(e, PluginError::Abi { .. }), "{name}: {e}");
        assert!(format!("{e}").contains("interrupt"), "{name}: {e}");
    }
}

/// A helper whose `packet` loops: the call is interrupted, the instance dropped, and the
/// worker finds no instance (it builds none itself) until the rebuilder, after its
/// back-off and off the worker, has made one.
#[test]
fn a_failed_helper_is_rebuilt_off_the_worker_after_a_back_off() {
    let rt = runtime();
    rt.set_workers(2);
    let p = rt
        .compile(
            "spin",
            helper_wat("i32.const 0", "(loop $l (br $l)) i32.const -1").as_bytes(),
        )
        .expect("compiles");
    let pool = HelperPool::new(p);
    assert!(
        pool.ready(0) && pool.ready(1),
        "instances built with the pool"
    );
    assert!(!pool.ready(2), "only the runtime's workers");
    let pkt = wvs_sdk::PacketInfo {
        max_len: 100,
        len: 1,
        ..Default::default()
    };
    let mut state = [0u8; wvs_sdk::HELPER_STATE_LEN];
    let t0 = std::time::Instant::now();
    let r = pool.with(0, |h| {
        h.packet(&pkt, &mut state, b"x", false, 0).map(|_| ())
    });
    assert!(matches!(r, Err(PluginError::Trap { .. })), "{r:?}");
    assert!(t0.elapsed() < std::time::Duration::from_millis(500));
    assert!(
        !pool.ready(0) && pool.ready(1),
        "worker 0's instance dropped"
    );
    let t1 = std::time::Instant::now();
    let r = pool.with(0, |_| Ok(()));
    assert!(matches!(r, Err(PluginError::NoInstance { .. })), "{r:?}");
    assert!(
        t1.elapsed() < std::time::Duration::from_millis(5),
        "no build on the worker"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !pool.ready(0) {
        assert!(std::time::Instant::now() < deadline, "rebuilt");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(crate::consts::HELPER_REBUILD_BACKOFF_MS),
        "after the back-off"
    );
    // Failures in a row wait longer, up to the bound.
    assert!(pool::rebuild_backoff(3) > pool::rebuild_backoff(1));
    assert_eq!(
        pool::rebuild_backoff(60).as_millis() as u64,
        crate::consts::HELPER_REBUILD_BACKOFF_MAX_MS
    );
}

/// The table bound is for every table together: four tables of 3,000 elements (12,000)
/// are refused at instantiation, four of 2,000 are taken.
#[test]
fn the_table_bound_is_a_total() {
    let rt = runtime();
    let tables = |n: usize| {
        let four: String = (0..4)
            .map(|i| format!("(table $t{i} {n} funcref) "))
            .collect();
        wat(1, "i32.const 0").replace(
            "(memory (export \"memory\") 1)",
            &format!("(memory (export \"memory\") 1) {four}"),
        )
    };
    custom(&rt, &tables(2000)).expect("8,000 elements together");
    let e = custom(&rt, &tables(3000)).expect_err("12,000 together");
    assert!(e.to_string().contains("over 10000"), "{e}");
}

/// A plugin is the same as another only with the same name, SHA-256 and bytes: a module
/// whose digest matched another's (a crafted collision) is still compiled afresh.
#[test]
fn a_plugin_is_known_by_its_sha256_and_its_bytes() {
    let rt = runtime();
    let text = wat(1, "i32.const 0");
    let p = custom(&rt, &text).expect("compiles");
    assert_eq!(digest_hex(&p.digest), digest_hex(&digest(text.as_bytes())),);
    assert_eq!(
        digest_hex(&digest(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert!(p.is("custom", &p.digest, text.as_bytes()));
    let other = wat(1, "i32.const 1");
    assert!(
        !p.is("custom", &p.digest, other.as_bytes()),
        "same digest, other bytes"
    );
    assert!(!p.is("other", &p.digest, text.as_bytes()));
}

/// `wvs_sched_flags`: the hashing built-ins declare themselves consistent, the others do
/// not; a module without the export declares nothing; one with another signature is
/// refused; a service whose plugin fell back to wlc is no longer consistent.
#[test]
fn schedulers_declare_whether_they_are_consistent() {
    let rt = runtime();
    for p in rt.builtins().unwrap() {
        if p.kind != PluginKind::Scheduler {
            continue;
        }
        let w = p.instantiate().unwrap();
        let want = ["mh", "sh", "dh", "fo"].contains(&p.name.as_str());
        assert_eq!(
            w.flags() & wvs_sdk::sched_flags::CONSISTENT != 0,
            want,
            "{}",
            p.name
        );
        let native = Scheduler::from_name(&p.name).unwrap();
        assert_eq!(native.flags(), w.flags(), "{} native and wasm", p.name);
    }
    let plain = custom(&rt, &wat(1, "i32.const 0")).unwrap();
    assert_eq!(plain.instantiate().unwrap().flags(), 0);
    let declares = |f: &str| {
        let text = wat(1, "i32.const 0").replace(
            "(func (export \"wvs_update\")",
            &format!("{f}\n(func (export \"wvs_update\")"),
        );
        custom(&rt, &text)
    };
    let c = declares(r#"(func (export "wvs_sched_flags") (result i32) i32.const 1)"#).unwrap();
    let st = SchedState::new(&SchedChoice::new("custom", Some(c)), 0);
    assert!(st.consistent());
    let bad = declares(r#"(func (export "wvs_sched_flags") (param i32) (result i32) i32.const 1)"#);
    assert!(matches!(bad, Err(PluginError::Abi { .. })), "{bad:?}");
    // A consistent plugin that traps falls back to wlc: no longer consistent.
    let c = custom(
        &rt,
        &wat(1, "unreachable").replace(
            "(func (export \"wvs_update\")",
            "(func (export \"wvs_sched_flags\") (result i32) i32.const 1)\n(func (export \"wvs_update\")",
        ),
    )
    .unwrap();
    let st = SchedState::new(&SchedChoice::new("custom", Some(c)), 0);
    assert!(st.consistent());
    let d = dests(&[(1, 0, 0)]);
    let _ = st.schedule(&d, &mut conn(1, 1), 0);
    assert!(!st.runs_plugin());
    assert!(!st.consistent(), "its fallback, wlc, is not");
}
