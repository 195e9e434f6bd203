//! bf16 products with f32 accumulation for the CPU's convolution GEMMs (`train.precision = "bf16"`), on
//! CPUs that multiply bf16 in hardware: AMX tiles (`tdpbf16ps`) where present, else AVX512_BF16
//! (`vdpbf16ps`). Only the operands are rounded to bf16, as they are packed for the kernel; the products
//! are summed in f32 and written as f32, so weights, optimiser state, BatchNorm statistics and the loss stay
//! f32 (PyTorch's CPU autocast rounds the same operands, and also keeps the activations between layers in
//! bf16, which we do not).
//!
//! ```
//! use fgvc_ops::{precision, set_precision, Precision};
//!
//! match set_precision(Precision::Bf16) {
//!     Ok(()) => assert_eq!(precision(), Precision::Bf16),
//!     // No AVX512_BF16 here (or FGVC_ISA caps below avx512): the products stay f32.
//!     Err(e) => assert!(e.to_string().contains("bf16")),
//! }
//! set_precision(Precision::F32)?;
//! # Ok::<(), fgvc_ops::PrecisionError>(())
//! ```

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod dpbf16;
#[cfg(target_arch = "x86_64")]
mod gemm;
#[cfg(target_arch = "x86_64")]
mod pack;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::isa::{isa, Isa};

#[cfg(target_arch = "x86_64")]
pub(crate) use gemm::{gemm, gemm_packed, PackedLhs};

/// The environment variable that sets the default precision: `f32` or `bf16`.
pub const PRECISION_ENV: &str = "FGVC_PRECISION";

/// The precision of the CPU convolutions' products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 operands and sums (the default).
    #[default]
    F32,
    /// bf16 operands (rounded to nearest even), f32 sums and results.
    Bf16,
}

impl Precision {
    /// The name configs and `FGVC_PRECISION` use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = PrecisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(PrecisionError(format!(
                "{s:?} is not a precision: use f32 or bf16"
            ))),
        }
    }
}

/// A precision name that is not `f32` or `bf16`, or bf16 asked of a CPU without bf16 products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecisionError(pub String);

impl fmt::Display for PrecisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PrecisionError {}

/// The hardware bf16 product a CPU offers, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bf16Kernel {
    /// AVX512_BF16's `vdpbf16ps`: 16 pairs per instruction, about twice the f32 FMA rate.
    Dpbf16,
    /// AMX's `tdpbf16ps`: a 16x16 f32 tile from 16x32 and 32x16 bf16 tiles per instruction.
    Amx,
}

impl Bf16Kernel {
    /// The kernels this CPU (and operating system, for AMX) can run, narrowest first.
    pub fn available() -> &'static [Bf16Kernel] {
        static AVAILABLE: OnceLock<Vec<Bf16Kernel>> = OnceLock::new();
        AVAILABLE.get_or_init(|| {
            #[allow(unused_mut)]
            let mut v = Vec::new();
            #[cfg(target_arch = "x86_64")]
            if Isa::detected() == Isa::Avx512 && dpbf16::supported() {
                v.push(Bf16Kernel::Dpbf16);
                if amx::supported() {
                    v.push(Bf16Kernel::Amx);
                }
            }
            v
        })
    }

    /// The name benchmark records carry.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Dpbf16 => "avx512bf16",
            Bf16Kernel::Amx => "amx-bf16",
        }
    }

    /// The best kernel at the ISA level in force ([`isa`](crate::isa())): none below `avx512`.
    pub fn current() -> Option<Bf16Kernel> {
        if isa() < Isa::Avx512 {
            return None;
        }
        Bf16Kernel::available().last().copied()
    }
}

impl fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// 0: not read yet, 1: f32, 2: bf16.
static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of the CPU convolutions' products for the whole process from now on. bf16 is
/// refused, naming the reason, where this CPU has no bf16 product at the ISA level in force.
pub fn set_precision(p: Precision) -> Result<(), PrecisionError> {
    if p == Precision::Bf16 && Bf16Kernel::current().is_none() {
        return Err(PrecisionError(unsupported()));
    }
    PRECISION.store(if p == Precision::Bf16 { 2 } else { 1 }, Ordering::Relaxed);
    Ok(())
}

fn unsupported() -> String {
    if Bf16Kernel::available().is_empty() {
        "bf16 precision needs a CPU with AVX512_BF16 or AMX-BF16, and this one has neither \
         (use precision f32)"
            .to_string()
    } else {
        format!(
            "bf16 precision needs the avx512 ISA level, and {}={} caps it at {}",
            crate::isa::ISA_ENV,
            std::env::var(crate::isa::ISA_ENV).unwrap_or_default(),
            isa()
        )
    }
}

/// The precision in force: [`set_precision`]'s last value, else `FGVC_PRECISION`, else f32. An unreadable
/// or unsupported `FGVC_PRECISION` is reported once on stderr and leaves f32.
pub fn precision() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        1 => Precision::F32,
        2 => Precision::Bf16,
        _ => init_precision(),
    }
}

#[cold]
fn init_precision() -> Precision {
    let asked = match std::env::var(PRECISION_ENV) {
        Ok(v) if !v.trim().is_empty() => v.parse::<Precision>().map_err(|e| e.to_string()),
        _ => Ok(Precision::F32),
    };
    let p = match asked.and_then(|p| set_precision(p).map(|()| p).map_err(|e| e.to_string())) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fgvc-ops: {PRECISION_ENV}: {e}; the products stay f32");
            PRECISION.store(1, Ordering::Relaxed);
            Precision::F32
        }
    };
    p
}

/// The kernel the CPU convolutions use now: `Some` only in bf16 precision at a level that has one (a later
/// `FGVC_ISA` cap below avx512 turns bf16 products back into f32 ones).
#[inline]
pub(crate) fn active() -> Option<Bf16Kernel> {
    match precision() {
        Precision::F32 => None,
        Precision::Bf16 => Bf16Kernel::current(),
    }
}

/// f32 to bf16, rounded to nearest even, NaN kept a (quiet) NaN: what `vcvtne2ps2bf16` computes for
/// normal numbers.
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if (b & 0x7fff_ffff) > 0x7f80_0000 {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 back to f32 (exact).
#[cfg(test)]
#[inline(always)]
pub(crate) fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
        assert_eq!(from_bf16(to_bf16(1.0 + 2f32.powi(-8))), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
        assert_eq!(
            from_bf16(to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        // The largest finite f32 rounds up to infinity, as the hardware conversion does.
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
        for x in [0.1f32, 3.7, -1e-3, 123456.0] {
            let r = from_bf16(to_bf16(x));
            assert!(((r - x) / x).abs() <= 2f32.powi(-9), "{x} -> {r}");
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        let e = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("fp8") && e.contains("bf16"), "{e}");
    }
}
