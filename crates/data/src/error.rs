//! The error type of `fgvc-data`. Every error that concerns a file names it; a dataset root that does not
//! look like the dataset says which file is missing and how to get it.

use std::path::PathBuf;

/// Errors raised while opening datasets, decoding images and building batches.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image file exists but cannot be decoded (corrupt, truncated or of an unsupported format).
    #[error("cannot decode image {}: {source}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// An image whose header claims more pixels than the limit ([`crate::set_max_image_pixels`]); nothing of
    /// it was decoded.
    #[error(
        "image {} claims {width}x{height} = {} pixels, more than the limit of {limit} pixels (a \
         decompression bomb, or a huge photo); nothing was decoded. If the file is trusted, raise the limit: \
         data.max_image_pixels in the configuration, --max-image-pixels on the command line, or \
         fgvc_data::set_max_image_pixels",
        path.display(),
        u64::from(*width) * u64::from(*height)
    )]
    TooManyPixels {
        /// The image file.
        path: PathBuf,
        /// The width its header claims.
        width: u32,
        /// The height its header claims.
        height: u32,
        /// The limit in force.
        limit: u64,
    },
    /// An image file named by the dataset's index does not exist.
    #[error("image {} is missing (listed by the {dataset} index)", path.display())]
    MissingImage {
        /// The dataset's name.
        dataset: String,
        /// The file that should exist.
        path: PathBuf,
    },
    /// The dataset root lacks a file or directory the layout needs.
    #[error("{dataset}: {} not found under {}\n{hint}", missing.display(), root.display())]
    NotADataset {
        /// The dataset's name.
        dataset: &'static str,
        /// The root that was given.
        root: PathBuf,
        /// What is missing (relative to the root where that makes sense).
        missing: PathBuf,
        /// Where to get it and what layout is expected.
        hint: String,
    },
    /// A line of an index file that does not parse, or an index that is inconsistent.
    #[error("{}{}: {message}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Parse {
        /// The index file.
        path: PathBuf,
        /// The 1-based line number (0 when the problem is not tied to one line).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A MATLAB `.mat` file that cannot be read or lacks the expected content.
    #[error("MATLAB file {}: {message}", path.display())]
    Mat {
        /// The `.mat` file (empty when read from memory).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An image transform failed on a sample.
    #[error("transform failed on {what}: {source}")]
    Augment {
        /// The sample: its file, or a description of an in-memory sample.
        what: String,
        /// The transform's error.
        #[source]
        source: fgvc_augment::AugmentError,
    },
    /// The requested split does not exist for this dataset or these options.
    #[error("no {split} split: {reason}")]
    NoSuchSplit {
        /// The split that was asked for.
        split: crate::Split,
        /// Why it is not there and what to do instead.
        reason: String,
    },
    /// A bad configuration or argument.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The samples of one batch produced tensors of different shapes.
    #[error("samples of one batch differ in shape: {first} from {first_what} but {other} from {other_what}; use a pipeline that crops to a fixed size")]
    ShapeMismatch {
        /// The first sample's shape, `[C, H, W]` as text.
        first: String,
        /// The first sample.
        first_what: String,
        /// The disagreeing sample's shape.
        other: String,
        /// The disagreeing sample.
        other_what: String,
    },
    /// The loader's background thread died (it panicked).
    #[error("the loader's worker thread stopped unexpectedly: {0}")]
    Worker(String),
    /// An error from candle while building batch tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl DataError {
    /// A `Parse` error.
    pub(crate) fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        DataError::Parse {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// An `Io` error.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// A `Mat` error.
    pub(crate) fn mat(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Mat {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DataError>;
