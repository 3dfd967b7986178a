//! FTP, as `ip_vs_ftp.c` helps it through NAT.
//!
//! - Passive mode: the client's `PASV` (IPv4) or `EPSV` is remembered; the server's
//!   `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply then names the real server, so
//!   it is rewritten to name the virtual address (the text may change length; the host
//!   shifts the sequence numbers), and the data connection is expected from the client,
//!   any port, to the virtual address on the server's port (IPVS's `NO_CPORT` entry). A
//!   `229 (|||port|)` reply names no address: only the expectation is needed (one that
//!   names the server, `(|2|addr|port|)`, is rewritten to `(|||port|)`, as IPVS does).
//! - Active mode: the client's `PORT h1,h2,h3,h4,p1,p2` (IPv4) or `EPRT |1|addr|port|`
//!   (`|2|` in an IPv6 session) names where the server is to connect; the data connection
//!   is expected from the real server's port 20 (the control port less one) to that client
//!   port, leaving as the virtual address's port 20.
//!
//! As in IPVS (`ip_vs_ftp.c` since it learned IPv6): only in ESTABLISHED, one segment at a
//! time (a command split across two segments is not seen), addresses of the session's own
//! family only (`EPSV 1` and `|1|` in IPv4, `EPSV 2` and `|2|` in IPv6), and nothing else of
//! the session is touched.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{Action, Expect, HELPER_STATE_LEN, Helper, HelperHost, PacketInfo, helper_dir};

/// IPVS's `IP_VS_TCP_S_ESTABLISHED`.
const ESTABLISHED: u8 = 1;

/// What the control connection waits for (`cp->app_data`), in state byte 0.
const ACTIVE: u8 = 0;
const PASV: u8 = 1;
const EPSV: u8 = 2;
/// Bytes 1..5: the stream offset of the last passive reply answered, byte 5 its mode, so
/// that a retransmission of it is rewritten again (IPVS sends it as the server wrote it).
const LAST_OFFSET: usize = 1;
const LAST_MODE: usize = 5;

/// The FTP helper.
#[derive(Debug, Default)]
pub struct Ftp;

wvs_sdk::export_helper!(Ftp);

impl Helper for Ftp {
    const NAME: &'static str = "ftp";
    const FLAGS: u32 = wvs_sdk::helper_flags::EXPECTS;

    fn packet(
        &mut self,
        pkt: &PacketInfo,
        state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        out: &mut [u8],
        host: &mut dyn HelperHost,
    ) -> Action {
        if pkt.tcp_state != ESTABLISHED || (pkt.af != 4 && pkt.af != 6) {
            return Action::Keep;
        }
        if pkt.dir == helper_dir::IN {
            from_client(pkt, state, payload, host);
            Action::Keep
        } else {
            from_server(pkt, state, payload, out, host)
        }
    }
}

/// `ip_vs_ftp_in`: note a passive request, or expect an active data connection.
fn from_client(
    pkt: &PacketInfo,
    state: &mut [u8; HELPER_STATE_LEN],
    payload: &[u8],
    host: &mut dyn HelperHost,
) {
    let v6 = pkt.af == 6;
    if let Some(mode) = passive_request(payload, v6) {
        state[0] = mode;
        return;
    }
    let Some((addr, port)) = active_request(payload, v6) else {
        return;
    };
    state[0] = ACTIVE;
    // The server connects from the port below the control port (20 for 21), and the
    // client sees it come from the same port of the virtual address.
    let e = Expect {
        caddr: addr,
        daddr: pkt.daddr,
        cport: port,
        vport: pkt.vport.wrapping_sub(1),
        dport: pkt.dport.wrapping_sub(1),
        proto: 6,
        ..Default::default()
    };
    host.expect(&e);
}

/// `ip_vs_ftp_out`: after a passive request, expect the data connection and name the
/// virtual address in the reply.
fn from_server(
    pkt: &PacketInfo,
    state: &mut [u8; HELPER_STATE_LEN],
    payload: &[u8],
    out: &mut [u8],
    host: &mut dyn HelperHost,
) -> Action {
    let last = u32::from_le_bytes([state[1], state[2], state[3], state[4]]);
    let mode = if state[0] == ACTIVE && state[LAST_MODE] != ACTIVE && pkt.offset == last {
        state[LAST_MODE]
    } else {
        state[0]
    };
    let mut text = [0u8; 40];
    let (daddr, port, n, span) = match mode {
        PASV => match pasv_reply(payload) {
            Some((addr, port, span)) => {
                let n = format_pasv(&mut text, addr_of(&pkt.vaddr), port);
                (v4_mapped(addr), port, n, span)
            }
            None => return Action::Keep,
        },
        EPSV => match epsv_reply(payload, pkt.af == 6) {
            // The data connection goes to the controlling connection's server, whatever
            // address the reply named; the client is told only the port (`|||port|`).
            Some((port, (start, end))) => {
                let n = format_epsv(&mut text, port);
                let span = (payload[start..end] != text[..n]).then_some((start, end));
                (pkt.daddr, port, n, span)
            }
            None => return Action::Keep,
        },
        _ => return Action::Keep,
    };
    state[0] = ACTIVE;
    if pkt.offset != u32::MAX {
        state[LAST_OFFSET..LAST_OFFSET + 4].copy_from_slice(&pkt.offset.to_le_bytes());
        state[LAST_MODE] = mode;
    }
    let e = Expect {
        caddr: pkt.caddr,
        daddr,
        cport: 0,
        vport: port,
        dport: port,
        proto: 6,
        ..Default::default()
    };
    if !host.expect(&e) {
        return Action::Keep;
    }
    let Some((start, end)) = span else {
        return Action::Keep;
    };
    splice(payload, start, end, &text[..n], out).map_or(Action::Keep, Action::Replace)
}

/// `"PASV\r\n"` (IPv4) anywhere in the segment, or `"EPSV\r\n"`, or `"EPSV 1\r\n"`
/// (IPv4) / `"EPSV 2\r\n"` (IPv6): the mode to wait for.
pub fn passive_request(p: &[u8], v6: bool) -> Option<u8> {
    let family = if v6 { b'2' } else { b'1' };
    for i in 0..p.len() {
        let rest = &p[i..];
        if !v6 && starts_with_nocase(rest, b"PASV\r\n") {
            return Some(PASV);
        }
        if starts_with_nocase(rest, b"EPSV") {
            let tail = &rest[4..];
            if tail.starts_with(b"\r\n") || tail.starts_with(&[b' ', family, b'\r', b'\n']) {
                return Some(EPSV);
            }
        }
    }
    None
}

/// `PORT h1,h2,h3,h4,p1,p2` (IPv4) or `EPRT |1|a.b.c.d|port|` (IPv4) / `EPRT
/// |2|ipv6|port|` (IPv6) at the start of the segment: the client's address (IPv4 mapped)
/// and port.
pub fn active_request(p: &[u8], v6: bool) -> Option<([u8; 16], u16)> {
    if !v6 && starts_with_nocase(p, b"PORT ") {
        let (addr, port, _) = six_numbers(&p[5..])?;
        return Some((v4_mapped(addr), port));
    }
    if starts_with_nocase(p, b"EPRT ") {
        let (addr, port, _) = extended(&p[5..], Some(v6))?;
        return Some((addr?, port));
    }
    None
}

/// What a passive reply names: the address, the port, and where the text to rewrite lies.
pub type Passive = ([u8; 4], u16, Option<(usize, usize)>);

/// `227 ...(h1,h2,h3,h4,p1,p2)`: the address, the port and where the numbers lie.
pub fn pasv_reply(p: &[u8]) -> Option<Passive> {
    if !p.starts_with(b"227 ") {
        return None;
    }
    // The numbers start at the first digit after the code ("(" is optional).
    let start = 4 + p[4..].iter().position(u8::is_ascii_digit)?;
    let (addr, port, len) = six_numbers(&p[start..])?;
    Some((addr, port, Some((start, start + len))))
}

/// `229 ...(|||port|)`, or `(|1|a.b.c.d|port|)` / `(|2|ipv6|port|)` of the session's
/// family: the port and where the text from the first delimiter to the last lies.
pub fn epsv_reply(p: &[u8], v6: bool) -> Option<(u16, (usize, usize))> {
    if !p.starts_with(b"229 ") {
        return None;
    }
    let open = p.iter().position(|&b| b == b'(')? + 1;
    let (_, port, len) = extended(&p[open..], None).or_else(|| extended(&p[open..], Some(v6)))?;
    Some((port, (open, open + len)))
}

/// RFC 2428's `<d><net-prt><d><net-addr><d><tcp-port><d>` (any delimiter from `!` to
/// `~`): the address (IPv4 mapped), the port and the text's length. `family` `None` takes
/// only the form without an address (`<d><d><d>port<d>`, an EPSV reply's); `Some(v6)` only
/// the session's own `net-prt` (`1` IPv4, `2` IPv6) with its address.
fn extended(p: &[u8], family: Option<bool>) -> Option<(Option<[u8; 16]>, u16, usize)> {
    let d = *p.first()?;
    if !(33..=126).contains(&d) {
        return None;
    }
    let (addr, at) = match family {
        None => {
            if p.get(1) != Some(&d) || p.get(2) != Some(&d) {
                return None;
            }
            (None, 3)
        }
        Some(v6) => {
            let prt = if v6 { b'2' } else { b'1' };
            if p.get(1) != Some(&prt) || p.get(2) != Some(&d) {
                return None;
            }
            let rest = &p[3..];
            let end = rest.iter().position(|&b| b == d)?;
            let text = &rest[..end];
            let addr = if v6 {
                core::str::from_utf8(text)
                    .ok()?
                    .parse::<core::net::Ipv6Addr>()
                    .ok()?
                    .octets()
            } else {
                v4_mapped(parse_v4(text)?)
            };
            (Some(addr), 3 + end + 1)
        }
    };
    let rest = &p[at..];
    let (port, used) = number(rest)?;
    (rest.get(used) == Some(&d) && (1..=65535).contains(&port)).then_some((
        addr,
        port as u16,
        at + used + 1,
    ))
}

/// `h1,h2,h3,h4,p1,p2`, each at most 255, ended by anything but a digit or a comma:
/// the address, the port and the text's length.
fn six_numbers(p: &[u8]) -> Option<([u8; 4], u16, usize)> {
    let (v, at) = bytes::<6>(p, b',')?;
    if p.get(at) == Some(&b',') {
        return None;
    }
    let port = u16::from(v[4]) << 8 | u16::from(v[5]);
    Some(([v[0], v[1], v[2], v[3]], port, at))
}

/// `N` decimal numbers of at most 255 separated by `sep`: them and the text's length.
fn bytes<const N: usize>(p: &[u8], sep: u8) -> Option<([u8; N], usize)> {
    let mut v = [0u8; N];
    let mut at = 0;
    for (i, slot) in v.iter_mut().enumerate() {
        let (n, used) = number(&p[at..])?;
        *slot = u8::try_from(n).ok()?;
        at += used;
        if i + 1 < N {
            if p.get(at) != Some(&sep) {
                return None;
            }
            at += 1;
        }
    }
    Some((v, at))
}

/// A decimal number of at most 5 digits: its value and length.
fn number(p: &[u8]) -> Option<(u32, usize)> {
    let len = p.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 5 {
        return None;
    }
    let v = p[..len]
        .iter()
        .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
    Some((v, len))
}

/// A dotted IPv4 address, the whole of `p`.
fn parse_v4(p: &[u8]) -> Option<[u8; 4]> {
    let (a, at) = bytes::<4>(p, b'.')?;
    (at == p.len()).then_some(a)
}

/// `|||port|` into `buf`: its length.
pub fn format_epsv(buf: &mut [u8; 40], port: u16) -> usize {
    buf[..3].copy_from_slice(b"|||");
    let mut digits = [0u8; 5];
    let mut len = 0;
    let mut v = port;
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        buf[3 + i] = *d;
    }
    buf[3 + len] = b'|';
    4 + len
}

/// `h1,h2,h3,h4,p1,p2` for `addr` and `port` into `buf` (24 bytes hold the longest).
pub fn format_pasv(buf: &mut [u8; 40], addr: [u8; 4], port: u16) -> usize {
    let nums = [
        addr[0],
        addr[1],
        addr[2],
        addr[3],
        (port >> 8) as u8,
        (port & 0xff) as u8,
    ];
    let mut n = 0;
    for (i, v) in nums.iter().enumerate() {
        if i > 0 {
            buf[n] = b',';
            n += 1;
        }
        let digits = [v / 100, v / 10 % 10, v % 10];
        let skip = if *v >= 100 {
            0
        } else if *v >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            buf[n] = b'0' + d;
            n += 1;
        }
    }
    n
}

/// `payload` with `start..end` replaced by `text`, into `out`: its length, or `None` if
/// it does not fit.
pub fn splice(
    payload: &[u8],
    start: usize,
    end: usize,
    text: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let n = payload.len() - (end - start) + text.len();
    if n > out.len() || end > payload.len() || start > end {
        return None;
    }
    out[..start].copy_from_slice(&payload[..start]);
    out[start..start + text.len()].copy_from_slice(text);
    out[start + text.len()..n].copy_from_slice(&payload[end..]);
    Some(n)
}

fn starts_with_nocase(p: &[u8], pat: &[u8]) -> bool {
    p.len() >= pat.len() && p[..pat.len()].eq_ignore_ascii_case(pat)
}

fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

fn addr_of(m: &[u8; 16]) -> [u8; 4] {
    [m[12], m[13], m[14], m[15]]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Host(Vec<Expect>, bool);
    impl HelperHost for Host {
        fn expect(&mut self, e: &Expect) -> bool {
            self.0.push(*e);
            self.1
        }
        fn now_ms(&self) -> u64 {
            0
        }
    }

    fn pkt(dir: u8) -> PacketInfo {
        PacketInfo {
            caddr: v4_mapped([198, 18, 0, 2]),
            vaddr: v4_mapped([198, 18, 0, 100]),
            daddr: v4_mapped([198, 19, 0, 11]),
            cport: 40000,
            vport: 21,
            dport: 21,
            proto: 6,
            af: 4,
            dir,
            tcp_state: ESTABLISHED,
            ..Default::default()
        }
    }

    fn call(
        dir: u8,
        state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        host: &mut Host,
    ) -> (Action, Vec<u8>) {
        call_as(&pkt(dir), state, payload, host)
    }

    /// The helper on `payload` as packet `p` of the session: its action and its output.
    fn call_as(
        p: &PacketInfo,
        state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        host: &mut Host,
    ) -> (Action, Vec<u8>) {
        let mut out = vec![0u8; 512];
        let a = Ftp.packet(p, state, payload, &mut out, host);
        let n = match a {
            Action::Replace(n) => n,
            _ => 0,
        };
        out.truncate(n);
        (a, out)
    }

    const REPLY: &[u8] = b"227 Entering Passive Mode (198,19,0,11,195,80).\r\n";

    #[test]
    fn passive_reply_names_the_vip_and_expects_the_data_connection() {
        let mut st = [0u8; HELPER_STATE_LEN];
        let mut h = Host(vec![], true);
        assert_eq!(call(0, &mut st, b"PASV\r\n", &mut h).0, Action::Keep);
        assert_eq!(st[0], PASV);
        let (a, out) = call(1, &mut st, REPLY, &mut h);
        assert_eq!(a, Action::Replace(out.len()));
        assert_eq!(out, b"227 Entering Passive Mode (198,18,0,100,195,80).\r\n");
        assert_eq!(st[0], ACTIVE);
        assert_eq!(h.0.len(), 1);
        let e = h.0[0];
        assert_eq!((e.cport, e.vport, e.dport), (0, 50000, 50000));
        assert_eq!(e.caddr, pkt(0).caddr);
        assert_eq!(e.daddr, pkt(0).daddr);
        // A retransmission of the reply (the same stream offset) is rewritten again...
        let again = call(1, &mut st, REPLY, &mut h);
        assert_eq!(
            again.1,
            b"227 Entering Passive Mode (198,18,0,100,195,80).\r\n"
        );
        // ... but another 227 without a PASV before it is left alone.
        let mut later = pkt(1);
        later.offset = 100;
        let mut out = vec![0u8; 512];
        let a = Ftp.packet(&later, &mut st, REPLY, &mut out, &mut h);
        assert_eq!(a, Action::Keep);
    }

    #[test]
    fn epsv_expects_without_rewriting() {
        let mut st = [0u8; HELPER_STATE_LEN];
        let mut h = Host(vec![], true);
        call(0, &mut st, b"epsv\r\n", &mut h);
        assert_eq!(st[0], EPSV);
        let (a, _) = call(
            1,
            &mut st,
            b"229 Entering Extended Passive Mode (|||50001|)\r\n",
            &mut h,
        );
        assert_eq!(a, Action::Keep);
        assert_eq!(h.0[0].vport, 50001);
        assert_eq!(h.0[0].daddr, pkt(0).daddr);
    }

    #[test]
    fn port_and_eprt_expect_the_servers_connection_from_port_20() {
        let mut st = [0u8; HELPER_STATE_LEN];
        let mut h = Host(vec![], true);
        call(0, &mut st, b"PORT 198,18,0,2,4,1\r\n", &mut h);
        call(0, &mut st, b"EPRT |1|198.18.0.2|5282|\r\n", &mut h);
        assert_eq!(h.0.len(), 2);
        assert_eq!((h.0[0].cport, h.0[0].vport, h.0[0].dport), (1025, 20, 20));
        assert_eq!(h.0[0].caddr, pkt(0).caddr);
        assert_eq!(h.0[1].cport, 5282);
        assert_eq!(
            call(0, &mut st, b"EPRT |2|::1|5282|\r\n", &mut h).0,
            Action::Keep
        );
        assert_eq!(h.0.len(), 2, "IPv6 in an IPv4 session is ignored");
    }

    fn pkt6(dir: u8) -> PacketInfo {
        let a = |last: u8, net: u8| {
            let mut m = [0u8; 16];
            m[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            m[5] = net;
            m[15] = last;
            m
        };
        PacketInfo {
            caddr: a(2, 0x18),
            vaddr: a(1, 0x18),
            daddr: a(0x11, 0x19),
            af: 6,
            ..pkt(dir)
        }
    }

    fn call6(
        dir: u8,
        state: &mut [u8; HELPER_STATE_LEN],
        payload: &[u8],
        host: &mut Host,
    ) -> (Action, Vec<u8>) {
        call_as(&pkt6(dir), state, payload, host)
    }

    /// IPv6 as `ip_vs_ftp.c` takes it: EPSV (bare or `2`) and EPRT `|2|`; PASV, PORT and
    /// the IPv4 forms are not of this family and are left alone.
    #[test]
    fn ipv6_sessions_take_epsv_and_eprt_of_their_family() {
        let mut st = [0u8; HELPER_STATE_LEN];
        let mut h = Host(vec![], true);
        for other in [&b"PASV\r\n"[..], b"EPSV 1\r\n", b"PORT 198,18,0,2,4,1\r\n"] {
            call6(0, &mut st, other, &mut h);
            assert_eq!(st[0], ACTIVE, "{other:?}");
        }
        call6(0, &mut st, b"EPRT |1|198.18.0.2|5282|\r\n", &mut h);
        assert!(h.0.is_empty(), "an IPv4 address in an IPv6 session");
        call6(0, &mut st, b"EPRT !2!2001:db8:18::2!5282!\r\n", &mut h);
        assert_eq!(h.0.len(), 1);
        let e = h.0[0];
        assert_eq!(e.caddr, pkt6(0).caddr);
        assert_eq!(e.daddr, pkt6(0).daddr);
        assert_eq!((e.cport, e.vport, e.dport), (5282, 20, 20));
        for bad in [
            &b"EPRT |2|2001:db8:18::g|5282|\r\n"[..],
            b"EPRT |2|2001:db8:18::2|0|\r\n",
            b"EPRT |2|2001:db8:18::2|5282\r\n",
        ] {
            call6(0, &mut st, bad, &mut h);
        }
        assert_eq!(h.0.len(), 1, "malformed EPRTs are ignored");
        call6(0, &mut st, b"EPSV 2\r\n", &mut h);
        assert_eq!(st[0], EPSV);
        let (a, _) = call6(
            1,
            &mut st,
            b"229 Entering Extended Passive Mode (|||50001|)\r\n",
            &mut h,
        );
        assert_eq!(a, Action::Keep, "nothing to hide");
        assert_eq!((h.0[1].vport, h.0[1].daddr), (50001, pkt6(0).daddr));
        // A reply naming the real server is told only the port, as IPVS rewrites it.
        call6(0, &mut st, b"EPSV\r\n", &mut h);
        let (a, out) = call6(
            1,
            &mut st,
            b"229 Extended Passive Mode OK (|2|2001:db8:19::11|50002|)\r\n",
            &mut h,
        );
        assert_eq!(a, Action::Replace(out.len()));
        assert_eq!(out, b"229 Extended Passive Mode OK (|||50002|)\r\n");
        assert_eq!(h.0[2].vport, 50002);
    }

    #[test]
    fn epsv_text_formats() {
        let mut b = [0u8; 40];
        for (port, want) in [
            (1u16, &b"|||1|"[..]),
            (50001, b"|||50001|"),
            (65535, b"|||65535|"),
        ] {
            let n = format_epsv(&mut b, port);
            assert_eq!(&b[..n], want);
        }
    }

    #[test]
    fn malformed_commands_are_ignored() {
        let mut st = [0u8; HELPER_STATE_LEN];
        let mut h = Host(vec![], true);
        for bad in [
            &b"PORT 198,18,0,2,4\r\n"[..],
            b"PORT 198,18,0,256,4,1\r\n",
            b"PORT 1,2,3,4,5,6,7\r\n",
            b"EPRT |1|198.18.0|5282|\r\n",
            b"EPRT |1|198.18.0.2|70000|\r\n",
            b"PAS",
            b"",
        ] {
            call(0, &mut st, bad, &mut h);
        }
        assert!(h.0.is_empty());
        assert_eq!(st[0], ACTIVE);
        st[0] = PASV;
        for bad in [&b"227 (1,2,3)\r\n"[..], b"227 ", b"200 OK\r\n"] {
            assert_eq!(call(1, &mut st, bad, &mut h).0, Action::Keep);
        }
        assert!(h.0.is_empty());
    }

    #[test]
    fn a_refused_expectation_leaves_the_reply() {
        let mut st = [PASV; HELPER_STATE_LEN];
        let mut h = Host(vec![], false);
        let (a, _) = call(1, &mut st, b"227 (198,19,0,11,195,80)\r\n", &mut h);
        assert_eq!(a, Action::Keep);
    }

    #[test]
    fn pasv_text_formats() {
        let mut b = [0u8; 40];
        let n = format_pasv(&mut b, [255, 255, 255, 255], 65535);
        assert_eq!(&b[..n], b"255,255,255,255,255,255");
        let n = format_pasv(&mut b, [1, 0, 10, 100], 256);
        assert_eq!(&b[..n], b"1,0,10,100,1,0");
    }
}
