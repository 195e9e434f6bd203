//! The checks serde cannot make, all before anything is built or written: positive sizes and counts, the
//! image sizes the `[data]` pipelines produce, and `[method]` with `[model]` against the method registry
//! (options, and the geometry a method needs of the images and the backbone).

use super::Config;
use crate::error::{Result, TrainError};

impl Config {
    /// Checks values serde cannot: positive sizes and counts, the pipelines' image sizes
    /// ([`super::DataConfig::input_sizes`]), and `[method]` and `[model]` through the method's registry
    /// check ([`crate::registry::check`]), geometry included. Every error is a [`TrainError::Config`]
    /// naming the key, with `origin` (the file) as where it came from.
    pub fn validate(&self, origin: &str) -> Result<()> {
        self.validate_values()
            .and_then(|()| self.data.input_sizes().map(drop))
            .and_then(|()| crate::registry::check(self))
            .map_err(|e| match e {
                TrainError::Config { key, message, .. } => TrainError::Config {
                    origin: origin.into(),
                    key,
                    message,
                },
                other => other,
            })
    }

    fn validate_values(&self) -> Result<()> {
        let bad = |key: &str, message: String| {
            Err(TrainError::Config {
                origin: String::new(),
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
        for (key, size) in [
            ("data.crop", self.data.crop),
            ("data.resize", self.data.resize),
        ] {
            if size == Some(0) {
                return bad(key, "must be at least 1".into());
            }
        }
        Ok(())
    }
}
