//! The checks serde cannot make: positive sizes and counts, and `[method]` against the method registry.

use super::Config;
use crate::error::{Result, TrainError};

impl Config {
    /// Checks values serde cannot: positive sizes and counts, and that `method.name` is a registered
    /// method (its options are checked by the method, [`crate::registry::check`]).
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |key: &str, message: String| {
            Err(TrainError::Config {
                origin: origin.into(),
                key: key.into(),
                message,
            })
        };
        if self.train.epochs == 0 {
            return bad("train.epochs", "must be at least 1".into());
        }
        if self.data.batch_size < 2 {
            return bad(
                "data.batch_size",
                "must be at least 2 (BatchNorm in training mode needs more than one image)".into(),
            );
        }
        if self.optim.accumulate == 0 {
            return bad("optim.accumulate", "must be at least 1".into());
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return bad(
                "optim.lr",
                format!("must be positive, got {}", self.optim.lr),
            );
        }
        if let Some(c) = self.optim.clip_grad_norm {
            if c <= 0.0 {
                return bad("optim.clip_grad_norm", format!("must be positive, got {c}"));
            }
        }
        if let Err(TrainError::Config { key, message, .. }) =
            crate::registry::lookup(&self.method.name)
        {
            return bad(&key, message);
        }
        Ok(())
    }
}
