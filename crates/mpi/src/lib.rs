//! # fgvc-mpi
//!
//! The MPI engine of [`fgvc_distributed`]: [`init`] joins the processes `mpirun` started and returns their
//! [`Group`], whose collectives are Open MPI's (`MPI_Allreduce`, `MPI_Bcast`, `MPI_Barrier`), each watched by
//! a [`fgvc_distributed::Watchdog`].
//!
//! The engine is behind this crate's `mpi` feature, which needs an MPI installation to build (Debian:
//! `apt-get install libopenmpi-dev openmpi-bin libclang-dev`). Without it, [`init`] is an error saying so.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! // Under `mpirun -np 2 ...`: rank 0 and rank 1 of 2.
//! let group = fgvc_mpi::init(Duration::from_secs(600))?;
//! let mut v = [group.rank() as f64];
//! group.sum_f64(&mut v)?;
//! assert_eq!(v[0], 1.0);
//! # Ok::<(), fgvc_distributed::DistError>(())
//! ```
#![warn(missing_docs)]

use std::time::Duration;

use fgvc_distributed::{DistError, Group};

#[cfg(feature = "mpi")]
mod engine;

#[cfg(feature = "mpi")]
pub use engine::Mpi;

/// Whether this build has the MPI engine (the `mpi` feature).
pub const AVAILABLE: bool = cfg!(feature = "mpi");

/// Joins the MPI job this process was started in (by `mpirun -np N`) and returns its group, each collective
/// watched with `timeout`. A process started without `mpirun` is a job of one. Call once per process; the
/// job ends when the last clone of the group is dropped.
pub fn init(timeout: Duration) -> Result<Group, DistError> {
    #[cfg(feature = "mpi")]
    {
        engine::Mpi::init(timeout).map(|m| Group::new(std::sync::Arc::new(m)))
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = timeout;
        Err(DistError::Engine {
            engine: "mpi".into(),
            message: "this build has no MPI engine: rebuild with the `mpi` feature (`cargo build --release \
                      -p fgvc-cli --features mpi`), which needs Open MPI (Debian: `apt-get install \
                      libopenmpi-dev openmpi-bin libclang-dev`)"
                .into(),
        })
    }
}

/// The variables MPI launchers (Open MPI's `mpirun`, PMIx, PMI as `srun` sets it) give each process its
/// rank in.
const RANK_VARIABLES: [&str; 3] = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"];

/// This process' rank in an MPI job, from the environment its launcher set, without initialising MPI (so a
/// program can pick its log level before it joins the job). `None` outside a launcher.
pub fn rank_from_env() -> Option<usize> {
    RANK_VARIABLES
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, `srun` with PMI), judged from
/// the environment those launchers set, without initialising MPI.
pub fn launched_by_mpirun() -> bool {
    rank_from_env().is_some()
}
