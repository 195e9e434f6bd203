//! # fgvc-ops
//!
//! The CNN-training operations that candle 0.11 lacks or gets wrong on the CPU, each with a backward pass,
//! plus the layers the backbones and heads are built from and a seeded parameter store.
//!
//! - [`conv2d`]: any stride, padding and dilation; input and weight gradients as GEMMs.
//! - [`depthwise_conv2d`]: one filter per channel (MobileNetV2), direct kernels.
//! - [`max_pool2d`], [`global_max_pool`]: gradients routed to the first maximum (PyTorch's rule);
//!   [`avg_pool2d`], [`adaptive_avg_pool2d`], [`global_avg_pool`].
//! - [`batch_norm`]: fused train/eval BatchNorm with PyTorch's running-statistics update;
//!   [`BatchNorm::forward_act`] also folds a residual add and a ReLU/ReLU6 into the same pass, and
//!   [`BatchNorm::forward_conv`] takes the preceding conv into the same op.
//! - [`relu`], [`relu6`], [`elu`], [`gradient_reversal`]: small ops the backbones and heads need.
//! - [`sgd_step`], [`adamw_step`]: `torch.optim.SGD`/`AdamW` parameter updates in place, one pass per tensor.
//! - [`tune_allocator`]: glibc malloc settings that stop training steps page-faulting their buffers in.
//! - [`export`]: the ops and layers as ONNX nodes (`Conv2d::export`, `BatchNorm::export_conv` with the
//!   BatchNorm folded into the conv, `Linear::export`, the pools), for `fgvc export`.
//! - [`ParamStore`] / [`Params`]: named parameters (torchvision's names) initialised from a seeded RNG,
//!   because candle's CPU RNG cannot be seeded.
//!
//! On the CPU (f32 and f64) every op is a candle custom op with a hand-written, rayon-parallel forward and
//! backward whose loops and GEMMs run as AVX-512 or AVX2+FMA code when the CPU has them ([`isa`]: a runtime
//! check, capped by `FGVC_ISA`; the crate itself targets baseline x86-64), and outputs are written without a zero-fill first (`docs/performance.md` has the speed
//! against candle's own ops and PyTorch). On other devices and
//! dtypes the ops fall back to compositions of candle's own ops, so everything runs on CUDA and Metal too;
//! [`with_composite_ops`] takes that path on the CPU, where `tests/composite.rs` checks it against the kernels.
//!
//! In bf16 precision ([`set_precision`], `FGVC_PRECISION=bf16`) the convolutions' GEMMs round their operands
//! to bf16 and sum in f32 with AMX or AVX512_BF16, where the CPU has either.
//!
//! With the `cuda` feature, convolutions (dense and depthwise, forward and both gradients) on CUDA f32
//! tensors run through cuDNN instead, with deterministic algorithms chosen once per shape and TF32 as
//! PyTorch allows it ([`set_tf32`]); the other ops are still composites there.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use fgvc_ops::{BatchNorm, Conv2d, Conv2dConfig, ParamStore};
//!
//! let store = ParamStore::new(7, DType::F32, &Device::Cpu);
//! let p = store.root();
//! let conv = Conv2d::new(3, 8, 3, Conv2dConfig::same(1), false, &p.pp("conv1"))?;
//! let bn = BatchNorm::new(8, &p.pp("bn1"))?;
//! let x = Tensor::randn(0f32, 1., (2, 3, 16, 16), &Device::Cpu)?;
//! let y = bn.forward_t(&conv.forward(&x)?, true)?.relu()?;
//! assert_eq!(y.dims(), &[2, 8, 16, 16]);
//! assert!(store.names().contains(&"bn1.running_var".to_string()));
//! # Ok::<(), candle_core::Error>(())
//! ```
#![warn(missing_docs)]

mod activation;
mod alloc;
mod batch_norm;
mod bf16;
mod conv;
mod conv_cpu;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod dropout;
pub mod export;
mod gemm_levels;
mod isa;
mod linear;
mod params;
mod pool;
mod tf32;
mod update;

pub use activation::{elu, gradient_reversal, relu, relu6, Activation};
pub use alloc::tune_allocator;
pub use batch_norm::{batch_norm, with_sync_batch_norm, BatchNorm, BatchNormConfig};
pub use bf16::{precision, set_precision, Bf16Kernel, Precision, PrecisionError, PRECISION_ENV};
pub use conv::{conv2d, depthwise_conv2d, Conv2d, Conv2dConfig};
pub use cpu::with_composite_ops;
pub use dropout::Dropout;
pub use isa::{isa, set_isa_cap, Isa, IsaError, ISA_ENV};
pub use linear::Linear;
pub use params::{is_buffer, Init, ParamStore, Params};
pub use pool::{adaptive_avg_pool2d, avg_pool2d, global_avg_pool, global_max_pool, max_pool2d};
pub use tf32::{set_tf32, tf32, TF32_ENV};
pub use update::{adamw_step, sgd_step, AdamWStep, SgdStep};
