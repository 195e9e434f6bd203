//! `model.pretrained` is strict by default: a checkpoint that does not cover the backbone stops the run
//! with an error naming the file and what is missing, a DataParallel `module.` prefix is stripped, and
//! `model.pretrained_strict = false` allows a partial load.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fgvc_backbone::weights::save_tensors;
use fgvc_ops::ParamStore;
use fgvc_train::model::{build_backbone, ModelConfig};
use fgvc_train::Config;

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pretrained")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny(pretrained: Option<PathBuf>, strict: bool) -> ModelConfig {
    ModelConfig {
        backbone: "resnet18".into(),
        base_width: Some(4),
        pretrained,
        pretrained_strict: strict,
        ..ModelConfig::default()
    }
}

/// A fresh store from `seed` with the backbone of `config` built (and its weights loaded) in it.
fn build(config: &ModelConfig, seed: u64) -> fgvc_train::Result<ParamStore> {
    let store = ParamStore::new(seed, DType::F32, &Device::Cpu);
    build_backbone(config, &store.root())?;
    Ok(store)
}

fn conv1(store: &ParamStore) -> Vec<f32> {
    let t = store.get("conv1.weight").unwrap();
    t.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
}

/// The backbone's tensors from `seed` under `prefix`, without those `skip` accepts, plus torchvision's
/// classifier, written as safetensors.
fn checkpoint(dir: &Path, file: &str, prefix: &str, skip: impl Fn(&str) -> bool) -> PathBuf {
    let source = build(&tiny(None, true), 1).unwrap();
    let mut tensors: Vec<(String, Tensor)> = source
        .all()
        .into_iter()
        .filter(|(n, _)| !skip(n))
        .map(|(n, v)| (format!("{prefix}{n}"), v.as_tensor().clone()))
        .collect();
    tensors.push((
        format!("{prefix}fc.bias"),
        Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap(),
    ));
    let path = dir.join(file);
    save_tensors(&tensors, &path).unwrap();
    path
}

#[test]
fn a_data_parallel_checkpoint_loads_without_its_module_prefix() {
    let dir = scratch("module");
    let path = checkpoint(&dir, "dp.safetensors", "module.", |_| false);
    let loaded = build(&tiny(Some(path), true), 2).unwrap();
    assert_eq!(conv1(&loaded), conv1(&build(&tiny(None, true), 1).unwrap()));
    assert_ne!(conv1(&loaded), conv1(&build(&tiny(None, true), 2).unwrap()));
}

#[test]
fn a_checkpoint_missing_backbone_tensors_is_an_error_unless_partial_loading_is_asked_for() {
    let dir = scratch("missing");
    let path = checkpoint(&dir, "half.safetensors", "module.", |n| {
        n.starts_with("layer3.") || n.starts_with("layer4.")
    });
    let Err(err) = build(&tiny(Some(path.clone()), true), 2) else {
        panic!("a strict load of a partial checkpoint succeeded")
    };
    let err = err.to_string();
    assert!(
        err.starts_with(&format!("model.pretrained: {}: the pretrained weights do not fit the model: 50 of its 100 tensors fit; 50 are missing from the file: `layer3.0.bn1.bias`", path.display())),
        "{err}"
    );
    assert!(
        err.ends_with("set model.pretrained_strict = false)"),
        "{err}"
    );
    let partial = build(&tiny(Some(path), false), 2).unwrap();
    assert_eq!(
        conv1(&partial),
        conv1(&build(&tiny(None, true), 1).unwrap())
    );
}

#[test]
fn a_missing_file_still_points_at_the_download() {
    let err = build(&tiny(Some("absent/resnet18.safetensors".into()), true), 0)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "model.pretrained: absent/resnet18.safetensors: no such file\n(download torchvision weights with `cargo xtask weights`)"
    );
}

#[test]
fn pretrained_strict_is_a_model_key_that_defaults_to_true() {
    let strict = Config::parse("[model]\nbackbone = \"resnet18\"\n", "inline", &[]).unwrap();
    assert!(strict.model.pretrained_strict);
    let partial = Config::parse("[model]\npretrained_strict = false\n", "inline", &[]).unwrap();
    assert!(!partial.model.pretrained_strict);
    let set = Config::parse("", "inline", &["model.pretrained_strict=false".into()]).unwrap();
    assert!(!set.model.pretrained_strict);
}
