//! Pillow's separable convolution resampling (`libImaging/Resample.c`, 8-bit path), ported operation for
//! operation so that results are bit-identical to `Image.resize` with BILINEAR, BICUBIC or LANCZOS.
//!
//! The kernel support is scaled by the downscale factor (antialiasing), weights are normalised in f64 and then
//! quantised to 22 fractional bits, the horizontal pass runs first and its output is rounded and clipped to u8
//! before the vertical pass, exactly as in Pillow.

/// Fractional bits of Pillow's fixed-point weights: 32 - 8 - 2.
const PRECISION_BITS: u32 = 22;
/// Rounding offset added before the final shift.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's convolution filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `BILINEAR`: triangle, support 1.
    Bilinear,
    /// `BICUBIC`: cubic convolution with a = -0.5, support 2.
    Bicubic,
    /// `LANCZOS`: 3-lobe Lanczos, support 3.
    Lanczos3,
}

impl Kernel {
    /// The continuous kernel and its support radius, as in Pillow.
    fn function(self) -> (fn(f64) -> f64, f64) {
        match self {
            Kernel::Bilinear => (bilinear, 1.0),
            Kernel::Bicubic => (bicubic, 2.0),
            Kernel::Lanczos3 => (lanczos, 3.0),
        }
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Fixed-point weights of one axis, every output reading the same number of consecutive inputs.
///
/// Output `i` reads inputs `start[i]..start[i] + width` with weights `weights[i * width..][..width]`. Pillow's
/// windows vary in length; shorter ones are padded with zero weights (which change no sum) and shifted left where
/// they would run past the end, so that every window has the same length and the loops can be unrolled.
struct Coefficients {
    width: usize,
    start: Vec<usize>,
    weights: Vec<i32>,
}

impl Coefficients {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the box `[0, in_size)` resampled to
    /// `out_size` (both positive).
    fn new(in_size: u32, out_size: u32, kernel: Kernel) -> Self {
        let (f, base_support) = kernel.function();
        // Pillow passes the box edges as C floats: (double)(in1 - in0) with in0 = 0.
        let in0 = 0f32;
        let in1 = in_size as f32;
        let scale = f64::from(in1 - in0) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = base_support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let n = out_size as usize;
        // Pillow's windows: (first input, fixed-point weights).
        let mut windows: Vec<(usize, Vec<i32>)> = Vec::with_capacity(n);
        let mut k = vec![0f64; ksize];
        for xx in 0..n {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
            let taps = (xmax.max(0) as usize).min(ksize);
            let mut ww = 0.0;
            for (x, w) in k.iter_mut().take(taps).enumerate() {
                *w = f((((x as i64 + xmin) as f64) - center + 0.5) * ss);
                ww += *w;
            }
            let fixed = k
                .iter()
                .take(taps)
                .map(|&w| {
                    let w = if ww != 0.0 { w / ww } else { w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 {
                        (-0.5 + scaled) as i32
                    } else {
                        (0.5 + scaled) as i32
                    }
                })
                .collect();
            windows.push((xmin as usize, fixed));
        }
        let in_size = in_size as usize;
        let width = windows
            .iter()
            .map(|(_, w)| w.len())
            .max()
            .unwrap_or(1)
            .clamp(1, in_size);
        let mut start = Vec::with_capacity(n);
        let mut weights = vec![0i32; n * width];
        for ((xmin, fixed), out) in windows.iter().zip(weights.chunks_exact_mut(width)) {
            let s = (*xmin).min(in_size - width);
            out[xmin - s..xmin - s + fixed.len()].copy_from_slice(fixed);
            start.push(s);
        }
        Coefficients {
            width,
            start,
            weights,
        }
    }

    /// The inputs `lo..hi` that outputs `range` read.
    fn input_span(&self, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let lo = self.start[range.clone()].iter().copied().min().unwrap_or(0);
        let hi = self.start[range].iter().copied().max().unwrap_or(0) + self.width;
        lo..hi
    }
}

/// Pillow's `clip8`: shift out the fraction and saturate to u8.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes a packed RGB buffer of `in_w` x `in_h` to `out_w` x `out_h` like Pillow (horizontal pass first when the
/// width changes, then vertical when the height changes), but computes only the output rows `rows` and columns
/// `cols`, returned as a packed `cols.len()` x `rows.len()` buffer. All sizes are positive and the window lies in
/// the output.
pub(crate) fn resample_window(
    src: &[u8],
    (in_w, in_h): (u32, u32),
    (out_w, out_h): (u32, u32),
    kernel: Kernel,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) -> Vec<u8> {
    let in_row_len = in_w as usize * 3;
    let vertical = (out_h != in_h).then(|| Coefficients::new(in_h, out_h, kernel));
    // The source rows the vertical pass will read (or the window's rows when there is none).
    let src_rows = match &vertical {
        Some(c) => c.input_span(rows.clone()),
        None => rows.clone(),
    };
    let src = &src[src_rows.start * in_row_len..src_rows.end * in_row_len];
    let intermediate = if out_w != in_w {
        let c = Coefficients::new(in_w, out_w, kernel);
        horizontal_pass(src, in_w as usize, &c, cols.clone())
    } else {
        src.chunks_exact(in_row_len)
            .flat_map(|row| &row[cols.start * 3..cols.end * 3])
            .copied()
            .collect()
    };
    match vertical {
        Some(c) => vertical_pass(&intermediate, cols.len() * 3, &c, rows, src_rows.start),
        None => intermediate,
    }
}

/// Horizontal pass over every row of `src` (`in_w` pixels wide), for the output columns `cols`.
fn horizontal_pass(
    src: &[u8],
    in_w: usize,
    c: &Coefficients,
    cols: std::ops::Range<usize>,
) -> Vec<u8> {
    let rows = src.len() / (in_w * 3);
    let mut out = vec![0u8; rows * cols.len() * 3];
    let starts = &c.start[cols.clone()];
    let weights = &c.weights[cols.start * c.width..cols.end * c.width];
    macro_rules! dispatch {
        ($($k:literal)*) => {
            match c.width {
                $($k => horizontal_rows::<$k>(src, in_w, starts, weights, &mut out),)*
                k => horizontal_rows_dyn(src, in_w, k, starts, weights, &mut out),
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
    out
}

/// The horizontal pass with windows of exactly `K` taps (unrolled by the compiler).
fn horizontal_rows<const K: usize>(
    src: &[u8],
    in_w: usize,
    starts: &[usize],
    weights: &[i32],
    out: &mut [u8],
) {
    let out_len = starts.len() * 3;
    for (in_row, out_row) in src
        .chunks_exact(in_w * 3)
        .zip(out.chunks_exact_mut(out_len))
    {
        for ((px, &start), w) in out_row
            .chunks_exact_mut(3)
            .zip(starts)
            .zip(weights.chunks_exact(K))
        {
            let inputs = &in_row[start * 3..start * 3 + 3 * K];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for t in 0..K {
                s0 += i32::from(inputs[3 * t]) * w[t];
                s1 += i32::from(inputs[3 * t + 1]) * w[t];
                s2 += i32::from(inputs[3 * t + 2]) * w[t];
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
}

/// The horizontal pass for windows too wide to unroll (strong downscaling).
fn horizontal_rows_dyn(
    src: &[u8],
    in_w: usize,
    k: usize,
    starts: &[usize],
    weights: &[i32],
    out: &mut [u8],
) {
    let out_len = starts.len() * 3;
    for (in_row, out_row) in src
        .chunks_exact(in_w * 3)
        .zip(out.chunks_exact_mut(out_len))
    {
        for ((px, &start), w) in out_row
            .chunks_exact_mut(3)
            .zip(starts)
            .zip(weights.chunks_exact(k))
        {
            let inputs = &in_row[start * 3..(start + k) * 3];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (p, &w) in inputs.chunks_exact(3).zip(w) {
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
}

/// Vertical pass producing output rows `rows` from `src` (rows of `row_len` bytes, the first being input row
/// `first_row`). Each output value sums `K` rows at the same column, which vectorises across the row.
fn vertical_pass(
    src: &[u8],
    row_len: usize,
    c: &Coefficients,
    rows: std::ops::Range<usize>,
    first_row: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; rows.len() * row_len];
    for (yy, out_row) in rows.zip(out.chunks_exact_mut(row_len)) {
        let first = c.start[yy] - first_row;
        let inputs = &src[first * row_len..(first + c.width) * row_len];
        let w = &c.weights[yy * c.width..(yy + 1) * c.width];
        macro_rules! dispatch {
            ($($k:literal)*) => {
                match c.width {
                    $($k => vertical_row::<$k>(inputs, row_len, w, out_row),)*
                    _ => vertical_row_dyn(inputs, row_len, w, out_row),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8);
    }
    out
}

#[inline(always)]
fn vertical_row<const K: usize>(inputs: &[u8], row_len: usize, w: &[i32], out: &mut [u8]) {
    let n = out.len();
    let w: [i32; K] = std::array::from_fn(|t| w[t]);
    let r: [&[u8]; K] = std::array::from_fn(|t| &inputs[t * row_len..t * row_len + n]);
    for (i, o) in out.iter_mut().enumerate() {
        let mut s = HALF;
        for t in 0..K {
            s += i32::from(r[t][i]) * w[t];
        }
        *o = clip8(s);
    }
}

fn vertical_row_dyn(inputs: &[u8], row_len: usize, w: &[i32], out: &mut [u8]) {
    let mut acc = vec![HALF; out.len()];
    for (row, &w) in inputs.chunks_exact(row_len).zip(w) {
        for (a, &p) in acc.iter_mut().zip(row) {
            *a += i32::from(p) * w;
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = clip8(a);
    }
}
