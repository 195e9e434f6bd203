//! Stanford Cars (Cars-196): 196 classes, 8,144 training and 8,041 test images.
//!
//! Three layouts are accepted, at `root` or at `root/stanford_cars`:
//!
//! ```text
//! A) torchvision                         B) MMPretrain                          C) single archive
//!    cars_train/00001.jpg ...               cars_train/, cars_test/                car_ims/000001.jpg ...
//!    cars_test/00001.jpg ...                devkit/cars_meta.mat                   cars_annos.mat
//!    cars_test_annos_withlabels.mat         devkit/cars_train_annos.mat
//!    devkit/cars_meta.mat                   devkit/cars_test_annos_withlabels.mat
//!    devkit/cars_train_annos.mat
//! ```
//!
//! The test labels file is looked for both at the root (torchvision) and in `devkit/` (MMPretrain). The
//! devkit's own `cars_test_annos.mat` has no `class` field and is not enough for the test split. Kaggle's
//! copy nests each folder in itself (`cars_train/cars_train/`); that is accepted too. Annotations are MATLAB
//! v5 struct arrays (`annotations` with `bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname`, or for layout C
//! `relative_im_path, ..., class, test`), read by [`crate::mat5`]; boxes are 1-based inclusive pixels.
//! They are checked, not trusted: no annotation at all, an image listed twice, a class outside
//! `1..=len(class_names)` or a test flag other than 0 and 1 is an error naming the file and element.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dataset::{BBox, CropPolicy, ImageSource, Sample, SampleSet, Split};
use crate::error::{DataError, Result};
use crate::mat5::{field_f64, field_string, read_mat, struct_var, MatFile, MatValue, StructArray};
use crate::split::{OfficialSplits, Validation};
use crate::text::first_existing;

/// The labelled test annotations: `cars_test_annos_withlabels.mat` at the root (torchvision) or in `devkit/`
/// (MMPretrain), or failing that a renamed copy such as a browser's `cars_test_annos_withlabels (1).mat`.
fn test_labels_file(root: &Path) -> Option<PathBuf> {
    const NAME: &str = "cars_test_annos_withlabels";
    let dirs = [root.to_path_buf(), root.join("devkit")];
    first_existing(
        &dirs
            .iter()
            .map(|d| d.join(format!("{NAME}.mat")))
            .collect::<Vec<_>>(),
    )
    .or_else(|| {
        dirs.iter().find_map(|d| {
            let mut found: Vec<PathBuf> = std::fs::read_dir(d)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(NAME) && n.ends_with(".mat"))
                })
                .collect();
            found.sort();
            found.into_iter().next()
        })
    })
}

/// The dataset's display name.
pub const NAME: &str = "Stanford Cars";

/// Where to get Stanford Cars (its original host is gone) and which layouts are accepted.
pub const HINT: &str = "Stanford Cars is no longer served by its original host (ai.stanford.edu). Get the \
images (cars_train/, cars_test/) from the Kaggle dataset jessicali9530/stanford-cars-dataset (its nested \
cars_train/cars_train folders are accepted as they are), the devkit (cars_meta.mat, cars_train_annos.mat) \
from the re-hosted https://github.com/pytorch/vision/files/11644847/car_devkit.tgz, and the test labels \
cars_test_annos_withlabels.mat (185,758 bytes, md5 b0a2b23655a3edd16d84508592a98d10; e.g. from the GitHub \
repository jhpohovey/StanfordCars-Dataset), which goes either at the root or in devkit/. The single-archive \
layout car_ims/ + cars_annos.mat is accepted too. See docs/datasets.md.";

/// Which of the accepted layouts a root holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `cars_train/`, `cars_test/` and `devkit/` (torchvision or MMPretrain; they differ only in where the
    /// test labels file lives).
    Devkit,
    /// `car_ims/` and `cars_annos.mat`.
    SingleArchive,
}

/// The folder that holds the dataset (`root` or `root/stanford_cars`) and its layout.
pub fn detect(root: &Path) -> Result<(PathBuf, Layout)> {
    for dir in [root.to_path_buf(), root.join("stanford_cars")] {
        if dir.join("cars_annos.mat").is_file() && dir.join("car_ims").is_dir() {
            return Ok((dir, Layout::SingleArchive));
        }
        if dir.join("devkit").join("cars_train_annos.mat").is_file() {
            return Ok((dir, Layout::Devkit));
        }
    }
    // Say what is missing, for the layout the root most resembles.
    let missing: PathBuf = if root.join("cars_annos.mat").is_file() {
        "car_ims/".into()
    } else if root.join("car_ims").is_dir() {
        "cars_annos.mat".into()
    } else {
        "devkit/cars_train_annos.mat".into()
    };
    Err(DataError::NotADataset {
        dataset: NAME,
        root: root.to_path_buf(),
        missing,
        hint: HINT.to_string(),
    })
}

/// An image folder, or its Kaggle-style nested copy (`cars_train/cars_train`).
fn image_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let nested = dir.join(name);
    if nested.is_dir() {
        nested
    } else {
        dir
    }
}

fn bbox(s: &StructArray, i: usize, path: &PathBuf) -> Result<Option<BBox>> {
    if !s.has_field("bbox_x1") {
        return Ok(None);
    }
    let x1 = field_f64(s, i, "bbox_x1", path)?;
    let y1 = field_f64(s, i, "bbox_y1", path)?;
    let x2 = field_f64(s, i, "bbox_x2", path)?;
    let y2 = field_f64(s, i, "bbox_y2", path)?;
    // MATLAB boxes are 1-based and inclusive.
    Ok(Some(BBox {
        x: (x1 - 1.0) as f32,
        y: (y1 - 1.0) as f32,
        width: (x2 - x1 + 1.0) as f32,
        height: (y2 - y1 + 1.0) as f32,
    }))
}

fn label(s: &StructArray, i: usize, path: &PathBuf, num_classes: usize) -> Result<u32> {
    let c = field_f64(s, i, "class", path)?;
    if c < 1.0 || c > num_classes as f64 || c.fract() != 0.0 {
        return Err(DataError::mat(
            path,
            format!("element {}: class {c} outside 1..={num_classes}", i + 1),
        ));
    }
    Ok(c as u32 - 1)
}

fn class_names(file: &MatFile, path: &Path) -> Result<Vec<String>> {
    let cell = file
        .get("class_names")
        .and_then(MatValue::as_cell)
        .ok_or_else(|| {
            DataError::mat(
                path,
                format!(
                    "no cell array variable \"class_names\" (variables: {:?})",
                    file.names()
                ),
            )
        })?;
    if cell.items.is_empty() {
        return Err(DataError::mat(path, "class_names is empty"));
    }
    cell.items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_string().ok_or_else(|| {
                DataError::mat(path, format!("class_names{{{}}} is not text", i + 1))
            })
        })
        .collect()
}

/// The `annotations` struct array of `path`, refused when it has no element.
fn annotations<'a>(file: &'a MatFile, path: &Path) -> Result<&'a StructArray> {
    let s = struct_var(file, path, "annotations")?;
    if s.is_empty() {
        return Err(DataError::mat(
            path,
            "\"annotations\" has no element: the file lists no image",
        ));
    }
    Ok(s)
}

/// Remembers the file name of every annotation element: one listed twice is an error naming both elements.
struct SeenFiles<'a> {
    path: &'a Path,
    field: &'static str,
    first: HashMap<String, usize>,
}

impl<'a> SeenFiles<'a> {
    fn new(path: &'a Path, field: &'static str) -> Self {
        SeenFiles {
            path,
            field,
            first: HashMap::new(),
        }
    }

    /// Records the name of element `i` (0-based).
    fn add(&mut self, i: usize, name: &str) -> Result<()> {
        if let Some(first) = self.first.insert(name.to_string(), i) {
            return Err(DataError::mat(
                self.path,
                format!(
                    "element {}: {} {name:?} appears a second time (first as element {}); each image \
                     may be listed once",
                    i + 1,
                    self.field,
                    first + 1
                ),
            ));
        }
        Ok(())
    }
}

fn read_required(root: &Path, rel: &str) -> Result<(PathBuf, MatFile)> {
    let path = root.join(rel);
    if !path.is_file() {
        return Err(DataError::NotADataset {
            dataset: NAME,
            root: root.to_path_buf(),
            missing: rel.into(),
            hint: HINT.to_string(),
        });
    }
    Ok((path.clone(), read_mat(&path)?))
}

fn devkit_split(
    annos_path: &PathBuf,
    annos: &MatFile,
    images: &Path,
    class_names: &[String],
    split: Split,
    bbox_crop: bool,
) -> Result<SampleSet> {
    let s = annotations(annos, annos_path)?;
    let mut seen = SeenFiles::new(annos_path, "fname");
    let mut samples = Vec::with_capacity(s.len());
    for i in 0..s.len() {
        let fname = field_string(s, i, "fname", annos_path)?;
        seen.add(i, &fname)?;
        samples.push(Sample {
            source: ImageSource::Path(images.join(fname)),
            label: label(s, i, annos_path, class_names.len())?,
            bbox: bbox(s, i, annos_path)?,
        });
    }
    Ok(
        SampleSet::new(format!("{NAME} ({split})"), class_names.to_vec(), samples)?.with_crop(
            CropPolicy {
                bottom_rows: 0,
                bbox: bbox_crop,
            },
        ),
    )
}

/// Parse the annotations into the official train and test lists. With `bbox_crop`, images are cropped to
/// their bounding boxes.
pub fn official(root: &Path, bbox_crop: bool) -> Result<OfficialSplits> {
    let (root, layout) = detect(root)?;
    match layout {
        Layout::SingleArchive => {
            let (path, file) = read_required(&root, "cars_annos.mat")?;
            let names = match class_names(&file, &path) {
                Ok(n) => n,
                Err(_) if root.join("devkit/cars_meta.mat").is_file() => {
                    let p = root.join("devkit/cars_meta.mat");
                    class_names(&read_mat(&p)?, &p)?
                }
                Err(e) => return Err(e),
            };
            let s = annotations(&file, &path)?;
            let mut seen = SeenFiles::new(&path, "relative_im_path");
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for i in 0..s.len() {
                let rel = field_string(s, i, "relative_im_path", &path)?;
                seen.add(i, &rel)?;
                let sample = Sample {
                    source: ImageSource::Path(root.join(rel)),
                    label: label(s, i, &path, names.len())?,
                    bbox: bbox(s, i, &path)?,
                };
                let flag = field_f64(s, i, "test", &path)?;
                if flag == 1.0 {
                    test.push(sample);
                } else if flag == 0.0 {
                    train.push(sample);
                } else {
                    return Err(DataError::mat(
                        &path,
                        format!("element {}: test flag {flag} is neither 0 nor 1", i + 1),
                    ));
                }
            }
            let crop = CropPolicy {
                bottom_rows: 0,
                bbox: bbox_crop,
            };
            OfficialSplits::train_test(NAME, names, train, test, crop)
        }
        Layout::Devkit => {
            let (meta_path, meta) = read_required(&root, "devkit/cars_meta.mat")?;
            let names = class_names(&meta, &meta_path)?;
            let (train_path, train_annos) = read_required(&root, "devkit/cars_train_annos.mat")?;
            let train = devkit_split(
                &train_path,
                &train_annos,
                &image_dir(&root, "cars_train"),
                &names,
                Split::Train,
                bbox_crop,
            )?;
            let test = match test_labels_file(&root) {
                Some(p) => read_mat(&p).and_then(|annos| {
                    devkit_split(
                        &p,
                        &annos,
                        &image_dir(&root, "cars_test"),
                        &names,
                        Split::Test,
                        bbox_crop,
                    )
                }),
                None => {
                    let note = if root.join("devkit/cars_test_annos.mat").is_file() {
                        "devkit/cars_test_annos.mat is there, but it has no class labels; "
                    } else {
                        ""
                    };
                    Err(DataError::NotADataset {
                        dataset: NAME,
                        root: root.clone(),
                        missing: "cars_test_annos_withlabels.mat (at the root or in devkit/)"
                            .into(),
                        hint: format!("{note}the test split needs the labelled file. {HINT}"),
                    })
                }
            };
            Ok(OfficialSplits {
                train,
                official_val: None,
                test,
            })
        }
    }
}

/// The samples of `split` (see [`Validation`] for how `Val` is made).
pub fn load(
    root: &Path,
    split: Split,
    validation: &Validation,
    bbox_crop: bool,
) -> Result<SampleSet> {
    official(root, bbox_crop)?.select(split, validation)
}
