//! CUB-200-2011 (Caltech-UCSD Birds): 200 classes, 5,994 training and 5,794 test images.
//!
//! The index files are joined by image id, never by line order: `images.txt` (`<id> <relative path>`),
//! `image_class_labels.txt` (`<id> <class id>`), `train_test_split.txt` (`<id> <1 = train, 0 = test>`),
//! `classes.txt` (`<class id> <name>`) and, when present, `bounding_boxes.txt` (`<id> <x> <y> <w> <h>`).
//! Class ids are 1-based in the files; labels are their 0-based rank (for CUB simply `id - 1`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dataset::{BBox, CropPolicy, ImageSource, Sample, SampleSet, Split};
use crate::error::{DataError, Result};
use crate::split::{OfficialSplits, Validation};
use crate::text::{numbers_after_id, read_lines, read_nonempty_lines, split_first, Keyed};

/// The dataset's display name.
pub const NAME: &str = "CUB-200-2011";

/// Where to get CUB and what the root must hold.
pub const HINT: &str = "CUB-200-2011: download CUB_200_2011.tgz (1,150,585,339 bytes, md5 \
97eceeb196236b17998738112f37df78) from https://data.caltech.edu/records/65de6-vp158 and extract it; \
the root is the CUB_200_2011 folder holding images.txt, image_class_labels.txt, train_test_split.txt, \
classes.txt and images/ (its parent is accepted too). See docs/datasets.md.";

/// The folder that holds `images.txt`: `root` itself or `root/CUB_200_2011`.
pub fn resolve_root(root: &Path) -> PathBuf {
    let nested = root.join("CUB_200_2011");
    if !root.join("images.txt").exists() && nested.join("images.txt").exists() {
        nested
    } else {
        root.to_path_buf()
    }
}

/// Parse the index files into the official train and test lists. With `bbox_crop`, images are cropped to
/// their bounding box (which then must exist in `bounding_boxes.txt`).
///
/// The indexes are checked, not trusted: an empty file, a malformed line, an id listed twice in one file
/// (even with the same value), a class id that `classes.txt` lacks, an image id that one index has and
/// another lacks, or one image file listed under two ids is an error naming the file and line.
pub fn official(root: &Path, bbox_crop: bool) -> Result<OfficialSplits> {
    let root = resolve_root(root);
    let lines = |name: &str| {
        let p = root.join(name);
        read_nonempty_lines(&root, &p, NAME, HINT).map(|l| (p, l))
    };

    let (classes_path, class_lines) = lines("classes.txt")?;
    let mut class_ids: Keyed<()> = Keyed::new(&classes_path, "class id");
    let mut classes: Vec<(u64, String)> = Vec::with_capacity(class_lines.len());
    for l in &class_lines {
        let (id, name) = split_first(l, &classes_path)?;
        let number: u64 = id.parse().map_err(|_| {
            DataError::parse(
                &classes_path,
                l.number,
                format!("class id {id:?} is not an integer"),
            )
        })?;
        class_ids.insert(number.to_string(), (), l.number)?;
        classes.push((number, name));
    }
    classes.sort_by_key(|c| c.0);
    let label_of: HashMap<u64, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.0, i as u32))
        .collect();
    let class_names: Vec<String> = classes.into_iter().map(|c| c.1).collect();

    let (labels_path, label_lines) = lines("image_class_labels.txt")?;
    let mut labels: Keyed<u32> = Keyed::new(&labels_path, "image id");
    for l in &label_lines {
        let (id, class) = split_first(l, &labels_path)?;
        let label = class
            .parse::<u64>()
            .ok()
            .and_then(|c| label_of.get(&c).copied())
            .ok_or_else(|| {
                DataError::parse(
                    &labels_path,
                    l.number,
                    format!(
                        "class {class:?} is not listed in classes.txt (class ids: {})",
                        id_range(&label_of)
                    ),
                )
            })?;
        labels.insert(id, label, l.number)?;
    }

    let (split_path, split_lines) = lines("train_test_split.txt")?;
    let mut is_train: Keyed<bool> = Keyed::new(&split_path, "image id");
    for l in &split_lines {
        let (id, flag) = split_first(l, &split_path)?;
        let train = match flag.as_str() {
            "1" => true,
            "0" => false,
            _ => {
                return Err(DataError::parse(
                    &split_path,
                    l.number,
                    format!("expected 0 or 1, got {flag:?}"),
                ))
            }
        };
        is_train.insert(id, train, l.number)?;
    }

    let boxes_path = root.join("bounding_boxes.txt");
    let mut boxes: Keyed<BBox> = Keyed::new(&boxes_path, "image id");
    if boxes_path.exists() {
        for l in read_lines(&root, &boxes_path, NAME, HINT)? {
            let (id, v) = numbers_after_id(&l, &boxes_path, 4)?;
            let bbox = BBox {
                x: v[0] as f32,
                y: v[1] as f32,
                width: v[2] as f32,
                height: v[3] as f32,
            };
            boxes.insert(id, bbox, l.number)?;
        }
    } else if bbox_crop {
        return Err(DataError::NotADataset {
            dataset: NAME,
            root: root.clone(),
            missing: "bounding_boxes.txt".into(),
            hint: format!("bounding-box cropping needs it. {HINT}"),
        });
    }

    let (images_path, image_lines) = lines("images.txt")?;
    let images_dir = root.join("images");
    let mut ids: Keyed<()> = Keyed::new(&images_path, "image id");
    let mut files: Keyed<()> = Keyed::new(&images_path, "image file");
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for l in &image_lines {
        let (id, rel) = split_first(l, &images_path)?;
        ids.insert(id.clone(), (), l.number)?;
        files.insert(rel.clone(), (), l.number)?;
        let missing = |other: &Path| {
            DataError::parse(
                &images_path,
                l.number,
                format!("image id {id} has no line in {}", other.display()),
            )
        };
        let label = *labels.get(&id).ok_or_else(|| missing(&labels_path))?;
        let train_flag = *is_train.get(&id).ok_or_else(|| missing(&split_path))?;
        let bbox = boxes.get(&id).copied();
        if bbox_crop && bbox.is_none() {
            return Err(missing(&boxes_path));
        }
        let sample = Sample {
            source: ImageSource::Path(images_dir.join(rel)),
            label,
            bbox,
        };
        if train_flag {
            train.push(sample);
        } else {
            test.push(sample);
        }
    }
    let listed = |id: &str| ids.contains(id);
    labels.all_in(listed, &images_path)?;
    is_train.all_in(listed, &images_path)?;
    boxes.all_in(listed, &images_path)?;
    let crop = CropPolicy {
        bottom_rows: 0,
        bbox: bbox_crop,
    };
    OfficialSplits::train_test(NAME, class_names, train, test, crop)
}

/// The smallest and largest class id, for messages.
fn id_range(label_of: &HashMap<u64, u32>) -> String {
    match (label_of.keys().min(), label_of.keys().max()) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => "none".into(),
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
