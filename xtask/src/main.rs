//! Project automation, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `download cub|aircraft|cars|all`: datasets, verified and unpacked under `data/`;
//! - `weights <model>...|all` and `weights convert IN OUT`: torchvision ImageNet checkpoints as safetensors
//!   under `data/weights/`;
//! - `bench [augment|data|ops|backbones|methods|all] [--device cpu|cuda|metal] [--vs-pytorch]`: the
//!   criterion benchmarks, and the backbone and method workloads (images/s and peak memory, as JSON and a
//!   markdown table, next to PyTorch's with `--vs-pytorch`); see `bench/mod.rs`;
//! - `train-cub [--method ..] [--backbone ..] [--device cpu|cuda|metal] [--epochs N]`: fetch, train,
//!   evaluate, compare with the paper;
//! - `synthetic-table`: the baseline and every method on the synthetic dataset with one budget (the table
//!   in docs/methods.md);
//! - `fuzz [TARGET...] [--seconds 60]`: the cargo-fuzz targets of `fuzz/`, each for a bounded time with
//!   libFuzzer's memory limits (see docs/fuzzing.md);
//! - `cuda-toolkit [--version 13.0] [--runtime]`: the CUDA compiler from PyPI into a cache folder, with
//!   link stubs (`src/cuda_toolkit/`); prints `export` lines;
//! - `build [--device cpu|cuda|metal] [-- CARGO ARGS]`: `cargo build` with the device's feature and
//!   environment;
//! - `device-check --prepare DIR`: the one-shot GPU check's bundle (`src/device_check.rs`);
//! - `protos [--check]`: the committed protobuf code (ONNX), regenerated with protox and prost-build.

mod bench;
mod cuda;
mod device_check;
mod fuzz;

use std::path::{Path, PathBuf};

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
    /// Run benchmarks: criterion suites, and the backbone and method workloads (images/s, peak memory; JSON
    /// and markdown under <target>/bench/, optionally next to PyTorch's). Numbers go to
    /// docs/performance.md by hand.
    Bench(bench::BenchArgs),
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
    /// The baseline and every method trained with the same budget on the synthetic dataset, on ResNet-18
    /// and MobileNetV2: test accuracy and time per epoch as the table in docs/methods.md.
    SyntheticTable(xtask::synthetic_table::SyntheticTableArgs),
    /// The papers' protocol in miniature: pretrain each backbone on a disjoint synthetic source task,
    /// fine-tune the baseline, every method and the ablations from it over seeds, and write the table
    /// (test top-1 mean ± std next to the baseline) that docs/methods.md publishes. `--quick` is CI's.
    MethodBenchmark(xtask::method_benchmark::MethodBenchmarkArgs),
    /// Train a method on CUB-200-2011 with its reproduction config (fetching the dataset and weights if
    /// missing), evaluate, and print the result next to the paper's.
    TrainCub(xtask::train_cub::TrainCubArgs),
    /// Run the cargo-fuzz targets (pth, mat5, checkpoint, config, decode) for a bounded time each, with
    /// libFuzzer's memory limits; installs cargo-fuzz when missing. docs/fuzzing.md has the results.
    Fuzz(fuzz::FuzzArgs),
    /// Install NVIDIA's CUDA compiler from its PyPI wheels (pinned, verified) into a cache folder, with
    /// link stubs, so `--features cuda` builds without a GPU or a CUDA install; prints the environment.
    CudaToolkit(cuda::CudaToolkitArgs),
    /// `cargo build` for a device: `--device cuda` adds the feature and the CUDA environment (the
    /// system's CUDA, or the toolkit installed on demand). Arguments after `--` go to cargo.
    Build(cuda::BuildArgs),
    /// Prepare the one-shot GPU check: the CUDA `device_check` binary (release, stripped, gzipped), the
    /// PyTorch script and `run.sh`, under 60 MiB, for a bare GPU machine (docs/gpu.md).
    DeviceCheck(device_check::DeviceCheckArgs),
    /// Regenerate the committed Rust code of the protobuf schemas (ONNX) with protox and prost-build.
    Protos {
        /// Only check that the committed code is up to date.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct WeightsArgs {
    #[command(subcommand)]
    action: Option<WeightsAction>,
    /// Models to fetch and convert.
    #[arg(value_parser = model_parser())]
    models: Vec<String>,
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

/// `weights`' model names: every entry of fgvc-backbone's weights catalogue, and `all`.
fn model_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(WEIGHTS.iter().map(|w| w.name).chain(["all"]))
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Bench(args) => bench::run(&args),
        Task::SyntheticTable(args) => xtask::synthetic_table::run(&args),
        Task::MethodBenchmark(args) => xtask::method_benchmark::run(&args),
        Task::TrainCub(args) => xtask::train_cub::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::CudaToolkit(args) => cuda::toolkit(&args),
        Task::Build(args) => cuda::build(&args),
        Task::DeviceCheck(args) => device_check::run(&args),
        Task::Protos { check } => xtask::protos::run(check),
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
    let names: Vec<&str> = if args.models.iter().any(|m| m == "all") {
        WEIGHTS.iter().map(|w| w.name).collect()
    } else {
        args.models.iter().map(String::as_str).collect()
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
