//! Pooling with gradients routed to the argmax (candle's max-pool backward scales them by 1/(k*k)).

use candle_core::{DType, Result, Tensor, D};

/// Max pooling with a `k` x `k` window, `stride` and `-inf` padding (`nn.MaxPool2d(k, stride, padding)`).
pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if padding == 0 && k == stride && h % k == 0 && w % k == 0 {
        return x.reshape((n, c, h / k, k, w / k, k))?.max(5)?.max(3);
    }
    let x = if padding > 0 { pad_neg_inf(x, padding)? } else { x.clone() };
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    if hp < k || wp < k {
        candle_core::bail!("max_pool2d: window {k} larger than padded input {hp}x{wp}")
    }
    let (ho, wo) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
    let mut out: Option<Tensor> = None;
    for dy in 0..k {
        let rows = Tensor::arange_step(dy as u32, (dy + (ho - 1) * stride + 1) as u32, stride as u32, x.device())?;
        let xr = x.index_select(&rows, 2)?;
        for dx in 0..k {
            let cols = Tensor::arange_step(dx as u32, (dx + (wo - 1) * stride + 1) as u32, stride as u32, x.device())?;
            let v = xr.index_select(&cols, 3)?;
            out = Some(match out {
                None => v,
                Some(m) => m.maximum(&v)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("max_pool2d: empty window".into()))
}

fn pad_neg_inf(x: &Tensor, p: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let fill = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
        Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())
    };
    let side = fill((n, c, h, p))?;
    let x = Tensor::cat(&[&side, x, &side], 3)?;
    let top = fill((n, c, p, w + 2 * p))?;
    Tensor::cat(&[&top, &x, &top], 2)
}

/// Average pooling `nn.AvgPool2d(k, stride)` (no padding), `count_include_pad` irrelevant.
pub fn avg_pool2d(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    if k == stride {
        let (n, c, h, w) = x.dims4()?;
        let (ho, wo) = (h / k, w / k);
        let x = x.narrow(2, 0, ho * k)?.narrow(3, 0, wo * k)?;
        return x.reshape((n, c, ho, k, wo, k))?.mean(5)?.mean(3);
    }
    candle_core::bail!("avg_pool2d: only kernel == stride is implemented, got k={k} s={stride}")
}

/// Global max over H and W: (N, C, H, W) -> (N, C).
pub fn global_max_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.max(D::Minus1)
}

/// Global average over H and W: (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let x = if x.dtype() == DType::F16 || x.dtype() == DType::BF16 { x.to_dtype(DType::F32)? } else { x.clone() };
    x.flatten_from(2)?.mean(D::Minus1)
}
