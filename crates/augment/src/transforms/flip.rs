//! Horizontal flips: torchvision `RandomHorizontalFlip(p)` and the deterministic mirror it applies.

use image::RgbImage;
use rand::Rng;

use crate::{AugmentError, Result};

/// Mirrors `img` left to right (PIL `FLIP_LEFT_RIGHT`), returning a new image. Flipping twice is the identity.
///
/// ```
/// use fgvc_augment::transforms::horizontal_flip;
/// let mut img = image::RgbImage::new(3, 1);
/// img.put_pixel(0, 0, image::Rgb([1, 2, 3]));
/// let out = horizontal_flip(&img);
/// assert_eq!(out.get_pixel(2, 0), &image::Rgb([1, 2, 3]));
/// assert_eq!(horizontal_flip(&out), img);
/// ```
pub fn horizontal_flip(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    horizontal_flip_in_place(&mut out);
    out
}

/// Mirrors `img` left to right in place, without allocating.
pub fn horizontal_flip_in_place(img: &mut RgbImage) {
    let stride = img.width() as usize * 3;
    if stride == 0 {
        return;
    }
    let mut scratch = vec![0u8; stride];
    for row in img.chunks_exact_mut(stride) {
        scratch.copy_from_slice(row);
        for (dst, src) in row.chunks_exact_mut(3).zip(scratch.chunks_exact(3).rev()) {
            dst.copy_from_slice(src);
        }
    }
}

/// Decides one `RandomHorizontalFlip(p)` draw: true with probability `p` (`rng.random::<f32>() < p`, as
/// torchvision's `torch.rand(1) < p`). Errors unless `0 <= p <= 1`.
pub fn flip_decision<R: Rng + ?Sized>(p: f32, rng: &mut R) -> Result<bool> {
    if !(0.0..=1.0).contains(&p) {
        return Err(AugmentError::InvalidArgument(format!(
            "flip probability must be in [0, 1], got {p}"
        )));
    }
    Ok(rng.random::<f32>() < p)
}

/// torchvision `RandomHorizontalFlip(p)`: mirrors `img` (in place) with probability `p`, else returns it as is.
/// Errors unless `0 <= p <= 1`.
///
/// ```
/// use fgvc_augment::transforms::{horizontal_flip, random_horizontal_flip};
/// use rand::SeedableRng;
/// let img = image::RgbImage::from_fn(5, 2, |x, y| image::Rgb([x as u8, y as u8, 0]));
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// assert_eq!(random_horizontal_flip(img.clone(), 1.0, &mut rng)?, horizontal_flip(&img));
/// assert_eq!(random_horizontal_flip(img.clone(), 0.0, &mut rng)?, img);
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn random_horizontal_flip<R: Rng + ?Sized>(
    mut img: RgbImage,
    p: f32,
    rng: &mut R,
) -> Result<RgbImage> {
    if flip_decision(p, rng)? {
        horizontal_flip_in_place(&mut img);
    }
    Ok(img)
}
