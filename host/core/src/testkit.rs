//! What the datapath's tests, the fuzz harness and the benchmarks build a datapath from, so
//! that they describe the same topology once: the MAC addresses, the services (as specs, no
//! file format), the built-in helpers compiled as the daemon runs them, and a harness whose
//! real servers are all reachable.
//!
//! Compiled for the core's own tests, and for others with the `testkit` feature.
//!
//! The topology: clients behind interface 0 (wvs's MAC [`CLIENT_IF_MAC`], the client's
//! [`CLIENT_MAC`]), real servers on 198.19.0.0/24 behind interface 1 ([`SERVER_IF_MAC`];
//! a server's MAC is [`rs_mac`] of its last octet), wvs's address towards them 198.19.0.1,
//! and the virtual IP [`VIP`]. The same in IPv6: clients on 2001:db8:18::/64 ([`CLIENT6`]),
//! real servers on 2001:db8:19::/64, the virtual IP [`VIP6`].

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use crate::conn::ConnTable;
use crate::datapath::{Datapath, DatapathStats, Iface, RxMeta};
use crate::model::{Forward, Protocol, Scheduler, TunCsum, TunKind, Tunnel};
use crate::plugin::{Plugin, Runtime};
use crate::service::{NextHop, SchedChoice, Snapshot};
use crate::spec::{Real, Service, Timeouts};
use crate::wire::checksum::CsumMode;

/// wvs's MAC on the clients' side (interface 0).
pub const CLIENT_IF_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// wvs's MAC on the real servers' side (interface 1).
pub const SERVER_IF_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The client's MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
/// The client's address.
pub const CLIENT: [u8; 4] = [198, 18, 0, 2];
/// The virtual IP of every service.
pub const VIP: [u8; 4] = [198, 18, 100, 1];
/// wvs's own address towards the real servers.
pub const SOURCE: [u8; 4] = [198, 19, 0, 1];
/// wvs's own IPv6 address towards the real servers.
pub const SOURCE6: [u8; 16] = v6([0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 1]);
/// The client's IPv6 address.
pub const CLIENT6: [u8; 16] = v6([0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2]);
/// The IPv6 virtual IP.
pub const VIP6: [u8; 16] = v6([0x2001, 0xdb8, 0x18, 0x100, 0, 0, 0, 1]);

/// An IPv6 address's octets from its eight groups.
pub const fn v6(g: [u16; 8]) -> [u8; 16] {
    let mut o = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        o[2 * i] = (g[i] >> 8) as u8;
        o[2 * i + 1] = g[i] as u8;
        i += 1;
    }
    o
}

/// The real server 2001:db8:19::`last` (its MAC is [`rs_mac`] of `last`).
pub fn rs6(last: u8) -> [u8; 16] {
    v6([0x2001, 0xdb8, 0x19, 0, 0, 0, 0, u16::from(last)])
}

/// A frame from a client, checksums complete.
pub const FROM_CLIENT: RxMeta = RxMeta {
    iface: 0,
    csum: CsumMode::Complete,
    gso_size: 0,
};

/// A frame from a real server, checksums complete.
pub const FROM_RS: RxMeta = RxMeta {
    iface: 1,
    csum: CsumMode::Complete,
    gso_size: 0,
};

/// The MAC of the real server whose address ends in `last`.
pub fn rs_mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, last]
}

/// A NAT real server at `ip` (the virtual port) or `ip:port`.
pub fn real(at: &str) -> Real {
    match at.parse::<std::net::SocketAddr>() {
        Ok(sa) => Real::new(sa.ip(), sa.port()),
        Err(_) => match at.parse() {
            Ok(ip) => Real::new(ip, 0),
            Err(_) => panic!("{at:?} is no address"),
        },
    }
}

/// A real server at `at` reached by `fwd`.
pub fn real_by(at: &str, fwd: Forward) -> Real {
    Real { fwd, ..real(at) }
}

/// An IPIP tunnel, the default one.
pub const IPIP: Forward = Forward::Tunnel(Tunnel {
    kind: TunKind::Ipip,
    port: 0,
    csum: TunCsum::None,
});

/// A tunnel of `kind` (`port`: GUE's) with `csum`.
pub fn tunnel(kind: TunKind, port: u16, csum: TunCsum) -> Forward {
    Forward::Tunnel(Tunnel { kind, port, csum })
}

/// A service on the VIP's `port` run by `scheduler`, with `reals` (in configuration order).
pub fn service(proto: Protocol, port: u16, scheduler: &str, reals: Vec<Real>) -> Service {
    Service {
        reals,
        ..Service::new(proto, Ipv4Addr::from(VIP).into(), port, scheduler)
    }
}

/// A service on the IPv6 VIP's `port` run by `scheduler`, with `reals`.
pub fn service6(proto: Protocol, port: u16, scheduler: &str, reals: Vec<Real>) -> Service {
    Service {
        reals,
        ..Service::new(
            proto,
            std::net::Ipv6Addr::from(VIP6).into(),
            port,
            scheduler,
        )
    }
}

/// A round-robin service on the VIP's `port` with `reals`.
pub fn rr(proto: Protocol, port: u16, reals: Vec<Real>) -> Service {
    service(proto, port, "rr", reals)
}

/// The built-in schedulers run natively (an unknown name: wlc).
pub fn native(name: &str) -> SchedChoice {
    SchedChoice::native(Scheduler::from_name(name).unwrap_or(Scheduler::Wlc))
}

/// The deadline of a plugin call in the tests that are not about deadlines.
pub const TEST_CALL_DEADLINE_US: u64 = 100_000;

/// The built-in helpers and persistence engines, compiled once per process as the daemon runs them (wasm, in a
/// runtime of their own).
pub fn builtin_helpers() -> &'static (Arc<Runtime>, Vec<Plugin>) {
    static H: OnceLock<(Arc<Runtime>, Vec<Plugin>)> = OnceLock::new();
    H.get_or_init(|| {
        let Ok(rt) = Runtime::new(None) else {
            panic!("the plugin runtime cannot start");
        };
        // What is tested here is what the helpers do, not their deadline: a debug build on
        // a loaded shared machine took a short call for a runaway one (its thread's CPU
        // clock counts stolen time), and the helper stopped for the rest of the test.
        rt.set_call_deadline_us(TEST_CALL_DEADLINE_US);
        let hs = crate::plugin::builtin::BUILTIN
            .iter()
            .filter(|(n, _)| {
                crate::consts::BUILTIN_HELPERS.contains(n) || crate::consts::BUILTIN_PES.contains(n)
            })
            .map(|(n, w)| match rt.compile(n, w) {
                Ok(p) => p,
                Err(e) => panic!("the built-in helper {n}: {e}"),
            })
            .collect();
        (rt, hs)
    })
}

/// The snapshot of `services`: schedulers native, helpers the built-in ones.
pub fn snapshot(services: &[Service]) -> Snapshot {
    let (_, helpers) = builtin_helpers();
    Snapshot::build_with_helpers(
        services,
        &Timeouts::default(),
        &Snapshot::default(),
        &native,
        &|n| helpers.iter().find(|p| p.name == n).cloned(),
    )
}

/// A datapath, its services and its table.
#[derive(Debug)]
pub struct Harness {
    /// The datapath.
    pub dp: Datapath,
    /// Its services.
    pub snap: Snapshot,
    /// Its table.
    pub conns: Arc<ConnTable>,
}

impl Harness {
    /// A datapath (traffic counter slot `worker`) over `snap`, with a table of `max_conns`
    /// and every real server reachable on interface 1 ([`rs_mac`] of its address, wvs's
    /// [`SOURCE`] address on the way).
    pub fn new(snap: Snapshot, max_conns: usize, worker: usize) -> Self {
        for d in snap.dests() {
            let last = match d.addr {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(a) => a.octets()[15],
            };
            d.set_next_hop(Some(NextHop {
                iface: 1,
                mac: rs_mac(last),
            }));
            d.set_source(match d.addr {
                IpAddr::V4(_) => Ipv4Addr::from(SOURCE).into(),
                IpAddr::V6(_) => std::net::Ipv6Addr::from(SOURCE6).into(),
            });
        }
        let conns = Arc::new(ConnTable::new(max_conns));
        let ifaces: Arc<[Iface]> =
            vec![Iface::new(CLIENT_IF_MAC), Iface::new(SERVER_IF_MAC)].into();
        let dp = Datapath::new(
            conns.clone(),
            ifaces,
            Arc::new(DatapathStats::default()),
            worker,
        );
        Self { dp, snap, conns }
    }
}
