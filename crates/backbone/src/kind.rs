//! Choosing a backbone by name (configuration files, the command line).

use std::fmt;
use std::str::FromStr;

use candle_core::Result;
use fgvc_ops::Params;

use crate::backbone::Backbone;
use crate::mobilenet_v2::{MobileNetV2, MobileNetV2Config};
use crate::resnet::{ResNet, ResNetConfig};
use crate::vgg::{Vgg, VggConfig};

/// The backbones [`build`] knows, named as torchvision's constructors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackboneKind {
    /// `resnet18`.
    ResNet18,
    /// `resnet34`.
    ResNet34,
    /// `resnet50`.
    ResNet50,
    /// `resnet101`.
    ResNet101,
    /// `vgg16`.
    Vgg16,
    /// `vgg16_bn`.
    Vgg16Bn,
    /// `mobilenet_v2`.
    MobileNetV2,
}

impl BackboneKind {
    /// Every kind, in the order above.
    pub const ALL: [BackboneKind; 7] = [
        BackboneKind::ResNet18,
        BackboneKind::ResNet34,
        BackboneKind::ResNet50,
        BackboneKind::ResNet101,
        BackboneKind::Vgg16,
        BackboneKind::Vgg16Bn,
        BackboneKind::MobileNetV2,
    ];

    /// torchvision's name (`"resnet50"`, `"vgg16_bn"`, `"mobilenet_v2"`).
    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::ResNet18 => "resnet18",
            BackboneKind::ResNet34 => "resnet34",
            BackboneKind::ResNet50 => "resnet50",
            BackboneKind::ResNet101 => "resnet101",
            BackboneKind::Vgg16 => "vgg16",
            BackboneKind::Vgg16Bn => "vgg16_bn",
            BackboneKind::MobileNetV2 => "mobilenet_v2",
        }
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown backbone name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackbone(pub String);

impl fmt::Display for UnknownBackbone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = BackboneKind::ALL.iter().map(|k| k.name()).collect();
        write!(
            f,
            "unknown backbone `{}` (known: {})",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownBackbone {}

impl FromStr for BackboneKind {
    type Err = UnknownBackbone;

    /// Parses torchvision's names, ignoring case and accepting `-` for `_` (`"ResNet-50"`, `"vgg16-bn"`,
    /// `"mobilenetv2"`).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect();
        BackboneKind::ALL
            .iter()
            .copied()
            .find(|k| k.name().replace('_', "") == norm)
            .ok_or_else(|| UnknownBackbone(s.to_string()))
    }
}

/// Builds `kind` with torchvision's default configuration and an optional classifier of `num_classes`
/// (`None`: headless), its parameters created under `p`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_backbone::{build, Backbone, BackboneKind};
/// use fgvc_ops::ParamStore;
///
/// let kind: BackboneKind = "mobilenet_v2".parse()?;
/// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
/// let net: Box<dyn Backbone> = build(kind, Some(10), &store.root())?;
/// assert_eq!(net.num_features(), 1280);
/// let logits = net.forward_t(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
/// assert_eq!(logits.dims(), &[1, 10]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn build(
    kind: BackboneKind,
    num_classes: Option<usize>,
    p: &Params,
) -> Result<Box<dyn Backbone>> {
    Ok(match kind {
        BackboneKind::ResNet18 => Box::new(ResNet::new(ResNetConfig::resnet18(num_classes), p)?),
        BackboneKind::ResNet34 => Box::new(ResNet::new(ResNetConfig::resnet34(num_classes), p)?),
        BackboneKind::ResNet50 => Box::new(ResNet::new(ResNetConfig::resnet50(num_classes), p)?),
        BackboneKind::ResNet101 => Box::new(ResNet::new(ResNetConfig::resnet101(num_classes), p)?),
        BackboneKind::Vgg16 => Box::new(Vgg::new(VggConfig::vgg16(false, num_classes), p)?),
        BackboneKind::Vgg16Bn => Box::new(Vgg::new(VggConfig::vgg16(true, num_classes), p)?),
        BackboneKind::MobileNetV2 => Box::new(MobileNetV2::new(
            MobileNetV2Config {
                num_classes,
                ..MobileNetV2Config::default()
            },
            p,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_round_trips() {
        for k in BackboneKind::ALL {
            assert_eq!(k.name().parse::<BackboneKind>().unwrap(), k);
            assert_eq!(k.to_string().parse::<BackboneKind>().unwrap(), k);
        }
        assert_eq!(
            "ResNet-50".parse::<BackboneKind>().unwrap(),
            BackboneKind::ResNet50
        );
        assert_eq!(
            "VGG16-BN".parse::<BackboneKind>().unwrap(),
            BackboneKind::Vgg16Bn
        );
        assert_eq!(
            "mobilenetv2".parse::<BackboneKind>().unwrap(),
            BackboneKind::MobileNetV2
        );
        let err = "resnet152".parse::<BackboneKind>().unwrap_err();
        assert!(err.to_string().contains("resnet152") && err.to_string().contains("vgg16_bn"));
    }
}
