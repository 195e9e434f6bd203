//! The example workloads of the `backbones` and `methods` suites, and the `--workload` filter.

use fgvc_train::registry;
use serde_json::{json, Value};

/// One example workload: its name in tables and filters, the example's positional arguments (the iteration
/// count follows them), and its fields in the JSON records.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// E.g. `pmg resnet50 224 b4`.
    pub label: String,
    /// Positional arguments of the example and of the PyTorch script, before the iteration count.
    pub args: Vec<String>,
    /// `(name, value)` of each workload field (`method`, `backbone`, `size`, `batch`, ...).
    pub fields: Vec<(&'static str, Value)>,
}

/// The backbone workloads: model, input side, batch, mode.
const BACKBONE_WORKLOADS: &[(&str, usize, usize, &str)] = &[
    ("resnet50", 224, 8, "eval"),
    ("resnet50", 224, 8, "train"),
    ("mobilenet_v2", 224, 8, "eval"),
    ("mobilenet_v2", 224, 8, "train"),
    ("resnet50", 448, 2, "eval"),
    ("resnet50", 448, 2, "train"),
];

/// The method workloads' input side and batch: 224 px and batch 4 run on a 2-core CPU in seconds per step;
/// `--size 448 --batch 16` is the official setup. Which methods run on which backbones is each method's
/// `bench_backbones` preset in the registry.
const METHOD_SIZE_BATCH: (usize, usize) = (224, 4);

/// `(method, backbone)` of every method workload: each backbone in the order of first use, the registry's
/// methods on it in table order.
fn method_backbone_pairs() -> Vec<(&'static str, &'static str)> {
    let methods = registry::methods();
    let mut backbones: Vec<&'static str> = Vec::new();
    for b in methods.iter().flat_map(|m| m.presets.bench_backbones) {
        if !backbones.contains(b) {
            backbones.push(b);
        }
    }
    backbones
        .iter()
        .flat_map(|b| {
            methods
                .iter()
                .filter(|m| m.presets.bench_backbones.contains(b))
                .map(|m| (m.name, *b))
        })
        .collect()
}

/// The workloads of `backbones`, with `size` / `batch` overriding each one's.
pub fn backbone_workloads(size: Option<usize>, batch: Option<usize>) -> Vec<Workload> {
    BACKBONE_WORKLOADS
        .iter()
        .map(|&(model, s, b, mode)| {
            let (s, b) = (size.unwrap_or(s), batch.unwrap_or(b));
            Workload {
                label: format!("{model} {s} b{b} {mode}"),
                args: vec![model.into(), s.to_string(), b.to_string(), mode.into()],
                fields: vec![
                    ("model", json!(model)),
                    ("size", json!(s)),
                    ("batch", json!(b)),
                    ("mode", json!(mode)),
                ],
            }
        })
        .collect()
}

/// The workloads of `methods`, with `size` / `batch` overriding each one's.
pub fn method_workloads(size: Option<usize>, batch: Option<usize>) -> Vec<Workload> {
    let (s, b) = METHOD_SIZE_BATCH;
    let (s, b) = (size.unwrap_or(s), batch.unwrap_or(b));
    method_backbone_pairs()
        .into_iter()
        .map(|(method, backbone)| Workload {
            label: format!("{method} {backbone} {s} b{b}"),
            args: vec![method.into(), backbone.into(), s.to_string(), b.to_string()],
            fields: vec![
                ("method", json!(method)),
                ("backbone", json!(backbone)),
                ("size", json!(s)),
                ("batch", json!(b)),
            ],
        })
        .collect()
}

/// The workloads whose label contains one of `patterns` (case-insensitive); all of them when there is none.
pub fn filter_workloads(workloads: Vec<Workload>, patterns: &[String]) -> Vec<Workload> {
    if patterns.is_empty() {
        return workloads;
    }
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_lowercase()).collect();
    workloads
        .into_iter()
        .filter(|w| {
            let label = w.label.to_lowercase();
            patterns.iter().any(|p| label.contains(p.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_filter_is_a_case_insensitive_substring_match() {
        let all = method_workloads(None, None);
        let n = all.len();
        assert_eq!(filter_workloads(all.clone(), &[]).len(), n);
        let pmg = filter_workloads(all.clone(), &["PMG".into()]);
        assert_eq!(pmg.len(), 2);
        assert!(pmg.iter().all(|w| w.label.starts_with("pmg ")));
        let one = filter_workloads(all.clone(), &["rmg-pmsi mobilenet".into()]);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].args, ["rmg-pmsi", "mobilenet_v2", "224", "4"]);
        let two = filter_workloads(
            all.clone(),
            &["coarse2fine".into(), "baseline mobilenet".into()],
        );
        assert_eq!(two.len(), 2);
        assert!(filter_workloads(all.clone(), &["nothing".into()]).is_empty());
        // Every method of the registry is measured on at least one backbone.
        for spec in registry::methods() {
            assert!(all.iter().any(|w| w.args[0] == spec.name), "{}", spec.name);
        }
        let big = method_workloads(Some(448), Some(16));
        assert_eq!(big[1].label, "pmg resnet50 448 b16");
        assert_eq!(big[1].args, ["pmg", "resnet50", "448", "16"]);
        assert_eq!(
            filter_workloads(backbone_workloads(None, None), &["train".into()]).len(),
            3
        );
    }
}
