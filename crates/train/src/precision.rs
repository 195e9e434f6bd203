//! `train.precision` put into effect: the CPU convolutions' product precision is process-wide
//! ([`fgvc_ops::set_precision`]), so a run sets it from its configuration before its first step.

use candle_core::Device;

use crate::config::{Config, Precision};
use crate::error::{Result, TrainError};

/// Sets the precision `config.train.precision` asks for, for the whole process. bf16 is refused, naming the
/// key and the reason, off the CPU and on CPUs without a bf16 product (or with `FGVC_ISA` below avx512).
pub fn apply_precision(config: &Config, device: &Device) -> Result<()> {
    let p = config.train.precision;
    let refuse = |message: String| TrainError::Config {
        origin: "the configuration".into(),
        key: "train.precision".into(),
        message,
    };
    if p == Precision::Bf16 && !device.is_cpu() {
        return Err(refuse(
            "bf16 is the CPU's mixed precision; CUDA convolutions use TF32 instead (FGVC_TF32), so use \
             precision = \"f32\" there"
                .into(),
        ));
    }
    fgvc_ops::set_precision(p.into()).map_err(|e| refuse(e.to_string()))
}
