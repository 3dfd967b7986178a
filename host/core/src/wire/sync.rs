//! IPVS's connection synchronisation messages (`ip_vs_sync.c`), byte for byte.
//!
//! A master director multicasts what it knows of its connections in UDP datagrams; a backup
//! reads them and keeps the same connections, so that it can take over established clients.
//! Two formats exist: version 1 (since Linux 2.6.39: an 8-byte header, records of 36 bytes
//! for IPv4 and 72 for IPv6 carrying the timeout and firewall mark, followed by
//! type-length-value options) and version 0 (a 4-byte header, 24-byte IPv4 records, no
//! timeout). wvs sends version 1 and reads both, as the kernel does.
//!
//! [`Message::parse`] checks a datagram as `ip_vs_process_message` does and yields its
//! records through [`Message::conns`]; [`MessageWriter`] builds one as `ip_vs_sync_conn`
//! does, padding each record to 4 bytes *before* the next one (the last record is not
//! padded, and a record's size field never counts its padding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The multicast group IPVS uses by default (`IP_VS_SYNC_GROUP`, 224.0.0.81).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The UDP port IPVS uses by default (`IP_VS_SYNC_PORT`); thread `id` uses this plus `id`.
pub const DEFAULT_PORT: u16 = 8848;
/// The protocol version wvs sends (`SYNC_PROTO_VER`).
pub const VERSION: u8 = 1;

/// Version 1 message header (`struct ip_vs_sync_mesg`).
pub mod header {
    /// Must be zero (version 0 readers see it as `nr_conns` 0 and ignore the message).
    pub const RESERVED: usize = 0;
    /// The sender's sync id.
    pub const SYNCID: usize = 1;
    /// The datagram's size in bytes, header included (big endian).
    pub const SIZE: std::ops::Range<usize> = 2..4;
    /// How many connection records follow.
    pub const NR_CONNS: usize = 4;
    /// Protocol version, 1.
    pub const VERSION: usize = 5;
    /// Must be zero.
    pub const SPARE: std::ops::Range<usize> = 6..8;
    /// The header's length.
    pub const LEN: usize = 8;
}

/// Version 0 message header (`struct ip_vs_sync_mesg_v0`).
pub mod header_v0 {
    /// How many connection records follow.
    pub const NR_CONNS: usize = 0;
    /// The sender's sync id.
    pub const SYNCID: usize = 1;
    /// The datagram's size in bytes, header included.
    pub const SIZE: std::ops::Range<usize> = 2..4;
    /// The header's length.
    pub const LEN: usize = 4;
}

/// Version 1 connection record (`struct ip_vs_sync_v4`, `ip_vs_sync_v6`); the three
/// addresses follow `TIMEOUT`, 4 or 16 bytes each.
pub mod conn {
    /// Bit 0: the record is IPv6 (`STYPE_F_INET6`).
    pub const TYPE: usize = 0;
    /// IP protocol number.
    pub const PROTOCOL: usize = 1;
    /// Version (upper 4 bits, 0) and the record's size with its options (lower 12 bits).
    pub const VER_SIZE: std::ops::Range<usize> = 2..4;
    /// The connection's `IP_VS_CONN_F_*` flags.
    pub const FLAGS: std::ops::Range<usize> = 4..8;
    /// The connection's state (`IP_VS_TCP_S_*`, 0 for UDP, `IP_VS_CTPL_S_*` for templates).
    pub const STATE: std::ops::Range<usize> = 8..10;
    /// Client port.
    pub const CPORT: std::ops::Range<usize> = 10..12;
    /// Virtual port.
    pub const VPORT: std::ops::Range<usize> = 12..14;
    /// Real server port.
    pub const DPORT: std::ops::Range<usize> = 14..16;
    /// Firewall mark of the service (0 for none).
    pub const FWMARK: std::ops::Range<usize> = 16..20;
    /// Remaining timeout of the state, seconds.
    pub const TIMEOUT: std::ops::Range<usize> = 20..24;
    /// Where the addresses start.
    pub const ADDRS: usize = 24;
    /// An IPv4 record's length without options.
    pub const LEN_V4: usize = ADDRS + 3 * 4;
    /// An IPv6 record's length without options.
    pub const LEN_V6: usize = ADDRS + 3 * 16;
    /// `STYPE_F_INET6`.
    pub const TYPE_INET6: u8 = 1;
    /// `SVER_SHIFT`: the version's place in `VER_SIZE`.
    pub const SVER_SHIFT: u16 = 12;
    /// `SVER_MASK`: the size's bits in `VER_SIZE`.
    pub const SVER_MASK: u16 = 0x0fff;
}

/// Version 0 connection record (`struct ip_vs_sync_conn_v0`).
pub mod conn_v0 {
    /// IP protocol number (after a reserved byte).
    pub const PROTOCOL: usize = 1;
    /// Client port.
    pub const CPORT: std::ops::Range<usize> = 2..4;
    /// Virtual port.
    pub const VPORT: std::ops::Range<usize> = 4..6;
    /// Real server port.
    pub const DPORT: std::ops::Range<usize> = 6..8;
    /// Client address.
    pub const CADDR: std::ops::Range<usize> = 8..12;
    /// Virtual address.
    pub const VADDR: std::ops::Range<usize> = 12..16;
    /// Real server address.
    pub const DADDR: std::ops::Range<usize> = 16..20;
    /// The low 16 bits of the connection's flags.
    pub const FLAGS: std::ops::Range<usize> = 20..22;
    /// The connection's state.
    pub const STATE: std::ops::Range<usize> = 22..24;
    /// The record's length (`SIMPLE_CONN_SIZE`).
    pub const LEN: usize = 24;
    /// With the sequence options after it (`FULL_CONN_SIZE`).
    pub const FULL_LEN: usize = LEN + super::SEQ_OPTIONS_LEN;
}

/// `IPVS_OPT_SEQ_DATA`: the helpers' sequence adjustments of both directions.
pub const OPT_SEQ_DATA: u8 = 1;
/// `IPVS_OPT_PE_DATA`: a persistence engine's key.
pub const OPT_PE_DATA: u8 = 2;
/// `IPVS_OPT_PE_NAME`: the persistence engine's name.
pub const OPT_PE_NAME: u8 = 3;
/// `IPVS_OPT_F_PARAM`: an option type with this bit may be skipped by a reader that does
/// not know it; one without it makes the reader skip the whole record.
pub const OPT_OPTIONAL: u8 = 0x40;
/// `struct ip_vs_sync_conn_options`: two `struct ip_vs_seq` of three 32-bit words.
pub const SEQ_OPTIONS_LEN: usize = 24;
/// `IP_VS_PEDATA_MAXLEN`.
pub const PE_DATA_MAX: usize = 255;
/// `IP_VS_PENAME_MAXLEN`.
pub const PE_NAME_MAX: usize = 16;

/// The `IP_VS_CONN_F_*` bits the protocol carries.
pub mod flag {
    /// The forwarding method (`IP_VS_CONN_F_FWD_MASK`).
    pub const FWD_MASK: u32 = 0x0007;
    /// Masquerading (NAT).
    pub const MASQ: u32 = 0x0000;
    /// The real server is the director itself.
    pub const LOCALNODE: u32 = 0x0001;
    /// IP tunnelling.
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// Cache bypass.
    pub const BYPASS: u32 = 0x0004;
    /// Made from a sync message (`IP_VS_CONN_F_SYNC`).
    pub const SYNC: u32 = 0x0020;
    /// In the kernel's hash table (never sent).
    pub const HASHED: u32 = 0x0040;
    /// No reply seen yet (DR, TUN).
    pub const NOOUTPUT: u32 = 0x0080;
    /// Counted as inactive on its real server.
    pub const INACTIVE: u32 = 0x0100;
    /// Outgoing sequence numbers adjusted.
    pub const OUT_SEQ: u32 = 0x0200;
    /// Incoming sequence numbers adjusted.
    pub const IN_SEQ: u32 = 0x0400;
    /// Either sequence adjustment.
    pub const SEQ_MASK: u32 = 0x0600;
    /// The client port is not known yet (an expectation).
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template.
    pub const TEMPLATE: u32 = 0x1000;
    /// Scheduled per packet, never synced.
    pub const ONE_PACKET: u32 = 0x2000;
    /// What a backup takes from a message (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
    /// What a backup updates on a connection it has (`IP_VS_CONN_F_BACKUP_UPD_MASK`).
    pub const BACKUP_UPD_MASK: u32 = INACTIVE | SEQ_MASK;
}

/// One direction's sequence adjustment as the options carry it (`struct ip_vs_seq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seq {
    /// The original sequence number of the last resized segment.
    pub init_seq: u32,
    /// Bytes added up to and including it.
    pub delta: u32,
    /// Bytes added before it.
    pub previous_delta: u32,
}

/// A connection or persistence template as a sync message carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConn {
    /// IP protocol number.
    pub protocol: u8,
    /// `IP_VS_CONN_F_*` flags.
    pub flags: u32,
    /// State number.
    pub state: u16,
    /// Client port (0 in a template).
    pub cport: u16,
    /// Virtual port.
    pub vport: u16,
    /// Real server port.
    pub dport: u16,
    /// Firewall mark of its service.
    pub fwmark: u32,
    /// Timeout in seconds (0 from a version 0 message: the state's own).
    pub timeout: u32,
    /// Client address (a template's: the client's network under the service's netmask).
    pub caddr: IpAddr,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Real server address.
    pub daddr: IpAddr,
    /// Sequence adjustments of the client's and the server's direction (`in_seq`,
    /// `out_seq`), when the connection has any.
    pub seq: Option<[Seq; 2]>,
}

impl SyncConn {
    /// Whether its addresses are IPv6 (a record holds one family).
    pub fn is_v6(&self) -> bool {
        self.caddr.is_ipv6()
    }

    /// Its length in a version 1 message, without padding.
    pub fn wire_len(&self, pe: Option<(&[u8], &[u8])>) -> usize {
        let base = if self.is_v6() {
            conn::LEN_V6
        } else {
            conn::LEN_V4
        };
        let seq = if self.seq.is_some() {
            2 + SEQ_OPTIONS_LEN
        } else {
            0
        };
        let pe = pe.map_or(0, |(name, data)| {
            2 + data.len() + if name.is_empty() { 0 } else { 2 + name.len() }
        });
        base + seq + pe
    }
}

/// A record read from a message, with the persistence engine's options it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The connection.
    pub conn: SyncConn,
    /// `IPVS_OPT_PE_NAME`'s bytes.
    pub pe_name: Option<&'a [u8]>,
    /// `IPVS_OPT_PE_DATA`'s bytes.
    pub pe_data: Option<&'a [u8]>,
}

/// Why a datagram, or what remains of it, is dropped (the kernel's negative returns and
/// early exits of `ip_vs_process_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than a version 0 header.
    #[error("message header too short")]
    TooShort,
    /// The size field is not the datagram's length.
    #[error("bogus message size: {field} in the header, {len} received")]
    Size {
        /// The header's size field.
        field: u16,
        /// The datagram's length.
        len: usize,
    },
    /// A record runs past the datagram's end.
    #[error("record runs past the end of the message")]
    Truncated,
    /// A record's version is not 0.
    #[error("unknown record version {0}")]
    RecordVersion(u16),
    /// A record's type is neither IPv4 nor IPv6.
    #[error("unknown record type {0}")]
    RecordType(u8),
    /// An option's header runs past the record, or its length is 0 or too long.
    #[error("bogus option")]
    Option,
}

/// Why one record is skipped while the rest of the message is read (the kernel's positive
/// returns of `ip_vs_proc_sync_conn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// An option type without `OPT_OPTIONAL` that this reader does not know.
    #[error("unknown mandatory option {0}")]
    MandatoryOption(u8),
}

/// The message's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `ip_vs_sync_mesg_v0`.
    V0,
    /// `ip_vs_sync_mesg`.
    V1,
}

/// A checked sync message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    /// Its format.
    pub version: Version,
    /// The sender's sync id.
    pub syncid: u8,
    /// How many records it announces.
    pub nr_conns: u8,
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_be_bytes(a)
}

fn be32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_be_bytes(a)
}

fn v4_at(b: &[u8], at: usize) -> IpAddr {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6_at(b: &[u8], at: usize) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    IpAddr::V6(Ipv6Addr::from(a))
}

impl<'a> Message<'a> {
    /// Check a received datagram's header: long enough, its size field equal to its
    /// length, version 1 when the reserved and spare fields are zero and the version is 1,
    /// else version 0. (The sync id is the receiver's business: [`Message::syncid`].)
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        if buf.len() < header_v0::LEN {
            return Err(Error::TooShort);
        }
        let field = be16(buf, header::SIZE);
        if usize::from(field) != buf.len() {
            return Err(Error::Size {
                field,
                len: buf.len(),
            });
        }
        let v1 = buf.len() >= header::LEN
            && buf[header::VERSION] == VERSION
            && buf[header::RESERVED] == 0
            && buf[header::SPARE] == [0, 0];
        Ok(if v1 {
            Self {
                buf,
                version: Version::V1,
                syncid: buf[header::SYNCID],
                nr_conns: buf[header::NR_CONNS],
            }
        } else {
            Self {
                buf,
                version: Version::V0,
                syncid: buf[header_v0::SYNCID],
                nr_conns: buf[header_v0::NR_CONNS],
            }
        })
    }

    /// Its records, in order. An `Err(Error)` ends the iteration (the kernel drops the rest
    /// of the datagram); an `Ok(Err(Skip))` is one record left out.
    pub fn conns(&self) -> Conns<'a> {
        Conns {
            buf: self.buf,
            at: match self.version {
                Version::V1 => header::LEN,
                Version::V0 => header_v0::LEN,
            },
            left: self.nr_conns,
            version: self.version,
        }
    }
}

/// The records of a [`Message`].
#[derive(Debug)]
pub struct Conns<'a> {
    buf: &'a [u8],
    at: usize,
    left: u8,
    version: Version,
}

impl<'a> Iterator for Conns<'a> {
    type Item = Result<Result<Record<'a>, Skip>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = match self.version {
            Version::V1 => self.next_v1(),
            Version::V0 => self.next_v0(),
        };
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

impl<'a> Conns<'a> {
    fn next_v1(&mut self) -> Result<Result<Record<'a>, Skip>, Error> {
        let p = self.at;
        if p + conn::LEN_V4 > self.buf.len() {
            return Err(Error::Truncated);
        }
        let vs = be16(self.buf, p + conn::VER_SIZE.start..p + conn::VER_SIZE.end);
        let size = usize::from(vs & conn::SVER_MASK);
        let end = p + size;
        if end > self.buf.len() {
            return Err(Error::Truncated);
        }
        if vs >> conn::SVER_SHIFT != 0 {
            return Err(Error::RecordVersion(vs >> conn::SVER_SHIFT));
        }
        let s = &self.buf[p..end];
        // The next record starts at the 4-byte boundary after this one.
        self.at = p + ((size + 3) & !3);
        let ty = self.buf[p + conn::TYPE];
        let v6 = ty & conn::TYPE_INET6 != 0;
        if !v6 && ty != 0 {
            return Err(Error::RecordType(ty));
        }
        let fixed = if v6 { conn::LEN_V6 } else { conn::LEN_V4 };
        if fixed > s.len() {
            return Err(Error::Truncated);
        }
        let width = if v6 { 16 } else { 4 };
        let addr = |i: usize| {
            let at = conn::ADDRS + i * width;
            if v6 { v6_at(s, at) } else { v4_at(s, at) }
        };
        let (mut seq, mut pe_name, mut pe_data) = (None, None, None);
        let mut skip = None;
        let mut o = fixed;
        while o < s.len() {
            if o + 2 > s.len() {
                return Err(Error::Option);
            }
            let (ty, len) = (s[o], usize::from(s[o + 1]));
            o += 2;
            if len == 0 || o + len > s.len() {
                return Err(Error::Option);
            }
            let data = &s[o..o + len];
            match ty & !OPT_OPTIONAL {
                OPT_SEQ_DATA => {
                    if len != SEQ_OPTIONS_LEN || seq.is_some() {
                        return Err(Error::Option);
                    }
                    seq = Some(seq_options(data));
                }
                OPT_PE_DATA => {
                    if len > PE_DATA_MAX || pe_data.is_some() {
                        return Err(Error::Option);
                    }
                    pe_data = Some(data);
                }
                OPT_PE_NAME => {
                    if len > PE_NAME_MAX || pe_name.is_some() {
                        return Err(Error::Option);
                    }
                    pe_name = Some(data);
                }
                other if ty & OPT_OPTIONAL == 0 => {
                    // The kernel stops reading this record's options at the first unknown
                    // mandatory one and skips the record.
                    skip = Some(Skip::MandatoryOption(other));
                    break;
                }
                _ => {}
            }
            o += len;
        }
        if let Some(k) = skip {
            return Ok(Err(k));
        }
        Ok(Ok(Record {
            conn: SyncConn {
                protocol: s[conn::PROTOCOL],
                flags: be32(s, conn::FLAGS),
                state: be16(s, conn::STATE),
                cport: be16(s, conn::CPORT),
                vport: be16(s, conn::VPORT),
                dport: be16(s, conn::DPORT),
                fwmark: be32(s, conn::FWMARK),
                timeout: be32(s, conn::TIMEOUT),
                caddr: addr(0),
                vaddr: addr(1),
                daddr: addr(2),
                seq,
            },
            pe_name,
            pe_data,
        }))
    }

    fn next_v0(&mut self) -> Result<Result<Record<'a>, Skip>, Error> {
        let p = self.at;
        if p + conn_v0::LEN > self.buf.len() {
            return Err(Error::Truncated);
        }
        let s = &self.buf[p..];
        let flags = u32::from(be16(s, conn_v0::FLAGS));
        let seq = if flags & flag::SEQ_MASK != 0 {
            if p + conn_v0::FULL_LEN > self.buf.len() {
                return Err(Error::Truncated);
            }
            self.at = p + conn_v0::FULL_LEN;
            Some(seq_options(&s[conn_v0::LEN..conn_v0::FULL_LEN]))
        } else {
            self.at = p + conn_v0::LEN;
            None
        };
        let mut a = [0u8; 4];
        let mut addr = |r: std::ops::Range<usize>| {
            a.copy_from_slice(&s[r]);
            IpAddr::V4(Ipv4Addr::from(a))
        };
        Ok(Ok(Record {
            conn: SyncConn {
                protocol: s[conn_v0::PROTOCOL],
                flags,
                state: be16(s, conn_v0::STATE),
                cport: be16(s, conn_v0::CPORT),
                vport: be16(s, conn_v0::VPORT),
                dport: be16(s, conn_v0::DPORT),
                fwmark: 0,
                timeout: 0,
                caddr: addr(conn_v0::CADDR),
                vaddr: addr(conn_v0::VADDR),
                daddr: addr(conn_v0::DADDR),
                seq,
            },
            pe_name: None,
            pe_data: None,
        }))
    }
}

fn seq_options(d: &[u8]) -> [Seq; 2] {
    let one = |o: usize| Seq {
        init_seq: be32(d, o..o + 4),
        delta: be32(d, o + 4..o + 8),
        previous_delta: be32(d, o + 8..o + 12),
    };
    [one(0), one(12)]
}

/// Builds a version 1 message in a caller's buffer, as `ip_vs_sync_conn` fills a sync
/// buffer: records padded to 4 bytes before the next one, at most 255 of them.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    nr: u8,
}

impl<'b> MessageWriter<'b> {
    /// A message with no record yet, from `syncid`, in at most `buf.len()` bytes (the
    /// daemon's `sync_maxlen`); `None` if `buf` cannot hold even the header.
    pub fn new(buf: &'b mut [u8], syncid: u8) -> Option<Self> {
        if buf.len() < header::LEN {
            return None;
        }
        buf[..header::LEN].fill(0);
        buf[header::SYNCID] = syncid;
        buf[header::VERSION] = VERSION;
        let mut w = Self {
            buf,
            len: header::LEN,
            nr: 0,
        };
        w.seal();
        Some(w)
    }

    /// How many records it holds.
    pub fn count(&self) -> u8 {
        self.nr
    }

    /// Its length so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.nr == 0
    }

    /// Whether `c` (with a persistence engine's name and data) would fit.
    pub fn fits(&self, c: &SyncConn, pe: Option<(&[u8], &[u8])>) -> bool {
        let pad = if self.nr == 0 {
            0
        } else {
            (4 - self.len % 4) % 4
        };
        self.nr < u8::MAX && self.len + pad + c.wire_len(pe) <= self.buf.len()
    }

    /// Add a record; `false` (nothing written) when it does not fit. `pe` is a persistence
    /// engine's name and data: written as `IPVS_OPT_PE_DATA` then `IPVS_OPT_PE_NAME`, the
    /// kernel's order.
    pub fn push(&mut self, c: &SyncConn, pe: Option<(&[u8], &[u8])>) -> bool {
        if !self.fits(c, pe)
            || pe.is_some_and(|(n, d)| {
                n.len() > PE_NAME_MAX || d.len() > PE_DATA_MAX || d.is_empty()
            })
            || c.caddr.is_ipv6() != c.vaddr.is_ipv6()
            || c.caddr.is_ipv6() != c.daddr.is_ipv6()
        {
            return false;
        }
        if self.nr > 0 {
            while !self.len.is_multiple_of(4) {
                self.buf[self.len] = 0;
                self.len += 1;
            }
        }
        let size = c.wire_len(pe);
        let s = &mut self.buf[self.len..self.len + size];
        s[conn::TYPE] = if c.is_v6() { conn::TYPE_INET6 } else { 0 };
        s[conn::PROTOCOL] = c.protocol;
        s[conn::VER_SIZE].copy_from_slice(&(size as u16 & conn::SVER_MASK).to_be_bytes());
        s[conn::FLAGS].copy_from_slice(&(c.flags & !flag::HASHED).to_be_bytes());
        s[conn::STATE].copy_from_slice(&c.state.to_be_bytes());
        s[conn::CPORT].copy_from_slice(&c.cport.to_be_bytes());
        s[conn::VPORT].copy_from_slice(&c.vport.to_be_bytes());
        s[conn::DPORT].copy_from_slice(&c.dport.to_be_bytes());
        s[conn::FWMARK].copy_from_slice(&c.fwmark.to_be_bytes());
        s[conn::TIMEOUT].copy_from_slice(&c.timeout.to_be_bytes());
        let mut o = conn::ADDRS;
        for a in [c.caddr, c.vaddr, c.daddr] {
            match a {
                IpAddr::V4(a) => {
                    s[o..o + 4].copy_from_slice(&a.octets());
                    o += 4;
                }
                IpAddr::V6(a) => {
                    s[o..o + 16].copy_from_slice(&a.octets());
                    o += 16;
                }
            }
        }
        if let Some(seq) = &c.seq {
            s[o] = OPT_SEQ_DATA;
            s[o + 1] = SEQ_OPTIONS_LEN as u8;
            o += 2;
            for q in seq {
                for w in [q.init_seq, q.delta, q.previous_delta] {
                    s[o..o + 4].copy_from_slice(&w.to_be_bytes());
                    o += 4;
                }
            }
        }
        if let Some((name, data)) = pe {
            s[o] = OPT_PE_DATA;
            s[o + 1] = data.len() as u8;
            s[o + 2..o + 2 + data.len()].copy_from_slice(data);
            o += 2 + data.len();
            if !name.is_empty() {
                s[o] = OPT_PE_NAME;
                s[o + 1] = name.len() as u8;
                s[o + 2..o + 2 + name.len()].copy_from_slice(name);
            }
        }
        self.len += size;
        self.nr += 1;
        self.seal();
        true
    }

    fn seal(&mut self) {
        self.buf[header::NR_CONNS] = self.nr;
        self.buf[header::SIZE].copy_from_slice(&(self.len as u16).to_be_bytes());
    }

    /// The finished message.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn es_dr() -> SyncConn {
        SyncConn {
            protocol: 6,
            flags: flag::DROUTE | flag::NOOUTPUT,
            state: 1,
            cport: 40000,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: v4("198.18.0.2"),
            vaddr: v4("198.18.100.1"),
            daddr: v4("198.19.0.11"),
            seq: None,
        }
    }

    /// `struct ip_vs_sync_mesg` + `struct ip_vs_sync_v4` written field by field as the
    /// kernel lays them out (include/net/ip_vs.h, ip_vs_sync.c), for one established DR
    /// connection with syncid 7.
    fn kernel_bytes() -> Vec<u8> {
        let mut m = vec![0x00, 7, 0x00, 44, 1, 1, 0, 0];
        m.extend_from_slice(&[0x00, 0x06, 0x00, 0x24]);
        m.extend_from_slice(&0x83u32.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&40000u16.to_be_bytes());
        m.extend_from_slice(&80u16.to_be_bytes());
        m.extend_from_slice(&80u16.to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&900u32.to_be_bytes());
        m.extend_from_slice(&[198, 18, 0, 2, 198, 18, 100, 1, 198, 19, 0, 11]);
        m
    }

    #[test]
    fn one_record_is_the_kernels_bytes() {
        let mut buf = [0u8; 1472];
        let mut w = MessageWriter::new(&mut buf, 7).unwrap();
        assert!(w.push(&es_dr(), None));
        assert_eq!(w.bytes(), kernel_bytes().as_slice());
    }

    #[test]
    fn the_kernels_bytes_read_back() {
        let b = kernel_bytes();
        let m = Message::parse(&b).unwrap();
        assert_eq!((m.version, m.syncid, m.nr_conns), (Version::V1, 7, 1));
        let rs: Vec<_> = m.conns().collect();
        assert_eq!(rs.len(), 1);
        let r = rs[0].unwrap().unwrap();
        assert_eq!(r.conn, es_dr());
    }

    #[test]
    fn records_are_padded_before_the_next_and_options_read_back() {
        let mut buf = [0u8; 1472];
        let mut w = MessageWriter::new(&mut buf, 0).unwrap();
        let mut ftp = es_dr();
        ftp.flags = flag::MASQ | flag::IN_SEQ;
        ftp.seq = Some([
            Seq {
                init_seq: 1000,
                delta: 3,
                previous_delta: 0,
            },
            Seq::default(),
        ]);
        assert!(w.push(&ftp, None));
        // 36 + 2 + 24 = 62: two bytes of padding come before the next record only.
        assert_eq!(w.len(), 8 + 62);
        let v6 = SyncConn {
            caddr: "2001:db8::2".parse().unwrap(),
            vaddr: "2001:db8:100::1".parse().unwrap(),
            daddr: "2001:db8:19::11".parse().unwrap(),
            ..es_dr()
        };
        assert!(w.push(&v6, Some((b"sip", b"call-id-1"))));
        let len = 8 + 64 + 72 + 2 + 9 + 2 + 3;
        assert_eq!(w.len(), len);
        let b = w.bytes().to_vec();
        assert_eq!(&b[8 + 62..8 + 64], &[0, 0]);
        assert_eq!(u16::from_be_bytes([b[2], b[3]]) as usize, len);
        let m = Message::parse(&b).unwrap();
        let rs: Vec<_> = m.conns().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(rs[0].conn, ftp);
        assert_eq!(rs[1].conn, v6);
        assert_eq!(rs[1].pe_name, Some(&b"sip"[..]));
        assert_eq!(rs[1].pe_data, Some(&b"call-id-1"[..]));
    }

    #[test]
    fn a_message_fills_to_maxlen_and_no_further() {
        let mut buf = [0u8; 8 + 36 * 3 + 10];
        let mut w = MessageWriter::new(&mut buf, 1).unwrap();
        assert!(w.push(&es_dr(), None));
        assert!(w.push(&es_dr(), None));
        assert!(w.push(&es_dr(), None));
        assert!(!w.push(&es_dr(), None));
        assert_eq!(w.count(), 3);
    }

    #[test]
    fn receiver_checks_as_the_kernel() {
        let good = kernel_bytes();
        assert_eq!(Message::parse(&good[..3]).unwrap_err(), Error::TooShort);
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            Message::parse(&longer),
            Err(Error::Size { field: 44, len: 45 })
        ));
        // A record version other than 0 drops the datagram.
        let mut b = good.clone();
        b[10] |= 0x10;
        let m = Message::parse(&b).unwrap();
        assert_eq!(
            m.conns().next().unwrap().unwrap_err(),
            Error::RecordVersion(1)
        );
        // Type 2 is neither family.
        let mut b = good.clone();
        b[8] = 2;
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.conns().next().unwrap().unwrap_err(), Error::RecordType(2));
        // An unknown mandatory option skips the record; an optional one is passed over.
        for (ty, skipped) in [(9u8, true), (9 | OPT_OPTIONAL, false)] {
            let mut b = good.clone();
            b.extend_from_slice(&[ty, 2, 0xaa, 0xbb]);
            b[3] = 48;
            b[11] = 40;
            let m = Message::parse(&b).unwrap();
            let r = m.conns().next().unwrap().unwrap();
            assert_eq!(r.is_err(), skipped, "type {ty}");
        }
        // An option of length 0 drops the datagram.
        let mut b = good.clone();
        b.extend_from_slice(&[OPT_SEQ_DATA, 0]);
        b[3] = 46;
        b[11] = 38;
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.conns().next().unwrap().unwrap_err(), Error::Option);
    }

    #[test]
    fn version_0_reads_with_its_options() {
        // struct ip_vs_sync_mesg_v0 + two ip_vs_sync_conn_v0, the second with options.
        let mut b = vec![2, 5, 0, 0];
        let rec = |flags: u16| {
            let mut r = vec![0, 17];
            r.extend_from_slice(&5353u16.to_be_bytes());
            r.extend_from_slice(&53u16.to_be_bytes());
            r.extend_from_slice(&53u16.to_be_bytes());
            r.extend_from_slice(&[198, 18, 0, 2, 198, 18, 100, 1, 198, 19, 0, 11]);
            r.extend_from_slice(&flags.to_be_bytes());
            r.extend_from_slice(&0u16.to_be_bytes());
            r
        };
        b.extend(rec(0));
        b.extend(rec(0x0400));
        for w in [7u32, 1, 0, 0, 0, 0] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        let n = b.len() as u16;
        b[2..4].copy_from_slice(&n.to_be_bytes());
        let m = Message::parse(&b).unwrap();
        assert_eq!((m.version, m.syncid, m.nr_conns), (Version::V0, 5, 2));
        let rs: Vec<_> = m.conns().map(|r| r.unwrap().unwrap().conn).collect();
        assert_eq!(rs[0].protocol, 17);
        assert_eq!(rs[0].timeout, 0);
        assert_eq!(rs[0].seq, None);
        assert_eq!(rs[1].seq.unwrap()[0].init_seq, 7);
        assert_eq!(rs[1].daddr, v4("198.19.0.11"));
    }

    proptest::proptest! {
        #[test]
        fn nothing_panics_on_any_bytes(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut b = b;
            if b.len() >= 4 {
                let n = b.len() as u16;
                b[2..4].copy_from_slice(&n.to_be_bytes());
            }
            if let Ok(m) = Message::parse(&b) {
                for r in m.conns() {
                    let _ = r;
                }
            }
        }
    }
}
