//! What else comes from outside: the real servers' replies to health checks (an HTTP reply
//! judged by status, MD5 of the body and text; a UDP reply by its pattern; a DNS answer), and the API's request
//! parts that its handlers parse themselves (a Host header, a listing's cursor).
#![no_main]

use wvs::config::check::{HttpUrl, Probe};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let url = HttpUrl {
        path: "/".into(),
        status: vec![(200, 299), (404, 404)],
        digest: Some([0x5a; 16]),
        contains: Some("ok".into()),
    };
    let _ = wvs::health::probe::judge_http(&url, data);
    let plain = HttpUrl {
        path: "/".into(),
        status: vec![(200, 299)],
        digest: None,
        contains: None,
    };
    let _ = wvs::health::probe::judge_http(&plain, data);
    // UDP_CHECK's reply rules: a pattern with wildcard nibbles, lengths, a text.
    let udp = Probe::Udp {
        payload: Vec::new(),
        expect: Some(b"ok".to_vec()),
        reply: vec![(0x72, 0xff), (0x00, 0x00), (0x01, 0x0f)],
        require: true,
        len: (2, 255),
    };
    let _ = wvs::health::probe::judge_udp(&udp, data);
    if data.len() >= 2 {
        let id = u16::from_be_bytes([data[0], data[1]]);
        let _ = wvs::health::probe::judge_dns(id, &data[2..]);
    }
    let _ = wvs::api::host_allowed(data, &["lb1.example".to_string()]);
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(c) = wvs::api::ConnCursor::parse(s)
    {
        assert_eq!(wvs::api::ConnCursor::parse(&c.encode()), Some(c));
    }
});
