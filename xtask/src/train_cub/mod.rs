//! `cargo xtask train-cub`: one command from nothing to a CUB-200-2011 number next to the paper's.
//!
//! 1. **Plan** ([`Plan::resolve`]): the method's reproduction configuration `configs/<method>-<backbone>-cub.toml`;
//!    for a backbone without one, the method's CUB configuration for another backbone with `--set`
//!    overrides for the backbone, its weights and the backbone-dependent head width (a copy without the
//!    MobileNetV2-only keys is written to the run directory when the target is not a MobileNetV2). Then
//!    `--data`, `--weights-dir`, `--epochs` and the user's `--set`, all checked against the configuration
//!    schema before anything runs.
//! 2. **Fetch** ([`fetch`]): the CUB dataset ([`crate::install_dataset`]) and the torchvision weights the
//!    configuration's `model.pretrained` names ([`crate::install_weights`]) when missing; with
//!    `--no-download`, an error naming what is missing and the command that fetches it.
//! 3. **Train and evaluate**: `cargo run --release -p fgvc-cli [--features cuda|metal] -- train ...` from the
//!    workspace root ([`Plan::cargo_args`]).
//! 4. **Compare** ([`read_result`], [`format_comparison`]): the final test record of the run's
//!    `metrics.jsonl` and `eval-test.json` next to the published number ([`paper_result`], from the method's registry entry).

mod args;
mod fetch;
mod paper;
mod paths;
mod plan;
mod report;

use std::process::Command;

use anyhow::{bail, Context, Result};

pub use args::{BackboneArg, MethodArg, TrainCubArgs};
pub use fetch::{cub_problem, fetch, Missing, CUB_FILES};
pub use paper::paper_result;
pub use plan::{default_device, Plan};
pub use report::{format_comparison, read_result, RunResult};

use crate::download::Downloader;

/// The longest projected run `train-cub` starts without `--yes`.
pub const MAX_HOURS: f64 = 24.0;

/// The projected hours in the JSON line `fgvc train --estimate` prints last on stdout.
pub fn projected_hours(stdout: &str) -> Result<f64> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("`fgvc train --estimate` printed no projection")?;
    let v: serde_json::Value = serde_json::from_str(line).context("reading the projection")?;
    v["projected_hours"]
        .as_f64()
        .context("the projection has no projected_hours")
}

/// `cargo xtask train-cub`: plans, fetches what is missing, trains and evaluates through `fgvc train`, and
/// prints the result next to the paper's.
pub fn run(args: &TrainCubArgs) -> Result<()> {
    let root = crate::workspace_root();
    let plan = Plan::resolve(args, &root)?;
    if args.dry_run {
        print!("{}", plan.describe(&args.mirror, args.no_download));
        return Ok(());
    }
    eprint!("{}", plan.describe(&args.mirror, args.no_download));
    fetch(&plan, &Downloader::new(), &args.mirror, args.no_download)?;
    plan.write_derived()?;
    let cargo = crate::cargo();
    let env = crate::device_build_env(plan.device, &Downloader::new(), true)?;
    if !args.yes && !plan.resume {
        let out = Command::new(&cargo)
            .args(plan.estimate_args())
            .envs(env.clone())
            .current_dir(&root)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("could not start {cargo}"))?;
        if !out.status.success() {
            bail!(
                "timing a few steps failed ({}); see its output above",
                out.status
            );
        }
        let hours = projected_hours(&String::from_utf8_lossy(&out.stdout))?;
        if hours > MAX_HOURS {
            bail!(
                "this run is projected to take {hours:.0} hours on {} (training steps alone); start it \
                 anyway with --yes, or train on a GPU (--device cuda)",
                plan.device
            );
        }
    }
    let status = Command::new(&cargo)
        .args(plan.cargo_args())
        .envs(env)
        .current_dir(&root)
        .status()
        .with_context(|| format!("could not start {cargo}"))?;
    if !status.success() {
        bail!(
            "training failed ({status}); the run directory is {}; continue it with `cargo xtask train-cub \
             ... --resume` or see its output above",
            plan.out.display()
        );
    }
    let result = read_result(&plan.out)?;
    print!(
        "{}",
        format_comparison(
            plan.method.name(),
            plan.backbone.name(),
            plan.reproduction_epochs,
            plan.reproduction_select,
            &result
        )
    );
    println!("run directory: {}", plan.out.display());
    Ok(())
}
