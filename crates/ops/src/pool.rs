//! Pooling with gradients routed to the argmax (candle's max-pool backward scales them by 1/(k*k) and has
//! none for overlapping windows), average pooling over arbitrary windows, adaptive average pooling.
//!
//! On the CPU (f32/f64) every pool is a custom op parallel over (n, c) planes; elsewhere compositions of
//! candle ops with the same results.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cpu::{contiguous, dispatch, fast_path, simd, Elem};

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
        return x.contiguous()?.apply_op1(op);
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
        return x.contiguous()?.apply_op1(op)?.reshape((n, c));
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

    /// Calls `f(output index, window max, row range, column range)` for every output window of a plane.
    fn windows<T: Elem>(
        &self,
        plane: &[T],
        h: usize,
        w: usize,
        (oh, ow): (usize, usize),
        mut f: impl FnMut(usize, T, (usize, usize), (usize, usize)),
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
                // Value-only max as selects (compiles to `maxss`), NaN tracked on the side: PyTorch propagates it.
                let mut m = T::NEG_INF;
                let mut nan = false;
                for iy in ys..ye {
                    for &v in &plane[iy * w + xs..iy * w + xe] {
                        m = if v > m { v } else { m };
                        #[allow(clippy::eq_op)]
                        let is_nan = v != v;
                        nan |= is_nan;
                    }
                }
                if nan {
                    m = T::from_f64(f64::NAN);
                }
                f(oy * ow + ox, m, (ys, ye), (xs, xe));
            }
        }
    }

    /// Index (into the plane) of the first element of the window equal to `m` (or NaN when `m` is), PyTorch's
    /// argmax; the window's first element when none matches (an all `-inf` window). Scans backwards with
    /// selects so that the last hit, i.e. the first in row-major order, wins without branches.
    fn first_max<T: Elem>(
        plane: &[T],
        w: usize,
        m: T,
        (ys, ye): (usize, usize),
        (xs, xe): (usize, usize),
    ) -> usize {
        #[allow(clippy::eq_op)]
        let want_nan = m != m;
        let mut best = ys * w + xs;
        for iy in (ys..ye).rev() {
            for ix in (xs..xe).rev() {
                let v = plane[iy * w + ix];
                #[allow(clippy::eq_op)]
                let hit = (v == m) | (want_nan & (v != v));
                best = if hit { iy * w + ix } else { best };
            }
        }
        best
    }

    fn fwd<T: Elem>(&self, x: &[T], l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = self.out_size(h, w);
        let mut y = vec![T::ZERO; n * c * oh * ow];
        y.par_chunks_mut(oh * ow).enumerate().for_each(|(p, out)| {
            simd(|| {
                let plane = &x[p * h * w..(p + 1) * h * w];
                self.windows(plane, h, w, (oh, ow), |o, m, _, _| out[o] = m);
            })
        });
        Ok((T::wrap(y), Shape::from((n, c, oh, ow))))
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "fgvc-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s, T => self.fwd::<T>(contiguous(s, l)?, l))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &dy.contiguous()?,
            &MaxPoolGrad(*self),
        )?))
    }
}

/// Max pooling backward: (x, dy) -> dx, routing each output gradient to its window's first maximum.
struct MaxPoolGrad(MaxPool);

impl MaxPoolGrad {
    fn run<T: Elem>(&self, x: &[T], l: &Layout, dy: &[T]) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = self.0.out_size(h, w);
        let mut dx = vec![T::ZERO; n * c * h * w];
        dx.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(p, dplane)| {
                simd(|| {
                    let plane = &x[p * h * w..(p + 1) * h * w];
                    let gplane = &dy[p * oh * ow..(p + 1) * oh * ow];
                    self.0.windows(plane, h, w, (oh, ow), |o, m, rows, cols| {
                        dplane[MaxPool::first_max(plane, w, m, rows, cols)] += gplane[o];
                    });
                })
            });
        Ok((T::wrap(dx), Shape::from((n, c, h, w))))
    }
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "fgvc-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s1, T => self.run::<T>(contiguous(s1, l1)?, l1, contiguous(s2, l2)?))
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
            simd(|| {
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
                simd(|| {
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
