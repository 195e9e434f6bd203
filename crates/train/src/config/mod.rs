//! Run configuration: TOML with unknown keys refused, `--set key=value` overrides checked against the same
//! types, and the resolved result written back to the run directory.
//!
//! ```toml
//! seed = 0
//! [data]                      # dataset, transforms, batches
//! dataset = "synthetic"       # or cub, cars, aircraft, folder (then `root = "data/..."`)
//! [model]                     # backbone
//! backbone = "resnet18"
//! [method]
//! name = "baseline"
//! [optim]                     # optimiser, groups, clipping, accumulation
//! kind = "sgd"
//! lr = 0.01
//! [schedule]                  # learning-rate schedule
//! kind = "cosine"
//! [train]                     # epochs, checkpoints, model selection
//! epochs = 10
//! ```
//!
//! Every section has defaults, so an empty document is a valid configuration.
//!
//! The sections live in their own modules; [`Config::parse`] (in `parse`) reads a document and
//! `--set` overrides, [`Config::validate`] (in `validate`) checks values serde cannot, including
//! `[method]` against the [method registry](crate::registry) and the [`geometry`] a method needs, and
//! [`Config::differences`] (in `diff`) names the keys two configurations disagree on.

mod data;
mod diff;
pub mod geometry;
mod method;
mod optim;
mod parse;
mod train;
mod validate;

use serde::{Deserialize, Serialize};

pub use data::DataConfig;
pub use diff::Difference;
pub use method::MethodConfig;
pub use optim::{OptimConfig, OptimKind};
pub use train::{Precision, Selection, TrainConfig};

use crate::model::ModelConfig;
use crate::schedule::ScheduleConfig;

/// A whole run configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed of the model initialisation, data order, augmentation and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Dataset, transforms and batches.
    #[serde(default)]
    pub data: DataConfig,
    /// The model.
    #[serde(default)]
    pub model: ModelConfig,
    /// The training method.
    #[serde(default)]
    pub method: MethodConfig,
    /// Optimiser.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Learning-rate schedule.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Training loop.
    #[serde(default)]
    pub train: TrainConfig,
}

impl Config {
    /// The configuration as TOML (what `config.toml` of a run holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configurations serialise")
    }
}
