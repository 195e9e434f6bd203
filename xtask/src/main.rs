//! Project automation, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! Today: `bench`, which runs the criterion benchmarks of the chosen crates in release mode. Dataset
//! download, pretrained weights and `train-cub` join here as the crates they drive land.

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

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
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    /// Destructions and transforms (`fgvc-augment`).
    Augment,
    /// Decode and augmentation throughput of the loader (`fgvc-data`).
    Data,
    /// Everything above.
    All,
}

impl Suite {
    fn packages(self) -> &'static [&'static str] {
        match self {
            Suite::Augment => &["fgvc-augment"],
            Suite::Data => &["fgvc-data"],
            Suite::All => &["fgvc-augment", "fgvc-data"],
        }
    }
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Bench {
            suite,
            criterion_args,
        } => {
            for package in suite.packages() {
                run_bench(package, &criterion_args)?;
            }
            Ok(())
        }
    }
}

fn run_bench(package: &str, criterion_args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["bench", "--package", package, "--"])
        .args(criterion_args)
        .status()
        .with_context(|| format!("could not start cargo bench for {package}"))?;
    if !status.success() {
        bail!("cargo bench --package {package} failed with {status}");
    }
    Ok(())
}
