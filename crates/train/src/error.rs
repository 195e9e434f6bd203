//! The error type of the training engine.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, training, evaluating or checkpointing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The dataset or loader failed (boxed: data errors are large and every result carries the variant).
    #[error(transparent)]
    Data(Box<fgvc_data::DataError>),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration is invalid: `origin` is the file (or `--set`) and `key` the dotted key path.
    #[error("{origin}: {key}: {message}")]
    Config {
        /// Where the value came from: a file path, `--set` or `the embedded default config`.
        origin: String,
        /// Dotted key path (`optim.lr`); empty when the error concerns the whole document.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint cannot be written, read or applied.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The loss became NaN or infinite; training stopped and the last checkpoint was left as it was.
    #[error(
        "the loss is {value} at epoch {epoch}, step {step}; training stopped. The last good checkpoint is \
         intact: lower the learning rate or enable gradient clipping (optim.clip_grad_norm) and resume or restart"
    )]
    NonFiniteLoss {
        /// Epoch (0-based) of the failing step.
        epoch: usize,
        /// Global batch step (0-based) of the failing step.
        step: u64,
        /// The value (NaN or ±inf).
        value: f64,
    },
    /// A gradient had a NaN or infinite element while the loss was finite (a 0/0 in a backward pass, or an
    /// overflow); training stopped before the update, so the weights and the last checkpoint are intact.
    #[error(
        "the gradient of {parameter} has a NaN or infinite element at epoch {epoch}, step {step} (the loss \
         was finite); training stopped before the update and the last good checkpoint is intact. A backward \
         pass divided by zero (a sqrt or log at 0) or overflowed: lower the learning rate, or check the \
         method's inputs"
    )]
    NonFiniteGradient {
        /// Epoch (0-based) of the failing step.
        epoch: usize,
        /// Global batch step (0-based) of the failing step.
        step: u64,
        /// The parameter whose gradient is not finite (the first one found).
        parameter: String,
    },
    /// Training stopped on request (a test's injected abort after a number of steps).
    #[error("training stopped on request after {step} steps")]
    Stopped {
        /// Global batch steps completed.
        step: u64,
    },
    /// The model cannot be exported to ONNX (an operation without an ONNX form, a method without an export).
    #[error(transparent)]
    Export(#[from] fgvc_onnx::ExportError),
    /// A collective operation of a data-parallel run failed, or the ranks disagree.
    #[error(transparent)]
    Distributed(#[from] fgvc_distributed::DistError),
    /// Anything else, with a message.
    #[error("{0}")]
    Msg(String),
}

impl From<fgvc_data::DataError> for TrainError {
    fn from(e: fgvc_data::DataError) -> Self {
        TrainError::Data(Box::new(e))
    }
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint error on `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The result type of the training engine.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
