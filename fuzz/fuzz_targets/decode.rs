//! Image decoding as the data loader does it (`fgvc_data::decode_bytes`: strict JPEG, PNG).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fgvc_data::decode_bytes(data, std::path::Path::new("fuzz.img"));
});
