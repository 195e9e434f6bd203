//! Coarse2Fine (Eshratifar et al., arXiv 1909.02680) as fgvc designs it (no official code is public; see
//! `docs/heads.md` for the head and `docs/methods.md` for the method).
//!
//! * **Stage one (coarse)**, epochs `0..coarse_epochs`: the WS-DAN-style attention on the deepest stage of
//!   the raw images, trained with `CE(coarse)`. The inverse mapping receives no gradient.
//! * **Stage two (fine)**, the remaining epochs: [`Coarse2Fine::forward_t`] runs the coarse pass, the inverse
//!   mapping's region map, the differentiable zoom and the fine pass through the same backbone and attention;
//!   the loss is `coarse_weight · CE(coarse) + fine_weight · CE(fine)`, and the fine loss reaches the
//!   attention through the zoom and the inverse mapping.
//! * **Prediction**: `combined` (the mean of the coarse and fine logits, the main one), `coarse`, `fine`.
//! * **Optimiser** (WS-DAN's, the probable base): one learning rate for all parameters
//!   (`head_lr_mult` 1), SGD momentum 0.9, weight decay 1e-5, step decay ×0.9 every 2 epochs (configuration).

use candle_core::Tensor;
use fgvc_backbone::{Backbone, BackboneDefaults};
use fgvc_data::Batch;
use fgvc_heads::coarse2fine::{AttentionOutput, Coarse2Fine, Coarse2FineConfig, Coarse2FineOutput};
use fgvc_ops::ParamStore;
use serde::{Deserialize, Serialize};

use super::{
    backbone_and_head_groups, build_backbone, check_non_negative, count_correct, option_error,
    reject_model_head_lr_mult, scalar, weighted_ce, HEAD_PREFIX,
};
use crate::config::geometry::BackboneGeometry;
use crate::config::Config;
use crate::error::Result;
use crate::method::{Method, Predictions, StepContext, StepStats};
use crate::model::ModelConfig;
use crate::optim::GroupSpec;
use crate::registry::spec::{MethodDef, MethodSpec, Preset, Presets, Published};

/// The name in `[method] name`.
pub const NAME: &str = "coarse2fine";

/// The registry's entry.
pub const SPEC: MethodSpec = MethodSpec::of::<Coarse2FineMethod>(
    "Coarse2Fine (Eshratifar et al., arXiv 1909.02680), on WS-DAN's setup",
    Presets {
        cub: Some(Preset("configs/coarse2fine-resnet50-cub.toml")),
        synthetic: Some(Preset("configs/coarse2fine-synthetic.toml")),
        paper_backbone: "resnet50",
        published: &[Published {
            backbone: "resnet50",
            top1: None,
            source: "not recovered (no code, no full text; for orientation WS-DAN reports 89.4 with Inception-v3)",
        }],
        bench_backbones: &["resnet50"],
    },
);

/// `[method.options]` of `coarse2fine`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Coarse2FineOptions {
    /// Epochs of stage one (coarse only) before stage two starts (ours: 40 of WS-DAN's 160).
    pub coarse_epochs: usize,
    /// Number of attention maps M (WS-DAN: 32).
    pub num_attentions: usize,
    /// Width D of the reduced features in the inverse mapping (8).
    pub reduce_channels: usize,
    /// Hidden width of the inverse mapping (32).
    pub hidden_channels: usize,
    /// Padding of the zoom box, as a fraction of its size (WS-DAN crops: 0.1).
    pub zoom_padding: f64,
    /// Smallest zoom box side, as a fraction of the image side (0.25).
    pub min_zoom: f64,
    /// Weight of the coarse cross-entropy in stage two (1).
    pub coarse_weight: f64,
    /// Weight of the fine cross-entropy in stage two (1).
    pub fine_weight: f64,
    /// Initialise the attention projection orthogonally (the paper: true); `false` is the ablation with
    /// PyTorch's default conv init.
    pub orthogonal_init: bool,
    /// Learning rate of the heads over `optim.lr` (WS-DAN: 1, one rate for everything).
    pub head_lr_mult: f64,
}

impl Default for Coarse2FineOptions {
    fn default() -> Self {
        Coarse2FineOptions {
            coarse_epochs: 40,
            num_attentions: 32,
            reduce_channels: 8,
            hidden_channels: 32,
            zoom_padding: 0.1,
            min_zoom: 0.25,
            coarse_weight: 1.0,
            fine_weight: 1.0,
            orthogonal_init: true,
            head_lr_mult: 1.0,
        }
    }
}

impl Coarse2FineOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.num_attentions == 0 || self.reduce_channels == 0 || self.hidden_channels == 0 {
            return Err(option_error(
                "num_attentions",
                "head widths must be positive",
            ));
        }
        if !(0.0..=1.0).contains(&self.min_zoom) {
            return Err(option_error(
                "min_zoom",
                format!("must be in [0, 1], got {}", self.min_zoom),
            ));
        }
        check_non_negative("zoom_padding", &[self.zoom_padding])?;
        check_non_negative("coarse_weight", &[self.coarse_weight])?;
        check_non_negative("fine_weight", &[self.fine_weight])?;
        check_non_negative("head_lr_mult", &[self.head_lr_mult])?;
        Ok(())
    }
}

/// The Coarse2Fine method: a backbone, the [`Coarse2Fine`] head on its deepest stage, and the two stages.
pub struct Coarse2FineMethod {
    store: ParamStore,
    backbone: Box<dyn Backbone>,
    head: Coarse2Fine,
    options: Coarse2FineOptions,
}

impl Coarse2FineMethod {
    /// The model of `model` with `options` and a `num_classes`-way output, parameters drawn from `store`.
    pub fn new(
        model: &ModelConfig,
        options: Coarse2FineOptions,
        num_classes: usize,
        store: ParamStore,
    ) -> Result<Self> {
        options.validate()?;
        let root = store.root();
        let backbone = build_backbone(model, &root)?;
        let cfg = Coarse2FineConfig {
            in_channels: *backbone.stage_channels().last().unwrap_or(&0),
            num_attentions: options.num_attentions,
            num_classes,
            reduce_channels: options.reduce_channels,
            hidden_channels: options.hidden_channels,
            zoom_padding: options.zoom_padding,
            min_zoom: options.min_zoom,
            orthogonal_init: options.orthogonal_init,
        };
        let head = Coarse2Fine::new(cfg, &root.pp(HEAD_PREFIX))?;
        Ok(Coarse2FineMethod {
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
    pub fn head(&self) -> &Coarse2Fine {
        &self.head
    }

    /// The options.
    pub fn options(&self) -> &Coarse2FineOptions {
        &self.options
    }

    /// Whether `epoch` (0-based) belongs to stage two.
    pub fn is_fine_epoch(&self, epoch: usize) -> bool {
        epoch >= self.options.coarse_epochs
    }

    fn deepest(&self, images: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let stages = self.backbone.forward_stages(images, train)?;
        stages.last().cloned().ok_or_else(|| {
            candle_core::Error::Msg("Coarse2Fine: the backbone returned no stage".into())
        })
    }

    /// Stage one's pass: the attention branch on the raw images.
    pub fn coarse(&self, images: &Tensor, train: bool) -> Result<AttentionOutput> {
        let features = self.deepest(images, train)?;
        Ok(self.head.attend(&features, train)?)
    }

    /// Stage two's pass: coarse, region map, zoom and fine.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<Coarse2FineOutput> {
        Ok(self
            .head
            .forward_t(images, |x| self.deepest(x, train), train)?)
    }

    /// Stage two's losses `(coarse CE, fine CE)` (unweighted) with the output.
    pub fn fine_losses(
        &self,
        images: &Tensor,
        labels: &Tensor,
    ) -> Result<(Tensor, Tensor, Coarse2FineOutput)> {
        let out = self.forward_t(images, true)?;
        let coarse = weighted_ce(&out.coarse.logits, labels, 1.0)?;
        let fine = weighted_ce(&out.fine.logits, labels, 1.0)?;
        Ok((coarse, fine, out))
    }
}

impl MethodDef for Coarse2FineMethod {
    const NAME: &'static str = NAME;
    type Options = Coarse2FineOptions;

    /// The options, then the images against the backbone (the zoom resamples to the input size, so no
    /// grid constrains it).
    fn check(options: &Coarse2FineOptions, config: &Config) -> Result<()> {
        reject_model_head_lr_mult(&config.model, NAME)?;
        options.validate()?;
        let net = BackboneGeometry::of(&config.model, &BackboneDefaults::default())?;
        net.check_input(&config.data.input_sizes()?)
    }

    fn build(
        config: &Config,
        options: Coarse2FineOptions,
        num_classes: usize,
        store: ParamStore,
    ) -> Result<Self> {
        if options.coarse_epochs >= config.train.epochs {
            tracing::warn!(
                "coarse2fine: coarse_epochs = {} >= train.epochs = {}: stage two (fine) never runs",
                options.coarse_epochs,
                config.train.epochs
            );
        }
        Self::new(&config.model, options, num_classes, store)
    }
}

impl Method for Coarse2FineMethod {
    fn name(&self) -> &str {
        NAME
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn train_step(&mut self, batch: &Batch, ctx: &mut StepContext<'_>) -> Result<StepStats> {
        if !self.is_fine_epoch(ctx.epoch()) {
            let out = self.coarse(&batch.images, true)?;
            let loss = weighted_ce(&out.logits, &batch.labels, 1.0)?;
            let value = ctx.backward_step(&loss)?;
            return Ok(StepStats {
                loss: value,
                correct: count_correct(&out.logits.detach(), &batch.labels)?,
                count: batch.len(),
                losses: vec![("coarse".into(), value)],
            });
        }
        let (coarse, fine, out) = self.fine_losses(&batch.images, &batch.labels)?;
        let parts = (scalar(&coarse)?, scalar(&fine)?);
        let loss = coarse
            .affine(self.options.coarse_weight, 0.0)?
            .add(&fine.affine(self.options.fine_weight, 0.0)?)?;
        let value = ctx.backward_step(&loss)?;
        let prediction = out.prediction()?.detach();
        Ok(StepStats {
            loss: value,
            correct: count_correct(&prediction, &batch.labels)?,
            count: batch.len(),
            losses: vec![("coarse".into(), parts.0), ("fine".into(), parts.1)],
        })
    }

    fn predict(&self, images: &Tensor) -> Result<Predictions> {
        let out = self.forward_t(images, false)?;
        Ok(Predictions {
            heads: vec![
                ("combined".into(), out.prediction()?),
                ("coarse".into(), out.coarse.logits.clone()),
                ("fine".into(), out.fine.logits.clone()),
            ],
        })
    }

    fn export(
        &self,
        g: &mut fgvc_onnx::Graph,
        images: &fgvc_onnx::Value,
    ) -> Result<Vec<(String, fgvc_onnx::Value)>> {
        let backbone = |g: &mut fgvc_onnx::Graph, x: &fgvc_onnx::Value| {
            let stages = self.backbone.export_stages(g, x)?;
            stages.last().cloned().ok_or_else(|| {
                fgvc_onnx::ExportError::Unsupported("Coarse2Fine: a backbone without stages".into())
            })
        };
        let out = self.head.export(g, images, backbone)?;
        Ok(vec![
            ("combined".into(), out.prediction(g)?),
            ("coarse".into(), out.coarse.clone()),
            ("fine".into(), out.fine.clone()),
        ])
    }

    fn default_groups(&self, base_lr: f64) -> Vec<GroupSpec> {
        if self.options.head_lr_mult == 1.0 {
            return Vec::new();
        }
        backbone_and_head_groups(&self.store, base_lr, self.options.head_lr_mult, 0)
    }

    fn explain(&self) -> Result<&dyn crate::explain::Explain> {
        Ok(self)
    }
}
