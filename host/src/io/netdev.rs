//! The kernel's `netdev` generic netlink family: what an interface's XDP can do
//! (`NETDEV_A_DEV_XDP_FEATURES`, kernel 6.3 and later).
//!
//! `--io xdp` asks it whether a frame its program redirects back into the interface it
//! came from leaves: a NIC's driver says so with `NDO_XMIT`, and a veth says it only while
//! its peer can take such frames (the peer has GRO on or an XDP program of its own;
//! otherwise the kernel drops them, counted nowhere wvs could see).

use std::io;

use netlink_packet_core::{
    DefaultNla, Emitable, NLM_F_REQUEST, NetlinkBuffer, NlaBuffer, NlasIterator,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

/// The generic netlink controller's family and its command and attributes
/// (include/uapi/linux/genetlink.h).
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// The `netdev` family's command and attributes (include/uapi/linux/netdev.h).
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `enum netdev_xdp_act`: XDP_ABORTED, DROP, PASS and TX.
pub const XDP_ACT_BASIC: u64 = 1;
/// `enum netdev_xdp_act`: frames sent by others' XDP programs (XDP_REDIRECT into the
/// device).
pub const XDP_ACT_NDO_XMIT: u64 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDR: usize = 16;
const GENL_HDR: usize = 4;

/// A socket of the `netdev` family, its number resolved.
pub struct Netdev {
    sock: Socket,
    family: u16,
    seq: u32,
}

impl std::fmt::Debug for Netdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netdev")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl Netdev {
    /// Open a generic netlink socket and look the family up (absent before kernel 6.3).
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let mut n = Self {
            sock,
            family: GENL_ID_CTRL,
            seq: 0,
        };
        let reply = n.ask(
            GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            DefaultNla::new(CTRL_ATTR_FAMILY_NAME, b"netdev\0".to_vec()),
        )?;
        let id = attr(&reply, CTRL_ATTR_FAMILY_ID)
            .and_then(|v| v.get(..2))
            .ok_or_else(|| bad("no family id for netdev"))?;
        n.family = u16::from_ne_bytes([id[0], id[1]]);
        Ok(n)
    }

    /// The XDP features (`XDP_ACT_*`) of interface `ifindex`.
    pub fn xdp_features(&mut self, ifindex: u32) -> io::Result<u64> {
        let reply = self.ask(
            self.family,
            NETDEV_CMD_DEV_GET,
            DefaultNla::new(NETDEV_A_DEV_IFINDEX, ifindex.to_ne_bytes().to_vec()),
        )?;
        let v = attr(&reply, NETDEV_A_DEV_XDP_FEATURES)
            .and_then(|v| v.get(..8))
            .ok_or_else(|| bad("no XDP features in the reply"))?;
        let mut b = [0u8; 8];
        b.copy_from_slice(v);
        Ok(u64::from_ne_bytes(b))
    }

    /// Send one request of `cmd` with attribute `nla` to `family`; the reply's attributes.
    fn ask(&mut self, family: u16, cmd: u8, nla: DefaultNla) -> io::Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDR + GENL_HDR + nla.buffer_len();
        let mut msg = vec![0u8; len];
        msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&family.to_ne_bytes());
        msg[6..8].copy_from_slice(&(NLM_F_REQUEST).to_ne_bytes());
        msg[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // The generic header: command, version 1, reserved.
        msg[NLMSG_HDR] = cmd;
        msg[NLMSG_HDR + 1] = 1;
        nla.emit(&mut msg[NLMSG_HDR + GENL_HDR..]);
        self.sock.send(&msg, 0)?;
        loop {
            let mut buf = Vec::with_capacity(8192);
            self.sock.recv(&mut buf, 0)?;
            let m = NetlinkBuffer::new_checked(&buf[..]).map_err(|e| bad(&e.to_string()))?;
            if m.sequence_number() != self.seq {
                continue;
            }
            let payload = m.payload();
            if m.message_type() == NLMSG_ERROR {
                let code = payload
                    .get(..4)
                    .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(0);
                return Err(io::Error::from_raw_os_error(-code));
            }
            return payload
                .get(GENL_HDR..)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| bad("a reply without its generic header"));
        }
    }
}

/// The value of attribute `kind` among `attrs`.
fn attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    NlasIterator::new(attrs)
        .filter_map(Result::ok)
        .find(|a: &NlaBuffer<&[u8]>| a.kind() == kind)
        .and_then(|a| {
            let len = usize::from(a.length());
            a.into_inner()
                .get(netlink_packet_core::NLA_HEADER_SIZE..len)
        })
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("netdev netlink: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query works (reading is open to all) and the loopback device, whose XDP is
    /// the generic kind only, takes no frames of others' XDP programs.
    #[test]
    fn the_loopback_device_answers() {
        let mut n = Netdev::open().expect("the netdev family (kernel 6.3 or later)");
        let f = n.xdp_features(1).expect("lo's XDP features");
        assert_eq!(f & XDP_ACT_NDO_XMIT, 0, "{f:#x}");
    }
}
