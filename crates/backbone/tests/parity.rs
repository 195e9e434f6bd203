//! Parity with torchvision: eval logits, pooled features and stage maps, and a training-mode forward and
//! backward (gradients and BatchNorm running statistics).
//!
//! Weights are not stored: every parameter, buffer and input is a function of its name and element index
//! (`formula`), implemented identically in `fixtures/gen_fixtures.py`, which ran torchvision on them and
//! saved the outputs in `fixtures/*.safetensors`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use fgvc_backbone::{
    Backbone, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig, Vgg, VggConfig,
};
use fgvc_ops::ParamStore;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn fnv1a(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `u_i` in [0, 1): splitmix64's finaliser of `key + (i + 1) * golden` (key = `fnv1a(name)`), top 53 bits.
fn uniform(key: u64, i: u64) -> f64 {
    let mut z = key.wrapping_add((i + 1).wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The value of every tensor by the kind its name and shape say it is (see gen_fixtures.py).
fn formula(name: &str, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let key = fnv1a(name);
    let fan_in: usize = dims.iter().skip(1).product();
    let f: Box<dyn Fn(f64) -> f64> = if name.ends_with("running_var") {
        Box::new(|u| 0.5 + u)
    } else if name.ends_with("running_mean") {
        Box::new(|u| 0.4 * (u - 0.5))
    } else if name.ends_with("weight") && dims.len() == 1 {
        Box::new(|u| 0.5 + 0.5 * u)
    } else if name.ends_with("bias") {
        Box::new(|u| 0.2 * (u - 0.5))
    } else if name.ends_with("weight") {
        let scale = 12f64.sqrt() * (2.0 / fan_in as f64).sqrt();
        Box::new(move |u| (u - 0.5) * scale)
    } else {
        Box::new(|u| (u - 0.5) * 12f64.sqrt())
    };
    let v: Vec<f32> = (0..n as u64).map(|i| f(uniform(key, i)) as f32).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn fill(store: &ParamStore) -> Result<()> {
    for (name, var) in store.all() {
        var.set(&formula(&name, var.dims()))?;
    }
    Ok(())
}

fn fixture(name: &str) -> Result<HashMap<String, Tensor>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("loading {}", path.display()))
}

/// max |a - b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> Result<f64> {
    ensure!(
        a.dims() == b.dims(),
        "shape {:?} vs reference {:?}",
        a.dims(),
        b.dims()
    );
    let a = a.to_dtype(DType::F64)?;
    let b = b.to_dtype(DType::F64)?;
    let diff = (a - &b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale)
}

fn check(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<f64> {
    let r = rel(got, want).with_context(|| what.to_string())?;
    println!("{what}: rel {r:.2e}");
    ensure!(r <= tol, "{what}: relative difference {r:.3e} > {tol:.0e}");
    Ok(r)
}

fn get(f: &HashMap<String, Tensor>, k: &str) -> Result<Tensor> {
    f.get(k)
        .cloned()
        .with_context(|| format!("fixture has no `{k}`"))
}

fn input(f: &HashMap<String, Tensor>) -> Result<Tensor> {
    let want = get(f, "input")?;
    let x = formula("input", want.dims());
    // The stored input proves the two hash implementations agree bit for bit.
    ensure!(
        rel(&x, &want)? == 0.0,
        "the Rust formula disagrees with the Python one"
    );
    Ok(x)
}

/// Eval forward: every stage map (subsampled on channels as stored), the pooled features and the logits.
fn eval_parity(fixture_name: &str, net: &dyn Backbone, store: &ParamStore) -> Result<()> {
    fill(store)?;
    let f = fixture(fixture_name)?;
    let x = input(&f)?;
    let stages = net.forward_stages(&x, false)?;
    ensure!(stages.len() == net.stage_info().len());
    for (i, (s, info)) in stages.iter().zip(net.stage_info()).enumerate() {
        ensure!(s.dim(1)? == info.channels, "stage {i} channels");
        ensure!(
            s.dim(2)? * info.reduction == x.dim(2)?,
            "stage {i} reduction"
        );
        let step = get(&f, &format!("stage{i}.step"))?.to_vec1::<f32>()?[0] as u32;
        let idx = Tensor::arange_step(0u32, s.dim(1)? as u32, step, &Device::Cpu)?;
        check(
            &format!("{fixture_name} stage{i}"),
            &s.index_select(&idx, 1)?,
            &get(&f, &format!("stage{i}"))?,
            1e-4,
        )?;
    }
    let pooled = net.pool(stages.last().unwrap(), false)?;
    check(
        &format!("{fixture_name} pooled"),
        &pooled,
        &get(&f, "pooled")?,
        1e-4,
    )?;
    let logits = net.classify(&pooled, false)?.context("no classifier")?;
    check(
        &format!("{fixture_name} logits"),
        &logits,
        &get(&f, "logits")?,
        1e-4,
    )?;
    // The one-call path agrees with the staged one.
    check(
        &format!("{fixture_name} forward_t"),
        &net.forward_t(&x, false)?,
        &logits,
        1e-6,
    )?;
    Ok(())
}

fn store() -> ParamStore {
    ParamStore::new(0, DType::F32, &Device::Cpu)
}

#[test]
fn resnet50_eval_matches_torchvision() -> Result<()> {
    let s = store();
    let net = ResNet::resnet50(Some(1000), &s.root())?;
    eval_parity("resnet50", &net, &s)
}

#[test]
fn vgg16_eval_matches_torchvision() -> Result<()> {
    let s = store();
    // A 512-wide classifier (see gen_fixtures.py): the 4096-wide one takes over 20 s to fill in a test.
    let net = Vgg::new(
        VggConfig {
            hidden: 512,
            ..VggConfig::vgg16(false, Some(100))
        },
        &s.root(),
    )?;
    eval_parity("vgg16_h512", &net, &s)
}

#[test]
fn vgg16_bn_eval_matches_torchvision() -> Result<()> {
    let s = store();
    let net = Vgg::new(
        VggConfig {
            hidden: 512,
            ..VggConfig::vgg16(true, Some(100))
        },
        &s.root(),
    )?;
    eval_parity("vgg16_bn_h512", &net, &s)
}

#[test]
fn mobilenet_v2_eval_matches_torchvision() -> Result<()> {
    let s = store();
    let net = MobileNetV2::new(MobileNetV2Config::default(), &s.root())?;
    eval_parity("mobilenet_v2", &net, &s)
}

#[test]
fn mobilenet_v2_half_width_stride1_stem_eval_matches_torchvision() -> Result<()> {
    let s = store();
    let cfg = MobileNetV2Config {
        width_mult: 0.5,
        first_stride: 1,
        num_classes: Some(10),
        dropout: 0.2,
    };
    let net = MobileNetV2::new(cfg, &s.root())?;
    eval_parity("mobilenet_v2_w050_s1", &net, &s)
}

/// Training mode: loss = sum(logits * target) with `target` from the formula; gradients of a few named
/// parameters and the running statistics after the forward.
fn train_parity(fixture_name: &str, net: &dyn Backbone, store: &ParamStore) -> Result<()> {
    fill(store)?;
    let f = fixture(fixture_name)?;
    let x = input(&f)?;
    let logits = net.forward_t(&x, true)?;
    check(
        &format!("{fixture_name} train logits"),
        &logits,
        &get(&f, "logits")?,
        1e-4,
    )?;
    let target = formula("target", logits.dims());
    let loss = (&logits * &target)?.sum_all()?;
    check(
        &format!("{fixture_name} loss"),
        &loss.reshape(1)?,
        &get(&f, "loss")?,
        1e-4,
    )?;
    let grads = loss.backward()?;
    let (mut n_grads, mut n_bufs) = (0, 0);
    let mut failures = Vec::new();
    let mut keys: Vec<&String> = f.keys().collect();
    keys.sort();
    for key in keys {
        let want = &f[key];
        let result = if let Some(name) = key.strip_prefix("grad.") {
            n_grads += 1;
            let var = store
                .get(name)
                .with_context(|| format!("no parameter {name}"))?;
            let g = grads
                .get(var.as_tensor())
                .with_context(|| format!("no gradient for {name}"))?;
            check(&format!("{fixture_name} grad {name}"), g, want, 1e-3)
        } else if let Some(name) = key.strip_prefix("buf.") {
            n_bufs += 1;
            let var = store
                .get(name)
                .with_context(|| format!("no buffer {name}"))?;
            check(
                &format!("{fixture_name} {name}"),
                var.as_tensor(),
                want,
                1e-4,
            )
        } else {
            continue;
        };
        if let Err(e) = result {
            failures.push(e.to_string());
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    ensure!(
        n_grads >= 5 && n_bufs >= 3,
        "fixture has {n_grads} gradients and {n_bufs} buffers"
    );
    Ok(())
}

#[test]
fn resnet18_train_step_matches_torch() -> Result<()> {
    let s = store();
    let net = ResNet::new(ResNetConfig::resnet18(Some(10)), &s.root())?;
    train_parity("train_resnet18", &net, &s)
}

#[test]
fn mobilenet_v2_train_step_matches_torch() -> Result<()> {
    let s = store();
    let cfg = MobileNetV2Config {
        width_mult: 0.5,
        first_stride: 1,
        num_classes: Some(10),
        dropout: 0.0,
    };
    let net = MobileNetV2::new(cfg, &s.root())?;
    train_parity("train_mobilenet_v2_w050_s1", &net, &s)
}

/// The ResNet-18 step again through the composite candle ops that CUDA and Metal run
/// ([`fgvc_ops::with_composite_ops`]): the GPU path must match torchvision too. (MobileNetV2's f32 gradients
/// drift past this tolerance on either path's rounding; `models.rs` compares its two paths in f64 instead.)
#[test]
fn resnet18_train_step_matches_torch_on_the_composite_path() -> Result<()> {
    fgvc_ops::with_composite_ops(|| {
        let s = store();
        let net = ResNet::new(ResNetConfig::resnet18(Some(10)), &s.root())?;
        train_parity("train_resnet18", &net, &s)
    })
}
