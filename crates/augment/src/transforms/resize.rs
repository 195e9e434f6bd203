//! Resizing that matches PIL's `Image.resize`, the resize torchvision applies to PIL images.
//!
//! Every filter is bit-identical to Pillow: bilinear, bicubic and Lanczos go through a port of Pillow's
//! fixed-point convolution resampler (the kernel support grows with the downscale factor, so downsampling is
//! antialiased), and nearest reproduces Pillow's accumulated floating-point source positions.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::convolution::{resample_window, Kernel};
use crate::{AugmentError, Result};

/// Resampling filter of [`resize`], named as in PIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeFilter {
    /// Nearest neighbour (PIL `NEAREST`): no antialiasing.
    Nearest,
    /// Triangle filter (PIL `BILINEAR`), antialiased when downsampling. torchvision's default.
    #[default]
    Bilinear,
    /// Cubic convolution with a = -0.5 (PIL `BICUBIC`), antialiased when downsampling.
    Bicubic,
    /// Lanczos with 3 lobes (PIL `LANCZOS`, formerly `ANTIALIAS`), antialiased when downsampling.
    Lanczos3,
}

/// Resizes `img` to `height` x `width` pixels like PIL's `img.resize((width, height), filter)`.
///
/// The aspect ratio is not kept (torchvision `Resize((h, w))`). Resizing to the same size returns a copy, as PIL
/// does. Errors if the input or the requested size is empty.
///
/// The output is bit-identical to Pillow's (checked against Pillow 13 fixtures made by
/// `tests/fixtures/make_pil_reference.py`), for every filter, upsampling and downsampling.
///
/// ```
/// use fgvc_augment::transforms::{resize, ResizeFilter};
/// let img = image::RgbImage::from_pixel(40, 30, image::Rgb([200, 100, 50]));
/// let out = resize(&img, 12, 16, ResizeFilter::Bilinear)?;
/// assert_eq!(out.dimensions(), (16, 12)); // (width, height)
/// assert_eq!(out.get_pixel(3, 7), &image::Rgb([200, 100, 50])); // flat stays flat
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn resize(img: &RgbImage, height: u32, width: u32, filter: ResizeFilter) -> Result<RgbImage> {
    check_sizes(img, height, width)?;
    if img.dimensions() == (width, height) {
        return Ok(img.clone());
    }
    Ok(resize_region(
        img,
        (height, width),
        filter,
        0..height as usize,
        0..width as usize,
    ))
}

/// `crop(&resize(img, height, width, filter)?, top, left, crop_height, crop_width)`, computing only the pixels
/// of the crop window: the same bytes, about `(crop / size)^2` of the resampling work.
///
/// `(top, left)` is in the resized image's coordinates and may lie outside it (the outside is black, as in
/// [`super::crop`]). This is what a pipeline runs for `Resize` followed by `RandomCrop` or `CenterCrop`. Errors if
/// the input, the resize or the crop is empty.
///
/// ```
/// use fgvc_augment::transforms::{crop, resize, resize_and_crop, ResizeFilter};
/// let img = image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 7]));
/// let fused = resize_and_crop(&img, (55, 55), ResizeFilter::Bilinear, (-2, 9), (44, 44))?;
/// let resized = resize(&img, 55, 55, ResizeFilter::Bilinear)?;
/// assert_eq!(fused, crop(&resized, -2, 9, 44, 44)?);
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn resize_and_crop(
    img: &RgbImage,
    (height, width): (u32, u32),
    filter: ResizeFilter,
    (top, left): (i64, i64),
    (crop_height, crop_width): (u32, u32),
) -> Result<RgbImage> {
    check_sizes(img, height, width)?;
    if crop_height == 0 || crop_width == 0 {
        return Err(AugmentError::InvalidArgument(format!(
            "crop size must be positive, got {crop_height}x{crop_width}"
        )));
    }
    // The part of the window inside the resized image.
    let span = |start: i64, len: u32, size: u32| {
        let lo = start.clamp(0, i64::from(size));
        let hi = (start + i64::from(len)).clamp(0, i64::from(size));
        lo as usize..hi.max(lo) as usize
    };
    if img.dimensions() == (width, height) {
        return super::crop(img, top, left, crop_height, crop_width);
    }
    let rows = span(top, crop_height, height);
    let cols = span(left, crop_width, width);
    if rows.is_empty() || cols.is_empty() {
        return Ok(RgbImage::new(crop_width, crop_height));
    }
    let inside = resize_region(img, (height, width), filter, rows.clone(), cols.clone());
    if inside.dimensions() == (crop_width, crop_height) {
        return Ok(inside);
    }
    // Paste the computed part at its place in a black canvas.
    super::crop(
        &inside,
        top - rows.start as i64,
        left - cols.start as i64,
        crop_height,
        crop_width,
    )
}

fn check_sizes(img: &RgbImage, height: u32, width: u32) -> Result<()> {
    let (in_w, in_h) = img.dimensions();
    if in_w == 0 || in_h == 0 {
        return Err(AugmentError::InvalidArgument(format!(
            "cannot resize an empty {in_h}x{in_w} image"
        )));
    }
    if width == 0 || height == 0 {
        return Err(AugmentError::InvalidArgument(format!(
            "cannot resize to an empty {height}x{width} image"
        )));
    }
    Ok(())
}

/// Rows `rows` and columns `cols` (non-empty, inside the output) of `img` resized to `height` x `width`.
fn resize_region(
    img: &RgbImage,
    (height, width): (u32, u32),
    filter: ResizeFilter,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> RgbImage {
    let (out_w, out_h) = (cols.len() as u32, rows.len() as u32);
    let kernel = match filter {
        ResizeFilter::Nearest => {
            let out = nearest_region(img, (height, width), rows, cols);
            return RgbImage::from_raw(out_w, out_h, out)
                .expect("nearest buffer has the window's size");
        }
        ResizeFilter::Bilinear => Kernel::Bilinear,
        ResizeFilter::Bicubic => Kernel::Bicubic,
        ResizeFilter::Lanczos3 => Kernel::Lanczos3,
    };
    let out = resample_window(
        img.as_raw(),
        img.dimensions(),
        (width, height),
        kernel,
        rows,
        cols,
    );
    RgbImage::from_raw(out_w, out_h, out).expect("resampled buffer has the window's size")
}

/// Resizes so that the shorter side becomes `size`, keeping the aspect ratio (torchvision `Resize(int)`).
///
/// The longer side becomes `int(size * long / short)` (truncated), exactly torchvision's rule; a square image
/// becomes `size` x `size`.
///
/// ```
/// use fgvc_augment::transforms::{resize_shorter, ResizeFilter};
/// let img = image::RgbImage::new(500, 375); // width 500, height 375
/// let out = resize_shorter(&img, 256, ResizeFilter::Bilinear)?;
/// assert_eq!(out.dimensions(), (341, 256)); // int(256 * 500 / 375) = 341
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn resize_shorter(img: &RgbImage, size: u32, filter: ResizeFilter) -> Result<RgbImage> {
    let (h, w) = shorter_side_size((img.height(), img.width()), size)?;
    resize(img, h, w, filter)
}

/// The `(height, width)` that [`resize_shorter`] produces for an input of `(height, width)`.
///
/// Errors if the input is empty, `size` is 0, or the longer side would round down to 0 or overflow.
pub fn shorter_side_size(input: (u32, u32), size: u32) -> Result<(u32, u32)> {
    let (h, w) = input;
    if h == 0 || w == 0 || size == 0 {
        return Err(AugmentError::InvalidArgument(format!(
            "resize_shorter needs a non-empty image and size > 0, got a {h}x{w} image and size {size}"
        )));
    }
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python: int(size * long / short); both products are exact in f64 and the division is correctly rounded,
    // as Python's int / int is.
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short)).floor();
    if !(1.0..=f64::from(u32::MAX)).contains(&new_long) {
        return Err(AugmentError::InvalidArgument(format!(
            "resize_shorter({size}) of a {h}x{w} image gives a longer side of {new_long}"
        )));
    }
    let new_long = new_long as u32;
    Ok(if w <= h {
        (new_long, size)
    } else {
        (size, new_long)
    })
}

/// Pillow's NEAREST resize (`ImagingScaleAffine`), rows `rows` and columns `cols` of it: the source coordinate of
/// output column x is the integer part of `scale * 0.5 + x * scale`, accumulated in f64 exactly as Pillow does.
fn nearest_region(
    img: &RgbImage,
    (height, width): (u32, u32),
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Vec<u8> {
    let (in_w, in_h) = img.dimensions();
    let xs = &nearest_positions(in_w, width)[cols];
    let ys = &nearest_positions(in_h, height)[rows];
    let src = img.as_raw();
    let in_stride = in_w as usize * 3;
    let mut out = Vec::with_capacity(xs.len() * ys.len() * 3);
    for &y in ys {
        let row = &src[y * in_stride..(y + 1) * in_stride];
        for &x in xs {
            out.extend_from_slice(&row[x * 3..x * 3 + 3]);
        }
    }
    out
}

/// Source indices of Pillow's nearest scaling along one axis (`in_size` > 0, `out_size` > 0).
fn nearest_positions(in_size: u32, out_size: u32) -> Vec<usize> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let mut pos = scale * 0.5;
    (0..out_size)
        .map(|_| {
            // Pillow's COORD(): truncation of a non-negative value; clamp for safety (never needed for scaling).
            let i = (pos as usize).min(in_size as usize - 1);
            pos += scale;
            i
        })
        .collect()
}
