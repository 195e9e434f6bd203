//! A differentiable all-reduce: the forward sums a tensor over the ranks, and since every rank's loss
//! depends on that sum, the backward sums the incoming gradients over the ranks too. Synchronised BatchNorm
//! builds its global batch statistics from it.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::collective::Group;
use crate::error::{DistError, Result};

/// The element-wise sum of `t` over the ranks of `group`, differentiable: the gradient reaching each rank's
/// `t` is the sum of the gradients of every rank's result. The identity for one process. CPU tensors of f32
/// or f64 (the MPI engine reduces host memory).
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use fgvc_distributed::{all_reduce_sum, Group};
///
/// let x = Var::new(&[1f32, 2.], &Device::Cpu)?;
/// let y = all_reduce_sum(x.as_tensor(), &Group::local())?;
/// let grads = y.sqr()?.sum_all()?.backward()?;
/// assert_eq!(grads.get(&x).unwrap().to_vec1::<f32>()?, [2., 4.]);
/// # Ok::<(), fgvc_distributed::DistError>(())
/// ```
pub fn all_reduce_sum(t: &Tensor, group: &Group) -> Result<Tensor> {
    if !group.is_distributed() {
        return Ok(t.clone());
    }
    if !t.device().is_cpu() {
        return Err(DistError::Engine {
            engine: group.collective().engine().to_string(),
            message: format!(
                "the differentiable all-reduce (synchronised BatchNorm) runs on CPU tensors; this one is on \
                 {:?}",
                t.device()
            ),
        });
    }
    Ok(t.contiguous()?.apply_op1(AllReduceSum {
        group: group.clone(),
    })?)
}

struct AllReduceSum {
    group: Group,
}

impl CustomOp1 for AllReduceSum {
    fn name(&self) -> &'static str {
        "fgvc-all-reduce-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("fgvc-all-reduce-sum: the input must be contiguous")
        };
        let err = |e: DistError| candle_core::Error::Msg(e.to_string());
        let out = match s {
            CpuStorage::F32(v) => {
                let mut buf = v[start..end].to_vec();
                self.group.sum_f32(&mut buf).map_err(err)?;
                CpuStorage::F32(buf)
            }
            CpuStorage::F64(v) => {
                let mut buf = v[start..end].to_vec();
                self.group.sum_f64(&mut buf).map_err(err)?;
                CpuStorage::F64(buf)
            }
            other => candle_core::bail!(
                "fgvc-all-reduce-sum: f32 or f64 only, got {:?}",
                other.dtype()
            ),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        all_reduce_sum(grad_res, &self.group)
            .map(Some)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_process;
    use candle_core::{Device, Var};

    /// Rank 0 holds x = [1, 2], rank 1 holds [3, 5]; each computes L_r = sum(s^2) / 2 of their sum s.
    /// Forward: s = [4, 7] on both. Backward: dL_r/ds = s on each rank, summed over the two, so
    /// d(L_0 + L_1)/dx_r = 2 s = [8, 14] on both.
    #[test]
    fn the_backward_sums_every_ranks_gradient() {
        let handles: Vec<_> = in_process(2)
            .into_iter()
            .map(|group| {
                std::thread::spawn(move || -> Result<(Vec<f32>, Vec<f32>)> {
                    let x = if group.is_main() {
                        [1f32, 2.]
                    } else {
                        [3., 5.]
                    };
                    let x = Var::new(&x, &Device::Cpu)?;
                    let s = all_reduce_sum(x.as_tensor(), &group)?;
                    let grads = s.sqr()?.sum_all()?.affine(0.5, 0.)?.backward()?;
                    let g = grads.get(&x).expect("a gradient").to_vec1::<f32>()?;
                    Ok((s.to_vec1::<f32>()?, g))
                })
            })
            .collect();
        for h in handles {
            let (s, g) = h.join().unwrap().unwrap();
            assert_eq!((s, g), (vec![4., 7.], vec![8., 14.]));
        }
    }
}
