//! Shared pieces of the CPU kernels: the element trait (f32 and f64), contiguous slices out of candle's
//! storages, the GEMM wrapper and index-range helpers.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// The element types the CPU kernels support: f32 (training) and f64 (gradient checks).
pub(crate) trait Elem:
    Copy
    + Send
    + Sync
    + 'static
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
    fn slice(s: &CpuStorage) -> Result<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Result<&mut [Self]>;
    fn wrap(v: Vec<Self>) -> CpuStorage;
}

macro_rules! elem {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn slice_mut(s: &mut CpuStorage) -> Result<&mut [Self]> {
                match s {
                    CpuStorage::$variant(v) => Ok(v),
                    other => candle_core::bail!(
                        "expected {} storage, got {:?}",
                        stringify!($t),
                        other.dtype()
                    ),
                }
            }
            fn slice(s: &CpuStorage) -> Result<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Ok(v),
                    other => candle_core::bail!(
                        "expected {} storage, got {:?}",
                        stringify!($t),
                        other.dtype()
                    ),
                }
            }
            fn wrap(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
        }
    };
}
elem!(f32, F32);
elem!(f64, F64);

/// A CPU tensor that takes over a kernel's output storage (no copy).
pub(crate) fn cpu_tensor(s: CpuStorage, shape: impl Into<candle_core::Shape>) -> Result<Tensor> {
    let device = candle_core::Device::Cpu;
    match s {
        CpuStorage::F32(v) => Tensor::from_vec(v, shape, &device),
        CpuStorage::F64(v) => Tensor::from_vec(v, shape, &device),
        other => candle_core::bail!("fgvc-ops: unexpected {:?} kernel output", other.dtype()),
    }
}

/// Whether the fast CPU kernels handle this tensor (CPU device, f32 or f64, not inside [`with_composite_ops`]).
pub(crate) fn fast_path(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && !composite_only()
}

/// Whether the calling thread is inside [`with_composite_ops`].
pub(crate) fn composite_only() -> bool {
    COMPOSITE_ONLY.with(Cell::get)
}

thread_local! {
    static COMPOSITE_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this crate's CPU kernels switched off on the calling thread: every op takes the composite of
/// candle ops it takes on CUDA and Metal, so that path can be checked (and compared) on a CPU.
///
/// The switch covers ops *built* inside `f`; their backward passes follow the path their forward took. It is
/// restored when `f` returns or panics, and other threads are not affected.
///
/// ```
/// use candle_core::{Device, Tensor};
///
/// let x = Tensor::new(&[[-1f32, 2.], [3., -4.]], &Device::Cpu)?;
/// let fast = fgvc_ops::relu(&x)?;
/// let composite = fgvc_ops::with_composite_ops(|| fgvc_ops::relu(&x))?;
/// assert_eq!(fast.to_vec2::<f32>()?, composite.to_vec2::<f32>()?);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn with_composite_ops<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the previous setting back, also when `f` unwinds.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPOSITE_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(COMPOSITE_ONLY.with(|c| c.replace(true)));
    f()
}

/// The contiguous elements of a storage described by `l`.
pub(crate) fn contiguous<'a, T: Elem>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let data = T::slice(s)?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => {
            candle_core::bail!("fgvc-ops kernel: expected a contiguous input, got layout {l:?}")
        }
    }
}

/// Calls `$body` with `$t` bound to the element type of the storage `$s` (f32 or f64).
macro_rules! dispatch {
    ($name:expr, $s:expr, $t:ident => $body:expr) => {
        match candle_core::backend::BackendStorage::dtype($s) {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $t = f64;
                $body
            }
            d => candle_core::bail!(
                "{}: unsupported dtype {d:?} on the CPU (f32 and f64 only)",
                $name
            ),
        }
    };
}
pub(crate) use dispatch;

/// `impl CustomOp1/2/3 for $op` whose CPU forward hands the contiguous inputs, as f32 or f64 slices, to
/// `$op::run::<T>` (which returns the output storage and shape). The trait's other items (`bwd`) follow the
/// name. Every kernel op has this forward; only the kernel and the backward differ.
macro_rules! cpu_op {
    (CustomOp1 for $op:ty, $name:literal; $($rest:tt)*) => {
        impl candle_core::CustomOp1 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s: &candle_core::CpuStorage,
                l: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::cpu::dispatch!($name, s, T => self.run::<T>($crate::cpu::contiguous(s, l)?))
            }

            $($rest)*
        }
    };
    (CustomOp2 for $op:ty, $name:literal; $($rest:tt)*) => {
        impl candle_core::CustomOp2 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                use $crate::cpu::contiguous;
                $crate::cpu::dispatch!($name, s1, T => self.run::<T>(contiguous(s1, l1)?, contiguous(s2, l2)?))
            }

            $($rest)*
        }
    };
    (CustomOp3 for $op:ty, $name:literal; $($rest:tt)*) => {
        impl candle_core::CustomOp3 for $op {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &candle_core::CpuStorage,
                l1: &candle_core::Layout,
                s2: &candle_core::CpuStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::CpuStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                use $crate::cpu::contiguous;
                $crate::cpu::dispatch!($name, s1, T => self.run::<T>(
                    contiguous(s1, l1)?,
                    contiguous(s2, l2)?,
                    contiguous(s3, l3)?,
                ))
            }

            $($rest)*
        }
    };
}
pub(crate) use cpu_op;

/// A row-major matrix operand: pointer plus row and column strides in elements.
#[derive(Clone, Copy)]
pub(crate) struct Mat<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> Mat<T> {
    /// A dense row-major `rows x cols` matrix starting at `s`.
    pub fn rows(s: &[T], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose of a dense row-major matrix with `cols` columns starting at `s`.
    pub fn transposed(s: &[T], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// `c (m x n, dense row-major) = [c +] a (m x k) * b (k x n)` through the `gemm` crate: split across the
/// current rayon pool when `parallel`, else on the calling thread (for callers that already run one product
/// per rayon task).
///
/// The caller guarantees that `a` and `b` address at least `m x k` and `k x n` elements with their strides and
/// that `c` holds `m * n` elements.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    accumulate: bool,
    a: Mat<T>,
    b: Mat<T>,
    parallel: bool,
) {
    assert!(c.len() >= m * n, "matmul: destination too small");
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::ZERO);
        }
        return;
    }
    // SAFETY: `c` holds m x n initialised elements, which gemm may read when accumulating.
    unsafe { gemm_raw(m, n, k, c.as_mut_ptr(), accumulate, a, b, parallel) }
}

/// `c (m x n) = a (m x k) * b (k x n)` into a buffer that need not be initialised: every element is written,
/// none read. Threads as [`matmul`].
pub(crate) fn matmul_write<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [MaybeUninit<T>],
    a: Mat<T>,
    b: Mat<T>,
    parallel: bool,
) {
    assert!(c.len() >= m * n, "matmul: destination too small");
    if k == 0 {
        c[..m * n].fill(MaybeUninit::new(T::ZERO));
        return;
    }
    // SAFETY: without accumulation gemm only writes the m x n destination.
    unsafe { gemm_raw(m, n, k, c.as_mut_ptr().cast::<T>(), false, a, b, parallel) }
}

/// A left operand several products share (a convolution's weights, one product per image): in bf16
/// precision it is rounded and packed once for all of them rather than once per product.
pub(crate) struct SharedLhs<T> {
    a: Mat<T>,
    m: usize,
    k: usize,
    #[cfg(target_arch = "x86_64")]
    packed: std::sync::OnceLock<Option<crate::bf16::PackedLhs>>,
}

// SAFETY: the operand is only read, and the caller keeps it alive while the products run.
unsafe impl<T: Sync> Sync for SharedLhs<T> {}

impl<T: Elem> SharedLhs<T> {
    /// The m x k operand `a`; the caller keeps its storage alive and unchanged while this lives.
    pub(crate) fn new(a: Mat<T>, m: usize, k: usize) -> Self {
        Self {
            a,
            m,
            k,
            #[cfg(target_arch = "x86_64")]
            packed: std::sync::OnceLock::new(),
        }
    }

    /// `c (m x n) = [c +] lhs * b`, as [`matmul`].
    pub(crate) fn matmul(
        &self,
        n: usize,
        c: &mut [T],
        accumulate: bool,
        b: Mat<T>,
        parallel: bool,
    ) {
        assert!(c.len() >= self.m * n, "matmul: destination too small");
        if self.k == 0 {
            matmul(self.m, n, 0, c, accumulate, self.a, b, parallel);
            return;
        }
        // SAFETY: `c` holds m x n initialised elements.
        unsafe { self.run(n, c.as_mut_ptr(), accumulate, b, parallel) }
    }

    /// `c (m x n) = lhs * b` into a buffer that need not be initialised, as [`matmul_write`].
    pub(crate) fn matmul_write(
        &self,
        n: usize,
        c: &mut [MaybeUninit<T>],
        b: Mat<T>,
        parallel: bool,
    ) {
        assert!(c.len() >= self.m * n, "matmul: destination too small");
        if self.k == 0 {
            matmul_write(self.m, n, 0, c, self.a, b, parallel);
            return;
        }
        // SAFETY: without accumulation only the m x n destination is written.
        unsafe { self.run(n, c.as_mut_ptr().cast::<T>(), false, b, parallel) }
    }

    /// # Safety
    /// As [`gemm_raw`] for `self.m x n x self.k`.
    unsafe fn run(&self, n: usize, c: *mut T, accumulate: bool, b: Mat<T>, parallel: bool) {
        #[cfg(target_arch = "x86_64")]
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
            let packed = self.packed.get_or_init(|| {
                crate::bf16::active().map(|kernel| {
                    let a = Mat {
                        ptr: self.a.ptr.cast::<f32>(),
                        rs: self.a.rs,
                        cs: self.a.cs,
                    };
                    // SAFETY: T is f32; the kernel is one this CPU has; `a` is m x k (the constructor's contract).
                    unsafe { crate::bf16::PackedLhs::new(kernel, a, self.m, self.k, parallel) }
                })
            });
            if let Some(lhs) = packed {
                let b = Mat {
                    ptr: b.ptr.cast::<f32>(),
                    rs: b.rs,
                    cs: b.cs,
                };
                let parallel = parallel && self.m * n * self.k >= 1 << 16;
                // SAFETY: T is f32; the caller's contract.
                return unsafe {
                    crate::bf16::gemm_packed(lhs, n, c.cast(), accumulate, b, parallel)
                };
            }
        }
        // SAFETY: the caller's contract.
        unsafe { gemm_raw(self.m, n, self.k, c, accumulate, self.a, b, parallel) }
    }
}

/// The `gemm` crate call behind [`matmul`] and [`matmul_write`].
///
/// # Safety
/// `c` addresses `m * n` writable elements (initialised when `accumulate`) that nothing else accesses while
/// this runs, and `a`, `b` address `m x k` and `k x n` elements with their strides.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    c: *mut T,
    accumulate: bool,
    a: Mat<T>,
    b: Mat<T>,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let flops = m * n * k;
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        if let Some(kernel) = crate::bf16::active() {
            let parallel = parallel && flops >= 1 << 16;
            // SAFETY: T is f32 (checked above), so the casts are the identity; the caller's contract is the
            // bf16 product's, and the kernel is one this CPU has.
            return unsafe {
                crate::bf16::gemm(
                    kernel,
                    m,
                    n,
                    k,
                    c.cast(),
                    accumulate,
                    Mat {
                        ptr: a.ptr.cast(),
                        rs: a.rs,
                        cs: a.cs,
                    },
                    Mat {
                        ptr: b.ptr.cast(),
                        rs: b.rs,
                        cs: b.cs,
                    },
                    parallel,
                )
            };
        }
    }
    let par = if !parallel || flops < 1 << 16 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    };
    // SAFETY: the caller's contract; `c` is a dense m x n row-major buffer.
    unsafe {
        crate::gemm_levels::gemm(
            crate::isa::isa(),
            m,
            n,
            k,
            c,
            1,
            n as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            par,
        )
    }
}

/// A vector of `n` elements that `init` writes, without zero-filling it first: at training sizes that fill
/// is a whole extra pass over the output, and on one thread.
///
/// # Safety
/// `init` must write every one of the `n` elements.
pub(crate) unsafe fn written<T: Elem>(
    n: usize,
    init: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    init(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the first n elements were initialised by `init` (the caller's contract).
    unsafe { v.set_len(n) };
    v
}

/// Zero-fills `s` and returns it as initialised elements.
#[inline(always)]
pub(crate) fn zeroed<T: Elem>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    s.fill(MaybeUninit::new(T::ZERO));
    // SAFETY: every element was just written; MaybeUninit<T> has T's layout.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// The outputs `o` in `0..out_len` whose input index `o * stride + offset` falls inside `0..in_len`, as a range.
#[inline(always)]
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    offset: isize,
) -> std::ops::Range<usize> {
    let s = stride as isize;
    // smallest o with o*s + offset >= 0
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset) + s - 1) / s
    };
    // largest o with o*s + offset <= in_len - 1, exclusive bound
    let last = in_len as isize - 1 - offset;
    let hi = if last < 0 { 0 } else { last / s + 1 };
    let lo = (lo as usize).min(out_len);
    let hi = (hi as usize).min(out_len);
    lo..hi.max(lo)
}

/// Evaluates `$body` compiled for the kernels' instruction-set level ([`isa`](crate::isa())): AVX-512,
/// AVX2+FMA, or baseline. The crate is built for baseline x86-64 (SSE2) so that its binaries run anywhere;
/// our element-wise and reduction loops only vectorise 16- or 8-wide once they sit inside a function that
/// enables the wider instructions. The body is written out once per level, each copy in a closure called from
/// exactly one place, so LLVM inlines it into that level's `#[target_feature]` wrapper. A closure handed to
/// one shared wrapper is called from every level's branch and, when large, stays out of line, compiled for
/// the baseline (the cause of SSE-only depthwise and BatchNorm loops before, seen in `perf annotate`).
/// So the body must not call non-inlined helpers holding the loop (helpers it calls are `#[inline(always)]`).
/// Use it around the loop of one parallel task; it evaluates to the body's value (`return` leaves the body).
macro_rules! simd {
    ($body:expr) => {{
        // `unsafe` blocks here may sit inside the caller's own.
        #[allow(unused_unsafe, clippy::redundant_closure_call)]
        let value = match $crate::isa::isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa()` never exceeds the level detected on the running CPU.
            $crate::isa::Isa::Avx512 => unsafe { $crate::cpu::with_avx512(|| $body) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            $crate::isa::Isa::Avx2 => unsafe { $crate::cpu::with_avx2_fma(|| $body) },
            _ => (|| $body)(),
        };
        value
    }};
}
pub(crate) use simd;

/// Calls the `#[inline(always)]` function `$f` at the kernels' ISA level through one `#[target_feature]`
/// wrapper per level that calls it directly. Where a loop sits behind closures that LLVM will not inline
/// into [`simd!`]'s wrappers (bodies that grow large once their helpers are inlined: the blocked BatchNorm
/// sums, the depthwise weight gradient), this forces it: `#[inline(always)]` is honoured at any size.
/// Argument types may be `impl Trait`; generic parameters are listed as `<T: Bound>`.
macro_rules! at_isa_level {
    (<$($g:ident: $b:ident),*> $f:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        unsafe fn v4<$($g: $b),*>($($a: $t),*) -> $r {
            $f($($a),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn v3<$($g: $b),*>($($a: $t),*) -> $r {
            $f($($a),*)
        }
        match $crate::isa::isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa()` never exceeds the level detected on the running CPU.
            $crate::isa::Isa::Avx512 => unsafe { v4($($a),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            $crate::isa::Isa::Avx2 => unsafe { v3($($a),*) },
            _ => $f($($a),*),
        }
    }};
}
pub(crate) use at_isa_level;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn with_avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
pub(crate) unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Splits a `(N, C, S)` buffer into chunks worth parallelising over: single planes when they are large,
/// whole `(C, S)` rows otherwise. Returns the chunk length (a multiple of `s`).
pub(crate) fn plane_chunk(c: usize, s: usize) -> usize {
    if s >= 1024 || c == 0 {
        s.max(1)
    } else {
        (c * s).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for out_len in 0..6 {
            for in_len in 1..7 {
                for stride in 1..4 {
                    for offset in -4isize..4 {
                        let want: Vec<usize> = (0..out_len)
                            .filter(|&o| {
                                let i = o as isize * stride as isize + offset;
                                i >= 0 && i < in_len as isize
                            })
                            .collect();
                        let got: Vec<usize> =
                            valid_range(out_len, in_len, stride, offset).collect();
                        assert_eq!(
                            got, want,
                            "out {out_len} in {in_len} s {stride} off {offset}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_strided_operands() {
        // a = [[1,2],[3,4],[5,6]] (3x2), b^T stored as [[1,0,2],[0,1,3]] -> b (3x2)... use a^T b.
        let a = [1.0f64, 2., 3., 4., 5., 6.]; // 3x2
        let b = [1.0f64, 0., 2., 0., 1., 3.]; // 2x3
        let mut c = [0.0f64; 9];
        matmul(
            3,
            3,
            2,
            &mut c,
            false,
            Mat::rows(&a, 2),
            Mat::rows(&b, 3),
            true,
        );
        assert_eq!(c, [1., 2., 8., 3., 4., 18., 5., 6., 28.]);
        // c2 (2x2) = a^T a, accumulated onto ones
        let mut c2 = [1.0f64; 4];
        matmul(
            2,
            2,
            3,
            &mut c2,
            true,
            Mat::transposed(&a, 2),
            Mat::rows(&a, 2),
            false,
        );
        assert_eq!(c2, [36., 45., 45., 57.]);
    }
}
