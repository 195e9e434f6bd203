//! `fgvc data verify`: count a dataset's samples per split and class, and find missing and unreadable files.

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::{decode_image, Dataset, Split};
use crate::error::{DataError, Result};
use crate::image_limit::check_image_header;
use crate::open::{official, DatasetKind, OpenOptions};
use crate::synthetic::Synthetic;

/// How thoroughly to check each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Check {
    /// The file exists.
    Exists,
    /// The file exists and its header names a supported format and a size within the pixel limit
    /// ([`crate::set_max_image_pixels`]).
    Header,
    /// The whole image decodes (catches truncated and corrupt files; the slowest).
    #[default]
    Decode,
}

/// The findings for one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    /// The split.
    pub split: Split,
    /// The dataset's name for this split.
    pub name: String,
    /// Samples listed.
    pub total: usize,
    /// Samples per class, indexed by label.
    pub per_class: Vec<usize>,
    /// Listed files that do not exist.
    pub missing: Vec<PathBuf>,
    /// Files that exist but cannot be read or decoded, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl SplitReport {
    /// Whether the split lists images and every one is present and readable.
    pub fn is_ok(&self) -> bool {
        self.total > 0 && self.missing.is_empty() && self.unreadable.is_empty()
    }
}

/// The findings for a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The dataset kind.
    pub kind: DatasetKind,
    /// The root that was checked.
    pub root: PathBuf,
    /// The check that was run on each image.
    pub check: Check,
    /// Class names.
    pub class_names: Vec<String>,
    /// One report per split that could be opened.
    pub splits: Vec<SplitReport>,
    /// Splits that could not be opened, with the reason (e.g. Stanford Cars without its test labels).
    pub unavailable: Vec<(Split, String)>,
}

impl VerifyReport {
    /// Whether every split opened and every image is present and readable.
    pub fn is_ok(&self) -> bool {
        self.unavailable.is_empty() && self.splits.iter().all(SplitReport::is_ok)
    }
}

/// Check one dataset split: every sample's file (or, for in-memory and synthetic samples with
/// [`Check::Decode`], the sample itself), in parallel on the current rayon pool.
pub fn verify_split(dataset: &dyn Dataset, split: Split, check: Check) -> SplitReport {
    enum Finding {
        Ok,
        Missing(PathBuf),
        Unreadable(PathBuf, String),
    }
    let findings: Vec<Finding> = (0..dataset.len())
        .into_par_iter()
        .map(|i| {
            let Some(path) = dataset.source_path(i) else {
                return match check {
                    Check::Decode => match dataset.load(i) {
                        Ok(_) => Finding::Ok,
                        Err(e) => {
                            Finding::Unreadable(PathBuf::from(dataset.describe(i)), e.to_string())
                        }
                    },
                    _ => Finding::Ok,
                };
            };
            if !path.is_file() {
                return Finding::Missing(path);
            }
            let result = match check {
                Check::Exists => Ok(()),
                Check::Header => check_image_header(&path).map(|_| ()),
                Check::Decode => decode_image(&path, dataset.name()).map(|_| ()),
            };
            match result {
                Ok(()) => Finding::Ok,
                Err(DataError::MissingImage { path, .. }) => Finding::Missing(path),
                Err(e) => Finding::Unreadable(path, e.to_string()),
            }
        })
        .collect();
    let mut report = SplitReport {
        split,
        name: dataset.name().to_string(),
        total: dataset.len(),
        per_class: dataset.class_counts(),
        missing: Vec::new(),
        unreadable: Vec::new(),
    };
    for f in findings {
        match f {
            Finding::Ok => {}
            Finding::Missing(p) => report.missing.push(p),
            Finding::Unreadable(p, e) => report.unreadable.push((p, e)),
        }
    }
    report
}

/// Verify a dataset at `root`: its official training list, its official validation list when it has one,
/// and its test list. A root that does not look like the dataset is an error that says what is missing; a
/// split that cannot be opened (e.g. Cars' test split without its labels file) is listed in
/// [`VerifyReport::unavailable`].
pub fn verify(
    kind: DatasetKind,
    root: &Path,
    options: &OpenOptions,
    check: Check,
) -> Result<VerifyReport> {
    let mut splits = Vec::new();
    let mut unavailable = Vec::new();
    let class_names;
    if kind == DatasetKind::Synthetic {
        let train = Synthetic::new(options.synthetic, Split::Train)?;
        class_names = train.class_names().to_vec();
        for split in Split::ALL {
            splits.push(verify_split(
                &Synthetic::new(options.synthetic, split)?,
                split,
                check,
            ));
        }
    } else {
        let o = official(kind, root, options)?;
        class_names = o.train.class_names().to_vec();
        splits.push(verify_split(&o.train, Split::Train, check));
        if let Some((_, val)) = &o.official_val {
            splits.push(verify_split(val, Split::Val, check));
        }
        match &o.test {
            Ok(test) => splits.push(verify_split(test, Split::Test, check)),
            Err(e) => unavailable.push((Split::Test, e.to_string())),
        }
    }
    Ok(VerifyReport {
        kind,
        root: root.to_path_buf(),
        check,
        class_names,
        splits,
        unavailable,
    })
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 20;
        writeln!(
            f,
            "{} at {} ({} classes, check: {:?})",
            self.kind,
            self.root.display(),
            self.class_names.len(),
            self.check
        )?;
        for s in &self.splits {
            let nonzero = s.per_class.iter().filter(|&&c| c > 0).count();
            let min = s.per_class.iter().min().copied().unwrap_or(0);
            let max = s.per_class.iter().max().copied().unwrap_or(0);
            writeln!(
                f,
                "  {:<5} {:>7} images, {} of {} classes present, {min}..{max} per class, {} missing, {} unreadable",
                s.split.as_str(),
                s.total,
                nonzero,
                s.per_class.len(),
                s.missing.len(),
                s.unreadable.len()
            )?;
            if s.total == 0 {
                writeln!(f, "        the {} split is empty", s.split)?;
            }
            for (label, (&count, name)) in s.per_class.iter().zip(&self.class_names).enumerate() {
                if count == 0 {
                    writeln!(
                        f,
                        "        class {label} ({name}) has no {} images",
                        s.split
                    )?;
                }
            }
            for p in s.missing.iter().take(SHOW) {
                writeln!(f, "        missing:    {}", p.display())?;
            }
            if s.missing.len() > SHOW {
                writeln!(f, "        ... and {} more missing", s.missing.len() - SHOW)?;
            }
            for (p, e) in s.unreadable.iter().take(SHOW) {
                writeln!(f, "        unreadable: {} ({e})", p.display())?;
            }
            if s.unreadable.len() > SHOW {
                writeln!(
                    f,
                    "        ... and {} more unreadable",
                    s.unreadable.len() - SHOW
                )?;
            }
        }
        for (split, reason) in &self.unavailable {
            writeln!(f, "  {split}: not available: {reason}")?;
        }
        write!(f, "{}", if self.is_ok() { "OK" } else { "PROBLEMS FOUND" })
    }
}

/// Per-class counts of a report as `name<TAB>train<TAB>val<TAB>test` lines (a column per reported split), for
/// a detailed listing.
pub fn per_class_table(report: &VerifyReport) -> String {
    let mut out = String::from("class");
    for s in &report.splits {
        out.push('\t');
        out.push_str(s.split.as_str());
    }
    out.push('\n');
    for (label, name) in report.class_names.iter().enumerate() {
        out.push_str(name);
        for s in &report.splits {
            out.push('\t');
            out.push_str(&s.per_class.get(label).copied().unwrap_or(0).to_string());
        }
        out.push('\n');
    }
    out
}
