//! Shared helpers of the method tests: tiny models, seeded batches, an optimiser that records what each
//! step received, and a driver for `Method::train_step`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use fgvc_data::Batch;
use fgvc_ops::ParamStore;
use fgvc_train::method::Accumulator;
use fgvc_train::model::ModelConfig;
use fgvc_train::optim::{
    Optimizer, OptimizerConfig, OptimizerState, ParamGroups, SgdConfig, ZeroGrad,
};
use fgvc_train::{Method, StepContext, StepStats};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A ResNet-18 layout at base width 8 (stages 8, 8, 16, 32, 64 channels).
pub fn resnet_tiny() -> ModelConfig {
    ModelConfig {
        backbone: "resnet18".into(),
        base_width: Some(8),
        ..ModelConfig::default()
    }
}

/// A model config for `backbone` with no width change.
pub fn model(backbone: &str) -> ModelConfig {
    ModelConfig {
        backbone: backbone.into(),
        ..ModelConfig::default()
    }
}

/// MobileNetV2 at a quarter of the width (stem stride left to the method).
pub fn mobilenet_quarter() -> ModelConfig {
    ModelConfig {
        width_mult: Some(0.25),
        ..model("mobilenet_v2")
    }
}

/// A fresh store with `seed`.
pub fn store(seed: u64) -> ParamStore {
    ParamStore::new(seed, DType::F32, &Device::Cpu)
}

/// `n` seeded random images `[n, 3, size, size]` (about unit scale, like normalised images) with labels
/// `i % classes`.
pub fn batch(n: usize, size: usize, classes: usize, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data: Vec<f32> = (0..n * 3 * size * size)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let images = Tensor::from_vec(data, (n, 3, size, size), &Device::Cpu).unwrap();
    let labels: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    Batch {
        images,
        labels: Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
        indices: (0..n).collect(),
    }
}

/// What a [`Recorder`] saw: per optimiser step, the gradient of every parameter that had one.
pub type Log = Arc<Mutex<Vec<BTreeMap<String, Tensor>>>>;

/// An optimiser that records the gradients of each step, then lets SGD apply them.
pub struct Recorder {
    inner: Box<dyn Optimizer>,
    log: Log,
}

impl Optimizer for Recorder {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn groups(&self) -> &ParamGroups {
        self.inner.groups()
    }
    fn groups_mut(&mut self) -> &mut ParamGroups {
        self.inner.groups_mut()
    }
    fn step(&mut self, grads: &[Option<Tensor>]) -> fgvc_train::Result<()> {
        let mut seen = BTreeMap::new();
        for (p, g) in self.inner.groups().params().iter().zip(grads) {
            if let Some(g) = g {
                seen.insert(p.name.clone(), g.clone());
            }
        }
        self.log.lock().unwrap().push(seen);
        self.inner.step(grads)
    }
    fn state(&self) -> fgvc_train::Result<OptimizerState> {
        self.inner.state()
    }
    fn load_state(&mut self, state: &OptimizerState) -> fgvc_train::Result<()> {
        self.inner.load_state(state)
    }
}

/// SGD (momentum 0.9) over `method`'s default groups at base rate `lr` and weight decay `wd`.
pub fn sgd(method: &dyn Method, lr: f64, wd: f64, zero_grad: ZeroGrad) -> Box<dyn Optimizer> {
    let specs = method.default_groups(lr);
    let groups = ParamGroups::new(method.store().trainable(), &specs, lr, wd).unwrap();
    OptimizerConfig::Sgd(SgdConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
    })
    .build(groups, zero_grad)
    .unwrap()
}

/// [`sgd`] wrapped in a [`Recorder`], with its log.
pub fn recording_sgd(
    method: &dyn Method,
    lr: f64,
    wd: f64,
    zero_grad: ZeroGrad,
) -> (Recorder, Log) {
    let log: Log = Arc::default();
    (
        Recorder {
            inner: sgd(method, lr, wd, zero_grad),
            log: log.clone(),
        },
        log,
    )
}

/// One `train_step` of `method` on `batch` at `(epoch, step)` with seed 7, freezing applied for `epoch`.
pub fn train_step(
    method: &mut dyn Method,
    optimizer: &mut dyn Optimizer,
    batch: &Batch,
    epoch: usize,
    step: u64,
) -> StepStats {
    optimizer.groups_mut().apply_freezing(epoch);
    let mut acc = Accumulator::new(1);
    let mut ctx = StepContext::new(optimizer, &mut acc, None, true, 7, epoch, step);
    method.train_step(batch, &mut ctx).unwrap()
}

/// Trains `steps` times on the same batch at the same `(epoch, step)` (so every random draw repeats) and
/// returns the losses.
pub fn losses_on_repeated_batch(
    method: &mut dyn Method,
    optimizer: &mut dyn Optimizer,
    batch: &Batch,
    epoch: usize,
    steps: usize,
) -> Vec<f64> {
    (0..steps)
        .map(|_| train_step(method, optimizer, batch, epoch, 0).loss)
        .collect()
}

/// A parameter's values.
pub fn values(store: &ParamStore, name: &str) -> Vec<f32> {
    store
        .get(name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Every parameter and buffer, copied.
pub fn snapshot(store: &ParamStore) -> BTreeMap<String, Vec<f32>> {
    store
        .names()
        .into_iter()
        .map(|n| {
            let v = values(store, &n);
            (n, v)
        })
        .collect()
}

/// Names whose values differ between two snapshots.
pub fn changed(
    before: &BTreeMap<String, Vec<f32>>,
    after: &BTreeMap<String, Vec<f32>>,
) -> Vec<String> {
    before
        .iter()
        .filter(|(n, v)| after[*n] != **v)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Whether `name` lies under the dotted prefix `prefix`.
pub fn under(name: &str, prefix: &str) -> bool {
    name == prefix || name.starts_with(&format!("{prefix}."))
}

/// The maximum absolute difference of two tensors.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.sub(b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts the loss fell: the mean of the last two below `ratio` times the mean of the first two.
pub fn assert_falls(losses: &[f64], ratio: f64) {
    let n = losses.len();
    assert!(n >= 4, "need at least four losses");
    let first = (losses[0] + losses[1]) / 2.0;
    let last = (losses[n - 2] + losses[n - 1]) / 2.0;
    assert!(
        last < ratio * first,
        "loss did not fall enough: {losses:?} (first {first:.4}, last {last:.4})"
    );
}

/// Builds a method for a model config into a store.
pub type BuildMethod = dyn Fn(&ModelConfig, ParamStore) -> Box<dyn Method>;

/// The small methods the cross-backbone tests run, with the image size each needs (DCL's 2x2 region grid must
/// divide the deepest map, so it takes 64 px) and its main prediction head and head count.
pub struct TinyMethod {
    /// The method's name.
    pub name: &'static str,
    /// Image side in pixels.
    pub size: usize,
    /// The main prediction's name.
    pub main: &'static str,
    /// How many predictions `predict` returns.
    pub heads: usize,
    /// The method on a model config, 3 classes.
    pub build: Box<BuildMethod>,
}

/// PMG, RMG-PMSI, DCL (2x2 regions, k 1) and Coarse2Fine (4 attention maps, stage two from epoch 5), each
/// with narrow heads.
pub fn tiny_methods() -> Vec<TinyMethod> {
    use fgvc_train::methods::coarse2fine::{Coarse2FineMethod, Coarse2FineOptions};
    use fgvc_train::methods::dcl::{Dcl, DclOptions};
    use fgvc_train::methods::pmg::{Pmg, PmgOptions};
    use fgvc_train::methods::rmg_pmsi::{RmgPmsi, RmgPmsiOptions};
    vec![
        TinyMethod {
            name: "pmg",
            size: 32,
            main: "combined",
            heads: 5,
            build: Box::new(|m, s| {
                let o = PmgOptions {
                    feature_size: 8,
                    block_channels: Some(8),
                    ..PmgOptions::default()
                };
                Box::new(Pmg::new(m, o, 3, s).unwrap())
            }),
        },
        TinyMethod {
            name: "rmg-pmsi",
            size: 32,
            main: "combined",
            heads: 5,
            build: Box::new(|m, s| {
                let o = RmgPmsiOptions {
                    feature_size: 8,
                    block_channels: Some(8),
                    ..RmgPmsiOptions::default()
                };
                Box::new(RmgPmsi::new(m, o, 3, s).unwrap())
            }),
        },
        TinyMethod {
            name: "dcl",
            size: 64,
            main: "classifier",
            heads: 2,
            build: Box::new(|m, s| {
                let o = DclOptions {
                    grid: 2,
                    k: 1,
                    ..DclOptions::default()
                };
                let normalize = fgvc_augment::transforms::Normalize::IMAGENET;
                Box::new(Dcl::new(m, o, 3, s, normalize).unwrap())
            }),
        },
        TinyMethod {
            name: "coarse2fine",
            size: 32,
            main: "combined",
            heads: 3,
            build: Box::new(|m, s| {
                let o = Coarse2FineOptions {
                    num_attentions: 4,
                    reduce_channels: 4,
                    hidden_channels: 8,
                    coarse_epochs: 5,
                    ..Coarse2FineOptions::default()
                };
                Box::new(Coarse2FineMethod::new(m, o, 3, s).unwrap())
            }),
        },
    ]
}

/// The method named `name` from [`tiny_methods`].
pub fn tiny_method(name: &str) -> TinyMethod {
    tiny_methods()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no tiny method {name}"))
}
