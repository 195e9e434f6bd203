//! `act(bn(conv(x)))` as one op on the CPU ([`ConvBnApply`]): the convolution, its batch statistics and
//! [`BnApply`]'s normalisation and activation in one forward, BatchNorm's and then the conv's backward, so
//! the conv output never becomes a graph node (no zero-filled gradient and add of its size per layer).

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, Module, Result, Shape, Tensor};

use super::apply::{channel_params, BnApply};
use super::functional::{normalize, single_value_error, Affine, Epilogue};
use super::planes::Planes;
use super::stats::{update_running, BatchStats, BnStats};
use super::sync::sync_group;
use crate::activation::Activation;
use crate::conv::Conv2d;
use crate::conv_cpu::{conv_forward, conv_grads, Geometry};
use crate::cpu::{cpu_op, cpu_tensor, fast_path, Elem};

/// [`BatchNorm::forward_conv`](super::BatchNorm::forward_conv) with the layer's parameters `bn`: the fused op
/// for a dense or depthwise `conv` without bias on the fast path, `act(bn(conv(x)))` as separate ops
/// elsewhere.
pub(super) fn conv_batch_norm(
    bn: &Affine,
    conv: &Conv2d,
    x: &Tensor,
    act: Activation,
    train: bool,
) -> Result<Tensor> {
    let (w, cfg) = (conv.weight(), conv.config());
    let in_c = x.dims().get(1).copied().unwrap_or(0);
    let depthwise = cfg.groups != 1;
    let fits = fast_path(x)
        && !(train && sync_group().is_some())
        && x.rank() == 4
        && conv.bias().is_none()
        && w.dtype() == x.dtype()
        && (!depthwise || (cfg.groups == in_c && w.dim(0)? == in_c));
    if !fits {
        let epi = Epilogue {
            residual: None,
            act,
        };
        return normalize(&conv.forward(x)?, bn, train, epi);
    }
    let geom = Geometry::new(x, w, cfg, depthwise)?;
    let (n, co, oh, ow) = geom.out_dims();
    let planes = Planes {
        n,
        c: co,
        s: oh * ow,
    };
    if train && planes.count() <= 1 {
        return Err(single_value_error(&[n, co, oh, ow], planes.count()));
    }
    let params = channel_params(bn, x, co, train)?;
    let saved = Arc::new(ConvBnSaved::default());
    let op = ConvBnApply {
        geom,
        depthwise,
        planes,
        act,
        eps: bn.cfg.eps,
        train,
        saved: saved.clone(),
    };
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &params, op)?;
    if train {
        let Some(stats) = saved.stats.get() else {
            candle_core::bail!("conv-batch-norm: the forward left no batch statistics")
        };
        update_running(bn, stats, planes.count())?;
    }
    Ok(y)
}

/// `act(bn(conv(x)))` as one op: the convolution (dense or depthwise, no bias), the batch statistics of its
/// output, [`BnApply`]'s normalisation and activation; the backward runs BatchNorm's and then the conv's.
/// The conv output is kept inside the op instead of being a graph node, so candle's backward does not
/// zero-fill and add a gradient of its size.
struct ConvBnApply {
    geom: Geometry,
    depthwise: bool,
    planes: Planes,
    act: Activation,
    eps: f64,
    train: bool,
    saved: Arc<ConvBnSaved>,
}

/// What the forward of a [`ConvBnApply`] leaves for its backward and for the running-statistics update.
#[derive(Default)]
struct ConvBnSaved {
    /// The conv output, `(N, C_out, OH, OW)`.
    z: OnceLock<Tensor>,
    /// Its `(3, C_out)` batch statistics (training), for the running-statistics update.
    stats: OnceLock<Tensor>,
    /// The same statistics on the host, for the backward.
    batch: OnceLock<BatchStats>,
}

impl ConvBnApply {
    fn run<T: Elem>(&self, x: &[T], w: &[T], p: &[T]) -> Result<(CpuStorage, Shape)> {
        let (n, co, oh, ow) = self.geom.out_dims();
        let (z, _) = conv_forward(&self.geom, self.depthwise, x, w)?;
        let zs = T::slice(&z)?;
        let batch = if self.train {
            let (stats, _) = BnStats {
                planes: self.planes,
                eps: self.eps,
            }
            .run(zs)?;
            let st = T::slice(&stats)?;
            let c = self.planes.c;
            let batch = BatchStats::from_rows(&st[..c], &st[2 * c..]);
            let _ = self.saved.batch.set(batch.clone());
            let _ = self.saved.stats.set(cpu_tensor(stats, (3, c))?);
            Some(batch)
        } else {
            None
        };
        let (y, _) = BnApply {
            planes: self.planes,
            act: self.act,
            batch,
        }
        .run(zs, p, None)?;
        // A second forward through the same op (not something candle does) keeps the first conv output.
        let _ = self.saved.z.set(cpu_tensor(z, (n, co, oh, ow))?);
        Ok((y, Shape::from((n, co, oh, ow))))
    }

    /// The BatchNorm half, with the batch statistics the forward saved.
    fn bn(&self) -> Result<BnApply> {
        let batch = match (self.train, self.saved.batch.get()) {
            (false, _) => None,
            (true, Some(batch)) => Some(batch.clone()),
            (true, None) => {
                candle_core::bail!("conv-batch-norm backward: no batch statistics saved")
            }
        };
        Ok(BnApply {
            planes: self.planes,
            act: self.act,
            batch,
        })
    }
}

cpu_op!(CustomOp3 for ConvBnApply, "fgvc-conv-batch-norm";
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        params: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(z) = self.saved.z.get() else {
            candle_core::bail!("conv-batch-norm backward: the forward saved no conv output")
        };
        let (dz, dparams, _) = self.bn()?.grads(z, params, y, dy, false)?;
        let (dx, dw) = conv_grads(&self.geom, self.depthwise, x, w, &dz)?;
        Ok((dx, dw, Some(dparams)))
    }
);
