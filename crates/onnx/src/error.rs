//! The error of building or exporting a graph: what cannot be expressed, and shapes that do not fit.

/// What went wrong while building an ONNX graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportError {
    /// Part of a model has no ONNX formulation here; the message names it.
    Unsupported(String),
    /// An operator's inputs do not fit each other (a programming error of the exporter, or a model whose
    /// shapes are inconsistent with the export's input size).
    Shape {
        /// The operator (`Conv`, `MatMul`).
        op: String,
        /// What does not fit.
        message: String,
    },
    /// A graph value, initializer or output name is used twice with different contents.
    Duplicate(String),
    /// A model tensor could not be read (a device or dtype error of the tensor library).
    Tensor(String),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Unsupported(what) => write!(f, "cannot export to ONNX: {what}"),
            ExportError::Shape { op, message } => write!(f, "ONNX export: {op}: {message}"),
            ExportError::Duplicate(name) => {
                write!(
                    f,
                    "ONNX export: the name {name:?} is used twice with different contents"
                )
            }
            ExportError::Tensor(message) => write!(f, "ONNX export: reading a tensor: {message}"),
        }
    }
}

impl std::error::Error for ExportError {}

/// A result of graph building.
pub type Result<T> = std::result::Result<T, ExportError>;

/// A [`ExportError::Shape`] for `op`.
pub(crate) fn shape_error<T>(op: &str, message: impl Into<String>) -> Result<T> {
    Err(ExportError::Shape {
        op: op.into(),
        message: message.into(),
    })
}
