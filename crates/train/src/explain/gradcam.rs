//! Grad-CAM of every named prediction: the gradient of the class score with respect to each feature map the
//! prediction reads, its spatial mean as the channel weights, the ReLU of the weighted sum of channels, and
//! the maps' CAMs upsampled onto the input and added up.
//!
//! For a map `A` `[C, h, w]` and the class score `y`:
//!
//! ```text
//! alpha_k = mean_ij dy/dA_kij            L = ReLU(sum_k alpha_k A_k)       [h, w]
//! ```
//!
//! When a prediction reads several maps (PMG's `concat` reads three stages, Coarse2Fine's `combined` the image
//! and the zoom), each map's `L` is resampled onto the input pixels it covers and divided by the input area
//! one of its cells covers, so that every map's heatmap sums over the image to `sum_ij L_ij` (for a global
//! average pool and a linear classifier, exactly the class score) and maps of different resolutions add up in
//! one unit: class score per pixel.

use candle_core::{DType, Device, Tensor, Var, D};
use fgvc_heads::interp::{box_sampling_weights, resize_bilinear};

use super::{FeatureMap, Panel, PanelContent, StageOf};
use crate::error::{Result, TrainError};
use crate::method::Method;

/// The Grad-CAM of one layer for one prediction.
#[derive(Debug, Clone)]
pub struct LayerCam {
    /// The feature map's name ([`FeatureMap::name`]).
    pub name: String,
    /// `ReLU(sum_k alpha_k A_k)` at the map's resolution, `[N, h, w]`, f32 on the CPU.
    pub cam: Tensor,
}

/// The heatmap of one named prediction.
#[derive(Debug, Clone)]
pub struct Heatmap {
    /// The prediction's name ([`Method::predict`]'s).
    pub prediction: String,
    /// The class explained, per image: the prediction's arg-max or the class asked for.
    pub classes: Vec<usize>,
    /// The prediction's softmax probability of that class, per image.
    pub probabilities: Vec<f32>,
    /// The heatmap on the input pixels `[N, H, W]` (class score per pixel, non-negative), f32 on the CPU.
    pub map: Tensor,
    /// The CAM of every feature map the prediction reads (those its class score has a gradient for).
    pub layers: Vec<LayerCam>,
}

/// What [`explain`] returns for a batch of images.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The method's name.
    pub method: String,
    /// Height and width of the input images.
    pub size: (usize, usize),
    /// One heatmap per named prediction, in [`Method::predict`]'s order (the main one first).
    pub heatmaps: Vec<Heatmap>,
    /// The method's own panels, their tensors f32 on the CPU.
    pub panels: Vec<Panel>,
}

/// What [`explain_with`] explains: which class and at which backbone stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExplainOptions {
    /// The class every heatmap explains; each prediction's arg-max when `None`.
    pub class: Option<usize>,
    /// The backbone stage Grad-CAM differentiates at (`layer3`, `stage4`, `block3`: a name of
    /// [`Backbone::stage_names`](fgvc_backbone::Backbone::stage_names)); when `None`, the maps each
    /// prediction reads. A stage before a map the heads read gets its gradient through the backbone's later
    /// stages ([`Backbone::forward_from`](fgvc_backbone::Backbone::forward_from)); a prediction that only
    /// reads maps before it gets an empty heatmap.
    pub layer: Option<String>,
}

/// The Grad-CAM heatmap of every named prediction of `method` on `images` `[N, 3, H, W]` (normalised as the
/// method's evaluation pipeline normalises), for each prediction's predicted class or for `class`, with the
/// method's own panels: [`explain_with`] at the maps the predictions read.
pub fn explain(method: &dyn Method, images: &Tensor, class: Option<usize>) -> Result<Explanation> {
    explain_with(method, images, &ExplainOptions { class, layer: None })
}

/// The Grad-CAM heatmap of every named prediction of `method` on `images` `[N, 3, H, W]`, for the class
/// and at the backbone stage of `options`, with the method's own panels. A class out of range, a stage the
/// backbone does not have, and a method that does not implement [`Explain`](super::Explain) (or, for a
/// stage, does not expose its backbone) are errors.
pub fn explain_with(
    method: &dyn Method,
    images: &Tensor,
    options: &ExplainOptions,
) -> Result<Explanation> {
    let (n, _, h, w) = images.dims4()?;
    if n == 0 {
        return Err(TrainError::Msg("explain: no image to explain".into()));
    }
    let explainer = method.explain()?;
    let taps = explainer.taps(images)?;
    if taps.maps.is_empty() {
        return Err(TrainError::Msg(format!(
            "explain: method {:?} returned no feature map",
            method.name()
        )));
    }
    let targets = match &options.layer {
        None => at_taps(&taps.maps)?,
        Some(layer) => at_stage(method.name(), explainer, &taps.maps, layer)?,
    };
    let predictions = explainer.heads(&targets.inputs)?;
    let mut heatmaps = Vec::with_capacity(predictions.heads.len());
    for (name, logits) in &predictions.heads {
        let (classes, probabilities, score) = class_scores(name, logits, options.class)?;
        let grads = score.backward()?;
        let mut total: Option<Tensor> = None;
        let mut layers = Vec::new();
        for (tap, var) in &targets.cams {
            let Some(grad) = grads.get(var) else {
                continue;
            };
            let cam = layer_cam(&tap.map, grad)?;
            let density = onto_input(&cam, tap, h, w)?;
            total = Some(match total {
                None => density,
                Some(t) => t.add(&density)?,
            });
            layers.push(LayerCam {
                name: tap.name.clone(),
                cam: cam.to_device(&Device::Cpu)?,
            });
        }
        let map = match total {
            Some(t) => t.to_device(&Device::Cpu)?,
            None => Tensor::zeros((n, h, w), DType::F32, &Device::Cpu)?,
        };
        heatmaps.push(Heatmap {
            prediction: name.clone(),
            classes,
            probabilities,
            map,
            layers,
        });
    }
    let panels = taps
        .panels
        .into_iter()
        .map(panel_to_cpu)
        .collect::<Result<_>>()?;
    Ok(Explanation {
        method: method.name().to_string(),
        size: (h, w),
        heatmaps,
        panels,
    })
}

/// What the heads read and what Grad-CAM differentiates at.
struct Targets {
    /// The maps the heads read, in [`Taps::maps`](super::Taps::maps)'s order.
    inputs: Vec<Tensor>,
    /// The maps Grad-CAM is computed at, each with the `Var` whose gradient it reads.
    cams: Vec<(FeatureMap, Tensor)>,
}

/// Grad-CAM at the maps the heads read: each enters them as a `Var`.
fn at_taps(maps: &[FeatureMap]) -> Result<Targets> {
    let vars = maps
        .iter()
        .map(|m| Var::from_tensor(&m.map.detach()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    Ok(Targets {
        cams: maps.iter().cloned().zip(inputs.iter().cloned()).collect(),
        inputs,
    })
}

/// Grad-CAM at backbone stage `layer` of every input the taps come from: its map enters as a `Var`, the
/// taps of later stages are recomputed from it ([`Backbone::forward_from`](fgvc_backbone::Backbone::forward_from)),
/// those of earlier stages enter as constants.
fn at_stage(
    method: &str,
    explainer: &dyn super::Explain,
    maps: &[FeatureMap],
    layer: &str,
) -> Result<Targets> {
    let backbone = explainer.backbone().ok_or_else(|| {
        TrainError::Msg(format!(
            "explain: method {method:?} does not expose its backbone, so Grad-CAM cannot target layer {layer:?}"
        ))
    })?;
    let names = backbone.stage_names();
    let target = names.iter().position(|n| n == layer).ok_or_else(|| {
        TrainError::Msg(format!(
            "explain: unknown layer {layer:?}: the backbone's stages are {}",
            names.join(", ")
        ))
    })?;
    let mut inputs: Vec<Option<Tensor>> = vec![None; maps.len()];
    let mut cams = Vec::new();
    let mut done = vec![false; maps.len()];
    for i in 0..maps.len() {
        if done[i] {
            continue;
        }
        let Some(of) = &maps[i].stage else {
            return Err(TrainError::Msg(format!(
                "explain: feature map {:?} of method {method:?} is not a backbone stage, so Grad-CAM cannot \
                 target layer {layer:?}",
                maps[i].name
            )));
        };
        // Every tap of the same input (the same images tensor) shares one backbone pass.
        let group: Vec<usize> = (i..maps.len())
            .filter(|&j| {
                maps[j]
                    .stage
                    .as_ref()
                    .is_some_and(|o| o.input.id() == of.input.id())
            })
            .collect();
        let needs = group
            .iter()
            .any(|&j| maps[j].stage.as_ref().is_some_and(|o| o.index >= target));
        let later = if needs {
            let stage = backbone
                .forward_stages(&of.input, false)?
                .into_iter()
                .nth(target)
                .ok_or_else(|| {
                    TrainError::Msg("explain: the backbone returned too few stages".into())
                })?;
            let var = Var::from_tensor(&stage.detach())?.as_tensor().clone();
            let rest = backbone.forward_from(target, &var, false)?;
            cams.push((
                FeatureMap {
                    name: format!("{}{layer}", of.prefix),
                    map: stage,
                    window: maps[i].window.clone(),
                    stage: Some(StageOf {
                        index: target,
                        ..of.clone()
                    }),
                },
                var.clone(),
            ));
            std::iter::once(var).chain(rest).collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        for j in group {
            let index = maps[j].stage.as_ref().map_or(0, |o| o.index);
            inputs[j] = Some(if index >= target {
                later[index - target].clone()
            } else {
                maps[j].map.detach()
            });
            done[j] = true;
        }
    }
    Ok(Targets {
        inputs: inputs
            .into_iter()
            .map(|m| m.expect("every tap is set"))
            .collect(),
        cams,
    })
}

/// The class of each image (the arg-max of `logits` `[N, classes]`, or `class`), its softmax probability and
/// the sum over images of its logit, whose gradient Grad-CAM reads. A `class` out of range is an error naming
/// the range.
fn class_scores(
    name: &str,
    logits: &Tensor,
    class: Option<usize>,
) -> Result<(Vec<usize>, Vec<f32>, Tensor)> {
    let (n, classes) = logits.dims2()?;
    let chosen: Vec<usize> = match class {
        Some(k) if k >= classes => {
            return Err(TrainError::Msg(format!(
                "class {k} is out of range: prediction {name:?} has {classes} classes (0..={})",
                classes - 1
            )))
        }
        Some(k) => vec![k; n],
        None => logits
            .detach()
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|c| c as usize)
            .collect(),
    };
    let probs = candle_nn::ops::softmax_last_dim(&logits.detach().to_dtype(DType::F32)?)?
        .to_vec2::<f32>()?;
    let probabilities = probs.iter().zip(&chosen).map(|(p, &c)| p[c]).collect();
    let index: Vec<u32> = chosen.iter().map(|&c| c as u32).collect();
    let index = Tensor::from_vec(index, (n, 1), logits.device())?;
    let score = logits.gather(&index, 1)?.sum_all()?;
    Ok((chosen, probabilities, score))
}

/// `ReLU(sum_k alpha_k A_k)` with `alpha_k` the spatial mean of the gradient: `[N, h, w]`, f32.
pub fn layer_cam(map: &Tensor, grad: &Tensor) -> Result<Tensor> {
    let map = map.detach().to_dtype(DType::F32)?;
    let grad = grad.to_dtype(DType::F32)?;
    let alpha = grad.mean_keepdim(3)?.mean_keepdim(2)?; // [N, C, 1, 1]
    Ok(map.broadcast_mul(&alpha)?.sum(1)?.relu()?)
}

/// A layer's CAM `[N, h, w]` resampled onto the input pixels its map covers (bilinearly, zero outside a
/// window) and divided by the input area of one of its cells: `[N, H, W]` on the CAM's device.
fn onto_input(cam: &Tensor, tap: &FeatureMap, height: usize, width: usize) -> Result<Tensor> {
    let (n, h, w) = cam.dims3()?;
    match &tap.window {
        None => {
            let up = resize_bilinear(&cam.unsqueeze(1)?, height, width)?.squeeze(1)?;
            Ok(up.affine((h * w) as f64 / (height * width) as f64, 0.0)?)
        }
        Some(boxes) => {
            let boxes = boxes.detach().to_dtype(DType::F32)?;
            if boxes.dims() != [n, 4] {
                return Err(TrainError::Msg(format!(
                    "explain: the window of {:?} should be [{n}, 4], got {:?}",
                    tap.name,
                    boxes.dims()
                )));
            }
            let col = |i: usize| -> Result<Tensor> { Ok(boxes.narrow(1, i, 1)?.squeeze(1)?) };
            let (y0, x0, y1, x1) = (col(0)?, col(1)?, col(2)?, col(3)?);
            // Input pixel p sits at map coordinate (p + 0.5 - lo) * cells / (hi - lo) - 0.5, which is the
            // box sampling of the interval [-lo, len - lo] * cells / (hi - lo).
            let axis = |lo: &Tensor, hi: &Tensor, len: usize, cells: usize| -> Result<Tensor> {
                let per_pixel =
                    (hi.sub(lo)?.clamp(1e-6f32, f32::MAX)?.recip()?).affine(cells as f64, 0.0)?;
                let start = lo.neg()?.mul(&per_pixel)?;
                let end = lo.neg()?.affine(1.0, len as f64)?.mul(&per_pixel)?;
                Ok(box_sampling_weights(&start, &end, len, cells)?)
            };
            let wy = axis(&y0, &y1, height, h)?; // [N, H, h]
            let wx = axis(&x0, &x1, width, w)?; // [N, W, w]
            let up = wy.matmul(cam)?.matmul(&wx.transpose(1, 2)?.contiguous()?)?;
            let cell_area = y1
                .sub(&y0)?
                .mul(&x1.sub(&x0)?)?
                .affine(1.0 / (h * w) as f64, 0.0)?
                .clamp(1e-6f32, f32::MAX)?
                .reshape((n, 1, 1))?;
            Ok(up.broadcast_div(&cell_area)?)
        }
    }
}

/// A panel with its tensors as f32 on the CPU.
fn panel_to_cpu(panel: Panel) -> Result<Panel> {
    let cpu = |t: Tensor| -> Result<Tensor> {
        Ok(t.detach().to_dtype(DType::F32)?.to_device(&Device::Cpu)?)
    };
    let content = match panel.content {
        PanelContent::Map {
            values,
            range,
            discrete,
        } => PanelContent::Map {
            values: cpu(values)?,
            range,
            discrete,
        },
        PanelContent::Boxes(b) => PanelContent::Boxes(cpu(b)?),
        PanelContent::Image(i) => PanelContent::Image(cpu(i)?),
    };
    Ok(Panel { content, ..panel })
}
