//! MobileNetV2 as torchvision builds it, with a width multiplier and a configurable stem stride.

use candle_core::{Module, ModuleT, Result, Tensor};
use fgvc_ops::{
    global_avg_pool, Activation, BatchNorm, Conv2d, Conv2dConfig, Init, Linear, Params,
};

use crate::backbone::{Backbone, StageInfo};
use fgvc_onnx::{Graph, Value};
use fgvc_ops::Dropout;

/// torchvision's inverted-residual table: expansion `t`, channels `c`, repeats `n`, first stride `s`.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// The last `features` index of each stage (stages end where the resolution next halves, and at the end).
const STAGE_ENDS: [usize; 5] = [1, 3, 6, 13, 18];

/// torchvision's `_make_divisible(v, divisor)`: the nearest multiple of `divisor` (at least `divisor`) that
/// does not go below 90 % of `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// The shape of a MobileNetV2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileNetV2Config {
    /// Channel multiplier; every width is rounded to a multiple of 8 as torchvision does, and the last
    /// conv keeps at least 1280 channels.
    pub width_mult: f64,
    /// Stride of the stem conv (`features.0.0`): 2 in torchvision, 1 in RMG-PMSI's `MobilenetV2_for_PMSI`.
    pub first_stride: usize,
    /// Classes of `classifier.1`, `None` for a headless network.
    pub num_classes: Option<usize>,
    /// Dropout before `classifier.1` (torchvision's default 0.2).
    pub dropout: f64,
}

impl Default for MobileNetV2Config {
    /// torchvision's `mobilenet_v2()`: width 1, stem stride 2, 1000 classes, dropout 0.2.
    fn default() -> Self {
        Self {
            width_mult: 1.0,
            first_stride: 2,
            num_classes: Some(1000),
            dropout: 0.2,
        }
    }
}

/// `Conv2dNormActivation`: conv (no bias), BatchNorm, optional ReLU6.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    act: bool,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        groups: usize,
        act: bool,
        conv_p: &Params,
        bn_p: &Params,
    ) -> Result<Self> {
        let cfg = Conv2dConfig::new(stride, (k - 1) / 2).with_groups(groups);
        let conv = Conv2d::with_init(
            in_c,
            out_c,
            k,
            cfg,
            false,
            Init::KaimingNormal { fan_out: true },
            conv_p,
        )?;
        Ok(Self {
            conv,
            bn: BatchNorm::new(out_c, bn_p)?,
            act,
        })
    }

    /// `act(bn(conv(x)) + residual)`, the add and activation fused into the BatchNorm.
    fn forward_with(&self, x: &Tensor, residual: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let act = if self.act {
            Activation::Relu6
        } else {
            Activation::Identity
        };
        match residual {
            None => self.bn.forward_conv(&self.conv, x, act, train),
            Some(r) => self
                .bn
                .forward_act(&self.conv.forward(x)?, Some(r), act, train),
        }
    }
}

impl ConvBn {
    /// The ONNX graph of `forward_with(x, residual, false)`, the BatchNorm folded into the conv.
    fn export(
        &self,
        g: &mut Graph,
        x: &Value,
        residual: Option<&Value>,
    ) -> fgvc_onnx::Result<Value> {
        let act = if self.act {
            Activation::Relu6
        } else {
            Activation::Identity
        };
        self.bn.export_conv(&self.conv, g, x, residual, act)
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, None, train)
    }
}

/// torchvision's `InvertedResidual`: 1x1 expansion (when `t > 1`), 3x3 depthwise, linear 1x1 projection,
/// plus the input when the shape allows.
#[derive(Debug, Clone)]
struct InvertedResidual {
    layers: Vec<ConvBn>,
    residual: bool,
}

impl InvertedResidual {
    fn new(in_c: usize, out_c: usize, stride: usize, t: usize, p: &Params) -> Result<Self> {
        let hidden = in_c * t;
        let c = p.pp("conv");
        let mut layers = Vec::with_capacity(3);
        // Names: t = 1: conv.0.{0,1} (depthwise), conv.1 + conv.2 (projection);
        //        t > 1: conv.0.{0,1} (expansion), conv.1.{0,1} (depthwise), conv.2 + conv.3 (projection).
        let mut i = 0;
        if t != 1 {
            layers.push(ConvBn::new(
                in_c,
                hidden,
                1,
                1,
                1,
                true,
                &c.pp(0).pp(0),
                &c.pp(0).pp(1),
            )?);
            i = 1;
        }
        layers.push(ConvBn::new(
            hidden,
            hidden,
            3,
            stride,
            hidden,
            true,
            &c.pp(i).pp(0),
            &c.pp(i).pp(1),
        )?);
        layers.push(ConvBn::new(
            hidden,
            out_c,
            1,
            1,
            1,
            false,
            &c.pp(i + 1),
            &c.pp(i + 2),
        )?);
        Ok(Self {
            layers,
            residual: stride == 1 && in_c == out_c,
        })
    }
}

impl ModuleT for InvertedResidual {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (project, rest) = self.layers.split_last().expect("a projection layer");
        let mut y = x.clone();
        for l in rest {
            y = l.forward_t(&y, train)?;
        }
        // The projection's BatchNorm adds the shortcut in its own pass.
        let residual = self.residual.then_some(x);
        project.forward_with(&y, residual, train)
    }
}

impl InvertedResidual {
    /// The ONNX graph of `forward_t(x, false)`.
    fn export(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        let (project, rest) = self.layers.split_last().expect("a projection layer");
        let mut y = x.clone();
        for l in rest {
            y = l.export(g, &y, None)?;
        }
        project.export(g, &y, self.residual.then_some(x))
    }
}

/// One module of `features`.
#[derive(Debug, Clone)]
enum Feature {
    Conv(ConvBn),
    Block(InvertedResidual),
}

impl ModuleT for Feature {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Feature::Conv(c) => c.forward_t(x, train),
            Feature::Block(b) => b.forward_t(x, train),
        }
    }
}

/// torchvision's `MobileNetV2` with its `state_dict` names (`features.0.0.weight`,
/// `features.1.conv.0.0.weight`, `features.2.conv.1.1.running_var`, `features.18.0.weight`,
/// `classifier.1.weight`).
///
/// Stages end where the resolution next halves (reductions shown for `first_stride` 2; all halve with
/// `first_stride` 1):
///
/// | stage | `features` | channels (width 1) | reduction |
/// |---|---|---|---|
/// | `stage1` | `0..=1` | 16 | 2 |
/// | `stage2` | `2..=3` | 24 | 4 |
/// | `stage3` | `4..=6` | 32 | 8 |
/// | `stage4` | `7..=13` | 96 | 16 |
/// | `stage5` | `14..=18` | 1280 | 32 |
///
/// RMG-PMSI's `x3`, `x4`, `x5` (`features[4:7]`, `[7:14]`, `[14:]`) are `stage3..stage5`; its unused `x1`
/// stops at `features.0`, where `stage1` also includes `features.1` (same resolution).
///
/// Initialisation follows torchvision: convs kaiming-normal (fan-out), BatchNorm 1/0, `classifier.1`
/// normal(0, 0.01) with zero bias.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_backbone::{Backbone, MobileNetV2, MobileNetV2Config};
/// use fgvc_ops::ParamStore;
///
/// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
/// let cfg = MobileNetV2Config { width_mult: 0.25, first_stride: 1, num_classes: Some(4), dropout: 0.2 };
/// let net = MobileNetV2::new(cfg, &store.root())?;
/// assert_eq!(net.stage_channels(), vec![8, 8, 8, 24, 1280]);
/// assert_eq!(net.stage_strides(), vec![1, 2, 4, 8, 16]);
/// let logits = net.forward_t(&Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
/// assert_eq!(logits.dims(), &[2, 4]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug)]
pub struct MobileNetV2 {
    cfg: MobileNetV2Config,
    features: Vec<Feature>,
    dropout: Dropout,
    classifier: Option<Linear>,
    last_channel: usize,
    stages: Vec<StageInfo>,
}

impl MobileNetV2 {
    /// Builds the network described by `cfg` under `p`.
    pub fn new(cfg: MobileNetV2Config, p: &Params) -> Result<Self> {
        if cfg.width_mult <= 0.0 || cfg.first_stride == 0 {
            candle_core::bail!(
                "mobilenet_v2: width_mult and first_stride must be positive, got {cfg:?}"
            )
        }
        let fp = p.pp("features");
        let mut in_c = make_divisible(32.0 * cfg.width_mult, 8);
        let last_channel = make_divisible(1280.0 * cfg.width_mult.max(1.0), 8);
        let mut features = Vec::with_capacity(19);
        features.push(Feature::Conv(ConvBn::new(
            3,
            in_c,
            3,
            cfg.first_stride,
            1,
            true,
            &fp.pp("0.0"),
            &fp.pp("0.1"),
        )?));
        let mut channels = vec![in_c];
        for &(t, c, n, s) in SETTINGS.iter() {
            let out_c = make_divisible(c as f64 * cfg.width_mult, 8);
            for i in 0..n {
                let idx = features.len();
                let stride = if i == 0 { s } else { 1 };
                features.push(Feature::Block(InvertedResidual::new(
                    in_c,
                    out_c,
                    stride,
                    t,
                    &fp.pp(idx),
                )?));
                in_c = out_c;
                channels.push(out_c);
            }
        }
        let idx = features.len();
        features.push(Feature::Conv(ConvBn::new(
            in_c,
            last_channel,
            1,
            1,
            1,
            true,
            &fp.pp(format!("{idx}.0")),
            &fp.pp(format!("{idx}.1")),
        )?));
        channels.push(last_channel);
        let stages = STAGE_ENDS
            .iter()
            .enumerate()
            .map(|(i, &end)| StageInfo {
                name: format!("stage{}", i + 1),
                module: format!("features.{end}"),
                channels: channels[end],
                reduction: cfg.first_stride << i,
            })
            .collect();
        let cp = p.pp("classifier");
        let classifier = match cfg.num_classes {
            Some(c) => Some(Linear::with_init(
                last_channel,
                c,
                true,
                Init::Normal {
                    mean: 0.,
                    std: 0.01,
                },
                Init::Const(0.),
                &cp.pp(1),
            )?),
            None => None,
        };
        Ok(Self {
            cfg,
            features,
            dropout: Dropout::new(cfg.dropout, &cp.pp(0))?,
            classifier,
            last_channel,
            stages,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &MobileNetV2Config {
        &self.cfg
    }
}

/// torchvision's `model(x)` in `train()` or `eval()` mode: [`Backbone::forward_t`].
impl ModuleT for MobileNetV2 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Backbone::forward_t(self, x, train)
    }
}

impl Backbone for MobileNetV2 {
    fn stage_info(&self) -> &[StageInfo] {
        &self.stages
    }

    fn forward_stages(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(STAGE_ENDS.len());
        let mut y = x.clone();
        for (i, f) in self.features.iter().enumerate() {
            y = f.forward_t(&y, train)?;
            if STAGE_ENDS.contains(&i) {
                out.push(y.clone());
            }
        }
        Ok(out)
    }

    fn forward_from(&self, stage: usize, map: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let Some(&end) = STAGE_ENDS.get(stage) else {
            return Err(crate::backbone::stage_out_of_range(stage, STAGE_ENDS.len()));
        };
        let mut out = Vec::with_capacity(STAGE_ENDS.len() - stage - 1);
        let mut y = map.clone();
        for (i, f) in self.features.iter().enumerate().skip(end + 1) {
            y = f.forward_t(&y, train)?;
            if STAGE_ENDS.contains(&i) {
                out.push(y.clone());
            }
        }
        Ok(out)
    }

    fn pool(&self, last_stage: &Tensor, _train: bool) -> Result<Tensor> {
        global_avg_pool(last_stage)
    }

    fn classify(&self, pooled: &Tensor, train: bool) -> Result<Option<Tensor>> {
        match &self.classifier {
            Some(fc) => Ok(Some(fc.forward(&self.dropout.forward_t(pooled, train)?)?)),
            None => Ok(None),
        }
    }

    fn export_stages(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Vec<Value>> {
        let mut out = Vec::with_capacity(STAGE_ENDS.len());
        let mut y = x.clone();
        for (i, f) in self.features.iter().enumerate() {
            y = match f {
                Feature::Conv(c) => c.export(g, &y, None)?,
                Feature::Block(b) => b.export(g, &y)?,
            };
            if STAGE_ENDS.contains(&i) {
                out.push(y.clone());
            }
        }
        Ok(out)
    }

    fn export_pool(&self, g: &mut Graph, last_stage: &Value) -> fgvc_onnx::Result<Value> {
        fgvc_ops::export::export_global_avg_pool(g, last_stage)
    }

    /// Dropout is the identity in evaluation mode.
    fn export_classify(&self, g: &mut Graph, pooled: &Value) -> fgvc_onnx::Result<Option<Value>> {
        self.classifier
            .as_ref()
            .map(|fc| fc.export(g, pooled))
            .transpose()
    }

    fn num_features(&self) -> usize {
        self.last_channel
    }

    fn num_classes(&self) -> Option<usize> {
        self.cfg.num_classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{input, max_rel_diff, twin_stores};
    use fgvc_ops::relu6;

    #[test]
    fn make_divisible_matches_torchvision() {
        // Values computed with torchvision.models._utils._make_divisible.
        assert_eq!(make_divisible(32.0 * 0.5, 8), 16);
        assert_eq!(make_divisible(16.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24);
        assert_eq!(make_divisible(96.0 * 0.75, 8), 72);
        assert_eq!(make_divisible(160.0 * 1.4, 8), 224);
        assert_eq!(make_divisible(1280.0 * 1.4, 8), 1792);
        assert_eq!(make_divisible(20.0, 8), 24);
        assert_eq!(make_divisible(28.0, 16), 32);
        assert_eq!(make_divisible(27.0, 16), 32);
    }

    /// `b` with every op on its own: conv, BatchNorm, ReLU6 where the layer has one, then the shortcut.
    fn one_by_one(b: &InvertedResidual, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for l in &b.layers {
            y = l.bn.forward_t(&l.conv.forward(&y)?, train)?;
            if l.act {
                y = relu6(&y)?;
            }
        }
        if b.residual {
            y = (y + x)?;
        }
        Ok(y)
    }

    #[test]
    fn inverted_residuals_forward_t_equals_their_ops_one_by_one() -> Result<()> {
        // (in, out, stride, t): torchvision's t = 1 first block, a residual block, a strided block.
        for (in_c, out_c, stride, t) in [(16, 8, 1, 1), (8, 8, 1, 6), (8, 16, 2, 6)] {
            let (sa, sb) = twin_stores(9);
            let a = InvertedResidual::new(in_c, out_c, stride, t, &sa.root().pp("features.3"))?;
            let b = InvertedResidual::new(in_c, out_c, stride, t, &sb.root().pp("features.3"))?;
            assert_eq!(a.residual, stride == 1 && in_c == out_c);
            assert_eq!(a.layers.len(), if t == 1 { 2 } else { 3 });
            let x = input((2, in_c, 8, 8));
            for train in [true, false] {
                let y = ModuleT::forward_t(&a, &x, train)?;
                let reference = one_by_one(&b, &x, train)?;
                assert_eq!(y.dims(), &[2, out_c, 8 / stride, 8 / stride]);
                let d = max_rel_diff(&y, &reference)?;
                assert!(
                    d < 1e-5,
                    "{in_c}->{out_c} stride {stride} t {t} train {train}: {d}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn mobilenet_forward_t_is_the_backbone_forward() -> Result<()> {
        let cfg = MobileNetV2Config {
            width_mult: 0.25,
            first_stride: 1,
            num_classes: Some(3),
            dropout: 0.2,
        };
        let (sa, sb) = twin_stores(2);
        let a = MobileNetV2::new(cfg, &sa.root())?;
        let b = MobileNetV2::new(cfg, &sb.root())?;
        let x = input((2, 3, 32, 32));
        // In training mode both draw the same dropout mask from their equal streams.
        for train in [true, false] {
            let y = ModuleT::forward_t(&a, &x, train)?;
            let stages = b.forward_stages(&x, train)?;
            let pooled = b.pool(stages.last().expect("five stages"), train)?;
            let logits = b.classify(&pooled, train)?.expect("a classifier");
            assert_eq!(y.to_vec2::<f32>()?, logits.to_vec2::<f32>()?);
        }
        Ok(())
    }
}
