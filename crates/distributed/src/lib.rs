//! # fgvc-distributed
//!
//! Data-parallel training, one process per device, over an established communication engine: MPI (the
//! `fgvc-mpi` crate, over the system's Open MPI) across CPU processes and machines. fgvc never implements a
//! network all-reduce of its own; this crate is the narrow interface the trainer and the ops use:
//!
//! * [`Collective`]: the operations an engine provides (sum all-reduce, broadcast, barrier, abort), and
//!   [`Group`], the handle the trainer holds ([`Group::local`] for one process, where every operation is the
//!   identity; [`in_process`] for ranks as threads of one process, as the tests use).
//! * [`all_reduce_mean`]: gradients averaged over the ranks in flat buckets, one all-reduce per bucket
//!   ([`DEFAULT_BUCKET_BYTES`], as PyTorch DDP's `bucket_cap_mb`).
//! * [`all_reduce_sum`]: a differentiable all-reduce of a tensor (its backward all-reduces the gradient),
//!   from which synchronised BatchNorm builds its global statistics.
//! * [`Watchdog`]: a collective that does not complete within the timeout (a rank died, a machine fell off
//!   the network) ends the process with an error naming the operation, rather than hanging forever.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use fgvc_distributed::{all_reduce_mean, Group};
//!
//! // One process: the mean over one rank is the gradient itself.
//! let group = Group::local();
//! let g = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?;
//! let reduced = all_reduce_mean(&group, &[Some(g), None], 1 << 20)?;
//! assert_eq!(reduced[0].as_ref().unwrap().to_vec1::<f32>()?, [1., 2., 3.]);
//! assert!(reduced[1].is_none());
//! # Ok::<(), fgvc_distributed::DistError>(())
//! ```
#![warn(missing_docs)]

mod autograd;
mod buckets;
mod collective;
mod error;
mod in_process;
mod watchdog;

pub use autograd::all_reduce_sum;
pub use buckets::{all_reduce_mean, DEFAULT_BUCKET_BYTES};
pub use collective::{Collective, Group, Local};
pub use error::{DistError, Result};
pub use in_process::{in_process, InProcess};
pub use watchdog::{Watchdog, WatchdogGuard, EXIT_TIMEOUT};
