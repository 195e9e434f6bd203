//! `[train]`: epochs, checkpoints, logging and model selection.

use serde::{Deserialize, Serialize};

/// Which evaluation picks `best.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The best top-1 on the validation split (the principled protocol; the default).
    #[default]
    Val,
    /// The best top-1 on the test split: the protocol of the PMG, DCL and RMG-PMSI papers. It overstates
    /// accuracy; outputs label it `best-on-test`.
    BestOnTest,
    /// The last epoch, no selection.
    Last,
}

fn default_epochs() -> usize {
    10
}
fn default_log_every() -> u64 {
    10
}
fn default_true() -> bool {
    true
}

/// `[train]`: the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs to train.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Also checkpoint every this many batch steps (0: only at the end of each epoch).
    #[serde(default)]
    pub checkpoint_every_steps: u64,
    /// Log a training record every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every_steps: u64,
    /// Model selection.
    #[serde(default)]
    pub select: Selection,
    /// Evaluate the test split at the end with the selected weights.
    #[serde(default = "default_true")]
    pub final_test: bool,
    /// CPU threads for tensor operations (0: candle's default, all cores). Fix it for bit-exact resumes
    /// across machines: GEMM summation order depends on the thread count.
    #[serde(default)]
    pub threads: usize,
    /// Log every metric, the augmentation preview and evaluation images to TensorBoard event files in
    /// `<run>/tb/` (a directory that cannot be written is a warning, not a failed run).
    #[serde(default = "default_true")]
    pub tensorboard: bool,
    /// In a data-parallel run (`fgvc train --distributed`), BatchNorm's training statistics over the global
    /// batch of every process (PyTorch's `SyncBatchNorm`) rather than each process' own batch (DDP's
    /// default). No effect in a single process.
    #[serde(default)]
    pub sync_batch_norm: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty [train] section is valid")
    }
}
