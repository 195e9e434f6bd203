//! PMG method: the four steps route gradients as the official code does, the optimiser semantics of
//! PyTorch < 2.0, the combined prediction, and that training lowers the loss.

mod methods_support;

use fgvc_train::methods::pmg::{Pmg, PmgOptions};
use fgvc_train::optim::ZeroGrad;
use fgvc_train::Method;
use methods_support::*;

fn tiny_pmg(seed: u64) -> Pmg {
    let options = PmgOptions {
        feature_size: 8,
        block_channels: Some(12),
        ..PmgOptions::default()
    };
    Pmg::new(&resnet_tiny(), options, 3, store(seed)).unwrap()
}

/// Which prefixes get a gradient at each step (algorithms.md §1.5): step 1 reaches layer2 and below and
/// conv_block1 + classifier1 only; step 4 the whole trunk, every block and classifier_concat but no stage
/// classifier.
#[test]
fn each_step_reaches_only_what_the_official_code_trains() {
    let mut pmg = tiny_pmg(1);
    let (mut opt, log) = recording_sgd(&pmg, 0.01, 5e-4, ZeroGrad::Zero);
    let b = batch(4, 32, 3, 11);
    let stats = train_step(&mut pmg, &mut opt, &b, 0, 0);
    assert_eq!(
        stats
            .losses
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["jigsaw8", "jigsaw4", "jigsaw2", "concat"]
    );
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 4, "four optimiser steps per batch");
    let names: Vec<String> = pmg
        .store()
        .trainable()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let backbone_reach = [
        vec!["conv1", "bn1", "layer1", "layer2"],
        vec!["conv1", "bn1", "layer1", "layer2", "layer3"],
        vec!["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"],
        vec!["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"],
    ];
    let head_reach = [
        vec!["heads.conv_block1", "heads.classifier1"],
        vec!["heads.conv_block2", "heads.classifier2"],
        vec!["heads.conv_block3", "heads.classifier3"],
        vec![
            "heads.conv_block1",
            "heads.conv_block2",
            "heads.conv_block3",
            "heads.classifier_concat",
        ],
    ];
    for (k, grads) in log.iter().enumerate() {
        for name in &names {
            let expected = backbone_reach[k]
                .iter()
                .chain(&head_reach[k])
                .any(|p| under(name, p));
            assert_eq!(
                grads.contains_key(name),
                expected,
                "step {}: {name} should {}have a gradient",
                k + 1,
                if expected { "" } else { "not " }
            );
        }
        // The gradient that reaches a parameter is a real one, not zeros.
        let g = &grads[if k < 3 {
            "layer2.0.conv1.weight"
        } else {
            "layer4.0.conv1.weight"
        }];
        assert!(
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }
}

/// With the default (PyTorch < 2.0) semantics, classifier1 keeps moving through momentum and weight decay
/// during steps 2-4 of the first batch; with set_to_none it moves once. Both trajectories are recomputed on
/// the host from the recorded step-1 gradient.
#[test]
fn zero_grad_semantics_follow_the_official_pytorch() {
    let name = "heads.classifier1.4.weight";
    let (lr, wd, mu) = (0.01f64, 5e-4f64, 0.9f64);
    let head_lr = lr * 10.0;
    assert_eq!(tiny_pmg(0).default_zero_grad(), ZeroGrad::Zero);
    for mode in [ZeroGrad::Zero, ZeroGrad::SetToNone] {
        let mut pmg = tiny_pmg(2);
        let w0 = values(pmg.store(), name);
        let (mut opt, log) = recording_sgd(&pmg, lr, wd, mode);
        train_step(&mut pmg, &mut opt, &batch(4, 32, 3, 5), 0, 0);
        let g: Vec<f32> = log.lock().unwrap()[0][name]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let after = values(pmg.store(), name);
        let mut w: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
        let mut buf: Vec<f64> = vec![0.0; w.len()];
        let steps = if mode == ZeroGrad::Zero { 4 } else { 1 };
        for s in 0..steps {
            for i in 0..w.len() {
                let grad = if s == 0 { g[i] as f64 } else { 0.0 };
                let d = grad + wd * w[i];
                buf[i] = if s == 0 { d } else { mu * buf[i] + d };
                w[i] -= head_lr * buf[i];
            }
        }
        let err = w
            .iter()
            .zip(&after)
            .map(|(e, a)| (e - *a as f64).abs())
            .fold(0.0, f64::max);
        assert!(
            err < 1e-6,
            "{mode:?}: classifier1 differs from the expected trajectory by {err}"
        );
    }
}

#[test]
fn combined_prediction_is_the_sum_of_the_four_classifiers() {
    let pmg = tiny_pmg(3);
    let p = pmg.predict(&batch(2, 32, 3, 9).images).unwrap();
    let names: Vec<&str> = p.heads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "combined",
            "classifier1",
            "classifier2",
            "classifier3",
            "concat"
        ]
    );
    let mut sum = p.heads[1].1.clone();
    for (_, l) in &p.heads[2..] {
        sum = sum.add(l).unwrap();
    }
    assert!(max_diff(&sum, &p.heads[0].1) < 1e-5);
    assert_eq!(p.heads[0].1.dims(), &[2, 3]);
}

#[test]
fn training_lowers_the_loss() {
    let mut pmg = tiny_pmg(4);
    let mut opt = sgd(&pmg, 0.01, 0.0, ZeroGrad::Zero);
    let b = batch(4, 32, 2, 21);
    let losses = losses_on_repeated_batch(&mut pmg, &mut *opt, &b, 0, 8);
    assert_falls(&losses, 0.7);
}

/// The heads read the three deepest stages on every backbone family.
#[test]
fn reads_the_three_deepest_stages() {
    let pmg = tiny_pmg(5);
    assert_eq!(pmg.head().config().in_channels, vec![16, 32, 64]);
    let options = PmgOptions {
        feature_size: 8,
        block_channels: Some(8),
        ..PmgOptions::default()
    };
    let m = Pmg::new(&mobilenet_quarter(), options, 3, store(5)).unwrap();
    // features[4:7] (32 x 0.25 -> 8), features[7:14] (96 x 0.25 -> 24), features[14:] (1280).
    assert_eq!(m.head().config().in_channels, vec![8, 24, 1280]);
}

/// `progressive = false` (the "jigsaw without steps" ablation) takes one optimiser step per batch whose
/// gradient is the sum of the four progressive steps' gradients at the same weights, on the same jigsaws.
#[test]
fn without_the_progressive_steps_the_four_losses_make_one_step() {
    let b = batch(4, 32, 3, 13);
    // Progressive, at rate 0 so that every step sees the same weights.
    let mut pmg = tiny_pmg(3);
    let (mut opt, log) = recording_sgd(&pmg, 0.0, 0.0, ZeroGrad::SetToNone);
    let steps = train_step(&mut pmg, &mut opt, &b, 0, 0);
    let progressive = log.lock().unwrap().clone();
    assert_eq!(progressive.len(), 4);

    let options = PmgOptions {
        progressive: false,
        ..pmg.options().clone()
    };
    let mut joint = Pmg::new(&resnet_tiny(), options, 3, store(3)).unwrap();
    let (mut opt, log) = recording_sgd(&joint, 0.0, 0.0, ZeroGrad::SetToNone);
    let stats = train_step(&mut joint, &mut opt, &b, 0, 0);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1, "one optimiser step per batch");
    assert_eq!(stats.losses.len(), 4);
    for ((n1, v1), (n2, v2)) in steps.losses.iter().zip(&stats.losses) {
        assert_eq!(n1, n2);
        assert!((v1 - v2).abs() < 1e-5, "{n1}: {v1} vs {v2}");
    }
    let total: f64 = stats.losses.iter().map(|(_, v)| v).sum();
    assert!(
        (stats.loss - total).abs() < 1e-4,
        "{} vs {total}",
        stats.loss
    );
    for name in ["layer2.0.conv1.weight", "heads.classifier1.4.weight"] {
        let sum = progressive
            .iter()
            .filter_map(|g| g.get(name))
            .cloned()
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let diff = max_diff(&log[0][name], &sum);
        let scale = max_diff(&sum, &sum.zeros_like().unwrap());
        assert!(
            scale > 0.0 && diff <= 1e-4 * scale,
            "{name}: {diff} of {scale}"
        );
    }
}
