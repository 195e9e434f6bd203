//! Building blocks shared by the heads: the official `BasicConv`, the two-conv stage block, the
//! BN-Linear-BN-ELU-Linear classifier and a seeded dropout.

use candle_core::{Module, ModuleT, Result, Tensor};
use fgvc_onnx::{Graph, Value};
use fgvc_ops::{
    global_max_pool, Activation, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Linear, Params,
};

/// The BatchNorm of PMG's and RMG-PMSI's `BasicConv`/`Conv`: eps 1e-5, **momentum 0.01**, affine.
pub const STAGE_BN: BatchNormConfig = BatchNormConfig {
    eps: 1e-5,
    momentum: 0.01,
    affine: true,
};

/// The official `BasicConv(in, out, k, padding)`: `Conv2d(bias=False)` -> `BatchNorm2d` -> optional ReLU,
/// with torch's names `conv.weight`, `bn.weight`, `bn.bias`, `bn.running_mean`, `bn.running_var`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_heads::blocks::{BasicConv, STAGE_BN};
/// use fgvc_ops::ParamStore;
///
/// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
/// let conv = BasicConv::new(4, 6, 3, 1, STAGE_BN, true, &store.root().pp("block"))?;
/// let y = conv.forward_t(&Tensor::ones((2, 4, 5, 7), DType::F32, &Device::Cpu)?, true)?;
/// assert_eq!(y.dims(), &[2, 6, 5, 7]);
/// assert!(store.get("block.conv.weight").is_some());
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BasicConv {
    conv: Conv2d,
    bn: BatchNorm,
    relu: bool,
}

impl BasicConv {
    /// A `k` x `k`, stride-1 conv with `padding` on each side, PyTorch's default init (kaiming-uniform,
    /// a = sqrt 5), no bias, then BatchNorm with `bn` and (if `relu`) a ReLU.
    pub fn new(
        in_c: usize,
        out_c: usize,
        k: usize,
        padding: usize,
        bn: BatchNormConfig,
        relu: bool,
        p: &Params,
    ) -> Result<Self> {
        Self::with_conv_init(
            in_c,
            out_c,
            k,
            padding,
            bn,
            relu,
            fgvc_ops::Init::TORCH_DEFAULT,
            p,
        )
    }

    /// As [`BasicConv::new`] with an explicit initialiser for the conv weight (Coarse2Fine's attention
    /// starts orthogonal).
    #[allow(clippy::too_many_arguments)]
    pub fn with_conv_init(
        in_c: usize,
        out_c: usize,
        k: usize,
        padding: usize,
        bn: BatchNormConfig,
        relu: bool,
        init: fgvc_ops::Init,
        p: &Params,
    ) -> Result<Self> {
        let conv = Conv2d::with_init(
            in_c,
            out_c,
            k,
            Conv2dConfig::same(padding),
            false,
            init,
            &p.pp("conv"),
        )?;
        let bn = BatchNorm::with_config(out_c, bn, &p.pp("bn"))?;
        Ok(Self { conv, bn, relu })
    }

    /// Conv, BatchNorm (batch statistics and a running-statistics update when `train`), ReLU.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let act = if self.relu {
            Activation::Relu
        } else {
            Activation::Identity
        };
        self.bn.forward_conv(&self.conv, x, act, train)
    }

    /// The ONNX graph of `forward_t(x, false)`: the BatchNorm folded into the conv, then the ReLU.
    pub fn export(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        let act = if self.relu {
            Activation::Relu
        } else {
            Activation::Identity
        };
        self.bn.export_conv(&self.conv, g, x, None, act)
    }

    /// The convolution.
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The BatchNorm.
    pub fn bn(&self) -> &BatchNorm {
        &self.bn
    }
}

/// candle's train/eval layer interface: [`BasicConv::forward_t`].
impl ModuleT for BasicConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        BasicConv::forward_t(self, xs, train)
    }
}

/// PMG's `conv_block` / RMG-PMSI's `smooth_conv`: `BasicConv(C_in -> feature, 1x1)` then
/// `BasicConv(feature -> out, 3x3, pad 1)`, both with BN momentum 0.01 and ReLU, named `0.*` and `1.*`.
#[derive(Debug, Clone)]
pub struct StageBlock {
    reduce: BasicConv,
    expand: BasicConv,
}

impl StageBlock {
    /// The block for a stage of `in_c` channels: 1x1 to `feature`, then 3x3 to `out_c`.
    pub fn new(in_c: usize, feature: usize, out_c: usize, p: &Params) -> Result<Self> {
        let reduce = BasicConv::new(in_c, feature, 1, 0, STAGE_BN, true, &p.pp(0))?;
        let expand = BasicConv::new(feature, out_c, 3, 1, STAGE_BN, true, &p.pp(1))?;
        Ok(Self { reduce, expand })
    }

    /// (N, C_in, H, W) -> (N, out_c, H, W).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.expand
            .forward_t(&self.reduce.forward_t(x, train)?, train)
    }

    /// The block followed by a global max pool over any spatial size: (N, C_in, H, W) -> (N, out_c).
    /// The official PMG code hard-codes `MaxPool2d(56/28/14)`, which is this at 448 input only.
    pub fn forward_pooled(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        global_max_pool(&self.forward_t(x, train)?)
    }

    /// The ONNX graph of `forward_t(x, false)`.
    pub fn export(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        let y = self.reduce.export(g, x)?;
        self.expand.export(g, &y)
    }

    /// The ONNX graph of `forward_pooled(x, false)`.
    pub fn export_pooled(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        let y = self.export(g, x)?;
        fgvc_ops::export::export_global_max_pool(g, &y)
    }

    /// The 1x1 and 3x3 `BasicConv`s.
    pub fn convs(&self) -> [&BasicConv; 2] {
        [&self.reduce, &self.expand]
    }
}

/// candle's train/eval layer interface: [`StageBlock::forward_t`].
impl ModuleT for StageBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        StageBlock::forward_t(self, xs, train)
    }
}

/// The classifiers of PMG and RMG-PMSI: `BatchNorm1d(in)` -> `Linear(in -> hidden)` ->
/// `BatchNorm1d(hidden)` -> `ELU(1)` -> `Linear(hidden -> classes)`, named as the official
/// `nn.Sequential` (`0`, `1`, `2`, `4`; index 3 is the ELU). BatchNorm1d uses torch's defaults.
#[derive(Debug, Clone)]
pub struct EluClassifier {
    bn_in: BatchNorm,
    fc1: Linear,
    bn_hidden: BatchNorm,
    fc2: Linear,
}

impl EluClassifier {
    /// A classifier of `in_f` features through `hidden` units to `classes` logits.
    pub fn new(in_f: usize, hidden: usize, classes: usize, p: &Params) -> Result<Self> {
        Ok(Self {
            bn_in: BatchNorm::new(in_f, &p.pp(0))?,
            fc1: Linear::new(in_f, hidden, true, &p.pp(1))?,
            bn_hidden: BatchNorm::new(hidden, &p.pp(2))?,
            fc2: Linear::new(hidden, classes, true, &p.pp(4))?,
        })
    }

    /// (N, in) -> (N, classes) logits.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.fc1.forward(&self.bn_in.forward_t(x, train)?)?;
        let x = self.bn_hidden.forward_t(&x, train)?.elu(1.0)?;
        self.fc2.forward(&x)
    }

    /// The ONNX graph of `forward_t(x, false)`.
    pub fn export(&self, g: &mut Graph, x: &Value) -> fgvc_onnx::Result<Value> {
        let y = self.bn_in.export(g, x, None, Activation::Identity)?;
        let y = self.fc1.export(g, &y)?;
        let y = self.bn_hidden.export(g, &y, None, Activation::Identity)?;
        let y = g.elu(&y, 1.0);
        self.fc2.export(g, &y)
    }

    /// The two BatchNorm1d layers (input and hidden).
    pub fn batch_norms(&self) -> [&BatchNorm; 2] {
        [&self.bn_in, &self.bn_hidden]
    }
}

/// candle's train/eval layer interface: [`EluClassifier::forward_t`].
impl ModuleT for EluClassifier {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        EluClassifier::forward_t(self, xs, train)
    }
}

/// Seeded inverted dropout, shared with the backbones (`fgvc_ops::Dropout`).
pub use fgvc_ops::Dropout;

/// The channels of the last `num_stages` of `stage_channels`, which a multi-stage head (PMG, PMSI) reads,
/// after checking the request fits the backbone and every width is positive.
pub(crate) fn tapped_channels(
    head: &str,
    stage_channels: &[usize],
    num_stages: usize,
    widths: [usize; 3],
) -> Result<Vec<usize>> {
    if num_stages == 0 || num_stages > stage_channels.len() {
        candle_core::bail!(
            "{head}: asked for {num_stages} stages of a backbone with {}",
            stage_channels.len()
        )
    }
    if widths.contains(&0) {
        let [feature_size, block_channels, num_classes] = widths;
        candle_core::bail!(
            "{head}: widths must be positive ({feature_size}, {block_channels}, {num_classes})"
        )
    }
    Ok(stage_channels[stage_channels.len() - num_stages..].to_vec())
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, ModuleT, Tensor};
    use fgvc_ops::{ParamStore, Params};

    use super::{BasicConv, EluClassifier, StageBlock, STAGE_BN};

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The forward a caller generic over candle's layers gets.
    fn through_module_t<M: ModuleT>(m: &M, x: &Tensor, train: bool) -> Tensor {
        m.forward_t(x, train).unwrap()
    }

    /// Two copies of a layer from stores with the same seed: one run through [`ModuleT`], one through its own
    /// `forward_t`, give the same outputs in training and eval (running statistics updated alike), and the
    /// flag reaches the layer (training and eval outputs differ).
    fn check_module_t<M: ModuleT>(
        build: impl Fn(&Params) -> candle_core::Result<M>,
        direct: impl Fn(&M, &Tensor, bool) -> candle_core::Result<Tensor>,
        x: &Tensor,
    ) {
        let layer = || {
            let store = ParamStore::new(11, DType::F32, &Device::Cpu);
            (build(&store.root()).unwrap(), store)
        };
        let ((generic, generic_store), (own, own_store)) = (layer(), layer());
        for train in [true, false, true, false] {
            let a = through_module_t(&generic, x, train);
            let b = direct(&own, x, train).unwrap();
            assert_eq!(values(&a), values(&b), "train = {train}");
        }
        for name in generic_store.names() {
            let (a, b) = (generic_store.get(&name), own_store.get(&name));
            assert_eq!(
                values(a.unwrap().as_tensor()),
                values(b.unwrap().as_tensor()),
                "{name}"
            );
        }
        assert_ne!(
            values(&through_module_t(&generic, x, true)),
            values(&through_module_t(&generic, x, false))
        );
    }

    #[test]
    fn blocks_implement_module_t_as_their_train_and_eval_forward() {
        let maps = Tensor::randn(0.5f32, 2., (2, 4, 5, 5), &Device::Cpu).unwrap();
        check_module_t(
            |p| BasicConv::new(4, 6, 3, 1, STAGE_BN, true, p),
            BasicConv::forward_t,
            &maps,
        );
        check_module_t(
            |p| StageBlock::new(4, 8, 6, p),
            StageBlock::forward_t,
            &maps,
        );
        let features = Tensor::randn(0.5f32, 2., (4, 6), &Device::Cpu).unwrap();
        check_module_t(
            |p| EluClassifier::new(6, 8, 3, p),
            EluClassifier::forward_t,
            &features,
        );
    }
}

/// The logits of a multi-stage head (PMG, RMG-PMSI) as graph values: one per stage and the concat's.
#[derive(Debug, Clone)]
pub struct StageLogitValues {
    /// `classifier{l}`'s logits, shallow to deep.
    pub stage_logits: Vec<Value>,
    /// `classifier_concat`'s logits.
    pub concat_logits: Value,
}

impl StageLogitValues {
    /// The combined prediction, `concat + xc1 + .. + xcS` in that order (as the heads' `combined`).
    pub fn combined(&self, g: &mut Graph) -> fgvc_onnx::Result<Value> {
        let mut sum = self.concat_logits.clone();
        for l in &self.stage_logits {
            sum = g.add(&sum, l)?;
        }
        Ok(sum)
    }
}
