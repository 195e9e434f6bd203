//! # fgvc-train
//!
//! The training engine of fgvc: everything between a dataset and a trained, evaluated model.
//!
//! * [`optim`]: PyTorch-exact [`Sgd`](optim::Sgd) and [`AdamW`](optim::AdamW) with parameter groups selected
//!   by name, PyTorch < 2.0 `zero_grad` semantics, gradient clipping; state saved by parameter name.
//! * [`schedule`]: cosine (per epoch or iteration), step decay, constant, linear warm-up.
//! * [`Method`]: a training method's `train_step` (one or several optimiser steps per batch through a
//!   [`StepContext`], which also accumulates gradients and refuses NaN losses) and `predict` (named logits);
//!   [`Baseline`](methods::baseline::Baseline) is plain fine-tuning.
//! * [`registry`]: the one table of methods (name, options type, check, build, presets) that configurations,
//!   the trainer, the CLI and xtask read; [`registry::register`] adds one from outside this crate.
//! * [`explain`]: Grad-CAM heatmaps of every named prediction and the methods' own maps, rendered as PNGs.
//! * [`eval`]: top-1, top-5, per-class and mean per-class accuracy, confusion matrices, for every named
//!   prediction.
//! * [`Trainer`]: epochs, schedule, model selection on a validation split (or, flagged, the papers'
//!   best-on-test), [`metrics`] (`metrics.jsonl`, `metrics.csv`), [`plot`]s, atomic [`checkpoint`]s and
//!   exact `--resume`, and [`tensorboard`] logging: every random draw is keyed by `(seed, epoch, step)`, so a run killed and resumed
//!   ends with the same weights as one that never stopped.
//! * [`export`]: the inference graph as ONNX (every named prediction an output, dynamic batch) or the
//!   inference weights as safetensors, with the class names and test pipeline as metadata
//!   ([`Method::export`] is each method's graph).
//! * [`Config`]: TOML run configurations with unknown keys refused and `--set key=value` overrides.
//!
//! ```no_run
//! use candle_core::Device;
//! use fgvc_train::{Config, TrainOptions, Trainer};
//!
//! let config = Config::parse("[train]\nepochs = 2\n", "inline", &["model.base_width=8".into()])?;
//! let mut trainer = Trainer::new(config, "runs/demo".as_ref(), &Device::Cpu, TrainOptions::default())?;
//! let summary = trainer.run()?;
//! println!("test top-1 {:.3}", summary.test.unwrap().main().top1);
//! # Ok::<(), fgvc_train::TrainError>(())
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
mod error;
pub mod eval;
pub mod explain;
pub mod export;
pub mod method;
pub mod methods;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod precision;
pub mod predict;
pub mod registry;
pub mod run_dir;
pub mod schedule;
pub mod tensorboard;
pub mod trainer;

pub use config::Config;
pub use error::{Result, TrainError};
pub use method::{Method, Predictions, StepContext, StepStats};
pub use trainer::{TrainOptions, TrainSummary, Trainer};
