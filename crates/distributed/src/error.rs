//! The errors of collective operations.

/// What can go wrong in a collective operation.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The engine reported a failure (or refused the operation).
    #[error("{engine}: {message}")]
    Engine {
        /// `mpi`, `local`.
        engine: String,
        /// What failed.
        message: String,
    },
    /// The ranks disagree on something that must be equal everywhere (a buffer's length, a world size).
    #[error("distributed: {0}")]
    Mismatch(String),
    /// A tensor operation around the collective failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The result of a collective operation.
pub type Result<T> = std::result::Result<T, DistError>;
