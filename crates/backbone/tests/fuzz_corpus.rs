//! Replays the `pth` fuzz target's committed seeds and regression inputs (`fuzz/corpus/pth/`,
//! `fuzz/regressions/pth/`) through the function the target calls, so CI checks them without a fuzzer:
//! each is read or refused with an error naming the file, never a panic or an abort.

use std::path::Path;

use fgvc_backbone::weights::read_checkpoint_bytes;

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
fn the_pth_corpus_reads_or_is_refused_naming_the_file() {
    let inputs = inputs("pth");
    assert!(inputs.len() >= 5, "{} inputs", inputs.len());
    let mut read = 0;
    for (name, bytes) in &inputs {
        match read_checkpoint_bytes(bytes, name, None) {
            Ok(ck) => {
                assert!(!ck.tensors.is_empty(), "{name}");
                read += 1;
            }
            Err(e) => assert!(e.to_string().starts_with(name.as_str()), "{name}: {e}"),
        }
    }
    // The seeds are valid checkpoints, except the one that names a refused global.
    assert!(read >= 4, "only {read} inputs read");
}
