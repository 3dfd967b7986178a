//! A TUN device (`/dev/net/tun`): the balancer's own stack writes IP packets into it, wvs
//! reads them. Health checks of DR and tunnel real servers leave this way, so that wvs
//! sends them to the VIP the way it sends clients' packets (`health::via`).
//!
//! The device is not persistent: it goes with the file descriptor, so a wvs that dies
//! leaves no device behind.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;

/// `TUNSETIFF` (`_IOW('T', 202, int)`), which the libc crate does not name.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// `struct ifreq` as `TUNSETIFF` reads it: the name and the flags (the rest of the union
/// is padding).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Why a TUN device could not be created and brought up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The device itself (`/dev/net/tun`, `TUNSETIFF`).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Its state (up, MTU), or a route or address on it.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// It vanished before it could be set up.
    #[error("the device {0} is gone")]
    NoDevice(String),
}

/// An open TUN device.
#[derive(Debug)]
pub(crate) struct Tun {
    file: File,
    /// Its name.
    pub name: String,
}

impl Tun {
    /// Create the TUN device `name` (IP packets, no packet information header).
    pub fn open(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not an interface name"),
            ));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `req` is a live `ifreq`-sized buffer for the duration of the call, and the
        // descriptor is the open /dev/net/tun.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        super::socket::check(ret, "TUNSETIFF")?;
        Ok(Self {
            file,
            name: name.into(),
        })
    }

    /// Create the TUN device `name` and bring it up (with `mtu` if given); its index.
    pub async fn open_up(
        handle: &rtnetlink::Handle,
        name: &str,
        mtu: Option<u32>,
    ) -> Result<(Self, u32), TunError> {
        use futures::TryStreamExt;
        let tun = Self::open(name)?;
        let link = handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await?
            .ok_or_else(|| TunError::NoDevice(name.into()))?;
        let index = link.header.index;
        let mut set = rtnetlink::LinkUnspec::new_with_index(index).up();
        if let Some(m) = mtu {
            set = set.mtu(m);
        }
        handle.link().set(set.build()).execute().await?;
        Ok((tun, index))
    }

    /// Read one IP packet (blocking).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }
}
