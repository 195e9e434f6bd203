//! Step 1 of `train-cub`, the plan: the reproduction configuration (or one derived for another backbone),
//! the overrides, the paths, and the exact `cargo run ... -- train` command, all checked before anything
//! runs.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fgvc_train::config::Selection;
use fgvc_train::device::DeviceChoice;
use fgvc_train::Config;

use super::fetch::{cub_problem, download_urls, Missing};
use super::paper::{paper_result, paper_text};
use super::paths::{absolute, normalise, quote, shown};
use super::{BackboneArg, MethodArg, TrainCubArgs};
use crate::catalog;

/// Keys that only a MobileNetV2 accepts (the stem stride and width multiplier, in `[model]` or, in older
/// configurations, `[method.options]`); a derived configuration for another backbone drops them.
const MOBILENET_ONLY_KEYS: &[&str] = &[
    "model.width_mult",
    "model.first_stride",
    "method.options.width_mult",
    "method.options.first_stride",
];

/// Removes the dotted `key` from `table`; whether it was there.
fn remove_key(table: &mut toml::Table, key: &str) -> bool {
    let (path, last) = match key.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, key),
    };
    let mut t = table;
    for k in path.into_iter().flat_map(|p| p.split('.')) {
        match t.get_mut(k).and_then(|v| v.as_table_mut()) {
            Some(inner) => t = inner,
            None => return false,
        }
    }
    t.remove(last).is_some()
}

/// What `train-cub` is about to do: every path absolute, every override checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workspace root: `configs/` is read there and `fgvc train` runs there.
    pub root: PathBuf,
    /// The method.
    pub method: MethodArg,
    /// The backbone.
    pub backbone: BackboneArg,
    /// The device.
    pub device: DeviceChoice,
    /// The reproduction configuration the run starts from (`configs/<method>-<backbone>-cub.toml`).
    pub base_config: PathBuf,
    /// The backbone of `base_config`; differs from `backbone` for a derived configuration.
    pub base_backbone: BackboneArg,
    /// A derived copy of `base_config` without the MobileNetV2-only keys, and where it goes, when the
    /// target backbone needs one (the keys removed are in `removed`).
    pub derived_config: Option<(PathBuf, String)>,
    /// Keys of `base_config` left out of `derived_config`.
    pub removed: Vec<String>,
    /// Every `--set` passed to `fgvc train`: train-cub's own first, then the user's.
    pub overrides: Vec<String>,
    /// The configuration as `fgvc train` will resolve it.
    pub config: Config,
    /// `train.epochs` of the reproduction configuration.
    pub reproduction_epochs: usize,
    /// `train.select` of the reproduction configuration.
    pub reproduction_select: Selection,
    /// Where CUB is downloaded to (`--data`).
    pub data_dir: PathBuf,
    /// The run directory.
    pub out: PathBuf,
    /// `--resume`.
    pub resume: bool,
}

impl Plan {
    /// Resolves `args` in the workspace `root`: the configuration, the overrides and the paths. Relative
    /// `--data`, `--weights-dir` and `--out` are taken from the current directory; their defaults and the
    /// configuration's relative paths from `root` (where `fgvc train` runs).
    pub fn resolve(args: &TrainCubArgs, root: &Path) -> Result<Plan> {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let method = args.method;
        let backbone = args.backbone.unwrap_or(method.paper_backbone());
        let (base_config, base_backbone) = choose_config(root, method, backbone)?;
        let text = fs::read_to_string(&base_config)
            .with_context(|| format!("reading {}", base_config.display()))?;
        let origin = shown(root, &base_config);
        let base = Config::parse(&text, &origin, &[])
            .with_context(|| format!("{origin} is not a valid configuration"))?;

        let data_dir = normalise(&match &args.data {
            Some(d) => absolute(&cwd, d),
            None => root.join("data"),
        });
        let weights_dir = normalise(&match &args.weights_dir {
            Some(d) => absolute(&cwd, d),
            None => root.join("data/weights"),
        });
        let out = normalise(&match &args.out {
            Some(d) => absolute(&cwd, d),
            None => {
                root.join("runs")
                    .join(format!("train-cub-{}-{}", method.name(), backbone.name()))
            }
        });

        let mut overrides = Vec::new();
        let mut removed = Vec::new();
        let mut derived_config = None;
        let from_root = |p: &Path| normalise(&absolute(root, p));
        if backbone != base_backbone {
            overrides.push(format!("model.backbone={}", backbone.name()));
            if base.method.options.contains_key("block_channels") {
                // The official rule: half the channels of the deepest stage.
                overrides.push(format!(
                    "method.options.block_channels={}",
                    backbone.deepest_channels() / 2
                ));
            }
            if backbone != BackboneArg::MobilenetV2 {
                let mut table: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("parsing {}", base_config.display()))?;
                removed = MOBILENET_ONLY_KEYS
                    .iter()
                    .filter(|k| remove_key(&mut table, k))
                    .map(|k| k.to_string())
                    .collect();
                if !removed.is_empty() {
                    let body =
                        toml::to_string(&table).context("writing the derived configuration")?;
                    let derived = format!(
                        "# {origin} for {}, written by `cargo xtask train-cub`: without {}, which \
                         only MobileNetV2 accepts.\n{body}",
                        backbone.name(),
                        removed.join(", ")
                    );
                    derived_config = Some((out.join("train-cub-config.toml"), derived));
                }
            }
        }
        let weights = weights_dir.join(format!("{}.safetensors", backbone.name()));
        let base_weights = base.model.pretrained.as_deref().map(from_root);
        if base_weights.is_some() && base_weights.as_deref() != Some(weights.as_path()) {
            overrides.push(format!("model.pretrained={}", shown(root, &weights)));
        }
        let cub = data_dir.join("CUB_200_2011");
        if base.data.root.as_deref().map(from_root).as_deref() != Some(cub.as_path()) {
            overrides.push(format!("data.root={}", shown(root, &cub)));
        }
        if let Some(n) = args.epochs {
            if n == 0 {
                bail!("--epochs must be at least 1");
            }
            overrides.push(format!("train.epochs={n}"));
        }
        overrides.extend(args.set.iter().cloned());

        let source = derived_config
            .as_ref()
            .map(|(_, t)| t.as_str())
            .unwrap_or(&text);
        let config = Config::parse(source, &origin, &overrides)
            .with_context(|| format!("{origin} with the overrides {overrides:?}"))?;
        fgvc_train::registry::check(&config)
            .with_context(|| format!("{origin} for {}", backbone.name()))?;
        Ok(Plan {
            root: root.to_path_buf(),
            method,
            backbone,
            device: args.device.unwrap_or_else(default_device),
            base_config,
            base_backbone,
            derived_config,
            removed,
            overrides,
            reproduction_epochs: base.train.epochs,
            reproduction_select: base.train.select,
            config,
            data_dir,
            out,
            resume: args.resume,
        })
    }

    /// The configuration file `fgvc train` reads: the derived copy, or the reproduction configuration.
    pub fn config_file(&self) -> &Path {
        self.derived_config
            .as_ref()
            .map(|(p, _)| p.as_path())
            .unwrap_or(&self.base_config)
    }

    /// The dataset root the run reads, absolute.
    pub fn cub_root(&self) -> Option<PathBuf> {
        self.config
            .data
            .root
            .as_deref()
            .map(|p| normalise(&absolute(&self.root, p)))
    }

    /// The pretrained weights the run loads, absolute.
    pub fn weights(&self) -> Option<PathBuf> {
        self.config
            .model
            .pretrained
            .as_deref()
            .map(|p| normalise(&absolute(&self.root, p)))
    }

    /// Whatever the run needs that is not on disk yet.
    pub fn missing(&self) -> Vec<Missing> {
        let mut out = Vec::new();
        if self.config.data.dataset == "cub" {
            match self.cub_root() {
                None => out.push(Missing::Dataset {
                    root: self.data_dir.join("CUB_200_2011"),
                    problem: "data.root is not set".into(),
                    download_dir: None,
                }),
                Some(root) => {
                    if let Some(problem) = cub_problem(&root) {
                        let download_dir = (root.file_name().is_some_and(|n| n == "CUB_200_2011"))
                            .then(|| root.parent().map(Path::to_path_buf))
                            .flatten();
                        out.push(Missing::Dataset {
                            root,
                            problem,
                            download_dir,
                        });
                    }
                }
            }
        }
        if let Some(path) = self.weights() {
            if !path.is_file() {
                let model = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".safetensors"))
                    .and_then(catalog::weights)
                    .map(|w| w.name);
                out.push(Missing::Weights { path, model });
            }
        }
        out
    }

    /// The arguments after `cargo`: `run --release -p fgvc-cli [--features F] -- train --config ... --out ...
    /// --device ... [--set ...] [--resume]`, paths relative to the workspace root where they are inside it.
    pub fn cargo_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["run", "--release", "-p", "fgvc-cli"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(f) = self.device.feature() {
            args.push("--features".into());
            args.push(f.into());
        }
        args.extend([
            "--".to_string(),
            "train".into(),
            "--config".into(),
            shown(&self.root, self.config_file()),
            "--out".into(),
            shown(&self.root, &self.out),
            "--device".into(),
            self.device.name().into(),
        ]);
        for o in &self.overrides {
            args.push("--set".into());
            args.push(o.clone());
        }
        if self.resume {
            args.push("--resume".into());
        }
        args
    }

    /// The cargo arguments of the projection: [`Plan::cargo_args`] with `--estimate 3`.
    pub fn estimate_args(&self) -> Vec<String> {
        let mut args = self.cargo_args();
        args.extend(["--estimate".to_string(), "3".to_string()]);
        args
    }

    /// The command `train-cub` runs, as one shell line (from the workspace root).
    pub fn command_line(&self) -> String {
        std::iter::once("cargo".to_string())
            .chain(self.cargo_args().iter().map(|a| quote(a)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether the run trains fewer or more epochs than the reproduction configuration.
    pub fn epochs_changed(&self) -> bool {
        self.config.train.epochs != self.reproduction_epochs
    }

    /// The plan in words (what `--dry-run` prints).
    pub fn describe(&self, mirrors: &[String], no_download: bool) -> String {
        let mut s = String::new();
        let r = &self.root;
        let _ = writeln!(
            s,
            "train-cub: {} with {} on CUB-200-2011, device {}",
            self.method.name(),
            self.backbone.name(),
            self.device.name()
        );
        let _ = writeln!(s, "  configuration: {}", shown(r, &self.base_config));
        if self.backbone != self.base_backbone {
            let _ = writeln!(
                s,
                "    (no {}-{}-cub.toml: the method's {} configuration, adapted with the overrides below)",
                self.method.name(),
                self.backbone.name(),
                self.base_backbone.name()
            );
        }
        if let Some((path, _)) = &self.derived_config {
            let _ = writeln!(
                s,
                "    written without {} (MobileNetV2 only) to {}",
                self.removed.join(", "),
                shown(r, path)
            );
        }
        if self.overrides.is_empty() {
            let _ = writeln!(s, "  overrides: none");
        } else {
            let _ = writeln!(s, "  overrides:");
            for o in &self.overrides {
                let _ = writeln!(s, "    --set {o}");
            }
        }
        let _ = writeln!(
            s,
            "  epochs: {} (the reproduction: {}){}",
            self.config.train.epochs,
            self.reproduction_epochs,
            if self.epochs_changed() {
                "; the result will not be comparable to the paper"
            } else {
                ""
            }
        );
        if let Some(root) = self.cub_root() {
            let _ = writeln!(s, "  dataset: {}", shown(r, &root));
        }
        if let Some(w) = self.weights() {
            let _ = writeln!(s, "  weights: {}", shown(r, &w));
        }
        let missing = self.missing();
        if missing.is_empty() {
            let _ = writeln!(s, "  downloads: none, everything is in place");
        } else {
            let _ = writeln!(
                s,
                "  {}:",
                if no_download {
                    "missing (--no-download: the run would stop here)"
                } else {
                    "to download"
                }
            );
            for m in &missing {
                let _ = writeln!(s, "    {}: {}", m.describe(), m.remedy(r, mirrors));
                if !no_download {
                    if let Some(urls) = download_urls(m, mirrors) {
                        for u in urls {
                            let _ = writeln!(s, "      from {u}");
                        }
                    }
                }
            }
        }
        let _ = writeln!(s, "  run directory: {}", shown(r, &self.out));
        let _ = writeln!(s, "  command (from {}):", r.display());
        let _ = writeln!(s, "    {}", self.command_line());
        let paper = paper_result(self.method.name(), self.backbone.name());
        let _ = writeln!(s, "  paper: {}", paper_text(paper));
        s
    }

    /// Writes the derived configuration, if the plan has one.
    pub fn write_derived(&self) -> Result<()> {
        if let Some((path, text)) = &self.derived_config {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// `configs/<method>-<backbone>-cub.toml` when it exists, else the method's CUB preset from the registry
/// (written for its paper backbone), with that configuration's backbone.
fn choose_config(
    root: &Path,
    method: MethodArg,
    backbone: BackboneArg,
) -> Result<(PathBuf, BackboneArg)> {
    let file = root
        .join("configs")
        .join(format!("{}-{}-cub.toml", method.name(), backbone.name()));
    if file.is_file() {
        return Ok((file, backbone));
    }
    let preset = method
        .0
        .presets
        .cub
        .with_context(|| format!("{} ships no CUB configuration", method.name()))?;
    Ok((root.join(preset.file()), method.paper_backbone()))
}

/// The device when `--device` is not given: CUDA when `nvidia-smi` lists a GPU, else the CPU.
pub fn default_device() -> DeviceChoice {
    if crate::cuda_toolkit::gpu_visible() {
        DeviceChoice::Cuda
    } else {
        DeviceChoice::Cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_dotted_keys() {
        let mut t: toml::Table =
            toml::from_str("[model]\nfirst_stride = 1\n[method.options]\nk = 2\n").unwrap();
        assert!(remove_key(&mut t, "model.first_stride"));
        assert!(!remove_key(&mut t, "model.first_stride"));
        assert!(!remove_key(&mut t, "method.options.first_stride"));
        assert!(!remove_key(&mut t, "data.root"));
        assert!(remove_key(&mut t, "method.options.k"));
        assert!(t["model"].as_table().unwrap().is_empty());
    }
}
