//! The instruction-set level the CPU kernels run at: the widest this CPU has, capped by the `FGVC_ISA`
//! environment variable or [`set_isa_cap`]. The crate is compiled for baseline x86-64, so one binary runs on
//! any x86-64 CPU; the level picks, at run time, which compiled variant of each loop and which `gemm`
//! microkernels run. Benchmarks and tests cap it to measure or check a narrower level on a wider CPU.
//!
//! ```
//! use fgvc_ops::{isa, Isa};
//!
//! assert!(isa() <= Isa::detected());
//! assert_eq!("avx2".parse::<Isa>()?, Isa::Avx2);
//! assert!("sse9".parse::<Isa>().is_err());
//! # Ok::<(), fgvc_ops::IsaError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// The environment variable that caps the level: `scalar`, `avx2` or `avx512`.
pub const ISA_ENV: &str = "FGVC_ISA";

/// An instruction-set level of the CPU kernels, narrowest first (so `min` caps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Baseline code only: SSE2 on x86-64 (the `gemm` crate's scalar microkernels), NEON on aarch64.
    Scalar,
    /// AVX2 and FMA, 8 f32 lanes (x86-64-v3).
    Avx2,
    /// AVX-512 F/BW/DQ/VL, 16 f32 lanes (x86-64-v4).
    Avx512,
}

impl Isa {
    /// Every level, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The name `FGVC_ISA` takes and benchmark records carry.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The widest level this CPU supports (cached after the first call).
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// The levels this CPU can run, narrowest first: every one up to [`Isa::detected`].
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|&l| l <= Isa::detected())
            .collect()
    }

    /// The cap `FGVC_ISA` asks for, `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<Isa>, IsaError> {
        match std::env::var(ISA_ENV) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => v.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(IsaError(v.to_string_lossy().into_owned()))
            }
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = IsaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "scalar" | "baseline" | "sse2" => Ok(Isa::Scalar),
            "avx2" | "x86-64-v3" => Ok(Isa::Avx2),
            "avx512" | "avx-512" | "x86-64-v4" => Ok(Isa::Avx512),
            _ => Err(IsaError(s.to_string())),
        }
    }
}

/// A level name that is not one of `scalar`, `avx2`, `avx512`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsaError(pub String);

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ISA_ENV}={:?} is not an instruction-set level: use scalar, avx2 or avx512",
            self.0
        )
    }
}

impl std::error::Error for IsaError {}

/// The cap in force: 0 until first read, then 1 + the level (`u8::MAX` for none).
static CAP: AtomicU8 = AtomicU8::new(0);
const NO_CAP: u8 = u8::MAX;

fn encode(cap: Option<Isa>) -> u8 {
    cap.map_or(NO_CAP, |l| l as u8 + 1)
}

fn decode(v: u8) -> Option<Isa> {
    Isa::ALL.get(v.wrapping_sub(1) as usize).copied()
}

/// The level the kernels run at now: [`Isa::detected`] capped by [`set_isa_cap`] or, until that is called,
/// by `FGVC_ISA`. A cap above the CPU's level has no effect. An unreadable `FGVC_ISA` is reported once on
/// stderr and ignored here; front ends check it first with [`Isa::from_env`] to refuse it.
#[inline]
pub fn isa() -> Isa {
    let mut v = CAP.load(Ordering::Relaxed);
    if v == 0 {
        v = init_cap();
    }
    match decode(v) {
        Some(cap) => cap.min(Isa::detected()),
        None => Isa::detected(),
    }
}

#[cold]
fn init_cap() -> u8 {
    let cap = Isa::from_env().unwrap_or_else(|e| {
        eprintln!(
            "fgvc-ops: {e}; running at the CPU's level ({})",
            Isa::detected()
        );
        None
    });
    let v = encode(cap);
    // A concurrent `set_isa_cap` wins over the environment.
    match CAP.compare_exchange(0, v, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => v,
        Err(current) => current,
    }
}

/// Caps the level for the whole process (`None`: the CPU's widest), replacing `FGVC_ISA`, and returns the
/// level now in force. Kernels already running finish at the level they started with; ops started after the
/// call use the new one. Meant for benchmarks and for tests that run the kernels at every level in turn.
pub fn set_isa_cap(cap: Option<Isa>) -> Isa {
    CAP.store(encode(cap), Ordering::Relaxed);
    isa()
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use gemm_common::simd::{MixedSimd, V3, V4};
        let v4 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && <V4 as MixedSimd<f32, f32, f32, f32>>::try_new().is_some();
        let v3 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && <V3 as MixedSimd<f32, f32, f32, f32>>::try_new().is_some();
        if v4 && v3 {
            return Isa::Avx512;
        }
        if v3 {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_caps() {
        for l in Isa::ALL {
            assert_eq!(l.name().parse::<Isa>().unwrap(), l);
            assert_eq!(decode(encode(Some(l))), Some(l));
        }
        assert_eq!(decode(encode(None)), None);
        assert!(Isa::Scalar < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        assert_eq!(" AVX512 ".parse::<Isa>().unwrap(), Isa::Avx512);
        let e = "avx3".parse::<Isa>().unwrap_err().to_string();
        assert!(
            e.contains("FGVC_ISA") && e.contains("avx3") && e.contains("avx512"),
            "{e}"
        );
        assert_eq!(Isa::available().last().copied(), Some(Isa::detected()));
        assert_eq!(Isa::available()[0], Isa::Scalar);
    }
}
