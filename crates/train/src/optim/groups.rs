//! Parameter groups: which parameters an optimiser updates, at which learning rate and weight decay.
//!
//! Groups select parameters by name. A pattern with `*` (any run of characters, dots included) or `?` (one
//! character) is a glob over the whole name; any other pattern is a prefix on dotted boundaries (`layer1`
//! selects `layer1.0.conv1.weight` but not `layer10.weight`). Groups are tried in order and the first match
//! wins; parameters that no group selects fall in the default group, which carries the optimiser's base
//! learning rate and weight decay. Buffers ([`fgvc_ops::is_buffer`]: BatchNorm running statistics) are never
//! part of any group.

use candle_core::{Tensor, Var};
use fgvc_ops::is_buffer;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The name of the group that holds every parameter no other group selects.
pub const DEFAULT_GROUP: &str = "default";

/// One group as configured: a name, the patterns it selects and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Name used in logs and metrics (`lr/<name>`).
    pub name: String,
    /// Name patterns (prefix or glob, see the module documentation).
    pub params: Vec<String>,
    /// Base learning rate of the group; the optimiser's when absent.
    #[serde(default)]
    pub lr: Option<f64>,
    /// Weight decay of the group; the optimiser's when absent.
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// The group is not updated during the first `freeze_epochs` epochs (RMG-PMSI freezes its backbone for 5).
    #[serde(default)]
    pub freeze_epochs: usize,
}

/// Whether `name` matches `pattern` (glob when it has `*` or `?`, dotted prefix otherwise).
pub fn matches(pattern: &str, name: &str) -> bool {
    if pattern.contains(['*', '?']) {
        glob(pattern.as_bytes(), name.as_bytes())
    } else {
        name == pattern
            || (name.starts_with(pattern)
                && (pattern.ends_with('.') || name.as_bytes().get(pattern.len()) == Some(&b'.')))
    }
}

/// Iterative glob matcher with backtracking on the last `*`.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The live state of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Name.
    pub name: String,
    /// Base learning rate (before the schedule).
    pub base_lr: f64,
    /// Learning rate used by the next step (base times the schedule's factor).
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Frozen for the first `freeze_epochs` epochs.
    pub freeze_epochs: usize,
    /// Currently frozen: the optimiser skips the group entirely (no momentum, no decay).
    pub frozen: bool,
}

/// One optimised parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name in the parameter store.
    pub name: String,
    /// The variable updated in place.
    pub var: Var,
    /// Index of its group in [`ParamGroups::groups`].
    pub group: usize,
}

/// Parameters sorted by name, each assigned to one group.
#[derive(Debug, Clone)]
pub struct ParamGroups {
    groups: Vec<Group>,
    params: Vec<Param>,
}

impl ParamGroups {
    /// Assigns `named` (e.g. [`fgvc_ops::ParamStore::trainable`]) to the groups of `specs`, the rest to the
    /// default group with `base_lr` and `weight_decay`. Buffers are dropped. A group that selects nothing is an
    /// error (a misspelt pattern would otherwise silently train at the wrong rate); an empty default group is
    /// left out.
    pub fn new(
        named: Vec<(String, Var)>,
        specs: &[GroupSpec],
        base_lr: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let mut named = named;
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<Group> = specs
            .iter()
            .map(|s| Group {
                name: s.name.clone(),
                base_lr: s.lr.unwrap_or(base_lr),
                lr: s.lr.unwrap_or(base_lr),
                weight_decay: s.weight_decay.unwrap_or(weight_decay),
                freeze_epochs: s.freeze_epochs,
                frozen: false,
            })
            .collect();
        for s in specs {
            if s.name == DEFAULT_GROUP {
                return Err(TrainError::Msg(format!(
                    "parameter group name {DEFAULT_GROUP:?} is reserved for the parameters no group selects"
                )));
            }
        }
        let default = groups.len();
        let mut params = Vec::new();
        let mut used = vec![false; specs.len() + 1];
        for (name, var) in named {
            if is_buffer(&name) {
                continue;
            }
            let group = specs
                .iter()
                .position(|s| s.params.iter().any(|p| matches(p, &name)))
                .unwrap_or(default);
            used[group] = true;
            params.push(Param { name, var, group });
        }
        if let Some(i) = (0..specs.len()).find(|&i| !used[i]) {
            return Err(TrainError::Msg(format!(
                "parameter group {:?} (patterns {:?}) selects no parameter",
                specs[i].name, specs[i].params
            )));
        }
        if used[default] {
            groups.push(Group {
                name: DEFAULT_GROUP.into(),
                base_lr,
                lr: base_lr,
                weight_decay,
                freeze_epochs: 0,
                frozen: false,
            });
        }
        Ok(ParamGroups { groups, params })
    }

    /// A single default group over `named`.
    pub fn single(named: Vec<(String, Var)>, lr: f64, weight_decay: f64) -> Result<Self> {
        Self::new(named, &[], lr, weight_decay)
    }

    /// The groups.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The groups, mutable (learning rates, freezing).
    pub fn groups_mut(&mut self) -> &mut [Group] {
        &mut self.groups
    }

    /// The parameters, sorted by name.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Sets every group's learning rate to its base rate times `factor`.
    pub fn set_lr_factor(&mut self, factor: f64) {
        for g in &mut self.groups {
            g.lr = g.base_lr * factor;
        }
    }

    /// Freezes the groups whose `freeze_epochs` is still running at `epoch` (0-based) and thaws the others.
    pub fn apply_freezing(&mut self, epoch: usize) {
        for g in &mut self.groups {
            g.frozen = epoch < g.freeze_epochs;
        }
    }

    /// The gradient of every parameter from a backward pass, in parameter order (`None` where the loss does
    /// not reach the parameter).
    pub fn grads_from(&self, store: &candle_core::backprop::GradStore) -> Vec<Option<Tensor>> {
        self.params
            .iter()
            .map(|p| store.get(p.var.as_tensor()).cloned())
            .collect()
    }

    /// Index of the parameter called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.params
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_on_dotted_boundaries() {
        assert!(matches("layer1", "layer1.0.conv1.weight"));
        assert!(matches("layer1", "layer1"));
        assert!(!matches("layer1", "layer10.weight"));
        assert!(matches("features.", "features.0.weight"));
        assert!(!matches("fc", "fc2.weight"));
    }

    #[test]
    fn glob_matches_whole_names() {
        assert!(matches("*.bias", "layer1.0.bn1.bias"));
        assert!(!matches("*.bias", "layer1.0.bn1.bias_x"));
        assert!(matches("layer?.*.conv1.*", "layer3.1.conv1.weight"));
        assert!(!matches("layer?.*.conv1.*", "layer3.1.conv2.weight"));
        assert!(matches("heads.*", "heads.classifier1.1.weight"));
        assert!(matches("*", "anything"));
        assert!(!matches("a*b*c", "aXbYd"));
    }
}
