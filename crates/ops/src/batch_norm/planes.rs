//! The `(N, C, S)` plane walk every BatchNorm kernel shares: per-channel reductions and plane-by-plane
//! writes in parallel, and the blocked sums that keep long planes precise while the loops vectorise.

use std::mem::MaybeUninit;

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use crate::cpu::{at_isa_level, plane_chunk, Elem};

/// `(N, C, S)` view of a (N, C) or (N, C, H, W) tensor.
#[derive(Debug, Clone, Copy)]
pub(super) struct Planes {
    /// Batch size.
    pub(super) n: usize,
    /// Channels.
    pub(super) c: usize,
    /// Values per plane (H * W, or 1 for (N, C)).
    pub(super) s: usize,
}

impl Planes {
    /// The planes of `x`.
    pub(super) fn of(x: &Tensor) -> Result<Self> {
        let d = x.dims();
        Ok(Self {
            n: d[0],
            c: d[1],
            s: d[2..].iter().product(),
        })
    }

    /// Values per channel, N * S.
    pub(super) fn count(&self) -> usize {
        self.n * self.s
    }

    /// `f(c, plane)` for every (n, c) plane of `x`, combined per channel by `f64` sums of `K` values;
    /// parallel over channels. `f` wraps its loop in `simd!` itself (see there why).
    pub(super) fn reduce<const K: usize>(
        &self,
        f: impl Fn(usize, usize) -> [f64; K] + Sync,
    ) -> Vec<[f64; K]> {
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

    /// Fills `out` plane by plane with `f(c, offset, plane)`, in parallel; `f` writes every element of its
    /// plane, and wraps its loop in `simd!` itself.
    pub(super) fn map<T: Elem>(
        &self,
        out: &mut [MaybeUninit<T>],
        f: impl Fn(usize, usize, &mut [MaybeUninit<T>]) + Sync,
    ) {
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

/// Sums over a plane in blocks: `LANES` accumulators in the element type (so that the loop vectorises),
/// each block's total added in f64 (so that long planes keep their precision).
const LANES: usize = 8;
const BLOCK: usize = 512;

/// `(sum f0, sum f1)` over the elements of three equally long slices, where `f(a_i, b_i, c_i)` gives the two
/// terms of element `i`; run at the ISA level (its own dispatch: callers need no `simd!`).
#[inline(always)]
pub(super) fn block_sums<T: Elem>(
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> (T, T),
) -> [f64; 2] {
    at_isa_level!(<T: Elem> block_sums_here(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> (T, T)) -> [f64; 2])
}

/// [`block_sums`] compiled for the caller's instruction set.
#[inline(always)]
fn block_sums_here<T: Elem>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> (T, T)) -> [f64; 2] {
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
