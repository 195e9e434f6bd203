//! Step 4 of `train-cub`, the comparison: the result read back from the run directory and printed next
//! to the paper's number, with the reasons, if any, why the two are not comparable.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use fgvc_train::config::Selection;
use fgvc_train::metrics::{read_records, Record};
use fgvc_train::Config;

use super::paper::paper_result;

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
