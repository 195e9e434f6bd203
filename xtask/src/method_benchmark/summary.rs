//! The benchmark's table: each cell (method or ablation, backbone) over its seeds as mean ± standard
//! deviation, next to the baseline of the same backbone, with the verdict the issue's goals ask for.

use std::fmt::Write as _;

use serde::Serialize;

use crate::synthetic_table::Row;

/// Mean and sample standard deviation (n - 1; 0 for one value).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// One cell: a method (or an ablation of one) on a backbone, over seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// Registry name of the method.
    pub method: String,
    /// The ablation's name, empty for the method as published.
    pub variant: String,
    /// Backbone.
    pub backbone: String,
    /// Seeds run, in order.
    pub seeds: Vec<u64>,
    /// Test top-1 of the main prediction per seed (weights selected on val).
    pub test_top1: Vec<f64>,
    /// Best validation top-1 per seed.
    pub best_val_top1: Vec<f64>,
    /// Mean training seconds per epoch over every seed's epochs.
    pub seconds_per_epoch: f64,
    /// The main prediction's name.
    pub main_head: String,
    /// Test top-1 of every named prediction, averaged over seeds.
    pub heads: Vec<(String, f64)>,
}

impl Cell {
    /// The cell of `rows` (one per seed, same method, variant and backbone).
    pub fn of(variant: &str, seeds: &[u64], rows: &[Row]) -> Cell {
        let first = &rows[0];
        let mut heads: Vec<(String, f64)> = first
            .test_heads
            .iter()
            .map(|(k, _)| {
                let vals: Vec<f64> = rows
                    .iter()
                    .filter_map(|r| r.test_heads.iter().find(|(h, _)| h == k).map(|p| p.1))
                    .collect();
                (k.clone(), mean_std(&vals).0)
            })
            .collect();
        heads.sort_by(|a, b| a.0.cmp(&b.0));
        let secs: Vec<f64> = rows.iter().map(|r| r.seconds_per_epoch).collect();
        Cell {
            method: first.method.clone(),
            variant: variant.into(),
            backbone: first.backbone.clone(),
            seeds: seeds.to_vec(),
            test_top1: rows.iter().map(|r| r.test_top1).collect(),
            best_val_top1: rows.iter().map(|r| r.best_val_top1).collect(),
            seconds_per_epoch: mean_std(&secs).0,
            main_head: first.main_head.clone(),
            heads,
        }
    }

    /// Mean and standard deviation of the test top-1.
    pub fn test(&self) -> (f64, f64) {
        mean_std(&self.test_top1)
    }

    /// The row's label: the method, and its ablation in parentheses.
    pub fn label(&self) -> String {
        if self.variant.is_empty() {
            self.method.clone()
        } else {
            format!("{} ({})", self.method, self.variant)
        }
    }
}

/// Whether `cell` beats `baseline` by more than one standard deviation (the larger of the two).
pub fn beats(cell: &Cell, baseline: &Cell) -> bool {
    let (m, s) = cell.test();
    let (bm, bs) = baseline.test();
    m - bm > s.max(bs)
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// The pretraining result shown above a backbone's table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pretrained {
    /// Backbone.
    pub backbone: String,
    /// Source classes.
    pub classes: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Test top-1 on the source task's own test split.
    pub source_test_top1: f64,
    /// Seconds per epoch.
    pub seconds_per_epoch: f64,
}

/// The baseline at one candidate rate factor, over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateCandidate {
    /// The factor on the official rates.
    pub factor: f64,
    /// The baseline's best val top-1 per seed: what the choice reads.
    pub best_val_top1: Vec<f64>,
    /// Its test top-1 per seed, reported only.
    pub test_top1: Vec<f64>,
}

/// A backbone's common rate factor: the candidate whose baseline has the best mean val top-1 over the
/// seeds (the first such in candidate order on a tie). Choosing on the baseline favours the baseline, not
/// the methods.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateChoice {
    /// Backbone.
    pub backbone: String,
    /// Every candidate tried, in order.
    pub candidates: Vec<RateCandidate>,
    /// The factor chosen.
    pub chosen: f64,
}

impl RateChoice {
    /// Chooses among `candidates` (at least one) on the mean best val top-1.
    pub fn choose(backbone: &str, candidates: Vec<RateCandidate>) -> RateChoice {
        let mut chosen = candidates[0].factor;
        let mut best = f64::NEG_INFINITY;
        for c in &candidates {
            let v = mean_std(&c.best_val_top1).0;
            if v > best {
                best = v;
                chosen = c.factor;
            }
        }
        RateChoice {
            backbone: backbone.into(),
            candidates,
            chosen,
        }
    }

    /// One line for the table: the factor and, when there was a choice, what each candidate scored.
    pub fn describe(&self) -> String {
        if self.candidates.len() < 2 {
            return format!("Rate factor x{} (the only candidate).", self.chosen);
        }
        let each: Vec<String> = self
            .candidates
            .iter()
            .map(|c| {
                let (v, sd) = mean_std(&c.best_val_top1);
                format!(
                    "x{} val {} ± {} (test {})",
                    c.factor,
                    pct(v),
                    pct(sd),
                    pct(mean_std(&c.test_top1).0)
                )
            })
            .collect();
        format!(
            "Rate factor x{}, chosen on the baseline's mean best val top-1 over {} seeds: {}.",
            self.chosen,
            self.candidates[0].best_val_top1.len(),
            each.join("; ")
        )
    }
}

/// The markdown tables, one per backbone in `backbones` order.
pub fn markdown(
    backbones: &[String],
    pretrained: &[Pretrained],
    rates: &[RateChoice],
    cells: &[Cell],
) -> String {
    let mut s = String::new();
    for backbone in backbones {
        let _ = writeln!(s, "### {backbone}\n");
        if let Some(p) = pretrained.iter().find(|p| &p.backbone == backbone) {
            let _ = writeln!(
                s,
                "Pretrained {} epochs on {} source classes: {} % source test top-1, {:.1} s / epoch.\n",
                p.epochs,
                p.classes,
                pct(p.source_test_top1),
                p.seconds_per_epoch
            );
        }
        if let Some(r) = rates.iter().find(|r| &r.backbone == backbone) {
            let _ = writeln!(s, "{}\n", r.describe());
        }
        s.push_str(
            "| method | test top-1, mean ± std (n) | vs baseline | beats baseline by > 1 std | best val top-1 | per seed | other predictions | s / epoch |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        let rows: Vec<&Cell> = cells.iter().filter(|c| &c.backbone == backbone).collect();
        let base = rows
            .iter()
            .find(|c| c.method == fgvc_train::methods::baseline::NAME && c.variant.is_empty());
        for c in &rows {
            let (m, sd) = c.test();
            let (delta, verdict) = match base {
                Some(b) if !std::ptr::eq(*b, *c) => (
                    format!("{:+.1}", 100.0 * (m - b.test().0)),
                    // One seed has no spread of its own: no verdict.
                    if c.test_top1.len() < 2 {
                        "n/a (1 seed)"
                    } else if beats(c, b) {
                        "yes"
                    } else {
                        "no"
                    }
                    .to_string(),
                ),
                _ => ("-".into(), "-".into()),
            };
            let per_seed: Vec<String> = c.test_top1.iter().map(|&x| pct(x)).collect();
            let others: Vec<String> = c
                .heads
                .iter()
                .filter(|(k, _)| *k != c.main_head)
                .map(|(k, v)| format!("{k} {}", pct(*v)))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} ± {} ({}) | {} | {} | {} | {} | {} | {:.1} |",
                c.label(),
                pct(m),
                pct(sd),
                c.test_top1.len(),
                delta,
                verdict,
                pct(mean_std(&c.best_val_top1).0),
                per_seed.join(", "),
                if others.is_empty() {
                    "-".to_string()
                } else {
                    others.join(", ")
                },
                c.seconds_per_epoch
            );
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, top1: f64) -> Row {
        Row {
            method: method.into(),
            backbone: "resnet18".into(),
            test_top1: top1,
            main_head: "logits".into(),
            test_heads: vec![("logits".into(), top1), ("extra".into(), top1 / 2.0)],
            best_val_top1: top1,
            best_epoch: 1,
            epochs: 2,
            seconds_per_epoch: 3.0,
        }
    }

    #[test]
    fn sample_standard_deviation() {
        let (m, s) = mean_std(&[0.9, 0.92, 0.94]);
        assert!((m - 0.92).abs() < 1e-12);
        assert!((s - 0.02).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }

    #[test]
    fn a_method_beats_the_baseline_only_beyond_one_standard_deviation() {
        let base = Cell::of(
            "",
            &[0, 1, 2],
            &[
                row("baseline", 0.90),
                row("baseline", 0.91),
                row("baseline", 0.92),
            ],
        );
        let close = Cell::of(
            "",
            &[0, 1, 2],
            &[row("pmg", 0.91), row("pmg", 0.92), row("pmg", 0.93)],
        );
        let clear = Cell::of(
            "",
            &[0, 1, 2],
            &[row("dcl", 0.94), row("dcl", 0.95), row("dcl", 0.96)],
        );
        assert!(!beats(&close, &base));
        assert!(beats(&clear, &base));
        let single = Cell::of("one seed", &[0], &[row("dcl", 0.99)]);
        let md = markdown(
            &["resnet18".into()],
            &[],
            &[],
            &[base, close, clear, single],
        );
        assert!(md.contains("| +8.0 | n/a (1 seed) |"), "{md}");
        assert!(md.contains("| baseline | 91.0 ± 1.0 (3) | - | - |"), "{md}");
        assert!(md.contains("| pmg | 92.0 ± 1.0 (3) | +1.0 | no |"), "{md}");
        assert!(
            md.contains("| dcl | 95.0 ± 1.0 (3) | +4.0 | yes | 95.0 | 94.0, 95.0, 96.0 | extra 47.5 | 3.0 |"),
            "{md}"
        );
    }

    #[test]
    fn the_rate_factor_is_chosen_on_val_not_test() {
        let c = |factor: f64, val: [f64; 2], test: [f64; 2]| RateCandidate {
            factor,
            best_val_top1: val.to_vec(),
            test_top1: test.to_vec(),
        };
        let choice = RateChoice::choose(
            "mobilenet_v2",
            vec![
                c(3.0, [0.9, 0.92], [0.5, 0.5]),
                c(10.0, [0.95, 0.3], [0.99, 0.99]),
            ],
        );
        assert_eq!(choice.chosen, 3.0);
        assert!(
            choice.describe().contains("x3 val 91.0 ± 1.4"),
            "{}",
            choice.describe()
        );
        let tie = RateChoice::choose(
            "r",
            vec![c(1.0, [0.5, 0.5], [0.0; 2]), c(3.0, [0.5, 0.5], [0.0; 2])],
        );
        assert_eq!(tie.chosen, 1.0);
    }
}
