//! [`EventWriter`]: a new event file in a log directory, with scalars and PNG images appended as TensorBoard
//! reads them, buffered and flushed on demand and on drop.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use image::RgbImage;
use prost::Message;

use crate::error::{Result, TbError};
use crate::proto::{event, session_log, summary, Event, SessionLog, Summary};
use crate::record::write_record;

/// The `file_version` of the first event of every file, which TensorBoard checks.
pub const FILE_VERSION: &str = "brain.Event:2";

/// The part of an event file's name TensorBoard recognises it by.
pub const FILE_MARKER: &str = "tfevents";

/// Writes one event file. Events are buffered; [`EventWriter::flush`] hands them to the operating system, as
/// does dropping the writer (which ignores a failure: call `flush` to see it).
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, `events.out.tfevents.<secs>.<host>.<pid>.<n>`
    /// (`n` the first number that names no existing file: a file is never overwritten or appended to), and
    /// writes the `file_version` event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| TbError::io(dir, e))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stem = format!(
            "events.out.{FILE_MARKER}.{secs:010}.{}.{}",
            file_name_part(&hostname()),
            std::process::id()
        );
        let mut n = 0u32;
        let (path, file) = loop {
            let path = dir.join(format!("{stem}.{n}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(TbError::io(path, e)),
            }
        };
        let mut writer = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        writer.add_event(Event {
            wall_time: wall_time(),
            what: Some(event::What::FileVersion(FILE_VERSION.into())),
            ..Default::default()
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` as it is (its wall time included).
    pub fn add_event(&mut self, event: Event) -> Result<()> {
        write_record(&mut self.out, &event.encode_to_vec()).map_err(|e| TbError::io(&self.path, e))
    }

    /// Appends a summary of `values` at `step`, stamped now.
    pub fn add_summary(&mut self, step: i64, values: Vec<summary::Value>) -> Result<()> {
        self.add_event(Event {
            wall_time: wall_time(),
            step,
            what: Some(event::What::Summary(Summary { value: values })),
            ..Default::default()
        })
    }

    /// Appends the scalar `value` of `tag` at `step` (a `simple_value`, which TensorBoard stores as `f32`).
    pub fn add_scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<()> {
        self.add_summary(
            step,
            vec![summary::Value {
                tag: tag.into(),
                value: Some(summary::value::Value::SimpleValue(value as f32)),
                ..Default::default()
            }],
        )
    }

    /// Appends `image` as the PNG image of `tag` at `step`.
    pub fn add_image(&mut self, tag: &str, step: i64, image: &RgbImage) -> Result<()> {
        self.add_image_rgb(tag, step, image.width(), image.height(), image.as_raw())
    }

    /// Appends `pixels` (rows of `width` RGB triplets, `height` rows) as the PNG image of `tag` at `step`.
    pub fn add_image_rgb(
        &mut self,
        tag: &str,
        step: i64,
        width: u32,
        height: u32,
        pixels: &[u8],
    ) -> Result<()> {
        let png = encode_png(tag, width, height, pixels)?;
        let image = summary::Image {
            height: height as i32,
            width: width as i32,
            colorspace: 3,
            encoded_image_string: png,
        };
        self.add_summary(
            step,
            vec![summary::Value {
                tag: tag.into(),
                value: Some(summary::value::Value::Image(image)),
                ..Default::default()
            }],
        )
    }

    /// Marks a restart from `step` (a run resumed from a checkpoint): TensorBoard, and
    /// [`Run`](crate::Run), drop the events of the files before this one whose step is `step` or later, as
    /// TensorFlow's `SessionLog.START` asks.
    pub fn add_restart(&mut self, step: i64) -> Result<()> {
        self.add_event(Event {
            wall_time: wall_time(),
            step,
            what: Some(event::What::SessionLog(SessionLog {
                status: session_log::SessionStatus::Start as i32,
                ..Default::default()
            })),
            ..Default::default()
        })
    }

    /// Hands the buffered events to the operating system.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| TbError::io(&self.path, e))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// Seconds since the Unix epoch, as events record them.
fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// PNG bytes of an RGB buffer, checked against its dimensions.
fn encode_png(tag: &str, width: u32, height: u32, pixels: &[u8]) -> Result<Vec<u8>> {
    let bad = |message: String| TbError::Image {
        tag: tag.into(),
        message,
    };
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(bad(format!("cannot log a {width}x{height} image")));
    }
    let expected = width as u64 * height as u64 * 3;
    if pixels.len() as u64 != expected {
        return Err(bad(format!(
            "a {width}x{height} RGB image needs {expected} bytes, got {}",
            pixels.len()
        )));
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        pixels,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| bad(format!("PNG encoding failed: {e}")))?;
    Ok(png)
}

/// `s` with the characters a file name cannot hold (path separators, whitespace, control characters)
/// replaced by `_`.
fn file_name_part(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "localhost".into()
    } else {
        cleaned
    }
}

#[cfg(unix)]
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        return String::from_utf8_lossy(&buf[..end]).into_owned();
    }
    String::new()
}

#[cfg(not(unix))]
fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_parts_hold_no_separator() {
        assert_eq!(file_name_part("a/b c\\d"), "a_b_c_d");
        assert_eq!(file_name_part(""), "localhost");
        assert_eq!(file_name_part("node-1.example.org"), "node-1.example.org");
    }

    #[test]
    fn a_wrong_pixel_buffer_is_refused_with_its_tag() {
        let err = encode_png("augment/x", 2, 2, &[0; 11])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("augment/x") && err.contains("12 bytes, got 11"),
            "{err}"
        );
        assert!(encode_png("t", 0, 2, &[]).is_err());
    }
}
