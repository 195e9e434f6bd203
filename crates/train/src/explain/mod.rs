//! Where a trained model looks: Grad-CAM (Selvaraju et al., ICCV 2017) heatmaps for every named prediction
//! of a method, its own maps (Coarse2Fine's attention and zoom, DCL's region alignment), and their rendering
//! as PNG panels. `fgvc explain` is this module on the command line.
//!
//! A method opts in by implementing [`Explain`] and returning itself from
//! [`Method::explain`](crate::Method::explain): it splits its evaluation forward pass at the feature maps
//! its predictions are computed from ([`Explain::taps`]) and runs the rest from given maps
//! ([`Explain::heads`]). The maps re-enter the heads as candle `Var`s, the only tensors whose gradients
//! candle's backward keeps, so that for each named prediction one backward pass gives the gradient of the
//! chosen class score with respect to every map ([`gradcam`]).
//!
//! ```no_run
//! use candle_core::Device;
//! use fgvc_train::explain::{self, RenderOptions};
//! use fgvc_train::predict::Predictor;
//!
//! let predictor = Predictor::from_checkpoint("runs/synthetic-baseline/best.safetensors".as_ref(), &Device::Cpu)?;
//! let images = predictor.load_images(&["bird.png".into()])?;
//! // Grad-CAM of each named prediction for its predicted class (or `Some(k)` for class k).
//! let explanation = explain::explain(predictor.method(), &images, None)?;
//! for heatmap in &explanation.heatmaps {
//!     println!("{}: class {} ({:.1}%)", heatmap.prediction, heatmap.classes[0], 100.0 * heatmap.probabilities[0]);
//! }
//! // The image beside one overlay per heatmap and the method's own panels.
//! let normalize = predictor.config().data.pipelines()?.1.normalize;
//! let (png, panels) = explain::render_image(&explanation, &images, &normalize, 0, &RenderOptions::default())?;
//! png.save("bird-explained.png").unwrap();
//! # Ok::<(), fgvc_train::TrainError>(())
//! ```

mod colormap;
mod files;
pub mod gradcam;
mod methods;
mod render;

use candle_core::Tensor;
use fgvc_backbone::Backbone;

use crate::error::{Result, TrainError};
use crate::method::Predictions;

pub use colormap::turbo;
pub use files::{explain_files, write_explained, Explained, ExplainedImage, ExplainedPanel};
pub use gradcam::{explain, explain_with, ExplainOptions, Explanation, Heatmap, LayerCam};
pub use render::{render_image, render_panels, PanelInfo, PanelKind, RenderOptions};

/// Grad-CAM support of a method: its evaluation forward pass split at the feature maps its named predictions
/// are computed from.
///
/// The heads must treat the images of a batch independently (evaluation mode does: BatchNorm uses its
/// running statistics and dropout is off), so that one backward pass of the summed class scores gives each
/// image its own gradients.
pub trait Explain {
    /// The evaluation-mode forward pass of `images` `[N, 3, H, W]` up to the feature maps the predictions read,
    /// with the method's own panels.
    fn taps(&self, images: &Tensor) -> Result<Taps>;

    /// The named predictions computed from `maps`, the tensors of [`Taps::maps`] in order (as `Var`s of the
    /// same values): the names, order and values of [`Method::predict`](crate::Method::predict).
    fn heads(&self, maps: &[Tensor]) -> Result<Predictions>;

    /// The backbone whose stage maps [`Explain::taps`] returns (those with a [`FeatureMap::stage`]), so that
    /// Grad-CAM can target another of its stages ([`ExplainOptions::layer`]); `None` when there is none.
    fn backbone(&self) -> Option<&dyn Backbone> {
        None
    }
}

/// What [`Explain::taps`] returns: the feature maps and the method's own panels.
#[derive(Debug, Clone)]
pub struct Taps {
    /// The feature maps the predictions are computed from.
    pub maps: Vec<FeatureMap>,
    /// The method's own maps and images (Coarse2Fine's attention maps and zoom, DCL's region alignment).
    pub panels: Vec<Panel>,
}

/// One feature map of [`Taps`].
#[derive(Debug, Clone)]
pub struct FeatureMap {
    /// The name reports give it: the backbone stage (`layer4`), prefixed for a second pass (`zoom layer4`).
    pub name: String,
    /// The map `[N, C, h, w]`.
    pub map: Tensor,
    /// The part of the input the map sees, when not the whole image: boxes `[N, 4]` `(y0, x0, y1, x1)` in
    /// input pixels (pixel-edge coordinates), as Coarse2Fine's zoom crops them.
    pub window: Option<Tensor>,
    /// Which backbone stage of which input the map is, when it is one: what Grad-CAM at a chosen stage
    /// reruns the backbone from.
    pub stage: Option<StageOf>,
}

/// Where a [`FeatureMap`] comes from: stage `index` of [`Explain::backbone`] run on `input`.
#[derive(Debug, Clone)]
pub struct StageOf {
    /// The images the backbone ran on (the input, or Coarse2Fine's zoomed images).
    pub input: Tensor,
    /// The stage's index in [`Backbone::stage_info`].
    pub index: usize,
    /// What the map's name puts before the stage name (`"zoom "`), given to the maps of other stages.
    pub prefix: String,
}

impl FeatureMap {
    /// A map of the whole input image.
    pub fn whole(name: impl Into<String>, map: Tensor) -> Self {
        FeatureMap {
            name: name.into(),
            map,
            window: None,
            stage: None,
        }
    }

    /// Stage `index` of `input`, named `{prefix}{stage name}`.
    pub fn stage(name: impl Into<String>, map: Tensor, of: StageOf) -> Self {
        FeatureMap {
            stage: Some(of),
            ..FeatureMap::whole(name, map)
        }
    }
}

/// A method-specific panel of an explanation.
#[derive(Debug, Clone)]
pub struct Panel {
    /// What it shows (`attention mean`, `zoomed`), for the sidecar.
    pub name: String,
    /// Per image, a note on what it shows there (which attention map), or empty.
    pub notes: Vec<String>,
    /// The values.
    pub content: PanelContent,
}

/// The values of a [`Panel`].
#[derive(Debug, Clone)]
pub enum PanelContent {
    /// A map `[N, h, w]` over the input image, drawn as a colour overlay resized to it: scaled per image from
    /// 0 (or its minimum, when negative) to its maximum, or over a fixed `range`.
    Map {
        /// The map.
        values: Tensor,
        /// The values the colour map's ends stand for; per image when `None`.
        range: Option<(f32, f32)>,
        /// One value per region, drawn as blocks (DCL's alignment); otherwise resized bilinearly.
        discrete: bool,
    },
    /// Boxes `[N, 4]` `(y0, x0, y1, x1)` in input pixels, drawn on the input image.
    Boxes(Tensor),
    /// Images `[N, 3, H', W']` normalised as the input is (Coarse2Fine's zoomed image).
    Image(Tensor),
}

impl Panel {
    /// A panel without notes.
    pub fn new(name: impl Into<String>, content: PanelContent) -> Self {
        Panel {
            name: name.into(),
            notes: Vec::new(),
            content,
        }
    }
}

/// The error of a method that does not implement [`Explain`].
pub fn not_explainable(method: &str) -> TrainError {
    TrainError::Msg(format!(
        "method {method:?} is not explainable: it does not implement fgvc_train::explain::Explain \
         (see docs/explain.md)"
    ))
}
