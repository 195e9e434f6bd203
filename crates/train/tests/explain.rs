//! Grad-CAM and the methods' own panels: exact against a hand-computed CAM (the baseline's linear classifier)
//! and against finite differences (PMG's nonlinear multi-stage heads), one heatmap per named prediction of
//! every built-in method with its panels, a class out of range and a method that cannot be explained.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use fgvc_augment::transforms::Normalize;
use fgvc_data::Batch;
use fgvc_ops::ParamStore;
use fgvc_train::explain::{self, Explain, PanelContent, PanelKind, RenderOptions};
use fgvc_train::methods::baseline::Baseline;
use fgvc_train::methods::pmg::{Pmg, PmgOptions};
use fgvc_train::model::ModelConfig;
use fgvc_train::registry::build_method;
use fgvc_train::{Config, Method, Predictions, StepContext, StepStats};
use rand::{Rng, SeedableRng};

fn images(n: usize, size: usize, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> = (0..n * 3 * size * size)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(data, (n, 3, size, size), &Device::Cpu).unwrap()
}

fn resnet(width: usize) -> ModelConfig {
    ModelConfig {
        backbone: "resnet18".into(),
        base_width: Some(width),
        ..ModelConfig::default()
    }
}

fn store(seed: u64) -> ParamStore {
    ParamStore::new(seed, DType::F32, &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.sub(b)
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

fn sum(t: &Tensor) -> f32 {
    t.sum_all().unwrap().to_scalar::<f32>().unwrap()
}

/// For a global average pool and a linear classifier, dy_c/dA_kij = W_ck / hw, so Grad-CAM is the CAM of
/// Zhou et al.: ReLU(sum_k W_ck A_k) / hw. The heatmap on the input keeps the CAM's mass.
#[test]
fn baseline_grad_cam_is_the_class_activation_map_of_its_classifier() {
    let method = Baseline::new(&resnet(8), 3, store(3)).unwrap();
    let x = images(2, 96, 1);
    let a = method
        .backbone()
        .forward_stages(&x, false)
        .unwrap()
        .pop()
        .unwrap(); // [2, 64, 3, 3]
    let (_, c, h, w) = a.dims4().unwrap();
    assert_eq!((h, w), (3, 3));
    let weight = method.classifier().weight(); // [3, 64]
    let logits = method.predict(&x).unwrap().main().unwrap().1.clone();
    let predicted: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
    for class in [None, Some(2)] {
        let ex = explain::explain(&method, &x, class).unwrap();
        assert_eq!(ex.size, (96, 96));
        assert_eq!(ex.heatmaps.len(), 1);
        let heatmap = &ex.heatmaps[0];
        assert_eq!(heatmap.prediction, "logits");
        assert_eq!(heatmap.map.dims(), &[2, 96, 96]);
        assert_eq!(heatmap.layers.len(), 1);
        assert_eq!(heatmap.layers[0].name, "layer4");
        let probabilities = candle_nn::ops::softmax_last_dim(&logits)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for i in 0..2 {
            let k = class.unwrap_or(predicted[i] as usize);
            assert_eq!(heatmap.classes[i], k);
            assert!((heatmap.probabilities[i] - probabilities[i][k]).abs() < 1e-6);
            let wk = weight.i(k).unwrap().reshape((c, 1, 1)).unwrap();
            let reference = a
                .i(i)
                .unwrap()
                .broadcast_mul(&wk)
                .unwrap()
                .sum(0)
                .unwrap()
                .affine(1.0 / (h * w) as f64, 0.0)
                .unwrap()
                .relu()
                .unwrap();
            let cam = heatmap.layers[0].cam.i(i).unwrap();
            let scale = reference
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap()
                .max(1)
                .unwrap();
            let scale = scale.to_vec1::<f32>().unwrap()[0].max(1e-6);
            assert!(
                max_abs_diff(&cam, &reference) <= 1e-5 * scale.max(1.0),
                "image {i} class {k}: {cam} vs {reference}"
            );
            assert!(
                sum(&reference) > 0.0,
                "a CAM that is all zero tests nothing"
            );
            // Class score per pixel: the heatmap sums to the CAM's cells.
            let mass = sum(&heatmap.map.i(i).unwrap());
            assert!(
                (mass - sum(&cam)).abs() <= 1e-4 * sum(&cam),
                "{mass} vs {}",
                sum(&cam)
            );
        }
    }
}

fn tiny_pmg() -> Pmg {
    let options = PmgOptions {
        feature_size: 8,
        block_channels: Some(12),
        ..PmgOptions::default()
    };
    Pmg::new(&resnet(8), options, 3, store(5)).unwrap()
}

/// Grad-CAM's channel weight is the spatial mean of the gradient, `alpha_k = (1 / hw) d/de y(A + e 1_k)`:
/// a central difference of the heads' class score when channel k of one map is shifted, through PMG's
/// blocks, max pools, BatchNorms and ELU classifiers. Each prediction reads the stages its heads read.
#[test]
fn pmg_grad_cam_matches_finite_differences_on_every_stage() {
    let pmg = tiny_pmg();
    let x = images(2, 64, 2);
    let taps = pmg.taps(&x).unwrap();
    let maps: Vec<Tensor> = taps.maps.iter().map(|m| m.map.clone()).collect();
    let names: Vec<&str> = taps.maps.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["layer2", "layer3", "layer4"]);
    let ex = explain::explain(&pmg, &x, None).unwrap();
    let predictions: Vec<&str> = ex.heatmaps.iter().map(|h| h.prediction.as_str()).collect();
    assert_eq!(
        predictions,
        [
            "combined",
            "classifier1",
            "classifier2",
            "classifier3",
            "concat"
        ]
    );
    let reads = |p: &str| -> Vec<String> {
        ex.heatmaps
            .iter()
            .find(|h| h.prediction == p)
            .unwrap()
            .layers
            .iter()
            .map(|l| l.name.clone())
            .collect()
    };
    assert_eq!(reads("classifier2"), ["layer3"]);
    assert_eq!(reads("concat"), ["layer2", "layer3", "layer4"]);
    assert_eq!(reads("combined"), ["layer2", "layer3", "layer4"]);

    let eps = 1e-2;
    // A class whose score falls with every channel has an all-zero CAM, which tests nothing: every class
    // is explained and the non-zero ones compared.
    let mut compared = 0;
    for class in 0..3 {
        let ex = explain::explain(&pmg, &x, Some(class)).unwrap();
        let score = |maps: &[Tensor], prediction: &str| -> Vec<f64> {
            let p = pmg.heads(maps).unwrap();
            p.get(prediction)
                .unwrap()
                .i((.., class))
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        for prediction in ["concat", "classifier2"] {
            let heatmap = ex
                .heatmaps
                .iter()
                .find(|h| h.prediction == prediction)
                .unwrap();
            for layer in &heatmap.layers {
                let m = names.iter().position(|n| *n == layer.name).unwrap();
                let (n, c, h, w) = maps[m].dims4().unwrap();
                let mut alpha = vec![vec![0f64; c]; n];
                for k in 0..c {
                    let shifted = |e: f64| -> Vec<Tensor> {
                        let mut mask = vec![0f32; c];
                        mask[k] = e as f32;
                        let shift = Tensor::from_vec(mask, (1, c, 1, 1), &Device::Cpu).unwrap();
                        let mut out = maps.clone();
                        out[m] = maps[m].broadcast_add(&shift).unwrap();
                        out
                    };
                    let (up, down) = (
                        score(&shifted(eps), prediction),
                        score(&shifted(-eps), prediction),
                    );
                    for i in 0..n {
                        alpha[i][k] = (up[i] - down[i]) / (2.0 * eps) / (h * w) as f64;
                    }
                }
                let a = maps[m].to_dtype(DType::F64).unwrap();
                for (i, alpha_i) in alpha.iter().enumerate() {
                    let alpha_i =
                        Tensor::from_vec(alpha_i.clone(), (c, 1, 1), &Device::Cpu).unwrap();
                    let reference = a
                        .i(i)
                        .unwrap()
                        .broadcast_mul(&alpha_i)
                        .unwrap()
                        .sum(0)
                        .unwrap()
                        .relu()
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap();
                    let cam = layer.cam.i(i).unwrap();
                    let top = reference
                        .flatten_all()
                        .unwrap()
                        .max(0)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    let diff = max_abs_diff(&cam, &reference);
                    if top == 0.0 {
                        assert_eq!(
                            diff, 0.0,
                            "{prediction}/{} image {i} class {class}",
                            layer.name
                        );
                        continue;
                    }
                    compared += 1;
                    assert!(
                    diff <= 2e-2 * top,
                    "{prediction}/{} image {i} class {class}: Grad-CAM {cam} vs finite differences {reference}",
                    layer.name
                );
                }
            }
        }
    }
    // 3 classes x 2 images x 4 (prediction, layer) pairs; most CAMs are not all zero.
    assert!(compared >= 12, "only {compared} non-zero CAMs compared");
}

/// A configuration of `method`'s synthetic preset at toy widths.
fn preset(file: &str, extra: &[&str]) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(file);
    let mut sets: Vec<String> = ["model.base_width=4", "data.synthetic.classes=3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::load(&path, &sets).unwrap()
}

/// Every built-in method: one heatmap per named prediction, in `predict`'s order, input-sized, finite and
/// non-negative; the heads run from the taps give `predict`'s logits; the method's own panels; and a rendered
/// row with one panel each.
#[test]
fn every_method_explains_each_named_prediction_with_its_panels() {
    let small = [
        "method.options.feature_size=8",
        "method.options.block_channels=8",
    ];
    let cases: Vec<(Config, Vec<&str>)> = vec![
        (preset("synthetic-baseline.toml", &[]), vec![]),
        (preset("pmg-synthetic.toml", &small), vec![]),
        (preset("rmg-pmsi-synthetic.toml", &small), vec![]),
        (preset("dcl-synthetic.toml", &[]), vec!["alignment"]),
        (
            preset(
                "dcl-synthetic.toml",
                &[
                    "method.options.location=\"paper\"",
                    "method.options.law=\"exact\"",
                ],
            ),
            vec!["alignment row", "alignment column"],
        ),
        (
            preset("dcl-synthetic.toml", &["method.options.gamma=0.0"]),
            vec![],
        ),
        (
            preset(
                "coarse2fine-synthetic.toml",
                &["method.options.num_attentions=4"],
            ),
            vec![
                "attention mean",
                "attention #1",
                "attention #2",
                "attention #3",
                "region",
                "zoom box",
                "zoomed",
            ],
        ),
    ];
    let x = images(2, 64, 3);
    for (config, panels) in cases {
        let method = build_method(&config, 3, &Device::Cpu).unwrap();
        let name = method.name().to_string();
        let predicted = method.predict(&x).unwrap();
        let explainer = method.explain().unwrap();
        let taps = explainer.taps(&x).unwrap();
        let maps: Vec<Tensor> = taps.maps.iter().map(|m| m.map.clone()).collect();
        let from_taps = explainer.heads(&maps).unwrap();
        let ex = explain::explain(&*method, &x, None).unwrap();
        assert_eq!(ex.method, name);
        assert_eq!(ex.heatmaps.len(), predicted.heads.len(), "{name}");
        for ((heatmap, (pname, logits)), (tname, tlogits)) in ex
            .heatmaps
            .iter()
            .zip(&predicted.heads)
            .zip(&from_taps.heads)
        {
            assert_eq!((&heatmap.prediction, tname), (pname, pname), "{name}");
            assert!(
                max_abs_diff(logits, tlogits) < 1e-5,
                "{name}/{pname}: heads from taps differ"
            );
            assert_eq!(heatmap.map.dims(), &[2, 64, 64], "{name}/{pname}");
            let values = heatmap.map.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                values.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{name}/{pname}"
            );
            assert!(!heatmap.layers.is_empty(), "{name}/{pname} reads no map");
            let argmax: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
            let classes: Vec<usize> = argmax.iter().map(|&c| c as usize).collect();
            assert_eq!(heatmap.classes, classes, "{name}/{pname}");
        }
        let got: Vec<&str> = ex.panels.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(got, panels, "{name}");

        let (row, infos) =
            explain::render_image(&ex, &x, &Normalize::HALF, 1, &RenderOptions::default()).unwrap();
        assert_eq!(
            infos.len(),
            1 + ex.heatmaps.len() + ex.panels.len(),
            "{name}"
        );
        assert_eq!(infos[0].kind, PanelKind::Input);
        assert_eq!(row.height(), 128, "64 px panels are shown at 128");
        assert_eq!(
            row.width(),
            infos.len() as u32 * 128 + 4 * (infos.len() as u32 - 1)
        );
        for (info, heatmap) in infos[1..].iter().zip(&ex.heatmaps) {
            assert_eq!(info.kind, PanelKind::GradCam);
            assert_eq!(info.name, heatmap.prediction);
            assert_eq!(info.class, Some(heatmap.classes[1]));
        }
        for (i, info) in infos.iter().enumerate() {
            assert_eq!(info.x, i as u32 * 132);
        }
        let grid = explain::render_panels(
            &*method,
            &x,
            &Normalize::HALF,
            Some(0),
            &RenderOptions::default(),
        )
        .unwrap();
        assert_eq!((grid.width(), grid.height()), (row.width(), 2 * 128 + 4));
    }
}

/// Coarse2Fine's `fine` reads the zoomed image: its heatmap lies inside the zoom box and keeps the CAM's mass
/// when the box is inside the image; `combined` reads both passes.
#[test]
fn coarse2fine_fine_heatmap_lies_in_the_zoom_box() {
    let config = preset(
        "coarse2fine-synthetic.toml",
        &[
            "method.options.num_attentions=4",
            "method.options.min_zoom=0.5",
        ],
    );
    let method = build_method(&config, 3, &Device::Cpu).unwrap();
    let x = images(2, 64, 4);
    let mut checked = 0;
    for class in 0..3 {
        let ex = explain::explain(&*method, &x, Some(class)).unwrap();
        let layers = |p: &str| -> Vec<String> {
            let h = ex.heatmaps.iter().find(|h| h.prediction == p).unwrap();
            h.layers.iter().map(|l| l.name.clone()).collect()
        };
        assert_eq!(layers("coarse"), ["layer4"]);
        assert_eq!(layers("fine"), ["zoom layer4"]);
        assert_eq!(layers("combined"), ["layer4", "zoom layer4"]);
        let boxes = ex
            .panels
            .iter()
            .find_map(|p| match &p.content {
                PanelContent::Boxes(b) => Some(b.to_vec2::<f32>().unwrap()),
                _ => None,
            })
            .unwrap();
        let fine = ex.heatmaps.iter().find(|h| h.prediction == "fine").unwrap();
        for (i, b) in boxes.iter().enumerate() {
            let [y0, x0, y1, x1] = [b[0], b[1], b[2], b[3]];
            assert!(y1 - y0 >= 31.0 && x1 - x0 >= 31.0, "min_zoom 0.5: {b:?}");
            let map = fine.map.i(i).unwrap().to_vec2::<f32>().unwrap();
            let (mut inside, mut outside) = (0f32, 0f32);
            for (y, row) in map.iter().enumerate() {
                for (x, v) in row.iter().enumerate() {
                    let (cy, cx) = (y as f32 + 0.5, x as f32 + 0.5);
                    if cy > y0 - 1.0 && cy < y1 + 1.0 && cx > x0 - 1.0 && cx < x1 + 1.0 {
                        inside += v;
                    } else {
                        outside += v;
                    }
                }
            }
            let cam = sum(&fine.layers[0].cam.i(i).unwrap());
            if cam == 0.0 {
                assert_eq!(inside + outside, 0.0);
                continue;
            }
            checked += 1;
            assert!(
                outside <= 1e-6 * inside,
                "image {i}: {outside} outside the box {b:?}"
            );
            let within = y0 >= 0.0 && x0 >= 0.0 && y1 <= 64.0 && x1 <= 64.0;
            let tolerance = if within { 0.02 } else { 1.0 };
            assert!(
                inside <= cam * 1.02 && inside >= cam * (1.0 - tolerance),
                "{inside} vs {cam}"
            );
        }
    }
    assert!(checked >= 2, "only {checked} non-zero fine CAMs");
}

#[test]
fn a_class_out_of_range_is_an_error_naming_the_range() {
    let method = Baseline::new(&resnet(4), 3, store(1)).unwrap();
    let x = images(1, 64, 5);
    let err = explain::explain(&method, &x, Some(3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("class 3 is out of range") && err.contains("3 classes (0..=2)"),
        "{err}"
    );
    let err = explain::render_panels(
        &method,
        &x,
        &Normalize::HALF,
        Some(7),
        &RenderOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("class 7 is out of range"), "{err}");
    assert!(explain::explain(&method, &x, Some(2)).is_ok());
}

/// A method that does not implement `Explain` (as one registered from outside may not).
struct Opaque {
    store: ParamStore,
}

impl Method for Opaque {
    fn name(&self) -> &str {
        "opaque"
    }
    fn store(&self) -> &ParamStore {
        &self.store
    }
    fn train_step(&mut self, _: &Batch, _: &mut StepContext<'_>) -> fgvc_train::Result<StepStats> {
        Ok(StepStats::default())
    }
    fn predict(&self, images: &Tensor) -> fgvc_train::Result<Predictions> {
        Ok(Predictions::single("mean", images.mean((2, 3))?))
    }
}

#[test]
fn a_method_without_grad_cam_support_is_named_in_the_error() {
    let method = Opaque { store: store(0) };
    let err = explain::explain(&method, &images(1, 32, 0), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"opaque\" is not explainable"), "{err}");
}

/// Grad-CAM at a named stage: at the deepest stage the baseline's heatmap is the default one; at `layer3`
/// PMG's predictions that read `layer3` or later get their CAM there and `classifier1` (on `layer2`) none; an
/// unknown stage is an error listing the stages.
#[test]
fn grad_cam_at_a_chosen_stage() {
    let method = Baseline::new(&resnet(8), 3, store(3)).unwrap();
    let x = images(2, 64, 6);
    let at = |layer: &str| explain::ExplainOptions {
        class: Some(1),
        layer: Some(layer.into()),
    };
    let default = explain::explain(&method, &x, Some(1)).unwrap();
    let deepest = explain::explain_with(&method, &x, &at("layer4")).unwrap();
    assert_eq!(deepest.heatmaps[0].layers[0].name, "layer4");
    assert!(max_abs_diff(&default.heatmaps[0].map, &deepest.heatmaps[0].map) < 1e-6);
    let shallow = explain::explain_with(&method, &x, &at("layer2")).unwrap();
    assert_eq!(shallow.heatmaps[0].layers[0].name, "layer2");
    assert_eq!(shallow.heatmaps[0].layers[0].cam.dims(), &[2, 8, 8]);
    assert_eq!(
        shallow.heatmaps[0].probabilities,
        default.heatmaps[0].probabilities
    );

    let pmg = tiny_pmg();
    let ex = explain::explain_with(&pmg, &x, &at("layer3")).unwrap();
    let reads = |p: &str| -> Vec<String> {
        let h = ex.heatmaps.iter().find(|h| h.prediction == p).unwrap();
        h.layers.iter().map(|l| l.name.clone()).collect()
    };
    assert!(reads("classifier1").is_empty());
    assert_eq!(reads("classifier2"), ["layer3"]);
    assert_eq!(reads("classifier3"), ["layer3"]);
    assert_eq!(reads("concat"), ["layer3"]);

    let err = explain::explain_with(&method, &x, &at("layer9"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown layer \"layer9\"")
            && err.contains("stem, layer1, layer2, layer3, layer4"),
        "{err}"
    );
}
