//! The [`Dataset`] trait, the [`Sample`] record that file-based datasets are made of, and [`SampleSet`], the
//! one implementation that CUB, Stanford Cars, FGVC-Aircraft and image folders all produce.

use std::fmt;
use std::io::{Cursor, ErrorKind};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::image_limit;

/// Which part of a dataset: the training set, a held-out validation set, or the test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training images (minus the validation hold-out when one is requested).
    Train,
    /// Held-out validation images, for model selection without touching the test set.
    Val,
    /// The official test images.
    Test,
}

impl Split {
    /// All splits, in the order train, val, test.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// Lower-case name: `train`, `val` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(DataError::Config(format!(
                "unknown split {other:?}: expected train, val or test"
            ))),
        }
    }
}

/// An axis-aligned box in pixels, top-left origin, as `x, y, width, height` (CUB's convention).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
}

impl BBox {
    /// The pixel rectangle `(x, y, w, h)` of this box clipped to a `width` x `height` image, or `None` when
    /// nothing of it is inside. Edges are rounded outwards so the box's content is never cut.
    pub fn clip(&self, width: u32, height: u32) -> Option<(u32, u32, u32, u32)> {
        let x0 = self.x.floor().max(0.0);
        let y0 = self.y.floor().max(0.0);
        let x1 = (self.x + self.width).ceil().min(width as f32);
        let y1 = (self.y + self.height).ceil().min(height as f32);
        if !(x1 > x0 && y1 > y0) {
            return None;
        }
        Some((x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32))
    }
}

/// Where a sample's pixels come from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// An image file (JPEG or PNG), decoded on demand.
    Path(PathBuf),
    /// An image already in memory.
    Memory(Arc<RgbImage>),
}

impl ImageSource {
    /// A short description for messages: the path, or `<in-memory WxH>`.
    pub fn describe(&self) -> String {
        match self {
            ImageSource::Path(p) => p.display().to_string(),
            ImageSource::Memory(img) => {
                format!("<in-memory {}x{} image>", img.width(), img.height())
            }
        }
    }
}

/// One labelled image of a file-based dataset.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The image.
    pub source: ImageSource,
    /// The class, 0-based.
    pub label: u32,
    /// The object's bounding box, when the dataset has one.
    pub bbox: Option<BBox>,
}

/// A labelled image dataset: a fixed number of samples, each an RGB image and a 0-based class label.
///
/// Implementations must be cheap to query and safe to load from several threads at once; [`crate::Loader`]
/// calls [`Dataset::load`] from its worker pool.
pub trait Dataset: Send + Sync {
    /// A short name for messages, e.g. `CUB-200-2011 (train)`.
    fn name(&self) -> &str;
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names, indexed by label.
    fn class_names(&self) -> &[String];
    /// Number of classes.
    fn num_classes(&self) -> usize {
        self.class_names().len()
    }
    /// The label of sample `index`.
    ///
    /// # Panics
    /// When `index >= self.len()`.
    fn label(&self, index: usize) -> u32;
    /// Decode (or render) sample `index` as RGB, with any dataset-specific cropping (Aircraft's banner, an
    /// optional bounding-box crop) already applied. Errors name the file.
    fn load(&self, index: usize) -> Result<RgbImage>;
    /// A description of sample `index` for messages: its file, or what it is.
    fn describe(&self, index: usize) -> String;
    /// The file sample `index` is decoded from, when it comes from a file.
    fn source_path(&self, index: usize) -> Option<PathBuf> {
        let _ = index;
        None
    }
    /// All labels, in index order.
    fn labels(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.label(i)).collect()
    }
    /// Number of samples of each class.
    fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes()];
        for i in 0..self.len() {
            let l = self.label(i) as usize;
            if l >= counts.len() {
                counts.resize(l + 1, 0);
            }
            counts[l] += 1;
        }
        counts
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn class_names(&self) -> &[String] {
        (**self).class_names()
    }
    fn label(&self, index: usize) -> u32 {
        (**self).label(index)
    }
    fn load(&self, index: usize) -> Result<RgbImage> {
        (**self).load(index)
    }
    fn describe(&self, index: usize) -> String {
        (**self).describe(index)
    }
    fn source_path(&self, index: usize) -> Option<PathBuf> {
        (**self).source_path(index)
    }
}

/// Decode an image file to 8-bit RGB: JPEG or PNG, whatever the file's extension says; grayscale, CMYK,
/// 16-bit and alpha images become plain RGB (alpha is dropped, as PIL's `convert("RGB")` does).
///
/// A missing file is [`DataError::MissingImage`]; an unreadable one [`DataError::Io`]; a corrupt or truncated
/// one [`DataError::Decode`]; one larger than the pixel limit [`DataError::TooManyPixels`]. All name the file. See [`decode_bytes`].
pub fn decode_image(path: &Path, dataset: &str) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => DataError::MissingImage {
            dataset: dataset.to_string(),
            path: path.to_path_buf(),
        },
        _ => DataError::io(path, e),
    })?;
    decode_bytes(&bytes, path)
}

/// Decode image bytes (JPEG or PNG, detected from the content) to RGB; `path` is only used in errors.
///
/// The size the header claims is checked against the pixel limit ([`crate::set_max_image_pixels`]) before
/// anything is decoded: a larger image is [`DataError::TooManyPixels`], and no decoder may allocate more
/// than an image within the limit needs.
///
/// JPEGs are decoded strictly: a file cut short (a partial download) is an error, as in PIL, rather than an
/// image padded with grey. A JPEG that lacks only its end-of-image marker still decodes, as in PIL. EXIF
/// orientation is ignored, as PIL and torchvision do.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let decode_err = |source| DataError::Decode {
        path: path.to_path_buf(),
        source,
    };
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(bytes, path);
    }
    // One reader: its decoder reports the header's size, which is checked before any pixel is decoded.
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    reader.limits(image_limit::decoder_limits());
    let decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    image_limit::check_pixels(path, width, height)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    Ok(img.into_rgb8())
}

fn decode_jpeg(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    let err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        source: image_limit::jpeg_error(message),
    };
    let mut decoder =
        zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), image_limit::jpeg_options());
    // The header first: its claimed size is checked before the pixels are allocated.
    let (w, h) = image_limit::jpeg_dimensions(&mut decoder, path)?;
    image_limit::check_pixels(path, w, h)?;
    let pixels = decoder.decode().map_err(|e| err(format!("{e:?}")))?;
    let colorspace = decoder.output_colorspace().unwrap_or(ColorSpace::RGB);
    if colorspace != ColorSpace::RGB {
        return Err(err(format!(
            "decoder produced {colorspace:?} instead of RGB"
        )));
    }
    RgbImage::from_raw(w, h, pixels).ok_or_else(|| {
        err(format!(
            "decoder returned the wrong number of bytes for {w}x{h}"
        ))
    })
}

/// How a [`SampleSet`] crops a decoded image before handing it out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CropPolicy {
    /// Rows removed from the bottom of every image (FGVC-Aircraft's 20-pixel copyright banner).
    pub bottom_rows: u32,
    /// Crop to the sample's bounding box when it has one (applied after `bottom_rows`).
    pub bbox: bool,
}

/// A list of labelled samples with class names: what every file-based dataset opens into.
#[derive(Debug, Clone)]
pub struct SampleSet {
    name: String,
    class_names: Arc<Vec<String>>,
    samples: Vec<Sample>,
    crop: CropPolicy,
}

impl SampleSet {
    /// A set named `name` with the given class names and samples; every label must be a valid class index.
    pub fn new(
        name: impl Into<String>,
        class_names: Vec<String>,
        samples: Vec<Sample>,
    ) -> Result<Self> {
        let name = name.into();
        if let Some(s) = samples
            .iter()
            .find(|s| s.label as usize >= class_names.len())
        {
            return Err(DataError::Config(format!(
                "{name}: sample {} has label {} but there are only {} classes",
                s.source.describe(),
                s.label,
                class_names.len()
            )));
        }
        Ok(SampleSet {
            name,
            class_names: Arc::new(class_names),
            samples,
            crop: CropPolicy::default(),
        })
    }

    /// Set the crop policy.
    pub fn with_crop(mut self, crop: CropPolicy) -> Self {
        self.crop = crop;
        self
    }

    /// The crop policy.
    pub fn crop(&self) -> CropPolicy {
        self.crop
    }

    /// Rename the set (used to append the split to the dataset's name).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The samples at `indices`, in that order, sharing the class names and crop policy.
    ///
    /// # Panics
    /// When an index is out of range.
    pub fn subset(&self, indices: &[usize], name: impl Into<String>) -> SampleSet {
        SampleSet {
            name: name.into(),
            class_names: Arc::clone(&self.class_names),
            samples: indices.iter().map(|&i| self.samples[i].clone()).collect(),
            crop: self.crop,
        }
    }

    /// The paths of all file-backed samples.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.samples.iter().filter_map(|s| match &s.source {
            ImageSource::Path(p) => Some(p.as_path()),
            ImageSource::Memory(_) => None,
        })
    }

    fn apply_crop(&self, img: RgbImage, bbox: Option<BBox>) -> RgbImage {
        let mut img = img;
        if self.crop.bottom_rows > 0 && img.height() > self.crop.bottom_rows {
            let h = img.height() - self.crop.bottom_rows;
            img = image::imageops::crop_imm(&img, 0, 0, img.width(), h).to_image();
        }
        if self.crop.bbox {
            if let Some((x, y, w, h)) = bbox.and_then(|b| b.clip(img.width(), img.height())) {
                img = image::imageops::crop_imm(&img, x, y, w, h).to_image();
            }
        }
        img
    }
}

impl Dataset for SampleSet {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn label(&self, index: usize) -> u32 {
        self.samples[index].label
    }
    fn load(&self, index: usize) -> Result<RgbImage> {
        let sample = self.samples.get(index).ok_or_else(|| {
            DataError::Config(format!(
                "{}: index {index} out of range ({} samples)",
                self.name,
                self.samples.len()
            ))
        })?;
        let img = match &sample.source {
            ImageSource::Path(p) => decode_image(p, &self.name)?,
            ImageSource::Memory(img) => (**img).clone(),
        };
        Ok(self.apply_crop(img, sample.bbox))
    }
    fn describe(&self, index: usize) -> String {
        self.samples
            .get(index)
            .map(|s| s.source.describe())
            .unwrap_or_else(|| format!("<index {index}>"))
    }
    fn source_path(&self, index: usize) -> Option<PathBuf> {
        match &self.samples.get(index)?.source {
            ImageSource::Path(p) => Some(p.clone()),
            ImageSource::Memory(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_clip_rounds_outwards_and_clips() {
        let b = BBox {
            x: 1.5,
            y: 2.2,
            width: 3.0,
            height: 100.0,
        };
        assert_eq!(b.clip(10, 10), Some((1, 2, 4, 8)));
        let outside = BBox {
            x: 20.0,
            y: 0.0,
            width: 3.0,
            height: 3.0,
        };
        assert_eq!(outside.clip(10, 10), None);
    }

    #[test]
    fn split_parses_and_prints() {
        for s in Split::ALL {
            assert_eq!(s.as_str().parse::<Split>().unwrap(), s);
        }
        assert_eq!("validation".parse::<Split>().unwrap(), Split::Val);
        assert!("dev".parse::<Split>().is_err());
    }

    #[test]
    fn labels_out_of_range_are_rejected() {
        let s = Sample {
            source: ImageSource::Memory(Arc::new(RgbImage::new(2, 2))),
            label: 3,
            bbox: None,
        };
        assert!(SampleSet::new("t", vec!["a".into(), "b".into()], vec![s]).is_err());
    }

    #[test]
    fn crops_banner_then_bbox() {
        let mut img = RgbImage::new(10, 30);
        img.put_pixel(2, 3, image::Rgb([255, 0, 0]));
        let s = Sample {
            source: ImageSource::Memory(Arc::new(img)),
            label: 0,
            bbox: Some(BBox {
                x: 2.0,
                y: 3.0,
                width: 4.0,
                height: 50.0,
            }),
        };
        let set = SampleSet::new("t", vec!["a".into()], vec![s]).unwrap();
        assert_eq!(set.load(0).unwrap().dimensions(), (10, 30));
        let banner = set.clone().with_crop(CropPolicy {
            bottom_rows: 20,
            bbox: false,
        });
        assert_eq!(banner.load(0).unwrap().dimensions(), (10, 10));
        let both = set.with_crop(CropPolicy {
            bottom_rows: 20,
            bbox: true,
        });
        let out = both.load(0).unwrap();
        assert_eq!(out.dimensions(), (4, 7));
        assert_eq!(out.get_pixel(0, 0), &image::Rgb([255, 0, 0]));
    }
}
