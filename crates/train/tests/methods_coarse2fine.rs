//! Coarse2Fine method: stage one trains the attention alone, stage two's fine loss reaches the attention
//! through the inverse mapping and the zoom, the prediction averages both passes, and training lowers the
//! loss in both stages.

mod methods_support;

use fgvc_train::methods::coarse2fine::{Coarse2FineMethod, Coarse2FineOptions};
use fgvc_train::optim::ZeroGrad;
use fgvc_train::Method;
use methods_support::*;

fn tiny_c2f(seed: u64) -> Coarse2FineMethod {
    let options = Coarse2FineOptions {
        coarse_epochs: 2,
        num_attentions: 4,
        reduce_channels: 4,
        hidden_channels: 8,
        ..Coarse2FineOptions::default()
    };
    Coarse2FineMethod::new(&resnet_tiny(), options, 3, store(seed)).unwrap()
}

fn grad_norm(
    grads: &candle_core::backprop::GradStore,
    method: &Coarse2FineMethod,
    name: &str,
) -> Option<f32> {
    let var = method.store().get(name).unwrap();
    grads.get(var.as_tensor()).map(|g| {
        g.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt()
    })
}

#[test]
fn stage_one_trains_the_attention_and_not_the_inverse_mapping() {
    let mut c2f = tiny_c2f(1);
    let (mut opt, log) = recording_sgd(&c2f, 0.01, 0.0, ZeroGrad::SetToNone);
    let stats = train_step(&mut c2f, &mut opt, &batch(4, 64, 3, 2), 1, 0);
    assert_eq!(stats.losses.len(), 1);
    assert_eq!(stats.losses[0].0, "coarse");
    let log = log.lock().unwrap();
    assert!(log[0].contains_key("heads.attentions.conv.weight"));
    assert!(log[0].contains_key("heads.fc.weight"));
    assert!(
        log[0].keys().all(|n| !under(n, "heads.inverse")),
        "stage one leaves the inverse mapping alone"
    );
}

#[test]
fn stage_two_fine_loss_reaches_the_attention_through_the_inverse_mapping() {
    let c2f = tiny_c2f(2);
    let b = batch(4, 64, 3, 5);
    let (_, fine, out) = c2f.fine_losses(&b.images, &b.labels).unwrap();
    assert_eq!(out.zoomed.dims(), b.images.dims());
    let grads = fine.backward().unwrap();
    // The inverse mapping only acts through the zoom: a gradient there proves the path is live.
    for name in [
        "heads.inverse.out.weight",
        "heads.inverse.fuse.weight",
        "heads.inverse.reduce.weight",
    ] {
        let g = grad_norm(&grads, &c2f, name).unwrap_or_else(|| panic!("{name} has no gradient"));
        assert!(g > 0.0, "{name}: zero gradient");
    }
    let g = grad_norm(&grads, &c2f, "heads.attentions.conv.weight").unwrap();
    assert!(g > 0.0);
    // A loss on the coarse logits alone does not reach the inverse mapping.
    let (coarse, _, _) = c2f.fine_losses(&b.images, &b.labels).unwrap();
    let grads = coarse.backward().unwrap();
    assert!(grad_norm(&grads, &c2f, "heads.inverse.out.weight").is_none());
}

#[test]
fn stage_two_trains_with_coarse_and_fine_losses() {
    let mut c2f = tiny_c2f(3);
    let (mut opt, log) = recording_sgd(&c2f, 0.01, 0.0, ZeroGrad::SetToNone);
    let stats = train_step(&mut c2f, &mut opt, &batch(4, 64, 3, 2), 2, 0);
    let names: Vec<&str> = stats.losses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["coarse", "fine"]);
    assert!((stats.losses[0].1 + stats.losses[1].1 - stats.loss).abs() < 1e-4);
    assert!(log.lock().unwrap()[0].contains_key("heads.inverse.out.weight"));
}

#[test]
fn prediction_averages_the_coarse_and_fine_passes() {
    let c2f = tiny_c2f(4);
    let p = c2f.predict(&batch(2, 64, 3, 1).images).unwrap();
    let names: Vec<&str> = p.heads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["combined", "coarse", "fine"]);
    let mean = p.heads[1]
        .1
        .add(&p.heads[2].1)
        .unwrap()
        .affine(0.5, 0.0)
        .unwrap();
    assert!(max_diff(&mean, &p.heads[0].1) < 1e-5);
    assert!(
        max_diff(&p.heads[1].1, &p.heads[2].1) > 0.0,
        "the fine pass sees other pixels"
    );
}

#[test]
fn training_lowers_the_loss_in_both_stages() {
    for epoch in [0, 2] {
        let mut c2f = tiny_c2f(5);
        let mut opt = sgd(&c2f, 1e-4, 0.0, ZeroGrad::SetToNone);
        let b = batch(4, 64, 2, 19);
        let losses = losses_on_repeated_batch(&mut c2f, &mut *opt, &b, epoch, 8);
        if epoch == 0 {
            assert_falls(&losses, 0.8);
        } else {
            // Stage two's loss on a repeated batch is not smooth in the weights: the attention-guided crops
            // move in whole pixels, so from the second step on it jumps (3.3, 1.6, 1.8, 2.8, ... at lr 1e-4,
            // and as much at 1e-5), and how depends on the CPU's rounding. The first step is a descent step
            // on every CPU and ISA level measured; that is what is asserted here.
            assert!(
                losses[1] < 0.8 * losses[0],
                "stage two: the first step did not lower the loss: {losses:?}"
            );
        }
    }
}
