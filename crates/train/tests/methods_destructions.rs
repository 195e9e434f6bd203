//! `Method::destructions`, which the augmentation previews show: for each method, the destroyed copies its
//! training step feeds the network, drawn from the same keyed streams, and none for the methods that train
//! on their inputs as they are.

mod methods_support;

use candle_core::{IndexOp, Tensor};
use fgvc_train::method::keyed_rng;
use fgvc_train::methods::dcl::{Dcl, DclOptions};
use fgvc_train::methods::pmg::{Pmg, PmgOptions};
use fgvc_train::methods::rmg_pmsi::{RmgPmsi, RmgPmsiOptions};
use fgvc_train::Method;
use methods_support::*;

/// The streams of global step 3 of epoch 1, seed 7.
fn streams(stream: u64) -> rand_chacha::ChaCha8Rng {
    keyed_rng(7, 1, 3, stream)
}

fn names(d: &[(String, Tensor)]) -> Vec<&str> {
    d.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn pmg_and_rmg_pmsi_preview_the_input_of_each_progressive_step() {
    let b = batch(4, 32, 3, 5);
    let pmg = Pmg::new(
        &resnet_tiny(),
        PmgOptions {
            feature_size: 8,
            block_channels: Some(8),
            ..PmgOptions::default()
        },
        3,
        store(1),
    )
    .unwrap();
    let d = pmg.destructions(&b.images, &streams).unwrap();
    assert_eq!(names(&d), ["jigsaw8", "jigsaw4", "jigsaw2"]);
    for (k, (_, x)) in d.iter().enumerate() {
        let trained = pmg
            .step_input(&b.images, k, &mut streams(k as u64))
            .unwrap();
        assert_eq!(max_diff(x, &trained), 0.0, "step {k}");
        assert!(max_diff(x, &b.images) > 0.0, "step {k} destroys nothing");
    }

    let rmg = RmgPmsi::new(
        &mobilenet_quarter(),
        RmgPmsiOptions {
            feature_size: 8,
            block_channels: Some(8),
            ..RmgPmsiOptions::default()
        },
        3,
        store(1),
    )
    .unwrap();
    let d = rmg.destructions(&b.images, &streams).unwrap();
    assert_eq!(names(&d), ["mosaic3", "mosaic2", "mosaic1"]);
    for (k, (_, x)) in d.iter().enumerate() {
        let trained = rmg
            .step_input(&b.images, k, &mut streams(k as u64))
            .unwrap();
        assert_eq!(max_diff(x, &trained), 0.0, "step {k}");
    }
}

#[test]
fn dcl_previews_the_region_confused_half_of_its_batch() {
    let b = batch(3, 64, 3, 5);
    let dcl = Dcl::new(
        &resnet_tiny(),
        DclOptions {
            grid: 2,
            k: 1,
            ..DclOptions::default()
        },
        3,
        store(1),
        fgvc_augment::transforms::Normalize::IMAGENET,
    )
    .unwrap();
    let d = dcl.destructions(&b.images, &streams).unwrap();
    assert_eq!(names(&d), ["rcm"]);
    // The official batch interleaves [I_0, φ(I_0), I_1, ...]; its odd rows are what the step trains on.
    let official = dcl
        .make_batch(&b.images, &b.labels, &mut streams(0))
        .unwrap();
    for i in 0..3 {
        let trained = official.images.i(2 * i + 1).unwrap();
        assert_eq!(max_diff(&d[0].1.i(i).unwrap(), &trained), 0.0, "image {i}");
    }
    assert!(max_diff(&d[0].1, &b.images) > 0.0);
}

#[test]
fn the_baseline_and_coarse2fine_destroy_nothing() {
    let b = batch(2, 32, 3, 5);
    let c2f = (tiny_method("coarse2fine").build)(&resnet_tiny(), store(1));
    assert!(c2f.destructions(&b.images, &streams).unwrap().is_empty());
    let config = fgvc_train::Config::parse("", "baseline", &["model.base_width=4".into()]).unwrap();
    let baseline =
        fgvc_train::registry::build_method(&config, 3, &candle_core::Device::Cpu).unwrap();
    assert!(baseline
        .destructions(&b.images, &streams)
        .unwrap()
        .is_empty());
}
