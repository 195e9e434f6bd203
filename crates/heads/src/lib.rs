//! # fgvc-heads
//!
//! The method heads of fine-grained classification, on top of any backbone's stage feature maps. The heads
//! know nothing of datasets, training loops or particular backbones: they take feature maps (shallow to deep)
//! and channel counts, and return logits and the auxiliary outputs their losses need.
//!
//! - [`pmg`]: PMG's per-stage conv blocks, global max pooling, classifiers and concat classifier.
//! - [`msi`]: RMG-PMSI's head, whose stage features interact through the Multi-Stage Interaction gate.
//! - [`dcl`]: DCL's classifier, original-vs-destroyed discriminator (2-way or 2C-way) and region-alignment head
//!   (official 1-channel mask or the paper's 2 x N x N map), with their loss helpers.
//! - [`coarse2fine`]: orthogonally initialised WS-DAN-style attention, bilinear attention pooling, and a learned
//!   inverse mapping to an input-space region map that zooms the image for a fine pass, differentiably.
//! - [`blocks`]: the shared `BasicConv`, stage block, ELU classifier and a seeded [`blocks::Dropout`].
//! - [`interp`]: bilinear resizing and box zoom as matrix products, so they have gradients.
//!
//! Every head also has an `export` next to its forward: the same evaluation-mode computation as ONNX nodes
//! on graph values ([`fgvc_onnx::Graph`]), for `fgvc export`.
//!
//! Parameters are created in a [`fgvc_ops::ParamStore`] under the caller's prefix with the official code's
//! module names, initialised as PyTorch initialises them.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use fgvc_heads::pmg::{PmgConfig, PmgHead};
//! use fgvc_ops::ParamStore;
//!
//! let dev = Device::Cpu;
//! let store = ParamStore::new(0, DType::F32, &dev);
//! let head = PmgHead::new(PmgConfig::last_stages(&[8, 16, 32], 3, 8, 16, 4)?, &store.root().pp("heads"))?;
//! let stages = [
//!     Tensor::randn(0f32, 1., (2, 8, 8, 8), &dev)?,
//!     Tensor::randn(0f32, 1., (2, 16, 4, 4), &dev)?,
//!     Tensor::randn(0f32, 1., (2, 32, 2, 2), &dev)?,
//! ];
//! let out = head.forward_t(&stages, true)?;
//! let labels = Tensor::new(&[1u32, 3], &dev)?;
//! let loss = candle_nn::loss::cross_entropy(out.step_logits(3)?, &labels)?;
//! let grads = loss.backward()?;
//! let w = store.get("heads.classifier_concat.4.weight").unwrap();
//! assert!(grads.get(w.as_tensor()).is_some());
//! # Ok::<(), candle_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod blocks;
pub mod coarse2fine;
pub mod dcl;
pub mod interp;
pub mod msi;
pub mod pmg;

use candle_core::{Result, Tensor};
use fgvc_onnx::{ExportError, Value};

/// The last `channels.len()` of `stages`, checked against the expected channel counts.
pub(crate) fn select_stages<'a>(
    head: &str,
    stages: &'a [Tensor],
    channels: &[usize],
) -> Result<&'a [Tensor]> {
    let s = channels.len();
    if stages.len() < s {
        candle_core::bail!(
            "{head}: the head reads {s} stages, got {} feature maps",
            stages.len()
        )
    }
    let taps = &stages[stages.len() - s..];
    for (i, (x, &c)) in taps.iter().zip(channels).enumerate() {
        if x.rank() != 4 || x.dim(1)? != c {
            candle_core::bail!(
                "{head}: stage {} should be (N, {c}, H, W), got {:?}",
                i + 1,
                x.dims()
            )
        }
    }
    Ok(taps)
}

/// [`select_stages`] for graph values: the last `channels.len()` of `stages`, checked to be `(N, c, H, W)`.
pub(crate) fn select_stage_values<'a>(
    head: &str,
    stages: &'a [Value],
    channels: &[usize],
) -> fgvc_onnx::Result<&'a [Value]> {
    let s = channels.len();
    if stages.len() < s {
        return Err(ExportError::Shape {
            op: head.into(),
            message: format!(
                "the head reads {s} stages, got {} feature maps",
                stages.len()
            ),
        });
    }
    let taps = &stages[stages.len() - s..];
    for (i, (x, &c)) in taps.iter().zip(channels).enumerate() {
        if x.rank() != 4 || x.shape()[1] != fgvc_onnx::Dim::Fixed(c) {
            return Err(ExportError::Shape {
                op: head.into(),
                message: format!(
                    "stage {} should be (N, {c}, H, W), got {:?}",
                    i + 1,
                    x.shape()
                ),
            });
        }
    }
    Ok(taps)
}
