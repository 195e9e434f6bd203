//! ONNX export of the ops: reading weights into initializers, and the pooling and activation ops as ONNX
//! nodes with the same evaluation-mode results. The layers' own exports (`Conv2d::export`,
//! `Linear::export`, `BatchNorm::export_conv`) sit next to their forwards.

use candle_core::{DType, Tensor};
use fgvc_onnx::{ConvGeometry, ExportError, Graph, Result, Value};

use crate::activation::Activation;
use crate::conv::Conv2dConfig;

/// A tensor-library error while reading a model tensor.
pub(crate) fn tensor_error(e: candle_core::Error) -> ExportError {
    ExportError::Tensor(e.to_string())
}

/// The values of `t`, row-major, as `f32` (copied from its device).
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(tensor_error)
}

/// `t` as the `float32` initializer `name`, with its dims.
pub fn weight(g: &mut Graph, name: &str, t: &Tensor) -> Result<Value> {
    g.initializer(name, t.dims(), &values(t)?)
}

/// The ONNX geometry of a conv.
pub(crate) fn geometry(cfg: &Conv2dConfig) -> ConvGeometry {
    ConvGeometry {
        strides: cfg.stride,
        pads: cfg.padding,
        dilations: cfg.dilation,
        group: cfg.groups,
    }
}

impl Activation {
    /// The ONNX graph of [`Activation::apply`]: nothing, `Relu`, or `Clip(0, 6)`.
    pub fn export(self, g: &mut Graph, x: &Value) -> Result<Value> {
        match self {
            Activation::Identity => Ok(x.clone()),
            Activation::Relu => Ok(g.relu(x)),
            Activation::Relu6 => g.clip(x, 0.0, 6.0),
        }
    }
}

/// [`crate::max_pool2d`] as `MaxPool`.
pub fn export_max_pool2d(
    g: &mut Graph,
    x: &Value,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Value> {
    g.max_pool(x, k, stride, padding)
}

/// [`crate::avg_pool2d`] as `AveragePool`.
pub fn export_avg_pool2d(g: &mut Graph, x: &Value, k: usize, stride: usize) -> Result<Value> {
    g.average_pool(x, (k, k), (stride, stride))
}

/// [`crate::global_avg_pool`] as `GlobalAveragePool` and `Flatten`: `(N, C, H, W)` to `(N, C)`.
pub fn export_global_avg_pool(g: &mut Graph, x: &Value) -> Result<Value> {
    g.global_pool(x, true)
}

/// [`crate::global_max_pool`] as `GlobalMaxPool` and `Flatten`: `(N, C, H, W)` to `(N, C)`.
pub fn export_global_max_pool(g: &mut Graph, x: &Value) -> Result<Value> {
    g.global_pool(x, false)
}

/// [`crate::adaptive_avg_pool2d`]: an `AveragePool` when the windows tile the input evenly, otherwise
/// PyTorch's overlapping windows as two products with averaging matrices, `A_h · X · A_wᵀ` (exact: the pool
/// is linear in `X`).
pub fn export_adaptive_avg_pool2d(
    g: &mut Graph,
    x: &Value,
    (oh, ow): (usize, usize),
) -> Result<Value> {
    let (h, w) = (
        x.fixed_dim("AdaptiveAvgPool", 2)?,
        x.fixed_dim("AdaptiveAvgPool", 3)?,
    );
    if oh == 0 || ow == 0 {
        return Err(ExportError::Unsupported(format!(
            "an adaptive average pool to {oh}x{ow}"
        )));
    }
    if h % oh == 0 && w % ow == 0 {
        return g.average_pool(x, (h / oh, w / ow), (h / oh, w / ow));
    }
    // Row i of the (out, len) matrix averages input cells floor(i len / out) .. ceil((i + 1) len / out).
    let averaging = |out: usize, len: usize| -> Vec<f32> {
        let mut m = vec![0f32; out * len];
        for i in 0..out {
            let (s, e) = ((i * len) / out, ((i + 1) * len).div_ceil(out));
            for j in s..e {
                m[i * len + j] = 1.0 / (e - s) as f32;
            }
        }
        m
    };
    let ah = g.constant(&[oh, h], &averaging(oh, h))?;
    let awt = {
        let a = averaging(ow, w);
        let t: Vec<f32> = (0..w * ow).map(|k| a[(k % ow) * w + k / ow]).collect();
        g.constant(&[w, ow], &t)?
    };
    let rows = g.matmul(&ah, x)?;
    g.matmul(&rows, &awt)
}
