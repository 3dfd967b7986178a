//! A real server ("destination" in IPVS): address, weight, flags, connection counters and
//! the next hop frames to it go to.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::model::{Forward, NextHop, TunCsum, TunKind, Tunnel};

use wvs_sdk::dest_flags::{AVAILABLE, OVERLOAD};

/// A forwarding method as one word, so that the fast path reads it with one load: the
/// method in bits 0-7, the tunnel type in 8-15, its checksum option in 16-23, its port in
/// 24-39.
fn pack_forward(f: Forward) -> u64 {
    match f {
        Forward::Masq => 0,
        Forward::Route => 1,
        Forward::Tunnel(t) => {
            let kind = match t.kind {
                TunKind::Ipip => 0u64,
                TunKind::Gue => 1,
                TunKind::Gre => 2,
            };
            let csum = match t.csum {
                TunCsum::None => 0u64,
                TunCsum::Csum => 1,
                TunCsum::Remcsum => 2,
            };
            2 | kind << 8 | csum << 16 | u64::from(t.port) << 24
        }
        Forward::FullNat => 3,
        Forward::Local => 4,
        Forward::Bypass => 5,
    }
}

fn unpack_forward(v: u64) -> Forward {
    match v & 0xff {
        1 => Forward::Route,
        2 => Forward::Tunnel(Tunnel {
            kind: match (v >> 8) & 0xff {
                1 => TunKind::Gue,
                2 => TunKind::Gre,
                _ => TunKind::Ipip,
            },
            csum: match (v >> 16) & 0xff {
                1 => TunCsum::Csum,
                2 => TunCsum::Remcsum,
                _ => TunCsum::None,
            },
            port: (v >> 24) as u16,
        }),
        3 => Forward::FullNat,
        4 => Forward::Local,
        5 => Forward::Bypass,
        _ => Forward::Masq,
    }
}

/// A real server. Shared by every snapshot that has it and by its connections, so its
/// counters survive configuration edits and outlive its removal (IPVS's "trash" list).
#[derive(Debug)]
pub struct Dest {
    /// Address.
    pub addr: IpAddr,
    /// Port (0 means the virtual port).
    pub port: u16,
    weight: AtomicU32,
    last_weight: AtomicU32,
    flags: AtomicU32,
    u_threshold: AtomicU32,
    l_threshold: AtomicU32,
    hint: AtomicU32,
    /// TCP connections in the handshake or ESTABLISHED (`activeconns`).
    pub activeconns: AtomicI32,
    /// TCP connections closing or closed, and every UDP flow (`inactconns`).
    pub inactconns: AtomicI32,
    /// Persistence templates pointing at this server (`persistconns`).
    pub persistconns: AtomicI32,
    /// Connections ever scheduled to this server.
    pub conns: AtomicU64,
    next_hop: AtomicU64,
    /// The forwarding method, packed ([`pack_forward`]); new connections copy it.
    fwd: AtomicU64,
    /// Whether the server's address is one of the balancer's own (the route to it is a
    /// local one): its connections go to the balancer's stack whatever the method.
    local: AtomicBool,
    /// wvs's source address towards the server (the route's preferred source): a tunnel's
    /// outer source. An IPv4 server's, or the IPv6 one's (read without a lock; written
    /// when the route changes).
    src: AtomicU32,
    src6: arc_swap::ArcSwapOption<std::net::Ipv6Addr>,
    /// The route's MTU towards the server (0 until known).
    mtu: AtomicU32,
    /// Set by the fast path when it has no next hop, so the resolver looks sooner.
    pub resolve_wanted: AtomicBool,
    /// The mark of its service when that is a fwmark service (0: an address service's):
    /// its connections' `cp->fwmark`, which the sync daemon's records carry.
    fwmark: AtomicU32,
    /// What its health check says: [`HEALTH_DOWN`], [`HEALTH_INHIBIT`].
    health: AtomicU8,
    /// A weight its health check set (keepalived's `misc_dynamic`) in place of the
    /// configured one; [`NO_DYNAMIC`]: none.
    dynamic: AtomicU32,
    /// A sorry server (keepalived's `sorry_server`): scheduled only when no other can be.
    sorry: AtomicBool,
    /// Removed with a grace period until then (ms since the Unix epoch; 0: not drained):
    /// its connections go on, nothing new goes to it.
    drain_until: AtomicU64,
    /// What checks it: the daemon's, opaque here (control side only; the workers read
    /// only `health`).
    checker: parking_lot::Mutex<Option<Arc<dyn std::any::Any + Send + Sync>>>,
    /// Traffic counters and rates.
    pub stats: crate::stats::Stats,
}

/// The health check failed.
const HEALTH_DOWN: u8 = 1;
/// A failure sets weight 0 instead of taking the server out of scheduling.
const HEALTH_INHIBIT: u8 = 2;
/// No weight from the health check.
const NO_DYNAMIC: u32 = u32::MAX;

impl Dest {
    /// A new, available real server with weight 1 and no next hop yet.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Self {
            addr,
            port,
            weight: AtomicU32::new(1),
            last_weight: AtomicU32::new(1),
            flags: AtomicU32::new(AVAILABLE),
            u_threshold: AtomicU32::new(0),
            l_threshold: AtomicU32::new(0),
            hint: AtomicU32::new(0),
            activeconns: AtomicI32::new(0),
            inactconns: AtomicI32::new(0),
            persistconns: AtomicI32::new(0),
            conns: AtomicU64::new(0),
            next_hop: AtomicU64::new(0),
            fwd: AtomicU64::new(pack_forward(Forward::Masq)),
            local: AtomicBool::new(false),
            src: AtomicU32::new(0),
            src6: arc_swap::ArcSwapOption::empty(),
            mtu: AtomicU32::new(0),
            resolve_wanted: AtomicBool::new(true),
            fwmark: AtomicU32::new(0),
            health: AtomicU8::new(0),
            dynamic: AtomicU32::new(NO_DYNAMIC),
            sorry: AtomicBool::new(false),
            drain_until: AtomicU64::new(0),
            checker: parking_lot::Mutex::new(None),
            stats: crate::stats::Stats::default(),
        }
    }

    /// The mark of its fwmark service (0: an address service's).
    pub fn fwmark(&self) -> u32 {
        self.fwmark.load(Relaxed)
    }

    /// Say which fwmark service it is of (a server belongs to one service).
    pub fn set_fwmark(&self, mark: u32) {
        self.fwmark.store(mark, Relaxed);
    }

    /// Return the weight: 0 while a health check with `inhibit_on_failure` finds the
    /// server down (keepalived sets it so), else the one its health check set, else the
    /// configured one.
    #[inline]
    pub fn weight(&self) -> u32 {
        if self.health.load(Relaxed) == HEALTH_DOWN | HEALTH_INHIBIT {
            return 0;
        }
        match self.dynamic.load(Relaxed) {
            NO_DYNAMIC => self.weight.load(Relaxed),
            w => w,
        }
    }

    /// Set the weight a health check found (keepalived's `misc_dynamic`: a program's exit
    /// code), or go back to the configured one (`None`). Schedulers see it at their next
    /// connection, as an edited weight.
    pub fn set_dynamic_weight(&self, w: Option<u32>) {
        self.dynamic
            .store(w.map_or(NO_DYNAMIC, |w| w.min(NO_DYNAMIC - 1)), Relaxed);
    }

    /// The weight a health check set, if one did.
    pub fn dynamic_weight(&self) -> Option<u32> {
        Some(self.dynamic.load(Relaxed)).filter(|&w| w != NO_DYNAMIC)
    }

    /// Return the weight as configured, whatever the health check says.
    pub fn configured_weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Record what the health check says: down or not, and whether down means weight 0
    /// (`inhibit`) or out of scheduling.
    pub fn set_health(&self, down: bool, inhibit: bool) {
        let v = if down { HEALTH_DOWN } else { 0 } | if inhibit { HEALTH_INHIBIT } else { 0 };
        self.health.store(v, Relaxed);
    }

    /// Whether its health check finds it down.
    #[inline]
    pub fn is_down(&self) -> bool {
        self.health.load(Relaxed) & HEALTH_DOWN != 0
    }

    /// Whether schedulers see it: not when a health check took it out (keepalived's
    /// DELDEST). An inhibited server stays, with weight 0.
    #[inline]
    pub fn in_scheduling(&self) -> bool {
        self.health.load(Relaxed) != HEALTH_DOWN
    }

    /// Make it a sorry server, or an ordinary one.
    pub(crate) fn set_sorry(&self, sorry: bool) {
        self.sorry.store(sorry, Relaxed);
    }

    /// Whether it is a sorry server.
    #[inline]
    pub fn is_sorry(&self) -> bool {
        self.sorry.load(Relaxed)
    }

    /// Whether the service's sorry servers are in use: none of its other servers can take
    /// a connection (keepalived adds the sorry server when its quorum of weight is lost).
    pub fn sorry_in_use(dests: &[Arc<Dest>]) -> bool {
        !dests
            .iter()
            .any(|d| !d.is_sorry() && d.in_scheduling() && d.weight() > 0)
    }

    /// Mark it removed with a grace period (`wvs adm -d --drain`): its connections go on
    /// until they end or the period is over; no template places a new one on it.
    pub fn set_draining(&self, until_ms: u64) {
        self.drain_until.store(until_ms, Relaxed);
    }

    /// Whether it is being drained.
    #[inline]
    pub fn draining(&self) -> bool {
        self.drain_until.load(Relaxed) != 0
    }

    /// When its grace period ends, ms since the Unix epoch (0: not drained).
    pub fn drain_until_ms(&self) -> u64 {
        self.drain_until.load(Relaxed)
    }

    /// Connections bound to it now (active and inactive).
    pub fn conns_now(&self) -> u32 {
        self.total_conns()
    }

    /// Attach what checks it (`None`: not checked).
    pub fn set_checker(&self, checker: Option<Arc<dyn std::any::Any + Send + Sync>>) {
        *self.checker.lock() = checker;
    }

    /// What checks it, as attached by [`Self::set_checker`].
    pub fn checker(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.checker.lock().clone()
    }

    /// Set the weight (0 quiesces: no new connections, existing ones continue). The last
    /// weight above 0 is kept (`last_weight`): Maglev keeps a quiesced server's entries.
    pub(crate) fn set_weight(&self, w: u32) {
        self.weight.store(w, Relaxed);
        if w > 0 {
            self.last_weight.store(w, Relaxed);
        }
    }

    /// Set the weight of a server being added: its last weight is that weight, even 0
    /// (IPVS's Maglev ignores a server added with weight 0).
    pub(crate) fn set_initial_weight(&self, w: u32) {
        self.weight.store(w, Relaxed);
        self.last_weight.store(w, Relaxed);
    }

    /// Set the hint custom schedulers may read.
    pub(crate) fn set_hint(&self, hint: u32) {
        self.hint.store(hint, Relaxed);
    }

    /// Set the upper and lower connection thresholds (0 = none). As `__ip_vs_update_dest`
    /// does, removing the upper threshold or raising it lifts OVERLOAD at once; otherwise the
    /// flag waits for a connection to leave.
    pub(crate) fn set_thresholds(&self, upper: u32, lower: u32) {
        if upper == 0 || upper > self.u_threshold.load(Relaxed) {
            self.flags.fetch_and(!OVERLOAD, Relaxed);
        }
        self.u_threshold.store(upper, Relaxed);
        self.l_threshold.store(lower, Relaxed);
    }

    /// Return the `IP_VS_DEST_F_*` flags.
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags.load(Relaxed)
    }

    /// Whether the server is still configured (`IP_VS_DEST_F_AVAILABLE`).
    #[inline]
    pub fn available(&self) -> bool {
        self.flags() & AVAILABLE != 0
    }

    /// Mark the server configured or gone.
    pub(crate) fn set_available(&self, yes: bool) {
        if yes {
            self.flags.fetch_or(AVAILABLE, Relaxed);
        } else {
            self.flags.fetch_and(!AVAILABLE, Relaxed);
        }
    }

    /// Whether a scheduler may give it a new connection: weight above 0, not overloaded.
    #[cfg(test)]
    pub(crate) fn schedulable(&self) -> bool {
        self.weight() > 0 && self.flags() & OVERLOAD == 0
    }

    /// Return the next hop, if known.
    #[inline]
    pub fn next_hop(&self) -> Option<NextHop> {
        NextHop::unpack(self.next_hop.load(Relaxed))
    }

    /// Set or clear the next hop.
    pub fn set_next_hop(&self, hop: Option<NextHop>) {
        self.next_hop.store(hop.map_or(0, NextHop::pack), Relaxed);
    }

    /// The forwarding method new connections to it use: `Local` for an address of the
    /// balancer's own, as IPVS sets `IP_VS_CONN_F_LOCALNODE` for one, else the configured one.
    #[inline]
    pub fn forward(&self) -> Forward {
        if self.local.load(Relaxed) {
            return Forward::Local;
        }
        unpack_forward(self.fwd.load(Relaxed))
    }

    /// The forwarding method as configured.
    pub fn configured_forward(&self) -> Forward {
        unpack_forward(self.fwd.load(Relaxed))
    }

    /// Mark the server's address as the balancer's own (or not), as the resolver finds.
    pub fn set_local(&self, yes: bool) {
        self.local.store(yes, Relaxed);
    }

    /// Set the forwarding method (connections keep the one they started with, as IPVS
    /// binds a connection's transmitter once).
    pub(crate) fn set_forward(&self, f: Forward) {
        self.fwd.store(pack_forward(f), Relaxed);
    }

    /// wvs's source address towards the server, of its family (unspecified until the
    /// route is known).
    #[inline]
    pub fn source(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => Ipv4Addr::from(self.src.load(Relaxed)).into(),
            IpAddr::V6(_) => self
                .src6
                .load()
                .as_deref()
                .map_or(std::net::Ipv6Addr::UNSPECIFIED, |a| *a)
                .into(),
        }
    }

    /// Set wvs's source address towards the server.
    pub fn set_source(&self, a: IpAddr) {
        match a {
            IpAddr::V4(a) => self.src.store(u32::from(a), Relaxed),
            IpAddr::V6(a) => {
                if self.src6.load().as_deref() != Some(&a) {
                    self.src6.store(Some(std::sync::Arc::new(a)));
                }
            }
        }
    }

    /// The path MTU towards the server: the route's (0 until known).
    #[inline]
    pub fn mtu(&self) -> u32 {
        self.mtu.load(Relaxed)
    }

    /// Set the path MTU towards the server.
    pub fn set_mtu(&self, m: u32) {
        self.mtu.store(m, Relaxed);
    }

    /// Count a new connection bound to this server (`ip_vs_bind_dest`): it starts inactive
    /// (`__ip_vs_update_dest` gives every server's connections `IP_VS_CONN_F_INACTIVE`; a
    /// TCP one becomes active with its handshake, a UDP one stays inactive, as the kernel's
    /// IPVS lists them in the oracle), and crossing the upper threshold marks the server
    /// overloaded.
    pub fn bind(&self) {
        self.inactconns.fetch_add(1, Relaxed);
        self.conns.fetch_add(1, Relaxed);
        let u = self.u_threshold.load(Relaxed);
        if u != 0 && self.total_conns() >= u {
            self.flags.fetch_or(OVERLOAD, Relaxed);
        }
    }

    /// Count a connection leaving (`ip_vs_unbind_dest`) and clear the overload flag as IPVS
    /// does: below the lower threshold, or below 3/4 of the upper one when there is no lower.
    pub(crate) fn unbind(&self, inactive: bool) {
        if inactive {
            self.inactconns.fetch_sub(1, Relaxed);
        } else {
            self.activeconns.fetch_sub(1, Relaxed);
        }
        if self.flags() & OVERLOAD != 0 {
            let (u, l) = (
                self.u_threshold.load(Relaxed),
                self.l_threshold.load(Relaxed),
            );
            let total = self.total_conns();
            let clear = if l != 0 {
                total < l
            } else if u != 0 {
                u64::from(total) * 4 < u64::from(u) * 3
            } else {
                true
            };
            if clear {
                self.flags.fetch_and(!OVERLOAD, Relaxed);
            }
        }
    }

    /// Move one connection between the active and inactive counts.
    pub(crate) fn set_inactive(&self, inactive: bool) {
        if inactive {
            self.activeconns.fetch_sub(1, Relaxed);
            self.inactconns.fetch_add(1, Relaxed);
        } else {
            self.inactconns.fetch_sub(1, Relaxed);
            self.activeconns.fetch_add(1, Relaxed);
        }
    }

    /// The server as a scheduler sees it.
    pub fn info(&self) -> wvs_sdk::DestInfo {
        let addr = match self.addr {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let weight = self.weight() as i32;
        wvs_sdk::DestInfo {
            addr,
            port: self.port,
            weight,
            last_weight: self.last_weight.load(Relaxed) as i32,
            flags: self.flags(),
            activeconns: self.activeconns.load(Relaxed).max(0) as u32,
            inactconns: self.inactconns.load(Relaxed).max(0) as u32,
            persistconns: self.persistconns.load(Relaxed).max(0) as u32,
            hint: self.hint.load(Relaxed),
            ..Default::default()
        }
    }

    fn total_conns(&self) -> u32 {
        let t = self.activeconns.load(Relaxed) + self.inactconns.load(Relaxed);
        t.max(0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_packs() {
        let all = [
            Forward::Masq,
            Forward::Route,
            Forward::Tunnel(Tunnel::default()),
            Forward::Tunnel(Tunnel {
                kind: TunKind::Gue,
                port: 65535,
                csum: TunCsum::Remcsum,
            }),
            Forward::Tunnel(Tunnel {
                kind: TunKind::Gre,
                port: 0,
                csum: TunCsum::Csum,
            }),
            Forward::FullNat,
            Forward::Local,
            Forward::Bypass,
        ];
        for f in all {
            assert_eq!(unpack_forward(pack_forward(f)), f);
        }
    }

    #[test]
    fn next_hop_packs() {
        let d = Dest::new("198.19.0.11".parse().unwrap(), 80);
        assert_eq!(d.next_hop(), None);
        let h = NextHop {
            iface: 3,
            mac: [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee],
        };
        d.set_next_hop(Some(h));
        assert_eq!(d.next_hop(), Some(h));
        d.set_next_hop(None);
        assert_eq!(d.next_hop(), None);
    }

    #[test]
    fn thresholds_as_ipvs() {
        let d = Dest::new("198.19.0.11".parse().unwrap(), 80);
        d.set_thresholds(4, 0);
        for _ in 0..4 {
            d.bind();
        }
        assert!(!d.schedulable(), "4 >= u_threshold 4 sets OVERLOAD");
        d.unbind(false);
        assert!(!d.schedulable(), "3*4 < 4*3 is false: still overloaded");
        d.unbind(false);
        assert!(d.schedulable(), "2*4 < 12 clears OVERLOAD");
    }

    #[test]
    fn threshold_edits_clear_overload_as_update_dest() {
        let d = Dest::new("198.19.0.11".parse().unwrap(), 80);
        d.set_thresholds(2, 0);
        d.bind();
        d.bind();
        assert!(!d.schedulable());
        // The same or a lower upper threshold keeps OVERLOAD.
        d.set_thresholds(2, 1);
        assert!(!d.schedulable());
        d.set_thresholds(1, 0);
        assert!(!d.schedulable());
        // Raised: cleared at once (the next bind may set it again).
        d.set_thresholds(5, 0);
        assert!(
            d.schedulable(),
            "raising the upper threshold clears OVERLOAD"
        );
        d.set_thresholds(2, 0);
        d.bind();
        assert!(!d.schedulable());
        d.set_thresholds(0, 0);
        assert!(
            d.schedulable(),
            "removing the upper threshold clears OVERLOAD"
        );
    }

    #[test]
    fn info_carries_persistconns() {
        let d = Dest::new("198.19.0.11".parse().unwrap(), 80);
        d.persistconns.store(3, Relaxed);
        assert_eq!(d.info().persistconns, 3);
    }
}
