//! The library behind `cargo xtask`: the download table, resumable verified downloads, safe archive
//! extraction, dataset placement, pretrained-weight conversion and `train-cub` ([`train_cub`]: fetch,
//! train, evaluate and compare with the paper). `src/main.rs` is the command line.

pub mod catalog;
pub mod cuda_toolkit;
pub mod device_arg;
pub mod download;
pub mod extract;
pub mod fgvc_run;
pub mod machine;
pub mod method_benchmark;
pub mod protos;
pub mod synthetic_table;
pub mod train_cub;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use catalog::{Artifact, DatasetSpec, Unpack, WeightsSpec, WEIGHTS_BASE_URL};
use download::{verify, Downloader, Expected};

/// The workspace root (the directory above `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// The cargo that runs xtask (`$CARGO`), else `cargo` from `PATH`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The environment a cargo command building for `device` needs: for CUDA, [`cuda_toolkit::build_env`]
/// (the system's CUDA, or the toolkit installed on demand); nothing for the CPU and Metal.
pub fn device_build_env(
    device: fgvc_train::device::DeviceChoice,
    dl: &Downloader,
    runtime: bool,
) -> Result<Vec<(String, std::ffi::OsString)>> {
    match device {
        fgvc_train::device::DeviceChoice::Cuda => cuda_toolkit::build_env(dl, runtime),
        _ => Ok(Vec::new()),
    }
}

/// What an artifact must match.
pub fn expected(a: &Artifact) -> Expected {
    Expected {
        size: Some(a.size),
        md5: Some(a.md5.to_string()),
        sha256: a.sha256.map(str::to_string),
        sha256_prefix: None,
    }
}

/// The URLs to try for `file`: each mirror base (`<base>/<file>`) first, then the table's own URLs.
pub fn sources(mirrors: &[String], file: &str, urls: &[&str]) -> Vec<String> {
    mirrors
        .iter()
        .map(|m| format!("{}/{file}", m.trim_end_matches('/')))
        .chain(urls.iter().map(|u| u.to_string()))
        .collect()
}

/// Where `cargo xtask download` keeps archives: `<dir>/downloads`.
pub fn downloads_dir(dir: &Path) -> PathBuf {
    dir.join("downloads")
}

/// Downloads (or takes from `from`), verifies and unpacks every file of `spec` under `dir`.
///
/// `from` lists files or folders the user supplies; an artifact found there is verified and used instead
/// of being downloaded. An artifact already unpacked (its `creates` path exists) is skipped. Artifacts
/// without a download source and not supplied are reported together with `spec.manual`.
pub fn install_dataset(
    dl: &Downloader,
    spec: &DatasetSpec,
    dir: &Path,
    from: &[PathBuf],
    mirrors: &[String],
) -> Result<()> {
    let target = dir.join(spec.subdir);
    let mut unavailable = Vec::new();
    for a in spec.artifacts {
        let placed = target.join(a.creates);
        if placed.exists() {
            say(
                dl,
                format!("{}: {} already in place", spec.title, placed.display()),
            );
            continue;
        }
        let archive = match supplied(from, a.file)? {
            Some(path) => {
                say(dl, format!("{}: verifying {}", spec.title, path.display()));
                verify(&path, &expected(a)).with_context(|| {
                    format!("{} is not the expected {}", path.display(), a.file)
                })?;
                path
            }
            None => {
                let urls = sources(mirrors, a.file, a.urls);
                let dest = downloads_dir(dir).join(a.file);
                if a.urls.is_empty() {
                    // Only a user's mirror can have it; failing that, it is a manual step.
                    let fetched = !urls.is_empty() && dl.fetch(&urls, &dest, &expected(a)).is_ok();
                    if !fetched {
                        unavailable.push(a.file);
                        continue;
                    }
                } else {
                    dl.fetch(&urls, &dest, &expected(a))?;
                }
                dest
            }
        };
        match a.unpack {
            Unpack::TarGz => {
                say(
                    dl,
                    format!("{}: extracting {}", spec.title, archive.display()),
                );
                extract::extract_tar_gz(&archive, &target)?;
                if !placed.exists() {
                    bail!("{} did not create {}", archive.display(), placed.display());
                }
            }
            Unpack::Copy => {
                fs::create_dir_all(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
                let tmp = target.join(format!(".{}.tmp", a.file));
                fs::copy(&archive, &tmp)
                    .with_context(|| format!("copying {}", archive.display()))?;
                fs::rename(&tmp, &placed)
                    .with_context(|| format!("placing {}", placed.display()))?;
            }
        }
    }
    if !unavailable.is_empty() {
        let how = spec.manual.unwrap_or("");
        bail!(
            "{}: {} cannot be downloaded automatically. {how}",
            spec.title,
            unavailable.join(", ")
        );
    }
    say(
        dl,
        format!("{}: ready at {}", spec.title, dir.join(spec.root).display()),
    );
    Ok(())
}

/// The user-supplied copy of `file`: a path in `from` named `file`, or `file` inside a folder of `from`.
pub(crate) fn supplied(from: &[PathBuf], file: &str) -> Result<Option<PathBuf>> {
    for p in from {
        if p.is_dir() {
            let candidate = p.join(file);
            if candidate.is_file() {
                return Ok(Some(candidate));
            }
        } else if p.file_name().is_some_and(|n| n == file) {
            if !p.is_file() {
                bail!("{} does not exist", p.display());
            }
            return Ok(Some(p.clone()));
        }
    }
    Ok(None)
}

fn say(dl: &Downloader, msg: String) {
    if !dl.quiet {
        eprintln!("{msg}");
    }
}

/// The base URLs `install_weights` tries: the user's mirrors, then [`WEIGHTS_BASE_URL`].
pub fn weights_sources(mirrors: &[String]) -> Vec<String> {
    mirrors
        .iter()
        .cloned()
        .chain(std::iter::once(WEIGHTS_BASE_URL.to_string()))
        .collect()
}

/// Downloads the checkpoint of `spec` (the first of its files that succeeds, each tried at every base URL
/// in order), checks the SHA-256 prefix in its name, and converts it to `<dir>/<name>.safetensors` with
/// torchvision's names. Returns the output path. An existing output is kept unless `force`.
pub fn install_weights(
    dl: &Downloader,
    spec: &WeightsSpec,
    dir: &Path,
    base_urls: &[String],
    force: bool,
) -> Result<PathBuf> {
    let out = dir.join(format!("{}.safetensors", spec.name));
    if out.exists() && !force {
        say(
            dl,
            format!(
                "{}: {} already exists (--force to redo)",
                spec.name,
                out.display()
            ),
        );
        return Ok(out);
    }
    let mut failures = Vec::new();
    for file in spec.files {
        let prefix = catalog::sha256_prefix(file).map(str::to_string);
        let want = Expected {
            sha256_prefix: prefix,
            ..Expected::default()
        };
        let urls = sources(base_urls, file, &[]);
        let pth = dir.join(file);
        match dl.fetch(&urls, &pth, &want) {
            Ok(()) => {
                let n = fgvc_backbone::weights::convert_to_safetensors(&pth, None, &out)?;
                say(
                    dl,
                    format!("{}: wrote {} ({n} tensors)", spec.name, out.display()),
                );
                return Ok(out);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    bail!(
        "{}: no checkpoint could be downloaded:\n{}",
        spec.name,
        failures.join("\n")
    )
}

/// Loads `path` strictly into the `fgvc-backbone` model called `name` with ImageNet's 1000 classes: every
/// parameter and buffer must be present with the right shape, so the file's names are torchvision's.
pub fn check_weights(name: &str, path: &Path) -> Result<fgvc_backbone::weights::LoadReport> {
    use candle_core::{DType, Device};
    let store = fgvc_ops::ParamStore::new(0, DType::F32, &Device::Cpu);
    let imagenet = fgvc_backbone::BackboneOptions::classes(1000);
    fgvc_backbone::create(name, &imagenet, &store.root())
        .with_context(|| format!("building {name}"))?;
    Ok(fgvc_backbone::weights::load(&store, path)?)
}
