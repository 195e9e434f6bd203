//! TensorBoard logging of a run in `<run>/tb/` (on unless `train.tensorboard = false`): the scalars of every
//! metrics record, every prediction's evaluation figures, the augmentation preview of the first batch, and
//! images a caller renders at each evaluation. Logging never fails a run: a directory or file that cannot
//! be written is one warning, and the run goes on without it.
//!
//! | tag | value, at the record's global step |
//! |---|---|
//! | `train/loss`, `train/loss/<name>` | mean loss of the steps since the last `train` record, and of each named partial loss |
//! | `train/accuracy`, `train/images_per_sec` | training accuracy and throughput over those steps |
//! | `lr/<group>` | learning rate of each parameter group (0 while frozen) |
//! | `epoch/loss`, `epoch/loss/<name>`, `epoch/accuracy`, `epoch/images_per_sec`, `epoch/seconds`, `epoch/skipped` | the `epoch` record |
//! | `eval/<split>/<prediction>/{top1,top5,mean_per_class}` | each evaluation, for every named prediction |
//! | `test/<prediction>/{top1,top5,mean_per_class}` | the final test of the selected weights |
//! | `augment/<step>` (image) | the first batch beside each destruction the method trains on (PMG `jigsaw8`..) |
//! | `explain/<name>` (image) | what an [`EvalImages`] hook renders at each evaluation |

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use fgvc_augment::preview_grid;
use fgvc_augment::transforms::Normalize;
use fgvc_tensorboard::EventWriter;
use image::RgbImage;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::eval::EvalReport;
use crate::method::Method;
use crate::metrics::Record;

/// Images of the first batch shown in each augmentation preview.
pub const PREVIEW_IMAGES: usize = 4;

/// Renders named images of the model being trained, after each evaluation (e.g. Grad-CAM heatmaps of a
/// few fixed validation images); each is logged as `explain/<name>` at the evaluation's step. Set with
/// [`Trainer::set_eval_images`](crate::Trainer::set_eval_images); called only while TensorBoard logging is
/// on. An error is a warning: the run goes on.
pub type EvalImages = Box<dyn FnMut(&dyn Method) -> Result<Vec<(String, RgbImage)>>>;

/// The evaluation images a run logs by default: Grad-CAM panels ([`crate::explain::render_panels`]) of the
/// first [`PREVIEW_IMAGES`] images of `loader` (the validation split: fixed images, so the panels of
/// successive evaluations compare), logged as `explain/gradcam`. `None` when the method is not explainable
/// or the split is empty. Rendering runs in evaluation mode and draws no random numbers, so the run's
/// results do not change.
pub fn gradcam_images(
    method: &dyn Method,
    loader: &fgvc_data::Loader,
) -> Result<Option<EvalImages>> {
    if method.explain().is_err() {
        return Ok(None);
    }
    let Some(batch) = loader.epoch(0).next() else {
        return Ok(None);
    };
    let images = batch?.images;
    let images = images.narrow(0, 0, images.dim(0)?.min(PREVIEW_IMAGES))?;
    let normalize = loader.pipeline().normalize;
    let options = crate::explain::RenderOptions::default();
    Ok(Some(Box::new(move |method: &dyn Method| {
        let grid = crate::explain::render_panels(method, &images, &normalize, None, &options)?;
        Ok(vec![("gradcam".to_string(), grid)])
    })))
}

/// The TensorBoard side of a run: an event file (created with the first event), or nothing when logging
/// is off or has failed.
pub struct TbLogger {
    /// Where the event file goes, until it is created.
    pending: Option<(PathBuf, Option<u64>)>,
    writer: Option<EventWriter>,
    failure: Option<String>,
}

impl TbLogger {
    /// Logging off (`train.tensorboard = false`): every call does nothing.
    pub fn off() -> Self {
        TbLogger {
            pending: None,
            writer: None,
            failure: None,
        }
    }

    /// Logging into a new event file in `dir`, created with the first event (an earlier file is never
    /// touched). A run resumed from its checkpoint at `resume_step` marks the restart at the next step, so
    /// that TensorBoard drops what an earlier process logged past the checkpoint, as `metrics.jsonl` does. A
    /// directory that cannot be written is a warning.
    pub fn open(dir: &Path, resume_step: Option<u64>) -> Self {
        TbLogger {
            pending: Some((dir.to_path_buf(), resume_step)),
            ..TbLogger::off()
        }
    }

    /// Whether events are being written (or will be, once there is one).
    pub fn is_on(&self) -> bool {
        self.writer.is_some() || self.pending.is_some()
    }

    /// The event file being written, once created.
    pub fn path(&self) -> Option<&Path> {
        self.writer.as_ref().map(EventWriter::path)
    }

    /// Why logging stopped (the one warning), if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn fail(&mut self, message: String) {
        tracing::warn!("{message}; training goes on");
        self.pending = None;
        self.writer = None;
        self.failure = Some(message);
    }

    /// Runs `f` on the writer, creating it first if it is pending; the first error stops logging with one
    /// warning.
    fn write(&mut self, f: impl FnOnce(&mut EventWriter) -> fgvc_tensorboard::Result<()>) {
        if let Some((dir, resume_step)) = self.pending.take() {
            let created = EventWriter::create(&dir).and_then(|mut w| {
                if let Some(step) = resume_step {
                    w.add_restart(step as i64 + 1)?;
                }
                Ok(w)
            });
            match created {
                Ok(w) => self.writer = Some(w),
                Err(e) => self.fail(format!("TensorBoard logging is off for this run: {e}")),
            }
        }
        if let Some(writer) = &mut self.writer {
            if let Err(e) = f(writer) {
                self.fail(format!("TensorBoard logging stopped: {e}"));
            }
        }
    }

    /// Logs the scalars of a `train` or `epoch` metrics record (an evaluation's come from its report:
    /// [`TbLogger::evaluation`]).
    pub fn record(&mut self, record: &Record) {
        let scalars = record_scalars(record);
        let step = record.step as i64;
        self.write(|w| {
            scalars
                .iter()
                .try_for_each(|(tag, value)| w.add_scalar(tag, step, *value))
        });
    }

    /// Logs top-1, top-5 and mean per-class accuracy of every prediction of `report` at `step`, under
    /// `prefix` (`eval/<split>` or `test`).
    pub fn evaluation(&mut self, prefix: &str, report: &EvalReport, step: u64) {
        self.write(|w| {
            for head in &report.heads {
                let tag = |metric: &str| format!("{prefix}/{}/{metric}", head.name);
                w.add_scalar(&tag("top1"), step as i64, head.top1)?;
                w.add_scalar(&tag("top5"), step as i64, head.top5)?;
                w.add_scalar(&tag("mean_per_class"), step as i64, head.mean_per_class)?;
            }
            Ok(())
        });
    }

    /// Logs `image` as `tag` at `step`.
    pub fn image(&mut self, tag: &str, step: u64, image: &RgbImage) {
        self.write(|w| w.add_image(tag, step as i64, image));
    }

    /// Logs what `hook` renders of `method` as `explain/<name>` images at `step`; its error is a warning.
    pub fn eval_images(&mut self, hook: &mut EvalImages, method: &dyn Method, step: u64) {
        if !self.is_on() {
            return;
        }
        match hook(method) {
            Ok(images) => {
                for (name, image) in images {
                    self.image(&format!("explain/{name}"), step, &image);
                }
            }
            Err(e) => tracing::warn!("the evaluation images for TensorBoard failed: {e}"),
        }
    }

    /// Logs the augmentation preview of a batch: for each destruction `method` trains on, the first
    /// [`PREVIEW_IMAGES`] images (undoing `normalize`) beside their destroyed copies, as `augment/<name>`.
    /// `rng` gives the step's streams, so the preview shows the destructions of that very step.
    pub fn preview(
        &mut self,
        method: &dyn Method,
        images: &Tensor,
        normalize: &Normalize,
        rng: &dyn Fn(u64) -> ChaCha8Rng,
        step: u64,
    ) -> Result<()> {
        if !self.is_on() {
            return Ok(());
        }
        let shown = images.dim(0)?.min(PREVIEW_IMAGES);
        for (name, destroyed) in method.destructions(images, rng)? {
            let original = denormalize(&images.narrow(0, 0, shown)?, normalize)?;
            let destroyed = denormalize(&destroyed.narrow(0, 0, shown)?, normalize)?;
            let grid = preview_grid(&[&original, &destroyed])
                .map_err(|e| crate::TrainError::Msg(format!("augmentation preview: {e}")))?;
            self.image(&format!("augment/{name}"), step, &grid);
        }
        Ok(())
    }

    /// Hands what is buffered to the operating system (at checkpoints and evaluations).
    pub fn flush(&mut self) {
        if self.writer.is_some() {
            self.write(EventWriter::flush);
        }
    }
}

/// The scalars TensorBoard gets of a `train` or `epoch` record, tagged as the module's table says; none
/// for other records.
pub fn record_scalars(record: &Record) -> Vec<(String, f64)> {
    let prefix = match record.kind.as_str() {
        "train" | "epoch" => record.kind.as_str(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut push = |name: &str, value: Option<f64>| {
        if let Some(v) = value {
            out.push((format!("{prefix}/{name}"), v));
        }
    };
    push("loss", record.loss);
    for (name, value) in record.losses.iter().flatten() {
        push(&format!("loss/{name}"), Some(*value));
    }
    push("accuracy", record.train_acc);
    push("images_per_sec", record.images_per_sec);
    push("seconds", record.seconds);
    push("skipped", record.skipped.map(|n| n as f64));
    for (group, lr) in record.lrs.iter().flatten() {
        out.push((format!("lr/{group}"), *lr));
    }
    out
}

/// Pixels in `[0, 1]` of a batch normalised with `normalize`.
fn denormalize(images: &Tensor, normalize: &Normalize) -> Result<Tensor> {
    let device = images.device();
    let channel = |v: [f32; 3]| Tensor::new(&v, device).and_then(|t| t.reshape((1, 3, 1, 1)));
    let images = images.to_dtype(DType::F32)?;
    Ok(images
        .broadcast_mul(&channel(normalize.std)?)?
        .broadcast_add(&channel(normalize.mean)?)?)
}
