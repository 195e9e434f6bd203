//! Opening a run's datasets and loaders from its `[data]` section.

use std::sync::Arc;

use candle_core::Device;
use fgvc_data::{
    open, Dataset, DatasetKind, Loader, LoaderConfig, OpenOptions, Shard, Split, Synthetic,
    Validation,
};

use crate::config::Config;
use crate::error::{Result, TrainError};

/// The three splits of a run.
#[derive(Clone)]
pub struct Splits {
    /// Training images.
    pub train: Arc<dyn Dataset>,
    /// Validation images (held out of the training set for file datasets; rendered for the synthetic one).
    pub val: Arc<dyn Dataset>,
    /// Test images.
    pub test: Arc<dyn Dataset>,
}

/// Opens `split` of the configured dataset; a missing download says how to get it. Sets the process-wide
/// image pixel limit to `data.max_image_pixels` first.
pub fn open_split(config: &Config, split: Split) -> Result<Arc<dyn Dataset>> {
    let data = &config.data;
    fgvc_data::set_max_image_pixels(data.max_image_pixels).map_err(|e| TrainError::Config {
        origin: "configuration".into(),
        key: "data.max_image_pixels".into(),
        message: e.to_string(),
    })?;
    let kind: DatasetKind =
        data.dataset
            .parse()
            .map_err(|e: fgvc_data::DataError| TrainError::Config {
                origin: "configuration".into(),
                key: "data.dataset".into(),
                message: e.to_string(),
            })?;
    if kind == DatasetKind::Synthetic {
        return Ok(Arc::new(Synthetic::new(data.synthetic, split)?));
    }
    let root = data.root.clone().ok_or_else(|| TrainError::Config {
        origin: "configuration".into(),
        key: "data.root".into(),
        message: format!(
            "the {} dataset needs a root directory; download it with `cargo xtask download {}` (see data/README.md) \
             and set data.root",
            data.dataset,
            kind.as_str()
        ),
    })?;
    let options = OpenOptions {
        validation: Validation::holdout(data.validation_fraction, config.seed),
        bbox_crop: data.bbox_crop,
        ..OpenOptions::default()
    };
    open(kind, &root, split, &options).map_err(|e| match e {
        fgvc_data::DataError::NotADataset { .. } | fgvc_data::DataError::Io { .. } => {
            TrainError::Config {
                origin: "configuration".into(),
                key: "data.root".into(),
                message: format!(
                "{e}\nThe {} dataset is not at {}: download it with `cargo xtask download {}` (see \
                 data/README.md) or point data.root at it",
                data.dataset,
                root.display(),
                kind.as_str()
            ),
            }
        }
        other => other.into(),
    })
}

/// Opens all three splits.
pub fn open_splits(config: &Config) -> Result<Splits> {
    Ok(Splits {
        train: open_split(config, Split::Train)?,
        val: open_split(config, Split::Val)?,
        test: open_split(config, Split::Test)?,
    })
}

/// The training loader (shuffled, last short batch dropped, seeded by the run's seed; skipping bad files
/// with `data.skip_bad`).
pub fn train_loader(config: &Config, dataset: Arc<dyn Dataset>, device: &Device) -> Result<Loader> {
    train_loader_sharded(config, dataset, device, Shard::default())
}

/// [`train_loader`] reading `shard` of every epoch (a process of a data-parallel run).
pub fn train_loader_sharded(
    config: &Config,
    dataset: Arc<dyn Dataset>,
    device: &Device,
    shard: Shard,
) -> Result<Loader> {
    let (train, _) = config.data.pipelines()?;
    let cfg = LoaderConfig {
        skip_bad: config.data.skip_bad,
        ..LoaderConfig::train(config.data.batch_size)
    }
    .with_seed(config.seed)
    .with_threads(config.data.threads)
    .with_shard(shard);
    Ok(Loader::new(dataset, train, cfg, device)?)
}

/// An evaluation loader (dataset order, every image; skipping bad files with `data.skip_bad`).
pub fn eval_loader(config: &Config, dataset: Arc<dyn Dataset>, device: &Device) -> Result<Loader> {
    eval_loader_sharded(config, dataset, device, Shard::default())
}

/// [`eval_loader`] reading `shard` of the split (a process of a data-parallel run).
pub fn eval_loader_sharded(
    config: &Config,
    dataset: Arc<dyn Dataset>,
    device: &Device,
    shard: Shard,
) -> Result<Loader> {
    let (_, test) = config.data.pipelines()?;
    let cfg = LoaderConfig {
        skip_bad: config.data.skip_bad,
        ..LoaderConfig::eval(
            config
                .data
                .eval_batch_size
                .unwrap_or(config.data.batch_size),
        )
    }
    .with_seed(config.seed)
    .with_threads(config.data.threads)
    .with_shard(shard);
    Ok(Loader::new(dataset, test, cfg, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pixel_limit_comes_from_data_max_image_pixels() {
        let config = Config::parse("", "test", &[]).unwrap();
        assert_eq!(
            config.data.max_image_pixels,
            fgvc_data::DEFAULT_MAX_IMAGE_PIXELS
        );
        let zero = Config::parse("", "test", &["data.max_image_pixels=0".into()]).unwrap();
        let err = open_split(&zero, Split::Train).err().unwrap().to_string();
        assert!(
            err.contains("data.max_image_pixels") && err.contains("at least 1"),
            "{err}"
        );
    }
}
