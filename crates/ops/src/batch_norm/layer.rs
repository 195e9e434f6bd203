//! The layer, `nn.BatchNorm2d` / `nn.BatchNorm1d` with torch's parameter names, and its fused forwards
//! (with a residual and an activation, or with the preceding conv) over the functional form.

use candle_core::{ModuleT, Result, Tensor, Var};

use super::config::BatchNormConfig;
use super::conv_bn::conv_batch_norm;
use super::functional::{normalize, Affine, Epilogue};
use crate::activation::Activation;
use crate::conv::Conv2d;
use crate::params::{Init, Params};

/// `nn.BatchNorm2d` / `nn.BatchNorm1d` with torch's names: `weight`, `bias`, `running_mean`, `running_var`.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running_mean: Var,
    running_var: Var,
    cfg: BatchNormConfig,
    name: String,
}

impl BatchNorm {
    /// PyTorch's defaults: eps 1e-5, momentum 0.1, weight 1, bias 0, running mean 0, running var 1.
    pub fn new(c: usize, p: &Params) -> Result<Self> {
        Self::with_config(c, BatchNormConfig::default(), p)
    }

    /// With an explicit configuration (PMG's blocks use momentum 0.01).
    pub fn with_config(c: usize, cfg: BatchNormConfig, p: &Params) -> Result<Self> {
        let (weight, bias) = if cfg.affine {
            (
                Some(p.get(c, "weight", Init::Const(1.))?),
                Some(p.get(c, "bias", Init::Const(0.))?),
            )
        } else {
            (None, None)
        };
        let running_mean = p.var(c, "running_mean", Init::Const(0.))?;
        let running_var = p.var(c, "running_var", Init::Const(1.))?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            cfg,
            name: p.prefix().to_string(),
        })
    }

    /// Batch statistics (and a running-statistics update) when `train`, running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, None, Activation::Identity, train)
    }

    /// `act(bn(x) + residual)` as one op: one pass forward and two backward on the CPU, where BatchNorm,
    /// the residual add and the activation as separate ops would each allocate and accumulate a gradient
    /// (ResNet's Conv-BN-ReLU and block ends, MobileNetV2's Conv-BN-ReLU6).
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use fgvc_ops::{Activation, BatchNorm, ParamStore};
    ///
    /// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    /// let bn = BatchNorm::new(4, &store.root())?;
    /// let x = Tensor::randn(0f32, 1., (2, 4, 3, 3), &Device::Cpu)?;
    /// let identity = Tensor::ones((2, 4, 3, 3), DType::F32, &Device::Cpu)?;
    /// let y = bn.forward_act(&x, Some(&identity), Activation::Relu, true)?;
    /// assert!(y.flatten_all()?.min(0)?.to_scalar::<f32>()? >= 0.);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn forward_act(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
        train: bool,
    ) -> Result<Tensor> {
        normalize(x, &self.affine(), train, Epilogue { residual, act })
    }

    /// `act(bn(conv(x)))` as one op on the CPU, for a dense or depthwise `conv` without bias: the conv
    /// output stays inside the op rather than becoming a graph node, which spares candle's backward a
    /// zero-filled gradient and an add of its size per layer. Same results as
    /// `self.forward_act(&conv.forward(x)?, None, act, train)`, which it falls back to elsewhere.
    ///
    /// ```
    /// use candle_core::{DType, Device, Module, Tensor};
    /// use fgvc_ops::{Activation, BatchNorm, Conv2d, Conv2dConfig, ParamStore};
    ///
    /// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
    /// let p = store.root();
    /// let conv = Conv2d::new(3, 4, 3, Conv2dConfig::same(1), false, &p.pp("conv"))?;
    /// let bn = BatchNorm::new(4, &p.pp("bn"))?;
    /// let x = Tensor::randn(0f32, 1., (2, 3, 8, 8), &Device::Cpu)?;
    /// let fused = bn.forward_conv(&conv, &x, Activation::Relu, false)?;
    /// let apart = bn.forward_act(&conv.forward(&x)?, None, Activation::Relu, false)?;
    /// assert_eq!(fused.dims(), &[2, 4, 8, 8]);
    /// assert_eq!((fused - apart)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn forward_conv(
        &self,
        conv: &Conv2d,
        x: &Tensor,
        act: Activation,
        train: bool,
    ) -> Result<Tensor> {
        conv_batch_norm(&self.affine(), conv, x, act, train)
    }

    /// The running mean.
    pub fn running_mean(&self) -> &Var {
        &self.running_mean
    }

    /// The running variance.
    pub fn running_var(&self) -> &Var {
        &self.running_var
    }

    /// The module name its parameters were created under (`layer1.0.bn1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The evaluation-mode transform as per-channel `(scale, shift)`, in f64:
    /// `scale = weight / sqrt(running_var + eps)`, `shift = bias - running_mean * scale`.
    pub fn eval_affine(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let v = |t: &Tensor| -> Result<Vec<f64>> {
            t.to_dtype(candle_core::DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()
        };
        let mean = v(self.running_mean.as_tensor())?;
        let var = v(self.running_var.as_tensor())?;
        let c = mean.len();
        let weight = match &self.weight {
            Some(w) => v(w)?,
            None => vec![1.0; c],
        };
        let bias = match &self.bias {
            Some(b) => v(b)?,
            None => vec![0.0; c],
        };
        let scale: Vec<f64> = (0..c)
            .map(|i| weight[i] / (var[i] + self.cfg.eps).sqrt())
            .collect();
        let shift = (0..c).map(|i| bias[i] - mean[i] * scale[i]).collect();
        Ok((scale, shift))
    }

    /// The ONNX graph of [`BatchNorm::forward_act`] in evaluation mode: `act(x * scale + shift + residual)`
    /// with the per-channel `{name}.scale` and `{name}.shift` ([`BatchNorm::eval_affine`]) broadcast over
    /// `(N, C)` or `(N, C, H, W)`.
    pub fn export(
        &self,
        g: &mut fgvc_onnx::Graph,
        x: &fgvc_onnx::Value,
        residual: Option<&fgvc_onnx::Value>,
        act: Activation,
    ) -> fgvc_onnx::Result<fgvc_onnx::Value> {
        let (scale, shift) = self.eval_affine().map_err(crate::export::tensor_error)?;
        let c = scale.len();
        let dims: Vec<usize> = match x.rank() {
            2 => vec![1, c],
            4 => vec![1, c, 1, 1],
            _ => {
                return Err(fgvc_onnx::ExportError::Unsupported(format!(
                    "BatchNorm {} on a rank-{} input",
                    self.name,
                    x.rank()
                )))
            }
        };
        let f32s = |v: &[f64]| -> Vec<f32> { v.iter().map(|&x| x as f32).collect() };
        let s = g.initializer(&format!("{}.scale", self.name), &dims, &f32s(&scale))?;
        let b = g.initializer(&format!("{}.shift", self.name), &dims, &f32s(&shift))?;
        let y = g.mul(x, &s)?;
        let mut y = g.add(&y, &b)?;
        if let Some(r) = residual {
            y = g.add(&y, r)?;
        }
        act.export(g, &y)
    }

    /// The ONNX graph of `act(bn(conv(x)) + residual)` in evaluation mode, the BatchNorm folded into the
    /// convolution: one `Conv` whose initializers `{conv}+{bn}.weight` and `{conv}+{bn}.bias` are
    /// `weight * scale` and `bias * scale + shift` per output channel, then the add and the activation.
    pub fn export_conv(
        &self,
        conv: &Conv2d,
        g: &mut fgvc_onnx::Graph,
        x: &fgvc_onnx::Value,
        residual: Option<&fgvc_onnx::Value>,
        act: Activation,
    ) -> fgvc_onnx::Result<fgvc_onnx::Value> {
        let (scale, shift) = self.eval_affine().map_err(crate::export::tensor_error)?;
        let w = crate::export::values(conv.weight())?;
        let o = scale.len();
        let dims = conv.weight().dims().to_vec();
        if dims.first() != Some(&o) {
            return Err(fgvc_onnx::ExportError::Shape {
                op: "BatchNorm".into(),
                message: format!(
                    "{} has {o} channels, {} has {dims:?}",
                    self.name,
                    conv.name()
                ),
            });
        }
        let per = w.len() / o;
        let folded: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &v)| (f64::from(v) * scale[i / per]) as f32)
            .collect();
        let bias = match conv.bias() {
            Some(b) => crate::export::values(b)?,
            None => vec![0.0; o],
        };
        let folded_bias: Vec<f32> = (0..o)
            .map(|i| (f64::from(bias[i]) * scale[i] + shift[i]) as f32)
            .collect();
        let name = format!("{}+{}", conv.name(), self.name);
        let w = g.initializer(&format!("{name}.weight"), &dims, &folded)?;
        let b = g.initializer(&format!("{name}.bias"), &[o], &folded_bias)?;
        let mut y = g.conv(x, &w, Some(&b), crate::export::geometry(conv.config()))?;
        if let Some(r) = residual {
            y = g.add(&y, r)?;
        }
        act.export(g, &y)
    }

    /// The parameters and buffers, borrowed for the functional form.
    fn affine(&self) -> Affine<'_> {
        Affine {
            weight: self.weight.as_ref(),
            bias: self.bias.as_ref(),
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            cfg: &self.cfg,
        }
    }
}

/// candle's train/eval layer interface: [`BatchNorm::forward_t`].
impl ModuleT for BatchNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        BatchNorm::forward_t(self, xs, train)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, ModuleT, Tensor};

    use super::BatchNorm;
    use crate::params::ParamStore;

    fn layer() -> BatchNorm {
        let store = ParamStore::new(3, DType::F32, &Device::Cpu);
        BatchNorm::new(4, &store.root()).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The forward a caller generic over candle's layers gets.
    fn through_module_t<M: ModuleT>(m: &M, x: &Tensor, train: bool) -> Tensor {
        m.forward_t(x, train).unwrap()
    }

    #[test]
    fn module_t_is_the_train_and_eval_forward() {
        let x = Tensor::randn(0.5f32, 2., (3, 4, 5, 5), &Device::Cpu).unwrap();
        let (generic, direct) = (layer(), layer());
        for train in [true, false, true, false] {
            let a = through_module_t(&generic, &x, train);
            let b = direct.forward_t(&x, train).unwrap();
            assert_eq!(values(&a), values(&b), "train = {train}");
            assert_eq!(
                values(generic.running_mean().as_tensor()),
                values(direct.running_mean().as_tensor())
            );
            assert_eq!(
                values(generic.running_var().as_tensor()),
                values(direct.running_var().as_tensor())
            );
        }
        // The flag is passed on: batch statistics in training, the (different) running ones in eval.
        assert_ne!(
            values(&through_module_t(&generic, &x, true)),
            values(&through_module_t(&generic, &x, false))
        );
    }
}
