//! The geometry a configuration implies, known before anything is built or written: the image sizes its
//! pipelines produce ([`InputSizes`]) and the feature-map sizes of the backbone's stages at those sizes
//! ([`BackboneGeometry`]), so that the methods' checks refuse a grid, a jigsaw or a stage tap that cannot
//! work, naming the key, instead of failing at the first batch.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device};
use fgvc_augment::transforms::{Pipeline, Transform};
use fgvc_backbone::{BackboneDefaults, BackboneKind};
use fgvc_ops::ParamStore;

use super::DataConfig;
use crate::error::{Result, TrainError};
use crate::model::{backbone_options, ModelConfig};

/// A `(height, width)` in pixels.
pub type Size = (u32, u32);

/// The size of the images one pipeline feeds the network, and the key that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSize {
    /// The size, when every image gets it whatever its own size (`None`: a pipeline that keeps the images'
    /// sizes, on a dataset whose sizes are not known in advance).
    pub size: Option<Size>,
    /// The key that sets it: `data.crop` (the presets) or `data.train_pipeline` / `data.test_pipeline`.
    pub key: &'static str,
}

impl InputSize {
    /// `64x64 training images (data.crop = 64)`-style words for messages.
    pub fn describe(&self, what: &str) -> String {
        match self.size {
            Some((h, w)) if self.key == "data.crop" && h == w => {
                format!("the {h}x{w} {what} images (data.crop = {h})")
            }
            Some((h, w)) => format!("the {h}x{w} {what} images ({})", self.key),
            None => format!("the {what} images ({})", self.key),
        }
    }
}

/// The sizes of the training and the evaluation images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSizes {
    /// Training images (what the destructions and the training forward see).
    pub train: InputSize,
    /// Evaluation images (validation, test, `predict`).
    pub test: InputSize,
}

impl InputSizes {
    /// Both, with the word messages use for each.
    pub fn both(&self) -> [(&InputSize, &'static str); 2] {
        [(&self.train, "training"), (&self.test, "evaluation")]
    }
}

impl DataConfig {
    /// The image sizes the pipelines produce. A pipeline that fails for every image (a crop larger than
    /// the resize it follows, an empty size) is an error naming `data.crop` (the presets) or the pipeline's key.
    pub fn input_sizes(&self) -> Result<InputSizes> {
        let (resize, crop) = self.sizes();
        let (train, test) = self.pipelines()?;
        let preset = |explicit: bool, key: &'static str| if explicit { key } else { "data.crop" };
        let known = (self.dataset == "synthetic")
            .then_some((self.synthetic.image_size, self.synthetic.image_size));
        let one = |p: &Pipeline, key: &'static str| -> Result<InputSize> {
            let size = output_size(p, known).map_err(|e| {
                let message = if key == "data.crop" {
                    format!(
                        "{e}: data.crop = {crop} does not fit data.resize = {resize} (preset {:?})",
                        self.augment
                    )
                } else {
                    e.to_string()
                };
                data_error(key, message)
            })?;
            Ok(InputSize { size, key })
        };
        Ok(InputSizes {
            train: one(
                &train,
                preset(self.train_pipeline.is_some(), "data.train_pipeline"),
            )?,
            test: one(
                &test,
                preset(self.test_pipeline.is_some(), "data.test_pipeline"),
            )?,
        })
    }
}

/// The size `p` gives every image, whatever its own size (from its last resize, else its last crop); `None`
/// when it depends on the image, or `p` fails for every image.
pub(crate) fn fixed_size(p: &Pipeline) -> Option<Size> {
    output_size(p, None).ok().flatten()
}

/// The output size of `p` for images of size `known`, or, when the images' size is unknown, from the last
/// step that fixes the size whatever the input (a `resize`, else a crop); `None` when no step does.
fn output_size(p: &Pipeline, known: Option<Size>) -> fgvc_augment::Result<Option<Size>> {
    p.validate()?;
    if let Some(input) = known {
        return p.output_size(input).map(Some);
    }
    let fixes = |s: &Transform| match *s {
        Transform::Resize { height, width, .. } => Some((height, width)),
        _ => None,
    };
    let crops = |s: &Transform| match *s {
        Transform::RandomCrop { height, width, .. } | Transform::CenterCrop { height, width } => {
            Some((height, width))
        }
        _ => None,
    };
    // After a resize every size is fixed, so errors from there on hold for every image; a crop without a
    // resize before it fits some images and not others, so only its output is used.
    let start = match p.steps.iter().rposition(|s| fixes(s).is_some()) {
        Some(i) => Some((i, (1, 1))),
        None => p
            .steps
            .iter()
            .rposition(|s| crops(s).is_some())
            .map(|i| (i + 1, crops(&p.steps[i]).expect("a crop"))),
    };
    let Some((from, input)) = start else {
        return Ok(None);
    };
    p.steps[from..]
        .iter()
        .try_fold(input, |size, step| step.output_size(size))
        .map(Some)
}

fn data_error(key: &str, message: String) -> TrainError {
    TrainError::Config {
        origin: "[data]".into(),
        key: key.into(),
        message,
    }
}

/// One stage of a backbone as far as geometry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageGeometry {
    /// Short name (`layer4`, `block5`, `stage5`).
    pub name: String,
    /// Input size over feature-map size (for inputs divisible by it).
    pub reduction: usize,
}

/// Stages by backbone and stem stride (what they depend on), filled as backbones are first asked for.
type StageCache = HashMap<(BackboneKind, Option<usize>), Vec<StageGeometry>>;

/// The stages of the backbone `[model]` describes, and how their maps round for other inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackboneGeometry {
    /// The backbone.
    pub kind: BackboneKind,
    /// Its stages, shallow to deep.
    pub stages: Vec<StageGeometry>,
}

impl BackboneGeometry {
    /// The geometry of the backbone of `model`, with a method's `defaults` for the options `model` leaves
    /// unset (RMG-PMSI's stride-1 MobileNetV2 stem). The stages are read from the backbone itself, built once
    /// per process at the smallest width (widths do not change strides).
    pub fn of(model: &ModelConfig, defaults: &BackboneDefaults) -> Result<Self> {
        crate::model::check_model(model)?;
        let kind: BackboneKind = model.backbone.parse().expect("checked by check_model");
        let options = backbone_options(model).or_defaults(kind, defaults);
        let key = (kind, options.first_stride);
        static CACHE: OnceLock<Mutex<StageCache>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(stages) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(BackboneGeometry {
                kind,
                stages: stages.clone(),
            });
        }
        let narrow = fgvc_backbone::BackboneOptions {
            base_width: kind.is_resnet().then_some(1),
            width_mult: (kind == BackboneKind::MobileNetV2).then_some(0.05),
            first_stride: options.first_stride,
            num_classes: None,
            dropout: 0.0,
        };
        let store = ParamStore::new(0, DType::F32, &Device::Cpu);
        let net = kind
            .create(&narrow, &store.root())
            .map_err(|e| TrainError::Msg(format!("model.backbone: {e}")))?;
        let stages: Vec<StageGeometry> = net
            .stage_info()
            .iter()
            .map(|s| StageGeometry {
                name: s.name.clone(),
                reduction: s.reduction,
            })
            .collect();
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, stages.clone());
        Ok(BackboneGeometry { kind, stages })
    }

    /// The side of stage `stage`'s map for an input side `input`. ResNet and MobileNetV2 downsample with
    /// padded stride-2 convolutions and pools (`ceil`), VGG with 2x2 max pools (`floor`).
    pub fn side(&self, stage: usize, input: u32) -> u32 {
        let r = self.stages[stage].reduction as u32;
        match self.kind {
            BackboneKind::Vgg16 | BackboneKind::Vgg16Bn => input / r,
            _ => input.div_ceil(r),
        }
    }

    /// The deepest stage's map `(height, width)` at `input`.
    pub fn deepest(&self, input: Size) -> Size {
        let last = self.stages.len() - 1;
        (self.side(last, input.0), self.side(last, input.1))
    }

    /// The deepest stage's name and reduction, for messages (`layer4, stride 32`).
    pub fn describe_deepest(&self) -> String {
        let s = self.stages.last().expect("a backbone has stages");
        format!("{} {}, stride {}", self.kind, s.name, s.reduction)
    }

    /// Checks that every image size of `sizes` leaves the deepest stage a map of at least 1x1.
    pub fn check_input(&self, sizes: &InputSizes) -> Result<()> {
        for (input, what) in sizes.both() {
            if let Some(size) = input.size {
                let (h, w) = self.deepest(size);
                if h == 0 || w == 0 {
                    return Err(data_error(
                        input.key,
                        format!(
                            "{} are too small for {}: its deepest map would be {h}x{w}",
                            input.describe(what),
                            self.describe_deepest()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that a multi-stage head reading the `taps` deepest stages (`key`: the option whose length
    /// sets it) finds them.
    pub fn check_taps(&self, key: &str, taps: usize) -> Result<()> {
        if taps > self.stages.len() {
            let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(option_error(
                key,
                format!(
                    "has {taps} entries, one per stage the heads read, but {} has only {} stages ({})",
                    self.kind,
                    self.stages.len(),
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Checks that an `n` x `n` grid of whole cells fits the `what` (`training`) images `input`: `label` names
/// the grid (`granularity 5`), `purpose` what cuts it (`the jigsaw`), `key` the option that sets it.
pub fn check_grid_divides(
    key: &str,
    label: &str,
    n: usize,
    (input, what): (&InputSize, &str),
    purpose: &str,
) -> Result<()> {
    if let Some((h, w)) = input.size {
        if n == 0 || h as usize % n != 0 || w as usize % n != 0 {
            return Err(option_error(
                key,
                format!(
                    "{label} does not divide {}: {purpose} needs whole cells (change {key} or {})",
                    input.describe(what),
                    input.key
                ),
            ));
        }
    }
    Ok(())
}

impl BackboneGeometry {
    /// Checks that the deepest stage's map at every image size of `sizes` divides into an `n` x `n` grid
    /// of regions (`key`: the option that sets `n`; `purpose`: what pools it).
    pub fn check_deepest_divides(
        &self,
        key: &str,
        n: usize,
        sizes: &InputSizes,
        purpose: &str,
    ) -> Result<()> {
        let reduction = self.stages.last().expect("a backbone has stages").reduction;
        for (input, what) in sizes.both() {
            let Some(size) = input.size else { continue };
            let (h, w) = self.deepest(size);
            if n == 0 || h as usize % n != 0 || w as usize % n != 0 {
                return Err(option_error(
                    key,
                    format!(
                        "grid {n} does not divide the {h}x{w} map of {} at {}: {purpose} needs whole regions \
                         (choose a grid dividing the map, or images of a multiple of {} px)",
                        self.describe_deepest(),
                        input.describe(what),
                        n * reduction
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn option_error(key: &str, message: String) -> TrainError {
    TrainError::Config {
        origin: "[method.options]".into(),
        key: key.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::*;

    fn model(backbone: &str) -> ModelConfig {
        ModelConfig {
            backbone: backbone.into(),
            ..ModelConfig::default()
        }
    }

    /// The formula for map sides agrees with the real networks' forward passes, at sizes the reductions
    /// divide and at sizes they do not.
    #[test]
    fn stage_sides_match_the_networks() {
        let cases = [
            (
                ModelConfig {
                    base_width: Some(2),
                    ..model("resnet18")
                },
                [64u32, 45, 37],
            ),
            (
                ModelConfig {
                    width_mult: Some(0.1),
                    ..model("mobilenet_v2")
                },
                [64, 45, 37],
            ),
            (model("vgg16"), [32, 45, 37]),
        ];
        for (m, sizes) in cases {
            let geometry = BackboneGeometry::of(&m, &BackboneDefaults::default()).unwrap();
            let store = ParamStore::new(0, DType::F32, &Device::Cpu);
            let kind: BackboneKind = m.backbone.parse().unwrap();
            let net = kind.create(&backbone_options(&m), &store.root()).unwrap();
            assert_eq!(geometry.stages.len(), net.stage_info().len());
            for size in sizes {
                let x = Tensor::zeros(
                    (1, 3, size as usize, size as usize),
                    DType::F32,
                    &Device::Cpu,
                )
                .unwrap();
                let maps = net.forward_stages(&x, false).unwrap();
                for (i, map) in maps.iter().enumerate() {
                    let got = map.dims()[2] as u32;
                    assert_eq!(
                        geometry.side(i, size),
                        got,
                        "{} stage {i} at {size}",
                        m.backbone
                    );
                }
            }
        }
    }

    #[test]
    fn a_stride_one_stem_halves_every_reduction() {
        let m = ModelConfig {
            width_mult: Some(0.25),
            ..model("mobilenet_v2")
        };
        let stride1 = BackboneDefaults {
            first_stride: Some(1),
            ..BackboneDefaults::default()
        };
        let two = BackboneGeometry::of(&m, &BackboneDefaults::default()).unwrap();
        let one = BackboneGeometry::of(&m, &stride1).unwrap();
        assert_eq!(two.deepest((448, 448)), (14, 14));
        assert_eq!(one.deepest((448, 448)), (28, 28));
    }

    #[test]
    fn input_sizes_follow_the_pipelines() {
        let data = |text: &str| -> DataConfig { toml::from_str(text).unwrap() };
        let sizes = data("dataset = \"cub\"\ncrop = 448\nresize = 512\n")
            .input_sizes()
            .unwrap();
        assert_eq!(sizes.train.size, Some((448, 448)));
        assert_eq!(sizes.train.key, "data.crop");
        // The synthetic set's images have a known size: 64 * 9 / 8 = 72 resize, 64 crop.
        let sizes = data("").input_sizes().unwrap();
        assert_eq!(sizes.test.size, Some((64, 64)));
        // A crop larger than the resize fails for every image: refused, naming data.crop.
        let err = data("augment = \"dcl\"\ncrop = 80\nresize = 72\n")
            .input_sizes()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.crop")
                && err.contains("data.crop = 80 does not fit data.resize = 72"),
            "{err}"
        );
        // An explicit pipeline without a resize on a file dataset: the crop's size, whatever the images.
        let sizes = data(
            "dataset = \"folder\"\n[train_pipeline]\nnormalize = \"half\"\nsteps = [{ op = \"center_crop\", \
             height = 40, width = 48 }, { op = \"horizontal_flip\" }]\n",
        )
        .input_sizes()
        .unwrap();
        assert_eq!(sizes.train.size, Some((40, 48)));
        assert_eq!(sizes.train.key, "data.train_pipeline");
        // Only a flip: the images keep their sizes, unknown for a file dataset.
        let sizes = data(
            "dataset = \"folder\"\n[train_pipeline]\nnormalize = \"half\"\nsteps = [{ op = \"horizontal_flip\" }]\n",
        )
        .input_sizes()
        .unwrap();
        assert_eq!(sizes.train.size, None);
    }
}
