//! BatchNorm (2-d and 1-d) with PyTorch's train/eval semantics and running-statistics update.

use candle_core::{Result, Tensor, Var};

use crate::params::{Init, Params};

/// `eps`, `momentum` and whether the layer has a learnable affine transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch statistic in the running average (PyTorch's default 0.1).
    pub momentum: f64,
    /// Learnable `weight` and `bias`.
    pub affine: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self { eps: 1e-5, momentum: 0.1, affine: true }
    }
}

/// Normalises `x` (N, C) or (N, C, H, W) per channel. In training, batch statistics normalise and update
/// `running_mean`/`running_var` (unbiased variance) in place; in eval, the running statistics normalise.
pub fn batch_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Var,
    running_var: &Var,
    train: bool,
    cfg: &BatchNormConfig,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() != 2 && dims.len() != 4 {
        candle_core::bail!("batch_norm: expected (N, C) or (N, C, H, W), got {dims:?}")
    }
    let c = dims[1];
    let bshape: Vec<usize> = dims.iter().enumerate().map(|(i, &d)| if i == 1 { d } else { 1 }).collect();
    let (mean, var) = if train {
        let count = x.elem_count() / c;
        if count <= 1 {
            candle_core::bail!(
                "batch_norm: training needs more than one value per channel, got input {dims:?} (N*H*W = {count}); \
                 use drop_last or a batch of at least 2"
            )
        }
        let xt = x.transpose(0, 1)?.flatten_from(1)?; // (C, N*H*W)
        let mean = xt.mean(1)?;
        let centered = xt.broadcast_sub(&mean.unsqueeze(1)?)?;
        let var = centered.sqr()?.mean(1)?;
        let m = cfg.momentum;
        let unbiased = var.affine(count as f64 / (count as f64 - 1.0), 0.)?.detach();
        running_mean.set(&running_mean.as_tensor().affine(1. - m, 0.)?.add(&mean.detach().affine(m, 0.)?)?)?;
        running_var.set(&running_var.as_tensor().affine(1. - m, 0.)?.add(&unbiased.affine(m, 0.)?)?)?;
        (mean, var)
    } else {
        (running_mean.as_tensor().detach(), running_var.as_tensor().detach())
    };
    let inv = var.affine(1., cfg.eps)?.sqrt()?.recip()?;
    let mut y = x.broadcast_sub(&mean.reshape(bshape.as_slice())?)?.broadcast_mul(&inv.reshape(bshape.as_slice())?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.reshape(bshape.as_slice())?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape(bshape.as_slice())?)?;
    }
    Ok(y)
}

/// `nn.BatchNorm2d` / `nn.BatchNorm1d` with torch's names: `weight`, `bias`, `running_mean`, `running_var`.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Var,
    running_var: Var,
    cfg: BatchNormConfig,
}

impl BatchNorm {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1, weight 1, bias 0, running mean 0, running var 1.
    pub fn new(c: usize, p: &Params) -> Result<Self> {
        Self::with_config(c, BatchNormConfig::default(), p)
    }

    /// With an explicit configuration (PMG's blocks use momentum 0.01).
    pub fn with_config(c: usize, cfg: BatchNormConfig, p: &Params) -> Result<Self> {
        let (weight, bias) = if cfg.affine {
            (Some(p.get(c, "weight", Init::Const(1.))?), Some(p.get(c, "bias", Init::Const(0.))?))
        } else {
            (None, None)
        };
        let running_mean = p.var(c, "running_mean", Init::Const(0.))?;
        let running_var = p.var(c, "running_var", Init::Const(1.))?;
        Ok(Self { weight, bias, running_mean, running_var, cfg })
    }

    /// Batch statistics (and a running-statistics update) when `train`, running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        batch_norm(x, self.weight.as_ref(), self.bias.as_ref(), &self.running_mean, &self.running_var, train, &self.cfg)
    }

    /// The running mean.
    pub fn running_mean(&self) -> &Var {
        &self.running_mean
    }

    /// The running variance.
    pub fn running_var(&self) -> &Var {
        &self.running_var
    }
}
