//! The check that every rank of a data-parallel run starts from the same weights: PyTorch DDP broadcasts
//! rank 0's at construction; fgvc's initialisation is seeded and its weight files are read the same on
//! every rank, so the replicas must already agree, and a difference (a pretrained file that differs between
//! machines, a method that initialises from an unseeded source) is a clear error rather than a silent drift.

use fgvc_distributed::Group;
use fgvc_ops::ParamStore;

use crate::error::{Result, TrainError};

/// Refuses to train unless every rank's parameters and buffers are bit-for-bit those of the others, judged
/// by a fingerprint of each tensor (its sum and sum of squares in f64, and its element count).
pub(super) fn check_identical(group: &Group, store: &ParamStore) -> Result<()> {
    if !group.is_distributed() {
        return Ok(());
    }
    let tensors = store.all();
    let mut local = Vec::with_capacity(3 * tensors.len());
    for (_, var) in &tensors {
        let v = var
            .as_tensor()
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?;
        local.push(v.sum_all()?.to_scalar::<f64>()?);
        local.push(v.sqr()?.sum_all()?.to_scalar::<f64>()?);
        local.push(v.elem_count() as f64);
    }
    let mut sum = local.clone();
    sum.push(tensors.len() as f64);
    group.sum_f64(&mut sum)?;
    let w = group.world_size() as f64;
    if sum.pop() != Some(w * tensors.len() as f64) {
        return Err(TrainError::Msg(format!(
            "rank {}'s model has {} tensors and the other ranks' do not: every process must build the same \
             model",
            group.rank(),
            tensors.len()
        )));
    }
    let first = local.chunks(3).zip(sum.chunks(3)).position(|(l, s)| {
        l.iter()
            .zip(s)
            .any(|(l, s)| (s - w * l).abs() > 1e-9 * (w * l).abs().max(1e-30))
    });
    if let Some(i) = first {
        return Err(TrainError::Msg(format!(
            "the ranks start from different weights: {:?} differs between processes (rank {}). Every \
             process must read the same pretrained weights and configuration",
            tensors[i].0,
            group.rank()
        )));
    }
    Ok(())
}
