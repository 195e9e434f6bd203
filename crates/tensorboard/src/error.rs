//! The errors of writing and reading event files; each names the file, and a bad record its byte offset.

use std::path::PathBuf;

/// What went wrong with an event file.
#[derive(Debug, thiserror::Error)]
pub enum TbError {
    /// The file or directory could not be created, written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A record whose framing is wrong: a CRC that does not match, or a length that cannot be.
    #[error("{}: bad record at byte {offset}: {problem}", path.display())]
    Corrupt {
        /// The event file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// The file ends inside a record (a writer killed mid-write, or a file still being written).
    #[error(
        "{}: truncated record at byte {offset}: it needs {needed} bytes, the file ends at byte {len}",
        path.display()
    )]
    Truncated {
        /// The event file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The bytes the record needs from its start.
        needed: u64,
        /// The file's length.
        len: u64,
    },
    /// A record whose CRCs match but whose data is not an `Event` protobuf.
    #[error("{}: record at byte {offset} is not an Event: {source}", path.display())]
    Decode {
        /// The event file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The protobuf decoder's error.
        source: prost::DecodeError,
    },
    /// An image that cannot be logged or read back (wrong buffer size, empty, not a PNG).
    #[error("image {tag:?}: {message}")]
    Image {
        /// The image's tag.
        tag: String,
        /// What is wrong with it.
        message: String,
    },
}

impl TbError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TbError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The result of this crate's operations.
pub type Result<T> = std::result::Result<T, TbError>;
