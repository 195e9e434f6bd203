//! The optimiser a run trains a method with, built from `[optim]` and the method's defaults. The trainer and
//! the benchmarks both build it here, so a benchmarked step is the trained one.

use crate::config::Config;
use crate::error::Result;
use crate::method::Method;

use super::{Optimizer, ParamGroups};

/// `[[optim.groups]]` when the configuration has them, else the method's own groups
/// ([`Method::default_groups`]), with `optim.zero_grad` or the method's default semantics.
pub fn build_optimizer(config: &Config, method: &dyn Method) -> Result<Box<dyn Optimizer>> {
    let specs = if config.optim.groups.is_empty() {
        method.default_groups(config.optim.lr)
    } else {
        config.optim.groups.clone()
    };
    let groups = ParamGroups::new(
        method.store().trainable(),
        &specs,
        config.optim.lr,
        config.optim.weight_decay,
    )?;
    let zero_grad = config
        .optim
        .zero_grad
        .unwrap_or_else(|| method.default_zero_grad());
    config.optim.optimizer().build(groups, zero_grad)
}
