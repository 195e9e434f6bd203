//! The bf16 product behind the CPU convolutions in bf16 precision: pack both operands once (rounding them
//! to bf16), then run the kernel over 32x32 blocks of the f32 result, in parallel when asked.

use std::cell::RefCell;

use rayon::prelude::*;

use super::pack::{pack_a, pack_b, packed_len, PANEL, TILE, TILE_K};
use super::{amx, dpbf16, Bf16Kernel};
use crate::cpu::Mat;

/// The result block the kernels compute: 32x32 f32.
const BLOCK: usize = 2 * PANEL;

thread_local! {
    /// Packed operands reused across the products a thread runs (a conv's per-image products).
    static PACKED: RefCell<(Vec<u16>, Vec<u16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A left operand packed once and used by several products (a convolution's weights, for every image).
pub(crate) struct PackedLhs {
    data: Vec<u16>,
    m: usize,
    k: usize,
    kernel: Bf16Kernel,
}

impl PackedLhs {
    /// Packs `a` (m x k) for `kernel`, in parallel when `parallel`.
    ///
    /// # Safety
    /// `kernel` is in [`Bf16Kernel::available`]; `a` addresses m x k elements with its strides.
    pub(crate) unsafe fn new(
        kernel: Bf16Kernel,
        a: Mat<f32>,
        m: usize,
        k: usize,
        parallel: bool,
    ) -> Self {
        let mut data = Vec::new();
        // SAFETY: the caller's contract.
        unsafe { pack_lhs_into(a, m, k, &mut data, parallel) };
        Self { data, m, k, kernel }
    }
}

/// Packs `a` into `buf`, growing it when needed (never shrinking, so a reused buffer is not refilled).
///
/// # Safety
/// As [`PackedLhs::new`].
unsafe fn pack_lhs_into(
    a: Mat<f32>,
    m: usize,
    k: usize,
    buf: &mut Vec<u16>,
    parallel: bool,
) -> usize {
    let len = packed_len(2 * m.div_ceil(BLOCK), k.div_ceil(TILE_K));
    if buf.len() < len {
        buf.resize(len, 0);
    }
    // SAFETY: the caller's contract (the kernel's presence implies AVX-512 BW and AVX512_BF16).
    unsafe { pack_a(a, m, k, &mut buf[..len], parallel) };
    len
}

/// `c (m x n, dense row-major) = [c +] a (m x k) * b (k x n)` with both operands rounded to bf16 and f32
/// sums, by `kernel`; split across the current rayon pool when `parallel`.
///
/// # Safety
/// `kernel` is in [`Bf16Kernel::available`]; `c` addresses `m * n` writable f32 (initialised when
/// `accumulate`) that nothing else accesses meanwhile; `a` and `b` address m x k and k x n elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    kernel: Bf16Kernel,
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    accumulate: bool,
    a: Mat<f32>,
    b: Mat<f32>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    with_buffers(|ap, bp| {
        // SAFETY: the caller's contract.
        unsafe {
            let len = pack_lhs_into(a, m, k, ap, parallel);
            product(kernel, &ap[..len], m, n, k, c, accumulate, b, bp, parallel)
        }
    });
}

/// [`gemm`] with the left operand packed already.
///
/// # Safety
/// As [`gemm`], with `lhs` (m x k) in place of `a`.
pub(crate) unsafe fn gemm_packed(
    lhs: &PackedLhs,
    n: usize,
    c: *mut f32,
    accumulate: bool,
    b: Mat<f32>,
    parallel: bool,
) {
    if lhs.m == 0 || n == 0 {
        return;
    }
    with_buffers(|_, bp| {
        // SAFETY: the caller's contract; `lhs` was packed for its kernel.
        unsafe {
            product(
                lhs.kernel, &lhs.data, lhs.m, n, lhs.k, c, accumulate, b, bp, parallel,
            )
        }
    });
}

/// Runs `f` with this thread's packing buffers. A thread that steals another product while this one waits
/// on its own parallel tasks finds them taken, and packs into fresh ones.
fn with_buffers(f: impl FnOnce(&mut Vec<u16>, &mut Vec<u16>)) {
    PACKED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (ap, bp) = &mut *bufs;
            f(ap, bp)
        }
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    });
}

/// Packs `b` into `bp` and runs the blocks against the packed `ap`.
///
/// # Safety
/// As [`gemm`], with `ap` packed from an m x k operand.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    kernel: Bf16Kernel,
    ap: &[u16],
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    accumulate: bool,
    b: Mat<f32>,
    bp: &mut Vec<u16>,
    parallel: bool,
) {
    let (mb, nb, kb) = (m.div_ceil(BLOCK), n.div_ceil(BLOCK), k.div_ceil(TILE_K));
    let len = packed_len(2 * nb, kb);
    if bp.len() < len {
        bp.resize(len, 0);
    }
    // SAFETY: the caller's contract.
    unsafe {
        pack_b(b, k, n, &mut bp[..len], parallel);
        blocks(
            kernel,
            m,
            n,
            kb,
            mb,
            nb,
            ap,
            &bp[..len],
            c,
            accumulate,
            parallel,
        );
    }
}

/// The destination, shared by the block tasks (each writes its own rectangle).
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: blocks write disjoint rectangles of the destination.
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

/// Every 32x32 result block: the kernel into a scratch block, then its valid part written or added.
///
/// # Safety
/// As [`gemm`], with `ap` and `bp` packed for `2 * mb` and `2 * nb` panels over `kb` k-blocks.
#[allow(clippy::too_many_arguments)]
unsafe fn blocks(
    kernel: Bf16Kernel,
    m: usize,
    n: usize,
    kb: usize,
    mb: usize,
    nb: usize,
    ap: &[u16],
    bp: &[u16],
    c: *mut f32,
    accumulate: bool,
    parallel: bool,
) {
    let dst = Dst(c);
    let panel = kb * TILE;
    // Each operand's panels are reused across the other's: keep the smaller resident in cache and stream the
    // larger once, so the outer index walks the larger operand's panels.
    let a_outer = mb > nb;
    let one = move |tiles: &Option<amx::Tiles>, idx: usize| {
        let dst = dst;
        let (bi, bj) = if a_outer {
            (idx / nb, idx % nb)
        } else {
            (idx % mb, idx / mb)
        };
        let (r0, c0) = (bi * BLOCK, bj * BLOCK);
        let (rows, cols) = ((m - r0).min(BLOCK), (n - c0).min(BLOCK));
        let a0 = ap[2 * bi * panel..].as_ptr();
        let b0 = bp[2 * bj * panel..].as_ptr();
        // SAFETY: panels 2bi, 2bi+1 of A and 2bj, 2bj+1 of B exist (2mb and 2nb were packed), and the kernel
        // is available (the caller's contract), with its tiles configured on this thread; `out` addresses
        // 32 rows of 32 f32 at stride `ldc`.
        let run = |out: *mut f32, ldc: usize, acc: bool| unsafe {
            let (a1, b1) = (a0.add(panel), b0.add(panel));
            match (kernel, tiles) {
                (Bf16Kernel::Amx, Some(t)) => amx::block(t, a0, a1, b0, b1, kb, out, ldc, acc),
                _ => dpbf16::block(a0, a1, b0, b1, kb, out, ldc, acc),
            }
        };
        if rows == BLOCK && cols == BLOCK {
            // A whole block: straight into (and, accumulating, from) the result.
            // SAFETY: the block's rectangle lies inside the m x n result and belongs to this task.
            run(unsafe { dst.0.add(r0 * n + c0) }, n, accumulate);
            return;
        }
        // An edge block: into a scratch block, then its valid part written or added.
        #[repr(align(64))]
        struct Scratch([f32; BLOCK * BLOCK]);
        let mut s = std::mem::MaybeUninit::<Scratch>::uninit();
        run(s.as_mut_ptr().cast::<f32>(), BLOCK, false);
        // SAFETY: the kernel wrote all 32x32 elements.
        let s = unsafe { s.assume_init_ref() };
        for r in 0..rows {
            // SAFETY: row r0+r, columns c0..c0+cols, lie in this block's rectangle of the m x n result.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.0.add((r0 + r) * n + c0), cols) };
            let src = &s.0[r * BLOCK..r * BLOCK + cols];
            if accumulate {
                out.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
            } else {
                out.copy_from_slice(src);
            }
        }
    };
    // SAFETY: the AMX kernel is available when chosen (the caller's contract).
    let tiles = || (kernel == Bf16Kernel::Amx).then(|| unsafe { amx::Tiles::load() });
    if parallel {
        // The configuration is loaded once per rayon job (a run of blocks), not once per block.
        (0..mb * nb)
            .into_par_iter()
            .for_each_init(tiles, |t, idx| one(t, idx));
    } else {
        let t = tiles();
        (0..mb * nb).for_each(|idx| one(&t, idx));
    }
}

#[cfg(test)]
mod tests {
    use super::super::{from_bf16, to_bf16};
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The product of the bf16-rounded operands in f64, and the sum of |a||b| per element (the scale of the
    /// f32 summation error).
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        a_t: bool,
        b: &[f32],
        b_t: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let at = |i: usize, kk: usize| a[if a_t { kk * m + i } else { i * k + kk }];
        let bt = |kk: usize, j: usize| b[if b_t { j * k + kk } else { kk * n + j }];
        let r = |x: f32| from_bf16(to_bf16(x)) as f64;
        let (mut y, mut s) = (vec![0f64; m * n], vec![0f64; m * n]);
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    let p = r(at(i, kk)) * r(bt(kk, j));
                    y[i * n + j] += p;
                    s[i * n + j] += p.abs();
                }
            }
        }
        (y, s)
    }

    /// Every available kernel, every operand layout the convolutions use (and shapes off the tile grid),
    /// with and without accumulation, against the f64 product of the same rounded operands.
    #[test]
    fn products_match_the_rounded_reference() {
        let kernels = Bf16Kernel::available();
        if kernels.is_empty() {
            eprintln!("skipped: this CPU has no bf16 product");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &kernel in kernels {
            for &(m, n, k) in &[
                (1, 1, 1),
                (16, 16, 32),
                (33, 70, 45),
                (64, 49, 576),
                (5, 130, 200),
            ] {
                for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                    for parallel in [false, true] {
                        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let c0: Vec<f32> =
                            (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let am = if a_t {
                            Mat::transposed(&a, m)
                        } else {
                            Mat::rows(&a, k)
                        };
                        let bm = if b_t {
                            Mat::transposed(&b, k)
                        } else {
                            Mat::rows(&b, n)
                        };
                        let (y, s) = reference(m, n, k, &a, a_t, &b, b_t);
                        for accumulate in [false, true] {
                            let mut c = c0.clone();
                            // SAFETY: the kernel is available, c holds m x n, a and b the operands.
                            unsafe {
                                gemm(
                                    kernel,
                                    m,
                                    n,
                                    k,
                                    c.as_mut_ptr(),
                                    accumulate,
                                    am,
                                    bm,
                                    parallel,
                                )
                            };
                            for i in 0..m * n {
                                let want = y[i] + if accumulate { c0[i] as f64 } else { 0.0 };
                                let tol = 1e-6 * (s[i] + 1.0) * (k as f64).sqrt();
                                assert!(
                                    (c[i] as f64 - want).abs() <= tol,
                                    "{kernel} {m}x{n}x{k} a_t={a_t} b_t={b_t} acc={accumulate} \
                                     [{i}]: {} vs {want}",
                                    c[i]
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Both kernels agree with each other as closely as two f32 summation orders can.
    #[test]
    fn kernels_agree() {
        let kernels = Bf16Kernel::available();
        if kernels.len() < 2 {
            eprintln!("skipped: fewer than two bf16 kernels here");
            return;
        }
        let (m, n, k) = (40, 75, 300);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let run = |kernel| {
            let mut c = vec![0f32; m * n];
            // SAFETY: as above.
            unsafe {
                gemm(
                    kernel,
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    false,
                    Mat::rows(&a, k),
                    Mat::rows(&b, n),
                    true,
                )
            };
            c
        };
        let (x, y) = (run(kernels[0]), run(kernels[1]));
        for (i, (x, y)) in x.iter().zip(&y).enumerate() {
            assert!((x - y).abs() <= 1e-4, "[{i}] {x} vs {y}");
        }
    }
}
