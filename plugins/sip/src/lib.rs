//! SIP, as `ip_vs_pe_sip.c` keeps a call on one server: the persistence key of a UDP
//! datagram is its `Call-ID` header's value, found as netfilter's SIP parser finds it
//! (`ct_sip_get_header` with `SIP_HDR_CALL_ID`, `nf_conntrack_sip.c`).
//!
//! - Only UDP, only a datagram with payload: anything else is dropped (`-EINVAL`, which
//!   `ip_vs_sched_persist` answers with `NF_DROP`).
//! - The header is looked for at the start of a line after the first (the request or status
//!   line is never a header), by its name `Call-ID` in any case or its compact form `i`
//!   followed by a character that is not a letter; a line that starts with a space or a tab
//!   continues the one before and is skipped. After the name, blanks (a continuation line
//!   included), a colon, blanks again, then the value: a word of SIP's token characters,
//!   with an optional `@` and a second word.
//! - A name followed by anything but a colon, or by blanks to the end of its line, ends the
//!   search (not found: dropped). A header whose value is no word is passed over and the
//!   search goes on from where the kernel goes on (`dataoff += matchoff`).
//! - A value longer than 255 bytes (`IP_VS_PEDATA_MAXLEN`), one that runs to the end of the
//!   datagram, or one not followed by CR or LF is refused (dropped).
//!
//! The template is then `<UDP, client network, vaddr, vport, Call-ID>`, so with
//! one-packet scheduling (`-o`) each call of one client goes to its own server and every
//! message of a call to the same one.

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, PE_MAX_KEY, PeKey, PersistenceEngine};

/// The SIP persistence engine.
#[derive(Debug, Default)]
pub struct Sip;

wvs_sdk::export_persistence_engine!(Sip);

/// UDP's protocol number.
const UDP: u8 = 17;

impl PersistenceEngine for Sip {
    const NAME: &'static str = "sip";

    fn key(&mut self, conn: &ConnInfo, payload: &[u8], out: &mut [u8]) -> PeKey {
        if conn.proto != UDP || payload.is_empty() {
            return PeKey::Drop;
        }
        match call_id(payload) {
            Some(id) if id.len() <= out.len() => {
                out[..id.len()].copy_from_slice(id);
                PeKey::Key(id.len())
            }
            _ => PeKey::Drop,
        }
    }
}

/// The Call-ID of a SIP message, as `get_callid` of `ip_vs_pe_sip.c` accepts it.
pub fn call_id(msg: &[u8]) -> Option<&[u8]> {
    let mut dataoff = 0;
    let (off, len) = loop {
        match get_header(msg, dataoff)? {
            Header::Found(off, len) => break (off, len),
            // An empty value: the kernel goes on from `dataoff + matchoff`.
            Header::Empty(off) => dataoff += off,
        }
    };
    if len > PE_MAX_KEY {
        return None;
    }
    // A header is always followed by a line terminator (CR, LF or CRLF: RFC 2543 allows
    // all three).
    match msg.get(off + len) {
        Some(b'\r' | b'\n') => msg.get(off..off + len),
        _ => None,
    }
}

/// What `ct_sip_get_header` found.
enum Header {
    /// The value at this offset, of this length.
    Found(usize, usize),
    /// The header, with an empty value at this offset.
    Empty(usize),
}

/// `ct_sip_get_header(.., SIP_HDR_CALL_ID, ..)`: `None` when there is no Call-ID header
/// from `dataoff` on (or a name not followed by a colon ends the search).
fn get_header(msg: &[u8], dataoff: usize) -> Option<Header> {
    const NAME: &[u8] = b"Call-Id";
    const COMPACT: &[u8] = b"i";
    let limit = msg.len();
    let mut p = dataoff;
    while p < limit {
        // The beginning of a line.
        if !matches!(msg[p], b'\r' | b'\n') {
            p += 1;
            continue;
        }
        p += 1;
        if p >= limit {
            return None;
        }
        if msg[p - 1] == b'\r' && msg[p] == b'\n' {
            p += 1;
            if p >= limit {
                return None;
            }
        }
        // A continuation line.
        if matches!(msg[p], b' ' | b'\t') {
            continue;
        }
        let rest = &msg[p..];
        if rest.len() >= NAME.len() && rest[..NAME.len()].eq_ignore_ascii_case(NAME) {
            p += NAME.len();
        } else if rest.len() > COMPACT.len()
            && rest[..COMPACT.len()].eq_ignore_ascii_case(COMPACT)
            && !rest[COMPACT.len()].is_ascii_alphabetic()
        {
            p += COMPACT.len();
        } else {
            // Not this header: on to the next line break (the loop's first test).
            continue;
        }
        p = skip_whitespace(msg, p)?;
        if msg.get(p) != Some(&b':') {
            return None;
        }
        p += 1;
        if p >= limit {
            return None;
        }
        p = skip_whitespace(msg, p)?;
        let len = callid_len(&msg[p.min(limit)..]);
        return Some(if len == 0 {
            Header::Empty(p)
        } else {
            Header::Found(p, len)
        });
    }
    None
}

/// `sip_skip_whitespace`: past blanks, and past a line break into a continuation line;
/// `None` at a line break that no continuation line follows.
fn skip_whitespace(msg: &[u8], mut p: usize) -> Option<usize> {
    while p < msg.len() {
        match msg[p] {
            b' ' | b'\t' => p += 1,
            b'\r' | b'\n' => return follow_continuation(msg, p),
            _ => break,
        }
    }
    Some(p)
}

/// `sip_follow_continuation`: from a line break, the first non-blank of the next line if
/// it is a continuation line.
fn follow_continuation(msg: &[u8], mut p: usize) -> Option<usize> {
    p += 1;
    if p >= msg.len() {
        return None;
    }
    if msg[p - 1] == b'\r' && msg[p] == b'\n' {
        p += 1;
        if p >= msg.len() {
            return None;
        }
    }
    if !matches!(msg[p], b' ' | b'\t') {
        return None;
    }
    while p < msg.len() && matches!(msg[p], b' ' | b'\t') {
        p += 1;
    }
    Some(p)
}

/// `callid_len`: a word, and `@` with a second word (0 when the second is empty).
fn callid_len(v: &[u8]) -> usize {
    let len = word_len(v);
    if len == 0 || v.get(len) != Some(&b'@') {
        return len;
    }
    let domain = word_len(&v[len + 1..]);
    if domain == 0 { 0 } else { len + 1 + domain }
}

fn word_len(v: &[u8]) -> usize {
    v.iter().take_while(|&&c| is_word(c)).count()
}

/// `iswordc`: SIP's token characters as netfilter reads them.
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'"'
                | b'%'
                | b'('..=b'+'
                | b':'
                | b'<'
                | b'>'
                | b'?'
                | b'['..=b']'
                | b'_'
                | b'`'
                | b'{'
                | b'}'
                | b'~'
                | b'-'..=b'/'
                | b'\''
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(call_id_line: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:198.18.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060\r\n\
             {call_id_line}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_call_id_of_a_request() {
        let m = options("Call-ID: a84b4c76e66710@pc33.example.com");
        assert_eq!(call_id(&m), Some(&b"a84b4c76e66710@pc33.example.com"[..]));
        // Any case, the compact form, blanks around the colon, a continuation line.
        for (line, want) in [
            ("call-id: abc", "abc"),
            ("CALL-ID:abc", "abc"),
            ("i: xyz@host", "xyz@host"),
            ("i :xyz", "xyz"),
            ("Call-ID \t:  q1", "q1"),
            ("Call-ID:\r\n  folded", "folded"),
        ] {
            assert_eq!(call_id(&options(line)), Some(want.as_bytes()), "{line}");
        }
        // LF alone ends lines too.
        let m = b"OPTIONS sip:x SIP/2.0\nCall-ID: lf-only\n\n";
        assert_eq!(call_id(m), Some(&b"lf-only"[..]));
    }

    #[test]
    fn what_the_kernel_refuses() {
        // No header; a header only on the request line; an `i` that begins a word.
        assert_eq!(call_id(&options("Max-Forwards: 70")), None);
        assert_eq!(call_id(b"Call-ID: abc\r\n\r\n"), None);
        assert_eq!(call_id(&options("iD: abc")), None);
        // A name not followed by a colon ends the search, even with a Call-ID after it.
        let m = options("Call-IDx: abc\r\nCall-ID: later");
        assert_eq!(call_id(&m), None);
        // The value runs to the end, or is followed by neither CR nor LF.
        assert_eq!(call_id(b"OPTIONS x SIP/2.0\r\nCall-ID: abc"), None);
        assert_eq!(call_id(&options("Call-ID: abc;x")), None);
        // Longer than IP_VS_PEDATA_MAXLEN.
        let long = "a".repeat(256);
        assert_eq!(call_id(&options(&format!("Call-ID: {long}"))), None);
        let ok = "a".repeat(255);
        assert_eq!(
            call_id(&options(&format!("Call-ID: {ok}"))),
            Some(ok.as_bytes())
        );
        // `abc@` with no domain: no value.
        assert_eq!(call_id(&options("Call-ID: abc@")), None);
    }

    #[test]
    fn an_empty_header_is_passed_over() {
        // A value that is no word: the search goes on.
        let m = options("Call-ID: ;x\r\nCall-ID: second");
        assert_eq!(call_id(&m), Some(&b"second"[..]));
        // Blanks to the end of the line, no continuation: the search ends there.
        let m = options("Call-ID: \r\nCall-ID: second");
        assert_eq!(call_id(&m), None);
    }

    #[test]
    fn only_udp_with_a_payload() {
        let mut sip = Sip;
        let mut out = [0u8; PE_MAX_KEY];
        let udp = ConnInfo {
            proto: 17,
            ..Default::default()
        };
        let tcp = ConnInfo {
            proto: 6,
            ..Default::default()
        };
        let m = options("Call-ID: c1");
        assert_eq!(sip.key(&udp, &m, &mut out), PeKey::Key(2));
        assert_eq!(&out[..2], b"c1");
        assert_eq!(sip.key(&tcp, &m, &mut out), PeKey::Drop);
        assert_eq!(sip.key(&udp, b"", &mut out), PeKey::Drop);
        assert_eq!(
            sip.key(&udp, &options("To: x"), &mut out),
            PeKey::Drop,
            "no Call-ID"
        );
    }

    #[test]
    fn any_bytes_never_panic() {
        // Every prefix of a message, and bytes that stop at each awkward place.
        let m = options("Call-ID:\r\n \tx@y");
        for n in 0..m.len() {
            let _ = call_id(&m[..n]);
        }
        for m in [
            &b"\r"[..],
            b"\n",
            b"\r\n",
            b"\r\ni",
            b"\r\ni:",
            b"\r\nCall-ID",
            b"\r\nCall-ID:\r",
        ] {
            assert_eq!(call_id(m), None);
        }
    }
}
