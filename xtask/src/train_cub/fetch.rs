//! Step 2 of `train-cub`, fetching: what the plan needs that is not on disk (the CUB dataset, torchvision
//! weights), the command that provides each piece, and the downloads themselves.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::paths::{normalise, quote, shown};
use super::Plan;
use crate::catalog;
use crate::download::Downloader;

/// The index files a CUB-200-2011 root holds (with `images/`), as `fgvc-data` reads them.
pub const CUB_FILES: &[&str] = &[
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "classes.txt",
];

/// Something the run needs that is not on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The CUB root is absent or incomplete.
    Dataset {
        /// The root `data.root` names.
        root: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// The `--dir` to download into, when the download can place the dataset at `root`.
        download_dir: Option<PathBuf>,
    },
    /// The file `model.pretrained` names does not exist.
    Weights {
        /// The path.
        path: PathBuf,
        /// The torchvision model it is named after, when `cargo xtask weights` can make it.
        model: Option<&'static str>,
    },
}

impl Missing {
    /// What is missing, in words.
    pub fn describe(&self) -> String {
        match self {
            Missing::Dataset { root, problem, .. } => {
                format!("CUB-200-2011 at {}: {problem}", root.display())
            }
            Missing::Weights { path, .. } => {
                format!("pretrained weights {} (model.pretrained)", path.display())
            }
        }
    }

    /// The command (or step) that provides it.
    pub fn remedy(&self, root: &Path, mirrors: &[String]) -> String {
        let mirror_args: String = mirrors
            .iter()
            .map(|m| format!(" --mirror {}", quote(m)))
            .collect();
        match self {
            Missing::Dataset {
                download_dir: Some(dir),
                root: cub,
                problem,
            } => {
                let dir_arg = if normalise(dir) == root.join("data") {
                    String::new()
                } else {
                    format!(" --dir {}", quote(&shown(root, dir)))
                };
                let fetch = format!("cargo xtask download cub{dir_arg}{mirror_args}");
                if cub.exists() && !problem.starts_with("does not exist") {
                    format!("remove {} and run `{fetch}`", cub.display())
                } else {
                    format!("`{fetch}`")
                }
            }
            Missing::Dataset {
                download_dir: None,
                root,
                ..
            } => format!(
                "put CUB-200-2011 at {} (the download only places it in a folder named CUB_200_2011: \
                 `cargo xtask download cub --dir DIR`, then --data DIR)",
                root.display()
            ),
            Missing::Weights {
                path,
                model: Some(model),
            } => {
                let dir = path.parent().unwrap_or(Path::new("."));
                let dir_arg = if normalise(dir) == root.join("data/weights") {
                    String::new()
                } else {
                    format!(" --dir {}", quote(&shown(root, dir)))
                };
                format!("`cargo xtask weights {model}{dir_arg}{mirror_args}`")
            }
            Missing::Weights { path, model: None } => format!(
                "convert a checkpoint you have with `cargo xtask weights convert IN.pth {}`",
                quote(&path.display().to_string())
            ),
        }
    }
}

/// Why the CUB root `root` cannot be used yet, or `None` when it can. Like `fgvc-data`, `root` may also be
/// the folder holding `CUB_200_2011/`.
pub fn cub_problem(root: &Path) -> Option<String> {
    let dir = fgvc_data::cub::resolve_root(root);
    if !dir.is_dir() {
        return Some("does not exist".into());
    }
    let mut lacking: Vec<&str> = CUB_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !dir.join("images").is_dir() {
        lacking.push("images/");
    }
    if lacking.is_empty() {
        None
    } else {
        Some(format!("incomplete, lacks {}", lacking.join(", ")))
    }
}

/// The URLs a missing piece would be downloaded from (mirrors first), or `None` when it cannot be.
pub(super) fn download_urls(m: &Missing, mirrors: &[String]) -> Option<Vec<String>> {
    match m {
        Missing::Dataset {
            download_dir: Some(_),
            ..
        } => {
            let spec = catalog::dataset("cub")?;
            let a = spec.artifacts.first()?;
            Some(crate::sources(mirrors, a.file, a.urls))
        }
        Missing::Weights {
            model: Some(model), ..
        } => {
            let spec = catalog::weights(model)?;
            let file = spec.files.first()?;
            Some(crate::sources(&crate::weights_sources(mirrors), file, &[]))
        }
        _ => None,
    }
}

/// Downloads what `plan` lacks (the CUB archive, torchvision weights), mirrors first; with `no_download`,
/// fails naming each missing piece and the command that fetches it. Errors name the file and what to do.
pub fn fetch(plan: &Plan, dl: &Downloader, mirrors: &[String], no_download: bool) -> Result<()> {
    let missing = plan.missing();
    if missing.is_empty() {
        return Ok(());
    }
    let list = |items: &[Missing]| -> String {
        items
            .iter()
            .map(|m| {
                format!(
                    "  {}\n    fix: {}",
                    m.describe(),
                    m.remedy(&plan.root, mirrors)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    if no_download {
        bail!("missing (--no-download given):\n{}", list(&missing));
    }
    let manual: Vec<Missing> = missing
        .iter()
        .filter(|m| {
            matches!(
                m,
                Missing::Dataset {
                    download_dir: None,
                    ..
                } | Missing::Weights { model: None, .. }
            ) || matches!(m, Missing::Dataset { root, problem, .. }
                    if root.exists() && !problem.starts_with("does not exist"))
        })
        .cloned()
        .collect();
    if !manual.is_empty() {
        bail!("cannot be downloaded here:\n{}", list(&manual));
    }
    for m in &missing {
        match m {
            Missing::Dataset {
                root,
                download_dir: Some(dir),
                ..
            } => {
                let spec = catalog::dataset("cub").expect("cub is in the table");
                crate::install_dataset(dl, spec, dir, &[], mirrors).with_context(|| {
                    format!(
                        "downloading CUB-200-2011 to {} failed; retry (downloads resume), pass --mirror URL, \
                         or fetch it with `cargo xtask download cub --dir {}`",
                        root.display(),
                        dir.display()
                    )
                })?;
                if let Some(problem) = cub_problem(root) {
                    bail!("after the download, {}: {problem}", root.display());
                }
            }
            Missing::Weights {
                path,
                model: Some(model),
            } => {
                let spec = catalog::weights(model).expect("from the table");
                let dir = path.parent().unwrap_or(Path::new("."));
                let written = crate::install_weights(
                    dl,
                    spec,
                    dir,
                    &crate::weights_sources(mirrors),
                    false,
                )
                .with_context(|| {
                    format!(
                        "downloading {} failed; pass --mirror URL, or convert a checkpoint you have with \
                         `cargo xtask weights convert IN.pth {}`",
                        path.display(),
                        path.display()
                    )
                })?;
                let report = crate::check_weights(model, &written).with_context(|| {
                    format!(
                        "{} does not match fgvc-backbone's {model}",
                        written.display()
                    )
                })?;
                eprintln!("{model}: {report}");
            }
            _ => unreachable!("manual pieces were refused above"),
        }
    }
    Ok(())
}
