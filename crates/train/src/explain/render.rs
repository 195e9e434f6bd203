//! Rendering an [`Explanation`] as one RGB image per input: the de-normalised image, one Turbo overlay per
//! Grad-CAM heatmap, then the method's own panels, left to right; with a description of each panel (no font
//! is available to label them in the image).

use candle_core::{IndexOp, Tensor};
use fgvc_augment::transforms::Normalize;
use fgvc_heads::interp::resize_bilinear;
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use serde::Serialize;

use super::colormap::{blend, draw_box, turbo};
use super::gradcam::{explain, Explanation};
use super::PanelContent;
use crate::error::{Result, TrainError};
use crate::method::Method;

/// How panels are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Opacity of the colour map over the image (0.5).
    pub alpha: f32,
    /// Panels are enlarged by a whole factor until their longer side is at least this many pixels (128), so
    /// that small inputs stay legible.
    pub min_side: u32,
    /// White pixels between panels and between rows (4).
    pub gap: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            alpha: 0.5,
            min_side: 128,
            gap: 4,
        }
    }
}

/// What a panel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PanelKind {
    /// The input image.
    Input,
    /// A Grad-CAM heatmap over the input.
    GradCam,
    /// A method's map over the input.
    Map,
    /// Boxes drawn on the input.
    Boxes,
    /// Another image (Coarse2Fine's zoomed image).
    Image,
}

/// One panel of a rendered row, left to right.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PanelInfo {
    /// What it shows.
    pub kind: PanelKind,
    /// `input`, the prediction's name for a heatmap, or the panel's name.
    pub name: String,
    /// Its left edge in the image, in pixels.
    pub x: u32,
    /// Its width in pixels.
    pub width: u32,
    /// The class a heatmap explains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
    /// The prediction's probability of that class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f32>,
    /// The feature maps a heatmap is computed from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// The values the colour map's ends stand for (a heatmap: 0 and its maximum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<(f32, f32)>,
    /// What a method's panel shows for this image (which attention map), if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl PanelInfo {
    fn new(kind: PanelKind, name: &str) -> Self {
        PanelInfo {
            kind,
            name: name.to_string(),
            x: 0,
            width: 0,
            class: None,
            probability: None,
            layers: Vec::new(),
            range: None,
            note: None,
        }
    }
}

/// Image `index` of `explanation` as one row of panels: the input `images` (normalised by `normalize`, as
/// the model saw them) de-normalised, each heatmap over it, then the method's panels; with the description
/// of each panel, left to right.
pub fn render_image(
    explanation: &Explanation,
    images: &Tensor,
    normalize: &Normalize,
    index: usize,
    options: &RenderOptions,
) -> Result<(RgbImage, Vec<PanelInfo>)> {
    let (n, _, h, w) = images.dims4()?;
    if index >= n || (h, w) != explanation.size {
        return Err(TrainError::Msg(format!(
            "render: image {index} of a [{n}, 3, {h}, {w}] batch does not match an explanation of {}x{} images",
            explanation.size.0, explanation.size.1
        )));
    }
    let scale = options.min_side.div_ceil(h.max(w) as u32).max(1);
    let (dh, dw) = (h as u32 * scale, w as u32 * scale);
    let input = to_rgb(normalize, &images.i(index)?)?;
    let input = imageops::resize(&input, dw, dh, FilterType::Nearest);
    let mut panels: Vec<(RgbImage, PanelInfo)> =
        vec![(input.clone(), PanelInfo::new(PanelKind::Input, "input"))];
    for heatmap in &explanation.heatmaps {
        let values = heatmap.map.i(index)?;
        let (overlay, range) = overlay(&input, &values, (h, w), None, false, options.alpha)?;
        let mut info = PanelInfo::new(PanelKind::GradCam, &heatmap.prediction);
        info.class = Some(heatmap.classes[index]);
        info.probability = Some(heatmap.probabilities[index]);
        info.layers = heatmap.layers.iter().map(|l| l.name.clone()).collect();
        info.range = Some(range);
        panels.push((overlay, info));
    }
    for panel in &explanation.panels {
        let (image, mut info) = match &panel.content {
            PanelContent::Map {
                values,
                range,
                discrete,
            } => {
                let values = values.i(index)?;
                let (image, range) =
                    overlay(&input, &values, (h, w), *range, *discrete, options.alpha)?;
                let mut info = PanelInfo::new(PanelKind::Map, &panel.name);
                info.range = Some(range);
                (image, info)
            }
            PanelContent::Boxes(boxes) => {
                let b = boxes.i(index)?.to_vec1::<f32>()?;
                let s = scale as f32;
                let corner = |v: f32| (v * s).round() as i64;
                let mut image = input.clone();
                let thickness = 2.max(scale) as i64;
                draw_box(
                    &mut image,
                    [corner(b[1]), corner(b[0]), corner(b[3]), corner(b[2])],
                    thickness,
                    Rgb([255, 230, 0]),
                );
                (image, PanelInfo::new(PanelKind::Boxes, &panel.name))
            }
            PanelContent::Image(other) => {
                let image = to_rgb(normalize, &other.i(index)?)?;
                let (ih, iw) = (image.height() * scale, image.width() * scale);
                let image = imageops::resize(&image, iw, ih, FilterType::Nearest);
                (image, PanelInfo::new(PanelKind::Image, &panel.name))
            }
        };
        info.note = panel.notes.get(index).cloned();
        panels.push((image, info));
    }
    Ok(side_by_side(panels, options.gap))
}

/// The rows of [`render_image`] for every image of `images` `[N, 3, H, W]` (normalised by `normalize`)
/// under `method`, stacked top to bottom: the grid a training log shows at each evaluation. `class` as in
/// [`explain`].
pub fn render_panels(
    method: &dyn Method,
    images: &Tensor,
    normalize: &Normalize,
    class: Option<usize>,
    options: &RenderOptions,
) -> Result<RgbImage> {
    let explanation = explain(method, images, class)?;
    let n = images.dim(0)?;
    let rows = (0..n)
        .map(|i| Ok(render_image(&explanation, images, normalize, i, options)?.0))
        .collect::<Result<Vec<_>>>()?;
    let width = rows.iter().map(RgbImage::width).max().unwrap_or(0);
    let height = rows.iter().map(RgbImage::height).sum::<u32>() + options.gap * (n as u32 - 1);
    let mut grid = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut y = 0;
    for row in rows {
        imageops::replace(&mut grid, &row, 0, y as i64);
        y += row.height() + options.gap;
    }
    Ok(grid)
}

/// Panels placed left to right on white with `gap` pixels between them, each with its `x` and `width` set.
fn side_by_side(panels: Vec<(RgbImage, PanelInfo)>, gap: u32) -> (RgbImage, Vec<PanelInfo>) {
    let width = panels.iter().map(|(p, _)| p.width()).sum::<u32>()
        + gap * (panels.len() as u32).saturating_sub(1);
    let height = panels.iter().map(|(p, _)| p.height()).max().unwrap_or(0);
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut infos = Vec::with_capacity(panels.len());
    let mut x = 0;
    for (image, mut info) in panels {
        imageops::replace(&mut canvas, &image, x as i64, 0);
        info.x = x;
        info.width = image.width();
        x += image.width() + gap;
        infos.push(info);
    }
    (canvas, infos)
}

/// A normalised image `[3, H, W]` back to 8-bit RGB.
fn to_rgb(normalize: &Normalize, image: &Tensor) -> Result<RgbImage> {
    let pixels = normalize
        .denormalize_tensor(&image.to_dtype(candle_core::DType::F32)?)
        .map_err(|e| TrainError::Msg(format!("render: {e}")))?
        .to_device(&candle_core::Device::Cpu)?;
    let (_, h, w) = pixels.dims3()?;
    let data = pixels.flatten_all()?.to_vec1::<f32>()?;
    let plane = h * w;
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let p = y as usize * w + x as usize;
        Rgb([
            byte(data[p]),
            byte(data[plane + p]),
            byte(data[2 * plane + p]),
        ])
    }))
}

/// `values` `[h, w]` drawn over `under` (an input of `input` `(H, W)` pixels enlarged for display) in Turbo at
/// opacity `alpha`: resized to the input bilinearly (or, when `discrete`, as blocks), enlarged as the image
/// was, and scaled over `range` or from `min(0, min)` to the maximum. Returns the image and the range used.
fn overlay(
    under: &RgbImage,
    values: &Tensor,
    input: (usize, usize),
    range: Option<(f32, f32)>,
    discrete: bool,
    alpha: f32,
) -> Result<(RgbImage, (f32, f32))> {
    let values = values.to_dtype(candle_core::DType::F32)?;
    let (mut h, mut w) = values.dims2()?;
    let values = if (h, w) != input && !discrete {
        let up = resize_bilinear(&values.unsqueeze(0)?.unsqueeze(0)?, input.0, input.1)?;
        (h, w) = input;
        up.squeeze(0)?.squeeze(0)?
    } else {
        values
    };
    let data = values.flatten_all()?.to_vec1::<f32>()?;
    let (lo, hi) = range.unwrap_or_else(|| {
        data.iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold((0f32, 0f32), |(a, b), v| (a.min(v), b.max(v)))
    });
    let span = hi - lo;
    let (width, height) = under.dimensions();
    let mut out = under.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        // Nearest sample: display pixel (x, y) lies in map cell (y h / height, x w / width).
        let sy = (y as usize * h / height as usize).min(h - 1);
        let sx = (x as usize * w / width as usize).min(w - 1);
        let v = data[sy * w + sx];
        let t = if span > 0.0 { (v - lo) / span } else { 0.0 };
        *p = blend(*p, turbo(t), alpha);
    }
    Ok((out, (lo, hi)))
}
