//! Structure and behaviour: torchvision's names and shapes, seeded initialisation, stage geometry on
//! arbitrary inputs, headless models, training mode (running statistics, dropout, gradients).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use fgvc_backbone::{
    build, Backbone, BackboneKind, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig, Vgg,
    VggConfig,
};
use fgvc_ops::ParamStore;

fn store(seed: u64) -> ParamStore {
    ParamStore::new(seed, DType::F32, &Device::Cpu)
}

/// `name -> "AxBxC"` from a `fixtures/names_*.txt` file written by gen_fixtures.py from torchvision.
fn torchvision_names(model: &str) -> Result<BTreeMap<String, String>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/names_{model}.txt"));
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect())
}

fn ours(store: &ParamStore) -> BTreeMap<String, String> {
    store
        .all()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                v.dims()
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x"),
            )
        })
        .collect()
}

fn same_names(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>) -> Result<()> {
    let missing: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    Ok(())
}

#[test]
fn names_and_shapes_match_torchvision_state_dicts() -> Result<()> {
    // Full width: every name and shape.
    let s = store(0);
    ResNet::resnet18(Some(1000), &s.root())?;
    assert_eq!(ours(&s), torchvision_names("resnet18")?);
    let s = store(0);
    MobileNetV2::new(MobileNetV2Config::default(), &s.root())?;
    assert_eq!(ours(&s), torchvision_names("mobilenet_v2")?);
    let s = store(0);
    MobileNetV2::new(
        MobileNetV2Config {
            width_mult: 0.35,
            num_classes: Some(7),
            ..Default::default()
        },
        &s.root(),
    )?;
    assert_eq!(ours(&s), torchvision_names("mobilenet_v2_w035")?);
    // Deeper ResNets at a reduced width (their full-width shapes are exercised by the parity tests): names.
    for (model, cfg) in [
        ("resnet34", ResNetConfig::resnet34(Some(1000))),
        ("resnet50", ResNetConfig::resnet50(Some(1000))),
        ("resnet101", ResNetConfig::resnet101(Some(1000))),
    ] {
        let s = store(0);
        ResNet::new(
            ResNetConfig {
                base_width: 4,
                ..cfg
            },
            &s.root(),
        )?;
        same_names(&ours(&s), &torchvision_names(model)?).with_context(|| model.to_string())?;
    }
    // VGG with a 64-wide classifier: the names, and the shapes once 4096 reads 64.
    for (model, bn) in [("vgg16", false), ("vgg16_bn", true)] {
        let s = store(0);
        Vgg::new(
            VggConfig {
                hidden: 64,
                ..VggConfig::vgg16(bn, Some(1000))
            },
            &s.root(),
        )?;
        let theirs: BTreeMap<_, _> = torchvision_names(model)?
            .into_iter()
            .map(|(n, sh)| (n, sh.replace("4096", "64")))
            .collect();
        assert_eq!(ours(&s), theirs, "{model}");
    }
    Ok(())
}

fn values(s: &ParamStore) -> Vec<(String, Vec<f32>)> {
    s.all()
        .into_iter()
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
}

#[test]
fn initialisation_is_reproducible_from_the_seed() -> Result<()> {
    fn resnet(s: &ParamStore) -> Result<()> {
        let cfg = ResNetConfig {
            base_width: 8,
            ..ResNetConfig::resnet50(Some(5))
        };
        ResNet::new(cfg, &s.root())?;
        Ok(())
    }
    fn vgg(s: &ParamStore) -> Result<()> {
        Vgg::new(
            VggConfig {
                hidden: 32,
                ..VggConfig::vgg16(true, Some(5))
            },
            &s.root(),
        )?;
        Ok(())
    }
    fn mobilenet(s: &ParamStore) -> Result<()> {
        let cfg = MobileNetV2Config {
            width_mult: 0.25,
            num_classes: Some(5),
            ..Default::default()
        };
        MobileNetV2::new(cfg, &s.root())?;
        Ok(())
    }
    type Make = fn(&ParamStore) -> Result<()>;
    let builders: [(&str, Make); 3] = [("resnet", resnet), ("vgg", vgg), ("mobilenet", mobilenet)];
    for (what, make) in builders {
        let (a, b, c) = (store(7), store(7), store(8));
        make(&a)?;
        make(&b)?;
        make(&c)?;
        let (va, vb, vc) = (values(&a), values(&b), values(&c));
        assert_eq!(va, vb, "{what}: same seed, different weights");
        // Every randomly initialised tensor changes with the seed; constant ones (BN, zero biases) do not.
        let differing = va.iter().zip(&vc).filter(|(x, y)| x.1 != y.1).count();
        let random = va
            .iter()
            .filter(|(_, v)| v.iter().any(|x| *x != v[0]))
            .count();
        assert!(random > 10, "{what}: only {random} random tensors");
        assert_eq!(
            differing, random,
            "{what}: a different seed must change every random tensor"
        );
    }
    Ok(())
}

fn std_of(v: &[f32]) -> f64 {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt()
}

fn tensor(s: &ParamStore, name: &str) -> Vec<f32> {
    s.get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn initialisation_follows_torchvision() -> Result<()> {
    let s = store(1);
    ResNet::resnet18(Some(10), &s.root())?;
    // kaiming_normal_(fan_out): layer1.0.conv1 is 64x64x3x3, fan_out = 576.
    let w = tensor(&s, "layer1.0.conv1.weight");
    let want = (2.0f64 / 576.0).sqrt();
    assert!(
        (std_of(&w) / want - 1.0).abs() < 0.03,
        "std {} vs {want}",
        std_of(&w)
    );
    assert!(tensor(&s, "layer2.1.bn2.weight").iter().all(|&x| x == 1.0));
    assert!(tensor(&s, "layer2.1.bn2.bias").iter().all(|&x| x == 0.0));
    assert!(tensor(&s, "bn1.running_var").iter().all(|&x| x == 1.0));
    // fc keeps PyTorch's Linear default: U(+-1/sqrt(512)) bias, kaiming-uniform(a = sqrt 5) weight.
    let bound = 1.0 / 512f32.sqrt();
    let fc_b = tensor(&s, "fc.bias");
    assert!(fc_b.iter().all(|x| x.abs() <= bound) && fc_b.iter().any(|&x| x != 0.0));
    assert!(tensor(&s, "fc.weight").iter().all(|x| x.abs() <= bound));

    let s = store(1);
    Vgg::new(
        VggConfig {
            hidden: 256,
            ..VggConfig::vgg16(false, Some(10))
        },
        &s.root(),
    )?;
    assert!(tensor(&s, "features.28.bias").iter().all(|&x| x == 0.0));
    let w = tensor(&s, "features.28.weight"); // 512x512x3x3, fan_out 4608
    assert!((std_of(&w) / (2.0f64 / 4608.0).sqrt() - 1.0).abs() < 0.03);
    let w = tensor(&s, "classifier.3.weight");
    assert!(
        (std_of(&w) / 0.01 - 1.0).abs() < 0.03,
        "linear std {}",
        std_of(&w)
    );
    assert!(tensor(&s, "classifier.6.bias").iter().all(|&x| x == 0.0));

    let s = store(1);
    MobileNetV2::new(MobileNetV2Config::default(), &s.root())?;
    let w = tensor(&s, "features.17.conv.1.0.weight"); // depthwise 960x1x3x3, fan_out 8640
    assert!((std_of(&w) / (2.0f64 / 8640.0).sqrt() - 1.0).abs() < 0.05);
    assert!((std_of(&tensor(&s, "classifier.1.weight")) / 0.01 - 1.0).abs() < 0.03);
    assert!(tensor(&s, "classifier.1.bias").iter().all(|&x| x == 0.0));
    Ok(())
}

/// torchvision's output size of a conv/pool.
fn out(i: usize, k: usize, s: usize, p: usize) -> usize {
    (i + 2 * p - k) / s + 1
}

#[test]
fn stages_follow_the_input_size_even_non_square() -> Result<()> {
    let dev = Device::Cpu;
    let (h, w) = (45, 61);
    let x = Tensor::ones((1, 3, h, w), DType::F32, &dev)?;

    let s = store(0);
    let net = ResNet::new(
        ResNetConfig {
            base_width: 4,
            ..ResNetConfig::resnet50(Some(3))
        },
        &s.root(),
    )?;
    let st = net.forward_stages(&x, false)?;
    // conv1 7x7/2 p3, maxpool 3/2 p1, then 3x3/2 p1 convs in layer2..4.
    let mut hw = [out(out(h, 7, 2, 3), 3, 2, 1), out(out(w, 7, 2, 3), 3, 2, 1)];
    for (i, t) in st.iter().enumerate() {
        if i >= 2 {
            hw = [out(hw[0], 3, 2, 1), out(hw[1], 3, 2, 1)];
        }
        assert_eq!(
            t.dims(),
            &[1, net.stage_channels()[i], hw[0], hw[1]],
            "resnet stage {i}"
        );
    }
    assert_eq!(net.forward_t(&x, false)?.dims(), &[1, 3]);

    let s = store(0);
    let net = Vgg::new(
        VggConfig {
            hidden: 16,
            ..VggConfig::vgg16(true, Some(3))
        },
        &s.root(),
    )?;
    let st = net.forward_stages(&x, false)?;
    let mut hw = [h, w];
    for (i, t) in st.iter().enumerate() {
        assert_eq!(
            t.dims(),
            &[1, net.stage_channels()[i], hw[0], hw[1]],
            "vgg stage {i}"
        );
        hw = [hw[0] / 2, hw[1] / 2];
    }
    // pool5 gives 1x1 here; AdaptiveAvgPool2d(7) replicates it into 49 cells.
    assert_eq!(net.pool(&st[4], false)?.dims(), &[1, 16]);
    assert_eq!(net.forward_t(&x, false)?.dims(), &[1, 3]);

    for first_stride in [1, 2] {
        let s = store(0);
        let cfg = MobileNetV2Config {
            width_mult: 0.25,
            first_stride,
            num_classes: Some(3),
            dropout: 0.2,
        };
        let net = MobileNetV2::new(cfg, &s.root())?;
        let st = net.forward_stages(&x, false)?;
        let mut hw = [out(h, 3, first_stride, 1), out(w, 3, first_stride, 1)];
        for (i, t) in st.iter().enumerate() {
            if i >= 1 {
                hw = [out(hw[0], 3, 2, 1), out(hw[1], 3, 2, 1)];
            }
            assert_eq!(
                t.dims(),
                &[1, net.stage_channels()[i], hw[0], hw[1]],
                "mobilenet s{first_stride} stage {i}"
            );
        }
        assert_eq!(
            net.stage_strides(),
            (0..5).map(|i| first_stride << i).collect::<Vec<_>>()
        );
    }
    Ok(())
}

#[test]
fn headless_backbones_have_no_classifier() -> Result<()> {
    let x = Tensor::ones((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
    let s = store(0);
    let net = ResNet::new(
        ResNetConfig {
            base_width: 4,
            ..ResNetConfig::resnet18(None)
        },
        &s.root(),
    )?;
    assert!(s.names().iter().all(|n| !n.starts_with("fc.")));
    assert_eq!(net.features(&x, false)?.dims(), &[2, 32]);
    assert!(net.classify(&net.features(&x, false)?, false)?.is_none());
    assert!(net.forward_t(&x, false).is_err());
    assert_eq!(net.num_classes(), None);

    let s = store(0);
    let net = Vgg::vgg16(false, None, &s.root())?;
    assert!(s.names().iter().all(|n| n.starts_with("features.")));
    assert_eq!(net.num_features(), 512);
    assert_eq!(net.features(&x, false)?.dims(), &[2, 512]);

    let s = store(0);
    let cfg = MobileNetV2Config {
        width_mult: 0.25,
        num_classes: None,
        ..Default::default()
    };
    let net = MobileNetV2::new(cfg, &s.root())?;
    assert!(s.names().iter().all(|n| n.starts_with("features.")));
    assert_eq!(net.features(&x, false)?.dims(), &[2, 1280]);
    Ok(())
}

#[test]
fn build_by_name_gives_working_trait_objects() -> Result<()> {
    let x = Tensor::ones((1, 3, 32, 32), DType::F32, &Device::Cpu)?;
    let expected = [
        (
            "resnet18",
            vec![64, 64, 128, 256, 512],
            vec![4, 4, 8, 16, 32],
            "layer4",
        ),
        (
            "mobilenet_v2",
            vec![16, 24, 32, 96, 1280],
            vec![2, 4, 8, 16, 32],
            "stage5",
        ),
    ];
    for (name, channels, strides, last) in expected {
        let s = store(0);
        let net: Box<dyn Backbone> = build(name.parse::<BackboneKind>()?, Some(4), &s.root())?;
        assert_eq!(net.forward_t(&x, false)?.dims(), &[1, 4]);
        assert_eq!(net.stage_channels(), channels);
        assert_eq!(net.stage_strides(), strides);
        assert_eq!(net.stage_names().last().map(String::as_str), Some(last));
        assert_eq!(net.num_classes(), Some(4));
    }
    Ok(())
}

#[test]
fn training_mode_updates_running_stats_and_reaches_every_parameter() -> Result<()> {
    let s = store(3);
    let net = ResNet::new(
        ResNetConfig {
            base_width: 4,
            ..ResNetConfig::resnet50(Some(3))
        },
        &s.root(),
    )?;
    // A deterministic, non-constant input (candle's CPU randn cannot be seeded).
    let x = Tensor::arange(0f32, (2 * 3 * 32 * 32) as f32, &Device::Cpu)?
        .affine(0.37, 0.)?
        .sin()?
        .reshape((2, 3, 32, 32))?;
    let before = tensor(&s, "layer3.2.bn3.running_mean");
    net.forward_t(&x, false)?;
    assert_eq!(
        tensor(&s, "layer3.2.bn3.running_mean"),
        before,
        "eval must not touch running statistics"
    );
    let loss = net.forward_t(&x, true)?.sqr()?.sum_all()?;
    assert_ne!(
        tensor(&s, "layer3.2.bn3.running_mean"),
        before,
        "training must update running statistics"
    );
    let grads = loss.backward()?;
    for (name, var) in s.trainable() {
        let g = grads
            .get(var.as_tensor())
            .with_context(|| format!("no gradient for {name}"))?;
        ensure!(
            g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0,
            "zero gradient for {name}"
        );
    }
    for (name, var) in s.all().into_iter().filter(|(n, _)| fgvc_ops::is_buffer(n)) {
        ensure!(
            grads.get(var.as_tensor()).is_none(),
            "buffer {name} got a gradient"
        );
    }
    Ok(())
}

#[test]
fn dropout_is_seeded_and_only_active_in_training() -> Result<()> {
    let logits = |seed: u64, train: bool| -> Result<Vec<f32>> {
        let s = store(seed);
        let cfg = MobileNetV2Config {
            width_mult: 0.25,
            num_classes: Some(6),
            dropout: 0.5,
            ..Default::default()
        };
        let net = MobileNetV2::new(cfg, &s.root())?;
        // Same weights for every seed, so only the dropout stream differs.
        for (name, var) in s.all() {
            if name.starts_with("classifier.1.weight") {
                var.set(&Tensor::ones(var.dims(), DType::F32, &Device::Cpu)?)?;
            }
        }
        let pooled = Tensor::ones((4, 1280), DType::F32, &Device::Cpu)?;
        Ok(net
            .classify(&pooled, train)?
            .context("classifier")?
            .flatten_all()?
            .to_vec1()?)
    };
    assert_eq!(logits(1, true)?, logits(1, true)?);
    assert_ne!(logits(1, true)?, logits(2, true)?);
    // Eval: no dropout, every logit is the sum of 1280 ones.
    assert!(logits(1, false)?.iter().all(|&v| v == 1280.0));
    // Train: about half the inputs dropped, the rest doubled, so logits stay near 1280 but differ.
    let t = logits(1, true)?;
    assert!(
        t.iter().any(|&v| v != 1280.0) && t.iter().all(|&v| (v - 1280.0).abs() < 300.0),
        "{t:?}"
    );
    assert!(
        t.iter().all(|&v| v % 2.0 == 0.0),
        "kept inputs are scaled by 1 / (1 - p) = 2: {t:?}"
    );
    Ok(())
}

/// Builds a backbone into a store.
type BuildBackbone = dyn Fn(&ParamStore) -> Result<Box<dyn Backbone>>;

/// One training step of `net` in f64 on a fixed input: logits, every trainable gradient and every stored
/// value afterwards (running statistics included).
fn train_step(
    build: &dyn Fn(&ParamStore) -> Result<Box<dyn Backbone>>,
) -> Result<Vec<(String, Vec<f64>)>> {
    let s = ParamStore::new(9, DType::F64, &Device::Cpu);
    let net = build(&s)?;
    let x = Tensor::arange(0f64, (2 * 3 * 32 * 32) as f64, &Device::Cpu)?
        .affine(0.37, 0.)?
        .sin()?
        .reshape((2, 3, 32, 32))?;
    let y = net.forward_t(&x, true)?;
    let target = Tensor::arange(0f64, y.elem_count() as f64, &Device::Cpu)?
        .cos()?
        .reshape(y.dims())?;
    let grads = (&y * &target)?.sum_all()?.backward()?;
    let mut out = vec![("logits".to_string(), y.flatten_all()?.to_vec1()?)];
    for (name, var) in s.trainable() {
        let g = grads
            .get(var.as_tensor())
            .with_context(|| format!("no gradient for {name}"))?;
        out.push((format!("grad {name}"), g.flatten_all()?.to_vec1()?));
    }
    for (name, var) in s.all() {
        out.push((name, var.as_tensor().flatten_all()?.to_vec1()?));
    }
    Ok(out)
}

/// The composite candle ops that run on CUDA and Metal ([`fgvc_ops::with_composite_ops`]) against the CPU
/// kernels, whole models in f64. Errors are measured against the largest gradient, since some gradients are
/// zero in exact arithmetic (a BatchNorm bias whose output only reaches a training-mode BatchNorm through
/// 1x1 convs) and are rounding noise on both paths.
#[test]
fn composite_path_matches_the_cpu_kernels() -> Result<()> {
    let models: [(&str, Box<BuildBackbone>); 3] = [
        (
            "resnet50 (width 4)",
            Box::new(|s: &ParamStore| {
                let cfg = ResNetConfig {
                    base_width: 4,
                    ..ResNetConfig::resnet50(Some(5))
                };
                Ok(Box::new(ResNet::new(cfg, &s.root())?) as Box<dyn Backbone>)
            }),
        ),
        (
            "mobilenet_v2 (width 0.25)",
            Box::new(|s: &ParamStore| {
                let cfg = MobileNetV2Config {
                    width_mult: 0.25,
                    num_classes: Some(5),
                    dropout: 0.0,
                    ..Default::default()
                };
                Ok(Box::new(MobileNetV2::new(cfg, &s.root())?) as Box<dyn Backbone>)
            }),
        ),
        (
            "vgg16_bn (hidden 32)",
            Box::new(|s: &ParamStore| {
                let cfg = VggConfig {
                    hidden: 32,
                    dropout: 0.0,
                    ..VggConfig::vgg16(true, Some(5))
                };
                Ok(Box::new(Vgg::new(cfg, &s.root())?) as Box<dyn Backbone>)
            }),
        ),
    ];
    for (model, build) in &models {
        let fast = train_step(build.as_ref())?;
        let composite = fgvc_ops::with_composite_ops(|| train_step(build.as_ref()))?;
        ensure!(
            fast.len() == composite.len(),
            "{model}: outcomes differ in number"
        );
        let max_abs = |v: &[f64]| v.iter().fold(0f64, |m, x| m.max(x.abs()));
        let scale = fast
            .iter()
            .filter(|(n, _)| n.starts_with("grad "))
            .fold(0f64, |m, (_, v)| m.max(max_abs(v)));
        ensure!(scale > 0.0, "{model}: every gradient is zero");
        for ((name, a), (other, b)) in fast.iter().zip(&composite) {
            ensure!(
                name == other && a.len() == b.len(),
                "{model}: {name} vs {other}"
            );
            let floor = if name.starts_with("grad ") {
                scale
            } else {
                1.0
            };
            let worst = a.iter().zip(b).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
            ensure!(
                worst <= 1e-9 * max_abs(a).max(floor),
                "{model} {name}: kernels and composite differ by {worst:e}"
            );
        }
    }
    Ok(())
}
