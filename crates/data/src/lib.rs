//! # fgvc-data
//!
//! Datasets for fine-grained visual classification and a loader that turns any of them into batches on a
//! candle device.
//!
//! * **Datasets** ([`Dataset`]): [CUB-200-2011](cub), [Stanford Cars](cars) (torchvision, MMPretrain and
//!   single-archive layouts; the `.mat` annotations are read by a small MATLAB v5 reader, [`mat5`]),
//!   [FGVC-Aircraft](aircraft) (variant, family or manufacturer; banner cropped), [image folders](folder),
//!   and the embedded [`synthetic`] fine-grained dataset, which needs no download. Any of them gets
//!   a stratified, seeded validation split ([`Validation`]) so model selection need not touch the test set.
//!   [`open`] opens any kind by name.
//! * **Loader** ([`Loader`]): decodes (JPEG, PNG; grayscale and CMYK become RGB) on a rayon pool, applies an
//!   [`fgvc_augment::transforms::Pipeline`], and stacks [`Batch`]es `{ images [N,3,H,W] f32, labels [N] u32,
//!   indices }` on the device, with a bounded prefetch queue. The shuffle and every sample's augmentation are
//!   seeded by `(seed, epoch, index)`, so runs are reproducible whatever the thread count. Bad files are
//!   errors that name the file, or with `skip_bad` are logged, counted and skipped.
//! * **Verification** ([`verify::verify`]): counts per split and class, missing and unreadable files.
//!
//! Errors ([`DataError`]) name the file they concern; a root that does not look like the dataset says which
//! file is missing and where to get it.
//!
//! ## Example: synthetic dataset to one batch
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::Device;
//! use fgvc_augment::transforms::Pipeline;
//! use fgvc_data::{Dataset, Loader, LoaderConfig, Split, Synthetic, SyntheticConfig};
//!
//! // 10 classes of 64x64 birds that differ only in small parts.
//! let config = SyntheticConfig { train_per_class: 8, ..SyntheticConfig::default() };
//! let train = Arc::new(Synthetic::new(config, Split::Train)?);
//! assert_eq!((train.len(), train.num_classes()), (80, 10));
//!
//! // PMG-style augmentation at a small size: resize 72, random crop 64, flip, normalise to [-1, 1].
//! let loader = Loader::new(
//!     train,
//!     Pipeline::pmg_train_at(72, 64),
//!     LoaderConfig::train(16).with_seed(42),
//!     &Device::Cpu,
//! )?;
//! let batch = loader.epoch(0).next().expect("one batch")?;
//! assert_eq!(batch.images.dims(), &[16, 3, 64, 64]);
//! assert_eq!(batch.labels.dims(), &[16]);
//! assert_eq!(batch.indices.len(), 16);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Example: a real dataset with a validation split
//!
//! ```no_run
//! use fgvc_data::{open, DatasetKind, OpenOptions, Split, Validation};
//! let options = OpenOptions { validation: Validation::holdout(0.1, 0), ..Default::default() };
//! let val = open(DatasetKind::Cub, "data/CUB_200_2011".as_ref(), Split::Val, &options)?;
//! println!("{} images in {}", val.len(), val.name());
//! # Ok::<(), fgvc_data::DataError>(())
//! ```
#![warn(missing_docs)]

pub mod aircraft;
pub mod cars;
pub mod cub;
mod dataset;
mod error;
pub mod folder;
mod image_limit;
mod loader;
pub mod mat5;
mod open;
mod rng;
mod shard;
pub mod split;
pub mod synthetic;
mod text;
pub mod verify;
pub mod walk;

pub use dataset::{
    decode_bytes, decode_image, BBox, CropPolicy, Dataset, ImageSource, Sample, SampleSet, Split,
};
pub use error::{DataError, Result};
pub use image_limit::{
    check_image_header, max_image_pixels, set_max_image_pixels, DEFAULT_MAX_IMAGE_PIXELS,
};
pub use loader::{sample_rng, Batch, Epoch, Loader, LoaderConfig, Prepared};
pub use open::{official, open, DatasetKind, OpenOptions};
pub use shard::Shard;
pub use split::{holdout, stratified_holdout, OfficialSplits, Subset, Validation};
pub use synthetic::{Synthetic, SyntheticConfig};
