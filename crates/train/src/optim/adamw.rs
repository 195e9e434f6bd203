//! `torch.optim.AdamW`, step for step.

use std::collections::BTreeMap;

use candle_core::Tensor;
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
    exp_avg: Vec<Option<Tensor>>,
    exp_avg_sq: Vec<Option<Tensor>>,
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

/// `torch.lerp(start, end, w)` with PyTorch's two formulas (by `w < 0.5`).
fn lerp(start: &Tensor, end: &Tensor, w: f64) -> Result<Tensor> {
    let diff = end.sub(start)?;
    Ok(if w < 0.5 {
        start.add(&diff.affine(w, 0.0)?)?
    } else {
        end.sub(&diff.affine(1.0 - w, 0.0)?)?
    })
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
            let (lr, wd) = (group.lr, group.weight_decay);
            let mut p = param.var.as_tensor().detach();
            if wd != 0.0 {
                p = p.affine(1.0 - lr * wd, 0.0)?;
            }
            let m = match self.exp_avg[i].take() {
                Some(m) => m,
                None => g.zeros_like()?,
            };
            let v = match self.exp_avg_sq[i].take() {
                Some(v) => v,
                None => g.zeros_like()?,
            };
            let m = lerp(&m, &g, 1.0 - beta1)?;
            let v = v
                .affine(beta2, 0.0)?
                .add(&g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            self.step[i] += 1;
            let t = self.step[i] as i32;
            let bias_correction1 = 1.0 - beta1.powi(t);
            let bias_correction2 = 1.0 - beta2.powi(t);
            let step_size = lr / bias_correction1;
            let denom = v
                .sqrt()?
                .affine(1.0 / bias_correction2.sqrt(), 0.0)?
                .affine(1.0, eps)?;
            let update = m.div(&denom)?.affine(step_size, 0.0)?;
            param.var.set(&p.sub(&update)?)?;
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
                tensors.insert(format!("exp_avg/{}", p.name), m.clone());
                tensors.insert(format!("exp_avg_sq/{}", p.name), v.clone());
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
            let t = t.to_device(self.groups.params()[i].var.device())?;
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
