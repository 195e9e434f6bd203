//! The in-place optimiser updates against the same formulas written with candle's ops: bit for bit over
//! several steps, for every SGD variant and AdamW with and without decay.

use candle_core::{DType, Device, Result, Tensor, Var};
use fgvc_ops::{adamw_step, sgd_step, AdamWStep, SgdStep};

fn wave(n: usize, phase: f64, scale: f64) -> Tensor {
    Tensor::arange(0f32, n as f32, &Device::Cpu)
        .unwrap()
        .affine(0.37, phase)
        .unwrap()
        .sin()
        .unwrap()
        .affine(scale, 0.)
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// `torch.optim.SGD` written with candle's ops; returns (p, buf).
fn sgd_reference(
    p: &Tensor,
    g: &Tensor,
    buf: Option<&Tensor>,
    s: &SgdStep,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut d = if s.weight_decay != 0. {
        g.add(&p.affine(s.weight_decay, 0.)?)?
    } else {
        g.clone()
    };
    let mut new_buf = None;
    if s.momentum != 0. {
        let b = match buf {
            None => d.copy()?,
            Some(b) => b
                .affine(s.momentum, 0.)?
                .add(&d.affine(1. - s.dampening, 0.)?)?,
        };
        d = if s.nesterov {
            d.add(&b.affine(s.momentum, 0.)?)?
        } else {
            b.clone()
        };
        new_buf = Some(b);
    }
    Ok((p.sub(&d.affine(s.lr, 0.)?)?, new_buf))
}

#[test]
fn sgd_step_matches_the_formula_bit_for_bit() {
    let n = 40_000; // several parallel chunks
    for (momentum, dampening, nesterov, weight_decay) in [
        (0., 0., false, 0.),
        (0., 0., false, 5e-4),
        (0.9, 0., false, 0.),
        (0.9, 0.1, false, 5e-4),
        (0.9, 0., true, 5e-4),
    ] {
        let s = SgdStep {
            lr: 0.03,
            weight_decay,
            momentum,
            dampening,
            nesterov,
        };
        let p = Var::from_tensor(&wave(n, 0.2, 1.5)).unwrap();
        let (mut rp, mut rbuf) = (p.as_tensor().copy().unwrap(), None);
        let mut buf = None;
        for t in 0..4 {
            let g = wave(n, t as f64, 0.7);
            buf = sgd_step(&p, &g, buf.as_ref(), &s).unwrap();
            (rp, rbuf) = sgd_reference(&rp, &g, rbuf.as_ref(), &s).unwrap();
            assert_eq!(bits(p.as_tensor()), bits(&rp), "{s:?} step {t}");
            match (&buf, &rbuf) {
                (Some(b), Some(r)) => {
                    assert_eq!(bits(b.as_tensor()), bits(r), "{s:?} buffer step {t}")
                }
                (None, None) => {}
                _ => panic!("{s:?}: buffer presence differs"),
            }
        }
    }
}

#[test]
fn adamw_step_matches_the_formula_bit_for_bit() {
    let n = 40_000;
    // beta1 0.9 and 0.3 take lerp's two formulas.
    for (beta1, weight_decay) in [(0.9, 0.05), (0.3, 0.)] {
        let p = Var::from_tensor(&wave(n, 0.4, 1.0)).unwrap();
        let m = Var::zeros(n, DType::F32, &Device::Cpu).unwrap();
        let v = Var::zeros(n, DType::F32, &Device::Cpu).unwrap();
        let (mut rp, mut rm, mut rv) = (
            p.as_tensor().copy().unwrap(),
            m.as_tensor().copy().unwrap(),
            v.as_tensor().copy().unwrap(),
        );
        for t in 1..=4u64 {
            let s = AdamWStep {
                lr: 2e-3,
                weight_decay,
                beta1,
                beta2: 0.999,
                eps: 1e-8,
                step: t,
            };
            let g = wave(n, t as f64, 0.3);
            adamw_step(&p, &g, &m, &v, &s).unwrap();
            // Reference.
            if weight_decay != 0. {
                rp = rp.affine(1. - s.lr * weight_decay, 0.).unwrap();
            }
            let w = 1. - beta1;
            let diff = g.sub(&rm).unwrap();
            rm = if w < 0.5 {
                rm.add(&diff.affine(w, 0.).unwrap()).unwrap()
            } else {
                g.sub(&diff.affine(1. - w, 0.).unwrap()).unwrap()
            };
            rv = rv
                .affine(s.beta2, 0.)
                .unwrap()
                .add(&g.sqr().unwrap().affine(1. - s.beta2, 0.).unwrap())
                .unwrap();
            let (bc1, bc2) = (1. - beta1.powi(t as i32), 1. - s.beta2.powi(t as i32));
            let denom = rv
                .sqrt()
                .unwrap()
                .affine(1. / bc2.sqrt(), 0.)
                .unwrap()
                .affine(1., s.eps)
                .unwrap();
            let update = rm.div(&denom).unwrap().affine(s.lr / bc1, 0.).unwrap();
            rp = rp.sub(&update).unwrap();
            assert_eq!(bits(m.as_tensor()), bits(&rm), "exp_avg step {t}");
            assert_eq!(bits(v.as_tensor()), bits(&rv), "exp_avg_sq step {t}");
            assert_eq!(bits(p.as_tensor()), bits(&rp), "param step {t}");
        }
    }
}

#[test]
fn updates_reject_mismatched_shapes_and_step_zero() {
    let p = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let g = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let s = SgdStep {
        lr: 0.1,
        weight_decay: 0.,
        momentum: 0.,
        dampening: 0.,
        nesterov: false,
    };
    let err = sgd_step(&p, &g, None, &s).unwrap_err().to_string();
    assert!(err.contains("does not match parameter"), "{err}");
    let z = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let g3 = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let a = AdamWStep {
        lr: 0.1,
        weight_decay: 0.,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step: 0,
    };
    let err = adamw_step(&p, &g3, &z, &z.clone(), &a)
        .unwrap_err()
        .to_string();
    assert!(err.contains("count from 1"), "{err}");
}
