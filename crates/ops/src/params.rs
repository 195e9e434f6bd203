//! Named parameters created from a seeded RNG.
//!
//! candle's CPU RNG cannot be seeded, so a model built on a plain `VarMap` differs on every run. A
//! [`ParamStore`] keeps the same `VarMap` (torchvision's dotted names, safetensors save/load) but draws every
//! parameter from a ChaCha stream keyed by `(seed, name)`: the same seed gives the same model whatever the
//! order in which layers are built.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a parameter is initialised, with PyTorch's definitions of fans and gains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element equals the value (BatchNorm weight 1, biases 0).
    Const(f64),
    /// Normal with mean and standard deviation (`nn.init.normal_`).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Uniform on `[lo, hi)` (`nn.init.uniform_`).
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// `nn.init.kaiming_normal_(w, mode, nonlinearity="relu")`: std = sqrt(2 / fan).
    KaimingNormal {
        /// Use fan-out (torchvision ResNet, MobileNetV2) instead of fan-in.
        fan_out: bool,
    },
    /// `nn.init.kaiming_uniform_(w, a)` on fan-in with leaky-ReLU gain: PyTorch's default for `Conv2d`
    /// and `Linear` weights is `a = sqrt(5)`.
    KaimingUniform {
        /// Negative slope of the leaky ReLU the gain is computed for.
        a: f64,
    },
    /// The default bias of `Conv2d`/`Linear`: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) where `fan_in` is that of
    /// the weight (passed explicitly because the bias shape does not carry it).
    BiasUniform {
        /// Fan-in of the layer's weight.
        fan_in: usize,
    },
    /// `nn.init.xavier_uniform_(w, gain)`.
    XavierUniform {
        /// Gain.
        gain: f64,
    },
    /// `nn.init.orthogonal_(w, gain)`: rows (or columns) of the flattened weight orthonormal.
    Orthogonal {
        /// Gain.
        gain: f64,
    },
}

impl Init {
    /// PyTorch's default weight init for `Conv2d` and `Linear`: kaiming-uniform with `a = sqrt(5)`.
    pub const TORCH_DEFAULT: Init = Init::KaimingUniform {
        a: 2.236_067_977_499_79,
    };
}

/// PyTorch's `_calculate_fan_in_and_fan_out`: `(dims[1] * receptive, dims[0] * receptive)`.
pub fn fans(dims: &[usize]) -> (usize, usize) {
    match dims.len() {
        0 => (1, 1),
        1 => (dims[0], dims[0]),
        _ => {
            let receptive: usize = dims[2..].iter().product();
            (dims[1] * receptive, dims[0] * receptive)
        }
    }
}

/// True for tensors that are state, not parameters: BatchNorm running statistics and counters. They are
/// saved and loaded but never optimised or weight-decayed.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

/// FNV-1a, a stable hash: the stream of a parameter must not change between runs or platforms.
fn stable_hash(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; one draw per call keeps the stream simple to reason about.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Draws `dims` values for `init` from `rng` (row-major).
pub(crate) fn sample(init: Init, dims: &[usize], rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
    let n: usize = dims.iter().product();
    let (fan_in, fan_out) = fans(dims);
    let uniform = |rng: &mut ChaCha8Rng, bound: f64| -> Vec<f64> {
        (0..n)
            .map(|_| (rng.random::<f64>() * 2.0 - 1.0) * bound)
            .collect()
    };
    Ok(match init {
        Init::Const(v) => vec![v; n],
        Init::Normal { mean, std } => (0..n).map(|_| mean + std * normal(rng)).collect(),
        Init::Uniform { lo, hi } => (0..n)
            .map(|_| lo + (hi - lo) * rng.random::<f64>())
            .collect(),
        Init::KaimingNormal { fan_out: out } => {
            let fan = if out { fan_out } else { fan_in };
            let std = (2.0 / fan.max(1) as f64).sqrt();
            (0..n).map(|_| std * normal(rng)).collect()
        }
        Init::KaimingUniform { a } => {
            let gain = (2.0 / (1.0 + a * a)).sqrt();
            let bound = gain * (3.0 / fan_in.max(1) as f64).sqrt();
            uniform(rng, bound)
        }
        Init::BiasUniform { fan_in } => uniform(rng, 1.0 / (fan_in.max(1) as f64).sqrt()),
        Init::XavierUniform { gain } => {
            let bound = gain * (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
            uniform(rng, bound)
        }
        Init::Orthogonal { gain } => orthogonal(dims, gain, rng)?,
    })
}

/// `nn.init.orthogonal_`: QR of a normal matrix (by modified Gram-Schmidt), signs fixed by R's diagonal.
fn orthogonal(dims: &[usize], gain: f64, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
    if dims.len() < 2 {
        candle_core::bail!("orthogonal init needs at least 2 dimensions, got {dims:?}")
    }
    let rows = dims[0];
    let cols: usize = dims[1..].iter().product();
    // Work on the tall orientation: k vectors of length m, k <= m.
    let (k, m) = if rows < cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let flat: Vec<f64> = (0..rows * cols).map(|_| normal(rng)).collect();
    // vectors[j] = column j of the tall matrix.
    let mut vectors: Vec<Vec<f64>> = (0..k)
        .map(|j| {
            (0..m)
                .map(|i| {
                    if rows < cols {
                        flat[j * cols + i]
                    } else {
                        flat[i * cols + j]
                    }
                })
                .collect()
        })
        .collect();
    for j in 0..k {
        for p in 0..j {
            let (done, rest) = vectors.split_at_mut(j);
            let dot: f64 = done[p].iter().zip(&rest[0]).map(|(a, b)| a * b).sum();
            for (v, q) in rest[0].iter_mut().zip(&done[p]) {
                *v -= dot * q;
            }
        }
        // R's diagonal is the norm, always positive here, so the sign correction is the identity.
        let norm = vectors[j]
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(1e-300);
        vectors[j].iter_mut().for_each(|v| *v /= norm);
    }
    let mut out = vec![0.0; rows * cols];
    for (j, v) in vectors.iter().enumerate() {
        for (i, x) in v.iter().enumerate() {
            if rows < cols {
                out[j * cols + i] = gain * x;
            } else {
                out[i * cols + j] = gain * x;
            }
        }
    }
    Ok(out)
}

struct StoreInner {
    varmap: VarMap,
    seed: u64,
    dtype: DType,
    device: Device,
}

/// All parameters and buffers of one model under their dotted names, created from a seeded RNG.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<StoreInner>,
}

impl ParamStore {
    /// An empty store; parameters are created on `device` in `dtype` as layers ask for them.
    pub fn new(seed: u64, dtype: DType, device: &Device) -> Self {
        Self {
            inner: Arc::new(StoreInner {
                varmap: VarMap::new(),
                seed,
                dtype,
                device: device.clone(),
            }),
        }
    }

    /// The builder at the root (no name prefix).
    pub fn root(&self) -> Params {
        Params {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    /// The seed every parameter stream derives from.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The device parameters live on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The dtype parameters are created in.
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    /// The underlying candle `VarMap` (for `save`/`load` and candle APIs).
    pub fn varmap(&self) -> &VarMap {
        &self.inner.varmap
    }

    /// Every name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .varmap
            .data()
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Every `(name, var)` sorted by name, buffers included.
    pub fn all(&self) -> Vec<(String, Var)> {
        let mut all: Vec<(String, Var)> = self
            .inner
            .varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The trainable parameters (everything but [`is_buffer`] names), sorted by name.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.all()
            .into_iter()
            .filter(|(n, _)| !is_buffer(n))
            .collect()
    }

    /// The var called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Var> {
        self.inner.varmap.data().lock().unwrap().get(name).cloned()
    }

    /// Creates (or returns the existing) var `name` of `shape`, drawn from the `(seed, name)` stream.
    pub fn var(&self, name: &str, shape: impl Into<Shape>, init: Init) -> Result<Var> {
        let shape = shape.into();
        let mut data = self.inner.varmap.data().lock().unwrap();
        if let Some(v) = data.get(name) {
            if v.shape() != &shape {
                candle_core::bail!(
                    "parameter `{name}` requested with shape {shape:?}, exists with {:?}",
                    v.shape()
                )
            }
            return Ok(v.clone());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(self.inner.seed, name));
        let values = sample(init, shape.dims(), &mut rng)?;
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(self.inner.dtype)?
            .to_device(&self.inner.device)?;
        let var = Var::from_tensor(&t)?;
        data.insert(name.to_string(), var.clone());
        Ok(var)
    }
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamStore")
            .field("seed", &self.inner.seed)
            .field("len", &self.inner.varmap.data().lock().unwrap().len())
            .finish()
    }
}

/// A [`ParamStore`] seen under a name prefix, like candle's `VarBuilder`: `p.pp("layer1").pp(0)` names its
/// parameters `layer1.0.*`.
#[derive(Clone, Debug)]
pub struct Params {
    store: ParamStore,
    prefix: String,
}

impl Params {
    /// The builder one level down: `pp("conv1")` under `layer1.0` is `layer1.0.conv1`.
    pub fn pp(&self, name: impl ToString) -> Params {
        let name = name.to_string();
        let prefix = if self.prefix.is_empty() {
            name
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Params {
            store: self.store.clone(),
            prefix,
        }
    }

    /// The full name of `name` under this prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A trainable tensor (the var's tensor, tracked by autograd).
    pub fn get(&self, shape: impl Into<Shape>, name: &str, init: Init) -> Result<Tensor> {
        Ok(self.var(shape, name, init)?.as_tensor().clone())
    }

    /// The var itself, for state updated in place (BatchNorm running statistics).
    pub fn var(&self, shape: impl Into<Shape>, name: &str, init: Init) -> Result<Var> {
        self.store.var(&self.path(name), shape, init)
    }

    /// The store behind this builder.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The device parameters live on.
    pub fn device(&self) -> &Device {
        self.store.device()
    }

    /// The dtype parameters are created in.
    pub fn dtype(&self) -> DType {
        self.store.dtype()
    }
}
