//! The words every part of wvs shares: protocols, what names a virtual service, the
//! built-in schedulers' names and the forwarding methods. They live here, apart from the
//! modules that use them, so that `config`, `service`, `plugin` and `stats` depend on this
//! module and not on one another.

use std::net::IpAddr;

/// Layer-4 protocols a virtual service can balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132; `ipvsadm --sctp-service`).
    Sctp,
}

impl Protocol {
    /// Every protocol a service can balance: what a fwmark service or a mark rule that
    /// names none takes.
    pub const ALL: [Self; 3] = [Self::Tcp, Self::Udp, Self::Sctp];

    /// Return the IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// The protocol numbered `n`, if a service can balance it.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            132 => Some(Self::Sctp),
            _ => None,
        }
    }

    /// Return the protocol's lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// What identifies a virtual service: protocol, virtual IP and port, or a firewall mark
/// and an address family (`ipvsadm -f MARK [-6]`).
///
/// A fwmark service matches packets by the mark wvs's classifier gives them (its mark
/// rules), whatever their protocol, address and port; its key holds the unspecified address
/// of its family, port 0 and TCP, which nothing reads as such ([`Self::is_fwmark`]).
/// Address services sort first, then fwmark services by mark, IPv4 before IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Firewall mark (0: an address service).
    pub fwmark: u32,
    /// Protocol.
    pub proto: Protocol,
    /// Virtual IP address.
    pub addr: IpAddr,
    /// Virtual port.
    pub port: u16,
}

impl ServiceKey {
    /// The address service `proto addr:port`.
    pub fn new(proto: Protocol, addr: IpAddr, port: u16) -> Self {
        Self {
            fwmark: 0,
            proto,
            addr,
            port,
        }
    }

    /// The fwmark service of `mark` in IPv6 (`v6`) or IPv4.
    pub fn fwmark(mark: u32, v6: bool) -> Self {
        Self {
            fwmark: mark,
            proto: Protocol::Tcp,
            addr: if v6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            },
            port: 0,
        }
    }

    /// Whether it names a fwmark service.
    pub fn is_fwmark(&self) -> bool {
        self.fwmark != 0
    }

    /// A fwmark service's mark as IPVS writes it where an address goes (its templates'
    /// virtual address, `union nf_inet_addr fwmark = { .ip = htonl(mark) }`): the first 32
    /// bits, the rest zero.
    pub fn mark_addr(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(self.fwmark.into()),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(self.fwmark) << 96)),
        }
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            _ if self.is_fwmark() && self.addr.is_ipv6() => write!(f, "fwm {} IPv6", self.fwmark),
            _ if self.is_fwmark() => write!(f, "fwm {}", self.fwmark),
            IpAddr::V4(a) => write!(f, "{} {}:{}", self.proto.name(), a, self.port),
            IpAddr::V6(a) => write!(f, "{} [{}]:{}", self.proto.name(), a, self.port),
        }
    }
}

/// The built-in schedulers, each the plugin crate that implements it: calls `$then!` with
/// the list, so that the list is written once (here) and each user derives what it needs
/// from it (the names below, the native instances in `service::sched`).
macro_rules! builtin_schedulers {
    ($then:ident) => {
        $then! {
            Rr => wvs_sched_rr::Rr,
            Wrr => wvs_sched_wrr::Wrr,
            Lc => wvs_sched_lc::Lc,
            Wlc => wvs_sched_wlc::Wlc,
            Sed => wvs_sched_sed::Sed,
            Nq => wvs_sched_nq::Nq,
            Fo => wvs_sched_fo::Fo,
            Ovf => wvs_sched_ovf::Ovf,
            Twos => wvs_sched_twos::Twos,
            Sh => wvs_sched_sh::Sh,
            Dh => wvs_sched_dh::Dh,
            Mh => wvs_sched_mh::Mh,
            Lblc => wvs_sched_lblc::Lblc,
            Lblcr => wvs_sched_lblcr::Lblcr,
        }
    };
}
pub(crate) use builtin_schedulers;

macro_rules! scheduler_names {
    ($( $variant:ident => $ty:path, )*) => {
        /// A built-in IPVS scheduler.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Scheduler { $( #[doc = concat!("`", stringify!($ty), "`.")] $variant, )* }

        impl Scheduler {
            /// Every scheduler.
            pub const ALL: &'static [Scheduler] = &[$(Scheduler::$variant,)*];

            /// Return the IPVS name (`ipvsadm -s NAME`).
            pub fn name(self) -> &'static str {
                match self { $(Scheduler::$variant => <$ty as wvs_sdk::Scheduler>::NAME,)* }
            }

            /// What it declares ([`wvs_sdk::sched_flags`]).
            pub fn flags(self) -> u32 {
                match self { $(Scheduler::$variant => <$ty as wvs_sdk::Scheduler>::FLAGS,)* }
            }
        }
    };
}
builtin_schedulers!(scheduler_names);

impl Scheduler {
    /// Parse an IPVS scheduler name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }
}

/// How packets reach a real server: IPVS's forwarding methods (`IP_VS_CONN_F_FWD_MASK`).
/// Each has its transmitter in [`crate::xmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Forward {
    /// Masquerading (NAT, ipvsadm `-m`): the destination becomes the real server, and its
    /// replies come back through wvs, which restores the virtual service as their source.
    #[default]
    Masq,
    /// Direct routing (ipvsadm `-g`): only the Ethernet destination changes, to the real
    /// server on the shared segment; it holds the VIP and answers the client itself.
    Route,
    /// Tunnelling (ipvsadm `-i`): the packet goes whole inside an outer IPv4 packet to the
    /// real server, which holds the VIP and answers the client itself.
    Tunnel(Tunnel),
    /// Full NAT (DPVS's `-b`): as masquerading, and the source becomes one of the service's
    /// local addresses and ports, so replies come back to wvs whatever the server's routes.
    FullNat,
    /// A real server that is the balancer itself (IPVS's `LOCALNODE`): the packet goes to
    /// the balancer's own stack unchanged, and its answers leave from there.
    Local,
    /// No real server (IPVS's `cache_bypass`): the packet goes on to the address it was
    /// sent to, routed by the balancer's own stack.
    Bypass,
}

impl Forward {
    /// The name ipvsadm lists (`-L`'s Forward column).
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Self::Masq => "Masq",
            Self::Route => "Route",
            Self::Tunnel(_) => "Tunnel",
            Self::FullNat => "FullNat",
            Self::Local => "Local",
            Self::Bypass => "Bypass",
        }
    }

    /// The name the configuration and the API use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Masq => "nat",
            Self::Route => "dr",
            Self::Tunnel(_) => "tunnel",
            Self::FullNat => "fullnat",
            Self::Local => "local",
            Self::Bypass => "bypass",
        }
    }

    /// Whether replies pass through wvs. Without them IPVS marks a connection
    /// `IP_VS_CONN_F_NOOUTPUT` and follows its TCP state on the client's packets alone.
    pub fn sees_replies(self) -> bool {
        matches!(self, Self::Masq | Self::FullNat)
    }

    /// Whether the real server's port may differ from the virtual one. DR and tunnels
    /// deliver the packet as the client sent it, so ipvsadm sets the virtual port.
    pub fn maps_ports(self) -> bool {
        matches!(self, Self::Masq | Self::FullNat)
    }
}

/// A tunnel's encapsulation (ipvsadm `--tun-type`, `--tun-port`, `--tun-*csum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tunnel {
    /// The encapsulation.
    pub kind: TunKind,
    /// GUE's UDP destination port (0 for the others).
    pub port: u16,
    /// The outer checksum (GUE and GRE).
    pub csum: TunCsum,
}

/// Tunnel types (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunKind {
    /// IP in IP (protocol 4).
    #[default]
    Ipip,
    /// Generic UDP Encapsulation: UDP, a 4-byte GUE header, the inner packet.
    Gue,
    /// GRE (protocol 47), 4 bytes, or 8 with a checksum.
    Gre,
}

impl TunKind {
    /// ipvsadm's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipip => "ipip",
            Self::Gue => "gue",
            Self::Gre => "gre",
        }
    }

    /// Parse ipvsadm's name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Ipip, Self::Gue, Self::Gre]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// Tunnel checksum options (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TunCsum {
    /// No outer checksum (the default).
    #[default]
    None,
    /// An outer UDP (GUE) or GRE checksum.
    Csum,
    /// GUE remote checksum offload: the receiver completes the inner checksum.
    Remcsum,
}

impl TunCsum {
    /// ipvsadm's name (`--tun-info`).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "nocsum",
            Self::Csum => "csum",
            Self::Remcsum => "remcsum",
        }
    }

    /// Parse ipvsadm's name.
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::None, Self::Csum, Self::Remcsum]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

impl Tunnel {
    /// Check the combination as ipvsadm's `tunnel_opt_check` and the kernel do: GUE needs
    /// a port, the others take none; IPIP takes no checksum option, GRE no remote one.
    pub fn check(&self) -> Result<(), String> {
        let k = self.kind.name();
        match self.kind {
            TunKind::Gue if self.port == 0 => {
                Err(format!("the {k} tunnel type needs a tunnel port"))
            }
            TunKind::Ipip | TunKind::Gre if self.port != 0 => {
                Err(format!("the {k} tunnel type takes no tunnel port"))
            }
            TunKind::Ipip if self.csum != TunCsum::None => Err(format!(
                "the {k} tunnel type takes no checksum option ({})",
                self.csum.name()
            )),
            TunKind::Gre if self.csum == TunCsum::Remcsum => {
                Err(format!("the {k} tunnel type takes no remcsum"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_options_are_checked_as_ipvsadm_does() {
        let t = |kind, port, csum| Tunnel { kind, port, csum }.check();
        assert!(t(TunKind::Ipip, 0, TunCsum::None).is_ok());
        assert!(t(TunKind::Ipip, 5555, TunCsum::None).is_err());
        assert!(t(TunKind::Ipip, 0, TunCsum::Csum).is_err());
        assert!(t(TunKind::Gue, 0, TunCsum::None).is_err());
        assert!(t(TunKind::Gue, 5555, TunCsum::Remcsum).is_ok());
        assert!(t(TunKind::Gre, 0, TunCsum::Csum).is_ok());
        assert!(t(TunKind::Gre, 0, TunCsum::Remcsum).is_err());
        assert!(t(TunKind::Gre, 47, TunCsum::None).is_err());
    }

    #[test]
    fn scheduler_names_round_trip() {
        for s in Scheduler::ALL {
            assert_eq!(Scheduler::from_name(s.name()), Some(*s));
        }
        assert_eq!(Scheduler::from_name("nope"), None);
    }
}

/// IPVS TCP connection states, in the kernel's order (`IP_VS_TCP_S_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// No packet seen yet.
    None = 0,
    /// Three-way handshake completed.
    Established,
    /// SYN seen from the real server.
    SynSent,
    /// SYN seen from the client.
    SynRecv,
    /// FIN seen from the real server first.
    FinWait,
    /// Both sides closed.
    TimeWait,
    /// Reset or closed.
    Close,
    /// FIN seen from the client first.
    CloseWait,
    /// Last ACK awaited.
    LastAck,
    /// Expected connection (application helpers).
    Listen,
    /// SYN-ACK seen (secure_tcp table).
    SynAck,
}

impl TcpState {
    /// Every state, in `IP_VS_TCP_S_*` order.
    pub const ALL: [Self; 11] = [
        Self::None,
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::SynAck,
    ];

    /// Whether a connection in this state counts in its server's active connections
    /// (`tcp_state_active` in ip_vs_proto_tcp.c): the handshake states and ESTABLISHED; the
    /// closing ones count as inactive. The kernel's IPVS (6.12, in the oracle) showed a
    /// SYN_RECV connection as active.
    pub fn active(self) -> bool {
        matches!(
            self,
            Self::Established | Self::SynSent | Self::SynRecv | Self::SynAck
        )
    }

    /// Return the state's name as `ipvsadm -L -c` prints it.
    pub fn name(self) -> &'static str {
        [
            "NONE",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "SYNACK",
        ][self as usize]
    }

    /// Return the state's timeout in milliseconds (IPVS defaults).
    pub fn timeout_ms(self) -> u64 {
        u64::from(crate::consts::TCP_TIMEOUTS_SECS[self as usize]) * 1000
    }

    #[cfg(test)]
    pub(crate) fn from_index(i: u8) -> Self {
        Self::ALL[usize::from(i) % Self::ALL.len()]
    }
}

/// IPVS SCTP association states, in the kernel's order (`IP_VS_SCTP_S_*`): the states as
/// the real server sees them, and a few of IPVS's own (INIT1 and REJECTED for shorter
/// timeouts, the cookie states for debugging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum SctpState {
    /// No packet seen yet.
    #[default]
    None = 0,
    /// The client's first INIT, no INIT ACK yet.
    Init1,
    /// The client's INIT again.
    Init,
    /// The server's INIT ACK sent.
    CookieSent,
    /// The client's COOKIE ECHO sent.
    CookieReplied,
    /// The server's INIT sent (an association the server starts).
    CookieWait,
    /// The client's INIT ACK sent.
    Cookie,
    /// The server's COOKIE ECHO sent.
    CookieEchoed,
    /// Associated.
    Established,
    /// SHUTDOWN sent by the server.
    ShutdownSent,
    /// SHUTDOWN sent by the client.
    ShutdownReceived,
    /// SHUTDOWN ACK sent.
    ShutdownAckSent,
    /// An INIT answered by an ABORT.
    Rejected,
    /// Ended.
    Closed,
}

impl SctpState {
    /// Every state, in `IP_VS_SCTP_S_*` order.
    pub const ALL: [Self; 14] = [
        Self::None,
        Self::Init1,
        Self::Init,
        Self::CookieSent,
        Self::CookieReplied,
        Self::CookieWait,
        Self::Cookie,
        Self::CookieEchoed,
        Self::Established,
        Self::ShutdownSent,
        Self::ShutdownReceived,
        Self::ShutdownAckSent,
        Self::Rejected,
        Self::Closed,
    ];

    /// Whether a connection in this state counts in its server's active connections: only
    /// ESTABLISHED (`set_sctp_state`).
    pub fn active(self) -> bool {
        self == Self::Established
    }

    /// The state's name as `ipvsadm -L -c` prints it (`sctp_state_name_table`).
    pub fn name(self) -> &'static str {
        [
            "NONE",
            "INIT1",
            "INIT",
            "C-SENT",
            "C-REPLIED",
            "C-WAIT",
            "COOKIE",
            "C-ECHOED",
            "ESTABLISHED",
            "S-SENT",
            "S-RECEIVED",
            "S-ACK-SENT",
            "REJECTED",
            "CLOSED",
        ][self as usize]
    }

    /// The state's timeout in milliseconds (IPVS's).
    pub fn timeout_ms(self) -> u64 {
        u64::from(crate::consts::SCTP_TIMEOUTS_SECS[self as usize]) * 1000
    }

    /// The state numbered `i` (`IP_VS_SCTP_S_*`, as sync messages carry it), if there is one.
    pub fn from_index(i: u8) -> Option<Self> {
        Self::ALL.get(usize::from(i)).copied()
    }
}

/// Where frames go on the link: which of wvs's interfaces and which MAC address (a real
/// server or its gateway; a client or its router, for replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// Index of the interface in the `--iface` list.
    pub iface: u8,
    /// Link-layer address of the next hop.
    pub mac: [u8; 6],
}

impl NextHop {
    /// Not known yet: a connection made from a sync message learns its client's next hop
    /// from the client's first packet.
    pub const UNKNOWN: Self = Self {
        iface: u8::MAX,
        mac: [0; 6],
    };

    const VALID: u64 = 1 << 63;

    /// As one word (for an atomic): valid bit, interface, MAC.
    pub(crate) fn pack(self) -> u64 {
        let mut v = Self::VALID | (u64::from(self.iface) << 48);
        for (i, b) in self.mac.iter().enumerate() {
            v |= u64::from(*b) << (8 * (5 - i));
        }
        v
    }

    /// From [`Self::pack`]'s word, `None` if it was none.
    pub(crate) fn unpack(v: u64) -> Option<Self> {
        if v & Self::VALID == 0 {
            return None;
        }
        let mut mac = [0u8; 6];
        for (i, b) in mac.iter_mut().enumerate() {
            *b = (v >> (8 * (5 - i))) as u8;
        }
        Some(Self {
            iface: (v >> 48) as u8,
            mac,
        })
    }
}
