//! fgvc-ops against candle 0.11's built-in ops on the layer shapes ResNet-50, VGG-16 and MobileNetV2 use at
//! 224x224, batch 8, f32, CPU. `fwd` is the forward; `fwd+bwd` the forward plus `backward()` seeded with ones
//! (gradients for the input and the weights). `crates/ops/benches/ops_torch.py` times PyTorch on the same shapes.
//!
//! `RAYON_NUM_THREADS=2 cargo bench -p fgvc-ops --bench ops`

use std::time::Duration;

use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use fgvc_ops::{batch_norm, conv2d, depthwise_conv2d, max_pool2d, BatchNormConfig, Conv2dConfig};

const BATCH: usize = 8;

fn var(shape: &[usize], scale: f64) -> Var {
    let t = (Tensor::randn(0f32, 1., shape, &Device::Cpu).unwrap() * scale).unwrap();
    Var::from_tensor(&t).unwrap()
}

/// Times `f` forward and forward + backward.
fn pair(
    c: &mut Criterion,
    group: &str,
    name: &str,
    f: &dyn Fn() -> Result<Tensor>,
    backward: bool,
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(format!("{name}/fwd"), |b| b.iter(|| f().unwrap()));
    if backward {
        g.bench_function(format!("{name}/fwd+bwd"), |b| {
            b.iter(|| f().unwrap().backward().unwrap())
        });
    }
    g.finish();
}

fn convs(c: &mut Criterion) {
    // (name, c_in, c_out, k, size, stride)
    let shapes = [
        ("conv3x3_64_56", 64, 64, 3, 56, 1),
        ("conv1x1_256to64_56", 256, 64, 1, 56, 1),
        ("conv3x3_256_14", 256, 256, 3, 14, 1),
        ("conv3x3_128_56_s2", 128, 128, 3, 56, 2),
        ("stem7x7_3to64_224_s2", 3, 64, 7, 224, 2),
    ];
    for (name, ci, co, k, size, stride) in shapes {
        let x = var(&[BATCH, ci, size, size], 1.0);
        let w = var(&[co, ci, k, k], 0.05);
        let cfg = Conv2dConfig::new(stride, k / 2);
        let (xt, wt) = (x.as_tensor().clone(), w.as_tensor().clone());
        pair(c, name, "ours", &|| conv2d(&xt, &wt, None, &cfg), true);
        pair(
            c,
            name,
            "candle",
            &|| xt.conv2d(&wt, k / 2, stride, 1, 1),
            true,
        );
    }
}

fn depthwise(c: &mut Criterion) {
    for (name, ch, size, stride) in [
        ("dw3x3_c144_56", 144, 56, 1),
        ("dw3x3_c96_112_s2", 96, 112, 2),
    ] {
        let x = var(&[BATCH, ch, size, size], 1.0);
        let w = var(&[ch, 1, 3, 3], 0.3);
        let cfg = Conv2dConfig::new(stride, 1);
        let (xt, wt) = (x.as_tensor().clone(), w.as_tensor().clone());
        pair(
            c,
            name,
            "ours",
            &|| depthwise_conv2d(&xt, &wt, None, &cfg),
            true,
        );
        pair(
            c,
            name,
            "candle",
            &|| xt.conv2d(&wt, 1, stride, 1, ch),
            true,
        );
    }
}

fn bn(c: &mut Criterion) {
    let ch = 256;
    let x = var(&[BATCH, ch, 56, 56], 1.0);
    let xt = x.as_tensor().clone();
    let w = var(&[ch], 1.0);
    let b = var(&[ch], 1.0);
    let rm = Var::zeros(ch, DType::F32, &Device::Cpu).unwrap();
    let rv = Var::ones(ch, DType::F32, &Device::Cpu).unwrap();
    let cfg = BatchNormConfig::default();
    let (wt, bt) = (w.as_tensor().clone(), b.as_tensor().clone());
    pair(
        c,
        "bn_train_c256_56",
        "ours",
        &|| batch_norm(&xt, Some(&wt), Some(&bt), &rm, &rv, true, &cfg),
        true,
    );
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cbn = candle_nn::batch_norm(ch, candle_nn::BatchNormConfig::default(), vb).unwrap();
    pair(
        c,
        "bn_train_c256_56",
        "candle",
        &|| candle_core::ModuleT::forward_t(&cbn, &xt, true),
        true,
    );
}

fn maxpool(c: &mut Criterion) {
    let x = var(&[BATCH, 64, 112, 112], 1.0);
    let xt = x.as_tensor().clone();
    pair(
        c,
        "maxpool3s2p1_c64_112",
        "ours",
        &|| max_pool2d(&xt, 3, 2, 1),
        true,
    );
    // candle has no padding argument and no backward for 3x3/2: forward only, on a padded copy (as
    // candle-transformers' ResNet does).
    let padded = xt
        .pad_with_same(2, 1, 1)
        .unwrap()
        .pad_with_same(3, 1, 1)
        .unwrap();
    pair(
        c,
        "maxpool3s2p1_c64_112",
        "candle",
        &|| padded.max_pool2d_with_stride(3, 2),
        false,
    );
}

criterion_group!(benches, convs, depthwise, bn, maxpool);
criterion_main!(benches);
