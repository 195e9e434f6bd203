//! The embedded synthetic fine-grained dataset: procedurally rendered birds, no download, no assets.
//!
//! Every class shares one global shape: a body ellipse, a head, a wing, a tail and legs. Classes differ only
//! in small local parts, each with a few levels:
//!
//! | part | levels |
//! |---|---|
//! | beak colour | 4 hues (more when more than 144 classes are asked for) |
//! | beak length | short, long |
//! | eye ring | none, pale ring |
//! | wing bars | none, one, two |
//! | tail tip | plain, pale tip, dark band |
//!
//! A class is one combination of levels; classes are spread over the combinations so that any class count
//! works and every part varies between classes. Everything else is drawn per image and carries no class
//! information: body and wing colour, a slight body aspect change, pose (rotation up to ±30°, a horizontal
//! flip), scale, position, a background gradient with clutter (blobs, branches, and decoys that look like
//! loose beaks, bars and rings), then global colour jitter (brightness, contrast, per-channel gain) and pixel
//! noise. Images are rendered with 2x2 supersampling, so any resolution works and parts scale with it.
//!
//! Each image is a pure function of `(seed, split, index)` through its own ChaCha8 stream, so the dataset is
//! identical across runs and thread counts, and different seeds give different images. Labels are
//! interleaved (`index % classes`), so every prefix is balanced.
//!
//! [`Rendered::pose`] exposes the ground-truth pose, and [`Rendered::part_box`] where each part is, for
//! checks like the fine-grained test of this crate or for evaluating attention maps.
//!
//! The pieces: [`SyntheticConfig`] (what to render), the classes ([`ClassSpec`]), the ground truth ([`Pose`],
//! [`Part`]), the dataset ([`Synthetic`]), and the renderer behind it: a scene of random draws with a bird and
//! background clutter, rasterised with point-in-shape tests.

mod bird;
mod classes;
mod clutter;
mod config;
mod dataset;
mod pose;
mod raster;
mod scene;

pub use classes::{ClassSpec, TailTip};
pub use config::SyntheticConfig;
pub use dataset::{Rendered, Synthetic};
pub use pose::{Part, Pose};
