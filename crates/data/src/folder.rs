//! Folders of images, one sub-folder per class, like torchvision's `ImageFolder`.
//!
//! Two layouts:
//!
//! * **Split**: `root/train/<class>/*` and `root/test/<class>/*` (and optionally `root/val/<class>/*`, used by
//!   [`Validation::Official`]).
//! * **Single**: `root/<class>/*`; every image is a training image, [`Validation::Holdout`] makes a seeded,
//!   stratified validation split, and there is no test split.
//!
//! Classes are the sorted names of the training sub-folders; labels are their ranks. Files are taken in
//! sorted order, and only `.jpg`, `.jpeg` and `.png` files (any case) that do not start with a dot count.

use std::path::{Path, PathBuf};

use crate::dataset::{ImageSource, Sample, SampleSet, Split};
use crate::error::{DataError, Result};
use crate::split::{OfficialSplits, Validation};

/// The dataset's display name.
pub const NAME: &str = "image folder";

/// File extensions that are read as images (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

const HINT: &str =
    "an image folder is either root/train/<class>/*.jpg plus root/test/<class>/*.jpg, or \
root/<class>/*.jpg (one folder per class; .jpg, .jpeg and .png files).";

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<_>>()?;
    out.sort();
    Ok(out)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Whether `path` has an accepted image extension.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The sorted class sub-folder names of `dir`.
fn class_dirs(root: &Path, dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(DataError::NotADataset {
            dataset: NAME,
            root: root.to_path_buf(),
            missing: dir.strip_prefix(root).unwrap_or(dir).to_path_buf(),
            hint: HINT.to_string(),
        });
    }
    let classes: Vec<String> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    if classes.is_empty() {
        return Err(DataError::NotADataset {
            dataset: NAME,
            root: root.to_path_buf(),
            missing: dir.strip_prefix(root).unwrap_or(dir).join("<class>/"),
            hint: format!("{} has no class sub-folders; {HINT}", dir.display()),
        });
    }
    Ok(classes)
}

/// The samples under `dir/<class>/`, labelled by position in `classes`; a sub-folder not in `classes` is an
/// error.
fn scan(dir: &Path, classes: &[String], split: Split) -> Result<SampleSet> {
    let mut samples = Vec::new();
    for sub in sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
    {
        let name = sub
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let label = classes.iter().position(|c| *c == name).ok_or_else(|| {
            DataError::Config(format!(
                "{} is a class folder that the training folder does not have; classes must match",
                sub.display()
            ))
        })? as u32;
        let files: Vec<PathBuf> = sorted_entries(&sub)?
            .into_iter()
            .filter(|p| p.is_file() && !is_hidden(p) && is_image_file(p))
            .collect();
        if files.is_empty() {
            tracing::warn!("class folder {} has no images", sub.display());
        }
        samples.extend(files.into_iter().map(|p| Sample {
            source: ImageSource::Path(p),
            label,
            bbox: None,
        }));
    }
    SampleSet::new(
        format!("{NAME} {} ({split})", dir.display()),
        classes.to_vec(),
        samples,
    )
}

/// Scan the folder into its official splits (see the module docs for the two layouts).
pub fn official(root: &Path) -> Result<OfficialSplits> {
    let train_dir = root.join("train");
    if train_dir.is_dir() {
        let classes = class_dirs(root, &train_dir)?;
        let train = scan(&train_dir, &classes, Split::Train)?;
        let test_dir = root.join("test");
        let test = if test_dir.is_dir() {
            scan(&test_dir, &classes, Split::Test)
        } else {
            Err(DataError::NotADataset {
                dataset: NAME,
                root: root.to_path_buf(),
                missing: "test/".into(),
                hint: HINT.to_string(),
            })
        };
        let val_dir = root.join("val");
        let official_val = if val_dir.is_dir() {
            Some((train.clone(), scan(&val_dir, &classes, Split::Val)?))
        } else {
            None
        };
        Ok(OfficialSplits {
            train,
            official_val,
            test,
        })
    } else {
        let classes = class_dirs(root, root)?;
        let train = scan(root, &classes, Split::Train)?;
        let test = Err(DataError::NoSuchSplit {
            split: Split::Test,
            reason: format!(
                "{} is a single folder of classes (no train/ and test/ sub-folders); \
                 hold out a validation split instead",
                root.display()
            ),
        });
        Ok(OfficialSplits {
            train,
            official_val: None,
            test,
        })
    }
}

/// The samples of `split` (see [`Validation`] for how `Val` is made).
pub fn load(root: &Path, split: Split, validation: &Validation) -> Result<SampleSet> {
    official(root)?.select(split, validation)
}
