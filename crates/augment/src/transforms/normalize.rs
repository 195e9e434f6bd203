//! `ToTensor` + `Normalize(mean, std)`: u8 RGB images to normalised CHW floats, and the same map on tensors.
//!
//! PMG normalises with 0.5 / 0.5 (inputs in [-1, 1]); DCL and RMG with the ImageNet statistics, so the constant
//! is part of each method's pipeline.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{AugmentError, Result};

/// Per-channel normalisation `(x / 255 - mean) / std` of torchvision's `ToTensor()` then `Normalize(mean, std)`.
///
/// Deserialises from a preset name (`"imagenet"`, `"half"`) or from a table `{ mean = [..], std = [..] }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Normalize {
    /// Per-channel mean (R, G, B) of pixels scaled to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B); every entry is finite and non-zero.
    pub std: [f32; 3],
}

impl Normalize {
    /// ImageNet statistics, used by DCL, RMG and WS-DAN.
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// mean = std = 0.5, mapping pixels to [-1, 1]: PMG's normalisation.
    pub const HALF: Normalize = Normalize {
        mean: [0.5, 0.5, 0.5],
        std: [0.5, 0.5, 0.5],
    };

    /// Builds a normalisation, checking that the statistics are finite and every std is non-zero.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Result<Self> {
        let n = Normalize { mean, std };
        n.validate()?;
        Ok(n)
    }

    /// The preset called `name` (`"imagenet"` or `"half"`), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "imagenet" => Some(Self::IMAGENET),
            "half" => Some(Self::HALF),
            _ => None,
        }
    }

    /// Checks that the statistics are finite and every std is non-zero.
    pub fn validate(&self) -> Result<()> {
        let ok = self.mean.iter().all(|m| m.is_finite())
            && self.std.iter().all(|s| s.is_finite() && *s != 0.0);
        if ok {
            Ok(())
        } else {
            Err(AugmentError::InvalidArgument(format!(
                "normalisation needs finite mean and finite non-zero std, got mean {:?} std {:?}",
                self.mean, self.std
            )))
        }
    }

    /// The 3 x 256 table of normalised values: `lut[c][v] = (v / 255 - mean[c]) / std[c]`, computed in f32 with
    /// the same operations as torchvision (`div(255)`, `sub_(mean)`, `div_(std)`), so values are bit-identical.
    pub fn lut(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        lut
    }

    /// `ToTensor` + `Normalize` into a new CHW buffer of `3 * height * width` floats (channel-major: all R, then
    /// all G, then all B).
    ///
    /// ```
    /// use fgvc_augment::transforms::Normalize;
    /// let img = image::RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 51]));
    /// let chw = Normalize::HALF.to_chw(&img);
    /// assert_eq!(chw, vec![1.0, 1.0, -1.0, -1.0, -0.6, -0.6]);
    /// ```
    pub fn to_chw(&self, img: &RgbImage) -> Vec<f32> {
        let mut out = vec![0f32; img.as_raw().len()];
        self.write_chw_unchecked(img, &mut out);
        out
    }

    /// Like [`Normalize::to_chw`] but writes into `out`, which must hold exactly `3 * height * width` floats
    /// (e.g. one image's slot in a batch buffer).
    pub fn write_chw(&self, img: &RgbImage, out: &mut [f32]) -> Result<()> {
        if out.len() != img.as_raw().len() {
            return Err(AugmentError::InvalidArgument(format!(
                "CHW output holds {} floats but a {}x{} RGB image needs {}",
                out.len(),
                img.height(),
                img.width(),
                img.as_raw().len()
            )));
        }
        self.write_chw_unchecked(img, out);
        Ok(())
    }

    fn write_chw_unchecked(&self, img: &RgbImage, out: &mut [f32]) {
        let lut = self.lut();
        let plane = img.width() as usize * img.height() as usize;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let pixels = img.as_raw().chunks_exact(3);
        for (((px, r), g), b) in pixels.zip(r).zip(g).zip(b) {
            *r = lut[0][px[0] as usize];
            *g = lut[1][px[1] as usize];
            *b = lut[2][px[2] as usize];
        }
    }

    /// `ToTensor` + `Normalize` as an f32 tensor of shape (3, height, width) on `device`.
    ///
    /// ```
    /// use fgvc_augment::transforms::Normalize;
    /// let img = image::RgbImage::new(4, 3);
    /// let t = Normalize::IMAGENET.to_tensor(&img, &candle_core::Device::Cpu)?;
    /// assert_eq!(t.dims(), &[3, 3, 4]);
    /// # Ok::<(), fgvc_augment::AugmentError>(())
    /// ```
    pub fn to_tensor(&self, img: &RgbImage, device: &Device) -> Result<Tensor> {
        let (w, h) = img.dimensions();
        Ok(Tensor::from_vec(
            self.to_chw(img),
            (3, h as usize, w as usize),
            device,
        )?)
    }

    /// Maps pixels in [0, 1] to normalised values, `(x - mean) / std`, on a float CHW or NCHW tensor on any
    /// device (broadcast ops only). Errors on another rank, a channel dimension other than 3, or an integer dtype.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use fgvc_augment::transforms::Normalize;
    /// let x = Tensor::ones((2, 3, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
    /// let y = Normalize::HALF.normalize_tensor(&x)?;
    /// assert_eq!(y.flatten_all()?.max(0)?.to_scalar::<f32>()?, 1.0);
    /// let back = Normalize::HALF.denormalize_tensor(&y)?;
    /// assert_eq!(back.flatten_all()?.min(0)?.to_scalar::<f32>()?, 1.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn normalize_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.stat_tensors(x)?;
        Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?)
    }

    /// Inverse of [`Normalize::normalize_tensor`]: `x * std + mean`, back to pixels in [0, 1] (for previews or
    /// for destructions that must see pixel values). Same shape rules.
    pub fn denormalize_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.stat_tensors(x)?;
        Ok(x.broadcast_mul(&std)?.broadcast_add(&mean)?)
    }

    /// Mean and std as tensors of `x`'s dtype and device, shaped to broadcast against `x`'s channel dimension.
    fn stat_tensors(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let shape: &[usize] = match x.rank() {
            3 => &[3, 1, 1],
            4 => &[1, 3, 1, 1],
            r => {
                return Err(AugmentError::BadTensor(format!(
                    "normalisation needs a CHW or NCHW tensor, got rank {r} with shape {:?}",
                    x.dims()
                )))
            }
        };
        let channel_dim = x.rank() - 3;
        if x.dims()[channel_dim] != 3 {
            return Err(AugmentError::BadTensor(format!(
                "normalisation needs 3 channels, got shape {:?}",
                x.dims()
            )));
        }
        if !x.dtype().is_float() {
            return Err(AugmentError::BadTensor(format!(
                "normalisation needs a float tensor, got {:?}",
                x.dtype()
            )));
        }
        let make = |v: &[f32; 3]| -> Result<Tensor> {
            let t = Tensor::from_slice(v, shape, x.device())?;
            Ok(if x.dtype() == DType::F32 {
                t
            } else {
                t.to_dtype(x.dtype())?
            })
        };
        Ok((make(&self.mean)?, make(&self.std)?))
    }
}

/// The explicit table form of [`Normalize`] in configuration files.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NormalizeTable {
    mean: [f32; 3],
    std: [f32; 3],
}

impl<'de> Deserialize<'de> for Normalize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct NormalizeVisitor;

        impl<'de> Visitor<'de> for NormalizeVisitor {
            type Value = Normalize;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    r#"a preset name ("imagenet" or "half") or a table with `mean` and `std`"#,
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Normalize, E> {
                Normalize::from_name(v).ok_or_else(|| E::unknown_variant(v, &["imagenet", "half"]))
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Normalize, A::Error> {
                let t = NormalizeTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Normalize::new(t.mean, t.std).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_any(NormalizeVisitor)
    }
}
