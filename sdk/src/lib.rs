//! wvs-sdk: the plugin ABI shared by the wvs host and its WebAssembly plugins.
//!
//! The ABI is versioned: a plugin exports `wvs_abi_version` returning [`ABI_VERSION`] and the
//! host refuses modules whose version it does not know. The scheduler and application-helper
//! calls are defined by the plugin-runtime issue; this crate already fixes the version number
//! and the real-server flags that the host's service table uses, so both sides agree on them
//! from the first release.

#![warn(missing_docs)]
#![no_std]

/// Version of the host/plugin ABI described in `sdk/ABI.md`.
pub const ABI_VERSION: u32 = 1;

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
