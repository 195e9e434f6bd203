//! Held-out validation splits: a stratified, seeded partition of a training set, so model selection need not
//! touch the test set; plus [`Subset`], a view of any dataset through a list of indices.

use std::sync::Arc;

use image::RgbImage;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::dataset::{CropPolicy, Dataset, Sample, SampleSet, Split};
use crate::error::{DataError, Result};
use crate::rng::{keyed_rng, Domain};

/// Where the validation split comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Validation {
    /// No validation split: [`Split::Train`] is the whole official training set and asking for
    /// [`Split::Val`] is an error.
    #[default]
    None,
    /// Hold out `fraction` of every class of the official training set (seeded, stratified): [`Split::Train`]
    /// is the rest.
    Holdout {
        /// Fraction of each class held out, in `(0, 1)`.
        fraction: f64,
        /// Seed of the partition; the same seed gives the same partition.
        seed: u64,
    },
    /// The dataset's own validation list (FGVC-Aircraft's `val`; then [`Split::Train`] is its `train` list,
    /// not `trainval`). Datasets without one refuse it.
    Official,
}

impl Validation {
    /// A stratified hold-out of `fraction` of each class, seeded by `seed`.
    pub fn holdout(fraction: f64, seed: u64) -> Self {
        Validation::Holdout { fraction, seed }
    }
}

/// Partition indices `0..labels.len()` into `(train, val)`, holding out `fraction` of each class.
///
/// Per class, `round(fraction * n)` samples are held out, but at least one and at most `n - 1` when the
/// class has two or more samples (a class with one sample stays in training). Which samples are held out is
/// drawn per class from `seed` alone, so it does not depend on the other classes or on the order of classes.
/// Both lists come back sorted.
pub fn stratified_holdout(
    labels: &[u32],
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(DataError::Config(format!(
            "validation fraction must be in (0, 1), got {fraction}"
        )));
    }
    let num_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut train = Vec::with_capacity(labels.len());
    let mut val = Vec::new();
    for (class, mut members) in by_class.into_iter().enumerate() {
        let n = members.len();
        let mut n_val = (fraction * n as f64).round() as usize;
        if n >= 2 {
            n_val = n_val.clamp(1, n - 1);
        } else {
            n_val = 0;
        }
        members.shuffle(&mut keyed_rng(Domain::Holdout, seed, class as u64, 0));
        val.extend_from_slice(&members[..n_val]);
        train.extend_from_slice(&members[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    Ok((train, val))
}

/// The official lists of a dataset before a validation split is chosen.
#[derive(Debug)]
pub struct OfficialSplits {
    /// The training list (for FGVC-Aircraft: `trainval`).
    pub train: SampleSet,
    /// The dataset's own validation list when it has one, and the training list without it
    /// (FGVC-Aircraft: `train`), used by [`Validation::Official`].
    pub official_val: Option<(SampleSet, SampleSet)>,
    /// The test list, or why there is none (e.g. Stanford Cars without its test labels file; the error says
    /// where to get it). It is returned when [`Split::Test`] is asked for.
    pub test: Result<SampleSet>,
}

impl OfficialSplits {
    /// Train and test lists of `dataset` sharing its class names and crop policy, with no official
    /// validation list (CUB, Stanford Cars).
    pub(crate) fn train_test(
        dataset: &str,
        class_names: Vec<String>,
        train: Vec<Sample>,
        test: Vec<Sample>,
        crop: CropPolicy,
    ) -> Result<Self> {
        let make = |samples, split: Split| {
            SampleSet::new(format!("{dataset} ({split})"), class_names.clone(), samples)
                .map(|s| s.with_crop(crop))
        };
        Ok(OfficialSplits {
            train: make(train, Split::Train)?,
            official_val: None,
            test: make(test, Split::Test),
        })
    }

    /// The samples of `split` under the validation policy `validation`.
    pub fn select(self, split: Split, validation: &Validation) -> Result<SampleSet> {
        let base = self.train.name().trim_end_matches(" (train)").to_string();
        let named = |set: SampleSet, s: Split| set.with_name(format!("{base} ({s})"));
        match (split, validation) {
            (Split::Test, _) => self.test.map(|t| named(t, Split::Test)),
            (Split::Train, Validation::None) => Ok(named(self.train, Split::Train)),
            (Split::Val, Validation::None) => Err(DataError::NoSuchSplit {
                split,
                reason:
                    "no validation split was requested: use Validation::Holdout { fraction, seed }"
                        .into(),
            }),
            (_, Validation::Holdout { fraction, seed }) => {
                let (train_idx, val_idx) =
                    stratified_holdout(&self.train.labels(), *fraction, *seed)?;
                let idx = if split == Split::Train {
                    train_idx
                } else {
                    val_idx
                };
                Ok(self.train.subset(&idx, format!("{base} ({split})")))
            }
            (_, Validation::Official) => match self.official_val {
                Some((train, val)) => Ok(if split == Split::Train {
                    named(train, Split::Train)
                } else {
                    named(val, Split::Val)
                }),
                None => Err(DataError::NoSuchSplit {
                    split,
                    reason: format!(
                        "{base} has no official validation list: use Validation::Holdout"
                    ),
                }),
            },
        }
    }
}

/// A view of a dataset through a list of indices.
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
    name: String,
}

impl Subset {
    /// The samples of `inner` at `indices`, in that order.
    pub fn new(
        inner: Arc<dyn Dataset>,
        indices: Vec<usize>,
        name: impl Into<String>,
    ) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(DataError::Config(format!(
                "subset index {bad} out of range for {} ({} samples)",
                inner.name(),
                inner.len()
            )));
        }
        Ok(Subset {
            inner,
            indices,
            name: name.into(),
        })
    }

    /// The indices into the underlying dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("name", &self.name)
            .field("len", &self.indices.len())
            .finish()
    }
}

impl Dataset for Subset {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    fn label(&self, index: usize) -> u32 {
        self.inner.label(self.indices[index])
    }
    fn load(&self, index: usize) -> Result<RgbImage> {
        let i = *self.indices.get(index).ok_or_else(|| {
            DataError::Config(format!(
                "{}: index {index} out of range ({} samples)",
                self.name,
                self.indices.len()
            ))
        })?;
        self.inner.load(i)
    }
    fn describe(&self, index: usize) -> String {
        match self.indices.get(index) {
            Some(&i) => self.inner.describe(i),
            None => format!("<index {index}>"),
        }
    }
    fn source_path(&self, index: usize) -> Option<std::path::PathBuf> {
        self.inner.source_path(*self.indices.get(index)?)
    }
}

/// Split any dataset into a stratified, seeded `(train, val)` pair of views (see [`stratified_holdout`]).
pub fn holdout(dataset: Arc<dyn Dataset>, fraction: f64, seed: u64) -> Result<(Subset, Subset)> {
    let (train, val) = stratified_holdout(&dataset.labels(), fraction, seed)?;
    let name = dataset.name().to_string();
    Ok((
        Subset::new(Arc::clone(&dataset), train, format!("{name} [train part]"))?,
        Subset::new(dataset, val, format!("{name} [val part]"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<u32> {
        // class 0: 10 samples, class 1: 5, class 2: 1, class 3: 2
        let mut l = vec![0; 10];
        l.extend([1; 5]);
        l.push(2);
        l.extend([3; 2]);
        l
    }

    #[test]
    fn holdout_is_stratified_disjoint_and_complete() {
        let l = labels();
        let (train, val) = stratified_holdout(&l, 0.2, 7).unwrap();
        let count = |idx: &[usize], c: u32| idx.iter().filter(|&&i| l[i] == c).count();
        assert_eq!(
            [
                count(&val, 0),
                count(&val, 1),
                count(&val, 2),
                count(&val, 3)
            ],
            [2, 1, 0, 1]
        );
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..l.len()).collect::<Vec<_>>());
    }

    #[test]
    fn holdout_is_seeded() {
        let l: Vec<u32> = (0..200).map(|i| i % 4).collect();
        let a = stratified_holdout(&l, 0.25, 1).unwrap();
        assert_eq!(a, stratified_holdout(&l, 0.25, 1).unwrap());
        assert_ne!(a.1, stratified_holdout(&l, 0.25, 2).unwrap().1);
        assert_eq!(a.1.len(), 48 + 4);
    }

    #[test]
    fn holdout_rejects_bad_fractions() {
        assert!(stratified_holdout(&[0, 1], 0.0, 0).is_err());
        assert!(stratified_holdout(&[0, 1], 1.0, 0).is_err());
        assert!(stratified_holdout(&[0, 1], f64::NAN, 0).is_err());
    }
}
