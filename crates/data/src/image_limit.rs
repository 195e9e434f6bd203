//! The pixel limit on images, as PIL's `Image.MAX_IMAGE_PIXELS`: the size a file claims is read from its
//! header and checked before a single pixel is decoded, so a tiny hostile file (a "decompression bomb") cannot
//! make any decoder allocate gigabytes. One process-wide setting serves the loader, `verify`, `predict` and
//! the preview alike.

use std::io::{BufRead, BufReader, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{DataError, Result};

/// The default limit: 89,478,485 pixels (about 90 megapixels), PIL's value. The largest image of CUB, Stanford
/// Cars and FGVC-Aircraft is far below it.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 89_478_485;

static MAX_IMAGE_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_IMAGE_PIXELS);

/// Sets the process-wide pixel limit (width x height) of every image decoded from now on. `0` is refused.
///
/// ```
/// fgvc_data::set_max_image_pixels(200_000_000)?;
/// assert_eq!(fgvc_data::max_image_pixels(), 200_000_000);
/// assert!(fgvc_data::set_max_image_pixels(0).is_err());
/// # fgvc_data::set_max_image_pixels(fgvc_data::DEFAULT_MAX_IMAGE_PIXELS)?;
/// # Ok::<(), fgvc_data::DataError>(())
/// ```
pub fn set_max_image_pixels(pixels: u64) -> Result<()> {
    if pixels == 0 {
        return Err(DataError::Config(
            "the image pixel limit (max_image_pixels) must be at least 1".into(),
        ));
    }
    MAX_IMAGE_PIXELS.store(pixels, Ordering::Relaxed);
    Ok(())
}

/// The process-wide pixel limit (see [`set_max_image_pixels`]).
pub fn max_image_pixels() -> u64 {
    MAX_IMAGE_PIXELS.load(Ordering::Relaxed)
}

/// An error when a `width` x `height` image exceeds the limit.
pub(crate) fn check_pixels(path: &Path, width: u32, height: u32) -> Result<()> {
    let limit = max_image_pixels();
    if u64::from(width) * u64::from(height) > limit {
        return Err(DataError::TooManyPixels {
            path: path.to_path_buf(),
            width,
            height,
            limit,
        });
    }
    Ok(())
}

/// The allocation limit a decoder gets for an image within the pixel limit: room for its pixels at 8 bytes
/// each (16-bit RGBA, the widest the decoders produce) plus 64 MiB of metadata. Its sides need no limit of
/// their own: [`check_pixels`] bounds their product.
pub(crate) fn decoder_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(
        max_image_pixels()
            .saturating_mul(8)
            .saturating_add(64 << 20),
    );
    limits
}

/// Reads a JPEG's header through `decoder` and returns the `(width, height)` it claims; no pixel is decoded.
pub(crate) fn jpeg_dimensions<T: zune_core::bytestream::ZByteReaderTrait>(
    decoder: &mut zune_jpeg::JpegDecoder<T>,
    path: &Path,
) -> Result<(u32, u32)> {
    let err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        source: jpeg_error(message),
    };
    decoder
        .decode_headers()
        .map_err(|e| err(format!("{e:?}")))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| err("no image dimensions".into()))?;
    Ok((w as u32, h as u32))
}

/// The `(width, height)` an image claims in its header, read without decoding any pixel (JPEG through
/// zune-jpeg's header parser, PNG through the `image` crate's). `path` is only used in errors.
pub(crate) fn read_dimensions<R: BufRead + Seek>(mut reader: R, path: &Path) -> Result<(u32, u32)> {
    let magic = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
    if magic.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(reader, jpeg_options());
        return jpeg_dimensions(&mut decoder, path);
    }
    let mut reader = image::ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    reader.limits(decoder_limits());
    reader
        .into_dimensions()
        .map_err(|source| DataError::Decode {
            path: path.to_path_buf(),
            source,
        })
}

/// The dimensions that the image file at `path` claims in its header, checked against the pixel limit: what
/// `verify`'s header check runs. Nothing but the header is read.
pub fn check_image_header(path: &Path) -> Result<(u32, u32)> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let (w, h) = read_dimensions(BufReader::new(file), path)?;
    check_pixels(path, w, h)?;
    Ok((w, h))
}

/// zune-jpeg's options for every JPEG: strict (a file cut short is an error, as in PIL), RGB output whatever
/// the file holds (grayscale is expanded, CMYK and YCCK are converted), and JPEG's own 65,535-pixel sides.
pub(crate) fn jpeg_options() -> zune_core::options::DecoderOptions {
    zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(u16::MAX as usize)
        .set_max_height(u16::MAX as usize)
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
}

/// A JPEG decoding error in the `image` crate's error type.
pub(crate) fn jpeg_error(message: String) -> image::ImageError {
    image::ImageError::Decoding(image::error::DecodingError::new(
        image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
        message,
    ))
}
