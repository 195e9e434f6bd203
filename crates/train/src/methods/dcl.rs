//! DCL (Chen et al., CVPR 2019) as the official JDAI-CV/DCL code trains it.
//!
//! * **Batch layout** (`collate_fn4train`): each image is followed by its region-confused copy,
//!   `[I_0, φ(I_0), I_1, φ(I_1), ...]` (2B images); labels `[y_0, y_0, y_1, y_1, ...]`. Both share the
//!   loader's augmentation (`common_aug`), and the confusion runs on the device after it.
//! * **Targets**: the discriminator gets `y` / `y + C` (`cls_mul`, the README's runs) or 1 / 0 (`cls_2`);
//!   the official location target is the "swap law" `(q − ⌊N²/2⌋)/N²`, the identity for originals and, for
//!   destroyed images, the code's brightness-matching guess of q (option `law = "exact"`: the true
//!   permutation). The paper's location head predicts (row, column) of the true permutation.
//! * **Loss**: `alpha · CE(logits, y) + beta · CE(swap, y_swap) + gamma · L_loc`, one optimiser step per batch,
//!   with `gamma` 1 for CUB and 0.01 for Cars and Aircraft (the code's per-dataset constant; set it in the
//!   configuration).
//! * **Prediction**: `classifier` (the paper: the backbone classifier alone, the default main prediction)
//!   and `official` (the code's `eval_turn` with `cls_mul`: `logits + swap[:, :C] + swap[:, C:]`); option
//!   `prediction` chooses which comes first.
//! * **Groups**: the backbone at `optim.lr` (0.0008), `classifier`, `classifier_swap` and `Convmask` at 10x,
//!   no weight decay (set in the configuration).

use candle_core::{Device, Tensor};
use fgvc_augment::transforms::Normalize;
use fgvc_augment::{Permutation, RcmMode, RegionConfusion};
use fgvc_backbone::{Backbone, BackboneDefaults};
use fgvc_data::Batch;
use fgvc_heads::dcl::{
    dcl_loss, official_law, paper_location_targets, swap_targets, DclConfig, DclHead,
    DclLossWeights, DclOutput, LocationHead, SwapHead,
};
use fgvc_ops::ParamStore;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{
    augment_error, backbone_and_head_groups, build_backbone, check_non_negative, count_correct,
    option_error, reject_model_head_lr_mult, scalar, HEAD_PREFIX,
};
use crate::config::geometry::{check_grid_divides, BackboneGeometry};
use crate::config::Config;
use crate::error::Result;
use crate::method::{Method, Predictions, StepContext, StepStats};
use crate::model::ModelConfig;
use crate::optim::{GroupSpec, ZeroGrad};
use crate::registry::spec::{MethodDef, MethodSpec, Preset, Presets, Published};

/// Where the official location target of a destroyed image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LawKind {
    /// The code's brightness-matching guess (duplicates and mistakes included).
    Official,
    /// The true permutation (the paper's intent).
    Exact,
}

/// Which prediction is the main one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DclPrediction {
    /// The classifier alone (the paper; same cost as the backbone).
    #[default]
    Classifier,
    /// The official `eval_turn`: classifier plus both halves of the `cls_mul` discriminator.
    Official,
}

/// The name in `[method] name`.
pub const NAME: &str = "dcl";

/// The registry's entry.
pub const SPEC: MethodSpec = MethodSpec::of::<Dcl>(
    "Destruction and Construction Learning (Chen et al., CVPR 2019)",
    Presets {
        cub: Some(Preset("configs/dcl-resnet50-cub.toml")),
        synthetic: Some(Preset("configs/dcl-synthetic.toml")),
        paper_backbone: "resnet50",
        published: &[
            Published {
                backbone: "resnet50",
                top1: Some(87.8),
                source: "DCL V0.0 README (issue #65), classifier alone; reproductions in the issues: 86.69-87.57",
            },
            Published {
                backbone: "vgg16",
                top1: Some(86.9),
                source: "DCL paper (CVPR 2019) as recalled, not checked against the PDF",
            },
        ],
        bench_backbones: &["resnet50", "mobilenet_v2"],
    },
);

/// `[method.options]` of `dcl`; defaults are the official code's CUB run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DclOptions {
    /// Regions per side N (7; the paper uses 2 on FGVC-Aircraft). N must divide the image and the last
    /// feature map.
    pub grid: usize,
    /// RCM neighbourhood k (2), below `grid`; only the paper's shuffle uses it (set 1 with `grid = 2`).
    pub k: usize,
    /// RCM shuffle: `official` (the code's adjacent-pair shuffle) or `paper` (bounded by 2k).
    pub rcm: RcmMode,
    /// Discriminator: `joint` (`cls_mul`) or `binary` (`cls_2`).
    pub swap: SwapHead,
    /// Region-alignment head: `official` or `paper`.
    pub location: LocationHead,
    /// Target of the official location head for destroyed images: `official` (default) or `exact`. The
    /// paper head always uses the true permutation.
    pub law: Option<LawKind>,
    /// Classification loss weight (1).
    pub alpha: f64,
    /// Discriminator loss weight (1).
    pub beta: f64,
    /// Location loss weight: 1 for CUB, 0.01 for Cars and Aircraft.
    pub gamma: f64,
    /// The main prediction: `classifier` (paper) or `official`.
    pub prediction: DclPrediction,
    /// Learning rate of the heads over `optim.lr` (official `cls_lr_ratio` 10).
    pub head_lr_mult: f64,
}

impl Default for DclOptions {
    fn default() -> Self {
        DclOptions {
            grid: 7,
            k: 2,
            rcm: RcmMode::Official,
            swap: SwapHead::Joint,
            location: LocationHead::Official,
            law: None,
            alpha: 1.0,
            beta: 1.0,
            gamma: 1.0,
            prediction: DclPrediction::Classifier,
            head_lr_mult: 10.0,
        }
    }
}

impl DclOptions {
    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.k >= self.grid {
            return Err(option_error(
                "k",
                format!(
                    "needs 1 <= k < grid, got k = {} with grid = {}",
                    self.k, self.grid
                ),
            ));
        }
        if self.location == LocationHead::Paper && self.law == Some(LawKind::Official) {
            return Err(option_error(
                "law",
                "the paper's location head is trained on the true permutation; law = \"official\" applies \
                 to location = \"official\" only",
            ));
        }
        check_non_negative("alpha", &[self.alpha])?;
        check_non_negative("beta", &[self.beta])?;
        check_non_negative("gamma", &[self.gamma])?;
        check_non_negative("head_lr_mult", &[self.head_lr_mult])?;
        Ok(())
    }

    /// The effective target of the official location head.
    pub fn law_kind(&self) -> LawKind {
        match (self.location, self.law) {
            (LocationHead::Paper, _) => LawKind::Exact,
            (_, Some(l)) => l,
            (_, None) => LawKind::Official,
        }
    }
}

/// A DCL training batch in the official layout.
#[derive(Debug, Clone)]
pub struct DclBatch {
    /// `[I_0, φ(I_0), I_1, φ(I_1), ...]`, `[2B, 3, H, W]`.
    pub images: Tensor,
    /// `[y_0, y_0, y_1, y_1, ...]`, u32.
    pub labels: Tensor,
    /// Discriminator targets, u32.
    pub swap_labels: Tensor,
    /// Location targets: laws `[2B, N²]` (official head) or (row, column) `[2B, 2, N, N]` (paper head).
    pub location: Tensor,
    /// Whether each image is destroyed (odd positions).
    pub destroyed: Vec<bool>,
    /// The permutation each image shows (the identity for originals).
    pub permutations: Vec<Permutation>,
}

/// The DCL method: a backbone, [`DclHead`] on its deepest stage, region confusion and the joint loss.
pub struct Dcl {
    store: ParamStore,
    backbone: Box<dyn Backbone>,
    head: DclHead,
    rcm: RegionConfusion,
    normalize: Normalize,
    options: DclOptions,
}

impl Dcl {
    /// The model of `model` with `options` and a `num_classes`-way output, parameters drawn from `store`.
    /// `normalize` is the normalisation of the training images (undone to match brightness as the code
    /// does on PIL images).
    pub fn new(
        model: &ModelConfig,
        options: DclOptions,
        num_classes: usize,
        store: ParamStore,
        normalize: Normalize,
    ) -> Result<Self> {
        options.validate()?;
        let root = store.root();
        let backbone = build_backbone(model, &root)?;
        let channels = backbone.stage_channels();
        let cfg = DclConfig {
            in_channels: *channels.last().unwrap_or(&0),
            num_classes,
            swap: options.swap,
            location: options.location,
            grid: options.grid,
        };
        let head = DclHead::new(cfg, &root.pp(HEAD_PREFIX))?;
        let rcm =
            RegionConfusion::new(options.grid, options.k, options.rcm).map_err(augment_error)?;
        Ok(Dcl {
            store,
            backbone,
            head,
            rcm,
            normalize,
            options,
        })
    }

    /// The backbone.
    pub fn backbone(&self) -> &dyn Backbone {
        &*self.backbone
    }

    /// The head.
    pub fn head(&self) -> &DclHead {
        &self.head
    }

    /// The options.
    pub fn options(&self) -> &DclOptions {
        &self.options
    }

    /// The heads on the deepest stage of `images`.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<DclOutput> {
        let stages = self.backbone.forward_stages(images, train)?;
        let last = stages
            .last()
            .ok_or_else(|| crate::TrainError::Msg("DCL: the backbone returned no stage".into()))?;
        Ok(self.head.forward(last)?)
    }

    /// The official training batch of `images` `[B, 3, H, W]` and `labels` `[B]`: originals interleaved
    /// with their region-confused copies, with every target.
    pub fn make_batch(
        &self,
        images: &Tensor,
        labels: &Tensor,
        rng: &mut impl Rng,
    ) -> Result<DclBatch> {
        let b = images.dim(0)?;
        let device = images.device();
        let destroyed = self.rcm.apply(images, rng).map_err(augment_error)?;
        let interleave = |a: &Tensor, d: &Tensor| -> Result<Tensor> {
            let mut dims = a.dims().to_vec();
            dims[0] *= 2;
            Ok(Tensor::stack(&[a, d], 1)?.reshape(dims)?)
        };
        let x = interleave(images, &destroyed.images)?;
        let y = interleave(labels, labels)?;
        let flags: Vec<bool> = (0..2 * b).map(|i| i % 2 == 1).collect();
        let n = self.options.grid;
        let identity = Permutation::identity(n);
        let mut permutations = Vec::with_capacity(2 * b);
        for p in &destroyed.permutations {
            permutations.push(identity.clone());
            permutations.push(p.clone());
        }
        let label_vec = y.to_vec1::<u32>()?;
        let swap_kind = self.head.config().swap;
        let swap_labels = swap_targets(
            &label_vec,
            &flags,
            swap_kind,
            self.head.config().num_classes,
            device,
        )?;
        let location = match (self.options.location, self.options.law_kind()) {
            (LocationHead::Paper, _) => {
                let perms: Vec<Vec<u32>> =
                    permutations.iter().map(|p| p.source_of.clone()).collect();
                paper_location_targets(&perms, n, device)?
            }
            (LocationHead::Official, LawKind::Exact) => {
                let mut law = Vec::with_capacity(2 * b * n * n);
                for p in &permutations {
                    law.extend(official_law(&p.source_of, n)?);
                }
                Tensor::from_vec(law, (2 * b, n * n), device)?
            }
            (LocationHead::Official, LawKind::Official) => {
                let original = self
                    .normalize
                    .denormalize_tensor(images)
                    .map_err(augment_error)?;
                let confused = self
                    .normalize
                    .denormalize_tensor(&destroyed.images)
                    .map_err(augment_error)?;
                let guessed = self
                    .rcm
                    .official_law(&original, &confused)
                    .map_err(augment_error)?;
                let ident =
                    Tensor::from_vec(official_law(&identity.source_of, n)?, (1, n * n), device)?
                        .broadcast_as((b, n * n))?
                        .contiguous()?;
                interleave(&ident, &guessed)?
            }
        };
        Ok(DclBatch {
            images: x,
            labels: y,
            swap_labels,
            location,
            destroyed: flags,
            permutations,
        })
    }

    /// The weighted loss on a prepared batch: `(total, cls, swap, location, output)`.
    pub fn batch_loss(&self, batch: &DclBatch) -> Result<(Tensor, [f64; 3], DclOutput)> {
        let out = self.forward_t(&batch.images, true)?;
        let weights = DclLossWeights {
            alpha: self.options.alpha,
            beta: self.options.beta,
            gamma: self.options.gamma,
        };
        let (total, cls, swap, loc) = dcl_loss(
            &out,
            &batch.labels,
            &batch.swap_labels,
            &batch.location,
            weights,
        )?;
        let parts = [scalar(&cls)?, scalar(&swap)?, scalar(&loc)?];
        Ok((total, parts, out))
    }
}

/// Rows `0, 2, 4, ...` of `x` (the originals of an interleaved batch).
fn even_rows(x: &Tensor, device: &Device) -> Result<Tensor> {
    let n = x.dim(0)?;
    let idx: Vec<u32> = (0..n as u32).step_by(2).collect();
    let len = idx.len();
    Ok(x.index_select(&Tensor::from_vec(idx, len, device)?, 0)?)
}

impl MethodDef for Dcl {
    const NAME: &'static str = NAME;
    type Options = DclOptions;

    /// The options, then their geometry: the grid divides the training images (region confusion moves
    /// whole regions) and the deepest map at every image size (the location head pools it per region).
    fn check(options: &DclOptions, config: &Config) -> Result<()> {
        reject_model_head_lr_mult(&config.model, NAME)?;
        options.validate()?;
        let net = BackboneGeometry::of(&config.model, &BackboneDefaults::default())?;
        let sizes = config.data.input_sizes()?;
        net.check_input(&sizes)?;
        let (key, n) = ("method.options.grid", options.grid);
        check_grid_divides(
            key,
            &format!("grid {n}"),
            n,
            (&sizes.train, "training"),
            "region confusion",
        )?;
        net.check_deepest_divides(key, n, &sizes, "the region-alignment head")
    }

    fn build(
        config: &Config,
        options: DclOptions,
        num_classes: usize,
        store: ParamStore,
    ) -> Result<Self> {
        let normalize = config.data.pipelines()?.0.normalize;
        Self::new(&config.model, options, num_classes, store, normalize)
    }
}

impl Method for Dcl {
    fn name(&self) -> &str {
        NAME
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn train_step(&mut self, batch: &Batch, ctx: &mut StepContext<'_>) -> Result<StepStats> {
        let mut rng = ctx.rng(0);
        let dcl_batch = self.make_batch(&batch.images, &batch.labels, &mut rng)?;
        let (loss, [cls, swap, loc], out) = self.batch_loss(&dcl_batch)?;
        let value = ctx.backward_step(&loss)?;
        let device = batch.images.device();
        let logits = even_rows(&out.logits.detach(), device)?;
        Ok(StepStats {
            loss: value,
            correct: count_correct(&logits, &batch.labels)?,
            count: batch.len(),
            losses: vec![
                ("cls".into(), cls),
                ("swap".into(), swap),
                ("location".into(), loc),
            ],
        })
    }

    fn predict(&self, images: &Tensor) -> Result<Predictions> {
        let out = self.forward_t(images, false)?;
        let classifier = ("classifier".to_string(), out.logits.clone());
        let official = ("official".to_string(), out.official_prediction()?);
        let heads = match self.options.prediction {
            DclPrediction::Classifier => vec![classifier, official],
            DclPrediction::Official => vec![official, classifier],
        };
        Ok(Predictions { heads })
    }

    fn export(
        &self,
        g: &mut fgvc_onnx::Graph,
        images: &fgvc_onnx::Value,
    ) -> Result<Vec<(String, fgvc_onnx::Value)>> {
        let stages = self.backbone.export_stages(g, images)?;
        let last = stages
            .last()
            .ok_or_else(|| crate::TrainError::Msg("DCL: the backbone returned no stage".into()))?;
        let out = self.head.export(g, last)?;
        let classifier = ("classifier".to_string(), out.logits.clone());
        let official = ("official".to_string(), out.official_prediction(g)?);
        Ok(match self.options.prediction {
            DclPrediction::Classifier => vec![classifier, official],
            DclPrediction::Official => vec![official, classifier],
        })
    }

    fn default_groups(&self, base_lr: f64) -> Vec<GroupSpec> {
        backbone_and_head_groups(&self.store, base_lr, self.options.head_lr_mult, 0)
    }

    fn default_zero_grad(&self) -> ZeroGrad {
        // PyTorch 0.4 kept zeroed gradients; every parameter gets a gradient at DCL's single step anyway.
        ZeroGrad::Zero
    }

    /// The region-confused copies of the batch, from stream 0 as in [`Dcl::make_batch`].
    fn destructions(
        &self,
        images: &Tensor,
        rng: &dyn Fn(u64) -> rand_chacha::ChaCha8Rng,
    ) -> Result<Vec<(String, Tensor)>> {
        let destroyed = self.rcm.apply(images, &mut rng(0)).map_err(augment_error)?;
        Ok(vec![("rcm".into(), destroyed.images)])
    }

    fn explain(&self) -> Result<&dyn crate::explain::Explain> {
        Ok(self)
    }
}
