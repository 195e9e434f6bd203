//! Small activations and the gradient-reversal op.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{contiguous, dispatch, fast_path, simd, written, Elem};

/// The activations a BatchNorm can fuse ([`crate::BatchNorm::forward_act`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// None: `bn(x) + residual` as it is.
    #[default]
    Identity,
    /// `max(x, 0)` (ResNet, VGG, the heads' conv blocks).
    Relu,
    /// `min(max(x, 0), 6)` (MobileNetV2).
    Relu6,
}

impl Activation {
    /// The activation as a standalone op ([`relu`], [`relu6`]).
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use fgvc_ops::Activation;
    ///
    /// let x = Tensor::new(&[-1f32, 3., 7.], &Device::Cpu)?;
    /// assert_eq!(Activation::Relu6.apply(&x)?.to_vec1::<f32>()?, [0., 3., 6.]);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Identity => Ok(x.clone()),
            Activation::Relu => relu(x),
            Activation::Relu6 => relu6(x),
        }
    }
}

impl Activation {
    /// The activation at `z`, as selects (branch-free; NaN propagates as in PyTorch's relu and clamp).
    #[inline(always)]
    pub(crate) fn value<T: Elem>(self, z: T) -> T {
        let lo = if z < T::ZERO { T::ZERO } else { z };
        match self {
            Activation::Identity => z,
            Activation::Relu => lo,
            Activation::Relu6 => {
                let six = T::from_f64(6.);
                if lo > six {
                    six
                } else {
                    lo
                }
            }
        }
    }

    /// The gradient `g` where the activation passes it, 0 elsewhere, judged from its input or output `v`
    /// (strictly inside (0, 6) for ReLU6, above 0 for ReLU: PyTorch's `hardtanh_backward`/`threshold_backward`).
    /// `&` rather than `&&` keeps it a select the loops vectorise.
    #[inline(always)]
    pub(crate) fn pass<T: Elem>(self, g: T, v: T) -> T {
        let open = match self {
            Activation::Identity => true,
            Activation::Relu => v > T::ZERO,
            Activation::Relu6 => (v > T::ZERO) & (v < T::from_f64(6.)),
        };
        if open {
            g
        } else {
            T::ZERO
        }
    }
}

/// Runs `$body` with `$a` a constant of each activation in turn, so that every arm's loops compile with
/// that activation's formula inlined rather than a match per element.
macro_rules! per_activation {
    ($act:expr, $a:ident => $body:expr) => {
        match $act {
            $crate::activation::Activation::Identity => {
                const $a: $crate::activation::Activation = $crate::activation::Activation::Identity;
                $body
            }
            $crate::activation::Activation::Relu => {
                const $a: $crate::activation::Activation = $crate::activation::Activation::Relu;
                $body
            }
            $crate::activation::Activation::Relu6 => {
                const $a: $crate::activation::Activation = $crate::activation::Activation::Relu6;
                $body
            }
        }
    };
}
pub(crate) use per_activation;

/// `max(x, 0)` with a one-pass forward and backward (candle's own ReLU backward takes six passes over the
/// tensor, one of them single-threaded). The gradient at 0 is 0, as PyTorch's.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if fast_path(x) {
        return x.contiguous()?.apply_op1(Unary::Relu);
    }
    x.relu()
}

/// `min(max(x, 0), 6)`, MobileNetV2's activation. The gradient is 1 strictly inside (0, 6) and 0 elsewhere,
/// as PyTorch's `hardtanh_backward`.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    if fast_path(x) {
        return x.contiguous()?.apply_op1(Unary::Relu6);
    }
    x.clamp(0f32, 6f32)
}

/// `nn.ELU(alpha)`: `x` for `x > 0`, `alpha * (exp(x) - 1)` otherwise (PMG's classifiers use alpha 1).
pub fn elu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    if fast_path(x) {
        return x.contiguous()?.apply_op1(Unary::Elu(alpha));
    }
    x.elu(alpha)
}

/// Identity forward, `-lambda * grad` backward (DANN's gradient-reversal layer), on every device.
pub fn gradient_reversal(x: &Tensor, lambda: f64) -> Result<Tensor> {
    x.affine(-lambda, 0.)?
        .add(&x.affine(1. + lambda, 0.)?.detach())
}

/// Elementwise activations with a fused backward.
#[derive(Debug, Clone, Copy)]
enum Unary {
    Relu,
    Relu6,
    Elu(f64),
}

const CHUNK: usize = 1 << 14;

impl Unary {
    fn fwd<T: Elem>(&self, x: &[T]) -> Vec<T> {
        // SAFETY: the chunks tile y and every element of each is written.
        unsafe {
            written(x.len(), |y| {
                y.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .for_each(|(out, inp)| {
                        simd!(match *self {
                            Unary::Relu => {
                                for (o, &v) in out.iter_mut().zip(inp) {
                                    o.write(Activation::Relu.value(v));
                                }
                            }
                            Unary::Relu6 => {
                                for (o, &v) in out.iter_mut().zip(inp) {
                                    o.write(Activation::Relu6.value(v));
                                }
                            }
                            Unary::Elu(alpha) => {
                                let a = T::from_f64(alpha);
                                for (o, &v) in out.iter_mut().zip(inp) {
                                    o.write(if v > T::ZERO {
                                        v
                                    } else {
                                        a * (v.exp() - T::ONE)
                                    });
                                }
                            }
                        })
                    });
            })
        }
    }

    fn grad<T: Elem>(&self, x: &[T], dy: &[T]) -> Vec<T> {
        // SAFETY: the chunks tile dx and every element of each is written.
        unsafe {
            written(x.len(), |dx| {
                dx.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                    .for_each(|(out, (inp, g))| {
                        simd!(match *self {
                            Unary::Relu => {
                                for ((o, &v), &g) in out.iter_mut().zip(inp).zip(g) {
                                    o.write(Activation::Relu.pass(g, v));
                                }
                            }
                            Unary::Relu6 => {
                                for ((o, &v), &g) in out.iter_mut().zip(inp).zip(g) {
                                    o.write(Activation::Relu6.pass(g, v));
                                }
                            }
                            Unary::Elu(alpha) => {
                                let a = T::from_f64(alpha);
                                for ((o, &v), &g) in out.iter_mut().zip(inp).zip(g) {
                                    o.write(if v > T::ZERO { g } else { g * a * v.exp() });
                                }
                            }
                        })
                    });
            })
        }
    }
}

impl CustomOp1 for Unary {
    fn name(&self) -> &'static str {
        match self {
            Unary::Relu => "fgvc-relu",
            Unary::Relu6 => "fgvc-relu6",
            Unary::Elu(_) => "fgvc-elu",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s, T => Ok((T::wrap(self.fwd::<T>(contiguous(s, l)?)), l.shape().clone())))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &UnaryGrad(*self))?,
        ))
    }
}

/// Backward of [`Unary`]: (x, dy) -> dx.
struct UnaryGrad(Unary);

impl CustomOp2 for UnaryGrad {
    fn name(&self) -> &'static str {
        "fgvc-unary-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s1, T => Ok((T::wrap(self.0.grad::<T>(contiguous(s1, l1)?, contiguous(s2, l2)?)), l1.shape().clone())))
    }
}
