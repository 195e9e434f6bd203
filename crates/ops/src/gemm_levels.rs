//! The `gemm` crate's products at the level [`isa`](crate::isa()) says, rather than at the widest the CPU has
//! (which is all `gemm::gemm` can do): the same driver (`gemm_common::gemm::gemm_basic_generic`) over the
//! scalar, FMA or AVX-512 microkernels of `gemm-f32`/`gemm-f64`, after the same operand normalisation.

use std::any::TypeId;

use gemm_common::Parallelism;

use crate::isa::Isa;

/// `gemm::gemm`'s signature once the operands are normalised (no conjugation flags: real types only).
type Kernel<T> = unsafe fn(
    usize,
    usize,
    usize,
    *mut T,
    isize,
    isize,
    bool,
    *const T,
    isize,
    isize,
    *const T,
    isize,
    isize,
    T,
    T,
    Parallelism,
);

/// One level's product for one element type: `gemm_basic_generic` over that level's microkernels.
macro_rules! level_kernels {
    ($($(#[$attr:meta])* $name:ident: $t:ident, $uk:path, $simd:ident, $lanes:expr;)*) => {$(
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut $t,
            dst_cs: isize,
            dst_rs: isize,
            read_dst: bool,
            lhs: *const $t,
            lhs_cs: isize,
            lhs_rs: isize,
            rhs: *const $t,
            rhs_cs: isize,
            rhs_rs: isize,
            alpha: $t,
            beta: $t,
            par: Parallelism,
        ) {
            use gemm_common::simd::MixedSimd;
            use $uk as uk;
            const N: usize = $lanes;
            let simd = <gemm_common::simd::$simd as MixedSimd<$t, $t, $t, $t>>::try_new()
                .expect("the ISA level was checked against this CPU");
            // SAFETY: the caller's contract, as for `gemm::gemm`.
            unsafe {
                gemm_common::gemm::gemm_basic_generic::<
                    _,
                    $t,
                    N,
                    { uk::MR_DIV_N * N },
                    { uk::NR },
                    { uk::MR_DIV_N },
                    { uk::H_M },
                    { uk::H_N },
                >(
                    simd,
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    alpha,
                    beta,
                    false,
                    false,
                    false,
                    |a, b, c| a * b + c,
                    &uk::UKR,
                    &uk::H_UKR,
                    false,
                    par,
                )
            }
        }
    )*};
}

// Lane counts as gemm-f32's and gemm-f64's own `gemm_def!` (f32: multiplier 2, f64: 1).
// Off x86-64 `gemm::gemm`'s own dispatch is the one level, so none of these is needed there.
level_kernels! {
    #[cfg(target_arch = "x86_64")]
    scalar_f32: f32, gemm_f32::microkernel::scalar::f32, Scalar, 1;
    #[cfg(target_arch = "x86_64")]
    scalar_f64: f64, gemm_f64::microkernel::scalar::f64, Scalar, 1;
    #[cfg(target_arch = "x86_64")]
    fma_f32: f32, gemm_f32::microkernel::fma::f32, V3, 8;
    #[cfg(target_arch = "x86_64")]
    fma_f64: f64, gemm_f64::microkernel::fma::f64, V3, 4;
    #[cfg(target_arch = "x86_64")]
    avx512_f32: f32, gemm_f32::microkernel::avx512f::f32, V4, 16;
    #[cfg(target_arch = "x86_64")]
    avx512_f64: f64, gemm_f64::microkernel::avx512f::f64, V4, 8;
}

/// The kernel for `T` at `level`, `None` where only `gemm::gemm`'s own dispatch applies (other element types,
/// or the baseline level off x86-64, where that dispatch already is the level).
fn kernel<T: 'static>(level: Isa) -> Option<Kernel<T>> {
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let f: *const () = if TypeId::of::<T>() == TypeId::of::<f32>() {
            match level {
                Isa::Scalar => scalar_f32 as Kernel<f32> as *const (),
                Isa::Avx2 => fma_f32 as Kernel<f32> as *const (),
                Isa::Avx512 => avx512_f32 as Kernel<f32> as *const (),
            }
        } else if TypeId::of::<T>() == TypeId::of::<f64>() {
            match level {
                Isa::Scalar => scalar_f64 as Kernel<f64> as *const (),
                Isa::Avx2 => fma_f64 as Kernel<f64> as *const (),
                Isa::Avx512 => avx512_f64 as Kernel<f64> as *const (),
            }
        } else {
            return None;
        };
        // SAFETY: `f` is a `Kernel<T>` for this very `T` (checked by TypeId above).
        Some(unsafe { std::mem::transmute::<*const (), Kernel<T>>(f) })
    }
}

/// `dst = alpha * dst + beta * lhs * rhs`, `gemm::gemm`'s contract for real types, run at `level` (which
/// must not exceed [`Isa::detected`]). Strides are in elements and must be non-negative, as ours all are.
///
/// # Safety
/// As `gemm::gemm`: `dst` addresses `m x n` writable elements (initialised when `read_dst`) that nothing
/// else accesses meanwhile; `lhs` and `rhs` address `m x k` and `k x n` elements with their strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: 'static>(
    level: Isa,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const T,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const T,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: T,
    beta: T,
    par: Parallelism,
) {
    debug_assert!(level <= Isa::detected());
    debug_assert!([dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs]
        .iter()
        .all(|&s| s >= 0));
    let Some(kernel) = kernel::<T>(level) else {
        // SAFETY: the caller's contract is gemm::gemm's.
        return unsafe {
            gemm::gemm(
                m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
                alpha, beta, false, false, false, par,
            )
        };
    };
    // The microkernels prefer a column-major destination: transpose the product when it is row-major, as
    // `gemm::gemm` does (so results are bit-identical to its own at the same level).
    // SAFETY: the caller's contract; transposing swaps the roles of the operands, not the addresses.
    unsafe {
        if dst_cs < dst_rs {
            kernel(
                n, m, k, dst, dst_rs, dst_cs, read_dst, rhs, rhs_rs, rhs_cs, lhs, lhs_rs, lhs_cs,
                alpha, beta, par,
            )
        } else {
            kernel(
                m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
                alpha, beta, par,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At the CPU's own level our dispatch is `gemm::gemm` bit for bit; every level agrees with an f64 sum.
    #[test]
    fn every_level_matches_gemm_and_the_f64_product() {
        let (m, n, k) = (37, 29, 70);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let want: Vec<f64> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum()
            })
            .collect();
        let run = |level: Option<Isa>, par: Parallelism| {
            let mut c = vec![0.5f32; m * n];
            // SAFETY: dense buffers of the stated sizes.
            unsafe {
                match level {
                    Some(l) => gemm(
                        l,
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        true,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        par,
                    ),
                    None => gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        true,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    ),
                }
            }
            c
        };
        let reference = run(None, Parallelism::None);
        assert_eq!(run(Some(Isa::detected()), Parallelism::None), reference);
        for level in Isa::available() {
            for par in [Parallelism::None, Parallelism::Rayon(2)] {
                let c = run(Some(level), par);
                for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                    let w = w + 0.5;
                    assert!(
                        (got as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "{level} [{i}]: {got} vs {w}"
                    );
                }
            }
        }
    }
}
