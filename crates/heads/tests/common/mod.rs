//! Helpers shared by the heads' tests.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{backprop::GradStore, DType, Device, Result, Tensor};
use fgvc_ops::ParamStore;

/// Loads `tests/fixtures/<name>.safetensors`.
pub fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = format!(
        "{}/tests/fixtures/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// Copies every `param.<name>` of the fixture into the store's var `<name>`; every fixture parameter must
/// exist in the store with the same shape, and every store var must come from the fixture.
pub fn load_params(store: &ParamStore, fx: &HashMap<String, Tensor>) {
    let mut loaded = 0;
    for (k, t) in fx {
        if let Some(name) = k.strip_prefix("param.") {
            let var = store
                .get(name)
                .unwrap_or_else(|| panic!("store has no `{name}`; it has {:?}", store.names()));
            var.set(&t.to_dtype(DType::F32).unwrap())
                .unwrap_or_else(|e| panic!("setting {name}: {e}"));
            loaded += 1;
        }
    }
    assert_eq!(
        loaded,
        store.names().len(),
        "fixture and store differ in their parameters: {:?}",
        store.names()
    );
}

/// Largest absolute difference, relative to max(1, largest |expected|).
pub fn rel_err(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shape mismatch");
    let a = actual
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let e = expected
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let scale = e.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Asserts `actual` matches `expected` within `tol` (relative to the largest expected magnitude).
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
    let err = rel_err(actual, expected);
    assert!(err <= tol, "{what}: relative error {err} > {tol}");
}

/// Sum of |x|.
pub fn abs_sum(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts that every trainable parameter of the store got a non-zero gradient.
pub fn assert_all_params_have_grad(store: &ParamStore, grads: &GradStore) {
    for (name, var) in store.trainable() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("`{name}` has no gradient"));
        assert!(abs_sum(g) > 0.0, "`{name}` has an all-zero gradient");
    }
}

/// A (b, c, h, w) normal tensor from candle's RNG (shapes only; values do not matter).
pub fn randn(dims: (usize, usize, usize, usize)) -> Tensor {
    Tensor::randn(0f32, 1., dims, &Device::Cpu).unwrap()
}

/// u32 class labels from an int64 fixture tensor.
pub fn labels(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

/// A deterministic (b, c, h, w) tensor: values from a fixed formula.
pub fn det(dims: (usize, usize, usize, usize), seed: u32) -> Result<Tensor> {
    let n = dims.0 * dims.1 * dims.2 * dims.3;
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503));
            ((x >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}
