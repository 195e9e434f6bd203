//! Forward and backward values against PyTorch (fixtures written by `tests/fixtures/make_fixtures.py`).
//!
//! Each case holds f32 inputs, the upstream gradient `g`, PyTorch's output `y` and the gradients of
//! `sum(y * g)` with respect to every input. The ops run in f32 on the CPU (the custom-op path).

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, Device, Result, Tensor, Var};
use fgvc_ops::{
    adaptive_avg_pool2d, avg_pool2d, batch_norm, conv2d, depthwise_conv2d, elu, global_avg_pool,
    global_max_pool, max_pool2d, relu6, BatchNormConfig, Conv2dConfig,
};

fn fixtures() -> &'static HashMap<String, Tensor> {
    static F: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    F.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ops.safetensors"
        );
        candle_core::safetensors::load(path, &Device::Cpu).expect("fixtures load")
    })
}

fn fx(name: &str) -> Tensor {
    fixtures()
        .get(name)
        .unwrap_or_else(|| panic!("fixture {name} missing"))
        .clone()
}

/// Largest absolute difference relative to the largest magnitude of the reference (at least 1).
fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let got: Vec<f32> = got
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs())) as f64;
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0f64, f64::max);
    assert!(
        err <= tol * scale,
        "{what}: max abs error {err:e} > {tol:e} * {scale}"
    );
}

/// Runs `f` on the case's inputs (as Vars), checks `y` and every input gradient.
fn check(case: &str, inputs: &[&str], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|n| Var::from_tensor(&fx(&format!("{case}.{n}"))).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    assert_close(
        &y,
        &fx(&format!("{case}.y")),
        1e-4,
        &format!("{case} forward"),
    );
    let loss = (y * fx(&format!("{case}.g"))).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for (n, v) in inputs.iter().zip(&vars) {
        let g = grads
            .get(v)
            .unwrap_or_else(|| panic!("{case}: no gradient for {n}"));
        assert_close(
            g,
            &fx(&format!("{case}.d{n}")),
            1e-4,
            &format!("{case} d{n}"),
        );
    }
}

#[test]
fn conv2d_matches_torch() {
    let cases: [(&str, Conv2dConfig, bool); 6] = [
        ("conv3x3", Conv2dConfig::same(1), true),
        ("conv3x3_s2_mixed", Conv2dConfig::new(2, 1), false),
        ("conv1x1", Conv2dConfig::default(), false),
        ("conv1x1_s2", Conv2dConfig::new(2, 0), false),
        (
            "conv_rect",
            Conv2dConfig {
                stride: (2, 1),
                padding: (2, 1),
                dilation: (2, 1),
                groups: 1,
            },
            true,
        ),
        ("conv_stem", Conv2dConfig::new(2, 3), false),
    ];
    for (case, cfg, bias) in cases {
        let names: &[&str] = if bias { &["x", "w", "b"] } else { &["x", "w"] };
        check(case, names, |t| conv2d(&t[0], &t[1], t.get(2), &cfg));
    }
}

#[test]
fn depthwise_conv2d_matches_torch() {
    for (case, cfg) in [
        ("dw3_s1", Conv2dConfig::same(1)),
        ("dw3_s2_mixed", Conv2dConfig::new(2, 1)),
        ("dw5_s2", Conv2dConfig::new(2, 2)),
    ] {
        check(case, &["x", "w"], |t| {
            depthwise_conv2d(&t[0], &t[1], None, &cfg)
        });
    }
}

#[test]
fn max_pools_match_torch_including_ties() {
    for (case, k, s, p) in [
        ("maxpool3s2p1", 3, 2, 1),
        ("maxpool2", 2, 2, 0),
        ("maxpool3s2p1_ties", 3, 2, 1),
        ("maxpool2_ties", 2, 2, 0),
    ] {
        check(case, &["x"], |t| max_pool2d(&t[0], k, s, p));
    }
    check("global_max_ties", &["x"], |t| global_max_pool(&t[0]));
}

#[test]
fn average_pools_match_torch() {
    check("avgpool3s2", &["x"], |t| avg_pool2d(&t[0], 3, 2));
    check("avgpool2", &["x"], |t| avg_pool2d(&t[0], 2, 2));
    check("adaptive7", &["x"], |t| adaptive_avg_pool2d(&t[0], (7, 7)));
    check("adaptive3x2", &["x"], |t| {
        adaptive_avg_pool2d(&t[0], (3, 2))
    });
    check("global_avg", &["x"], |t| global_avg_pool(&t[0]));
}

fn bn_case(case: &str, affine: bool, momentum: f64, train: bool) {
    let rm = Var::from_tensor(&fx(&format!("{case}.running_mean"))).unwrap();
    let rv = Var::from_tensor(&fx(&format!("{case}.running_var"))).unwrap();
    let cfg = BatchNormConfig {
        eps: 1e-5,
        momentum,
        affine,
    };
    let names: &[&str] = if affine { &["x", "w", "b"] } else { &["x"] };
    check(case, names, |t| {
        batch_norm(&t[0], t.get(1), t.get(2), &rm, &rv, train, &cfg)
    });
    // `check` ran the forward once: the running statistics moved exactly as PyTorch's did.
    assert_close(
        rm.as_tensor(),
        &fx(&format!("{case}.new_running_mean")),
        1e-5,
        &format!("{case} running_mean"),
    );
    assert_close(
        rv.as_tensor(),
        &fx(&format!("{case}.new_running_var")),
        1e-5,
        &format!("{case} running_var"),
    );
}

#[test]
fn batch_norm_matches_torch_train_eval_and_running_stats() {
    bn_case("bn4d_train", true, 0.1, true);
    bn_case("bn4d_eval", true, 0.1, false);
    bn_case("bn2d_train", false, 0.01, true);
}

#[test]
fn batch_norm_training_on_one_value_per_channel_is_an_error() {
    let rm = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let rv = Var::ones(3, DType::F32, &Device::Cpu).unwrap();
    let cfg = BatchNormConfig::default();
    for shape in [&[1usize, 3][..], &[1, 3, 1, 1]] {
        let x = Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap();
        let err = batch_norm(&x, None, None, &rm, &rv, true, &cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than one value per channel"), "{err}");
        // eval mode is fine, and the failed call left the running statistics alone
        batch_norm(&x, None, None, &rm, &rv, false, &cfg).unwrap();
    }
    assert_eq!(rv.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0; 3]);
}

#[test]
fn activations_match_torch() {
    check("relu6", &["x"], |t| relu6(&t[0]));
    check("elu", &["x"], |t| elu(&t[0], 1.0));
    check("elu_half", &["x"], |t| elu(&t[0], 0.5));
}
