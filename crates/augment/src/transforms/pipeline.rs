//! Configurable transform pipelines and the train/test presets of the official PMG, DCL and RMG code.
//!
//! A [`Pipeline`] is a list of geometric [`Transform`]s on u8 images followed by a [`Normalize`]; both
//! deserialise from configuration files, and all randomness comes from the caller's RNG.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::crop::{center_crop, center_crop_offsets, random_crop, random_crop_offsets};
use super::flip::random_horizontal_flip;
use super::normalize::Normalize;
use super::resize::{resize, resize_and_crop, shorter_side_size, ResizeFilter};
use super::rotate::random_rotation;
use crate::{AugmentError, Result};

fn default_flip_p() -> f32 {
    0.5
}

/// One geometric step of a [`Pipeline`], each the torchvision transform of the same name.
///
/// Configuration form: a table tagged by `op` in snake case; unknown fields are errors, e.g.
/// `{ "op": "random_crop", "height": 448, "width": 448, "padding": 8 }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// `Resize((height, width))`: aspect ratio not kept. See [`resize`].
    Resize {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
        /// Resampling filter (default bilinear, torchvision's default).
        #[serde(default)]
        filter: ResizeFilter,
    },
    /// `Resize(size)`: the shorter side becomes `size`, aspect ratio kept. See [`super::resize_shorter`].
    ResizeShorter {
        /// Length of the shorter side after resizing.
        size: u32,
        /// Resampling filter (default bilinear).
        #[serde(default)]
        filter: ResizeFilter,
    },
    /// `RandomCrop((height, width), padding)`: zero padding on every side, then a uniform random window.
    /// See [`random_crop`].
    RandomCrop {
        /// Crop height.
        height: u32,
        /// Crop width.
        width: u32,
        /// Zero padding added on each side before cropping (default 0).
        #[serde(default)]
        padding: u32,
    },
    /// `CenterCrop((height, width))`. See [`center_crop`].
    CenterCrop {
        /// Crop height.
        height: u32,
        /// Crop width.
        width: u32,
    },
    /// `RandomHorizontalFlip(p)`. See [`random_horizontal_flip`].
    HorizontalFlip {
        /// Probability of flipping (default 0.5).
        #[serde(default = "default_flip_p")]
        p: f32,
    },
    /// `RandomRotation(degrees)` with NEAREST resampling, `expand=False` and black fill. See [`random_rotation`].
    RandomRotation {
        /// The angle is drawn uniformly from `[-degrees, degrees)`.
        degrees: f32,
    },
}

impl Transform {
    /// Applies this step to `img`, drawing any randomness from `rng`.
    ///
    /// ```
    /// use fgvc_augment::transforms::{ResizeFilter, Transform};
    /// use rand::SeedableRng;
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    /// let step = Transform::Resize { height: 20, width: 30, filter: ResizeFilter::Bilinear };
    /// let out = step.apply(image::RgbImage::new(64, 48), &mut rng)?;
    /// assert_eq!(out.dimensions(), (30, 20));
    /// # Ok::<(), fgvc_augment::AugmentError>(())
    /// ```
    pub fn apply<R: Rng + ?Sized>(&self, img: RgbImage, rng: &mut R) -> Result<RgbImage> {
        match *self {
            Transform::Resize {
                height,
                width,
                filter,
            } => {
                if img.dimensions() == (width, height) {
                    Ok(img)
                } else {
                    resize(&img, height, width, filter)
                }
            }
            Transform::ResizeShorter { size, filter } => {
                let (h, w) = shorter_side_size((img.height(), img.width()), size)?;
                if img.dimensions() == (w, h) {
                    Ok(img)
                } else {
                    resize(&img, h, w, filter)
                }
            }
            Transform::RandomCrop {
                height,
                width,
                padding,
            } => random_crop(&img, height, width, padding, rng),
            Transform::CenterCrop { height, width } => {
                if img.dimensions() == (width, height) {
                    Ok(img)
                } else {
                    center_crop(&img, height, width)
                }
            }
            Transform::HorizontalFlip { p } => random_horizontal_flip(img, p, rng),
            Transform::RandomRotation { degrees } => random_rotation(&img, degrees, [0; 3], rng),
        }
    }

    /// The `(height, width)` this step produces from an input of `(height, width)`, without touching pixels.
    /// Errors where [`Transform::apply`] would error for any image of that size.
    pub fn output_size(&self, input: (u32, u32)) -> Result<(u32, u32)> {
        match *self {
            Transform::Resize { height, width, .. } => {
                if height == 0 || width == 0 {
                    return Err(AugmentError::InvalidArgument(format!(
                        "cannot resize to an empty {height}x{width} image"
                    )));
                }
                Ok((height, width))
            }
            Transform::ResizeShorter { size, .. } => shorter_side_size(input, size),
            Transform::RandomCrop {
                height,
                width,
                padding,
            } => {
                let fits = |size: u32, crop: u32| {
                    u64::from(size) + 2 * u64::from(padding) >= u64::from(crop)
                };
                if height == 0 || width == 0 || !fits(input.0, height) || !fits(input.1, width) {
                    return Err(AugmentError::InvalidArgument(format!(
                        "random crop of {height}x{width} does not fit a {}x{} image padded by {padding}",
                        input.0, input.1
                    )));
                }
                Ok((height, width))
            }
            Transform::CenterCrop { height, width } => {
                if height == 0 || width == 0 {
                    return Err(AugmentError::InvalidArgument(format!(
                        "crop size must be positive, got {height}x{width}"
                    )));
                }
                Ok((height, width))
            }
            Transform::HorizontalFlip { .. } | Transform::RandomRotation { .. } => Ok(input),
        }
    }

    /// Checks the parameters that do not depend on the image: positive sizes, `0 <= p <= 1`, finite
    /// non-negative rotation range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(AugmentError::InvalidArgument(msg));
        match *self {
            Transform::Resize { height, width, .. }
            | Transform::RandomCrop { height, width, .. }
            | Transform::CenterCrop { height, width } => {
                if height == 0 || width == 0 {
                    return bad(format!("{self:?}: sizes must be positive"));
                }
            }
            Transform::ResizeShorter { size, .. } => {
                if size == 0 {
                    return bad(format!("{self:?}: size must be positive"));
                }
            }
            Transform::HorizontalFlip { p } => {
                if !(0.0..=1.0).contains(&p) {
                    return bad(format!("{self:?}: p must be in [0, 1]"));
                }
            }
            Transform::RandomRotation { degrees } => {
                if !degrees.is_finite() || degrees < 0.0 {
                    return bad(format!("{self:?}: degrees must be finite and non-negative"));
                }
            }
        }
        Ok(())
    }
}

/// A train or test pipeline: geometric [`Transform`]s in order, then `ToTensor` + [`Normalize`].
///
/// [`Pipeline::apply`] runs the geometric part only (DCL destroys the image between the two), [`Pipeline::run`]
/// the whole thing. Configuration form (JSON shown; TOML is the same shape):
///
/// ```
/// use fgvc_augment::transforms::{Normalize, Pipeline};
/// let json = r#"{
///   "steps": [
///     { "op": "resize", "height": 550, "width": 550 },
///     { "op": "random_crop", "height": 448, "width": 448, "padding": 8 },
///     { "op": "horizontal_flip" }
///   ],
///   "normalize": "half"
/// }"#;
/// let p: Pipeline = serde_json::from_str(json).unwrap();
/// assert_eq!(p, Pipeline::pmg_train());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Geometric steps, applied in order to the decoded image.
    pub steps: Vec<Transform>,
    /// Normalisation applied after `ToTensor`.
    pub normalize: Normalize,
}

impl Pipeline {
    /// A pipeline of `steps` followed by `normalize`.
    pub fn new(steps: Vec<Transform>, normalize: Normalize) -> Self {
        Pipeline { steps, normalize }
    }

    /// Checks every step's image-independent parameters and the normalisation.
    pub fn validate(&self) -> Result<()> {
        self.steps.iter().try_for_each(Transform::validate)?;
        self.normalize.validate()
    }

    /// Runs the geometric steps on `img`, drawing randomness from `rng` (same seed, same output).
    ///
    /// A `Resize` directly followed by a `RandomCrop` or `CenterCrop` is run as one [`resize_and_crop`], which
    /// resamples only the crop window; the output and the RNG draws are exactly those of the two steps in turn.
    pub fn apply<R: Rng + ?Sized>(&self, img: RgbImage, rng: &mut R) -> Result<RgbImage> {
        let mut img = img;
        let mut i = 0;
        while i < self.steps.len() {
            if let Some(fused) = self.fused_resize_crop(i, &img, rng)? {
                img = fused;
                i += 2;
            } else {
                img = self.steps[i].apply(img, rng)?;
                i += 1;
            }
        }
        Ok(img)
    }

    /// Steps `i` and `i + 1` as one [`resize_and_crop`] when they are a real resize then a crop.
    fn fused_resize_crop<R: Rng + ?Sized>(
        &self,
        i: usize,
        img: &RgbImage,
        rng: &mut R,
    ) -> Result<Option<RgbImage>> {
        let (
            Some(&Transform::Resize {
                height,
                width,
                filter,
            }),
            Some(next),
        ) = (self.steps.get(i), self.steps.get(i + 1))
        else {
            return Ok(None);
        };
        if img.dimensions() == (width, height) || height == 0 || width == 0 {
            return Ok(None);
        }
        let (top, left, crop) = match *next {
            Transform::RandomCrop {
                height: ch,
                width: cw,
                padding,
            } => {
                let (t, l) = random_crop_offsets((height, width), ch, cw, padding, rng)?;
                let pad = i64::from(padding);
                (i64::from(t) - pad, i64::from(l) - pad, (ch, cw))
            }
            Transform::CenterCrop {
                height: ch,
                width: cw,
            } => {
                let (t, l) = center_crop_offsets((height, width), ch, cw);
                (t, l, (ch, cw))
            }
            _ => return Ok(None),
        };
        resize_and_crop(img, (height, width), filter, (top, left), crop).map(Some)
    }

    /// Runs the whole pipeline: the geometric steps, then `ToTensor` + normalisation into a CHW buffer of
    /// `3 * height * width` floats.
    ///
    /// ```
    /// use fgvc_augment::transforms::Pipeline;
    /// use rand::SeedableRng;
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    /// let pipeline = Pipeline::pmg_train_at(64, 48);
    /// let img = image::RgbImage::from_fn(100, 75, |x, y| image::Rgb([x as u8, y as u8, 128]));
    /// let chw = pipeline.run(img, &mut rng)?;
    /// assert_eq!(chw.len(), 3 * 48 * 48);
    /// assert!(chw.iter().all(|v| (-1.0..=1.0).contains(v)));
    /// # Ok::<(), fgvc_augment::AugmentError>(())
    /// ```
    pub fn run<R: Rng + ?Sized>(&self, img: RgbImage, rng: &mut R) -> Result<Vec<f32>> {
        let out = self.apply(img, rng)?;
        Ok(self.normalize.to_chw(&out))
    }

    /// Like [`Pipeline::run`] but writes the CHW values into `out` (e.g. one image's slot of a batch buffer), which
    /// must hold exactly `3 * height * width` floats of the output size. Returns that `(height, width)`.
    pub fn run_into<R: Rng + ?Sized>(
        &self,
        img: RgbImage,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<(u32, u32)> {
        let img = self.apply(img, rng)?;
        self.normalize.write_chw(&img, out)?;
        Ok((img.height(), img.width()))
    }

    /// The `(height, width)` of the output for an input of `(height, width)`, computed from the steps alone.
    /// Errors where [`Pipeline::apply`] would error for any image of that size.
    ///
    /// ```
    /// use fgvc_augment::transforms::Pipeline;
    /// assert_eq!(Pipeline::dcl_train().output_size((375, 500))?, (448, 448));
    /// # Ok::<(), fgvc_augment::AugmentError>(())
    /// ```
    pub fn output_size(&self, input: (u32, u32)) -> Result<(u32, u32)> {
        self.steps
            .iter()
            .try_fold(input, |size, step| step.output_size(size))
    }

    /// PMG training (official `train.py`): `Resize((550, 550))` bilinear, `RandomCrop(448, padding=8)`,
    /// `RandomHorizontalFlip()`, `Normalize(0.5, 0.5)`.
    pub fn pmg_train() -> Self {
        Self::pmg_train_at(550, 448)
    }

    /// PMG testing: `Resize((550, 550))`, `CenterCrop(448)`, `Normalize(0.5, 0.5)`.
    pub fn pmg_test() -> Self {
        Self::pmg_test_at(550, 448)
    }

    /// DCL training (`config.py::load_data_transformers`): `Resize((512, 512))`, `RandomRotation(15)` (nearest,
    /// black fill), `RandomCrop(448)`, `RandomHorizontalFlip()`, ImageNet normalisation. The DCL swap goes
    /// between [`Pipeline::apply`] and the normalisation.
    pub fn dcl_train() -> Self {
        Self::dcl_train_at(512, 448)
    }

    /// DCL testing: `Resize((512, 512))`, `CenterCrop(448)`, ImageNet normalisation.
    pub fn dcl_test() -> Self {
        Self::dcl_test_at(512, 448)
    }

    /// RMG-PMSI training (`main.py`): `Resize((512, 512))`, `RandomCrop(448)` without padding,
    /// `RandomHorizontalFlip()`, ImageNet normalisation.
    pub fn rmg_train() -> Self {
        Self::rmg_train_at(512, 448)
    }

    /// RMG-PMSI testing: the same as [`Pipeline::dcl_test`].
    pub fn rmg_test() -> Self {
        Self::rmg_test_at(512, 448)
    }

    /// [`Pipeline::pmg_train`] at another scale: resize to `resize` x `resize`, crop `crop` x `crop`. The crop
    /// padding scales with the crop, `round(8 * crop / 448)`, so it is 8 at 448 and 1 at 64.
    pub fn pmg_train_at(resize: u32, crop: u32) -> Self {
        let padding = ((8 * u64::from(crop) + 224) / 448) as u32;
        Pipeline::new(
            vec![
                square_resize(resize),
                Transform::RandomCrop {
                    height: crop,
                    width: crop,
                    padding,
                },
                Transform::HorizontalFlip { p: 0.5 },
            ],
            Normalize::HALF,
        )
    }

    /// [`Pipeline::pmg_test`] at another scale.
    pub fn pmg_test_at(resize: u32, crop: u32) -> Self {
        Pipeline::new(vec![square_resize(resize), center(crop)], Normalize::HALF)
    }

    /// [`Pipeline::dcl_train`] at another scale (the rotation range stays 15 degrees).
    pub fn dcl_train_at(resize: u32, crop: u32) -> Self {
        Pipeline::new(
            vec![
                square_resize(resize),
                Transform::RandomRotation { degrees: 15.0 },
                Transform::RandomCrop {
                    height: crop,
                    width: crop,
                    padding: 0,
                },
                Transform::HorizontalFlip { p: 0.5 },
            ],
            Normalize::IMAGENET,
        )
    }

    /// [`Pipeline::dcl_test`] at another scale.
    pub fn dcl_test_at(resize: u32, crop: u32) -> Self {
        Pipeline::new(
            vec![square_resize(resize), center(crop)],
            Normalize::IMAGENET,
        )
    }

    /// [`Pipeline::rmg_train`] at another scale.
    pub fn rmg_train_at(resize: u32, crop: u32) -> Self {
        Pipeline::new(
            vec![
                square_resize(resize),
                Transform::RandomCrop {
                    height: crop,
                    width: crop,
                    padding: 0,
                },
                Transform::HorizontalFlip { p: 0.5 },
            ],
            Normalize::IMAGENET,
        )
    }

    /// [`Pipeline::rmg_test`] at another scale.
    pub fn rmg_test_at(resize: u32, crop: u32) -> Self {
        Self::dcl_test_at(resize, crop)
    }
}

fn square_resize(size: u32) -> Transform {
    Transform::Resize {
        height: size,
        width: size,
        filter: ResizeFilter::Bilinear,
    }
}

fn center(size: u32) -> Transform {
    Transform::CenterCrop {
        height: size,
        width: size,
    }
}
