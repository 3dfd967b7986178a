//! Virtual services and their real servers, published to the workers as one immutable
//! [`Snapshot`] behind an `ArcSwap`.
//!
//! The control side builds a whole new snapshot and swaps it in with one store, so a packet
//! sees either the old or the new configuration, never half of one. What must outlive an edit
//! lives outside the snapshot in `Arc`s that the next snapshot takes over by identity: a real
//! server's connection counters and next hop ([`Dest`]) and a scheduler's cursor
//! ([`SchedState`]).

mod dest;
mod sched;

pub use crate::model::NextHop;
pub use dest::Dest;
pub use sched::{SchedChoice, SchedState};

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{Protocol, Scheduler, ServiceKey};
use crate::spec::{Real, Service, StateTimeouts, Timeouts};

/// (protocol, address) pairs whose data ports are claimed ([`Snapshot::data_claims`]).
pub(crate) type AddrClaims = Vec<(Protocol, IpAddr)>;

/// One virtual service in a snapshot.
#[derive(Debug)]
pub struct VirtualService {
    /// The service's key.
    pub key: ServiceKey,
    /// Its real servers, newest first: the order in which schedulers walk them. IPVS adds
    /// a real server at the head of its service's list (`list_add_rcu` in
    /// `__ip_vs_update_dest`), and the order decides ties and rotations, so wvs keeps the
    /// configuration's order reversed here (`spec.reals` stays in configuration order).
    pub dests: Vec<Arc<Dest>>,
    /// Which scheduler picks a real server for a new connection.
    pub scheduler: SchedChoice,
    /// Service flags (`IP_VS_SVC_F_*`: sh-port, sh-fallback, …).
    pub flags: u32,
    /// The scheduler's state, kept across snapshots.
    pub sched: Arc<SchedState>,
    /// Traffic counters and rates, kept across snapshots.
    pub stats: Arc<crate::stats::Stats>,
    /// The service as configured (its `reals` in configuration order, `dests` reversed),
    /// as the core reads it: without its health checks.
    pub spec: Service,
    /// The service as it was given, health checks included (a `spec::Service<C>` of the
    /// daemon's `C`; see [`Self::given`]). The core never reads it.
    given: Arc<dyn Any + Send + Sync>,
    /// Persistence timeout in milliseconds (0: not persistent).
    pub persist_ms: u64,
    /// Persistence netmask applied to client addresses (IPv4).
    pub netmask: u32,
    /// The connection timeouts (the snapshot's, here too so that the path of a client's
    /// packet reads them from the service it already holds).
    pub timeouts: StateTimeouts,
    /// The destination of `cache_bypass` connections: the VIP itself, routed by the stack.
    pub bypass: Arc<Dest>,
    /// The application helpers bound to its NAT and full-NAT connections, in order.
    pub helpers: Vec<Arc<crate::plugin::HelperPool>>,
    /// The persistence engine (`--pe`), if the service names one.
    pub pe: Option<Arc<crate::plugin::PePool>>,
    /// Real servers removed with a grace period (`wvs adm -d --drain`): not scheduled, but
    /// their replies are still wvs's and their connections go on.
    pub draining: Vec<Arc<Dest>>,
    /// Whether it can answer with SYN cookies: TCP, and every real server's replies come
    /// back through wvs (NAT, full NAT).
    pub synproxy_capable: bool,
}

impl VirtualService {
    /// Each real server with its configuration, in configuration order.
    pub fn reals(&self) -> impl Iterator<Item = (&Arc<Dest>, &Real)> {
        self.dests.iter().rev().zip(&self.spec.reals)
    }

    /// The service as it was given to [`Snapshot::build`], health checks included, if they
    /// were of type `C`.
    pub fn given<C: 'static>(&self) -> Option<&Service<C>> {
        self.given.downcast_ref()
    }

    /// Pick a real server for a new connection, or `None` when none can take one.
    pub fn schedule(&self, conn: &mut wvs_sdk::ConnInfo, now: u64) -> Option<&Arc<Dest>> {
        self.sched.schedule(&self.dests, conn, now)
    }
}

/// The configuration the workers see: every virtual service, and the indexes the fast path
/// needs to tell in one lookup whether a packet is wvs's.
#[derive(Debug, Default)]
pub struct Snapshot {
    services: HashMap<ServiceKey, Arc<VirtualService>, foldhash::fast::RandomState>,
    /// (protocol, address, port) of every real server: replies come from these.
    reals: HashSet<(Protocol, IpAddr, u16), foldhash::fast::RandomState>,
    /// (protocol, address) of NAT servers of port-0 services at port 0: replies come
    /// from any of their ports.
    all_port_reals: HashSet<(Protocol, IpAddr), foldhash::fast::RandomState>,
    /// Whether a service has port 0 (every port of its address).
    all_port: bool,
    /// The classifier's mark rules, in order (the last that matches wins).
    marks: Vec<crate::spec::MarkRule>,
    /// Those of one-packet services (`ipvsadm -o`): their replies have no connection.
    ops_reals: HashSet<(Protocol, IpAddr, u16), foldhash::fast::RandomState>,
    /// Every virtual IP address.
    vips: HashSet<IpAddr, foldhash::fast::RandomState>,
    /// Every real server address.
    real_addrs: HashSet<IpAddr, foldhash::fast::RandomState>,
    /// (protocol, virtual address) of services with a helper that expects connections:
    /// their data ports are wvs's too ([`Snapshot::is_data_vip`]).
    data_vips: HashSet<(Protocol, IpAddr), foldhash::fast::RandomState>,
    /// (protocol, real server address) of NAT servers of those services.
    data_reals: HashSet<(Protocol, IpAddr), foldhash::fast::RandomState>,
    /// The connection timeouts (`ipvsadm --set`).
    pub timeouts: StateTimeouts,
    /// IPVS's switches.
    pub sysctl: crate::spec::Sysctl,
    /// The defense strategies' settings (the expiry thread applies them).
    pub defense: crate::spec::DefenseSettings,
}

impl Snapshot {
    /// Build a snapshot from validated specs, taking over from `previous` the `Dest` and
    /// scheduler state of every real server and service that stays. `resolve` turns a
    /// scheduler name into what runs it; a service whose scheduler (module included) and
    /// flags are unchanged keeps its scheduler instance and state.
    pub fn build<C: Clone + Send + Sync + 'static>(
        specs: &[Service<C>],
        timeouts: &Timeouts,
        previous: &Snapshot,
        resolve: &dyn Fn(&str) -> SchedChoice,
    ) -> Self {
        Self::build_with_helpers(specs, timeouts, previous, resolve, &|_| None)
    }

    /// As [`build`](Self::build), with `helper` turning the name of a helper or a
    /// persistence engine into its plugin (a name it does not know, or a plugin of another
    /// kind, is left out; the configuration was checked before). A helper or engine
    /// plugin that stays keeps its instances.
    pub fn build_with_helpers<C: Clone + Send + Sync + 'static>(
        specs: &[Service<C>],
        timeouts: &Timeouts,
        previous: &Snapshot,
        resolve: &dyn Fn(&str) -> SchedChoice,
        helper: &dyn Fn(&str) -> Option<crate::plugin::Plugin>,
    ) -> Self {
        let mut snap = Snapshot {
            timeouts: StateTimeouts::new(timeouts),
            ..Snapshot::default()
        };
        for spec in specs {
            let key = spec.key();
            let old = previous.services.get(&key);
            let dests = spec
                .reals
                .iter()
                .rev()
                .map(|r| dest_for(old, r))
                .collect::<Vec<_>>();
            for d in &dests {
                d.set_fwmark(key.fwmark);
            }
            // Only NAT servers' packets come back through wvs: another method's server
            // talks to its clients directly, and what it sends wvs is none of IPVS's.
            for d in dests.iter().filter(|d| d.forward().sees_replies()) {
                snap.claim_replies(key, d, spec.persistent.is_some());
                if spec.ops && !key.is_fwmark() {
                    let port = if d.port == 0 { key.port } else { d.port };
                    snap.ops_reals.insert((key.proto, d.addr, port));
                }
            }
            // A fwmark service has no address of its own: what its rules match is its.
            if !key.is_fwmark() {
                snap.all_port |= key.port == 0;
                snap.vips.insert(key.addr);
            }
            let choice = resolve(&spec.scheduler);
            let sched = sched_for(old, &choice, spec.flags, &dests);
            let stats = old.map_or_else(Default::default, |o| o.stats.clone());
            // A port-0 TCP service's connections to port 21 get ftp, as IPVS binds its
            // helpers by the connection's port (tcp_app_conn_bind: cp->vport).
            let names = match spec.helpers {
                None if !key.is_fwmark() && spec.proto == Protocol::Tcp && spec.port == 0 => {
                    vec!["ftp".to_string()]
                }
                _ => spec.helper_names(),
            };
            let helpers: Vec<_> = names
                .iter()
                .filter_map(|n| helper(n))
                .filter(|p| matches!(p.kind, crate::plugin::PluginKind::Helper { .. }))
                .map(|p| helper_pool(previous, p))
                .collect();
            let pe = (spec.pe.as_deref())
                .and_then(helper)
                .filter(|p| p.kind == crate::plugin::PluginKind::Pe)
                .map(|p| pe_pool(previous, p));
            if !key.is_fwmark() && helpers.iter().any(|h| h.expects()) {
                snap.data_vips.insert((key.proto, key.addr));
                for d in dests.iter().filter(|d| d.forward().sees_replies()) {
                    snap.data_reals.insert((key.proto, d.addr));
                }
            }
            // The synproxy shifts the server's sequence numbers: every server's replies
            // must come back through wvs.
            let synproxy_capable = key.proto == crate::model::Protocol::Tcp
                && !key.is_fwmark()
                && !dests.is_empty()
                && dests.iter().all(|d| d.forward().sees_replies());
            snap.services.insert(
                key,
                Arc::new(VirtualService {
                    key,
                    synproxy_capable,
                    dests,
                    scheduler: choice,
                    flags: spec.flags,
                    sched,
                    stats,
                    spec: spec.map_checks(|_| Some(())),
                    given: Arc::new(spec.clone()),
                    persist_ms: spec.persistent.map_or(0, |t| u64::from(t) * 1000),
                    netmask: spec.netmask,
                    timeouts: snap.timeouts,
                    bypass: old.map_or_else(
                        || {
                            let d = Dest::new(key.addr, key.port);
                            d.set_forward(crate::model::Forward::Bypass);
                            d.set_fwmark(key.fwmark);
                            Arc::new(d)
                        },
                        |o| o.bypass.clone(),
                    ),
                    helpers,
                    pe,
                    draining: Vec::new(),
                }),
            );
        }
        snap
    }

    /// Keep real servers being drained in their services (those whose service is gone are
    /// not kept): their replies stay claimed, they stay available. Call on a snapshot just
    /// built, before it is published.
    pub fn add_draining(&mut self, drains: &[(ServiceKey, Arc<Dest>)]) {
        for (key, d) in drains {
            let Some(svc) = self.services.get_mut(key).and_then(Arc::get_mut) else {
                continue;
            };
            svc.draining.push(d.clone());
            let persistent = svc.persist_ms > 0;
            if d.forward().sees_replies() {
                self.claim_replies(*key, d, persistent);
            }
        }
    }

    /// Take the replies of `d`, a NAT server of service `key`: from its port, or (port 0
    /// of a port-0 service: the client's destination port) from any. A fwmark service's
    /// server answers in every protocol, from any port unless it has one and the service
    /// is not `persistent` (whose connections keep the client's port).
    fn claim_replies(&mut self, key: ServiceKey, d: &Dest, persistent: bool) {
        if key.is_fwmark() {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                if d.port == 0 || persistent {
                    self.all_port_reals.insert((proto, d.addr));
                } else {
                    self.reals.insert((proto, d.addr, d.port));
                }
            }
            self.real_addrs.insert(d.addr);
            return;
        }
        // Port 0: the virtual port, as the connections see it; a port-0 service's
        // connections keep the client's port whatever the server's.
        let port = if d.port == 0 || key.port == 0 {
            key.port
        } else {
            d.port
        };
        if port == 0 {
            self.all_port_reals.insert((key.proto, d.addr));
        } else {
            self.reals.insert((key.proto, d.addr, port));
        }
        self.real_addrs.insert(d.addr);
    }

    /// The service of exactly this key (what the API names).
    pub fn get(&self, key: &ServiceKey) -> Option<&Arc<VirtualService>> {
        self.services.get(key)
    }

    /// Find the virtual service a packet to `addr:port` belongs to: its own, else a
    /// port-0 service of the address (`ip_vs_service_find`'s last step).
    #[inline]
    pub fn service(
        &self,
        proto: Protocol,
        addr: IpAddr,
        port: u16,
    ) -> Option<&Arc<VirtualService>> {
        if self.services.is_empty() {
            return None;
        }
        let exact = self.services.get(&ServiceKey::new(proto, addr, port));
        if exact.is_some() || !self.all_port {
            return exact;
        }
        self.services.get(&ServiceKey::new(proto, addr, 0))
    }

    /// Set the classifier's mark rules (call on a snapshot just built, before it is
    /// published).
    pub fn set_marks(&mut self, rules: &[crate::spec::MarkRule]) {
        self.marks = rules.to_vec();
    }

    /// The mark rules.
    pub fn marks(&self) -> &[crate::spec::MarkRule] {
        &self.marks
    }

    /// The mark the classifier gives a packet `src -> dst` of `proto` (0: none).
    #[inline]
    pub fn mark_of(&self, proto: Protocol, src: (IpAddr, u16), dst: (IpAddr, u16)) -> u32 {
        self.marks
            .iter()
            .rev()
            .find(|r| r.matches(proto, src, dst))
            .map_or(0, |r| r.mark)
    }

    /// Find the virtual service of a client's packet `src -> dst` of `proto`, as
    /// `ip_vs_service_find`: the fwmark service of its mark and family first, then its
    /// address's ([`Self::service`]). A packet from a NAT server's port is a reply (IPVS
    /// sees those in `FORWARD`, where nothing is scheduled), whatever a rule's prefixes
    /// hold: no mark takes it.
    #[inline]
    pub fn service_for(
        &self,
        proto: Protocol,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> Option<&Arc<VirtualService>> {
        if !self.marks.is_empty()
            && !self.is_real(proto, src.0, src.1)
            && let Some(s) = self.fwmark_service_for(proto, src, dst)
        {
            return Some(s);
        }
        self.service(proto, dst.0, dst.1)
    }

    /// The fwmark service of a client's packet `src -> dst` of `proto`, if it has one.
    #[inline]
    pub fn fwmark_service_for(
        &self,
        proto: Protocol,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> Option<&Arc<VirtualService>> {
        if self.marks.is_empty() {
            return None;
        }
        match self.mark_of(proto, src, dst) {
            0 => None,
            mark => self.fwmark_service(mark, dst.0),
        }
    }

    /// The fwmark service of `mark` in the family of `addr`.
    pub fn fwmark_service(&self, mark: u32, addr: IpAddr) -> Option<&Arc<VirtualService>> {
        self.services.get(&ServiceKey::fwmark(mark, addr.is_ipv6()))
    }

    /// wvs's own address towards the real server `addr:port` (its route's source), if known.
    pub(crate) fn real_source(&self, proto: Protocol, addr: IpAddr, port: u16) -> Option<IpAddr> {
        self.services
            .values()
            .filter(|s| s.key.is_fwmark() || s.key.proto == proto)
            .flat_map(|s| s.dests.iter().map(move |d| (s.key.port, d)))
            .find(|(vport, d)| {
                d.addr == addr
                    && (*vport == 0 || (if d.port == 0 { *vport } else { d.port }) == port)
            })
            .map(|(_, d)| d.source())
            .filter(|a| !a.is_unspecified())
    }

    /// Whether `addr:port` is a real server of some service: its packets may be replies.
    #[inline]
    pub(crate) fn is_real(&self, proto: Protocol, addr: IpAddr, port: u16) -> bool {
        (!self.reals.is_empty() && self.reals.contains(&(proto, addr, port)))
            || (!self.all_port_reals.is_empty() && self.all_port_reals.contains(&(proto, addr)))
    }

    /// Whether `addr:port` is a NAT real server of a one-packet service: its replies find
    /// no connection.
    #[inline]
    pub(crate) fn is_ops_real(&self, proto: Protocol, addr: IpAddr, port: u16) -> bool {
        !self.ops_reals.is_empty() && self.ops_reals.contains(&(proto, addr, port))
    }

    /// Whether `port` is one of the ports expected connections may use: port 20 (active
    /// FTP) and the unprivileged ones, as IPVS's FTP service lookup falls back on.
    #[inline]
    pub fn is_data_port(port: u16) -> bool {
        port == crate::consts::FTP_PORT - 1 || port >= crate::consts::HELPER_DATA_PORTS_FROM
    }

    /// Whether a packet to `addr:port` may belong to an expected connection: `addr` is the
    /// virtual address of a service whose helper expects connections.
    #[inline]
    pub(crate) fn is_data_vip(&self, proto: Protocol, addr: IpAddr, port: u16) -> bool {
        !self.data_vips.is_empty()
            && Self::is_data_port(port)
            && self.data_vips.contains(&(proto, addr))
    }

    /// Whether a packet from `addr:port` may belong to an expected connection: `addr` is a
    /// NAT real server of such a service.
    #[inline]
    pub(crate) fn is_data_real(&self, proto: Protocol, addr: IpAddr, port: u16) -> bool {
        !self.data_reals.is_empty()
            && Self::is_data_port(port)
            && self.data_reals.contains(&(proto, addr))
    }

    /// The (protocol, address) pairs whose data ports are claimed: virtual addresses, then
    /// real servers.
    pub fn data_claims(&self) -> (AddrClaims, AddrClaims) {
        let mut v: Vec<_> = self.data_vips.iter().copied().collect();
        let mut r: Vec<_> = self.data_reals.iter().copied().collect();
        v.sort();
        r.sort();
        (v, r)
    }

    /// Whether `addr` is a virtual IP address.
    #[inline]
    pub(crate) fn is_vip(&self, addr: IpAddr) -> bool {
        self.vips.contains(&addr)
    }

    /// Whether `addr` is a real server address.
    #[inline]
    pub(crate) fn is_real_addr(&self, addr: IpAddr) -> bool {
        self.real_addrs.contains(&addr)
    }

    /// Iterate over the services, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<VirtualService>> {
        self.services.values()
    }

    /// Every service's traffic counters.
    pub fn service_stats(&self) -> impl Iterator<Item = &Arc<crate::stats::Stats>> {
        self.services.values().map(|s| &s.stats)
    }

    /// The services sorted by protocol, address and port, as `ipvsadm -L` lists them.
    pub fn services_sorted(&self) -> Vec<&Arc<VirtualService>> {
        let mut v: Vec<_> = self.services.values().collect();
        v.sort_by_key(|s| s.key);
        v
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Iterate over every real server of every service, those being drained too.
    pub fn dests(&self) -> impl Iterator<Item = &Arc<Dest>> {
        self.services
            .values()
            .flat_map(|s| s.dests.iter().chain(s.draining.iter()))
    }

    /// A snapshot with the built-in schedulers run natively (tests, and the building block
    /// of [`Snapshot::build`]).
    pub fn build_native<C: Clone + Send + Sync + 'static>(
        specs: &[Service<C>],
        previous: &Snapshot,
    ) -> Self {
        Self::build(specs, &Timeouts::default(), previous, &|name| {
            SchedChoice::native(Scheduler::from_name(name).unwrap_or(Scheduler::Wlc))
        })
    }

    /// Mark the real servers of `self` that `next` no longer has as gone, and those that it
    /// has as available. Call after `next` was published.
    pub fn retire_into(&self, next: &Snapshot) {
        for d in next.dests() {
            d.set_available(true);
        }
        for d in self.dests() {
            if !next.dests().any(|n| Arc::ptr_eq(n, d)) {
                d.set_available(false);
            }
        }
    }
}

/// The server `r` of a service built again: the one `old` had at its address (its
/// counters and connections stay, its weight changes as `-e` changes it), else a new one.
fn dest_for<C>(old: Option<&Arc<VirtualService>>, r: &Real<C>) -> Arc<Dest> {
    let reused = old.and_then(|o| {
        o.dests
            .iter()
            .find(|d| d.addr == r.addr && d.port == r.port)
            .cloned()
    });
    let dest = match reused {
        Some(d) => {
            d.set_weight(r.weight);
            d
        }
        None => {
            let d = Arc::new(Dest::new(r.addr, r.port));
            d.set_initial_weight(r.weight);
            d
        }
    };
    dest.set_hint(r.hint);
    dest.set_thresholds(r.upper_threshold, r.lower_threshold);
    dest.set_forward(r.fwd);
    dest.set_sorry(r.sorry);
    dest
}

/// The scheduler's state for a service's `dests`. It hears of each change as it is made,
/// as in IPVS. A new service is told of its real servers as IPVS hears of a service built
/// by `-A` and then `-a` for each: of the first (up to the first with a weight), then of
/// all (wrr's current weight depends on that history; no IPVS scheduler's state depends
/// on more of it). A new scheduler on a service starts from all of them, as
/// `ip_vs_bind_scheduler` does.
fn sched_for(
    old: Option<&Arc<VirtualService>>,
    choice: &SchedChoice,
    flags: u32,
    dests: &[Arc<Dest>],
) -> Arc<SchedState> {
    match old {
        Some(o) if o.scheduler == *choice && o.flags == flags => {
            o.sched.refresh(dests);
            o.sched.clone()
        }
        Some(_) => {
            let s = SchedState::new(choice, flags);
            s.refresh(dests);
            Arc::new(s)
        }
        None => {
            let s = SchedState::new(choice, flags);
            let first = dests
                .iter()
                .rposition(|d| d.weight() > 0)
                .unwrap_or(dests.len());
            for k in (first..dests.len()).rev() {
                s.refresh(&dests[k..]);
            }
            s.refresh(dests);
            Arc::new(s)
        }
    }
}

/// The pool of helper plugin `p`: the one a service of `previous` has (its instances
/// stay), else a new one.
fn helper_pool(previous: &Snapshot, p: crate::plugin::Plugin) -> Arc<crate::plugin::HelperPool> {
    previous
        .services
        .values()
        .flat_map(|s| s.helpers.iter())
        .find(|h| h.plugin == p)
        .cloned()
        .unwrap_or_else(|| Arc::new(crate::plugin::HelperPool::new(p)))
}

/// The pool of persistence engine `p`: the one a service of `previous` has (its instances
/// stay), else a new one.
fn pe_pool(previous: &Snapshot, p: crate::plugin::Plugin) -> Arc<crate::plugin::PePool> {
    previous
        .services
        .values()
        .filter_map(|s| s.pe.as_ref())
        .find(|e| e.plugin == p)
        .cloned()
        .unwrap_or_else(|| Arc::new(crate::plugin::PePool::new(p)))
}
