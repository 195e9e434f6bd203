//! TensorFlow's record framing, which event files use: each record is
//!
//! ```text
//! u64 length (little endian) | u32 masked CRC32C of those 8 bytes | data | u32 masked CRC32C of data
//! ```
//!
//! with the CRC32C (Castagnoli) rotated right by 15 bits and offset by `0xa282ead8`, so that a CRC of data
//! that holds CRCs is not itself a CRC of zeros.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TbError};

/// The constant TensorFlow adds to a rotated CRC.
pub const MASK_DELTA: u32 = 0xa282_ead8;

/// Bytes of framing around a record's data: 8 (length) + 4 (its CRC) + 4 (the data's CRC).
pub const FRAMING_BYTES: u64 = 16;

/// Masks a CRC32C as TensorFlow's record format does: `((crc >> 15) | (crc << 17)) + 0xa282ead8`.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Undoes [`mask`].
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// The masked CRC32C of `data`.
///
/// ```
/// // CRC32C("123456789") is the standard check value 0xe3069283.
/// assert_eq!(fgvc_tensorboard::record::unmask(fgvc_tensorboard::masked_crc32c(b"123456789")), 0xe306_9283);
/// ```
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c::crc32c(data))
}

/// Writes `data` as one framed record.
pub fn write_record(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let header = (data.len() as u64).to_le_bytes();
    out.write_all(&header)?;
    out.write_all(&masked_crc32c(&header).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// One record read back: where it starts in the file, and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of the record's length field.
    pub offset: u64,
    /// The record's data.
    pub data: Vec<u8>,
}

/// Reads the records of one file in order, checking both CRCs of each. An iterator of results: after the
/// first error it yields nothing more.
pub struct RecordReader {
    path: PathBuf,
    input: BufReader<File>,
    len: u64,
    offset: u64,
    done: bool,
}

impl RecordReader {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| TbError::io(path, e))?;
        let len = file.metadata().map_err(|e| TbError::io(path, e))?.len();
        Ok(RecordReader {
            path: path.to_path_buf(),
            input: BufReader::new(file),
            len,
            offset: 0,
            done: false,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, problem: String) -> TbError {
        TbError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            problem,
        }
    }

    fn truncated(&self, needed: u64) -> TbError {
        TbError::Truncated {
            path: self.path.clone(),
            offset: self.offset,
            needed,
            len: self.len,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.input
            .read_exact(buf)
            .map_err(|e| TbError::io(&self.path, e))
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        let left = self.len - self.offset;
        if left == 0 {
            return Ok(None);
        }
        if left < 12 {
            return Err(self.truncated(12));
        }
        let mut header = [0u8; 12];
        self.read_exact(&mut header)?;
        let (length, crc) = header.split_at(8);
        let length_bytes: [u8; 8] = length.try_into().expect("8 bytes");
        let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        let computed = masked_crc32c(&length_bytes);
        if stored != computed {
            return Err(self.corrupt(format!(
                "the length's CRC is {stored:#010x}, its bytes give {computed:#010x}"
            )));
        }
        let length = u64::from_le_bytes(length_bytes);
        let needed = length
            .checked_add(FRAMING_BYTES)
            .ok_or_else(|| self.corrupt(format!("impossible length {length}")))?;
        if needed > left {
            return Err(self.truncated(needed));
        }
        let mut data = vec![0u8; length as usize];
        self.read_exact(&mut data)?;
        let mut footer = [0u8; 4];
        self.read_exact(&mut footer)?;
        let stored = u32::from_le_bytes(footer);
        let computed = masked_crc32c(&data);
        if stored != computed {
            return Err(self.corrupt(format!(
                "the data's CRC is {stored:#010x}, its {length} bytes give {computed:#010x}"
            )));
        }
        let record = Record {
            offset: self.offset,
            data,
        };
        self.offset += needed;
        Ok(Some(record))
    }
}

impl Iterator for RecordReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record();
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next.transpose()
    }
}
