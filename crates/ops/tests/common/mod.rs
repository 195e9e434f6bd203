//! Helpers shared by the op test suites.

use candle_core::{DType, Device, Tensor, Var};
use fgvc_ops::{adamw_step, sgd_step, AdamWStep, SgdStep};
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
