//! Connections: the entry IPVS keeps per flow ([`Conn`]), the TCP state machine ([`state`])
//! and the table that finds a connection from a packet of either direction ([`table`]).

pub mod app;
pub mod defense;
pub mod own;
pub mod persist;
pub mod state;
pub mod table;

use std::net::IpAddr;
use std::sync::Arc;

pub use crate::model::TcpState;

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

/// One tracked connection (`struct ip_vs_conn`), NAT mode.
#[derive(Debug)]
pub struct Conn {
    /// Protocol.
    pub proto: Protocol,
    /// Client address and port.
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address (IPVS's `cp->daddr`; a packet's [`ConnKey::daddr`] is its
    /// destination, the VIP on the way in).
    pub raddr: IpAddr,
    /// Real server port (`cp->dport`).
    pub rport: u16,
    /// TCP state (UDP connections stay in `None`).
    pub state: TcpState,
    /// Whether the connection counts as inactive on its real server (`IP_VS_CONN_F_INACTIVE`).
    pub inactive: bool,
    /// Set to have the table remove the connection when the current access ends.
    pub expire_now: bool,
    /// Timeout of the current state in milliseconds.
    pub timeout_ms: u64,
    /// Time (ms on the datapath clock) after which the connection is expired.
    pub expires: u64,
    /// Where replies go.
    pub client_hop: NextHop,
    /// The real server; keeps it alive after its removal until the connection goes.
    pub dest: Arc<Dest>,
    /// The service's counters (replies are counted there too).
    pub svc_stats: Arc<crate::stats::Stats>,
    /// The persistence template that placed it (IPVS's `cp->control`), kept alive by it.
    pub template: Option<persist::Control>,
    /// How its packets reach the real server: the server's method when it was created,
    /// kept for its life (IPVS binds `cp->packet_xmit` once).
    pub fwd: Forward,
    /// The source the real server sees: the client, or in full NAT a local address of the
    /// service's (`cp->laddr`), whose replies come back to it.
    pub laddr: IpAddr,
    /// The source port the real server sees (`cp->lport`).
    pub lport: u16,
    /// Whether `laddr:lport` was taken from a pool (full NAT) and goes back to it when the
    /// connection goes.
    pub lport_held: bool,
    /// No reply seen yet from a server whose replies bypass wvs (`IP_VS_CONN_F_NOOUTPUT`):
    /// its TCP state follows the client's packets alone (the INPUT_ONLY table).
    pub no_output: bool,
    /// The application helpers bound to it (`cp->app`), if any.
    pub app: Option<Arc<app::AppConn>>,
    /// The connection that expected it (`cp->control` of an FTP data connection).
    pub controller: Option<app::Controller>,
    /// An expected connection whose client port is not known yet (`IP_VS_CONN_F_NO_CPORT`):
    /// the client's first packet fills it.
    pub no_cport: bool,
    /// An expected connection whose real server port is not known yet: the server's first
    /// packet fills it (and the virtual port, when that was left open too).
    pub no_dport: bool,
    /// Packets from the client (`cp->in_pkts`, saturating): the defense drops entries with
    /// few first.
    pub in_pkts: u32,
}

impl Conn {
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
        };
        Self {
            proto: key.proto,
            caddr: key.saddr,
            cport: key.sport,
            vaddr: key.daddr,
            vport: key.dport,
            raddr: dest.addr,
            rport: if dest.port == 0 { key.dport } else { dest.port },
            state: TcpState::None,
            inactive: true,
            expire_now: false,
            timeout_ms,
            expires: now + timeout_ms,
            client_hop,
            dest,
            svc_stats,
            template: None,
            fwd,
            laddr: key.saddr,
            lport: key.sport,
            lport_held: false,
            no_output: !fwd.sees_replies(),
            app: None,
            controller: None,
            no_cport: false,
            no_dport: false,
            in_pkts: 0,
        }
    }

    /// Key of packets from the client (client -> VIP).
    #[inline]
    pub(crate) fn in_key(&self) -> ConnKey {
        ConnKey {
            proto: self.proto,
            saddr: self.caddr,
            sport: self.cport,
            daddr: self.vaddr,
            dport: self.vport,
        }
    }

    /// Key of replies from the real server (real server -> client, or to the local
    /// address in full NAT).
    #[inline]
    pub(crate) fn out_key(&self) -> ConnKey {
        ConnKey {
            proto: self.proto,
            saddr: self.raddr,
            sport: self.rport,
            daddr: self.laddr,
            dport: self.lport,
        }
    }

    /// Account a packet: advance the TCP state (or keep UDP's one) and take the state's
    /// timeout, as IPVS's `state_transition` does for every packet.
    #[inline]
    pub(crate) fn advance(
        &mut self,
        dir: Direction,
        flags: TcpFlags,
        timeouts: &StateTimeouts,
        secure: bool,
    ) {
        // set_tcp_state: a packet from the server clears NOOUTPUT; until then the client's
        // packets move the state by the INPUT_ONLY rows.
        let dir = match (self.no_output, dir) {
            (true, Direction::Output) => {
                self.no_output = false;
                dir
            }
            (true, _) => Direction::InputOnly,
            (false, d) => d,
        };
        match self.proto {
            Protocol::Tcp => self.tcp_transition(dir, flags, timeouts, secure),
            Protocol::Udp => {
                self.timeout_ms = timeouts.udp();
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
            if !self.inactive && !new.active() {
                self.dest.set_inactive(true);
                self.inactive = true;
            } else if self.inactive && new.active() {
                self.dest.set_inactive(false);
                self.inactive = false;
            }
            self.state = new;
            if new == TcpState::Established
                && let Some(c) = &self.template
            {
                c.assure();
            }
        }
        self.timeout_ms = timeouts.tcp(self.state);
    }

    /// Re-arm the expiry timer for the current state (`ip_vs_conn_put`).
    #[inline]
    pub fn touch(&mut self, now: u64) {
        self.expires = now + self.timeout_ms;
    }

    /// Whether a full table may evict it for a new connection: a TCP connection still in
    /// its handshake (SYN_RECV, or SYN_ACK under `secure_tcp`), or a UDP flow of one
    /// packet, that controls no other connection. A SYN flood's entries are all such.
    pub(crate) fn half_open(&self) -> bool {
        let early = match self.proto {
            Protocol::Tcp => matches!(self.state, TcpState::SynRecv | TcpState::SynAck),
            Protocol::Udp => self.in_pkts <= 1,
        };
        (early && !self.wildcard() && !self.app.as_ref().is_some_and(|a| a.controls()))
            || self.waiting_expectation()
    }

    /// Whether it is an expected connection no packet has used yet: such entries are as
    /// cheap to ask for as a SYN, so eviction and `drop_entry` may reclaim them.
    #[inline]
    pub(crate) fn waiting_expectation(&self) -> bool {
        self.controller
            .as_ref()
            .is_some_and(app::Controller::waiting)
    }

    /// Whether it is an expected connection still waiting for a port.
    #[inline]
    pub(crate) fn wildcard(&self) -> bool {
        self.no_cport || self.no_dport
    }

    /// Uncount the connection on its real server (`ip_vs_unbind_dest`); call once, when it goes.
    pub fn release(&self) {
        self.dest.unbind(self.inactive);
    }
}
