//! Small activations and the gradient-reversal op.

use candle_core::{Result, Tensor};

/// `min(max(x, 0), 6)`, MobileNetV2's activation.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    x.clamp(0f32, 6f32)
}

/// Identity forward, `-lambda * grad` backward (DANN's gradient-reversal layer), on every device.
pub fn gradient_reversal(x: &Tensor, lambda: f64) -> Result<Tensor> {
    x.affine(-lambda, 0.)?.add(&x.affine(1. + lambda, 0.)?.detach())
}
