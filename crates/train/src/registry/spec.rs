//! What the registry knows of a method: its name, its options type (through [`MethodDef`]), how its
//! configuration is checked, how it is built, and its presets (configurations, published results, benchmark
//! workloads). One [`MethodSpec`] per method is the only place these are written.

use std::path::Path;

use fgvc_ops::ParamStore;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::{Result, TrainError};
use crate::method::Method;

/// A method the registry can build: `[method.options]` as a typed value, the checks that need the rest of
/// the configuration, and the constructor. [`MethodSpec::of`] turns it into a table entry.
pub trait MethodDef: Method + Sized + 'static {
    /// The name in `[method] name`, on command lines and in file names (`pmg`, `rmg-pmsi`).
    const NAME: &'static str;
    /// The options of `[method.options]`; every field has its official value as default.
    type Options: DeserializeOwned;

    /// Parses `[method.options]` strictly (an unknown key is an error naming it).
    fn options(config: &Config) -> Result<Self::Options> {
        parse_options(config)
    }

    /// Checks the options against the whole configuration (ranges, lengths, the keys of `[model]` the method
    /// refuses), without building anything.
    fn check(options: &Self::Options, config: &Config) -> Result<()>;

    /// The method of `config` with a `num_classes`-way output, its parameters drawn from `store`.
    fn build(
        config: &Config,
        options: Self::Options,
        num_classes: usize,
        store: ParamStore,
    ) -> Result<Self>;
}

/// A configuration the repository ships: its path relative to the repository root
/// (`configs/pmg-resnet50-cub.toml`). Paths rather than embedded text keep this crate publishable on its own;
/// the tests check that every preset exists and parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset(pub &'static str);

impl Preset {
    /// The path relative to the repository root.
    pub fn file(&self) -> &'static str {
        self.0
    }

    /// The preset of the repository at `root`, parsed with `overrides`.
    pub fn load(&self, root: &Path, overrides: &[String]) -> Result<Config> {
        Config::load(&root.join(self.0), overrides)
    }
}

/// A published CUB-200-2011 top-1 of a method on a backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// torchvision's backbone name.
    pub backbone: &'static str,
    /// Top-1 in percent; `None` when the paper reports one that could not be recovered.
    pub top1: Option<f64>,
    /// Where it comes from, and which prediction it is.
    pub source: &'static str,
}

/// A method's defaults beyond its options: the configurations it ships with, the backbone and results of
/// its paper, and what `cargo xtask bench methods` measures it on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Presets {
    /// The official CUB setup (`cargo xtask train-cub`, the method benchmark).
    pub cub: Option<Preset>,
    /// The CPU-sized run on the embedded synthetic dataset (`cargo xtask synthetic-table`).
    pub synthetic: Option<Preset>,
    /// The backbone of the paper's (or official code's) CUB result.
    pub paper_backbone: &'static str,
    /// Published CUB results, by backbone.
    pub published: &'static [Published],
    /// Backbones `cargo xtask bench methods` measures the training step on.
    pub bench_backbones: &'static [&'static str],
}

impl Presets {
    /// No shipped configuration, result or benchmark (a method defined outside this crate).
    pub const NONE: Presets = Presets {
        cub: None,
        synthetic: None,
        paper_backbone: "resnet50",
        published: &[],
        bench_backbones: &[],
    };
}

/// One row of the method table: everything the trainer, the CLI, xtask and the tests know of a method.
#[derive(Clone, Copy)]
pub struct MethodSpec {
    /// The name in `[method] name` ([`MethodDef::NAME`]).
    pub name: &'static str,
    /// One line for help texts: the method and its paper.
    pub summary: &'static str,
    /// Checks `[model]` (through fgvc-backbone) and `[method.options]` (typed as the method's options)
    /// against the configuration, without building anything.
    pub check: fn(&Config) -> Result<()>,
    /// Checks, then builds the method with a `num_classes`-way output.
    pub build: fn(&Config, usize, ParamStore) -> Result<Box<dyn Method>>,
    /// Shipped configurations, published results, benchmark workloads.
    pub presets: Presets,
}

impl std::fmt::Debug for MethodSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodSpec")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .field("presets", &self.presets)
            .finish_non_exhaustive()
    }
}

impl MethodSpec {
    /// The table entry of method `M`.
    pub const fn of<M: MethodDef>(summary: &'static str, presets: Presets) -> MethodSpec {
        MethodSpec {
            name: M::NAME,
            summary,
            check: check_def::<M>,
            build: build_def::<M>,
            presets,
        }
    }

    /// The published CUB result on `backbone`, if the method has one.
    pub fn published_on(&self, backbone: &str) -> Option<&'static Published> {
        self.presets
            .published
            .iter()
            .find(|p| p.backbone == backbone)
    }
}

fn check_def<M: MethodDef>(config: &Config) -> Result<()> {
    crate::model::check_model(&config.model)?;
    M::check(&M::options(config)?, config)
}

fn build_def<M: MethodDef>(
    config: &Config,
    num_classes: usize,
    store: ParamStore,
) -> Result<Box<dyn Method>> {
    let options = M::options(config)?;
    M::check(&options, config)?;
    Ok(Box::new(M::build(config, options, num_classes, store)?))
}

/// Parses `config.method.options` as the options `T` of the method, naming the offending key on error.
pub fn parse_options<T: DeserializeOwned>(config: &Config) -> Result<T> {
    let value = toml::Value::Table(config.method.options.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        TrainError::Config {
            origin: format!("[method.options] of {:?}", config.method.name),
            key: if path == "." || path.is_empty() {
                "method.options".into()
            } else {
                format!("method.options.{path}")
            },
            message: e.inner().to_string(),
        }
    })
}
