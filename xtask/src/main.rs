//! Project automation, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `download cub|aircraft|cars|all`: datasets, verified and unpacked under `data/`;
//! - `weights <model>...|all` and `weights convert IN OUT`: torchvision ImageNet checkpoints as safetensors
//!   under `data/weights/`;
//! - `bench [augment|data|ops|backbones|all]`: the criterion benchmarks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use xtask::catalog::{self, DATASETS, WEIGHTS};
use xtask::download::Downloader;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fgvc project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run benchmarks (criterion) and print their reports; numbers go to docs/performance.md by hand.
    Bench {
        /// Which benchmark suite to run.
        #[arg(value_enum, default_value_t = Suite::All)]
        suite: Suite,
        /// Extra arguments for criterion, e.g. a filter such as `jigsaw`.
        #[arg(last = true)]
        criterion_args: Vec<String>,
    },
    /// Download, verify (size, md5, sha256) and unpack datasets; interrupted downloads resume.
    Download {
        /// Which dataset.
        #[arg(value_enum)]
        dataset: DatasetArg,
        /// Where datasets go (CUB lands in <dir>/CUB_200_2011, archives in <dir>/downloads).
        #[arg(long, default_value = "data")]
        dir: PathBuf,
        /// Files or folders holding archives you obtained yourself (required for Stanford Cars): they are
        /// verified against the known checksums and used instead of downloading.
        #[arg(long, num_args = 1..)]
        from: Vec<PathBuf>,
        /// A base URL tried before the official sources (`<mirror>/<file name>`); may repeat.
        #[arg(long)]
        mirror: Vec<String>,
    },
    /// torchvision ImageNet weights as safetensors (`<dir>/<model>.safetensors`), or `convert` a file.
    Weights(WeightsArgs),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct WeightsArgs {
    #[command(subcommand)]
    action: Option<WeightsAction>,
    /// Models to fetch and convert.
    #[arg(value_enum)]
    models: Vec<ModelArg>,
    /// Where checkpoints and converted files go.
    #[arg(long, default_value = "data/weights")]
    dir: PathBuf,
    /// A base URL tried before download.pytorch.org (`<mirror>/<file name>`); may repeat.
    #[arg(long)]
    mirror: Vec<String>,
    /// Convert again even when the safetensors file exists.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum WeightsAction {
    /// Convert a checkpoint you have (PyTorch zip or legacy .pth, or safetensors) to safetensors.
    Convert {
        /// The input checkpoint.
        input: PathBuf,
        /// The safetensors file to write.
        output: PathBuf,
        /// The key holding the state dict in a training checkpoint (found automatically otherwise).
        #[arg(long)]
        key: Option<String>,
        /// Also load the result strictly into fgvc-backbone's model of this name (1000 classes).
        #[arg(long)]
        check: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatasetArg {
    /// CUB-200-2011 (1.1 GB).
    Cub,
    /// FGVC-Aircraft 2013b (2.6 GiB).
    Aircraft,
    /// Stanford Cars: the devkit downloads, the rest must be supplied with --from.
    Cars,
    /// CUB and Aircraft, plus Cars when --from is given.
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelArg {
    Resnet18,
    Resnet34,
    Resnet50,
    Resnet101,
    Vgg16,
    #[value(name = "vgg16_bn")]
    Vgg16Bn,
    #[value(name = "mobilenet_v2")]
    MobilenetV2,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    /// Destructions and transforms (`fgvc-augment`).
    Augment,
    /// Decode and augmentation throughput of the loader (`fgvc-data`).
    Data,
    /// Conv, pooling and BatchNorm kernels (`fgvc-ops`, bench `ops`).
    Ops,
    /// Backbone eval forward and train step, images/s and peak memory (`fgvc-backbone`, example
    /// `bench_backbones`, one process per workload).
    Backbones,
    /// Everything above that exists.
    All,
}

/// The benchmark suites: package, its directory, and the bench target (`None`: all of the package's).
const SUITES: &[(Suite, &str, &str, Option<&str>)] = &[
    (Suite::Augment, "fgvc-augment", "crates/augment", None),
    (Suite::Data, "fgvc-data", "crates/data", None),
    (Suite::Ops, "fgvc-ops", "crates/ops", Some("ops")),
];

/// The backbone workloads of `bench backbones`: model, input side, batch, mode, timed iterations.
const BACKBONE_WORKLOADS: &[(&str, usize, usize, &str, usize)] = &[
    ("resnet50", 224, 8, "eval", 3),
    ("resnet50", 224, 8, "train", 3),
    ("mobilenet_v2", 224, 8, "eval", 3),
    ("mobilenet_v2", 224, 8, "train", 3),
    ("resnet50", 448, 2, "eval", 3),
    ("resnet50", 448, 2, "train", 3),
];

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Bench {
            suite,
            criterion_args,
        } => bench(suite, &criterion_args),
        Task::Download {
            dataset,
            dir,
            from,
            mirror,
        } => {
            let dl = Downloader::new();
            let names: &[&str] = match dataset {
                DatasetArg::Cub => &["cub"],
                DatasetArg::Aircraft => &["aircraft"],
                DatasetArg::Cars => &["cars"],
                DatasetArg::All => &["cub", "aircraft", "cars"],
            };
            for name in names {
                let spec = catalog::dataset(name).expect("every name is in the table");
                if dataset == DatasetArg::All && *name == "cars" && from.is_empty() {
                    eprintln!("Stanford Cars skipped: {}", spec.manual.unwrap_or_default());
                    continue;
                }
                xtask::install_dataset(&dl, spec, &dir, &from, &mirror)?;
            }
            print_roots(&dir, names);
            Ok(())
        }
        Task::Weights(args) => weights(args),
    }
}

fn print_roots(dir: &Path, names: &[&str]) {
    for d in DATASETS.iter().filter(|d| names.contains(&d.name)) {
        let root = dir.join(d.root);
        if root.exists() {
            println!(
                "{}: fgvc data verify --dataset {} --root {}",
                d.title,
                d.name,
                root.display()
            );
        }
    }
}

fn weights(args: WeightsArgs) -> Result<()> {
    if let Some(WeightsAction::Convert {
        input,
        output,
        key,
        check,
    }) = args.action
    {
        let n = fgvc_backbone::weights::convert_to_safetensors(&input, key.as_deref(), &output)?;
        println!("wrote {} ({n} tensors)", output.display());
        if let Some(name) = check {
            let report = xtask::check_weights(&name, &output).with_context(|| {
                format!("{} does not match fgvc-backbone's {name}", output.display())
            })?;
            println!("{name}: {report}");
        }
        return Ok(());
    }
    if args.models.is_empty() {
        bail!("name the models to fetch (resnet18 ... mobilenet_v2, or all), or `convert IN OUT`");
    }
    let names: Vec<&str> = if args.models.contains(&ModelArg::All) {
        WEIGHTS.iter().map(|w| w.name).collect()
    } else {
        args.models
            .iter()
            .map(|m| {
                m.to_possible_value()
                    .expect("no skipped variants")
                    .get_name()
                    .to_string()
            })
            .map(|n| {
                WEIGHTS
                    .iter()
                    .find(|w| w.name == n)
                    .expect("every model is in the table")
                    .name
            })
            .collect()
    };
    let dl = Downloader::new();
    for name in names {
        let spec = catalog::weights(name).expect("from the table");
        let out = xtask::install_weights(
            &dl,
            spec,
            &args.dir,
            &xtask::weights_sources(&args.mirror),
            args.force,
        )?;
        let report = xtask::check_weights(name, &out)
            .with_context(|| format!("{} does not match fgvc-backbone's {name}", out.display()))?;
        println!("{name}: {report}");
    }
    Ok(())
}

fn bench(suite: Suite, criterion_args: &[String]) -> Result<()> {
    let root = xtask::workspace_root();
    let chosen: Vec<_> = SUITES
        .iter()
        .filter(|(s, ..)| suite == Suite::All || *s == suite)
        .collect();
    if suite == Suite::Backbones || suite == Suite::All {
        bench_backbones()?;
        if suite == Suite::Backbones {
            return Ok(());
        }
    }
    for (_, package, dir, target) in chosen {
        let missing = match target {
            Some(t) => !root
                .join(dir)
                .join("benches")
                .join(format!("{t}.rs"))
                .exists(),
            None => !root.join(dir).join("benches").is_dir(),
        };
        if missing {
            let what = target
                .map(|t| format!("bench `{t}` (benches/{t}.rs)"))
                .unwrap_or("benchmarks".into());
            let msg = format!("{package} has no {what} yet in {dir}");
            if suite == Suite::All {
                eprintln!("skipping: {msg}");
                continue;
            }
            bail!("{msg}");
        }
        run_bench(package, *target, criterion_args)?;
    }
    Ok(())
}

/// Builds the `bench_backbones` example once, then runs each workload in its own process so that each
/// peak-memory figure is that workload's alone.
fn bench_backbones() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "fgvc-backbone",
            "--example",
            "bench_backbones",
        ])
        .status()
        .context("could not start cargo build for the bench_backbones example")?;
    if !status.success() {
        bail!("building the bench_backbones example failed with {status}");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| xtask::workspace_root().join("target"));
    let exe = target_dir.join("release/examples/bench_backbones");
    for (model, size, batch, mode, iters) in BACKBONE_WORKLOADS {
        let status = Command::new(&exe)
            .args([
                model.to_string(),
                size.to_string(),
                batch.to_string(),
                mode.to_string(),
                iters.to_string(),
            ])
            .status()
            .with_context(|| format!("could not run {}", exe.display()))?;
        if !status.success() {
            bail!("bench_backbones {model} {size} {batch} {mode} failed with {status}");
        }
    }
    Ok(())
}

fn run_bench(package: &str, target: Option<&str>, criterion_args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["bench", "--package", package]);
    if let Some(t) = target {
        cmd.args(["--bench", t]);
    }
    let status = cmd
        .arg("--")
        .args(criterion_args)
        .status()
        .with_context(|| format!("could not start cargo bench for {package}"))?;
    if !status.success() {
        bail!("cargo bench --package {package} failed with {status}");
    }
    Ok(())
}
