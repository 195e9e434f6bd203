//! The backward of [`BnApply`]: the activation's mask, the per-channel sums of the output gradient
//! ([`ChannelSums`]) and the input gradient as one affine map per channel ([`ChannelGrad`]), differentiating
//! through the batch statistics in training. Two passes over the tensor instead of candle's graph of ops.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::apply::BnApply;
use super::planes::{block_sums, Planes};
use crate::activation::{per_activation, Activation};
use crate::cpu::{contiguous, cpu_op, dispatch, simd, written, Elem};

impl BnApply {
    /// Gradients of x, params (2, C) and the residual from the output `y` and its gradient `dy`.
    pub(super) fn grads(
        &self,
        x: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        residual: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let p = self.planes;
        let dy = dy.contiguous()?;
        // With a residual its gradient, the activation's masked dy, is needed whole, so it is made once and
        // both passes read it; without, both passes mask dy on the fly.
        let (g, act) = if residual && self.act != Activation::Identity {
            let dz = dy.apply_op2_no_bwd(y, &ActGrad(self.act))?;
            (dz, Activation::Identity)
        } else {
            (dy, self.act)
        };
        let centre: Vec<f64> = match &self.batch {
            Some(b) => b.mean.clone(),
            None => vec![0.; p.c],
        };
        let inv: Vec<f64> = match &self.batch {
            Some(b) => b.inv.clone(),
            None => vec![1.; p.c],
        };
        // (2, C): sum dz, sum dz * xhat (training) or sum dz * x (eval).
        let sums = x.apply_op3_no_bwd(
            &g,
            y,
            &ChannelSums {
                planes: p,
                act,
                centre: centre.clone(),
                inv: inv.clone(),
            },
        )?;
        let host = |t: &Tensor| t.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>();
        let (sm, pm) = (host(&sums)?, host(params)?);
        let m = p.count() as f64;
        // dx = a dz + b (x - centre) + c0 per channel.
        let mut coef = vec![0f64; 4 * p.c];
        for c in 0..p.c {
            match &self.batch {
                Some(_) => {
                    let k = pm[0][c] * inv[c];
                    coef[c] = k;
                    coef[p.c + c] = -k * inv[c] * sm[1][c] / m;
                    coef[2 * p.c + c] = centre[c];
                    coef[3 * p.c + c] = -k * sm[0][c] / m;
                }
                None => coef[c] = pm[0][c],
            }
        }
        let dx = g.apply_op3_no_bwd(
            x,
            y,
            &ChannelGrad {
                planes: p,
                act,
                coef,
            },
        )?;
        // d gamma (or d scale) = sum dz * xhat (or * x), d beta (or d shift) = sum dz.
        let dparams = Tensor::stack(&[sums.get(1)?, sums.get(0)?], 0)?;
        let dr = if residual { Some(g) } else { None };
        Ok((dx, dparams, dr))
    }
}

/// The activation's gradient from its output: (dy, y) -> dy where the activation passes it, else 0.
struct ActGrad(Activation);

impl CustomOp2 for ActGrad {
    fn name(&self) -> &'static str {
        "fgvc-activation-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s1, T => {
            let (dy, y) = (contiguous::<T>(s1, l1)?, contiguous::<T>(s2, l2)?);
            let act = self.0;
            // SAFETY: the chunks tile dz and every element of each is written.
            let dz = unsafe {
                written(dy.len(), |dz| {
                    dz.par_chunks_mut(1 << 14)
                        .zip(dy.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
                        .for_each(|(o, (g, v))| {
                            per_activation!(act, ACT => simd!({
                                for ((o, &g), &v) in o.iter_mut().zip(g).zip(v) {
                                    o.write(ACT.pass(g, v));
                                }
                            }))
                        })
                })
            };
            Ok((T::wrap(dz), l1.shape().clone()))
        })
    }
}

/// Per-channel sums of dz (row 0) and dz * (x - centre) * inv (row 1), where dz is dy masked by the
/// activation's gradient at the output y: (x, dy, y) -> (2, C).
struct ChannelSums {
    planes: Planes,
    act: Activation,
    centre: Vec<f64>,
    inv: Vec<f64>,
}

impl ChannelSums {
    fn run<T: Elem>(&self, x: &[T], dy: &[T], y: &[T]) -> Result<(CpuStorage, Shape)> {
        let sums = per_activation!(self.act, ACT => self.sums(x, dy, y, |g, v| ACT.pass(g, v)));
        let c = self.planes.c;
        let mut out = vec![T::ZERO; 2 * c];
        for (ch, [a, b]) in sums.into_iter().enumerate() {
            out[ch] = T::from_f64(a);
            out[c + ch] = T::from_f64(b);
        }
        Ok((T::wrap(out), Shape::from((2, c))))
    }

    #[inline(always)]
    fn sums<T: Elem>(
        &self,
        x: &[T],
        dy: &[T],
        y: &[T],
        mask: impl Fn(T, T) -> T + Sync,
    ) -> Vec<[f64; 2]> {
        let s = self.planes.s;
        self.planes.reduce::<2>(|c, off| {
            let (centre, inv) = (T::from_f64(self.centre[c]), T::from_f64(self.inv[c]));
            let (xs, gs, ys) = (&x[off..off + s], &dy[off..off + s], &y[off..off + s]);
            block_sums(xs, gs, ys, |v, g, yv| {
                let g = mask(g, yv);
                (g, g * ((v - centre) * inv))
            })
        })
    }
}

cpu_op!(CustomOp3 for ChannelSums, "fgvc-batch-norm-sums";);

/// Input gradient: (dy, x, y) -> dx = A dz + B (x - centre) + C0 per channel, with `coef` rows A, B, centre,
/// C0 and dz the masked dy.
struct ChannelGrad {
    planes: Planes,
    act: Activation,
    coef: Vec<f64>,
}

impl ChannelGrad {
    fn run<T: Elem>(&self, dy: &[T], x: &[T], y: &[T]) -> Result<(CpuStorage, Shape)> {
        // SAFETY: `fill` writes every plane of dx.
        let dx = unsafe {
            written(
                x.len(),
                |dx| per_activation!(self.act, ACT => self.fill(dy, x, y, dx, |g, v| ACT.pass(g, v))),
            )
        };
        Ok((T::wrap(dx), Shape::from(0)))
    }

    #[inline(always)]
    fn fill<T: Elem>(
        &self,
        dy: &[T],
        x: &[T],
        y: &[T],
        dx: &mut [MaybeUninit<T>],
        mask: impl Fn(T, T) -> T + Sync,
    ) {
        let c = self.planes.c;
        let k: Vec<T> = self.coef.iter().map(|&v| T::from_f64(v)).collect();
        self.planes.map(dx, |ch, off, out| {
            simd!({
                let (a, b, centre, c0) = (k[ch], k[c + ch], k[2 * c + ch], k[3 * c + ch]);
                let n = out.len();
                let (gs, xs, ys) = (&dy[off..off + n], &x[off..off + n], &y[off..off + n]);
                for (((o, &g), &v), &yv) in out.iter_mut().zip(gs).zip(xs).zip(ys) {
                    o.write(a * mask(g, yv) + b * (v - centre) + c0);
                }
            })
        });
    }
}

impl CustomOp3 for ChannelGrad {
    fn name(&self) -> &'static str {
        "fgvc-batch-norm-grad"
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
        let (storage, _) = dispatch!(self.name(), s1, T => self.run::<T>(contiguous(s1, l1)?, contiguous(s2, l2)?, contiguous(s3, l3)?))?;
        Ok((storage, l1.shape().clone()))
    }
}
