//! Packing f32 operands into the bf16 tiles both kernels read, rounding each element once.
//!
//! - **A** (m x k) as 16-row panels, each a run of 16x32 tiles along k: element (i, kk) of a tile at
//!   `i * 32 + kk` (a row of 32 bf16, 64 bytes: AMX's A-tile and, as pairs, `vdpbf16ps`'s broadcast).
//! - **B** (k x n) as 16-column panels, each a run of tiles along k in the pair ("VNNI") layout: element
//!   (kk, j) of a tile at `(kk / 2) * 32 + j * 2 + kk % 2`, so one 64-byte row holds 16 columns' pairs
//!   (AMX's B-tile, and one `vdpbf16ps` operand).
//!
//! Rows, columns and k beyond the matrix are packed as zeros, so the kernels only see whole tiles.

use rayon::prelude::*;

use super::to_bf16;
use crate::cpu::Mat;

/// Rows (A) or columns (B) of a panel, and the k-depth of a tile.
pub(crate) const PANEL: usize = 16;
pub(crate) const TILE_K: usize = 32;
/// bf16 elements in one 16x32 tile.
pub(crate) const TILE: usize = PANEL * TILE_K;

/// The packed length, in bf16 elements, of `panels` panels over `kb` k-blocks.
pub(crate) fn packed_len(panels: usize, kb: usize) -> usize {
    panels * kb * TILE
}

/// A raw operand that may cross threads (only read).
#[derive(Clone, Copy)]
struct Src(Mat<f32>);
// SAFETY: the operand is only read, and the caller keeps it alive for the product.
unsafe impl Send for Src {}
unsafe impl Sync for Src {}

/// Packs `a` (m x k) into `out` (`packed_len(panels, kb)`), `panels` 16-row panels (at least ceil(m/16)).
///
/// # Safety
/// `a` addresses m x k elements with its strides; the CPU has AVX-512 F/BW and AVX512_BF16.
pub(crate) unsafe fn pack_a(a: Mat<f32>, m: usize, k: usize, out: &mut [u16], parallel: bool) {
    let kb = k.div_ceil(TILE_K);
    let src = Src(a);
    let panel = move |(p, dst): (usize, &mut [u16])| {
        let src = src;
        // SAFETY: the caller's contract.
        unsafe { pack_a_panel(src.0, m, k, p, kb, dst) }
    };
    if parallel {
        out.par_chunks_mut(kb * TILE).enumerate().for_each(panel);
    } else {
        out.chunks_mut(kb * TILE).enumerate().for_each(panel);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_a_panel(a: Mat<f32>, m: usize, k: usize, p: usize, kb: usize, dst: &mut [u16]) {
    for r in 0..PANEL {
        let i = p * PANEL + r;
        for b in 0..kb {
            let t = &mut dst[b * TILE + r * TILE_K..b * TILE + (r + 1) * TILE_K];
            let k0 = b * TILE_K;
            if i >= m {
                t.fill(0);
            } else if a.cs == 1 && k0 + TILE_K <= k {
                // SAFETY: row i's elements k0..k0+32 are in range and contiguous.
                unsafe { convert32(a.ptr.offset(i as isize * a.rs + k0 as isize), t) };
            } else {
                for (kk, v) in t.iter_mut().enumerate() {
                    let kk = k0 + kk;
                    *v = if kk < k {
                        // SAFETY: (i, kk) lies inside the matrix.
                        to_bf16(unsafe { *a.ptr.offset(i as isize * a.rs + kk as isize * a.cs) })
                    } else {
                        0
                    };
                }
            }
        }
    }
}

/// Packs `b` (k x n) into `out` (`packed_len(panels, kb)`), `panels` 16-column panels (at least ceil(n/16)).
///
/// # Safety
/// As [`pack_a`], for k x n elements.
pub(crate) unsafe fn pack_b(b: Mat<f32>, k: usize, n: usize, out: &mut [u16], parallel: bool) {
    let kb = k.div_ceil(TILE_K);
    let src = Src(b);
    let panel = move |(q, dst): (usize, &mut [u16])| {
        let src = src;
        // SAFETY: the caller's contract.
        unsafe { pack_b_panel(src.0, k, n, q, kb, dst) }
    };
    if parallel {
        out.par_chunks_mut(kb * TILE).enumerate().for_each(panel);
    } else {
        out.chunks_mut(kb * TILE).enumerate().for_each(panel);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_b_panel(b: Mat<f32>, k: usize, n: usize, q: usize, kb: usize, dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let j0 = q * PANEL;
    for blk in 0..kb {
        let t = &mut dst[blk * TILE..(blk + 1) * TILE];
        let k0 = blk * TILE_K;
        let whole = k0 + TILE_K <= k && j0 + PANEL <= n;
        if whole && b.cs == 1 {
            // Rows kk and kk+1, 16 columns each: convert both, then interleave them into pairs.
            let idx = interleave_index();
            for p in 0..TILE_K / 2 {
                let kk = k0 + 2 * p;
                // SAFETY: both rows' 16 columns are in range and contiguous; the tile row is 64 bytes.
                unsafe {
                    let r0 = _mm512_loadu_ps(b.ptr.offset(kk as isize * b.rs + j0 as isize));
                    let r1 = _mm512_loadu_ps(b.ptr.offset((kk + 1) as isize * b.rs + j0 as isize));
                    let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(r1, r0));
                    let pairs = _mm512_permutexvar_epi16(idx, both);
                    _mm512_storeu_si512(t.as_mut_ptr().add(p * 32).cast(), pairs);
                }
            }
        } else if whole && b.rs == 1 {
            // Column j's 32 k-values are contiguous: 16 pairs, one per tile row (a stride of 16 pairs).
            let rows = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(PANEL as i32),
            );
            for j in 0..PANEL {
                // SAFETY: column j0+j's elements k0..k0+32 are in range and contiguous; the 16 pairs land in
                // the tile at pair offsets j, j+16, ..., j+240.
                unsafe {
                    let col = b.ptr.offset((j0 + j) as isize * b.cs + k0 as isize);
                    let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(col.add(16)), _mm512_loadu_ps(col));
                    let pairs: __m512i = std::mem::transmute(v);
                    _mm512_i32scatter_epi32::<4>(t.as_mut_ptr().add(2 * j).cast(), rows, pairs);
                }
            }
        } else {
            for p in 0..TILE_K / 2 {
                for j in 0..PANEL {
                    for h in 0..2 {
                        let (kk, jj) = (k0 + 2 * p + h, j0 + j);
                        t[p * 32 + j * 2 + h] = if kk < k && jj < n {
                            // SAFETY: (kk, jj) lies inside the matrix.
                            to_bf16(unsafe {
                                *b.ptr.offset(kk as isize * b.rs + jj as isize * b.cs)
                            })
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
}

/// 32 contiguous f32 at `src` to bf16 in `dst` (32 elements).
///
/// # Safety
/// `src` addresses 32 readable f32; the CPU has AVX-512 F and AVX512_BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
unsafe fn convert32(src: *const f32, dst: &mut [u16]) {
    use std::arch::x86_64::*;
    debug_assert!(dst.len() >= 32);
    // SAFETY: the caller's contract; dst holds 32 elements.
    unsafe {
        let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
        _mm512_storeu_si512(
            dst.as_mut_ptr().cast(),
            std::mem::transmute::<__m512bh, __m512i>(v),
        );
    }
}

/// The word permutation that turns [row0 (16), row1 (16)] into [row0[0], row1[0], row0[1], row1[1], ...].
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn interleave_index() -> std::arch::x86_64::__m512i {
    let mut idx = [0i16; 32];
    for (j, v) in idx.iter_mut().enumerate() {
        *v = (j / 2 + (j % 2) * 16) as i16;
    }
    // SAFETY: 32 words are read from a 64-byte array.
    unsafe { std::arch::x86_64::_mm512_loadu_si512(idx.as_ptr().cast()) }
}
