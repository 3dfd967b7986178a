//! The SYN proxy (DPVS's synproxy, the kernel's `SYNPROXY` target): a client's SYN to a
//! virtual service is answered from the VIP with a SYN-ACK whose sequence number is a SYN
//! cookie, and nothing is kept; only the client's ACK that returns a valid cookie makes a
//! connection, whose server is then scheduled and sent the client's SYN as the client sent
//! it (its sequence number and options, from the cookie). When the server answers, the two
//! halves are joined: the server's sequence numbers are shifted into the cookie's, its
//! timestamps into the SYN-ACK's, its windows into the scale the client was told, for the
//! connection's life. IPVS has none of it.
//!
//! The cookie is wvs's own, so that whatever first sees a frame (this user-space datapath,
//! or a BPF program with the same secret) can make and check it, and read back what the
//! client's SYN offered. Its 32 bits:
//!
//! ```text
//!  31 30 | 29 .. 22                               | 21 .. 0
//!  count | mss index (2) wscale (4) sack (1) ts (1) | SipHash-2-4 of the flow, the client's
//!        |                                         | ISN, the count and the 8 data bits
//! ```
//!
//! `count` is the low two bits of the time in periods of 2^16 ms (about 65 s); a cookie is
//! good in its period and the next. A forged ACK passes with odds of 2^-22, as the kernel's
//! cookies (24 bits, of which its MSS index takes 2). The options are in the cookie itself,
//! so unlike the kernel's, window scaling and SACK survive a client that sends no
//! timestamps. The hash's upper 32 bits are the SYN-ACK's timestamp, random per flow.
//!
//! The SYN-ACK offers a zero window (as DPVS's), so a client sends its ACK and then waits
//! for the window the server's own SYN-ACK brings, and data never has to be held for more
//! than the one segment a client may send with its ACK anyway.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// Synproxied connections whose server has not answered yet, in this process (a gauge for
/// `/metrics`: counted up when such a connection is made, down when it is joined, reset
/// or gone).
pub static HALF_JOINED: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The cookie's time unit: 2^16 ms.
pub const COUNT_SHIFT: u32 = crate::consts::SYNPROXY_COUNT_SHIFT;
/// The MSS values a cookie can carry (the kernel's `msstab` for IPv4): the client's MSS is
/// rounded down to one of them.
pub const MSS_V4: [u16; 4] = [536, 1300, 1440, 1460];
/// IPv6's (the kernel's `msstab` for IPv6).
pub const MSS_V6: [u16; 4] = [1220, 1420, 1440, 8940];
/// The largest window scale (RFC 7323 2.3).
pub const MAX_WSCALE: u8 = 14;
/// The window scale wvs offers a client.
pub const DEFAULT_WSCALE: u8 = crate::consts::SYNPROXY_WSCALE;

/// TCP option kinds and lengths (RFC 9293, RFC 7323, RFC 2018).
mod opt {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WS: u8 = 3;
    pub const SACK_PERM: u8 = 4;
    pub const TS: u8 = 8;
    pub const TS_LEN: usize = 10;
}

/// TCP flag bits, as in the header's 14th byte.
pub mod flag {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The key of the cookies' hash, shared by everything that makes or checks them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new random key.
    pub fn random() -> Self {
        Self {
            k0: rand::random(),
            k1: rand::random(),
        }
    }

    /// A given key (tests, and a BPF program's copy).
    pub fn from_keys(k0: u64, k1: u64) -> Self {
        Self { k0, k1 }
    }

    /// Its two halves, for a BPF map.
    pub fn keys(&self) -> (u64, u64) {
        (self.k0, self.k1)
    }

    /// SipHash-2-4 of the flow, the client's ISN, the period and the data bits, over a
    /// fixed 48-byte block (addresses as IPv6, IPv4 mapped) that a BPF program can build.
    fn hash(
        &self,
        client: (IpAddr, u16),
        vip: (IpAddr, u16),
        isn: u32,
        count: u32,
        data: u8,
    ) -> u64 {
        let mut b = [0u8; 48];
        b[..16].copy_from_slice(&v6(client.0));
        b[16..32].copy_from_slice(&v6(vip.0));
        b[32..34].copy_from_slice(&client.1.to_be_bytes());
        b[34..36].copy_from_slice(&vip.1.to_be_bytes());
        b[36..40].copy_from_slice(&isn.to_be_bytes());
        b[40..44].copy_from_slice(&count.to_be_bytes());
        b[44] = data;
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        h.write(&b);
        h.finish()
    }

    /// The cookie for a client's SYN with sequence number `isn` at `now_ms`, and the
    /// timestamp to send with it.
    pub fn cookie(
        &self,
        client: (IpAddr, u16),
        vip: (IpAddr, u16),
        isn: u32,
        now_ms: u64,
        data: Data,
    ) -> (u32, u32) {
        let count = (now_ms >> COUNT_SHIFT) as u32;
        let h = self.hash(client, vip, isn, count, data.0);
        let cookie = ((count & 3) << 30) | (u32::from(data.0) << 22) | (h as u32 & 0x3f_ffff);
        (cookie, (h >> 32) as u32)
    }

    /// Whether `cookie` (the client's acknowledgement number less one) is one wvs made for
    /// this flow and the client's ISN (its sequence number less one) in this period or the
    /// last; the options it carries if so.
    pub fn check(
        &self,
        client: (IpAddr, u16),
        vip: (IpAddr, u16),
        isn: u32,
        cookie: u32,
        now_ms: u64,
    ) -> Option<Data> {
        let now = (now_ms >> COUNT_SHIFT) as u32;
        let data = Data((cookie >> 22) as u8);
        data.valid().then_some(())?;
        let count = [now, now.wrapping_sub(1)]
            .into_iter()
            .find(|c| c & 3 == cookie >> 30)?;
        let h = self.hash(client, vip, isn, count, data.0);
        (h as u32 & 0x3f_ffff == cookie & 0x3f_ffff).then_some(data)
    }
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The options a SYN offered, as the cookie keeps them: MSS index (2 bits), window scale
/// (4 bits, 15 for none), SACK permitted, timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data(pub u8);

impl Data {
    /// What a cookie keeps of `o` (for a client of family IPv6 if `v6`).
    pub fn of(o: &SynOpts, v6: bool) -> Self {
        let table = if v6 { &MSS_V6 } else { &MSS_V4 };
        let idx = table.iter().rposition(|&m| m <= o.mss).unwrap_or(0) as u8;
        let ws = o.wscale.map_or(15, |w| w.min(MAX_WSCALE));
        Self(idx << 6 | ws << 2 | u8::from(o.sack) << 1 | u8::from(o.ts.is_some()))
    }

    fn valid(self) -> bool {
        let ws = (self.0 >> 2) & 0xf;
        ws <= MAX_WSCALE || ws == 15
    }

    /// The client's MSS, rounded down to the table's.
    pub fn mss(self, v6: bool) -> u16 {
        let table = if v6 { &MSS_V6 } else { &MSS_V4 };
        table[usize::from(self.0 >> 6)]
    }

    /// The client's window scale, if it offered one.
    pub fn wscale(self) -> Option<u8> {
        let ws = (self.0 >> 2) & 0xf;
        (ws <= MAX_WSCALE).then_some(ws)
    }

    /// Whether the client offered SACK.
    pub fn sack(self) -> bool {
        self.0 & 2 != 0
    }

    /// Whether the client sent timestamps.
    pub fn ts(self) -> bool {
        self.0 & 1 != 0
    }
}

/// What a SYN (or SYN-ACK) offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynOpts {
    /// MSS (RFC 9293's default 536 when absent; IPv6's 1220 is applied by [`Data::of`]'s
    /// table).
    pub mss: u16,
    /// Window scale.
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack: bool,
    /// Timestamps: value and echo.
    pub ts: Option<(u32, u32)>,
}

/// Read the options of a TCP header's option bytes; a malformed list ends the reading.
pub fn parse_options(mut b: &[u8]) -> SynOpts {
    let mut o = SynOpts {
        mss: 536,
        wscale: None,
        sack: false,
        ts: None,
    };
    while let Some(&kind) = b.first() {
        match kind {
            opt::END => break,
            opt::NOP => {
                b = &b[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = b.get(1) else { break };
        let len = usize::from(len);
        if len < 2 || len > b.len() {
            break;
        }
        let v = &b[2..len];
        match (kind, v.len()) {
            (opt::MSS, 2) => o.mss = u16::from_be_bytes([v[0], v[1]]),
            (opt::WS, 1) => o.wscale = Some(v[0].min(MAX_WSCALE)),
            (opt::SACK_PERM, 0) => o.sack = true,
            (opt::TS, 8) => {
                o.ts = Some((
                    u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                    u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
                ))
            }
            _ => {}
        }
        b = &b[len..];
    }
    o
}

/// Where the timestamp option of a segment's option bytes is (the offset of its value),
/// if it has one: Linux's NOP NOP TS layout is looked at first.
pub fn find_ts(b: &[u8]) -> Option<usize> {
    if b.len() >= 12 && b[..4] == [opt::NOP, opt::NOP, opt::TS, opt::TS_LEN as u8] {
        return Some(4);
    }
    let mut at = 0;
    while let Some(&kind) = b.get(at) {
        match kind {
            opt::END => return None,
            opt::NOP => at += 1,
            _ => {
                let len = usize::from(*b.get(at + 1)?);
                if len < 2 || at + len > b.len() {
                    return None;
                }
                if kind == opt::TS && len == opt::TS_LEN {
                    return Some(at + 2);
                }
                at += len;
            }
        }
    }
    None
}

/// Write a SYN's or SYN-ACK's options in Linux's order and layout (MSS; SACK permitted and
/// timestamps; window scale), padded to whole words. Returns their length (at most 20).
pub fn write_options(
    out: &mut [u8; 40],
    mss: u16,
    sack: bool,
    ts: Option<(u32, u32)>,
    ws: Option<u8>,
) -> usize {
    let mut n = 0;
    let mut put = |b: &[u8]| {
        out[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    let m = mss.to_be_bytes();
    put(&[opt::MSS, 4, m[0], m[1]]);
    match (ts, sack) {
        (Some((val, ecr)), sack) => {
            if sack {
                put(&[opt::SACK_PERM, 2]);
            } else {
                put(&[opt::NOP, opt::NOP]);
            }
            put(&[opt::TS, opt::TS_LEN as u8]);
            put(&val.to_be_bytes());
            put(&ecr.to_be_bytes());
        }
        (None, true) => put(&[opt::NOP, opt::NOP, opt::SACK_PERM, 2]),
        (None, false) => {}
    }
    if let Some(w) = ws {
        put(&[opt::NOP, opt::WS, 3, w]);
    }
    n
}

/// Where a synproxied connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The client's handshake is done and the server was sent its SYN: no answer yet.
    Half,
    /// The server answered: the halves are joined.
    Joined,
}

/// A synproxied connection's part: what joining its halves needs, then what translating
/// between them needs. Kept with the connection's helper state (`conn::app`), under its
/// lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// Where it is.
    pub phase: Phase,
    /// The client's initial sequence number.
    pub client_isn: u32,
    /// The cookie: wvs's initial sequence number towards the client.
    pub cookie: u32,
    /// What the client's SYN offered.
    pub data: Data,
    /// Its MSS as the cookie rounded it.
    pub mss: u16,
    /// The window scale the client was told (when it offered one).
    pub our_ws: u8,
    /// The client's last window field and timestamp value (for the ACK that completes
    /// the server's handshake).
    pub client_win: u16,
    /// See `client_win`.
    pub client_tsval: u32,
    /// The timestamp value of wvs's SYN-ACK (the client's echo of it).
    pub our_tsval: u32,
    /// What the client sent with its handshake's ACK, delivered with the server's.
    pub held: Option<Box<[u8]>>,
    /// After the join: the server's window scale, if it offered one.
    pub server_ws: Option<u8>,
    /// After the join: added to the server's timestamps (and taken from the client's
    /// echoes).
    pub ts_delta: u32,
    /// The server's initial sequence number, once it answered.
    pub server_isn: u32,
}

impl Join {
    /// Scales of the windows server to client: (the server's, the client's reading).
    fn out_scales(&self) -> (u8, u8) {
        match self.data.wscale() {
            Some(_) => (self.server_ws.unwrap_or(0), self.our_ws),
            None => (0, 0),
        }
    }

    /// Scales of the windows client to server: (the client's, the server's reading).
    fn in_scales(&self) -> (u8, u8) {
        match (self.data.wscale(), self.server_ws) {
            (Some(c), Some(_)) => (c, c),
            (Some(c), None) => (c, 0),
            (None, _) => (0, 0),
        }
    }

    /// A window field of a segment from the server (`out`) or the client, in the scale its
    /// receiver reads.
    pub fn window(&self, out: bool, field: u16) -> u16 {
        let (from, to) = if out {
            self.out_scales()
        } else {
            self.in_scales()
        };
        rescale(field, from, to)
    }

    /// A segment's timestamp option (value, echo) as its receiver is to see it.
    pub fn timestamps(&self, out: bool, (val, ecr): (u32, u32)) -> (u32, u32) {
        if out {
            (val.wrapping_add(self.ts_delta), ecr)
        } else {
            (val, ecr.wrapping_sub(self.ts_delta))
        }
    }
}

/// `field` in scale `from` as read in scale `to`, at most what the field holds.
pub fn rescale(field: u16, from: u8, to: u8) -> u16 {
    if from == to {
        return field;
    }
    let bytes = u64::from(field) << from;
    (bytes >> to).min(u64::from(u16::MAX)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn flow() -> ((IpAddr, u16), (IpAddr, u16)) {
        (
            (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 40000),
            (IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1)), 80),
        )
    }

    #[test]
    fn a_cookie_checks_in_its_period_and_the_next_only() {
        let s = Secret::from_keys(1, 2);
        let (c, v) = flow();
        let o = SynOpts {
            mss: 1460,
            wscale: Some(7),
            sack: true,
            ts: Some((5, 0)),
        };
        let d = Data::of(&o, false);
        let t0 = 10 << COUNT_SHIFT;
        let (k, _) = s.cookie(c, v, 1000, t0 + 5, d);
        assert_eq!(s.check(c, v, 1000, k, t0 + 5), Some(d));
        assert_eq!(s.check(c, v, 1000, k, t0 + (1 << COUNT_SHIFT) + 7), Some(d));
        assert_eq!(s.check(c, v, 1000, k, t0 + (2 << COUNT_SHIFT)), None);
        assert_eq!(s.check(c, v, 1000, k, t0 + (4 << COUNT_SHIFT)), None);
        // Another ISN, port, key or cookie: refused.
        assert_eq!(s.check(c, v, 1001, k, t0), None);
        assert_eq!(s.check((c.0, 40001), v, 1000, k, t0), None);
        assert_eq!(Secret::from_keys(1, 3).check(c, v, 1000, k, t0), None);
        assert_eq!(s.check(c, v, 1000, k ^ 1, t0), None);
        assert_eq!(s.check(c, v, 1000, k ^ (1 << 23), t0), None);
        let back = s.check(c, v, 1000, k, t0).unwrap();
        assert_eq!(
            (back.mss(false), back.wscale(), back.sack(), back.ts()),
            (1460, Some(7), true, true)
        );
    }

    #[test]
    fn forged_acks_pass_at_the_hash_odds() {
        let s = Secret::random();
        let (c, v) = flow();
        let now = 77 << COUNT_SHIFT;
        let mut passed = 0;
        for i in 0..200_000u32 {
            let forged = i.wrapping_mul(2_654_435_761);
            if s.check(c, v, i, forged, now).is_some() {
                passed += 1;
            }
        }
        // 2^-22 each, of which the data bits' 15 in 16: about 0.05 expected.
        assert!(passed <= 2, "{passed} forged ACKs passed");
    }

    #[test]
    fn the_options_round_trip_through_the_cookie() {
        for (mss, v6, want) in [
            (1460, false, 1460),
            (1459, false, 1440),
            (9000, false, 1460),
            (100, false, 536),
            (1400, true, 1220),
            (9000, true, 8940),
        ] {
            for ws in [None, Some(0), Some(7), Some(14)] {
                for sack in [false, true] {
                    for ts in [None, Some((1, 2))] {
                        let d = Data::of(
                            &SynOpts {
                                mss,
                                wscale: ws,
                                sack,
                                ts,
                            },
                            v6,
                        );
                        assert!(d.valid());
                        assert_eq!(
                            (d.mss(v6), d.wscale(), d.sack(), d.ts()),
                            (want, ws, sack, ts.is_some())
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn options_are_written_as_linux_writes_them_and_read_back() {
        let mut b = [0u8; 40];
        let n = write_options(&mut b, 1460, true, Some((7, 9)), Some(7));
        assert_eq!(n, 20);
        assert_eq!(
            b[..n],
            [
                2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9, 1, 3, 3, 7
            ]
        );
        assert_eq!(
            parse_options(&b[..n]),
            SynOpts {
                mss: 1460,
                wscale: Some(7),
                sack: true,
                ts: Some((7, 9))
            }
        );
        let n = write_options(&mut b, 536, true, None, None);
        assert_eq!(b[..n], [2, 4, 2, 24, 1, 1, 4, 2]);
        // Malformed lists end the reading without a panic.
        for bad in [
            &[2u8][..],
            &[2, 9, 0],
            &[8, 10, 1, 2],
            &[3, 0, 7],
            &[1, 1, 1],
        ] {
            let _ = parse_options(bad);
            let _ = find_ts(bad);
        }
        assert_eq!(find_ts(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]), Some(4));
        assert_eq!(find_ts(&[4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]), Some(4));
        assert_eq!(find_ts(&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2]), None);
    }

    #[test]
    fn windows_are_read_in_the_scale_their_receiver_knows() {
        let mut j = Join {
            phase: Phase::Joined,
            client_isn: 0,
            cookie: 0,
            data: Data::of(
                &SynOpts {
                    mss: 1460,
                    wscale: Some(9),
                    sack: true,
                    ts: None,
                },
                false,
            ),
            mss: 1460,
            our_ws: 7,
            client_win: 0,
            client_tsval: 0,
            our_tsval: 0,
            held: None,
            server_ws: Some(10),
            ts_delta: 0,
            server_isn: 0,
        };
        // The server's 100 << 10 bytes read by the client in 7: 800.
        assert_eq!(j.window(true, 100), 800);
        assert_eq!(j.window(true, 60_000), u16::MAX);
        // The client's window goes as it is: the server knows the client's scale.
        assert_eq!(j.window(false, 100), 100);
        // A server without scaling reads the client's windows unscaled.
        j.server_ws = None;
        assert_eq!(j.window(false, 100), 51_200);
        assert_eq!(j.window(true, 64_000), 500);
        j.ts_delta = 10;
        assert_eq!(j.timestamps(true, (5, 3)), (15, 3));
        assert_eq!(j.timestamps(false, (5, 13)), (5, 3));
    }
}
