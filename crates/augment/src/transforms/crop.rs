//! Crops with torchvision's semantics: `RandomCrop(size, padding)` and `CenterCrop(size)`.
//!
//! Padding is never materialised: a crop window that reaches outside the image reads zeros there, which is what
//! torchvision's zero padding followed by a crop produces.

use image::RgbImage;
use rand::Rng;

use crate::{AugmentError, Result};

/// Copies the `height` x `width` window whose top-left corner is at (`top`, `left`) in `img`'s coordinates.
///
/// The window may reach outside the image (negative offsets included); those pixels are black, as after
/// torchvision's zero padding. Errors if the window is empty.
///
/// ```
/// use fgvc_augment::transforms::crop;
/// let img = image::RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9]));
/// let out = crop(&img, -1, 2, 3, 3)?; // one row above the image, one column right of it
/// assert_eq!(out.get_pixel(0, 0), &image::Rgb([0, 0, 0]));
/// assert_eq!(out.get_pixel(0, 1), &image::Rgb([9, 9, 9]));
/// assert_eq!(out.get_pixel(2, 1), &image::Rgb([0, 0, 0]));
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn crop(img: &RgbImage, top: i64, left: i64, height: u32, width: u32) -> Result<RgbImage> {
    if height == 0 || width == 0 {
        return Err(AugmentError::InvalidArgument(format!(
            "crop size must be positive, got {height}x{width}"
        )));
    }
    let (in_w, in_h) = (i64::from(img.width()), i64::from(img.height()));
    let (out_w, out_h) = (width as usize, height as usize);
    let out_stride = out_w * 3;
    let mut out = vec![0u8; out_stride * out_h];
    // Intersection of the window with the image, in image coordinates.
    let x0 = left.clamp(0, in_w);
    let x1 = (left + i64::from(width)).clamp(0, in_w);
    let y0 = top.clamp(0, in_h);
    let y1 = (top + i64::from(height)).clamp(0, in_h);
    if x0 < x1 && y0 < y1 {
        let src = img.as_raw();
        let in_stride = in_w as usize * 3;
        let run = (x1 - x0) as usize * 3;
        let dst_x = (x0 - left) as usize * 3;
        for y in y0..y1 {
            let src_start = y as usize * in_stride + x0 as usize * 3;
            let dst_start = (y - top) as usize * out_stride + dst_x;
            out[dst_start..dst_start + run].copy_from_slice(&src[src_start..src_start + run]);
        }
    }
    Ok(RgbImage::from_raw(width, height, out).expect("crop buffer has the crop's size"))
}

/// Draws the top-left corner of a torchvision `RandomCrop(size=(height, width), padding)` window.
///
/// Returns `(top, left)` in the *padded* image's coordinates, each uniform in `0..=padded - crop` (top drawn
/// first, like `torch.randint` in `RandomCrop.get_params`). Errors if the padded image is smaller than the crop.
pub fn random_crop_offsets<R: Rng + ?Sized>(
    image_size: (u32, u32),
    height: u32,
    width: u32,
    padding: u32,
    rng: &mut R,
) -> Result<(u32, u32)> {
    let (in_h, in_w) = image_size;
    let padded_h = u64::from(in_h) + 2 * u64::from(padding);
    let padded_w = u64::from(in_w) + 2 * u64::from(padding);
    if height == 0 || width == 0 {
        return Err(AugmentError::InvalidArgument(format!(
            "random crop size must be positive, got {height}x{width}"
        )));
    }
    if padded_h < u64::from(height) || padded_w < u64::from(width) {
        return Err(AugmentError::InvalidArgument(format!(
            "random crop of {height}x{width} does not fit a {in_h}x{in_w} image padded by {padding} \
             ({padded_h}x{padded_w})"
        )));
    }
    let max_top = (padded_h - u64::from(height)) as u32;
    let max_left = (padded_w - u64::from(width)) as u32;
    let top = rng.random_range(0..=max_top);
    let left = rng.random_range(0..=max_left);
    Ok((top, left))
}

/// torchvision `RandomCrop(size=(height, width), padding=padding)`: zero-pads `padding` pixels on every side,
/// then takes a `height` x `width` window at a uniformly random position.
///
/// Every offset from 0 to `H + 2 * padding - height` (rows) and likewise for columns is equally likely; the
/// randomness comes only from `rng`. Errors if the padded image is smaller than the crop.
///
/// ```
/// use fgvc_augment::transforms::random_crop;
/// use rand::SeedableRng;
/// let img = image::RgbImage::from_pixel(10, 10, image::Rgb([255, 255, 255]));
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let out = random_crop(&img, 8, 8, 2, &mut rng)?;
/// assert_eq!(out.dimensions(), (8, 8));
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn random_crop<R: Rng + ?Sized>(
    img: &RgbImage,
    height: u32,
    width: u32,
    padding: u32,
    rng: &mut R,
) -> Result<RgbImage> {
    let (top, left) =
        random_crop_offsets((img.height(), img.width()), height, width, padding, rng)?;
    let pad = i64::from(padding);
    crop(
        img,
        i64::from(top) - pad,
        i64::from(left) - pad,
        height,
        width,
    )
}

/// The top-left corner `(top, left)`, in `img`'s coordinates, of torchvision's `CenterCrop((height, width))`.
///
/// Along an axis where the image is at least as large as the crop, the offset is
/// `int(round((size - crop) / 2.0))` with Python's round-half-to-even. Where the image is smaller, torchvision
/// first zero-pads `(crop - size) // 2` before and `(crop - size + 1) // 2` after, so the offset is
/// `-((crop - size) / 2)`.
///
/// ```
/// use fgvc_augment::transforms::center_crop_offsets;
/// assert_eq!(center_crop_offsets((550, 550), 448, 448), (51, 51));
/// assert_eq!(center_crop_offsets((10, 7), 5, 2), (2, 2)); // round(2.5) = 2, round(2.5) = 2
/// assert_eq!(center_crop_offsets((11, 4), 4, 7), (4, -1)); // round(3.5) = 4; pad 1 left, 2 right
/// ```
pub fn center_crop_offsets(image_size: (u32, u32), height: u32, width: u32) -> (i64, i64) {
    fn axis(size: u32, crop: u32) -> i64 {
        if crop > size {
            -i64::from((crop - size) / 2)
        } else {
            let diff = size - crop;
            let half = diff / 2;
            // (diff / 2.0) is an integer or ends in .5; round half to even.
            let rounded = if diff % 2 == 1 && half % 2 == 1 {
                half + 1
            } else {
                half
            };
            i64::from(rounded)
        }
    }
    (axis(image_size.0, height), axis(image_size.1, width))
}

/// torchvision `CenterCrop((height, width))`: the central window, zero-padded (as torchvision pads) when the
/// image is smaller than the crop. See [`center_crop_offsets`] for the exact placement. Errors if the crop is
/// empty.
///
/// ```
/// use fgvc_augment::transforms::center_crop;
/// let img = image::RgbImage::new(550, 550);
/// assert_eq!(center_crop(&img, 448, 448)?.dimensions(), (448, 448));
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn center_crop(img: &RgbImage, height: u32, width: u32) -> Result<RgbImage> {
    let (top, left) = center_crop_offsets((img.height(), img.width()), height, width);
    crop(img, top, left, height, width)
}
