//! The error type of `fgvc-augment`: every bad argument is an error that says what is wrong, never a panic.

/// Errors raised by destructions and transforms.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    /// A grid of `n` x `n` cells does not tile an image of the given size.
    #[error("a {n}x{n} grid does not divide a {height}x{width} image: height and width must be multiples of {n}")]
    GridDoesNotDivide {
        /// Cells per side.
        n: usize,
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
    },
    /// Region confusion's neighbourhood must be smaller than the grid.
    #[error("region confusion needs 1 <= k < n, got k = {k} with n = {n}")]
    NeighbourhoodTooLarge {
        /// Neighbourhood size.
        k: usize,
        /// Cells per side.
        n: usize,
    },
    /// A batch with no images.
    #[error("empty batch: {what} needs at least one image")]
    EmptyBatch {
        /// The operation that was given the empty batch.
        what: &'static str,
    },
    /// A tensor of the wrong rank, channel count or dtype.
    #[error("bad input tensor: {0}")]
    BadTensor(String),
    /// Any other bad argument, with a message that says which and why.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An image encoding or decoding error, with the file it concerns when there is one.
    #[error("image error{}: {source}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Image {
        /// The file, when the image came from or goes to one.
        path: Option<std::path::PathBuf>,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, AugmentError>;
