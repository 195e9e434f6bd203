//! Building a run's [`Method`] from its configuration.

use candle_core::{DType, Device};
use fgvc_ops::ParamStore;

use crate::baseline::Baseline;
use crate::config::Config;
use crate::error::{Result, TrainError};
use crate::method::Method;
use crate::optim::{Optimizer, ParamGroups};

/// The names [`build_method`] knows.
pub const METHODS: &[&str] = &["baseline", "pmg", "dcl", "rmg-pmsi", "coarse2fine"];

/// The method `config.method.name` names, with a `num_classes`-way output, its parameters created on
/// `device` from `config.seed`.
pub fn build_method(
    config: &Config,
    num_classes: usize,
    device: &Device,
) -> Result<Box<dyn Method>> {
    let store = ParamStore::new(config.seed, DType::F32, device);
    match config.method.name.as_str() {
        "baseline" => {
            crate::methods::check_options(config)?;
            Ok(Box::new(Baseline::new(&config.model, num_classes, store)?))
        }
        "pmg" => Ok(Box::new(crate::methods::pmg::Pmg::from_config(
            config,
            num_classes,
            store,
        )?)),
        "dcl" => Ok(Box::new(crate::methods::dcl::Dcl::from_config(
            config,
            num_classes,
            store,
        )?)),
        "rmg-pmsi" => Ok(Box::new(crate::methods::rmg_pmsi::RmgPmsi::from_config(
            config,
            num_classes,
            store,
        )?)),
        "coarse2fine" => Ok(Box::new(
            crate::methods::coarse2fine::Coarse2FineMethod::from_config(
                config,
                num_classes,
                store,
            )?,
        )),
        other => Err(TrainError::Msg(format!(
            "method.name: unknown method {other:?} (known: {})",
            METHODS.join(", ")
        ))),
    }
}

/// The optimiser a run trains `method` with: `[[optim.groups]]` when the configuration has them, else the
/// method's own groups ([`Method::default_groups`]), and `optim.zero_grad` or the method's default semantics.
/// The trainer and the benchmarks build it here, so a benchmarked step is the trained one.
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
