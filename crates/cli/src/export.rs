//! `fgvc export`: writes a trained model for deployment, as an ONNX graph (backbone and the method's
//! inference heads, every named prediction an output, a dynamic batch) or as inference-only safetensors
//! weights, both with the class names and the evaluation pipeline as metadata. The file is written
//! atomically, and an existing one is replaced only with `--overwrite`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use fgvc_train::device::DeviceChoice;
use fgvc_train::export;

use crate::output::outln;
use crate::train::device_parser;

/// What `fgvc export` writes.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    /// The inference graph (opset 17): input `images` (N, 3, H, W), one output per named prediction.
    Onnx,
    /// The inference weights (parameters and BatchNorm buffers, torchvision's names for the backbone).
    Safetensors,
}

/// Arguments of `fgvc export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The checkpoint to export (with the config.toml of its run directory beside it).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace `--out` if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Input height of the graph (default: the checkpoint's evaluation crop).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub height: Option<u32>,
    /// Input width of the graph (default: the checkpoint's evaluation crop).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub width: Option<u32>,
    /// Device the model is restored on.
    #[arg(long, value_parser = device_parser(), default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

/// Exports the checkpoint `args` names.
pub fn run(args: &ExportArgs) -> Result<()> {
    if args.out.exists() && !args.overwrite {
        bail!(
            "{} exists: pass --overwrite to replace it, or choose another --out",
            args.out.display()
        );
    }
    if args.out.is_dir() {
        bail!("{} is a directory: --out takes a file", args.out.display());
    }
    let device = args.device.open()?;
    let predictor = crate::train::restore(&args.checkpoint, None, &[], &device)?;
    let (height, width) = match (args.height, args.width) {
        (Some(h), Some(w)) => (h as usize, w as usize),
        (h, w) => {
            let (eh, ew) = export::eval_size(&predictor)?;
            (h.map_or(eh, |h| h as usize), w.map_or(ew, |w| w as usize))
        }
    };
    let bytes = match args.format {
        ExportFormat::Onnx => fgvc_onnx::encode(&export::onnx_model(&predictor, height, width)?),
        ExportFormat::Safetensors => export::safetensors_weights(&predictor, height, width)?,
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fgvc_train::run_dir::atomic_write(&args.out, &bytes)?;
    outln!(
        "wrote {} ({:?}, {} on {}, input {height}x{width}, {} bytes)",
        args.out.display(),
        args.format,
        predictor.method().name(),
        predictor.config().model.backbone,
        bytes.len()
    )?;
    Ok(())
}
