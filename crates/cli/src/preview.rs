//! `fgvc augment preview`: what each method's destructions do to real or synthetic images, as one PNG.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use fgvc_augment::transforms::{resize, Normalize, ResizeFilter};
use fgvc_augment::{destruction_preview, save_png, PREVIEW_COLUMNS};
use fgvc_data::{decode_image, Dataset, Split, Synthetic, SyntheticConfig};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::PreviewArgs;

/// Renders the preview that `args` describes and writes it.
pub fn run(args: &PreviewArgs) -> Result<()> {
    if args.size == 0 || args.size % 56 != 0 {
        bail!(
            "--size {} is not a positive multiple of 56: the preview shows 7x7 and 8x8 grids",
            args.size
        );
    }
    fgvc_data::set_max_image_pixels(args.max_image_pixels)?;
    let sources = source_images(args)?;
    let pixels = Normalize::new([0.0; 3], [1.0; 3])?; // ToTensor only: values in [0, 1]
    let device = Device::Cpu;
    let images = sources
        .iter()
        .map(|img| {
            let img = resize(img, args.size, args.size, ResizeFilter::Bilinear)?;
            Ok(pixels.to_tensor(&img, &device)?)
        })
        .collect::<Result<Vec<Tensor>>>()?;
    let batch = Tensor::stack(&images, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let grid = destruction_preview(&batch, &mut rng)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    save_png(&grid, &args.out)?;
    tracing::info!(
        "wrote {} ({}x{} px): {} image(s) per row, columns: {}",
        args.out.display(),
        grid.width(),
        grid.height(),
        sources.len(),
        PREVIEW_COLUMNS.join(" | ")
    );
    Ok(())
}

/// The images named on the command line, or `count` images of the synthetic dataset, one per class.
fn source_images(args: &PreviewArgs) -> Result<Vec<RgbImage>> {
    if !args.images.is_empty() {
        return args
            .images
            .iter()
            .map(|path| {
                if !path.is_file() {
                    bail!("{}: no such image file", path.display());
                }
                Ok(decode_image(path, "preview")?)
            })
            .collect();
    }
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let config = SyntheticConfig {
        image_size: args.size,
        seed: args.seed,
        ..SyntheticConfig::default()
    };
    let synthetic = Synthetic::new(config, Split::Train)?;
    (0..args.count.min(synthetic.len()))
        .map(|i| Ok(synthetic.load(i)?))
        .collect()
}
