//! keepalived.conf as `wvs adm --import-keepalived` reads it (includes refused: no file
//! is read).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = wvs::adm::keepalived::import_str(text);
});
