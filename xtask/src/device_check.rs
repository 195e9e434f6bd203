//! `cargo xtask device-check --prepare DIR`: everything the one-shot GPU check needs on a bare GPU machine
//! (no Rust, no network), built here: the `device_check` example of fgvc-train in release for CUDA (compute
//! capability 9.0 unless `CUDA_COMPUTE_CAP` says otherwise), stripped and gzipped; PyTorch's side of the
//! benchmark (`crates/train/benches/methods_torch.py`); and `run.sh`, which unpacks the binary, finds the
//! CUDA libraries (the system's, else PyTorch's wheels), and runs the check from the repository root within
//! a time limit. The bundle must stay under 60 MiB (the machine takes 64 MiB with the working tree).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use xtask::download::Downloader;

/// `cargo xtask device-check`.
#[derive(Args)]
pub struct DeviceCheckArgs {
    /// Where the bundle goes (inside the repository, e.g. `target/device-check`, it travels with the
    /// working tree when named in the device tool's `carry`).
    #[arg(long)]
    prepare: PathBuf,
}

/// The largest bundle allowed.
const LIMIT: u64 = 60 << 20;

const RUN_SH: &str = r#"#!/usr/bin/env bash
# The fgvc GPU check, prepared by `cargo xtask device-check --prepare`. Run from the repository root:
#   bash <bundle>/run.sh [OUT_DIR]
# Writes OUT_DIR/summary.json, summary.md, log.txt and gpu.txt; exits non-zero when a check fails.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${OUT:-device-check-out}}"
mkdir -p "$out"
python3 -c 'import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
  "$here/device_check.gz" "$here/device_check" && chmod +x "$here/device_check" || exit 3
# The CUDA libraries the binary links (cuBLAS, cuRAND, NVRTC, cuDNN): PyTorch's wheels, after the system's.
libs=$(python3 -c 'import glob, os, site; print(":".join(sorted({d for p in site.getsitepackages() + [site.getusersitepackages()] for d in glob.glob(os.path.join(p, "nvidia", "*", "lib"))})))')
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$libs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' >> "$out/gpu.txt" 2>&1
ldd "$here/device_check" | grep -E "not found|cuda|cublas|cudnn|curand|nvrtc" >> "$out/gpu.txt"
timeout "${DEVICE_CHECK_SECONDS:-470}" "$here/device_check" "$out" --root . --torch "$here/methods_torch.py" \
  2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
"#;

/// Builds the bundle into `args.prepare`.
pub fn run(args: &DeviceCheckArgs) -> Result<()> {
    let root = xtask::workspace_root();
    let dir = &args.prepare;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut env = xtask::cuda_toolkit::build_env(&Downloader::new(), false)?;
    if std::env::var_os("CUDA_COMPUTE_CAP").is_none()
        && !env.iter().any(|(k, _)| k == "CUDA_COMPUTE_CAP")
    {
        env.push(("CUDA_COMPUTE_CAP".into(), "90".into()));
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    env.push(("FGVC_COMMIT".into(), commit.into()));
    let cargo = xtask::cargo();
    let out = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "fgvc-train",
            "--features",
            "cuda",
            "--example",
            "device_check",
            "--message-format=json-render-diagnostics",
        ])
        .envs(env)
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {cargo}"))?;
    if !out.status.success() {
        bail!("building the device_check example failed ({})", out.status);
    }
    let exe = crate::bench::executable_from_cargo_messages(
        &String::from_utf8_lossy(&out.stdout),
        "device_check",
    )
    .context("cargo did not report the device_check executable")?;
    let stripped = dir.join("device_check.stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&exe)
        .status()
        .context("could not run strip (binutils)")?;
    if !status.success() {
        bail!("strip failed ({status})");
    }
    let gz = dir.join("device_check.gz");
    gzip(&stripped, &gz)?;
    fs::remove_file(&stripped).ok();
    fs::copy(
        root.join("crates/train/benches/methods_torch.py"),
        dir.join("methods_torch.py"),
    )
    .context("copying methods_torch.py")?;
    let run_sh = dir.join("run.sh");
    fs::write(&run_sh, RUN_SH).with_context(|| format!("writing {}", run_sh.display()))?;
    let total = dir_size(dir)?;
    if total > LIMIT {
        bail!(
            "the bundle in {} is {:.1} MiB, over the {} MiB a device run can carry",
            dir.display(),
            total as f64 / 1048576.0,
            LIMIT >> 20
        );
    }
    println!(
        "device check ready in {} ({:.1} MiB); on the GPU machine, from the repository root: bash {}/run.sh OUT",
        dir.display(),
        total as f64 / 1048576.0,
        dir.display()
    );
    Ok(())
}

fn gzip(from: &Path, to: &Path) -> Result<()> {
    let mut input =
        BufReader::new(File::open(from).with_context(|| format!("{}", from.display()))?);
    let output = BufWriter::new(File::create(to).with_context(|| format!("{}", to.display()))?);
    let mut enc = flate2::write::GzEncoder::new(output, flate2::Compression::best());
    std::io::copy(&mut input, &mut enc)
        .with_context(|| format!("compressing {}", from.display()))?;
    enc.finish()?;
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}
