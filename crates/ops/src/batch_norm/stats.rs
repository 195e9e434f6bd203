//! A training batch's statistics: the per-channel mean, variance and inverse std in one shifted pass
//! ([`BnStats`]), their host copy for the backward, and PyTorch's running-statistics update from them.

use candle_core::{CpuStorage, Result, Shape, Tensor};

use super::functional::Affine;
use super::planes::{block_sums, Planes};
use crate::cpu::{cpu_op, Elem};

/// Per-channel statistics of x: (3, C) rows mean, biased variance, 1/sqrt(var + eps). One pass of sums
/// shifted by each channel's first value (so that the one-pass variance does not cancel), parallel over
/// channels.
pub(super) struct BnStats {
    pub(super) planes: Planes,
    pub(super) eps: f64,
}

impl BnStats {
    pub(super) fn run<T: Elem>(&self, x: &[T]) -> Result<(CpuStorage, Shape)> {
        let p = self.planes;
        let s = p.s;
        let sums = p.reduce::<2>(|c, off| {
            let k = x[c * s];
            let plane = &x[off..off + s];
            block_sums(plane, plane, plane, |v, _, _| {
                let d = v - k;
                (d, d * d)
            })
        });
        let m = p.count() as f64;
        let mut out = vec![T::ZERO; 3 * p.c];
        for (c, [sd, sdd]) in sums.into_iter().enumerate() {
            let k = x[c * s].to_f64();
            let var = ((sdd - sd * sd / m) / m).max(0.);
            out[c] = T::from_f64(k + sd / m);
            out[p.c + c] = T::from_f64(var);
            out[2 * p.c + c] = T::from_f64(1. / (var + self.eps).sqrt());
        }
        Ok((T::wrap(out), Shape::from((3, p.c))))
    }
}

cpu_op!(CustomOp1 for BnStats, "fgvc-batch-norm-stats";);

/// A training batch's per-channel mean and `1/sqrt(var + eps)`, on the host.
#[derive(Debug, Clone)]
pub(super) struct BatchStats {
    /// Per-channel mean.
    pub(super) mean: Vec<f64>,
    /// Per-channel `1/sqrt(var + eps)`.
    pub(super) inv: Vec<f64>,
}

impl BatchStats {
    /// From the mean and inverse-std rows of a `(3, C)` statistics matrix.
    pub(super) fn from_rows<T: Elem>(mean: &[T], inv: &[T]) -> Self {
        Self {
            mean: mean.iter().map(|v| v.to_f64()).collect(),
            inv: inv.iter().map(|v| v.to_f64()).collect(),
        }
    }
}

/// PyTorch's running-statistics update from a batch's `(3, C)` statistics (mean, biased variance, ...) over
/// `count` values per channel: momentum average, unbiased variance.
pub(super) fn update_running(bn: &Affine, stats: &Tensor, count: usize) -> Result<()> {
    let (m, count) = (bn.cfg.momentum, count as f64);
    let rm = bn.running_mean.as_tensor();
    let rv = bn.running_var.as_tensor();
    let mean = stats.get(0)?.to_dtype(rm.dtype())?;
    let unbiased = stats
        .get(1)?
        .to_dtype(rv.dtype())?
        .affine(count / (count - 1.0), 0.)?;
    bn.running_mean
        .set(&rm.affine(1. - m, 0.)?.add(&mean.affine(m, 0.)?)?)?;
    bn.running_var
        .set(&rv.affine(1. - m, 0.)?.add(&unbiased.affine(m, 0.)?)?)
}
