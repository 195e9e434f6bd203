//! `nn.Linear` with PyTorch's default initialisation from the seeded store.

use candle_core::{Module, Result, Tensor};

use crate::params::{Init, Params};

/// `y = x W^T + b` with `weight` (out, in) and `bias` (out), torch's names and init.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default: kaiming-uniform (a = sqrt 5) weight, U(±1/sqrt in) bias.
    pub fn new(in_f: usize, out_f: usize, bias: bool, p: &Params) -> Result<Self> {
        Self::with_init(
            in_f,
            out_f,
            bias,
            Init::TORCH_DEFAULT,
            Init::BiasUniform { fan_in: in_f },
            p,
        )
    }

    /// Explicit weight and bias initialisers (torchvision's VGG and MobileNetV2 use normal weights, zero bias).
    pub fn with_init(
        in_f: usize,
        out_f: usize,
        bias: bool,
        w_init: Init,
        b_init: Init,
        p: &Params,
    ) -> Result<Self> {
        let weight = p.get((out_f, in_f), "weight", w_init)?;
        let bias = if bias {
            Some(p.get(out_f, "bias", b_init)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// The weight (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
