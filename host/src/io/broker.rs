//! The socket broker: a small process that keeps CAP_NET_RAW so that wvs need not.
//!
//! Creating a packet socket takes CAP_NET_RAW; using one does not. wvs opens its sockets at
//! start and then drops the capability, but an interface that is deleted and created
//! again needs new receive sockets: a socket in a fanout group cannot be bound to another
//! interface. So before dropping its capabilities wvs starts this broker (`wvs
//! socket-broker`, its own binary again) with a Unix datagram socket as its standard
//! input. The broker drops every capability but CAP_NET_RAW, sets `no_new_privs`, dies
//! with its parent, and does one thing: for each datagram it receives, it creates an
//! unbound `AF_PACKET` socket (which receives nothing until wvs binds it), or for `--io
//! xdp` an unbound `AF_XDP` one, and sends it back (`SCM_RIGHTS`). It reads nothing else
//! from anyone: its only input is its parent.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The requests the broker answers: the kind of socket wanted.
const ASK_PACKET: &[u8] = b"packet";
const ASK_XDP: &[u8] = b"xdp";

/// How long wvs waits for a socket from the broker.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// wvs's end: asks the broker for packet sockets.
#[derive(Debug)]
pub(crate) struct Broker {
    chan: UnixDatagram,
    child: Child,
}

impl Broker {
    /// Start the broker (while wvs still holds CAP_NET_RAW, which it inherits).
    pub fn start() -> io::Result<Self> {
        let (ours, theirs) = UnixDatagram::pair()?;
        ours.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .arg("socket-broker")
            .env_remove(crate::consts::API_TOKEN_ENV)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self { chan: ours, child })
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new, unbound `AF_PACKET` socket.
    pub(crate) fn packet_socket(&self) -> io::Result<OwnedFd> {
        self.ask(ASK_PACKET)
    }

    /// A new, unbound `AF_XDP` socket.
    pub(crate) fn xdp_socket(&self) -> io::Result<OwnedFd> {
        self.ask(ASK_XDP)
    }

    fn ask(&self, what: &[u8]) -> io::Result<OwnedFd> {
        self.chan.send(what)?;
        let mut buf = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            self.chan.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut got = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this process for this
                    // message (SCM_RIGHTS); nothing else owns it. Any beyond the first is
                    // closed by its OwnedFd.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    got.get_or_insert(owned);
                }
            }
        }
        let text = String::from_utf8_lossy(msg.iovs().next().unwrap_or_default()).into_owned();
        got.ok_or_else(|| io::Error::other(format!("the socket broker sent none: {text}")))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Closing our end ends it; a kill makes sure.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker's side (`wvs socket-broker`): serve the parent on standard input until it
/// goes away. Returns when it does.
pub fn serve() -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(io::Error::from)?;
    crate::privs::drop_to_net_raw().map_err(io::Error::other)?;
    // SAFETY: standard input is the datagram socket wvs passed (and only this function,
    // which runs once in the broker process, takes ownership of it).
    let chan = UnixDatagram::from(unsafe { OwnedFd::from_raw_fd(0) });
    let mut buf = [0u8; 64];
    loop {
        let n = match chan.recv(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        let made = match &buf[..n] {
            ASK_PACKET => super::socket::packet_fd(),
            ASK_XDP => super::xdp::xsk_fd(),
            _ => {
                let _ = chan.send(b"unknown request");
                continue;
            }
        };
        match made {
            Ok(fd) => {
                let fds = [fd.as_raw_fd()];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                let iov = [IoSlice::new(b"ok")];
                if sendmsg::<()>(chan.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                let _ = chan.send(e.to_string().as_bytes());
            }
        }
    }
}
