//! BatchNorm (2-d and 1-d) with PyTorch's train/eval semantics and running-statistics update.
//!
//! The [`BatchNorm`] layer and the functional [`batch_norm`] share one entry ([`functional`]). On the CPU it
//! runs the statistics kernel ([`stats`]), the fused normalise-add-activate op ([`apply`]) and its two-pass
//! backward ([`grad`]), or the conv+BN op ([`conv_bn`]), all over one plane walk ([`planes`]); elsewhere the
//! composite of candle's ops ([`composite`]). In a data-parallel run, [`with_sync_batch_norm`] takes training
//! statistics over every process' batch ([`sync`]).

mod apply;
mod composite;
mod config;
mod conv_bn;
mod functional;
mod grad;
mod layer;
mod planes;
mod stats;
mod sync;

pub use config::BatchNormConfig;
pub use functional::batch_norm;
pub use layer::BatchNorm;
pub use sync::with_sync_batch_norm;
