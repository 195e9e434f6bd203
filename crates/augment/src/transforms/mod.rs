//! Ordinary train/test transforms on decoded `image::RgbImage`s, matching torchvision on PIL images: resize
//! (bit-identical to PIL, antialiased), random/center crops, flips, nearest rotation (bit-identical to PIL),
//! `ToTensor` + `Normalize`, and the pipelines of the official PMG, DCL and RMG code.
//!
//! These run on the host, one image at a time on the data loader's worker threads; every random choice comes
//! from the RNG the caller passes, so a seed fixes the output.

mod convolution;
mod crop;
mod flip;
mod normalize;
mod pipeline;
mod resize;
mod rotate;

pub use crop::{center_crop, center_crop_offsets, crop, random_crop, random_crop_offsets};
pub use flip::{flip_decision, horizontal_flip, horizontal_flip_in_place, random_horizontal_flip};
pub use normalize::Normalize;
pub use pipeline::{Pipeline, Transform};
pub use resize::{resize, resize_and_crop, resize_shorter, shorter_side_size, ResizeFilter};
pub use rotate::{random_angle, random_rotation, rotate};
