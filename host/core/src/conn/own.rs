//! The director's own connections through one of its own VIPs: health checks of DR and
//! tunnel servers while the VIP is a local address (keepalived's VRRP puts it there on the
//! master).
//!
//! Why they need the datapath: a socket connected to a local address is answered by the
//! director's own stack, and the server's answer, from the VIP, is a martian to it (a
//! packet from one of its own addresses). So such a check connects to a stand-in address
//! ([`crate::consts::CHECK_STANDIN`]) that the check path turns into the VIP on the way
//! out, and the datapath turns the answer's source back into the stand-in and hands it to
//! the stack by its loopback, where no source is validated. This registry is what the
//! datapath knows of them: while it is empty (the common case) a packet costs one atomic
//! load here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use parking_lot::RwLock;

use crate::model::Protocol;

/// The director's checks through a local VIP, by protocol and local port.
#[derive(Debug, Default)]
pub struct OwnChecks {
    count: AtomicUsize,
    by_port: RwLock<HashMap<(Protocol, u16), SocketAddrV4>>,
}

impl OwnChecks {
    /// A check from local port `lport` through `vip` is in flight.
    pub fn insert(&self, proto: Protocol, lport: u16, vip: SocketAddrV4) {
        if self.by_port.write().insert((proto, lport), vip).is_none() {
            self.count.fetch_add(1, Relaxed);
        }
    }

    /// The check from `lport` is over.
    pub fn remove(&self, proto: Protocol, lport: u16) {
        if self.by_port.write().remove(&(proto, lport)).is_some() {
            self.count.fetch_sub(1, Relaxed);
        }
    }

    /// Whether a packet from `saddr:sport` to local port `dport` answers one of them.
    #[inline]
    pub fn answers(&self, proto: Protocol, saddr: IpAddr, sport: u16, dport: u16) -> bool {
        self.count.load(Relaxed) != 0
            && self
                .by_port
                .read()
                .get(&(proto, dport))
                .is_some_and(|v| IpAddr::V4(*v.ip()) == saddr && v.port() == sport)
    }

    /// How many are in flight.
    pub fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_vip_and_port_of_a_check_in_flight_answer_it() {
        let own = OwnChecks::default();
        let vip: SocketAddrV4 = "198.18.100.1:80".parse().expect("addr");
        assert!(!own.answers(Protocol::Tcp, (*vip.ip()).into(), 80, 40000));
        own.insert(Protocol::Tcp, 40000, vip);
        own.insert(Protocol::Tcp, 40000, vip);
        assert_eq!(own.len(), 1);
        assert!(own.answers(Protocol::Tcp, (*vip.ip()).into(), 80, 40000));
        assert!(
            !own.answers(Protocol::Udp, (*vip.ip()).into(), 80, 40000),
            "protocol"
        );
        assert!(
            !own.answers(Protocol::Tcp, (*vip.ip()).into(), 81, 40000),
            "port"
        );
        assert!(!own.answers(Protocol::Tcp, "198.18.100.2".parse().expect("a"), 80, 40000));
        assert!(
            !own.answers(Protocol::Tcp, (*vip.ip()).into(), 80, 40001),
            "local port"
        );
        own.remove(Protocol::Tcp, 40000);
        own.remove(Protocol::Tcp, 40000);
        assert!(own.is_empty());
        assert!(!own.answers(Protocol::Tcp, (*vip.ip()).into(), 80, 40000));
    }
}
