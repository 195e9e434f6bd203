//! One entry point for every dataset kind, for the CLI and configuration files.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::aircraft::Level;
use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};
use crate::split::{OfficialSplits, Validation};
use crate::synthetic::{Synthetic, SyntheticConfig};
use crate::{aircraft, cars, cub, folder};

/// The kinds of dataset this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// CUB-200-2011.
    Cub,
    /// Stanford Cars.
    Cars,
    /// FGVC-Aircraft 2013b.
    Aircraft,
    /// A folder of class sub-folders.
    Folder,
    /// The embedded synthetic dataset (no root needed).
    Synthetic,
}

impl DatasetKind {
    /// All kinds.
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Cub,
        DatasetKind::Cars,
        DatasetKind::Aircraft,
        DatasetKind::Folder,
        DatasetKind::Synthetic,
    ];

    /// The name used on the command line: `cub`, `cars`, `aircraft`, `folder`, `synthetic`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Cub => "cub",
            DatasetKind::Cars => "cars",
            DatasetKind::Aircraft => "aircraft",
            DatasetKind::Folder => "folder",
            DatasetKind::Synthetic => "synthetic",
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        let k = s.to_ascii_lowercase().replace(['-', '_'], "");
        Ok(match k.as_str() {
            "cub" | "cub200" | "cub2002011" | "birds" => DatasetKind::Cub,
            "cars" | "stanfordcars" | "cars196" => DatasetKind::Cars,
            "aircraft" | "fgvcaircraft" | "aircrafts" => DatasetKind::Aircraft,
            "folder" | "imagefolder" => DatasetKind::Folder,
            "synthetic" | "synth" => DatasetKind::Synthetic,
            _ => {
                return Err(DataError::Config(format!(
                    "unknown dataset {s:?}: expected one of cub, cars, aircraft, folder, synthetic"
                )))
            }
        })
    }
}

/// Options common to all kinds; each kind uses the ones that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenOptions {
    /// How the validation split is made (file-based kinds; the synthetic set renders its own).
    pub validation: Validation,
    /// Crop images to their bounding boxes (CUB, Cars, Aircraft).
    pub bbox_crop: bool,
    /// FGVC-Aircraft label level.
    pub aircraft_level: Level,
    /// The synthetic dataset's configuration.
    pub synthetic: SyntheticConfig,
}

/// The official splits of a file-based dataset at `root` (the synthetic kind has none: it is an error).
pub fn official(kind: DatasetKind, root: &Path, options: &OpenOptions) -> Result<OfficialSplits> {
    match kind {
        DatasetKind::Cub => cub::official(root, options.bbox_crop),
        DatasetKind::Cars => cars::official(root, options.bbox_crop),
        DatasetKind::Aircraft => {
            aircraft::official(root, options.aircraft_level, options.bbox_crop)
        }
        DatasetKind::Folder => folder::official(root),
        DatasetKind::Synthetic => Err(DataError::Config(
            "the synthetic dataset has no files; open it with Synthetic::new".into(),
        )),
    }
}

/// Open `split` of a dataset. `root` is ignored for the synthetic kind. A split without images is an error
/// naming the split and the root.
///
/// ```
/// use fgvc_data::{open, DatasetKind, OpenOptions, Split};
/// let test = open(DatasetKind::Synthetic, "".as_ref(), Split::Test, &OpenOptions::default())?;
/// assert_eq!(test.num_classes(), 10);
/// # Ok::<(), fgvc_data::DataError>(())
/// ```
pub fn open(
    kind: DatasetKind,
    root: &Path,
    split: Split,
    options: &OpenOptions,
) -> Result<Arc<dyn Dataset>> {
    Ok(match kind {
        DatasetKind::Synthetic => Arc::new(Synthetic::new(options.synthetic, split)?),
        _ => {
            let set = official(kind, root, options)?.select(split, &options.validation)?;
            if set.is_empty() {
                return Err(DataError::Config(format!(
                    "the dataset is empty: the {split} split of the {kind} dataset at {} has no images \
                     ({})",
                    root.display(),
                    set.name()
                )));
            }
            Arc::new(set)
        }
    })
}
