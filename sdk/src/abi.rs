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

/// What a scheduler declares about itself (the optional export `wvs_sched_flags`).
pub mod sched_flags {
    /// Its choice depends only on the connection's addresses, ports and protocol and on the
    /// table of real servers (their order, addresses, ports, weights and flags): never on
    /// connection counts, the clock, random numbers or earlier calls. Two balancers with
    /// the same servers then pick the same one for a flow, so a balancer may schedule a
    /// flow it has never seen (a TCP segment other than a SYN, after the routers moved
    /// the flow to it) where another one scheduled it before: with `sloppy_tcp` and
    /// `sloppy_consistent_only`, only such schedulers take those segments.
    pub const CONSISTENT: u32 = 0x1;
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

impl ConnInfo {
    /// All zeros (what a shared region holds before the host writes it).
    pub const ZERO: Self = Self {
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        proto: 0,
        af: 0,
        reserved: 0,
        svc_flags: 0,
    };
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
            conn: ConnInfo::ZERO,
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
/// Optional export: `() -> i32`, [`sched_flags`] (none: 0). Read once, at load.
pub const SCHED_FLAGS_FN: &str = "wvs_sched_flags";
/// Module of the host functions a plugin imports.
pub const IMPORT_MODULE: &str = "wvs";
/// Import: `() -> i32`, a random number.
pub const RANDOM_FN: &str = "random";
/// Import: `() -> i64`, milliseconds on a monotonic clock.
pub const NOW_MS_FN: &str = "now_ms";

// The helper plugin kind (IPVS's application helpers, `ip_vs_app`): a helper sees the
// payload of each packet of the connections bound to it, may replace it or drop the
// packet, and may ask for expected connections.

/// Most payload bytes a helper is shown or may write back (an IPv4 packet's limit).
pub const HELPER_MAX_PAYLOAD: usize = 65536;
/// Bytes of state the host keeps per connection and helper (IPVS's `cp->app_data`): zero
/// when the connection is created, written back after every call.
pub const HELPER_STATE_LEN: usize = 64;

/// Which way a packet travels, in [`PacketInfo::dir`].
pub mod helper_dir {
    /// Client to real server (IPVS's `pkt_in`).
    pub const IN: u8 = 0;
    /// Real server to client (IPVS's `pkt_out`).
    pub const OUT: u8 = 1;
}

/// A helper's answers to `wvs_helper_packet` besides a new payload length.
pub mod helper_answer {
    /// Leave the packet as it is.
    pub const KEEP: i32 = -1;
    /// Drop the packet.
    pub const DROP: i32 = -2;
}

/// What a helper declares about itself (`wvs_helper_flags`).
pub mod helper_flags {
    /// It asks for expected connections: the host claims the data ports of its services'
    /// addresses (port 20 and the unprivileged ports, as IPVS's FTP service lookup does).
    pub const EXPECTS: u32 = 0x1;
}

/// Forwarding methods in [`PacketInfo::fwd`].
pub mod helper_fwd {
    /// Masquerading (NAT).
    pub const NAT: u8 = 0;
    /// Full NAT: the real server sees a local address of the balancer as the source.
    pub const FULLNAT: u8 = 1;
}

/// The packet a helper is called for and the connection it belongs to.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PacketInfo {
    /// Client address (IPv6, or IPv4 mapped).
    pub caddr: [u8; 16],
    /// Virtual address.
    pub vaddr: [u8; 16],
    /// Real server address.
    pub daddr: [u8; 16],
    /// Client port, host byte order.
    pub cport: u16,
    /// Virtual port.
    pub vport: u16,
    /// Real server port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 4 or 6.
    pub af: u8,
    /// [`helper_dir`].
    pub dir: u8,
    /// [`helper_fwd`].
    pub fwd: u8,
    /// The connection's TCP state, IPVS's numbering (`IP_VS_TCP_S_*`: 1 ESTABLISHED); 0
    /// for UDP.
    pub tcp_state: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// The segment's sequence number as its sender numbered it (TCP; 0 for UDP).
    pub seq: u32,
    /// Where the payload's first byte lies in its direction's stream, counted from 0 (the
    /// byte after the SYN) in the sender's numbering; `u32::MAX` when the SYN was not seen.
    pub offset: u32,
    /// Payload bytes in the shared buffer.
    pub len: u32,
    /// The most bytes a replacement may have.
    pub max_len: u32,
}

/// An expected connection (IPVS's `ip_vs_conn_new` from a helper): a data connection that
/// the host lets in for a while and sends to the controlling connection's real server, as
/// part of it. The virtual address is the controlling connection's; the real server must
/// be its real server.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Expect {
    /// Client address (IPv4 mapped): must be the controlling connection's client.
    pub caddr: [u8; 16],
    /// Real server address: zero for the controlling connection's, else equal to it.
    pub daddr: [u8; 16],
    /// Client port; 0 for any (IPVS's `NO_CPORT`: the first packet from the client fills it).
    pub cport: u16,
    /// Virtual port; 0 for the same as the real server's port.
    pub vport: u16,
    /// Real server port; 0 for any (the first packet from the server fills it, and the
    /// virtual port with it when that is 0 too).
    pub dport: u16,
    /// IP protocol number (6 or 17).
    pub proto: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// How long it waits for its first packet, ms; 0 for IPVS's LISTEN timeout (120 s).
    pub timeout_ms: u32,
}

/// Offset of [`HelperShared::pkt`] in a helper's shared region.
pub const HELPER_PKT_OFFSET: usize = core::mem::offset_of!(HelperShared, pkt);
/// Offset of [`HelperShared::state`].
pub const HELPER_STATE_OFFSET: usize = core::mem::offset_of!(HelperShared, state);
/// Offset of [`HelperShared::expect`].
pub const HELPER_EXPECT_OFFSET: usize = core::mem::offset_of!(HelperShared, expect);
/// Offset of [`HelperShared::payload`].
pub const HELPER_PAYLOAD_OFFSET: usize = core::mem::offset_of!(HelperShared, payload);

/// The memory a helper shares with the host: the packet, the connection's helper state and
/// the payload, written by the host before each call; the state and the payload (when the
/// answer is a length) read back after it; `expect` written by the helper before it calls
/// the host's `expect`. Offsets: `pkt` 0, `state` 76, `expect` 140, `payload` 184.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HelperShared {
    /// The packet.
    pub pkt: PacketInfo,
    /// The connection's state for this helper.
    pub state: [u8; HELPER_STATE_LEN],
    /// The expected connection to register.
    pub expect: Expect,
    /// The payload, `pkt.len` bytes; a replacement is written here.
    pub payload: [u8; HELPER_MAX_PAYLOAD],
}

impl HelperShared {
    /// An empty region.
    pub const fn new() -> Self {
        Self {
            pkt: PacketInfo {
                caddr: [0; 16],
                vaddr: [0; 16],
                daddr: [0; 16],
                cport: 0,
                vport: 0,
                dport: 0,
                proto: 0,
                af: 0,
                dir: 0,
                fwd: 0,
                tcp_state: 0,
                reserved: 0,
                seq: 0,
                offset: 0,
                len: 0,
                max_len: 0,
            },
            state: [0; HELPER_STATE_LEN],
            expect: Expect {
                caddr: [0; 16],
                daddr: [0; 16],
                cport: 0,
                vport: 0,
                dport: 0,
                proto: 0,
                reserved: 0,
                timeout_ms: 0,
            },
            payload: [0; HELPER_MAX_PAYLOAD],
        }
    }
}

impl Default for HelperShared {
    fn default() -> Self {
        Self::new()
    }
}

/// Helper export: `() -> i32`, the address of the plugin's [`HelperShared`].
pub const HELPER_SHARED_FN: &str = "wvs_helper_shared";
/// Helper export: `() -> i32`, [`helper_flags`].
pub const HELPER_FLAGS_FN: &str = "wvs_helper_flags";
/// Helper export: `() -> i32`, called per packet with payload: [`helper_answer`], or the
/// length of the replacement written to the payload buffer.
pub const HELPER_PACKET_FN: &str = "wvs_helper_packet";
/// Import (helpers): `() -> i32`, register the expected connection in the shared region's
/// `expect`; 0 when registered, negative when refused.
pub const EXPECT_FN: &str = "expect";

/// The most bytes a persistence key may have (IPVS's `IP_VS_PEDATA_MAXLEN`).
pub const PE_MAX_KEY: usize = 255;

/// What a persistence engine's `wvs_pe_key` answers besides a key's length.
pub mod pe_answer {
    /// No key of its own: the service's usual template (IPVS: `fill_param` succeeded
    /// without `pe_data`).
    pub const DEFAULT: i32 = -1;
    /// Drop the packet (IPVS: `fill_param` failed, `NF_DROP`).
    pub const DROP: i32 = -2;
}

/// Offset of [`PeShared::conn`] in a persistence engine's shared region.
pub const PE_CONN_OFFSET: usize = core::mem::offset_of!(PeShared, conn);
/// Offset of [`PeShared::len`].
pub const PE_LEN_OFFSET: usize = core::mem::offset_of!(PeShared, len);
/// Offset of [`PeShared::key`].
pub const PE_KEY_OFFSET: usize = core::mem::offset_of!(PeShared, key);
/// Offset of [`PeShared::payload`].
pub const PE_PAYLOAD_OFFSET: usize = core::mem::offset_of!(PeShared, payload);

/// The memory a persistence engine shares with the host: the new connection and its first
/// packet's payload, written by the host before each call, and the key, written by the
/// engine. Offsets: `conn` 0, `len` 44, `key` 48, `payload` 304.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PeShared {
    /// The connection being scheduled (its `svc_flags` are the service's).
    pub conn: ConnInfo,
    /// Payload bytes in `payload`.
    pub len: u32,
    /// The key (IPVS's `pe_data`), its first n bytes when the answer is n.
    pub key: [u8; PE_MAX_KEY + 1],
    /// The packet's payload (after the UDP or TCP header).
    pub payload: [u8; HELPER_MAX_PAYLOAD],
}

impl PeShared {
    /// An empty region.
    pub const fn new() -> Self {
        Self {
            conn: ConnInfo::ZERO,
            len: 0,
            key: [0; PE_MAX_KEY + 1],
            payload: [0; HELPER_MAX_PAYLOAD],
        }
    }
}

impl Default for PeShared {
    fn default() -> Self {
        Self::new()
    }
}

/// Persistence engine export: `() -> i32`, the address of the plugin's [`PeShared`].
pub const PE_SHARED_FN: &str = "wvs_pe_shared";
/// Persistence engine export: `() -> i32`, called for a new connection of a persistent
/// service: [`pe_answer`], or the length of the key written to `key` (at most
/// [`PE_MAX_KEY`]).
pub const PE_KEY_FN: &str = "wvs_pe_key";

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
        assert_eq!(core::mem::size_of::<PacketInfo>(), 76);
        assert_eq!(core::mem::size_of::<Expect>(), 44);
        assert_eq!(HELPER_PKT_OFFSET, 0);
        assert_eq!(HELPER_STATE_OFFSET, 76);
        assert_eq!(HELPER_EXPECT_OFFSET, 140);
        assert_eq!(HELPER_PAYLOAD_OFFSET, 184);
        assert_eq!(
            core::mem::size_of::<HelperShared>(),
            184 + HELPER_MAX_PAYLOAD,
            "no padding after the payload"
        );
        assert_eq!(PE_CONN_OFFSET, 0);
        assert_eq!(PE_LEN_OFFSET, 44);
        assert_eq!(PE_KEY_OFFSET, 48);
        assert_eq!(PE_PAYLOAD_OFFSET, 304);
        assert_eq!(core::mem::size_of::<PeShared>(), 304 + HELPER_MAX_PAYLOAD);
    }
}
