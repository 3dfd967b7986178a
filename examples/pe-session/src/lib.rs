//! An example persistence engine: a datagram's first word (a session token a line
//! protocol puts first) keys its persistence template, so that every datagram of a session
//! goes to one server whatever the client's address within the service's netmask and
//! port; a datagram without one gets the service's usual template.
//!
//! ```sh
//! wvs adm --plugin-load session target/wasm32-unknown-unknown/release/wvs_example_pe_session.wasm
//! wvs adm -A -u 198.18.100.1:7000 -s rr -p 300 -o --pe session
//! ```

#![cfg_attr(target_arch = "wasm32", no_std)]

use wvs_sdk::{ConnInfo, PeKey, PersistenceEngine};

/// Keeps a session's datagrams on one server: the key is the payload's first word.
#[derive(Debug, Default)]
pub struct Session;

impl PersistenceEngine for Session {
    const NAME: &'static str = "session";

    fn key(&mut self, _c: &ConnInfo, payload: &[u8], out: &mut [u8]) -> PeKey {
        let word = payload
            .split(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or(&[]);
        if word.is_empty() || word.len() > out.len() {
            return PeKey::Default;
        }
        out[..word.len()].copy_from_slice(word);
        PeKey::Key(word.len())
    }
}

wvs_sdk::export_persistence_engine!(Session);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_is_the_key() {
        let mut out = [0u8; wvs_sdk::PE_MAX_KEY];
        let c = ConnInfo::default();
        let mut s = Session;
        assert_eq!(s.key(&c, b"tok-42 hello", &mut out), PeKey::Key(6));
        assert_eq!(&out[..6], b"tok-42");
        assert_eq!(s.key(&c, b"", &mut out), PeKey::Default);
        assert_eq!(s.key(&c, b" leading", &mut out), PeKey::Default);
        let long = [b'x'; 300];
        assert_eq!(s.key(&c, &long, &mut out), PeKey::Default);
    }
}
