//! BatchNorm (2-d and 1-d) with PyTorch's train/eval semantics and running-statistics update.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, Var};
use rayon::prelude::*;

use crate::cpu::{contiguous, dispatch, fast_path, plane_chunk, Elem};
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
    let dims = x.dims().to_vec();
    if dims.len() != 2 && dims.len() != 4 {
        candle_core::bail!("batch_norm: expected (N, C) or (N, C, H, W), got {dims:?}")
    }
    let c = dims[1];
    if train {
        let count = x.elem_count() / c.max(1);
        if count <= 1 {
            candle_core::bail!(
                "batch_norm: training needs more than one value per channel, got input {dims:?} (N*H*W = {count}); \
                 use drop_last or a batch of at least 2"
            )
        }
    }
    if fast_path(x) {
        return fused_batch_norm(x, weight, bias, running_mean, running_var, train, cfg);
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
        batch_norm(
            x,
            self.weight.as_ref(),
            self.bias.as_ref(),
            &self.running_mean,
            &self.running_var,
            train,
            &self.cfg,
        )
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
                    let part = f(c, (b * self.c + c) * self.s);
                    for (a, p) in acc.iter_mut().zip(part) {
                        *a += p;
                    }
                }
                acc
            })
            .collect()
    }

    /// Fills `out` plane by plane with `f(c, offset, plane)`, in parallel.
    fn map<T: Elem>(&self, out: &mut [T], f: impl Fn(usize, usize, &mut [T]) + Sync) {
        let (c, s) = (self.c, self.s.max(1));
        let chunk = plane_chunk(c, s);
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, ch)| {
            for (j, plane) in ch.chunks_mut(s).enumerate() {
                let p = i * (chunk / s) + j;
                f(p % c, p * s, plane);
            }
        });
    }
}

/// The CPU path of [`batch_norm`]: fused statistics, normalisation and backward kernels.
fn fused_batch_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Var,
    running_var: &Var,
    train: bool,
    cfg: &BatchNormConfig,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let planes = Planes::of(&x)?;
    let c = planes.c;
    let gamma = match weight {
        Some(w) => w.to_dtype(x.dtype())?,
        None => Tensor::ones(c, x.dtype(), x.device())?,
    };
    let beta = match bias {
        Some(b) => b.to_dtype(x.dtype())?,
        None => Tensor::zeros(c, x.dtype(), x.device())?,
    };
    if train {
        let stats = x.apply_op1_no_bwd(&BnStats {
            planes,
            eps: cfg.eps,
        })?;
        let m = cfg.momentum;
        let count = planes.count() as f64;
        let rm = running_mean.as_tensor();
        let rv = running_var.as_tensor();
        let mean = stats.get(0)?.to_dtype(rm.dtype())?;
        let unbiased = stats
            .get(1)?
            .to_dtype(rv.dtype())?
            .affine(count / (count - 1.0), 0.)?;
        running_mean.set(&rm.affine(1. - m, 0.)?.add(&mean.affine(m, 0.)?)?)?;
        running_var.set(&rv.affine(1. - m, 0.)?.add(&unbiased.affine(m, 0.)?)?)?;
        let gb = Tensor::stack(&[&gamma, &beta], 0)?;
        x.apply_op3(&gb, &stats, BnTrain { planes })
    } else {
        let rm = running_mean.as_tensor().detach().to_dtype(x.dtype())?;
        let inv = running_var
            .as_tensor()
            .detach()
            .to_dtype(x.dtype())?
            .affine(1., cfg.eps)?
            .sqrt()?
            .recip()?;
        let scale = gamma.mul(&inv)?;
        let shift = beta.sub(&rm.mul(&scale)?)?;
        x.apply_op3(&scale, &shift, ChannelAffine { planes })
    }
}

/// Per-channel statistics of x: (3, C) rows mean, biased variance, 1/sqrt(var + eps). One pass, shifted
/// sums in f64, parallel over channels.
struct BnStats {
    planes: Planes,
    eps: f64,
}

impl BnStats {
    fn run<T: Elem>(&self, x: &[T]) -> Result<(CpuStorage, Shape)> {
        let p = self.planes;
        let s = p.s;
        // Shift by the channel's first value so that the one-pass variance does not cancel.
        let sums = p.reduce::<2>(|c, off| {
            let k = x[c * s].to_f64();
            let (mut sd, mut sdd) = (0f64, 0f64);
            for &v in &x[off..off + s] {
                let d = v.to_f64() - k;
                sd += d;
                sdd += d * d;
            }
            [sd, sdd]
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

impl CustomOp1 for BnStats {
    fn name(&self) -> &'static str {
        "fgvc-batch-norm-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s, T => self.run::<T>(contiguous(s, l)?))
    }
}

/// Training-mode normalisation: (x, [gamma; beta] (2, C), stats (3, C)) -> y = (x - mean) * invstd * gamma + beta.
/// The backward differentiates through the batch statistics.
struct BnTrain {
    planes: Planes,
}

impl BnTrain {
    fn run<T: Elem>(&self, x: &[T], gb: &[T], st: &[T]) -> Result<(CpuStorage, Shape)> {
        let c = self.planes.c;
        let mut y = vec![T::ZERO; x.len()];
        self.planes.map(&mut y, |ch, off, out| {
            let (mean, scale, shift) = (st[ch], gb[ch] * st[2 * c + ch], gb[c + ch]);
            for (o, &v) in out.iter_mut().zip(&x[off..]) {
                *o = (v - mean) * scale + shift;
            }
        });
        Ok((T::wrap(y), Shape::from(0)))
    }
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "fgvc-batch-norm-train"
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

    fn bwd(
        &self,
        x: &Tensor,
        gb: &Tensor,
        stats: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let p = self.planes;
        // (2, C): sum dy, sum dy * xhat.
        let sums = x.apply_op3_no_bwd(
            &dy,
            stats,
            &ChannelSums {
                planes: p,
                centred: true,
            },
        )?;
        let host = |t: &Tensor| t.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>();
        let (st, sm, g) = (host(stats)?, host(&sums)?, host(gb)?);
        let m = p.count() as f64;
        let mut coef = vec![0f64; 4 * p.c];
        for c in 0..p.c {
            let k = g[0][c] * st[2][c];
            coef[c] = k;
            coef[p.c + c] = -k * st[2][c] * sm[1][c] / m;
            coef[2 * p.c + c] = st[0][c];
            coef[3 * p.c + c] = -k * sm[0][c] / m;
        }
        let coef = Tensor::from_vec(coef, (4, p.c), x.device())?.to_dtype(x.dtype())?;
        let dx = dy.apply_op3_no_bwd(x, &coef, &ChannelGrad { planes: p })?;
        // d gamma = sum dy * xhat, d beta = sum dy.
        let dgb = Tensor::stack(&[sums.get(1)?, sums.get(0)?], 0)?;
        Ok((Some(dx), Some(dgb), None))
    }
}

/// Per-channel sums of dy (row 0) and dy * (x - m) * s (row 1): (x, dy, stats) -> (2, C), where `m`, `s` are
/// rows 0 and 2 of `stats` when `centred`, else 0 and 1 (then row 1 is sum dy * x).
struct ChannelSums {
    planes: Planes,
    centred: bool,
}

impl ChannelSums {
    fn run<T: Elem>(&self, x: &[T], dy: &[T], st: &[T]) -> Result<(CpuStorage, Shape)> {
        let p = self.planes;
        let sums = p.reduce::<2>(|c, off| {
            let (mean, inv) = if self.centred {
                (st[c], st[2 * p.c + c])
            } else {
                (T::ZERO, T::ONE)
            };
            let (mut a, mut b) = (0f64, 0f64);
            for (&g, &v) in dy[off..off + p.s].iter().zip(&x[off..off + p.s]) {
                let g = g.to_f64();
                a += g;
                b += g * ((v - mean) * inv).to_f64();
            }
            [a, b]
        });
        let mut out = vec![T::ZERO; 2 * p.c];
        for (c, [a, b]) in sums.into_iter().enumerate() {
            out[c] = T::from_f64(a);
            out[p.c + c] = T::from_f64(b);
        }
        Ok((T::wrap(out), Shape::from((2, p.c))))
    }
}

impl CustomOp3 for ChannelSums {
    fn name(&self) -> &'static str {
        "fgvc-batch-norm-sums"
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
        dispatch!(self.name(), s1, T => self.run::<T>(contiguous(s1, l1)?, contiguous(s2, l2)?, contiguous(s3, l3)?))
    }
}

/// Training-mode input gradient: (dy, x, coef (4, C)) -> dx = A dy + B (x - mean) + C0 with coef rows A, B, mean, C0.
struct ChannelGrad {
    planes: Planes,
}

impl ChannelGrad {
    fn run<T: Elem>(&self, dy: &[T], x: &[T], k: &[T]) -> Result<(CpuStorage, Shape)> {
        let c = self.planes.c;
        let mut dx = vec![T::ZERO; x.len()];
        self.planes.map(&mut dx, |ch, off, out| {
            let (a, b, mean, c0) = (k[ch], k[c + ch], k[2 * c + ch], k[3 * c + ch]);
            for ((o, &g), &v) in out.iter_mut().zip(&dy[off..]).zip(&x[off..]) {
                *o = a * g + b * (v - mean) + c0;
            }
        });
        Ok((T::wrap(dx), Shape::from(0)))
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

/// Eval-mode BatchNorm: (x, scale (C), shift (C)) -> x * scale + shift per channel, with gradients to all three.
struct ChannelAffine {
    planes: Planes,
}

impl ChannelAffine {
    fn run<T: Elem>(&self, x: &[T], scale: &[T], shift: &[T]) -> Result<(CpuStorage, Shape)> {
        let mut y = vec![T::ZERO; x.len()];
        self.planes.map(&mut y, |ch, off, out| {
            let (a, b) = (scale[ch], shift[ch]);
            for (o, &v) in out.iter_mut().zip(&x[off..]) {
                *o = v * a + b;
            }
        });
        Ok((T::wrap(y), Shape::from(0)))
    }
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "fgvc-channel-affine"
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

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let p = self.planes;
        let dx = dy.apply_op3_no_bwd(scale, &scale.zeros_like()?, &ChannelAffine { planes: p })?;
        let dummy = Tensor::zeros((3, p.c), x.dtype(), x.device())?;
        let sums = x.apply_op3_no_bwd(
            &dy,
            &dummy,
            &ChannelSums {
                planes: p,
                centred: false,
            },
        )?;
        Ok((Some(dx), Some(sums.get(1)?), Some(sums.get(0)?)))
    }
}
