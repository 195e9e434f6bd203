//! The AVX512_BF16 kernel: the same 32x32 block from the same packed tiles, eight rows at a time, each row's
//! pair of A broadcast against the B-tile rows with `vdpbf16ps` into 16 accumulators.

use std::arch::x86_64::*;

use super::pack::{PANEL, TILE, TILE_K};

/// Whether the CPU has AVX512_BF16 (on top of the AVX-512 level the caller checks).
pub(super) fn supported() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// `c (32x32, row stride ldc) = [c +] A-panels (a0, a1) * B-panels (b0, b1)` over `kb` k-blocks.
///
/// # Safety
/// [`supported`] returned true; each panel pointer addresses `kb` packed tiles; `c` addresses 32 rows of 32
/// f32 at a stride of `ldc` elements, initialised when `accumulate`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn block(
    a0: *const u16,
    a1: *const u16,
    b0: *const u16,
    b1: *const u16,
    kb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    for group in 0..4 {
        let (a, r0) = if group < 2 {
            (a0, group * 8)
        } else {
            (a1, (group - 2) * 8)
        };
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        if accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row group * 8 + r of the block holds 32 initialised f32.
                unsafe {
                    let row = c.add((group * 8 + r) * ldc);
                    *acc = [_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(PANEL))];
                }
            }
        }
        for blk in 0..kb {
            // SAFETY: tile `blk` of each panel is inside it (the caller's contract).
            let (at, bt0, bt1) =
                unsafe { (a.add(blk * TILE), b0.add(blk * TILE), b1.add(blk * TILE)) };
            for p in 0..TILE_K / 2 {
                // SAFETY: row p of a B-tile is 64 bytes at p * 32; A's pair p of row r is 4 bytes at
                // r * 32 + 2p, both inside their tiles.
                unsafe {
                    let v0: __m512bh =
                        std::mem::transmute(_mm512_loadu_si512(bt0.add(p * 32).cast()));
                    let v1: __m512bh =
                        std::mem::transmute(_mm512_loadu_si512(bt1.add(p * 32).cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let pair = at
                            .add((r0 + r) * TILE_K + 2 * p)
                            .cast::<i32>()
                            .read_unaligned();
                        let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                        acc[0] = _mm512_dpbf16_ps(acc[0], x, v0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], x, v1);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            // SAFETY: row group * 8 + r of the block holds 32 f32.
            unsafe {
                let row = c.add((group * 8 + r) * ldc);
                _mm512_storeu_ps(row, acc[0]);
                _mm512_storeu_ps(row.add(PANEL), acc[1]);
            }
        }
    }
}
