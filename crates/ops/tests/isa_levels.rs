//! The CPU kernels at every instruction-set level this machine has (`fgvc_ops::set_isa_cap`): in f32, each
//! level's output, input and parameter gradients, running statistics and optimiser state against the f64
//! composite path (candle's own ops), and the levels against each other. Shapes have odd sizes and channel
//! counts so that every vector loop also runs its remainder.
//!
//! One test function walks the levels in turn: the cap is process-wide, and this file is its own process.

use candle_core::{DType, Module, Result, Tensor, Var};
use fgvc_ops::{
    adaptive_avg_pool2d, avg_pool2d, elu, global_avg_pool, max_pool2d, relu6, set_isa_cap,
    with_composite_ops, Activation, BatchNorm, Conv2d, Conv2dConfig, Isa, Params, SgdStep,
};
mod common;

use common::{adamw_stepper, flat, randn, run_layer, sgd_stepper, Outcome};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// [`run_layer`] with parameter values of spread 0.5.
fn run(
    dtype: DType,
    inputs: &[Tensor],
    f: &dyn Fn(&Params, &[Tensor]) -> Result<Tensor>,
) -> Outcome {
    run_layer(dtype, 0.5, inputs, f)
}

/// Three optimiser steps from the same start, f32 (the optimisers' training dtype).
fn steps(step: &dyn Fn(&Var, &Tensor, usize) -> Vec<Var>) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let p = Var::from_tensor(
        &randn(&mut rng, &[4099], 1.0, 0.0)
            .to_dtype(DType::F32)
            .unwrap(),
    )
    .unwrap();
    let mut state = Vec::new();
    for t in 1..=3 {
        let g = randn(&mut rng, &[4099], 1.0, 0.0)
            .to_dtype(DType::F32)
            .unwrap();
        state = step(&p, &g, t);
    }
    let mut out = vec![("param".to_string(), flat(p.as_tensor()))];
    out.extend(
        state
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("state {i}"), flat(v.as_tensor()))),
    );
    out
}

/// `a` within `tol` of `b`, relative to the largest magnitude of each entry's tensor.
fn close(case: &str, what: &str, a: &Outcome, b: &Outcome, tol: f64) {
    assert_eq!(a.len(), b.len(), "{case} ({what}): different outcomes");
    for ((name, x), (_, y)) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len(), "{case} {name} ({what}): sizes differ");
        let scale = y.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (i, (p, q)) in x.iter().zip(y).enumerate() {
            assert!(
                (p - q).abs() <= tol * scale,
                "{case} {name}[{i}] ({what}): {p} vs {q} (scale {scale})"
            );
        }
    }
}

type Case = (
    String,
    Vec<Tensor>,
    Box<dyn Fn(&Params, &[Tensor]) -> Result<Tensor>>,
);

fn input(seed: u64, shape: &[usize]) -> Tensor {
    randn(&mut ChaCha8Rng::seed_from_u64(seed), shape, 1.0, 0.1)
}

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = Vec::new();
    // Dense convs: 3x3 stride 1 and 2, a 1x1, odd maps and channel counts.
    for (ci, co, k, s, p) in [(19, 21, 3, 1, 1), (7, 9, 3, 2, 1), (37, 5, 1, 1, 0)] {
        let shape = [2, ci, 17, 15];
        v.push((
            format!("conv {ci}->{co} k{k} s{s}"),
            vec![input(1, &shape)],
            Box::new(move |ps, x| {
                Conv2d::new(ci, co, k, Conv2dConfig::new(s, p), true, &ps.pp("conv"))?
                    .forward(&x[0])
            }),
        ));
    }
    // Depthwise (MobileNetV2's), rows of 37 (two 16-lane vectors and a remainder).
    for s in [1, 2] {
        let c = 11;
        v.push((
            format!("depthwise s{s}"),
            vec![input(2, &[2, c, 21, 37])],
            Box::new(move |ps, x| {
                let cfg = Conv2dConfig::new(s, 1).with_groups(c);
                Conv2d::new(c, c, 3, cfg, false, &ps.pp("dw"))?.forward(&x[0])
            }),
        ));
    }
    // Conv + BatchNorm + ReLU6, and BatchNorm with a residual and ReLU, in training mode.
    v.push((
        "conv+bn relu6".into(),
        vec![input(3, &[3, 5, 19, 19])],
        Box::new(|ps, x| {
            let conv = Conv2d::new(5, 13, 3, Conv2dConfig::new(1, 1), false, &ps.pp("conv"))?;
            BatchNorm::new(13, &ps.pp("bn"))?.forward_conv(&conv, &x[0], Activation::Relu6, true)
        }),
    ));
    v.push((
        "bn+residual relu".into(),
        vec![input(4, &[3, 7, 23, 19]), input(5, &[3, 7, 23, 19])],
        Box::new(|ps, x| {
            BatchNorm::new(7, &ps.pp("bn"))?.forward_act(&x[0], Some(&x[1]), Activation::Relu, true)
        }),
    ));
    v.push((
        "bn 1-d eval".into(),
        vec![input(6, &[9, 37])],
        Box::new(|ps, x| BatchNorm::new(37, &ps.pp("bn"))?.forward_t(&x[0], false)),
    ));
    // Pooling and activations.
    let pool = || vec![input(7, &[2, 5, 19, 17])];
    v.push((
        "max 3x3/2 p1".into(),
        pool(),
        Box::new(|_, x| max_pool2d(&x[0], 3, 2, 1)),
    ));
    v.push((
        "avg 3x3/3".into(),
        pool(),
        Box::new(|_, x| avg_pool2d(&x[0], 3, 3)),
    ));
    v.push((
        "adaptive 4x3".into(),
        pool(),
        Box::new(|_, x| adaptive_avg_pool2d(&x[0], (4, 3))),
    ));
    v.push((
        "global avg".into(),
        pool(),
        Box::new(|_, x| global_avg_pool(&x[0])),
    ));
    // Away from the kinks at 0 and 6.
    let act = || vec![input(8, &[5, 4111]).affine(4.0, 0.013).unwrap()];
    v.push(("relu6".into(), act(), Box::new(|_, x| relu6(&x[0]))));
    v.push(("elu".into(), act(), Box::new(|_, x| elu(&x[0], 0.7))));
    v
}

fn optimiser_runs() -> Outcome {
    let sgd = SgdStep {
        lr: 0.1,
        weight_decay: 5e-4,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
    };
    let mut out = steps(&sgd_stepper(sgd));
    out.extend(steps(&adamw_stepper(0.01)));
    out
}

#[test]
fn every_level_matches_the_f64_reference_and_the_other_levels() {
    let levels = Isa::available();
    eprintln!("levels on this CPU: {levels:?}");
    assert_eq!(levels[0], Isa::Scalar);
    let cases = cases();
    // The reference: candle's own ops in f64, independent of our kernels and of the level.
    let reference: Vec<Outcome> = cases
        .iter()
        .map(|(_, x, f)| with_composite_ops(|| run(DType::F64, x, f.as_ref())))
        .collect();
    let optimiser_reference = with_composite_ops(optimiser_runs);
    let mut first: Option<(Isa, Vec<Outcome>, Outcome)> = None;
    for &level in &levels {
        assert_eq!(set_isa_cap(Some(level)), level);
        assert_eq!(fgvc_ops::isa(), level);
        let got: Vec<Outcome> = cases
            .iter()
            .map(|(_, x, f)| run(DType::F32, x, f.as_ref()))
            .collect();
        let optimisers = optimiser_runs();
        for ((name, _, _), (g, r)) in cases.iter().zip(got.iter().zip(&reference)) {
            close(name, &format!("{level} f32 vs f64 reference"), g, r, 2e-4);
        }
        close(
            "optimisers",
            &format!("{level} vs f64 reference"),
            &optimisers,
            &optimiser_reference,
            1e-5,
        );
        match &first {
            None => first = Some((level, got, optimisers)),
            Some((l0, g0, o0)) => {
                for ((name, _, _), (g, r)) in cases.iter().zip(got.iter().zip(g0)) {
                    close(name, &format!("{level} vs {l0}"), g, r, 1e-4);
                }
                close(
                    "optimisers",
                    &format!("{level} vs {l0}"),
                    &optimisers,
                    o0,
                    1e-6,
                );
            }
        }
    }
    // A cap above the CPU's level runs at the CPU's level; `None` lifts the cap.
    assert_eq!(set_isa_cap(Some(Isa::Avx512)), Isa::detected());
    assert_eq!(set_isa_cap(None), Isa::detected());
}
