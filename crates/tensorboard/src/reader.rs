//! Reading event files back: every record's framing and CRCs checked, each decoded as an `Event`, and the
//! files of a log directory in the order TensorBoard loads them, with its restart rule applied.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::RgbImage;
use prost::Message;

use crate::error::{Result, TbError};
use crate::proto::{event, session_log, summary, Event};
use crate::record::RecordReader;
use crate::writer::{FILE_MARKER, FILE_VERSION};

/// The events of one file, in order. Every record must be whole, with matching CRCs, and decode; the first
/// event must be the `file_version` one. An error names the file and the record's byte offset.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for record in RecordReader::open(path)? {
        let record = record?;
        let event = Event::decode(record.data.as_slice()).map_err(|source| TbError::Decode {
            path: path.to_path_buf(),
            offset: record.offset,
            source,
        })?;
        if events.is_empty() && !is_file_version(&event) {
            return Err(TbError::Corrupt {
                path: path.to_path_buf(),
                offset: record.offset,
                problem: format!("the first event is not file_version {FILE_VERSION:?}"),
            });
        }
        events.push(event);
    }
    Ok(events)
}

fn is_file_version(event: &Event) -> bool {
    matches!(&event.what, Some(event::What::FileVersion(v)) if v.starts_with("brain.Event:"))
}

/// The event files of `dir` (names containing `tfevents`), sorted by name: the order TensorBoard reads
/// them in, which is the order they were created in since the name starts with the creation time.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| TbError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TbError::io(dir, e))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_string_lossy().contains(FILE_MARKER) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A value of a scalar tag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalarPoint {
    /// The step it was logged at.
    pub step: i64,
    /// The value (TensorBoard scalars are `f32`).
    pub value: f32,
    /// Seconds since the Unix epoch when it was logged.
    pub wall_time: f64,
}

/// An image of an image tag, as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePoint {
    /// The step it was logged at.
    pub step: i64,
    /// Width in pixels, as the summary states.
    pub width: u32,
    /// Height in pixels, as the summary states.
    pub height: u32,
    /// The encoded image (PNG for images this crate writes).
    pub encoded: Vec<u8>,
}

impl ImagePoint {
    /// Decodes the image, checking its size against the one the summary states.
    pub fn decode(&self, tag: &str) -> Result<RgbImage> {
        let bad = |message: String| TbError::Image {
            tag: tag.into(),
            message,
        };
        let image = image::load_from_memory(&self.encoded)
            .map_err(|e| bad(format!("does not decode: {e}")))?
            .to_rgb8();
        if image.dimensions() != (self.width, self.height) {
            return Err(bad(format!(
                "decodes to {}x{}, its summary says {}x{}",
                image.width(),
                image.height(),
                self.width,
                self.height
            )));
        }
        Ok(image)
    }
}

/// The events of a log directory: every event file of it, in [`event_files`] order.
///
/// Values are as TensorBoard shows them: a restart marker ([`EventWriter::add_restart`](crate::EventWriter::add_restart),
/// TensorFlow's `SessionLog.START` at step `s`) drops every value logged before it at step `s` or later,
/// since a run resumed from its checkpoint at step `s - 1` logs those steps again. A file that ends inside
/// its last record (its writer was killed mid-write) is read up to that record, which is reported by
/// [`Run::torn`]; any other bad record is an error.
#[derive(Debug, Clone)]
pub struct Run {
    files: Vec<PathBuf>,
    events: Vec<Event>,
    torn: Vec<(PathBuf, u64)>,
}

impl Run {
    /// Reads every event file of `dir`.
    pub fn read(dir: &Path) -> Result<Run> {
        let files = event_files(dir)?;
        let mut events = Vec::new();
        let mut torn = Vec::new();
        for file in &files {
            let mut in_file = Vec::new();
            for record in RecordReader::open(file)? {
                match record {
                    Ok(record) => {
                        let event = Event::decode(record.data.as_slice()).map_err(|source| {
                            TbError::Decode {
                                path: file.clone(),
                                offset: record.offset,
                                source,
                            }
                        })?;
                        in_file.push(event);
                    }
                    Err(TbError::Truncated { offset, .. }) => torn.push((file.clone(), offset)),
                    Err(e) => return Err(e),
                }
            }
            if let Some(first) = in_file.first() {
                if !is_file_version(first) {
                    return Err(TbError::Corrupt {
                        path: file.clone(),
                        offset: 0,
                        problem: format!("the first event is not file_version {FILE_VERSION:?}"),
                    });
                }
            }
            events.extend(in_file);
        }
        Ok(Run {
            files,
            events,
            torn,
        })
    }

    /// The event files read, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every event of every file, in order, restart markers included.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The files whose last record was cut short, with the byte offset where that record starts.
    pub fn torn(&self) -> &[(PathBuf, u64)] {
        &self.torn
    }

    /// Every `(step, wall time, value)` of the summaries, restart rule applied, in logging order.
    fn values(&self) -> Vec<(i64, f64, &summary::Value)> {
        let mut kept: Vec<(i64, f64, &summary::Value)> = Vec::new();
        for event in &self.events {
            match &event.what {
                Some(event::What::Summary(s)) => {
                    kept.extend(s.value.iter().map(|v| (event.step, event.wall_time, v)));
                }
                Some(event::What::SessionLog(log))
                    if log.status == session_log::SessionStatus::Start as i32 =>
                {
                    kept.retain(|(step, _, _)| *step < event.step);
                }
                _ => {}
            }
        }
        kept
    }

    /// The tags of every scalar.
    pub fn scalar_tags(&self) -> BTreeSet<String> {
        self.values()
            .into_iter()
            .filter(|(_, _, v)| matches!(v.value, Some(summary::value::Value::SimpleValue(_))))
            .map(|(_, _, v)| v.tag.clone())
            .collect()
    }

    /// The values of scalar `tag`, in logging order.
    pub fn scalars(&self, tag: &str) -> Vec<ScalarPoint> {
        self.values()
            .into_iter()
            .filter(|(_, _, v)| v.tag == tag)
            .filter_map(|(step, wall_time, v)| match v.value {
                Some(summary::value::Value::SimpleValue(value)) => Some(ScalarPoint {
                    step,
                    value,
                    wall_time,
                }),
                _ => None,
            })
            .collect()
    }

    /// The tags of every image.
    pub fn image_tags(&self) -> BTreeSet<String> {
        self.values()
            .into_iter()
            .filter(|(_, _, v)| matches!(v.value, Some(summary::value::Value::Image(_))))
            .map(|(_, _, v)| v.tag.clone())
            .collect()
    }

    /// The images of `tag`, in logging order.
    pub fn images(&self, tag: &str) -> Vec<ImagePoint> {
        self.values()
            .into_iter()
            .filter(|(_, _, v)| v.tag == tag)
            .filter_map(|(step, _, v)| match &v.value {
                Some(summary::value::Value::Image(image)) => Some(ImagePoint {
                    step,
                    width: image.width.max(0) as u32,
                    height: image.height.max(0) as u32,
                    encoded: image.encoded_image_string.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}
