//! Test-time augmentation: a method's predictions averaged over views of each image, reported as named
//! predictions of their own (`concat+flip`) next to the plain ones.
//!
//! * `flip`: the image and its mirror.
//! * `multicrop`: CAL's protocol, the centre and the four corner crops of the resized image (torchvision's
//!   `FiveCrop`), each also mirrored: ten views.
//!
//! Views are averaged as logits, as CAL's evaluation averages its views' outputs. The views are cut from one
//! decoded, resized batch, so the centre view is exactly the plain evaluation's input.

use std::str::FromStr;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use fgvc_augment::transforms::{center_crop_offsets, Pipeline, Transform};
use fgvc_data::Dataset;

use super::{evaluate_by, EvalReport};
use crate::config::geometry::fixed_size;
use crate::config::Config;
use crate::data::eval_loader;
use crate::error::{Result, TrainError};
use crate::method::{Method, Predictions};

/// A test-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tta {
    /// The image and its horizontal mirror.
    Flip,
    /// The centre and four corner crops of the resized image, each also mirrored.
    MultiCrop,
}

impl Tta {
    /// Every augmentation, in the order reports list them.
    pub const ALL: [Tta; 2] = [Tta::Flip, Tta::MultiCrop];

    /// The name used on the command line and as the suffix of its predictions (`logits+flip`).
    pub fn name(self) -> &'static str {
        match self {
            Tta::Flip => "flip",
            Tta::MultiCrop => "multicrop",
        }
    }
}

impl FromStr for Tta {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        Tta::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            TrainError::Msg(format!(
                "unknown test-time augmentation {s:?} (known: flip, multicrop)"
            ))
        })
    }
}

/// The test pipeline without its final centre crop, and that crop's `(height, width)`: multicrop cuts its
/// five windows from the image the crop would have been cut from.
fn uncropped(test: &Pipeline) -> Result<(Pipeline, (usize, usize))> {
    let refuse = |why: &str| {
        TrainError::Msg(format!(
            "--tta multicrop needs a test pipeline that ends in a centre crop of a fixed-size image; {why}"
        ))
    };
    let Some(Transform::CenterCrop { height, width }) = test.steps.last() else {
        return Err(refuse("this one does not end in a centre crop"));
    };
    let mut stripped = test.clone();
    stripped.steps.pop();
    let Some((h, w)) = fixed_size(&stripped) else {
        return Err(refuse("the image before its crop has no fixed size"));
    };
    if *height > h || *width > w {
        return Err(refuse(&format!(
            "its {height}x{width} crop is larger than the {h}x{w} image it is cut from"
        )));
    }
    Ok((stripped, (*height as usize, *width as usize)))
}

/// A `(height, width)` window of `images` `(N, 3, H, W)` at `(top, left)`.
fn window(images: &Tensor, (top, left): (usize, usize), (h, w): (usize, usize)) -> Result<Tensor> {
    Ok(images.narrow(2, top, h)?.narrow(3, left, w)?.contiguous()?)
}

/// torchvision's `FiveCrop` offsets `(top, left)` of a `crop` in an image of `size`: the four corners, then
/// the centre.
fn five_crops((h, w): (usize, usize), crop: (usize, usize)) -> [(usize, usize); 5] {
    let (ct, cl) = center_crop_offsets((h as u32, w as u32), crop.0 as u32, crop.1 as u32);
    let (bottom, right) = (h - crop.0, w - crop.1);
    [
        (0, 0),
        (0, right),
        (bottom, 0),
        (bottom, right),
        (ct as usize, cl as usize),
    ]
}

/// Sums the logits of every named prediction of `method` over `views` and their mirrors, in order.
fn summed_logits(method: &dyn Method, views: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut sums: Option<Vec<Tensor>> = None;
    for view in views {
        for input in [view.clone(), view.flip(&[3])?] {
            let heads = method.predict(&input)?.heads;
            sums = Some(match sums {
                None => heads.into_iter().map(|(_, t)| t).collect(),
                Some(s) => s
                    .iter()
                    .zip(&heads)
                    .map(|(a, (_, b))| a.add(b))
                    .collect::<candle_core::Result<_>>()?,
            });
        }
    }
    sums.ok_or_else(|| TrainError::Msg("no test-time view".into()))
}

/// The plain predictions of `method` and, for each of `ttas` (in [`Tta::ALL`]'s order), every prediction
/// averaged over that augmentation's views, named `<name>+<tta>`.
///
/// `images` `(N, 3, H, W)` are the evaluation inputs, or with `crop` `(height, width)` the resized images the
/// evaluation crop is cut from (needed for [`Tta::MultiCrop`]): the plain and flipped views are then their
/// centre crop.
pub fn predict_tta(
    method: &dyn Method,
    images: &Tensor,
    crop: Option<(usize, usize)>,
    ttas: &[Tta],
) -> Result<Predictions> {
    let crops =
        crop.map(|c| five_crops((images.dim(2).unwrap_or(0), images.dim(3).unwrap_or(0)), c));
    let centre = match (crop, &crops) {
        (Some(c), Some(offsets)) => window(images, offsets[4], c)?,
        _ => images.clone(),
    };
    let plain = method.predict(&centre)?.heads;
    let names: Vec<String> = plain.iter().map(|(n, _)| n.clone()).collect();
    let mut heads = plain;
    for tta in Tta::ALL.into_iter().filter(|t| ttas.contains(t)) {
        let (views, count) = match (tta, crop, &crops) {
            (Tta::Flip, _, _) => (vec![centre.clone()], 2.0),
            (Tta::MultiCrop, Some(c), Some(offsets)) => (
                offsets
                    .iter()
                    .map(|&o| window(images, o, c))
                    .collect::<Result<Vec<_>>>()?,
                10.0,
            ),
            (Tta::MultiCrop, _, _) => {
                return Err(TrainError::Msg(
                    "multicrop needs the uncropped images and the crop size".into(),
                ))
            }
        };
        for (name, sum) in names.iter().zip(summed_logits(method, &views)?) {
            heads.push((format!("{name}+{}", tta.name()), (sum / count)?));
        }
    }
    Ok(Predictions { heads })
}

/// Evaluates `method` on `dataset` through `config`'s evaluation pipeline, reporting the plain predictions
/// and, for each of `ttas`, every prediction averaged over that augmentation's views (`<name>+flip`,
/// `<name>+multicrop`).
///
/// ```no_run
/// # use std::sync::Arc;
/// # fn demo(method: &dyn fgvc_train::Method, config: &fgvc_train::Config, data: Arc<dyn fgvc_data::Dataset>) -> fgvc_train::Result<()> {
/// use fgvc_train::eval::{evaluate_tta, Tta};
/// let report = evaluate_tta(method, config, data, "test", &[Tta::Flip, Tta::MultiCrop], &candle_core::Device::Cpu)?;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub fn evaluate_tta(
    method: &dyn Method,
    config: &Config,
    dataset: Arc<dyn Dataset>,
    split: &str,
    ttas: &[Tta],
    device: &Device,
) -> Result<EvalReport> {
    let (_, test) = config.data.pipelines()?;
    let (loader, crop) = if ttas.contains(&Tta::MultiCrop) {
        let (stripped, crop) = uncropped(&test)?;
        let mut c = config.clone();
        c.data.test_pipeline = Some(stripped);
        (eval_loader(&c, dataset, device)?, Some(crop))
    } else {
        (eval_loader(config, dataset, device)?, None)
    };
    evaluate_by(&loader, split, |images| {
        predict_tta(method, images, crop, ttas)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_crops_are_torchvisions() {
        // FiveCrop(3) of a 5x6 image: corners, then centre at (round(1.0), round(1.5)) = (1, 2).
        assert_eq!(
            five_crops((5, 6), (3, 3)),
            [(0, 0), (0, 3), (2, 0), (2, 3), (1, 2)]
        );
    }

    #[test]
    fn multicrop_needs_a_final_centre_crop_of_a_fixed_size() {
        let ok = Pipeline::pmg_test_at(40, 32);
        let (stripped, crop) = uncropped(&ok).unwrap();
        assert_eq!(crop, (32, 32));
        assert_eq!(stripped.output_size((7, 9)).unwrap(), (40, 40));
        let no_crop: Pipeline = serde_json::from_str(
            r#"{"steps": [{"op": "resize", "height": 32, "width": 32}], "normalize": "imagenet"}"#,
        )
        .unwrap();
        assert!(uncropped(&no_crop)
            .unwrap_err()
            .to_string()
            .contains("does not end in a centre crop"));
        let shorter: Pipeline = serde_json::from_str(
            r#"{"steps": [{"op": "resize_shorter", "size": 40}, {"op": "center_crop", "height": 32, "width": 32}], "normalize": "imagenet"}"#,
        )
        .unwrap();
        assert!(uncropped(&shorter)
            .unwrap_err()
            .to_string()
            .contains("no fixed size"));
        assert_eq!("flip".parse::<Tta>().unwrap(), Tta::Flip);
        assert!("tencrop".parse::<Tta>().is_err());
    }
}
