//! `wvs adm`'s command line (ipvsadm's syntax): words split at NUL bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let words: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = wvs::adm::parse::parse(&words);
});
