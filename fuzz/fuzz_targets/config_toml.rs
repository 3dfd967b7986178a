//! The TOML configuration (`--config`, the state file): parsed and validated, and what
//! parses is written back and must parse to the same configuration.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = wvs::config::parse(text) {
        let again = wvs::config::parse(&wvs::config::to_toml(&cfg));
        assert_eq!(
            again.ok().as_ref(),
            Some(&cfg),
            "to_toml does not round-trip"
        );
    }
});
