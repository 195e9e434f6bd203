//! The training checkpoint reader on arbitrary bytes (`fgvc_train::checkpoint::load_bytes`, what
//! `--resume` and `eval`/`predict` run on `checkpoint-last.safetensors` / `best.safetensors`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.safetensors");
    let _ = fgvc_train::checkpoint::load_bytes(data, path, &candle_core::Device::Cpu);
});
