//! The REST API's JSON bodies: a service and a real server, deserialized and validated.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(def) = serde_json::from_slice::<wvs::config::ServiceDef>(data) {
        let _ = def.validate();
    }
    if let Ok(real) = serde_json::from_slice::<wvs::config::RealDef>(data) {
        let _ = serde_json::to_string(&real);
    }
    let _ = serde_json::from_slice::<wvs::config::Timeouts>(data).map(|t| t.validate());
    let _ = serde_json::from_slice::<wvs::config::Sysctl>(data);
    let _ = serde_json::from_slice::<wvs::config::DefenseSettings>(data).map(|d| d.validate());
});
