//! The criterion suites (`augment`, `data`, `ops`): `cargo bench` on the package, its output as
//! criterion prints it.

use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{BenchArgs, Suite};
use xtask::cargo;

/// The criterion suites: package, its directory, and the bench target (`None`: all of the package's).
pub(super) const CRITERION_SUITES: &[(Suite, &str, &str, Option<&str>)] = &[
    (Suite::Augment, "fgvc-augment", "crates/augment", None),
    (Suite::Data, "fgvc-data", "crates/data", None),
    (Suite::Ops, "fgvc-ops", "crates/ops", Some("ops")),
];

/// Why a criterion suite cannot run (its bench sources are not there yet), if so.
pub(super) fn criterion_missing(package: &str, dir: &str, target: Option<&str>) -> Option<String> {
    let root = xtask::workspace_root();
    let missing = match target {
        Some(t) => !root
            .join(dir)
            .join("benches")
            .join(format!("{t}.rs"))
            .exists(),
        None => !root.join(dir).join("benches").is_dir(),
    };
    missing.then(|| {
        let what = target
            .map(|t| format!("bench `{t}` (benches/{t}.rs)"))
            .unwrap_or("benchmarks".into());
        format!("{package} has no {what} yet in {dir}")
    })
}

pub(super) fn run_criterion(args: &BenchArgs, package: &str, target: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(cargo());
    cmd.args(["bench", "--package", package]);
    if let Some(t) = target {
        cmd.args(["--bench", t]);
    }
    if let Some(n) = args.threads {
        cmd.env("RAYON_NUM_THREADS", n.to_string());
    }
    if let Some(isa) = args.isa {
        cmd.env(fgvc_ops::ISA_ENV, isa.name());
    }
    eprintln!(
        "== {package} on {}",
        super::machine::Machine::here(args.isa).describe()
    );
    let status = cmd
        .arg("--")
        .args(&args.criterion_args)
        .status()
        .with_context(|| format!("could not start cargo bench for {package}"))?;
    if !status.success() {
        bail!("cargo bench --package {package} failed with {status}");
    }
    Ok(())
}
