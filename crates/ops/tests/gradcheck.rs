//! Finite-difference gradient checks in f64 for every op's CPU backward.
//!
//! For a loss `sum(f(inputs) * g)` with a fixed random `g`, every element of every input is perturbed by
//! +-h and the central difference is compared with the gradient from `backward()`.

use candle_core::{DType, Device, Result, Tensor, Var};
use fgvc_ops::{
    adaptive_avg_pool2d, avg_pool2d, batch_norm, conv2d, depthwise_conv2d, elu, global_avg_pool,
    global_max_pool, max_pool2d, relu, relu6, Activation, BatchNorm, BatchNormConfig, Conv2dConfig,
    ParamStore,
};
mod common;

use common::randn;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Checks the gradients of `sum(f(inputs) * g)` against central differences; returns the worst relative error.
fn gradcheck(seed: u64, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let y = f(inputs).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let g = randn(&mut rng, y.dims(), 1.0, 0.0);
    let loss = |xs: &[Tensor]| -> f64 {
        (f(xs).unwrap() * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = (f(&ts).unwrap() * &g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let h = 1e-6;
    let mut worst = 0f64;
    for (i, v) in vars.iter().enumerate() {
        let analytic: Vec<f64> = grads
            .get(v)
            .expect("gradient")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = inputs[i].flatten_all().unwrap().to_vec1().unwrap();
        for j in 0..base.len() {
            let at = |d: f64| {
                let mut p = base.clone();
                p[j] += d;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_vec(p, inputs[i].dims(), &Device::Cpu).unwrap();
                loss(&xs)
            };
            let numeric = (at(h) - at(-h)) / (2. * h);
            let err = (numeric - analytic[j]).abs() / (1. + numeric.abs());
            assert!(
                err < 1e-6,
                "input {i} element {j}: numeric {numeric} analytic {}",
                analytic[j]
            );
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn conv2d_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let cases = [
        // (x shape, w shape, config)
        ([2, 3, 5, 6], [2, 3, 3, 3], Conv2dConfig::same(1)),
        ([1, 2, 7, 8], [3, 2, 3, 3], Conv2dConfig::new(2, 1)), // mixed parity under stride 2
        ([1, 2, 8, 7], [3, 2, 3, 3], Conv2dConfig::new(2, 1)),
        ([2, 4, 3, 5], [3, 4, 1, 1], Conv2dConfig::default()), // 1x1 as a matrix product
        ([1, 3, 5, 6], [2, 3, 1, 1], Conv2dConfig::new(2, 0)),
        (
            [1, 2, 9, 7],
            [2, 2, 3, 2],
            Conv2dConfig {
                stride: (2, 1),
                padding: (2, 1),
                dilation: (2, 1),
                groups: 1,
            },
        ),
    ];
    for (k, (xs, ws, cfg)) in cases.into_iter().enumerate() {
        let x = randn(&mut rng, &xs, 1.0, 0.0);
        let w = randn(&mut rng, &ws, 0.5, 0.0);
        let b = randn(&mut rng, &ws[..1], 1.0, 0.0);
        gradcheck(10 + k as u64, &[x, w, b], |t| {
            conv2d(&t[0], &t[1], Some(&t[2]), &cfg)
        });
    }
}

#[test]
fn depthwise_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (k, (xs, ks, cfg)) in [
        ([2, 3, 5, 6], 3, Conv2dConfig::same(1)),
        ([1, 2, 7, 8], 3, Conv2dConfig::new(2, 1)),
        ([1, 2, 8, 7], 5, Conv2dConfig::new(2, 2)),
    ]
    .into_iter()
    .enumerate()
    {
        let x = randn(&mut rng, &xs, 1.0, 0.0);
        let w = randn(&mut rng, &[xs[1], 1, ks, ks], 0.5, 0.0);
        gradcheck(20 + k as u64, &[x, w], |t| {
            depthwise_conv2d(&t[0], &t[1], None, &cfg)
        });
    }
}

#[test]
fn pooling_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = randn(&mut rng, &[2, 2, 7, 8], 1.0, 0.0);
    gradcheck(30, std::slice::from_ref(&x), |t| max_pool2d(&t[0], 3, 2, 1));
    gradcheck(31, std::slice::from_ref(&x), |t| max_pool2d(&t[0], 2, 2, 0));
    gradcheck(32, std::slice::from_ref(&x), |t| global_max_pool(&t[0]));
    gradcheck(33, std::slice::from_ref(&x), |t| avg_pool2d(&t[0], 3, 2));
    gradcheck(34, std::slice::from_ref(&x), |t| {
        adaptive_avg_pool2d(&t[0], (3, 5))
    });
    gradcheck(35, std::slice::from_ref(&x), |t| global_avg_pool(&t[0]));
}

#[test]
fn batch_norm_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let cfg = BatchNormConfig::default();
    let stats = || {
        (
            Var::zeros(3, DType::F64, &Device::Cpu).unwrap(),
            Var::ones(3, DType::F64, &Device::Cpu).unwrap(),
        )
    };
    let x4 = randn(&mut rng, &[3, 3, 2, 3], 2.0, 1.0);
    let x2 = randn(&mut rng, &[4, 3], 1.0, -2.0);
    let w = randn(&mut rng, &[3], 0.5, 1.0);
    let b = randn(&mut rng, &[3], 1.0, 0.0);
    for train in [true, false] {
        for x in [&x4, &x2] {
            let (rm, rv) = stats();
            gradcheck(40, &[x.clone(), w.clone(), b.clone()], |t| {
                batch_norm(&t[0], Some(&t[1]), Some(&t[2]), &rm, &rv, train, &cfg)
            });
            let (rm, rv) = stats();
            gradcheck(41, std::slice::from_ref(x), |t| {
                batch_norm(&t[0], None, None, &rm, &rv, train, &cfg)
            });
        }
    }
}

/// A BatchNorm on (3, 3, 2, 3) f64 inputs with random weight and bias, and the (x, residual) pair to feed it.
fn fused_case(seed: u64) -> (ParamStore, BatchNorm, Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let store = ParamStore::new(0, DType::F64, &Device::Cpu);
    let bn = BatchNorm::new(3, &store.root()).unwrap();
    for (name, var) in store.trainable() {
        let (scale, shift) = if name == "weight" {
            (1.0, 3.0)
        } else {
            (2.0, 1.0)
        };
        var.set(&randn(&mut rng, &[3], scale, shift)).unwrap();
    }
    let x = randn(&mut rng, &[3, 3, 2, 3], 2.0, 1.0);
    let r = randn(&mut rng, &[3, 3, 2, 3], 3.0, 1.0);
    (store, bn, x, r)
}

#[test]
fn batch_norm_act_gradients() {
    for train in [true, false] {
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            let (_, bn, x, r) = fused_case(42);
            gradcheck(43, &[x.clone(), r], |t| {
                bn.forward_act(&t[0], Some(&t[1]), act, train)
            });
            gradcheck(44, std::slice::from_ref(&x), |t| {
                bn.forward_act(&t[0], None, act, train)
            });
        }
    }
}

/// The fused op against BatchNorm, add and activation as separate ops: outputs, running statistics and the
/// gradients of x, the residual, weight and bias.
#[test]
fn batch_norm_act_matches_the_separate_ops() {
    for train in [true, false] {
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            for with_residual in [true, false] {
                let run = |fused: bool| {
                    let (store, bn, x, r) = fused_case(45);
                    let (x, r) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&r).unwrap());
                    let residual = with_residual.then(|| r.as_tensor());
                    let y = if fused {
                        bn.forward_act(x.as_tensor(), residual, act, train).unwrap()
                    } else {
                        let z = bn.forward_t(x.as_tensor(), train).unwrap();
                        let z = match residual {
                            Some(r) => (z + r).unwrap(),
                            None => z,
                        };
                        match act {
                            Activation::Identity => z,
                            Activation::Relu => z.relu().unwrap(),
                            Activation::Relu6 => z.clamp(0f64, 6f64).unwrap(),
                        }
                    };
                    let g = Tensor::arange(0f64, 54., &Device::Cpu)
                        .unwrap()
                        .sin()
                        .unwrap()
                        .reshape((3, 3, 2, 3))
                        .unwrap();
                    let grads = (&y * g).unwrap().sum_all().unwrap().backward().unwrap();
                    let mut out = vec![y.flatten_all().unwrap().to_vec1::<f64>().unwrap()];
                    let mut vars = vec![x];
                    if with_residual {
                        vars.push(r);
                    }
                    vars.extend(store.trainable().into_iter().map(|(_, v)| v));
                    for v in &vars {
                        let gv = grads.get(v.as_tensor()).expect("gradient");
                        out.push(gv.flatten_all().unwrap().to_vec1::<f64>().unwrap());
                    }
                    for (_, v) in store.all() {
                        out.push(v.as_tensor().to_vec1::<f64>().unwrap());
                    }
                    out
                };
                let (fused, separate) = (run(true), run(false));
                assert_eq!(fused.len(), separate.len());
                for (a, b) in fused.iter().zip(&separate) {
                    for (p, q) in a.iter().zip(b) {
                        assert!(
                            (p - q).abs() <= 1e-9 * (1.0 + q.abs()),
                            "train {train} {act:?} residual {with_residual}: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn activation_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Keep values away from the kinks at 0 and 6 where the difference quotient is undefined.
    let x: Vec<f64> = (0..40)
        .map(|_| {
            let v = (rng.random::<f64>() - 0.3) * 10.0;
            if v.abs() < 0.01 || (v - 6.0).abs() < 0.01 {
                v + 0.05
            } else {
                v
            }
        })
        .collect();
    let x = Tensor::from_vec(x, (4, 10), &Device::Cpu).unwrap();
    gradcheck(50, std::slice::from_ref(&x), |t| relu6(&t[0]));
    gradcheck(52, std::slice::from_ref(&x), |t| relu(&t[0]));
    gradcheck(51, std::slice::from_ref(&x), |t| elu(&t[0], 0.7));
}

#[test]
fn gradient_reversal_flips_and_scales() {
    let x = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0, 3.0], &Device::Cpu).unwrap()).unwrap();
    let y = fgvc_ops::gradient_reversal(x.as_tensor(), 0.5).unwrap();
    assert_eq!(y.to_vec1::<f64>().unwrap(), vec![1.0, -2.0, 3.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec1::<f64>().unwrap(), vec![-0.5; 3]);
}

/// Conv + BatchNorm + activation as one op against the conv and the BatchNorm as two: outputs, running
/// statistics and the gradients of the input, the conv weight, and the BatchNorm's weight and bias, bit for bit
/// (the fused op runs the same kernels in the same order).
#[test]
fn conv_batch_norm_matches_the_two_ops() {
    use candle_core::Module;
    use fgvc_ops::{Conv2d, Conv2dConfig};
    // (in, out, kernel, stride, padding, groups)
    let cases = [
        (3, 4, 3, 2, 1, 1), // strided 3x3
        (4, 6, 1, 1, 0, 1), // pointwise
        (5, 5, 3, 1, 1, 5), // depthwise
    ];
    for (ci, co, k, stride, pad, groups) in cases {
        for train in [true, false] {
            for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
                let run = |fused: bool| {
                    let mut rng = ChaCha8Rng::seed_from_u64(46);
                    let store = ParamStore::new(3, DType::F64, &Device::Cpu);
                    let p = store.root();
                    let cfg = Conv2dConfig::new(stride, pad).with_groups(groups);
                    let conv = Conv2d::new(ci, co, k, cfg, false, &p.pp("conv")).unwrap();
                    let bn = BatchNorm::new(co, &p.pp("bn")).unwrap();
                    for (name, var) in store.trainable() {
                        if name.starts_with("bn.") {
                            let shift = if name.ends_with("weight") { 2.0 } else { 0.5 };
                            var.set(&randn(&mut rng, &[co], 1.0, shift)).unwrap();
                        }
                    }
                    let x = Var::from_tensor(&randn(&mut rng, &[2, ci, 7, 6], 3.0, 0.5)).unwrap();
                    let y = if fused {
                        bn.forward_conv(&conv, x.as_tensor(), act, train).unwrap()
                    } else {
                        let z = conv.forward(x.as_tensor()).unwrap();
                        bn.forward_act(&z, None, act, train).unwrap()
                    };
                    let g = randn(&mut rng, y.dims(), 1.0, 0.0);
                    let grads = (&y * g).unwrap().sum_all().unwrap().backward().unwrap();
                    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                    let mut out = vec![flat(&y), flat(grads.get(x.as_tensor()).expect("dx"))];
                    for (name, var) in store.all() {
                        out.push(flat(var.as_tensor()));
                        if let Some(gv) = grads.get(var.as_tensor()) {
                            out.push(flat(gv));
                        } else {
                            assert!(name.contains("running"), "no gradient for {name}");
                        }
                    }
                    out
                };
                let (fused, apart) = (run(true), run(false));
                assert_eq!(fused.len(), apart.len());
                for (a, b) in fused.iter().zip(&apart) {
                    let (a, b): (Vec<u64>, Vec<u64>) = (
                        a.iter().map(|v| (v + 0.0).to_bits()).collect(),
                        b.iter().map(|v| (v + 0.0).to_bits()).collect(),
                    );
                    assert_eq!(
                        a, b,
                        "conv {ci}->{co} k{k} s{stride} g{groups}, train {train}, {act:?}"
                    );
                }
            }
        }
    }
}
