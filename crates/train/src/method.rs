//! The [`Method`] trait every training method implements, and the [`StepContext`] through which a method
//! takes optimiser steps.
//!
//! A method owns its model (a [`ParamStore`] and the layers built from it). The trainer hands it one batch
//! at a time; the method computes its losses and calls [`StepContext::backward_step`] once per optimiser
//! step it wants: the baseline once, PMG and RMG-PMSI four times per batch. The context applies gradient
//! clipping, gradient accumulation and the optimiser, and refuses a NaN or infinite loss before it can reach
//! the weights.

use candle_core::Tensor;
use fgvc_data::Batch;
use fgvc_distributed::{all_reduce_mean, Group, DEFAULT_BUCKET_BYTES};
use fgvc_ops::ParamStore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, TrainError};
use crate::explain::Explain;
use crate::optim::{clip_grad_norm, first_non_finite, GroupSpec, Optimizer, ZeroGrad};

/// What one training step reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    /// Total loss of the step (the sum of every backward pass' loss).
    pub loss: f64,
    /// Correctly classified training images (by the method's main prediction).
    pub correct: usize,
    /// Images in the batch.
    pub count: usize,
    /// Named partial losses (PMG: `jigsaw8`, `jigsaw4`, `jigsaw2`, `concat`).
    pub losses: Vec<(String, f64)>,
}

/// Every named prediction a method makes for a batch of images, the first being the main one.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// `(name, logits [N, classes])`, the main prediction first.
    pub heads: Vec<(String, Tensor)>,
}

impl Predictions {
    /// A single prediction called `name`.
    pub fn single(name: impl Into<String>, logits: Tensor) -> Self {
        Predictions {
            heads: vec![(name.into(), logits)],
        }
    }

    /// The main prediction.
    pub fn main(&self) -> Result<&(String, Tensor)> {
        self.heads
            .first()
            .ok_or_else(|| TrainError::Msg("a method returned no prediction".into()))
    }

    /// The prediction called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.heads.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// A training method: the model, how it trains on a batch and how it predicts.
pub trait Method {
    /// Short name (`baseline`, `pmg`).
    fn name(&self) -> &str;

    /// The model's parameters and buffers (saved in checkpoints, optimised by name).
    fn store(&self) -> &ParamStore;

    /// Trains on one batch, taking as many optimiser steps through `ctx` as the method says.
    fn train_step(&mut self, batch: &Batch, ctx: &mut StepContext<'_>) -> Result<StepStats>;

    /// Evaluation-mode predictions for `images` `[N, 3, H, W]`.
    fn predict(&self, images: &Tensor) -> Result<Predictions>;

    /// The ONNX graph of [`Method::predict`] on the graph value `images` `(N, 3, H, W)`: every named
    /// prediction as a graph value, with exactly the names and order `predict` returns (main one first).
    /// The default is an error naming the method: a method added from outside this crate is not
    /// exportable until it implements this.
    fn export(
        &self,
        _g: &mut fgvc_onnx::Graph,
        _images: &fgvc_onnx::Value,
    ) -> Result<Vec<(String, fgvc_onnx::Value)>> {
        Err(TrainError::Export(fgvc_onnx::ExportError::Unsupported(
            format!(
                "the method {:?} has no ONNX export (it does not implement Method::export)",
                self.name()
            ),
        )))
    }

    /// The parameter groups the method trains with by default, given the base learning rate (every
    /// published method trains its new layers at 10x the backbone's rate). A configuration's
    /// `[[optim.groups]]` replace them.
    fn default_groups(&self, _base_lr: f64) -> Vec<GroupSpec> {
        Vec::new()
    }

    /// The `zero_grad` semantics the method's official code had (PyTorch < 2.0 for PMG and RMG-PMSI).
    fn default_zero_grad(&self) -> ZeroGrad {
        ZeroGrad::SetToNone
    }

    /// The destroyed copies of `images` that [`Method::train_step`] trains on, named as its partial losses
    /// (PMG: `jigsaw8`, `jigsaw4`, `jigsaw2`), drawn from `rng(stream)` with the streams its step draws them
    /// from ([`StepContext::rng`]), so that with the step's keys they are the very images of that step. For
    /// previews (TensorBoard's `augment/*` images). The default is none: the method trains on its inputs as
    /// they are.
    fn destructions(
        &self,
        _images: &Tensor,
        _rng: &dyn Fn(u64) -> ChaCha8Rng,
    ) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    /// The method's Grad-CAM support ([`crate::explain`]): itself as an [`Explain`]. By default an error
    /// saying the method is not explainable.
    fn explain(&self) -> Result<&dyn Explain> {
        Err(crate::explain::not_explainable(self.name()))
    }
}

/// A seeded generator keyed by `(seed, epoch, step, stream)`: reproducible from the position alone, so
/// resuming needs no RNG state.
pub fn keyed_rng(seed: u64, epoch: u64, step: u64, stream: u64) -> ChaCha8Rng {
    // SplitMix64 over the four words.
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for w in [seed, epoch, step, stream, 0x7472_6169_6e00_0000] {
        h = h.wrapping_add(w).wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    ChaCha8Rng::seed_from_u64(h)
}

/// Gradients accumulated over micro-batches, one slot per optimiser step of a batch (PMG's four steps each
/// accumulate separately).
#[derive(Debug, Default)]
pub struct Accumulator {
    every: usize,
    pending: Vec<Option<Vec<Option<Tensor>>>>,
}

impl Accumulator {
    /// Accumulate over `every` batches (1: no accumulation).
    pub fn new(every: usize) -> Self {
        Accumulator {
            every: every.max(1),
            pending: Vec::new(),
        }
    }

    /// Batches per optimiser step.
    pub fn every(&self) -> usize {
        self.every
    }

    /// Whether no gradient is waiting (a checkpoint taken now loses nothing).
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(Option::is_none)
    }

    fn add(&mut self, phase: usize, grads: Vec<Option<Tensor>>) -> Result<()> {
        if self.pending.len() <= phase {
            self.pending.resize_with(phase + 1, || None);
        }
        self.pending[phase] = Some(match self.pending[phase].take() {
            None => grads,
            Some(acc) => acc
                .into_iter()
                .zip(grads)
                .map(|(a, g)| -> Result<Option<Tensor>> {
                    Ok(match (a, g) {
                        (Some(a), Some(g)) => Some(a.add(&g)?),
                        (a, g) => a.or(g),
                    })
                })
                .collect::<Result<_>>()?,
        });
        Ok(())
    }

    fn take(&mut self, phase: usize) -> Option<Vec<Option<Tensor>>> {
        self.pending.get_mut(phase).and_then(Option::take)
    }
}

/// The trainer's side of a training step, handed to [`Method::train_step`].
pub struct StepContext<'a> {
    optimizer: &'a mut dyn Optimizer,
    accumulator: &'a mut Accumulator,
    clip_grad_norm: Option<f64>,
    flush: bool,
    seed: u64,
    epoch: usize,
    step: u64,
    phase: usize,
    grad_norm: Option<f64>,
    group: Group,
    bucket_bytes: usize,
    comm_seconds: f64,
}

impl<'a> StepContext<'a> {
    /// A context for global step `step` of epoch `epoch`. With accumulation, the optimiser steps on the
    /// batch where `flush` is true (the last of each group of batches, and the last of the epoch).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        optimizer: &'a mut dyn Optimizer,
        accumulator: &'a mut Accumulator,
        clip_grad_norm: Option<f64>,
        flush: bool,
        seed: u64,
        epoch: usize,
        step: u64,
    ) -> Self {
        StepContext {
            optimizer,
            accumulator,
            clip_grad_norm,
            flush,
            seed,
            epoch,
            step,
            phase: 0,
            grad_norm: None,
            group: Group::local(),
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            comm_seconds: 0.0,
        }
    }

    /// The same context in a data-parallel run over `group`: every optimiser step applies the gradients
    /// averaged over the ranks (all-reduced in buckets of `bucket_bytes`), and a non-finite loss or gradient
    /// on any rank stops every rank at the same step.
    pub fn with_group(mut self, group: &Group, bucket_bytes: usize) -> Self {
        self.group = group.clone();
        self.bucket_bytes = bucket_bytes;
        self
    }

    /// Seconds this step spent in gradient all-reduces so far (0 in a single process).
    pub fn comm_seconds(&self) -> f64 {
        self.comm_seconds
    }

    /// The epoch (0-based).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The global batch step (0-based).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The generator for random stream `stream` of this step (dropout, on-device destructions): keyed by
    /// `(seed, epoch, step, stream)`, and in a data-parallel run by the rank too (rank 0's streams are a
    /// single process'), so that the ranks' images get independent draws, as the images of one process's
    /// larger batch would.
    pub fn rng(&self, stream: u64) -> ChaCha8Rng {
        let rank = self.group.rank() as u64;
        keyed_rng(
            self.seed,
            self.epoch as u64,
            self.step,
            stream ^ (rank << 48),
        )
    }

    /// Optimiser steps (backward passes) taken so far in this batch.
    pub fn phase(&self) -> usize {
        self.phase
    }

    /// The gradient norm before clipping of the last optimiser step, when clipping is on.
    pub fn grad_norm(&self) -> Option<f64> {
        self.grad_norm
    }

    /// The optimiser (its groups' current learning rates, for logging).
    pub fn optimizer(&self) -> &dyn Optimizer {
        &*self.optimizer
    }

    /// Backpropagates `loss` and takes one optimiser step (or accumulates, see [`Accumulator`]). A NaN or
    /// infinite loss, or a NaN or infinite gradient, is an error before any weight changes. Returns the loss
    /// value.
    ///
    /// In a data-parallel run ([`StepContext::with_group`]) the step applies the mean of every rank's
    /// gradients, and both checks are agreed between the ranks, so that all of them stop together.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<f64> {
        let value = crate::methods::scalar(loss)?;
        if !self.group.all(value.is_finite())? {
            return Err(TrainError::NonFiniteLoss {
                epoch: self.epoch,
                step: self.step,
                // NaN on a rank whose own loss was finite: the loss of another rank was not.
                value: if value.is_finite() { f64::NAN } else { value },
            });
        }
        let every = self.accumulator.every();
        let scaled = if every > 1 {
            loss.affine(1.0 / every as f64, 0.0)?
        } else {
            loss.clone()
        };
        let store = scaled.backward()?;
        let grads = self.optimizer.groups().grads_from(&store);
        drop(store);
        let phase = self.phase;
        self.phase += 1;
        let mut grads = if every > 1 {
            self.accumulator.add(phase, grads)?;
            if !self.flush {
                return Ok(value);
            }
            self.accumulator.take(phase).unwrap_or_default()
        } else {
            grads
        };
        if self.group.is_distributed() {
            let start = std::time::Instant::now();
            grads = all_reduce_mean(&self.group, &grads, self.bucket_bytes)?;
            self.comm_seconds += start.elapsed().as_secs_f64();
        }
        let bad = first_non_finite(&grads)?;
        if !self.group.all(bad.is_none())? {
            let params = self.optimizer.groups().params();
            return Err(TrainError::NonFiniteGradient {
                epoch: self.epoch,
                step: self.step,
                parameter: bad.map_or_else(
                    || "a parameter on another rank".to_string(),
                    |i| {
                        params
                            .get(i)
                            .map_or_else(|| format!("#{i}"), |p| p.name.clone())
                    },
                ),
            });
        }
        if let Some(max) = self.clip_grad_norm {
            self.grad_norm = Some(clip_grad_norm(&mut grads, max)?);
        }
        self.optimizer.step(&grads)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{OptimizerConfig, ParamGroups, SgdConfig};
    use candle_core::{Device, Var};

    /// Loss `sum(c * w)` has gradient `c`, so the applied update shows which gradients were summed.
    #[test]
    fn accumulation_steps_once_with_the_mean_gradient_and_nan_is_refused() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[0f32, 0.0], &dev)?;
        let groups = ParamGroups::single(vec![("w".into(), w.clone())], 1.0, 0.0)?;
        let sgd = SgdConfig {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
        };
        let mut opt = OptimizerConfig::Sgd(sgd).build(groups, ZeroGrad::SetToNone)?;
        let mut acc = Accumulator::new(2);
        let loss = |c: [f32; 2]| -> Result<Tensor> {
            Ok(w.as_tensor().mul(&Tensor::new(&c, &dev)?)?.sum_all()?)
        };
        for (flush, c) in [(false, [1f32, 2.0]), (true, [3.0, 6.0])] {
            let mut ctx = StepContext::new(&mut *opt, &mut acc, None, flush, 0, 0, 0);
            ctx.backward_step(&loss(c)?)?;
            assert_eq!(acc.is_empty(), flush);
        }
        // One step of lr 1 with the mean gradient [2, 4].
        assert_eq!(w.as_tensor().to_vec1::<f32>()?, [-2.0, -4.0]);
        let nan = Tensor::new(f32::NAN, &dev)?;
        let mut ctx = StepContext::new(&mut *opt, &mut acc, Some(1.0), true, 0, 3, 7);
        match ctx.backward_step(&nan) {
            Err(TrainError::NonFiniteLoss {
                epoch: 3, step: 7, ..
            }) => {}
            other => panic!("expected a NaN error, got {other:?}"),
        }
        assert_eq!(w.as_tensor().to_vec1::<f32>()?, [-2.0, -4.0]);
        Ok(())
    }

    /// `sum(sqrt(w))` at `w = [0, 1]` is finite (1) but its gradient at 0 is infinite: the step is refused
    /// with the parameter's name, with and without clipping, and the weights stay as they were.
    #[test]
    fn a_non_finite_gradient_is_refused_before_the_update() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[0f32, 1.0], &dev)?;
        let groups = ParamGroups::single(vec![("head.w".into(), w.clone())], 0.1, 0.0)?;
        let sgd = SgdConfig {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
        };
        let mut opt = OptimizerConfig::Sgd(sgd).build(groups, ZeroGrad::SetToNone)?;
        let mut acc = Accumulator::new(1);
        for clip in [None, Some(1.0)] {
            let mut ctx = StepContext::new(&mut *opt, &mut acc, clip, true, 0, 2, 9);
            let loss = w.as_tensor().sqrt()?.sum_all()?;
            match ctx.backward_step(&loss) {
                Err(TrainError::NonFiniteGradient {
                    epoch: 2,
                    step: 9,
                    parameter,
                }) => assert_eq!(parameter, "head.w"),
                other => panic!("expected a non-finite gradient error, got {other:?}"),
            }
            assert_eq!(w.as_tensor().to_vec1::<f32>()?, [0.0, 1.0]);
        }
        // A finite gradient still steps: d/dw sum(w^2) at [0, 1] is [0, 2].
        let mut ctx = StepContext::new(&mut *opt, &mut acc, None, true, 0, 2, 10);
        ctx.backward_step(&w.as_tensor().sqr()?.sum_all()?)?;
        assert_eq!(w.as_tensor().to_vec1::<f32>()?, [0.0, 0.8]);
        Ok(())
    }

    #[test]
    fn keyed_streams_depend_on_every_key() {
        use rand::Rng;
        let draw = |s, e, t, k| keyed_rng(s, e, t, k).random::<u64>();
        let base = draw(1, 2, 3, 4);
        assert_eq!(base, draw(1, 2, 3, 4));
        for other in [
            draw(0, 2, 3, 4),
            draw(1, 0, 3, 4),
            draw(1, 2, 0, 4),
            draw(1, 2, 3, 0),
        ] {
            assert_ne!(base, other);
        }
    }
}
