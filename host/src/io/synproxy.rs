//! The synproxy's first point in wvs's BPF programs (`host/bpf/wvs_synproxy.h`, included by
//! the tc program of `--offload tc` and the XDP program of `--io xdp`): a SYN to a service
//! answering with cookies is answered where it arrives, with the SYN-ACK the datapath would
//! write. [`SpMaps`] is what wvs tells a program (the cookies' key and clock, once; which
//! services answer with cookies now, as their mode or the defense's changes) and what it
//! reads back (how many SYN-ACKs the program sent).

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::Instant;

use aya::Ebpf;
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};

use crate::conn::defense::Defense;
use crate::service::Snapshot;

/// The maps' names (in `wvs_synproxy.h`).
const MAP_SERVICES: &str = "wvs_synproxy";
const MAP_CONF: &str = "wvs_synproxy_conf";
const MAP_STATS: &str = "wvs_synproxy_stats";

/// A key of `wvs_synproxy` (`struct sp_key`): a service the program answers SYNs for, its
/// address as on the wire (IPv4 mapped) and port in network order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpKey {
    addr: [u8; 16],
    port: [u8; 2],
    pad: [u8; 2],
}

// SAFETY: plain data of 20 bytes (its padding spelled out), valid for every bit pattern.
unsafe impl aya::Pod for SpKey {}

impl SpKey {
    fn of(addr: IpAddr, port: u16) -> Self {
        Self {
            addr: match addr {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            },
            port: port.to_be_bytes(),
            pad: [0; 2],
        }
    }
}

/// The value of `wvs_synproxy_conf` (`struct sp_conf`): the cookies' key and clock.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SpConf {
    k0: u64,
    k1: u64,
    /// CLOCK_MONOTONIC (ns) at the datapath's epoch.
    epoch_ns: u64,
}

// SAFETY: plain data of 24 bytes, no padding, valid for every bit pattern.
unsafe impl aya::Pod for SpConf {}

/// A map missing from the program or refused by the kernel.
#[derive(Debug, thiserror::Error)]
#[error("the synproxy's map {map}: {reason}")]
pub struct SpMapsError {
    map: &'static str,
    reason: String,
}

/// A program's synproxy maps, on handles of wvs's own (see the module's doc).
pub struct SpMaps {
    conf: Array<MapData, SpConf>,
    services: BpfHashMap<MapData, SpKey, u32>,
    stats: PerCpuArray<MapData, u64>,
    /// The services in `services`, as last written.
    now: HashSet<SpKey>,
}

impl std::fmt::Debug for SpMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpMaps")
            .field("now", &self.now.len())
            .finish_non_exhaustive()
    }
}

impl SpMaps {
    /// Handles on the synproxy maps of the loaded `ebpf`, which keeps its own.
    pub fn open(ebpf: &Ebpf) -> Result<Self, SpMapsError> {
        let err = |map: &'static str| {
            move |e: aya::maps::MapError| SpMapsError {
                map,
                reason: e.to_string(),
            }
        };
        Ok(Self {
            conf: Array::try_from(Map::Array(own(ebpf, MAP_CONF)?)).map_err(err(MAP_CONF))?,
            services: BpfHashMap::try_from(Map::HashMap(own(ebpf, MAP_SERVICES)?))
                .map_err(err(MAP_SERVICES))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(own(ebpf, MAP_STATS)?))
                .map_err(err(MAP_STATS))?,
            now: HashSet::new(),
        })
    }

    /// Give the program the cookies' key (`defense`'s) and the datapath's clock, which
    /// started at `epoch`: from here on it answers the services [`SpMaps::sync`] names.
    pub fn start(&mut self, defense: &Defense, epoch: Instant) -> Result<(), SpMapsError> {
        let (k0, k1) = defense.secret().keys();
        let epoch_ns = monotonic_ns().saturating_sub(epoch.elapsed().as_nanos() as u64);
        self.conf
            .set(0, SpConf { k0, k1, epoch_ns }, 0)
            .map_err(|e| SpMapsError {
                map: MAP_CONF,
                reason: e.to_string(),
            })
    }

    /// Tell the program which services of `snap` answer SYNs with cookies now (their own
    /// mode, or `defense`'s, which flips at most once a second).
    pub fn sync(&mut self, snap: &Snapshot, defense: &Defense) {
        let want: HashSet<SpKey> = snap
            .services()
            .filter(|s| defense.synproxy_for(s))
            .map(|s| SpKey::of(s.key.addr, s.key.port))
            .collect();
        for k in self.now.difference(&want) {
            let _ = self.services.remove(k);
        }
        for k in want.difference(&self.now) {
            if let Err(e) = self.services.insert(k, 1, 0) {
                tracing::warn!("the synproxy's service map: {e}");
            }
        }
        self.now = want;
    }

    /// The SYN-ACKs the program has sent since it was loaded.
    pub fn sent(&self) -> Option<u64> {
        self.stats.get(&0, 0).ok().map(|v| v.iter().sum())
    }
}

/// A handle of its own on map `name` of `ebpf` (a hash map or an array).
pub(crate) fn own(ebpf: &Ebpf, name: &'static str) -> Result<MapData, SpMapsError> {
    let err = |reason: String| SpMapsError { map: name, reason };
    let fd = match ebpf.map(name) {
        Some(Map::HashMap(m) | Map::Array(m) | Map::PerCpuArray(m)) => m.fd().as_fd(),
        _ => return Err(err("missing".into())),
    };
    let fd = fd.try_clone_to_owned().map_err(|e| err(e.to_string()))?;
    MapData::from_fd(fd).map_err(|e| err(e.to_string()))
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The SYNs every program's first point is tested on, with the datapath's answers: both
/// programs must write these byte for byte (the same cookie from the same key and clock,
/// the same options, checksums included).
#[cfg(test)]
pub(crate) mod cases {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    use arc_swap::ArcSwap;
    use etherparse::PacketBuilder;

    use crate::datapath::Verdict;
    use crate::model::{Forward, Protocol};
    use crate::service::Snapshot;
    use wvs_core::synproxy::write_options;
    use wvs_core::testkit::{
        CLIENT, CLIENT_IF_MAC, CLIENT_MAC, CLIENT6, FROM_CLIENT, Harness, VIP, VIP6, real_by, rr,
        rs6, service6,
    };

    /// One family's cases.
    pub(crate) struct Cases {
        /// The datapath (its connection table holds the defense, and so the key).
        pub h: Harness,
        /// A snapshot with the synproxied service (`synproxy = "on"`, TCP port 80).
        pub snap: Arc<ArcSwap<Snapshot>>,
        /// SYNs to the service, each with the datapath's SYN-ACK.
        pub answered: Vec<(Vec<u8>, Vec<u8>)>,
        /// SYNs the first point leaves to wvs: another port's, and one with data.
        pub left: Vec<Vec<u8>>,
    }

    /// A SYN from the client to the VIP's `port`, with `opts` and `data`.
    fn syn(v6: bool, sport: u16, port: u16, isn: u32, opts: &[u8], data: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(CLIENT_MAC, CLIENT_IF_MAC);
        let b = if v6 {
            b.ipv6(
                Ipv6Addr::from(CLIENT6).octets(),
                Ipv6Addr::from(VIP6).octets(),
                64,
            )
        } else {
            b.ipv4(
                Ipv4Addr::from(CLIENT).octets(),
                Ipv4Addr::from(VIP).octets(),
                64,
            )
        };
        let b = b
            .tcp(sport, port, isn, 64240)
            .syn()
            .options_raw(opts)
            .expect("options");
        let mut f = Vec::new();
        b.write(&mut f, data).expect("a frame");
        f
    }

    /// The cases of one family: Linux's options, none, each alone, and lists of other
    /// shapes (an unknown option among NOPs, one cut short, one with a bad length: the
    /// reading stops there, as the datapath's).
    pub(crate) fn of(v6: bool) -> Cases {
        let mut svc = if v6 {
            let r = format!("[{}]:8080", Ipv6Addr::from(rs6(11)));
            service6(Protocol::Tcp, 80, "rr", vec![real_by(&r, Forward::Masq)])
        } else {
            rr(
                Protocol::Tcp,
                80,
                vec![real_by("198.19.0.11:8080", Forward::Masq)],
            )
        };
        svc.synproxy = Some(crate::spec::SynproxyMode::On);
        let h = Harness::new(
            wvs_core::testkit::snapshot(std::slice::from_ref(&svc)),
            1 << 12,
            0,
        );
        let snap = Arc::new(ArcSwap::from_pointee(wvs_core::testkit::snapshot(
            std::slice::from_ref(&svc),
        )));
        // (MSS, SACK, timestamps, window scale); MSS 0: no options at all.
        type Offered = (u16, bool, Option<(u32, u32)>, Option<u8>);
        let sets: [Offered; 6] = [
            (1460, true, Some((123_456, 0)), Some(9)),
            (0, false, None, None),
            (1400, true, None, None),
            (9000, false, None, Some(14)),
            (1440, false, Some((7, 0)), None),
            (536, true, None, Some(0)),
        ];
        let raw: [&[u8]; 3] = [
            &[1, 1, 1, 30, 6, 9, 9, 9, 9, 2, 4, 5, 0xb4, 3, 3, 2],
            &[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1],
            &[2, 9, 5, 0xb4, 4, 2, 1, 1],
        ];
        let mut answered = Vec::new();
        for i in 0..sets.len() + raw.len() {
            let mut opts = [0u8; 40];
            let n = match sets.get(i) {
                Some(&(0, ..)) => 0,
                Some(&(mss, sack, ts, ws)) => write_options(&mut opts, mss, sack, ts, ws),
                None => {
                    let r = raw[i - sets.len()];
                    opts[..r.len()].copy_from_slice(r);
                    r.len()
                }
            };
            let f = syn(
                v6,
                40000 + i as u16,
                80,
                1_000_000 * i as u32,
                &opts[..n],
                b"",
            );
            let mut out = f.clone();
            out.resize(f.len() + 128, 0);
            let headers = crate::datapath::Headers::parse(&f);
            let v = h.dp.process_in_buffer(
                &h.snap,
                5,
                FROM_CLIENT,
                &headers,
                &mut out,
                &mut wvs_core::xmit::gso::NoSink,
            );
            let Verdict::Send { iface: 0, len, .. } = v else {
                panic!("the datapath's answer: {v:?}");
            };
            out.truncate(len);
            answered.push((f, out));
        }
        let left = vec![
            syn(v6, 40100, 81, 1, &[], b""),
            syn(v6, 40101, 80, 1, &[], b"early data"),
        ];
        Cases {
            h,
            snap,
            answered,
            left,
        }
    }
}
