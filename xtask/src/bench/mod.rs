//! `cargo xtask bench [augment|data|ops|backbones|methods|all]`.
//!
//! * `augment`, `data`, `ops`: the packages' criterion benchmarks (`cargo bench`), their output as criterion
//!   prints it; with `--vs-pytorch`, `ops` then runs `crates/ops/benches/ops_torch.py`.
//! * `backbones`, `methods`: per-process example workloads. The example (`fgvc-backbone`'s `bench_backbones`,
//!   `fgvc-train`'s `bench_methods`) is built in release (with `--features cuda|metal` for `--device
//!   cuda|metal`) and each workload runs in its own process, so each peak-memory figure is its own. Each
//!   prints one JSON line; the records go to `<target>/bench/<suite>.json` and a markdown table to
//!   `<target>/bench/<suite>.md`, which is also printed. With `--vs-pytorch` the matching PyTorch script
//!   (`crates/backbone/benches/backbones_torch.py`, `crates/train/benches/methods_torch.py`) runs each
//!   workload right after ours, with the same thread count, and the table gains its columns and the speed
//!   ratio. Without a Python that imports torch, the comparison is skipped with a message.

mod args;
mod criterion;
mod examples;
pub use examples::executable_from_cargo_messages;
use xtask::machine;
mod measurement;
mod pytorch;
mod render;
mod workloads;

use std::path::PathBuf;

use anyhow::{bail, Result};
use fgvc_train::device::DeviceChoice;

pub use args::{BenchArgs, Suite};
use criterion::{criterion_missing, run_criterion, CRITERION_SUITES};
use examples::run_examples;
use pytorch::{resolve_pytorch, run_ops_torch, PyTorch};

/// The cargo target directory: `CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| xtask::workspace_root().join("target"))
}

/// Runs `cargo xtask bench` as `args` says.
pub fn run(args: &BenchArgs) -> Result<()> {
    let torch = resolve_pytorch(args);
    match &torch {
        PyTorch::Unavailable(msg) => eprintln!("{msg}"),
        PyTorch::Available { python, version } => {
            eprintln!("comparing with PyTorch {version} ({})", python.display())
        }
        PyTorch::Off => {}
    }
    let all = args.suite == Suite::All;
    let mut failures = Vec::new();
    for &(suite, package, dir, target) in CRITERION_SUITES {
        if !(all || args.suite == suite) {
            continue;
        }
        if args.device != DeviceChoice::Cpu {
            eprintln!(
                "note: the {package} criterion benchmarks run on the CPU (--device applies to backbones and \
                 methods)"
            );
        }
        if let Some(missing) = criterion_missing(package, dir, target) {
            if all {
                eprintln!("skipping: {missing}");
                continue;
            }
            bail!("{missing}");
        }
        run_criterion(args, package, target)?;
        if suite == Suite::Ops {
            run_ops_torch(args, &torch)?;
        }
    }
    for suite in [Suite::Backbones, Suite::Methods] {
        if all || args.suite == suite {
            if let Err(e) = run_examples(args, suite, &torch) {
                failures.push(format!("{e:#}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}
