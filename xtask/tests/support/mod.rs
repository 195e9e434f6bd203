//! Scaffolding shared by the xtask integration tests.

// Not every suite serves files.
#[allow(dead_code)]
pub mod http;

use std::path::{Path, PathBuf};

use xtask::download::Downloader;

/// An empty directory `<CARGO_TARGET_TMPDIR>/<suite>/<test>`, cleared of a previous run's files.
pub fn scratch(suite: &str, test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(suite)
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A downloader without progress bars.
pub fn quiet() -> Downloader {
    let mut dl = Downloader::new();
    dl.quiet = true;
    dl
}
