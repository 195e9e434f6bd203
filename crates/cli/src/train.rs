//! `fgvc train` and `fgvc eval`: the training engine on the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use fgvc_data::Split;
use fgvc_distributed::Group;
use fgvc_train::data::{eval_loader, open_split};
use fgvc_train::device::DeviceChoice;
use fgvc_train::eval::{evaluate, evaluate_tta, Tta};
use fgvc_train::predict::{ModelFiles, Predictor, Weights};
use fgvc_train::run_dir::RunDir;
use fgvc_train::{Config, TrainOptions, Trainer};

use crate::output::{self, outln};

/// The configuration `fgvc train` uses when no `--config` is given: the synthetic baseline.
pub const EMBEDDED_CONFIG: &str = include_str!("../../../configs/synthetic-baseline.toml");
const EMBEDDED_NAME: &str = "the embedded default config (configs/synthetic-baseline.toml)";

/// `--device cpu|cuda|metal`: [`DeviceChoice`]'s names, each listed with its description in `--help`.
pub(crate) fn device_parser() -> impl TypedValueParser<Value = DeviceChoice> {
    PossibleValuesParser::new(
        DeviceChoice::ALL.map(|d| PossibleValue::new(d.name()).help(d.description())),
    )
    .map(|name| {
        name.parse::<DeviceChoice>()
            .expect("one of the possible values")
    })
}

/// `--tta flip|multicrop`.
fn tta_parser() -> impl TypedValueParser<Value = Tta> {
    PossibleValuesParser::new(Tta::ALL.map(|t| PossibleValue::new(t.name())))
        .map(|name| name.parse::<Tta>().expect("one of the possible values"))
}

/// Arguments of `fgvc train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Run configuration (TOML); without it, the embedded synthetic baseline.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a configuration key, e.g. `--set train.epochs=2 --set optim.lr=0.05` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue the run in `--out` from its last checkpoint, exactly where it stopped (its saved
    /// config.toml must match the configuration).
    #[arg(long)]
    pub resume: bool,
    /// Replace the run `--out` already holds: its config, metrics, checkpoints, reports and plots are
    /// deleted once the configuration has validated and the method is built. Without it (or --resume),
    /// a directory holding a run is refused and left as it is.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Device to train on.
    #[arg(long, value_parser = device_parser(), default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
    /// Run directory (default: runs/NAME, NAME being the config file's stem).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Never draw progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Data-parallel training as one process of an MPI job (`mpirun -np N fgvc train --distributed ...`, or
    /// `fgvc launch --nproc N -- train ...`): each process trains on its part of every batch, gradients are
    /// averaged over the processes, and process 0 alone writes `--out`. `data.batch_size` is per process.
    /// Needs a build with the `mpi` feature (docs/distributed.md).
    #[arg(long)]
    pub distributed: bool,
    /// With --distributed: seconds a collective operation may wait for the other processes before this one
    /// gives up with an error (a process that died or hung).
    #[arg(long, value_name = "SECS", default_value_t = 600, requires = "distributed",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dist_timeout: u64,
    /// Time N training steps of the configuration on random batches, print the projected duration of the
    /// whole run (one JSON line on stdout) and exit; the run directory is not touched.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub estimate: Option<u64>,
}

fn load_config(path: Option<&Path>, set: &[String]) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p, set)?,
        None => Config::parse(EMBEDDED_CONFIG, EMBEDDED_NAME, set)?,
    })
}

/// Pins the CPU thread count when the configuration asks for it (bit-exact resumes across machines).
fn pin_threads(config: &Config) {
    let n = config.train.threads;
    if n > 0 {
        // candle's GEMM reads RAYON_NUM_THREADS; the ops and the global pool use rayon's global pool.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

/// `fgvc train --estimate N`: the projected duration, readable on stderr and as JSON on stdout.
fn estimate(config: &Config, device: &Device, choice: DeviceChoice, steps: usize) -> Result<()> {
    let e = fgvc_train::bench::estimate(config, device, steps)?;
    eprintln!(
        "estimate on {choice}: {:.3} s per step x {} steps per epoch x {} epochs = {:.1} h of training \
         (data loading and evaluation not counted)",
        e.seconds_per_step,
        e.steps_per_epoch,
        e.epochs,
        e.hours()
    );
    println!(
        "{}",
        serde_json::json!({
            "device": choice.name(),
            "seconds_per_step": e.seconds_per_step,
            "steps_per_epoch": e.steps_per_epoch,
            "epochs": e.epochs,
            "projected_hours": e.hours(),
        })
    );
    Ok(())
}

/// Trains as `args` says and prints the result. The run directory is left to the library: it is locked,
/// and an earlier run there is refused unless `--resume` or `--overwrite` says what to do with it.
pub fn train(args: &TrainArgs) -> Result<()> {
    let config = load_config(args.config.as_deref(), &args.set)?;
    pin_threads(&config);
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .config
            .as_deref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "synthetic-baseline".into());
        PathBuf::from("runs").join(stem)
    });
    let device = args.device.open()?;
    if let Some(steps) = args.estimate {
        return estimate(&config, &device, args.device, steps as usize);
    }
    let group = if args.distributed {
        crate::distributed::join(Duration::from_secs(args.dist_timeout))?
    } else {
        Group::local()
    };
    let options = TrainOptions {
        resume: args.resume,
        overwrite: args.overwrite,
        progress: !args.no_progress,
        stop_after_steps: None,
        group: group.clone(),
    };
    let result = Trainer::new(config, &out, &device, options).and_then(|mut t| t.run());
    let summary = crate::distributed::or_abort(&group, result)?;
    if !group.is_main() {
        return Ok(());
    }
    outln!(
        "trained {} steps in {:.1} s; run directory {}",
        summary.steps,
        summary.seconds,
        summary.run_dir.display()
    )?;
    if let Some(best) = &summary.best {
        outln!(
            "selected epoch {} ({} top-1 {:.2}%)",
            best.epoch + 1,
            best.split,
            100.0 * best.score
        )?;
    }
    if let Some(test) = &summary.test {
        outln!("test evaluation, weights selected by {}:", summary.protocol)?;
        output::print(&test.to_string())?;
        outln!("test accuracy: {:.2}%", 100.0 * test.main().top1)?;
    }
    Ok(())
}

/// Arguments of `fgvc eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory: its best.safetensors (or checkpoint-last with `--last`).
    #[arg(long, conflicts_with = "checkpoint")]
    pub run: Option<PathBuf>,
    /// A checkpoint file; it carries its configuration and class names, and the dataset it names is
    /// evaluated (`--set data.root=DIR` when it has moved).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The configuration the checkpoint was trained with, instead of the one it carries (needed for
    /// checkpoints of fgvc versions before self-contained checkpoints, outside their run directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a `data.*` key of the checkpoint's configuration, e.g. `--set data.root=/mnt/CUB_200_2011`
    /// (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// With `--run`: evaluate the last checkpoint instead of the selected one.
    #[arg(long)]
    pub last: bool,
    /// Split to evaluate: test or val.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Test-time augmentation, reported as extra named predictions next to the plain ones: `flip` (the
    /// image and its mirror) or `multicrop` (CAL's protocol: the centre and four corner crops of the resized
    /// image, each also mirrored). Repeatable.
    #[arg(long, value_parser = tta_parser())]
    pub tta: Vec<Tta>,
    /// Also write the full report (per-class accuracy, confusion matrices) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Device.
    #[arg(long, value_parser = device_parser(), default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

/// The checkpoint a run directory's model is in: its selected weights, or its last with `last`.
pub(crate) fn run_checkpoint(run: &Path, last: bool) -> Result<PathBuf> {
    let weights = if last {
        Weights::Last
    } else {
        Weights::Selected
    };
    Ok(ModelFiles::of_run(&RunDir::open(run)?, weights).checkpoint)
}

/// The model of `checkpoint`: restored from the file alone, or with `config` when given (`set` overriding
/// its keys, or only the `data.*` keys of the checkpoint's own configuration). The configuration's thread
/// count is pinned before the model is built.
pub(crate) fn restore(
    checkpoint: &Path,
    config: Option<&Path>,
    set: &[String],
    device: &Device,
) -> Result<Predictor> {
    if let Some(path) = config {
        let config = Config::load(path, set)?;
        pin_threads(&config);
        return Ok(Predictor::restore(config, checkpoint, device)?);
    }
    let origin = checkpoint.display().to_string();
    let config = match fgvc_train::checkpoint::read_inference(checkpoint)? {
        Some(info) => Some(info.config(&origin, set)?),
        None => {
            let beside = ModelFiles::beside(checkpoint).config;
            beside
                .is_file()
                .then(|| Config::load(&beside, set))
                .transpose()?
        }
    };
    if let Some(config) = &config {
        pin_threads(config);
    }
    Ok(Predictor::from_checkpoint_with(checkpoint, set, device)?)
}

/// Evaluates a checkpoint on a split and prints every named prediction's accuracy.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let checkpoint = match (&args.run, &args.checkpoint) {
        (Some(run), _) => run_checkpoint(run, args.last)?,
        (None, Some(c)) => c.clone(),
        _ => bail!("give --run DIR or --checkpoint FILE"),
    };
    let split: Split = args.split.parse()?;
    let device = args.device.open()?;
    let predictor = restore(&checkpoint, args.config.as_deref(), &args.set, &device)?;
    let config = predictor.config();
    let dataset = open_split(config, split)?;
    predictor.check_classes(dataset.class_names(), dataset.name())?;
    let loader = eval_loader(config, dataset, &device)?;
    let report = if args.tta.is_empty() {
        evaluate(predictor.method(), &loader, split.as_str())?
    } else {
        evaluate_tta(
            predictor.method(),
            config,
            loader.dataset().clone(),
            split.as_str(),
            &args.tta,
            &device,
        )?
    };
    outln!("{} on {}", checkpoint.display(), loader.dataset().name())?;
    output::print(&report.to_string())?;
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
