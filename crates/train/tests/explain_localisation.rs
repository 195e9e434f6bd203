//! Grad-CAM of a trained model lies on the class-defining part: a tiny baseline trained from scratch on two
//! synthetic classes that differ only in one part puts clearly more of its heatmap's mass in that part's box
//! (known to the renderer) than the box's share of the image, at a stage fine enough to resolve it.

use candle_core::{Device, IndexOp, Tensor};
use fgvc_data::synthetic::{ClassSpec, Part, Rendered, Synthetic, SyntheticConfig};
use fgvc_data::{Batch, Split};
use fgvc_ops::ParamStore;
use fgvc_train::explain::{self, ExplainOptions};
use fgvc_train::method::Accumulator;
use fgvc_train::methods::baseline::Baseline;
use fgvc_train::model::ModelConfig;
use fgvc_train::optim::{AdamWConfig, OptimizerConfig, ParamGroups, ZeroGrad};
use fgvc_train::{Method, StepContext};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Classes of the full 144-combination set: every part level appears, so two classes that differ only in
/// `part` exist.
const ALL: usize = 144;

/// Two classes of the 144 that differ only in their tail tip (pale tip or dark band).
fn tail_pair() -> (usize, usize) {
    let specs: Vec<ClassSpec> = (0..ALL).map(|c| ClassSpec::of(c, ALL)).collect();
    for a in 0..ALL {
        for b in 0..ALL {
            let (sa, sb) = (specs[a], specs[b]);
            if sa.tail_tip == fgvc_data::synthetic::TailTip::Pale
                && sb.tail_tip == fgvc_data::synthetic::TailTip::DarkBand
                && (ClassSpec {
                    tail_tip: sb.tail_tip,
                    ..sa
                }) == sb
            {
                return (a, b);
            }
        }
    }
    unreachable!("144 classes hold every combination")
}

/// Image as `[3, H, W]` normalised to [-1, 1].
fn tensor(r: &Rendered) -> Tensor {
    let (w, h) = r.image.dimensions();
    let data: Vec<f32> = r
        .image
        .as_raw()
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    Tensor::from_vec(data, (h as usize, w as usize, 3), &Device::Cpu)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
}

/// The rendered images of classes `a` (label 0) and `b` (label 1) in `split`.
fn render(
    size: u32,
    per_class: usize,
    split: Split,
    (a, b): (usize, usize),
) -> Vec<(Rendered, u32)> {
    let config = SyntheticConfig {
        classes: ALL,
        image_size: size,
        train_per_class: per_class,
        val_per_class: 1,
        test_per_class: per_class,
        seed: 11,
        first_class: 0,
    };
    let data = Synthetic::new(config, split).unwrap();
    let mut out = Vec::new();
    for m in 0..per_class {
        out.push((data.render(a + m * ALL), 0));
        out.push((data.render(b + m * ALL), 1));
    }
    out
}

fn stack(items: &[&(Rendered, u32)]) -> Batch {
    let images: Vec<Tensor> = items.iter().map(|(r, _)| tensor(r)).collect();
    let labels: Vec<u32> = items.iter().map(|(_, l)| *l).collect();
    Batch {
        images: Tensor::stack(&images, 0).unwrap(),
        labels: Tensor::from_vec(labels, items.len(), &Device::Cpu).unwrap(),
        indices: (0..items.len()).collect(),
    }
}

fn train(seed: u64, size: u32, steps: usize, width: usize) -> (Baseline, Vec<(Rendered, u32)>) {
    let pair = tail_pair();
    let train = render(size, 100, Split::Train, pair);
    let test = render(size, 25, Split::Test, pair);
    let model = ModelConfig {
        backbone: "resnet18".into(),
        base_width: Some(width),
        ..ModelConfig::default()
    };
    let mut method = Baseline::new(
        &model,
        2,
        ParamStore::new(seed, candle_core::DType::F32, &Device::Cpu),
    )
    .unwrap();
    let groups = ParamGroups::single(method.store().trainable(), 3e-3, 0.0).unwrap();
    let mut opt = OptimizerConfig::AdamW(AdamWConfig::default())
        .build(groups, ZeroGrad::SetToNone)
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = Vec::new();
    let mut acc = Accumulator::new(1);
    for step in 0..steps {
        if order.len() < 16 {
            let mut more: Vec<usize> = (0..train.len()).collect();
            more.shuffle(&mut rng);
            order.extend(more);
        }
        let chosen: Vec<&(Rendered, u32)> = order.drain(..16).map(|i| &train[i]).collect();
        let batch = stack(&chosen);
        let mut ctx = StepContext::new(&mut *opt, &mut acc, None, true, seed, 0, step as u64);
        method.train_step(&batch, &mut ctx).unwrap();
    }
    (method, test)
}

/// Over the correctly classified test images: accuracy, and the mean of (heatmap mass in the tail-tip box
/// dilated by `pad` pixels) / (the box's share of the image).
fn localisation(
    method: &Baseline,
    test: &[(Rendered, u32)],
    layer: Option<&str>,
    pad: f32,
) -> (f32, f32, usize) {
    let all: Vec<&(Rendered, u32)> = test.iter().collect();
    let batch = stack(&all);
    let options = ExplainOptions {
        class: None,
        layer: layer.map(str::to_string),
    };
    let ex = explain::explain_with(method, &batch.images, &options).unwrap();
    let heatmap = &ex.heatmaps[0];
    let (size_h, size_w) = ex.size;
    let mut ratios = Vec::new();
    let mut correct = 0;
    for (i, (r, label)) in test.iter().enumerate() {
        if heatmap.classes[i] != *label as usize {
            continue;
        }
        correct += 1;
        let map = heatmap.map.i(i).unwrap().to_vec2::<f32>().unwrap();
        let [x0, y0, x1, y1] = r.part_box(Part::TailTip);
        let (x0, y0, x1, y1) = (x0 - pad, y0 - pad, x1 + pad, y1 + pad);
        let (mut inside, mut total, mut area) = (0f32, 0f32, 0usize);
        for (y, row) in map.iter().enumerate() {
            for (x, v) in row.iter().enumerate() {
                let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
                total += v;
                if cx >= x0 && cx < x1 && cy >= y0 && cy < y1 {
                    inside += v;
                    area += 1;
                }
            }
        }
        if total > 0.0 && area > 0 {
            ratios.push((inside / total) / (area as f32 / (size_h * size_w) as f32));
        }
    }
    let mean = ratios.iter().sum::<f32>() / ratios.len().max(1) as f32;
    (correct as f32 / test.len() as f32, mean, ratios.len())
}

/// Seed 0, 250 steps of batch 16 at 64 px (about 20 s on 2 cores): 74 % test accuracy. Measured ratios
/// (seeds 0 / 1 / 2, the last two at 400 steps): `layer1` 1.60 / 1.71 / 1.52, `layer2` 1.58 / 1.28 / 1.71,
/// `layer3` 0.89 / 2.01 / 0.65, the deepest map (`layer4`, 2 x 2) 1.01 / 1.10 / 1.06.
#[test]
fn grad_cam_at_layer1_puts_its_mass_on_the_class_defining_tail_tip() {
    let (method, test) = train(0, 64, 250, 8);
    let (accuracy, deepest, _) = localisation(&method, &test, None, 2.0);
    assert!(
        accuracy >= 0.65,
        "the model did not learn the tail tip: {accuracy}"
    );
    let (_, ratio, explained) = localisation(&method, &test, Some("layer1"), 2.0);
    assert!(
        explained >= 25,
        "only {explained} correctly classified images with a heatmap"
    );
    assert!(
        ratio >= 1.3,
        "layer1 Grad-CAM mass in the tail-tip box is only {ratio:.2} x the box's area share \
         (deepest map: {deepest:.2})"
    );
}
