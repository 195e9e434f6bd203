//! In-place parameter updates, `torch.optim.SGD` and `torch.optim.AdamW` for one parameter: on the CPU one
//! pass per updated tensor, where the same formulas as candle ops allocate and sweep a dozen temporaries of
//! the parameter's size. Elsewhere they fall back to those candle ops. Both compute the same expressions in
//! the same order, so the two paths agree bit for bit.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var};
use rayon::prelude::*;

use crate::cpu::{contiguous, dispatch, fast_path, simd, Elem};

/// The hyper-parameters of one SGD step, with PyTorch's names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// Coupled L2 decay: the gradient becomes `g + weight_decay * p`.
    pub weight_decay: f64,
    /// Momentum factor; 0 is plain SGD and needs no buffer.
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// One `torch.optim.SGD` step on `param` with gradient `grad`, in place:
///
/// ```text
/// d = g + weight_decay * p
/// buf = d (first step), momentum * buf + (1 - dampening) * d (afterwards)
/// d = d + momentum * buf (nesterov), buf (otherwise)
/// p = p - lr * d
/// ```
///
/// `buffer` is the momentum buffer from the previous step, `None` on the first; the buffer after the step
/// is returned (`None` without momentum).
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use fgvc_ops::{sgd_step, SgdStep};
///
/// let p = Var::new(&[1.0f32, 2.0], &Device::Cpu)?;
/// let g = Tensor::new(&[1.0f32, 1.0], &Device::Cpu)?;
/// let step = SgdStep { lr: 0.1, weight_decay: 0.0, momentum: 0.9, dampening: 0.0, nesterov: false };
/// let buf = sgd_step(&p, &g, None, &step)?; // buf = g
/// sgd_step(&p, &g, buf.as_ref(), &step)?; // buf = 0.9 g + g
/// let v = p.as_tensor().to_vec1::<f32>()?;
/// assert!((v[0] - (1.0 - 0.1 - 0.19)).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn sgd_step(
    param: &Var,
    grad: &Tensor,
    buffer: Option<&Var>,
    step: &SgdStep,
) -> Result<Option<Var>> {
    let p = param.as_tensor();
    check(p, grad, "sgd_step")?;
    let fast = in_place(p) && fast_path(grad) && grad.dtype() == p.dtype();
    let grad = if fast {
        grad.contiguous()?
    } else {
        grad.clone()
    };
    if step.momentum == 0.0 {
        if fast {
            p.inplace_op2(&grad, &SgdApply { step: *step })?;
        } else {
            let d = decayed(&p.detach(), &grad, step.weight_decay)?;
            param.set(&p.detach().sub(&d.affine(step.lr, 0.0)?)?)?;
        }
        return Ok(None);
    }
    let first = buffer.is_none();
    let buf = match buffer {
        Some(b) => b.clone(),
        None => Var::zeros(p.shape(), p.dtype(), p.device())?,
    };
    if fast && in_place(buf.as_tensor()) {
        let b = buf.as_tensor();
        b.inplace_op3(&grad, p, &MomentumBuffer { step: *step, first })?;
        p.inplace_op3(&grad, b, &SgdApply { step: *step })?;
    } else {
        let pd = p.detach();
        let mut d = decayed(&pd, &grad, step.weight_decay)?;
        let new_buf = if first {
            d.copy()?
        } else {
            buf.as_tensor()
                .detach()
                .affine(step.momentum, 0.0)?
                .add(&d.affine(1.0 - step.dampening, 0.0)?)?
        };
        d = if step.nesterov {
            d.add(&new_buf.affine(step.momentum, 0.0)?)?
        } else {
            new_buf.clone()
        };
        buf.set(&new_buf)?;
        param.set(&pd.sub(&d.affine(step.lr, 0.0)?)?)?;
    }
    Ok(Some(buf))
}

/// The hyper-parameters of one AdamW step, with PyTorch's names; `step` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f64,
    /// Decoupled decay: `p = p * (1 - lr * weight_decay)` before the Adam update.
    pub weight_decay: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the bias-corrected root of the second moment.
    pub eps: f64,
    /// This parameter's step number, 1 on its first update.
    pub step: u64,
}

/// One `torch.optim.AdamW` step on `param`, in place, with the moment buffers `exp_avg` and `exp_avg_sq`
/// (zeros before the first step):
///
/// ```text
/// p = p * (1 - lr * weight_decay)
/// m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
///
/// ```
/// use candle_core::{DType, Device, Tensor, Var};
/// use fgvc_ops::{adamw_step, AdamWStep};
///
/// let p = Var::new(&[1.0f32, -1.0], &Device::Cpu)?;
/// let (m, v) = (Var::zeros(2, DType::F32, &Device::Cpu)?, Var::zeros(2, DType::F32, &Device::Cpu)?);
/// let g = Tensor::new(&[0.5f32, -2.0], &Device::Cpu)?;
/// let step = AdamWStep { lr: 0.1, weight_decay: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 1 };
/// adamw_step(&p, &g, &m, &v, &step)?;
/// // The first step moves every coordinate by lr against the sign of its gradient.
/// let v = p.as_tensor().to_vec1::<f32>()?;
/// assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] + 0.9).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn adamw_step(
    param: &Var,
    grad: &Tensor,
    exp_avg: &Var,
    exp_avg_sq: &Var,
    step: &AdamWStep,
) -> Result<()> {
    let p = param.as_tensor();
    check(p, grad, "adamw_step")?;
    check(p, exp_avg.as_tensor(), "adamw_step (exp_avg)")?;
    check(p, exp_avg_sq.as_tensor(), "adamw_step (exp_avg_sq)")?;
    if step.step == 0 {
        candle_core::bail!("adamw_step: steps count from 1")
    }
    let (m, v) = (exp_avg.as_tensor(), exp_avg_sq.as_tensor());
    let fast = in_place(p)
        && in_place(m)
        && in_place(v)
        && fast_path(grad)
        && [grad.dtype(), m.dtype(), v.dtype()]
            .iter()
            .all(|&d| d == p.dtype());
    if fast {
        let grad = grad.contiguous()?;
        m.inplace_op2(&grad, &Moment::First(step.beta1))?;
        v.inplace_op2(&grad, &Moment::Second(step.beta2))?;
        p.inplace_op3(m, v, &AdamWApply { step: *step })?;
        return Ok(());
    }
    let mut pd = p.detach();
    if step.weight_decay != 0.0 {
        pd = pd.affine(1.0 - step.lr * step.weight_decay, 0.0)?;
    }
    let new_m = lerp(&m.detach(), grad, 1.0 - step.beta1)?;
    let new_v = v
        .detach()
        .affine(step.beta2, 0.0)?
        .add(&grad.sqr()?.affine(1.0 - step.beta2, 0.0)?)?;
    let c = AdamWApply { step: *step }.constants();
    let denom = new_v
        .sqrt()?
        .affine(c.inv_root_bc2, 0.0)?
        .affine(1.0, step.eps)?;
    let update = new_m.div(&denom)?.affine(c.step_size, 0.0)?;
    exp_avg.set(&new_m)?;
    exp_avg_sq.set(&new_v)?;
    param.set(&pd.sub(&update)?)
}

/// Same shape as the parameter, or an error naming the caller.
fn check(p: &Tensor, t: &Tensor, what: &str) -> Result<()> {
    if p.dims() != t.dims() {
        candle_core::bail!(
            "{what}: tensor {:?} does not match parameter {:?}",
            t.dims(),
            p.dims()
        )
    }
    Ok(())
}

/// Whether `t` can be updated by the in-place CPU kernels.
fn in_place(t: &Tensor) -> bool {
    fast_path(t) && t.is_contiguous()
}

/// `g + weight_decay * p` (just `g` without decay).
fn decayed(p: &Tensor, g: &Tensor, weight_decay: f64) -> Result<Tensor> {
    if weight_decay != 0.0 {
        g.add(&p.affine(weight_decay, 0.0)?)
    } else {
        Ok(g.clone())
    }
}

/// `torch.lerp(start, end, w)` with PyTorch's two formulas (by `w < 0.5`).
fn lerp(start: &Tensor, end: &Tensor, w: f64) -> Result<Tensor> {
    let diff = end.sub(start)?;
    if w < 0.5 {
        start.add(&diff.affine(w, 0.0)?)
    } else {
        end.sub(&diff.affine(1.0 - w, 0.0)?)
    }
}

/// `dst[i] = f(dst[i], a[i], b[i])` over contiguous slices, in parallel chunks.
fn zip_update<T: Elem>(dst: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T, T) -> T + Sync) {
    const CHUNK: usize = 1 << 14;
    dst.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(d, (a, b))| {
            simd!({
                for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                    *d = f(*d, a, b);
                }
            })
        });
}

/// A mutable contiguous slice of a storage described by `l`.
fn contiguous_mut<'a, T: Elem>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [T]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("fgvc-ops update: expected a contiguous parameter, got layout {l:?}")
    };
    Ok(&mut T::slice_mut(s)?[start..end])
}

/// Implements candle's in-place op traits for a kernel type with
/// `fn run<T: Elem>(&self, dst: &mut [T], a: &[T], b: &[T])`: `InplaceOp3` updates `dst` from `(a, b)`,
/// `InplaceOp2` from `a` alone (`b` is then `a` again).
macro_rules! in_place_op {
    ($ty:ty, $name:literal) => {
        impl InplaceOp2 for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &mut CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
            ) -> Result<()> {
                dispatch!($name, s2, T => {
                    let a = contiguous::<T>(s2, l2)?;
                    self.run(contiguous_mut::<T>(s1, l1)?, a, a);
                    Ok(())
                })
            }
        }

        impl InplaceOp3 for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &mut CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
                s3: &CpuStorage,
                l3: &Layout,
            ) -> Result<()> {
                dispatch!($name, s2, T => {
                    let (a, b) = (contiguous::<T>(s2, l2)?, contiguous::<T>(s3, l3)?);
                    self.run(contiguous_mut::<T>(s1, l1)?, a, b);
                    Ok(())
                })
            }
        }
    };
}

/// The momentum buffer in place: (buf; g, p) -> d on the first step, else `momentum * buf + (1 - dampening) * d`,
/// with `d = g + weight_decay * p`.
struct MomentumBuffer {
    step: SgdStep,
    first: bool,
}

impl MomentumBuffer {
    fn run<T: Elem>(&self, buf: &mut [T], g: &[T], p: &[T]) {
        let s = self.step;
        let (wd, decay) = (T::from_f64(s.weight_decay), s.weight_decay != 0.0);
        let (m, keep) = (T::from_f64(s.momentum), T::from_f64(1.0 - s.dampening));
        let first = self.first;
        zip_update(buf, g, p, |b, g, p| {
            let d = if decay { g + p * wd } else { g };
            if first {
                d
            } else {
                b * m + d * keep
            }
        });
    }
}

in_place_op!(MomentumBuffer, "fgvc-sgd-momentum");

/// The parameter in place: (p; g) -> `p - lr * (g + weight_decay * p)` without momentum, (p; g, buf) ->
/// `p - lr * d` with `d = buf`, or `d = g + weight_decay * p + momentum * buf` (Nesterov).
struct SgdApply {
    step: SgdStep,
}

impl SgdApply {
    fn run<T: Elem>(&self, p: &mut [T], g: &[T], buf: &[T]) {
        let s = self.step;
        let (wd, decay) = (T::from_f64(s.weight_decay), s.weight_decay != 0.0);
        let (lr, m) = (T::from_f64(s.lr), T::from_f64(s.momentum));
        if s.momentum == 0.0 {
            zip_update(p, g, g, |p, g, _| {
                let d = if decay { g + p * wd } else { g };
                p - d * lr
            })
        } else if s.nesterov {
            zip_update(p, g, buf, |p, g, b| {
                let d = if decay { g + p * wd } else { g };
                p - (d + b * m) * lr
            })
        } else {
            zip_update(p, buf, buf, |p, b, _| p - b * lr)
        }
    }
}

in_place_op!(SgdApply, "fgvc-sgd");

/// An Adam moment in place: (m; g) -> `lerp(m, g, 1 - beta1)`, or (v; g) -> `beta2 * v + (1 - beta2) * g^2`.
enum Moment {
    First(f64),
    Second(f64),
}

impl Moment {
    fn run<T: Elem>(&self, dst: &mut [T], g: &[T], _: &[T]) {
        match *self {
            Moment::First(beta1) => {
                let w = 1.0 - beta1;
                let (wt, rest) = (T::from_f64(w), T::from_f64(1.0 - w));
                if w < 0.5 {
                    zip_update(dst, g, g, |m, g, _| m + (g - m) * wt);
                } else {
                    zip_update(dst, g, g, |m, g, _| g - (g - m) * rest);
                }
            }
            Moment::Second(beta2) => {
                let (b2, rest) = (T::from_f64(beta2), T::from_f64(1.0 - beta2));
                zip_update(dst, g, g, |v, g, _| v * b2 + (g * g) * rest);
            }
        }
    }
}

in_place_op!(Moment, "fgvc-adam-moment");

/// The AdamW parameter update in place: (p; m, v) with the moments already updated.
struct AdamWApply {
    step: AdamWStep,
}

/// The per-step scalars of the update.
struct AdamWConstants {
    step_size: f64,
    inv_root_bc2: f64,
}

impl AdamWApply {
    fn constants(&self) -> AdamWConstants {
        let s = self.step;
        let t = s.step as i32;
        let bias_correction1 = 1.0 - s.beta1.powi(t);
        let bias_correction2 = 1.0 - s.beta2.powi(t);
        AdamWConstants {
            step_size: s.lr / bias_correction1,
            inv_root_bc2: 1.0 / bias_correction2.sqrt(),
        }
    }

    fn run<T: Elem>(&self, p: &mut [T], m: &[T], v: &[T]) {
        let s = self.step;
        let c = self.constants();
        let (decay, keep) = (
            s.weight_decay != 0.0,
            T::from_f64(1.0 - s.lr * s.weight_decay),
        );
        let (step_size, inv, eps) = (
            T::from_f64(c.step_size),
            T::from_f64(c.inv_root_bc2),
            T::from_f64(s.eps),
        );
        zip_update(p, m, v, |p, m, v| {
            let p = if decay { p * keep } else { p };
            p - (m / (v.sqrt() * inv * T::ONE + eps)) * step_size
        });
    }
}

in_place_op!(AdamWApply, "fgvc-adamw");
