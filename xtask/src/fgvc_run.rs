//! One `fgvc train` process per run directory, for the xtask tools that train many runs
//! (`synthetic-table`, `method-benchmark`): a finished run of the same configuration is reused, one of
//! another configuration is refused unless `force`, and an interrupted one resumes from its checkpoint.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use fgvc_train::metrics::read_records;
use fgvc_train::run_dir::atomic_write;

/// `given`, else the release `fgvc` that `cargo build --release -p fgvc-cli` builds.
pub fn fgvc_binary(given: Option<&Path>, root: &Path) -> Result<PathBuf> {
    if let Some(p) = given {
        // Absolute, so that runs started in another directory find it.
        return std::fs::canonicalize(p)
            .with_context(|| format!("the fgvc binary {} cannot be found", p.display()));
    }
    let cargo = crate::cargo();
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "fgvc-cli", "--bin", "fgvc"])
        .status()
        .context("could not start cargo build for fgvc")?;
    if !status.success() {
        bail!("building fgvc failed with {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("fgvc"))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `config` (plus `--set` overrides `sets`) as `name` under `out` unless a finished run of the same
/// configuration exists there; returns the run directory. The configuration run is kept as
/// `<out>/<name>.toml`, its `sets` as trailing comments, and is what "the same" compares.
pub fn train(
    fgvc: &Path,
    root: &Path,
    out: &Path,
    name: &str,
    config: &str,
    sets: &[String],
    force: bool,
) -> Result<PathBuf> {
    let run_dir = out.join(name);
    let config_path = out.join(format!("{name}.toml"));
    let log = run_dir.join("metrics.jsonl");
    let mut recorded = config.to_string();
    for s in sets {
        recorded.push_str(&format!("# --set {s}\n"));
    }
    let finished = read_records(&log)?.iter().any(|r| r.kind == "test");
    let same = std::fs::read_to_string(&config_path).ok().as_deref() == Some(recorded.as_str());
    if finished && same && !force {
        println!("{name}: finished run reused");
        return Ok(run_dir);
    }
    if run_dir.exists() && !same && !force {
        bail!(
            "{name}: {} holds a run of another configuration than {} now plans (the recipe or the \
             budget changed); pass --force to replace it, or another --out",
            run_dir.display(),
            config_path.display()
        );
    }
    atomic_write(&config_path, recorded.as_bytes())?;
    let mut cmd = Command::new(fgvc);
    cmd.arg("train")
        .arg("--config")
        .arg(&config_path)
        .arg("--out")
        .arg(&run_dir)
        .arg("--no-progress");
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    if run_dir.join("checkpoint-last.safetensors").exists() && same && !finished {
        println!("{name}: continuing the interrupted run");
        cmd.arg("--resume");
    } else if run_dir.exists() {
        cmd.arg("--overwrite");
        println!(
            "{name}: training, replacing the earlier run (load average {})",
            load_average()
        );
    } else {
        println!("{name}: training (load average {})", load_average());
    }
    let status = cmd
        .current_dir(root)
        .status()
        .with_context(|| format!("could not run {}", fgvc.display()))?;
    if !status.success() {
        bail!(
            "{name}: fgvc train failed with {status} (log: {})",
            log.display()
        );
    }
    Ok(run_dir)
}
