//! Helpers shared by the op test suites.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A seeded f64 tensor of uniform values on `shift ± 1.7 scale`; distinct values avoid max-pool ties.
pub fn randn(rng: &mut ChaCha8Rng, shape: &[usize], scale: f64, shift: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| (rng.random::<f64>() - 0.5) * 3.4 * scale + shift)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}
