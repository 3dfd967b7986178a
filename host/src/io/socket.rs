//! AF_PACKET sockets: one per interface and worker, all of an interface's sockets in one
//! `PACKET_FANOUT_HASH` group so that the kernel spreads flows over the workers.
//!
//! Options, and why:
//! - `PACKET_VNET_HDR`: each frame comes with a `virtio_net_hdr`, so GRO/GSO super-packets
//!   and partial checksums are forwarded correctly instead of being mangled or refused.
//! - `PACKET_IGNORE_OUTGOING`: do not receive what this host sends (our own transmissions
//!   included), only what arrives.
//! - `PACKET_QDISC_BYPASS`: frames wvs sends skip the qdisc layer, as a router's forwarded
//!   packets would not wait in one either.
//! - The socket is created with protocol 0 and bound with `ETH_P_ALL` and the interface
//!   index, so it never sees a frame from another interface, even between `socket` and `bind`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::consts::SOCKET_RCVBUF;

/// A bound packet socket.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::os::fd::AsFd for PacketSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(super) fn check(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    what: &str,
) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its exact size is passed.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(ret, what).map(|_| ())
}

/// A socket option: (level, option, value, name for errors).
pub(super) type SockOpt = (libc::c_int, libc::c_int, libc::c_int, &'static str);

/// What every receiving packet socket of wvs sets (see the module's doc).
pub(super) const RX_OPTIONS: [SockOpt; 3] = [
    (
        libc::SOL_PACKET,
        libc::PACKET_VNET_HDR,
        1,
        "PACKET_VNET_HDR",
    ),
    (
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        1,
        "PACKET_IGNORE_OUTGOING",
    ),
    (
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        1,
        "PACKET_QDISC_BYPASS",
    ),
];

/// A new `AF_PACKET` raw socket (protocol 0: it receives nothing until bound).
pub(super) fn packet_fd() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    let raw = check(raw, "socket(AF_PACKET)")?;
    // SAFETY: `raw` is a new, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Set `options` on `fd`, in order.
pub(super) fn set_options(fd: RawFd, options: &[SockOpt]) -> io::Result<()> {
    options
        .iter()
        .try_for_each(|&(level, name, value, what)| setsockopt_int(fd, level, name, value, what))
}

/// A bigger receive buffer (`SO_RCVBUFFORCE`; without CAP_NET_ADMIN, as big as allowed).
pub(super) fn force_rcvbuf(fd: RawFd, bytes: libc::c_int) -> io::Result<()> {
    if setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        bytes,
        "SO_RCVBUFFORCE",
    )
    .is_err()
    {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes, "SO_RCVBUF")?;
    }
    Ok(())
}

/// A bigger send buffer (`SO_SNDBUFFORCE`; without CAP_NET_ADMIN, as big as allowed).
pub(super) fn force_sndbuf(fd: RawFd, bytes: libc::c_int) -> io::Result<()> {
    if setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        bytes,
        "SO_SNDBUFFORCE",
    )
    .is_err()
    {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes, "SO_SNDBUF")?;
    }
    Ok(())
}

impl PacketSocket {
    /// Open a packet socket on interface `ifindex` and, if `fanout_group` is given, join it.
    pub fn open(ifindex: u32, fanout_group: Option<u16>) -> io::Result<Self> {
        Self::open_on(packet_fd()?, ifindex, fanout_group)
    }

    /// As [`Self::open`], on a socket opened elsewhere (the [`super::broker`]'s).
    pub(crate) fn open_on(
        fd: OwnedFd,
        ifindex: u32,
        fanout_group: Option<u16>,
    ) -> io::Result<Self> {
        set_options(fd.as_raw_fd(), &RX_OPTIONS)?;
        let s = Self { fd };
        let fd = s.as_raw_fd();
        force_rcvbuf(fd, SOCKET_RCVBUF)?;
        bind_all(fd, ifindex)?;
        if let Some(group) = fanout_group {
            join_fanout(fd, group)?;
        }
        Ok(s)
    }

    /// Frames the kernel dropped since the last call because the socket's receive queue
    /// was full (`PACKET_STATISTICS`, which the kernel resets on each read). They never
    /// reach wvs, so without this they would be lost without a count.
    pub(crate) fn take_queue_drops(&self) -> io::Result<u32> {
        take_drops(self.as_raw_fd())
    }

    /// Open a packet socket that only sends, on interface `ifindex`: bound with protocol 0,
    /// the kernel delivers nothing to it. The ring backend sends what does not fit a TX
    /// ring slot through it (GSO super-frames, jumbo frames, a full ring).
    pub(crate) fn open_tx(ifindex: u32) -> io::Result<Self> {
        Self::open_tx_on(packet_fd()?, ifindex)
    }

    /// As [`Self::open_tx`], on a socket opened elsewhere (the [`super::broker`]'s).
    pub(crate) fn open_tx_on(fd: OwnedFd, ifindex: u32) -> io::Result<Self> {
        set_options(fd.as_raw_fd(), &[RX_OPTIONS[0], RX_OPTIONS[2]])?;
        let s = fd.as_raw_fd();
        bind_to(s, ifindex, 0)?;
        Ok(Self { fd })
    }

    /// Bind this sending socket to another interface (one deleted and created again has a
    /// new index); a socket that only sends is in no fanout group, so it can be.
    pub(crate) fn rebind_tx(&self, ifindex: u32) -> io::Result<()> {
        bind_to(self.as_raw_fd(), ifindex, 0)
    }

    /// Send `frame` (vnet header first) at once, without waiting.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is readable for its length for the duration of the call.
        let n = unsafe {
            libc::send(
                self.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Bind `fd` to interface `ifindex` for every protocol (`ETH_P_ALL`).
pub(super) fn bind_all(fd: RawFd, ifindex: u32) -> io::Result<()> {
    bind_to(fd, ifindex, libc::ETH_P_ALL as u16)
}

pub(super) fn bind_to(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value to start from.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and its exact size is passed.
    let ret = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    check(ret, "bind(AF_PACKET)").map(|_| ())
}

/// `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` (Linux 6.9): the group's own hook skips what the
/// host sends, as `PACKET_IGNORE_OUTGOING` does for a socket alone; without it a group
/// still gets (a clone of) every frame sent on the interface by another path than wvs's
/// rings, such as what the offload program redirects.
const FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// Join the interface's `PACKET_FANOUT_HASH` group `group`, ignoring outgoing frames where
/// the kernel can.
pub(super) fn join_fanout(fd: RawFd, group: u16) -> io::Result<()> {
    let arg =
        |flags: u32| (u32::from(group) | ((libc::PACKET_FANOUT_HASH | flags) << 16)) as libc::c_int;
    let set = |flags| {
        setsockopt_int(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            arg(flags),
            "PACKET_FANOUT",
        )
    };
    match set(FANOUT_FLAG_IGNORE_OUTGOING) {
        // An older kernel does not know the flag.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => set(0),
        r => r,
    }
}

/// `PACKET_STATISTICS`' drops (a full queue or ring), which the kernel resets on each read.
pub(super) fn take_drops(fd: RawFd) -> io::Result<u32> {
    // SAFETY: tpacket_stats is plain old data; all-zero is a valid value.
    let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st` and `len` live across the call and `len` is `st`'s exact size.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    check(ret, "PACKET_STATISTICS")?;
    Ok(st.tp_drops)
}

/// Raw IPv4 and IPv6 sockets with the IP header included (`IPPROTO_RAW`, which implies
/// it for IPv6 too): what wvs hands the balancer's own stack (a local real server's
/// packets, bypass) goes out through them as if the balancer had sent it, so the stack
/// routes it or delivers it locally.
#[derive(Debug)]
pub(crate) struct StackSocket {
    fd: OwnedFd,
    /// `None` where the kernel has IPv6 off: IPv6 packets for the stack are dropped.
    fd6: Option<OwnedFd>,
}

/// A raw `IPPROTO_RAW` socket of `family`.
fn raw_socket(family: libc::c_int, what: &str) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; the descriptor is checked below.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    let fd = check(fd, what)?;
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl StackSocket {
    /// Open the sockets.
    pub fn new() -> io::Result<Self> {
        let fd = raw_socket(libc::AF_INET, "socket(AF_INET, SOCK_RAW, IPPROTO_RAW)")?;
        let fd6 = raw_socket(libc::AF_INET6, "socket(AF_INET6, SOCK_RAW, IPPROTO_RAW)")
            .inspect_err(|e| tracing::warn!("no IPv6 to the own stack: {e}"))
            .ok();
        Ok(Self { fd, fd6 })
    }

    /// A stand-in for the tests that send nothing to the stack: a UDP socket, which needs
    /// no privilege.
    #[cfg(test)]
    pub(crate) fn stand_in() -> io::Result<Self> {
        Ok(Self {
            fd: std::net::UdpSocket::bind("127.0.0.1:0")?.into(),
            fd6: None,
        })
    }

    /// Send the IP packet `pkt` (header included) to `daddr`, without waiting.
    pub(crate) fn send_to(&self, pkt: &[u8], daddr: std::net::IpAddr) -> io::Result<usize> {
        let n = match daddr {
            std::net::IpAddr::V4(a) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `pkt` and `sa` live across the call and their exact sizes are
                // passed.
                unsafe {
                    libc::sendto(
                        self.fd.as_raw_fd(),
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        libc::MSG_DONTWAIT,
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            std::net::IpAddr::V6(a) => {
                let Some(fd6) = &self.fd6 else {
                    return Err(io::Error::from(io::ErrorKind::Unsupported));
                };
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: `pkt` and `sa` live across the call and their exact sizes are
                // passed.
                unsafe {
                    libc::sendto(
                        fd6.as_raw_fd(),
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        libc::MSG_DONTWAIT,
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}
