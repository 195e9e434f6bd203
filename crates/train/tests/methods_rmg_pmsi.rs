//! RMG-PMSI method: the stride-1 MobileNetV2 stem, the frozen backbone of the first epochs, the mosaic
//! steps, the combined prediction, and that training lowers the loss.

mod methods_support;

use fgvc_train::methods::rmg_pmsi::{RmgPmsi, RmgPmsiOptions};
use fgvc_train::model::ModelConfig;
use fgvc_train::optim::ZeroGrad;
use fgvc_train::Method;
use methods_support::*;

fn tiny_rmg(seed: u64) -> RmgPmsi {
    let options = RmgPmsiOptions {
        feature_size: 8,
        block_channels: Some(12),
        ..RmgPmsiOptions::default()
    };
    RmgPmsi::new(&mobilenet_quarter(), options, 3, store(seed)).unwrap()
}

#[test]
fn mobilenet_v2_has_the_official_stride_one_stem() {
    let rmg = tiny_rmg(1);
    assert_eq!(rmg.backbone().stage_strides(), vec![1, 2, 4, 8, 16]);
    assert_eq!(rmg.head().config().in_channels, vec![8, 24, 1280]);
    let standard = RmgPmsi::new(
        &ModelConfig {
            first_stride: Some(2),
            ..mobilenet_quarter()
        },
        RmgPmsiOptions {
            feature_size: 8,
            block_channels: Some(8),
            ..RmgPmsiOptions::default()
        },
        3,
        store(1),
    )
    .unwrap();
    assert_eq!(standard.backbone().stage_strides(), vec![2, 4, 8, 16, 32]);
}

/// Epochs 0-4: four steps per batch, the heads move, the backbone's weights do not (its BatchNorm
/// statistics still do, as in the official code). Epoch 5: the backbone moves too.
#[test]
fn backbone_is_frozen_for_the_first_five_epochs() {
    let mut rmg = tiny_rmg(2);
    let groups = rmg.default_groups(3e-4);
    let backbone = groups.iter().find(|g| g.name == "backbone").unwrap();
    assert_eq!(backbone.freeze_epochs, 5);
    assert_eq!(backbone.params, vec!["features".to_string()]);
    let (mut opt, log) = recording_sgd(&rmg, 0.01, 5e-4, ZeroGrad::Zero);
    let b = batch(4, 32, 3, 3);
    let before = snapshot(rmg.store());
    let stats = train_step(&mut rmg, &mut opt, &b, 4, 0);
    assert_eq!(
        stats
            .losses
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["mosaic3", "mosaic2", "mosaic1", "concat"]
    );
    assert_eq!(log.lock().unwrap().len(), 4);
    // MSI couples the stages: every step's loss reaches the whole backbone, even though it is frozen.
    assert!(log.lock().unwrap()[0].contains_key("features.0.0.weight"));
    let after = snapshot(rmg.store());
    let moved = changed(&before, &after);
    let frozen: Vec<&String> = moved
        .iter()
        .filter(|n| {
            under(n, "features") && !n.ends_with("running_mean") && !n.ends_with("running_var")
        })
        .collect();
    assert!(
        frozen.is_empty(),
        "frozen backbone weights moved: {frozen:?}"
    );
    assert!(
        moved.iter().any(|n| n == "features.0.1.running_mean"),
        "BatchNorm statistics still update"
    );
    for head in [
        "heads.smooth_conv1.0.conv.weight",
        "heads.map1.weight",
        "heads.classifier3.4.weight",
        "heads.classifier_concat.4.weight",
    ] {
        assert!(moved.iter().any(|n| n == head), "{head} should move");
    }
    let before = snapshot(rmg.store());
    train_step(&mut rmg, &mut opt, &b, 5, 1);
    let moved = changed(&before, &snapshot(rmg.store()));
    assert!(
        moved.iter().any(|n| n == "features.0.0.weight"),
        "epoch 5 trains the backbone"
    );
}

#[test]
fn combined_prediction_is_the_sum_of_the_four_classifiers() {
    let rmg = tiny_rmg(3);
    let p = rmg.predict(&batch(2, 32, 3, 9).images).unwrap();
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
    // Eval mode is deterministic (no MSI dropout).
    let again = rmg.predict(&batch(2, 32, 3, 9).images).unwrap();
    assert_eq!(max_diff(&again.heads[0].1, &p.heads[0].1), 0.0);
}

#[test]
fn training_lowers_the_loss() {
    let mut rmg = tiny_rmg(4);
    let mut opt = sgd(&rmg, 0.01, 0.0, ZeroGrad::Zero);
    let b = batch(4, 32, 2, 17);
    // Past the freeze, so the whole network trains.
    let losses = losses_on_repeated_batch(&mut rmg, &mut *opt, &b, 5, 8);
    assert_falls(&losses, 0.8);
}
