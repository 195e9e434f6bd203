//! VGG-16 with and without BatchNorm, as torchvision builds them.

use candle_core::{Module, ModuleT, Result, Tensor};
use fgvc_ops::{
    adaptive_avg_pool2d, global_avg_pool, max_pool2d, relu, Activation, BatchNorm, Conv2d,
    Conv2dConfig, Init, Linear, Params,
};

use crate::backbone::{Backbone, StageInfo};
use fgvc_onnx::{Graph, Value};
use fgvc_ops::export::{export_adaptive_avg_pool2d, export_global_avg_pool, export_max_pool2d};
use fgvc_ops::Dropout;

/// torchvision's configuration "D": the conv widths of VGG-16's five blocks.
const VGG16_BLOCKS: [&[usize]; 5] = [
    &[64, 64],
    &[128, 128],
    &[256, 256, 256],
    &[512, 512, 512],
    &[512, 512, 512],
];

/// The shape of a VGG-16.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VggConfig {
    /// BatchNorm after every conv (`vgg16_bn`).
    pub batch_norm: bool,
    /// Classes of the classifier; `None` builds no classifier at all (no `classifier.*` parameters).
    pub num_classes: Option<usize>,
    /// Width of the two hidden classifier layers, 4096 in torchvision. **Extension**: a smaller value keeps
    /// the layout and names (not the pretrained shapes) at a fraction of the 102 M classifier parameters.
    pub hidden: usize,
    /// Dropout probability in the classifier (torchvision's default 0.5).
    pub dropout: f64,
}

impl VggConfig {
    /// torchvision's `vgg16` / `vgg16_bn`.
    pub fn vgg16(batch_norm: bool, num_classes: Option<usize>) -> Self {
        Self {
            batch_norm,
            num_classes,
            hidden: 4096,
            dropout: 0.5,
        }
    }
}

/// A 3x3 conv, its BatchNorm (`vgg16_bn`) and a ReLU.
#[derive(Debug, Clone)]
struct ConvUnit {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

impl ModuleT for ConvUnit {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        match &self.bn {
            Some(bn) => bn.forward_act(&y, None, Activation::Relu, train),
            None => relu(&y),
        }
    }
}

impl ConvUnit {
    /// The ONNX graph of `forward_t(x, false)` (the BatchNorm folded into the conv).
    fn export(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        match &self.bn {
            Some(bn) => bn.export_conv(&self.conv, g, x, None, Activation::Relu),
            None => {
                let y = self.conv.export(g, x)?;
                Ok(g.relu(&y))
            }
        }
    }
}

/// One of VGG's five conv blocks: the previous block's 2x2 max pool (all but the first), then its conv
/// units. Its output is the stage map, before the block's own pool.
#[derive(Debug, Clone)]
struct VggBlock {
    pool_first: bool,
    units: Vec<ConvUnit>,
}

impl ModuleT for VggBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = if self.pool_first {
            max_pool2d(x, 2, 2, 0)?
        } else {
            x.clone()
        };
        for u in &self.units {
            y = u.forward_t(&y, train)?;
        }
        Ok(y)
    }
}

impl VggBlock {
    /// The ONNX graph of `forward_t(x, false)`.
    fn export(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        let mut y = if self.pool_first {
            export_max_pool2d(g, x, 2, 2, 0)?
        } else {
            x.clone()
        };
        for u in &self.units {
            y = u.export(g, &y)?;
        }
        Ok(y)
    }
}

#[derive(Debug)]
struct Classifier {
    fc1: Linear,
    drop1: Dropout,
    fc2: Linear,
    drop2: Dropout,
    fc3: Linear,
}

/// torchvision's `VGG` (configuration D) with its `state_dict` names: convs `features.N` (N = 0, 2, 5, ...
/// without BatchNorm; 0, 3, 7, ... with BatchNorm at N+1), classifier `classifier.0`, `classifier.3`,
/// `classifier.6`.
///
/// Stages are the five conv blocks, each tapped after its last ReLU and before its max pool (reductions 1, 2,
/// 4, 8, 16); stage `k` starts by max-pooling stage `k-1`. The fifth pool (pool5) is part of
/// [`Backbone::pool`]. PMG's progressive heads on VGG read the last three blocks (`block3..block5`,
/// conv3_3/conv4_3/conv5_3); DCL's paper reads the last conv layer (`block5`).
///
/// [`Backbone::pool`]: with a classifier, pool5, `AdaptiveAvgPool2d(7)` (any input of at least 32x32), flatten,
/// `classifier.0` + ReLU + dropout, `classifier.3` + ReLU + dropout (4096 features); headless, the global
/// average of `block5` (512 features). [`Backbone::classify`] is `classifier.6`.
///
/// Initialisation follows torchvision: convs kaiming-normal (fan-out) with zero bias, BatchNorm 1/0, linear
/// layers normal(0, 0.01) with zero bias.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_backbone::{Backbone, Vgg, VggConfig};
/// use fgvc_ops::ParamStore;
///
/// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
/// let net = Vgg::new(VggConfig { hidden: 16, ..VggConfig::vgg16(true, Some(3)) }, &store.root())?;
/// assert_eq!(net.stage_strides(), vec![1, 2, 4, 8, 16]);
/// assert!(store.names().contains(&"features.41.running_var".to_string()));
/// assert!(store.names().contains(&"classifier.6.weight".to_string()));
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Vgg {
    cfg: VggConfig,
    blocks: Vec<VggBlock>,
    classifier: Option<Classifier>,
    stages: Vec<StageInfo>,
}

impl Vgg {
    /// Builds the network described by `cfg` under `p`.
    pub fn new(cfg: VggConfig, p: &Params) -> Result<Self> {
        let fp = p.pp("features");
        let mut idx = 0;
        let mut in_c = 3;
        let mut blocks = Vec::with_capacity(5);
        let mut stages = Vec::with_capacity(5);
        for (bi, widths) in VGG16_BLOCKS.iter().enumerate() {
            let mut units = Vec::with_capacity(widths.len());
            for &out_c in widths.iter() {
                let cp = fp.pp(idx);
                // torchvision zeroes conv biases; creating the bias first makes Conv2d pick it up.
                cp.get(out_c, "bias", Init::Const(0.))?;
                let conv = Conv2d::with_init(
                    in_c,
                    out_c,
                    3,
                    Conv2dConfig::same(1),
                    true,
                    Init::KaimingNormal { fan_out: true },
                    &cp,
                )?;
                let bn = if cfg.batch_norm {
                    Some(BatchNorm::new(out_c, &fp.pp(idx + 1))?)
                } else {
                    None
                };
                idx += if cfg.batch_norm { 3 } else { 2 };
                units.push(ConvUnit { conv, bn });
                in_c = out_c;
            }
            stages.push(StageInfo {
                name: format!("block{}", bi + 1),
                module: format!("features.{}", idx - 1),
                channels: in_c,
                reduction: 1 << bi,
            });
            blocks.push(VggBlock {
                pool_first: bi > 0,
                units,
            });
            idx += 1; // the max pool
        }
        let classifier = match cfg.num_classes {
            Some(classes) => {
                let cp = p.pp("classifier");
                let lin = |i: usize, fin: usize, fout: usize| {
                    Linear::with_init(
                        fin,
                        fout,
                        true,
                        Init::Normal {
                            mean: 0.,
                            std: 0.01,
                        },
                        Init::Const(0.),
                        &cp.pp(i),
                    )
                };
                Some(Classifier {
                    fc1: lin(0, in_c * 49, cfg.hidden)?,
                    drop1: Dropout::new(cfg.dropout, &cp.pp(2))?,
                    fc2: lin(3, cfg.hidden, cfg.hidden)?,
                    drop2: Dropout::new(cfg.dropout, &cp.pp(5))?,
                    fc3: lin(6, cfg.hidden, classes)?,
                })
            }
            None => None,
        };
        Ok(Self {
            cfg,
            blocks,
            classifier,
            stages,
        })
    }

    /// torchvision's `vgg16` (`batch_norm = false`) or `vgg16_bn` with an optional classifier.
    pub fn vgg16(batch_norm: bool, num_classes: Option<usize>, p: &Params) -> Result<Self> {
        Self::new(VggConfig::vgg16(batch_norm, num_classes), p)
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &VggConfig {
        &self.cfg
    }
}

/// torchvision's `model(x)` in `train()` or `eval()` mode: [`Backbone::forward_t`].
impl ModuleT for Vgg {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Backbone::forward_t(self, x, train)
    }
}

impl Backbone for Vgg {
    fn stage_info(&self) -> &[StageInfo] {
        &self.stages
    }

    fn forward_stages(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let mut out: Vec<Tensor> = Vec::with_capacity(5);
        let mut y = x.clone();
        for block in &self.blocks {
            y = block.forward_t(&y, train)?;
            out.push(y.clone());
        }
        Ok(out)
    }

    fn forward_from(&self, stage: usize, map: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        if stage >= self.blocks.len() {
            return Err(crate::backbone::stage_out_of_range(
                stage,
                self.blocks.len(),
            ));
        }
        let mut y = map.clone();
        let mut out = Vec::with_capacity(self.blocks.len() - stage - 1);
        for block in &self.blocks[stage + 1..] {
            y = block.forward_t(&y, train)?;
            out.push(y.clone());
        }
        Ok(out)
    }

    fn pool(&self, last_stage: &Tensor, train: bool) -> Result<Tensor> {
        match &self.classifier {
            None => global_avg_pool(last_stage),
            Some(c) => {
                let y = adaptive_avg_pool2d(&max_pool2d(last_stage, 2, 2, 0)?, (7, 7))?
                    .flatten_from(1)?;
                let y = c.drop1.forward_t(&relu(&c.fc1.forward(&y)?)?, train)?;
                c.drop2.forward_t(&relu(&c.fc2.forward(&y)?)?, train)
            }
        }
    }

    fn classify(&self, pooled: &Tensor, _train: bool) -> Result<Option<Tensor>> {
        self.classifier
            .as_ref()
            .map(|c| c.fc3.forward(pooled))
            .transpose()
    }

    fn export_stages(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Vec<Value>> {
        let mut out = Vec::with_capacity(5);
        let mut y = x.clone();
        for block in &self.blocks {
            y = block.export(g, &y)?;
            out.push(y.clone());
        }
        Ok(out)
    }

    /// Dropout is the identity in evaluation mode.
    fn export_pool(&self, g: &mut Graph, last_stage: &Value) -> fgvc_onnx::Result<Value> {
        match &self.classifier {
            None => export_global_avg_pool(g, last_stage),
            Some(c) => {
                let y = export_max_pool2d(g, last_stage, 2, 2, 0)?;
                let y = export_adaptive_avg_pool2d(g, &y, (7, 7))?;
                let y = g.flatten(&y)?;
                let y = c.fc1.export(g, &y)?;
                let y = g.relu(&y);
                let y = c.fc2.export(g, &y)?;
                Ok(g.relu(&y))
            }
        }
    }

    fn export_classify(&self, g: &mut Graph, pooled: &Value) -> fgvc_onnx::Result<Option<Value>> {
        self.classifier
            .as_ref()
            .map(|c| c.fc3.export(g, pooled))
            .transpose()
    }

    fn num_features(&self) -> usize {
        if self.classifier.is_some() {
            self.cfg.hidden
        } else {
            512
        }
    }

    fn num_classes(&self) -> Option<usize> {
        self.cfg.num_classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{input, max_rel_diff, twin_stores};

    fn block(pool_first: bool, batch_norm: bool, p: &Params) -> Result<VggBlock> {
        let mut units = Vec::new();
        for (i, (in_c, out_c)) in [(4, 8), (8, 8)].into_iter().enumerate() {
            let conv = Conv2d::with_init(
                in_c,
                out_c,
                3,
                Conv2dConfig::same(1),
                true,
                Init::KaimingNormal { fan_out: true },
                &p.pp(2 * i),
            )?;
            let bn = if batch_norm {
                Some(BatchNorm::new(out_c, &p.pp(2 * i + 1))?)
            } else {
                None
            };
            units.push(ConvUnit { conv, bn });
        }
        Ok(VggBlock { pool_first, units })
    }

    /// `b` with every op on its own: the max pool, then conv, BatchNorm and ReLU per unit.
    fn one_by_one(b: &VggBlock, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = if b.pool_first {
            max_pool2d(x, 2, 2, 0)?
        } else {
            x.clone()
        };
        for u in &b.units {
            y = u.conv.forward(&y)?;
            if let Some(bn) = &u.bn {
                y = bn.forward_t(&y, train)?;
            }
            y = y.relu()?;
        }
        Ok(y)
    }

    #[test]
    fn blocks_forward_t_equals_their_ops_one_by_one() -> Result<()> {
        for (pool_first, batch_norm) in [(false, true), (true, true), (true, false)] {
            let (sa, sb) = twin_stores(4);
            let a = block(pool_first, batch_norm, &sa.root().pp("features"))?;
            let b = block(pool_first, batch_norm, &sb.root().pp("features"))?;
            let x = input((2, 4, 8, 8));
            for train in [true, false] {
                let y = ModuleT::forward_t(&a, &x, train)?;
                let reference = one_by_one(&b, &x, train)?;
                let side = if pool_first { 4 } else { 8 };
                assert_eq!(y.dims(), &[2, 8, side, side]);
                let d = max_rel_diff(&y, &reference)?;
                assert!(
                    d < 1e-5,
                    "pool {pool_first} bn {batch_norm} train {train}: {d}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn vgg_forward_t_is_the_backbone_forward() -> Result<()> {
        let cfg = VggConfig {
            hidden: 8,
            ..VggConfig::vgg16(true, Some(3))
        };
        let (sa, sb) = twin_stores(3);
        let a = Vgg::new(cfg, &sa.root())?;
        let b = Vgg::new(cfg, &sb.root())?;
        let x = input((2, 3, 32, 32));
        // In training mode both draw the same dropout masks from their equal streams.
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
