//! Gradients averaged over the ranks in flat buckets: one all-reduce per bucket of many tensors rather than
//! one per tensor, which would pay the engine's latency hundreds of times per step.

use candle_core::{DType, Tensor};

use crate::collective::Group;
use crate::error::{DistError, Result};

/// Bytes of gradient per bucket: PyTorch DDP's default `bucket_cap_mb = 25`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// The mean over the ranks of each present gradient of `grads` (in the optimiser's parameter order; `None`:
/// no gradient this step). Consecutive gradients are packed as f32 into buckets of about `bucket_bytes`, each
/// summed with one all-reduce and divided by the world size, then unpacked into tensors of the gradients'
/// shapes, dtypes and devices. Every rank must pass the same layout (which gradients are present, their
/// sizes): it is checked first, since a mismatch would otherwise mix unrelated values.
///
/// Candle's backward returns every gradient at once, with no hook as each is ready, so the all-reduces
/// follow the backward rather than overlap it.
pub fn all_reduce_mean(
    group: &Group,
    grads: &[Option<Tensor>],
    bucket_bytes: usize,
) -> Result<Vec<Option<Tensor>>> {
    if !group.is_distributed() {
        return Ok(grads.to_vec());
    }
    let present: Vec<usize> = (0..grads.len()).filter(|&i| grads[i].is_some()).collect();
    let sizes: Vec<usize> = present
        .iter()
        .map(|&i| grads[i].as_ref().map_or(0, Tensor::elem_count))
        .collect();
    check_layout(group, &present, &sizes)?;
    let world = group.world_size() as f32;
    let mut out = grads.to_vec();
    let per_bucket = (bucket_bytes / 4).max(1);
    let mut start = 0;
    while start < present.len() {
        let mut end = start + 1;
        let mut elems = sizes[start];
        while end < present.len() && elems + sizes[end] <= per_bucket {
            elems += sizes[end];
            end += 1;
        }
        let mut buf = Vec::with_capacity(elems);
        for &i in &present[start..end] {
            let g = grads[i].as_ref().expect("present");
            buf.extend(g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        group.sum_f32(&mut buf)?;
        let mut offset = 0;
        for &i in &present[start..end] {
            let g = grads[i].as_ref().expect("present");
            let n = g.elem_count();
            let mean: Vec<f32> = buf[offset..offset + n].iter().map(|v| v / world).collect();
            offset += n;
            out[i] = Some(Tensor::from_vec(mean, g.shape(), g.device())?.to_dtype(g.dtype())?);
        }
        start = end;
    }
    Ok(out)
}

/// Refuses to reduce when the ranks' gradients differ in which are present or in their sizes: every rank
/// sums its count and element total, which must then be the world size times its own.
fn check_layout(group: &Group, present: &[usize], sizes: &[usize]) -> Result<()> {
    let fingerprint = present.iter().zip(sizes).fold(0u64, |h, (&i, &n)| {
        h.wrapping_mul(0x100_0000_01B3)
            .wrapping_add((i as u64) << 32 | n as u64)
    }) % (1 << 40);
    let local = [
        present.len() as f64,
        sizes.iter().sum::<usize>() as f64,
        fingerprint as f64,
    ];
    let mut sum = local;
    group.sum_f64(&mut sum)?;
    let w = group.world_size() as f64;
    if local.iter().zip(&sum).any(|(l, s)| (l * w - s).abs() > 0.5) {
        return Err(DistError::Mismatch(format!(
            "rank {}'s gradients ({} tensors, {} values) differ from the other ranks' (mean {:.1} tensors, \
             {:.1} values): every rank must train the same model with the same parameters",
            group.rank(),
            local[0],
            local[1],
            sum[0] / w,
            sum[1] / w
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Collective;
    use candle_core::Device;
    use std::sync::{Arc, Mutex};

    /// A two-rank group simulated in one process: the other rank contributes `other` to every sum, and each
    /// all-reduce is counted.
    struct Twin {
        other: Mutex<Vec<f32>>,
        calls: Mutex<Vec<usize>>,
    }

    impl Collective for Twin {
        fn engine(&self) -> &str {
            "twin"
        }
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
            self.calls.lock().unwrap().push(buf.len());
            let mut other = self.other.lock().unwrap();
            for v in buf.iter_mut() {
                *v += other.remove(0);
            }
            Ok(())
        }
        fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
            // The twin has the same layout: sums are twice this rank's values.
            buf.iter_mut().for_each(|v| *v *= 2.);
            Ok(())
        }
        fn broadcast_bytes(&self, _root: usize, _buf: &mut Vec<u8>) -> Result<()> {
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn abort(&self, _code: i32) -> ! {
            unreachable!()
        }
    }

    #[test]
    fn gradients_are_averaged_in_buckets_and_keep_their_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev)?;
        let b = Tensor::new(&[10f32, 20., 30.], &dev)?;
        let c = Tensor::new(&[5f64], &dev)?;
        // The other rank's gradients: a' = 0, b' = [2, 4, 6], c' = 1.
        let twin = Arc::new(Twin {
            other: Mutex::new(vec![0., 0., 0., 0., 2., 4., 6., 1.]),
            calls: Mutex::new(Vec::new()),
        });
        let group = Group::new(twin.clone());
        // Buckets of at most 5 values: [a] (4), then [b, c] (3 + 1).
        let out = all_reduce_mean(&group, &[Some(a), None, Some(b), Some(c)], 5 * 4)?;
        assert_eq!(*twin.calls.lock().unwrap(), [4, 4]);
        assert_eq!(
            out[0].as_ref().unwrap().to_vec2::<f32>()?,
            [[0.5, 1.], [1.5, 2.]]
        );
        assert!(out[1].is_none());
        assert_eq!(out[2].as_ref().unwrap().to_vec1::<f32>()?, [6., 12., 18.]);
        let c = out[3].as_ref().unwrap();
        assert_eq!((c.dtype(), c.to_vec1::<f64>()?), (DType::F64, vec![3.]));
        Ok(())
    }

    #[test]
    fn a_gradient_larger_than_a_bucket_gets_a_bucket_of_its_own() -> Result<()> {
        let dev = Device::Cpu;
        let twin = Arc::new(Twin {
            other: Mutex::new(vec![0.; 7]),
            calls: Mutex::new(Vec::new()),
        });
        let group = Group::new(twin.clone());
        let big = Tensor::zeros(6, DType::F32, &dev)?;
        let small = Tensor::zeros(1, DType::F32, &dev)?;
        all_reduce_mean(&group, &[Some(small), Some(big)], 8)?;
        assert_eq!(*twin.calls.lock().unwrap(), [1, 6]);
        Ok(())
    }
}
