//! The `cuda-toolkit` and `build` tasks: install the CUDA compiler from PyPI, and build for a device with
//! the environment it needs.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use fgvc_train::device::DeviceChoice;
use xtask::cuda_toolkit::{self, wheels};
use xtask::download::Downloader;

/// `cargo xtask cuda-toolkit`.
#[derive(Args)]
pub struct CudaToolkitArgs {
    /// The CUDA release (13.0 runs on driver 580 and newer).
    #[arg(long, default_value = wheels::VERSIONS[0], value_parser = clap::builder::PossibleValuesParser::new(wheels::VERSIONS))]
    version: String,
    /// The cache folder (default `$XDG_CACHE_HOME/fgvc/cuda`, else `~/.cache/fgvc/cuda`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also install cuBLAS, cuRAND, NVRTC and cuDNN (about 920 MB), to run on a GPU machine that has a
    /// driver but no CUDA libraries.
    #[arg(long)]
    runtime: bool,
    /// Files or folders holding the wheels, obtained another way; they are verified against the pins.
    #[arg(long, num_args = 1..)]
    from: Vec<PathBuf>,
    /// A base URL tried before PyPI (`<mirror>/<wheel file>`); may repeat.
    #[arg(long)]
    mirror: Vec<String>,
}

/// Installs the toolkit and prints `export` lines on stdout (messages go to stderr), so
/// `eval "$(cargo xtask cuda-toolkit)"` sets up a shell.
pub fn toolkit(args: &CudaToolkitArgs) -> Result<()> {
    let release = wheels::release(&args.version).context("unknown CUDA version")?;
    let opts = cuda_toolkit::Options {
        dir: args.dir.clone().unwrap_or_else(cuda_toolkit::default_dir),
        runtime: args.runtime,
        from: args.from.clone(),
        mirror: args.mirror.clone(),
    };
    let toolkit = cuda_toolkit::install(&Downloader::new(), &release, &opts)?;
    print!("{}", toolkit.exports());
    Ok(())
}

/// `cargo xtask build`.
#[derive(Args)]
pub struct BuildArgs {
    /// The device to build for; `cuda` uses the system's CUDA, or installs the toolkit when there is
    /// none, and builds for compute capability 9.0 unless CUDA_COMPUTE_CAP is set or a GPU answers.
    #[arg(long, default_value = "cpu", value_parser = xtask::device_arg::parser())]
    device: DeviceChoice,
    /// Arguments for `cargo build` (default: `--release -p fgvc-cli`); `--features <device>` is added.
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

/// Runs `cargo build` with the device's feature and environment.
pub fn build(args: &BuildArgs) -> Result<()> {
    let cargo = xtask::cargo();
    let mut cmd = Command::new(&cargo);
    cmd.arg("build");
    if args.cargo_args.is_empty() {
        cmd.args(["--release", "-p", "fgvc-cli"]);
    } else {
        cmd.args(&args.cargo_args);
    }
    if let Some(f) = args.device.feature() {
        cmd.args(["--features", f]);
    }
    cmd.envs(xtask::device_build_env(
        args.device,
        &Downloader::new(),
        false,
    )?)
    .current_dir(xtask::workspace_root());
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cargo}"))?;
    if !status.success() {
        bail!("cargo build for {} failed ({status})", args.device);
    }
    Ok(())
}
