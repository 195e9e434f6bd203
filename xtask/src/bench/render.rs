//! The results of a suite run as JSON records (`<suite>.json`) and as a markdown table (`<suite>.md`).

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::machine::Machine;
use super::measurement::{Measurement, Row, TorchSide};

/// How a suite run was set up, for the records and the table's heading.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// `backbones` or `methods`.
    pub suite: String,
    /// The requested device.
    pub device: String,
    /// CPU threads of both sides.
    pub threads: usize,
    /// Timed iterations.
    pub iters: usize,
    /// The CPU, its cores and the ISA cap.
    pub machine: Machine,
    /// The precision both sides ran at.
    pub precision: fgvc_ops::Precision,
    /// Whether the PyTorch columns are shown.
    pub with_torch: bool,
    /// PyTorch's version when it ran.
    pub torch_version: Option<String>,
}

/// The JSON records of a run: one object per workload.
pub fn records_json(info: &RunInfo, rows: &[Row]) -> Value {
    let opt = |x: Option<f64>| x.map_or(Value::Null, |v| json!(v));
    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("suite".into(), json!(info.suite));
            m.insert("workload".into(), json!(r.workload.label));
            for (k, v) in &r.workload.fields {
                m.insert((*k).into(), v.clone());
            }
            let ours = r.ours.as_ref().ok();
            m.insert(
                "device".into(),
                json!(ours
                    .and_then(|o| o.device.clone())
                    .unwrap_or_else(|| info.device.clone())),
            );
            m.insert("threads".into(), json!(info.threads));
            m.insert("cpu".into(), json!(info.machine.cpu));
            m.insert("logical_cores".into(), json!(info.machine.logical_cores));
            m.insert(
                "isa_cap".into(),
                opt_str(info.machine.isa_cap.map(|c| c.name().to_string())),
            );
            m.insert("ours_isa".into(), opt_str(ours.and_then(|o| o.isa.clone())));
            m.insert("iters".into(), json!(info.iters));
            m.insert("precision".into(), json!(info.precision.name()));
            m.insert(
                "ours_version".into(),
                opt_str(ours.and_then(|o| o.version.clone())),
            );
            m.insert("ours_median_s".into(), opt(ours.and_then(|o| o.median_s)));
            m.insert(
                "ours_images_per_s".into(),
                opt(ours.and_then(|o| o.images_per_s)),
            );
            m.insert(
                "ours_peak_mib".into(),
                opt(ours.and_then(|o| o.peak_rss_mib)),
            );
            if let Err(e) = &r.ours {
                m.insert("ours_error".into(), json!(e));
            }
            if info.with_torch {
                let t = match &r.torch {
                    TorchSide::Ran(t) => Some(t),
                    _ => None,
                };
                m.insert(
                    "pytorch_version".into(),
                    opt_str(t.and_then(|t| t.version.clone())),
                );
                m.insert("pytorch_isa".into(), opt_str(t.and_then(|t| t.isa.clone())));
                m.insert(
                    "pytorch_device".into(),
                    opt_str(t.and_then(|t| t.device.clone())),
                );
                m.insert("pytorch_median_s".into(), opt(t.and_then(|t| t.median_s)));
                m.insert(
                    "pytorch_images_per_s".into(),
                    opt(t.and_then(|t| t.images_per_s)),
                );
                m.insert(
                    "pytorch_peak_mib".into(),
                    opt(t.and_then(|t| t.peak_rss_mib)),
                );
                if let Some(d) = t.and_then(|t| t.peak_device_mib) {
                    m.insert("pytorch_peak_device_mib".into(), json!(d));
                }
                m.insert("ratio".into(), opt(r.ratio()));
                match &r.torch {
                    TorchSide::Ran(Measurement {
                        skipped: Some(s), ..
                    }) => {
                        m.insert("pytorch_skipped".into(), json!(s));
                    }
                    TorchSide::Failed(e) => {
                        m.insert("pytorch_error".into(), json!(e));
                    }
                    _ => {}
                }
            }
            Value::Object(m)
        })
        .collect();
    Value::Array(records)
}

fn opt_str(s: Option<String>) -> Value {
    s.map_or(Value::Null, Value::String)
}

fn cell(x: Option<f64>, decimals: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

/// The markdown table of a run (with the PyTorch columns and the ratio when `info.with_torch`), followed
/// by notes on skipped or failed workloads.
pub fn render_markdown(info: &RunInfo, rows: &[Row]) -> String {
    let per = if info.suite == "methods" {
        "s/step"
    } else {
        "s/iter"
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "`cargo xtask bench {}`: device {}, {} threads, median of {} timed iterations after one warm-up; \
         images/s = batch / median; peak = the process's peak RSS{}.\n",
        info.suite,
        info.device,
        info.threads,
        info.iters,
        info.torch_version
            .as_ref()
            .map(|v| format!("; PyTorch {v}"))
            .unwrap_or_default()
    );
    let first_isa = |side: &dyn Fn(&Row) -> Option<String>| {
        rows.iter().find_map(side).unwrap_or_else(|| "–".into())
    };
    let ours_isa = first_isa(&|r: &Row| r.ours.as_ref().ok().and_then(|o| o.isa.clone()));
    let _ = write!(
        md,
        "Machine: {}; fgvc ISA level {ours_isa}",
        info.machine.describe()
    );
    if info.precision == fgvc_ops::Precision::Bf16 {
        let kernel = fgvc_ops::Bf16Kernel::current().map_or("none".to_string(), |k| k.to_string());
        let _ = write!(md, "; precision bf16 (ours: {kernel} products, f32 sums");
        if info.with_torch {
            md.push_str("; PyTorch: autocast bf16");
        }
        md.push(')');
    }
    if info.with_torch {
        let torch_isa = first_isa(&|r: &Row| match &r.torch {
            TorchSide::Ran(t) => t.isa.clone(),
            _ => None,
        });
        let _ = write!(md, "; PyTorch CPU capability {torch_isa}");
    }
    md.push_str(".\n\n");
    if info.with_torch {
        let _ = writeln!(
            md,
            "| workload | device | ours {per} | ours img/s | PyTorch {per} | PyTorch img/s | ours / PyTorch \
             (speed) | ours peak MiB | PyTorch peak MiB |"
        );
        md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    } else {
        let _ = writeln!(md, "| workload | device | {per} | images/s | peak MiB |");
        md.push_str("|---|---|---|---|---|\n");
    }
    let mut notes = Vec::new();
    for r in rows {
        let ours = r.ours.as_ref().ok();
        let ours_dev = ours
            .and_then(|o| o.device.clone())
            .unwrap_or_else(|| info.device.clone());
        if let Err(e) = &r.ours {
            notes.push(format!("{}: ours failed: {e}", r.workload.label));
        }
        let ours_cells = [
            cell(ours.and_then(|o| o.median_s), 3),
            cell(ours.and_then(|o| o.images_per_s), 2),
        ];
        let ours_peak = cell(ours.and_then(|o| o.peak_rss_mib), 0);
        if !info.with_torch {
            let _ = writeln!(
                md,
                "| {} | {ours_dev} | {} | {} | {ours_peak} |",
                r.workload.label, ours_cells[0], ours_cells[1]
            );
            continue;
        }
        let t = match &r.torch {
            TorchSide::Ran(t) => Some(t),
            _ => None,
        };
        match &r.torch {
            TorchSide::Ran(Measurement {
                skipped: Some(s), ..
            }) => notes.push(format!("{}: PyTorch skipped: {s}", r.workload.label)),
            TorchSide::Failed(e) => {
                notes.push(format!("{}: PyTorch failed: {e}", r.workload.label))
            }
            _ => {}
        }
        let device = match t.and_then(|t| t.device.clone()) {
            Some(td) if td != ours_dev => format!("{ours_dev} (PyTorch: {td})"),
            _ => ours_dev,
        };
        let _ = writeln!(
            md,
            "| {} | {device} | {} | {} | {} | {} | {} | {ours_peak} | {} |",
            r.workload.label,
            ours_cells[0],
            ours_cells[1],
            cell(t.and_then(|t| t.median_s), 3),
            cell(t.and_then(|t| t.images_per_s), 2),
            r.ratio().map_or("–".into(), |x| format!("{x:.2}x")),
            cell(t.and_then(|t| t.peak_rss_mib), 0),
        );
    }
    if !notes.is_empty() {
        md.push('\n');
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workloads::{backbone_workloads, method_workloads};

    fn measured(median: f64, batch: f64, peak: f64, device: &str) -> Measurement {
        Measurement {
            median_s: Some(median),
            images_per_s: Some(batch / median),
            peak_rss_mib: Some(peak),
            device: Some(device.into()),
            ..Measurement::default()
        }
    }

    fn info(with_torch: bool) -> RunInfo {
        RunInfo {
            suite: "methods".into(),
            device: "cpu".into(),
            threads: 2,
            iters: 1,
            machine: Machine {
                cpu: "Test CPU".into(),
                logical_cores: 2,
                detected_isa: fgvc_ops::Isa::Avx512,
                isa_cap: None,
            },
            precision: fgvc_ops::Precision::F32,
            with_torch,
            torch_version: with_torch.then(|| "2.15.0".to_string()),
        }
    }

    #[test]
    fn markdown_without_pytorch_has_ours_only() {
        let rows = vec![Row {
            workload: method_workloads(None, None).remove(1),
            ours: Ok(measured(2.0, 4.0, 1500.4, "cpu")),
            torch: TorchSide::Off,
        }];
        let md = render_markdown(&info(false), &rows);
        assert!(md.contains("| workload | device | s/step | images/s | peak MiB |"));
        assert!(md.contains("| pmg resnet50 224 b4 | cpu | 2.000 | 2.00 | 1500 |"));
        assert!(!md.contains("PyTorch"));
        let json = records_json(&info(false), &rows);
        let rec = &json[0];
        assert_eq!(rec["method"], "pmg");
        assert_eq!(rec["backbone"], "resnet50");
        assert_eq!(rec["size"], 224);
        assert_eq!(rec["ours_images_per_s"], 2.0);
        assert!(rec.get("ratio").is_none());
        assert!(rec.get("pytorch_images_per_s").is_none());
    }

    #[test]
    fn markdown_with_pytorch_shows_the_ratio_and_skips() {
        let ws = method_workloads(None, None);
        let rows = vec![
            Row {
                workload: ws[1].clone(),
                ours: Ok(measured(4.0, 4.0, 1500.0, "cpu")),
                torch: TorchSide::Ran(measured(2.0, 4.0, 1800.0, "cpu")),
            },
            Row {
                workload: ws[3].clone(),
                ours: Ok(measured(3.0, 4.0, 1400.0, "cpu")),
                torch: TorchSide::Ran(Measurement {
                    skipped: Some("Coarse2Fine has no public code".into()),
                    device: Some("cpu".into()),
                    ..Measurement::default()
                }),
            },
            Row {
                workload: ws[2].clone(),
                ours: Err("bench_methods exited with 1".into()),
                torch: TorchSide::Failed("methods_torch.py exited with 1".into()),
            },
        ];
        let md = render_markdown(&info(true), &rows);
        assert!(md.contains(
            "| ours s/step | ours img/s | PyTorch s/step | PyTorch img/s | ours / PyTorch"
        ));
        assert!(md.contains(
            "| pmg resnet50 224 b4 | cpu | 4.000 | 1.00 | 2.000 | 2.00 | 0.50x | 1500 | 1800 |"
        ));
        assert!(md.contains(
            "| coarse2fine resnet50 224 b4 | cpu | 3.000 | 1.33 | – | – | – | 1400 | – |"
        ));
        assert!(md.contains(
            "- coarse2fine resnet50 224 b4: PyTorch skipped: Coarse2Fine has no public code"
        ));
        assert!(md.contains("- dcl resnet50 224 b4: ours failed: bench_methods exited with 1"));
        assert!(md.contains("- dcl resnet50 224 b4: PyTorch failed"));
        assert!(md.contains("PyTorch 2.15.0"));
        let json = records_json(&info(true), &rows);
        assert_eq!(json[0]["ratio"], 0.5);
        assert_eq!(json[0]["pytorch_images_per_s"], 2.0);
        assert_eq!(json[0]["pytorch_peak_mib"], 1800.0);
        assert_eq!(json[1]["ratio"], Value::Null);
        assert_eq!(json[1]["pytorch_skipped"], "Coarse2Fine has no public code");
        assert_eq!(json[2]["ours_error"], "bench_methods exited with 1");
    }

    #[test]
    fn backbone_markdown_says_per_iteration_and_marks_a_device_fallback() {
        let mut i = info(true);
        i.suite = "backbones".into();
        i.device = "cuda".into();
        let rows = vec![Row {
            workload: backbone_workloads(None, None).remove(1),
            ours: Ok(measured(0.5, 8.0, 900.0, "cuda")),
            torch: TorchSide::Ran(measured(0.25, 8.0, 1000.0, "cpu")),
        }];
        let md = render_markdown(&i, &rows);
        assert!(md.contains("ours s/iter"));
        assert!(md.contains("| resnet50 224 b8 train | cuda (PyTorch: cpu) | 0.500 | 16.00 |"));
    }
}
