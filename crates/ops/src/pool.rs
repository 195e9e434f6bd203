//! Pooling with gradients routed to the argmax (candle's max-pool backward scales them by 1/(k*k) and has
//! none for overlapping windows), average pooling over arbitrary windows, adaptive average pooling.
//!
//! On the CPU (f32/f64) every pool is a custom op parallel over (n, c) planes; elsewhere compositions of
//! candle ops with the same results.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cpu::{contiguous, dispatch, fast_path, simd, written, zeroed, Elem};

/// Max pooling with a `k` x `k` window, `stride` and `-inf` padding (`nn.MaxPool2d(k, stride, padding)`).
///
/// The gradient of each output goes to the first maximum of its window in row-major order, as in PyTorch;
/// overlapping windows (the ResNet stem's 3x3/2 with padding 1) add their gradients up.
pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if k == 0 || stride == 0 {
        candle_core::bail!("max_pool2d: kernel {k} and stride {stride} must be positive")
    }
    if 2 * padding > k {
        candle_core::bail!("max_pool2d: padding {padding} must be at most half the kernel {k}")
    }
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    if hp < k || wp < k {
        candle_core::bail!("max_pool2d: window {k} larger than padded input {hp}x{wp}")
    }
    if fast_path(x) {
        let op = MaxPool {
            k: (k, k),
            s: (stride, stride),
            p: (padding, padding),
        };
        return x.contiguous()?.apply_op1(MaxPoolOp::new(op));
    }
    if padding == 0 && k == stride && h % k == 0 && w % k == 0 {
        return x.reshape((n, c, h / k, k, w / k, k))?.max(5)?.max(3);
    }
    let x = if padding > 0 {
        pad_neg_inf(x, padding)?
    } else {
        x.clone()
    };
    let (ho, wo) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
    let mut out: Option<Tensor> = None;
    for dy in 0..k {
        let rows = Tensor::arange_step(
            dy as u32,
            (dy + (ho - 1) * stride + 1) as u32,
            stride as u32,
            x.device(),
        )?;
        let xr = x.index_select(&rows, 2)?;
        for dx in 0..k {
            let cols = Tensor::arange_step(
                dx as u32,
                (dx + (wo - 1) * stride + 1) as u32,
                stride as u32,
                x.device(),
            )?;
            let v = xr.index_select(&cols, 3)?;
            out = Some(match out {
                None => v,
                Some(m) => m.maximum(&v)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("max_pool2d: empty window".into()))
}

fn pad_neg_inf(x: &Tensor, p: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
        Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())
    };
    let side = fill((n, c, h, p))?;
    let x = Tensor::cat(&[&side, x, &side], 3)?;
    let top = fill((n, c, p, w + 2 * p))?;
    Tensor::cat(&[&top, &x, &top], 2)
}

/// Average pooling `nn.AvgPool2d(k, stride)` (no padding, floor mode).
///
/// Any stride on the CPU; elsewhere only `k == stride`.
pub fn avg_pool2d(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if k == 0 || stride == 0 || h < k || w < k {
        candle_core::bail!("avg_pool2d: kernel {k}, stride {stride} do not fit input {h}x{w}")
    }
    if fast_path(x) {
        let windows = |len: usize| {
            (0..(len - k) / stride + 1)
                .map(|i| (i * stride, i * stride + k))
                .collect()
        };
        return AvgWindows {
            rows: windows(h),
            cols: windows(w),
            h,
            w,
        }
        .apply(x);
    }
    if k == stride {
        let (ho, wo) = (h / k, w / k);
        let x = x.narrow(2, 0, ho * k)?.narrow(3, 0, wo * k)?;
        return x.reshape((n, c, ho, k, wo, k))?.mean(5)?.mean(3);
    }
    candle_core::bail!(
        "avg_pool2d: off the CPU only kernel == stride is implemented, got k={k} s={stride}"
    )
}

/// `nn.AdaptiveAvgPool2d((oh, ow))`: output cell `i` averages input rows `floor(i*H/oh) .. ceil((i+1)*H/oh)`
/// (PyTorch's formula; windows may overlap or differ in size when `H` is not a multiple of `oh`), likewise columns.
pub fn adaptive_avg_pool2d(x: &Tensor, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if oh == 0 || ow == 0 || h == 0 || w == 0 {
        candle_core::bail!("adaptive_avg_pool2d: output {oh}x{ow} from input {h}x{w}")
    }
    let windows = |len: usize, out: usize| -> Vec<(usize, usize)> {
        (0..out)
            .map(|i| ((i * len) / out, ((i + 1) * len).div_ceil(out)))
            .collect()
    };
    if fast_path(x) {
        return AvgWindows {
            rows: windows(h, oh),
            cols: windows(w, ow),
            h,
            w,
        }
        .apply(x);
    }
    if h % oh == 0 && w % ow == 0 {
        let (kh, kw) = (h / oh, w / ow);
        return x.reshape((n, c, oh, kh, ow, kw))?.mean(5)?.mean(3);
    }
    let mut rows = Vec::with_capacity(oh);
    for (hs, he) in windows(h, oh) {
        let xr = x.narrow(2, hs, he - hs)?.mean_keepdim(2)?;
        let mut cells = Vec::with_capacity(ow);
        for (ws, we) in windows(w, ow) {
            cells.push(xr.narrow(3, ws, we - ws)?.mean_keepdim(3)?);
        }
        rows.push(Tensor::cat(&cells, 3)?);
    }
    Tensor::cat(&rows, 2)
}

/// Global max over H and W: (N, C, H, W) -> (N, C); the gradient goes to the first maximum of each plane.
pub fn global_max_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if fast_path(x) {
        let op = MaxPool {
            k: (h, w),
            s: (1, 1),
            p: (0, 0),
        };
        return x
            .contiguous()?
            .apply_op1(MaxPoolOp::new(op))?
            .reshape((n, c));
    }
    x.flatten_from(2)?.max(D::Minus1)
}

/// Global average over H and W: (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if fast_path(x) {
        return AvgWindows {
            rows: vec![(0, h)],
            cols: vec![(0, w)],
            h,
            w,
        }
        .apply(x)?
        .reshape((n, c));
    }
    let x = if x.dtype() == DType::F16 || x.dtype() == DType::BF16 {
        x.to_dtype(DType::F32)?
    } else {
        x.clone()
    };
    x.flatten_from(2)?.mean(D::Minus1)
}

/// Max pooling kernel: window `k`, stride `s`, `-inf` padding `p`, each `(height, width)`.
#[derive(Debug, Clone, Copy)]
struct MaxPool {
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
}

impl MaxPool {
    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + 2 * self.p.0 - self.k.0) / self.s.0 + 1,
            (w + 2 * self.p.1 - self.k.1) / self.s.1 + 1,
        )
    }

    /// Calls `f(output index, window max, argmax)` for every output window of a plane. The argmax is the
    /// plane index of the window's first maximum in row-major order (PyTorch's rule): of its first NaN when
    /// it has one (the max is then NaN, as PyTorch propagates it), of its first element when every element is
    /// `-inf`. Inlined into its caller's [`simd!`](crate::cpu::simd) body so that it runs at the ISA level.
    #[inline(always)]
    fn windows<T: Elem>(
        &self,
        plane: &[T],
        h: usize,
        w: usize,
        (oh, ow): (usize, usize),
        mut f: impl FnMut(usize, T, usize),
    ) {
        for oy in 0..oh {
            let y0 = (oy * self.s.0) as isize - self.p.0 as isize;
            let (ys, ye) = (
                y0.max(0) as usize,
                ((y0 + self.k.0 as isize) as usize).min(h),
            );
            for ox in 0..ow {
                let x0 = (ox * self.s.1) as isize - self.p.1 as isize;
                let (xs, xe) = (
                    x0.max(0) as usize,
                    ((x0 + self.k.1 as isize) as usize).min(w),
                );
                // Strictly greater keeps the first maximum; selects rather than branches.
                let (mut m, mut at) = (T::NEG_INF, ys * w + xs);
                let mut nan_at = usize::MAX;
                for iy in ys..ye {
                    for ix in xs..xe {
                        let i = iy * w + ix;
                        let v = plane[i];
                        let more = v > m;
                        m = if more { v } else { m };
                        at = if more { i } else { at };
                        #[allow(clippy::eq_op)]
                        let first_nan = (v != v) & (nan_at == usize::MAX);
                        nan_at = if first_nan { i } else { nan_at };
                    }
                }
                if nan_at != usize::MAX {
                    (m, at) = (T::from_f64(f64::NAN), nan_at);
                }
                f(oy * ow + ox, m, at);
            }
        }
    }
}

/// A max-pool application: the forward records each window's argmax (its first maximum, PyTorch's rule) so
/// that the backward is a scatter, as PyTorch's `max_pool2d_with_indices`.
struct MaxPoolOp {
    pool: MaxPool,
    /// Per output, the plane-local index of its window's first maximum; set by the CPU forward.
    argmax: OnceLock<Arc<Vec<u32>>>,
}

impl MaxPoolOp {
    fn new(pool: MaxPool) -> Self {
        Self {
            pool,
            argmax: OnceLock::new(),
        }
    }

    fn fwd<T: Elem>(&self, x: &[T], l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        if h * w > u32::MAX as usize {
            candle_core::bail!("max_pool2d: a {h}x{w} plane is too large for 32-bit argmax indices")
        }
        let (oh, ow) = self.pool.out_size(h, w);
        let mut y = vec![T::ZERO; n * c * oh * ow];
        let mut argmax = vec![0u32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow)
            .zip(argmax.par_chunks_mut(oh * ow))
            .enumerate()
            .for_each(|(p, (out, idx))| {
                simd!({
                    let plane = &x[p * h * w..(p + 1) * h * w];
                    self.pool.windows(plane, h, w, (oh, ow), |o, m, at| {
                        out[o] = m;
                        idx[o] = at as u32;
                    });
                })
            });
        // A second forward through the same op (not something candle does) keeps the first indices.
        let _ = self.argmax.set(Arc::new(argmax));
        Ok((T::wrap(y), Shape::from((n, c, oh, ow))))
    }
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "fgvc-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s, T => self.fwd::<T>(contiguous(s, l)?, l))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let Some(argmax) = self.argmax.get() else {
            candle_core::bail!("max_pool2d backward: the forward recorded no argmax")
        };
        let (_, _, h, w) = x.dims4()?;
        let op = MaxPoolScatter {
            argmax: argmax.clone(),
            h,
            w,
        };
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// Max pooling backward: dy (N, C, OH, OW) -> dx (N, C, H, W), each output's gradient added at its argmax.
struct MaxPoolScatter {
    argmax: Arc<Vec<u32>>,
    h: usize,
    w: usize,
}

impl MaxPoolScatter {
    fn run<T: Elem>(&self, dy: &[T], l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, oh, ow) = l.shape().dims4()?;
        if self.argmax.len() != dy.len() {
            candle_core::bail!(
                "max_pool2d backward: gradient {:?} does not match the forward's output",
                l.shape().dims()
            )
        }
        let (h, w) = (self.h, self.w);
        // SAFETY: every plane is zero-filled by its task before the gradients are added in.
        let dx = unsafe {
            written(n * c * h * w, |dx| {
                dx.par_chunks_mut(h * w)
                    .zip(dy.par_chunks(oh * ow).zip(self.argmax.par_chunks(oh * ow)))
                    .for_each(|(dplane, (g, idx))| {
                        let dplane = zeroed(dplane);
                        for (&g, &i) in g.iter().zip(idx) {
                            dplane[i as usize] += g;
                        }
                    })
            })
        };
        Ok((T::wrap(dx), Shape::from((n, c, h, w))))
    }
}

impl CustomOp1 for MaxPoolScatter {
    fn name(&self) -> &'static str {
        "fgvc-max-pool2d-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s, T => self.run::<T>(contiguous(s, l)?, l))
    }
}

/// Average over rectangular windows: output `(i, j)` is the mean of input rows `rows[i].0..rows[i].1` and
/// columns `cols[j].0..cols[j].1`. Covers `AvgPool2d(k, s)`, adaptive and global average pooling.
#[derive(Debug, Clone)]
struct AvgWindows {
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
    h: usize,
    w: usize,
}

impl AvgWindows {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1(self)
    }

    fn fwd<T: Elem>(&self, x: &[T], l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = (self.rows.len(), self.cols.len());
        let mut y = vec![T::ZERO; n * c * oh * ow];
        y.par_chunks_mut(oh * ow).enumerate().for_each(|(p, out)| {
            simd!({
                let plane = &x[p * h * w..(p + 1) * h * w];
                for (oy, &(ys, ye)) in self.rows.iter().enumerate() {
                    for (ox, &(xs, xe)) in self.cols.iter().enumerate() {
                        let mut sum = T::ZERO;
                        for iy in ys..ye {
                            for &v in &plane[iy * w + xs..iy * w + xe] {
                                sum += v;
                            }
                        }
                        out[oy * ow + ox] = sum / T::from_f64(((ye - ys) * (xe - xs)) as f64);
                    }
                }
            })
        });
        Ok((T::wrap(y), Shape::from((n, c, oh, ow))))
    }

    fn grad<T: Elem>(&self, dy: &[T], l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, oh, ow) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        let mut dx = vec![T::ZERO; n * c * h * w];
        dx.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(p, dplane)| {
                simd!({
                    let gplane = &dy[p * oh * ow..(p + 1) * oh * ow];
                    for (oy, &(ys, ye)) in self.rows.iter().enumerate() {
                        for (ox, &(xs, xe)) in self.cols.iter().enumerate() {
                            let g =
                                gplane[oy * ow + ox] / T::from_f64(((ye - ys) * (xe - xs)) as f64);
                            for iy in ys..ye {
                                for d in &mut dplane[iy * w + xs..iy * w + xe] {
                                    *d += g;
                                }
                            }
                        }
                    }
                })
            });
        Ok((T::wrap(dx), Shape::from((n, c, h, w))))
    }
}

impl CustomOp1 for AvgWindows {
    fn name(&self) -> &'static str {
        "fgvc-avg-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s, T => self.fwd::<T>(contiguous(s, l)?, l))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            dy.contiguous()?
                .apply_op1_no_bwd(&AvgWindowsGrad(self.clone()))?,
        ))
    }
}

/// Average pooling backward: dy -> dx, each output's gradient spread evenly over its window.
struct AvgWindowsGrad(AvgWindows);

impl CustomOp1 for AvgWindowsGrad {
    fn name(&self) -> &'static str {
        "fgvc-avg-pool2d-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s, T => self.0.grad::<T>(contiguous(s, l)?, l))
    }
}
