//! Helpers shared by the op test suites.

use candle_core::{DType, Device, Result, Tensor, Var};
use fgvc_ops::{adamw_step, sgd_step, AdamWStep, ParamStore, Params, SgdStep};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A seeded f64 tensor of uniform values on `shift ± 1.7 scale`; distinct values avoid max-pool ties.
pub fn randn(rng: &mut ChaCha8Rng, shape: &[usize], scale: f64, shift: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| (rng.random::<f64>() - 0.5) * 3.4 * scale + shift)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// One `sgd_step` per call `(param, grad, step t)`, its momentum buffer kept between calls and reset at
/// `t == 1`; returns the optimiser state (the buffer, once there is one).
#[allow(dead_code)]
pub fn sgd_stepper(sgd: SgdStep) -> impl Fn(&Var, &Tensor, usize) -> Vec<Var> {
    let buf = std::cell::RefCell::new(None::<Var>);
    move |p, g, t| {
        if t == 1 {
            *buf.borrow_mut() = None;
        }
        let next = sgd_step(p, g, buf.borrow().as_ref(), &sgd).unwrap();
        if next.is_some() {
            *buf.borrow_mut() = next;
        }
        buf.borrow().iter().cloned().collect()
    }
}

/// One `adamw_step` (lr 1e-3, betas 0.9/0.999, eps 1e-8) per call, the moments zeroed at `t == 1`; returns
/// the two moments.
#[allow(dead_code)]
pub fn adamw_stepper(weight_decay: f64) -> impl Fn(&Var, &Tensor, usize) -> Vec<Var> {
    let moments = std::cell::RefCell::new(None::<(Var, Var)>);
    move |p, g, t| {
        if t == 1 {
            let zeros = || Var::zeros(p.dims(), DType::F32, &Device::Cpu).unwrap();
            *moments.borrow_mut() = Some((zeros(), zeros()));
        }
        let guard = moments.borrow();
        let (m, v) = guard.as_ref().unwrap();
        let step = AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: t as u64,
        };
        adamw_step(p, g, m, v, &step).unwrap();
        vec![m.clone(), v.clone()]
    }
}

/// What one layer run produced, flattened to f64: the output, each input's gradient, each trainable
/// parameter's gradient, then every stored value (parameters and running statistics) after the step.
#[allow(dead_code)]
pub type Outcome = Vec<(String, Vec<f64>)>;

/// A tensor's values as f64.
#[allow(dead_code)]
pub fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Builds the layer `f` in `dtype` from a seeded store, gives its trainable values seeded random values
/// (weights around 1, the rest around 0.3, spread `scale`), applies it to `inputs` and back-propagates
/// `sum(y * g)` for a fixed random `g`.
#[allow(dead_code)]
pub fn run_layer(
    dtype: DType,
    scale: f64,
    inputs: &[Tensor],
    f: &dyn Fn(&Params, &[Tensor]) -> Result<Tensor>,
) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let store = ParamStore::new(5, dtype, &Device::Cpu);
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap())
        .collect();
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    // Build once so the parameters exist, give them random values, then run for real.
    f(&store.root(), &xs).unwrap();
    for (name, var) in store.trainable() {
        let shift = if name.ends_with("weight") { 1.0 } else { 0.3 };
        let v = randn(&mut rng, var.dims(), scale, shift);
        var.set(&v.to_dtype(dtype).unwrap()).unwrap();
    }
    let y = f(&store.root(), &xs).unwrap();
    let g = randn(&mut rng, y.dims(), 1.0, 0.0).to_dtype(dtype).unwrap();
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![("output".to_string(), flat(&y))];
    for (i, v) in vars.iter().enumerate() {
        if let Some(gv) = grads.get(v.as_tensor()) {
            out.push((format!("grad input {i}"), flat(gv)));
        }
    }
    for (name, var) in store.trainable() {
        let gv = grads.get(var.as_tensor()).expect("parameter gradient");
        out.push((format!("grad {name}"), flat(gv)));
    }
    for (name, var) in store.all() {
        out.push((name, flat(var.as_tensor())));
    }
    out
}
