//! Cell permutations: what every destruction returns next to the destroyed images, so region-alignment
//! losses can use the true layout and tests can undo it.

use crate::{AugmentError, Result};

/// A permutation of the cells of an `grid` x `grid` tiling, in row-major cell order.
///
/// `source_of[d]` is the cell of the input image that lands in cell `d` of the output.
///
/// ```
/// use fgvc_augment::Permutation;
/// // A 2x2 grid where the four quadrants rotate clockwise.
/// let p = Permutation::new(2, vec![2, 0, 3, 1]).unwrap();
/// assert_eq!(p.inverse().then(&p), Permutation::identity(2));
/// assert_eq!(p.displacement(0), (-1, 0)); // output cell (0,0) shows input cell (1,0): it moved up a row
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permutation {
    /// Cells per side.
    pub grid: usize,
    /// For each output cell (row-major), the input cell it shows.
    pub source_of: Vec<u32>,
}

impl Permutation {
    /// Checks that `source_of` is a permutation of `0..grid*grid`.
    pub fn new(grid: usize, source_of: Vec<u32>) -> Result<Self> {
        let cells = grid * grid;
        if grid == 0 || source_of.len() != cells {
            return Err(AugmentError::InvalidArgument(format!(
                "a permutation of a {grid}x{grid} grid needs {cells} entries, got {}",
                source_of.len()
            )));
        }
        let mut seen = vec![false; cells];
        for &s in &source_of {
            let s = s as usize;
            if s >= cells || std::mem::replace(&mut seen[s], true) {
                return Err(AugmentError::InvalidArgument(format!(
                    "{source_of:?} is not a permutation of 0..{cells}"
                )));
            }
        }
        Ok(Self { grid, source_of })
    }

    /// The permutation that leaves every cell in place.
    pub fn identity(grid: usize) -> Self {
        Self {
            grid,
            source_of: (0..(grid * grid) as u32).collect(),
        }
    }

    /// Number of cells, `grid * grid`.
    pub fn len(&self) -> usize {
        self.source_of.len()
    }

    /// True for an empty grid (never produced by the destructions).
    pub fn is_empty(&self) -> bool {
        self.source_of.is_empty()
    }

    /// The permutation that undoes this one: applying `self` then `self.inverse()` restores the input.
    pub fn inverse(&self) -> Self {
        let mut source_of = vec![0u32; self.len()];
        for (dst, &src) in self.source_of.iter().enumerate() {
            source_of[src as usize] = dst as u32;
        }
        Self {
            grid: self.grid,
            source_of,
        }
    }

    /// The permutation equal to applying `self` first, then `next`.
    pub fn then(&self, next: &Permutation) -> Self {
        Self {
            grid: self.grid,
            source_of: next
                .source_of
                .iter()
                .map(|&s| self.source_of[s as usize])
                .collect(),
        }
    }

    /// For each input cell, the output cell it moved to (the inverse, as a flat table).
    pub fn destination_of(&self) -> Vec<u32> {
        self.inverse().source_of
    }

    /// `(rows, cols)` that the content of output cell `dst` travelled: output position minus input position.
    pub fn displacement(&self, dst: usize) -> (isize, isize) {
        let g = self.grid as isize;
        let (d, s) = (dst as isize, self.source_of[dst] as isize);
        (d / g - s / g, d % g - s % g)
    }

    /// Number of cells that show their own content.
    pub fn fixed_points(&self) -> usize {
        self.source_of
            .iter()
            .enumerate()
            .filter(|&(d, &s)| d == s as usize)
            .count()
    }

    /// Lengths of the permutation's cycles, fixed points included, longest first.
    pub fn cycle_lengths(&self) -> Vec<usize> {
        let mut seen = vec![false; self.len()];
        let mut lengths = Vec::new();
        for start in 0..self.len() {
            let mut len = 0;
            let mut c = start;
            while !seen[c] {
                seen[c] = true;
                c = self.source_of[c] as usize;
                len += 1;
            }
            if len > 0 {
                lengths.push(len);
            }
        }
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths
    }

    /// Refines the permutation onto a grid `factor` times finer: each cell becomes `factor` x `factor` cells
    /// that move together. Lets permutations of different granularity be composed and compared.
    pub fn refine(&self, factor: usize) -> Self {
        let g = self.grid;
        let fine = g * factor;
        let mut source_of = Vec::with_capacity(fine * fine);
        for r in 0..fine {
            for c in 0..fine {
                let s = self.source_of[(r / factor) * g + c / factor] as usize;
                let (sr, sc) = (s / g, s % g);
                source_of
                    .push(((sr * factor + r % factor) * fine + sc * factor + c % factor) as u32);
            }
        }
        Self {
            grid: fine,
            source_of,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_permutations() {
        assert!(Permutation::new(2, vec![0, 1, 2]).is_err());
        assert!(Permutation::new(2, vec![0, 1, 1, 3]).is_err());
        assert!(Permutation::new(2, vec![0, 1, 2, 4]).is_err());
        assert!(Permutation::new(0, vec![]).is_err());
    }

    #[test]
    fn cycles_and_inverse() {
        let p = Permutation::new(2, vec![1, 2, 3, 0]).unwrap();
        assert_eq!(p.cycle_lengths(), vec![4]);
        assert_eq!(p.fixed_points(), 0);
        assert_eq!(p.then(&p.inverse()), Permutation::identity(2));
        let q = Permutation::new(2, vec![1, 0, 2, 3]).unwrap();
        assert_eq!(q.cycle_lengths(), vec![2, 1, 1]);
        assert_eq!(q.fixed_points(), 2);
    }

    #[test]
    fn refine_keeps_blocks_together() {
        let p = Permutation::new(2, vec![3, 2, 1, 0]).unwrap();
        let f = p.refine(2);
        assert_eq!(f.grid, 4);
        // Output cell (0,0) of the fine grid shows input (2,2), the top-left of quadrant 3.
        assert_eq!(f.source_of[0], 10);
        assert_eq!(f.source_of[5], 15);
        Permutation::new(4, f.source_of.clone()).unwrap();
    }
}
