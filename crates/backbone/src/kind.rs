//! Choosing a backbone by name (configuration files, the command line).

use std::fmt;
use std::str::FromStr;

/// The backbones [`crate::create`] knows, named as torchvision's constructors.
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

    /// Whether this is one of the ResNets.
    pub fn is_resnet(self) -> bool {
        matches!(
            self,
            BackboneKind::ResNet18
                | BackboneKind::ResNet34
                | BackboneKind::ResNet50
                | BackboneKind::ResNet101
        )
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
