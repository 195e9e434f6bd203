//! [`Mpi`]: the [`Collective`] over rsmpi's world communicator.

use std::sync::Mutex;
use std::time::Duration;

use fgvc_distributed::{Collective, DistError, Result, Watchdog};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

/// The processes of an MPI job, as one [`Collective`].
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// One MPI call at a time (MPI is initialised with `MPI_THREAD_SERIALIZED`).
    lock: Mutex<()>,
    watchdog: Watchdog,
    /// Finalises MPI when dropped, after the communicator.
    _universe: Universe,
}

// SAFETY: MPI is initialised at `MPI_THREAD_SERIALIZED` (or refused below a level that allows calls from
// any one thread at a time), and every call through `Mpi` holds `lock`, so no two threads are ever inside
// MPI at once.
unsafe impl Send for Mpi {}
// SAFETY: as above; `&Mpi` only reaches MPI under `lock`.
unsafe impl Sync for Mpi {}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank, self.size)
    }
}

impl Mpi {
    /// Initialises MPI for this process (once) and starts the watchdog.
    pub fn init(timeout: Duration) -> Result<Self> {
        let engine_err = |message: String| DistError::Engine {
            engine: "mpi".into(),
            message,
        };
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| engine_err("MPI is already initialised in this process".into()))?;
        if threading < Threading::Serialized {
            tracing::warn!(
                "the MPI library provides {threading:?} threading; fgvc calls it from one thread at a time"
            );
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let watchdog = Watchdog::start(rank, timeout)
            .map_err(|e| engine_err(format!("cannot start the watchdog thread: {e}")))?;
        Ok(Mpi {
            world,
            rank,
            size,
            lock: Mutex::new(()),
            watchdog,
            _universe: universe,
        })
    }

    /// The name of the machine this rank runs on, as MPI reports it.
    pub fn processor_name(&self) -> String {
        let _l = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
    }

    fn call<R>(&self, what: &str, f: impl FnOnce() -> R) -> R {
        let _l = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _watch = self.watchdog.guard(what);
        f()
    }
}

impl Collective for Mpi {
    fn engine(&self) -> &str {
        "mpi"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.call(
            &format!("an all-reduce of {} f32 values", buf.len()),
            || {
                self.world
                    .all_reduce_into(&send[..], buf, SystemOperation::sum())
            },
        );
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.call(
            &format!("an all-reduce of {} f64 values", buf.len()),
            || {
                self.world
                    .all_reduce_into(&send[..], buf, SystemOperation::sum())
            },
        );
        Ok(())
    }

    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        if root >= self.size {
            return Err(DistError::Mismatch(format!(
                "broadcast from rank {root} in a group of {}",
                self.size
            )));
        }
        self.call("a broadcast", || {
            let process = self.world.process_at_rank(root as i32);
            let mut len = buf.len() as u64;
            process.broadcast_into(&mut len);
            buf.resize(len as usize, 0);
            if len > 0 {
                process.broadcast_into(&mut buf[..]);
            }
        });
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.call("a barrier", || self.world.barrier());
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
