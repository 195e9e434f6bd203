//! DCL method: the official interleaved batch and its targets, the official and paper location targets,
//! both predictions, and that training lowers the loss.

mod methods_support;

use candle_core::{Device, IndexOp, Tensor};
use fgvc_augment::transforms::Normalize;
use fgvc_augment::{permute_cells, RegionConfusion};
use fgvc_heads::dcl::{LocationHead, SwapHead};
use fgvc_train::methods::dcl::{Dcl, DclOptions, DclPrediction, LawKind};
use fgvc_train::optim::ZeroGrad;
use fgvc_train::Method;
use methods_support::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SIZE: usize = 64; // ResNet-18 layer4 is 2x2 at 64 px, so N = 2
const CLASSES: usize = 3;

fn tiny_dcl(options: DclOptions, seed: u64) -> Dcl {
    Dcl::new(
        &resnet_tiny(),
        options,
        CLASSES,
        store(seed),
        Normalize::IMAGENET,
    )
    .unwrap()
}

fn grid2() -> DclOptions {
    DclOptions {
        grid: 2,
        k: 1,
        ..DclOptions::default()
    }
}

#[test]
fn batch_interleaves_each_image_with_its_destroyed_copy() {
    let dcl = tiny_dcl(grid2(), 1);
    let b = batch(3, SIZE, CLASSES, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let d = dcl.make_batch(&b.images, &b.labels, &mut rng).unwrap();
    assert_eq!(d.images.dims(), &[6, 3, SIZE, SIZE]);
    assert_eq!(d.destroyed, [false, true, false, true, false, true]);
    assert_eq!(d.labels.to_vec1::<u32>().unwrap(), [0, 0, 1, 1, 2, 2]);
    // cls_mul: y for the original, y + C for the destroyed copy.
    assert_eq!(d.swap_labels.to_vec1::<u32>().unwrap(), [0, 3, 1, 4, 2, 5]);
    for i in 0..3 {
        let original = b.images.i(i).unwrap();
        assert_eq!(
            max_diff(&d.images.i(2 * i).unwrap(), &original),
            0.0,
            "row {} is image {i}",
            2 * i
        );
        // The odd row is image i under its permutation: undoing it gives image i back exactly.
        let destroyed = d.images.narrow(0, 2 * i + 1, 1).unwrap();
        let inverse = d.permutations[2 * i + 1].inverse();
        let restored = permute_cells(&destroyed, &[inverse]).unwrap();
        assert_eq!(max_diff(&restored.i(0).unwrap(), &original), 0.0);
        assert_eq!(
            d.permutations[2 * i].source_of,
            vec![0, 1, 2, 3],
            "originals are the identity"
        );
    }
    // Originals get the identity law (q - 2) / 4.
    let law = d.location.to_vec2::<f32>().unwrap();
    assert_eq!(law[0], vec![-0.5, -0.25, 0.0, 0.25]);
    // Binary discriminator: 1 for originals, 0 for destroyed copies.
    let binary = tiny_dcl(
        DclOptions {
            swap: SwapHead::Binary,
            ..grid2()
        },
        1,
    );
    let d = binary.make_batch(&b.images, &b.labels, &mut rng).unwrap();
    assert_eq!(d.swap_labels.to_vec1::<u32>().unwrap(), [1, 0, 1, 0, 1, 0]);
}

/// Images whose regions have distinct brightness (after ImageNet normalisation): the code's
/// brightness-matching law then finds the true permutation, so it equals the exact law.
#[test]
fn official_law_matches_brightness_and_exact_law_the_permutation() {
    let n = 4;
    let size = 32;
    let cell = size / n;
    let mut data = Vec::new();
    for img in 0..2 {
        for _c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    let q = (y / cell) * n + x / cell;
                    data.push((q as f32 + 16.0 * img as f32) / 40.0);
                }
            }
        }
    }
    let pixels = Tensor::from_vec(data, (2, 3, size, size), &Device::Cpu).unwrap();
    let images = Normalize::IMAGENET.normalize_tensor(&pixels).unwrap();
    let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    let options = DclOptions {
        grid: n,
        ..DclOptions::default()
    };
    let model = fgvc_train::model::ModelConfig {
        backbone: "resnet18".into(),
        base_width: Some(8),
        ..Default::default()
    };
    let official = Dcl::new(&model, options.clone(), 2, store(3), Normalize::IMAGENET).unwrap();
    assert_eq!(official.options().law_kind(), LawKind::Official);
    let exact = Dcl::new(
        &model,
        DclOptions {
            law: Some(LawKind::Exact),
            ..options
        },
        2,
        store(3),
        Normalize::IMAGENET,
    )
    .unwrap();
    let a = official
        .make_batch(&images, &labels, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    let b = exact
        .make_batch(&images, &labels, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    assert!(max_diff(&a.location, &b.location) < 1e-6);
    let expected = RegionConfusion::exact_law(&b.permutations, &Device::Cpu).unwrap();
    assert!(max_diff(&b.location, &expected) < 1e-6);
    // Some region did move, so the test is not about identities only.
    assert!(b.permutations[1].fixed_points() < 16 || b.permutations[3].fixed_points() < 16);
}

#[test]
fn paper_location_targets_are_row_and_column_of_the_source() {
    let dcl = tiny_dcl(
        DclOptions {
            location: LocationHead::Paper,
            rcm: fgvc_augment::RcmMode::Paper,
            ..grid2()
        },
        2,
    );
    let b = batch(2, SIZE, CLASSES, 6);
    let d = dcl
        .make_batch(&b.images, &b.labels, &mut ChaCha8Rng::seed_from_u64(3))
        .unwrap();
    assert_eq!(d.location.dims(), &[4, 2, 2, 2]);
    let rows: Vec<f32> = d
        .location
        .i((0, 0))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let cols: Vec<f32> = d
        .location
        .i((0, 1))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(rows, [1.0, 1.0, 2.0, 2.0]);
    assert_eq!(cols, [1.0, 2.0, 1.0, 2.0]);
    // Paper head + official law is refused.
    let bad = DclOptions {
        location: LocationHead::Paper,
        law: Some(LawKind::Official),
        ..grid2()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn official_prediction_adds_both_halves_of_the_joint_discriminator() {
    let dcl = tiny_dcl(grid2(), 4);
    let images = batch(2, SIZE, CLASSES, 2).images;
    let p = dcl.predict(&images).unwrap();
    assert_eq!(p.heads[0].0, "classifier");
    assert_eq!(p.heads[1].0, "official");
    let out = dcl.forward_t(&images, false).unwrap();
    let c = CLASSES;
    let expected = out
        .logits
        .add(&out.swap.narrow(1, 0, c).unwrap())
        .unwrap()
        .add(&out.swap.narrow(1, c, c).unwrap())
        .unwrap();
    assert!(max_diff(&p.heads[1].1, &expected) < 1e-5);
    assert!(max_diff(&p.heads[0].1, &out.logits) < 1e-6);
    assert!(
        max_diff(&p.heads[0].1, &p.heads[1].1) > 1e-4,
        "the swap head contributes"
    );
    let official_first = tiny_dcl(
        DclOptions {
            prediction: DclPrediction::Official,
            ..grid2()
        },
        4,
    );
    assert_eq!(
        official_first.predict(&images).unwrap().heads[0].0,
        "official"
    );
}

#[test]
fn one_step_per_batch_with_every_head_trained() {
    let mut dcl = tiny_dcl(grid2(), 5);
    let (mut opt, log) = recording_sgd(&dcl, 0.01, 0.0, ZeroGrad::Zero);
    let stats = train_step(&mut dcl, &mut opt, &batch(4, SIZE, CLASSES, 7), 0, 0);
    assert_eq!(stats.count, 4);
    let names: Vec<&str> = stats.losses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["cls", "swap", "location"]);
    let total = stats.losses.iter().map(|(_, v)| v).sum::<f64>();
    assert!(
        (total - stats.loss).abs() < 1e-4,
        "alpha = beta = gamma = 1: {stats:?}"
    );
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    for name in [
        "heads.classifier.weight",
        "heads.classifier_swap.weight",
        "heads.Convmask.weight",
        "conv1.weight",
    ] {
        assert!(log[0].contains_key(name), "{name} has a gradient");
    }
}

#[test]
fn training_lowers_the_loss() {
    let mut dcl = tiny_dcl(grid2(), 6);
    let mut opt = sgd(&dcl, 0.01, 0.0, ZeroGrad::Zero);
    let b = batch(4, SIZE, 2, 13);
    let losses = losses_on_repeated_batch(&mut dcl, &mut *opt, &b, 0, 8);
    assert_falls(&losses, 0.8);
}
