//! Differentiable resampling as matrix products.
//!
//! candle's `upsample_bilinear2d` has no backward, so bilinear resizing is written as `U_h · X · U_wᵀ` with
//! fixed interpolation matrices (autograd gives the backward: `U_hᵀ · G · U_w`). The box zoom builds its
//! matrices from box coordinates that are themselves tensors, so the gradient also reaches the box.

use candle_core::{DType, Device, Result, Tensor};
use fgvc_onnx::{Graph, Value};

/// PyTorch's bilinear weights (`align_corners=False`, no antialias) for resizing a length `input` axis to
/// `output`: an `output` x `input` row-major matrix whose rows sum to 1.
pub fn bilinear_weights(output: usize, input: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    let scale = input as f64 / output as f64;
    for o in 0..output {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let l1 = (src - i0 as f64) as f32;
        m[o * input + i0] += 1.0 - l1;
        m[o * input + i1] += l1;
    }
    m
}

/// [`bilinear_weights`] as an (output, input) tensor.
pub fn bilinear_matrix(
    output: usize,
    input: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    Tensor::from_vec(
        bilinear_weights(output, input),
        (output, input),
        &Device::Cpu,
    )?
    .to_dtype(dtype)?
    .to_device(device)
}

/// Differentiable bilinear resize of (N, C, h, w) to (N, C, height, width), equal to PyTorch's
/// `F.interpolate(x, (height, width), mode="bilinear", align_corners=False)`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fgvc_heads::interp::resize_bilinear;
///
/// let x = Tensor::new(&[[[[0f32, 1.], [2., 3.]]]], &Device::Cpu)?;
/// let y = resize_bilinear(&x, 4, 4)?;
/// assert_eq!(y.dims(), &[1, 1, 4, 4]);
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?[..4], [0., 0.25, 0.75, 1.]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn resize_bilinear(x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if height == 0 || width == 0 {
        candle_core::bail!("resize_bilinear: empty target {height}x{width}")
    }
    let uh = bilinear_matrix(height, h, x.dtype(), x.device())?;
    let uwt = bilinear_matrix(width, w, x.dtype(), x.device())?.t()?;
    uh.broadcast_matmul(x)?.broadcast_matmul(&uwt)
}

/// Sampling weights (N, out, len) of a box along one axis: output pixel u samples the source coordinate
/// `lo + (u + 0.5) (hi - lo) / out - 0.5` (pixel-centre convention) with the triangle (bilinear) kernel;
/// source pixels outside `0..len` count as zero. `lo` and `hi` are (N) tensors in pixel-edge coordinates,
/// and the weights are differentiable in them.
pub fn box_sampling_weights(lo: &Tensor, hi: &Tensor, out: usize, len: usize) -> Result<Tensor> {
    let (dtype, device) = (lo.dtype(), lo.device());
    let n = lo.dim(0)?;
    let frac: Vec<f32> = (0..out).map(|u| (u as f32 + 0.5) / out as f32).collect();
    let frac = Tensor::from_vec(frac, (1, out), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?;
    let lo = lo.reshape((n, 1))?;
    let extent = hi.reshape((n, 1))?.sub(&lo)?;
    let pos = frac
        .broadcast_mul(&extent)?
        .broadcast_add(&lo)?
        .affine(1.0, -0.5)?; // (N, out)
    let grid = Tensor::arange(0u32, len as u32, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?
        .reshape((1, 1, len))?;
    pos.unsqueeze(2)?
        .broadcast_sub(&grid)?
        .abs()?
        .affine(-1.0, 1.0)?
        .relu()
}

/// Differentiable zoom: resamples the box `[y0, y1) x [x0, x1)` (pixel-edge coordinates, `boxes` (N, 4) as
/// `(y0, x0, y1, x1)`) of each image (N, C, H, W) to (N, C, out_h, out_w) with bilinear sampling, as
/// `W_y · X · W_xᵀ`. The full box `(0, 0, H, W)` at the input size is the identity. The gradient reaches
/// both the images and the box coordinates.
pub fn zoom(images: &Tensor, boxes: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (n, _, h, w) = images.dims4()?;
    if boxes.dims() != [n, 4] {
        candle_core::bail!("zoom: expected boxes ({n}, 4), got {:?}", boxes.dims())
    }
    let col = |i: usize| boxes.narrow(1, i, 1)?.squeeze(1);
    let wy = box_sampling_weights(&col(0)?, &col(2)?, out_h, h)?.unsqueeze(1)?; // (N, 1, out_h, H)
    let wx = box_sampling_weights(&col(1)?, &col(3)?, out_w, w)?.unsqueeze(1)?; // (N, 1, out_w, W)
    wy.broadcast_matmul(images)?
        .broadcast_matmul(&wx.transpose(2, 3)?)
}

/// The ONNX graph of [`resize_bilinear`]: the same two products with the same constant matrices.
pub fn export_resize_bilinear(
    g: &mut Graph,
    x: &Value,
    height: usize,
    width: usize,
) -> fgvc_onnx::Result<Value> {
    let (h, w) = (x.fixed_dim("resize", 2)?, x.fixed_dim("resize", 3)?);
    let uh = g.constant(&[height, h], &bilinear_weights(height, h))?;
    let u = bilinear_weights(width, w);
    let uwt: Vec<f32> = (0..w * width)
        .map(|k| u[(k % width) * w + k / width])
        .collect();
    let uwt = g.constant(&[w, width], &uwt)?;
    let rows = g.matmul(&uh, x)?;
    g.matmul(&rows, &uwt)
}

/// The ONNX graph of [`box_sampling_weights`] on `(N, 1)` values `lo` and `hi`: `(N, out, len)`.
pub fn export_box_sampling_weights(
    g: &mut Graph,
    lo: &Value,
    hi: &Value,
    out: usize,
    len: usize,
) -> fgvc_onnx::Result<Value> {
    let frac: Vec<f32> = (0..out).map(|u| (u as f32 + 0.5) / out as f32).collect();
    let frac = g.constant(&[1, out], &frac)?;
    let extent = g.sub(hi, lo)?;
    let pos = g.mul(&frac, &extent)?;
    let pos = g.add(&pos, lo)?;
    let pos = g.affine(&pos, 1.0, -0.5)?;
    let grid: Vec<f32> = (0..len).map(|i| i as f32).collect();
    let grid = g.constant(&[1, 1, len], &grid)?;
    let pos = g.unsqueeze(&pos, 2)?;
    let d = g.sub(&pos, &grid)?;
    let d = g.unary("Abs", &d);
    let tri = g.affine(&d, -1.0, 1.0)?;
    Ok(g.relu(&tri))
}

/// The ONNX graph of [`zoom`]: `boxes` is an `(N, 4)` value `(y0, x0, y1, x1)`.
pub fn export_zoom(
    g: &mut Graph,
    images: &Value,
    boxes: &Value,
    out_h: usize,
    out_w: usize,
) -> fgvc_onnx::Result<Value> {
    let (h, w) = (images.fixed_dim("zoom", 2)?, images.fixed_dim("zoom", 3)?);
    let mut col = |i: usize| g.slice(boxes, 1, i, i + 1);
    let (y0, x0, y1, x1) = (col(0)?, col(1)?, col(2)?, col(3)?);
    let wy = export_box_sampling_weights(g, &y0, &y1, out_h, h)?;
    let wy = g.unsqueeze(&wy, 1)?;
    let wx = export_box_sampling_weights(g, &x0, &x1, out_w, w)?;
    let wx = g.unsqueeze(&wx, 1)?;
    let wxt = g.transpose(&wx, &[0, 1, 3, 2])?;
    let rows = g.matmul(&wy, images)?;
    g.matmul(&rows, &wxt)
}
