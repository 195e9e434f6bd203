//! PMG's jigsaw puzzle generator: cut each image into `n` x `n` patches and shuffle them, so a training step
//! at granularity `n` can only rely on parts no larger than a patch.

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cells::{batch_dims, cell_size, permute_cells, Destroyed};
use crate::{AugmentError, Permutation, Result};

/// How jigsaw permutations are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JigsawMode {
    /// The official `jigsaw_generator`: one permutation for the whole batch, built by swapping cell (0,0) with
    /// every cell in a shuffled order. The result is always a single `n*n`-cycle: no patch stays in place.
    #[default]
    Official,
    /// An independent uniformly random permutation per image (patches may stay in place).
    PerImage,
}

/// Shuffles `n` x `n` patches of every image (PMG, Du et al. 2020).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fgvc_augment::Jigsaw;
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let images = Tensor::rand(0f32, 1., (2, 3, 32, 32), &Device::Cpu)?;
/// let out = Jigsaw::new(4)?.apply(&images, &mut rng)?;
/// assert_eq!(out.permutations[0].cycle_lengths(), vec![16]); // official mode: one 16-cycle
/// assert_eq!(out.permutations[0], out.permutations[1]);      // shared by the batch
/// let back = out.restore()?;
/// assert_eq!(back.sub(&images)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jigsaw {
    /// Patches per side.
    pub n: usize,
    /// How permutations are drawn.
    #[serde(default)]
    pub mode: JigsawMode,
}

impl Jigsaw {
    /// The official jigsaw with `n` x `n` patches (PMG uses 8, 4 and 2).
    pub fn new(n: usize) -> Result<Self> {
        Self::with_mode(n, JigsawMode::Official)
    }

    /// A jigsaw with the given permutation mode.
    pub fn with_mode(n: usize, mode: JigsawMode) -> Result<Self> {
        if n == 0 {
            return Err(AugmentError::InvalidArgument(
                "a jigsaw needs at least one patch per side".into(),
            ));
        }
        Ok(Self { n, mode })
    }

    /// Draws the permutation the official generator builds: swap cell 0 with each cell in shuffled order.
    pub fn official_permutation(&self, rng: &mut impl Rng) -> Permutation {
        let cells = self.n * self.n;
        let mut order: Vec<usize> = (0..cells).collect();
        order.shuffle(rng);
        let mut layout: Vec<u32> = (0..cells as u32).collect();
        for cell in order {
            layout.swap(0, cell);
        }
        Permutation {
            grid: self.n,
            source_of: layout,
        }
    }

    /// Draws a uniformly random permutation of the cells.
    pub fn uniform_permutation(&self, rng: &mut impl Rng) -> Permutation {
        let mut source_of: Vec<u32> = (0..(self.n * self.n) as u32).collect();
        source_of.shuffle(rng);
        Permutation {
            grid: self.n,
            source_of,
        }
    }

    /// Shuffles the patches of an NCHW batch; `n` must divide its height and width.
    pub fn apply(&self, images: &Tensor, rng: &mut impl Rng) -> Result<Destroyed> {
        let (batch, _, h, w) = batch_dims(images, "Jigsaw")?;
        cell_size(self.n, h, w)?;
        let drawn: Vec<Permutation> = match self.mode {
            JigsawMode::Official => vec![self.official_permutation(rng)],
            JigsawMode::PerImage => (0..batch).map(|_| self.uniform_permutation(rng)).collect(),
        };
        Ok(Destroyed {
            images: permute_cells(images, &drawn)?,
            permutations: if drawn.len() == batch {
                drawn
            } else {
                vec![drawn[0].clone(); batch]
            },
        })
    }
}
