//! The [`Backbone`] trait every network implements, and the description of its stages.

use candle_core::{Result, Tensor};
use fgvc_onnx::{ExportError, Graph, Value};

/// One stage of a backbone: where its feature map is tapped, how many channels it has and how much smaller
/// than the input it is (timm's `feature_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInfo {
    /// Short name (`"stem"`, `"layer3"`, `"block4"`, `"stride16"`).
    pub name: String,
    /// The torchvision module whose output this stage is (`"layer3"`, `"features.22"`, `"features.13"`).
    pub module: String,
    /// Channels of the feature map.
    pub channels: usize,
    /// Input size divided by the feature-map size (for inputs divisible by it; torchvision's rounding
    /// applies otherwise).
    pub reduction: usize,
}

/// A convolutional network seen as a stack of stages followed by a pooled embedding and an optional
/// classifier.
///
/// The forward pass is split so that methods can tap intermediate maps and still get the logits from the
/// same pass:
///
/// ```text
/// x --forward_stages--> [s0, s1, ..., sL]   (feature maps, shallow to deep)
///                                      sL --pool--> pooled (N, num_features)
///                                                   pooled --classify--> Some(logits) | None (headless)
/// ```
///
/// `forward_t(x)` equals torchvision's `model(x)` (in `train()` or `eval()` mode per `train`). In training
/// mode BatchNorm normalises with batch statistics and updates its running statistics in place, and dropout
/// draws from the model's own seeded RNG (see [`crate::Dropout`]).
///
/// The trait is object safe: methods hold a `Box<dyn Backbone>` built by [`crate::create`].
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_backbone::{Backbone, ResNet, ResNetConfig};
/// use fgvc_ops::ParamStore;
///
/// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
/// // A ResNet-18 layout at a tenth of the width, with a 5-way classifier.
/// let net = ResNet::new(ResNetConfig { base_width: 8, ..ResNetConfig::resnet18(Some(5)) }, &store.root())?;
/// let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu)?;
/// let stages = net.forward_stages(&x, false)?;
/// assert_eq!(stages[4].dims(), &[2, 64, 2, 2]);
/// assert_eq!(net.stage_strides(), vec![4, 4, 8, 16, 32]);
/// let pooled = net.pool(&stages[4], false)?;
/// let logits = net.classify(&pooled, false)?.expect("built with a classifier");
/// assert_eq!(logits.dims(), &[2, 5]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub trait Backbone: Send + Sync {
    /// The stages [`Backbone::forward_stages`] returns, shallow to deep.
    fn stage_info(&self) -> &[StageInfo];

    /// The feature map of every stage, shallow to deep (`stage_info().len()` tensors of shape
    /// `(N, channels, H / reduction, W / reduction)`).
    fn forward_stages(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>>;

    /// The feature maps of the stages after `stage`, run from that stage's map: for `maps =
    /// forward_stages(x)`, `forward_from(k, &maps[k])` equals `maps[k + 1..]` (empty for the last stage).
    /// Grad-CAM at a chosen stage reads it. A `stage` out of range is an error.
    fn forward_from(&self, stage: usize, map: &Tensor, train: bool) -> Result<Vec<Tensor>>;

    /// The pooled embedding `(N, num_features)` computed from the last stage's map: what the final linear
    /// layer reads (ResNet and MobileNetV2: global average pool; VGG: pool5, the 7x7 adaptive average pool and
    /// the two 4096-wide layers when it has a classifier, a global average pool of pool5 when headless).
    fn pool(&self, last_stage: &Tensor, train: bool) -> Result<Tensor>;

    /// The final classification layer applied to [`Backbone::pool`]'s output, or `None` for a headless
    /// backbone.
    fn classify(&self, pooled: &Tensor, train: bool) -> Result<Option<Tensor>>;

    /// Width of the pooled embedding.
    fn num_features(&self) -> usize;

    /// Number of classes of the classifier, `None` when headless.
    fn num_classes(&self) -> Option<usize>;

    /// Channels of each stage.
    fn stage_channels(&self) -> Vec<usize> {
        self.stage_info().iter().map(|s| s.channels).collect()
    }

    /// Names of each stage.
    fn stage_names(&self) -> Vec<String> {
        self.stage_info().iter().map(|s| s.name.clone()).collect()
    }

    /// Reduction (cumulative stride) of each stage.
    fn stage_strides(&self) -> Vec<usize> {
        self.stage_info().iter().map(|s| s.reduction).collect()
    }

    /// The pooled embedding of `x`: `pool(forward_stages(x).last())`.
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let stages = self.forward_stages(x, train)?;
        let last = stages
            .last()
            .ok_or_else(|| candle_core::Error::Msg("backbone has no stages".into()))?;
        self.pool(last, train)
    }

    /// The ONNX graph of [`Backbone::forward_stages`] in evaluation mode on the graph value `x`
    /// `(N, 3, H, W)`: one value per stage, as the forward returns them. The default is an error naming
    /// the type, for backbones without an export.
    fn export_stages(&self, _g: &mut Graph, _x: &Value) -> fgvc_onnx::Result<Vec<Value>> {
        Err(not_exportable::<Self>())
    }

    /// The ONNX graph of [`Backbone::pool`] in evaluation mode.
    fn export_pool(&self, _g: &mut Graph, _last_stage: &Value) -> fgvc_onnx::Result<Value> {
        Err(not_exportable::<Self>())
    }

    /// The ONNX graph of [`Backbone::classify`] in evaluation mode (`None` when headless).
    fn export_classify(&self, _g: &mut Graph, _pooled: &Value) -> fgvc_onnx::Result<Option<Value>> {
        Err(not_exportable::<Self>())
    }

    /// The ONNX graph of [`Backbone::features`]: `export_pool(export_stages(x).last())`.
    fn export_features(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        let stages = self.export_stages(g, x)?;
        let last = stages
            .last()
            .ok_or_else(|| ExportError::Unsupported("a backbone without stages".into()))?;
        self.export_pool(g, last)
    }

    /// The logits of `x`, torchvision's `model(x)`; an error for a headless backbone.
    ///
    /// [`crate::ResNet`], [`crate::Vgg`] and [`crate::MobileNetV2`] also implement candle's
    /// [`ModuleT`](candle_core::ModuleT) as this method; where both traits are imported, name the one meant
    /// (`Backbone::forward_t(&net, x, train)`).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let pooled = self.features(x, train)?;
        self.classify(&pooled, train)?.ok_or_else(|| {
            candle_core::Error::Msg(
                "forward_t on a headless backbone: build it with num_classes".into(),
            )
        })
    }
}

/// The error of [`Backbone::forward_from`] for a stage out of range.
pub(crate) fn stage_out_of_range(stage: usize, stages: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "forward_from: stage {stage} is out of range: the backbone has {stages} stages (0..={})",
        stages.saturating_sub(1)
    ))
}

/// The error of a backbone type without an ONNX export.
fn not_exportable<T: ?Sized>() -> ExportError {
    ExportError::Unsupported(format!(
        "the backbone {} has no ONNX export (Backbone::export_stages)",
        std::any::type_name::<T>()
    ))
}
