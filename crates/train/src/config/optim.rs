//! `[optim]`: the optimiser family, its hyper-parameters, groups, clipping and accumulation.

use serde::{Deserialize, Serialize};

use crate::optim::{AdamWConfig, GroupSpec, OptimizerConfig, SgdConfig, ZeroGrad};

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
