//! Replays the `mat5` and `decode` fuzz targets' committed seeds and regression inputs
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the functions the targets call, so CI
//! checks them without a fuzzer: each is read or refused with an error naming the file, never a panic.

use std::path::Path;

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
fn the_mat5_corpus_reads_or_is_refused_naming_the_file() {
    let inputs = inputs("mat5");
    assert!(inputs.len() >= 3, "{} inputs", inputs.len());
    let mut read = 0;
    for (name, bytes) in &inputs {
        match fgvc_data::mat5::parse_mat(bytes, Path::new(name)) {
            Ok(_) => read += 1,
            Err(e) => assert!(e.to_string().contains(name.as_str()), "{name}: {e}"),
        }
    }
    assert!(read >= 3, "only {read} inputs read");
}

#[test]
fn the_decode_corpus_decodes_or_is_refused_naming_the_file() {
    let inputs = inputs("decode");
    assert!(inputs.len() >= 3, "{} inputs", inputs.len());
    let mut read = 0;
    for (name, bytes) in &inputs {
        match fgvc_data::decode_bytes(bytes, Path::new(name)) {
            Ok(img) => {
                assert!(img.width() > 0 && img.height() > 0, "{name}");
                read += 1;
            }
            Err(e) => assert!(e.to_string().contains(name.as_str()), "{name}: {e}"),
        }
    }
    assert!(read >= 3, "only {read} inputs decoded");
}
