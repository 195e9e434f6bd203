//! Plain fine-tuning: a backbone, global pooling, optional dropout and one linear classifier trained with
//! cross-entropy, one optimiser step per batch. The reference every fine-grained method is compared with.

use candle_core::{DType, Tensor, D};
use fgvc_backbone::Backbone;
use fgvc_data::Batch;
use fgvc_ops::{Linear, ParamStore};
use rand::Rng;

use crate::error::{Result, TrainError};
use crate::method::{Method, Predictions, StepContext, StepStats};
use crate::model::{build_backbone, ModelConfig};
use crate::optim::GroupSpec;

/// Prefix of the parameters the recipe adds on top of the backbone.
pub const HEAD_PREFIX: &str = "heads";

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
        if !(0.0..1.0).contains(&config.dropout) {
            return Err(TrainError::Msg(format!(
                "model.dropout must be in [0, 1), got {}",
                config.dropout
            )));
        }
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

/// Mean cross-entropy of `logits` `[N, C]` against `labels` `[N]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Number of rows of `logits` whose arg-max equals the label.
pub fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    let eq = pred.eq(&labels.to_dtype(pred.dtype())?)?;
    Ok(eq.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize)
}

impl Method for Baseline {
    fn name(&self) -> &str {
        "baseline"
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn train_step(&mut self, batch: &Batch, ctx: &mut StepContext<'_>) -> Result<StepStats> {
        let mask = self.dropout_mask(batch.len(), ctx, batch.images.device())?;
        let logits = self.logits(&batch.images, true, mask)?;
        let loss = cross_entropy(&logits, &batch.labels)?;
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
}
