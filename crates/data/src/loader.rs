//! The batch loader: decode on a rayon pool, transform with an [`fgvc_augment::transforms::Pipeline`], stack
//! into a [`Batch`] on the requested device, with a bounded prefetch queue.
//!
//! Reproducibility: the order of an epoch is drawn from `(seed, epoch)` and each sample's augmentation from its
//! own generator keyed by `(seed, epoch, index)` (see [`sample_rng`]), so a run gives the same batches whatever
//! the number of threads and however the work is scheduled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use fgvc_augment::transforms::Pipeline;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::rng::{keyed_rng, Domain};
use crate::shard::Shard;

/// How a [`Loader`] batches a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle the order every epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    /// Drop the last, short batch of an epoch, so every batch has exactly `batch_size` samples. Training
    /// wants this: BatchNorm in training mode must never see a batch of one.
    pub drop_last: bool,
    /// Seed of the shuffle and of every sample's augmentation.
    pub seed: u64,
    /// Log, count and skip samples that cannot be loaded (missing, corrupt or truncated files) instead of
    /// failing the epoch. Batches are then refilled from the following samples, so they stay full.
    pub skip_bad: bool,
    /// Batches prepared ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Worker threads that decode and transform; 0 means one per available core.
    pub threads: usize,
    /// The part of every epoch this process reads in a data-parallel run (all of it by default).
    #[serde(default)]
    pub shard: Shard,
}

impl Default for LoaderConfig {
    /// [`LoaderConfig::train`] with a batch of 16.
    fn default() -> Self {
        LoaderConfig::train(16)
    }
}

impl LoaderConfig {
    /// Training: shuffled, last short batch dropped, errors fatal, 2 batches of prefetch, all cores, seed 0.
    pub fn train(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            seed: 0,
            skip_bad: false,
            prefetch: 2,
            threads: 0,
            shard: Shard { rank: 0, world: 1 },
        }
    }

    /// Evaluation: dataset order, every sample kept (the last batch may be short).
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            shuffle: false,
            drop_last: false,
            ..LoaderConfig::train(batch_size)
        }
    }

    /// The same configuration with another seed.
    pub fn with_seed(self, seed: u64) -> Self {
        LoaderConfig { seed, ..self }
    }

    /// The same configuration with another number of threads.
    pub fn with_threads(self, threads: usize) -> Self {
        LoaderConfig { threads, ..self }
    }

    /// The same configuration reading only `shard` of every epoch.
    pub fn with_shard(self, shard: Shard) -> Self {
        LoaderConfig { shard, ..self }
    }

    /// Check the configuration for a dataset of `len` samples.
    pub fn validate(&self, len: usize) -> Result<()> {
        if self.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        if self.prefetch == 0 {
            return Err(DataError::Config("prefetch must be at least 1".into()));
        }
        if self.drop_last && self.batch_size < 2 {
            return Err(DataError::Config(
                "drop_last (training) with batch_size 1: BatchNorm in training mode cannot use a batch of one \
                 (its running variance becomes NaN); use a batch of at least 2"
                    .into(),
            ));
        }
        if len == 0 {
            return Err(DataError::Config("the dataset is empty".into()));
        }
        self.shard.validate()?;
        if self.drop_last && len < self.batch_size {
            return Err(DataError::Config(format!(
                "drop_last with batch_size {} and only {len} samples would give no batch at all",
                self.batch_size
            )));
        }
        if self.shard.is_empty(len, self.batch_size, self.drop_last) {
            return Err(DataError::Config(format!(
                "{} processes with batch_size {} each and only {len} samples would give process {} no \
                 sample at all",
                self.shard.world, self.batch_size, self.shard.rank
            )));
        }
        Ok(())
    }
}

/// A batch of samples on the loader's device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, `[N, 3, H, W]`, `f32`, normalised by the pipeline.
    pub images: Tensor,
    /// Labels, `[N]`, `u32`.
    pub labels: Tensor,
    /// The dataset index of each image.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the batch is empty (the loader never yields one).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The generator that augments sample `index` in epoch `epoch` of a loader seeded with `seed`.
pub fn sample_rng(seed: u64, epoch: u64, index: usize) -> ChaCha8Rng {
    keyed_rng(Domain::Augment, seed, epoch, index as u64)
}

/// One transformed sample: `3 * height * width` CHW floats.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The dataset index.
    pub index: usize,
    /// The label.
    pub label: u32,
    /// Output `(height, width)`.
    pub size: (u32, u32),
    /// CHW values.
    pub data: Vec<f32>,
}

/// One sample after the geometric steps, before normalisation.
struct Transformed {
    index: usize,
    label: u32,
    image: image::RgbImage,
}

struct Shared {
    dataset: Arc<dyn Dataset>,
    pipeline: Pipeline,
    config: LoaderConfig,
    device: Device,
    pool: rayon::ThreadPool,
    skipped_total: AtomicUsize,
}

impl Shared {
    fn transform(&self, epoch: u64, index: usize) -> Result<Transformed> {
        let img = self.dataset.load(index)?;
        let mut rng = sample_rng(self.config.seed, epoch, index);
        let image = self
            .pipeline
            .apply(img, &mut rng)
            .map_err(|source| DataError::Augment {
                what: self.dataset.describe(index),
                source,
            })?;
        Ok(Transformed {
            index,
            label: self.dataset.label(index),
            image,
        })
    }

    fn prepare(&self, epoch: u64, index: usize) -> Result<Prepared> {
        let t = self.transform(epoch, index)?;
        let size = (t.image.height(), t.image.width());
        Ok(Prepared {
            index,
            label: t.label,
            size,
            data: self.pipeline.normalize.to_chw(&t.image),
        })
    }

    /// Normalise the samples straight into one batch buffer (in parallel) and make the tensors.
    fn stack(&self, items: Vec<Transformed>) -> Result<Batch> {
        let first = &items[0];
        let (w, h) = first.image.dimensions();
        if let Some(other) = items.iter().find(|t| t.image.dimensions() != (w, h)) {
            return Err(DataError::ShapeMismatch {
                first: format!("[3, {h}, {w}]"),
                first_what: self.dataset.describe(first.index),
                other: format!("[3, {}, {}]", other.image.height(), other.image.width()),
                other_what: self.dataset.describe(other.index),
            });
        }
        let n = items.len();
        let per = 3 * h as usize * w as usize;
        let mut data = batch_buffer(n * per);
        let normalize = &self.pipeline.normalize;
        self.pool.install(|| {
            data.par_chunks_mut(per)
                .zip(items.par_iter())
                .try_for_each(|(slot, t)| {
                    normalize
                        .write_chw(&t.image, slot)
                        .map_err(|source| DataError::Augment {
                            what: self.dataset.describe(t.index),
                            source,
                        })
                })
        })?;
        let labels: Vec<u32> = items.iter().map(|t| t.label).collect();
        let indices: Vec<usize> = items.iter().map(|t| t.index).collect();
        let images = Tensor::from_vec(data, (n, 3, h as usize, w as usize), &self.device)?;
        let labels = Tensor::from_vec(labels, n, &self.device)?;
        Ok(Batch {
            images,
            labels,
            indices,
        })
    }
}

/// A zeroed buffer for one batch.
///
/// A fresh allocation this large comes straight from the kernel and is faulted in 4 KiB page by 4 KiB page as
/// it is written, which for a batch of 16 images at 448 px (38 MB) costs about as much CPU as normalising it.
/// On Linux, transparent huge pages (in the usual `madvise` mode) cut the number of faults 512-fold.
fn batch_buffer(len: usize) -> Vec<f32> {
    // `vec![0.0; n]` allocates zeroed memory without touching it, so the advice applies before the first write.
    let mut v = vec![0f32; len];
    #[cfg(target_os = "linux")]
    advise_huge_pages(&mut v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(v: &mut [f32]) {
    const HUGE_PAGE: usize = 2 << 20;
    let start = v.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(v);
    let (a, b) = (
        start.next_multiple_of(HUGE_PAGE),
        end / HUGE_PAGE * HUGE_PAGE,
    );
    if b > a {
        // SAFETY: [a, b) lies inside `v`, which we own exclusively. MADV_HUGEPAGE only changes how the kernel
        // backs the range with physical pages, never its contents or validity; a failure changes nothing and
        // is ignored.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
        }
    }
}

/// Turns a [`Dataset`] into batches, one epoch at a time.
///
/// ```
/// use std::sync::Arc;
/// use candle_core::Device;
/// use fgvc_augment::transforms::Pipeline;
/// use fgvc_data::{Loader, LoaderConfig, Split, Synthetic, SyntheticConfig};
///
/// let config = SyntheticConfig { classes: 4, image_size: 32, train_per_class: 4, ..Default::default() };
/// let train = Arc::new(Synthetic::new(config, Split::Train)?);
/// let loader = Loader::new(train, Pipeline::pmg_train_at(36, 32), LoaderConfig::train(8), &Device::Cpu)?;
/// let batches: Vec<_> = loader.epoch(0).collect::<Result<_, _>>()?;
/// assert_eq!(batches.len(), 2);
/// assert_eq!(batches[0].images.dims(), &[8, 3, 32, 32]);
/// # Ok::<(), fgvc_data::DataError>(())
/// ```
#[derive(Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("dataset", &self.shared.dataset.name())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader of `dataset` through `pipeline`, putting batches on `device`. Fails on a bad configuration
    /// (see [`LoaderConfig::validate`]) or pipeline.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        pipeline: Pipeline,
        config: LoaderConfig,
        device: &Device,
    ) -> Result<Self> {
        if dataset.is_empty() {
            return Err(DataError::Config(format!(
                "the dataset is empty: {} has no samples",
                dataset.name()
            )));
        }
        config.validate(dataset.len())?;
        pipeline.validate().map_err(|source| DataError::Augment {
            what: "the pipeline configuration".into(),
            source,
        })?;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            config.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fgvc-data-{i}"))
            .build()
            .map_err(|e| {
                DataError::Config(format!("cannot start {threads} loader threads: {e}"))
            })?;
        Ok(Loader {
            shared: Arc::new(Shared {
                dataset,
                pipeline,
                config,
                device: device.clone(),
                pool,
                skipped_total: AtomicUsize::new(0),
            }),
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.shared.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.shared.config
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.shared.pipeline
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.shared.pool.current_num_threads()
    }

    /// Number of batches of an epoch (of this process' shard) when no sample is skipped.
    pub fn num_batches(&self) -> usize {
        let cfg = &self.shared.config;
        let n = cfg
            .shard
            .len(self.shared.dataset.len(), cfg.batch_size, cfg.drop_last);
        if cfg.drop_last {
            n / cfg.batch_size
        } else {
            n.div_ceil(cfg.batch_size)
        }
    }

    /// The order in which epoch `epoch` visits the dataset (all of it: the order every process of a
    /// data-parallel run draws, of which it reads its [`Shard`]).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shared.dataset.len()).collect();
        if self.shared.config.shuffle {
            order.shuffle(&mut keyed_rng(
                Domain::Shuffle,
                self.shared.config.seed,
                epoch,
                0,
            ));
        }
        order
    }

    /// Load and transform one sample exactly as epoch `epoch` does.
    pub fn prepare(&self, epoch: u64, index: usize) -> Result<Prepared> {
        self.shared.prepare(epoch, index)
    }

    /// Samples skipped as bad (with `skip_bad`) over all epochs so far.
    pub fn skipped_total(&self) -> usize {
        self.shared.skipped_total.load(Ordering::Relaxed)
    }

    /// The batches of epoch `epoch`, prepared in the background. After an error (when `skip_bad` is off) the
    /// iterator ends. Dropping the iterator early stops the background work.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let (tx, rx) = sync_channel(self.shared.config.prefetch);
        let shared = Arc::clone(&self.shared);
        let cfg = &self.shared.config;
        let order = cfg
            .shard
            .select(&self.order(epoch), cfg.batch_size, cfg.drop_last);
        let skipped = Arc::new(AtomicUsize::new(0));
        let skipped_in = Arc::clone(&skipped);
        let handle = std::thread::Builder::new()
            .name("fgvc-data-producer".into())
            .spawn(move || produce(&shared, epoch, &order, &tx, &skipped_in))
            .map_err(|e| DataError::Worker(format!("cannot start the producer thread: {e}")));
        match handle {
            Ok(h) => Epoch {
                rx: Some(rx),
                handle: Some(h),
                skipped,
                done: false,
            },
            Err(e) => {
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(e));
                Epoch {
                    rx: Some(rx),
                    handle: None,
                    skipped,
                    done: false,
                }
            }
        }
    }
}

fn produce(
    shared: &Shared,
    epoch: u64,
    order: &[usize],
    tx: &SyncSender<Result<Batch>>,
    skipped: &AtomicUsize,
) {
    let cfg = &shared.config;
    let mut pending: Vec<Transformed> = Vec::with_capacity(cfg.batch_size);
    for chunk in order.chunks(cfg.batch_size) {
        let results: Vec<Result<Transformed>> = shared.pool.install(|| {
            chunk
                .par_iter()
                .map(|&i| shared.transform(epoch, i))
                .collect()
        });
        for (r, &i) in results.into_iter().zip(chunk) {
            match r {
                Ok(p) => pending.push(p),
                Err(e) if cfg.skip_bad => {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    shared.skipped_total.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        dataset = shared.dataset.name(),
                        epoch,
                        "skipping a bad sample ({}): {e}",
                        shared.dataset.describe(i)
                    );
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        while pending.len() >= cfg.batch_size {
            let rest = pending.split_off(cfg.batch_size);
            let batch = shared.stack(std::mem::replace(&mut pending, rest));
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return;
            }
        }
    }
    if !pending.is_empty() && !cfg.drop_last {
        let _ = tx.send(shared.stack(pending));
    }
}

/// The batches of one epoch (see [`Loader::epoch`]).
pub struct Epoch {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    skipped: Arc<AtomicUsize>,
    done: bool,
}

impl Epoch {
    /// Samples skipped as bad so far in this epoch.
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }

    fn finish(&mut self) -> Option<Result<Batch>> {
        self.done = true;
        self.rx = None;
        if let Some(h) = self.handle.take() {
            if let Err(panic) = h.join() {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Some(Err(DataError::Worker(msg)));
            }
        }
        None
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        match self.rx.as_ref().map(|rx| rx.recv()) {
            Some(Ok(Err(e))) => {
                self.finish();
                Some(Err(e))
            }
            Some(Ok(batch)) => Some(batch),
            Some(Err(_)) | None => self.finish(),
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Closing the channel makes the producer stop at its next send; then wait for it.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("skipped", &self.skipped())
            .field("done", &self.done)
            .finish()
    }
}
