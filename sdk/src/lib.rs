//! wvs-sdk: what a wvs scheduler plugin and the wvs host share.
//!
//! A scheduler is a type that implements [`Scheduler`]: IPVS calls the same two things of
//! its schedulers, "the real servers changed" ([`Scheduler::update`], IPVS's
//! `add_dest`/`del_dest`/`upd_dest`) and "pick a real server for this new connection"
//! ([`Scheduler::schedule`]). It sees the real servers as a slice of [`DestInfo`] newest
//! first (the reverse of configuration order: IPVS adds a real server at the head of its
//! service's list, and ties and rotations follow that list), with the counters IPVS
//! schedulers read, and the connection as a
//! [`ConnInfo`]. It is called once per new connection, never per packet, and must not
//! allocate per call.
//!
//! The same code builds natively, so a scheduler's logic is tested with `cargo test`, and for
//! `wasm32-unknown-unknown`, where the host runs it as a plugin. The types are `#[repr(C)]`
//! with fixed layouts: the host writes them straight into the plugin's memory. The ABI is
//! versioned ([`ABI_VERSION`]) and described in `sdk/ABI.md`.

#![warn(missing_docs)]
#![no_std]

/// Version of the host/plugin ABI described in `sdk/ABI.md`.
pub const ABI_VERSION: u32 = 1;

/// Most real servers one service may have (the size of the table the host shares with a
/// plugin). IPVS's Maglev table (4093 entries) needs fewer servers than entries.
pub const MAX_DESTS: usize = 1024;

/// Real-server flags, with IPVS's values (`include/uapi/linux/ip_vs.h`).
pub mod dest_flags {
    /// The real server may receive new connections (`IP_VS_DEST_F_AVAILABLE`).
    pub const AVAILABLE: u32 = 0x0001;
    /// The real server is over its upper connection threshold (`IP_VS_DEST_F_OVERLOAD`).
    pub const OVERLOAD: u32 = 0x0002;
}

/// Virtual-service flags, with IPVS's values (`include/uapi/linux/ip_vs.h`).
pub mod svc_flags {
    /// Persistent service (`IP_VS_SVC_F_PERSISTENT`).
    pub const PERSISTENT: u32 = 0x0001;
    /// One-packet scheduling (`IP_VS_SVC_F_ONEPACKET`).
    pub const ONEPACKET: u32 = 0x0004;
    /// Scheduler flag 1: `sh-fallback` / `mh-fallback` (`IP_VS_SVC_F_SCHED1`).
    pub const SCHED1: u32 = 0x0008;
    /// Scheduler flag 2: `sh-port` / `mh-port` (`IP_VS_SVC_F_SCHED2`).
    pub const SCHED2: u32 = 0x0010;
    /// Scheduler flag 3 (`IP_VS_SVC_F_SCHED3`).
    pub const SCHED3: u32 = 0x0020;
}

/// A real server as a scheduler sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DestInfo {
    /// Address: IPv6, or IPv4 mapped (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Port, host byte order.
    pub port: u16,
    /// Reserved, zero.
    pub reserved: u16,
    /// Weight, 0..=65535; 0 quiesces the server (no new connections).
    pub weight: i32,
    /// The last weight above 0 (Maglev keeps its table when a server is quiesced).
    pub last_weight: i32,
    /// [`dest_flags`].
    pub flags: u32,
    /// Active connections: TCP ones in the handshake or ESTABLISHED (`tcp_state_active`).
    pub activeconns: u32,
    /// Inactive connections: TCP ones closing or closed, and every UDP flow (IPVS starts
    /// each connection inactive, and only TCP's states make one active).
    pub inactconns: u32,
    /// Persistence templates pointing at this server.
    pub persistconns: u32,
    /// An operator-set hint per server for custom schedulers (for example a latency in µs);
    /// 0 when unset. IPVS's schedulers ignore it.
    pub hint: u32,
}

impl DestInfo {
    /// IPVS's `ip_vs_dest_conn_overhead`: active connections weigh 256 inactive ones.
    #[inline]
    pub fn overhead(&self) -> u32 {
        (self.activeconns << 8).wrapping_add(self.inactconns)
    }

    /// Whether the server is over its upper threshold.
    #[inline]
    pub fn overloaded(&self) -> bool {
        self.flags & dest_flags::OVERLOAD != 0
    }

    /// What most IPVS schedulers require of a server: weight above 0 and not overloaded (the
    /// opposite of the hashing schedulers' `is_unavailable`).
    #[inline]
    pub fn schedulable(&self) -> bool {
        self.weight > 0 && !self.overloaded()
    }

    /// The address folded to 32 bits as IPVS's hashing schedulers do: the IPv4 address, or
    /// the XOR of the four words of an IPv6 address (host byte order).
    #[inline]
    pub fn addr_fold(&self) -> u32 {
        fold_addr(&self.addr)
    }
}

/// The connection being scheduled.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConnInfo {
    /// Client address (IPv6, or IPv4 mapped).
    pub saddr: [u8; 16],
    /// Virtual address.
    pub daddr: [u8; 16],
    /// Client port, host byte order.
    pub sport: u16,
    /// Virtual port, host byte order.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 4 or 6.
    pub af: u8,
    /// Reserved, zero.
    pub reserved: u16,
    /// The service's [`svc_flags`].
    pub svc_flags: u32,
}

impl ConnInfo {
    /// The client address folded to 32 bits (see [`DestInfo::addr_fold`]).
    #[inline]
    pub fn saddr_fold(&self) -> u32 {
        fold_addr(&self.saddr)
    }

    /// The virtual address folded to 32 bits.
    #[inline]
    pub fn daddr_fold(&self) -> u32 {
        fold_addr(&self.daddr)
    }

    /// Whether a service flag is set.
    #[inline]
    pub fn has_flag(&self, flag: u32) -> bool {
        self.svc_flags & flag != 0
    }
}

/// Fold a 16-byte address as IPVS does (`addr->ip`, or the XOR of the `ip6` words).
#[inline]
pub fn fold_addr(a: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
        w(12)
    } else {
        w(0) ^ w(4) ^ w(8) ^ w(12)
    }
}

/// Map an IPv4 address (host order) into the 16-byte form.
#[inline]
pub fn v4_mapped(a: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&a.to_be_bytes());
    out
}

/// The kernel's `hash_32(val, bits)`: multiply by the 32-bit golden ratio, keep the top bits.
#[inline]
pub fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

/// Greatest common divisor (0 with 0 gives 0).
#[inline]
pub fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// The rule IPVS's wlc, sed and nq share: the first schedulable server (weight above 0, not
/// overloaded) is the least loaded so far; each next one replaces it when
/// `loh * w(dest) > doh * w(least)`, i.e. when it has less overhead per weight, compared
/// without division.
pub fn least_weighted(dests: &[DestInfo], overhead: fn(&DestInfo) -> u32) -> Option<usize> {
    let mut least: Option<(usize, i64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !d.schedulable() {
            continue;
        }
        let doh = i64::from(overhead(d));
        match least {
            None => least = Some((i, doh)),
            Some((l, loh)) => {
                if loh * i64::from(d.weight) > doh * i64::from(dests[l].weight) {
                    least = Some((i, doh));
                }
            }
        }
    }
    least.map(|(i, _)| i)
}

/// The weighted least connection of the locality-based schedulers (`__ip_vs_lblc_schedule`,
/// `__ip_vs_lblcr_schedule`): the first server with weight that is not overloaded, then any
/// later one that is not overloaded with less overhead per weight.
pub fn lblc_wlc(dests: &[DestInfo]) -> Option<usize> {
    let first = dests.iter().position(|d| !d.overloaded() && d.weight > 0)?;
    let mut least = first;
    let mut loh = i64::from(dests[first].overhead());
    for (i, d) in dests.iter().enumerate().skip(first + 1) {
        if d.overloaded() {
            continue;
        }
        let doh = i64::from(d.overhead());
        if loh * i64::from(d.weight) > doh * i64::from(dests[least].weight) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// `is_overloaded` of the locality-based schedulers: more active connections than weight,
/// while some server has fewer than half of its weight.
pub fn lblc_overloaded(d: &DestInfo, dests: &[DestInfo]) -> bool {
    i64::from(d.activeconns) > i64::from(d.weight)
        && dests
            .iter()
            .any(|o| i64::from(o.activeconns) * 2 < i64::from(o.weight))
}

/// A real server's identity (address and port) that stays valid when the table is reordered
/// or shrinks; schedulers that remember servers (lblc, lblcr) keep these, not indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestId {
    /// Address.
    pub addr: [u8; 16],
    /// Port.
    pub port: u16,
}

impl DestId {
    /// The identity of a table entry.
    pub fn of(d: &DestInfo) -> Self {
        Self {
            addr: d.addr,
            port: d.port,
        }
    }

    /// Where this server is in the current table, if it is still there.
    pub fn find(&self, dests: &[DestInfo]) -> Option<usize> {
        dests
            .iter()
            .position(|d| d.addr == self.addr && d.port == self.port)
    }
}

/// What the host offers a scheduler besides the servers and the connection.
pub trait Host {
    /// A random number (uniform over `u32`).
    fn random(&mut self) -> u32;
    /// Milliseconds on a monotonic clock.
    fn now_ms(&self) -> u64;
}

/// A scheduling algorithm. State lives in `self` and belongs to one virtual service; the
/// host calls one service's scheduler from one thread at a time.
pub trait Scheduler: Default {
    /// The scheduler's name as `ipvsadm -s` spells it.
    const NAME: &'static str;

    /// The real servers of the service, their weights or the service flags changed (and
    /// before the first connection). Rebuild what depends on them.
    fn update(&mut self, _dests: &[DestInfo], _svc_flags: u32) {}

    /// Pick a real server for a new connection: an index into `dests`, or `None` when no
    /// server can take it (the host then drops the packet and counts it).
    fn schedule(
        &mut self,
        conn: &ConnInfo,
        dests: &[DestInfo],
        host: &mut dyn Host,
    ) -> Option<usize>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_offsets_are_the_abi() {
        assert_eq!(core::mem::offset_of!(Shared, conn), SHARED_CONN_OFFSET);
        assert_eq!(core::mem::offset_of!(Shared, n_dests), SHARED_N_OFFSET);
        assert_eq!(core::mem::offset_of!(Shared, dests), SHARED_DESTS_OFFSET);
    }

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(core::mem::size_of::<DestInfo>(), 48);
        assert_eq!(core::mem::size_of::<ConnInfo>(), 44);
    }

    #[test]
    fn folding_and_hashing() {
        let a = v4_mapped(0xC612_000B);
        assert_eq!(fold_addr(&a), 0xC612_000B);
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[15] = 1;
        assert_eq!(fold_addr(&v6), 0x2000_0000 ^ 1);
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(0, 5), 5);
        let d = DestInfo {
            activeconns: 2,
            inactconns: 3,
            weight: 1,
            ..Default::default()
        };
        assert_eq!(d.overhead(), 2 * 256 + 3);
        assert!(d.schedulable());
    }
}

/// Offset of [`Shared::conn`] in the shared region.
pub const SHARED_CONN_OFFSET: usize = 0;
/// Offset of [`Shared::n_dests`] in the shared region.
pub const SHARED_N_OFFSET: usize = 44;
/// Offset of [`Shared::dests`] in the shared region.
pub const SHARED_DESTS_OFFSET: usize = 48;

/// The memory a plugin shares with the host: the connection being scheduled and the real
/// servers, written by the host before each call. `#[repr(C)]`: offsets are part of the ABI
/// (`conn` at 0, `n_dests` at 44, `dests` at 48).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Shared {
    /// The connection (valid during `wvs_schedule`).
    pub conn: ConnInfo,
    /// How many entries of `dests` are valid.
    pub n_dests: u32,
    /// The real servers, newest first (the reverse of configuration order, as IPVS's list).
    pub dests: [DestInfo; MAX_DESTS],
}

impl Shared {
    /// An empty table.
    pub const fn new() -> Self {
        const EMPTY: DestInfo = DestInfo {
            addr: [0; 16],
            port: 0,
            reserved: 0,
            weight: 0,
            last_weight: 0,
            flags: 0,
            activeconns: 0,
            inactconns: 0,
            persistconns: 0,
            hint: 0,
        };
        Self {
            conn: ConnInfo {
                saddr: [0; 16],
                daddr: [0; 16],
                sport: 0,
                dport: 0,
                proto: 0,
                af: 0,
                reserved: 0,
                svc_flags: 0,
            },
            n_dests: 0,
            dests: [EMPTY; MAX_DESTS],
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// Names of the functions a scheduler plugin exports and imports (ABI version 1).
pub mod abi {
    /// Export: `() -> i32`, the ABI version the plugin was built for.
    pub const ABI_VERSION_FN: &str = "wvs_abi_version";
    /// Export: `() -> i32`, the address of the plugin's [`crate::Shared`] in its memory.
    pub const SHARED_FN: &str = "wvs_shared";
    /// Export: `(n_dests: i32, svc_flags: i32)`, the real servers changed.
    pub const UPDATE_FN: &str = "wvs_update";
    /// Export: `(n_dests: i32) -> i32`, the index of the chosen server, or -1 for none.
    pub const SCHEDULE_FN: &str = "wvs_schedule";
    /// Module of the host functions a plugin imports.
    pub const IMPORT_MODULE: &str = "wvs";
    /// Import: `() -> i32`, a random number.
    pub const RANDOM_FN: &str = "random";
    /// Import: `() -> i64`, milliseconds on a monotonic clock.
    pub const NOW_MS_FN: &str = "now_ms";
}

/// The plugin side of the ABI, used by [`export_scheduler!`]; not for direct use.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest {
    use core::cell::UnsafeCell;

    use super::{Host, Scheduler, Shared};

    #[link(wasm_import_module = "wvs")]
    unsafe extern "C" {
        #[link_name = "random"]
        fn host_random() -> u32;
        #[link_name = "now_ms"]
        fn host_now_ms() -> u64;
    }

    struct GuestHost;

    impl Host for GuestHost {
        fn random(&mut self) -> u32 {
            // SAFETY: an import with no arguments and no memory access, provided by the host.
            unsafe { host_random() }
        }
        fn now_ms(&self) -> u64 {
            // SAFETY: as above.
            unsafe { host_now_ms() }
        }
    }

    /// The table shared with the host. A static of its own, all zeros, so it costs the
    /// module no data segment.
    pub struct SharedCell(UnsafeCell<Shared>);

    /// The scheduler instance, created on first use.
    pub struct SchedCell<T>(UnsafeCell<Option<T>>);

    // SAFETY: a wasm32 plugin instance is single-threaded; the host never calls into one
    // instance from two threads at once.
    unsafe impl Sync for SharedCell {}
    // SAFETY: as above.
    unsafe impl<T> Sync for SchedCell<T> {}

    impl SharedCell {
        /// An empty table.
        pub const fn new() -> Self {
            Self(UnsafeCell::new(Shared::new()))
        }

        /// Address of the table.
        pub fn get(&self) -> *mut Shared {
            self.0.get()
        }
    }

    impl<T: Scheduler> SchedCell<T> {
        /// No instance yet.
        pub const fn new() -> Self {
            Self(UnsafeCell::new(None))
        }

        fn parts<'a>(&'a self, shared: &'a SharedCell, n: u32) -> (&'a Shared, &'a mut T, usize) {
            // SAFETY: single-threaded, and no reference into the state outlives one export
            // call; the host writes the table only between calls.
            let (shared, sched) = unsafe { (&*shared.0.get(), &mut *self.0.get()) };
            let n = (n as usize).min(shared.dests.len());
            (shared, sched.get_or_insert_with(T::default), n)
        }

        /// `wvs_update`.
        pub fn update(&self, shared: &SharedCell, n: u32, flags: u32) {
            let (shared, sched, n) = self.parts(shared, n);
            sched.update(&shared.dests[..n], flags);
        }

        /// `wvs_schedule`.
        pub fn schedule(&self, shared: &SharedCell, n: u32) -> i32 {
            let (shared, sched, n) = self.parts(shared, n);
            match sched.schedule(&shared.conn, &shared.dests[..n], &mut GuestHost) {
                Some(i) if i < n => i as i32,
                _ => -1,
            }
        }
    }
}

/// Export a [`Scheduler`] as a wvs plugin: `wvs_sdk::export_scheduler!(MyScheduler);`.
///
/// On `wasm32` it defines the plugin's exports (see `sdk/ABI.md`) and its panic handler (a
/// trap, which the host counts and answers by falling back to a built-in scheduler). On other
/// targets it does nothing, so the same crate builds natively for tests.
#[macro_export]
macro_rules! export_scheduler {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static SHARED: $crate::guest::SharedCell = $crate::guest::SharedCell::new();
            static SCHED: $crate::guest::SchedCell<$t> = $crate::guest::SchedCell::new();
            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_abi_version() -> u32 {
                $crate::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_shared() -> *mut $crate::Shared {
                SHARED.get()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_update(n: u32, flags: u32) {
                SCHED.update(&SHARED, n, flags)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_schedule(n: u32) -> i32 {
                SCHED.schedule(&SHARED, n)
            }

            #[panic_handler]
            fn panic(_: &core::panic::PanicInfo) -> ! {
                core::arch::wasm32::unreachable()
            }
        };
    };
}
