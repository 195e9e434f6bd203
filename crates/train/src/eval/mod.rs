//! Evaluation: top-1, top-5, per-class and mean per-class accuracy and the confusion matrix of every named
//! prediction a method makes, plain or with test-time augmentation ([`evaluate_tta`]).

use std::fmt;

use candle_core::Tensor;
use fgvc_data::Loader;
use fgvc_distributed::Group;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::method::{Method, Predictions};

mod tta;

pub use tta::{evaluate_tta, predict_tta, Tta};

/// Accuracy figures of one named prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadReport {
    /// The prediction's name (`logits`, PMG's `concat`, `combined`).
    pub name: String,
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy in [0, 1] (top-`classes` when there are fewer than 5 classes).
    pub top5: f64,
    /// Accuracy of each class (NaN-free: a class without images gets 0 and is left out of the mean).
    pub per_class: Vec<f64>,
    /// Mean over the classes that have images.
    pub mean_per_class: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

/// The evaluation of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The split's name (`val`, `test`).
    pub split: String,
    /// Images evaluated.
    pub count: usize,
    /// Class names, in label order.
    pub class_names: Vec<String>,
    /// Every named prediction, the method's main one first.
    pub heads: Vec<HeadReport>,
}

impl EvalReport {
    /// The main prediction's figures.
    pub fn main(&self) -> &HeadReport {
        &self.heads[0]
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} split, {} images, {} classes",
            self.split,
            self.count,
            self.class_names.len()
        )?;
        let width = self
            .heads
            .iter()
            .map(|h| h.name.len())
            .max()
            .unwrap_or(0)
            .max(12);
        writeln!(
            f,
            "{:<width$} {:>8} {:>8} {:>15}",
            "prediction", "top-1", "top-5", "mean per class"
        )?;
        for h in &self.heads {
            writeln!(
                f,
                "{:<width$} {:>7.2}% {:>7.2}% {:>14.2}%",
                h.name,
                100.0 * h.top1,
                100.0 * h.top5,
                100.0 * h.mean_per_class
            )?;
        }
        Ok(())
    }
}

/// Accumulates predictions into the figures of a [`HeadReport`].
#[derive(Debug, Clone)]
pub struct HeadAccumulator {
    name: String,
    classes: usize,
    top1: u64,
    top5: u64,
    count: u64,
    confusion: Vec<Vec<u64>>,
}

impl HeadAccumulator {
    /// An empty accumulator for `classes` classes.
    pub fn new(name: impl Into<String>, classes: usize) -> Self {
        HeadAccumulator {
            name: name.into(),
            classes,
            top1: 0,
            top5: 0,
            count: 0,
            confusion: vec![vec![0; classes]; classes],
        }
    }

    /// Adds one image's scores (`classes` values) with its label.
    pub fn add(&mut self, scores: &[f32], label: usize) -> Result<()> {
        if scores.len() != self.classes || label >= self.classes {
            return Err(TrainError::Msg(format!(
                "prediction {:?} has {} scores for {} classes (label {label})",
                self.name,
                scores.len(),
                self.classes
            )));
        }
        // Rank of the true class: how many classes score strictly higher (ties count in its favour, as
        // torch.topk's stable order would for the lower index only approximately).
        let target = scores[label];
        let higher = scores.iter().filter(|&&s| s > target).count();
        let pred = scores
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &s)| {
                if s > best.1 {
                    (i, s)
                } else {
                    best
                }
            })
            .0;
        self.count += 1;
        if pred == label {
            self.top1 += 1;
        }
        if higher < 5 {
            self.top5 += 1;
        }
        self.confusion[label][pred] += 1;
        Ok(())
    }

    /// Sums the counts over the ranks of `group`, which must all call it for the same prediction.
    pub fn reduce(&mut self, group: &Group) -> Result<()> {
        let mut v: Vec<f64> = [self.top1, self.top5, self.count]
            .into_iter()
            .chain(self.confusion.iter().flatten().copied())
            .map(|c| c as f64)
            .collect();
        group.sum_f64(&mut v)?;
        let mut it = v.into_iter().map(|c| c.round() as u64);
        let mut next = || it.next().unwrap_or(0);
        (self.top1, self.top5, self.count) = (next(), next(), next());
        for c in self.confusion.iter_mut().flatten() {
            *c = next();
        }
        Ok(())
    }

    /// The figures so far.
    pub fn report(&self) -> HeadReport {
        let n = self.count.max(1) as f64;
        let per_class: Vec<f64> = (0..self.classes)
            .map(|c| {
                let total: u64 = self.confusion[c].iter().sum();
                if total == 0 {
                    0.0
                } else {
                    self.confusion[c][c] as f64 / total as f64
                }
            })
            .collect();
        let present: Vec<f64> = (0..self.classes)
            .filter(|&c| self.confusion[c].iter().sum::<u64>() > 0)
            .map(|c| per_class[c])
            .collect();
        HeadReport {
            name: self.name.clone(),
            top1: self.top1 as f64 / n,
            top5: self.top5 as f64 / n,
            mean_per_class: if present.is_empty() {
                0.0
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            },
            per_class,
            confusion: self.confusion.clone(),
        }
    }
}

/// Adds one batch's `predictions` for images labelled `labels` to `heads` (one accumulator per named
/// prediction, created at the first batch).
fn tally(
    heads: &mut Vec<HeadAccumulator>,
    predictions: Predictions,
    labels: &[u32],
    classes: usize,
) -> Result<()> {
    if heads.is_empty() {
        *heads = predictions
            .heads
            .iter()
            .map(|(n, _)| HeadAccumulator::new(n.clone(), classes))
            .collect();
    }
    if predictions.heads.len() != heads.len() {
        return Err(TrainError::Msg(
            "the method's named predictions changed between batches".into(),
        ));
    }
    for (acc, (_, logits)) in heads.iter_mut().zip(&predictions.heads) {
        let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        for (row, &l) in rows.iter().zip(labels) {
            acc.add(row, l as usize)?;
        }
    }
    Ok(())
}

/// Evaluates `method` on every batch of `loader` (which should not shuffle or drop), epoch `0`'s
/// deterministic order.
pub fn evaluate(method: &dyn Method, loader: &Loader, split: &str) -> Result<EvalReport> {
    evaluate_by(loader, split, |images| method.predict(images))
}

/// [`evaluate`] sharded over the ranks of a data-parallel run: each rank evaluates its part of the split
/// (`loader` reads this rank's [`fgvc_data::Shard`]) and the counts are summed over `group`, so every rank
/// gets the report a single process would. Every rank must call it.
pub fn evaluate_in(
    method: &dyn Method,
    loader: &Loader,
    split: &str,
    group: &Group,
) -> Result<EvalReport> {
    evaluate_over(loader, split, group, |images| method.predict(images))
}

/// Evaluates the named predictions `predict` makes for each batch of `loader`.
fn evaluate_by(
    loader: &Loader,
    split: &str,
    predict: impl Fn(&Tensor) -> Result<Predictions>,
) -> Result<EvalReport> {
    evaluate_over(loader, split, &Group::local(), predict)
}

/// [`evaluate_by`] with the counts summed over `group`.
fn evaluate_over(
    loader: &Loader,
    split: &str,
    group: &Group,
    predict: impl Fn(&Tensor) -> Result<Predictions>,
) -> Result<EvalReport> {
    let class_names = loader.dataset().class_names().to_vec();
    let classes = class_names.len();
    let mut heads: Vec<HeadAccumulator> = Vec::new();
    let mut count = 0;
    for batch in loader.epoch(0) {
        let batch = batch?;
        let labels = batch.labels.to_vec1::<u32>()?;
        tally(&mut heads, predict(&batch.images)?, &labels, classes)?;
        count += labels.len();
    }
    if group.is_distributed() {
        let mut sizes = [count as f64, heads.len() as f64];
        group.sum_f64(&mut sizes)?;
        if sizes[1] != (heads.len() * group.world_size()) as f64 {
            return Err(TrainError::Msg(format!(
                "{split}: rank {} made {} named predictions, the other ranks {} on average",
                group.rank(),
                heads.len(),
                sizes[1] / group.world_size() as f64
            )));
        }
        count = sizes[0].round() as usize;
        for h in &mut heads {
            h.reduce(group)?;
        }
    }
    if count == 0 {
        return Err(TrainError::Msg(format!("the {split} split is empty")));
    }
    Ok(EvalReport {
        split: split.into(),
        count,
        class_names,
        heads: heads.iter().map(HeadAccumulator::report).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_from_known_predictions() {
        let mut acc = HeadAccumulator::new("logits", 6);
        // label 0 predicted 0; label 1 predicted 2 (true class second); label 1 predicted 1;
        // label 2 ranked last.
        acc.add(&[9., 1., 0., 0., 0., 0.], 0).unwrap();
        acc.add(&[0., 5., 6., 0., 0., 0.], 1).unwrap();
        acc.add(&[0., 6., 5., 0., 0., 0.], 1).unwrap();
        acc.add(&[6., 5., -1., 4., 3., 2.], 2).unwrap();
        let r = acc.report();
        assert_eq!(r.top1, 0.5);
        assert_eq!(r.top5, 0.75);
        assert_eq!(r.per_class[..3], [1.0, 0.5, 0.0]);
        assert!((r.mean_per_class - 0.5).abs() < 1e-12);
        assert_eq!(r.confusion[1], vec![0, 1, 1, 0, 0, 0]);
        assert_eq!(r.confusion[2][0], 1);
        assert!(acc.add(&[0.0; 5], 0).is_err());
    }
}
