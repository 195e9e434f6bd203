//! RMG-PMSI (Wu et al., arXiv 2112.04223 / BMVC 2022) as its official `main.py` trains it.
//!
//! PMG's progressive loop with a recursive mosaic instead of the flat jigsaw, and the multi-stage
//! interaction head ([`PmsiHead`]):
//!
//! ```text
//! for (r, k, w) in [(3, 0, 1), (2, 1, 1), (1, 2, 1), (None, 3, 2)]:
//!     out  = model(RMG(x, r) if r else x)              # one mosaic per batch, full forward
//!     loss = w * CE(out[k], y); backward
//!     if epoch >= 5: opt_backbone.step()               # backbone frozen for epochs 0-4
//!     opt_heads.step()
//! ```
//!
//! * The freeze is the engine's: the `backbone` group of [`RmgPmsi::default_groups`] has
//!   `freeze_epochs = 5`, so the optimiser skips it (no update, no momentum, no decay) while its gradients
//!   are still computed and its BatchNorm statistics still move, as in the official code.
//! * The MobileNetV2 stem has stride 1 (`MobilenetV2_for_PMSI`), unless `model.first_stride` says otherwise.
//! * MSI couples all three stages, so every step's loss reaches every block and the whole backbone; only the
//!   classifiers are step-specific.
//! * PyTorch < 2.0 `zero_grad` semantics ([`ZeroGrad::Zero`]).
//! * Prediction (official "mix"): `combined` = the sum of the four logits (main), then `classifier1`..,
//!   `concat`.
//! * MSI dropout draws from the head's own seeded stream (`fgvc_heads::blocks::Dropout`), not from the
//!   step's keyed stream: a resumed run replays different dropout masks than an uninterrupted one.

use candle_core::Tensor;
use fgvc_augment::RecursiveMosaic;
use fgvc_backbone::{Backbone, BackboneDefaults};
use fgvc_data::Batch;
use fgvc_heads::msi::{PmsiConfig, PmsiHead, PmsiOutput};
use fgvc_ops::ParamStore;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::pmg::{progressive_destructions, progressive_train_step, stage_predictions, step_names};
use super::{
    augment_error, backbone_and_head_groups, check_non_negative, option_error,
    reject_model_head_lr_mult, weighted_ce, HEAD_PREFIX,
};
use crate::config::geometry::{check_grid_divides, BackboneGeometry};
use crate::config::Config;
use crate::error::Result;
use crate::method::{Method, Predictions, StepContext, StepStats};
use crate::model::{build_backbone_with, ModelConfig};
use crate::optim::{GroupSpec, ZeroGrad};
use crate::registry::spec::{MethodDef, MethodSpec, Preset, Presets, Published};

/// The name in `[method] name`.
pub const NAME: &str = "rmg-pmsi";

/// The registry's entry.
pub const SPEC: MethodSpec = MethodSpec::of::<RmgPmsi>(
    "Recursive Mosaic Generator + Progressive Multi-Stage Interaction (Wu et al., BMVC 2022)",
    Presets {
        cub: Some(Preset("configs/rmg-pmsi-mobilenet_v2-cub.toml")),
        synthetic: Some(Preset("configs/rmg-pmsi-synthetic.toml")),
        paper_backbone: "mobilenet_v2",
        published: &[Published {
            backbone: "mobilenet_v2",
            top1: None,
            source: "the RMG-PMSI paper's tables could not be recovered",
        }],
        bench_backbones: &["mobilenet_v2"],
    },
);

/// `[method.options]` of `rmg-pmsi`; every field has the official value as its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmgPmsiOptions {
    /// Mosaic depth of each progressive step, one per stage (official `[3, 2, 1]`).
    pub levels: Vec<usize>,
    /// Loss weight of each step, S + 1 values (official `[1, 1, 1, 2]`).
    pub loss_weights: Vec<f64>,
    /// The 1x1 conv width, MSI's hidden width and the classifiers' hidden width (official 320).
    pub feature_size: usize,
    /// Output channels of each `smooth_conv`'s 3x3 conv (official: half the deepest stage, 640).
    pub block_channels: Option<usize>,
    /// MSI dropout probability (official 0.5).
    pub dropout: f64,
    /// Epochs during which the backbone is not updated (official 5).
    pub backbone_freeze_epochs: usize,
    /// The multi-stage interaction (true, the method). `false` is the ablation "RMG-PMSI without MSI": the
    /// pooled stage features go to the classifiers ungated.
    pub msi: bool,
    /// Learning rate of the heads over `optim.lr` (official 3e-3 / 3e-4 = 10).
    pub head_lr_mult: f64,
}

impl Default for RmgPmsiOptions {
    fn default() -> Self {
        RmgPmsiOptions {
            levels: vec![3, 2, 1],
            loss_weights: vec![1.0, 1.0, 1.0, 2.0],
            feature_size: 320,
            block_channels: None,
            dropout: 0.5,
            backbone_freeze_epochs: 5,
            msi: true,
            head_lr_mult: 10.0,
        }
    }
}

impl RmgPmsiOptions {
    /// Checks lengths and ranges.
    pub fn validate(&self) -> Result<()> {
        let s = self.levels.len();
        if s == 0 || self.levels.iter().any(|&l| l == 0 || l > 12) {
            return Err(option_error(
                "levels",
                "needs at least one level, each in 1..=12",
            ));
        }
        if self.loss_weights.len() != s + 1 {
            return Err(option_error(
                "loss_weights",
                format!(
                    "needs {} weights (one per mosaic step and one for the concat step), got {}",
                    s + 1,
                    self.loss_weights.len()
                ),
            ));
        }
        check_non_negative("loss_weights", &self.loss_weights)?;
        check_non_negative("head_lr_mult", &[self.head_lr_mult])?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(option_error(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        if self.feature_size == 0 || self.block_channels == Some(0) {
            return Err(option_error("feature_size", "head widths must be positive"));
        }
        Ok(())
    }
}

/// The RMG-PMSI method: a backbone, [`PmsiHead`] on its S deepest stages, the recursive mosaic and the
/// progressive loop with a frozen backbone at first.
pub struct RmgPmsi {
    store: ParamStore,
    backbone: Box<dyn Backbone>,
    head: PmsiHead,
    options: RmgPmsiOptions,
}

impl RmgPmsi {
    /// The model of `model` with `options` and a `num_classes`-way output, parameters drawn from `store`.
    pub fn new(
        model: &ModelConfig,
        options: RmgPmsiOptions,
        num_classes: usize,
        store: ParamStore,
    ) -> Result<Self> {
        options.validate()?;
        let root = store.root();
        let backbone = build_backbone_with(model, &official_defaults(), &root)?;
        let channels = backbone.stage_channels();
        let deepest = *channels.last().unwrap_or(&0);
        let mut cfg = PmsiConfig::last_stages(
            &channels,
            options.levels.len(),
            options.feature_size,
            options.block_channels.unwrap_or(deepest / 2).max(1),
            num_classes,
        )?;
        cfg.dropout = options.dropout;
        cfg.interaction = options.msi;
        let head = PmsiHead::new(cfg, &root.pp(HEAD_PREFIX))?;
        Ok(RmgPmsi {
            store,
            backbone,
            head,
            options,
        })
    }

    /// The backbone.
    pub fn backbone(&self) -> &dyn Backbone {
        &*self.backbone
    }

    /// The head.
    pub fn head(&self) -> &PmsiHead {
        &self.head
    }

    /// The options.
    pub fn options(&self) -> &RmgPmsiOptions {
        &self.options
    }

    /// Number of optimiser steps per batch (S + 1).
    pub fn num_steps(&self) -> usize {
        self.options.levels.len() + 1
    }

    /// The full forward pass: backbone stages, blocks, MSI and every classifier.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<PmsiOutput> {
        let stages = self.backbone.forward_stages(images, train)?;
        Ok(self.head.forward_t(&stages, train)?)
    }

    /// The input of step `k` (0-based): the `levels[k]`-level mosaic of `images` for `k < S`, the images
    /// themselves for the last step.
    pub fn step_input(&self, images: &Tensor, k: usize, rng: &mut impl Rng) -> Result<Tensor> {
        match self.options.levels.get(k) {
            Some(&r) => Ok(RecursiveMosaic::new(r as u32)
                .and_then(|m| m.apply(images, rng))
                .map_err(augment_error)?
                .images),
            None => Ok(images.clone()),
        }
    }

    /// Step `k`'s weighted loss `w_k · CE(out[k], y)` on its input, with the full output of that pass.
    pub fn step_loss(
        &self,
        images: &Tensor,
        labels: &Tensor,
        k: usize,
        rng: &mut impl Rng,
    ) -> Result<(Tensor, PmsiOutput)> {
        let x = self.step_input(images, k, rng)?;
        let out = self.forward_t(&x, true)?;
        let logits = if k < out.stage_logits.len() {
            &out.stage_logits[k]
        } else {
            &out.concat_logits
        };
        let loss = weighted_ce(logits, labels, self.options.loss_weights[k])?;
        Ok((loss, out))
    }
}

/// The official backbone's defaults: MobileNetV2 with a stride-1 stem.
fn official_defaults() -> BackboneDefaults {
    BackboneDefaults {
        first_stride: Some(1),
        ..BackboneDefaults::default()
    }
}

impl MethodDef for RmgPmsi {
    const NAME: &'static str = NAME;
    type Options = RmgPmsiOptions;

    /// The options, then their geometry on the method's backbone (a stride-1 MobileNetV2 stem unless
    /// `[model]` says otherwise): one stage per level, each level's 2^level grid dividing the training images.
    fn check(options: &RmgPmsiOptions, config: &Config) -> Result<()> {
        reject_model_head_lr_mult(&config.model, NAME)?;
        options.validate()?;
        let net = BackboneGeometry::of(&config.model, &official_defaults())?;
        let sizes = config.data.input_sizes()?;
        net.check_input(&sizes)?;
        let key = "method.options.levels";
        net.check_taps(key, options.levels.len())?;
        for &level in &options.levels {
            let n = 1usize << level;
            check_grid_divides(
                key,
                &format!("level {level} (a {n}x{n} mosaic)"),
                n,
                (&sizes.train, "training"),
                "the recursive mosaic",
            )?;
        }
        Ok(())
    }

    fn build(
        config: &Config,
        options: RmgPmsiOptions,
        num_classes: usize,
        store: ParamStore,
    ) -> Result<Self> {
        Self::new(&config.model, options, num_classes, store)
    }
}

impl Method for RmgPmsi {
    fn name(&self) -> &str {
        NAME
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn train_step(&mut self, batch: &Batch, ctx: &mut StepContext<'_>) -> Result<StepStats> {
        let names = step_names("mosaic", &self.options.levels, self.num_steps());
        progressive_train_step(batch, ctx, &names, true, |k, rng| {
            let (loss, out) = self.step_loss(&batch.images, &batch.labels, k, rng)?;
            Ok((loss, out.concat_logits))
        })
    }

    fn predict(&self, images: &Tensor) -> Result<Predictions> {
        let out = self.forward_t(images, false)?;
        Ok(stage_predictions(
            out.combined()?,
            &out.stage_logits,
            &out.concat_logits,
        ))
    }

    fn export(
        &self,
        g: &mut fgvc_onnx::Graph,
        images: &fgvc_onnx::Value,
    ) -> Result<Vec<(String, fgvc_onnx::Value)>> {
        let stages = self.backbone.export_stages(g, images)?;
        let out = self.head.export(g, &stages)?;
        super::pmg::stage_prediction_values(g, &out)
    }

    fn default_groups(&self, base_lr: f64) -> Vec<GroupSpec> {
        backbone_and_head_groups(
            &self.store,
            base_lr,
            self.options.head_lr_mult,
            self.options.backbone_freeze_epochs,
        )
    }

    fn default_zero_grad(&self) -> ZeroGrad {
        ZeroGrad::Zero
    }

    /// The recursive mosaic of each progressive step, from that step's stream.
    fn destructions(
        &self,
        images: &Tensor,
        rng: &dyn Fn(u64) -> rand_chacha::ChaCha8Rng,
    ) -> Result<Vec<(String, Tensor)>> {
        progressive_destructions("mosaic", &self.options.levels, rng, |k, r| {
            self.step_input(images, k, r)
        })
    }

    fn explain(&self) -> Result<&dyn crate::explain::Explain> {
        Ok(self)
    }
}
