//! Building a backbone by name with [`BackboneOptions`], the way timm's `create_model(name, **kwargs)`
//! does: the one place where a name and a set of options become a network.

use candle_core::Result;
use fgvc_ops::Params;

use crate::backbone::Backbone;
use crate::kind::{BackboneKind, UnknownBackbone};
use crate::mobilenet_v2::{MobileNetV2, MobileNetV2Config};
use crate::options::{BackboneOptions, OptionError};
use crate::resnet::{ResNet, ResNetConfig};
use crate::vgg::{Vgg, VggConfig};

/// Why [`create`] built nothing.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// The name is none of [`BackboneKind::ALL`] (the message lists them).
    #[error(transparent)]
    Unknown(#[from] UnknownBackbone),
    /// An option the backbone does not have, or a value out of bounds.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// Creating the parameters failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Builds the backbone called `name` (torchvision's names, parsed as [`BackboneKind`] parses them) with
/// `options`, its parameters created under `p` (use a store's root for torchvision's names).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_backbone::{create, Backbone, BackboneError, BackboneOptions};
/// use fgvc_ops::ParamStore;
///
/// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
/// let options = BackboneOptions { width_mult: Some(0.5), first_stride: Some(1), ..BackboneOptions::classes(10) };
/// let net = create("mobilenet_v2", &options, &store.root())?;
/// assert_eq!(net.stage_strides(), vec![1, 2, 4, 8, 16]);
/// let logits = net.forward_t(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
/// assert_eq!(logits.dims(), &[1, 10]);
///
/// // Errors name the option and the reason; an unknown name lists the known ones.
/// let err = create("vgg16", &BackboneOptions { base_width: Some(8), ..options }, &store.root());
/// assert!(matches!(err, Err(BackboneError::Option(_))));
/// let err = create("resnet152", &BackboneOptions::default(), &store.root()).err().unwrap();
/// assert!(err.to_string().contains("known: resnet18, resnet34"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn create(
    name: &str,
    options: &BackboneOptions,
    p: &Params,
) -> std::result::Result<Box<dyn Backbone>, BackboneError> {
    name.parse::<BackboneKind>()?.create(options, p)
}

impl BackboneKind {
    /// Builds this backbone with `options` (checked first by [`BackboneOptions::validate`]) under `p`:
    /// [`create`] for a name already parsed.
    pub fn create(
        self,
        options: &BackboneOptions,
        p: &Params,
    ) -> std::result::Result<Box<dyn Backbone>, BackboneError> {
        options.validate(self)?;
        let num_classes = options.num_classes;
        let resnet = |preset: fn(Option<usize>) -> ResNetConfig| -> Result<Box<dyn Backbone>> {
            let preset = preset(num_classes);
            let cfg = ResNetConfig {
                base_width: options.base_width.unwrap_or(preset.base_width),
                ..preset
            };
            Ok(Box::new(ResNet::new(cfg, p)?))
        };
        let vgg = |batch_norm: bool| -> Result<Box<dyn Backbone>> {
            let cfg = VggConfig {
                dropout: options.dropout,
                ..VggConfig::vgg16(batch_norm, num_classes)
            };
            Ok(Box::new(Vgg::new(cfg, p)?))
        };
        Ok(match self {
            BackboneKind::ResNet18 => resnet(ResNetConfig::resnet18)?,
            BackboneKind::ResNet34 => resnet(ResNetConfig::resnet34)?,
            BackboneKind::ResNet50 => resnet(ResNetConfig::resnet50)?,
            BackboneKind::ResNet101 => resnet(ResNetConfig::resnet101)?,
            BackboneKind::Vgg16 => vgg(false)?,
            BackboneKind::Vgg16Bn => vgg(true)?,
            BackboneKind::MobileNetV2 => {
                let preset = MobileNetV2Config::default();
                Box::new(MobileNetV2::new(
                    MobileNetV2Config {
                        width_mult: options.width_mult.unwrap_or(preset.width_mult),
                        first_stride: options.first_stride.unwrap_or(preset.first_stride),
                        num_classes,
                        dropout: options.dropout,
                    },
                    p,
                )?)
            }
        })
    }

    /// torchvision's default dropout of this backbone's classifier: 0.5 for VGG, 0.2 for MobileNetV2, none
    /// for ResNet.
    pub fn torchvision_dropout(self) -> f64 {
        match self {
            BackboneKind::Vgg16 | BackboneKind::Vgg16Bn => VggConfig::vgg16(false, None).dropout,
            BackboneKind::MobileNetV2 => MobileNetV2Config::default().dropout,
            _ => 0.0,
        }
    }
}

/// Builds `kind` exactly as torchvision's constructor does (its dropout included, see
/// [`BackboneKind::torchvision_dropout`]) with an optional classifier of `num_classes` (`None`: headless),
/// its parameters created under `p`.
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
    let options = BackboneOptions {
        num_classes,
        dropout: if num_classes.is_some() {
            kind.torchvision_dropout()
        } else {
            0.0
        },
        ..BackboneOptions::default()
    };
    kind.create(&options, p).map_err(|e| match e {
        BackboneError::Candle(e) => e,
        other => candle_core::Error::Msg(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::BackboneOption;
    use candle_core::{DType, Device};
    use fgvc_ops::ParamStore;

    /// Every var of `store`: name, shape and values.
    fn contents(store: &ParamStore) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut all: Vec<_> = store
            .all()
            .into_iter()
            .map(|(name, var)| {
                let t = var.as_tensor();
                let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (name, t.dims().to_vec(), values)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn by_name(name: &str, options: &BackboneOptions) -> ParamStore {
        let store = ParamStore::new(7, DType::F32, &Device::Cpu);
        create(name, options, &store.root()).unwrap();
        store
    }

    fn typed<T>(build: impl FnOnce(&Params) -> Result<T>) -> ParamStore {
        let store = ParamStore::new(7, DType::F32, &Device::Cpu);
        build(&store.root()).unwrap();
        store
    }

    #[test]
    fn every_name_builds_what_its_typed_constructor_builds() {
        let headless = BackboneOptions::default();
        let narrow = |w| BackboneOptions {
            base_width: Some(w),
            ..BackboneOptions::classes(5)
        };
        let resnets = [
            (
                "resnet18",
                ResNetConfig::resnet18 as fn(Option<usize>) -> ResNetConfig,
            ),
            ("resnet34", ResNetConfig::resnet34),
            ("resnet50", ResNetConfig::resnet50),
            ("resnet101", ResNetConfig::resnet101),
        ];
        for (name, preset) in resnets {
            assert_eq!(
                contents(&by_name(name, &narrow(4))),
                contents(&typed(|p| ResNet::new(
                    ResNetConfig {
                        base_width: 4,
                        ..preset(Some(5))
                    },
                    p
                ))),
                "{name}"
            );
        }
        // Full width, headless (the shape fgvc-train builds).
        assert_eq!(
            contents(&by_name("resnet18", &headless)),
            contents(&typed(|p| ResNet::resnet18(None, p)))
        );
        for (name, batch_norm) in [("vgg16", false), ("vgg16_bn", true)] {
            assert_eq!(
                contents(&by_name(name, &headless)),
                contents(&typed(|p| Vgg::vgg16(batch_norm, None, p))),
                "{name}"
            );
        }
        let mobilenet = BackboneOptions {
            width_mult: Some(0.5),
            first_stride: Some(1),
            dropout: 0.3,
            ..BackboneOptions::classes(6)
        };
        assert_eq!(
            contents(&by_name("mobilenet_v2", &mobilenet)),
            contents(&typed(|p| MobileNetV2::new(
                MobileNetV2Config {
                    width_mult: 0.5,
                    first_stride: 1,
                    num_classes: Some(6),
                    dropout: 0.3
                },
                p
            )))
        );
        assert_eq!(
            contents(&by_name("mobilenet_v2", &headless)),
            contents(&typed(|p| MobileNetV2::new(
                MobileNetV2Config {
                    num_classes: None,
                    ..MobileNetV2Config::default()
                },
                p
            )))
        );
    }

    #[test]
    fn options_reach_the_network() {
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        let options = BackboneOptions {
            width_mult: Some(0.25),
            first_stride: Some(1),
            ..BackboneOptions::classes(3)
        };
        let net = create("MobileNetV2", &options, &store.root()).unwrap();
        assert_eq!(net.stage_strides(), vec![1, 2, 4, 8, 16]);
        assert_eq!(net.stage_channels(), vec![8, 8, 8, 24, 1280]);
        assert_eq!(net.num_classes(), Some(3));
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        let options = BackboneOptions {
            base_width: Some(8),
            ..BackboneOptions::default()
        };
        let net = create("resnet-50", &options, &store.root()).unwrap();
        assert_eq!(net.num_features(), 8 * 8 * 4);
        assert_eq!(net.num_classes(), None);
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        let err = create("resnet152", &BackboneOptions::default(), &store.root())
            .err()
            .unwrap();
        assert!(matches!(err, BackboneError::Unknown(_)));
        assert_eq!(
            err.to_string(),
            "unknown backbone `resnet152` (known: resnet18, resnet34, resnet50, resnet101, vgg16, \
             vgg16_bn, mobilenet_v2)"
        );
        assert!(store.names().is_empty());
    }

    #[test]
    fn invalid_options_build_nothing() {
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        let options = BackboneOptions {
            base_width: Some(8),
            ..BackboneOptions::default()
        };
        match create("vgg16", &options, &store.root()) {
            Err(BackboneError::Option(e)) => {
                assert_eq!(e.option, BackboneOption::BaseWidth);
                assert_eq!(
                    e.to_string(),
                    "base_width applies to ResNets only, not vgg16"
                );
            }
            other => panic!("expected an option error, got {:?}", other.err()),
        }
        assert!(store.names().is_empty(), "validated before any parameter");
    }

    #[test]
    fn build_keeps_torchvision_dropout() -> Result<()> {
        assert_eq!(BackboneKind::Vgg16Bn.torchvision_dropout(), 0.5);
        assert_eq!(BackboneKind::MobileNetV2.torchvision_dropout(), 0.2);
        assert_eq!(BackboneKind::ResNet101.torchvision_dropout(), 0.0);
        // Two training passes over the same batch differ only by their dropout masks.
        let x = candle_core::Tensor::arange(0f32, (2 * 3 * 64 * 64) as f32, &Device::Cpu)?
            .affine(0.01, 0.)?
            .sin()?
            .reshape((2, 3, 64, 64))?;
        let twice = |net: Box<dyn Backbone>| -> Result<bool> {
            let a = net.forward_t(&x, true)?;
            let b = net.forward_t(&x, true)?;
            Ok(a.sub(&b)?.abs()?.max_all()?.to_scalar::<f32>()? > 0.0)
        };
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        assert!(twice(build(
            BackboneKind::MobileNetV2,
            Some(4),
            &store.root()
        )?)?);
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        let net = BackboneKind::MobileNetV2
            .create(&BackboneOptions::classes(4), &store.root())
            .unwrap();
        assert!(!twice(net)?, "options default to no dropout");
        let err = build(BackboneKind::ResNet18, Some(0), &store.root())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("num_classes must be at least 1"),
            "{err}"
        );
        Ok(())
    }
}
