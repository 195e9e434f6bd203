//! The `[model]` section: which backbone, how wide, and where its pretrained weights come from.

use std::path::PathBuf;

use fgvc_backbone::{
    build, Backbone, BackboneKind, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig,
};
use fgvc_ops::{ParamStore, Params};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

fn default_backbone() -> String {
    "resnet18".into()
}
fn one() -> f64 {
    1.0
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
    /// which is that recipe's default when this is absent).
    #[serde(default)]
    pub first_stride: Option<usize>,
    /// Weights to start from (torchvision `.pth` or safetensors, names as torchvision's), loaded into the
    /// backbone; layers the file lacks keep their initialisation.
    #[serde(default)]
    pub pretrained: Option<PathBuf>,
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
            dropout: 0.0,
            head_lr_mult: 1.0,
        }
    }
}

/// Builds the headless backbone of `config` under `p`, and loads its pretrained weights if any.
pub fn build_backbone(config: &ModelConfig, p: &Params) -> Result<Box<dyn Backbone>> {
    let kind: BackboneKind =
        config
            .backbone
            .parse()
            .map_err(|e: fgvc_backbone::UnknownBackbone| {
                TrainError::Msg(format!("model.backbone: {e}"))
            })?;
    let mobilenet_shape = config.width_mult.is_some() || config.first_stride.is_some();
    if mobilenet_shape && kind != BackboneKind::MobileNetV2 {
        return Err(TrainError::Msg(format!(
            "model.width_mult and model.first_stride apply to mobilenet_v2 only, not {}",
            config.backbone
        )));
    }
    let net: Box<dyn Backbone> = match (kind, config.base_width) {
        (BackboneKind::MobileNetV2, None) if mobilenet_shape => {
            let width_mult = config.width_mult.unwrap_or(1.0);
            if !(width_mult > 0.0 && width_mult.is_finite()) {
                return Err(TrainError::Msg(format!(
                    "model.width_mult must be a positive number, not {width_mult}"
                )));
            }
            let first_stride = config.first_stride.unwrap_or(2);
            if !(1..=2).contains(&first_stride) {
                return Err(TrainError::Msg(format!(
                    "model.first_stride must be 1 or 2, not {first_stride}"
                )));
            }
            Box::new(MobileNetV2::new(
                MobileNetV2Config {
                    width_mult,
                    first_stride,
                    num_classes: None,
                    dropout: 0.0,
                },
                p,
            )?)
        }
        (_, None) => build(kind, None, p)?,
        (
            BackboneKind::ResNet18
            | BackboneKind::ResNet34
            | BackboneKind::ResNet50
            | BackboneKind::ResNet101,
            Some(w),
        ) => {
            let base = match kind {
                BackboneKind::ResNet18 => ResNetConfig::resnet18(None),
                BackboneKind::ResNet34 => ResNetConfig::resnet34(None),
                BackboneKind::ResNet50 => ResNetConfig::resnet50(None),
                _ => ResNetConfig::resnet101(None),
            };
            if w == 0 {
                return Err(TrainError::Msg(
                    "model.base_width must be at least 1".into(),
                ));
            }
            Box::new(ResNet::new(
                ResNetConfig {
                    base_width: w,
                    ..base
                },
                p,
            )?)
        }
        (_, Some(_)) => {
            return Err(TrainError::Msg(format!(
                "model.base_width applies to ResNets only, not {}",
                config.backbone
            )))
        }
    };
    if let Some(path) = &config.pretrained {
        load_pretrained(p.store(), path)?;
    }
    Ok(net)
}

fn load_pretrained(store: &ParamStore, path: &std::path::Path) -> Result<()> {
    let options = fgvc_backbone::weights::LoadOptions::new();
    let report = fgvc_backbone::weights::load_into(store, path, &options).map_err(|e| {
        TrainError::Msg(format!(
            "model.pretrained: {e}\n(download torchvision weights with `cargo xtask weights`)"
        ))
    })?;
    tracing::info!("{report}");
    Ok(())
}
