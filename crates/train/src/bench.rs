//! The method training-step workload that `cargo xtask bench methods` and the GPU device check time: a
//! method's CUB configuration at a given backbone, size and batch, stepped on random images through the same
//! public API the trainer uses (`registry::build_method`, the optimiser from the method's groups, a
//! [`StepContext`]).

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use fgvc_data::Batch;
use rand::{Rng, SeedableRng};

use crate::method::{Accumulator, Method, StepContext};
use crate::optim::{build_optimizer, Optimizer};
use crate::registry::{self, build_method};
use crate::{Config, Result, TrainError};

/// The reproduction configuration of `method` (its CUB preset in the repository at `root`) for `backbone`,
/// `size` and `batch`, without pretrained weights.
///
/// The preset's official options and optimiser groups apply. When `backbone` is not the preset's, the
/// widths tied to the preset's backbone fall back to the official rule (half the deepest stage) and its
/// shape options go.
pub fn method_config(
    root: &Path,
    method: &str,
    backbone: &str,
    size: usize,
    batch: usize,
) -> Result<Config> {
    let spec = registry::lookup(method)?;
    let preset = spec.presets.cub.ok_or_else(|| TrainError::Config {
        origin: "[method]".into(),
        key: "method.name".into(),
        message: format!("{method} ships no CUB configuration"),
    })?;
    let overrides = [
        format!("data.batch_size={batch}"),
        format!("data.crop={size}"),
    ];
    let mut config = preset.load(root, &overrides)?;
    config.model.pretrained = None;
    if config.model.backbone != backbone {
        config.method.options.remove("block_channels");
        if backbone == "mobilenet_v2" {
            config.model.base_width = None;
        } else {
            config.model.width_mult = None;
            config.model.first_stride = None;
        }
        config.model.backbone = backbone.to_string();
    }
    Ok(config)
}

/// A method ready to be stepped: built, with its optimiser in the configuration's last epoch (past
/// Coarse2Fine's coarse stage and RMG-PMSI's backbone freeze, the steady-state step).
pub struct StepBench {
    /// The configuration it was built from.
    pub config: Config,
    /// The method.
    pub method: Box<dyn Method>,
    optimizer: Box<dyn Optimizer>,
    accumulator: Accumulator,
    epoch: usize,
    step: u64,
}

impl StepBench {
    /// Builds the method of `config` for `classes` classes on `device`.
    pub fn new(config: Config, classes: usize, device: &Device) -> Result<Self> {
        let method = build_method(&config, classes, device)?;
        let mut optimizer = build_optimizer(&config, &*method)?;
        let epoch = config.train.epochs.saturating_sub(1);
        optimizer.groups_mut().apply_freezing(epoch);
        let accumulator = Accumulator::new(config.optim.accumulate);
        Ok(Self {
            config,
            method,
            optimizer,
            accumulator,
            epoch,
            step: 0,
        })
    }

    /// The number of trainable parameters (buffers excluded).
    pub fn parameters(&self) -> usize {
        self.method
            .store()
            .trainable()
            .iter()
            .filter(|(n, _)| !fgvc_ops::is_buffer(n))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// A batch of `batch` random normal images of `size` px and random labels below `classes`, seeded by
    /// the configuration's seed, made on the CPU and moved to `device` (so every device sees the same one).
    pub fn random_batch(
        &self,
        (batch, size): (usize, usize),
        classes: usize,
        device: &Device,
    ) -> Result<Batch> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.config.seed);
        let pixels: Vec<f32> = (0..batch * 3 * size * size)
            .map(|_| {
                // Box-Muller: a normal deviate from two uniforms.
                let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
                (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect();
        let labels: Vec<u32> = (0..batch)
            .map(|_| rng.random_range(0..classes as u32))
            .collect();
        Ok(Batch {
            images: Tensor::from_vec(pixels, (batch, 3, size, size), &Device::Cpu)?
                .to_device(device)?,
            labels: Tensor::from_vec(labels, batch, &Device::Cpu)?.to_device(device)?,
            indices: (0..batch).collect(),
        })
    }

    /// One whole training step of `batch` (every optimiser step the method takes for it), waited for on
    /// the device. Returns the loss, the optimiser steps taken and the seconds it took.
    pub fn step(&mut self, batch: &Batch) -> Result<(f64, usize, f64)> {
        let t0 = Instant::now();
        let mut ctx = StepContext::new(
            &mut *self.optimizer,
            &mut self.accumulator,
            self.config.optim.clip_grad_norm,
            true,
            self.config.seed,
            self.epoch,
            self.step,
        );
        let stats = self.method.train_step(batch, &mut ctx)?;
        let phases = ctx.phase();
        batch.images.device().synchronize()?;
        self.step += 1;
        Ok((stats.loss, phases, t0.elapsed().as_secs_f64()))
    }
}

/// How long a whole run would take, projected from a few timed training steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The median seconds of one training step (every optimiser step of one batch).
    pub seconds_per_step: f64,
    /// Batches per epoch: the training split over the batch size, the last short batch dropped.
    pub steps_per_epoch: usize,
    /// The configured epochs.
    pub epochs: usize,
}

impl Estimate {
    /// The projected seconds of training (data loading and evaluation not counted: a lower bound).
    pub fn seconds(&self) -> f64 {
        self.seconds_per_step * (self.steps_per_epoch * self.epochs) as f64
    }

    /// [`Estimate::seconds`] in hours.
    pub fn hours(&self) -> f64 {
        self.seconds() / 3600.0
    }
}

/// Times `steps` training steps (after one warm-up) of `config`'s method on `device`, on random batches of
/// its batch size and crop, and projects the whole run. The training split is opened only to count it; no
/// run directory is touched.
pub fn estimate(config: &Config, device: &Device, steps: usize) -> Result<Estimate> {
    crate::precision::apply_precision(config, device)?;
    let train = crate::data::open_split(config, fgvc_data::Split::Train)?;
    let classes = train.num_classes();
    let batch = config.data.batch_size;
    let size = config.data.crop.or(config.data.resize).unwrap_or(224) as usize;
    let mut bench = StepBench::new(config.clone(), classes, device)?;
    let data = bench.random_batch((batch, size), classes, device)?;
    let mut times = Vec::with_capacity(steps);
    for it in 0..=steps.max(1) {
        let (_, _, dt) = bench.step(&data)?;
        if it > 0 {
            times.push(dt);
        }
    }
    Ok(Estimate {
        seconds_per_step: median(&times),
        steps_per_epoch: train.len() / batch.max(1),
        epochs: config.train.epochs,
    })
}

/// The median of `xs` (NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_steps_from_its_cub_preset_on_another_backbone() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let config = method_config(&root, "pmg", "resnet18", 64, 2).unwrap();
        assert_eq!(config.model.backbone, "resnet18");
        assert!(config.model.pretrained.is_none());
        assert_eq!(config.data.crop, Some(64));
        let mut bench = StepBench::new(config, 5, &Device::Cpu).unwrap();
        assert!(bench.parameters() > 1_000_000);
        let batch = bench.random_batch((2, 64), 5, &Device::Cpu).unwrap();
        let again = bench.random_batch((2, 64), 5, &Device::Cpu).unwrap();
        let pixels = |b: &Batch| b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(pixels(&batch), pixels(&again), "the batch is seeded");
        let (loss, phases, seconds) = bench.step(&batch).unwrap();
        assert!(loss.is_finite() && seconds > 0.0);
        assert_eq!(phases, 4, "PMG: three jigsaw steps and the whole image");
        assert!(method_config(&root, "no-such-method", "resnet18", 64, 2).is_err());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        let e = Estimate {
            seconds_per_step: 2.0,
            steps_per_epoch: 90,
            epochs: 20,
        };
        assert_eq!((e.seconds(), e.hours()), (3600.0, 1.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
