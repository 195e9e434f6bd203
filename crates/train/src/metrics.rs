//! The metrics log of a run: `metrics.jsonl` (one JSON object per line) and `metrics.csv` (the same records
//! in fixed columns), appended as training goes and truncated to the checkpoint's step on resume.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::run_dir::{atomic_write, RunDir};

/// One line of the log: a training interval or an evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `train` (an interval of steps), `epoch` (a whole epoch's training), `eval` or `test`.
    pub kind: String,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Global batch steps completed when the record was written.
    pub step: u64,
    /// Evaluation split (`val`, `test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Learning rate of the first group (train records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Mean training loss over the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Training accuracy over the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc: Option<f64>,
    /// Training throughput over the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_sec: Option<f64>,
    /// Top-1 accuracy of the main prediction (eval records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1: Option<f64>,
    /// Top-5 accuracy of the main prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top5: Option<f64>,
    /// Mean per-class accuracy of the main prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_per_class: Option<f64>,
    /// Top-1 of every named prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<BTreeMap<String, f64>>,
    /// Mean of every named partial loss over the interval (`train` and `epoch` records of a method with
    /// several losses: PMG's `jigsaw8`, .., `concat`; DCL's `cls`, `swap`, `location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub losses: Option<BTreeMap<String, f64>>,
    /// Learning rate of every group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lrs: Option<BTreeMap<String, f64>>,
    /// Wall-clock seconds of the epoch's training steps, loading included and evaluation excluded (`epoch`
    /// records; after a resume, the batches this process ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Files skipped as unreadable in the epoch (`epoch` records of a run with `data.skip_bad`; each is also
    /// logged as a warning naming it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<usize>,
}

const CSV_HEADER: &str =
    "kind,epoch,step,split,lr,loss,train_acc,images_per_sec,top1,top5,mean_per_class,seconds,skipped";

impl Record {
    fn csv_line(&self) -> String {
        let f = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.kind,
            self.epoch,
            self.step,
            self.split.clone().unwrap_or_default(),
            f(self.lr),
            f(self.loss),
            f(self.train_acc),
            f(self.images_per_sec),
            f(self.top1),
            f(self.top5),
            f(self.mean_per_class),
            f(self.seconds),
            self.skipped.map(|n| n.to_string()).unwrap_or_default()
        )
    }
}

/// The open log of a run.
#[derive(Debug)]
pub struct MetricsLog {
    jsonl: PathBuf,
    csv: PathBuf,
    records: Vec<Record>,
    /// Writes nothing: the log of a rank other than 0 in a data-parallel run.
    detached: bool,
}

/// Reads a `metrics.jsonl` log: an absent file is an empty log, and a line torn by a kill mid-write is
/// skipped.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        // A line torn by a kill mid-write is dropped; every complete one parses.
        if let Ok(r) = serde_json::from_str::<Record>(&line) {
            out.push(r);
        }
    }
    Ok(out)
}

impl MetricsLog {
    /// Starts a fresh log in `run` (an existing one is replaced), or with `resume_step`, keeps the records
    /// up to that step and drops the rest (written after the checkpoint the run resumes from).
    pub fn open(run: &RunDir, resume_step: Option<u64>) -> Result<Self> {
        let mut log = MetricsLog {
            jsonl: run.metrics_jsonl(),
            csv: run.metrics_csv(),
            records: Vec::new(),
            detached: false,
        };
        if let Some(step) = resume_step {
            log.records = read_records(&log.jsonl)?
                .into_iter()
                .filter(|r| r.step <= step)
                .collect();
        }
        log.rewrite()?;
        Ok(log)
    }

    /// A log kept in memory only (ranks other than 0 of a data-parallel run, where rank 0 writes the files).
    pub fn detached(run: &RunDir) -> Self {
        MetricsLog {
            jsonl: run.metrics_jsonl(),
            csv: run.metrics_csv(),
            records: Vec::new(),
            detached: true,
        }
    }

    fn rewrite(&self) -> Result<()> {
        let mut jsonl = String::new();
        let mut csv = format!("{CSV_HEADER}\n");
        for r in &self.records {
            jsonl.push_str(&serde_json::to_string(r).expect("records serialise"));
            jsonl.push('\n');
            csv.push_str(&r.csv_line());
            csv.push('\n');
        }
        atomic_write(&self.jsonl, jsonl.as_bytes())?;
        atomic_write(&self.csv, csv.as_bytes())
    }

    /// Appends `record` to both files.
    pub fn append(&mut self, record: Record) -> Result<()> {
        if !self.detached {
            let line = serde_json::to_string(&record).expect("records serialise");
            append_line(&self.jsonl, &line)?;
            append_line(&self.csv, &record.csv_line())?;
        }
        self.records.push(record);
        Ok(())
    }

    /// Every record so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_truncates_to_the_checkpoint_step() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let mut log = MetricsLog::open(&run, None).unwrap();
        for step in [5, 10, 15] {
            log.append(Record {
                kind: "train".into(),
                step,
                loss: Some(1.0 / step as f64),
                ..Default::default()
            })
            .unwrap();
        }
        let log = MetricsLog::open(&run, Some(10)).unwrap();
        assert_eq!(log.records().len(), 2);
        let csv = std::fs::read_to_string(run.metrics_csv()).unwrap();
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.starts_with("kind,epoch,step"));
        assert!(csv.lines().nth(2).unwrap().starts_with("train,0,10,,,0.1,"));
        let fresh = MetricsLog::open(&run, None).unwrap();
        assert!(fresh.records().is_empty());
    }
}
