//! Limits for reading untrusted weight files: fallible allocation, and the caps that keep what a file
//! can make the reader build proportional to the file's size.
//!
//! Every length a file declares is checked against the bytes actually left in it before anything is
//! allocated; what can legitimately be large is allocated with `try_reserve`, so a failed allocation is an
//! error rather than an abort.

use std::collections::TryReserveError;

/// The pickle interpreter's work budget, in copied values, per byte of pickle (plus [`WORK_SLACK`]).
///
/// A real checkpoint copies each value it builds about once (Python 2's `OrderedDict([[k, v], ...])`
/// copies its list of pairs); a hostile one that reuses a memoised list in a thousand calls would copy it
/// a thousand times. The budget turns that quadratic growth into an error.
pub(crate) const WORK_PER_BYTE: u64 = 4;

/// Work every pickle may do regardless of its size.
pub(crate) const WORK_SLACK: u64 = 1 << 16;

/// The tensors read from one file may hold at most this many times the file's bytes (plus
/// [`OUTPUT_SLACK`]). Tensors are views of storages, which lie in the file; a real checkpoint views each
/// storage once (tied weights twice), while a hostile one can view one storage from thousands of tensors.
pub(crate) const OUTPUT_PER_FILE_BYTE: u64 = 4;

/// Tensor bytes every file may produce regardless of its size.
pub(crate) const OUTPUT_SLACK: u64 = 1 << 20;

/// An empty vector with room for `n` elements, or the allocation error (never an abort).
pub(crate) fn try_with_capacity<T>(n: usize) -> Result<Vec<T>, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)?;
    Ok(v)
}

/// A budget that is spent and checked: `take(n)` fails once more than the initial amount is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    left: u64,
}

impl Budget {
    /// A budget of `total` units.
    pub(crate) fn new(total: u64) -> Self {
        Budget { left: total }
    }

    /// Spends `n` units; `false` (and nothing spent) when fewer are left.
    pub(crate) fn take(&mut self, n: u64) -> bool {
        match self.left.checked_sub(n) {
            Some(rest) => {
                self.left = rest;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_allocation_is_an_error() {
        assert!(try_with_capacity::<u8>(usize::MAX).is_err());
        assert!(try_with_capacity::<u64>(usize::MAX / 16).is_err());
        assert!(try_with_capacity::<u8>(3).unwrap().capacity() >= 3);
    }

    #[test]
    fn a_budget_refuses_what_it_does_not_have() {
        let mut b = Budget::new(10);
        assert!(b.take(7));
        assert!(!b.take(4));
        assert!(b.take(3));
        assert!(!b.take(1));
    }
}
