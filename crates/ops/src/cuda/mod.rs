//! The CUDA side of fgvc-ops (the `cuda` feature): cuDNN convolutions with both gradients, behind the same
//! custom ops as the CPU kernels, so a model's code does not change with the device.
//!
//! - [`cudnn`]: one cuDNN handle per thread and device, on candle's stream; descriptors that free
//!   themselves; the algorithm of each shape chosen once, among cuDNN's deterministic ones, so a seed fixes
//!   a run as it does on the CPU.
//! - [`conv`]: dense and depthwise (grouped) forward, backward-data and backward-filter.
//!
//! f32 only: other dtypes, and every op without a CUDA kernel here, take candle's composite, as before.
//! Convolutions may use TF32 tensor cores, as PyTorch's do by default (`torch.backends.cudnn.allow_tf32`);
//! [`set_tf32`](crate::set_tf32) or `FGVC_TF32=0` turns that off for bit-level comparisons.

pub(crate) mod conv;
pub(crate) mod cudnn;

use candle_core::{DType, Tensor};

/// Whether an op with a CUDA kernel here runs it for `x`: a CUDA f32 tensor, outside
/// [`with_composite_ops`](crate::with_composite_ops).
pub(crate) fn cuda_path(x: &Tensor) -> bool {
    x.device().is_cuda() && x.dtype() == DType::F32 && !crate::cpu::composite_only()
}
