//! `[method]`: which method trains the model, and its options.

use serde::{Deserialize, Serialize};

fn default_method() -> String {
    crate::methods::baseline::NAME.into()
}

/// `[method]`: the training method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// The method: a name of the [registry](crate::registry) (`baseline`, `pmg`, `dcl`, `rmg-pmsi`,
    /// `coarse2fine`).
    #[serde(default = "default_method")]
    pub name: String,
    /// The method's own options (`[method.options]`), checked by the method (see [`crate::methods`]).
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub options: toml::Table,
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig {
            name: default_method(),
            options: toml::Table::new(),
        }
    }
}
