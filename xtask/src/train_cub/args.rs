//! The command line of `cargo xtask train-cub`: which method, backbone and device, and where things go.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, ValueEnum};
use fgvc_train::device::DeviceChoice;
use fgvc_train::methods::pmg;
use fgvc_train::registry::{self, MethodSpec};

/// A method of the registry (`fgvc_train::registry`); every built-in one ships a CUB configuration.
#[derive(Clone, Copy, Debug)]
pub struct MethodArg(pub MethodSpec);

impl MethodArg {
    /// The method called `name` in the registry.
    pub fn named(name: &str) -> anyhow::Result<MethodArg> {
        Ok(MethodArg(registry::lookup(name)?))
    }

    /// The name in configurations and file names (`rmg-pmsi`).
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The backbone the method's paper (or official code) uses on CUB (the registry's `paper_backbone`).
    pub fn paper_backbone(self) -> BackboneArg {
        BackboneArg::from_str(self.0.presets.paper_backbone, false)
            .expect("a registered paper backbone is one fgvc-backbone builds")
    }

    /// The `--method` parser: the registry's names, listed in `--help`.
    fn parser() -> impl TypedValueParser<Value = MethodArg> {
        clap::builder::PossibleValuesParser::new(
            registry::methods()
                .into_iter()
                .map(|m| clap::builder::PossibleValue::new(m.name).help(m.summary)),
        )
        .map(|name| MethodArg::named(&name).expect("clap only passes registered names"))
    }
}

impl PartialEq for MethodArg {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for MethodArg {}

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

/// Arguments of `cargo xtask train-cub`.
#[derive(Args, Debug, Clone)]
pub struct TrainCubArgs {
    /// The training method.
    #[arg(long, default_value = pmg::NAME, value_parser = MethodArg::parser())]
    pub method: MethodArg,
    /// The backbone (default: the method's paper backbone, resnet50; mobilenet_v2 for rmg-pmsi).
    #[arg(long, value_enum)]
    pub backbone: Option<BackboneArg>,
    /// Where to train; cuda and metal build the CLI with `--features cuda` / `--features metal`
    /// (default: cuda when `nvidia-smi` sees a GPU, else cpu).
    #[arg(long, value_parser = crate::device_arg::parser())]
    pub device: Option<DeviceChoice>,
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
    /// Start even when the run is projected to take over 24 hours on this device (a few steps are timed
    /// first; `--yes` skips that too).
    #[arg(long)]
    pub yes: bool,
}

impl Default for TrainCubArgs {
    fn default() -> Self {
        TrainCubArgs {
            method: MethodArg(pmg::SPEC),
            backbone: None,
            device: Some(DeviceChoice::Cpu),
            epochs: None,
            data: None,
            weights_dir: None,
            out: None,
            set: Vec::new(),
            mirror: Vec::new(),
            no_download: false,
            dry_run: false,
            resume: false,
            yes: false,
        }
    }
}
