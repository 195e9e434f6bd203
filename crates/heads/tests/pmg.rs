//! PMG head: shapes, names, gradient routing, train/eval BatchNorm behaviour and parity with the official code.
mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use fgvc_heads::pmg::{PmgConfig, PmgHead};
use fgvc_ops::ParamStore;

fn stage_maps(b: usize, chans: &[usize], h: usize, w: usize) -> Vec<Tensor> {
    // Stages at strides 4, 8, 16, 32 of an h x w input, like ResNet's layer1..layer4.
    chans
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let s = 4 << i;
            det((b, c, h.div_ceil(s), w.div_ceil(s)), i as u32 + 1).unwrap()
        })
        .collect()
}

#[test]
fn shapes_at_several_input_sizes() {
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    let chans = [4, 6, 8, 10];
    let head = PmgHead::new(
        PmgConfig::last_stages(&chans, 3, 5, 7, 3).unwrap(),
        &store.root().pp("heads"),
    )
    .unwrap();
    for (h, w) in [(32, 32), (64, 64), (96, 96), (64, 96)] {
        let out = head.forward_t(&stage_maps(2, &chans, h, w), true).unwrap();
        assert_eq!(out.stage_logits.len(), 3);
        for l in &out.stage_logits {
            assert_eq!(l.dims(), &[2, 3], "input {h}x{w}");
        }
        assert_eq!(out.concat_logits.dims(), &[2, 3]);
        assert!(out.features.iter().all(|f| f.dims() == [2, 7]));
        assert_eq!(out.combined().unwrap().dims(), &[2, 3]);
        let eval = head.forward_t(&stage_maps(1, &chans, h, w), false).unwrap();
        assert_eq!(eval.concat_logits.dims(), &[1, 3]);
    }
}

#[test]
fn official_config_and_names() {
    let cfg = PmgConfig::official(&[64, 256, 512, 1024, 2048], 200).unwrap();
    assert_eq!(cfg.in_channels, vec![512, 1024, 2048]);
    assert_eq!((cfg.feature_size, cfg.block_channels), (512, 1024));
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    let head = PmgHead::new(
        PmgConfig::last_stages(&[3, 4], 2, 2, 3, 2).unwrap(),
        &store.root().pp("h"),
    )
    .unwrap();
    assert_eq!(head.blocks().len(), 2);
    let names = store.names();
    for n in [
        "h.conv_block1.0.conv.weight",
        "h.conv_block1.0.bn.running_mean",
        "h.conv_block2.1.conv.weight",
        "h.conv_block2.1.bn.bias",
        "h.classifier1.0.weight",
        "h.classifier2.1.weight",
        "h.classifier2.2.running_var",
        "h.classifier2.4.bias",
        "h.classifier_concat.1.weight",
    ] {
        assert!(names.contains(&n.to_string()), "missing {n} in {names:?}");
    }
    assert_eq!(
        store.get("h.classifier_concat.1.weight").unwrap().dims(),
        &[2, 6]
    );
    assert!(
        !names.iter().any(|n| n.contains("conv.bias")),
        "BasicConv has no bias"
    );
    // The 3x3 conv's weight is PyTorch's kaiming-uniform(a = sqrt 5): |w| <= 1/sqrt(fan_in).
    let w = store.get("h.conv_block1.1.conv.weight").unwrap();
    let bound = 1.0 / ((2 * 9) as f32).sqrt();
    let max = w
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        max <= bound && max > 0.5 * bound,
        "max |w| {max} vs bound {bound}"
    );
}

#[test]
fn wrong_stages_are_rejected() {
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    let head = PmgHead::new(
        PmgConfig::last_stages(&[4, 6, 8], 3, 5, 7, 3).unwrap(),
        &store.root(),
    )
    .unwrap();
    let maps = stage_maps(2, &[4, 6, 8], 32, 32);
    assert!(head.forward_t(&maps[1..], true).is_err(), "too few stages");
    let bad = stage_maps(2, &[4, 6, 9], 32, 32);
    let err = head.forward_t(&bad, true).unwrap_err().to_string();
    assert!(err.contains("stage 3"), "{err}");
    assert!(PmgConfig::last_stages(&[4, 6], 3, 5, 7, 3).is_err());
}

#[test]
fn every_progressive_step_routes_gradients_as_the_official_code() {
    let store = ParamStore::new(3, DType::F32, &Device::Cpu);
    let chans = [4, 6, 8];
    let head = PmgHead::new(
        PmgConfig::last_stages(&chans, 3, 5, 7, 3).unwrap(),
        &store.root(),
    )
    .unwrap();
    let maps = stage_maps(4, &chans, 64, 64);
    let y = Tensor::new(&[0u32, 1, 2, 1], &Device::Cpu).unwrap();
    for step in 0..4 {
        let out = head.forward_t(&maps, true).unwrap();
        let loss = candle_nn::loss::cross_entropy(out.step_logits(step).unwrap(), &y).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in store.trainable() {
            let g = grads.get(var.as_tensor()).map(abs_sum).unwrap_or(0.0);
            let expected = if step < 3 {
                name.starts_with(&format!("conv_block{}.", step + 1))
                    || name.starts_with(&format!("classifier{}.", step + 1))
            } else {
                name.starts_with("conv_block") || name.starts_with("classifier_concat.")
            };
            assert_eq!(g > 0.0, expected, "step {step}: `{name}` gradient {g}");
        }
    }
    assert!(head.forward_t(&maps, true).unwrap().step_logits(4).is_err());
    // The summed official loss reaches every parameter.
    let out = head.forward_t(&maps, true).unwrap();
    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for step in 0..4 {
        loss = loss
            .add(&candle_nn::loss::cross_entropy(out.step_logits(step).unwrap(), &y).unwrap())
            .unwrap();
    }
    assert_all_params_have_grad(&store, &loss.backward().unwrap());
}

#[test]
fn batch_norm_statistics_update_only_in_training() {
    let store = ParamStore::new(5, DType::F32, &Device::Cpu);
    let chans = [4, 6, 8];
    let head = PmgHead::new(
        PmgConfig::last_stages(&chans, 3, 5, 7, 3).unwrap(),
        &store.root(),
    )
    .unwrap();
    let maps = stage_maps(4, &chans, 32, 32);
    let snapshot = || -> Vec<(String, Vec<f32>)> {
        store
            .all()
            .into_iter()
            .filter(|(n, _)| n.contains("running"))
            .map(|(n, v)| {
                (
                    n,
                    v.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                )
            })
            .collect()
    };
    let before = snapshot();
    // 3 blocks x 2 BN2d + 4 classifiers x 2 BN1d, two buffers each.
    assert_eq!(before.len(), 2 * (6 + 8));
    let e1 = head.forward_t(&maps, false).unwrap().combined().unwrap();
    assert_eq!(snapshot(), before, "eval must not touch running statistics");
    let e2 = head.forward_t(&maps, false).unwrap().combined().unwrap();
    assert_eq!(rel_err(&e1, &e2), 0.0, "eval is deterministic");
    head.forward_t(&maps, true).unwrap();
    let after = snapshot();
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert_ne!(a, b, "{name} should move in training");
    }
    // Block BNs use momentum 0.01: running_mean = 0.99 * 0 + 0.01 * batch mean.
    let out = head.blocks()[0].convs()[0].conv().weight().clone();
    let x = head.blocks()[0].convs()[0]
        .bn()
        .running_mean()
        .as_tensor()
        .clone();
    let conv = fgvc_ops::conv2d(&maps[0], &out, None, &fgvc_ops::Conv2dConfig::default()).unwrap();
    let batch_mean = conv
        .transpose(0, 1)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .mean(1)
        .unwrap();
    assert_close(
        "momentum 0.01",
        &x,
        &batch_mean.affine(0.01, 0.).unwrap(),
        1e-5,
    );
    let e3 = head.forward_t(&maps, false).unwrap().combined().unwrap();
    assert!(
        rel_err(&e1, &e3) > 0.0,
        "eval output follows the updated statistics"
    );
}

#[test]
fn matches_the_official_pmg_head() {
    let fx = fixture("pmg");
    let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    let head = PmgHead::new(
        PmgConfig::last_stages(&[3, 5, 6], 3, 4, 6, 3).unwrap(),
        &store.root(),
    )
    .unwrap();
    load_params(&store, &fx);
    let inputs: Vec<candle_core::Var> = (0..3)
        .map(|i| candle_core::Var::from_tensor(&fx[&format!("input.{i}")]).unwrap())
        .collect();
    let maps: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let out = head.forward_t(&maps, true).unwrap();
    let y = labels(&fx["labels"]);
    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for (k, w) in [1.0, 1.0, 1.0, 2.0].into_iter().enumerate() {
        let o = out.step_logits(k).unwrap();
        assert_close(&format!("out.{k}"), o, &fx[&format!("out.{k}")], 1e-4);
        loss = loss
            .add(
                &candle_nn::loss::cross_entropy(o, &y)
                    .unwrap()
                    .affine(w, 0.)
                    .unwrap(),
            )
            .unwrap();
    }
    assert_close("loss", &loss.reshape(1).unwrap(), &fx["loss"], 1e-5);
    let grads = loss.backward().unwrap();
    for (name, var) in store.trainable() {
        assert_close(
            &format!("grad {name}"),
            grads.get(var.as_tensor()).unwrap(),
            &fx[&format!("grad.{name}")],
            1e-4,
        );
    }
    for (i, v) in inputs.iter().enumerate() {
        assert_close(
            &format!("grad input {i}"),
            grads.get(v.as_tensor()).unwrap(),
            &fx[&format!("grad.input.{i}")],
            1e-4,
        );
    }
    for (name, var) in store.all() {
        if name.contains("running") {
            assert_close(
                &format!("after {name}"),
                var.as_tensor(),
                &fx[&format!("after.{name}")],
                1e-5,
            );
        }
    }
    let eval = head.forward_t(&maps, false).unwrap();
    for k in 0..4 {
        assert_close(
            &format!("eval.{k}"),
            eval.step_logits(k).unwrap(),
            &fx[&format!("eval.{k}")],
            1e-4,
        );
    }
}
