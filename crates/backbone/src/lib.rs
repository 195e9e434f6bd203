//! # fgvc-backbone
//!
//! The convolutional backbones of fine-grained classification, trainable on candle: ResNet-18/34/50/101
//! (torchvision v1.5), VGG-16 with and without BatchNorm, and MobileNetV2 (width multiplier, configurable
//! stem stride for RMG-PMSI).
//!
//! - **torchvision's names.** Every parameter and BatchNorm buffer is created through
//!   [`fgvc_ops::Params::pp`] under its torchvision `state_dict` name (`conv1.weight`,
//!   `layer3.5.bn2.running_var`, `features.1.conv.0.0.weight`, `classifier.6.bias`), so a torchvision
//!   checkpoint loads into the [`fgvc_ops::ParamStore`] unchanged.
//! - **torchvision's initialisation**, drawn from the store's seeded streams: the same seed gives the same
//!   model.
//! - **Stages.** [`Backbone::forward_stages`] returns the feature map of every stage (see [`StageInfo`]:
//!   channels and reductions, like timm's `feature_info`); [`Backbone::pool`] and [`Backbone::classify`]
//!   finish the pass, so a method gets stage maps and logits from one forward.
//! - **Training mode** everywhere: BatchNorm with batch statistics and running-statistics updates, pooling
//!   with correct gradients (from `fgvc-ops`), and a seeded [`Dropout`]. The networks and their blocks
//!   (residual blocks, inverted residuals, VGG's conv blocks) implement candle's
//!   [`ModuleT`](candle_core::ModuleT), `forward_t(x, train)`.
//! - **By name**, as timm's `create_model(name, **kwargs)`: [`create`] a `Box<dyn Backbone>` from
//!   torchvision's name and [`BackboneOptions`] (width, stem stride, classes, dropout), each checked against
//!   the backbone with a typed [`OptionError`]; [`build`] one exactly as torchvision's constructor does.
//! - Any input size the architectures allow (VGG's classifier adapts through `AdaptiveAvgPool2d(7)`).
//!
//! **Verified against torchvision** (`tests/parity.rs`): parameters filled from a formula of name and index
//! that `tests/fixtures/gen_fixtures.py` also applies in PyTorch give the same eval logits, pooled features
//! and stage maps for ResNet-50, VGG-16 and VGG-16-BN (with 512-wide classifiers) and MobileNetV2 (max
//! relative difference about 1e-6), and the same training-mode gradients and running statistics for
//! ResNet-18 and MobileNetV2 (about 2e-5 against a float64 reference).
//!
//! Beyond torchvision (documented as extensions): [`ResNetConfig::base_width`] and [`VggConfig::hidden`]
//! shrink the networks for tests and CPU demos while keeping their layouts and names.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use fgvc_backbone::{Backbone, ResNet};
//! use fgvc_ops::ParamStore;
//!
//! let store = ParamStore::new(42, DType::F32, &Device::Cpu);
//! let net = ResNet::resnet50(None, &store.root())?; // headless: no `fc`
//! let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
//! let stages = net.forward_stages(&x, false)?;
//! for (info, map) in net.stage_info().iter().zip(&stages) {
//!     println!("{:<6} {:<8} stride {:>2}: {:?}", info.name, info.module, info.reduction, map.dims());
//! }
//! assert_eq!(stages[4].dims(), &[1, 2048, 2, 2]);
//! assert_eq!(net.pool(&stages[4], false)?.dims(), &[1, 2048]);
//! assert!(net.classify(&net.pool(&stages[4], false)?, false)?.is_none());
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! Pretrained torchvision weights load by name into the same store ([`weights`]); a new classifier keeps
//! its initialisation:
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use fgvc_backbone::weights::{load_into, LoadOptions};
//! use fgvc_backbone::{create, BackboneOptions};
//! use fgvc_ops::ParamStore;
//!
//! let store = ParamStore::new(0, DType::F32, &Device::Cpu);
//! let _net = create("resnet50", &BackboneOptions::classes(200), &store.root())?;
//! let report = load_into(&store, "data/weights/resnet50.safetensors", &LoadOptions::new().reinitialise("fc."))?;
//! println!("{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod backbone;
mod create;
mod kind;
mod mobilenet_v2;
mod options;
mod resnet;
#[cfg(test)]
mod testing;
mod vgg;
pub mod weights;

pub use backbone::{Backbone, StageInfo};
pub use create::{build, create, BackboneError};
pub use fgvc_ops::Dropout;
pub use kind::{BackboneKind, UnknownBackbone};
pub use mobilenet_v2::{make_divisible, MobileNetV2, MobileNetV2Config};
pub use options::{BackboneDefaults, BackboneOption, BackboneOptions, OptionError};
pub use resnet::{BlockKind, ResNet, ResNetConfig};
pub use vgg::{Vgg, VggConfig};
