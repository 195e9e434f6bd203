//! Convolution: dense (`groups = 1`) and depthwise (`groups = channels`), and the `Conv2d` layer.

use candle_core::{Module, Result, Tensor};

use crate::conv_cpu::{ConvOp, DepthwiseOp, Geometry};
use crate::cpu::fast_path;
use crate::params::{fans, Init, Params};

/// Geometry of a 2-D convolution, per axis `(height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Stride.
    pub stride: (usize, usize),
    /// Zero padding on each side.
    pub padding: (usize, usize),
    /// Dilation.
    pub dilation: (usize, usize),
    /// 1 (dense) or the channel count (depthwise); other values fall back to candle's grouped conv.
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dConfig {
    /// Stride 1 with `padding` on every side (`same(1)` keeps a 3x3 conv's size).
    pub fn same(padding: usize) -> Self {
        Self {
            padding: (padding, padding),
            ..Self::default()
        }
    }

    /// Square stride and padding.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride: (stride, stride),
            padding: (padding, padding),
            ..Self::default()
        }
    }

    /// The same geometry with `groups`.
    pub fn with_groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    /// Output size for an input of `(h, w)` and a kernel of `(kh, kw)`.
    pub fn output_size(&self, (h, w): (usize, usize), (kh, kw): (usize, usize)) -> (usize, usize) {
        let out = |i: usize, k: usize, s: usize, p: usize, d: usize| {
            (i + 2 * p - d * (k - 1) - 1) / s + 1
        };
        (
            out(h, kh, self.stride.0, self.padding.0, self.dilation.0),
            out(w, kw, self.stride.1, self.padding.1, self.dilation.1),
        )
    }
}

/// Dense convolution of `x` (N, C_in, H, W) with `weight` (C_out, C_in, kH, kW), plus an optional bias.
///
/// On the CPU (f32/f64) forward, input gradient and weight gradient are im2col/col2im + GEMM (1x1 stride-1
/// convs are plain matrix products); any stride, padding and dilation per axis, any input size. On CUDA f32
/// (the `cuda` feature) all three are cuDNN's, with deterministic algorithms. Elsewhere it falls back to
/// candle's conv (square geometry only).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Tensor> {
    let y = if kernel_path(x) {
        let geom = Geometry::new(x, weight, cfg, false)?;
        x.contiguous()?
            .apply_op2(&weight.contiguous()?, ConvOp { geom })?
    } else {
        fallback_conv(x, weight, cfg, 1)?
    };
    add_bias(y, bias)
}

/// Depthwise convolution: `weight` is (C, 1, kH, kW), one filter per channel of `x` (N, C, H, W).
///
/// On the CPU (f32/f64) forward and both gradients are direct kernels parallel over (n, c) planes; on CUDA f32
/// (the `cuda` feature) they are cuDNN's grouped convolution with one group per channel.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let y = if kernel_path(x) {
        let geom = Geometry::new(x, weight, cfg, true)?;
        x.contiguous()?
            .apply_op2(&weight.contiguous()?, DepthwiseOp { geom })?
    } else {
        fallback_conv(x, weight, cfg, c)?
    };
    add_bias(y, bias)
}

/// Whether our conv op runs for `x`: the CPU kernels, or cuDNN on CUDA f32 (the `cuda` feature).
fn kernel_path(x: &Tensor) -> bool {
    #[cfg(feature = "cuda")]
    if crate::cuda::cuda_path(x) {
        return true;
    }
    fast_path(x)
}

fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// candle's own conv (square geometry only), used off the CPU.
fn fallback_conv(x: &Tensor, weight: &Tensor, cfg: &Conv2dConfig, groups: usize) -> Result<Tensor> {
    let square = cfg.stride.0 == cfg.stride.1
        && cfg.padding.0 == cfg.padding.1
        && cfg.dilation.0 == cfg.dilation.1;
    if !square {
        candle_core::bail!(
            "conv2d: non-square stride/padding/dilation {cfg:?} is not supported by candle's conv"
        )
    }
    x.conv2d(weight, cfg.padding.0, cfg.stride.0, cfg.dilation.0, groups)
}

/// `nn.Conv2d`: weight `(out, in / groups, k, k)` named `weight`, optional `bias`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: Conv2dConfig,
    name: String,
}

impl Conv2d {
    /// A `k` x `k` conv initialised as PyTorch does by default (kaiming-uniform, a = sqrt 5; bias U(±1/sqrt fan_in)).
    pub fn new(
        in_c: usize,
        out_c: usize,
        k: usize,
        cfg: Conv2dConfig,
        bias: bool,
        p: &Params,
    ) -> Result<Self> {
        Self::with_init(in_c, out_c, k, cfg, bias, Init::TORCH_DEFAULT, p)
    }

    /// A `k` x `k` conv whose weight is drawn from `init`; the bias (if any) keeps PyTorch's default.
    pub fn with_init(
        in_c: usize,
        out_c: usize,
        k: usize,
        cfg: Conv2dConfig,
        bias: bool,
        init: Init,
        p: &Params,
    ) -> Result<Self> {
        if cfg.groups == 0 || !in_c.is_multiple_of(cfg.groups) || !out_c.is_multiple_of(cfg.groups)
        {
            candle_core::bail!(
                "conv {}: groups {} must divide {in_c} and {out_c}",
                p.prefix(),
                cfg.groups
            )
        }
        let shape = (out_c, in_c / cfg.groups, k, k);
        let weight = p.get(shape, "weight", init)?;
        let bias = if bias {
            let (fan_in, _) = fans(&[out_c, in_c / cfg.groups, k, k]);
            Some(p.get(out_c, "bias", Init::BiasUniform { fan_in })?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            cfg,
            name: p.prefix().to_string(),
        })
    }

    /// The weight tensor.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The geometry.
    pub fn config(&self) -> &Conv2dConfig {
        &self.cfg
    }

    /// The module name its parameters were created under (`layer1.0.conv1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ONNX graph of [`Module::forward`]: one `Conv` node whose initializers are `{name}.weight` and
    /// `{name}.bias`.
    pub fn export(
        &self,
        g: &mut fgvc_onnx::Graph,
        x: &fgvc_onnx::Value,
    ) -> fgvc_onnx::Result<fgvc_onnx::Value> {
        let w = crate::export::weight(g, &format!("{}.weight", self.name), &self.weight)?;
        let b = match &self.bias {
            Some(b) => Some(crate::export::weight(g, &format!("{}.bias", self.name), b)?),
            None => None,
        };
        g.conv(x, &w, b.as_ref(), crate::export::geometry(&self.cfg))
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_c = x.dim(1)?;
        if self.cfg.groups == 1 {
            conv2d(x, &self.weight, self.bias.as_ref(), &self.cfg)
        } else if self.cfg.groups == in_c && self.weight.dim(0)? == in_c {
            depthwise_conv2d(x, &self.weight, self.bias.as_ref(), &self.cfg)
        } else {
            let y = fallback_conv(x, &self.weight, &self.cfg, self.cfg.groups)?;
            add_bias(y, self.bias.as_ref())
        }
    }
}
