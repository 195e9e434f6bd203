//! Whether CUDA convolutions may use TF32 tensor cores (10-bit mantissa products, f32 sums), as PyTorch's
//! do by default. A process-wide switch, read from `FGVC_TF32` (`0` or `1`) the first time it is needed.

use std::sync::atomic::{AtomicU8, Ordering};

/// The environment variable that sets the default: `FGVC_TF32=0` keeps convolutions in full f32.
pub const TF32_ENV: &str = "FGVC_TF32";

// 0: not read yet, 1: off, 2: on.
static TF32: AtomicU8 = AtomicU8::new(0);

/// Allows or forbids TF32 in CUDA convolutions from now on (no effect on the CPU, or without `cuda`).
///
/// ```
/// fgvc_ops::set_tf32(false);
/// assert!(!fgvc_ops::tf32());
/// ```
pub fn set_tf32(allow: bool) {
    TF32.store(if allow { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether CUDA convolutions may use TF32: [`set_tf32`]'s last value, else `FGVC_TF32`, else on
/// (PyTorch's `torch.backends.cudnn.allow_tf32 = True`).
pub fn tf32() -> bool {
    match TF32.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let allow = std::env::var(TF32_ENV).map_or(true, |v| v.trim() != "0");
            set_tf32(allow);
            allow
        }
    }
}
