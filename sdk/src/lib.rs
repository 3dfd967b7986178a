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
//!
//! The crate is split the way the ABI is: [`abi`] (the layouts and names host and plugins
//! share, also given to C as `sdk/wvs.h`), [`ipvs`] (what IPVS's schedulers compute), and
//! the guest glue behind [`export_scheduler!`] and [`export_helper!`].
//!
//! The second kind of plugin is an application helper ([`Helper`], IPVS's `ip_vs_app`): it
//! sees the payload of the connections bound to it and may rewrite it (FTP's passive
//! replies, a PROXY protocol header) or ask for expected connections (FTP's data
//! connections).
//!
//! The third kind is a persistence engine ([`PersistenceEngine`], IPVS's `ip_vs_pe`): for a
//! new connection of a persistent service it reads the first packet's payload and returns
//! the key its persistence template is found by besides the client (the built-in `sip`
//! returns a SIP message's Call-ID, as `ip_vs_pe_sip`).

#![warn(missing_docs)]
#![no_std]

pub mod abi;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;
pub mod ipvs;

pub use abi::{
    ABI_VERSION, ConnInfo, DestInfo, Expect, HELPER_EXPECT_OFFSET, HELPER_MAX_PAYLOAD,
    HELPER_PAYLOAD_OFFSET, HELPER_PKT_OFFSET, HELPER_STATE_LEN, HELPER_STATE_OFFSET, HelperShared,
    MAX_DESTS, PE_CONN_OFFSET, PE_KEY_OFFSET, PE_LEN_OFFSET, PE_MAX_KEY, PE_PAYLOAD_OFFSET,
    PacketInfo, PeShared, SHARED_CONN_OFFSET, SHARED_DESTS_OFFSET, SHARED_N_OFFSET, Shared,
    dest_flags, helper_answer, helper_dir, helper_flags, helper_fwd, pe_answer, sched_flags,
    svc_flags,
};
pub use ipvs::{
    DestId, fold_addr, gcd, hash_32, lblc_overloaded, lblc_wlc, least_weighted, v4_mapped,
};

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
    /// [`sched_flags`]: [`sched_flags::CONSISTENT`] if its choice depends only on the
    /// connection and the real servers (mh, sh and dh do; rr, wlc and lblc do not).
    const FLAGS: u32 = 0;

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

/// What the host offers a helper during a call.
pub trait HelperHost {
    /// Register an expected connection tied to the connection being helped (see
    /// [`Expect`]); `false` when the host refused it (another client, another server, a
    /// full table).
    fn expect(&mut self, e: &Expect) -> bool;
    /// Milliseconds on a monotonic clock.
    fn now_ms(&self) -> u64;
}

/// A helper's answer for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the packet as it is.
    Keep,
    /// Send it with the payload written to the output buffer instead (its first `n`
    /// bytes); the host fixes the lengths, the checksums and, for TCP, every later
    /// sequence and acknowledgement number (and SACK block) of both directions.
    Replace(usize),
    /// Drop the packet.
    Drop,
}

/// An application helper (IPVS's `struct ip_vs_app`): it is shown the payload of every
/// packet of the connections bound to it, in both directions, and may rewrite it. One
/// instance serves many connections: what it must remember about one connection goes in
/// the state bytes the host keeps for it (zero at first), not in `self`.
pub trait Helper: Default {
    /// The helper's name, as services bind it (`helpers = ["ftp"]`).
    const NAME: &'static str;
    /// [`helper_flags`]: [`helper_flags::EXPECTS`] if it registers expected connections.
    const FLAGS: u32 = 0;

    /// A packet with payload (TCP: of any state; the helper decides what it looks at).
    /// `payload` is what was sent; a replacement is written to `out` (at most `out.len()`
    /// bytes) and answered with [`Action::Replace`].
    fn packet(
        &mut self,
        pkt: &PacketInfo,
        state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        out: &mut [u8],
        host: &mut dyn HelperHost,
    ) -> Action;
}

/// A persistence engine's answer for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeKey {
    /// No key of its own: the service's usual template (client, virtual address and port).
    Default,
    /// Drop the packet: it is not what the engine serves (IPVS's `fill_param` failing).
    Drop,
    /// The key is the first `n` bytes written to the output buffer (at most
    /// [`PE_MAX_KEY`]): the template is found by the client (under the service's netmask),
    /// the virtual address and port, and these bytes.
    Key(usize),
}

/// A persistence engine (IPVS's `struct ip_vs_pe`): for a new connection of a persistent
/// service, it reads the first packet's payload and returns the key that, with the client
/// network, finds the connection's template, so that what belongs together (a SIP call's
/// messages, by their Call-ID) goes to one server even from one client address. Called once
/// per new connection (per datagram with one-packet scheduling), never per packet of a
/// connection. Bind it to a service with `pe = "NAME"` (`wvs adm ... --pe NAME`).
pub trait PersistenceEngine: Default {
    /// The engine's name, as services name it (`--pe sip`).
    const NAME: &'static str;

    /// The key of a new connection whose first packet carries `payload` (after its UDP or
    /// TCP header; a TCP SYN's is usually empty). A key is written to `out` (at most
    /// [`PE_MAX_KEY`] bytes) and answered with [`PeKey::Key`].
    fn key(&mut self, conn: &ConnInfo, payload: &[u8], out: &mut [u8]) -> PeKey;
}

/// Export a [`PersistenceEngine`] as a wvs plugin:
/// `wvs_sdk::export_persistence_engine!(MyEngine);`. As [`export_scheduler!`], it does
/// nothing on targets other than `wasm32`.
#[macro_export]
macro_rules! export_persistence_engine {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static SHARED: $crate::guest::PeSharedCell = $crate::guest::PeSharedCell::new();
            static ENGINE: $crate::guest::PeCell<$t> = $crate::guest::PeCell::new();
            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_abi_version() -> u32 {
                $crate::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_pe_shared() -> *mut $crate::PeShared {
                SHARED.get()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_pe_key() -> i32 {
                ENGINE.key(&SHARED)
            }

            #[panic_handler]
            fn panic(_: &core::panic::PanicInfo) -> ! {
                core::arch::wasm32::unreachable()
            }
        };
    };
}

/// Export a [`Helper`] as a wvs plugin: `wvs_sdk::export_helper!(MyHelper);`. As
/// [`export_scheduler!`], it does nothing on targets other than `wasm32`.
#[macro_export]
macro_rules! export_helper {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static SHARED: $crate::guest::HelperSharedCell = $crate::guest::HelperSharedCell::new();
            static HELPER: $crate::guest::HelperCell<$t> = $crate::guest::HelperCell::new();
            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_abi_version() -> u32 {
                $crate::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_helper_shared() -> *mut $crate::HelperShared {
                SHARED.get()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_helper_flags() -> u32 {
                <$t as $crate::Helper>::FLAGS
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn wvs_helper_packet() -> i32 {
                HELPER.packet(&SHARED)
            }

            #[panic_handler]
            fn panic(_: &core::panic::PanicInfo) -> ! {
                core::arch::wasm32::unreachable()
            }
        };
    };
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
            pub extern "C" fn wvs_sched_flags() -> u32 {
                <$t as $crate::Scheduler>::FLAGS
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
