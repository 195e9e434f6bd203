//! Strict pretrained loading (`weights::load_pretrained`) on a ResNet-18 of base width 4 (a sixteenth of
//! torchvision's), with safetensors files written by each test: name prefixes are stripped,
//! a file that does not cover the model is an error naming the file and what is missing, and a partial
//! load happens only when asked for.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fgvc_backbone::weights::{load_pretrained, save_tensors, PretrainedOptions, WeightsError};
use fgvc_backbone::{ResNet, ResNetConfig};
use fgvc_ops::ParamStore;

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pretrained-tests")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless ResNet-18 of base width 4 in a fresh store drawn from `seed`.
fn backbone(seed: u64) -> ParamStore {
    let store = ParamStore::new(seed, DType::F32, &Device::Cpu);
    ResNet::new(
        ResNetConfig {
            base_width: 4,
            ..ResNetConfig::resnet18(None)
        },
        &store.root(),
    )
    .unwrap();
    store
}

/// The store's tensors (counters included, as torchvision saves them).
fn tensors(store: &ParamStore) -> Vec<(String, Tensor)> {
    store
        .all()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect()
}

/// Writes `tensors` with `prefix` before every name, plus a 10-class torchvision classifier `fc.*`.
fn write(dir: &Path, file: &str, prefix: &str, tensors: &[(String, Tensor)]) -> PathBuf {
    let mut out: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t.clone()))
        .collect();
    out.push((
        format!("{prefix}fc.weight"),
        Tensor::zeros((10, 32), DType::F32, &Device::Cpu).unwrap(),
    ));
    out.push((
        format!("{prefix}fc.bias"),
        Tensor::zeros(10, DType::F32, &Device::Cpu).unwrap(),
    ));
    let path = dir.join(file);
    save_tensors(&out, &path).unwrap();
    path
}

fn values(store: &ParamStore, name: &str) -> Vec<f32> {
    store
        .get(name)
        .unwrap()
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn strict() -> PretrainedOptions {
    PretrainedOptions::default()
}

fn partial() -> PretrainedOptions {
    PretrainedOptions {
        strict: false,
        ..PretrainedOptions::default()
    }
}

fn misfit_message(e: WeightsError, file: &str) -> String {
    let msg = e.to_string();
    assert!(matches!(e, WeightsError::DoNotFit { .. }), "{msg}");
    assert!(msg.contains(file), "{msg}");
    msg
}

#[test]
fn a_matching_file_loads_every_tensor_and_reports_the_classifier_as_unexpected() {
    let dir = scratch("exact");
    let source = backbone(1);
    let path = write(&dir, "plain.safetensors", "", &tensors(&source));
    let target = backbone(2);
    let report = load_pretrained(&target, &path, &strict()).unwrap();
    assert!(report.covers_the_model(), "{}", report.load);
    assert_eq!(report.stripped_prefix, None);
    assert_eq!(report.load.unexpected, ["fc.bias", "fc.weight"]);
    assert_eq!(
        values(&target, "layer4.1.conv2.weight"),
        values(&source, "layer4.1.conv2.weight")
    );
    assert!(
        report
            .load
            .to_string()
            .contains("unexpected, ignored (2): fc.bias, fc.weight"),
        "{}",
        report.load
    );
}

#[test]
fn common_prefixes_are_detected_and_stripped() {
    let dir = scratch("prefixes");
    let source = backbone(1);
    let sd = tensors(&source);
    for prefix in [
        "module.",
        "backbone.",
        "model.",
        "encoder.",
        "module.backbone.",
    ] {
        let path = write(&dir, &format!("{prefix}safetensors"), prefix, &sd);
        let target = backbone(2);
        let report = load_pretrained(&target, &path, &strict()).unwrap();
        assert_eq!(report.stripped_prefix.as_deref(), Some(prefix));
        assert!(report.covers_the_model(), "{prefix}: {}", report.load);
        assert_eq!(report.load.loaded.len(), 100, "{prefix}");
        assert_eq!(
            report.load.unexpected,
            [format!("{prefix}fc.bias"), format!("{prefix}fc.weight")]
        );
        assert_eq!(
            values(&target, "conv1.weight"),
            values(&source, "conv1.weight")
        );
    }
}

#[test]
fn missing_tensors_are_an_error_that_lists_them_and_leaves_the_store_alone() {
    let dir = scratch("missing");
    let source = backbone(1);
    let mut sd = tensors(&source);
    sd.retain(|(n, _)| !n.starts_with("layer4."));
    let path = write(&dir, "no-layer4.safetensors", "module.", &sd);
    let target = backbone(2);
    let before = values(&target, "conv1.weight");
    let msg = misfit_message(
        load_pretrained(&target, &path, &strict()).unwrap_err(),
        "no-layer4.safetensors",
    );
    assert!(
        msg.contains("the pretrained weights do not fit the model: 75 of its 100 tensors fit; 25 are missing from the file: `layer4.0.bn1.bias`, `layer4.0.bn1.running_mean`"),
        "{msg}"
    );
    assert!(msg.contains(", ... and 17 more"), "{msg}");
    assert!(
        msg.ends_with("(matched after stripping the prefix `module.` from the file's names)"),
        "{msg}"
    );
    assert_eq!(
        values(&target, "conv1.weight"),
        before,
        "nothing was loaded"
    );

    // Asked for, a partial load takes what fits and reports the rest.
    let report = load_pretrained(&target, &path, &partial()).unwrap();
    assert!(!report.covers_the_model());
    assert_eq!(report.load.loaded.len(), 75);
    assert_eq!(report.load.missing.len(), 25);
    assert_eq!(
        values(&target, "conv1.weight"),
        values(&source, "conv1.weight")
    );
}

#[test]
fn a_shape_mismatch_is_an_error_naming_both_shapes() {
    let dir = scratch("shape");
    let wide = ParamStore::new(1, DType::F32, &Device::Cpu);
    ResNet::new(
        ResNetConfig {
            base_width: 8,
            ..ResNetConfig::resnet18(None)
        },
        &wide.root(),
    )
    .unwrap();
    let path = write(&dir, "wide.safetensors", "", &tensors(&wide));
    let msg = misfit_message(
        load_pretrained(&backbone(2), &path, &strict()).unwrap_err(),
        "wide.safetensors",
    );
    assert!(
        msg.contains("none of the file's 102 tensors fits the model's 100 by name and shape; 100 have another shape: `bn1.bias [4] (file [8])`"),
        "{msg}"
    );
    // Partial: mismatched tensors would keep their initialisation, but here nothing fits at all.
    let msg = misfit_message(
        load_pretrained(&backbone(2), &path, &partial()).unwrap_err(),
        "wide.safetensors",
    );
    assert!(msg.contains("100 have another shape"), "{msg}");
    // One mismatched tensor among fitting ones: strict refuses, partial keeps its initialisation.
    let mut sd = tensors(&backbone(1));
    let at = sd.iter().position(|(n, _)| n == "conv1.weight").unwrap();
    sd[at].1 = Tensor::zeros((4, 3, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let path = write(&dir, "conv1.safetensors", "", &sd);
    let target = backbone(2);
    let msg = misfit_message(
        load_pretrained(&target, &path, &strict()).unwrap_err(),
        "conv1.safetensors",
    );
    assert!(
        msg.contains("99 of its 100 tensors fit; 1 have another shape: `conv1.weight [4, 3, 7, 7] (file [4, 3, 5, 5])`"),
        "{msg}"
    );
    let before = values(&target, "conv1.weight");
    let report = load_pretrained(&target, &path, &partial()).unwrap();
    assert_eq!(report.load.reinitialised.len(), 1);
    assert_eq!(values(&target, "conv1.weight"), before);
}

#[test]
fn a_file_of_other_names_is_an_error_even_for_a_partial_load() {
    let dir = scratch("other");
    let sd: Vec<(String, Tensor)> = tensors(&backbone(1))
        .into_iter()
        .map(|(n, t)| (n.replace('.', "/"), t))
        .collect();
    let path = write(&dir, "slashes.safetensors", "", &sd);
    for options in [strict(), partial()] {
        let msg = misfit_message(
            load_pretrained(&backbone(2), &path, &options).unwrap_err(),
            "slashes.safetensors",
        );
        assert!(
            msg.contains("none of the file's 102 tensors fits the model's 100 by name and shape; the file has `bn1/bias`"),
            "{msg}"
        );
        assert!(msg.contains("the model expects `bn1.bias`"), "{msg}");
    }
}
