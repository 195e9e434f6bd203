//! PMG (Du et al., ECCV 2020) as its official `train.py` trains it.
//!
//! Each batch is used for S + 1 = 4 optimiser steps:
//!
//! ```text
//! for (n, k, w) in [(8, 0, 1), (4, 1, 1), (2, 2, 1), (None, 3, 2)]:
//!     x    = jigsaw(images, n) if n else images     # one n²-cycle shared by the batch (official mode)
//!     outs = model(x)                               # full forward: every head and BatchNorm runs
//!     loss = w * CE(outs[k], y); backward; step     # momentum buffers shared across the four steps
//! ```
//!
//! Step k's loss reaches the backbone up to the stage head k reads (step 1: `layer2` and below on a ResNet)
//! and only head k's block and classifier; the last step trains all blocks and `classifier_concat`. The
//! official code ran PyTorch 1.3/1.4, whose `zero_grad` leaves zero gradients in place, so momentum and
//! weight decay move every parameter that ever had a gradient at each of the four steps:
//! [`Pmg::default_zero_grad`](crate::Method::default_zero_grad) is [`ZeroGrad::Zero`].
//!
//! Prediction (official `test()`): `combined` = the sum of the four logits (main), then `classifier1`..,
//! and `concat`.

use candle_core::Tensor;
use fgvc_augment::{Jigsaw, JigsawMode};
use fgvc_backbone::{Backbone, BackboneDefaults};
use fgvc_data::Batch;
use fgvc_heads::pmg::{PmgConfig, PmgHead, PmgOutput};
use fgvc_ops::ParamStore;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{
    augment_error, backbone_and_head_groups, build_backbone, check_non_negative, count_correct,
    option_error, reject_model_head_lr_mult, scalar, weighted_ce, HEAD_PREFIX,
};
use crate::config::geometry::{check_grid_divides, BackboneGeometry};
use crate::config::Config;
use crate::error::Result;
use crate::method::{Method, Predictions, StepContext, StepStats};
use crate::model::ModelConfig;
use crate::optim::{GroupSpec, ZeroGrad};
use crate::registry::spec::{MethodDef, MethodSpec, Preset, Presets, Published};

/// The name in `[method] name`.
pub const NAME: &str = "pmg";

/// The registry's entry.
pub const SPEC: MethodSpec = MethodSpec::of::<Pmg>(
    "Progressive Multi-Granularity training (Du et al., ECCV 2020)",
    Presets {
        cub: Some(Preset("configs/pmg-resnet50-cub.toml")),
        synthetic: Some(Preset("configs/pmg-synthetic.toml")),
        paper_backbone: "resnet50",
        published: &[
            Published {
                backbone: "resnet50",
                top1: Some(89.6),
                source: "PMG paper (ECCV 2020), combined prediction; the author's five reruns of the code: 89.54-89.74 (issue #11)",
            },
            Published {
                backbone: "vgg16",
                top1: None,
                source: "reported in the PMG paper, value not recovered",
            },
        ],
        bench_backbones: &["resnet50", "mobilenet_v2"],
    },
);

/// `[method.options]` of `pmg`; every field has the official value as its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PmgOptions {
    /// Jigsaw granularity of each progressive step, one per stage head (official `[8, 4, 2]`; S = its
    /// length, the heads read the S deepest stages).
    pub granularities: Vec<usize>,
    /// Loss weight of each step, S + 1 values (official `[1, 1, 1, 2]`: the concat step counts double).
    pub loss_weights: Vec<f64>,
    /// How the jigsaw permutation is drawn: `official` (one n²-cycle for the batch) or `per_image`.
    pub jigsaw: JigsawMode,
    /// Width of each block's 1x1 conv and of the classifiers' hidden layer (official 512).
    pub feature_size: usize,
    /// Output channels of each block's 3x3 conv (official: half the deepest stage, 1024 on ResNet-50).
    pub block_channels: Option<usize>,
    /// Learning rate of the heads over `optim.lr` (official 0.002 / 0.0002 = 10).
    pub head_lr_mult: f64,
    /// One optimiser step per granularity, then the concat step (official: the progressive training).
    /// `false` sums the S + 1 weighted losses, each on its own jigsaw, into one step per batch: the jigsaw
    /// without the progressive steps, an ablation.
    pub progressive: bool,
}

impl Default for PmgOptions {
    fn default() -> Self {
        PmgOptions {
            granularities: vec![8, 4, 2],
            loss_weights: vec![1.0, 1.0, 1.0, 2.0],
            jigsaw: JigsawMode::Official,
            feature_size: 512,
            block_channels: None,
            head_lr_mult: 10.0,
            progressive: true,
        }
    }
}

impl PmgOptions {
    /// Checks lengths and ranges.
    pub fn validate(&self) -> Result<()> {
        let s = self.granularities.len();
        if s == 0 || self.granularities.contains(&0) {
            return Err(option_error(
                "granularities",
                "needs at least one positive granularity",
            ));
        }
        if self.loss_weights.len() != s + 1 {
            return Err(option_error(
                "loss_weights",
                format!(
                    "needs {} weights (one per jigsaw step and one for the concat step), got {}",
                    s + 1,
                    self.loss_weights.len()
                ),
            ));
        }
        check_non_negative("loss_weights", &self.loss_weights)?;
        check_non_negative("head_lr_mult", &[self.head_lr_mult])?;
        if self.feature_size == 0 || self.block_channels == Some(0) {
            return Err(option_error("feature_size", "head widths must be positive"));
        }
        Ok(())
    }
}

/// The PMG method: a backbone, [`PmgHead`] on its S deepest stages, and the progressive four-step loop.
pub struct Pmg {
    store: ParamStore,
    backbone: Box<dyn Backbone>,
    head: PmgHead,
    options: PmgOptions,
}

impl Pmg {
    /// The model of `model` with `options` and a `num_classes`-way output, parameters drawn from `store`.
    pub fn new(
        model: &ModelConfig,
        options: PmgOptions,
        num_classes: usize,
        store: ParamStore,
    ) -> Result<Self> {
        options.validate()?;
        let root = store.root();
        let backbone = build_backbone(model, &root)?;
        let channels = backbone.stage_channels();
        let deepest = *channels.last().unwrap_or(&0);
        let cfg = PmgConfig::last_stages(
            &channels,
            options.granularities.len(),
            options.feature_size,
            options.block_channels.unwrap_or(deepest / 2).max(1),
            num_classes,
        )?;
        let head = PmgHead::new(cfg, &root.pp(HEAD_PREFIX))?;
        Ok(Pmg {
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
    pub fn head(&self) -> &PmgHead {
        &self.head
    }

    /// The options.
    pub fn options(&self) -> &PmgOptions {
        &self.options
    }

    /// Number of optimiser steps per batch (S + 1).
    pub fn num_steps(&self) -> usize {
        self.options.granularities.len() + 1
    }

    /// The full forward pass: backbone stages, then every block and classifier.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<PmgOutput> {
        let stages = self.backbone.forward_stages(images, train)?;
        Ok(self.head.forward_t(&stages, train)?)
    }

    /// The input of step `k` (0-based): the `granularities[k]` jigsaw of `images` for `k < S`, the images
    /// themselves for the last step.
    pub fn step_input(&self, images: &Tensor, k: usize, rng: &mut impl Rng) -> Result<Tensor> {
        match self.options.granularities.get(k) {
            Some(&n) => Ok(Jigsaw::with_mode(n, self.options.jigsaw)
                .and_then(|j| j.apply(images, rng))
                .map_err(augment_error)?
                .images),
            None => Ok(images.clone()),
        }
    }

    /// Step `k`'s weighted loss `w_k · CE(outs[k], y)` on its input, with the full output of that pass.
    pub fn step_loss(
        &self,
        images: &Tensor,
        labels: &Tensor,
        k: usize,
        rng: &mut impl Rng,
    ) -> Result<(Tensor, PmgOutput)> {
        let x = self.step_input(images, k, rng)?;
        let out = self.forward_t(&x, true)?;
        let loss = weighted_ce(out.step_logits(k)?, labels, self.options.loss_weights[k])?;
        Ok((loss, out))
    }
}

/// The name of progressive step `k` of `granularities` in logs: `jigsaw<n>`, then `concat`.
pub(crate) fn step_name(prefix: &str, levels: &[usize], k: usize) -> String {
    match levels.get(k) {
        Some(n) => format!("{prefix}{n}"),
        None => "concat".into(),
    }
}

/// The names of `steps` progressive steps: `{prefix}{level}` for each level, then `concat`.
pub(crate) fn step_names(prefix: &str, levels: &[usize], steps: usize) -> Vec<String> {
    (0..steps).map(|k| step_name(prefix, levels, k)).collect()
}

/// The destroyed input of each progressive step `k` (one per entry of `levels`), from step `k`'s stream, as
/// [`crate::Method::destructions`] returns them: named `{prefix}{level}`; `step_input(k, rng)` destroys.
pub(crate) fn progressive_destructions(
    prefix: &str,
    levels: &[usize],
    rng: &dyn Fn(u64) -> rand_chacha::ChaCha8Rng,
    mut step_input: impl FnMut(usize, &mut rand_chacha::ChaCha8Rng) -> Result<Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    (0..levels.len())
        .map(|k| {
            Ok((
                step_name(prefix, levels, k),
                step_input(k, &mut rng(k as u64))?,
            ))
        })
        .collect()
}

/// The progressive step PMG and RMG-PMSI share: one optimiser step per entry of `names`, in order, each with
/// its own keyed RNG stream; `step_loss(k, rng)` returns step `k`'s loss and the concat logits. The train
/// accuracy is the concat classifier's at the last step, as in both official codes. With `progressive`
/// false the same losses, on the same streams, are summed into one optimiser step.
pub(crate) fn progressive_train_step(
    batch: &Batch,
    ctx: &mut StepContext<'_>,
    names: &[String],
    progressive: bool,
    mut step_loss: impl FnMut(usize, &mut rand_chacha::ChaCha8Rng) -> Result<(Tensor, Tensor)>,
) -> Result<StepStats> {
    let mut stats = StepStats {
        count: batch.len(),
        ..StepStats::default()
    };
    let mut joint: Option<Tensor> = None;
    for (k, name) in names.iter().enumerate() {
        let mut rng = ctx.rng(k as u64);
        let (loss, concat_logits) = step_loss(k, &mut rng)?;
        let value = if progressive {
            ctx.backward_step(&loss)?
        } else {
            let value = scalar(&loss)?;
            joint = Some(match joint {
                Some(sum) => (sum + loss)?,
                None => loss,
            });
            value
        };
        stats.losses.push((name.clone(), value));
        if k + 1 == names.len() {
            stats.correct = count_correct(&concat_logits.detach(), &batch.labels)?;
        }
    }
    stats.loss = match joint {
        Some(sum) => ctx.backward_step(&sum)?,
        None => stats.losses.iter().map(|(_, v)| v).sum(),
    };
    Ok(stats)
}

/// Named predictions of a multi-stage head: `combined` (the sum), `classifier1`.., `concat`.
pub(crate) fn stage_predictions(
    combined: Tensor,
    stage_logits: &[Tensor],
    concat: &Tensor,
) -> Predictions {
    let mut heads = vec![("combined".to_string(), combined)];
    for (i, l) in stage_logits.iter().enumerate() {
        heads.push((format!("classifier{}", i + 1), l.clone()));
    }
    heads.push(("concat".into(), concat.clone()));
    Predictions { heads }
}

/// [`stage_predictions`] for graph values: `combined`, `classifier1..S`, `concat`.
pub(crate) fn stage_prediction_values(
    g: &mut fgvc_onnx::Graph,
    out: &fgvc_heads::blocks::StageLogitValues,
) -> Result<Vec<(String, fgvc_onnx::Value)>> {
    let mut heads = vec![("combined".to_string(), out.combined(g)?)];
    for (i, l) in out.stage_logits.iter().enumerate() {
        heads.push((format!("classifier{}", i + 1), l.clone()));
    }
    heads.push(("concat".into(), out.concat_logits.clone()));
    Ok(heads)
}

impl MethodDef for Pmg {
    const NAME: &'static str = NAME;
    type Options = PmgOptions;

    /// The options, then their geometry: one stage per granularity, each granularity dividing the
    /// training images (the jigsaw cuts whole cells).
    fn check(options: &PmgOptions, config: &Config) -> Result<()> {
        reject_model_head_lr_mult(&config.model, NAME)?;
        options.validate()?;
        let net = BackboneGeometry::of(&config.model, &BackboneDefaults::default())?;
        let sizes = config.data.input_sizes()?;
        net.check_input(&sizes)?;
        let key = "method.options.granularities";
        net.check_taps(key, options.granularities.len())?;
        for &n in &options.granularities {
            check_grid_divides(
                key,
                &format!("granularity {n}"),
                n,
                (&sizes.train, "training"),
                "the jigsaw",
            )?;
        }
        Ok(())
    }

    fn build(
        config: &Config,
        options: PmgOptions,
        num_classes: usize,
        store: ParamStore,
    ) -> Result<Self> {
        Self::new(&config.model, options, num_classes, store)
    }
}

impl Method for Pmg {
    fn name(&self) -> &str {
        NAME
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn train_step(&mut self, batch: &Batch, ctx: &mut StepContext<'_>) -> Result<StepStats> {
        let names = step_names("jigsaw", &self.options.granularities, self.num_steps());
        progressive_train_step(batch, ctx, &names, self.options.progressive, |k, rng| {
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
        stage_prediction_values(g, &out)
    }

    fn default_groups(&self, base_lr: f64) -> Vec<GroupSpec> {
        backbone_and_head_groups(&self.store, base_lr, self.options.head_lr_mult, 0)
    }

    fn default_zero_grad(&self) -> ZeroGrad {
        ZeroGrad::Zero
    }

    /// The jigsaw of each progressive step, from that step's stream.
    fn destructions(
        &self,
        images: &Tensor,
        rng: &dyn Fn(u64) -> rand_chacha::ChaCha8Rng,
    ) -> Result<Vec<(String, Tensor)>> {
        progressive_destructions("jigsaw", &self.options.granularities, rng, |k, r| {
            self.step_input(images, k, r)
        })
    }

    fn explain(&self) -> Result<&dyn crate::explain::Explain> {
        Ok(self)
    }
}
