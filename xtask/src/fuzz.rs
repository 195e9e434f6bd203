//! `cargo xtask fuzz [TARGET...] [--seconds 60]`: runs the cargo-fuzz targets of `fuzz/` for a bounded
//! time each, with libFuzzer's memory limits (an over-allocation is a finding), and prints what each did.
//!
//! It installs cargo-fuzz when missing, uses the nightly toolchain when one is installed and otherwise
//! stable with `RUSTC_BOOTSTRAP=1` (stable ships the AddressSanitizer runtime). New inputs go to a work
//! corpus under the target directory; the committed seeds (`fuzz/corpus/<target>/`) and regression inputs
//! (`fuzz/regressions/<target>/`) are only read. `--write-seeds` regenerates the committed seeds from the
//! repository's fixtures and writers. See docs/fuzzing.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

/// The fuzz targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &["pth", "mat5", "checkpoint", "config", "decode"];

/// libFuzzer's limits: a process over 2 GiB resident, or one allocation over 1 GiB, is a finding.
const LIMITS: &[&str] = &["-rss_limit_mb=2048", "-malloc_limit_mb=1024", "-timeout=10"];

/// `cargo xtask fuzz`'s arguments.
#[derive(Args)]
pub struct FuzzArgs {
    /// Targets to run (all when none).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Where the fuzz build and the work corpus go (default: <workspace>/target/fuzz).
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Rewrite the committed seed corpus (fuzz/corpus/<target>/seed-*) and stop.
    #[arg(long)]
    write_seeds: bool,
}

/// What one target's run did.
struct Outcome {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    finding: Option<String>,
}

/// The toolchain the fuzz build uses.
enum Toolchain {
    Nightly,
    /// Stable with `RUSTC_BOOTSTRAP=1` for `-Zsanitizer`.
    StableBootstrap,
}

impl Toolchain {
    fn detect() -> Self {
        let list = Command::new("rustup")
            .args(["toolchain", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if list.lines().any(|l| l.starts_with("nightly")) {
            Toolchain::Nightly
        } else {
            Toolchain::StableBootstrap
        }
    }

    /// `cargo [+nightly] fuzz <args>`, with `RUSTC_BOOTSTRAP=1` on stable.
    fn cargo_fuzz(&self, root: &Path) -> Command {
        let mut cmd = Command::new("cargo");
        match self {
            Toolchain::Nightly => {
                cmd.arg("+nightly");
            }
            Toolchain::StableBootstrap => {
                cmd.env("RUSTC_BOOTSTRAP", "1");
            }
        }
        cmd.arg("fuzz").current_dir(root);
        cmd
    }

    fn name(&self) -> &'static str {
        match self {
            Toolchain::Nightly => "nightly",
            Toolchain::StableBootstrap => "stable with RUSTC_BOOTSTRAP=1",
        }
    }
}

/// Installs cargo-fuzz unless `cargo fuzz --version` already works.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("cargo-fuzz is missing: cargo install cargo-fuzz --locked");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz --locked failed ({status})");
    }
    Ok(())
}

/// The number after `key` in libFuzzer's output (`Done 1234 runs`, `stat::number_of_executed_units: 1234`).
fn number_after(text: &str, key: &str) -> Option<u64> {
    text.lines().rev().find_map(|l| {
        let rest = &l[l.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The input libFuzzer saved for a finding (`Test unit written to <path>`), if any.
fn finding(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.split("Test unit written to ").nth(1))
        .map(|p| p.trim().to_string())
}

/// Runs `cargo xtask fuzz`.
pub fn run(args: &FuzzArgs) -> Result<()> {
    let root = xtask::workspace_root();
    if args.write_seeds {
        let written = seeds::write(&root)?;
        println!("wrote {written} seed files under fuzz/corpus/");
        return Ok(());
    }
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        args.targets.clone()
    };
    let target_dir = args
        .target_dir
        .clone()
        .unwrap_or_else(|| root.join("target/fuzz"));
    ensure_cargo_fuzz()?;
    let toolchain = Toolchain::detect();
    println!(
        "fuzz: building the targets with {} into {}",
        toolchain.name(),
        target_dir.display()
    );
    let start = Instant::now();
    let status = toolchain
        .cargo_fuzz(&root)
        .arg("build")
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    println!("fuzz: built in {:.0} s", start.elapsed().as_secs_f64());
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_target(
            &toolchain,
            &root,
            &target_dir,
            target,
            args.seconds,
        )?);
    }
    println!("\n| target | seconds | executions | result |\n|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {:.0} | {} | {} |",
            o.target,
            o.seconds,
            o.executions.map_or("?".to_string(), |n| n.to_string()),
            o.finding
                .as_deref()
                .map_or("clean".to_string(), |f| format!("FINDING: {f}"))
        );
    }
    let found: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.finding.is_some())
        .map(|o| o.target.as_str())
        .collect();
    if !found.is_empty() {
        bail!(
            "findings in {}: reproduce with `cargo fuzz run TARGET INPUT`, fix, and add the input to \
             fuzz/regressions/TARGET/",
            found.join(", ")
        );
    }
    Ok(())
}

fn run_target(
    toolchain: &Toolchain,
    root: &Path,
    target_dir: &Path,
    target: &str,
    seconds: u64,
) -> Result<Outcome> {
    let work = target_dir.join("corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut cmd = toolchain.cargo_fuzz(root);
    cmd.args(["run", target, "--target-dir"])
        .arg(target_dir)
        .arg(&work)
        .arg(root.join("fuzz/corpus").join(target));
    let regressions = root.join("fuzz/regressions").join(target);
    if regressions.is_dir() {
        cmd.arg(&regressions);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(LIMITS)
        .arg("-print_final_stats=1");
    println!("\nfuzz: {target} for {seconds} s");
    let start = Instant::now();
    let output = cmd
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let elapsed = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    // The finding itself (a panic, a sanitizer or libFuzzer error) when there is one, else the stats.
    let lines: Vec<&str> = log.lines().collect();
    let from = lines
        .iter()
        .position(|l| {
            l.contains("panicked at") || l.contains("==ERROR") || l.contains("ERROR: libFuzzer")
        })
        .unwrap_or(lines.len().saturating_sub(12));
    for line in lines.iter().skip(from).take(40) {
        eprintln!("  {line}");
    }
    let executions = number_after(&log, "stat::number_of_executed_units:")
        .or_else(|| number_after(&log, "Done "));
    let mut found = finding(&log);
    if !output.status.success() && found.is_none() {
        found = Some(format!("exited with {}", output.status));
    }
    Ok(Outcome {
        target: target.to_string(),
        seconds: elapsed,
        executions,
        finding: found,
    })
}

/// The committed seed corpus: tiny valid inputs for each target, from the repository's fixtures and its
/// own writers, so the fuzzers start from files that reach deep into each reader.
mod seeds {
    use std::path::Path;

    use anyhow::{Context, Result};
    use candle_core::{DType, Device, Tensor};
    use fgvc_ops::{Init, ParamStore};
    use fgvc_train::checkpoint::{self, TrainerState};
    use fgvc_train::optim::OptimizerState;

    /// Fixture files copied as seeds: (target, source relative to the workspace, seed name).
    const COPIES: &[(&str, &str, &str)] = &[
        (
            "pth",
            "crates/backbone/tests/fixtures/pth/tiny_zip.pth",
            "seed-zip.pth",
        ),
        (
            "pth",
            "crates/backbone/tests/fixtures/pth/tiny_legacy.pth",
            "seed-legacy.pth",
        ),
        (
            "pth",
            "crates/backbone/tests/fixtures/pth/tiny_nested_zip.pth",
            "seed-nested-zip.pth",
        ),
        (
            "pth",
            "crates/backbone/tests/fixtures/pth/tiny_with_namespace.pth",
            "seed-namespace.pth",
        ),
        (
            "pth",
            "crates/backbone/tests/fixtures/pth/tiny.safetensors",
            "seed.safetensors",
        ),
        (
            "mat5",
            "crates/data/tests/fixtures/scipy_annos_plain.mat",
            "seed-plain.mat",
        ),
        (
            "mat5",
            "crates/data/tests/fixtures/scipy_annos_compressed.mat",
            "seed-compressed.mat",
        ),
        (
            "mat5",
            "crates/data/tests/fixtures/scipy_meta.mat",
            "seed-meta.mat",
        ),
        (
            "decode",
            "crates/data/tests/fixtures/cmyk.jpg",
            "seed-cmyk.jpg",
        ),
        (
            "config",
            "configs/synthetic-baseline.toml",
            "seed-baseline.toml",
        ),
        ("config", "configs/pmg-synthetic.toml", "seed-pmg.toml"),
        ("config", "configs/dcl-synthetic.toml", "seed-dcl.toml"),
        (
            "config",
            "configs/rmg-pmsi-synthetic.toml",
            "seed-rmg-pmsi.toml",
        ),
        (
            "config",
            "configs/coarse2fine-resnet50-cub.toml",
            "seed-coarse2fine-cub.toml",
        ),
    ];

    fn put(root: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// A small RGB gradient, encoded as `format`.
    fn image(format: image::ImageFormat, w: u32, h: u32) -> Result<Vec<u8>> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) * 7) as u8,
            ])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format)?;
        Ok(out.into_inner())
    }

    /// A checkpoint of two small vars, with trainer state and (`with_optimizer`) an SGD momentum buffer.
    fn checkpoint(root: &Path, with_optimizer: bool) -> Result<Vec<u8>> {
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        store.var("fc.weight", (3, 4), Init::Const(0.5))?;
        store.var("bn.running_mean", 4, Init::Const(0.0))?;
        let state = TrainerState {
            epoch: 1,
            batch_in_epoch: 2,
            step: 7,
            seed: 0,
            best: None,
            finished: false,
            world_size: 1,
        };
        let optimizer = OptimizerState {
            kind: "sgd".into(),
            tensors: [(
                "momentum_buffer/fc.weight".to_string(),
                Tensor::zeros((3, 4), DType::F32, &Device::Cpu)?,
            )]
            .into(),
            meta: serde_json::json!({ "steps": { "fc.weight": 7 } }),
        };
        let dir = root.join("target/fuzz-seeds");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("checkpoint.safetensors");
        checkpoint::save(
            &path,
            &store,
            with_optimizer.then_some(&optimizer),
            Some(&state),
            None,
        )?;
        Ok(std::fs::read(&path)?)
    }

    /// Writes every seed; returns how many.
    pub fn write(root: &Path) -> Result<usize> {
        for (target, source, name) in COPIES {
            let bytes =
                std::fs::read(root.join(source)).with_context(|| format!("reading {source}"))?;
            put(root, target, name, &bytes)?;
        }
        put(
            root,
            "decode",
            "seed-rgb.png",
            &image(image::ImageFormat::Png, 12, 8)?,
        )?;
        put(
            root,
            "decode",
            "seed-rgb.jpg",
            &image(image::ImageFormat::Jpeg, 16, 16)?,
        )?;
        put(
            root,
            "checkpoint",
            "seed-state.safetensors",
            &checkpoint(root, false)?,
        )?;
        put(
            root,
            "checkpoint",
            "seed-sgd.safetensors",
            &checkpoint(root, true)?,
        )?;
        Ok(COPIES.len() + 4)
    }
}
