//! `fgvc predict`: classify image files with a trained checkpoint and print every file's ranking, or its
//! error, as a table, RFC 4180 CSV or JSON. One bad file loses only its own result; the command then exits
//! non-zero after printing the others.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use fgvc_train::device::DeviceChoice;
use fgvc_train::predict::{image_files, ImagePrediction};

use crate::train::{device_parser, restore, run_checkpoint};

/// Output format of `fgvc predict`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// `image,rank,class,name,probability,error` (RFC 4180 quoting; one row per class, or one error row).
    Csv,
    /// One JSON document: per image its `top` classes or its `error`.
    Json,
}

/// Arguments of `fgvc predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Images, or directories searched recursively for .jpg/.jpeg/.png.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// A checkpoint file: it carries its configuration, class names and test pipeline.
    #[arg(long, conflicts_with = "run")]
    pub checkpoint: Option<PathBuf>,
    /// A run directory (its best.safetensors).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// The configuration the checkpoint was trained with, instead of the one it carries (needed for
    /// checkpoints of fgvc versions before self-contained checkpoints, outside their run directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Classes to show per image (at least 1).
    #[arg(long, default_value_t = 5, value_parser = top_k_arg)]
    pub topk: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Device.
    #[arg(long, value_parser = device_parser(), default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

/// `--topk`: a positive count (0 would print nothing, and is refused rather than silently taken as 1).
fn top_k_arg(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (the number of classes shown per image)".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    }
}

/// Predicts the classes of images with a trained checkpoint; an error after the output when any file failed.
pub fn predict(args: &PredictArgs) -> Result<()> {
    let checkpoint = match (&args.run, &args.checkpoint) {
        (Some(run), _) => run_checkpoint(run, false)?,
        (None, Some(c)) => c.clone(),
        (None, None) => bail!("give --checkpoint FILE or --run DIR"),
    };
    let device = args.device.open()?;
    let predictor = restore(&checkpoint, args.config.as_deref(), &[], &device)?;
    let images = image_files(&args.images)?;
    let results = predictor.predict_images(&images, args.topk)?;
    let mut out = io::stdout().lock();
    let written = match args.format {
        Format::Table => write_table(&mut out, &results),
        Format::Csv => write_csv(&mut out, &results),
        Format::Json => write_json(&mut out, &results),
    };
    match written.and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not an error of the predictions.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    let failed = results.iter().filter(|p| p.top.is_err()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} image(s) could not be classified; each one's error is in the output",
            results.len()
        );
    }
    Ok(())
}

/// The file's name as text (lossy for names that are not UTF-8).
fn name(p: &ImagePrediction) -> String {
    p.image.to_string_lossy().into_owned()
}

/// Per image its path, then one line per class (or its error), indented.
fn write_table(out: &mut impl Write, results: &[ImagePrediction]) -> io::Result<()> {
    for p in results {
        writeln!(out, "{}", p.image.display())?;
        match &p.top {
            Ok(top) => {
                for r in top {
                    writeln!(
                        out,
                        "  {:>2}. {:>6.2}%  [{}] {}",
                        r.rank,
                        100.0 * r.probability,
                        r.class,
                        r.name
                    )?;
                }
            }
            Err(e) => writeln!(out, "  error: {e}")?,
        }
    }
    Ok(())
}

/// A header, then one row per ranked class, or one row with only the image and its error.
fn write_csv(out: &mut impl Write, results: &[ImagePrediction]) -> io::Result<()> {
    let mut csv = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    csv.write_record(["image", "rank", "class", "name", "probability", "error"])
        .map_err(csv_io)?;
    for p in results {
        let image = name(p);
        match &p.top {
            Ok(top) => {
                for r in top {
                    csv.write_record([
                        image.as_str(),
                        &r.rank.to_string(),
                        &r.class.to_string(),
                        &r.name,
                        &r.probability.to_string(),
                        "",
                    ])
                    .map_err(csv_io)?;
                }
            }
            Err(e) => csv
                .write_record([image.as_str(), "", "", "", "", e])
                .map_err(csv_io)?,
        }
    }
    csv.flush()
}

/// A CSV error as the I/O error it wraps, so a closed pipe stays recognisable as one.
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// An array with, per image, `{"image", "top": [...]}` or `{"image", "error"}`.
fn write_json(out: &mut impl Write, results: &[ImagePrediction]) -> io::Result<()> {
    let doc: Vec<serde_json::Value> = results
        .iter()
        .map(|p| match &p.top {
            Ok(top) => serde_json::json!({ "image": name(p), "top": top }),
            Err(e) => serde_json::json!({ "image": name(p), "error": e }),
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fgvc_train::predict::Ranked;

    fn results() -> Vec<ImagePrediction> {
        vec![
            ImagePrediction {
                image: "a,\"b\"\nc.png".into(),
                top: Ok(vec![Ranked {
                    rank: 1,
                    class: 2,
                    name: "Laysan, \"Albatross\"".into(),
                    probability: 0.5,
                }]),
            },
            ImagePrediction {
                image: "bad.jpg".into(),
                top: Err("cannot decode image bad.jpg: truncated".into()),
            },
        ]
    }

    #[test]
    fn csv_quotes_any_file_name_and_reads_back() {
        let mut buf = Vec::new();
        write_csv(&mut buf, &results()).unwrap();
        assert!(buf.ends_with(b"\r\n"));
        let mut reader = csv::Reader::from_reader(buf.as_slice());
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][0], "a,\"b\"\nc.png");
        assert_eq!(&rows[0][3], "Laysan, \"Albatross\"");
        assert_eq!(&rows[0][5], "");
        assert_eq!(&rows[1][0], "bad.jpg");
        assert_eq!(&rows[1][1], "");
        assert!(rows[1][5].contains("truncated"));
    }

    #[test]
    fn json_is_valid_and_ends_with_a_newline() {
        let mut buf = Vec::new();
        write_json(&mut buf, &results()).unwrap();
        assert!(buf.ends_with(b"\n"));
        let doc: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(doc[0]["image"], "a,\"b\"\nc.png");
        assert_eq!(doc[0]["top"][0]["class"], 2);
        assert!(doc[1]["error"].as_str().unwrap().contains("truncated"));
        assert!(doc[1].get("top").is_none());
    }

    #[test]
    fn table_shows_the_error_in_place_of_the_ranking() {
        let mut buf = Vec::new();
        write_table(&mut buf, &results()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.ends_with('\n'));
        assert!(
            text.contains("bad.jpg\n  error: cannot decode image bad.jpg"),
            "{text}"
        );
        assert!(text.contains(" 1.  50.00%  [2] Laysan"), "{text}");
    }

    #[test]
    fn top_k_zero_is_refused() {
        assert!(top_k_arg("0").unwrap_err().contains("at least 1"));
        assert_eq!(top_k_arg("3"), Ok(3));
        assert!(top_k_arg("x").is_err());
    }
}
