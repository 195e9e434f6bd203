//! The composite path: BatchNorm and its epilogue as candle's own ops, for devices and dtypes the CPU kernels
//! do not cover (CUDA, Metal, f16/bf16) and for [`with_composite_ops`](crate::with_composite_ops); candle's
//! autograd differentiates it.

use candle_core::{Result, Tensor};

use super::functional::{Affine, Epilogue};

/// `act(bn(x) + residual)` from candle's ops; `x` has been checked to be (N, C) or (N, C, H, W), with a
/// residual of its shape and, in training, more than one value per channel.
pub(super) fn composite_batch_norm(
    x: &Tensor,
    bn: &Affine,
    train: bool,
    epi: Epilogue,
) -> Result<Tensor> {
    let (running_mean, running_var) = (bn.running_mean, bn.running_var);
    let (mean, var) = if train {
        let count = x.elem_count() / x.dims()[1];
        let xt = x.transpose(0, 1)?.flatten_from(1)?; // (C, N*H*W)
        let mean = xt.mean(1)?;
        let centered = xt.broadcast_sub(&mean.unsqueeze(1)?)?;
        let var = centered.sqr()?.mean(1)?;
        update_running_with(bn, &mean, &var, count as f64)?;
        (mean, var)
    } else {
        (
            running_mean.as_tensor().detach(),
            running_var.as_tensor().detach(),
        )
    };
    normalize_with(x, &mean, &var, bn, epi)
}

/// PyTorch's running-statistics update from a batch's per-channel `mean` and biased `var` over `count`
/// values per channel (momentum average, unbiased variance), from candle's ops.
pub(super) fn update_running_with(
    bn: &Affine,
    mean: &Tensor,
    var: &Tensor,
    count: f64,
) -> Result<()> {
    let m = bn.cfg.momentum;
    let (rm, rv) = (bn.running_mean.as_tensor(), bn.running_var.as_tensor());
    let mean = mean.detach().to_dtype(rm.dtype())?;
    let unbiased = var
        .detach()
        .affine(count / (count - 1.0), 0.)?
        .to_dtype(rv.dtype())?;
    bn.running_mean
        .set(&rm.affine(1. - m, 0.)?.add(&mean.affine(m, 0.)?)?)?;
    bn.running_var
        .set(&rv.affine(1. - m, 0.)?.add(&unbiased.affine(m, 0.)?)?)
}

/// `act((x - mean) / sqrt(var + eps) * weight + bias + residual)` with per-channel `mean` and `var` (C), from
/// candle's ops: the composite path's last part, shared with synchronised BatchNorm.
pub(super) fn normalize_with(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    bn: &Affine,
    epi: Epilogue,
) -> Result<Tensor> {
    let bshape: Vec<usize> = x
        .dims()
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == 1 { d } else { 1 })
        .collect();
    let inv = var.affine(1., bn.cfg.eps)?.sqrt()?.recip()?;
    let mut y = x
        .broadcast_sub(&mean.reshape(bshape.as_slice())?)?
        .broadcast_mul(&inv.reshape(bshape.as_slice())?)?;
    if let Some(w) = bn.weight {
        y = y.broadcast_mul(&w.reshape(bshape.as_slice())?)?;
    }
    if let Some(b) = bn.bias {
        y = y.broadcast_add(&b.reshape(bshape.as_slice())?)?;
    }
    if let Some(r) = epi.residual {
        y = (y + r)?;
    }
    epi.act.apply(&y)
}
