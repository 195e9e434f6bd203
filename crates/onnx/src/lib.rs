//! # fgvc-onnx
//!
//! A small builder of ONNX models: graph inputs with a dynamic batch dimension, named initializers, the
//! standard operators with their output shapes computed and checked as they are added, graph outputs, and
//! the model with its opset ([`OPSET`] 17), IR version ([`IR_VERSION`] 8) and `metadata_props`.
//!
//! The protobuf messages ([`proto`]) are generated from the official `onnx.proto` (onnx 1.23.2, in
//! `proto/`) by `cargo xtask protos` with `protox` and `prost-build`, and committed, so a build needs no
//! protobuf compiler. The crate knows nothing of any tensor library: exporters read their weights into
//! `f32` slices and call the typed operators ([`Graph::conv`], [`Graph::gemm`], [`Graph::matmul`], ...).
//!
//! ```
//! use fgvc_onnx::{decode, encode, Dim, Graph, ModelInfo};
//!
//! let mut g = Graph::new("tiny");
//! let x = g.input("images", vec![Dim::symbol("N"), 3.into(), 8.into(), 8.into()])?;
//! let pooled = g.global_pool(&x, true)?; // [N, 3]
//! let y = g.relu(&pooled);
//! g.output("logits", &y)?;
//! let mut info = ModelInfo::new("fgvc", "0.1.0");
//! info.metadata.push(("classes".into(), "[\"a\", \"b\", \"c\"]".into()));
//! let bytes = encode(&g.finish(&info));
//! let model = decode(&bytes).unwrap();
//! assert_eq!(fgvc_onnx::metadata(&model)[0].0, "classes");
//! # Ok::<(), fgvc_onnx::ExportError>(())
//! ```
#![warn(missing_docs)]

mod error;
mod graph;
mod ops;
pub mod proto;
mod shape;

pub use error::{ExportError, Result};
pub use graph::{decode, encode, metadata, Graph, ModelInfo, Value, IR_VERSION, OPSET};
pub use ops::{attr_float, attr_int, attr_ints, ConvGeometry};
pub use shape::{broadcast, Dim};
