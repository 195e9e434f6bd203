//! PyTorch-exact optimisers with parameter groups and state saved by parameter name.
//!
//! * [`Sgd`]: `torch.optim.SGD` (momentum, dampening, nesterov, coupled weight decay).
//! * [`AdamW`]: `torch.optim.AdamW` (bias correction, decoupled weight decay).
//! * [`ParamGroups`]: groups selected by name with their own learning rate, weight decay and freezing.
//! * [`ZeroGrad`]: PyTorch ≥ 2.0 `zero_grad()` (parameters without a gradient are skipped) or the
//!   `set_to_none=False` semantics of PyTorch < 2.0 that PMG and RMG-PMSI were trained with.
//! * [`build_optimizer`]: the optimiser of a run configuration and its method.
//! * [`clip_grad_norm`]: `torch.nn.utils.clip_grad_norm_` over all gradients; [`first_non_finite`] finds a
//!   NaN or infinite gradient before a step applies it.
//!
//! State ([`OptimizerState`]) is keyed by parameter name, never by tensor identity or hash-map order, so a
//! checkpoint restores into a freshly built model.

mod adamw;
mod build;
mod clip;
mod groups;
mod sgd;

pub use adamw::{AdamW, AdamWConfig};
pub use build::build_optimizer;
pub use clip::{clip_grad_norm, first_non_finite};
pub use groups::{matches, Group, GroupSpec, Param, ParamGroups, DEFAULT_GROUP};
pub use sgd::{Sgd, SgdConfig};

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What a parameter without a gradient in this step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroGrad {
    /// PyTorch ≥ 2.0 (`zero_grad(set_to_none=True)`): the parameter is skipped, no momentum, no decay.
    #[default]
    SetToNone,
    /// PyTorch < 2.0 (`zero_grad(set_to_none=False)`): a parameter that has ever had a gradient gets a zero
    /// gradient, so momentum and weight decay still move it. Parameters that never had one are skipped.
    Zero,
}

/// Optimiser state as tensors named `<buffer>/<parameter name>` plus a JSON document (step counts, which
/// parameters have had a gradient, the kind of optimiser).
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// `"sgd"` or `"adamw"`.
    pub kind: String,
    /// Buffers by `<buffer>/<parameter name>` (`momentum_buffer/fc.weight`, `exp_avg/fc.weight`).
    pub tensors: BTreeMap<String, Tensor>,
    /// Scalars: step counts, `had_grad`, hyper-parameters for reference.
    pub meta: serde_json::Value,
}

/// An optimiser over [`ParamGroups`].
pub trait Optimizer: Send {
    /// `"sgd"` or `"adamw"`.
    fn kind(&self) -> &'static str;
    /// The parameter groups.
    fn groups(&self) -> &ParamGroups;
    /// The parameter groups, mutable (learning rates, freezing).
    fn groups_mut(&mut self) -> &mut ParamGroups;
    /// One update from `grads`, in the order of [`ParamGroups::params`] (`None`: no gradient this step).
    /// Parameters of frozen groups are not touched.
    fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()>;
    /// The state to checkpoint.
    fn state(&self) -> Result<OptimizerState>;
    /// Restores a state saved by [`Optimizer::state`] from an optimiser of the same kind over parameters of
    /// the same names and shapes.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Which optimiser, with its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd(SgdConfig),
    /// `torch.optim.AdamW`.
    #[serde(rename = "adamw")]
    AdamW(AdamWConfig),
}

impl OptimizerConfig {
    /// Builds the optimiser over `groups`.
    pub fn build(&self, groups: ParamGroups, zero_grad: ZeroGrad) -> Result<Box<dyn Optimizer>> {
        Ok(match self {
            OptimizerConfig::Sgd(c) => Box::new(Sgd::new(groups, *c, zero_grad)?),
            OptimizerConfig::AdamW(c) => Box::new(AdamW::new(groups, *c, zero_grad)?),
        })
    }
}

/// Tracks which parameters have ever had a gradient and turns a step's gradients into the ones the
/// optimiser applies under a [`ZeroGrad`] policy.
#[derive(Debug, Clone)]
pub(crate) struct GradPolicy {
    pub(crate) mode: ZeroGrad,
    pub(crate) had_grad: Vec<bool>,
}

impl GradPolicy {
    pub(crate) fn new(mode: ZeroGrad, params: usize) -> Self {
        GradPolicy {
            mode,
            had_grad: vec![false; params],
        }
    }

    /// Records which parameters got a gradient (frozen groups included: in PyTorch their `.grad` fills
    /// even though their optimiser does not step) and returns, per parameter, the gradient to apply or
    /// `None` to skip it.
    pub(crate) fn effective(
        &mut self,
        groups: &ParamGroups,
        grads: &[Option<Tensor>],
    ) -> Result<Vec<Option<Tensor>>> {
        if grads.len() != groups.params().len() {
            return Err(TrainError::Msg(format!(
                "optimizer step with {} gradients for {} parameters",
                grads.len(),
                groups.params().len()
            )));
        }
        let mut out = Vec::with_capacity(grads.len());
        for (i, (p, g)) in groups.params().iter().zip(grads).enumerate() {
            if g.is_some() {
                self.had_grad[i] = true;
            }
            if groups.groups()[p.group].frozen {
                out.push(None);
                continue;
            }
            out.push(match (g, self.mode) {
                (Some(g), _) => Some(g.detach()),
                (None, ZeroGrad::Zero) if self.had_grad[i] => Some(p.var.as_tensor().zeros_like()?),
                (None, _) => None,
            });
        }
        Ok(out)
    }

    pub(crate) fn names(&self, groups: &ParamGroups) -> Vec<String> {
        groups
            .params()
            .iter()
            .zip(&self.had_grad)
            .filter(|(_, &h)| h)
            .map(|(p, _)| p.name.clone())
            .collect()
    }

    pub(crate) fn restore(&mut self, groups: &ParamGroups, names: &[String]) -> Result<()> {
        self.had_grad.iter_mut().for_each(|h| *h = false);
        for n in names {
            let i = groups.index_of(n).ok_or_else(|| unknown_param(n))?;
            self.had_grad[i] = true;
        }
        Ok(())
    }
}

pub(crate) fn unknown_param(name: &str) -> TrainError {
    TrainError::Msg(format!(
        "optimizer state names parameter {name:?}, which this model does not optimise"
    ))
}

/// Splits `<buffer>/<param>` state tensors into `(buffer, param index, tensor)`, checking names and shapes.
pub(crate) fn state_entries<'a>(
    groups: &ParamGroups,
    state: &'a OptimizerState,
    kind: &str,
) -> Result<Vec<(&'a str, usize, &'a Tensor)>> {
    if state.kind != kind {
        return Err(TrainError::Msg(format!(
            "optimizer state is for {:?}, this optimizer is {kind:?}",
            state.kind
        )));
    }
    let mut out = Vec::new();
    for (key, t) in &state.tensors {
        let (buffer, name) = key
            .split_once('/')
            .ok_or_else(|| TrainError::Msg(format!("bad optimizer state tensor name {key:?}")))?;
        let i = groups.index_of(name).ok_or_else(|| unknown_param(name))?;
        let expected = groups.params()[i].var.shape();
        if t.shape() != expected {
            return Err(TrainError::Msg(format!(
                "optimizer state {key:?} has shape {:?}, the parameter has {:?}",
                t.shape(),
                expected
            )));
        }
        out.push((buffer, i, t));
    }
    Ok(out)
}
