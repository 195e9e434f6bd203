//! `torch.optim.SGD`, step for step.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{state_entries, GradPolicy, Optimizer, OptimizerState, ParamGroups, ZeroGrad};
use crate::error::{Result, TrainError};

/// Hyper-parameters of [`Sgd`] (the learning rate and weight decay live in the groups).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Momentum factor (0: plain SGD).
    #[serde(default)]
    pub momentum: f64,
    /// Dampening of the momentum (PyTorch's `dampening`).
    #[serde(default)]
    pub dampening: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0, as in PyTorch).
    #[serde(default)]
    pub nesterov: bool,
}

/// Stochastic gradient descent exactly as `torch.optim.SGD` computes it, per parameter `p` with gradient `g`:
///
/// ```text
/// d = g + weight_decay * p                       (coupled decay)
/// buf = d                  on the first step with momentum
/// buf = momentum * buf + (1 - dampening) * d      afterwards
/// d = d + momentum * buf   (nesterov)   or   d = buf
/// p = p - lr * d
/// ```
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use fgvc_train::optim::{Optimizer, ParamGroups, Sgd, SgdConfig, ZeroGrad};
///
/// let w = Var::new(&[1.0f32, 2.0], &Device::Cpu)?;
/// let groups = ParamGroups::single(vec![("w".into(), w.clone())], 0.1, 0.0)?;
/// let cfg = SgdConfig { momentum: 0.9, dampening: 0.0, nesterov: false };
/// let mut opt = Sgd::new(groups, cfg, ZeroGrad::SetToNone)?;
/// let g = Tensor::new(&[1.0f32, 1.0], &Device::Cpu)?;
/// opt.step(&[Some(g.clone())])?; // buf = g
/// opt.step(&[Some(g)])?; // buf = 0.9 g + g
/// let v = w.as_tensor().to_vec1::<f32>()?;
/// assert!((v[0] - (1.0 - 0.1 - 0.19)).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sgd {
    groups: ParamGroups,
    config: SgdConfig,
    policy: GradPolicy,
    momentum_buffer: Vec<Option<Var>>,
    steps: u64,
}

impl Sgd {
    /// SGD over `groups`.
    pub fn new(groups: ParamGroups, config: SgdConfig, zero_grad: ZeroGrad) -> Result<Self> {
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(TrainError::Msg(
                "nesterov momentum requires a momentum and zero dampening".into(),
            ));
        }
        if config.momentum < 0.0 {
            return Err(TrainError::Msg(format!(
                "invalid momentum {}",
                config.momentum
            )));
        }
        let n = groups.params().len();
        Ok(Sgd {
            groups,
            config,
            policy: GradPolicy::new(zero_grad, n),
            momentum_buffer: vec![None; n],
            steps: 0,
        })
    }

    /// The momentum buffer of parameter `name`, if it has one.
    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.groups
            .index_of(name)
            .and_then(|i| self.momentum_buffer[i].as_ref())
            .map(|b| b.as_tensor())
    }
}

impl Optimizer for Sgd {
    fn kind(&self) -> &'static str {
        "sgd"
    }

    fn groups(&self) -> &ParamGroups {
        &self.groups
    }

    fn groups_mut(&mut self) -> &mut ParamGroups {
        &mut self.groups
    }

    fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        let grads = self.policy.effective(&self.groups, grads)?;
        let SgdConfig {
            momentum,
            dampening,
            nesterov,
        } = self.config;
        for (i, g) in grads.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let param = &self.groups.params()[i];
            let group = &self.groups.groups()[param.group];
            let step = fgvc_ops::SgdStep {
                lr: group.lr,
                weight_decay: group.weight_decay,
                momentum,
                dampening,
                nesterov,
            };
            let buf = self.momentum_buffer[i].take();
            self.momentum_buffer[i] = fgvc_ops::sgd_step(&param.var, &g, buf.as_ref(), &step)?;
        }
        self.steps += 1;
        Ok(())
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut tensors = std::collections::BTreeMap::new();
        for (p, b) in self.groups.params().iter().zip(&self.momentum_buffer) {
            if let Some(b) = b {
                // A copy: the buffer is updated in place by later steps.
                tensors.insert(format!("momentum_buffer/{}", p.name), b.as_tensor().copy()?);
            }
        }
        Ok(OptimizerState {
            kind: self.kind().into(),
            tensors,
            meta: serde_json::json!({
                "steps": self.steps,
                "had_grad": self.policy.names(&self.groups),
                "config": self.config,
            }),
        })
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let entries = state_entries(&self.groups, state, self.kind())?;
        let mut buffers = vec![None; self.groups.params().len()];
        for (buffer, i, t) in entries {
            if buffer != "momentum_buffer" {
                return Err(TrainError::Msg(format!(
                    "unexpected SGD state buffer {buffer:?}"
                )));
            }
            buffers[i] = Some(Var::from_tensor(
                &t.to_device(self.groups.params()[i].var.device())?,
            )?);
        }
        let had: Vec<String> = serde_json::from_value(state.meta["had_grad"].clone())
            .map_err(|e| TrainError::Msg(format!("optimizer state: bad `had_grad`: {e}")))?;
        self.policy.restore(&self.groups, &had)?;
        self.steps = state.meta["steps"].as_u64().unwrap_or(0);
        self.momentum_buffer = buffers;
        Ok(())
    }
}
