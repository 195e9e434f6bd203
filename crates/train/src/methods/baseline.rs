//! Plain fine-tuning: a backbone, global pooling, optional dropout and one linear classifier trained with
//! cross-entropy, one optimiser step per batch. The reference every fine-grained method is compared with.
//! Its options are `[model]`'s `dropout` and `head_lr_mult`; `[method.options]` stays empty.

use candle_core::Tensor;
use fgvc_backbone::{Backbone, BackboneDefaults};
use fgvc_data::Batch;
use fgvc_ops::{Linear, ParamStore};
use rand::Rng;

use super::{count_correct, weighted_ce, HEAD_PREFIX};
use crate::config::geometry::BackboneGeometry;
use crate::config::Config;
use crate::error::{Result, TrainError};
use crate::method::{Method, Predictions, StepContext, StepStats};
use crate::model::{build_backbone, ModelConfig};
use crate::optim::GroupSpec;
use crate::registry::spec::{MethodDef, MethodSpec, Preset, Presets, Published};

/// The name in `[method] name`.
pub const NAME: &str = "baseline";

/// The registry's entry: plain fine-tuning, the ResNet-50 row of the DCL paper's Table 1 on CUB.
pub const SPEC: MethodSpec = MethodSpec::of::<Baseline>(
    "Plain fine-tuning: backbone, global pooling and one linear classifier",
    Presets {
        cub: Some(Preset("configs/baseline-resnet50-cub.toml")),
        synthetic: Some(Preset("configs/synthetic-baseline.toml")),
        paper_backbone: "resnet50",
        published: &[Published {
            backbone: "resnet50",
            top1: Some(85.5),
            source: "DCL paper (CVPR 2019) Table 1, ResNet-50 fine-tuned at 448 (87.8 - 2.3)",
        }],
        bench_backbones: &["resnet50", "mobilenet_v2"],
    },
);

/// Backbone + `heads.fc`, trained with cross-entropy.
pub struct Baseline {
    store: ParamStore,
    backbone: Box<dyn Backbone>,
    fc: Linear,
    dropout: f64,
    head_lr_mult: f64,
}

impl Baseline {
    /// The model of `config` with a `num_classes`-way classifier, its parameters drawn from `store`'s seed.
    pub fn new(config: &ModelConfig, num_classes: usize, store: ParamStore) -> Result<Self> {
        let root = store.root();
        let backbone = build_backbone(config, &root)?;
        let fc = Linear::new(
            backbone.num_features(),
            num_classes,
            true,
            &root.pp(HEAD_PREFIX).pp("fc"),
        )?;
        Ok(Baseline {
            store,
            backbone,
            fc,
            dropout: config.dropout,
            head_lr_mult: config.head_lr_mult,
        })
    }

    /// The backbone.
    pub fn backbone(&self) -> &dyn Backbone {
        &*self.backbone
    }

    /// The classifier `heads.fc`.
    pub fn classifier(&self) -> &Linear {
        &self.fc
    }

    fn logits(&self, images: &Tensor, train: bool, mask: Option<Tensor>) -> Result<Tensor> {
        let mut f = self.backbone.features(images, train)?;
        if let Some(m) = mask {
            f = f.mul(&m)?;
        }
        Ok(f.apply(&self.fc)?)
    }

    /// A dropout mask `[N, F]` (0 or `1/(1-p)`) drawn from the step's own stream.
    fn dropout_mask(
        &self,
        n: usize,
        ctx: &StepContext<'_>,
        device: &candle_core::Device,
    ) -> Result<Option<Tensor>> {
        if self.dropout == 0.0 {
            return Ok(None);
        }
        let f = self.backbone.num_features();
        let keep = 1.0 - self.dropout;
        let scale = (1.0 / keep) as f32;
        let mut rng = ctx.rng(0);
        let values: Vec<f32> = (0..n * f)
            .map(|_| {
                if rng.random::<f64>() < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Some(Tensor::from_vec(values, (n, f), device)?))
    }
}

impl MethodDef for Baseline {
    const NAME: &'static str = NAME;
    type Options = ();

    /// The baseline takes no `[method.options]`; its knobs are `[model]`'s `dropout` and `head_lr_mult`.
    fn options(config: &Config) -> Result<()> {
        if config.method.options.is_empty() {
            Ok(())
        } else {
            Err(TrainError::Config {
                origin: "[method.options]".into(),
                key: "method.options".into(),
                message: "the baseline takes no method options".into(),
            })
        }
    }

    /// `[model]` (its `dropout` too) is checked by the backbone's options before this; here the images
    /// against the backbone (its deepest map must not be empty).
    fn check(_: &(), config: &Config) -> Result<()> {
        let net = BackboneGeometry::of(&config.model, &BackboneDefaults::default())?;
        net.check_input(&config.data.input_sizes()?)
    }

    fn build(config: &Config, _: (), num_classes: usize, store: ParamStore) -> Result<Self> {
        Baseline::new(&config.model, num_classes, store)
    }
}

impl Method for Baseline {
    fn name(&self) -> &str {
        NAME
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn train_step(&mut self, batch: &Batch, ctx: &mut StepContext<'_>) -> Result<StepStats> {
        let mask = self.dropout_mask(batch.len(), ctx, batch.images.device())?;
        let logits = self.logits(&batch.images, true, mask)?;
        let loss = weighted_ce(&logits, &batch.labels, 1.0)?;
        let value = ctx.backward_step(&loss)?;
        Ok(StepStats {
            loss: value,
            correct: count_correct(&logits.detach(), &batch.labels)?,
            count: batch.len(),
            losses: vec![("ce".into(), value)],
        })
    }

    fn predict(&self, images: &Tensor) -> Result<Predictions> {
        Ok(Predictions::single(
            "logits",
            self.logits(images, false, None)?,
        ))
    }

    /// Dropout is the identity in evaluation mode.
    fn export(
        &self,
        g: &mut fgvc_onnx::Graph,
        images: &fgvc_onnx::Value,
    ) -> Result<Vec<(String, fgvc_onnx::Value)>> {
        let f = self.backbone.export_features(g, images)?;
        Ok(vec![("logits".into(), self.fc.export(g, &f)?)])
    }

    fn default_groups(&self, base_lr: f64) -> Vec<GroupSpec> {
        if self.head_lr_mult == 1.0 {
            return Vec::new();
        }
        vec![GroupSpec {
            name: "heads".into(),
            params: vec![HEAD_PREFIX.into()],
            lr: Some(base_lr * self.head_lr_mult),
            weight_decay: None,
            freeze_epochs: 0,
        }]
    }

    fn explain(&self) -> Result<&dyn crate::explain::Explain> {
        Ok(self)
    }
}
