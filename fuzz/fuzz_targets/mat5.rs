//! The MATLAB v5 reader on arbitrary bytes (`fgvc_data::mat5::parse_mat`, what Stanford Cars'
//! annotation files go through).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fgvc_data::mat5::parse_mat(data, std::path::Path::new("fuzz.mat"));
});
