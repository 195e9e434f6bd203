//! RMG-PMSI (Wu et al., BMVC 2022): PMG-style stage heads whose pooled features are gated by a
//! Multi-Stage Interaction (MSI) signal computed from all stages, as in the released `PMSI.py`.
//!
//! ```text
//! xm  = map2(dropout_0.5_if_train(map1(cat(xl_1, .., xl_S))))     # no activation between
//! m_i = sigmoid(xm * xl_i) * xl_i + xl_i                           # element-wise, residual gating
//! ```
//!
//! Names follow the official module: `smooth_conv{l}.{0,1}.*`, `map1`, `map2`, `classifier{l}.*`,
//! `classifier_concat.*`; the dropout's mask stream is keyed by `drop`.

use candle_core::{Module, Result, Tensor};
use fgvc_ops::{Linear, Params};

use crate::blocks::{Dropout, EluClassifier, StageBlock, StageLogitValues};
use crate::{select_stage_values, select_stages};
use fgvc_onnx::{Graph, Value};

/// The interaction module: `map1: Linear(S*C -> hidden)`, dropout, `map2: Linear(hidden -> C)`, and the
/// residual sigmoid gate of each stage's feature.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_heads::msi::Msi;
/// use fgvc_ops::ParamStore;
///
/// let store = ParamStore::new(2, DType::F32, &Device::Cpu);
/// let msi = Msi::new(3, 8, 4, 0.5, &store.root())?;
/// let xs: Vec<Tensor> = (0..3).map(|_| Tensor::randn(0f32, 1., (2, 8), &Device::Cpu)).collect::<Result<_, _>>()?;
/// let gated = msi.forward_t(&xs, false)?;
/// assert_eq!(gated.len(), 3);
/// assert_eq!(gated[0].dims(), &[2, 8]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Msi {
    map1: Linear,
    map2: Linear,
    drop: Dropout,
    num_stages: usize,
    channels: usize,
}

impl Msi {
    /// MSI over `num_stages` features of `channels` each, through `hidden` units (the official
    /// `feature_size`), with dropout probability `p_drop` (0.5 officially).
    pub fn new(
        num_stages: usize,
        channels: usize,
        hidden: usize,
        p_drop: f64,
        p: &Params,
    ) -> Result<Self> {
        Ok(Self {
            map1: Linear::new(num_stages * channels, hidden, true, &p.pp("map1"))?,
            map2: Linear::new(hidden, channels, true, &p.pp("map2"))?,
            drop: Dropout::new(p_drop, &p.pp("drop"))?,
            num_stages,
            channels,
        })
    }

    /// The interaction signal `xm` (N, C); dropout is active only when `train`.
    pub fn signal(&self, features: &[Tensor], train: bool) -> Result<Tensor> {
        if features.len() != self.num_stages {
            candle_core::bail!(
                "MSI: expected {} stage features, got {}",
                self.num_stages,
                features.len()
            )
        }
        for f in features {
            if f.rank() != 2 || f.dim(1)? != self.channels {
                candle_core::bail!(
                    "MSI: expected (N, {}) features, got {:?}",
                    self.channels,
                    f.dims()
                )
            }
        }
        let h = self.map1.forward(&Tensor::cat(features, 1)?)?;
        self.map2.forward(&self.drop.forward_t(&h, train)?)
    }

    /// The gated features `m_i = sigmoid(xm * xl_i) * xl_i + xl_i`, one per stage.
    pub fn forward_t(&self, features: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        let xm = self.signal(features, train)?;
        features
            .iter()
            .map(|x| {
                let gate = candle_nn::ops::sigmoid(&xm.mul(x)?)?;
                gate.mul(x)?.add(x)
            })
            .collect()
    }
}

impl Msi {
    /// The ONNX graph of `forward_t(features, false)` (the dropout is the identity in evaluation mode).
    pub fn export(&self, g: &mut Graph, features: &[Value]) -> fgvc_onnx::Result<Vec<Value>> {
        if features.len() != self.num_stages {
            return Err(fgvc_onnx::ExportError::Shape {
                op: "MSI".into(),
                message: format!(
                    "expected {} stage features, got {}",
                    self.num_stages,
                    features.len()
                ),
            });
        }
        let cat = g.concat(features, 1)?;
        let h = self.map1.export(g, &cat)?;
        let xm = self.map2.export(g, &h)?;
        features
            .iter()
            .map(|x| {
                let z = g.mul(&xm, x)?;
                let gate = g.sigmoid(&z);
                let y = g.mul(&gate, x)?;
                g.add(&y, x)
            })
            .collect()
    }
}

/// Widths of an RMG-PMSI head.
#[derive(Debug, Clone, PartialEq)]
pub struct PmsiConfig {
    /// Channels of the stages the head reads (MobileNetV2 taps: 32, 96, 1280).
    pub in_channels: Vec<usize>,
    /// `feature_size` (320 officially): the 1x1 conv width, MSI's hidden width and the classifiers' hidden width.
    pub feature_size: usize,
    /// Output channels of each `smooth_conv`'s 3x3 conv (`num_ftrs // 2` = 640).
    pub block_channels: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// MSI dropout probability (0.5).
    pub dropout: f64,
    /// The multi-stage interaction (true). False feeds the pooled stage features to the classifiers
    /// ungated (PMG's heads on the mosaics), for the ablation "RMG-PMSI without MSI"; `map1`/`map2` are
    /// then absent.
    pub interaction: bool,
}

impl PmsiConfig {
    /// The official head on the last three of `stage_channels`: feature size 320, block width half the
    /// deepest stage's channels (640 for MobileNetV2's 1280), dropout 0.5.
    pub fn official(stage_channels: &[usize], num_classes: usize) -> Result<Self> {
        let deepest = *stage_channels
            .last()
            .ok_or_else(|| candle_core::Error::Msg("PMSI: no stages".into()))?;
        Self::last_stages(stage_channels, 3, 320, deepest / 2, num_classes)
    }

    /// A head on the last `num_stages` of `stage_channels` with explicit widths and dropout 0.5.
    pub fn last_stages(
        stage_channels: &[usize],
        num_stages: usize,
        feature_size: usize,
        block_channels: usize,
        num_classes: usize,
    ) -> Result<Self> {
        let in_channels = crate::blocks::tapped_channels(
            "PMSI",
            stage_channels,
            num_stages,
            [feature_size, block_channels, num_classes],
        )?;
        Ok(Self {
            in_channels,
            feature_size,
            block_channels,
            num_classes,
            dropout: 0.5,
            interaction: true,
        })
    }
}

/// The outputs of one forward pass, in the official order `(xc1, .., xcS, x_concat)`.
#[derive(Debug, Clone)]
pub struct PmsiOutput {
    /// Logits of `classifier{l}` (on the gated feature of stage l).
    pub stage_logits: Vec<Tensor>,
    /// Logits of `classifier_concat` (on the concatenated gated features).
    pub concat_logits: Tensor,
    /// The gated features `m_l`.
    pub gated: Vec<Tensor>,
}

impl PmsiOutput {
    /// The official "mix" prediction: `xc1 + .. + xcS + x_concat`.
    pub fn combined(&self) -> Result<Tensor> {
        let mut sum = self.concat_logits.clone();
        for l in &self.stage_logits {
            sum = sum.add(l)?;
        }
        Ok(sum)
    }
}

/// The RMG-PMSI head: `smooth_conv` blocks, global max pooling, MSI and the classifiers.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_heads::msi::{PmsiConfig, PmsiHead};
/// use fgvc_ops::ParamStore;
///
/// let dev = Device::Cpu;
/// let store = ParamStore::new(5, DType::F32, &dev);
/// let head = PmsiHead::new(PmsiConfig::last_stages(&[3, 5, 7], 3, 4, 6, 2)?, &store.root())?;
/// let stages = [
///     Tensor::randn(0f32, 1., (2, 3, 8, 8), &dev)?,
///     Tensor::randn(0f32, 1., (2, 5, 4, 4), &dev)?,
///     Tensor::randn(0f32, 1., (2, 7, 2, 2), &dev)?,
/// ];
/// let out = head.forward_t(&stages, true)?;
/// assert_eq!(out.combined()?.dims(), &[2, 2]);
/// assert!(store.get("smooth_conv3.0.conv.weight").is_some() && store.get("map2.bias").is_some());
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug)]
pub struct PmsiHead {
    cfg: PmsiConfig,
    blocks: Vec<StageBlock>,
    msi: Option<Msi>,
    classifiers: Vec<EluClassifier>,
    concat: EluClassifier,
}

impl PmsiHead {
    /// Builds the head under `p` with PyTorch's default initialisation.
    pub fn new(cfg: PmsiConfig, p: &Params) -> Result<Self> {
        let s = cfg.in_channels.len();
        let mut blocks = Vec::new();
        let mut classifiers = Vec::new();
        for (l, &c) in cfg.in_channels.iter().enumerate() {
            blocks.push(StageBlock::new(
                c,
                cfg.feature_size,
                cfg.block_channels,
                &p.pp(format!("smooth_conv{}", l + 1)),
            )?);
            classifiers.push(EluClassifier::new(
                cfg.block_channels,
                cfg.feature_size,
                cfg.num_classes,
                &p.pp(format!("classifier{}", l + 1)),
            )?);
        }
        let concat = EluClassifier::new(
            cfg.block_channels * s,
            cfg.feature_size,
            cfg.num_classes,
            &p.pp("classifier_concat"),
        )?;
        let msi = if cfg.interaction {
            Some(Msi::new(
                s,
                cfg.block_channels,
                cfg.feature_size,
                cfg.dropout,
                p,
            )?)
        } else {
            None
        };
        Ok(Self {
            cfg,
            blocks,
            msi,
            classifiers,
            concat,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PmsiConfig {
        &self.cfg
    }

    /// The MSI module (`None` when `interaction` is off).
    pub fn msi(&self) -> Option<&Msi> {
        self.msi.as_ref()
    }

    /// The ONNX graph of `forward_t(stages, false)`'s logits on graph values of the stage maps.
    pub fn export(&self, g: &mut Graph, stages: &[Value]) -> fgvc_onnx::Result<StageLogitValues> {
        let taps = select_stage_values("PMSI", stages, &self.cfg.in_channels)?;
        let pooled = taps
            .iter()
            .zip(&self.blocks)
            .map(|(x, b)| b.export_pooled(g, x))
            .collect::<fgvc_onnx::Result<Vec<_>>>()?;
        let gated = match &self.msi {
            Some(msi) => msi.export(g, &pooled)?,
            None => pooled,
        };
        let stage_logits = gated
            .iter()
            .zip(&self.classifiers)
            .map(|(f, c)| c.export(g, f))
            .collect::<fgvc_onnx::Result<Vec<_>>>()?;
        let cat = g.concat(&gated, 1)?;
        let concat_logits = self.concat.export(g, &cat)?;
        Ok(StageLogitValues {
            stage_logits,
            concat_logits,
        })
    }

    /// Every head on the stage maps (the last S are used). `train` drives the BatchNorms and the MSI
    /// dropout (the official `train_flag == "train"`).
    pub fn forward_t(&self, stages: &[Tensor], train: bool) -> Result<PmsiOutput> {
        let taps = select_stages("PMSI", stages, &self.cfg.in_channels)?;
        let pooled = taps
            .iter()
            .zip(&self.blocks)
            .map(|(x, b)| b.forward_pooled(x, train))
            .collect::<Result<Vec<_>>>()?;
        let gated = match &self.msi {
            Some(msi) => msi.forward_t(&pooled, train)?,
            None => pooled,
        };
        let stage_logits = gated
            .iter()
            .zip(&self.classifiers)
            .map(|(f, c)| c.forward_t(f, train))
            .collect::<Result<Vec<_>>>()?;
        let concat_logits = self.concat.forward_t(&Tensor::cat(&gated, 1)?, train)?;
        Ok(PmsiOutput {
            stage_logits,
            concat_logits,
            gated,
        })
    }
}
