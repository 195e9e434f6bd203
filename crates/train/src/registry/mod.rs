//! The method registry: the one table of every training method, which [`Config::validate`], the trainer,
//! the CLI, xtask and the tests read. A method is a [`MethodDef`] plus one [`MethodSpec`] in
//! [`BUILTIN`]; code outside this crate (a test, a user's own method) adds its own with [`register`].
//! `docs/adding-a-method.md` walks through it.
//!
//! ```
//! use fgvc_train::registry;
//!
//! let names: Vec<&str> = registry::methods().iter().map(|m| m.name).collect();
//! assert_eq!(names[0], "baseline");
//! assert!(registry::lookup("no-such-method").unwrap_err().to_string().contains("known: baseline"));
//! ```

pub mod spec;

use std::sync::RwLock;

use candle_core::{DType, Device};
use fgvc_ops::ParamStore;

pub use spec::{parse_options, MethodDef, MethodSpec, Preset, Presets, Published};

use crate::config::Config;
use crate::error::{Result, TrainError};
use crate::method::Method;
use crate::methods::{baseline, coarse2fine, dcl, pmg, rmg_pmsi};

/// The methods this crate ships, in the order tables list them: the baseline first.
pub const BUILTIN: &[MethodSpec] = &[
    baseline::SPEC,
    pmg::SPEC,
    dcl::SPEC,
    rmg_pmsi::SPEC,
    coarse2fine::SPEC,
];

/// Methods added at run time with [`register`], after the built-in ones.
static REGISTERED: RwLock<Vec<MethodSpec>> = RwLock::new(Vec::new());

/// Every method: [`BUILTIN`], then the registered ones in registration order.
pub fn methods() -> Vec<MethodSpec> {
    let extra = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    BUILTIN.iter().chain(extra.iter()).copied().collect()
}

/// Every method's name, in table order.
pub fn names() -> Vec<&'static str> {
    methods().iter().map(|m| m.name).collect()
}

/// Adds `spec` to the table, so configurations can name it. A name already taken is an error, unless it is
/// the same entry again (tests register from several threads).
pub fn register(spec: MethodSpec) -> Result<()> {
    if let Some(existing) = BUILTIN.iter().find(|m| m.name == spec.name) {
        return Err(TrainError::Msg(format!(
            "method {:?} is built in and cannot be registered again",
            existing.name
        )));
    }
    let mut extra = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    match extra.iter().find(|m| m.name == spec.name) {
        Some(m) if m.summary == spec.summary && m.presets == spec.presets => Ok(()),
        Some(m) => Err(TrainError::Msg(format!(
            "a different method is already registered as {:?}",
            m.name
        ))),
        None => {
            extra.push(spec);
            Ok(())
        }
    }
}

/// The method called `name`; an unknown name is an error listing the known ones.
pub fn lookup(name: &str) -> Result<MethodSpec> {
    methods()
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| TrainError::Config {
            origin: "[method]".into(),
            key: "method.name".into(),
            message: format!("unknown method {name:?} (known: {})", names().join(", ")),
        })
}

/// Checks `[method]` of `config` (the name and the options) without building the model.
pub fn check(config: &Config) -> Result<()> {
    (lookup(&config.method.name)?.check)(config)
}

/// The method `config.method.name` names, with a `num_classes`-way output, its parameters created on
/// `device` from `config.seed`.
pub fn build_method(
    config: &Config,
    num_classes: usize,
    device: &Device,
) -> Result<Box<dyn Method>> {
    let spec = lookup(&config.method.name)?;
    let store = ParamStore::new(config.seed, DType::F32, device);
    (spec.build)(config, num_classes, store)
}
