//! The `[model]` section: which backbone, how wide, and where its pretrained weights come from.

use std::path::PathBuf;

use fgvc_backbone::{Backbone, BackboneDefaults, BackboneError, BackboneKind, BackboneOptions};
use fgvc_ops::{ParamStore, Params};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

fn default_backbone() -> String {
    "resnet18".into()
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

/// The model of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// torchvision's name: `resnet18`, `resnet34`, `resnet50`, `resnet101`, `vgg16`, `vgg16_bn`,
    /// `mobilenet_v2`.
    #[serde(default = "default_backbone")]
    pub backbone: String,
    /// ResNet only: channels of the stem and `layer1` (torchvision: 64). A small value (8, 16) keeps the
    /// layout and names at a fraction of the cost, for CPU demos and tests; pretrained weights need 64.
    #[serde(default)]
    pub base_width: Option<usize>,
    /// MobileNetV2 only: the width multiplier (torchvision: 1.0); 0.35-0.5 for CPU demos.
    #[serde(default)]
    pub width_mult: Option<f64>,
    /// MobileNetV2 only: the stride of the first conv (torchvision: 2; RMG-PMSI's official backbone: 1,
    /// which is that method's default when this is absent).
    #[serde(default)]
    pub first_stride: Option<usize>,
    /// Weights to start from (torchvision `.pth` or safetensors, names as torchvision's), loaded into the
    /// backbone. A common name prefix (`module.` from DataParallel, `backbone.`, ...) is stripped; tensors
    /// the backbone has no place for (torchvision's `fc.*`) are ignored and reported.
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
    /// Whether `pretrained` must cover the whole backbone (the default): a backbone tensor the file lacks
    /// or has with another shape is an error listing them. `false` loads the tensors that fit, warns with
    /// the counts, and leaves the others at their initialisation.
    #[serde(default = "yes")]
    pub pretrained_strict: bool,
    /// Dropout before the classifier (drawn from the step's keyed stream, so resumes are exact).
    #[serde(default)]
    pub dropout: f64,
    /// Learning-rate multiplier of the new layers (`heads.*`) when no `[[optim.groups]]` are given.
    #[serde(default = "one")]
    pub head_lr_mult: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backbone: default_backbone(),
            base_width: None,
            width_mult: None,
            first_stride: None,
            pretrained: None,
            pretrained_strict: true,
            dropout: 0.0,
            head_lr_mult: 1.0,
        }
    }
}

/// The options `[model]` gives the backbone: its shape options and `dropout` (checked there), and no
/// classifier (every method puts its own heads on the backbone's stages).
pub fn backbone_options(config: &ModelConfig) -> BackboneOptions {
    BackboneOptions {
        base_width: config.base_width,
        width_mult: config.width_mult,
        first_stride: config.first_stride,
        num_classes: None,
        dropout: config.dropout,
    }
}

/// Checks `[model]` (the backbone's name and options, in fgvc-backbone) without building anything.
pub fn check_model(config: &ModelConfig) -> Result<()> {
    let kind: BackboneKind = config
        .backbone
        .parse()
        .map_err(|e| model_error(BackboneError::Unknown(e)))?;
    backbone_options(config)
        .validate(kind)
        .map_err(|e| model_error(BackboneError::Option(e)))
}

/// Builds the headless backbone of `config` under `p`, and loads its pretrained weights if any.
pub fn build_backbone(config: &ModelConfig, p: &Params) -> Result<Box<dyn Backbone>> {
    build_backbone_with(config, &BackboneDefaults::default(), p)
}

/// [`build_backbone`] with a method's `defaults` for the shape options `config` leaves unset (each used
/// only by the backbones that have it), such as RMG-PMSI's stride-1 MobileNetV2 stem.
pub fn build_backbone_with(
    config: &ModelConfig,
    defaults: &BackboneDefaults,
    p: &Params,
) -> Result<Box<dyn Backbone>> {
    let kind: BackboneKind = config
        .backbone
        .parse()
        .map_err(|e| model_error(BackboneError::Unknown(e)))?;
    let options = backbone_options(config).or_defaults(kind, defaults);
    let net = kind.create(&options, p).map_err(model_error)?;
    if let Some(path) = &config.pretrained {
        load_pretrained(p.store(), path, config.pretrained_strict)?;
    }
    Ok(net)
}

/// A backbone error as a configuration error on the `[model]` key it concerns (`model.base_width`).
fn model_error(e: BackboneError) -> TrainError {
    let (key, message) = match e {
        BackboneError::Unknown(e) => ("backbone", e.to_string()),
        BackboneError::Option(e) => (e.option.name(), e.reason),
        BackboneError::Candle(e) => return TrainError::Candle(e),
    };
    TrainError::Config {
        origin: "[model]".into(),
        key: format!("model.{key}"),
        message,
    }
}

/// Loads `model.pretrained` into the freshly built backbone of `store` (strictly unless `strict` is false)
/// and logs what it did: a stripped prefix and the load report at INFO, a partial load as a warning.
fn load_pretrained(store: &ParamStore, path: &std::path::Path, strict: bool) -> Result<()> {
    use fgvc_backbone::weights::{self, PretrainedOptions, WeightsError};
    let options = PretrainedOptions {
        strict,
        ..PretrainedOptions::default()
    };
    let report = weights::load_pretrained(store, path, &options).map_err(|e| {
        let hint = match &e {
            WeightsError::NotFound { .. } => {
                "\n(download torchvision weights with `cargo xtask weights`)"
            }
            WeightsError::DoNotFit { misfit, .. } if misfit.fitting > 0 => {
                "\n(to train with only the tensors that fit, the others at their initialisation, set \
                 model.pretrained_strict = false)"
            }
            _ => "",
        };
        TrainError::Msg(format!("model.pretrained: {e}{hint}"))
    })?;
    if let Some(prefix) = &report.stripped_prefix {
        let origin = if prefix == "module." {
            " (saved from a DataParallel model)"
        } else {
            ""
        };
        tracing::info!(
            "model.pretrained: the file's tensor names start with `{prefix}`{origin}; loading them without it"
        );
    }
    tracing::info!("model.pretrained: {}", report.load);
    if !report.covers_the_model() {
        let load = &report.load;
        tracing::warn!(
            "model.pretrained: partial load (model.pretrained_strict = false): {} of {} backbone tensors \
             loaded; {} missing from the file and {} of another shape keep their initialisation",
            load.loaded.len(),
            load.loaded.len() + load.missing.len() + load.reinitialised.len(),
            load.missing.len(),
            load.reinitialised.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn build(config: &ModelConfig, defaults: &BackboneDefaults) -> Result<Box<dyn Backbone>> {
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        build_backbone_with(config, defaults, &store.root())
    }

    /// The key and message of the configuration error `config` gives.
    fn config_error(config: ModelConfig) -> (String, String) {
        match build(&config, &BackboneDefaults::default()) {
            Err(TrainError::Config {
                origin,
                key,
                message,
            }) => {
                assert_eq!(origin, "[model]");
                (key, message)
            }
            Err(e) => panic!("not a configuration error: {e}"),
            Ok(_) => panic!("{config:?} built"),
        }
    }

    fn model(backbone: &str) -> ModelConfig {
        ModelConfig {
            backbone: backbone.into(),
            ..ModelConfig::default()
        }
    }

    #[test]
    fn backbone_errors_name_the_model_key() {
        let (key, message) = config_error(model("resnet152"));
        assert_eq!(key, "model.backbone");
        assert!(
            message.contains("resnet152") && message.contains("known: resnet18"),
            "{message}"
        );
        let cases = [
            (
                ModelConfig {
                    base_width: Some(8),
                    ..model("vgg16")
                },
                "model.base_width",
                "applies to ResNets only, not vgg16",
            ),
            (
                ModelConfig {
                    base_width: Some(0),
                    ..model("resnet18")
                },
                "model.base_width",
                "must be at least 1",
            ),
            (
                ModelConfig {
                    width_mult: Some(0.5),
                    ..model("resnet18")
                },
                "model.width_mult",
                "applies to mobilenet_v2 only, not resnet18",
            ),
            (
                ModelConfig {
                    width_mult: Some(-1.0),
                    ..model("mobilenet_v2")
                },
                "model.width_mult",
                "must be a positive number, not -1",
            ),
            (
                ModelConfig {
                    first_stride: Some(1),
                    ..model("vgg16_bn")
                },
                "model.first_stride",
                "applies to mobilenet_v2 only, not vgg16_bn",
            ),
            (
                ModelConfig {
                    first_stride: Some(3),
                    ..model("mobilenet_v2")
                },
                "model.first_stride",
                "must be 1 or 2, not 3",
            ),
            (
                ModelConfig {
                    dropout: 1.5,
                    ..model("resnet18")
                },
                "model.dropout",
                "must be in [0, 1), not 1.5",
            ),
        ];
        for (config, want_key, want_message) in cases {
            assert_eq!(
                config_error(config),
                (want_key.to_string(), want_message.to_string())
            );
        }
        let shown = build(
            &ModelConfig {
                base_width: Some(8),
                ..model("vgg16")
            },
            &BackboneDefaults::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            shown,
            "[model]: model.base_width: applies to ResNets only, not vgg16"
        );
    }

    #[test]
    fn the_backbone_is_headless_and_shaped_by_the_model_section() -> Result<()> {
        let net = build(
            &ModelConfig {
                base_width: Some(8),
                dropout: 0.3,
                ..model("resnet50")
            },
            &BackboneDefaults::default(),
        )?;
        assert_eq!(net.num_classes(), None);
        assert_eq!(net.num_features(), 8 * 8 * 4);
        Ok(())
    }

    #[test]
    fn method_defaults_apply_where_the_model_section_is_silent() -> Result<()> {
        let stride1 = BackboneDefaults {
            first_stride: Some(1),
            ..BackboneDefaults::default()
        };
        let narrow = ModelConfig {
            width_mult: Some(0.25),
            ..model("mobilenet_v2")
        };
        assert_eq!(build(&narrow, &stride1)?.stage_strides()[0], 1);
        assert_eq!(
            build(&narrow, &BackboneDefaults::default())?.stage_strides()[0],
            2
        );
        let stride2 = ModelConfig {
            first_stride: Some(2),
            ..narrow
        };
        assert_eq!(build(&stride2, &stride1)?.stage_strides()[0], 2);
        // A ResNet has no first_stride: the default is not applied, so it is no error.
        let resnet = ModelConfig {
            base_width: Some(4),
            ..model("resnet18")
        };
        assert_eq!(build(&resnet, &stride1)?.stage_strides()[0], 4);
        Ok(())
    }
}
