//! DCL (Chen et al., CVPR 2019): the main classifier, the original-vs-destroyed discriminator and the
//! region-alignment ("construction") head on the last stage's feature map, with the head-specific losses.
//!
//! The official `MainModel` (JDAI-CV/DCL `models/LoadModel.py`):
//!
//! ```text
//! pooled = AdaptiveAvgPool2d(1)(f)                       # (B, C)
//! logits = classifier(pooled)                            # Linear(C -> classes, bias=False)
//! swap   = classifier_swap(pooled)                       # Linear(C -> 2 | 2*classes, bias=False)
//! mask   = tanh(AvgPool2d(2)(Convmask(f))).flatten()     # Conv2d(C -> 1, 1x1, bias=True); (B, N*N)
//! ```
//!
//! The official mask pool is a fixed 2x2 window, so it only yields N x N at a 2N x 2N map (14 x 14 at 448,
//! N = 7). Here the window is `(H / N, W / N)`, which is the official 2x2 at that geometry and works for any
//! N dividing the map; other sizes are an error. The paper's form of the head is a 1x1 conv to 2 channels
//! (row, column), ReLU and an average pool to 2 x N x N ([`LocationHead::Paper`]).

use candle_core::{Device, Module, Result, Tensor};
use fgvc_onnx::{Graph, Value};
use fgvc_ops::{global_avg_pool, relu, Conv2d, Conv2dConfig, Linear, Params};
use serde::{Deserialize, Serialize};

/// The discriminator's output space (the official `--cls_2` / `--cls_mul` options); `joint` or `binary` in
/// a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapHead {
    /// `cls_2xmul`: 2C outputs, target `y` for an original image and `y + C` for a destroyed one; the official
    /// default for CUB, Cars and Aircraft.
    Joint,
    /// `cls_2`: 2 outputs, target 1 for an original image and 0 for a destroyed one (the paper's form).
    Binary,
}

/// The region-alignment head's form; `official` or `paper` in a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationHead {
    /// The code: `Convmask` 1x1 conv to 1 channel (with bias), average pool to N x N, tanh, flattened to
    /// (B, N*N); trained with L1 against a normalised region index (see [`official_law`]).
    Official,
    /// The paper: 1x1 conv to 2 channels (no bias: the paper's 8192-parameter budget), ReLU, average pool to
    /// (B, 2, N, N) predicting each region's original (row, column); trained with [`paper_location_loss`].
    Paper,
}

/// Configuration of a DCL head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DclConfig {
    /// Channels of the feature map (2048 for ResNet-50).
    pub in_channels: usize,
    /// Number of classes C.
    pub num_classes: usize,
    /// Discriminator form.
    pub swap: SwapHead,
    /// Region-alignment form.
    pub location: LocationHead,
    /// Regions per side N (7 officially; 2 for FGVC-Aircraft in the paper).
    pub grid: usize,
}

impl DclConfig {
    /// The official configuration on the README's runs: `cls_mul` discriminator, official mask head, N = 7.
    pub fn official(in_channels: usize, num_classes: usize) -> Self {
        Self {
            in_channels,
            num_classes,
            swap: SwapHead::Joint,
            location: LocationHead::Official,
            grid: 7,
        }
    }
}

/// The outputs of a DCL head on a batch.
#[derive(Debug, Clone)]
pub struct DclOutput {
    /// Main classifier logits (B, C).
    pub logits: Tensor,
    /// Discriminator logits (B, 2) or (B, 2C).
    pub swap: Tensor,
    /// Official: (B, N*N) in (-1, 1). Paper: (B, 2, N, N), non-negative (row, column) predictions.
    pub location: Tensor,
}

impl DclOutput {
    /// The test-time prediction of the official `eval_turn`: the logits with `cls_2`, and
    /// `logits + swap[:, :C] + swap[:, C:]` with `cls_mul`. (The paper predicts with `logits` alone.)
    pub fn official_prediction(&self) -> Result<Tensor> {
        let c = self.logits.dim(1)?;
        if self.swap.dim(1)? == 2 * c {
            self.logits
                .add(&self.swap.narrow(1, 0, c)?)?
                .add(&self.swap.narrow(1, c, c)?)
        } else {
            Ok(self.logits.clone())
        }
    }
}

enum Location {
    Official(Conv2d),
    Paper(Conv2d),
}

/// The DCL heads on the last stage's feature map.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_heads::dcl::{DclConfig, DclHead, LocationHead, SwapHead};
/// use fgvc_ops::ParamStore;
///
/// let store = ParamStore::new(4, DType::F32, &Device::Cpu);
/// let cfg = DclConfig { in_channels: 8, num_classes: 3, swap: SwapHead::Joint, location: LocationHead::Official, grid: 2 };
/// let head = DclHead::new(cfg, &store.root())?;
/// let out = head.forward(&Tensor::randn(0f32, 1., (4, 8, 4, 4), &Device::Cpu)?)?;
/// assert_eq!(out.swap.dims(), &[4, 6]);
/// assert_eq!(out.location.dims(), &[4, 4]);
/// assert!(store.get("Convmask.bias").is_some());
/// # Ok::<(), candle_core::Error>(())
/// ```
pub struct DclHead {
    cfg: DclConfig,
    classifier: Linear,
    classifier_swap: Linear,
    location: Location,
}

impl std::fmt::Debug for DclHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DclHead").field("cfg", &self.cfg).finish()
    }
}

impl DclHead {
    /// Builds the head under `p` with the official names (`classifier`, `classifier_swap`, `Convmask`; the
    /// paper's location conv is `Convloc`) and PyTorch's default initialisation.
    pub fn new(cfg: DclConfig, p: &Params) -> Result<Self> {
        if cfg.grid == 0 || cfg.num_classes == 0 || cfg.in_channels == 0 {
            candle_core::bail!("DCL: grid, classes and channels must be positive, got {cfg:?}")
        }
        let classifier = Linear::new(cfg.in_channels, cfg.num_classes, false, &p.pp("classifier"))?;
        let swap_out = match cfg.swap {
            SwapHead::Binary => 2,
            SwapHead::Joint => 2 * cfg.num_classes,
        };
        let classifier_swap =
            Linear::new(cfg.in_channels, swap_out, false, &p.pp("classifier_swap"))?;
        let location = match cfg.location {
            LocationHead::Official => Location::Official(Conv2d::new(
                cfg.in_channels,
                1,
                1,
                Conv2dConfig::default(),
                true,
                &p.pp("Convmask"),
            )?),
            LocationHead::Paper => Location::Paper(Conv2d::new(
                cfg.in_channels,
                2,
                1,
                Conv2dConfig::default(),
                false,
                &p.pp("Convloc"),
            )?),
        };
        Ok(Self {
            cfg,
            classifier,
            classifier_swap,
            location,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DclConfig {
        &self.cfg
    }

    /// All three heads on a feature map (B, C, H, W); H and W must be multiples of N.
    pub fn forward(&self, features: &Tensor) -> Result<DclOutput> {
        let (_, c, h, w) = features.dims4()?;
        if c != self.cfg.in_channels {
            candle_core::bail!("DCL: expected {} channels, got {c}", self.cfg.in_channels)
        }
        let n = self.cfg.grid;
        if h % n != 0 || w % n != 0 {
            candle_core::bail!(
                "DCL: a {h}x{w} feature map cannot be pooled to a {n}x{n} region grid; H and W must be multiples of N \
                 (the official head needs a 2N x 2N map, e.g. 14x14 for N = 7 at 448 input)"
            )
        }
        let pooled = global_avg_pool(features)?;
        let logits = self.classifier.forward(&pooled)?;
        let swap = self.classifier_swap.forward(&pooled)?;
        let location = match &self.location {
            Location::Official(conv) => region_avg_pool(&conv.forward(features)?, n)?
                .tanh()?
                .flatten_from(1)?,
            Location::Paper(conv) => region_avg_pool(&relu(&conv.forward(features)?)?, n)?,
        };
        Ok(DclOutput {
            logits,
            swap,
            location,
        })
    }
}

/// The classifier and discriminator logits of a DCL head as graph values.
#[derive(Debug, Clone)]
pub struct DclValues {
    /// Main classifier logits (B, C).
    pub logits: Value,
    /// Discriminator logits (B, 2) or (B, 2C).
    pub swap: Value,
}

impl DclValues {
    /// The ONNX graph of [`DclOutput::official_prediction`].
    pub fn official_prediction(&self, g: &mut Graph) -> fgvc_onnx::Result<Value> {
        let c = self.logits.fixed_dim("DCL", 1)?;
        if self.swap.fixed_dim("DCL", 1)? == 2 * c {
            let first = g.slice(&self.swap, 1, 0, c)?;
            let second = g.slice(&self.swap, 1, c, 2 * c)?;
            let y = g.add(&self.logits, &first)?;
            g.add(&y, &second)
        } else {
            Ok(self.logits.clone())
        }
    }
}

impl DclHead {
    /// The ONNX graph of the classifier and the discriminator of [`DclHead::forward`] on a graph value
    /// of the feature map. The region-alignment head is a training signal that no prediction reads, so it
    /// is not part of the graph.
    pub fn export(&self, g: &mut Graph, features: &Value) -> fgvc_onnx::Result<DclValues> {
        if features.rank() != 4 || features.fixed_dim("DCL", 1)? != self.cfg.in_channels {
            return Err(fgvc_onnx::ExportError::Shape {
                op: "DCL".into(),
                message: format!(
                    "expected (N, {}, H, W) features, got {:?}",
                    self.cfg.in_channels,
                    features.shape()
                ),
            });
        }
        let pooled = fgvc_ops::export::export_global_avg_pool(g, features)?;
        Ok(DclValues {
            logits: self.classifier.export(g, &pooled)?,
            swap: self.classifier_swap.export(g, &pooled)?,
        })
    }
}

/// Average pool of (B, C, H, W) over an `n` x `n` grid of `(H/n) x (W/n)` windows: (B, C, n, n).
pub fn region_avg_pool(x: &Tensor, n: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if n == 0 || h % n != 0 || w % n != 0 {
        candle_core::bail!("region_avg_pool: {h}x{w} is not divisible into {n}x{n} regions")
    }
    x.reshape((b, c, n, h / n, n, w / n))?.mean(5)?.mean(3)
}

fn check_permutation(source_of: &[u32], n: usize) -> Result<()> {
    let mut seen = vec![false; n * n];
    if source_of.len() != n * n {
        candle_core::bail!(
            "DCL: a {n}x{n} layout needs {} entries, got {}",
            n * n,
            source_of.len()
        )
    }
    for &q in source_of {
        let q = q as usize;
        if q >= n * n || seen[q] {
            candle_core::bail!("DCL: {source_of:?} is not a permutation of 0..{}", n * n)
        }
        seen[q] = true;
    }
    Ok(())
}

/// The official "swap law" of one image: for each region position p (row-major), `(q - N²/2) / N²` where q
/// is the original region the caller says is shown at p (`law[p] = (idx - 24) / 49` for N = 7). `source_of`
/// is the identity for an original image; for a destroyed one it is whatever the caller's target is: the
/// official brightness-matching guess (it may repeat indices) or the exact permutation.
pub fn official_law(source_of: &[u32], n: usize) -> Result<Vec<f32>> {
    if source_of.len() != n * n || source_of.iter().any(|&q| q as usize >= n * n) {
        candle_core::bail!(
            "DCL: law needs {} region indices below {}, got {source_of:?}",
            n * n,
            n * n
        )
    }
    let nn = (n * n) as f32;
    let half = ((n * n) / 2) as f32;
    Ok(source_of.iter().map(|&q| (q as f32 - half) / nn).collect())
}

/// The official location loss: `nn.L1Loss()` (mean over B x N²) between the mask (B, N²) and the laws (B, N²).
pub fn official_location_loss(mask: &Tensor, law: &Tensor) -> Result<Tensor> {
    if mask.dims() != law.dims() {
        candle_core::bail!(
            "DCL: mask {:?} and law {:?} differ in shape",
            mask.dims(),
            law.dims()
        )
    }
    mask.sub(&law.to_dtype(mask.dtype())?)?.abs()?.mean_all()
}

/// The paper's location targets (B, 2, N, N): at each position of image b, the 1-based (row, column) of the
/// original region shown there (the paper's `(i, j)`, 1 <= i, j <= N). `source_of[b]` is image b's
/// permutation (row-major output cell -> input cell; the identity for an original image).
pub fn paper_location_targets(source_of: &[Vec<u32>], n: usize, device: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(source_of.len() * 2 * n * n);
    for perm in source_of {
        check_permutation(perm, n)?;
        data.extend(perm.iter().map(|&q| (q as usize / n + 1) as f32));
        data.extend(perm.iter().map(|&q| (q as usize % n + 1) as f32));
    }
    Tensor::from_vec(data, (source_of.len(), 2, n, n), device)
}

/// The paper's L_loc: per image, the sum over regions of the L1 distance between the predicted and the true
/// (row, column), averaged over the batch (the paper sums over the data set; the mean keeps the scale
/// independent of the batch size).
pub fn paper_location_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    if pred.dims() != target.dims() || pred.rank() != 4 || pred.dim(1)? != 2 {
        candle_core::bail!(
            "DCL: paper location expects equal (B, 2, N, N) shapes, got {:?} and {:?}",
            pred.dims(),
            target.dims()
        )
    }
    let b = pred.dim(0)? as f64;
    pred.sub(&target.to_dtype(pred.dtype())?)?
        .abs()?
        .sum_all()?
        .affine(1.0 / b, 0.0)
}

/// The discriminator's targets: `cls_2` gives 1 for an original and 0 for a destroyed image; `cls_mul` gives
/// `y` and `y + C`.
pub fn swap_targets(
    labels: &[u32],
    destroyed: &[bool],
    kind: SwapHead,
    num_classes: usize,
    device: &Device,
) -> Result<Tensor> {
    if labels.len() != destroyed.len() {
        candle_core::bail!(
            "DCL: {} labels but {} destroyed flags",
            labels.len(),
            destroyed.len()
        )
    }
    let t: Vec<u32> = labels
        .iter()
        .zip(destroyed)
        .map(|(&y, &d)| match kind {
            SwapHead::Binary => u32::from(!d),
            SwapHead::Joint => y + if d { num_classes as u32 } else { 0 },
        })
        .collect();
    Tensor::from_vec(t, labels.len(), device)
}

/// The weights of the three DCL losses: `L = alpha CE(logits) + beta CE(swap) + gamma L_loc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DclLossWeights {
    /// Classification weight (1).
    pub alpha: f64,
    /// Discriminator weight (1).
    pub beta: f64,
    /// Location weight (1 for CUB, 0.01 for Cars and Aircraft).
    pub gamma: f64,
}

/// The three DCL losses on one output: the class targets (u32, B), the swap targets (u32, B, from
/// [`swap_targets`]) and the location targets (official laws (B, N²) or paper targets (B, 2, N, N)).
/// Returns `(total, cls, swap, location)`.
pub fn dcl_loss(
    out: &DclOutput,
    labels: &Tensor,
    swap_labels: &Tensor,
    location_targets: &Tensor,
    w: DclLossWeights,
) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let cls = candle_nn::loss::cross_entropy(&out.logits, labels)?;
    let swap = candle_nn::loss::cross_entropy(&out.swap, swap_labels)?;
    let loc = if out.location.rank() == 2 {
        official_location_loss(&out.location, location_targets)?
    } else {
        paper_location_loss(&out.location, location_targets)?
    };
    let total = cls
        .affine(w.alpha, 0.)?
        .add(&swap.affine(w.beta, 0.)?)?
        .add(&loc.affine(w.gamma, 0.)?)?;
    Ok((total, cls, swap, loc))
}
