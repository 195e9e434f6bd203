//! The weights reader on arbitrary bytes: PyTorch zip and legacy pickles, and safetensors
//! (`fgvc_backbone::weights::read_checkpoint_bytes`, what `read_checkpoint` runs on a file's bytes).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fgvc_backbone::weights::read_checkpoint_bytes(data, "fuzz.pth", None);
});
