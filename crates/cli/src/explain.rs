//! `fgvc explain`: where a trained model looks. For each image, a PNG of the image beside the Grad-CAM
//! overlay of every named prediction and the method's own maps, and a JSON sidecar naming the panels. One bad
//! file loses only its own result; the command then exits non-zero after writing the others.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use fgvc_train::device::DeviceChoice;
use fgvc_train::explain::{explain_files, write_explained, ExplainOptions, RenderOptions};
use fgvc_train::predict::image_files;

use crate::output::outln;
use crate::train::{device_parser, restore};

/// Arguments of `fgvc explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Images, or directories searched recursively for .jpg/.jpeg/.png.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// The checkpoint to explain (`best.safetensors` of a run): it carries its configuration and class names.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Where to write `<image>.png` and `<image>.json` per image (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Explain this class (its index) in every heatmap instead of each prediction's predicted class.
    #[arg(long)]
    pub class: Option<usize>,
    /// Grad-CAM at this backbone stage (`layer3`; the names are the backbone's stages) instead of the maps
    /// each prediction reads: a shallower, finer map.
    #[arg(long)]
    pub layer: Option<String>,
    /// Replace files of the same names already in `--out`; without it they are an error and nothing is
    /// written.
    #[arg(long)]
    pub overwrite: bool,
    /// Device.
    #[arg(long, value_parser = device_parser(), default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

/// Explains the images and writes one PNG and one sidecar per image; an error after writing when any file
/// failed.
pub fn explain(args: &ExplainArgs) -> Result<()> {
    let device = args.device.open()?;
    let predictor = restore(&args.checkpoint, None, &[], &device)?;
    let images = image_files(&args.images)?;
    let what = ExplainOptions {
        class: args.class,
        layer: args.layer.clone(),
    };
    let results = explain_files(&predictor, &images, &what, &RenderOptions::default())?;
    let written = write_explained(&args.out, &results, args.overwrite)?;
    let mut pngs = written.iter();
    for r in &results {
        match &r.result {
            Ok(_) => {
                let png = pngs.next().expect("one PNG per explained image");
                outln!("{} -> {}", r.image.display(), png.display())?;
            }
            Err(e) => outln!("{}: error: {e}", r.image.display())?,
        }
    }
    let failed = results.iter().filter(|r| r.result.is_err()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} image(s) could not be explained; each one's error is above",
            results.len()
        );
    }
    Ok(())
}
