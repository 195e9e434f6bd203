//! Dropout with its own seeded random stream.
//!
//! candle's CPU RNG cannot be seeded, so `candle_nn::Dropout` makes every training run different. A
//! [`Dropout`] owns a ChaCha8 stream seeded from the [`ParamStore`](fgvc_ops::ParamStore) seed and the layer's
//! name: two models built from stores with the same seed draw the same masks in the same sequence of calls,
//! and two dropout layers of one model draw independent masks.

use std::sync::Mutex;

use crate::params::Params;
use candle_core::{ModuleT, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `nn.Dropout(p)`: in training, zeroes each element with probability `p` and scales the rest by
/// `1 / (1 - p)`; the identity in evaluation.
///
/// The masks come from a ChaCha8 stream keyed by `(store seed, layer name)`, advanced by each training call,
/// so a run is reproducible from its seed. The masks are drawn on the host and moved to the input's device.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use fgvc_ops::{Dropout, ParamStore};
///
/// let store = ParamStore::new(3, DType::F32, &Device::Cpu);
/// let drop = Dropout::new(0.5, &store.root().pp("classifier.0"))?;
/// let x = Tensor::ones((4, 8), DType::F32, &Device::Cpu)?;
/// let y = drop.forward_t(&x, true)?;
/// // Every element is either dropped or scaled by 2.
/// assert!(y.flatten_all()?.to_vec1::<f32>()?.iter().all(|&v| v == 0.0 || v == 2.0));
/// assert_eq!(drop.forward_t(&x, false)?.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    rng: Mutex<ChaCha8Rng>,
}

impl Dropout {
    /// A dropout layer with drop probability `p` (in `[0, 1)`, else an error) whose stream derives from
    /// `params`' store seed and prefix.
    pub fn new(p: f64, params: &Params) -> Result<Self> {
        Self::with_seed(p, mix(params.store().seed(), params.prefix()))
    }

    /// A dropout layer with an explicit stream seed.
    pub fn with_seed(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability must be in [0, 1), got {p}")
        }
        Ok(Self {
            p,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Applies dropout when `train` (and `p > 0`), returns `x` unchanged otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = {
            let mut rng = self
                .rng
                .lock()
                .map_err(|_| candle_core::Error::Msg("dropout RNG poisoned".into()))?;
            (0..x.elem_count())
                .map(|_| {
                    if rng.random::<f64>() < keep {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.shape(), &candle_core::Device::Cpu)?
            .to_dtype(x.dtype())?
            .to_device(x.device())?;
        x.mul(&mask)
    }
}

/// candle's train/eval layer interface: [`Dropout::forward_t`].
impl ModuleT for Dropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        Dropout::forward_t(self, xs, train)
    }
}

/// FNV-1a of `name` mixed with `seed` (the same construction as the store's parameter streams, offset so
/// that a dropout stream never coincides with a parameter's).
fn mix(seed: u64, name: &str) -> u64 {
    let mut h: u64 =
        0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD50F_0D50_F0D5_0F0D;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::{DType, Device};

    fn masks(seed: u64, name: &str) -> Vec<f32> {
        let store = ParamStore::new(seed, DType::F32, &Device::Cpu);
        let d = Dropout::new(0.3, &store.root().pp(name)).unwrap();
        let x = Tensor::ones(1000, DType::F32, &Device::Cpu).unwrap();
        let mut v = d.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap();
        v.extend(d.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap());
        v
    }

    #[test]
    fn seeded_and_distinct_per_layer_and_call() {
        let a = masks(1, "classifier.0");
        assert_eq!(a, masks(1, "classifier.0"));
        assert_ne!(a, masks(2, "classifier.0"));
        assert_ne!(a, masks(1, "classifier.2"));
        // Two successive calls draw different masks.
        assert_ne!(a[..1000], a[1000..]);
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.3).abs() < 0.05, "dropped fraction {dropped}");
        let kept = a.iter().find(|&&v| v != 0.0).copied().unwrap();
        assert!((kept - 1.0 / 0.7).abs() < 1e-6);
        assert!(Dropout::with_seed(1.0, 0).is_err());
        // Eval is the identity and does not advance the stream.
        let store = ParamStore::new(1, DType::F32, &Device::Cpu);
        let d = Dropout::new(0.3, &store.root().pp("classifier.0")).unwrap();
        let x = Tensor::ones(1000, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            d.forward_t(&x, false).unwrap().to_vec1::<f32>().unwrap(),
            vec![1f32; 1000]
        );
        assert_eq!(
            d.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap(),
            a[..1000].to_vec()
        );
    }

    /// The forward a caller generic over candle's layers gets.
    fn through_module_t<M: ModuleT>(m: &M, x: &Tensor, train: bool) -> Vec<f32> {
        m.forward_t(x, train).unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn module_t_is_the_train_and_eval_forward() {
        let layer = || Dropout::with_seed(0.3, 5).unwrap();
        let (generic, own) = (layer(), layer());
        let x = Tensor::ones(1000, DType::F32, &Device::Cpu).unwrap();
        for train in [true, false, true] {
            assert_eq!(
                through_module_t(&generic, &x, train),
                own.forward_t(&x, train).unwrap().to_vec1::<f32>().unwrap(),
                "train = {train}"
            );
        }
        assert_ne!(through_module_t(&generic, &x, true), vec![1f32; 1000]);
        assert_eq!(through_module_t(&generic, &x, false), vec![1f32; 1000]);
    }
}
