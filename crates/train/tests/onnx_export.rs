//! The exported ONNX graphs, run by tract (a pure-Rust ONNX runtime), give every named prediction of
//! `Method::predict` within 1e-4, for every backbone and every method, at two input sizes and batches of
//! one and two images (the batch dimension is dynamic). BatchNorm statistics and affine parameters are
//! set to random values first, so that the folding of BatchNorm into the convs is really exercised.

use candle_core::{Device, Tensor};
use fgvc_data::Batch;
use fgvc_ops::ParamStore;
use fgvc_train::export::{onnx_graph, INPUT};
use fgvc_train::registry::build_method;
use fgvc_train::{Config, Method, Predictions, StepContext, StepStats};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::prelude::*;

const CLASSES: usize = 3;

/// Every BatchNorm's running statistics, weight and bias set to seeded random values; returns how many
/// BatchNorms there are.
fn perturb_batch_norms(store: &ParamStore, seed: u64) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw = |v: &candle_core::Var, lo: f32, hi: f32| {
        let values: Vec<f32> = (0..v.elem_count())
            .map(|_| lo + (hi - lo) * rng.random::<f32>())
            .collect();
        let t = Tensor::from_vec(values, v.shape(), &Device::Cpu).unwrap();
        v.set(&t).unwrap();
    };
    let mut changed = 0;
    for (name, var) in store.all() {
        let Some(prefix) = name.strip_suffix(".running_mean") else {
            continue;
        };
        draw(&var, -0.2, 0.2);
        draw(
            &store.get(&format!("{prefix}.running_var")).unwrap(),
            0.5,
            2.0,
        );
        if let Some(w) = store.get(&format!("{prefix}.weight")) {
            draw(&w, 0.5, 1.5);
        }
        if let Some(b) = store.get(&format!("{prefix}.bias")) {
            draw(&b, -0.2, 0.2);
        }
        changed += 1;
    }
    changed
}

fn images(n: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * 3 * h * w)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect()
}

/// Exports `method` at `h` x `w`, runs the graph with tract on batches of 1 and 2 and compares every output
/// with `predict`.
fn check_method(method: &dyn Method, h: usize, w: usize, what: &str) {
    let (g, outputs) = onnx_graph(method, h, w).unwrap_or_else(|e| panic!("{what}: {e}"));
    let model = g.finish(&fgvc_onnx::ModelInfo::new("fgvc", "test"));
    let bytes = fgvc_onnx::encode(&model);
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("{what} at {h}x{w}: tract: {e:?}"));
    for n in [1, 2] {
        let data = images(n, h, w, (n * h * w) as u64);
        let x = Tensor::from_vec(data.clone(), (n, 3, h, w), &Device::Cpu).unwrap();
        let Predictions { heads } = method.predict(&x).unwrap();
        let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = heads.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names, want,
            "{what}: the outputs are the predictions, in order"
        );
        let input = tract_ndarray::Array4::from_shape_vec((n, 3, h, w), data).unwrap();
        let got = plan
            .run(tvec!(tract_onnx::prelude::Tensor::from(input).into()))
            .unwrap_or_else(|e| panic!("{what} at {h}x{w}, batch {n}: tract: {e:?}"));
        assert_eq!(got.len(), heads.len());
        for ((name, reference), value) in heads.iter().zip(got.iter()) {
            let reference = reference.to_vec2::<f32>().unwrap();
            let view = value.to_array_view::<f32>().unwrap();
            assert_eq!(view.shape(), &[n, reference[0].len()], "{what} {name}");
            let scale = reference.iter().flatten().fold(1f32, |m, v| m.max(v.abs()));
            let diff = reference
                .iter()
                .flatten()
                .zip(view.iter())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-4 * scale,
                "{what} at {h}x{w}, batch {n}, {name}: max difference {diff} (scale {scale})"
            );
        }
    }
}

/// Builds the method of `toml` (untrained, seed fixed), perturbs its BatchNorms and checks it at `sizes`.
fn check(toml: &str, sizes: &[(usize, usize)]) {
    let config = Config::parse(toml, "onnx-test.toml", &[]).unwrap();
    let method = build_method(&config, CLASSES, &Device::Cpu).unwrap();
    let batch_norms = perturb_batch_norms(method.store(), 7);
    // Every model but the plain VGG-16 baseline has BatchNorms to fold.
    assert_eq!(
        batch_norms == 0,
        toml.contains("\"vgg16\"\n[method]\nname = \"baseline\"")
    );
    for &(h, w) in sizes {
        check_method(&*method, h, w, &format!("{toml:?}"));
    }
}

fn baseline(model: &str) -> String {
    format!("seed = 3\n[data]\ncrop = 48\n[model]\n{model}\n[method]\nname = \"baseline\"\n")
}

#[test]
fn resnet18_narrow() {
    check(
        &baseline("backbone = \"resnet18\"\nbase_width = 4"),
        &[(32, 32), (48, 40)],
    );
}

#[test]
fn resnet50_bottleneck_narrow() {
    check(
        &baseline("backbone = \"resnet50\"\nbase_width = 4"),
        &[(32, 32), (40, 48)],
    );
}

#[test]
fn vgg16() {
    check(&baseline("backbone = \"vgg16\""), &[(32, 32), (48, 48)]);
}

#[test]
fn vgg16_bn() {
    check(&baseline("backbone = \"vgg16_bn\""), &[(32, 32), (48, 32)]);
}

#[test]
fn mobilenet_v2_narrow() {
    check(
        &baseline("backbone = \"mobilenet_v2\"\nwidth_mult = 0.25"),
        &[(32, 32), (48, 48)],
    );
    check(
        &baseline("backbone = \"mobilenet_v2\"\nwidth_mult = 0.35\nfirst_stride = 1"),
        &[(32, 32)],
    );
}

const RESNET_TINY: &str = "[model]\nbackbone = \"resnet18\"\nbase_width = 4\n";

#[test]
fn pmg_heads() {
    let toml = format!(
        "seed = 1\n[data]\ncrop = 64\n{RESNET_TINY}[method]\nname = \"pmg\"\n[method.options]\n\
         feature_size = 8\nblock_channels = 6\n"
    );
    check(&toml, &[(32, 32), (48, 48)]);
}

#[test]
fn rmg_pmsi_heads_on_mobilenet() {
    let toml = "seed = 2\n[data]\ncrop = 64\n[model]\nbackbone = \"mobilenet_v2\"\nwidth_mult = 0.25\n\
                [method]\nname = \"rmg-pmsi\"\n[method.options]\nfeature_size = 8\nblock_channels = 6\n";
    check(toml, &[(32, 32), (40, 40)]);
}

#[test]
fn dcl_heads_official_and_binary() {
    for options in [
        "grid = 2\nk = 1\n",
        "grid = 2\nk = 1\nswap = \"binary\"\nprediction = \"official\"\n",
    ] {
        let toml = format!(
            "seed = 4\n[data]\ncrop = 64\n{RESNET_TINY}[method]\nname = \"dcl\"\n[method.options]\n{options}"
        );
        check(&toml, &[(64, 64), (128, 128)]);
    }
}

#[test]
fn coarse2fine_heads_with_the_zoom() {
    let toml = format!(
        "seed = 5\n[data]\ncrop = 64\n{RESNET_TINY}[method]\nname = \"coarse2fine\"\n[method.options]\n\
         num_attentions = 4\nreduce_channels = 2\nhidden_channels = 4\n"
    );
    check(&toml, &[(32, 32), (48, 40)]);
}

/// A method registered from outside the crate, without an export.
struct Opaque(ParamStore);

impl Method for Opaque {
    fn name(&self) -> &str {
        "opaque"
    }
    fn store(&self) -> &ParamStore {
        &self.0
    }
    fn train_step(&mut self, _: &Batch, _: &mut StepContext<'_>) -> fgvc_train::Result<StepStats> {
        Ok(StepStats::default())
    }
    fn predict(&self, images: &Tensor) -> fgvc_train::Result<Predictions> {
        Ok(Predictions::single("logits", images.flatten_from(1)?))
    }
}

#[test]
fn a_method_without_an_export_is_named_in_the_error() {
    let method = Opaque(ParamStore::new(0, candle_core::DType::F32, &Device::Cpu));
    let err = onnx_graph(&method, 8, 8).err().unwrap().to_string();
    assert_eq!(
        err,
        "cannot export to ONNX: the method \"opaque\" has no ONNX export (it does not implement Method::export)"
    );
    // And an export size of zero is refused before anything is built.
    let err = onnx_graph(&method, 0, 8).err().unwrap().to_string();
    assert!(err.contains("0x8"), "{err}");
    assert_eq!(INPUT, "images");
}

/// A backbone with its own classifier (not how the methods use them): VGG-16-BN's pool5, adaptive 7x7
/// pool (overlapping windows, exported as averaging matrices), 4096-style hidden layers and `classifier.6`.
#[test]
fn vgg16_bn_with_its_classifier() {
    use fgvc_backbone::{Backbone, Vgg, VggConfig};
    let store = ParamStore::new(11, candle_core::DType::F32, &Device::Cpu);
    let cfg = VggConfig {
        hidden: 16,
        ..VggConfig::vgg16(true, Some(CLASSES))
    };
    let net = Vgg::new(cfg, &store.root()).unwrap();
    perturb_batch_norms(&store, 3);
    for (h, w) in [(32, 32), (64, 48)] {
        let mut g = fgvc_onnx::Graph::new("vgg");
        let x = g
            .input(
                INPUT,
                vec![fgvc_onnx::Dim::symbol("N"), 3.into(), h.into(), w.into()],
            )
            .unwrap();
        let pooled = net.export_features(&mut g, &x).unwrap();
        let logits = net.export_classify(&mut g, &pooled).unwrap().unwrap();
        g.output("logits", &logits).unwrap();
        let bytes = fgvc_onnx::encode(&g.finish(&fgvc_onnx::ModelInfo::new("fgvc", "test")));
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_runnable())
            .unwrap();
        let data = images(2, h, w, 9);
        let xt = Tensor::from_vec(data.clone(), (2, 3, h, w), &Device::Cpu).unwrap();
        let want = Backbone::forward_t(&net, &xt, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let input = tract_ndarray::Array4::from_shape_vec((2, 3, h, w), data).unwrap();
        let got = plan
            .run(tvec!(tract_onnx::prelude::Tensor::from(input).into()))
            .unwrap();
        let got = got[0].to_array_view::<f32>().unwrap();
        let scale = want.iter().flatten().fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in want.iter().flatten().zip(got.iter()) {
            assert!((a - b).abs() <= 1e-4 * scale, "{h}x{w}: {a} vs {b}");
        }
    }
}
