//! RMG-PMSI's recursive mosaic generator: nested 2x2 shuffles, so coarse structure survives at every level
//! while the finest mosaic stays local (Wu et al., BMVC 2022).

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cells::{batch_dims, cell_size, permute_cells, Destroyed};
use crate::{AugmentError, Permutation, Result};

const QUADRANTS: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// `levels` nested 2x2 shuffles (official `RMG(input, r)`): the whole image's quadrants are 4-cycled, then the
/// quadrants of one random quadrant of the result, and so on. One mosaic per batch, as in the code.
///
/// The permutation is reported on the finest grid, `2^levels` cells per side.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fgvc_augment::RecursiveMosaic;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
/// let images = Tensor::rand(0f32, 1., (2, 3, 64, 64), &Device::Cpu)?;
/// let out = RecursiveMosaic::new(3)?.apply(&images, &mut rng)?;
/// assert_eq!(out.permutations[0].grid, 8);
/// assert_eq!(out.permutations[0].fixed_points(), 0); // every finest cell moves
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecursiveMosaic {
    /// Recursion depth `r` (RMG-PMSI trains with 3, 2, 1, then the original image).
    pub levels: u32,
}

impl RecursiveMosaic {
    /// A mosaic of `levels` nested 2x2 shuffles; `levels` must be at least 1.
    pub fn new(levels: u32) -> Result<Self> {
        if levels == 0 || levels > 12 {
            return Err(AugmentError::InvalidArgument(format!(
                "a recursive mosaic needs 1..=12 levels, got {levels}"
            )));
        }
        Ok(Self { levels })
    }

    /// Cells per side of the finest level.
    pub fn grid(&self) -> usize {
        1 << self.levels
    }

    /// Draws the mosaic's permutation on the finest grid.
    pub fn permutation(&self, rng: &mut impl Rng) -> Permutation {
        let g = self.grid();
        let mut layout: Vec<u32> = (0..(g * g) as u32).collect();
        let mut quads = QUADRANTS;
        let (mut top, mut left, mut size) = (0usize, 0usize, g);
        for _ in 0..self.levels {
            size /= 2;
            quads.shuffle(rng);
            // Swapping quadrant (0,0) of the region with each quadrant in shuffled order is a 4-cycle.
            for &(qr, qc) in &quads {
                swap_blocks(
                    &mut layout,
                    g,
                    (top, left),
                    (top + qr * size, left + qc * size),
                    size,
                );
            }
            quads.shuffle(rng);
            let (qr, qc) = quads[3];
            top += qr * size;
            left += qc * size;
        }
        Permutation {
            grid: g,
            source_of: layout,
        }
    }

    /// Applies one mosaic to the whole NCHW batch; `2^levels` must divide its height and width.
    pub fn apply(&self, images: &Tensor, rng: &mut impl Rng) -> Result<Destroyed> {
        let (batch, _, h, w) = batch_dims(images, "RecursiveMosaic")?;
        cell_size(self.grid(), h, w)?;
        let permutation = self.permutation(rng);
        Ok(Destroyed {
            images: permute_cells(images, std::slice::from_ref(&permutation))?,
            permutations: vec![permutation; batch],
        })
    }
}

/// Swaps two `size` x `size` blocks of cells of a `g` x `g` layout given their top-left cells.
fn swap_blocks(layout: &mut [u32], g: usize, a: (usize, usize), b: (usize, usize), size: usize) {
    if a == b {
        return;
    }
    for r in 0..size {
        for c in 0..size {
            layout.swap((a.0 + r) * g + a.1 + c, (b.0 + r) * g + b.1 + c);
        }
    }
}
