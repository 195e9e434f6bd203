//! BatchNorm's hyper-parameters, shared by the layer and the functional form.

/// `eps`, `momentum` and whether the layer has a learnable affine transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch statistic in the running average (PyTorch's default 0.1).
    pub momentum: f64,
    /// Learnable `weight` and `bias`.
    pub affine: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
        }
    }
}
