//! Synchronised BatchNorm (PyTorch's `nn.SyncBatchNorm`): in a data-parallel run, training-mode statistics
//! over the global batch of every process rather than this process' part of it. The per-channel sums are
//! all-reduced with a differentiable all-reduce, so the backward all-reduces their gradients to match.
//! Each BatchNorm of a training step costs three small all-reduces forward (the count, the sums, the squared
//! deviations) and two backward.
//! Switched on for a scope by [`with_sync_batch_norm`]; evaluation uses the running statistics as ever.

use std::cell::RefCell;

use candle_core::{Result, Tensor};
use fgvc_distributed::{all_reduce_sum, Group};

use super::composite::{normalize_with, update_running_with};
use super::functional::{Affine, Epilogue};

thread_local! {
    static SYNC: RefCell<Option<Group>> = const { RefCell::new(None) };
}

/// Runs `f` with every training-mode BatchNorm on the calling thread synchronised over `group`: batch
/// statistics are those of all the processes' batches together. The identity for a group of one process.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_distributed::Group;
/// use fgvc_ops::{with_sync_batch_norm, BatchNorm, ParamStore};
///
/// let store = ParamStore::new(0, DType::F32, &Device::Cpu);
/// let bn = BatchNorm::new(4, &store.root())?;
/// let x = Tensor::randn(0f32, 1., (2, 4, 3, 3), &Device::Cpu)?;
/// let synced = with_sync_batch_norm(&Group::local(), || bn.forward_t(&x, true))?;
/// assert_eq!(synced.dims(), x.dims());
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn with_sync_batch_norm<R>(group: &Group, f: impl FnOnce() -> R) -> R {
    /// Puts the previous setting back, also when `f` unwinds.
    struct Restore(Option<Group>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SYNC.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    let group = group.is_distributed().then(|| group.clone());
    let _restore = Restore(SYNC.with(|s| s.replace(group)));
    f()
}

/// The group training-mode BatchNorm synchronises over on this thread, if any.
pub(super) fn sync_group() -> Option<Group> {
    SYNC.with(|s| s.borrow().clone())
}

/// `act(bn(x) + residual)` with the statistics of the global batch: the per-channel sum of `x`, then of its
/// squared deviations from the global mean, each all-reduced, with the element counts.
/// The running statistics are updated from the global mean and unbiased variance, the same on every rank.
pub(super) fn sync_batch_norm(
    x: &Tensor,
    bn: &Affine,
    group: &Group,
    epi: Epilogue,
) -> Result<Tensor> {
    let err = |e: fgvc_distributed::DistError| candle_core::Error::Msg(e.to_string());
    let c = x.dims()[1];
    // Two passes, as the composite path takes them: the global mean, then the global mean square about it
    // (a one-pass variance cancels in f32 when the mean is large against the spread).
    let mut count = [(x.elem_count() / c) as f64];
    group.sum_f64(&mut count).map_err(err)?;
    let m = count[0];
    let xt = x.transpose(0, 1)?.flatten_from(1)?; // (C, local values)
    let mean = all_reduce_sum(&xt.sum(1)?, group)
        .map_err(err)?
        .affine(1. / m, 0.)?;
    let centered = xt.broadcast_sub(&mean.unsqueeze(1)?)?;
    let var = all_reduce_sum(&centered.sqr()?.sum(1)?, group)
        .map_err(err)?
        .affine(1. / m, 0.)?;
    update_running_with(bn, &mean, &var, m)?;
    normalize_with(x, &mean, &var, bn, epi)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use fgvc_distributed::in_process;

    use super::with_sync_batch_norm;
    use crate::{Activation, BatchNorm, Conv2d, Conv2dConfig, ParamStore};

    /// What one process computes: the output, the running statistics, and the gradients of its input, the
    /// conv weight and the BatchNorm weight of `sum(relu(bn(conv(x))) * r)`.
    fn run(x: &Tensor, r: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
        let store = ParamStore::new(7, DType::F32, &Device::Cpu);
        let p = store.root();
        let conv = Conv2d::new(3, 4, 3, Conv2dConfig::same(1), false, &p.pp("conv"))?;
        let bn = BatchNorm::new(4, &p.pp("bn"))?;
        let x = Var::from_tensor(x)?;
        let y = bn.forward_conv(&conv, x.as_tensor(), Activation::Relu, true)?;
        let grads = (&y * r)?.sum_all()?.backward()?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let weight = |name: &str| {
            let v = store.get(name).expect(name);
            flat(grads.get(v.as_tensor()).expect("a gradient"))
        };
        Ok(vec![
            flat(&y)?,
            flat(bn.running_mean().as_tensor())?,
            flat(bn.running_var().as_tensor())?,
            flat(grads.get(x.as_tensor()).expect("a gradient"))?,
            weight("conv.weight")?,
            weight("bn.weight")?,
        ])
    }

    /// Two ranks with half the batch each and synchronised BatchNorm compute what one process computes with
    /// the whole batch: the same outputs and running statistics, the same input gradients, and parameter
    /// gradients that sum to the whole batch's.
    #[test]
    fn two_synchronised_ranks_compute_what_one_process_does() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1., (4, 3, 5, 5), &dev)? + 2.)?;
        let r = Tensor::randn(0f32, 1., (4, 4, 5, 5), &dev)?;
        let whole = run(&x, &r)?;
        let handles: Vec<_> = in_process(2)
            .into_iter()
            .map(|g| {
                let (x, r) = (
                    x.narrow(0, 2 * g.rank(), 2).unwrap(),
                    r.narrow(0, 2 * g.rank(), 2).unwrap(),
                );
                std::thread::spawn(move || with_sync_batch_norm(&g, || run(&x, &r)).unwrap())
            })
            .collect();
        let ranks: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            let worst = a
                .iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{what}: differs by {worst}");
        };
        let cat = |i: usize| [ranks[0][i].clone(), ranks[1][i].clone()].concat();
        close(&cat(0), &whole[0], "output");
        close(&cat(3), &whole[3], "input gradient");
        for (i, what) in [(1, "running mean"), (2, "running variance")] {
            close(&ranks[0][i], &whole[i], what);
            close(&ranks[1][i], &whole[i], what);
        }
        for (i, what) in [
            (4, "conv weight gradient"),
            (5, "BatchNorm weight gradient"),
        ] {
            let sum: Vec<f32> = ranks[0][i]
                .iter()
                .zip(&ranks[1][i])
                .map(|(a, b)| a + b)
                .collect();
            close(&sum, &whole[i], what);
        }
        // Without synchronisation each rank normalises with its own statistics: outputs differ.
        let unsynced = run(&x.narrow(0, 0, 2)?, &r.narrow(0, 0, 2)?)?;
        let diff = unsynced[0]
            .iter()
            .zip(&ranks[0][0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff > 1e-3,
            "per-rank statistics should differ from global ones ({diff})"
        );
        Ok(())
    }
}
