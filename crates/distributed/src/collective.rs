//! The collective operations an engine provides ([`Collective`]) and the handle the trainer holds
//! ([`Group`]).

use std::fmt;
use std::sync::Arc;

use crate::error::Result;

/// The operations data-parallel training needs from a communication engine. Every rank calls each
/// operation in the same order with buffers of the same length; the engine blocks until all have.
///
/// Implementations: [`Local`] (one process), `fgvc_mpi::Mpi` (Open MPI through rsmpi).
pub trait Collective: Send + Sync {
    /// The engine's name, for messages (`mpi`, `local`).
    fn engine(&self) -> &str;
    /// This process' rank, `0..world_size`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn world_size(&self) -> usize;
    /// Replaces `buf` with its element-wise sum over the ranks.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// Replaces `buf` with its element-wise sum over the ranks (counts, statistics in double precision).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Replaces `buf` on every rank with rank `root`'s (whose length may differ from the others').
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends every process of the group with exit code `code` (after an error on this rank, so that the
    /// others do not wait for it in their next collective).
    fn abort(&self, code: i32) -> !;
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Collective for Local {
    fn engine(&self) -> &str {
        "local"
    }
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _root: usize, _buf: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The process group a run trains in: a shared [`Collective`] with the helpers the trainer uses.
#[derive(Clone)]
pub struct Group(Arc<dyn Collective>);

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Group({}, rank {} of {})",
            self.0.engine(),
            self.rank(),
            self.world_size()
        )
    }
}

impl Default for Group {
    fn default() -> Self {
        Group::local()
    }
}

impl Group {
    /// The group of one process.
    pub fn local() -> Self {
        Group(Arc::new(Local))
    }

    /// The group over `engine`.
    pub fn new(engine: Arc<dyn Collective>) -> Self {
        Group(engine)
    }

    /// The engine.
    pub fn collective(&self) -> &dyn Collective {
        &*self.0
    }

    /// This process' rank.
    pub fn rank(&self) -> usize {
        self.0.rank()
    }

    /// The number of processes.
    pub fn world_size(&self) -> usize {
        self.0.world_size()
    }

    /// Whether there is more than one process (every collective would otherwise be the identity).
    pub fn is_distributed(&self) -> bool {
        self.world_size() > 1
    }

    /// Whether this is rank 0, the one that writes the run's files.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Whether `value` holds on every rank.
    pub fn all(&self, value: bool) -> Result<bool> {
        Ok(self.count(!value)? == 0)
    }

    /// How many ranks have `value` set.
    pub fn count(&self, value: bool) -> Result<usize> {
        let mut buf = [f64::from(u8::from(value))];
        self.0.all_reduce_sum_f64(&mut buf)?;
        Ok(buf[0].round() as usize)
    }

    /// The element-wise sum of `buf` over the ranks, in place.
    pub fn sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        if self.is_distributed() {
            self.0.all_reduce_sum_f64(buf)?;
        }
        Ok(())
    }

    /// The element-wise sum of `buf` over the ranks, in place.
    pub fn sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        if self.is_distributed() {
            self.0.all_reduce_sum_f32(buf)?;
        }
        Ok(())
    }

    /// Rank `root`'s bytes on every rank.
    pub fn broadcast(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        self.0.broadcast_bytes(root, buf)
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<()> {
        self.0.barrier()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_group_is_one_process_of_identities() -> Result<()> {
        let g = Group::local();
        assert_eq!((g.rank(), g.world_size()), (0, 1));
        assert!(g.is_main() && !g.is_distributed());
        assert!(g.all(true)? && !g.all(false)?);
        assert_eq!(g.count(true)?, 1);
        let mut v = [1.5, 2.5];
        g.sum_f64(&mut v)?;
        assert_eq!(v, [1.5, 2.5]);
        let mut b = vec![1, 2, 3];
        g.broadcast(0, &mut b)?;
        assert_eq!(b, [1, 2, 3]);
        assert_eq!(format!("{g:?}"), "Group(local, rank 0 of 1)");
        Ok(())
    }
}
