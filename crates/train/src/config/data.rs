//! `[data]`: the dataset, its transforms and batches.

use std::path::PathBuf;

use fgvc_augment::transforms::Pipeline;
use fgvc_data::SyntheticConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

fn default_dataset() -> String {
    "synthetic".into()
}
fn default_batch() -> usize {
    16
}
fn default_validation() -> f64 {
    0.1
}
fn default_augment() -> String {
    "pmg".into()
}
fn default_max_image_pixels() -> u64 {
    fgvc_data::DEFAULT_MAX_IMAGE_PIXELS
}

/// `[data]`: which dataset and how it is fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `synthetic`, `cub`, `cars`, `aircraft` or `folder`.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Root of a downloaded dataset (`data/CUB_200_2011`).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// The synthetic dataset's parameters (`[data.synthetic]`); see [`fgvc_data::synthetic`].
    #[serde(default)]
    pub synthetic: SyntheticConfig,
    /// Transform preset (`pmg`, `dcl`, `rmg`) applied at `resize`/`crop`, unless `train_pipeline` and
    /// `test_pipeline` are given.
    #[serde(default = "default_augment")]
    pub augment: String,
    /// Square resize before cropping (default: the synthetic image size x 9/8, else 550).
    #[serde(default)]
    pub resize: Option<u32>,
    /// Square crop fed to the network (default: the synthetic image size, else 448).
    #[serde(default)]
    pub crop: Option<u32>,
    /// An explicit training pipeline (replaces the preset).
    #[serde(default)]
    pub train_pipeline: Option<Pipeline>,
    /// An explicit evaluation pipeline (replaces the preset).
    #[serde(default)]
    pub test_pipeline: Option<Pipeline>,
    /// Training batch size.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Evaluation batch size (default: the training batch size).
    #[serde(default)]
    pub eval_batch_size: Option<usize>,
    /// Loader threads (0: one per core).
    #[serde(default)]
    pub threads: usize,
    /// Fraction of each class of a file dataset's training set held out for validation.
    #[serde(default = "default_validation")]
    pub validation_fraction: f64,
    /// Crop to the bounding boxes (CUB, Cars, Aircraft).
    #[serde(default)]
    pub bbox_crop: bool,
    /// The largest image accepted, in pixels (width x height), checked from each file's header before it
    /// is decoded (PIL's `MAX_IMAGE_PIXELS`; default 89,478,485). Applied when the data is opened, and by
    /// `predict` from the run's configuration.
    #[serde(default = "default_max_image_pixels")]
    pub max_image_pixels: u64,
    /// Skip files that cannot be read or decoded (each logged as a warning naming it, and counted in the
    /// `skipped` field of every `epoch` record) instead of stopping the run. Off by default: a bad file is an
    /// error naming it.
    #[serde(default)]
    pub skip_bad: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty [data] section is valid")
    }
}

impl DataConfig {
    pub(crate) fn sizes(&self) -> (u32, u32) {
        let synthetic = self.dataset == "synthetic";
        let crop = self.crop.unwrap_or(if synthetic {
            self.synthetic.image_size
        } else {
            448
        });
        let resize = self
            .resize
            .unwrap_or(if synthetic { crop * 9 / 8 } else { 550 });
        (resize, crop)
    }

    /// The training and evaluation pipelines.
    pub fn pipelines(&self) -> Result<(Pipeline, Pipeline)> {
        let (resize, crop) = self.sizes();
        let (train, test) = match self.augment.as_str() {
            "pmg" => (
                Pipeline::pmg_train_at(resize, crop),
                Pipeline::pmg_test_at(resize, crop),
            ),
            "dcl" => (
                Pipeline::dcl_train_at(resize, crop),
                Pipeline::dcl_test_at(resize, crop),
            ),
            "rmg" => (
                Pipeline::rmg_train_at(resize, crop),
                Pipeline::rmg_test_at(resize, crop),
            ),
            other => {
                return Err(TrainError::Config {
                    origin: "[data]".into(),
                    key: "data.augment".into(),
                    message: format!("unknown preset {other:?} (known: pmg, dcl, rmg)"),
                })
            }
        };
        Ok((
            self.train_pipeline.clone().unwrap_or(train),
            self.test_pipeline.clone().unwrap_or(test),
        ))
    }
}
