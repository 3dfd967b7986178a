//! The ABI: everything that crosses between the host and a plugin, the layouts and names
//! that the host, the Rust guest glue and the C header (`sdk/wvs.h`) must agree on. It is
//! described in `sdk/ABI.md`; offsets are derived from the `#[repr(C)]` definitions here,
//! never written by hand, and tests check them against the document and the header.

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

/// Offset of [`Shared::conn`] in the shared region.
pub const SHARED_CONN_OFFSET: usize = core::mem::offset_of!(Shared, conn);
/// Offset of [`Shared::n_dests`] in the shared region.
pub const SHARED_N_OFFSET: usize = core::mem::offset_of!(Shared, n_dests);
/// Offset of [`Shared::dests`] in the shared region.
pub const SHARED_DESTS_OFFSET: usize = core::mem::offset_of!(Shared, dests);

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

// The names of the functions a scheduler plugin exports and imports (ABI version 1).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_the_documented_abi() {
        // sdk/ABI.md's table: a change here is a new ABI version.
        assert_eq!(SHARED_CONN_OFFSET, 0);
        assert_eq!(SHARED_N_OFFSET, 44);
        assert_eq!(SHARED_DESTS_OFFSET, 48);
        assert_eq!(core::mem::size_of::<DestInfo>(), 48);
        assert_eq!(core::mem::size_of::<ConnInfo>(), 44);
        assert_eq!(
            core::mem::size_of::<Shared>(),
            48 + 48 * MAX_DESTS,
            "no padding after the table"
        );
    }
}
