//! Inference with a trained model: a method restored from a checkpoint file alone (it carries its
//! configuration, class names and test pipeline), or from a run directory, classifies image files through the
//! run's evaluation pipeline, ranking the classes of each image by softmax probability. `fgvc predict` and
//! `fgvc eval` are this module on the command line.
//!
//! ```no_run
//! use candle_core::Device;
//! use fgvc_train::predict::{image_files, Predictor};
//!
//! let predictor = Predictor::from_checkpoint("runs/synthetic-baseline/best.safetensors".as_ref(), &Device::Cpu)?;
//! let images = image_files(&["images/".into()])?;
//! for prediction in predictor.predict_images(&images, 5)? {
//!     match &prediction.top {
//!         Ok(top) => println!("{}: {} ({:.1}%)", prediction.image.display(), top[0].name, 100.0 * top[0].probability),
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! # Ok::<(), fgvc_train::TrainError>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fgvc_augment::transforms::Pipeline;
use fgvc_data::{decode_image, Split};
use rand::SeedableRng;
use serde::Serialize;

use crate::checkpoint::{self, Checkpoint};
use crate::config::Config;
use crate::data::open_split;
use crate::error::{Result, TrainError};
use crate::method::Method;
use crate::registry::build_method;
use crate::run_dir::RunDir;

/// Which weights of a run directory to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// The selected weights (`best.safetensors`), or the last ones when the run selected none.
    #[default]
    Selected,
    /// The weights of the last checkpoint (`checkpoint-last.safetensors`).
    Last,
}

/// The two files a trained model is restored from: the configuration it was trained with and a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The run configuration (`config.toml`).
    pub config: PathBuf,
    /// The checkpoint holding the weights.
    pub checkpoint: PathBuf,
}

impl ModelFiles {
    /// The `config.toml` of `run` and its `weights`.
    pub fn of_run(run: &RunDir, weights: Weights) -> Self {
        let best = run.best_checkpoint();
        let checkpoint = if weights == Weights::Last || !best.exists() {
            run.last_checkpoint()
        } else {
            best
        };
        ModelFiles {
            config: run.config(),
            checkpoint,
        }
    }

    /// A checkpoint file with the `config.toml` beside it (the run directory it was saved in).
    pub fn beside(checkpoint: impl Into<PathBuf>) -> Self {
        let checkpoint = checkpoint.into();
        let config = checkpoint
            .parent()
            .unwrap_or(Path::new("."))
            .join("config.toml");
        ModelFiles { config, checkpoint }
    }
}

/// One class of an image's ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// 1 for the most probable class.
    pub rank: usize,
    /// The class index.
    pub class: usize,
    /// The class name (`class <index>` for an older checkpoint whose training split cannot be opened).
    pub name: String,
    /// The softmax probability of the class under the main prediction.
    pub probability: f32,
}

/// The ranked classes of one image file, or why it could not be classified.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePrediction {
    /// The image file.
    pub image: PathBuf,
    /// Its most probable classes, most probable first; or the error that kept this file from being classified
    /// (it could not be read, decoded or transformed), so one bad file among many loses only its own result.
    pub top: std::result::Result<Vec<Ranked>, String>,
}

/// A trained model ready to classify images: the method with the checkpoint's weights, the configuration it
/// was trained with, and the names of its classes.
pub struct Predictor {
    config: Config,
    method: Box<dyn Method>,
    class_names: Vec<String>,
}

impl Predictor {
    /// Loads the configuration of `files` and restores the model (see [`Predictor::restore`]).
    pub fn open(files: &ModelFiles, device: &Device) -> Result<Self> {
        let config = Config::load(&files.config, &[])?;
        Self::restore(config, &files.checkpoint, device)
    }

    /// Restores the model of `checkpoint` from the file alone: its embedded configuration, class names and
    /// test pipeline ([`InferenceInfo`](checkpoint::InferenceInfo)); no run directory or dataset is read.
    ///
    /// A checkpoint of an fgvc before self-contained checkpoints carries none of these: it is restored with
    /// the `config.toml` beside it (its run directory) and a warning saying what it lacks, and is an error
    /// saying so when there is none.
    pub fn from_checkpoint(checkpoint: &Path, device: &Device) -> Result<Self> {
        Self::from_checkpoint_with(checkpoint, &[], device)
    }

    /// [`Predictor::from_checkpoint`] with `data.*` overrides (`key=value`) of the embedded configuration,
    /// e.g. `data.root=/mnt/CUB_200_2011` to evaluate on a dataset that has moved, or a smaller
    /// `data.eval_batch_size`. The model's own keys cannot be overridden: the weights were trained with them.
    pub fn from_checkpoint_with(
        checkpoint: &Path,
        overrides: &[String],
        device: &Device,
    ) -> Result<Self> {
        if let Some(o) = overrides.iter().find(|o| !o.starts_with("data.")) {
            return Err(TrainError::Config {
                origin: format!("--set {o}"),
                key: o.split('=').next().unwrap_or(o).to_string(),
                message:
                    "only data.* keys can be overridden when restoring a checkpoint: the model was \
                          trained with the rest"
                        .into(),
            });
        }
        let ckpt = checkpoint::load(checkpoint, device)?;
        match &ckpt.inference {
            Some(info) => {
                let config = info.config(&checkpoint.display().to_string(), overrides)?;
                let names = info.class_names.clone();
                Self::build(config, &ckpt, names, checkpoint, device)
            }
            None => {
                let files = ModelFiles::beside(checkpoint);
                if !files.config.is_file() {
                    return Err(TrainError::checkpoint(
                        checkpoint,
                        format!(
                            "it carries no configuration, class names or test pipeline (it was written by an \
                             fgvc before checkpoints were self-contained) and there is no {} beside it: give \
                             the configuration it was trained with (`--config FILE`), or retrain to get a \
                             self-contained checkpoint",
                            files.config.display()
                        ),
                    ));
                }
                tracing::warn!(
                    "{} carries no configuration, class names or test pipeline (written by an fgvc before \
                     checkpoints were self-contained): using {} and the class names of its training split",
                    checkpoint.display(),
                    files.config.display()
                );
                let config = Config::load(&files.config, overrides)?;
                Self::restore_loaded(config, &ckpt, checkpoint, device)
            }
        }
    }

    /// Builds the method `config` describes on `device` and loads the weights of `checkpoint` into it. The
    /// class names (and their number) are the checkpoint's own when it carries them; for an older checkpoint
    /// they come from the configured training split (the number from the test split when the training split
    /// cannot be opened, the names then being `class <index>`).
    pub fn restore(config: Config, checkpoint: &Path, device: &Device) -> Result<Self> {
        let ckpt = checkpoint::load(checkpoint, device)?;
        Self::restore_loaded(config, &ckpt, checkpoint, device)
    }

    /// [`Predictor::restore`] of a checkpoint already read.
    fn restore_loaded(
        config: Config,
        ckpt: &Checkpoint,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        if let Some(info) = &ckpt.inference {
            return Self::build(config, ckpt, info.class_names.clone(), path, device);
        }
        let train = open_split(&config, Split::Train);
        let class_names = match &train {
            Ok(d) => d.class_names().to_vec(),
            Err(_) => {
                let classes = open_split(&config, Split::Test)?.num_classes();
                (0..classes).map(|c| format!("class {c}")).collect()
            }
        };
        Self::build(config, ckpt, class_names, path, device)
    }

    /// The method of `config` for `class_names.len()` classes with the weights of `ckpt` (read from `path`).
    /// The configured pretrained weights are not read: the checkpoint's replace them, and the file may be
    /// gone.
    fn build(
        config: Config,
        ckpt: &Checkpoint,
        class_names: Vec<String>,
        path: &Path,
        device: &Device,
    ) -> Result<Self> {
        fgvc_data::set_max_image_pixels(config.data.max_image_pixels).map_err(|e| {
            TrainError::Config {
                origin: path.display().to_string(),
                key: "data.max_image_pixels".into(),
                message: e.to_string(),
            }
        })?;
        let mut model = config.clone();
        model.model.pretrained = None;
        let method = build_method(&model, class_names.len(), device)?;
        checkpoint::apply_weights(method.store(), &ckpt.weights, true)
            .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
        Ok(Predictor {
            config,
            method,
            class_names,
        })
    }

    /// Checks that a dataset (`name`, for errors) has the model's classes, in the model's label order: an
    /// evaluation on other classes would count right answers as wrong.
    pub fn check_classes(&self, names: &[String], name: &str) -> Result<()> {
        if names == self.class_names.as_slice() {
            return Ok(());
        }
        let detail = match names
            .iter()
            .zip(&self.class_names)
            .position(|(a, b)| a != b)
        {
            _ if names.len() != self.class_names.len() => format!(
                "it has {} classes, the model {}",
                names.len(),
                self.class_names.len()
            ),
            Some(i) => format!(
                "label {i} is {:?} there and {:?} in the model",
                names[i], self.class_names[i]
            ),
            None => unreachable!("equal lengths and no differing name"),
        };
        Err(TrainError::Msg(format!(
            "{name} does not have the classes the model was trained on: {detail}"
        )))
    }

    /// The names of the classes, in label order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The configuration the model was trained with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The restored method.
    pub fn method(&self) -> &dyn Method {
        &*self.method
    }

    /// The name of class `class`.
    pub fn class_name(&self, class: usize) -> String {
        self.class_names
            .get(class)
            .cloned()
            .unwrap_or_else(|| format!("class {class}"))
    }

    /// Images per forward pass: the configured evaluation batch size.
    pub fn batch_size(&self) -> usize {
        let data = &self.config.data;
        data.eval_batch_size.unwrap_or(data.batch_size).max(1)
    }

    /// Decodes image files and stacks them, through the run's evaluation pipeline, into one batch
    /// `(n, 3, height, width)` on the model's device, as the evaluation loader would.
    pub fn load_images(&self, paths: &[PathBuf]) -> Result<Tensor> {
        let (_, pipeline) = self.config.data.pipelines()?;
        self.stack(&pipeline, paths)
    }

    fn stack(&self, pipeline: &Pipeline, paths: &[PathBuf]) -> Result<Tensor> {
        let images = paths
            .iter()
            .map(|path| prepare(pipeline, path))
            .collect::<Result<Vec<_>>>()?;
        self.batch(images)
    }

    /// One batch `(n, 3, height, width)` on the model's device from prepared images of one size.
    fn batch(&self, images: Vec<Prepared>) -> Result<Tensor> {
        let (h, w) = images.first().map_or((0, 0), |p| p.shape);
        let n = images.len();
        let data: Vec<f32> = images.into_iter().flat_map(|p| p.chw).collect();
        let device = self.method.store().device();
        Ok(Tensor::from_vec(data, (n, 3, h, w), device)?)
    }

    /// The softmax probabilities of the classes of each image of `images` `(n, 3, height, width)` under the
    /// method's main prediction, one row per image.
    pub fn probabilities(&self, images: &Tensor) -> Result<Vec<Vec<f32>>> {
        let predictions = self.method.predict(images)?;
        let (_, logits) = predictions.main()?;
        let probabilities = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
        Ok(probabilities.to_vec2::<f32>()?)
    }

    /// Classifies image files in batches of [`Predictor::batch_size`]: each image's `k` most probable classes
    /// (all of them when there are fewer), most probable first. A file that cannot be read, decoded or
    /// transformed gets its error in its [`ImagePrediction::top`] and the others are still classified; a
    /// failure of the model itself, and `k == 0`, are errors of the whole call.
    pub fn predict_images(&self, paths: &[PathBuf], k: usize) -> Result<Vec<ImagePrediction>> {
        if k == 0 {
            return Err(TrainError::Msg(
                "top-k: k must be at least 1 (the number of classes to show per image)".into(),
            ));
        }
        let (_, pipeline) = self.config.data.pipelines()?;
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(self.batch_size()) {
            let mut good = Vec::with_capacity(chunk.len());
            let mut errors = Vec::with_capacity(chunk.len());
            for path in chunk {
                match prepare(&pipeline, path) {
                    Ok(p) => {
                        good.push(p);
                        errors.push(None);
                    }
                    Err(e) => errors.push(Some(e.to_string())),
                }
            }
            let mut rows = if good.is_empty() {
                Vec::new()
            } else {
                self.probabilities(&self.batch(good)?)?
            }
            .into_iter();
            for (path, error) in chunk.iter().zip(errors) {
                let top = match error {
                    Some(e) => Err(e),
                    None => Ok(self.rank(&rows.next().expect("one row per prepared image"), k)),
                };
                out.push(ImagePrediction {
                    image: path.clone(),
                    top,
                });
            }
        }
        Ok(out)
    }

    /// The `k` most probable classes of one row of probabilities.
    fn rank(&self, row: &[f32], k: usize) -> Vec<Ranked> {
        top_k(row, k)
            .into_iter()
            .enumerate()
            .map(|(rank, class)| Ranked {
                rank: rank + 1,
                class,
                name: self.class_name(class),
                probability: row[class],
            })
            .collect()
    }
}

/// One image decoded and transformed by the evaluation pipeline, as CHW floats.
struct Prepared {
    chw: Vec<f32>,
    shape: (usize, usize),
}

/// Decodes `path` and runs it through `pipeline` (deterministic at evaluation; the generator only satisfies
/// the interface).
fn prepare(pipeline: &Pipeline, path: &Path) -> Result<Prepared> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let img = decode_image(path, "predict")?;
    let transformed = pipeline
        .apply(img, &mut rng)
        .map_err(|e| TrainError::Msg(format!("{}: {e}", path.display())))?;
    Ok(Prepared {
        shape: (transformed.height() as usize, transformed.width() as usize),
        chw: pipeline.normalize.to_chw(&transformed),
    })
}

/// The indices of the `k` largest `scores` (all of them when there are fewer), largest first; equal scores
/// in index order.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// The image files among `paths`: a file as given, a directory searched recursively (in name order) for
/// `.jpg`, `.jpeg` and `.png` files, in any letter case. Symbolic links are followed without looping, and a
/// file reached twice (a link, a hard link, a path given twice) is listed once. An error when none is found.
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    // One walker for all the arguments: symbolic links are followed, but no directory is entered twice (a
    // link cycle ends) and no file is listed twice, however many paths reach it.
    let mut walker = fgvc_data::walk::Walker::new();
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(walker.files(p, None, fgvc_data::folder::is_image_file)?);
        } else if walker.add_file(p) {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(TrainError::Msg(format!(
            "no .jpg/.jpeg/.png image found in {paths:?}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted_limited_and_breaks_ties_by_index() {
        let scores = [0.1, 0.4, 0.1, 0.4, 0.0];
        assert_eq!(top_k(&scores, 3), [1, 3, 0]);
        assert_eq!(top_k(&scores, 9), [1, 3, 0, 2, 4]);
        assert!(top_k(&scores, 0).is_empty());
    }

    #[test]
    fn image_files_walk_directories_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("b");
        std::fs::create_dir(&sub).unwrap();
        for f in ["c.PNG", "a.jpg", "notes.txt", "b/d.jpeg"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        // A file given by name is taken whatever its extension.
        let loose = dir.path().join("notes.txt");
        let found = image_files(&[dir.path().to_path_buf(), loose.clone()]).unwrap();
        let expected = [
            dir.path().join("a.jpg"),
            sub.join("d.jpeg"),
            dir.path().join("c.PNG"),
            loose,
        ];
        assert_eq!(found, expected);
        std::fs::remove_file(sub.join("d.jpeg")).unwrap();
        let err = image_files(std::slice::from_ref(&sub))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no .jpg/.jpeg/.png image"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn image_files_survive_link_cycles_and_list_each_file_once() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        for f in ["a.jpg", "sub/b.png"] {
            std::fs::write(root.join(f), b"").unwrap();
        }
        symlink(root, root.join("sub/parent")).unwrap();
        symlink(root.join("a.jpg"), root.join("sub/again.jpg")).unwrap();
        let a = root.join("a.jpg");
        let found = image_files(&[root.to_path_buf(), a.clone(), root.join("sub")]).unwrap();
        assert_eq!(found, [a, root.join("sub/b.png")]);
    }

    #[test]
    fn model_files_of_a_run_prefer_the_selected_weights() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        std::fs::write(run.last_checkpoint(), b"").unwrap();
        let run = RunDir::open(run.root()).unwrap();
        let last = ModelFiles::of_run(&run, Weights::Selected);
        assert_eq!(last.checkpoint, run.last_checkpoint());
        std::fs::write(run.best_checkpoint(), b"").unwrap();
        let selected = ModelFiles::of_run(&run, Weights::Selected);
        assert_eq!(selected.checkpoint, run.best_checkpoint());
        assert_eq!(selected.config, run.config());
        let last = ModelFiles::of_run(&run, Weights::Last);
        assert_eq!(last.checkpoint, run.last_checkpoint());
        assert_eq!(
            ModelFiles::beside(run.best_checkpoint()),
            ModelFiles {
                config: run.config(),
                checkpoint: run.best_checkpoint()
            }
        );
    }
}
