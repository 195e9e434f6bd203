//! bf16 precision (`fgvc_ops::set_precision`): convolutions whose operands are already bf16 values must give
//! exactly the f64 result up to f32 summation (rounding them again changes nothing), and ordinary f32 values
//! must be rounded (results differ from f32 precision by bf16's error, not more). Forward and both gradients,
//! per image and split across threads, dense and 1x1, and the fused conv+BatchNorm.
//!
//! One test function: the precision is process-wide, and this file is its own process.

use candle_core::{DType, Device, Module, Tensor, Var};
use fgvc_ops::{
    precision, set_precision, with_composite_ops, Activation, BatchNorm, Bf16Kernel, Conv2d,
    Conv2dConfig, ParamStore, Precision,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` seeded values on ±1.7 around 0.1, rounded to bf16 when `bf16`.
fn values(seed: u64, n: usize, bf16: bool) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let v = (rng.random::<f32>() - 0.5) * 3.4 + 0.1;
            if bf16 {
                f32::from_bits(v.to_bits() & 0xffff_0000)
            } else {
                v
            }
        })
        .collect()
}

struct ConvCase {
    n: usize,
    ci: usize,
    co: usize,
    k: usize,
    stride: usize,
    hw: (usize, usize),
}

/// The conv's output, input gradient and weight gradient for `sum(y * g)`, in `dtype`.
fn conv_run(c: &ConvCase, dtype: DType, bf16_values: bool, fused_bn: bool) -> Vec<Vec<f64>> {
    let dev = Device::Cpu;
    let store = ParamStore::new(1, dtype, &dev);
    let p = store.root();
    let cfg = Conv2dConfig::new(c.stride, c.k / 2);
    let conv = Conv2d::new(c.ci, c.co, c.k, cfg, false, &p.pp("conv")).unwrap();
    let bn = BatchNorm::new(c.co, &p.pp("bn")).unwrap();
    let (h, w) = c.hw;
    let t = |seed, shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_vec(values(seed, n, bf16_values), shape, &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    };
    for (name, var) in store.trainable() {
        if name.ends_with("conv.weight") {
            var.set(&t(2, var.dims())).unwrap();
        }
    }
    let x = Var::from_tensor(&t(3, &[c.n, c.ci, h, w])).unwrap();
    // No ReLU after the fused BatchNorm: rounding moves outputs near 0 across the kink, and each flip
    // changes the gradients by a whole term (percents here), which says nothing about the products.
    let y = if fused_bn {
        bn.forward_conv(&conv, x.as_tensor(), Activation::Identity, true)
            .unwrap()
    } else {
        conv.forward(x.as_tensor()).unwrap()
    };
    let g = t(4, y.dims());
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    let weight = store
        .trainable()
        .into_iter()
        .find(|(n, _)| n.ends_with("conv.weight"))
        .unwrap()
        .1;
    let flat = |t: &Tensor| {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    vec![
        flat(&y),
        flat(grads.get(x.as_tensor()).unwrap()),
        flat(grads.get(weight.as_tensor()).unwrap()),
    ]
}

/// The largest difference between `a` and `b` relative to `b`'s largest magnitude, per output.
fn rel_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let scale = y.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            x.iter()
                .zip(y)
                .fold(0f64, |m, (p, q)| m.max((p - q).abs() / scale))
        })
        .collect()
}

#[test]
fn bf16_products_round_the_operands_and_sum_in_f32() {
    let Some(kernel) = Bf16Kernel::current() else {
        let e = set_precision(Precision::Bf16).unwrap_err().to_string();
        assert!(e.contains("bf16"), "{e}");
        assert_eq!(precision(), Precision::F32);
        eprintln!("skipped: no bf16 product on this CPU ({e})");
        return;
    };
    eprintln!(
        "bf16 kernel: {kernel} (available: {:?})",
        Bf16Kernel::available()
    );
    let cases = [
        // One image: each product split across the threads. Two: one product per thread.
        ConvCase {
            n: 1,
            ci: 19,
            co: 21,
            k: 3,
            stride: 1,
            hw: (17, 15),
        },
        ConvCase {
            n: 2,
            ci: 19,
            co: 21,
            k: 3,
            stride: 1,
            hw: (17, 15),
        },
        ConvCase {
            n: 2,
            ci: 7,
            co: 40,
            k: 3,
            stride: 2,
            hw: (23, 21),
        },
        ConvCase {
            n: 2,
            ci: 37,
            co: 5,
            k: 1,
            stride: 1,
            hw: (13, 11),
        },
        ConvCase {
            n: 3,
            ci: 64,
            co: 64,
            k: 3,
            stride: 1,
            hw: (16, 16),
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        for fused in [false, true] {
            let what = format!("case {i} (fused bn {fused})");
            let reference =
                |bf16_values| with_composite_ops(|| conv_run(c, DType::F64, bf16_values, fused));
            set_precision(Precision::F32).unwrap();
            let f32_exact = conv_run(c, DType::F32, true, fused);
            let f32_plain = conv_run(c, DType::F32, false, fused);
            set_precision(Precision::Bf16).unwrap();
            assert_eq!(precision(), Precision::Bf16);
            let bf16_exact = conv_run(c, DType::F32, true, fused);
            let bf16_plain = conv_run(c, DType::F32, false, fused);

            // bf16 values: nothing to round, so bf16 precision is f32 precision up to summation order.
            let (r_exact, r_plain) = (reference(true), reference(false));
            let d = rel_diff(&bf16_exact, &r_exact);
            let d32 = rel_diff(&f32_exact, &r_exact);
            // The fused BatchNorm's gradient reaching the conv is not a bf16 value, so there the weight and
            // input gradients are rounded too.
            let exact_outputs = if fused { 1 } else { 3 };
            for (o, (d, d32)) in d.iter().zip(&d32).enumerate().take(exact_outputs) {
                assert!(
                    *d <= 2e-5 && *d32 <= 2e-5,
                    "{what} output {o}: bf16 {d:e}, f32 {d32:e}"
                );
            }
            // Ordinary values: within bf16's rounding of the f64 result, and measurably rounded.
            let d = rel_diff(&bf16_plain, &r_plain);
            let from_f32 = rel_diff(&bf16_plain, &f32_plain);
            for (o, (d, f)) in d.iter().zip(&from_f32).enumerate() {
                assert!(*d <= 1e-2, "{what} output {o}: {d:e} from the f64 result");
                assert!(
                    *f >= 1e-4,
                    "{what} output {o}: only {f:e} from f32, so not rounded"
                );
            }
        }
    }
    set_precision(Precision::F32).unwrap();
}
