//! Rotation about the image centre with nearest-neighbour sampling: torchvision `RandomRotation(d)` on PIL images.
//!
//! This reproduces Pillow's `Image.rotate(angle, NEAREST, expand=False)` pixel for pixel: the same inverse affine
//! matrix (entries rounded to 15 decimals), the same fast paths for multiples of 90 degrees, and the same 16.16
//! fixed-point walk over destination pixel centres.

use image::RgbImage;
use rand::Rng;

use crate::{AugmentError, Result};

/// Rotates `img` by `degrees` counter-clockwise about its centre, like PIL's
/// `img.rotate(degrees, resample=NEAREST, expand=False, fillcolor=fill)`.
///
/// The output keeps the input's size; destination pixels whose source falls outside the image take `fill`
/// (torchvision's default is black). Negative angles rotate clockwise.
///
/// ```
/// use fgvc_augment::transforms::rotate;
/// let mut img = image::RgbImage::new(4, 4);
/// img.put_pixel(3, 0, image::Rgb([255, 0, 0])); // top-right corner
/// let out = rotate(&img, 90.0, [0, 0, 0]);
/// assert_eq!(out.get_pixel(0, 0), &image::Rgb([255, 0, 0])); // counter-clockwise: now top-left
/// ```
pub fn rotate(img: &RgbImage, degrees: f32, fill: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    // Python: angle = angle % 360.0 (the result takes the divisor's sign).
    let mut angle = f64::from(degrees) % 360.0;
    if angle < 0.0 {
        angle += 360.0;
    }
    if angle == 0.0 {
        return img.clone();
    }
    if angle == 180.0 {
        return rotate_180(img);
    }
    if (angle == 90.0 || angle == 270.0) && w == h {
        return rotate_quarter(img, angle == 90.0);
    }
    affine_nearest(img, &rotation_matrix(angle, w, h), fill)
}

/// Pillow's inverse matrix `[a, b, c, d, e, f]` for `rotate(angle)` about (w / 2, h / 2): the source of destination
/// point (x, y) is (a x + b y + c, d x + e y + f).
fn rotation_matrix(angle_deg: f64, w: u32, h: u32) -> [f64; 6] {
    let angle = -angle_deg.to_radians(); // == -math.radians(angle): x * (pi / 180)
    let (sin, cos) = (angle.sin(), angle.cos());
    let mut m = [
        round15(cos),
        round15(sin),
        0.0,
        round15(-sin),
        round15(cos),
        0.0,
    ];
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    // matrix[2], matrix[5] = transform(-cx, -cy, matrix); matrix[2] += cx; matrix[5] += cy
    let (tx, ty) = (-cx, -cy);
    let c = m[0] * tx + m[1] * ty + m[2];
    let f = m[3] * tx + m[4] * ty + m[5];
    m[2] = c + cx;
    m[5] = f + cy;
    m
}

/// Python's `round(x, 15)`: correctly rounded to 15 decimals, via an exact decimal rendering and a correctly
/// rounded parse (the same two steps CPython takes).
fn round15(x: f64) -> f64 {
    format!("{x:.15}")
        .parse()
        .expect("a formatted f64 parses back")
}

/// Pillow's `ImagingTransformAffine` with nearest sampling on an RGB image of the same size.
fn affine_nearest(img: &RgbImage, a: &[f64; 6], fill: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::from_pixel(w, h, image::Rgb(fill));
    if w == 0 || h == 0 {
        return out;
    }
    let check_fixed = |x: f64, y: f64| {
        (x * a[0] + y * a[1] + a[2]).abs() < 32768.0 && (x * a[3] + y * a[4] + a[5]).abs() < 32768.0
    };
    let (wf, hf) = (f64::from(w), f64::from(h));
    if a[1] == 0.0 && a[3] == 0.0 {
        scale_affine(img, a, &mut out);
    } else if check_fixed(0.0, 0.0)
        && check_fixed(wf, hf)
        && check_fixed(0.0, hf)
        && check_fixed(wf, 0.0)
    {
        affine_fixed(img, a, &mut out);
    } else {
        affine_float(img, a, &mut out);
    }
    out
}

/// Pillow's FLOOR macro, then the C conversion to int.
fn pil_floor(v: f64) -> i32 {
    if v < 0.0 {
        v.floor() as i32
    } else {
        v as i32
    }
}

/// Pillow's COORD macro: -1 for negative coordinates, else truncation.
fn pil_coord(v: f64) -> i64 {
    if v < 0.0 {
        -1
    } else {
        v as i64
    }
}

#[inline]
fn copy_pixel(src: &[u8], dst: &mut [u8], src_idx: usize, dst_idx: usize) {
    dst[dst_idx..dst_idx + 3].copy_from_slice(&src[src_idx..src_idx + 3]);
}

/// `affine_fixed` in Pillow's Geometry.c: 16.16 fixed-point accumulation of the source coordinate.
fn affine_fixed(img: &RgbImage, a: &[f64; 6], out: &mut RgbImage) {
    let (w, h) = img.dimensions();
    let fix = |v: f64| pil_floor(v * 65536.0 + 0.5);
    let (a0, a1, a3, a4) = (fix(a[0]), fix(a[1]), fix(a[3]), fix(a[4]));
    let mut a2 = fix(a[2] + a[0] * 0.5 + a[1] * 0.5);
    let mut a5 = fix(a[5] + a[3] * 0.5 + a[4] * 0.5);
    let (xsize, ysize) = (w as i32, h as i32);
    let src = img.as_raw();
    let stride = w as usize;
    for out_row in out.chunks_exact_mut(stride * 3) {
        let (mut xx, mut yy) = (a2, a5);
        for px in out_row.chunks_exact_mut(3) {
            let (xin, yin) = (xx >> 16, yy >> 16);
            if (0..xsize).contains(&xin) && (0..ysize).contains(&yin) {
                let i = (yin as usize * stride + xin as usize) * 3;
                px.copy_from_slice(&src[i..i + 3]);
            }
            xx = xx.wrapping_add(a0);
            yy = yy.wrapping_add(a3);
        }
        a2 = a2.wrapping_add(a1);
        a5 = a5.wrapping_add(a4);
    }
}

/// Pillow's floating-point affine walk, used only when a coordinate exceeds the fixed-point range (images wider
/// or taller than 32768 pixels).
fn affine_float(img: &RgbImage, a: &[f64; 6], out: &mut RgbImage) {
    let (w, h) = img.dimensions();
    let src = img.as_raw();
    let stride = w as usize * 3;
    let dst = out.as_mut();
    let mut xo = a[2] + a[1] * 0.5 + a[0] * 0.5;
    let mut yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
    for y in 0..h as usize {
        let (mut xx, mut yy) = (xo, yo);
        for x in 0..w as usize {
            let xin = pil_coord(xx);
            let yin = pil_coord(yy);
            if (0..i64::from(w)).contains(&xin) && (0..i64::from(h)).contains(&yin) {
                copy_pixel(
                    src,
                    dst,
                    yin as usize * stride + xin as usize * 3,
                    y * stride + x * 3,
                );
            }
            xx += a[0];
            yy += a[3];
        }
        xo += a[1];
        yo += a[4];
    }
}

/// Pillow's `ImagingScaleAffine` (pure scaling and translation), reached when the rounded sine is exactly 0.
fn scale_affine(img: &RgbImage, a: &[f64; 6], out: &mut RgbImage) {
    let (w, h) = img.dimensions();
    let src = img.as_raw();
    let stride = w as usize * 3;
    let mut xo = a[2] + a[0] * 0.5;
    let xs: Vec<Option<usize>> = (0..w)
        .map(|_| {
            let xin = pil_coord(xo);
            xo += a[0];
            (0..i64::from(w)).contains(&xin).then_some(xin as usize)
        })
        .collect();
    let mut yo = a[5] + a[4] * 0.5;
    let dst = out.as_mut();
    for y in 0..h as usize {
        let yin = pil_coord(yo);
        yo += a[4];
        if !(0..i64::from(h)).contains(&yin) {
            continue;
        }
        for (x, xin) in xs.iter().enumerate() {
            if let Some(xin) = xin {
                copy_pixel(
                    src,
                    dst,
                    yin as usize * stride + xin * 3,
                    y * stride + x * 3,
                );
            }
        }
    }
}

/// PIL `ROTATE_180`.
fn rotate_180(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| *img.get_pixel(w - 1 - x, h - 1 - y))
}

/// PIL `ROTATE_90` (counter-clockwise, `ccw = true`) or `ROTATE_270` for a square image.
fn rotate_quarter(img: &RgbImage, ccw: bool) -> RgbImage {
    let (w, h) = img.dimensions();
    // Output is h x w (equal here). ROTATE_90 moves source (x, y) to (y, w - 1 - x).
    RgbImage::from_fn(h, w, |x, y| {
        if ccw {
            *img.get_pixel(w - 1 - y, x)
        } else {
            *img.get_pixel(y, h - 1 - x)
        }
    })
}

/// Draws a torchvision `RandomRotation(degrees)` angle: uniform in `[-degrees, degrees)`, as f32 like
/// `torch.empty(1).uniform_(-d, d)`. Errors unless `degrees` is finite and non-negative.
pub fn random_angle<R: Rng + ?Sized>(degrees: f32, rng: &mut R) -> Result<f32> {
    if !degrees.is_finite() || degrees < 0.0 {
        return Err(AugmentError::InvalidArgument(format!(
            "rotation range must be a finite, non-negative number of degrees, got {degrees}"
        )));
    }
    if degrees == 0.0 {
        return Ok(0.0);
    }
    Ok(rng.random_range(-degrees..degrees))
}

/// torchvision `RandomRotation(degrees)` with NEAREST interpolation, `expand=False` and constant `fill`: rotates
/// by an angle drawn uniformly from `[-degrees, degrees)` (see [`rotate`]). Errors unless `degrees` is finite and
/// non-negative.
///
/// ```
/// use fgvc_augment::transforms::random_rotation;
/// use rand::SeedableRng;
/// let img = image::RgbImage::from_pixel(16, 12, image::Rgb([50, 60, 70]));
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
/// let out = random_rotation(&img, 15.0, [0, 0, 0], &mut rng)?;
/// assert_eq!(out.dimensions(), (16, 12));
/// assert_eq!(out.get_pixel(8, 6), &image::Rgb([50, 60, 70])); // the centre stays inside
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
pub fn random_rotation<R: Rng + ?Sized>(
    img: &RgbImage,
    degrees: f32,
    fill: [u8; 3],
    rng: &mut R,
) -> Result<RgbImage> {
    let angle = random_angle(degrees, rng)?;
    Ok(rotate(img, angle, fill))
}
