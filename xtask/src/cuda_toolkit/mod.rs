//! `cargo xtask cuda-toolkit`: NVIDIA's CUDA compiler from its PyPI wheels, in a cache folder outside the
//! repository, so `--features cuda` builds on any x86-64 Linux machine, with no GPU and no CUDA install.
//!
//! - The wheels ([`wheels`]) are pinned by size and SHA-256, downloaded with resume (or taken from
//!   `--from`), and unpacked ([`unpack`]) into `<dir>/<release>/` with the layout of a CUDA install.
//! - Link stubs ([`stubs`]) for every library candle's cudarc links go to `lib/stubs/`, where cudarc's
//!   build script looks; `--runtime` adds the real cuBLAS, cuRAND, NVRTC and cuDNN to run with.
//! - The install is built in a staging folder and renamed into place with a record of what it holds,
//!   so a second call does nothing and an interrupted one leaves no half toolkit.
//!
//! A user with their own CUDA install (`nvcc` on `PATH` or under `$CUDA_ROOT`) needs none of this:
//! [`build_env`] uses it.

pub mod stubs;
pub mod unpack;
pub mod wheels;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::download::{verify, Downloader, Expected};
use wheels::Release;

/// The compute capability a build targets when none is set and no GPU can be asked: 9.0 (H100, H200).
pub const DEFAULT_COMPUTE_CAP: &str = "90";

/// The file in an install that records what it holds.
const RECORD: &str = "fgvc-cuda-toolkit.json";

/// What [`install`] does.
#[derive(Clone, Debug)]
pub struct Options {
    /// The cache folder; the release goes to `<dir>/<release name>`.
    pub dir: PathBuf,
    /// Also install the runtime libraries (about 920 MB), to run on a GPU machine without CUDA.
    pub runtime: bool,
    /// Files or folders holding wheels obtained another way; they are verified, then used.
    pub from: Vec<PathBuf>,
    /// Base URLs tried before PyPI (`<mirror>/<wheel file>`).
    pub mirror: Vec<String>,
}

/// An installed toolkit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolkit {
    /// Its root: `bin/nvcc`, `include/`, `lib/`, `lib/stubs/`, `nvvm/`.
    pub root: PathBuf,
    /// Whether the runtime libraries are in `lib/`.
    pub runtime: bool,
}

/// What an install's record says.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Record {
    release: String,
    runtime: bool,
    wheels: Vec<String>,
    stubs: Vec<(String, usize)>,
}

impl Toolkit {
    /// The compiler.
    pub fn nvcc(&self) -> PathBuf {
        self.root.join("bin").join("nvcc")
    }

    /// The variables a CUDA build needs (`CUDA_ROOT`, `CUDA_PATH`, `PATH`), plus `LD_LIBRARY_PATH` when
    /// the runtime libraries are installed, each as its full new value.
    pub fn env(&self) -> Vec<(String, OsString)> {
        let mut env = vec![
            ("CUDA_ROOT".to_string(), self.root.clone().into_os_string()),
            ("CUDA_PATH".to_string(), self.root.clone().into_os_string()),
            ("PATH".to_string(), prepend("PATH", &self.root.join("bin"))),
        ];
        if self.runtime {
            let lib = self.root.join("lib");
            env.push((
                "LD_LIBRARY_PATH".to_string(),
                prepend("LD_LIBRARY_PATH", &lib),
            ));
        }
        env
    }

    /// `export` lines for a shell, e.g. `eval "$(cargo xtask cuda-toolkit)"`.
    pub fn exports(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.env() {
            s.push_str(&format!(
                "export {k}={}\n",
                shell_quote(&v.to_string_lossy())
            ));
        }
        if compute_cap_needed() {
            s.push_str(&format!("export CUDA_COMPUTE_CAP={DEFAULT_COMPUTE_CAP}\n"));
        }
        s
    }
}

/// `dir` put in front of the variable `var`'s current value.
fn prepend(var: &str, dir: &Path) -> OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os(var) {
        paths.extend(std::env::split_paths(&old).filter(|p| p != dir));
    }
    std::env::join_paths(paths).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The cache folder by default: `$XDG_CACHE_HOME/fgvc/cuda`, else `~/.cache/fgvc/cuda`.
pub fn default_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("fgvc").join("cuda")
}

/// The install of `release` in `dir`, if one is complete and holds what `runtime` asks for.
pub fn installed(release: &Release, dir: &Path, runtime: bool) -> Option<Toolkit> {
    let root = dir.join(release.name);
    let record: Record = serde_json::from_slice(&fs::read(root.join(RECORD)).ok()?).ok()?;
    let want: Vec<String> = release
        .needed(runtime)
        .map(|w| w.sha256.to_string())
        .collect();
    let complete = record.release == release.name
        && (record.runtime || !runtime)
        && want.iter().all(|h| record.wheels.contains(h));
    complete.then_some(Toolkit {
        root,
        runtime: record.runtime,
    })
}

/// Installs `release` under `opts.dir` (see the module docs) and returns it; an install that already
/// holds what is asked for is returned as it is.
pub fn install(dl: &Downloader, release: &Release, opts: &Options) -> Result<Toolkit> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!(
            "the CUDA wheels are installed for x86-64 Linux only; on this machine install CUDA from \
             NVIDIA and set CUDA_ROOT"
        );
    }
    if let Some(t) = installed(release, &opts.dir, opts.runtime) {
        say(
            dl,
            format!("CUDA {}: installed at {}", release.name, t.root.display()),
        );
        return Ok(t);
    }
    let wheels_dir = opts.dir.join("wheels");
    let mut files = Vec::new();
    for w in release.needed(opts.runtime) {
        let expected = Expected {
            size: Some(w.size),
            sha256: Some(w.sha256.to_string()),
            ..Expected::default()
        };
        let path = match crate::supplied(&opts.from, w.file)? {
            Some(p) => {
                verify(&p, &expected)
                    .with_context(|| format!("{} is not the expected {}", p.display(), w.file))?;
                p
            }
            None => {
                let dest = wheels_dir.join(w.file);
                let urls = crate::sources(&opts.mirror, w.file, &[&w.url()]);
                dl.fetch(&urls, &dest, &expected)?;
                dest
            }
        };
        files.push((w, path));
    }

    let root = opts.dir.join(release.name);
    let staging = opts
        .dir
        .join(format!(".{}.staging-{}", release.name, std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("removing the leftover {}", staging.display()))?;
    }
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let built = stage(dl, release, opts.runtime, &files, &staging);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    // Another process may have finished first; its install is as good as ours.
    if let Some(t) = installed(release, &opts.dir, opts.runtime) {
        let _ = fs::remove_dir_all(&staging);
        return Ok(t);
    }
    if root.exists() {
        // An older install with less in it (no runtime libraries): ours replaces it.
        let old = opts
            .dir
            .join(format!(".{}.old-{}", release.name, std::process::id()));
        fs::rename(&root, &old).with_context(|| format!("moving {} aside", root.display()))?;
        let _ = fs::remove_dir_all(&old);
    }
    fs::rename(&staging, &root).with_context(|| format!("placing {}", root.display()))?;
    say(
        dl,
        format!("CUDA {}: installed at {}", release.name, root.display()),
    );
    Ok(Toolkit {
        root,
        runtime: opts.runtime,
    })
}

/// Unpacks `files` into `staging`, adds link names and stubs, checks that nvcc runs, and writes the
/// record.
fn stage(
    dl: &Downloader,
    release: &Release,
    runtime: bool,
    files: &[(&wheels::Wheel, PathBuf)],
    staging: &Path,
) -> Result<()> {
    for (w, path) in files {
        say(dl, format!("{} {}: unpacking", w.project, w.version));
        unpack::unpack_wheel(path, staging)?;
    }
    unpack::link_names(&staging.join("lib"))?;
    let stubs = if release.linked.is_empty() {
        Vec::new()
    } else {
        let cudarc = cudarc_source()?;
        say(dl, format!("link stubs from {}", cudarc.display()));
        stubs::write_stubs(&cudarc, release.linked, &staging.join("lib").join("stubs"))?
    };
    let nvcc = staging.join("bin").join("nvcc");
    let out = Command::new(&nvcc)
        .arg("--version")
        .output()
        .with_context(|| format!("could not run {}", nvcc.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !version.contains(&format!("V{}", release.name)) {
        bail!(
            "{} --version did not report {}: {}{}",
            nvcc.display(),
            release.name,
            version,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let record = Record {
        release: release.name.to_string(),
        runtime,
        wheels: files.iter().map(|(w, _)| w.sha256.to_string()).collect(),
        stubs,
    };
    let path = staging.join(RECORD);
    fs::write(&path, serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// cudarc's source as locked in this workspace, fetched into cargo's registry cache when missing.
fn cudarc_source() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let lock = fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let version = stubs::locked_version(&lock, "cudarc")
        .context("Cargo.lock has no cudarc (candle's CUDA bindings)")?;
    let home = stubs::cargo_home();
    if let Some(p) = stubs::registry_source(&home, "cudarc", &version) {
        return Ok(p);
    }
    let cargo = crate::cargo();
    let status = Command::new(&cargo)
        .args(["fetch", "--locked"])
        .current_dir(&root)
        .status()
        .with_context(|| format!("could not run {cargo} fetch"))?;
    if !status.success() {
        bail!(
            "`cargo fetch` failed ({status}); cudarc {version}'s source is needed for link stubs"
        );
    }
    stubs::registry_source(&home, "cudarc", &version).with_context(|| {
        format!(
            "cudarc-{version} is not under {}/registry/src",
            home.display()
        )
    })
}

/// A CUDA install already on this machine: `$CUDA_ROOT`, `$CUDA_PATH` or `$CUDA_HOME` with `bin/nvcc`,
/// `nvcc` on `PATH`, or `/usr/local/cuda`. Returns its root.
pub fn system_cuda() -> Option<PathBuf> {
    for var in ["CUDA_ROOT", "CUDA_PATH", "CUDA_HOME"] {
        if let Some(root) = std::env::var_os(var).map(PathBuf::from) {
            if root.join("bin").join("nvcc").is_file() {
                return Some(root);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("nvcc").is_file() {
                return dir.parent().map(Path::to_path_buf);
            }
        }
    }
    let local = PathBuf::from("/usr/local/cuda");
    local.join("bin/nvcc").is_file().then_some(local)
}

/// Whether a build must be told the compute capability: `CUDA_COMPUTE_CAP` is unset and no GPU answers
/// `nvidia-smi`, which candle's kernel build would otherwise ask.
fn compute_cap_needed() -> bool {
    std::env::var_os("CUDA_COMPUTE_CAP").is_none() && !gpu_visible()
}

/// Whether `nvidia-smi` lists a GPU: then candle's kernel build can ask it for the compute capability,
/// and `train-cub` trains on it by default.
pub fn gpu_visible() -> bool {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"GPU"))
}

/// The environment a `--features cuda` cargo command needs here: the system's CUDA when there is one,
/// else the toolkit of [`wheels::VERSIONS`]`[0]`, installed into [`default_dir`] if needed (with its
/// runtime libraries when `runtime`, for a command that also runs what it builds); and
/// `CUDA_COMPUTE_CAP` = [`DEFAULT_COMPUTE_CAP`] when it is unset and no GPU answers `nvidia-smi`.
pub fn build_env(dl: &Downloader, runtime: bool) -> Result<Vec<(String, OsString)>> {
    let mut env = match system_cuda() {
        Some(root) => {
            say(dl, format!("CUDA: using the install at {}", root.display()));
            Toolkit {
                root,
                runtime: false,
            }
            .env()
        }
        None => {
            let release = wheels::release(wheels::VERSIONS[0]).expect("a known version");
            let opts = Options {
                dir: default_dir(),
                runtime,
                from: Vec::new(),
                mirror: Vec::new(),
            };
            install(dl, &release, &opts)?.env()
        }
    };
    if compute_cap_needed() {
        say(
            dl,
            format!("CUDA: no GPU to ask, building for compute capability {DEFAULT_COMPUTE_CAP} (set CUDA_COMPUTE_CAP to change)"),
        );
        env.push(("CUDA_COMPUTE_CAP".into(), DEFAULT_COMPUTE_CAP.into()));
    }
    Ok(env)
}

fn say(dl: &Downloader, msg: String) {
    if !dl.quiet {
        eprintln!("{msg}");
    }
}
