//! `fgvc`: the command line of the fgvc toolkit.
//!
//! `fgvc train` trains a method (by default the embedded synthetic baseline, on the CPU in minutes),
//! `fgvc eval` evaluates a run or checkpoint, `fgvc predict` classifies images, `fgvc explain` shows where
//! the model looks, `fgvc export` writes an ONNX graph or inference weights; `fgvc augment preview` renders
//! the destructions the methods train on and `fgvc data verify` checks a downloaded dataset.

mod data;
mod distributed;
mod explain;
mod export;
mod output;
mod predict;
mod preview;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fgvc",
    version,
    about = "Fine-grained visual classification on candle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a method; with no --config, the baseline on the embedded synthetic dataset.
    Train(train::TrainArgs),
    /// Evaluate a run (--run DIR) or a checkpoint (--checkpoint FILE --config FILE) on a split.
    Eval(train::EvalArgs),
    /// Classify images with a trained checkpoint.
    Predict(predict::PredictArgs),
    /// Grad-CAM heatmaps of every named prediction, and the method's own maps, as one PNG per image.
    Explain(explain::ExplainArgs),
    /// Export a checkpoint as an ONNX graph or inference-only safetensors weights.
    Export(export::ExportArgs),
    /// Start an fgvc command as N processes of one MPI job on this machine, through `mpirun`:
    /// `fgvc launch --nproc 2 -- train --out runs/x` (`--distributed` is added to `train`).
    Launch(distributed::LaunchArgs),
    /// Image destructions and transforms.
    Augment {
        #[command(subcommand)]
        command: AugmentCommand,
    },
    /// Datasets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Count images per split and class and report missing or unreadable files.
    Verify(data::VerifyArgs),
}

#[derive(Subcommand)]
enum AugmentCommand {
    /// Render images next to every destruction (jigsaw 8/4/2, region confusion official and paper,
    /// recursive mosaic 3/2) as one PNG.
    Preview(PreviewArgs),
}

/// Arguments of `fgvc augment preview`.
#[derive(Args, Debug)]
pub struct PreviewArgs {
    /// Images to show; by default, images of the embedded synthetic dataset.
    pub images: Vec<PathBuf>,
    /// Number of synthetic images when no image is given.
    #[arg(long, default_value_t = 4)]
    pub count: usize,
    /// Side of the square images shown, in pixels (a multiple of 56, so 7x7 and 8x8 grids fit).
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Seed of the destructions and of the synthetic images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the PNG.
    #[arg(long, default_value = "runs/preview.png")]
    pub out: PathBuf,
    /// The largest image accepted, in pixels (width x height), read from the file's header before decoding.
    #[arg(long, default_value_t = fgvc_data::DEFAULT_MAX_IMAGE_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,
}

fn main() -> Result<()> {
    // Before the first tensor: reuse freed activation buffers instead of page-faulting them in each step.
    fgvc_ops::tune_allocator();
    // The processes of an MPI job other than rank 0 log warnings and errors only (RUST_LOG overrides).
    let level = match fgvc_mpi::rank_from_env() {
        Some(rank) if rank > 0 => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_target(false)
        // A closed stderr (`fgvc train 2>&1 | head`) drops the log, never the run.
        .with_writer(|| output::LogWriter)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // A mistyped FGVC_ISA is refused before any work, naming the variable, rather than ignored in the kernels.
    fgvc_ops::Isa::from_env()?;
    tracing::debug!(
        "CPU kernels: {} (this CPU: {})",
        fgvc_ops::isa(),
        fgvc_ops::Isa::detected()
    );
    match cli.command {
        Command::Train(args) => train::train(&args),
        Command::Eval(args) => train::eval(&args),
        Command::Predict(args) => predict::predict(&args),
        Command::Explain(args) => explain::explain(&args),
        Command::Export(args) => export::run(&args),
        Command::Launch(args) => distributed::launch(&args),
        Command::Augment {
            command: AugmentCommand::Preview(args),
        } => preview::run(&args),
        Command::Data {
            command: DataCommand::Verify(args),
        } => data::run(&args),
    }
}
