//! The configuration parser on arbitrary text (`fgvc_train::Config::parse`: TOML, every section's
//! schema and the checks that run before a training starts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fgvc_train::Config::parse(text, "fuzz.toml", &[]);
    }
});
