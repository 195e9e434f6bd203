//! `cargo xtask synthetic-table`: the baseline and every method trained with the same data, network,
//! optimiser, epochs and seed on the embedded synthetic dataset, one `fgvc train` process per run, and the
//! comparison table (test accuracy, time per epoch) that docs/methods.md publishes.
//!
//! Each run starts from its method's synthetic preset in the registry (`configs/synthetic-baseline.toml`,
//! `configs/<method>-synthetic.toml`; all share
//! the main job's budget); another backbone than the configs' narrow ResNet-18 is swapped in by editing the
//! `[model]` table, and the config actually run is written next to its run directory. A finished run (a
//! `test` record in its log) is reused unless `--force`, so an interrupted table resumes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use fgvc_train::methods::baseline;
use fgvc_train::metrics::{read_records, Record};
use fgvc_train::registry;

use crate::fgvc_run::{fgvc_binary, train};
use serde::Serialize;

/// The methods of the table, in its row order: the registry's methods that ship a synthetic preset.
pub fn methods() -> Vec<&'static str> {
    registry::methods()
        .into_iter()
        .filter(|m| m.presets.synthetic.is_some())
        .map(|m| m.name)
        .collect()
}

/// Arguments of `cargo xtask synthetic-table`.
#[derive(Args, Debug, Clone)]
pub struct SyntheticTableArgs {
    /// Methods to run (comma-separated; default: every method of the registry with a synthetic preset).
    #[arg(long, value_delimiter = ',', default_values_t = methods().into_iter().map(String::from))]
    pub methods: Vec<String>,
    /// Backbones (comma-separated): `resnet18` (the configs' base width 16) and/or `mobilenet_v2`.
    #[arg(long, value_delimiter = ',', default_values_t = ["resnet18".to_string(), "mobilenet_v2".to_string()])]
    pub backbones: Vec<String>,
    /// MobileNetV2's width multiplier (its stem keeps torchvision's stride 2 at 64 px).
    #[arg(long, default_value_t = 0.5)]
    pub mobilenet_width: f64,
    /// Extra `--set KEY=VALUE` for every run (e.g. `train.epochs=2` for a quick look).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Where run directories, the configs run, `table.md` and `table.json` go.
    #[arg(long, default_value = "target/synthetic-table")]
    pub out: PathBuf,
    /// Train again even where a finished run exists.
    #[arg(long)]
    pub force: bool,
    /// The `fgvc` binary to run (default: build it with `cargo build --release -p fgvc-cli`).
    #[arg(long)]
    pub fgvc: Option<PathBuf>,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Method name as the configs spell it.
    pub method: String,
    /// Backbone as run.
    pub backbone: String,
    /// Test top-1 of the method's main prediction with the weights selected on val.
    pub test_top1: f64,
    /// The main prediction's name (`logits`, `combined`, `classifier`, ...).
    pub main_head: String,
    /// Test top-1 of every named prediction.
    pub test_heads: Vec<(String, f64)>,
    /// Best validation top-1 and its epoch (0-based).
    pub best_val_top1: f64,
    /// Epoch of the best validation top-1.
    pub best_epoch: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Mean wall-clock seconds of an epoch's training (evaluation excluded).
    pub seconds_per_epoch: f64,
}

/// The config file a method's synthetic run starts from.
pub fn base_config(root: &Path, method: &str) -> Result<PathBuf> {
    let preset = registry::lookup(method)?
        .presets
        .synthetic
        .with_context(|| format!("{method} ships no synthetic configuration"))?;
    let path = root.join(preset.file());
    if !path.exists() {
        bail!("{} is missing", path.display());
    }
    Ok(path)
}

/// The text of the config a run uses: `base` (TOML) with `[model]` set to `backbone`.
pub fn config_for(
    base: &str,
    origin: &Path,
    backbone: &str,
    mobilenet_width: f64,
) -> Result<String> {
    let mut table: toml::Table =
        toml::from_str(base).with_context(|| format!("{} is not valid TOML", origin.display()))?;
    let model = table
        .entry("model")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .with_context(|| format!("{}: `model` is not a table", origin.display()))?;
    match backbone {
        "resnet18" => {
            if model.get("backbone").and_then(|v| v.as_str()) != Some("resnet18") {
                bail!(
                    "{}: the synthetic configs are written for resnet18",
                    origin.display()
                );
            }
        }
        "mobilenet_v2" => {
            model.insert("backbone".into(), "mobilenet_v2".into());
            model.remove("base_width");
            model.insert("width_mult".into(), mobilenet_width.into());
            model.insert("first_stride".into(), 2.into());
        }
        other => bail!("unknown backbone {other:?} (known: resnet18, mobilenet_v2)"),
    }
    Ok(toml::to_string(&table)?)
}

/// Summarises a finished run's log; `None` while it has no `test` record. `main` names the main prediction
/// (the first head of its `eval-test.json`, as [`crate::train_cub::read_result`] reads it).
pub fn summarize(method: &str, backbone: &str, main: &str, records: &[Record]) -> Option<Row> {
    let test = records.iter().rev().find(|r| r.kind == "test")?;
    let best = records
        .iter()
        .filter(|r| r.kind == "eval" && r.split.as_deref() == Some("val"))
        .fold(None::<&Record>, |best, r| match best {
            Some(b) if b.top1.unwrap_or(0.0) >= r.top1.unwrap_or(0.0) => Some(b),
            _ => Some(r),
        });
    let epochs: Vec<&Record> = records.iter().filter(|r| r.kind == "epoch").collect();
    let seconds: Vec<f64> = epochs.iter().filter_map(|r| r.seconds).collect();
    let heads: Vec<(String, f64)> = test
        .heads
        .as_ref()
        .map(|h| h.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default();
    Some(Row {
        method: method.into(),
        backbone: backbone.into(),
        test_top1: test.top1?,
        main_head: main.into(),
        test_heads: heads,
        best_val_top1: best.and_then(|b| b.top1).unwrap_or(f64::NAN),
        best_epoch: best.map(|b| b.epoch).unwrap_or(0),
        epochs: epochs.len(),
        seconds_per_epoch: if seconds.is_empty() {
            f64::NAN
        } else {
            seconds.iter().sum::<f64>() / seconds.len() as f64
        },
    })
}

/// The markdown table, one row per run, with each method's time relative to the baseline on its backbone.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| method | backbone | test top-1 | main prediction | other predictions (test top-1) | best val top-1 (epoch) | s / epoch | vs baseline |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.method == baseline::NAME && b.backbone == r.backbone)
            .map(|b| b.seconds_per_epoch);
        let rel = match base {
            Some(b) if b > 0.0 => format!("{:.1}x", r.seconds_per_epoch / b),
            _ => "-".into(),
        };
        let others: Vec<String> = r
            .test_heads
            .iter()
            .filter(|(k, _)| *k != r.main_head)
            .map(|(k, v)| format!("{k} {:.1}", 100.0 * v))
            .collect();
        let others = if others.is_empty() {
            "-".to_string()
        } else {
            others.join(", ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} % | {} | {} | {:.1} % ({}) | {:.1} | {} |",
            r.method,
            r.backbone,
            100.0 * r.test_top1,
            r.main_head,
            others,
            100.0 * r.best_val_top1,
            r.best_epoch + 1,
            r.seconds_per_epoch,
            rel
        );
    }
    s
}

/// Runs every (method, backbone) pair that has no finished run yet, then writes and prints the table.
pub fn run(args: &SyntheticTableArgs) -> Result<()> {
    let root = crate::workspace_root();
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Check every pair before spending minutes on the first.
    let mut plan = Vec::new();
    for backbone in &args.backbones {
        for method in &args.methods {
            let base = base_config(&root, method)?;
            let text = std::fs::read_to_string(&base)
                .with_context(|| format!("cannot read {}", base.display()))?;
            plan.push((
                method.clone(),
                backbone.clone(),
                config_for(&text, &base, backbone, args.mobilenet_width)?,
            ));
        }
    }
    let fgvc = fgvc_binary(args.fgvc.as_deref(), &root)?;
    let mut rows = Vec::new();
    for (method, backbone, config) in plan {
        let name = format!("{method}-{backbone}");
        let run_dir = out.join(&name);
        let log = run_dir.join("metrics.jsonl");
        let summary = |records: &[Record]| {
            let main = crate::train_cub::read_result(&run_dir)
                .map(|r| r.head)
                .unwrap_or_else(|_| "?".into());
            summarize(&method, &backbone, &main, records)
        };
        let dir = train(&fgvc, &root, &out, &name, &config, &args.set, args.force)?;
        let row = summary(&read_records(&dir.join("metrics.jsonl"))?).with_context(|| {
            format!(
                "{name}: the run finished without a test record in {}",
                log.display()
            )
        })?;
        rows.push(row);
    }
    let table = markdown(&rows);
    fgvc_train::run_dir::atomic_write(&out.join("table.md"), table.as_bytes())?;
    fgvc_train::run_dir::atomic_write(
        &out.join("table.json"),
        serde_json::to_string_pretty(&rows)?.as_bytes(),
    )?;
    println!("\n{table}\nwritten to {}", out.join("table.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, epoch: usize, split: Option<&str>, top1: Option<f64>) -> Record {
        Record {
            kind: kind.into(),
            epoch,
            split: split.map(str::to_string),
            top1,
            ..Default::default()
        }
    }

    #[test]
    fn summary_picks_the_best_val_epoch_and_the_mean_epoch_time() {
        let mut records = vec![
            Record {
                seconds: Some(10.0),
                ..rec("epoch", 0, None, None)
            },
            rec("eval", 0, Some("val"), Some(0.5)),
            Record {
                seconds: Some(14.0),
                ..rec("epoch", 1, None, None)
            },
            rec("eval", 1, Some("val"), Some(0.7)),
            rec("eval", 2, Some("val"), Some(0.7)),
        ];
        assert_eq!(summarize("pmg", "resnet18", "combined", &records), None);
        let mut test = rec("test", 1, Some("test"), Some(0.8));
        test.heads = Some(
            [("combined".to_string(), 0.8), ("concat".to_string(), 0.6)]
                .into_iter()
                .collect(),
        );
        records.push(test);
        let row = summarize("pmg", "resnet18", "combined", &records).unwrap();
        assert_eq!(row.best_epoch, 1);
        assert_eq!(row.best_val_top1, 0.7);
        assert_eq!(row.epochs, 2);
        assert_eq!(row.seconds_per_epoch, 12.0);
        assert_eq!(row.main_head, "combined");
        let md = markdown(&[row]);
        assert!(
            md.contains(
                "| pmg | resnet18 | 80.0 % | combined | concat 60.0 | 70.0 % (2) | 12.0 | - |"
            ),
            "{md}"
        );
    }

    #[test]
    fn mobilenet_swaps_the_model_table_and_keeps_the_rest() {
        let base =
            "seed = 3\n[model]\nbackbone = \"resnet18\"\nbase_width = 16\n[train]\nepochs = 10\n";
        let text = config_for(base, Path::new("x.toml"), "mobilenet_v2", 0.5).unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        let model = t["model"].as_table().unwrap();
        assert_eq!(model["backbone"].as_str(), Some("mobilenet_v2"));
        assert!(model.get("base_width").is_none());
        assert_eq!(model["width_mult"].as_float(), Some(0.5));
        assert_eq!(t["train"]["epochs"].as_integer(), Some(10));
        assert_eq!(
            config_for(base, Path::new("x.toml"), "resnet18", 0.5).unwrap(),
            toml::to_string(&toml::from_str::<toml::Table>(base).unwrap()).unwrap()
        );
        assert!(config_for(base, Path::new("x.toml"), "vgg16", 0.5).is_err());
    }

    #[test]
    fn every_method_has_a_synthetic_config_that_the_engine_accepts() {
        let root = crate::workspace_root();
        for m in methods() {
            let path = base_config(&root, m).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            for b in ["resnet18", "mobilenet_v2"] {
                let cfg = config_for(&text, &path, b, 0.5).unwrap();
                fgvc_train::Config::parse(&cfg, &path.display().to_string(), &[])
                    .unwrap_or_else(|e| panic!("{m} on {b}: {e}"));
            }
        }
        assert!(base_config(&root, "nope").is_err());
    }
}
