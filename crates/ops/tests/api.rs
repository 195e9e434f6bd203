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

/// PyTorch's max-pool rules at the edges: a window holding a NaN outputs NaN and routes its gradient to that
/// NaN, ties go to the first maximum in row-major order, an all `-inf` window to its first element.
#[test]
fn max_pool_routes_nan_ties_and_negative_infinity_like_pytorch() {
    let (nan, ninf) = (f32::NAN, f32::NEG_INFINITY);
    let x = Var::new(
        &[[[
            [1.0f32, nan, 3.0, 3.0, ninf, ninf],
            [ninf, ninf, 2.0, 3.0, ninf, ninf],
        ]]],
        &Device::Cpu,
    )
    .unwrap();
    let y = max_pool2d(x.as_tensor(), 2, 2, 0).unwrap();
    let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v[0].is_nan());
    assert_eq!(&v[1..], &[3.0, ninf]);
    let g = Tensor::new(&[[[[10f32, 20., 30.]]]], &Device::Cpu).unwrap();
    let grads = (y * g).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = grads
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // Row-major over the 2x6 plane: the NaN at 1, the first 3 at 2, the -inf window's first element at 4.
    let mut want = [0f32; 12];
    (want[1], want[2], want[4]) = (10., 20., 30.);
    assert_eq!(dx, want);
}
