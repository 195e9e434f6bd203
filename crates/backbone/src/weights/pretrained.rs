//! Loading pretrained weights into a freshly built model: strict by default, with the common name-prefix
//! mismatches (`module.` from DataParallel, `backbone.`, `model.`, `encoder.`, ...) recognised and
//! stripped, so a checkpoint that does not fit is an error rather than a run that silently trains from
//! scratch.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use fgvc_ops::ParamStore;

use super::{
    is_counter, plan_load, read_checkpoint, LoadOptions, LoadReport, Reinitialised, WeightsError,
};

/// How [`load_pretrained`] treats a file that does not cover the model.
#[derive(Debug, Clone)]
pub struct PretrainedOptions {
    /// Every model tensor must be in the file with its shape (the default). When false, the tensors that
    /// fit are loaded and the rest keep their initialisation ([`Misfit`] is then only reported).
    pub strict: bool,
    /// The key holding the state dict in a nested checkpoint (found automatically when `None`).
    pub key: Option<String>,
}

impl Default for PretrainedOptions {
    fn default() -> Self {
        PretrainedOptions {
            strict: true,
            key: None,
        }
    }
}

/// What [`load_pretrained`] did.
#[derive(Debug, Clone)]
pub struct PretrainedReport {
    /// Loaded, missing, unexpected (file tensors the model has no place for, such as a replaced
    /// classifier) and mismatched (in [`LoadReport::reinitialised`]) names.
    pub load: LoadReport,
    /// The prefix stripped from the file's names to match the model's (`module.`), if any.
    pub stripped_prefix: Option<String>,
}

impl PretrainedReport {
    /// True when every model tensor received the file's value.
    pub fn covers_the_model(&self) -> bool {
        self.load.missing.is_empty() && self.load.reinitialised.is_empty()
    }
}

/// How a file fails to cover a model: the model tensors it lacks or has with another shape.
#[derive(Debug, Clone)]
pub struct Misfit {
    /// Model tensors (counters excluded).
    pub total: usize,
    /// Model tensors the file has with the right shape.
    pub fitting: usize,
    /// Model tensors the file lacks, sorted.
    pub missing: Vec<String>,
    /// Model tensors the file has with another shape.
    pub mismatched: Vec<Reinitialised>,
    /// File tensors the model did not take, sorted.
    pub unused: Vec<String>,
    /// The prefix stripped from the file's names before matching, if any.
    pub stripped_prefix: Option<String>,
    /// Some of the model's names, to show next to the file's when nothing matches.
    pub model_examples: Vec<String>,
}

/// Names shown in a list before "... and N more".
const SHOWN: usize = 8;

fn names(list: &[String]) -> String {
    let shown: Vec<String> = list.iter().take(SHOWN).map(|n| format!("`{n}`")).collect();
    let more = if list.len() > SHOWN {
        format!(", ... and {} more", list.len() - SHOWN)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fitting == 0 {
            write!(
                f,
                "none of the file's {} tensors fits the model's {} by name and shape",
                self.unused.len() + self.mismatched.len(),
                self.total
            )?;
        } else {
            write!(
                f,
                "the pretrained weights do not fit the model: {} of its {} tensors fit",
                self.fitting, self.total
            )?;
        }
        if self.fitting == 0 && self.mismatched.is_empty() {
            // No name in common: show both naming schemes side by side.
            if !self.unused.is_empty() {
                write!(f, "; the file has {}", names(&self.unused))?;
            }
            write!(
                f,
                "; the model expects {} (is it a checkpoint of this backbone, with torchvision's names?)",
                names(&self.model_examples)
            )?;
        } else {
            if !self.missing.is_empty() {
                write!(
                    f,
                    "; {} are missing from the file: {}",
                    self.missing.len(),
                    names(&self.missing)
                )?;
            }
            if !self.mismatched.is_empty() {
                let shapes: Vec<String> = self
                    .mismatched
                    .iter()
                    .map(|r| format!("{} {:?} (file {:?})", r.name, r.model, r.file))
                    .collect();
                write!(
                    f,
                    "; {} have another shape: {}",
                    self.mismatched.len(),
                    names(&shapes)
                )?;
            }
            if !self.unused.is_empty() {
                write!(f, "; the file's unused tensors: {}", names(&self.unused))?;
            }
        }
        if let Some(p) = &self.stripped_prefix {
            write!(
                f,
                " (matched after stripping the prefix `{p}` from the file's names)"
            )?;
        }
        Ok(())
    }
}

/// At most this many dotted components are tried as a prefix (`module.backbone.` is two).
const MAX_PREFIX_PARTS: usize = 4;

/// The prefix the file's names carry and the model's do not: the dotted prefix `P` (at most
/// four components) under which the most model names `n` appear in the file as `P + n`,
/// when that is more than the names match as they are. `module.` (DataParallel), `backbone.`, `model.`,
/// `encoder.` and nested ones such as `module.backbone.` are all found this way. Ties go to the shorter,
/// then the alphabetically first prefix.
pub fn detect_prefix<'a>(
    model: impl IntoIterator<Item = &'a str>,
    file: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let model: HashSet<&str> = model.into_iter().filter(|n| !is_counter(n)).collect();
    let mut direct = 0usize;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in file.into_iter().filter(|n| !is_counter(n)) {
        if model.contains(name) {
            direct += 1;
        }
        for (at, _) in name.match_indices('.').take(MAX_PREFIX_PARTS) {
            if model.contains(&name[at + 1..]) {
                *counts.entry(&name[..=at]).or_default() += 1;
            }
        }
    }
    let (prefix, count) = counts
        .into_iter()
        .max_by(|(pa, ca), (pb, cb)| ca.cmp(cb).then(pb.len().cmp(&pa.len())).then(pb.cmp(pa)))?;
    (count > direct).then(|| prefix.to_string())
}

/// Loads the pretrained weights of `path` into every var of `store` (build the backbone in a fresh store
/// and call this before adding heads, so the store holds the backbone only).
///
/// Names are torchvision's. A prefix that all or most of the file's names carry ([`detect_prefix`]) is
/// stripped and reported in [`PretrainedReport::stripped_prefix`]. File tensors the model has no place for
/// (a replaced classifier `fc.*`) are reported as unexpected and ignored. With `strict` (the default) a
/// model tensor the file lacks or has with another shape is [`WeightsError::DoNotFit`], and the store is
/// left untouched; without it such tensors keep their initialisation. A file none of whose tensors fits is
/// an error either way.
pub fn load_pretrained(
    store: &ParamStore,
    path: impl AsRef<Path>,
    options: &PretrainedOptions,
) -> Result<PretrainedReport, WeightsError> {
    let path = path.as_ref();
    let checkpoint = read_checkpoint(path, options.key.as_deref())?;
    let model_names: Vec<String> = store
        .all()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !is_counter(n))
        .collect();
    let stripped_prefix = detect_prefix(
        model_names.iter().map(String::as_str),
        checkpoint.tensors.iter().map(|(n, _)| n.as_str()),
    );
    // Every shape mismatch is collected (re-initialise everything), then judged here.
    let mut load_options = LoadOptions::new().reinitialise("");
    if let Some(p) = &stripped_prefix {
        load_options = load_options.map_prefix("", p.as_str());
    }
    let plan = plan_load(store, path, &checkpoint, &load_options)?;
    let misfit = || Misfit {
        total: model_names.len(),
        fitting: plan.planned(),
        missing: plan.report.missing.clone(),
        mismatched: plan.report.reinitialised.clone(),
        unused: plan.report.unexpected.clone(),
        stripped_prefix: stripped_prefix.clone(),
        model_examples: model_names.iter().take(SHOWN).cloned().collect(),
    };
    let covers = plan.report.missing.is_empty() && plan.report.reinitialised.is_empty();
    if plan.planned() == 0 || (options.strict && !covers) {
        return Err(WeightsError::DoNotFit {
            path: path.to_path_buf(),
            misfit: Box::new(misfit()),
        });
    }
    Ok(PretrainedReport {
        load: plan.apply()?,
        stripped_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_found_when_they_beat_the_names_as_they_are() {
        let model = ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight"];
        let with = |p: &str| -> Vec<String> { model.iter().map(|n| format!("{p}{n}")).collect() };
        for prefix in [
            "module.",
            "backbone.",
            "model.",
            "encoder.",
            "module.backbone.",
            "net.",
        ] {
            let file = with(prefix);
            assert_eq!(
                detect_prefix(model, file.iter().map(String::as_str)).as_deref(),
                Some(prefix)
            );
        }
        // Names that already match, or a prefix only one tensor of many carries, change nothing.
        assert_eq!(detect_prefix(model, model), None);
        let mut file = with("");
        file.push("module.conv1.weight".into());
        assert_eq!(detect_prefix(model, file.iter().map(String::as_str)), None);
        // A full model's checkpoint: the backbone under `backbone.`, the heads elsewhere.
        let mut file = with("backbone.");
        file.extend(["heads.fc.weight".to_string(), "heads.fc.bias".to_string()]);
        assert_eq!(
            detect_prefix(model, file.iter().map(String::as_str)).as_deref(),
            Some("backbone.")
        );
        // Counters are no evidence either way.
        assert_eq!(
            detect_prefix(
                ["bn1.num_batches_tracked"],
                ["module.bn1.num_batches_tracked"]
            ),
            None
        );
    }
}
