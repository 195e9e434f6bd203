//! The functional form, [`batch_norm`], and the entry every BatchNorm forward shares: the shape checks, then
//! the fused CPU kernels where they apply ([`super::apply`]) and the composite of candle's ops elsewhere.

use candle_core::{Result, Tensor, Var};

use super::apply::fused_batch_norm;
use super::composite::composite_batch_norm;
use super::config::BatchNormConfig;
use super::sync::{sync_batch_norm, sync_group};
use crate::activation::Activation;
use crate::cpu::fast_path;

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
    let bn = Affine {
        weight,
        bias,
        running_mean,
        running_var,
        cfg,
    };
    normalize(x, &bn, train, Epilogue::default())
}

/// The parameters and buffers of one BatchNorm, borrowed.
pub(super) struct Affine<'a> {
    pub(super) weight: Option<&'a Tensor>,
    pub(super) bias: Option<&'a Tensor>,
    pub(super) running_mean: &'a Var,
    pub(super) running_var: &'a Var,
    pub(super) cfg: &'a BatchNormConfig,
}

/// What follows the normalisation in the same pass: `act(bn(x) + residual)`.
#[derive(Clone, Copy, Default)]
pub(super) struct Epilogue<'a> {
    pub(super) residual: Option<&'a Tensor>,
    pub(super) act: Activation,
}

/// [`batch_norm`] followed by the epilogue: fused kernels on the CPU, candle's ops elsewhere.
pub(super) fn normalize(x: &Tensor, bn: &Affine, train: bool, epi: Epilogue) -> Result<Tensor> {
    if let Some(r) = epi.residual {
        if r.dims() != x.dims() {
            candle_core::bail!(
                "batch_norm: residual {:?} does not match input {:?}",
                r.dims(),
                x.dims()
            )
        }
    }
    let dims = x.dims().to_vec();
    if dims.len() != 2 && dims.len() != 4 {
        candle_core::bail!("batch_norm: expected (N, C) or (N, C, H, W), got {dims:?}")
    }
    let c = dims[1];
    if train {
        let count = x.elem_count() / c.max(1);
        if count <= 1 {
            return Err(single_value_error(&dims, count));
        }
        if let Some(group) = sync_group() {
            return sync_batch_norm(x, bn, &group, epi);
        }
    }
    if fast_path(x) && epi.residual.is_none_or(|r| r.dtype() == x.dtype()) {
        return fused_batch_norm(x, bn, train, epi);
    }
    composite_batch_norm(x, bn, train, epi)
}

/// The error for a training batch with one value per channel, whose variance is undefined.
pub(super) fn single_value_error(dims: &[usize], count: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "batch_norm: training needs more than one value per channel, got input {dims:?} (N*H*W = {count}); \
         use drop_last or a batch of at least 2"
    ))
}
