//! BatchNorm (2-d and 1-d) with PyTorch's train/eval semantics and running-statistics update.

use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Module, Result, Shape, Tensor, Var};
use rayon::prelude::*;

use crate::activation::{per_activation, Activation};
use crate::conv::Conv2d;
use crate::conv_cpu::{conv_forward, conv_grads, Geometry};
use crate::cpu::{
    contiguous, cpu_op, cpu_tensor, dispatch, fast_path, plane_chunk, simd, written, Elem,
};
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
        Self {
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
        }
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
struct Affine<'a> {
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
    running_mean: &'a Var,
    running_var: &'a Var,
    cfg: &'a BatchNormConfig,
}

/// What follows the normalisation in the same pass: `act(bn(x) + residual)`.
#[derive(Clone, Copy, Default)]
struct Epilogue<'a> {
    residual: Option<&'a Tensor>,
    act: Activation,
}

/// [`batch_norm`] followed by the epilogue: fused kernels on the CPU, candle's ops elsewhere.
fn normalize(x: &Tensor, bn: &Affine, train: bool, epi: Epilogue) -> Result<Tensor> {
    let Affine {
        weight,
        bias,
        running_mean,
        running_var,
        cfg,
    } = *bn;
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
    }
    if fast_path(x) && epi.residual.is_none_or(|r| r.dtype() == x.dtype()) {
        return fused_batch_norm(x, bn, train, epi);
    }
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
            (
                Some(p.get(c, "weight", Init::Const(1.))?),
                Some(p.get(c, "bias", Init::Const(0.))?),
            )
        } else {
            (None, None)
        };
        let running_mean = p.var(c, "running_mean", Init::Const(0.))?;
        let running_var = p.var(c, "running_var", Init::Const(1.))?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            cfg,
        })
    }

    /// Batch statistics (and a running-statistics update) when `train`, running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, None, Activation::Identity, train)
    }

    /// `act(bn(x) + residual)` as one op: one pass forward and two backward on the CPU, where BatchNorm,
    /// the residual add and the activation as separate ops would each allocate and accumulate a gradient
    /// (ResNet's Conv-BN-ReLU and block ends, MobileNetV2's Conv-BN-ReLU6).
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use fgvc_ops::{Activation, BatchNorm, ParamStore};
    ///
    /// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    /// let bn = BatchNorm::new(4, &store.root())?;
    /// let x = Tensor::randn(0f32, 1., (2, 4, 3, 3), &Device::Cpu)?;
    /// let identity = Tensor::ones((2, 4, 3, 3), DType::F32, &Device::Cpu)?;
    /// let y = bn.forward_act(&x, Some(&identity), Activation::Relu, true)?;
    /// assert!(y.flatten_all()?.min(0)?.to_scalar::<f32>()? >= 0.);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn forward_act(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
        train: bool,
    ) -> Result<Tensor> {
        let bn = Affine {
            weight: self.weight.as_ref(),
            bias: self.bias.as_ref(),
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            cfg: &self.cfg,
        };
        normalize(x, &bn, train, Epilogue { residual, act })
    }

    /// `act(bn(conv(x)))` as one op on the CPU, for a dense or depthwise `conv` without bias: the conv
    /// output stays inside the op rather than becoming a graph node, which spares candle's backward a
    /// zero-filled gradient and an add of its size per layer. Same results as
    /// `self.forward_act(&conv.forward(x)?, None, act, train)`, which it falls back to elsewhere.
    ///
    /// ```
    /// use candle_core::{DType, Device, Module, Tensor};
    /// use fgvc_ops::{Activation, BatchNorm, Conv2d, Conv2dConfig, ParamStore};
    ///
    /// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    /// let p = store.root();
    /// let conv = Conv2d::new(3, 4, 3, Conv2dConfig::same(1), false, &p.pp("conv"))?;
    /// let bn = BatchNorm::new(4, &p.pp("bn"))?;
    /// let x = Tensor::randn(0f32, 1., (2, 3, 8, 8), &Device::Cpu)?;
    /// let fused = bn.forward_conv(&conv, &x, Activation::Relu, false)?;
    /// let apart = bn.forward_act(&conv.forward(&x)?, None, Activation::Relu, false)?;
    /// assert_eq!(fused.dims(), &[2, 4, 8, 8]);
    /// assert_eq!((fused - apart)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn forward_conv(
        &self,
        conv: &Conv2d,
        x: &Tensor,
        act: Activation,
        train: bool,
    ) -> Result<Tensor> {
        let (w, cfg) = (conv.weight(), conv.config());
        let in_c = x.dims().get(1).copied().unwrap_or(0);
        let depthwise = cfg.groups != 1;
        let fits = fast_path(x)
            && x.rank() == 4
            && conv.bias().is_none()
            && w.dtype() == x.dtype()
            && (!depthwise || (cfg.groups == in_c && w.dim(0)? == in_c));
        if !fits {
            return self.forward_act(&conv.forward(x)?, None, act, train);
        }
        let geom = Geometry::new(x, w, cfg, depthwise)?;
        let (n, co, oh, ow) = geom.out_dims();
        let planes = Planes {
            n,
            c: co,
            s: oh * ow,
        };
        if train && planes.count() <= 1 {
            return Err(single_value_error(&[n, co, oh, ow], planes.count()));
        }
        let bn = Affine {
            weight: self.weight.as_ref(),
            bias: self.bias.as_ref(),
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            cfg: &self.cfg,
        };
        let params = channel_params(&bn, x, co, train)?;
        let saved = Arc::new(ConvBnSaved::default());
        let op = ConvBnApply {
            geom,
            depthwise,
            planes,
            act,
            eps: self.cfg.eps,
            train,
            saved: saved.clone(),
        };
        let y = x.contiguous()?.apply_op3(&w.contiguous()?, &params, op)?;
        if train {
            let Some(stats) = saved.stats.get() else {
                candle_core::bail!("conv-batch-norm: the forward left no batch statistics")
            };
            update_running(&bn, stats, planes.count())?;
        }
        Ok(y)
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

/// `(N, C, S)` view of a (N, C) or (N, C, H, W) tensor.
#[derive(Debug, Clone, Copy)]
struct Planes {
    n: usize,
    c: usize,
    s: usize,
}

impl Planes {
    fn of(x: &Tensor) -> Result<Self> {
        let d = x.dims();
        Ok(Self {
            n: d[0],
            c: d[1],
            s: d[2..].iter().product(),
        })
    }

    fn count(&self) -> usize {
        self.n * self.s
    }

    /// `f(c, plane)` for every (n, c) plane of `x`, combined per channel by `f64` sums of `K` values;
    /// parallel over channels.
    fn reduce<const K: usize>(&self, f: impl Fn(usize, usize) -> [f64; K] + Sync) -> Vec<[f64; K]> {
        (0..self.c)
            .into_par_iter()
            .map(|c| {
                let mut acc = [0f64; K];
                for b in 0..self.n {
                    let part = simd(|| f(c, (b * self.c + c) * self.s));
                    for (a, p) in acc.iter_mut().zip(part) {
                        *a += p;
                    }
                }
                acc
            })
            .collect()
    }

    /// Fills `out` plane by plane with `f(c, offset, plane)`, in parallel; `f` writes every element of its plane.
    fn map<T: Elem>(
        &self,
        out: &mut [MaybeUninit<T>],
        f: impl Fn(usize, usize, &mut [MaybeUninit<T>]) + Sync,
    ) {
        let (c, s) = (self.c, self.s.max(1));
        let chunk = plane_chunk(c, s);
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, ch)| {
            simd(|| {
                for (j, plane) in ch.chunks_mut(s).enumerate() {
                    let p = i * (chunk / s) + j;
                    f(p % c, p * s, plane);
                }
            })
        });
    }
}

/// The CPU path: one statistics pass, then [`BnApply`] (normalise, add, activate) with its fused backward.
fn fused_batch_norm(x: &Tensor, bn: &Affine, train: bool, epi: Epilogue) -> Result<Tensor> {
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
fn channel_params(bn: &Affine, x: &Tensor, c: usize, train: bool) -> Result<Tensor> {
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

/// PyTorch's running-statistics update from a batch's `(3, C)` statistics (mean, biased variance, ...) over
/// `count` values per channel: momentum average, unbiased variance.
fn update_running(bn: &Affine, stats: &Tensor, count: usize) -> Result<()> {
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

/// The error for a training batch with one value per channel, whose variance is undefined.
fn single_value_error(dims: &[usize], count: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "batch_norm: training needs more than one value per channel, got input {dims:?} (N*H*W = {count}); \
         use drop_last or a batch of at least 2"
    ))
}

/// `act(bn(conv(x)))` as one op: the convolution (dense or depthwise, no bias), the batch statistics of its
/// output, [`BnApply`]'s normalisation and activation; the backward runs BatchNorm's and then the conv's.
/// The conv output is kept inside the op instead of being a graph node, so candle's backward does not
/// zero-fill and add a gradient of its size.
struct ConvBnApply {
    geom: Geometry,
    depthwise: bool,
    planes: Planes,
    act: Activation,
    eps: f64,
    train: bool,
    saved: Arc<ConvBnSaved>,
}

/// What the forward of a [`ConvBnApply`] leaves for its backward and for the running-statistics update.
#[derive(Default)]
struct ConvBnSaved {
    /// The conv output, `(N, C_out, OH, OW)`.
    z: OnceLock<Tensor>,
    /// Its `(3, C_out)` batch statistics (training), for the running-statistics update.
    stats: OnceLock<Tensor>,
    /// The same statistics on the host, for the backward.
    batch: OnceLock<BatchStats>,
}

impl ConvBnApply {
    fn run<T: Elem>(&self, x: &[T], w: &[T], p: &[T]) -> Result<(CpuStorage, Shape)> {
        let (n, co, oh, ow) = self.geom.out_dims();
        let (z, _) = conv_forward(&self.geom, self.depthwise, x, w)?;
        let zs = T::slice(&z)?;
        let batch = if self.train {
            let (stats, _) = BnStats {
                planes: self.planes,
                eps: self.eps,
            }
            .run(zs)?;
            let st = T::slice(&stats)?;
            let c = self.planes.c;
            let batch = BatchStats::from_rows(&st[..c], &st[2 * c..]);
            let _ = self.saved.batch.set(batch.clone());
            let _ = self.saved.stats.set(cpu_tensor(stats, (3, c))?);
            Some(batch)
        } else {
            None
        };
        let (y, _) = BnApply {
            planes: self.planes,
            act: self.act,
            batch,
        }
        .run(zs, p, None)?;
        // A second forward through the same op (not something candle does) keeps the first conv output.
        let _ = self.saved.z.set(cpu_tensor(z, (n, co, oh, ow))?);
        Ok((y, Shape::from((n, co, oh, ow))))
    }

    /// The BatchNorm half, with the batch statistics the forward saved.
    fn bn(&self) -> Result<BnApply> {
        let batch = match (self.train, self.saved.batch.get()) {
            (false, _) => None,
            (true, Some(batch)) => Some(batch.clone()),
            (true, None) => {
                candle_core::bail!("conv-batch-norm backward: no batch statistics saved")
            }
        };
        Ok(BnApply {
            planes: self.planes,
            act: self.act,
            batch,
        })
    }
}

cpu_op!(CustomOp3 for ConvBnApply, "fgvc-conv-batch-norm";
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(z) = self.saved.z.get() else {
            candle_core::bail!("conv-batch-norm backward: the forward saved no conv output")
        };
        let (dz, dparams, _) = self.bn()?.grads(z, params, y, dy, false)?;
        let (dx, dw) = conv_grads(&self.geom, self.depthwise, x, w, &dz)?;
        Ok((dx, dw, Some(dparams)))
    }
);

/// Sums over a plane in blocks: `LANES` accumulators in the element type (so that the loop vectorises),
/// each block's total added in f64 (so that long planes keep their precision).
const LANES: usize = 8;
const BLOCK: usize = 512;

/// `(sum f0, sum f1)` over the elements of three equally long slices, where `f(a_i, b_i, c_i)` gives the two
/// terms of element `i`.
#[inline(always)]
fn block_sums<T: Elem>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> (T, T)) -> [f64; 2] {
    let n = a.len().min(b.len()).min(c.len());
    let mut total = [0f64; 2];
    for ((ab, bb), cb) in a[..n]
        .chunks(BLOCK)
        .zip(b[..n].chunks(BLOCK))
        .zip(c[..n].chunks(BLOCK))
    {
        let mut u = [T::ZERO; LANES];
        let mut v = [T::ZERO; LANES];
        let (a8, b8, c8) = (
            ab.chunks_exact(LANES),
            bb.chunks_exact(LANES),
            cb.chunks_exact(LANES),
        );
        let (ar, br, cr) = (a8.remainder(), b8.remainder(), c8.remainder());
        for ((x, y), z) in a8.zip(b8).zip(c8) {
            for l in 0..LANES {
                let (p, q) = f(x[l], y[l], z[l]);
                u[l] += p;
                v[l] += q;
            }
        }
        let (mut su, mut sv) = (T::ZERO, T::ZERO);
        for ((&x, &y), &z) in ar.iter().zip(br).zip(cr) {
            let (p, q) = f(x, y, z);
            su += p;
            sv += q;
        }
        for l in 0..LANES {
            su += u[l];
            sv += v[l];
        }
        total[0] += su.to_f64();
        total[1] += sv.to_f64();
    }
    total
}

/// Per-channel statistics of x: (3, C) rows mean, biased variance, 1/sqrt(var + eps). One pass of sums
/// shifted by each channel's first value (so that the one-pass variance does not cancel), parallel over
/// channels.
struct BnStats {
    planes: Planes,
    eps: f64,
}

impl BnStats {
    fn run<T: Elem>(&self, x: &[T]) -> Result<(CpuStorage, Shape)> {
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
struct BatchStats {
    mean: Vec<f64>,
    inv: Vec<f64>,
}

impl BatchStats {
    /// From the mean and inverse-std rows of a `(3, C)` statistics matrix.
    fn from_rows<T: Elem>(mean: &[T], inv: &[T]) -> Self {
        Self {
            mean: mean.iter().map(|v| v.to_f64()).collect(),
            inv: inv.iter().map(|v| v.to_f64()).collect(),
        }
    }
}

/// `y = act((x - mean) * inv * gamma + beta + residual)` with the batch statistics (training), or
/// `y = act(x * scale + shift + residual)` (eval, `batch` is `None`). Inputs: x, params (2, C) holding
/// [gamma; beta] or [scale; shift], and the optional residual. The backward differentiates through the
/// batch statistics in training.
struct BnApply {
    planes: Planes,
    act: Activation,
    batch: Option<BatchStats>,
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

    fn run<T: Elem>(&self, x: &[T], p: &[T], r: Option<&[T]>) -> Result<(CpuStorage, Shape)> {
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

    /// Gradients of x, params (2, C) and the residual from the output `y` and its gradient `dy`.
    fn grads(
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
                            per_activation!(act, ACT => simd(|| {
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
            let (a, b, centre, c0) = (k[ch], k[c + ch], k[2 * c + ch], k[3 * c + ch]);
            let n = out.len();
            let (gs, xs, ys) = (&dy[off..off + n], &x[off..off + n], &y[off..off + n]);
            for (((o, &g), &v), &yv) in out.iter_mut().zip(gs).zip(xs).zip(ys) {
                o.write(a * mask(g, yv) + b * (v - centre) + c0);
            }
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
