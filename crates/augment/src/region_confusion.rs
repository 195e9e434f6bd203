//! DCL's region confusion mechanism (RCM): cut each image into `n` x `n` regions and shuffle them within a
//! local neighbourhood, destroying global structure while keeping local detail (Chen et al., CVPR 2019).

use candle_core::{DType, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cells::{batch_dims, cell_channel_sums, cell_size, permute_cells, Destroyed};
use crate::{AugmentError, Permutation, Result};

/// Which RCM shuffle to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RcmMode {
    /// The paper: every row is reordered by `argsort(i + U(-k, k))`, then every column likewise, so each
    /// region moves less than `2k` cells along each axis.
    Paper,
    /// The official code (`transforms/functional.py::swap`): walking regions in row-major order, the last two
    /// regions of the current row are swapped with probability 1/2 after every step, and the last two
    /// completed rows are swapped (as whole rows) with probability 1/2 after every step. Regions move at
    /// most one cell left or up but any distance right or down; `k` plays no part, as in the code.
    #[default]
    Official,
}

/// Shuffles `n` x `n` regions of every image, one permutation per image.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fgvc_augment::{RcmMode, RegionConfusion};
/// use rand::SeedableRng;
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
/// let images = Tensor::rand(0f32, 1., (4, 3, 28, 28), &Device::Cpu)?;
/// let rcm = RegionConfusion::new(7, 2, RcmMode::Paper)?;
/// let out = rcm.apply(&images, &mut rng)?;
/// for p in &out.permutations {
///     for cell in 0..49 {
///         let (dr, dc) = p.displacement(cell);
///         assert!(dr.abs() < 4 && dc.abs() < 4); // |displacement| < 2k
///     }
/// }
/// // The region-alignment target of the paper: each region's original index.
/// let law = RegionConfusion::exact_law(&out.permutations, images.device())?;
/// assert_eq!(law.dims(), &[4, 49]);
/// # Ok::<(), fgvc_augment::AugmentError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionConfusion {
    /// Regions per side (`N`; DCL uses 7, and 2 for FGVC-Aircraft).
    pub n: usize,
    /// Neighbourhood size (`k`, 1 <= k < n; the paper's best is 2).
    pub k: usize,
    /// Which shuffle to draw.
    #[serde(default)]
    pub mode: RcmMode,
}

impl RegionConfusion {
    /// RCM with `n` x `n` regions and neighbourhood `k`; an error unless `1 <= k < n`.
    pub fn new(n: usize, k: usize, mode: RcmMode) -> Result<Self> {
        if n < 2 {
            return Err(AugmentError::InvalidArgument(format!(
                "region confusion needs at least 2 regions per side, got {n}"
            )));
        }
        if k == 0 || k >= n {
            return Err(AugmentError::NeighbourhoodTooLarge { k, n });
        }
        Ok(Self { n, k, mode })
    }

    /// Draws one permutation in the configured mode.
    pub fn permutation(&self, rng: &mut impl Rng) -> Permutation {
        match self.mode {
            RcmMode::Paper => self.paper_permutation(rng),
            RcmMode::Official => self.official_permutation(rng),
        }
    }

    /// The paper's bounded shuffle: rows by `argsort(i + U(-k, k))`, then columns of the result likewise.
    ///
    /// The paper writes both moves as one map `(i, j) -> (σ_row(i), σ_col(j))`, which is not a permutation
    /// in general (two regions can claim one cell); applying the row and then the column shuffle is the usual
    /// reading and keeps the `< 2k` bound on both axes.
    pub fn paper_permutation(&self, rng: &mut impl Rng) -> Permutation {
        let n = self.n;
        let k = self.k as f64;
        let mut layout: Vec<u32> = (0..(n * n) as u32).collect();
        let mut keys: Vec<(f64, usize)> = Vec::with_capacity(n);
        let mut line = vec![0u32; n];
        // Pass 0 reorders each row (stride 1), pass 1 each column (stride n).
        for (outer_stride, inner_stride) in [(n, 1), (1, n)] {
            for l in 0..n {
                keys.clear();
                keys.extend((0..n).map(|i| (i as f64 + rng.random_range(-k..k), i)));
                keys.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (p, &(_, i)) in keys.iter().enumerate() {
                    line[p] = layout[l * outer_stride + i * inner_stride];
                }
                for (p, &v) in line.iter().enumerate() {
                    layout[l * outer_stride + p * inner_stride] = v;
                }
            }
        }
        Permutation {
            grid: n,
            source_of: layout,
        }
    }

    /// The official code's adjacent-pair shuffle with whole-row moves (see [`RcmMode::Official`]).
    pub fn official_permutation(&self, rng: &mut impl Rng) -> Permutation {
        let n = self.n;
        let mut rows: Vec<Vec<u32>> = Vec::with_capacity(n);
        let mut row: Vec<u32> = Vec::with_capacity(n);
        for cell in 0..(n * n) as u32 {
            row.push(cell);
            let len = row.len();
            row[len.saturating_sub(2)..].shuffle(rng);
            if len == n {
                rows.push(std::mem::take(&mut row));
            }
            if !rows.is_empty() {
                let len = rows.len();
                rows[len.saturating_sub(2)..].shuffle(rng);
            }
        }
        Permutation {
            grid: n,
            source_of: rows.concat(),
        }
    }

    /// Shuffles the regions of every image of an NCHW batch, each with its own permutation.
    pub fn apply(&self, images: &Tensor, rng: &mut impl Rng) -> Result<Destroyed> {
        let (batch, _, h, w) = batch_dims(images, "RegionConfusion")?;
        cell_size(self.n, h, w)?;
        let permutations: Vec<Permutation> = (0..batch).map(|_| self.permutation(rng)).collect();
        Ok(Destroyed {
            images: permute_cells(images, &permutations)?,
            permutations,
        })
    }

    /// The region-alignment target with the true permutation: for each region of each destroyed image, its
    /// original row-major index `q`, normalised as in the official code, `(q - n²/2) / n²` (integer halving).
    /// `[N, n*n]` f32. For undestroyed images pass [`Permutation::identity`].
    pub fn exact_law(permutations: &[Permutation], device: &candle_core::Device) -> Result<Tensor> {
        let Some(first) = permutations.first() else {
            return Err(AugmentError::EmptyBatch {
                what: "RegionConfusion::exact_law",
            });
        };
        let cells = first.len();
        let (half, scale) = ((cells / 2) as f32, cells as f32);
        let mut law = Vec::with_capacity(permutations.len() * cells);
        for p in permutations {
            if p.len() != cells {
                return Err(AugmentError::InvalidArgument(
                    "all permutations must share one grid".into(),
                ));
            }
            law.extend(p.source_of.iter().map(|&q| (q as f32 - half) / scale));
        }
        Ok(Tensor::from_vec(law, (permutations.len(), cells), device)?)
    }

    /// The official code's region-alignment target for destroyed images: each destroyed region is matched to
    /// the original region whose channel-summed mean intensity is closest (first one on ties), then
    /// normalised like [`Self::exact_law`]. A brightness guess, not the true permutation: ties and duplicates
    /// occur, exactly as in the code. Pass images in pixel scale (e.g. [0, 1] or [0, 255], not normalised per
    /// channel), since the code computes it on PIL images.
    pub fn official_law(&self, original: &Tensor, destroyed: &Tensor) -> Result<Tensor> {
        if original.dims() != destroyed.dims() {
            return Err(AugmentError::BadTensor(format!(
                "official_law needs original and destroyed batches of one shape, got {:?} and {:?}",
                original.dims(),
                destroyed.dims()
            )));
        }
        let cells = self.n * self.n;
        let unswapped = cell_channel_sums(original, self.n)?; // [N, cells]
        let swapped = cell_channel_sums(destroyed, self.n)?;
        let distance = swapped
            .unsqueeze(2)?
            .broadcast_sub(&unswapped.unsqueeze(1)?)?
            .abs()?; // [N, cells(destroyed), cells(original)]
        let matched = distance.argmin(2)?.to_dtype(DType::F32)?;
        Ok(matched.affine(1.0 / cells as f64, -((cells / 2) as f64) / cells as f64)?)
    }
}
