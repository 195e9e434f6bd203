//! The CPU forward of BatchNorm with its epilogue: [`BnApply`] normalises with the batch statistics (training)
//! or the folded running statistics (eval), adds the residual and applies the activation in one pass, so
//! ResNet's and MobileNetV2's Conv-BN-(add)-ReLU ends are one op with one fused backward ([`super::grad`]).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::functional::{Affine, Epilogue};
use super::planes::Planes;
use super::stats::{update_running, BatchStats, BnStats};
use crate::activation::{per_activation, Activation};
use crate::cpu::{contiguous, dispatch, simd, written, Elem};

/// The CPU path: one statistics pass, then [`BnApply`] (normalise, add, activate) with its fused backward.
pub(super) fn fused_batch_norm(
    x: &Tensor,
    bn: &Affine,
    train: bool,
    epi: Epilogue,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let planes = Planes::of(&x)?;
    let params = channel_params(bn, &x, planes.c, train)?;
    let batch = if train {
        let stats = x.apply_op1_no_bwd(&BnStats {
            planes,
            eps: bn.cfg.eps,
        })?;
        update_running(bn, &stats, planes.count())?;
        let host = stats.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
        Some(BatchStats::from_rows(&host[0], &host[2]))
    } else {
        None
    };
    let op = BnApply {
        planes,
        act: epi.act,
        batch,
    };
    match epi.residual {
        Some(r) => x.apply_op3(&params, &r.contiguous()?, op),
        None => x.apply_op2(&params, op),
    }
}

/// `(2, C)` in x's dtype: `[gamma; beta]` in training, the running statistics folded into `[scale; shift]`
/// in eval (built with candle ops, so gradients reach gamma and beta either way).
pub(super) fn channel_params(bn: &Affine, x: &Tensor, c: usize, train: bool) -> Result<Tensor> {
    let gamma = match bn.weight {
        Some(w) => w.to_dtype(x.dtype())?,
        None => Tensor::ones(c, x.dtype(), x.device())?,
    };
    let beta = match bn.bias {
        Some(b) => b.to_dtype(x.dtype())?,
        None => Tensor::zeros(c, x.dtype(), x.device())?,
    };
    if train {
        return Tensor::stack(&[&gamma, &beta], 0);
    }
    let rm = bn.running_mean.as_tensor().detach().to_dtype(x.dtype())?;
    let inv = bn
        .running_var
        .as_tensor()
        .detach()
        .to_dtype(x.dtype())?
        .affine(1., bn.cfg.eps)?
        .sqrt()?
        .recip()?;
    let scale = gamma.mul(&inv)?;
    let shift = beta.sub(&rm.mul(&scale)?)?;
    Tensor::stack(&[&scale, &shift], 0)
}

/// `y = act((x - mean) * inv * gamma + beta + residual)` with the batch statistics (training), or
/// `y = act(x * scale + shift + residual)` (eval, `batch` is `None`). Inputs: x, params (2, C) holding
/// [gamma; beta] or [scale; shift], and the optional residual. The backward differentiates through the
/// batch statistics in training.
pub(super) struct BnApply {
    pub(super) planes: Planes,
    pub(super) act: Activation,
    pub(super) batch: Option<BatchStats>,
}

impl BnApply {
    /// Per channel `(centre, multiplier, offset)` so that `z = (x - centre) * multiplier + offset`.
    fn coefficients<T: Elem>(&self, p: &[T]) -> Vec<(T, T, T)> {
        let c = self.planes.c;
        (0..c)
            .map(|ch| match &self.batch {
                Some(b) => (
                    T::from_f64(b.mean[ch]),
                    p[ch] * T::from_f64(b.inv[ch]),
                    p[c + ch],
                ),
                None => (T::ZERO, p[ch], p[c + ch]),
            })
            .collect()
    }

    pub(super) fn run<T: Elem>(
        &self,
        x: &[T],
        p: &[T],
        r: Option<&[T]>,
    ) -> Result<(CpuStorage, Shape)> {
        let k = self.coefficients(p);
        // SAFETY: `apply` writes every plane of y.
        let y = unsafe {
            written(
                x.len(),
                |y| per_activation!(self.act, ACT => self.apply(x, r, &k, y, |z| ACT.value(z))),
            )
        };
        Ok((T::wrap(y), Shape::from(0)))
    }

    #[inline(always)]
    fn apply<T: Elem>(
        &self,
        x: &[T],
        r: Option<&[T]>,
        k: &[(T, T, T)],
        y: &mut [MaybeUninit<T>],
        act: impl Fn(T) -> T + Sync,
    ) {
        self.planes.map(y, |ch, off, out| {
            simd!({
                let (centre, mul, add) = k[ch];
                let xs = &x[off..off + out.len()];
                match r {
                    Some(r) => {
                        let rs = &r[off..off + out.len()];
                        for ((o, &v), &q) in out.iter_mut().zip(xs).zip(rs) {
                            o.write(act((v - centre) * mul + add + q));
                        }
                    }
                    None => {
                        for (o, &v) in out.iter_mut().zip(xs) {
                            o.write(act((v - centre) * mul + add));
                        }
                    }
                }
            })
        });
    }

    fn fwd_storage(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        r: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (storage, _) = dispatch!(self.name(), s1, T => {
            let r = match r {
                Some((s3, l3)) => Some(contiguous::<T>(s3, l3)?),
                None => None,
            };
            self.run::<T>(contiguous(s1, l1)?, contiguous(s2, l2)?, r)
        })?;
        Ok((storage, l1.shape().clone()))
    }

    fn name(&self) -> &'static str {
        "fgvc-batch-norm"
    }
}

impl CustomOp2 for BnApply {
    fn name(&self) -> &'static str {
        BnApply::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd_storage(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dp, _) = self.grads(x, params, y, dy, false)?;
        Ok((Some(dx), Some(dp)))
    }
}

impl CustomOp3 for BnApply {
    fn name(&self) -> &'static str {
        BnApply::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd_storage(s1, l1, s2, l2, Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _residual: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dp, dr) = self.grads(x, params, y, dy, true)?;
        Ok((Some(dx), Some(dp), dr))
    }
}
