//! CPU kernels of the dense and depthwise convolutions, as candle custom ops with backward passes.
//!
//! Dense: forward `Y_b = W (C_out x K) * cols_b (K x OH*OW)`, input gradient `dcols_b = W^T * dY_b` then col2im,
//! weight gradient `dW += dY_b * cols_b^T`, with `K = C_in*kH*kW`; a 1x1 stride-1 unpadded conv uses the image
//! itself as `cols_b`. Depthwise: direct loops, parallel over (n, c) planes (weight gradient over c).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::conv::Conv2dConfig;
use crate::cpu::{
    at_isa_level, cpu_op, matmul, simd, valid_range, written, zeroed, Elem, Mat, SharedLhs,
};

/// Every size of one convolution call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    pub(crate) n: usize,
    pub(crate) ci: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) co: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl Geometry {
    /// Checks `x` (N, C, H, W) against `weight` ((C_out, C_in, kH, kW), or (C, 1, kH, kW) when `depthwise`).
    pub(crate) fn new(
        x: &Tensor,
        weight: &Tensor,
        cfg: &Conv2dConfig,
        depthwise: bool,
    ) -> Result<Self> {
        let (n, ci, h, w) = x.dims4()?;
        let (co, wci, kh, kw) = weight.dims4()?;
        if depthwise {
            if wci != 1 || co != ci {
                candle_core::bail!(
                    "depthwise_conv2d: weight {:?} does not fit input {:?}",
                    weight.dims(),
                    x.dims()
                )
            }
        } else if wci != ci {
            candle_core::bail!(
                "conv2d: weight {:?} does not fit input {:?}",
                weight.dims(),
                x.dims()
            )
        }
        let (sh, sw) = cfg.stride;
        let (ph, pw) = cfg.padding;
        let (dh, dw) = cfg.dilation;
        if sh == 0 || sw == 0 || dh == 0 || dw == 0 || kh == 0 || kw == 0 {
            candle_core::bail!(
                "conv2d: zero stride, dilation or kernel size in {cfg:?}, kernel {kh}x{kw}"
            )
        }
        if h + 2 * ph < dh * (kh - 1) + 1 || w + 2 * pw < dw * (kw - 1) + 1 {
            candle_core::bail!("conv2d: kernel {kh}x{kw} (dilation {dh}x{dw}) larger than padded input {h}x{w} + {ph}x{pw}")
        }
        let (oh, ow) = cfg.output_size((h, w), (kh, kw));
        Ok(Self {
            n,
            ci,
            h,
            w,
            co,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            oh,
            ow,
        })
    }

    /// The output's `(N, C_out, OH, OW)`.
    pub(crate) fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.co, self.oh, self.ow)
    }

    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }

    fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Input row offset of kernel row `ky` (input row = `oy * sh + offset`).
    fn yoff(&self, ky: usize) -> isize {
        (ky * self.dh) as isize - self.ph as isize
    }

    fn xoff(&self, kx: usize) -> isize {
        (kx * self.dw) as isize - self.pw as isize
    }
}

/// Fills `cols` (C_in*kH*kW, OH*OW) from one image `x` (C_in, H, W); parallel over the rows of `cols` when
/// `parallel`.
fn im2col<T: Elem>(g: &Geometry, x: &[T], cols: &mut [T], parallel: bool) {
    let (ohw, hw, kk) = (g.ohw(), g.hw(), g.kh * g.kw);
    let fill = |(r, row): (usize, &mut [T])| {
        simd!({
            let (c, ky, kx) = (r / kk, (r % kk) / g.kw, r % g.kw);
            let plane = &x[c * hw..(c + 1) * hw];
            let (yoff, xoff) = (g.yoff(ky), g.xoff(kx));
            let ys = valid_range(g.oh, g.h, g.sh, yoff);
            let xs = valid_range(g.ow, g.w, g.sw, xoff);
            for oy in 0..g.oh {
                let out = &mut row[oy * g.ow..(oy + 1) * g.ow];
                if !ys.contains(&oy) {
                    out.fill(T::ZERO);
                    continue;
                }
                let iy = (oy as isize * g.sh as isize + yoff) as usize;
                let inrow = &plane[iy * g.w..(iy + 1) * g.w];
                out[..xs.start].fill(T::ZERO);
                out[xs.end..].fill(T::ZERO);
                if g.sw == 1 {
                    let ix0 = (xs.start as isize + xoff) as usize;
                    out[xs.clone()].copy_from_slice(&inrow[ix0..ix0 + xs.len()]);
                } else {
                    for ox in xs.clone() {
                        out[ox] = inrow[(ox as isize * g.sw as isize + xoff) as usize];
                    }
                }
            }
        })
    };
    if parallel {
        cols.par_chunks_mut(ohw).enumerate().for_each(fill);
    } else {
        cols.chunks_mut(ohw).enumerate().for_each(fill);
    }
}

/// Scatters `dcols` (C_in*kH*kW, OH*OW) back into one image gradient `dx` (C_in, H, W), writing every element;
/// parallel over channels when `parallel`.
fn col2im<T: Elem>(g: &Geometry, dcols: &[T], dx: &mut [MaybeUninit<T>], parallel: bool) {
    let (ohw, hw, kk) = (g.ohw(), g.hw(), g.kh * g.kw);
    let scatter = |(c, plane): (usize, &mut [MaybeUninit<T>])| {
        simd!({
            let plane = zeroed(plane);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = &dcols[(c * kk + ky * g.kw + kx) * ohw..][..ohw];
                    let (yoff, xoff) = (g.yoff(ky), g.xoff(kx));
                    let xs = valid_range(g.ow, g.w, g.sw, xoff);
                    for oy in valid_range(g.oh, g.h, g.sh, yoff) {
                        let iy = (oy as isize * g.sh as isize + yoff) as usize;
                        let inrow = &mut plane[iy * g.w..(iy + 1) * g.w];
                        let grow = &row[oy * g.ow..(oy + 1) * g.ow];
                        if g.sw == 1 {
                            let ix0 = (xs.start as isize + xoff) as usize;
                            for (d, &v) in
                                inrow[ix0..ix0 + xs.len()].iter_mut().zip(&grow[xs.clone()])
                            {
                                *d += v;
                            }
                        } else {
                            for ox in xs.clone() {
                                inrow[(ox as isize * g.sw as isize + xoff) as usize] += grow[ox];
                            }
                        }
                    }
                }
            }
        })
    };
    if parallel {
        dx.par_chunks_mut(hw).enumerate().for_each(scatter);
    } else {
        dx.chunks_mut(hw).enumerate().for_each(scatter);
    }
}

/// Whether a convolution runs one image per rayon task (each GEMM on one thread) rather than one image
/// at a time with each GEMM split across the threads: with at least as many images as threads, splitting
/// the batch needs no synchronisation inside the products, which is what small maps (14x14, 7x7) lose most
/// time to.
fn per_image(g: &Geometry) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && g.n >= threads
}

/// The output of a dense (`depthwise` false) or depthwise convolution of `x` by `w`, both contiguous.
pub(crate) fn conv_forward<T: Elem>(
    geom: &Geometry,
    depthwise: bool,
    x: &[T],
    w: &[T],
) -> Result<(CpuStorage, Shape)> {
    if depthwise {
        DepthwiseOp { geom: *geom }.run(x, w)
    } else {
        ConvOp { geom: *geom }.run(x, w)
    }
}

/// The input and weight gradients of a dense or depthwise convolution from the output gradient `dy`. An input
/// that is neither a variable nor computed from one (the image batch) gets no gradient, as in PyTorch: for
/// the stem that skips a full-resolution GEMM and col2im. A frozen (detached) weight likewise.
pub(crate) fn conv_grads(
    geom: &Geometry,
    depthwise: bool,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dy = dy.contiguous()?;
    let geom = *geom;
    let dx = match (x.track_op(), depthwise) {
        (false, _) => None,
        (true, false) => Some(dy.apply_op2_no_bwd(w, &ConvGradInput { geom })?),
        (true, true) => Some(dy.apply_op2_no_bwd(w, &DepthwiseGradInput { geom })?),
    };
    let dw = match (w.track_op(), depthwise) {
        (false, _) => None,
        (true, false) => Some(x.apply_op2_no_bwd(&dy, &ConvGradWeight { geom })?),
        (true, true) => Some(x.apply_op2_no_bwd(&dy, &DepthwiseGradWeight { geom })?),
    };
    Ok((dx, dw))
}

/// The `cuda_fwd` of a convolution op (the `cuda` feature): its `$pass` through cuDNN, dense or depthwise.
macro_rules! cudnn_pass {
    ($pass:ident, $depthwise:expr) => {
        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            s1: &candle_core::CudaStorage,
            l1: &candle_core::Layout,
            s2: &candle_core::CudaStorage,
            l2: &candle_core::Layout,
        ) -> Result<(candle_core::CudaStorage, Shape)> {
            crate::cuda::conv::launch(
                crate::cuda::conv::Pass::$pass,
                &self.geom,
                $depthwise,
                (s1, l1),
                (s2, l2),
            )
        }
    };
}

/// Dense conv forward: (x, weight) -> y.
pub(crate) struct ConvOp {
    pub(crate) geom: Geometry,
}

impl ConvOp {
    fn run<T: Elem>(&self, x: &[T], w: &[T]) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let (k, ohw, chw) = (g.ci * g.kh * g.kw, g.ohw(), g.ci * g.hw());
        let cols_len = if g.pointwise() { 0 } else { k * ohw };
        let weights = SharedLhs::new(Mat::rows(w, k), g.co, k);
        let image = |b: usize, yb: &mut [MaybeUninit<T>], cols: &mut Vec<T>, parallel: bool| {
            let xb = &x[b * chw..(b + 1) * chw];
            let rhs: &[T] = if g.pointwise() {
                xb
            } else {
                im2col(g, xb, cols, parallel);
                cols
            };
            weights.matmul_write(ohw, yb, Mat::rows(rhs, ohw), parallel);
        };
        // SAFETY: the images' products write their (C_out, OH*OW) blocks, which tile the output.
        let y = unsafe {
            written(g.n * g.co * ohw, |y| {
                if per_image(g) {
                    y.par_chunks_mut(g.co * ohw).enumerate().for_each_init(
                        || vec![T::ZERO; cols_len],
                        |cols, (b, yb)| image(b, yb, cols, false),
                    );
                } else {
                    let mut cols = vec![T::ZERO; cols_len];
                    for (b, yb) in y.chunks_mut(g.co * ohw).enumerate() {
                        image(b, yb, &mut cols, true);
                    }
                }
            })
        };
        Ok((T::wrap(y), Shape::from((g.n, g.co, g.oh, g.ow))))
    }
}

cpu_op!(CustomOp2 for ConvOp, "fgvc-conv2d";
    cudnn_pass!(Forward, false);
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        conv_grads(&self.geom, false, x, w, dy)
    }
);

/// Dense conv input gradient: (dy, weight) -> dx.
pub(crate) struct ConvGradInput {
    geom: Geometry,
}

impl ConvGradInput {
    fn run<T: Elem>(&self, dy: &[T], w: &[T]) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let (k, ohw, chw) = (g.ci * g.kh * g.kw, g.ohw(), g.ci * g.hw());
        let cols_len = if g.pointwise() { 0 } else { k * ohw };
        // W^T (k x C_out; k = C_in for a 1x1).
        let wt = SharedLhs::new(Mat::transposed(w, k), k, g.co);
        let image = |b: usize, dxb: &mut [MaybeUninit<T>], dcols: &mut Vec<T>, parallel: bool| {
            let dyb = Mat::rows(&dy[b * g.co * ohw..(b + 1) * g.co * ohw], ohw);
            if g.pointwise() {
                wt.matmul_write(ohw, dxb, dyb, parallel);
            } else {
                wt.matmul(ohw, dcols, false, dyb, parallel);
                col2im(g, dcols, dxb, parallel);
            }
        };
        // SAFETY: each image's product (1x1) or col2im (otherwise) writes its whole (C_in, H, W) block.
        let dx = unsafe {
            written(g.n * chw, |dx| {
                if per_image(g) {
                    dx.par_chunks_mut(chw).enumerate().for_each_init(
                        || vec![T::ZERO; cols_len],
                        |dcols, (b, dxb)| image(b, dxb, dcols, false),
                    );
                } else {
                    let mut dcols = vec![T::ZERO; cols_len];
                    for (b, dxb) in dx.chunks_mut(chw).enumerate() {
                        image(b, dxb, &mut dcols, true);
                    }
                }
            })
        };
        Ok((T::wrap(dx), Shape::from((g.n, g.ci, g.h, g.w))))
    }
}

cpu_op!(CustomOp2 for ConvGradInput, "fgvc-conv2d-grad-input"; cudnn_pass!(BackwardData, false););

/// Dense conv weight gradient: (x, dy) -> dweight.
pub(crate) struct ConvGradWeight {
    geom: Geometry,
}

impl ConvGradWeight {
    fn run<T: Elem>(&self, x: &[T], dy: &[T]) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let (k, ohw, chw) = (g.ci * g.kh * g.kw, g.ohw(), g.ci * g.hw());
        let cols_len = if g.pointwise() { 0 } else { k * ohw };
        // dW (+)= dY_b * cols_b^T for the images `range`, into `dw`.
        let images = |range: std::ops::Range<usize>, dw: &mut [T], parallel: bool| {
            let mut cols = vec![T::ZERO; cols_len];
            for (i, b) in range.enumerate() {
                let xb = &x[b * chw..(b + 1) * chw];
                let dyb = &dy[b * g.co * ohw..(b + 1) * g.co * ohw];
                let rhs: &[T] = if g.pointwise() {
                    xb
                } else {
                    im2col(g, xb, &mut cols, parallel);
                    &cols
                };
                let (a, bt) = (Mat::rows(dyb, ohw), Mat::transposed(rhs, ohw));
                matmul(g.co, k, ohw, dw, i > 0, a, bt, parallel);
            }
        };
        let mut dw = vec![T::ZERO; g.co * k];
        if per_image(g) {
            // One partial dW per thread over a contiguous share of the batch, then their sum.
            let threads = rayon::current_num_threads().min(g.n);
            let share = g.n.div_ceil(threads);
            let mut partials: Vec<Vec<T>> = (1..threads).map(|_| vec![T::ZERO; g.co * k]).collect();
            rayon::scope(|sc| {
                sc.spawn(|_| images(0..share.min(g.n), &mut dw, false));
                for (t, part) in partials.iter_mut().enumerate() {
                    let (lo, hi) = (((t + 1) * share).min(g.n), ((t + 2) * share).min(g.n));
                    let images = &images;
                    sc.spawn(move |_| images(lo..hi, part, false));
                }
            });
            for part in &partials {
                dw.par_chunks_mut(1 << 14)
                    .zip(part.par_chunks(1 << 14))
                    .for_each(|(d, p)| simd!(d.iter_mut().zip(p).for_each(|(d, &p)| *d += p)));
            }
        } else {
            images(0..g.n, &mut dw, true);
        }
        Ok((T::wrap(dw), Shape::from((g.co, g.ci, g.kh, g.kw))))
    }
}

cpu_op!(CustomOp2 for ConvGradWeight, "fgvc-conv2d-grad-weight"; cudnn_pass!(BackwardFilter, false););

/// Depthwise conv forward: (x, weight (C, 1, kH, kW)) -> y.
pub(crate) struct DepthwiseOp {
    pub(crate) geom: Geometry,
}

impl DepthwiseOp {
    fn run<T: Elem>(&self, x: &[T], w: &[T]) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let (ohw, hw, kk) = (g.ohw(), g.hw(), g.kh * g.kw);
        // SAFETY: every plane is zero-filled by its task before the taps accumulate into it.
        let y = unsafe {
            written(g.n * g.ci * ohw, |y| {
                y.par_chunks_mut(ohw).enumerate().for_each(|(p, out)| {
                    simd!({
                        let out = zeroed(out);
                        let c = p % g.ci;
                        let plane = &x[p * hw..(p + 1) * hw];
                        let wk = &w[c * kk..(c + 1) * kk];
                        for ky in 0..g.kh {
                            let yoff = g.yoff(ky);
                            for kx in 0..g.kw {
                                let (wv, xoff) = (wk[ky * g.kw + kx], g.xoff(kx));
                                let xs = valid_range(g.ow, g.w, g.sw, xoff);
                                for oy in valid_range(g.oh, g.h, g.sh, yoff) {
                                    let iy = (oy as isize * g.sh as isize + yoff) as usize;
                                    let inrow = &plane[iy * g.w..(iy + 1) * g.w];
                                    let orow = &mut out[oy * g.ow..(oy + 1) * g.ow];
                                    if g.sw == 1 {
                                        let ix0 = (xs.start as isize + xoff) as usize;
                                        for (o, &v) in orow[xs.clone()]
                                            .iter_mut()
                                            .zip(&inrow[ix0..ix0 + xs.len()])
                                        {
                                            *o += wv * v;
                                        }
                                    } else {
                                        for ox in xs.clone() {
                                            orow[ox] += wv
                                                * inrow
                                                    [(ox as isize * g.sw as isize + xoff) as usize];
                                        }
                                    }
                                }
                            }
                        }
                    })
                });
            })
        };
        Ok((T::wrap(y), Shape::from((g.n, g.ci, g.oh, g.ow))))
    }
}

cpu_op!(CustomOp2 for DepthwiseOp, "fgvc-depthwise-conv2d";
    cudnn_pass!(Forward, true);
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        conv_grads(&self.geom, true, x, w, dy)
    }
);

/// Depthwise conv input gradient: (dy, weight) -> dx.
///
/// Its tap-and-row walk mirrors the forward's (a scatter where the forward gathers). Shared as one walk that
/// takes the row kernel as a closure, MobileNetV2's training step ran about 5 % slower (0.37-0.41 s against
/// 0.35-0.37 s, `bench_backbones mobilenet_v2 224 8 train 5`), so the two loops stay written out.
struct DepthwiseGradInput {
    geom: Geometry,
}

impl DepthwiseGradInput {
    fn run<T: Elem>(&self, dy: &[T], w: &[T]) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let (ohw, hw, kk) = (g.ohw(), g.hw(), g.kh * g.kw);
        // SAFETY: every plane is zero-filled by its task before the taps accumulate into it.
        let dx = unsafe {
            written(g.n * g.ci * hw, |dx| {
                dx.par_chunks_mut(hw).enumerate().for_each(|(p, plane)| {
                    simd!({
                        let plane = zeroed(plane);
                        let c = p % g.ci;
                        let gplane = &dy[p * ohw..(p + 1) * ohw];
                        let wk = &w[c * kk..(c + 1) * kk];
                        for ky in 0..g.kh {
                            let yoff = g.yoff(ky);
                            for kx in 0..g.kw {
                                let (wv, xoff) = (wk[ky * g.kw + kx], g.xoff(kx));
                                let xs = valid_range(g.ow, g.w, g.sw, xoff);
                                for oy in valid_range(g.oh, g.h, g.sh, yoff) {
                                    let iy = (oy as isize * g.sh as isize + yoff) as usize;
                                    let drow = &mut plane[iy * g.w..(iy + 1) * g.w];
                                    let grow = &gplane[oy * g.ow..(oy + 1) * g.ow];
                                    if g.sw == 1 {
                                        let ix0 = (xs.start as isize + xoff) as usize;
                                        for (d, &v) in drow[ix0..ix0 + xs.len()]
                                            .iter_mut()
                                            .zip(&grow[xs.clone()])
                                        {
                                            *d += wv * v;
                                        }
                                    } else {
                                        for ox in xs.clone() {
                                            drow[(ox as isize * g.sw as isize + xoff) as usize] +=
                                                wv * grow[ox];
                                        }
                                    }
                                }
                            }
                        }
                    })
                });
            })
        };
        Ok((T::wrap(dx), Shape::from((g.n, g.ci, g.h, g.w))))
    }
}

cpu_op!(CustomOp2 for DepthwiseGradInput, "fgvc-depthwise-conv2d-grad-input"; cudnn_pass!(BackwardData, true););

/// Depthwise conv weight gradient: (x, dy) -> dweight (C, 1, kH, kW).
struct DepthwiseGradWeight {
    geom: Geometry,
}

impl DepthwiseGradWeight {
    fn run<T: Elem>(&self, x: &[T], dy: &[T]) -> Result<(CpuStorage, Shape)> {
        let g = &self.geom;
        let kk = g.kh * g.kw;
        let mut dw = vec![T::ZERO; g.ci * kk];
        dw.par_chunks_mut(kk).enumerate().for_each(|(c, wk)| {
            at_isa_level!(<T: Elem> depthwise_weight_channel(g: &Geometry, x: &[T], dy: &[T], c: usize, wk: &mut [T]) -> ())
        });
        Ok((T::wrap(dw), Shape::from((g.ci, 1, g.kh, g.kw))))
    }
}

cpu_op!(CustomOp2 for DepthwiseGradWeight, "fgvc-depthwise-conv2d-grad-weight"; cudnn_pass!(BackwardFilter, true););

/// One channel's depthwise weight gradient into `wk` (kH*kW): the tap sums over every image, in f64 across
/// rows and images. Called through [`at_isa_level!`] so that its loops run at the ISA level.
#[inline(always)]
fn depthwise_weight_channel<T: Elem>(g: &Geometry, x: &[T], dy: &[T], c: usize, wk: &mut [T]) {
    let (ohw, hw, kk) = (g.ohw(), g.hw(), g.kh * g.kw);
    let mut acc = vec![0f64; kk];
    for b in 0..g.n {
        let p = b * g.ci + c;
        let plane = &x[p * hw..(p + 1) * hw];
        let gplane = &dy[p * ohw..(p + 1) * ohw];
        for ky in 0..g.kh {
            let yoff = g.yoff(ky);
            for kx in 0..g.kw {
                let xoff = g.xoff(kx);
                let xs = valid_range(g.ow, g.w, g.sw, xoff);
                let mut sum = T::ZERO;
                let mut lanes = [T::ZERO; 8];
                for oy in valid_range(g.oh, g.h, g.sh, yoff) {
                    let iy = (oy as isize * g.sh as isize + yoff) as usize;
                    let inrow = &plane[iy * g.w..(iy + 1) * g.w];
                    let grow = &gplane[oy * g.ow..(oy + 1) * g.ow];
                    if g.sw == 1 {
                        // Eight lanes carried across the rows, reduced once per tap and plane
                        // rather than once per row.
                        let ix0 = (xs.start as isize + xoff) as usize;
                        let (a, b) = (&inrow[ix0..ix0 + xs.len()], &grow[xs.clone()]);
                        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
                        for (&u, &v) in a8.remainder().iter().zip(b8.remainder()) {
                            sum += u * v;
                        }
                        for (u, v) in a8.zip(b8) {
                            for l in 0..8 {
                                lanes[l] += u[l] * v[l];
                            }
                        }
                    } else {
                        for ox in xs.clone() {
                            sum += inrow[(ox as isize * g.sw as isize + xoff) as usize] * grow[ox];
                        }
                    }
                }
                sum += (lanes[0] + lanes[4])
                    + (lanes[1] + lanes[5])
                    + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
                acc[ky * g.kw + kx] += sum.to_f64();
            }
        }
    }
    for (d, a) in wk.iter_mut().zip(acc) {
        *d = T::from_f64(a);
    }
}
