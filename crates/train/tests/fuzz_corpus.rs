//! Replays the `checkpoint` and `config` fuzz targets' committed seeds and regression inputs
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the functions the targets call, so CI
//! checks them without a fuzzer: each is read or refused with an error naming the file, never a panic.

use std::path::Path;

use candle_core::Device;
use fgvc_train::{checkpoint, Config};

/// Every committed input of `target`: (file name, bytes).
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn the_checkpoint_corpus_reads_or_is_refused_naming_the_file() {
    let inputs = inputs("checkpoint");
    assert!(inputs.len() >= 2, "{} inputs", inputs.len());
    let mut read = 0;
    for (name, bytes) in &inputs {
        match checkpoint::load_bytes(bytes, Path::new(name), &Device::Cpu) {
            Ok(ck) => {
                assert!(!ck.weights.is_empty() && ck.state.is_some(), "{name}");
                read += 1;
            }
            Err(e) => assert!(e.to_string().contains(name.as_str()), "{name}: {e}"),
        }
    }
    assert!(read >= 2, "only {read} inputs read");
}

#[test]
fn the_config_corpus_parses_or_is_refused_naming_the_file() {
    let inputs = inputs("config");
    assert!(inputs.len() >= 5, "{} inputs", inputs.len());
    let mut read = 0;
    for (name, bytes) in &inputs {
        // The target only feeds UTF-8 text to the parser, as reading a config file does.
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        match Config::parse(text, name, &[]) {
            Ok(_) => read += 1,
            Err(e) => assert!(e.to_string().contains(name.as_str()), "{name}: {e}"),
        }
    }
    assert!(read >= 5, "only {read} inputs parsed");
}
