//! [`Shard`]: the part of every epoch one process of a data-parallel run reads, so that the processes
//! together read what one process would, each sample once.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Process `rank` of `world` processes. The whole epoch for `world = 1` (the default).
///
/// Training (`drop_last`): the epoch's seeded order is cut into global batches of `world × batch_size`
/// consecutive samples, and rank `r` reads the `r`-th run of `batch_size` in each. The ranks' batches of a
/// step are therefore exactly the one batch of `world × batch_size` a single process would train on, and
/// the short remainder (fewer than `world × batch_size` samples) is dropped on every rank. Evaluation
/// (every sample kept): rank `r` reads the `r`-th of `world` contiguous, nearly equal slices of the order.
///
/// ```
/// use fgvc_data::Shard;
///
/// let order: Vec<usize> = (0..10).collect();
/// let rank1 = Shard::new(1, 2)?;
/// assert_eq!(rank1.select(&order, 2, true), [2, 3, 6, 7]); // global batches [0..4), [4..8); 8, 9 dropped
/// assert_eq!(rank1.select(&order, 2, false), [5, 6, 7, 8, 9]);
/// # Ok::<(), fgvc_data::DataError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// This process, `0..world`.
    pub rank: usize,
    /// The number of processes.
    pub world: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { rank: 0, world: 1 }
    }
}

impl Shard {
    /// Process `rank` of `world`; an error unless `rank < world`.
    pub fn new(rank: usize, world: usize) -> Result<Self> {
        let shard = Shard { rank, world };
        shard.validate()?;
        Ok(shard)
    }

    /// Checks `rank < world`.
    pub fn validate(&self) -> Result<()> {
        if self.rank >= self.world {
            return Err(DataError::Config(format!(
                "shard: rank {} of {} processes (the rank must be below the number of processes)",
                self.rank, self.world
            )));
        }
        Ok(())
    }

    /// The samples of `order` this rank reads, in order (see [`Shard`]). One process reads the whole order,
    /// remainder included (the loader drops a short last batch itself, after refilling batches that lost
    /// bad samples from it).
    pub fn select(&self, order: &[usize], batch_size: usize, drop_last: bool) -> Vec<usize> {
        if self.world <= 1 {
            return order.to_vec();
        }
        if drop_last {
            let global = self.world * batch_size;
            order
                .chunks_exact(global)
                .flat_map(|g| &g[self.rank * batch_size..(self.rank + 1) * batch_size])
                .copied()
                .collect()
        } else {
            let (start, end) = self.slice(order.len());
            order[start..end].to_vec()
        }
    }

    /// How many samples this rank reads of an epoch of `len`.
    pub fn len(&self, len: usize, batch_size: usize, drop_last: bool) -> usize {
        if drop_last {
            len / (self.world * batch_size) * batch_size
        } else {
            let (start, end) = self.slice(len);
            end - start
        }
    }

    /// Whether this rank reads nothing of an epoch of `len`.
    pub fn is_empty(&self, len: usize, batch_size: usize, drop_last: bool) -> bool {
        self.len(len, batch_size, drop_last) == 0
    }

    /// The evaluation slice `[start, end)` of rank `rank` in an order of `len`.
    fn slice(&self, len: usize) -> (usize, usize) {
        let at = |r: usize| r * len / self.world;
        (at(self.rank), at(self.rank + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranks_read_each_sample_once_and_training_ranks_make_the_single_process_batches() {
        let order: Vec<usize> = (0..23).rev().collect();
        for world in 1..=4 {
            let shards: Vec<Shard> = (0..world).map(|r| Shard::new(r, world).unwrap()).collect();
            // Evaluation: a partition of the order.
            let mut all: Vec<usize> = shards
                .iter()
                .flat_map(|s| s.select(&order, 3, false))
                .collect();
            all.sort();
            assert_eq!(all, (0..23).collect::<Vec<_>>());
            // Training: step k of every rank together is batch k of one process with world × 3.
            let parts: Vec<Vec<usize>> = shards.iter().map(|s| s.select(&order, 3, true)).collect();
            let single: Vec<&[usize]> = order.chunks_exact(3 * world).collect();
            for (k, batch) in single.iter().enumerate() {
                let step: Vec<usize> = parts
                    .iter()
                    .flat_map(|p| p[3 * k..3 * k + 3].to_vec())
                    .collect();
                assert_eq!(step, *batch);
            }
            for (s, p) in shards.iter().zip(&parts).filter(|_| world > 1) {
                assert_eq!(p.len(), single.len() * 3);
                assert_eq!(s.len(23, 3, true), p.len());
                assert_eq!(s.len(23, 3, false), s.select(&order, 3, false).len());
            }
        }
        assert!(Shard::new(2, 2).is_err());
    }
}
