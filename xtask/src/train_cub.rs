//! `cargo xtask train-cub`: one command from nothing to a CUB-200-2011 number next to the paper's.
//!
//! 1. **Plan** ([`Plan::resolve`]): the method's reproduction configuration `configs/<method>-<backbone>-cub.toml`;
//!    for a backbone without one, the method's CUB configuration for another backbone with `--set`
//!    overrides for the backbone, its weights and the backbone-dependent head width (a copy without the
//!    MobileNetV2-only keys is written to the run directory when the target is not a MobileNetV2). Then
//!    `--data`, `--weights-dir`, `--epochs` and the user's `--set`, all checked against the configuration
//!    schema before anything runs.
//! 2. **Fetch** ([`fetch`]): the CUB dataset ([`crate::install_dataset`]) and the torchvision weights the
//!    configuration's `model.pretrained` names ([`crate::install_weights`]) when missing; with
//!    `--no-download`, an error naming what is missing and the command that fetches it.
//! 3. **Train and evaluate**: `cargo run --release -p fgvc-cli [--features cuda|metal] -- train ...` from the
//!    workspace root ([`Plan::cargo_args`]).
//! 4. **Compare** ([`read_result`], [`format_comparison`]): the final test record of the run's
//!    `metrics.jsonl` and `eval-test.json` next to the published number ([`PAPER_RESULTS`]).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use fgvc_train::config::Selection;
use fgvc_train::metrics::{read_records, Record};
use fgvc_train::Config;

use crate::catalog;
use crate::download::Downloader;

/// The training recipes `train-cub` knows (every one has a CUB configuration in `configs/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Progressive Multi-Granularity training (Du et al., ECCV 2020).
    Pmg,
    /// Destruction and Construction Learning (Chen et al., CVPR 2019).
    Dcl,
    /// Recursive Mosaic Generator + Progressive Multi-Stage Interaction (Wu et al., BMVC 2022).
    RmgPmsi,
    /// Coarse2Fine (Eshratifar et al., arXiv 1909.02680), on WS-DAN's setup.
    Coarse2fine,
    /// Plain fine-tuning (the ResNet-50 baseline row of the DCL paper).
    Baseline,
}

impl MethodArg {
    /// The name in configurations and file names (`rmg-pmsi`).
    pub fn name(self) -> &'static str {
        match self {
            MethodArg::Pmg => "pmg",
            MethodArg::Dcl => "dcl",
            MethodArg::RmgPmsi => "rmg-pmsi",
            MethodArg::Coarse2fine => "coarse2fine",
            MethodArg::Baseline => "baseline",
        }
    }

    /// The backbone the method's paper (or official code) uses on CUB: MobileNetV2 for RMG-PMSI,
    /// ResNet-50 for the others.
    pub fn paper_backbone(self) -> BackboneArg {
        match self {
            MethodArg::RmgPmsi => BackboneArg::MobilenetV2,
            _ => BackboneArg::Resnet50,
        }
    }
}

/// The backbones `fgvc-backbone` builds, with torchvision's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackboneArg {
    /// ResNet-18.
    Resnet18,
    /// ResNet-34.
    Resnet34,
    /// ResNet-50.
    Resnet50,
    /// ResNet-101.
    Resnet101,
    /// VGG-16.
    Vgg16,
    /// VGG-16 with BatchNorm.
    #[value(name = "vgg16_bn")]
    Vgg16Bn,
    /// MobileNetV2.
    #[value(name = "mobilenet_v2")]
    MobilenetV2,
}

impl BackboneArg {
    /// torchvision's name (`model.backbone`, the weights file `<name>.safetensors`).
    pub fn name(self) -> &'static str {
        match self {
            BackboneArg::Resnet18 => "resnet18",
            BackboneArg::Resnet34 => "resnet34",
            BackboneArg::Resnet50 => "resnet50",
            BackboneArg::Resnet101 => "resnet101",
            BackboneArg::Vgg16 => "vgg16",
            BackboneArg::Vgg16Bn => "vgg16_bn",
            BackboneArg::MobilenetV2 => "mobilenet_v2",
        }
    }

    /// Channels of the deepest stage the multi-stage heads read: ResNet `layer4`, VGG `conv5_3`,
    /// MobileNetV2's last 1x1 conv (checked against `fgvc-backbone` by the tests).
    pub fn deepest_channels(self) -> usize {
        match self {
            BackboneArg::Resnet18 | BackboneArg::Resnet34 => 512,
            BackboneArg::Resnet50 | BackboneArg::Resnet101 => 2048,
            BackboneArg::Vgg16 | BackboneArg::Vgg16Bn => 512,
            BackboneArg::MobilenetV2 => 1280,
        }
    }
}

/// Where `fgvc train` runs; `cuda` and `metal` build the CLI with the candle feature of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU (no GPU toolkit needed).
    Cpu,
    /// An NVIDIA GPU: builds with `--features cuda` (needs the CUDA toolkit).
    Cuda,
    /// An Apple GPU: builds with `--features metal` (macOS).
    Metal,
}

impl DeviceArg {
    /// The `--device` value of `fgvc train`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceArg::Cpu => "cpu",
            DeviceArg::Cuda => "cuda",
            DeviceArg::Metal => "metal",
        }
    }

    /// The `fgvc-cli` cargo feature the device needs.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceArg::Cpu => None,
            DeviceArg::Cuda => Some("cuda"),
            DeviceArg::Metal => Some("metal"),
        }
    }
}

/// Arguments of `cargo xtask train-cub`.
#[derive(Args, Debug, Clone)]
pub struct TrainCubArgs {
    /// The training recipe.
    #[arg(long, value_enum, default_value_t = MethodArg::Pmg)]
    pub method: MethodArg,
    /// The backbone (default: the method's paper backbone, resnet50; mobilenet_v2 for rmg-pmsi).
    #[arg(long, value_enum)]
    pub backbone: Option<BackboneArg>,
    /// Where to train; cuda and metal build the CLI with `--features cuda` / `--features metal`.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Train this many epochs instead of the reproduction's (the result is then not comparable).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Where datasets live: CUB at DIR/CUB_200_2011, downloaded there if missing (default: data in the
    /// workspace).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Where the torchvision weights live as BACKBONE.safetensors (default: data/weights in the workspace).
    #[arg(long, value_name = "DIR")]
    pub weights_dir: Option<PathBuf>,
    /// The run directory (default: runs/train-cub-METHOD-BACKBONE in the workspace).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a configuration key, passed on to `fgvc train` (repeatable), e.g. `--set data.batch_size=8`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A base URL tried first for the dataset archive and the weights (`<mirror>/<file name>`); may repeat.
    #[arg(long, value_name = "URL")]
    pub mirror: Vec<String>,
    /// Never download: stop with the list of what is missing and the commands that fetch it.
    #[arg(long)]
    pub no_download: bool,
    /// Print the plan (configuration, overrides, downloads, the cargo command) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue the run in the run directory from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
}

impl Default for TrainCubArgs {
    fn default() -> Self {
        TrainCubArgs {
            method: MethodArg::Pmg,
            backbone: None,
            device: DeviceArg::Cpu,
            epochs: None,
            data: None,
            weights_dir: None,
            out: None,
            set: Vec::new(),
            mirror: Vec::new(),
            no_download: false,
            dry_run: false,
            resume: false,
        }
    }
}

/// A published CUB-200-2011 top-1 for a method and backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperResult {
    /// The method's configuration name.
    pub method: &'static str,
    /// torchvision's backbone name.
    pub backbone: &'static str,
    /// Top-1 in percent; `None` when the paper reports one that could not be recovered.
    pub top1: Option<f64>,
    /// Where it comes from, and which prediction it is.
    pub source: &'static str,
}

/// Published CUB top-1 accuracies (448 px input, the official test split, best epoch on the test set),
/// from `shared/methods/algorithms.md` sections 1.9, 2.10, 3.4, 4.7 and 6 (also `docs/methods.md`).
pub const PAPER_RESULTS: &[PaperResult] = &[
    PaperResult {
        method: "pmg",
        backbone: "resnet50",
        top1: Some(89.6),
        source: "PMG paper (ECCV 2020), combined prediction; the author's five reruns of the code: 89.54-89.74 (issue #11)",
    },
    PaperResult {
        method: "pmg",
        backbone: "vgg16",
        top1: None,
        source: "reported in the PMG paper, value not recovered",
    },
    PaperResult {
        method: "dcl",
        backbone: "resnet50",
        top1: Some(87.8),
        source: "DCL V0.0 README (issue #65), classifier alone; reproductions in the issues: 86.69-87.57",
    },
    PaperResult {
        method: "dcl",
        backbone: "vgg16",
        top1: Some(86.9),
        source: "DCL paper (CVPR 2019) as recalled, not checked against the PDF",
    },
    PaperResult {
        method: "baseline",
        backbone: "resnet50",
        top1: Some(85.5),
        source: "DCL paper (CVPR 2019) Table 1, ResNet-50 fine-tuned at 448 (87.8 - 2.3)",
    },
    PaperResult {
        method: "rmg-pmsi",
        backbone: "mobilenet_v2",
        top1: None,
        source: "the RMG-PMSI paper's tables could not be recovered",
    },
    PaperResult {
        method: "coarse2fine",
        backbone: "resnet50",
        top1: None,
        source: "not recovered (no code, no full text; for orientation WS-DAN reports 89.4 with Inception-v3)",
    },
];

/// The published result for `method` on `backbone`, if the table has a row.
pub fn paper_result(method: &str, backbone: &str) -> Option<&'static PaperResult> {
    PAPER_RESULTS
        .iter()
        .find(|p| p.method == method && p.backbone == backbone)
}

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

/// The index files a CUB-200-2011 root holds (with `images/`), as `fgvc-data` reads them.
pub const CUB_FILES: &[&str] = &[
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "classes.txt",
];

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
    pub device: DeviceArg,
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

/// `path` shown relative to `root` when inside it, else as it is.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `path` made absolute: relative paths are taken from `base`.
fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Removes `.` components and folds `..` so that equal locations compare equal.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// A command-line word quoted for a POSIX shell when it needs it.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
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

impl Plan {
    /// Resolves `args` in the workspace `root`: the configuration, the overrides and the paths. Relative
    /// `--data`, `--weights-dir` and `--out` are taken from the current directory; their defaults and the
    /// configuration's relative paths from `root` (where `fgvc train` runs).
    pub fn resolve(args: &TrainCubArgs, root: &Path) -> Result<Plan> {
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let method = args.method;
        let backbone = args.backbone.unwrap_or(method.paper_backbone());
        let configs = root.join("configs");
        let (base_config, base_backbone) = choose_config(&configs, method, backbone)?;
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
            device: args.device,
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

/// The URLs a missing piece would be downloaded from (mirrors first), or `None` when it cannot be.
fn download_urls(m: &Missing, mirrors: &[String]) -> Option<Vec<String>> {
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

/// `configs/<method>-<backbone>-cub.toml` when it exists, else the method's CUB configuration for its paper
/// backbone (or any other), with that configuration's backbone.
fn choose_config(
    configs: &Path,
    method: MethodArg,
    backbone: BackboneArg,
) -> Result<(PathBuf, BackboneArg)> {
    let file = |b: BackboneArg| configs.join(format!("{}-{}-cub.toml", method.name(), b.name()));
    if file(backbone).is_file() {
        return Ok((file(backbone), backbone));
    }
    if file(method.paper_backbone()).is_file() {
        return Ok((file(method.paper_backbone()), method.paper_backbone()));
    }
    BackboneArg::value_variants()
        .iter()
        .find(|b| file(**b).is_file())
        .map(|b| (file(*b), *b))
        .with_context(|| {
            format!(
                "no CUB configuration for {} in {} (expected {}-<backbone>-cub.toml)",
                method.name(),
                configs.display(),
                method.name()
            )
        })
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

/// What a finished run reports, read back from its directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Epochs trained (the test record's epoch + 1).
    pub epochs_run: usize,
    /// `train.epochs` of the run's resolved configuration.
    pub epochs_planned: usize,
    /// The run's model selection.
    pub select: Selection,
    /// Top-1 of the main prediction on the test split, in [0, 1].
    pub top1: f64,
    /// The main prediction's name (`combined` for PMG, `classifier` for DCL, `logits` for the baseline).
    pub head: String,
    /// Every named prediction's top-1, main first.
    pub heads: Vec<(String, f64)>,
    /// How the weights were selected, as `eval-test.json` words it.
    pub protocol: Option<String>,
    /// The selected epoch (1-based).
    pub selected_epoch: Option<usize>,
    /// Number of classes of the test split.
    pub classes: Option<usize>,
    /// Images in the test split.
    pub test_images: Option<usize>,
}

/// Reads the result of the run in `dir`: the last `"kind":"test"` record of `metrics.jsonl` (per-epoch
/// evaluations on the test split, with `train.select = "best_on_test"`, are `"kind":"eval"` records and are
/// not it), the resolved `config.toml`, and `eval-test.json` for the prediction names, the protocol and the
/// selected epoch.
pub fn read_result(dir: &Path) -> Result<RunResult> {
    let metrics = dir.join("metrics.jsonl");
    if !metrics.is_file() {
        bail!("{} does not exist (did the run start?)", metrics.display());
    }
    let test: Record = read_records(&metrics)
        .with_context(|| format!("reading {}", metrics.display()))?
        .into_iter()
        .rfind(|r| r.kind == "test")
        .with_context(|| {
            format!(
                "{} has no test record: the run did not finish (continue it with --resume), or \
                 train.final_test is off",
                metrics.display()
            )
        })?;
    let top1 = test
        .top1
        .with_context(|| format!("the test record of {} has no top1", metrics.display()))?;
    let config_path = dir.join("config.toml");
    let config = Config::load(&config_path, &[])
        .with_context(|| format!("reading {}", config_path.display()))?;

    let report_path = dir.join("eval-test.json");
    let report: Option<serde_json::Value> = match fs::read_to_string(&report_path) {
        Ok(t) => Some(
            serde_json::from_str(&t)
                .with_context(|| format!("parsing {}", report_path.display()))?,
        ),
        Err(_) => None,
    };
    let mut heads: Vec<(String, f64)> = report
        .as_ref()
        .and_then(|r| r["heads"].as_array())
        .map(|hs| {
            hs.iter()
                .filter_map(|h| Some((h["name"].as_str()?.to_string(), h["top1"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    if heads.is_empty() {
        // No report: the record's map is sorted by name; the main prediction is the one with its top-1.
        let map = test.heads.clone().unwrap_or_default();
        let main = map
            .iter()
            .find(|(_, v)| **v == top1)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| "main".into());
        heads.push((main.clone(), top1));
        heads.extend(map.into_iter().filter(|(k, _)| *k != main));
    }
    let head = heads[0].0.clone();
    Ok(RunResult {
        epochs_run: test.epoch + 1,
        epochs_planned: config.train.epochs,
        select: config.train.select,
        top1,
        head,
        heads,
        protocol: report
            .as_ref()
            .and_then(|r| r["protocol"].as_str().map(str::to_string)),
        selected_epoch: report
            .as_ref()
            .and_then(|r| r["selected_epoch"].as_u64())
            .map(|e| e as usize + 1),
        classes: report
            .as_ref()
            .and_then(|r| r["class_names"].as_array().map(Vec::len)),
        test_images: report
            .as_ref()
            .and_then(|r| r["count"].as_u64())
            .map(|c| c as usize),
    })
}

fn paper_text(paper: Option<&PaperResult>) -> String {
    match paper {
        Some(PaperResult {
            top1: Some(v),
            source,
            ..
        }) => format!("{v:.1}% ({source})"),
        Some(PaperResult {
            top1: None, source, ..
        }) => format!("no published number ({source})"),
        None => "no published number".into(),
    }
}

/// CUB-200-2011's test split: 200 classes.
const CUB_CLASSES: usize = 200;

/// The result of a run next to the paper's number: a small table, then the reasons, if any, why the two
/// are not comparable (fewer epochs than the reproduction, another selection protocol, not the full CUB).
pub fn format_comparison(
    method: &str,
    backbone: &str,
    reproduction_epochs: usize,
    reproduction_select: Selection,
    result: &RunResult,
) -> String {
    let paper = paper_result(method, backbone);
    let ours = format!("{:.2}%", 100.0 * result.top1);
    let (paper_col, diff_col) = match paper.and_then(|p| p.top1) {
        Some(v) => (
            format!("{v:.1}%"),
            format!("{:+.2} points", 100.0 * result.top1 - v),
        ),
        None => ("no published number".to_string(), "-".to_string()),
    };
    let epochs = format!("{} of {}", result.epochs_run, reproduction_epochs);
    let rows = [
        [
            "method",
            "backbone",
            "epochs",
            "test top-1",
            "prediction",
            "paper",
            "difference",
        ]
        .map(str::to_string),
        [
            method.to_string(),
            backbone.to_string(),
            epochs,
            ours,
            result.head.clone(),
            paper_col,
            diff_col,
        ],
    ];
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::from("\nCUB-200-2011 result\n");
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
    if let Some(p) = paper {
        let _ = writeln!(s, "paper source: {}", p.source);
    }
    if result.heads.len() > 1 {
        let others: Vec<String> = result.heads[1..]
            .iter()
            .map(|(n, v)| format!("{n} {:.2}%", 100.0 * v))
            .collect();
        let _ = writeln!(s, "other predictions: {}", others.join(", "));
    }
    if let Some(p) = &result.protocol {
        let selected = result
            .selected_epoch
            .map(|e| format!(", epoch {e}"))
            .unwrap_or_default();
        let _ = writeln!(s, "weights selected: {p}{selected}");
    }
    let mut caveats = Vec::new();
    if result.epochs_run != reproduction_epochs {
        caveats.push(format!(
            "{} of {reproduction_epochs} epochs; not comparable to the paper",
            result.epochs_run
        ));
    }
    if result.select != reproduction_select {
        caveats.push(format!(
            "model selection {:?}, the reproduction's is {:?}",
            result.select, reproduction_select
        ));
    }
    if let Some(c) = result.classes {
        if c != CUB_CLASSES {
            caveats.push(format!(
                "the test split has {c} classes, not CUB-200-2011's {CUB_CLASSES}; not comparable to the paper"
            ));
        }
    }
    for c in caveats {
        let _ = writeln!(s, "note: {c}");
    }
    s
}

/// `cargo xtask train-cub`: plans, fetches what is missing, trains and evaluates through `fgvc train`, and
/// prints the result next to the paper's.
pub fn run(args: &TrainCubArgs) -> Result<()> {
    let root = crate::workspace_root();
    let plan = Plan::resolve(args, &root)?;
    if args.dry_run {
        print!("{}", plan.describe(&args.mirror, args.no_download));
        return Ok(());
    }
    eprint!("{}", plan.describe(&args.mirror, args.no_download));
    fetch(&plan, &Downloader::new(), &args.mirror, args.no_download)?;
    plan.write_derived()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(plan.cargo_args())
        .current_dir(&root)
        .status()
        .with_context(|| format!("could not start {cargo}"))?;
    if !status.success() {
        bail!(
            "training failed ({status}); the run directory is {}; continue it with `cargo xtask train-cub \
             ... --resume` or see its output above",
            plan.out.display()
        );
    }
    let result = read_result(&plan.out)?;
    print!(
        "{}",
        format_comparison(
            plan.method.name(),
            plan.backbone.name(),
            plan.reproduction_epochs,
            plan.reproduction_select,
            &result
        )
    );
    println!("run directory: {}", plan.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("train.epochs=2"), "train.epochs=2");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

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

    #[test]
    fn normalising_paths() {
        assert_eq!(normalise(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(shown(Path::new("/w"), Path::new("/w/data")), "data");
        assert_eq!(shown(Path::new("/w"), Path::new("/x/data")), "/x/data");
    }

    #[test]
    fn every_method_has_a_paper_backbone_row_or_none() {
        for m in MethodArg::value_variants() {
            // Every method's paper backbone has a row (a number or the reason there is none).
            assert!(paper_result(m.name(), m.paper_backbone().name()).is_some());
        }
        assert!(paper_result("pmg", "resnet18").is_none());
    }
}
