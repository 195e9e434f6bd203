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
//! Symbolic links are followed, but a file reached twice (a link to another image of the split) counts once
//! (see [`crate::walk`]). Fewer than two classes with training images is an error: a classifier of one class
//! is always right. Class folders without images are reported in one warning per folder of classes.

use std::path::Path;

use std::collections::HashSet;
use std::sync::Mutex;

use crate::dataset::{ImageSource, Sample, SampleSet, Split};
use crate::error::{DataError, Result};
use crate::split::{OfficialSplits, Validation};
use crate::walk::{sorted_entries, Walker};

/// The dataset's display name.
pub const NAME: &str = "image folder";

/// File extensions that are read as images (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

const HINT: &str =
    "an image folder is either root/train/<class>/*.jpg plus root/test/<class>/*.jpg, or \
root/<class>/*.jpg (one folder per class; .jpg, .jpeg and .png files).";

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
    if classes.len() < 2 {
        return Err(too_few_classes(dir, &classes));
    }
    Ok(classes)
}

fn too_few_classes(dir: &Path, with_images: &[String]) -> DataError {
    DataError::Config(format!(
        "the image folder {} has {} class{} with images ({}): a classifier needs at least two classes \
         (one sub-folder of images per class)",
        dir.display(),
        with_images.len(),
        if with_images.len() == 1 { "" } else { "es" },
        if with_images.is_empty() {
            "none".to_string()
        } else {
            with_images.join(", ")
        }
    ))
}

/// Logs `message` the first time it is asked for `key` in this process: a dataset is opened once per split,
/// and its warnings should not repeat each time.
fn warn_once(key: String, message: impl FnOnce() -> String) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.get_or_insert_with(HashSet::new).insert(key) {
        tracing::warn!("{}", message());
    }
}

/// The samples under `dir/<class>/`, labelled by position in `classes`; a sub-folder not in `classes` is an
/// error.
///
/// Class folders without images are reported in one warning; a file that the walk reaches twice is
/// counted once (the first time) and reported.
fn scan(dir: &Path, classes: &[String], split: Split) -> Result<SampleSet> {
    let mut samples = Vec::new();
    let mut walker = Walker::new();
    let mut empty = Vec::new();
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
        let files = walker.files(&sub, Some(0), |p| {
            p.is_file() && !is_hidden(p) && is_image_file(p)
        })?;
        if files.is_empty() {
            empty.push(name.clone());
        }
        samples.extend(files.into_iter().map(|p| Sample {
            source: ImageSource::Path(p),
            label,
            bbox: None,
        }));
    }
    if !empty.is_empty() {
        warn_once(format!("empty {}", dir.display()), || {
            format!(
                "{} class folder{} of {} ha{} no images: {}",
                empty.len(),
                if empty.len() == 1 { "" } else { "s" },
                dir.display(),
                if empty.len() == 1 { "s" } else { "ve" },
                empty.join(", ")
            )
        });
    }
    if !walker.duplicates().is_empty() {
        warn_once(format!("duplicates {}", dir.display()), || {
            let list: Vec<String> = walker
                .duplicates()
                .iter()
                .map(|(again, first)| format!("{} (= {})", again.display(), first.display()))
                .collect();
            format!(
                "{} file(s) under {} are the same file as another and count once: {}",
                list.len(),
                dir.display(),
                list.join(", ")
            )
        });
    }
    if split == Split::Train {
        let mut with_images: Vec<u32> = samples.iter().map(|s| s.label).collect();
        with_images.dedup();
        if with_images.len() < 2 {
            let names: Vec<String> = with_images
                .iter()
                .map(|&l| classes[l as usize].clone())
                .collect();
            return Err(too_few_classes(dir, &names));
        }
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
