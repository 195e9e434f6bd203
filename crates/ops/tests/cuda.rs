//! The cuDNN convolutions (the `cuda` feature) against the CPU kernels: forward, input gradient and weight
//! gradient, dense (strided, dilated, padded per axis, 1x1) and depthwise, in full f32 (TF32 off). Without
//! a CUDA device every test prints `skipped: no CUDA device` and passes.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::randn;
use fgvc_ops::{conv2d, depthwise_conv2d, Conv2dConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A convolution case: name, input and weight shapes, geometry, depthwise.
type ConvCase = (&'static str, [usize; 4], [usize; 4], Conv2dConfig, bool);

fn cuda() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// y, dx and dw of one convolution of `x` and `w` on `dev`, with the loss sum(y * r).
fn run(
    dev: &Device,
    x: &Tensor,
    w: &Tensor,
    r: &Tensor,
    cfg: &Conv2dConfig,
    depthwise: bool,
) -> Vec<Vec<f32>> {
    let x = Var::from_tensor(&x.to_dtype(DType::F32).unwrap().to_device(dev).unwrap()).unwrap();
    let w = Var::from_tensor(&w.to_dtype(DType::F32).unwrap().to_device(dev).unwrap()).unwrap();
    let r = r.to_dtype(DType::F32).unwrap().to_device(dev).unwrap();
    let y = if depthwise {
        depthwise_conv2d(x.as_tensor(), w.as_tensor(), None, cfg).unwrap()
    } else {
        conv2d(x.as_tensor(), w.as_tensor(), None, cfg).unwrap()
    };
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    vec![
        flat(&y),
        flat(grads.get(x.as_tensor()).unwrap()),
        flat(grads.get(w.as_tensor()).unwrap()),
    ]
}

#[test]
fn cudnn_convolutions_match_the_cpu_kernels() {
    let Some(gpu) = cuda() else { return };
    fgvc_ops::set_tf32(false);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut cfg_sd = Conv2dConfig::new(2, 1);
    cfg_sd.dilation = (1, 2);
    cfg_sd.padding = (1, 2);
    let cases: Vec<ConvCase> = vec![
        (
            "3x3 same",
            [2, 5, 9, 11],
            [7, 5, 3, 3],
            Conv2dConfig::same(1),
            false,
        ),
        (
            "1x1",
            [3, 8, 6, 6],
            [4, 8, 1, 1],
            Conv2dConfig::default(),
            false,
        ),
        (
            "7x7 stride 2",
            [2, 3, 17, 15],
            [6, 3, 7, 7],
            Conv2dConfig::new(2, 3),
            false,
        ),
        (
            "stride 2, dilation (1,2)",
            [2, 4, 12, 13],
            [5, 4, 3, 3],
            cfg_sd,
            false,
        ),
        (
            "depthwise 3x3",
            [2, 6, 10, 9],
            [6, 1, 3, 3],
            Conv2dConfig::same(1),
            true,
        ),
        (
            "depthwise stride 2",
            [2, 6, 11, 12],
            [6, 1, 3, 3],
            Conv2dConfig::new(2, 1),
            true,
        ),
    ];
    for (name, xs, ws, cfg, depthwise) in cases {
        let x = randn(&mut rng, &xs, 1.0, 0.0);
        let w = randn(&mut rng, &ws, 0.3, 0.0);
        let (oh, ow) = cfg.output_size((xs[2], xs[3]), (ws[2], ws[3]));
        let r = randn(&mut rng, &[xs[0], ws[0], oh, ow], 1.0, 0.0);
        let cpu = run(&Device::Cpu, &x, &w, &r, &cfg, depthwise);
        let got = run(&gpu, &x, &w, &r, &cfg, depthwise);
        for (what, (c, g)) in ["y", "dx", "dw"].iter().zip(cpu.iter().zip(&got)) {
            assert_eq!(c.len(), g.len(), "{name} {what}");
            let scale = c.iter().fold(1f32, |m, v| m.max(v.abs()));
            let worst = c
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-4 * scale,
                "{name} {what}: off by {worst} (scale {scale})"
            );
        }
    }
    fgvc_ops::set_tf32(true);
}

#[test]
fn the_same_inputs_give_the_same_gradients_twice() {
    let Some(gpu) = cuda() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = randn(&mut rng, &[4, 16, 20, 20], 1.0, 0.0);
    let w = randn(&mut rng, &[32, 16, 3, 3], 0.2, 0.0);
    let r = randn(&mut rng, &[4, 32, 20, 20], 1.0, 0.0);
    let cfg = Conv2dConfig::same(1);
    let a = run(&gpu, &x, &w, &r, &cfg, false);
    let b = run(&gpu, &x, &w, &r, &cfg, false);
    assert_eq!(a, b, "cuDNN's chosen algorithms must be deterministic");
}
