//! The options of a backbone built by name ([`crate::create`]): which of them a backbone has, and the bounds
//! they are checked against, in one place, so every caller (configuration files, methods, tools) reports
//! the same typed error.

use std::fmt;

use crate::kind::BackboneKind;

/// What may be changed about a backbone built by name; every option left unset takes torchvision's value.
///
/// Like timm's `create_model(name, **kwargs)`: one set of options for every backbone, each checked against
/// the backbone it is given to ([`BackboneOptions::validate`]). `Default` is a headless network with
/// torchvision's shape and no dropout.
///
/// ```
/// use fgvc_backbone::{BackboneKind, BackboneOption, BackboneOptions};
///
/// let options = BackboneOptions { base_width: Some(8), ..BackboneOptions::default() };
/// assert!(options.validate(BackboneKind::ResNet50).is_ok());
/// let err = options.validate(BackboneKind::Vgg16).unwrap_err();
/// assert_eq!(err.option, BackboneOption::BaseWidth);
/// assert_eq!(err.to_string(), "base_width applies to ResNets only, not vgg16");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BackboneOptions {
    /// ResNet only: channels of the stem and of `layer1` (torchvision: 64; see
    /// [`crate::ResNetConfig::base_width`]). At least 1.
    pub base_width: Option<usize>,
    /// MobileNetV2 only: the width multiplier (torchvision: 1.0). A positive, finite number.
    pub width_mult: Option<f64>,
    /// MobileNetV2 only: the stride of the stem conv (torchvision: 2; RMG-PMSI: 1). 1 or 2.
    pub first_stride: Option<usize>,
    /// Classes of the classifier; `None` builds a headless network (no classifier parameters). At least 1.
    pub num_classes: Option<usize>,
    /// Drop probability in the classifier, in `[0, 1)`: VGG's two dropout layers and MobileNetV2's one.
    /// torchvision's ResNet has no dropout, so a ResNet with a classifier refuses a nonzero value. A headless
    /// network has no classifier and only checks the range, for callers that put their own classifier on the
    /// pooled features.
    pub dropout: f64,
}

/// The options of [`BackboneOptions`], named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackboneOption {
    /// [`BackboneOptions::base_width`].
    BaseWidth,
    /// [`BackboneOptions::width_mult`].
    WidthMult,
    /// [`BackboneOptions::first_stride`].
    FirstStride,
    /// [`BackboneOptions::num_classes`].
    NumClasses,
    /// [`BackboneOptions::dropout`].
    Dropout,
}

impl BackboneOption {
    /// The field's name (`"base_width"`), which is also its key in a configuration's `[model]`.
    pub fn name(self) -> &'static str {
        match self {
            BackboneOption::BaseWidth => "base_width",
            BackboneOption::WidthMult => "width_mult",
            BackboneOption::FirstStride => "first_stride",
            BackboneOption::NumClasses => "num_classes",
            BackboneOption::Dropout => "dropout",
        }
    }

    /// Whether backbones of `kind` have this option.
    pub fn applies_to(self, kind: BackboneKind) -> bool {
        match self {
            BackboneOption::BaseWidth => kind.is_resnet(),
            BackboneOption::WidthMult | BackboneOption::FirstStride => {
                kind == BackboneKind::MobileNetV2
            }
            BackboneOption::NumClasses | BackboneOption::Dropout => true,
        }
    }

    /// The backbones that have this option, as errors name them.
    fn owners(self) -> &'static str {
        match self {
            BackboneOption::BaseWidth => "ResNets",
            BackboneOption::WidthMult | BackboneOption::FirstStride => "mobilenet_v2",
            BackboneOption::NumClasses | BackboneOption::Dropout => "every backbone",
        }
    }
}

impl fmt::Display for BackboneOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An option a backbone does not have, or a value out of its bounds: `"{option} {reason}"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} {reason}")]
pub struct OptionError {
    /// The offending option.
    pub option: BackboneOption,
    /// What is wrong with it, a phrase that follows the option's name (`"must be 1 or 2, not 3"`).
    pub reason: String,
}

impl OptionError {
    fn new(option: BackboneOption, reason: impl Into<String>) -> Self {
        Self {
            option,
            reason: reason.into(),
        }
    }
}

/// Values a caller prefers for the shape options a configuration leaves unset. Each is used only by the
/// backbones that have the option, so one set of defaults serves every backbone (RMG-PMSI: a stride-1
/// MobileNetV2 stem, with ResNets and VGGs unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BackboneDefaults {
    /// Default of [`BackboneOptions::base_width`].
    pub base_width: Option<usize>,
    /// Default of [`BackboneOptions::width_mult`].
    pub width_mult: Option<f64>,
    /// Default of [`BackboneOptions::first_stride`].
    pub first_stride: Option<usize>,
}

impl BackboneOptions {
    /// The options with a classifier of `num_classes` and everything else at its default.
    pub fn classes(num_classes: usize) -> Self {
        Self {
            num_classes: Some(num_classes),
            ..Self::default()
        }
    }

    /// Checks every option against `kind`: set only where the backbone has it, and within its bounds.
    /// Options the backbone lacks are reported before values out of bounds.
    ///
    /// ```
    /// use fgvc_backbone::{BackboneKind, BackboneOption, BackboneOptions};
    ///
    /// let options = BackboneOptions { first_stride: Some(3), ..BackboneOptions::default() };
    /// let err = options.validate(BackboneKind::MobileNetV2).unwrap_err();
    /// assert_eq!((err.option, err.reason.as_str()), (BackboneOption::FirstStride, "must be 1 or 2, not 3"));
    /// ```
    pub fn validate(&self, kind: BackboneKind) -> Result<(), OptionError> {
        let set = [
            (BackboneOption::WidthMult, self.width_mult.is_some()),
            (BackboneOption::FirstStride, self.first_stride.is_some()),
            (BackboneOption::BaseWidth, self.base_width.is_some()),
        ];
        if let Some(&(option, _)) = set
            .iter()
            .find(|(option, is_set)| *is_set && !option.applies_to(kind))
        {
            return Err(OptionError::new(
                option,
                format!("applies to {} only, not {kind}", option.owners()),
            ));
        }
        if let Some(w) = self.width_mult {
            if !(w > 0.0 && w.is_finite()) {
                return Err(OptionError::new(
                    BackboneOption::WidthMult,
                    format!("must be a positive number, not {w}"),
                ));
            }
        }
        if let Some(s) = self.first_stride {
            if !(1..=2).contains(&s) {
                return Err(OptionError::new(
                    BackboneOption::FirstStride,
                    format!("must be 1 or 2, not {s}"),
                ));
            }
        }
        if self.base_width == Some(0) {
            return Err(OptionError::new(
                BackboneOption::BaseWidth,
                "must be at least 1",
            ));
        }
        if self.num_classes == Some(0) {
            return Err(OptionError::new(
                BackboneOption::NumClasses,
                "must be at least 1 (None builds a headless network)",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(OptionError::new(
                BackboneOption::Dropout,
                format!("must be in [0, 1), not {}", self.dropout),
            ));
        }
        if self.dropout != 0.0 && kind.is_resnet() && self.num_classes.is_some() {
            return Err(OptionError::new(
                BackboneOption::Dropout,
                format!("must be 0 for {kind}: torchvision's ResNet has no dropout before fc"),
            ));
        }
        Ok(())
    }

    /// These options with every shape option left unset taken from `defaults`, where `kind` has it.
    ///
    /// ```
    /// use fgvc_backbone::{BackboneDefaults, BackboneKind, BackboneOptions};
    ///
    /// let stride1 = BackboneDefaults { first_stride: Some(1), ..BackboneDefaults::default() };
    /// let unset = BackboneOptions::default();
    /// assert_eq!(unset.or_defaults(BackboneKind::MobileNetV2, &stride1).first_stride, Some(1));
    /// assert_eq!(unset.or_defaults(BackboneKind::ResNet50, &stride1).first_stride, None);
    /// let set = BackboneOptions { first_stride: Some(2), ..unset };
    /// assert_eq!(set.or_defaults(BackboneKind::MobileNetV2, &stride1).first_stride, Some(2));
    /// ```
    pub fn or_defaults(&self, kind: BackboneKind, defaults: &BackboneDefaults) -> Self {
        let has = |option: BackboneOption| option.applies_to(kind);
        Self {
            base_width: self.base_width.or(defaults
                .base_width
                .filter(|_| has(BackboneOption::BaseWidth))),
            width_mult: self.width_mult.or(defaults
                .width_mult
                .filter(|_| has(BackboneOption::WidthMult))),
            first_stride: self.first_stride.or(defaults
                .first_stride
                .filter(|_| has(BackboneOption::FirstStride))),
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(options: BackboneOptions, kind: BackboneKind) -> (BackboneOption, String) {
        let e = options.validate(kind).unwrap_err();
        assert_eq!(e.to_string(), format!("{} {}", e.option, e.reason));
        (e.option, e.to_string())
    }

    const NONE: BackboneOptions = BackboneOptions {
        base_width: None,
        width_mult: None,
        first_stride: None,
        num_classes: None,
        dropout: 0.0,
    };

    #[test]
    fn defaults_are_valid_for_every_backbone() {
        for kind in BackboneKind::ALL {
            assert_eq!(BackboneOptions::default(), NONE);
            NONE.validate(kind).unwrap();
            BackboneOptions::classes(7).validate(kind).unwrap();
        }
    }

    #[test]
    fn base_width_applies_to_resnets_only_and_is_at_least_one() {
        let o = BackboneOptions {
            base_width: Some(8),
            ..NONE
        };
        for kind in BackboneKind::ALL {
            assert_eq!(o.validate(kind).is_ok(), kind.is_resnet(), "{kind}");
        }
        assert_eq!(
            err(o, BackboneKind::Vgg16),
            (
                BackboneOption::BaseWidth,
                "base_width applies to ResNets only, not vgg16".into()
            )
        );
        assert_eq!(
            err(o, BackboneKind::MobileNetV2).1,
            "base_width applies to ResNets only, not mobilenet_v2"
        );
        let zero = BackboneOptions {
            base_width: Some(0),
            ..NONE
        };
        assert_eq!(
            err(zero, BackboneKind::ResNet18),
            (
                BackboneOption::BaseWidth,
                "base_width must be at least 1".into()
            )
        );
    }

    #[test]
    fn width_mult_applies_to_mobilenet_only_and_is_a_positive_number() {
        let o = BackboneOptions {
            width_mult: Some(0.5),
            ..NONE
        };
        for kind in BackboneKind::ALL {
            assert_eq!(
                o.validate(kind).is_ok(),
                kind == BackboneKind::MobileNetV2,
                "{kind}"
            );
        }
        assert_eq!(
            err(o, BackboneKind::ResNet50),
            (
                BackboneOption::WidthMult,
                "width_mult applies to mobilenet_v2 only, not resnet50".into()
            )
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let o = BackboneOptions {
                width_mult: Some(bad),
                ..NONE
            };
            assert_eq!(
                err(o, BackboneKind::MobileNetV2),
                (
                    BackboneOption::WidthMult,
                    format!("width_mult must be a positive number, not {bad}")
                )
            );
        }
    }

    #[test]
    fn first_stride_applies_to_mobilenet_only_and_is_one_or_two() {
        let o = BackboneOptions {
            first_stride: Some(1),
            ..NONE
        };
        for kind in BackboneKind::ALL {
            assert_eq!(
                o.validate(kind).is_ok(),
                kind == BackboneKind::MobileNetV2,
                "{kind}"
            );
        }
        assert_eq!(
            err(o, BackboneKind::Vgg16Bn),
            (
                BackboneOption::FirstStride,
                "first_stride applies to mobilenet_v2 only, not vgg16_bn".into()
            )
        );
        for bad in [0, 3, 4] {
            let o = BackboneOptions {
                first_stride: Some(bad),
                ..NONE
            };
            assert_eq!(
                err(o, BackboneKind::MobileNetV2),
                (
                    BackboneOption::FirstStride,
                    format!("first_stride must be 1 or 2, not {bad}")
                )
            );
        }
        BackboneOptions {
            first_stride: Some(2),
            ..NONE
        }
        .validate(BackboneKind::MobileNetV2)
        .unwrap();
    }

    #[test]
    fn num_classes_is_at_least_one() {
        let o = BackboneOptions {
            num_classes: Some(0),
            ..NONE
        };
        for kind in BackboneKind::ALL {
            let (option, message) = err(o, kind);
            assert_eq!(option, BackboneOption::NumClasses);
            assert!(
                message.starts_with("num_classes must be at least 1"),
                "{message}"
            );
        }
    }

    #[test]
    fn dropout_is_in_the_unit_interval_and_absent_from_resnet_classifiers() {
        for bad in [-0.1, 1.0, 1.5, f64::NAN] {
            let o = BackboneOptions {
                dropout: bad,
                ..NONE
            };
            assert_eq!(
                err(o, BackboneKind::Vgg16),
                (
                    BackboneOption::Dropout,
                    format!("dropout must be in [0, 1), not {bad}")
                )
            );
        }
        let half = BackboneOptions {
            dropout: 0.5,
            ..NONE
        };
        for kind in BackboneKind::ALL {
            // Headless: only the range is checked.
            half.validate(kind).unwrap();
            let with_fc = BackboneOptions {
                num_classes: Some(3),
                ..half
            };
            assert_eq!(with_fc.validate(kind).is_ok(), !kind.is_resnet(), "{kind}");
        }
        let with_fc = BackboneOptions {
            num_classes: Some(3),
            ..half
        };
        assert_eq!(
            err(with_fc, BackboneKind::ResNet18),
            (
                BackboneOption::Dropout,
                "dropout must be 0 for resnet18: torchvision's ResNet has no dropout before fc"
                    .into()
            )
        );
    }

    #[test]
    fn an_option_the_backbone_lacks_is_reported_before_a_bad_value() {
        let o = BackboneOptions {
            first_stride: Some(5),
            base_width: Some(0),
            ..NONE
        };
        assert_eq!(
            err(o, BackboneKind::ResNet18).0,
            BackboneOption::FirstStride
        );
        assert_eq!(
            err(o, BackboneKind::MobileNetV2).0,
            BackboneOption::BaseWidth
        );
    }

    #[test]
    fn defaults_fill_only_unset_options_the_backbone_has() {
        let defaults = BackboneDefaults {
            base_width: Some(16),
            width_mult: Some(0.5),
            first_stride: Some(1),
        };
        let r = NONE.or_defaults(BackboneKind::ResNet34, &defaults);
        assert_eq!(
            r,
            BackboneOptions {
                base_width: Some(16),
                ..NONE
            }
        );
        let m = NONE.or_defaults(BackboneKind::MobileNetV2, &defaults);
        assert_eq!(
            (m.base_width, m.width_mult, m.first_stride),
            (None, Some(0.5), Some(1))
        );
        assert_eq!(NONE.or_defaults(BackboneKind::Vgg16, &defaults), NONE);
        let set = BackboneOptions {
            base_width: Some(4),
            width_mult: Some(0.25),
            first_stride: Some(2),
            num_classes: Some(9),
            dropout: 0.1,
        };
        for kind in BackboneKind::ALL {
            assert_eq!(set.or_defaults(kind, &defaults), set);
        }
    }
}
