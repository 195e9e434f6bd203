//! ResNet-18/34/50/101 as torchvision builds them (v1.5: the stride of a bottleneck sits on its 3x3 conv).

use candle_core::{Module, ModuleT, Result, Tensor};
use fgvc_ops::{
    global_avg_pool, max_pool2d, Activation, BatchNorm, Conv2d, Conv2dConfig, Init, Linear, Params,
};

use crate::backbone::{Backbone, StageInfo};
use fgvc_onnx::{Graph, Value};

/// The residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs (ResNet-18/34), expansion 1.
    Basic,
    /// 1x1 -> 3x3 (strided) -> 1x1 convs (ResNet-50/101), expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block per unit of its `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The shape of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Residual block type.
    pub block: BlockKind,
    /// Number of blocks in `layer1..layer4`.
    pub layers: [usize; 4],
    /// Channels of the stem and `planes` of `layer1` (64 in every torchvision ResNet); `layer2..4` use 2x,
    /// 4x, 8x. **Extension**: torchvision has no such knob (its own `base_width` argument is the bottleneck's
    /// per-group width, which this is not); a small value such as 8 gives the same layout and names at a
    /// fraction of the cost, for tests and CPU demos. Pretrained weights need 64.
    pub base_width: usize,
    /// Classes of the `fc` layer, `None` for a headless network (no `fc` parameters).
    pub num_classes: Option<usize>,
}

impl ResNetConfig {
    /// ResNet-18: basic blocks `[2, 2, 2, 2]`.
    pub fn resnet18(num_classes: Option<usize>) -> Self {
        Self {
            block: BlockKind::Basic,
            layers: [2, 2, 2, 2],
            base_width: 64,
            num_classes,
        }
    }
    /// ResNet-34: basic blocks `[3, 4, 6, 3]`.
    pub fn resnet34(num_classes: Option<usize>) -> Self {
        Self {
            block: BlockKind::Basic,
            layers: [3, 4, 6, 3],
            base_width: 64,
            num_classes,
        }
    }
    /// ResNet-50: bottlenecks `[3, 4, 6, 3]`.
    pub fn resnet50(num_classes: Option<usize>) -> Self {
        Self {
            block: BlockKind::Bottleneck,
            layers: [3, 4, 6, 3],
            base_width: 64,
            num_classes,
        }
    }
    /// ResNet-101: bottlenecks `[3, 4, 23, 3]`.
    pub fn resnet101(num_classes: Option<usize>) -> Self {
        Self {
            block: BlockKind::Bottleneck,
            layers: [3, 4, 23, 3],
            base_width: 64,
            num_classes,
        }
    }
}

fn conv(in_c: usize, out_c: usize, k: usize, stride: usize, p: &Params) -> Result<Conv2d> {
    // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), no bias.
    Conv2d::with_init(
        in_c,
        out_c,
        k,
        Conv2dConfig::new(stride, k / 2),
        false,
        Init::KaimingNormal { fan_out: true },
        p,
    )
}

/// A residual block, torchvision's `BasicBlock` or `Bottleneck` per its [`BlockKind`]:
/// `relu(convs(x) + downsample(x))`, each conv followed by its BatchNorm (and a ReLU but for the last).
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm)>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Block {
    fn new(kind: BlockKind, in_c: usize, planes: usize, stride: usize, p: &Params) -> Result<Self> {
        let out_c = planes * kind.expansion();
        let cb = |i: usize,
                  cin: usize,
                  cout: usize,
                  k: usize,
                  s: usize|
         -> Result<(Conv2d, BatchNorm)> {
            Ok((
                conv(cin, cout, k, s, &p.pp(format!("conv{i}")))?,
                BatchNorm::new(cout, &p.pp(format!("bn{i}")))?,
            ))
        };
        let convs = match kind {
            BlockKind::Basic => vec![
                cb(1, in_c, planes, 3, stride)?,
                cb(2, planes, planes, 3, 1)?,
            ],
            BlockKind::Bottleneck => {
                vec![
                    cb(1, in_c, planes, 1, 1)?,
                    cb(2, planes, planes, 3, stride)?,
                    cb(3, planes, out_c, 1, 1)?,
                ]
            }
        };
        let downsample = if stride != 1 || in_c != out_c {
            let d = p.pp("downsample");
            Some((
                conv(in_c, out_c, 1, stride, &d.pp(0))?,
                BatchNorm::new(out_c, &d.pp(1))?,
            ))
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let identity = match &self.downsample {
            Some((c, bn)) => bn.forward_conv(c, x, Activation::Identity, train)?,
            None => x.clone(),
        };
        let (last, rest) = self.convs.split_last().expect("a block has convs");
        let mut y = x.clone();
        for (c, bn) in rest {
            // Conv-BN-ReLU as one op.
            y = bn.forward_conv(c, &y, Activation::Relu, train)?;
        }
        // relu(bn(conv(y)) + identity), the BatchNorm with its add and activation in one op.
        let (c, bn) = last;
        bn.forward_act(&c.forward(&y)?, Some(&identity), Activation::Relu, train)
    }
}

impl Block {
    /// The ONNX graph of `forward_t(x, false)`, every BatchNorm folded into its conv.
    fn export(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        let identity = match &self.downsample {
            Some((c, bn)) => bn.export_conv(c, g, x, None, Activation::Identity)?,
            None => x.clone(),
        };
        let (last, rest) = self.convs.split_last().expect("a block has convs");
        let mut y = x.clone();
        for (c, bn) in rest {
            y = bn.export_conv(c, g, &y, None, Activation::Relu)?;
        }
        let (c, bn) = last;
        bn.export_conv(c, g, &y, Some(&identity), Activation::Relu)
    }
}

/// torchvision's `ResNet` with parameters named as in its `state_dict` (`conv1.weight`,
/// `layer3.5.bn2.running_var`, `layer1.0.downsample.0.weight`, `fc.weight`), so a torchvision checkpoint
/// loads unchanged.
///
/// Stages: `stem` (conv1, bn1, relu, maxpool; stride 4), `layer1` (4), `layer2` (8), `layer3` (16),
/// `layer4` (32). PMG and DCL read `layer2..layer4` / `layer4`.
///
/// Initialisation follows torchvision: convs kaiming-normal (fan-out, ReLU gain), BatchNorm weight 1 and
/// bias 0, `fc` PyTorch's default `Linear` init.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_backbone::{Backbone, ResNet, ResNetConfig};
/// use fgvc_ops::ParamStore;
///
/// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
/// let net = ResNet::new(ResNetConfig { base_width: 4, ..ResNetConfig::resnet50(None) }, &store.root())?;
/// assert_eq!(net.stage_channels(), vec![4, 16, 32, 64, 128]);
/// assert!(store.names().contains(&"layer1.0.downsample.0.weight".to_string()));
/// let f = net.features(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
/// assert_eq!(f.dims(), &[1, 128]);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResNet {
    cfg: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm,
    layers: Vec<Vec<Block>>,
    fc: Option<Linear>,
    stages: Vec<StageInfo>,
}

impl ResNet {
    /// Builds the network described by `cfg` under `p` (use the store's root for torchvision names).
    pub fn new(cfg: ResNetConfig, p: &Params) -> Result<Self> {
        if cfg.base_width == 0 || cfg.layers.contains(&0) {
            candle_core::bail!(
                "resnet: base_width and every layer's block count must be positive, got {cfg:?}"
            )
        }
        let w = cfg.base_width;
        let exp = cfg.block.expansion();
        let conv1 = conv(3, w, 7, 2, &p.pp("conv1"))?;
        let bn1 = BatchNorm::new(w, &p.pp("bn1"))?;
        let mut stages = vec![StageInfo {
            name: "stem".into(),
            module: "maxpool".into(),
            channels: w,
            reduction: 4,
        }];
        let mut layers = Vec::with_capacity(4);
        let mut in_c = w;
        for (li, &n) in cfg.layers.iter().enumerate() {
            let planes = w << li;
            let stride = if li == 0 { 1 } else { 2 };
            let lp = p.pp(format!("layer{}", li + 1));
            let mut blocks = Vec::with_capacity(n);
            for bi in 0..n {
                blocks.push(Block::new(
                    cfg.block,
                    in_c,
                    planes,
                    if bi == 0 { stride } else { 1 },
                    &lp.pp(bi),
                )?);
                in_c = planes * exp;
            }
            layers.push(blocks);
            let name = format!("layer{}", li + 1);
            stages.push(StageInfo {
                name: name.clone(),
                module: name,
                channels: in_c,
                reduction: 4 << li,
            });
        }
        let fc = match cfg.num_classes {
            Some(c) => Some(Linear::new(in_c, c, true, &p.pp("fc"))?),
            None => None,
        };
        Ok(Self {
            cfg,
            conv1,
            bn1,
            layers,
            fc,
            stages,
        })
    }

    /// ResNet-18 with an optional `fc` of `num_classes`.
    pub fn resnet18(num_classes: Option<usize>, p: &Params) -> Result<Self> {
        Self::new(ResNetConfig::resnet18(num_classes), p)
    }
    /// ResNet-34 with an optional `fc` of `num_classes`.
    pub fn resnet34(num_classes: Option<usize>, p: &Params) -> Result<Self> {
        Self::new(ResNetConfig::resnet34(num_classes), p)
    }
    /// ResNet-50 with an optional `fc` of `num_classes`.
    pub fn resnet50(num_classes: Option<usize>, p: &Params) -> Result<Self> {
        Self::new(ResNetConfig::resnet50(num_classes), p)
    }
    /// ResNet-101 with an optional `fc` of `num_classes`.
    pub fn resnet101(num_classes: Option<usize>, p: &Params) -> Result<Self> {
        Self::new(ResNetConfig::resnet101(num_classes), p)
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }
}

/// torchvision's `model(x)` in `train()` or `eval()` mode: [`Backbone::forward_t`].
impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Backbone::forward_t(self, x, train)
    }
}

impl Backbone for ResNet {
    fn stage_info(&self) -> &[StageInfo] {
        &self.stages
    }

    fn forward_stages(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let stem = self
            .bn1
            .forward_conv(&self.conv1, x, Activation::Relu, train)?;
        let mut y = max_pool2d(&stem, 3, 2, 1)?;
        let mut out = Vec::with_capacity(5);
        out.push(y.clone());
        for blocks in &self.layers {
            for b in blocks {
                y = b.forward_t(&y, train)?;
            }
            out.push(y.clone());
        }
        Ok(out)
    }

    fn forward_from(&self, stage: usize, map: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        if stage > self.layers.len() {
            return Err(crate::backbone::stage_out_of_range(
                stage,
                self.layers.len() + 1,
            ));
        }
        let mut y = map.clone();
        let mut out = Vec::with_capacity(self.layers.len() - stage);
        for blocks in &self.layers[stage..] {
            for b in blocks {
                y = b.forward_t(&y, train)?;
            }
            out.push(y.clone());
        }
        Ok(out)
    }

    fn pool(&self, last_stage: &Tensor, _train: bool) -> Result<Tensor> {
        global_avg_pool(last_stage)
    }

    fn classify(&self, pooled: &Tensor, _train: bool) -> Result<Option<Tensor>> {
        self.fc.as_ref().map(|fc| fc.forward(pooled)).transpose()
    }

    fn export_stages(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Vec<Value>> {
        let stem = self
            .bn1
            .export_conv(&self.conv1, g, x, None, Activation::Relu)?;
        let mut y = fgvc_ops::export::export_max_pool2d(g, &stem, 3, 2, 1)?;
        let mut out = Vec::with_capacity(5);
        out.push(y.clone());
        for blocks in &self.layers {
            for b in blocks {
                y = b.export(g, &y)?;
            }
            out.push(y.clone());
        }
        Ok(out)
    }

    fn export_pool(&self, g: &mut Graph, last_stage: &Value) -> fgvc_onnx::Result<Value> {
        fgvc_ops::export::export_global_avg_pool(g, last_stage)
    }

    fn export_classify(&self, g: &mut Graph, pooled: &Value) -> fgvc_onnx::Result<Option<Value>> {
        self.fc.as_ref().map(|fc| fc.export(g, pooled)).transpose()
    }

    fn num_features(&self) -> usize {
        self.cfg.base_width * 8 * self.cfg.block.expansion()
    }

    fn num_classes(&self) -> Option<usize> {
        self.cfg.num_classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{input, max_rel_diff, twin_stores};

    /// `b` with every op on its own: conv, BatchNorm, ReLU, and the shortcut added before the last ReLU.
    fn one_by_one(b: &Block, x: &Tensor, train: bool) -> Result<Tensor> {
        let identity = match &b.downsample {
            Some((c, bn)) => bn.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        let mut y = x.clone();
        for (i, (c, bn)) in b.convs.iter().enumerate() {
            y = bn.forward_t(&c.forward(&y)?, train)?;
            if i + 1 < b.convs.len() {
                y = y.relu()?;
            }
        }
        (y + identity)?.relu()
    }

    #[test]
    fn blocks_forward_t_equals_their_ops_one_by_one() -> Result<()> {
        let cases = [
            (BlockKind::Basic, 8, 8, 1),
            (BlockKind::Basic, 8, 16, 2),
            (BlockKind::Bottleneck, 32, 8, 1),
            (BlockKind::Bottleneck, 16, 8, 2),
        ];
        for (kind, in_c, planes, stride) in cases {
            let (sa, sb) = twin_stores(5);
            let a = Block::new(kind, in_c, planes, stride, &sa.root().pp("layer2.0"))?;
            let b = Block::new(kind, in_c, planes, stride, &sb.root().pp("layer2.0"))?;
            assert_eq!(
                a.downsample.is_some(),
                stride != 1 || in_c != planes * kind.expansion()
            );
            let x = input((2, in_c, 8, 8));
            // Training first, so that evaluation reads updated running statistics.
            for train in [true, false] {
                let y = ModuleT::forward_t(&a, &x, train)?;
                let reference = one_by_one(&b, &x, train)?;
                assert_eq!(
                    y.dims(),
                    &[2, planes * kind.expansion(), 8 / stride, 8 / stride]
                );
                let d = max_rel_diff(&y, &reference)?;
                assert!(
                    d < 1e-5,
                    "{kind:?} {in_c}->{planes} stride {stride} train {train}: {d}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn resnet_forward_t_is_the_backbone_forward() -> Result<()> {
        for cfg in [
            ResNetConfig::resnet18(Some(3)),
            ResNetConfig::resnet50(Some(3)),
        ] {
            let cfg = ResNetConfig {
                base_width: 4,
                ..cfg
            };
            let (sa, sb) = twin_stores(1);
            let a = ResNet::new(cfg, &sa.root())?;
            let b = ResNet::new(cfg, &sb.root())?;
            let x = input((2, 3, 32, 32));
            for train in [true, false] {
                let y = ModuleT::forward_t(&a, &x, train)?;
                let stages = b.forward_stages(&x, train)?;
                let pooled = b.pool(stages.last().expect("five stages"), train)?;
                let logits = b.classify(&pooled, train)?.expect("a classifier");
                assert_eq!(y.to_vec2::<f32>()?, logits.to_vec2::<f32>()?);
            }
        }
        Ok(())
    }
}
