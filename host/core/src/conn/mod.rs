//! Connections: the entry IPVS keeps per flow ([`Conn`]), the TCP state machine ([`state`])
//! and the table that finds a connection from a packet of either direction ([`table`]).

pub mod app;
pub mod defense;
pub mod own;
pub mod persist;
pub mod sctp;
pub mod state;
pub mod sync;
pub mod table;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

pub use crate::model::{SctpState, TcpState};
pub(crate) use sctp::SctpEvent;

pub(crate) use state::{Direction, TcpFlags};
pub use table::ConnTable;
pub use table::InsertError;

use crate::consts::UDP_TIMEOUT_SECS;
use crate::model::{Forward, NextHop, Protocol};
use crate::service::Dest;
use crate::spec::StateTimeouts;

/// Lookup key of a packet: protocol and both endpoints, as the packet carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Protocol.
    pub proto: Protocol,
    /// Source address.
    pub saddr: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub daddr: IpAddr,
    /// Destination port.
    pub dport: u16,
}

bitflags::bitflags! {
    /// A connection's yes/no facts, one bit each (IPVS keeps them in `cp->flags` too).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    struct Flags: u8 {
        /// Counted as inactive on its real server (`IP_VS_CONN_F_INACTIVE`).
        const INACTIVE = 1 << 0;
        /// The table removes it when the current access ends.
        const EXPIRE_NOW = 1 << 1;
        /// `laddr:lport` came from a full-NAT pool and goes back to it when the connection
        /// goes. Not derivable from the method: an expectation of a full-NAT server keeps the
        /// client's endpoint and holds no port.
        const LPORT_HELD = 1 << 2;
        /// No reply seen yet from a server whose replies bypass wvs (`IP_VS_CONN_F_NOOUTPUT`).
        const NO_OUTPUT = 1 << 3;
        /// An expectation whose client port is not known yet (`IP_VS_CONN_F_NO_CPORT`).
        const NO_CPORT = 1 << 4;
        /// An expectation whose real server port is not known yet.
        const NO_DPORT = 1 << 5;
        /// Its state changed since it was last sent to the backups (IPVS compares
        /// `cp->state` with `cp->old_state`).
        const STATE_CHANGED = 1 << 6;
        /// Made from a sync message (`IP_VS_CONN_F_SYNC`).
        const SYNCED = 1 << 7;
    }
}

/// What few connections carry, kept beside the entry so that the rest stay small: the
/// addresses of a connection that is not IPv4 end to end, and the application helpers'
/// links. A connection that has any of it allocates this block once, when it is made or
/// bound (as IPVS allocates every `ip_vs_conn`); plain IPv4 connections never do.
#[derive(Debug, Default)]
struct Side {
    /// Client, virtual, real server and local address, when any is not IPv4.
    wide: Option<[IpAddr; 4]>,
    /// The application helpers bound to it (`cp->app`).
    app: Option<Arc<app::AppConn>>,
    /// The connection that expected it (`cp->control` of an FTP data connection).
    controller: Option<app::Controller>,
    /// An SCTP association's state: kept here, so that TCP's and UDP's entries stay as
    /// small as they were (an SCTP entry takes this block from its first packet).
    sctp: SctpState,
}

/// One tracked connection (`struct ip_vs_conn`).
///
/// Kept small, since a balancer holds millions: the four addresses of an IPv4 connection
/// inline (16 bytes), the flags in one byte, the timeout in 32 bits, and what few
/// connections use in a side block. `conn::tests::an_entry_stays_small` holds it there.
#[derive(Debug)]
pub struct Conn {
    /// Client, virtual, real server and local address of a connection that is IPv4 end to
    /// end (unused when `side.wide` holds them).
    v4: [Ipv4Addr; 4],
    /// The real server; keeps it alive after its removal until the connection goes.
    pub dest: Arc<Dest>,
    /// The service's counters (replies are counted there too).
    pub svc_stats: Arc<crate::stats::Stats>,
    /// The persistence template that placed it (IPVS's `cp->control`), kept alive by it.
    pub template: Option<persist::Control>,
    side: Option<Box<Side>>,
    /// Time (ms on the datapath clock) after which the connection is expired.
    pub expires: u64,
    /// Timeout of the current state in milliseconds (saturating at `u32::MAX`, 49 days;
    /// IPVS's jiffies-based timeouts overflow sooner).
    timeout_ms: u32,
    /// Packets from the client (`cp->in_pkts`, saturating): the defense drops entries with
    /// few first.
    pub in_pkts: u32,
    /// Client port.
    pub cport: u16,
    /// Virtual port.
    pub vport: u16,
    /// Real server port (`cp->dport`).
    pub rport: u16,
    /// The source port the real server sees (`cp->lport`): the client's, or in full NAT
    /// one of a local address's ports.
    pub lport: u16,
    /// How its packets reach the real server: the server's method when it was created,
    /// kept for its life (IPVS binds `cp->packet_xmit` once).
    pub fwd: Forward,
    /// Where replies go.
    pub client_hop: NextHop,
    /// Protocol.
    pub proto: Protocol,
    /// TCP state (UDP and SCTP connections stay in `None`).
    pub state: TcpState,
    flags: Flags,
    /// When it was last sent to the backups, as `conn::sync` keeps it (IPVS's
    /// `sync_endtime`); it fills what was padding.
    sync_endtime: u16,
}

/// The four addresses, in `Conn::v4`'s and `Side::wide`'s order.
const C: usize = 0;
const V: usize = 1;
const R: usize = 2;
const L: usize = 3;

impl Conn {
    /// The mark of its fwmark service (`cp->fwmark`; 0: an address service's), which the
    /// sync daemon's records carry so that a backup finds the service. Its server knows.
    pub fn fwmark(&self) -> u32 {
        self.dest.fwmark()
    }

    /// A new connection bound to `dest`, counted on it as IPVS does (`ip_vs_conn_new`).
    pub fn new(
        key: &ConnKey,
        dest: Arc<Dest>,
        svc_stats: Arc<crate::stats::Stats>,
        client_hop: NextHop,
        now: u64,
    ) -> Self {
        dest.bind();
        let fwd = dest.forward();
        let timeout_ms = match key.proto {
            Protocol::Tcp => TcpState::None.timeout_ms(),
            Protocol::Udp => u64::from(UDP_TIMEOUT_SECS) * 1000,
            Protocol::Sctp => SctpState::None.timeout_ms(),
        };
        let mut flags = Flags::INACTIVE;
        flags.set(Flags::NO_OUTPUT, !fwd.sees_replies());
        let mut conn = Self {
            v4: [Ipv4Addr::UNSPECIFIED; 4],
            dest,
            svc_stats,
            template: None,
            side: None,
            expires: 0,
            timeout_ms: 0,
            in_pkts: 0,
            cport: key.sport,
            vport: key.dport,
            rport: 0,
            lport: key.sport,
            fwd,
            client_hop,
            proto: key.proto,
            state: TcpState::None,
            flags,
            sync_endtime: 0,
        };
        let raddr = conn.dest.addr;
        conn.rport = if conn.dest.port == 0 {
            key.dport
        } else {
            conn.dest.port
        };
        conn.set_addrs([key.saddr, key.daddr, raddr, key.saddr]);
        conn.set_timeout_ms(timeout_ms);
        conn.touch(now);
        conn
    }

    fn set_addrs(&mut self, a: [IpAddr; 4]) {
        let v4 = a.map(|a| match a {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        });
        if let [Some(c), Some(v), Some(r), Some(l)] = v4 {
            self.v4 = [c, v, r, l];
            if let Some(side) = &mut self.side {
                side.wide = None;
            }
        } else {
            self.side_mut().wide = Some(a);
        }
    }

    #[inline]
    fn addr(&self, i: usize) -> IpAddr {
        match self.side.as_ref().and_then(|s| s.wide.as_ref()) {
            Some(wide) => wide[i],
            None => IpAddr::V4(self.v4[i]),
        }
    }

    fn set_addr(&mut self, i: usize, a: IpAddr) {
        let mut all = [self.addr(C), self.addr(V), self.addr(R), self.addr(L)];
        all[i] = a;
        self.set_addrs(all);
    }

    fn side_mut(&mut self) -> &mut Side {
        self.side.get_or_insert_with(Box::default)
    }

    /// Client address.
    #[inline]
    pub fn caddr(&self) -> IpAddr {
        self.addr(C)
    }

    /// Virtual address.
    #[inline]
    pub fn vaddr(&self) -> IpAddr {
        self.addr(V)
    }

    /// Real server address (IPVS's `cp->daddr`; a packet's [`ConnKey::daddr`] is its
    /// destination, the VIP on the way in).
    #[inline]
    pub fn raddr(&self) -> IpAddr {
        self.addr(R)
    }

    /// The source the real server sees: the client, or in full NAT a local address of the
    /// service's (`cp->laddr`), whose replies come back to it.
    #[inline]
    pub fn laddr(&self) -> IpAddr {
        self.addr(L)
    }

    /// Set the source the real server sees (full NAT).
    pub(crate) fn set_local(&mut self, addr: IpAddr, port: u16) {
        self.set_addr(L, addr);
        self.lport = port;
    }

    /// The application helpers bound to it (`cp->app`), if any.
    #[inline]
    pub fn app(&self) -> Option<&Arc<app::AppConn>> {
        self.side.as_ref().and_then(|s| s.app.as_ref())
    }

    /// Bind application helpers to it.
    pub(crate) fn set_app(&mut self, app: Arc<app::AppConn>) {
        self.side_mut().app = Some(app);
    }

    /// The connection that expected it, if any.
    #[inline]
    pub fn controller(&self) -> Option<&app::Controller> {
        self.side.as_ref().and_then(|s| s.controller.as_ref())
    }

    /// The connection that expected it, to mark it used.
    #[inline]
    pub(crate) fn controller_mut(&mut self) -> Option<&mut app::Controller> {
        self.side.as_mut().and_then(|s| s.controller.as_mut())
    }

    /// Link it to the connection that expected it.
    pub(crate) fn set_controller(&mut self, c: app::Controller) {
        self.side_mut().controller = Some(c);
    }

    /// Timeout of the current state in milliseconds.
    #[inline]
    pub fn timeout_ms(&self) -> u64 {
        u64::from(self.timeout_ms)
    }

    /// Take a timeout (saturating at `u32::MAX` ms).
    #[inline]
    pub fn set_timeout_ms(&mut self, ms: u64) {
        self.timeout_ms = u32::try_from(ms).unwrap_or(u32::MAX);
    }

    /// Whether the connection counts as inactive on its real server.
    #[inline]
    pub fn inactive(&self) -> bool {
        self.flags.contains(Flags::INACTIVE)
    }

    /// Whether the table removes it when the current access ends.
    #[inline]
    pub fn expire_now(&self) -> bool {
        self.flags.contains(Flags::EXPIRE_NOW)
    }

    /// Have the table remove it when the current access ends.
    #[inline]
    pub fn set_expire_now(&mut self, on: bool) {
        self.flags.set(Flags::EXPIRE_NOW, on);
    }

    /// Whether its local port was taken from a full-NAT pool.
    #[inline]
    pub(crate) fn lport_held(&self) -> bool {
        self.flags.contains(Flags::LPORT_HELD)
    }

    #[inline]
    pub(crate) fn set_lport_held(&mut self, on: bool) {
        self.flags.set(Flags::LPORT_HELD, on);
    }

    /// No reply seen yet from a server whose replies bypass wvs: its TCP state follows the
    /// client's packets alone (the INPUT_ONLY table).
    #[inline]
    pub fn no_output(&self) -> bool {
        self.flags.contains(Flags::NO_OUTPUT)
    }

    /// An expected connection whose client port is not known yet: the client's first
    /// packet fills it.
    #[inline]
    pub fn no_cport(&self) -> bool {
        self.flags.contains(Flags::NO_CPORT)
    }

    /// An expected connection whose real server port is not known yet: the server's first
    /// packet fills it (and the virtual port, when that was left open too).
    #[inline]
    pub fn no_dport(&self) -> bool {
        self.flags.contains(Flags::NO_DPORT)
    }

    /// Set or clear the unknown ports of an expected connection.
    #[inline]
    pub(crate) fn set_wildcard_ports(&mut self, no_cport: bool, no_dport: bool) {
        self.flags.set(Flags::NO_CPORT, no_cport);
        self.flags.set(Flags::NO_DPORT, no_dport);
    }

    /// Key of packets from the client (client -> VIP).
    #[inline]
    pub(crate) fn in_key(&self) -> ConnKey {
        ConnKey {
            proto: self.proto,
            saddr: self.caddr(),
            sport: self.cport,
            daddr: self.vaddr(),
            dport: self.vport,
        }
    }

    /// Key of replies from the real server (real server -> client, or to the local
    /// address in full NAT).
    #[inline]
    pub(crate) fn out_key(&self) -> ConnKey {
        ConnKey {
            proto: self.proto,
            saddr: self.raddr(),
            sport: self.rport,
            daddr: self.laddr(),
            dport: self.lport,
        }
    }

    /// Account a packet: advance the TCP or SCTP state (or keep UDP's one) by the packet's
    /// TCP flags or SCTP chunks, and take the state's timeout, as IPVS's
    /// `state_transition` does for every packet.
    #[inline]
    pub(crate) fn advance(
        &mut self,
        dir: Direction,
        (flags, chunks): (TcpFlags, SctpEvent),
        timeouts: &StateTimeouts,
        secure: bool,
    ) {
        // set_tcp_state: a packet from the server clears NOOUTPUT; until then the client's
        // packets move the state by the INPUT_ONLY rows.
        let dir = match (self.no_output(), dir) {
            (true, Direction::Output) => {
                self.flags.remove(Flags::NO_OUTPUT);
                dir
            }
            (true, _) => Direction::InputOnly,
            (false, d) => d,
        };
        match self.proto {
            Protocol::Tcp => self.tcp_transition(dir, flags, timeouts, secure),
            Protocol::Sctp => self.sctp_transition(dir, chunks),
            Protocol::Udp => {
                self.set_timeout_ms(timeouts.udp());
                if dir == Direction::Output
                    && let Some(c) = &self.template
                {
                    c.assure();
                }
            }
        }
    }

    /// Advance the TCP state for a packet and move the connection between the real server's
    /// active and inactive counts as `set_tcp_state` does.
    pub(crate) fn tcp_transition(
        &mut self,
        dir: Direction,
        flags: TcpFlags,
        timeouts: &StateTimeouts,
        secure: bool,
    ) {
        let new = state::next_state(self.state, dir, flags, secure);
        if new != self.state {
            self.state_changed(new.active(), new == TcpState::Established);
            self.state = new;
        }
        self.set_timeout_ms(timeouts.tcp(self.state));
    }

    /// A move to a state that is `active` or not, and `established` or not (TCP's or
    /// SCTP's): between the server's active and inactive counts, marked for the sync
    /// daemon, and an ESTABLISHED connection's template assured (`set_tcp_state`,
    /// `set_sctp_state`).
    fn state_changed(&mut self, active: bool, established: bool) {
        if !self.inactive() && !active {
            self.dest.set_inactive(true);
            self.flags.insert(Flags::INACTIVE);
        } else if self.inactive() && active {
            self.dest.set_inactive(false);
            self.flags.remove(Flags::INACTIVE);
        }
        self.flags.insert(Flags::STATE_CHANGED);
        if established && let Some(c) = &self.template {
            c.assure();
        }
    }

    /// Advance the SCTP state for a packet, move the connection between its server's active
    /// and inactive counts (only ESTABLISHED is active) and take the state's timeout, as
    /// `set_sctp_state` does.
    fn sctp_transition(&mut self, dir: Direction, chunks: SctpEvent) {
        let new = sctp::next_state(self.sctp_state(), dir, chunks);
        if new != self.sctp_state() {
            self.state_changed(new.active(), new == SctpState::Established);
            self.set_sctp_state(new);
        }
        self.set_timeout_ms(new.timeout_ms());
    }

    /// An SCTP connection's state (`None` for TCP and UDP).
    #[inline]
    pub fn sctp_state(&self) -> SctpState {
        self.side.as_ref().map_or(SctpState::None, |s| s.sctp)
    }

    /// Set an SCTP connection's state.
    pub(crate) fn set_sctp_state(&mut self, s: SctpState) {
        if s != self.sctp_state() {
            self.side_mut().sctp = s;
        }
    }

    /// Its state's name as `ipvsadm -L -c` prints it: TCP's or SCTP's, UDP's `UDP`.
    pub fn state_name(&self) -> &'static str {
        match self.proto {
            Protocol::Tcp => self.state.name(),
            Protocol::Udp => "UDP",
            Protocol::Sctp => self.sctp_state().name(),
        }
    }

    /// Its state as IPVS numbers it (`cp->state`, which sync messages carry): TCP's or
    /// SCTP's index, 0 for UDP.
    pub fn state_index(&self) -> u8 {
        match self.proto {
            Protocol::Tcp => self.state as u8,
            Protocol::Udp => 0,
            Protocol::Sctp => self.sctp_state() as u8,
        }
    }

    /// Re-arm the expiry timer for the current state (`ip_vs_conn_put`).
    #[inline]
    pub fn touch(&mut self, now: u64) {
        self.expires = now + self.timeout_ms();
    }

    /// When its last packet passed (ms): its timer less its state's timeout.
    pub(crate) fn last_seen(&self) -> u64 {
        self.expires.saturating_sub(self.timeout_ms())
    }

    /// Whether a full table may evict it for a new connection: a TCP connection still in
    /// its handshake (SYN_RECV, or SYN_ACK under `secure_tcp`), or a UDP flow of one
    /// packet, that controls no other connection. A SYN flood's entries are all such.
    pub(crate) fn half_open(&self) -> bool {
        let early = match self.proto {
            Protocol::Tcp => matches!(self.state, TcpState::SynRecv | TcpState::SynAck),
            Protocol::Udp => self.in_pkts <= 1,
            Protocol::Sctp => matches!(self.sctp_state(), SctpState::Init1 | SctpState::Init),
        };
        (early && !self.wildcard() && !self.app().is_some_and(|a| a.controls()))
            || self.waiting_expectation()
    }

    /// Whether it is an expected connection no packet has used yet: such entries are as
    /// cheap to ask for as a SYN, so eviction and `drop_entry` may reclaim them.
    #[inline]
    pub(crate) fn waiting_expectation(&self) -> bool {
        self.controller().is_some_and(app::Controller::waiting)
    }

    /// Whether it is an expected connection still waiting for a port.
    #[inline]
    pub(crate) fn wildcard(&self) -> bool {
        self.no_cport() || self.no_dport()
    }

    /// Uncount the connection on its real server (`ip_vs_unbind_dest`); call once, when it goes.
    pub fn release(&self) {
        self.dest.unbind(self.inactive());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn conn(client: IpAddr, vip: IpAddr, real: IpAddr) -> Conn {
        let key = ConnKey {
            proto: Protocol::Tcp,
            saddr: client,
            sport: 40000,
            daddr: vip,
            dport: 80,
        };
        let dest = Arc::new(Dest::new(real, 8080));
        Conn::new(
            &key,
            dest,
            Default::default(),
            NextHop {
                iface: 0,
                mac: [2, 0, 0, 0, 0, 1],
            },
            0,
        )
    }

    /// A million of them is what the entry's size is paid for: 88 bytes, with the slab's
    /// tag and two index entries under the 128 per connection the benchmark measures.
    #[test]
    fn an_entry_stays_small() {
        assert!(
            std::mem::size_of::<Conn>() <= 88,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
    }

    #[test]
    fn ipv4_addresses_live_inline_and_others_beside() {
        let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
        let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
        let mut c = conn(v4("198.18.0.2"), v4("198.18.100.1"), v4("198.19.0.11"));
        assert!(c.side.is_none());
        assert_eq!(
            (c.caddr(), c.vaddr(), c.raddr(), c.laddr()),
            (
                v4("198.18.0.2"),
                v4("198.18.100.1"),
                v4("198.19.0.11"),
                v4("198.18.0.2")
            )
        );
        assert_eq!(c.out_key().daddr, v4("198.18.0.2"));
        assert_eq!(c.out_key().saddr, v4("198.19.0.11"));
        assert_eq!((c.out_key().sport, c.out_key().dport), (8080, 40000));
        // Full NAT between the families: the local address takes the server's.
        c.set_local(v6("2001:db8::1"), 5000);
        assert_eq!(c.laddr(), v6("2001:db8::1"));
        assert_eq!(c.caddr(), v4("198.18.0.2"));
        assert_eq!(c.out_key().daddr, v6("2001:db8::1"));
        assert_eq!(c.lport, 5000);
        // Back to IPv4 end to end: inline again.
        c.set_local(v4("198.19.0.1"), 5001);
        assert!(c.side.as_ref().is_some_and(|s| s.wide.is_none()));
        assert_eq!(c.in_key().saddr, v4("198.18.0.2"));
        assert_eq!(c.out_key().daddr, v4("198.19.0.1"));

        let c = conn(
            v6("2001:db8::2"),
            v6("2001:db8:100::1"),
            v6("2001:db8:1::11"),
        );
        assert_eq!(c.in_key().saddr, v6("2001:db8::2"));
        assert_eq!(c.in_key().daddr, v6("2001:db8:100::1"));
        assert_eq!(c.out_key().saddr, v6("2001:db8:1::11"));
        assert_eq!(c.laddr(), v6("2001:db8::2"));
    }

    #[test]
    fn a_timeout_past_u32_saturates() {
        let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
        let mut c = conn(v4("198.18.0.2"), v4("198.18.100.1"), v4("198.19.0.11"));
        c.set_timeout_ms(u64::from(u32::MAX) + 5);
        assert_eq!(c.timeout_ms(), u64::from(u32::MAX));
        c.set_timeout_ms(900_000);
        c.touch(1000);
        assert_eq!(c.expires, 901_000);
    }
}
