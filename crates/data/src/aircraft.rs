//! FGVC-Aircraft 2013b: 10,000 images at three levels, 100 variants, 70 families or 30 manufacturers.
//!
//! Layout (the root may be `fgvc-aircraft-2013b`, its `data/` folder, or the folder holding
//! `fgvc-aircraft-2013b`):
//!
//! ```text
//! data/images/<7-digit id>.jpg
//! data/images_<level>_{train,val,trainval,test}.txt   "<id> <name>"
//! data/{variants,families,manufacturers}.txt          one name per line; the line order gives the label
//! data/images_box.txt                                 "<id> <xmin> <ymin> <xmax> <ymax>" (1-based)
//! ```
//!
//! Label lines are split on the first space only: names contain spaces and slashes (`Falcon 2000`,
//! `F-16A/B`). Every image carries a 20-pixel photographer banner at the bottom, which the benchmark protocol
//! removes; [`SampleSet::load`](crate::Dataset::load) crops it. The standard protocol trains on `trainval` and
//! tests on `test`, which is what [`Validation::None`] gives; [`Validation::Official`] trains on `train` and
//! validates on `val`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dataset::{BBox, CropPolicy, ImageSource, Sample, SampleSet, Split};
use crate::error::{DataError, Result};
use crate::split::{OfficialSplits, Validation};
use crate::text::{numbers_after_id, read_lines, read_nonempty_lines, split_first, Keyed};

/// The dataset's display name.
pub const NAME: &str = "FGVC-Aircraft";

/// Height of the photographer banner at the bottom of every image, in pixels.
pub const BANNER_ROWS: u32 = 20;

/// Where to get FGVC-Aircraft and what the root must hold.
pub const HINT: &str = "FGVC-Aircraft: download fgvc-aircraft-2013b.tar.gz (2,770,575,360 bytes, md5 \
d4acdd33327262359767eeaa97a4f732) from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ and extract it; \
the root is fgvc-aircraft-2013b (or its data/ folder) holding data/images/ and the \
images_<level>_<split>.txt lists. See docs/datasets.md.";

/// The label hierarchy level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// 100 variants (e.g. `Boeing 737-700`): the standard benchmark level.
    #[default]
    Variant,
    /// 70 families (e.g. `Boeing 737`).
    Family,
    /// 30 manufacturers (e.g. `Boeing`).
    Manufacturer,
}

impl Level {
    /// The level's word in the list file names (`images_variant_test.txt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Variant => "variant",
            Level::Family => "family",
            Level::Manufacturer => "manufacturer",
        }
    }

    fn classes_file(self) -> &'static str {
        match self {
            Level::Variant => "variants.txt",
            Level::Family => "families.txt",
            Level::Manufacturer => "manufacturers.txt",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "variant" | "variants" => Ok(Level::Variant),
            "family" | "families" => Ok(Level::Family),
            "manufacturer" | "manufacturers" => Ok(Level::Manufacturer),
            other => Err(DataError::Config(format!(
                "unknown aircraft level {other:?}: expected variant, family or manufacturer"
            ))),
        }
    }
}

/// The `data/` folder under `root`.
pub fn resolve_data_dir(root: &Path) -> PathBuf {
    let candidates = [
        root.to_path_buf(),
        root.join("data"),
        root.join("fgvc-aircraft-2013b").join("data"),
    ];
    candidates
        .iter()
        .find(|d| d.join("images_variant_test.txt").is_file() || d.join("variants.txt").is_file())
        .cloned()
        .unwrap_or_else(|| root.join("data"))
}

/// One image list, `images_<level>_<which>.txt`: the image ids it lists, with their lines, and its samples.
struct List {
    ids: Keyed<()>,
    samples: Vec<Sample>,
}

fn list(
    data: &Path,
    level: Level,
    which: &str,
    label_of: &HashMap<&str, u32>,
    boxes: &Keyed<BBox>,
) -> Result<List> {
    let path = data.join(format!("images_{level}_{which}.txt"));
    let images = data.join("images");
    let mut ids = Keyed::new(&path, "image");
    let mut samples = Vec::new();
    for l in read_nonempty_lines(data, &path, NAME, HINT)? {
        let (id, name) = split_first(&l, &path)?;
        let label = *label_of.get(name.as_str()).ok_or_else(|| {
            DataError::parse(
                &path,
                l.number,
                format!("{name:?} is not listed in {}", level.classes_file()),
            )
        })?;
        ids.insert(id.clone(), (), l.number)?;
        samples.push(Sample {
            source: ImageSource::Path(images.join(format!("{id}.jpg"))),
            label,
            bbox: boxes.get(&id).copied(),
        });
    }
    Ok(List { ids, samples })
}

/// An error when an image of `a` is also in `b`: lists meant to be disjoint (train and test) must be.
fn disjoint(a: &List, b: &List) -> Result<()> {
    a.ids.disjoint_from(&b.ids)
}

/// Parse the lists of `level` into the official splits: train = `trainval`, official validation =
/// (`train`, `val`), test = `test`. Images lose their bottom banner; with `bbox_crop` they are also cropped
/// to their box (allowed for training only by the benchmark protocol).
///
/// The lists are checked, not trusted: an empty list, an image listed twice in one list, an image in both
/// `trainval` and `test` (or `train` and `val`), a name that the class list lacks, or a class name listed
/// twice is an error naming the file and line.
pub fn official(root: &Path, level: Level, bbox_crop: bool) -> Result<OfficialSplits> {
    let data = resolve_data_dir(root);
    let classes_path = data.join(level.classes_file());
    let mut names: Keyed<()> = Keyed::new(&classes_path, "class name");
    let mut class_names = Vec::new();
    for l in read_nonempty_lines(&data, &classes_path, NAME, HINT)? {
        names.insert(l.text.clone(), (), l.number)?;
        class_names.push(l.text);
    }
    let label_of: HashMap<&str, u32> = class_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();

    let boxes_path = data.join("images_box.txt");
    let mut boxes = Keyed::new(&boxes_path, "image");
    if boxes_path.is_file() {
        for l in read_lines(&data, &boxes_path, NAME, HINT)? {
            let (id, v) = numbers_after_id(&l, &boxes_path, 4)?;
            // 1-based inclusive corners.
            let bbox = BBox {
                x: (v[0] - 1.0) as f32,
                y: (v[1] - 1.0) as f32,
                width: (v[2] - v[0] + 1.0) as f32,
                height: (v[3] - v[1] + 1.0) as f32,
            };
            boxes.insert(id, bbox, l.number)?;
        }
    } else if bbox_crop {
        return Err(DataError::NotADataset {
            dataset: NAME,
            root: data.clone(),
            missing: "images_box.txt".into(),
            hint: format!("bounding-box cropping needs it. {HINT}"),
        });
    }

    let crop = CropPolicy {
        bottom_rows: BANNER_ROWS,
        bbox: bbox_crop,
    };
    let make = |list: List, split: Split| -> Result<SampleSet> {
        Ok(SampleSet::new(
            format!("{NAME} {level} ({split})"),
            class_names.clone(),
            list.samples,
        )?
        .with_crop(crop))
    };
    let read = |which: &str| list(&data, level, which, &label_of, &boxes);
    let trainval = read("trainval")?;
    // The official train/val pair is optional; when both files are there, they must be sound.
    let pair = |which: &str| data.join(format!("images_{level}_{which}.txt")).is_file();
    let official_val = if pair("train") && pair("val") {
        let (train, val) = (read("train")?, read("val")?);
        disjoint(&train, &val)?;
        Some((make(train, Split::Train)?, make(val, Split::Val)?))
    } else {
        None
    };
    let test = read("test").and_then(|test| {
        disjoint(&trainval, &test)?;
        make(test, Split::Test)
    });
    Ok(OfficialSplits {
        train: make(trainval, Split::Train)?,
        official_val,
        test,
    })
}

/// The samples of `split` at `level` (see [`Validation`]; [`Validation::Official`] uses the `train`/`val`
/// lists).
pub fn load(
    root: &Path,
    level: Level,
    split: Split,
    validation: &Validation,
    bbox_crop: bool,
) -> Result<SampleSet> {
    official(root, level, bbox_crop)?.select(split, validation)
}
