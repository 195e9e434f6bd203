//! PMG (Du et al., ECCV 2020): a conv block, a global max pool and a classifier on each of the last S
//! stages, plus a classifier on the concatenation of the pooled stage features.
//!
//! Parameter names follow the official `model.py` under the caller's prefix: `conv_block{l}.{0,1}.conv.weight`,
//! `conv_block{l}.{0,1}.bn.*`, `classifier{l}.{0,1,2,4}.*` and `classifier_concat.{0,1,2,4}.*`, so a state
//! dict of the official head maps one to one.

use candle_core::{Result, Tensor};
use fgvc_ops::Params;

use crate::blocks::{EluClassifier, StageBlock, StageLogitValues};
use crate::{select_stage_values, select_stages};
use fgvc_onnx::{Graph, Value};

/// Widths of a PMG head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmgConfig {
    /// Channels of the stages the head reads, shallow to deep (ResNet-50: 512, 1024, 2048).
    pub in_channels: Vec<usize>,
    /// `feature_size`: the 1x1 conv's output and the classifiers' hidden width (512 in the official code).
    pub feature_size: usize,
    /// Output channels of each block's 3x3 conv, the pooled feature width (`num_ftrs // 2` = 1024).
    pub block_channels: usize,
    /// Number of classes.
    pub num_classes: usize,
}

impl PmgConfig {
    /// The official head on the last three of `stage_channels`: feature size 512, block width half the
    /// deepest stage's channels (1024 on ResNet-50).
    pub fn official(stage_channels: &[usize], num_classes: usize) -> Result<Self> {
        let deepest = *stage_channels
            .last()
            .ok_or_else(|| candle_core::Error::Msg("PMG: no stages".into()))?;
        Self::last_stages(stage_channels, 3, 512, deepest / 2, num_classes)
    }

    /// A head on the last `num_stages` of `stage_channels` with explicit widths.
    pub fn last_stages(
        stage_channels: &[usize],
        num_stages: usize,
        feature_size: usize,
        block_channels: usize,
        num_classes: usize,
    ) -> Result<Self> {
        let in_channels = crate::blocks::tapped_channels(
            "PMG",
            stage_channels,
            num_stages,
            [feature_size, block_channels, num_classes],
        )?;
        Ok(Self {
            in_channels,
            feature_size,
            block_channels,
            num_classes,
        })
    }

    /// S, the number of stages with a head.
    pub fn num_stages(&self) -> usize {
        self.in_channels.len()
    }
}

/// The outputs of one forward pass, in the official order `(xc1, .., xcS, x_concat)`.
#[derive(Debug, Clone)]
pub struct PmgOutput {
    /// Logits of `classifier{l}` for each stage, shallow to deep: (N, classes) each.
    pub stage_logits: Vec<Tensor>,
    /// Logits of `classifier_concat`: (N, classes).
    pub concat_logits: Tensor,
    /// The pooled block features `xl{l}`: (N, block_channels) each.
    pub features: Vec<Tensor>,
}

impl PmgOutput {
    /// The official test-time prediction: the sum of every stage's logits and the concat logits.
    pub fn combined(&self) -> Result<Tensor> {
        let mut sum = self.concat_logits.clone();
        for l in &self.stage_logits {
            sum = sum.add(l)?;
        }
        Ok(sum)
    }

    /// The logits of the progressive step `k` (0-based): stage `k`'s for `k < S`, the concat's for `k == S`.
    pub fn step_logits(&self, k: usize) -> Result<&Tensor> {
        match k.cmp(&self.stage_logits.len()) {
            std::cmp::Ordering::Less => Ok(&self.stage_logits[k]),
            std::cmp::Ordering::Equal => Ok(&self.concat_logits),
            std::cmp::Ordering::Greater => {
                candle_core::bail!(
                    "PMG: step {k} out of range (0..={})",
                    self.stage_logits.len()
                )
            }
        }
    }
}

/// PMG's heads: per-stage conv blocks with global max pooling, per-stage classifiers and the concat
/// classifier.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_heads::pmg::{PmgConfig, PmgHead};
/// use fgvc_ops::ParamStore;
///
/// let dev = Device::Cpu;
/// let store = ParamStore::new(1, DType::F32, &dev);
/// // A backbone with stages of 4, 8, 16 and 32 channels; the head reads the last three.
/// let cfg = PmgConfig::last_stages(&[4, 8, 16, 32], 3, 6, 10, 5)?;
/// let head = PmgHead::new(cfg, &store.root().pp("heads"))?;
/// let stages = [
///     Tensor::randn(0f32, 1., (2, 4, 16, 16), &dev)?,
///     Tensor::randn(0f32, 1., (2, 8, 8, 8), &dev)?,
///     Tensor::randn(0f32, 1., (2, 16, 4, 4), &dev)?,
///     Tensor::randn(0f32, 1., (2, 32, 2, 2), &dev)?,
/// ];
/// let out = head.forward_t(&stages, true)?;
/// assert_eq!(out.stage_logits.len(), 3);
/// assert_eq!(out.concat_logits.dims(), &[2, 5]);
/// assert!(store.get("heads.conv_block1.1.bn.running_var").is_some());
/// assert!(store.get("heads.classifier_concat.4.weight").is_some());
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PmgHead {
    cfg: PmgConfig,
    blocks: Vec<StageBlock>,
    classifiers: Vec<EluClassifier>,
    concat: EluClassifier,
}

impl PmgHead {
    /// Builds the head under `p` with PyTorch's default initialisation.
    pub fn new(cfg: PmgConfig, p: &Params) -> Result<Self> {
        let mut blocks = Vec::new();
        let mut classifiers = Vec::new();
        for (l, &c) in cfg.in_channels.iter().enumerate() {
            blocks.push(StageBlock::new(
                c,
                cfg.feature_size,
                cfg.block_channels,
                &p.pp(format!("conv_block{}", l + 1)),
            )?);
            classifiers.push(EluClassifier::new(
                cfg.block_channels,
                cfg.feature_size,
                cfg.num_classes,
                &p.pp(format!("classifier{}", l + 1)),
            )?);
        }
        let concat = EluClassifier::new(
            cfg.block_channels * cfg.num_stages(),
            cfg.feature_size,
            cfg.num_classes,
            &p.pp("classifier_concat"),
        )?;
        Ok(Self {
            cfg,
            blocks,
            classifiers,
            concat,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PmgConfig {
        &self.cfg
    }

    /// The pooled block features `xl{l}` of the stages (the last S of `stages` are used).
    pub fn pooled_features(&self, stages: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        let taps = select_stages("PMG", stages, &self.cfg.in_channels)?;
        taps.iter()
            .zip(&self.blocks)
            .map(|(x, b)| b.forward_pooled(x, train))
            .collect()
    }

    /// Every head on the stage maps (shallow to deep; the last S are used), as the official `forward`:
    /// all blocks and classifiers run, and every BatchNorm updates its running statistics when `train`.
    pub fn forward_t(&self, stages: &[Tensor], train: bool) -> Result<PmgOutput> {
        let features = self.pooled_features(stages, train)?;
        let stage_logits = features
            .iter()
            .zip(&self.classifiers)
            .map(|(f, c)| c.forward_t(f, train))
            .collect::<Result<Vec<_>>>()?;
        let concat_logits = self.concat.forward_t(&Tensor::cat(&features, 1)?, train)?;
        Ok(PmgOutput {
            stage_logits,
            concat_logits,
            features,
        })
    }

    /// The ONNX graph of `forward_t(stages, false)`'s logits on graph values of the stage maps.
    pub fn export(&self, g: &mut Graph, stages: &[Value]) -> fgvc_onnx::Result<StageLogitValues> {
        let taps = select_stage_values("PMG", stages, &self.cfg.in_channels)?;
        let features = taps
            .iter()
            .zip(&self.blocks)
            .map(|(x, b)| b.export_pooled(g, x))
            .collect::<fgvc_onnx::Result<Vec<_>>>()?;
        let stage_logits = features
            .iter()
            .zip(&self.classifiers)
            .map(|(f, c)| c.export(g, f))
            .collect::<fgvc_onnx::Result<Vec<_>>>()?;
        let cat = g.concat(&features, 1)?;
        let concat_logits = self.concat.export(g, &cat)?;
        Ok(StageLogitValues {
            stage_logits,
            concat_logits,
        })
    }

    /// The conv blocks, shallow to deep.
    pub fn blocks(&self) -> &[StageBlock] {
        &self.blocks
    }

    /// The per-stage classifiers, shallow to deep.
    pub fn classifiers(&self) -> &[EluClassifier] {
        &self.classifiers
    }

    /// The concat classifier.
    pub fn concat_classifier(&self) -> &EluClassifier {
        &self.concat
    }
}
