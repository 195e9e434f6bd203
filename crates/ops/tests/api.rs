//! Layer-level behaviour of the CPU fast paths: strided inputs, the `Conv2d` layer's dispatch, agreement
//! with candle's own ops where candle is right, and argument errors.

use candle_core::{DType, Device, Module, Tensor, Var};
use fgvc_ops::{
    batch_norm, conv2d, max_pool2d, BatchNormConfig, Conv2d, Conv2dConfig, Init, ParamStore,
};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn ramp(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 113) as f32 / 113.0) - 0.5)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn strided_inputs_give_the_same_results() {
    let x = ramp(&[2, 3, 6, 5]);
    let xt = x.transpose(2, 3).unwrap(); // (2, 3, 5, 6), not contiguous
    let xc = xt.contiguous().unwrap();
    let w = ramp(&[4, 3, 3, 3]);
    let cfg = Conv2dConfig::same(1);
    assert_eq!(
        max_diff(
            &conv2d(&xt, &w, None, &cfg).unwrap(),
            &conv2d(&xc, &w, None, &cfg).unwrap()
        ),
        0.0
    );
    assert_eq!(
        max_diff(
            &max_pool2d(&xt, 3, 2, 1).unwrap(),
            &max_pool2d(&xc, 3, 2, 1).unwrap()
        ),
        0.0
    );
    let rm = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let rv = Var::ones(3, DType::F32, &Device::Cpu).unwrap();
    let cfg = BatchNormConfig::default();
    let a = batch_norm(&xt, None, None, &rm, &rv, true, &cfg).unwrap();
    let b = batch_norm(&xc, None, None, &rm, &rv, true, &cfg).unwrap();
    assert!(max_diff(&a, &b) < 1e-6);
}

#[test]
fn dense_and_depthwise_agree_with_candle_forward() {
    let x = ramp(&[2, 4, 9, 9]);
    let store = ParamStore::new(3, DType::F32, &Device::Cpu);
    let p = store.root();
    for (name, groups, stride) in [
        ("dense", 1, 1),
        ("dense_s2", 1, 2),
        ("dw", 4, 1),
        ("dw_s2", 4, 2),
    ] {
        let cfg = Conv2dConfig::new(stride, 1).with_groups(groups);
        let conv = Conv2d::with_init(
            4,
            4,
            3,
            cfg,
            true,
            Init::KaimingNormal { fan_out: true },
            &p.pp(name),
        )
        .unwrap();
        let ours = conv.forward(&x).unwrap();
        let bias = conv.bias().unwrap().reshape((1, 4, 1, 1)).unwrap();
        let theirs = x
            .conv2d(conv.weight(), 1, stride, 1, groups)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-5, "{name}");
    }
}

#[test]
fn bad_geometry_is_an_error() {
    let x = ramp(&[1, 2, 4, 4]);
    assert!(max_pool2d(&x, 3, 2, 2).is_err(), "padding above k/2");
    assert!(max_pool2d(&x, 7, 1, 0).is_err(), "window larger than input");
    let w = ramp(&[3, 2, 7, 7]);
    assert!(
        conv2d(&x, &w, None, &Conv2dConfig::default()).is_err(),
        "kernel larger than input"
    );
    let w = ramp(&[3, 5, 3, 3]);
    assert!(
        conv2d(&x, &w, None, &Conv2dConfig::same(1)).is_err(),
        "channel mismatch"
    );
}
