//! The published CUB-200-2011 numbers `train-cub` compares a run with, and where each comes from: the
//! `published` presets of each method's registry entry.

use fgvc_train::registry::{self, Published};

/// The published CUB result of `method` on `backbone`, if the method's registry entry has a row (PMG, DCL,
/// the baseline: `shared/methods/algorithms.md` sections 1.9, 2.10, 3.4, 4.7 and 6, also `docs/methods.md`).
/// Numbers are for 448 px input, the official test split, best epoch on the test set.
pub fn paper_result(method: &str, backbone: &str) -> Option<&'static Published> {
    registry::lookup(method).ok()?.published_on(backbone)
}

/// The paper's number for a plan or a report, in words: the top-1 and its source, or why there is none.
pub(super) fn paper_text(paper: Option<&Published>) -> String {
    match paper {
        Some(Published {
            top1: Some(v),
            source,
            ..
        }) => format!("{v:.1}% ({source})"),
        Some(Published {
            top1: None, source, ..
        }) => format!("no published number ({source})"),
        None => "no published number".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_cub::MethodArg;

    #[test]
    fn every_method_has_a_paper_backbone_row_or_none() {
        for spec in registry::methods() {
            // Every method's paper backbone has a row (a number or the reason there is none).
            let m = MethodArg(spec);
            assert!(paper_result(m.name(), m.paper_backbone().name()).is_some());
        }
        assert!(paper_result("pmg", "resnet18").is_none());
    }
}
