//! # fgvc-augment
//!
//! The image "destructions" that fine-grained training methods are made of, and the ordinary train/test
//! transforms around them.
//!
//! - [`Jigsaw`] (PMG): `n` x `n` patches shuffled, officially one `n²`-cycle shared by the batch.
//! - [`RegionConfusion`] (DCL): `n` x `n` regions shuffled per image within a neighbourhood, in the paper's
//!   bounded form or the official code's adjacent-pair form, with both region-alignment targets.
//! - [`RecursiveMosaic`] (RMG-PMSI): nested 2x2 shuffles that recurse into one quadrant.
//! - [`transforms`]: resize (antialiased like PIL), crops, flips, rotation and normalisation on decoded
//!   images, assembled into the official pipelines of each method.
//!
//! Destructions work on NCHW candle tensors on any device with one gather per call (no host loop over
//! pixels), take their randomness from a seeded RNG passed in, and return the permutation they applied next
//! to the images, so a region-alignment loss can use it and [`Destroyed::restore`] can undo it.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use fgvc_augment::{Jigsaw, RcmMode, RecursiveMosaic, RegionConfusion};
//! use rand::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
//! let images = Tensor::rand(0f32, 1., (4, 3, 56, 56), &Device::Cpu)?;
//!
//! // PMG's four granularities: 8x8, 4x4, 2x2 patches, then the image itself.
//! for n in [8, 4, 2] {
//!     let step = Jigsaw::new(n)?.apply(&images, &mut rng)?;
//!     assert_eq!(step.images.dims(), images.dims());
//! }
//! // DCL: per-image region confusion and the true alignment target.
//! let rcm = RegionConfusion::new(7, 2, RcmMode::Official)?.apply(&images, &mut rng)?;
//! let target = RegionConfusion::exact_law(&rcm.permutations, &Device::Cpu)?;
//! assert_eq!(target.dims(), &[4, 49]);
//! // RMG: a 3-level mosaic; undoing it gives the input back exactly.
//! let mosaic = RecursiveMosaic::new(3)?.apply(&images, &mut rng)?;
//! let restored = mosaic.restore()?;
//! assert_eq!(restored.sub(&images)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
//! # Ok::<(), fgvc_augment::AugmentError>(())
//! ```
#![warn(missing_docs)]

mod cells;
mod error;
mod jigsaw;
mod mosaic;
mod permutation;
mod preview;
mod region_confusion;
pub mod transforms;

pub use cells::{permute_cells, Destroyed};
pub use error::{AugmentError, Result};
pub use jigsaw::{Jigsaw, JigsawMode};
pub use mosaic::RecursiveMosaic;
pub use permutation::Permutation;
pub use preview::{destruction_preview, preview_grid, save_png, PREVIEW_COLUMNS};
pub use region_confusion::{RcmMode, RegionConfusion};
