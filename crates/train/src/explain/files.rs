//! Explaining image files with a restored model, and writing the result: per image a PNG of its panels and a
//! JSON sidecar describing them. One unreadable image loses only its own result.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use image::RgbImage;
use serde::Serialize;

use super::gradcam::{explain_with, ExplainOptions};
use super::render::{render_image, PanelInfo, RenderOptions};
use crate::error::{Result, TrainError};
use crate::predict::Predictor;
use crate::run_dir::atomic_write;

/// One image file explained.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The method's name.
    pub method: String,
    /// Height and width of the model's input (after the evaluation pipeline).
    pub input_size: (usize, usize),
    /// The panels side by side.
    pub image: RgbImage,
    /// What each panel shows, left to right.
    pub panels: Vec<ExplainedPanel>,
}

/// A panel of an [`Explained`] image, with the name of the class a heatmap explains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedPanel {
    /// The panel.
    #[serde(flatten)]
    pub panel: PanelInfo,
    /// The name of [`PanelInfo::class`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
}

/// An image file and its explanation, or why it could not be explained (it could not be read, decoded or
/// transformed).
#[derive(Debug, Clone)]
pub struct ExplainedImage {
    /// The image file.
    pub image: PathBuf,
    /// Its explanation or its error.
    pub result: std::result::Result<Explained, String>,
}

/// Explains image files with `predictor`'s model in batches of [`Predictor::batch_size`]: Grad-CAM of every
/// named prediction for its predicted class, or the class of `explain` and at its layer, and the method's panels, rendered per image. A file
/// that cannot be read gets its error in [`ExplainedImage::result`] and the others are still explained; a
/// failure of the model, a class out of range and a method that is not explainable are errors of the call.
pub fn explain_files(
    predictor: &Predictor,
    paths: &[PathBuf],
    explain: &ExplainOptions,
    options: &RenderOptions,
) -> Result<Vec<ExplainedImage>> {
    let normalize = predictor.config().data.pipelines()?.1.normalize;
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(predictor.batch_size()) {
        let loaded: Vec<std::result::Result<Tensor, String>> = chunk
            .iter()
            .map(|p| {
                predictor
                    .load_images(std::slice::from_ref(p))
                    .map_err(|e| e.to_string())
            })
            .collect();
        let good: Vec<&Tensor> = loaded.iter().filter_map(|l| l.as_ref().ok()).collect();
        let batch = if good.is_empty() {
            None
        } else {
            Some(Tensor::cat(&good, 0)?)
        };
        let explanation = match &batch {
            Some(b) => Some(explain_with(predictor.method(), b, explain)?),
            None => None,
        };
        let mut row = 0;
        for (path, load) in chunk.iter().zip(loaded) {
            let result = match (load, &batch, &explanation) {
                (Err(e), _, _) => Err(e),
                (Ok(_), Some(batch), Some(explanation)) => {
                    let (image, panels) =
                        render_image(explanation, batch, &normalize, row, options)?;
                    row += 1;
                    let panels = panels
                        .into_iter()
                        .map(|panel| ExplainedPanel {
                            class_name: panel.class.map(|c| predictor.class_name(c)),
                            panel,
                        })
                        .collect();
                    Ok(Explained {
                        method: explanation.method.clone(),
                        input_size: explanation.size,
                        image,
                        panels,
                    })
                }
                (Ok(_), _, _) => unreachable!("a loaded image makes a batch"),
            };
            out.push(ExplainedImage {
                image: path.clone(),
                result,
            });
        }
    }
    Ok(out)
}

/// The sidecar of one explained image.
#[derive(Serialize)]
struct Sidecar<'a> {
    image: String,
    png: &'a str,
    method: &'a str,
    input_size: [usize; 2],
    panels: &'a [ExplainedPanel],
}

/// Writes each explained image of `results` into `dir` (created if missing) as `<stem>.png` and its sidecar
/// `<stem>.json` (the panels left to right, with each heatmap's prediction, class and probability), each
/// atomically; images with the same stem get `-2`, `-3`, .. Files already in `dir` under those names are an
/// error before anything is written, unless `overwrite`. Returns the PNGs written, in order.
pub fn write_explained(
    dir: &Path,
    results: &[ExplainedImage],
    overwrite: bool,
) -> Result<Vec<PathBuf>> {
    let mut used = HashSet::new();
    let mut planned = Vec::new();
    for r in results {
        if let Ok(explained) = &r.result {
            let stem = unique_stem(&r.image, &mut used);
            planned.push((stem, r, explained));
        }
    }
    if !overwrite {
        let existing: Vec<PathBuf> = planned
            .iter()
            .flat_map(|(stem, _, _)| {
                [
                    dir.join(format!("{stem}.png")),
                    dir.join(format!("{stem}.json")),
                ]
            })
            .filter(|p| p.exists())
            .collect();
        if let Some(first) = existing.first() {
            let more = match existing.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            return Err(TrainError::Msg(format!(
                "{} already exists{more}: explain into another directory, or allow overwriting \
                 (`fgvc explain --overwrite`)",
                first.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut written = Vec::with_capacity(planned.len());
    for (stem, r, explained) in planned {
        let png_name = format!("{stem}.png");
        let png = dir.join(&png_name);
        let mut bytes = std::io::Cursor::new(Vec::new());
        explained
            .image
            .write_to(&mut bytes, image::ImageFormat::Png)
            .map_err(|e| {
                TrainError::Msg(format!("{}: cannot encode the PNG: {e}", png.display()))
            })?;
        atomic_write(&png, bytes.get_ref())?;
        let sidecar = Sidecar {
            image: r.image.to_string_lossy().into_owned(),
            png: &png_name,
            method: &explained.method,
            input_size: [explained.input_size.0, explained.input_size.1],
            panels: &explained.panels,
        };
        let mut json = serde_json::to_vec_pretty(&sidecar)
            .map_err(|e| TrainError::Msg(format!("explain sidecar: {e}")))?;
        json.push(b'\n');
        atomic_write(&dir.join(format!("{stem}.json")), &json)?;
        written.push(png);
    }
    Ok(written)
}

/// The file stem of `image` (characters other than letters, digits, `-`, `_` and `.` replaced by `_`),
/// made unique among `used` with `-2`, `-3`, ..
fn unique_stem(image: &Path, used: &mut HashSet<String>) -> String {
    let raw = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut base: String = raw
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() || base.starts_with('.') {
        base.insert_str(0, "image");
    }
    let mut name = base.clone();
    let mut k = 2;
    while !used.insert(name.to_lowercase()) {
        name = format!("{base}-{k}");
        k += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_sanitised_and_unique_whatever_the_case() {
        let mut used = HashSet::new();
        let names: Vec<String> = [
            "a/x.jpg",
            "b/x.png",
            "c/X.jpeg",
            "d/my bird?.png",
            ".hidden.png",
        ]
        .iter()
        .map(|p| unique_stem(Path::new(p), &mut used))
        .collect();
        assert_eq!(names, ["x", "x-2", "X-3", "my_bird_", "image.hidden"]);
    }
}
