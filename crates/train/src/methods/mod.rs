//! The training methods: [`baseline`] (plain fine-tuning) and the fine-grained ones, [`pmg`] (PMG),
//! [`dcl`] (DCL), [`rmg_pmsi`] (RMG-PMSI) and [`coarse2fine`] (Coarse2Fine). Each is a [`Method`](crate::Method)
//! with a [`MethodDef`](crate::registry::MethodDef) (its options type, check and build) and one
//! [`SPEC`](pmg::SPEC) entry in the [registry](crate::registry), which builds it from a run configuration.
//!
//! Every method follows its official code by default (batch layout, loss weights, optimiser groups,
//! `zero_grad` semantics) and exposes the paper's variant as a named option where the two differ. The
//! options live in `[method.options]` and are checked strictly: an unknown key is an error.
//!
//! Shared conventions:
//!
//! * The backbone is headless and its parameters keep torchvision's names; every new layer lives under
//!   [`HEAD_PREFIX`] (`heads.`).
//! * Multi-stage heads (PMG, RMG-PMSI) read the three deepest stages of
//!   [`Backbone::stage_info`](fgvc_backbone::Backbone::stage_info): ResNet `layer2`..`layer4`, VGG-16
//!   `block3`..`block5` (conv3_3, conv4_3, conv5_3 after their ReLU, before the pool), MobileNetV2
//!   `features[4:7]`, `features[7:14]`, `features[14:]` (RMG-PMSI's x3, x4, x5). Single-map heads (DCL,
//!   Coarse2Fine) read the deepest stage.
//! * The new layers train at `head_lr_mult` (official: 10) times `optim.lr`, which is the backbone's rate
//!   ([`backbone_and_head_groups`]).
//! * The backbone comes from `[model]` ([`crate::model::build_backbone`]), including MobileNetV2's
//!   `width_mult` and `first_stride`, so every method trains the same network.

pub mod baseline;
pub mod coarse2fine;
pub mod dcl;
pub mod pmg;
pub mod rmg_pmsi;

use candle_core::{DType, Tensor, D};
use fgvc_ops::ParamStore;

use crate::error::{Result, TrainError};
pub(crate) use crate::model::build_backbone;
use crate::model::ModelConfig;
use crate::optim::GroupSpec;

/// Prefix of every parameter a method adds on top of the backbone.
pub const HEAD_PREFIX: &str = "heads";

/// Refuses `model.head_lr_mult` for the fine-grained methods, whose rate ratio is `method.options.head_lr_mult` (with
/// the official default), so that one setting cannot silently override the other.
pub(crate) fn reject_model_head_lr_mult(model: &ModelConfig, method: &str) -> Result<()> {
    if model.head_lr_mult != 1.0 {
        return Err(TrainError::Config {
            origin: format!("[model] of {method:?}"),
            key: "model.head_lr_mult".into(),
            message: format!(
                "{method} takes its head learning-rate ratio from method.options.head_lr_mult (official \
                 default included); leave model.head_lr_mult at 1"
            ),
        });
    }
    if model.dropout != 0.0 {
        return Err(TrainError::Config {
            origin: format!("[model] of {method:?}"),
            key: "model.dropout".into(),
            message: format!("{method} has no baseline classifier to apply model.dropout to"),
        });
    }
    Ok(())
}

/// The default parameter groups of a fine-grained method: `heads` (everything under [`HEAD_PREFIX`]) at
/// `base_lr * head_lr_mult`, and `backbone` (every other parameter, selected by its top-level module name)
/// at `base_lr`, frozen for the first `backbone_freeze_epochs` epochs.
pub fn backbone_and_head_groups(
    store: &ParamStore,
    base_lr: f64,
    head_lr_mult: f64,
    backbone_freeze_epochs: usize,
) -> Vec<GroupSpec> {
    let mut roots: Vec<String> = store
        .trainable()
        .into_iter()
        .filter(|(n, _)| !fgvc_ops::is_buffer(n))
        .filter_map(|(n, _)| n.split('.').next().map(str::to_string))
        .filter(|r| r != HEAD_PREFIX)
        .collect();
    roots.sort();
    roots.dedup();
    vec![
        GroupSpec {
            name: "heads".into(),
            params: vec![HEAD_PREFIX.into()],
            lr: Some(base_lr * head_lr_mult),
            weight_decay: None,
            freeze_epochs: 0,
        },
        GroupSpec {
            name: "backbone".into(),
            params: roots,
            lr: Some(base_lr),
            weight_decay: None,
            freeze_epochs: backbone_freeze_epochs,
        },
    ]
}

/// Mean cross-entropy of `logits` `[N, C]` against `labels` `[N]`, scaled by `weight`.
pub(crate) fn weighted_ce(logits: &Tensor, labels: &Tensor, weight: f64) -> Result<Tensor> {
    let ce = candle_nn::loss::cross_entropy(logits, labels)?;
    Ok(if weight == 1.0 {
        ce
    } else {
        ce.affine(weight, 0.0)?
    })
}

/// The value of a scalar loss on the host, in f64 (a bf16 or f16 loss read through f32).
pub(crate) fn scalar(loss: &Tensor) -> Result<f64> {
    Ok(f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?))
}

/// Rows of `logits` whose arg-max equals the label.
pub(crate) fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    let eq = pred.eq(&labels.to_dtype(pred.dtype())?)?;
    Ok(eq.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize)
}

/// Turns an augmentation error into a training error.
pub(crate) fn augment_error(e: fgvc_augment::AugmentError) -> TrainError {
    TrainError::Msg(format!("augment: {e}"))
}

/// Checks that a learning-rate ratio and loss weights are finite and non-negative.
pub(crate) fn check_non_negative(key: &str, values: &[f64]) -> Result<()> {
    if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return Err(TrainError::Config {
            origin: "[method.options]".into(),
            key: format!("method.options.{key}"),
            message: format!("must be finite and non-negative, got {v}"),
        });
    }
    Ok(())
}

/// An options error for `key` (relative to `method.options`).
pub(crate) fn option_error(key: &str, message: impl Into<String>) -> TrainError {
    TrainError::Config {
        origin: "[method.options]".into(),
        key: format!("method.options.{key}"),
        message: message.into(),
    }
}
