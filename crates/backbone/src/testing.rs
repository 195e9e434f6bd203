//! Helpers of this crate's unit tests: deterministic inputs, and twin stores whose models start equal, so
//! a layer's result can be compared with a reference built from the same parameters without one pass
//! touching the other's running statistics or dropout stream.

use candle_core::{DType, Device, Result, Tensor};
use fgvc_ops::ParamStore;

/// A deterministic, non-constant input of `shape` (candle's CPU `randn` cannot be seeded).
pub(crate) fn input(shape: (usize, usize, usize, usize)) -> Tensor {
    let (n, c, h, w) = shape;
    Tensor::arange(0f32, (n * c * h * w) as f32, &Device::Cpu)
        .and_then(|t| t.affine(0.37, 0.)?.sin()?.reshape(shape))
        .expect("a CPU tensor")
}

/// Two stores with the same seed: the same constructors called under both build equal models.
pub(crate) fn twin_stores(seed: u64) -> (ParamStore, ParamStore) {
    let store = || ParamStore::new(seed, DType::F32, &Device::Cpu);
    (store(), store())
}

/// The largest absolute difference of `a` and `b`, relative to the largest magnitude of `b` (at least 1).
pub(crate) fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let diff = a.sub(b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
    Ok(diff / scale)
}
