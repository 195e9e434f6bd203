//! A picture of what the destructions do: each image of a batch in one row, the original next to every
//! destruction, so a user can check granularities and sizes before training.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};
use rand::Rng;

use crate::cells::batch_dims;
use crate::{AugmentError, Jigsaw, RcmMode, RecursiveMosaic, RegionConfusion, Result};

/// Gap between cells of the grid, in pixels.
const GUTTER: u32 = 4;

/// Lays out batches side by side: row `i` shows image `i` of every column. All columns must share one NCHW
/// shape with 3 channels and values in `[0, 1]` (values outside are clamped).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let a = Tensor::zeros((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
/// let b = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
/// let grid = fgvc_augment::preview_grid(&[&a, &b])?;
/// assert_eq!(grid.dimensions(), (2 * 8 + 3 * 4, 2 * 8 + 3 * 4));
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn preview_grid(columns: &[&Tensor]) -> Result<RgbImage> {
    let Some(first) = columns.first() else {
        return Err(AugmentError::InvalidArgument(
            "a preview needs at least one column".into(),
        ));
    };
    let (n, c, h, w) = batch_dims(first, "preview_grid")?;
    if c != 3 {
        return Err(AugmentError::BadTensor(format!(
            "a preview needs RGB images, got {c} channels"
        )));
    }
    let (h32, w32) = (h as u32, w as u32);
    let width = columns.len() as u32 * (w32 + GUTTER) + GUTTER;
    let height = n as u32 * (h32 + GUTTER) + GUTTER;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (col, images) in columns.iter().enumerate() {
        if images.dims() != first.dims() {
            return Err(AugmentError::BadTensor(format!(
                "preview column {col} has shape {:?}, column 0 has {:?}",
                images.dims(),
                first.dims()
            )));
        }
        let planes = images
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .clamp(0f32, 1f32)?
            .affine(255.0, 0.5)?
            .to_dtype(DType::U8)?
            .reshape((n, 3, h * w))?
            .to_vec3::<u8>()?;
        let x0 = GUTTER + col as u32 * (w32 + GUTTER);
        for (row, image) in planes.iter().enumerate() {
            let y0 = GUTTER + row as u32 * (h32 + GUTTER);
            for y in 0..h {
                for x in 0..w {
                    let i = y * w + x;
                    canvas.put_pixel(
                        x0 + x as u32,
                        y0 + y as u32,
                        Rgb([image[0][i], image[1][i], image[2][i]]),
                    );
                }
            }
        }
    }
    Ok(canvas)
}

/// The destructions shown by [`destruction_preview`], in column order after the original.
pub const PREVIEW_COLUMNS: [&str; 8] = [
    "original",
    "jigsaw 8x8",
    "jigsaw 4x4",
    "jigsaw 2x2",
    "RCM 7x7 official",
    "RCM 7x7 paper k=2",
    "mosaic r=3",
    "mosaic r=2",
];

/// Renders every destruction of the methods next to the original: [`PREVIEW_COLUMNS`] says which. `images`
/// is an NCHW batch in `[0, 1]` whose height and width are multiples of 56 (so 8x8 and 7x7 grids both fit).
pub fn destruction_preview(images: &Tensor, rng: &mut impl Rng) -> Result<RgbImage> {
    let (_, _, h, w) = batch_dims(images, "destruction_preview")?;
    if h % 56 != 0 || w % 56 != 0 {
        return Err(AugmentError::GridDoesNotDivide {
            n: 56,
            height: h,
            width: w,
        });
    }
    let mut columns = vec![images.clone()];
    for n in [8, 4, 2] {
        columns.push(Jigsaw::new(n)?.apply(images, rng)?.images);
    }
    for mode in [RcmMode::Official, RcmMode::Paper] {
        columns.push(RegionConfusion::new(7, 2, mode)?.apply(images, rng)?.images);
    }
    for levels in [3, 2] {
        columns.push(RecursiveMosaic::new(levels)?.apply(images, rng)?.images);
    }
    debug_assert_eq!(columns.len(), PREVIEW_COLUMNS.len());
    let refs: Vec<&Tensor> = columns.iter().collect();
    preview_grid(&refs)
}

/// Writes an image as PNG, naming the file in the error when it cannot.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| AugmentError::Image {
            path: Some(path.to_path_buf()),
            source,
        })
}
