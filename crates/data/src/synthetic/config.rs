//! What to render: the class count, image size, images per split and the seed, with their checks.

use serde::{Deserialize, Serialize};

use crate::dataset::Split;
use crate::error::{DataError, Result};

/// What to render. As TOML or JSON every field is optional (missing ones take [`Default`]'s values) and
/// unknown fields are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Number of classes (any number from 2 up).
    pub classes: usize,
    /// Width and height of the square images, in pixels (at least 16).
    pub image_size: u32,
    /// Training images per class.
    pub train_per_class: usize,
    /// Validation images per class (an independent set, not taken from the training images).
    pub val_per_class: usize,
    /// Test images per class.
    pub test_per_class: usize,
    /// The seed every image derives from.
    pub seed: u64,
    /// Index of this set's first class among the `first_class + classes` part combinations (0). A set with
    /// `first_class = n` shares no class with a set of `n` classes (both must have the same beak hues: 4 up
    /// to 144 classes; other counts are refused): a disjoint source task to pretrain on, the way ImageNet
    /// is used.
    pub first_class: usize,
}

impl Default for SyntheticConfig {
    /// 10 classes of 64x64 images, 100 training, 20 validation and 50 test images per class, seed 0, from
    /// the first class on.
    fn default() -> Self {
        SyntheticConfig {
            classes: 10,
            image_size: 64,
            train_per_class: 100,
            val_per_class: 20,
            test_per_class: 50,
            seed: 0,
            first_class: 0,
        }
    }
}

impl SyntheticConfig {
    /// Number of images of `split`.
    pub fn len(&self, split: Split) -> usize {
        self.classes
            * match split {
                Split::Train => self.train_per_class,
                Split::Val => self.val_per_class,
                Split::Test => self.test_per_class,
            }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.classes < 2 {
            return Err(DataError::Config(format!(
                "synthetic dataset needs at least 2 classes, got {}",
                self.classes
            )));
        }
        // Beak hues grow past 144 classes, and with them every class's combination: a set from class n is
        // disjoint from the n-class set only while both have the same hues.
        let hues = super::classes::beak_levels;
        if self.first_class > 0 && hues(self.first_class + self.classes) != hues(self.first_class) {
            return Err(DataError::Config(format!(
                "synthetic first_class = {} with {} classes: the two sets would have {} and {} beak hues, so \
                 this set would not be disjoint from the first {} classes (keep first_class + classes \
                 within the first set's {} combinations)",
                self.first_class,
                self.classes,
                hues(self.first_class),
                hues(self.first_class + self.classes),
                self.first_class,
                hues(self.first_class) * 36
            )));
        }
        if self.image_size < 16 {
            return Err(DataError::Config(format!(
                "synthetic image_size must be at least 16, got {}",
                self.image_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Synthetic;

    #[test]
    fn rejects_degenerate_configs() {
        let bad = SyntheticConfig {
            classes: 1,
            ..Default::default()
        };
        assert!(Synthetic::new(bad, Split::Train).is_err());
        let tiny = SyntheticConfig {
            image_size: 8,
            ..Default::default()
        };
        assert!(Synthetic::new(tiny, Split::Train).is_err());
        // 5 + 140 classes need 5 beak hues where the first 5 have 4: not disjoint, refused.
        let overlapping = SyntheticConfig {
            classes: 140,
            first_class: 5,
            ..Default::default()
        };
        let err = Synthetic::new(overlapping, Split::Train).unwrap_err();
        assert!(err.to_string().contains("not be disjoint"), "{err}");
        let within = SyntheticConfig {
            classes: 139,
            first_class: 5,
            ..Default::default()
        };
        assert!(Synthetic::new(within, Split::Train).is_ok());
    }
}
