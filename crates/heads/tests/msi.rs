//! RMG-PMSI head and the seeded dropout: train/eval behaviour, determinism, gradients, official parity.
mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use fgvc_heads::blocks::Dropout;
use fgvc_heads::msi::{Msi, PmsiConfig, PmsiHead};
use fgvc_ops::ParamStore;

fn ones(n: usize, c: usize) -> Tensor {
    Tensor::ones((n, c), DType::F32, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn dropout_is_inverted_seeded_and_only_in_training() {
    let make = |seed: u64, name: &str| {
        let store = ParamStore::new(seed, DType::F32, &Device::Cpu);
        Dropout::new(0.5, &store.root().pp(name)).unwrap()
    };
    let x = ones(64, 64);
    let a = make(1, "drop");
    assert_eq!(
        values(&a.forward_t(&x, false).unwrap()),
        values(&x),
        "eval is the identity"
    );
    let m1 = values(&a.forward_t(&x, true).unwrap());
    let m2 = values(&a.forward_t(&x, true).unwrap());
    assert!(
        m1.iter().all(|&v| v == 0.0 || v == 2.0),
        "kept values are scaled by 1/(1-p)"
    );
    let kept = m1.iter().filter(|&&v| v > 0.0).count() as f32 / m1.len() as f32;
    assert!((kept - 0.5).abs() < 0.03, "keep rate {kept}");
    assert_ne!(m1, m2, "each training call draws a fresh mask");
    // The same seed and name replay the same masks, eval calls in between do not advance the stream.
    let b = make(1, "drop");
    b.forward_t(&x, false).unwrap();
    assert_eq!(values(&b.forward_t(&x, true).unwrap()), m1);
    assert_eq!(values(&b.forward_t(&x, true).unwrap()), m2);
    assert_ne!(
        values(&make(2, "drop").forward_t(&x, true).unwrap()),
        m1,
        "another seed, another stream"
    );
    assert_ne!(
        values(&make(1, "other").forward_t(&x, true).unwrap()),
        m1,
        "another layer, another stream"
    );
    assert!(Dropout::with_seed(1.0, 0).is_err());
    assert_eq!(
        values(
            &Dropout::with_seed(0.0, 0)
                .unwrap()
                .forward_t(&x, true)
                .unwrap()
        ),
        values(&x)
    );
    // Gradients flow through the kept elements only.
    let v = candle_core::Var::from_tensor(&x).unwrap();
    let d = Dropout::with_seed(0.5, 9).unwrap();
    let y = d.forward_t(v.as_tensor(), true).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(values(g.get(v.as_tensor()).unwrap()), values(&y));
}

#[test]
fn msi_gates_every_stage_with_a_residual_sigmoid() {
    let store = ParamStore::new(4, DType::F32, &Device::Cpu);
    let msi = Msi::new(3, 5, 4, 0.5, &store.root()).unwrap();
    let xs: Vec<Tensor> = (0..3)
        .map(|i| det((2, 5, 1, 1), i).unwrap().reshape((2, 5)).unwrap())
        .collect();
    let xm = msi.signal(&xs, false).unwrap();
    let gated = msi.forward_t(&xs, false).unwrap();
    for (x, m) in xs.iter().zip(&gated) {
        let expected = candle_nn::ops::sigmoid(&xm.mul(x).unwrap())
            .unwrap()
            .mul(x)
            .unwrap()
            .add(x)
            .unwrap();
        assert_close("gate", m, &expected, 1e-6);
    }
    // Train draws dropout masks: different from eval and between calls; eval is repeatable.
    let t1 = msi.signal(&xs, true).unwrap();
    let t2 = msi.signal(&xs, true).unwrap();
    assert!(rel_err(&t1, &xm) > 0.0 && rel_err(&t1, &t2) > 0.0);
    assert_eq!(rel_err(&msi.signal(&xs, false).unwrap(), &xm), 0.0);
    assert!(msi.forward_t(&xs[..2], false).is_err());
    assert!(
        store.get("map1.weight").unwrap().dims() == [4, 15]
            && store.get("map2.weight").unwrap().dims() == [5, 4]
    );
}

fn maps(b: usize) -> Vec<Tensor> {
    vec![
        det((b, 3, 8, 8), 1).unwrap(),
        det((b, 4, 4, 6), 2).unwrap(),
        det((b, 8, 2, 3), 3).unwrap(),
    ]
}

#[test]
fn pmsi_head_shapes_training_determinism_and_gradients() {
    let build = || {
        let store = ParamStore::new(11, DType::F32, &Device::Cpu);
        let head = PmsiHead::new(
            PmsiConfig::last_stages(&[3, 4, 8], 3, 4, 6, 5).unwrap(),
            &store.root(),
        )
        .unwrap();
        (store, head)
    };
    let (store, head) = build();
    let out = head.forward_t(&maps(4), true).unwrap();
    assert_eq!(out.stage_logits.len(), 3);
    assert!(out.gated.iter().all(|g| g.dims() == [4, 6]));
    assert_eq!(out.combined().unwrap().dims(), &[4, 5]);
    let y = Tensor::new(&[0u32, 1, 4, 2], &Device::Cpu).unwrap();
    // Even step 1's loss reaches every stage's conv through MSI (unlike PMG).
    let grads = candle_nn::loss::cross_entropy(&out.stage_logits[0], &y)
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in store.trainable() {
        let g = grads.get(var.as_tensor()).map(abs_sum).unwrap_or(0.0);
        let expected = name.starts_with("smooth_conv")
            || name.starts_with("map")
            || name.starts_with("classifier1.");
        assert_eq!(g > 0.0, expected, "`{name}`: {g}");
    }
    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for l in out.stage_logits.iter().chain([&out.concat_logits]) {
        loss = loss
            .add(&candle_nn::loss::cross_entropy(l, &y).unwrap())
            .unwrap();
    }
    assert_all_params_have_grad(&store, &loss.backward().unwrap());
    // A rebuilt head with the same seed replays the same training pass (init and dropout masks).
    let (_, again) = build();
    let replay = again.forward_t(&maps(4), true).unwrap();
    assert_eq!(rel_err(&replay.concat_logits, &out.concat_logits), 0.0);
    let other = ParamStore::new(12, DType::F32, &Device::Cpu);
    let other_head = PmsiHead::new(
        PmsiConfig::last_stages(&[3, 4, 8], 3, 4, 6, 5).unwrap(),
        &other.root(),
    )
    .unwrap();
    assert!(
        rel_err(
            &other_head.forward_t(&maps(4), true).unwrap().concat_logits,
            &out.concat_logits
        ) > 0.0
    );
    let cfg = PmsiConfig::official(&[32, 96, 1280], 200).unwrap();
    assert_eq!(
        (cfg.feature_size, cfg.block_channels, cfg.dropout),
        (320, 640, 0.5)
    );
}

#[test]
fn matches_the_official_pmsi_head_in_eval() {
    let fx = fixture("pmsi");
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    let head = PmsiHead::new(
        PmsiConfig::last_stages(&[3, 4, 8], 3, 4, 4, 3).unwrap(),
        &store.root(),
    )
    .unwrap();
    load_params(&store, &fx);
    let xs: Vec<Tensor> = (0..3).map(|i| fx[&format!("input.{i}")].clone()).collect();
    let out = head.forward_t(&xs, false).unwrap();
    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for (k, o) in out
        .stage_logits
        .iter()
        .chain([&out.concat_logits])
        .enumerate()
    {
        assert_close(&format!("out.{k}"), o, &fx[&format!("out.{k}")], 1e-4);
        loss = loss
            .add(&o.affine((k + 1) as f64, 0.).unwrap().sum_all().unwrap())
            .unwrap();
    }
    let grads = loss.backward().unwrap();
    for (name, var) in store.trainable() {
        assert_close(
            &format!("grad {name}"),
            grads.get(var.as_tensor()).unwrap(),
            &fx[&format!("grad.{name}")],
            1e-4,
        );
    }
}

#[test]
fn without_interaction_the_stage_features_reach_the_classifiers_ungated() {
    let store = ParamStore::new(11, DType::F32, &Device::Cpu);
    let mut cfg = PmsiConfig::last_stages(&[3, 4, 8], 3, 4, 6, 5).unwrap();
    cfg.interaction = false;
    let head = PmsiHead::new(cfg, &store.root()).unwrap();
    assert!(head.msi().is_none());
    assert!(store.get("map1.weight").is_none() && store.get("map2.weight").is_none());
    let out = head.forward_t(&maps(4), true).unwrap();
    assert_eq!(out.stage_logits.len(), 3);
    // Step 1's loss now reaches only its own stage's block and classifier, as in PMG.
    let y = Tensor::new(&[0u32, 1, 4, 2], &Device::Cpu).unwrap();
    let grads = candle_nn::loss::cross_entropy(&out.stage_logits[0], &y)
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in store.trainable() {
        let g = grads.get(var.as_tensor()).map(abs_sum).unwrap_or(0.0);
        let expected = name.starts_with("smooth_conv1.") || name.starts_with("classifier1.");
        assert_eq!(g > 0.0, expected, "`{name}`: {g}");
    }
    // With the same seed the gated features of the full head differ from these ungated ones.
    let full_store = ParamStore::new(11, DType::F32, &Device::Cpu);
    let full = PmsiHead::new(
        PmsiConfig::last_stages(&[3, 4, 8], 3, 4, 6, 5).unwrap(),
        &full_store.root(),
    )
    .unwrap();
    let gated = full.forward_t(&maps(4), false).unwrap().gated;
    let ungated = head.forward_t(&maps(4), false).unwrap().gated;
    assert!(rel_err(&gated[0], &ungated[0]) > 1e-3);
}
