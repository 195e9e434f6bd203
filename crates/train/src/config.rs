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

use std::path::{Path, PathBuf};

use fgvc_augment::transforms::Pipeline;
use fgvc_data::SyntheticConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::model::ModelConfig;
use crate::optim::{AdamWConfig, GroupSpec, OptimizerConfig, SgdConfig, ZeroGrad};
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
    /// The training recipe.
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
}

impl Default for DataConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty [data] section is valid")
    }
}

impl DataConfig {
    fn sizes(&self) -> (u32, u32) {
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
                return Err(TrainError::Msg(format!(
                    "data.augment: unknown preset {other:?} (known: pmg, dcl, rmg)"
                )))
            }
        };
        Ok((
            self.train_pipeline.clone().unwrap_or(train),
            self.test_pipeline.clone().unwrap_or(test),
        ))
    }
}

fn default_method() -> String {
    "baseline".into()
}

/// `[method]`: the training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// The recipe: `baseline`, `pmg`, `dcl`, `rmg-pmsi` or `coarse2fine`.
    #[serde(default = "default_method")]
    pub name: String,
    /// The recipe's own options (`[method.options]`), checked by the recipe (see [`crate::methods`]).
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub options: toml::Table,
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig {
            name: default_method(),
            options: toml::Table::new(),
        }
    }
}

/// The optimiser family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimKind {
    /// `torch.optim.SGD`.
    #[default]
    Sgd,
    /// `torch.optim.AdamW`.
    Adamw,
}

fn default_lr() -> f64 {
    0.01
}
fn default_momentum() -> f64 {
    0.9
}
fn default_accumulate() -> usize {
    1
}

/// `[optim]`: the optimiser, its groups, clipping and accumulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// `sgd` or `adamw`.
    #[serde(default)]
    pub kind: OptimKind,
    /// Base learning rate (of the default group).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Base weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// SGD momentum (default 0.9).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// SGD dampening.
    #[serde(default)]
    pub dampening: f64,
    /// SGD Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// AdamW hyper-parameters.
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// `zero_grad` semantics: `set_to_none` (PyTorch ≥ 2.0) or `zero` (PyTorch < 2.0); the method's default
    /// when absent.
    #[serde(default)]
    pub zero_grad: Option<ZeroGrad>,
    /// Clip gradients to this global L2 norm.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Accumulate gradients over this many batches per optimiser step.
    #[serde(default = "default_accumulate")]
    pub accumulate: usize,
    /// Parameter groups (replace the method's default groups when given).
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty [optim] section is valid")
    }
}

impl OptimConfig {
    /// The optimiser this section describes.
    pub fn optimizer(&self) -> OptimizerConfig {
        match self.kind {
            OptimKind::Sgd => OptimizerConfig::Sgd(SgdConfig {
                momentum: self.momentum,
                dampening: self.dampening,
                nesterov: self.nesterov,
            }),
            OptimKind::Adamw => OptimizerConfig::AdamW(self.adamw),
        }
    }
}

/// Which evaluation picks `best.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The best top-1 on the validation split (the principled protocol; the default).
    #[default]
    Val,
    /// The best top-1 on the test split: the protocol of the PMG, DCL and RMG-PMSI papers. It overstates
    /// accuracy; outputs label it `best-on-test`.
    BestOnTest,
    /// The last epoch, no selection.
    Last,
}

fn default_epochs() -> usize {
    10
}
fn default_log_every() -> u64 {
    10
}
fn default_true() -> bool {
    true
}

/// `[train]`: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs to train.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Also checkpoint every this many batch steps (0: only at the end of each epoch).
    #[serde(default)]
    pub checkpoint_every_steps: u64,
    /// Log a training record every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every_steps: u64,
    /// Model selection.
    #[serde(default)]
    pub select: Selection,
    /// Evaluate the test split at the end with the selected weights.
    #[serde(default = "default_true")]
    pub final_test: bool,
    /// CPU threads for tensor operations (0: candle's default, all cores). Fix it for bit-exact resumes
    /// across machines: GEMM summation order depends on the thread count.
    #[serde(default)]
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty [train] section is valid")
    }
}

/// Parses a `--set key=value` value: a TOML value (`0.1`, `true`, `"x"`, `[1, 2]`) or, when it does not
/// parse as one, a bare string (`--set data.dataset=cub`).
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

/// Sets `path` (dotted) in `table` to `value`, creating tables on the way.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value, origin: &str) -> Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(TrainError::Config {
            origin: origin.into(),
            key: path.into(),
            message: "empty key in the path".into(),
        });
    }
    let mut t = table;
    for (i, k) in keys[..keys.len() - 1].iter().enumerate() {
        let entry = t
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| TrainError::Config {
            origin: origin.into(),
            key: keys[..=i].join("."),
            message: "is a value, not a table".into(),
        })?;
    }
    t.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

impl Config {
    /// Parses `text` (from `origin`, a file name used in errors), applies `overrides` (`key=value`), checks
    /// every key and type. An unknown or mistyped key is an error naming its dotted path and where it came
    /// from.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Config> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| TrainError::Config {
            origin: origin.into(),
            key: String::new(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut set_keys: Vec<(String, String)> = Vec::new();
        for o in overrides {
            let (key, value) = o.split_once('=').ok_or_else(|| TrainError::Config {
                origin: format!("--set {o}"),
                key: o.clone(),
                message: "expected key=value".into(),
            })?;
            let key = key.trim();
            set_path(
                &mut table,
                key,
                parse_value(value.trim()),
                &format!("--set {o}"),
            )?;
            set_keys.push((key.to_string(), o.clone()));
        }
        let de = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            // serde_path_to_error stops at the table for an unknown field; name the field itself.
            let key = match unknown_field(&message) {
                Some(field) if path == "." || path.is_empty() => field,
                Some(field) if !path.ends_with(&field) => format!("{path}.{field}"),
                _ => path,
            };
            let origin = set_keys
                .iter()
                .rev()
                .find(|(k, _)| {
                    key == *k
                        || key.starts_with(&format!("{k}."))
                        || k.starts_with(&format!("{key}."))
                })
                .map(|(_, o)| format!("--set {o}"))
                .unwrap_or_else(|| origin.to_string());
            TrainError::Config {
                origin,
                key,
                message,
            }
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads and parses the file at `path` with `overrides`.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Checks values serde cannot: positive sizes and counts.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |key: &str, message: String| {
            Err(TrainError::Config {
                origin: origin.into(),
                key: key.into(),
                message,
            })
        };
        if self.train.epochs == 0 {
            return bad("train.epochs", "must be at least 1".into());
        }
        if self.data.batch_size < 2 {
            return bad(
                "data.batch_size",
                "must be at least 2 (BatchNorm in training mode needs more than one image)".into(),
            );
        }
        if self.optim.accumulate == 0 {
            return bad("optim.accumulate", "must be at least 1".into());
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return bad(
                "optim.lr",
                format!("must be positive, got {}", self.optim.lr),
            );
        }
        if let Some(c) = self.optim.clip_grad_norm {
            if c <= 0.0 {
                return bad("optim.clip_grad_norm", format!("must be positive, got {c}"));
            }
        }
        if !crate::recipe::METHODS.contains(&self.method.name.as_str()) {
            return bad(
                "method.name",
                format!(
                    "unknown method {:?} (known: {})",
                    self.method.name,
                    crate::recipe::METHODS.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// The configuration as TOML (what `config.toml` of a run holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configurations serialise")
    }
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_the_default() {
        let c = Config::parse("", "x.toml", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.optim.lr, 0.01);
        assert_eq!(c.data.dataset, "synthetic");
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = Config::parse(
            "[optim]\nkind = \"adamw\"\n[[optim.groups]]\nname = \"heads\"\nparams = [\"heads\"]\nlr = 0.1\n",
            "x.toml",
            &["schedule.kind=cosine".into(), "model.base_width=8".into()],
        )
        .unwrap();
        let again = Config::parse(&c.to_toml(), "config.toml", &[]).unwrap();
        assert_eq!(c, again);
    }
}
