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

/// The precision of the CPU convolutions' products (`fgvc_ops::Precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 operands and sums (the default).
    #[default]
    F32,
    /// bf16 operands (rounded to nearest even) with f32 sums and results, on CPUs with AMX or AVX512_BF16:
    /// weights, optimiser state, BatchNorm statistics and the loss stay f32.
    Bf16,
}

impl From<Precision> for fgvc_ops::Precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => fgvc_ops::Precision::F32,
            Precision::Bf16 => fgvc_ops::Precision::Bf16,
        }
    }
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
    /// The precision of the convolutions' products on the CPU: `f32`, or `bf16` (mixed precision: bf16
    /// operands, f32 sums, everything else f32), refused on CPUs without AMX or AVX512_BF16 and on other
    /// devices (CUDA convolutions use TF32, `FGVC_TF32`).
    #[serde(default)]
    pub precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty [train] section is valid")
    }
}
