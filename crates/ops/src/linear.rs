//! `nn.Linear` with PyTorch's default initialisation from the seeded store.

use candle_core::{Module, Result, Tensor};

use crate::params::{Init, Params};

/// `y = x W^T + b` with `weight` (out, in) and `bias` (out), torch's names and init.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    name: String,
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
        Ok(Self {
            weight,
            bias,
            name: p.prefix().to_string(),
        })
    }

    /// The weight (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (out), if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The module name its parameters were created under (`heads.fc`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ONNX graph of [`Module::forward`] on `(N, in)`: one `Gemm` (transposed weight) whose
    /// initializers are `{name}.weight` and `{name}.bias`.
    pub fn export(
        &self,
        g: &mut fgvc_onnx::Graph,
        x: &fgvc_onnx::Value,
    ) -> fgvc_onnx::Result<fgvc_onnx::Value> {
        let w = crate::export::weight(g, &format!("{}.weight", self.name), &self.weight)?;
        let b = match &self.bias {
            Some(b) => Some(crate::export::weight(g, &format!("{}.bias", self.name), b)?),
            None => None,
        };
        g.gemm(x, &w, b.as_ref(), true)
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
