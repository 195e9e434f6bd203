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
    let Affine {
        weight,
        bias,
        running_mean,
        running_var,
        cfg,
    } = *bn;
    let dims = x.dims();
    let c = dims[1];
    let bshape: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == 1 { d } else { 1 })
        .collect();
    let (mean, var) = if train {
        let count = x.elem_count() / c;
        let xt = x.transpose(0, 1)?.flatten_from(1)?; // (C, N*H*W)
        let mean = xt.mean(1)?;
        let centered = xt.broadcast_sub(&mean.unsqueeze(1)?)?;
        let var = centered.sqr()?.mean(1)?;
        let m = cfg.momentum;
        let unbiased = var
            .affine(count as f64 / (count as f64 - 1.0), 0.)?
            .detach();
        running_mean.set(
            &running_mean
                .as_tensor()
                .affine(1. - m, 0.)?
                .add(&mean.detach().affine(m, 0.)?)?,
        )?;
        running_var.set(
            &running_var
                .as_tensor()
                .affine(1. - m, 0.)?
                .add(&unbiased.affine(m, 0.)?)?,
        )?;
        (mean, var)
    } else {
        (
            running_mean.as_tensor().detach(),
            running_var.as_tensor().detach(),
        )
    };
    let inv = var.affine(1., cfg.eps)?.sqrt()?.recip()?;
    let mut y = x
        .broadcast_sub(&mean.reshape(bshape.as_slice())?)?
        .broadcast_mul(&inv.reshape(bshape.as_slice())?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.reshape(bshape.as_slice())?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape(bshape.as_slice())?)?;
    }
    if let Some(r) = epi.residual {
        y = (y + r)?;
    }
    epi.act.apply(&y)
}
