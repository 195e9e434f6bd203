//! Gradient clipping by global norm, and the finiteness check every optimiser step runs first.

use candle_core::Tensor;

use crate::error::Result;

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)`: the L2 norm of all gradients together; when it
/// exceeds `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`. Returns the norm before
/// clipping. The norm is accumulated on the device and read once.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut total: Option<Tensor> = None;
    for g in grads.iter().flatten() {
        let s = g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F32)?;
        total = Some(match total {
            None => s,
            Some(t) => t.add(&s)?,
        });
    }
    let Some(total) = total else { return Ok(0.0) };
    let norm = f64::from(total.to_scalar::<f32>()?).sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}

/// The index of the first gradient with a NaN or infinite element, if any. One sum per gradient (a NaN or an
/// infinity makes the sum non-finite; finite gradients cannot sum to an infinity at training scales), summed
/// on the device in f32 (Metal has no f64) and read back in one transfer, not one per gradient.
pub fn first_non_finite(grads: &[Option<Tensor>]) -> Result<Option<usize>> {
    let mut index = Vec::new();
    let mut sums = Vec::new();
    for (i, g) in grads.iter().enumerate() {
        if let Some(g) = g {
            index.push(i);
            sums.push(g.sum_all()?.to_dtype(candle_core::DType::F32)?);
        }
    }
    if sums.is_empty() {
        return Ok(None);
    }
    let sums = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
    Ok(sums.iter().position(|s| !s.is_finite()).map(|k| index[k]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn finds_the_first_non_finite_gradient_past_missing_ones() -> Result<()> {
        let dev = Device::Cpu;
        let t = |v: &[f32]| Some(Tensor::new(v, &dev).unwrap());
        assert_eq!(first_non_finite(&[None, t(&[1.0, -2.0])])?, None);
        assert_eq!(first_non_finite(&[None, None])?, None);
        let grads = [t(&[1.0]), None, t(&[0.0, f32::NAN]), t(&[f32::INFINITY])];
        assert_eq!(first_non_finite(&grads)?, Some(2));
        assert_eq!(first_non_finite(&grads[3..])?, Some(0));
        Ok(())
    }

    #[test]
    fn clips_to_the_global_norm_and_leaves_small_gradients() -> Result<()> {
        let dev = Device::Cpu;
        // Norm of [3, 4] and [12] together: 13.
        let mut grads = vec![
            Some(Tensor::new(&[3f32, 4.0], &dev)?),
            None,
            Some(Tensor::new(&[12f32], &dev)?),
        ];
        let norm = clip_grad_norm(&mut grads, 1.3)?;
        assert!((norm - 13.0).abs() < 1e-5);
        let a = grads[0].as_ref().unwrap().to_vec1::<f32>()?;
        let b = grads[2].as_ref().unwrap().to_vec1::<f32>()?;
        let clipped = (a[0] * a[0] + a[1] * a[1] + b[0] * b[0]).sqrt();
        assert!((clipped - 1.3).abs() < 1e-4, "{clipped}");
        assert!((a[0] / a[1] - 0.75).abs() < 1e-6);
        let before = grads.clone();
        let norm = clip_grad_norm(&mut grads, 10.0)?;
        assert!((norm - 1.3).abs() < 1e-4);
        assert_eq!(
            grads[0].as_ref().unwrap().to_vec1::<f32>()?,
            before[0].as_ref().unwrap().to_vec1::<f32>()?
        );
        Ok(())
    }
}
