//! The published CUB-200-2011 numbers `train-cub` compares a run with, and where each comes from.

/// A published CUB-200-2011 top-1 for a method and backbone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperResult {
    /// The method's configuration name.
    pub method: &'static str,
    /// torchvision's backbone name.
    pub backbone: &'static str,
    /// Top-1 in percent; `None` when the paper reports one that could not be recovered.
    pub top1: Option<f64>,
    /// Where it comes from, and which prediction it is.
    pub source: &'static str,
}

/// Published CUB top-1 accuracies (448 px input, the official test split, best epoch on the test set),
/// from `shared/methods/algorithms.md` sections 1.9, 2.10, 3.4, 4.7 and 6 (also `docs/methods.md`).
pub const PAPER_RESULTS: &[PaperResult] = &[
    PaperResult {
        method: "pmg",
        backbone: "resnet50",
        top1: Some(89.6),
        source: "PMG paper (ECCV 2020), combined prediction; the author's five reruns of the code: 89.54-89.74 (issue #11)",
    },
    PaperResult {
        method: "pmg",
        backbone: "vgg16",
        top1: None,
        source: "reported in the PMG paper, value not recovered",
    },
    PaperResult {
        method: "dcl",
        backbone: "resnet50",
        top1: Some(87.8),
        source: "DCL V0.0 README (issue #65), classifier alone; reproductions in the issues: 86.69-87.57",
    },
    PaperResult {
        method: "dcl",
        backbone: "vgg16",
        top1: Some(86.9),
        source: "DCL paper (CVPR 2019) as recalled, not checked against the PDF",
    },
    PaperResult {
        method: "baseline",
        backbone: "resnet50",
        top1: Some(85.5),
        source: "DCL paper (CVPR 2019) Table 1, ResNet-50 fine-tuned at 448 (87.8 - 2.3)",
    },
    PaperResult {
        method: "rmg-pmsi",
        backbone: "mobilenet_v2",
        top1: None,
        source: "the RMG-PMSI paper's tables could not be recovered",
    },
    PaperResult {
        method: "coarse2fine",
        backbone: "resnet50",
        top1: None,
        source: "not recovered (no code, no full text; for orientation WS-DAN reports 89.4 with Inception-v3)",
    },
];

/// The published result for `method` on `backbone`, if the table has a row.
pub fn paper_result(method: &str, backbone: &str) -> Option<&'static PaperResult> {
    PAPER_RESULTS
        .iter()
        .find(|p| p.method == method && p.backbone == backbone)
}

/// The paper's number for a plan or a report, in words: the top-1 and its source, or why there is none.
pub(super) fn paper_text(paper: Option<&PaperResult>) -> String {
    match paper {
        Some(PaperResult {
            top1: Some(v),
            source,
            ..
        }) => format!("{v:.1}% ({source})"),
        Some(PaperResult {
            top1: None, source, ..
        }) => format!("no published number ({source})"),
        None => "no published number".into(),
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;
    use crate::train_cub::MethodArg;

    #[test]
    fn every_method_has_a_paper_backbone_row_or_none() {
        for m in MethodArg::value_variants() {
            // Every method's paper backbone has a row (a number or the reason there is none).
            assert!(paper_result(m.name(), m.paper_backbone().name()).is_some());
        }
        assert!(paper_result("pmg", "resnet18").is_none());
    }
}
