//! The composite path every op takes off the CPU (CUDA, Metal, f16/bf16), run on the CPU through
//! [`with_composite_ops`] and compared with the CPU kernels in f64: outputs, the gradient of every input and
//! parameter, and the running statistics and optimiser state afterwards.
//!
//! Shapes stay inside what candle's own conv handles (square stride, padding and dilation; height and width
//! of one parity under stride 2), since that is the composite's documented limit.

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use fgvc_ops::{
    adaptive_avg_pool2d, avg_pool2d, conv2d, depthwise_conv2d, elu, global_avg_pool,
    global_max_pool, gradient_reversal, max_pool2d, relu, relu6, with_composite_ops, Activation,
    BatchNorm, Conv2d, Conv2dConfig, Linear, Params, SgdStep,
};
mod common;

use common::{adamw_stepper, flat, randn, run_layer, sgd_stepper, Outcome};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// [`run_layer`] in f64, on the kernels or on the composite path.
fn run(
    composite: bool,
    inputs: &[Tensor],
    f: &dyn Fn(&Params, &[Tensor]) -> Result<Tensor>,
) -> Outcome {
    let body = || run_layer(DType::F64, 1.0, inputs, f);
    if composite {
        with_composite_ops(body)
    } else {
        body()
    }
}

/// The two paths agree to rounding on every entry of [`run`]'s outcome.
fn agree(case: &str, inputs: &[Tensor], f: impl Fn(&Params, &[Tensor]) -> Result<Tensor>) {
    let (fast, composite) = (run(false, inputs, &f), run(true, inputs, &f));
    let names = |o: &Outcome| o.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&fast),
        names(&composite),
        "{case}: different outcomes"
    );
    assert!(fast.len() > inputs.len(), "{case}: nothing compared");
    for ((name, a), (_, b)) in fast.iter().zip(&composite) {
        assert_eq!(a.len(), b.len(), "{case} {name}: sizes differ");
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-10 * (1.0 + q.abs()),
                "{case} {name}[{i}]: kernels {p}, composite {q}"
            );
        }
    }
}

fn input(seed: u64, shape: &[usize]) -> Tensor {
    randn(&mut ChaCha8Rng::seed_from_u64(seed), shape, 2.0, 0.2)
}

#[test]
fn the_switch_changes_the_path_and_is_restored() {
    // A 3x3/2 max pool: the kernel routes a window's gradient to its first maximum, the composite splits a
    // tie between the tied entries; a constant input shows which path ran.
    let x =
        Var::from_tensor(&Tensor::ones((1, 1, 3, 3), DType::F64, &Device::Cpu).unwrap()).unwrap();
    let grad = || {
        let y = max_pool2d(x.as_tensor(), 3, 2, 0).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        flat(g.get(x.as_tensor()).unwrap())
    };
    let mut first = vec![0.0; 9];
    first[0] = 1.0;
    assert_eq!(grad(), first);
    let split = with_composite_ops(grad);
    assert_ne!(split, first);
    assert!((split.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert_eq!(grad(), first, "the switch is restored after the closure");
    let caught = std::panic::catch_unwind(|| with_composite_ops(|| panic!("inside")));
    assert!(caught.is_err());
    assert_eq!(grad(), first, "the switch is restored after a panic");
}

#[test]
fn dense_conv() {
    // (input, out channels, kernel, stride, padding, dilation, bias)
    let cases = [
        ([2, 3, 8, 8], 4, 3, 1, 1, 1, true),
        ([2, 3, 9, 9], 4, 3, 2, 1, 1, false),
        ([2, 3, 10, 10], 5, 7, 2, 3, 1, false), // the ResNet stem's geometry
        ([2, 4, 6, 5], 3, 1, 1, 0, 1, true),
        ([1, 2, 9, 8], 3, 3, 1, 2, 2, false),
    ];
    for (shape, co, k, s, p, d, bias) in cases {
        let cfg = Conv2dConfig {
            dilation: (d, d),
            ..Conv2dConfig::new(s, p)
        };
        agree(
            &format!("conv {shape:?} k{k} s{s} p{p} d{d}"),
            &[input(1, &shape)],
            |ps, x| Conv2d::new(shape[1], co, k, cfg, bias, &ps.pp("conv"))?.forward(&x[0]),
        );
        agree(
            &format!("conv2d fn {shape:?}"),
            &[input(2, &shape)],
            |ps, x| {
                let w = ps.get((co, shape[1], k, k), "w", fgvc_ops::Init::Const(0.0))?;
                conv2d(&x[0], &w, None, &cfg)
            },
        );
    }
}

#[test]
fn depthwise_conv() {
    for (shape, s) in [([2, 4, 8, 8], 1), ([2, 4, 8, 8], 2), ([1, 3, 7, 7], 2)] {
        let c = shape[1];
        let cfg = Conv2dConfig::new(s, 1).with_groups(c);
        agree(
            &format!("depthwise {shape:?} s{s}"),
            &[input(3, &shape)],
            |ps, x| Conv2d::new(c, c, 3, cfg, true, &ps.pp("dw"))?.forward(&x[0]),
        );
        agree(
            &format!("depthwise fn {shape:?} s{s}"),
            &[input(4, &shape)],
            |ps, x| {
                let w = ps.get((c, 1, 3, 3), "w", fgvc_ops::Init::Const(0.0))?;
                depthwise_conv2d(&x[0], &w, None, &cfg)
            },
        );
    }
}

#[test]
fn pooling() {
    let x = [input(5, &[2, 3, 9, 9])];
    agree("max 3x3/2 p1", &x, |_, x| max_pool2d(&x[0], 3, 2, 1));
    agree("max 3x3/2", &x, |_, x| max_pool2d(&x[0], 3, 2, 0));
    agree("max 3x3/3", &x, |_, x| max_pool2d(&x[0], 3, 3, 0));
    agree("global max", &x, |_, x| global_max_pool(&x[0]));
    agree("global avg", &x, |_, x| global_avg_pool(&x[0]));
    agree("avg 3x3/3", &x, |_, x| avg_pool2d(&x[0], 3, 3));
    agree("adaptive 3x3 (divides)", &x, |_, x| {
        adaptive_avg_pool2d(&x[0], (3, 3))
    });
    agree("adaptive 4x2 (overlapping windows)", &x, |_, x| {
        adaptive_avg_pool2d(&x[0], (4, 2))
    });
    let even = [input(6, &[2, 3, 8, 8])];
    agree("max 2x2/2", &even, |_, x| max_pool2d(&x[0], 2, 2, 0));
}

#[test]
fn batch_norm_train_and_eval() {
    for train in [true, false] {
        for shape in [vec![3, 4, 3, 5], vec![6, 4]] {
            agree(
                &format!("bn {shape:?} train {train}"),
                &[input(7, &shape)],
                |ps, x| BatchNorm::new(4, &ps.pp("bn"))?.forward_t(&x[0], train),
            );
        }
    }
}

#[test]
fn batch_norm_with_residual_and_activation() {
    let xs = [input(8, &[3, 4, 3, 5]), input(9, &[3, 4, 3, 5])];
    for train in [true, false] {
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            agree(&format!("bn+res {act:?} train {train}"), &xs, |ps, x| {
                BatchNorm::new(4, &ps.pp("bn"))?.forward_act(&x[0], Some(&x[1]), act, train)
            });
            agree(&format!("bn {act:?} train {train}"), &xs[..1], |ps, x| {
                BatchNorm::new(4, &ps.pp("bn"))?.forward_act(&x[0], None, act, train)
            });
        }
    }
}

#[test]
fn conv_batch_norm() {
    // (in, out, kernel, stride, padding, groups)
    for (ci, co, k, s, p, groups) in [(3, 4, 3, 2, 1, 1), (4, 6, 1, 1, 0, 1), (5, 5, 3, 1, 1, 5)] {
        for train in [true, false] {
            for act in [Activation::Relu, Activation::Relu6, Activation::Identity] {
                let case = format!("conv+bn {ci}->{co} k{k} s{s} g{groups} {act:?} train {train}");
                agree(&case, &[input(10, &[2, ci, 8, 8])], |ps, x| {
                    let cfg = Conv2dConfig::new(s, p).with_groups(groups);
                    let conv = Conv2d::new(ci, co, k, cfg, false, &ps.pp("conv"))?;
                    BatchNorm::new(co, &ps.pp("bn"))?.forward_conv(&conv, &x[0], act, train)
                });
            }
        }
    }
}

#[test]
fn activations_and_linear() {
    // Away from the kinks at 0 and 6, where the two paths may pick different one-sided gradients.
    let x = input(12, &[4, 10]).affine(3.0, 0.01).unwrap();
    let x = [x];
    agree("relu", &x, |_, x| relu(&x[0]));
    agree("relu6", &x, |_, x| relu6(&x[0]));
    agree("elu", &x, |_, x| elu(&x[0], 0.7));
    agree("gradient reversal", &x, |_, x| {
        gradient_reversal(&x[0], 0.3)
    });
    agree("linear", &x, |ps, x| {
        Linear::new(10, 3, true, &ps.pp("fc"))?.forward(&x[0])
    });
}

/// Three optimiser steps on each path from the same start; f32, as training runs.
fn steps(composite: bool, step: &dyn Fn(&Var, &Tensor, usize) -> Vec<Var>) -> Vec<Vec<f32>> {
    let body = || {
        let p = Var::from_tensor(&input(13, &[5000]).to_dtype(DType::F32).unwrap()).unwrap();
        let mut state = Vec::new();
        for t in 1..=3 {
            let g = input(13 + t as u64, &[5000]).to_dtype(DType::F32).unwrap();
            state = step(&p, &g, t);
        }
        let mut out = vec![p.as_tensor().to_vec1::<f32>().unwrap()];
        out.extend(
            state
                .iter()
                .map(|v| v.as_tensor().to_vec1::<f32>().unwrap()),
        );
        out
    };
    if composite {
        with_composite_ops(body)
    } else {
        body()
    }
}

fn steps_agree(case: &str, step: impl Fn(&Var, &Tensor, usize) -> Vec<Var>) {
    let (fast, composite) = (steps(false, &step), steps(true, &step));
    assert_eq!(fast.len(), composite.len(), "{case}");
    for (a, b) in fast.iter().zip(&composite) {
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-6 * (1.0 + q.abs()),
                "{case}[{i}]: {p} vs {q}"
            );
        }
    }
}

#[test]
fn optimiser_updates() {
    for (momentum, nesterov, weight_decay) in
        [(0.0, false, 0.0), (0.9, false, 1e-4), (0.9, true, 5e-4)]
    {
        let sgd = SgdStep {
            lr: 0.1,
            weight_decay,
            momentum,
            dampening: 0.0,
            nesterov,
        };
        steps_agree(&format!("sgd {sgd:?}"), sgd_stepper(sgd));
    }
    for weight_decay in [0.0, 0.01] {
        steps_agree(
            &format!("adamw decay {weight_decay}"),
            adamw_stepper(weight_decay),
        );
    }
}
