//! `torch.optim.AdamW`, step for step.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{state_entries, GradPolicy, Optimizer, OptimizerState, ParamGroups, ZeroGrad};
use crate::error::{Result, TrainError};

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

/// Hyper-parameters of [`AdamW`] (the learning rate and weight decay live in the groups).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// First-moment decay (default 0.9).
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Second-moment decay (default 0.999).
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Added to the denominator (default 1e-8).
    #[serde(default = "default_eps")]
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
        }
    }
}

/// Adam with decoupled weight decay exactly as `torch.optim.AdamW` computes it (not amsgrad), per parameter
/// `p` with gradient `g` and its own step count `t`:
///
/// ```text
/// p = p * (1 - lr * weight_decay)
/// m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g;  t = t + 1
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
pub struct AdamW {
    groups: ParamGroups,
    config: AdamWConfig,
    policy: GradPolicy,
    exp_avg: Vec<Option<Var>>,
    exp_avg_sq: Vec<Option<Var>>,
    step: Vec<u64>,
}

impl AdamW {
    /// AdamW over `groups`.
    pub fn new(groups: ParamGroups, config: AdamWConfig, zero_grad: ZeroGrad) -> Result<Self> {
        let ok = |b: f64| (0.0..1.0).contains(&b);
        if !ok(config.beta1) || !ok(config.beta2) || config.eps < 0.0 {
            return Err(TrainError::Msg(format!(
                "invalid AdamW configuration {config:?}: betas must be in [0, 1) and eps non-negative"
            )));
        }
        let n = groups.params().len();
        Ok(AdamW {
            groups,
            config,
            policy: GradPolicy::new(zero_grad, n),
            exp_avg: vec![None; n],
            exp_avg_sq: vec![None; n],
            step: vec![0; n],
        })
    }

    /// Number of steps parameter `name` has taken.
    pub fn param_steps(&self, name: &str) -> Option<u64> {
        self.groups.index_of(name).map(|i| self.step[i])
    }
}

impl Optimizer for AdamW {
    fn kind(&self) -> &'static str {
        "adamw"
    }

    fn groups(&self) -> &ParamGroups {
        &self.groups
    }

    fn groups_mut(&mut self) -> &mut ParamGroups {
        &mut self.groups
    }

    fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        let grads = self.policy.effective(&self.groups, grads)?;
        let AdamWConfig { beta1, beta2, eps } = self.config;
        for (i, g) in grads.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let param = &self.groups.params()[i];
            let group = &self.groups.groups()[param.group];
            let p = param.var.as_tensor();
            let zeros = || Var::zeros(p.shape(), p.dtype(), p.device());
            let m = match self.exp_avg[i].take() {
                Some(m) => m,
                None => zeros()?,
            };
            let v = match self.exp_avg_sq[i].take() {
                Some(v) => v,
                None => zeros()?,
            };
            self.step[i] += 1;
            let step = fgvc_ops::AdamWStep {
                lr: group.lr,
                weight_decay: group.weight_decay,
                beta1,
                beta2,
                eps,
                step: self.step[i],
            };
            fgvc_ops::adamw_step(&param.var, &g, &m, &v, &step)?;
            self.exp_avg[i] = Some(m);
            self.exp_avg_sq[i] = Some(v);
        }
        Ok(())
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut tensors = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for (i, p) in self.groups.params().iter().enumerate() {
            if let (Some(m), Some(v)) = (&self.exp_avg[i], &self.exp_avg_sq[i]) {
                // Copies: the moments are updated in place by later steps.
                tensors.insert(format!("exp_avg/{}", p.name), m.as_tensor().copy()?);
                tensors.insert(format!("exp_avg_sq/{}", p.name), v.as_tensor().copy()?);
                steps.insert(p.name.clone(), self.step[i]);
            }
        }
        Ok(OptimizerState {
            kind: self.kind().into(),
            tensors,
            meta: serde_json::json!({
                "step": steps,
                "had_grad": self.policy.names(&self.groups),
                "config": self.config,
            }),
        })
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let entries = state_entries(&self.groups, state, self.kind())?;
        let n = self.groups.params().len();
        let (mut m, mut v) = (vec![None; n], vec![None; n]);
        for (buffer, i, t) in entries {
            let t = Var::from_tensor(&t.to_device(self.groups.params()[i].var.device())?)?;
            match buffer {
                "exp_avg" => m[i] = Some(t),
                "exp_avg_sq" => v[i] = Some(t),
                _ => {
                    return Err(TrainError::Msg(format!(
                        "unexpected AdamW state buffer {buffer:?}"
                    )))
                }
            }
        }
        let steps: BTreeMap<String, u64> = serde_json::from_value(state.meta["step"].clone())
            .map_err(|e| TrainError::Msg(format!("optimizer state: bad `step`: {e}")))?;
        let mut step = vec![0; n];
        for (name, s) in steps {
            let i = self
                .groups
                .index_of(&name)
                .ok_or_else(|| super::unknown_param(&name))?;
            if m[i].is_none() || v[i].is_none() {
                return Err(TrainError::Msg(format!(
                    "optimizer state has a step count for {name:?} but no moments"
                )));
            }
            step[i] = s;
        }
        let had: Vec<String> = serde_json::from_value(state.meta["had_grad"].clone())
            .map_err(|e| TrainError::Msg(format!("optimizer state: bad `had_grad`: {e}")))?;
        self.policy.restore(&self.groups, &had)?;
        self.exp_avg = m;
        self.exp_avg_sq = v;
        self.step = step;
        Ok(())
    }
}
