//! The graph builder: inputs, named initializers, nodes and outputs, each value with its static shape, and
//! the finished [`ModelProto`] with its opset, IR version and metadata.

use std::collections::HashMap;

use prost::Message;

use crate::error::{ExportError, Result};
use crate::proto::{
    tensor_proto, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use crate::shape::Dim;

/// The ONNX operator set the graphs are written against (ONNX 1.12): every operator the builder emits has
/// this opset's form.
pub const OPSET: i64 = 17;

/// The IR version that goes with [`OPSET`] (ONNX 1.12 wrote IR version 8 with opset 17).
pub const IR_VERSION: i64 = 8;

/// A value of the graph (an input, an initializer or a node's output): its name and static shape.
/// Every value is `float32` except the `int64` constants operators take as shape and axis inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    name: String,
    shape: Vec<Dim>,
}

impl Value {
    /// The name in the graph.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shape, symbolic dimensions included.
    pub fn shape(&self) -> &[Dim] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Dimension `i`, which must be fixed (`op` names the caller in the error).
    pub fn fixed_dim(&self, op: &str, i: usize) -> Result<usize> {
        match self.shape.get(i).and_then(Dim::fixed) {
            Some(n) => Ok(n),
            None => crate::error::shape_error(
                op,
                format!(
                    "dimension {i} of {} {} is not a fixed size",
                    self.name,
                    crate::shape::show(&self.shape)
                ),
            ),
        }
    }
}

/// What a name of the graph is bound to.
enum Taken {
    Initializer(usize),
    Value,
}

/// An ONNX graph under construction.
///
/// ```
/// use fgvc_onnx::{Dim, Graph, ModelInfo};
///
/// let mut g = Graph::new("affine");
/// let x = g.input("x", vec![Dim::symbol("N"), Dim::Fixed(2)])?;
/// let w = g.initializer("fc.weight", &[3, 2], &[1., 0., 0., 1., 1., 1.])?;
/// let b = g.initializer("fc.bias", &[3], &[0., 0., 0.5])?;
/// let y = g.gemm(&x, &w, Some(&b), true)?;
/// assert_eq!(y.shape(), &[Dim::symbol("N"), Dim::Fixed(3)]);
/// g.output("y", &y)?;
/// let model = g.finish(&ModelInfo::new("fgvc", "0.1.0"));
/// assert_eq!(model.opset_import[0].version, Some(fgvc_onnx::OPSET));
/// # Ok::<(), fgvc_onnx::ExportError>(())
/// ```
pub struct Graph {
    name: String,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    taken: HashMap<String, Taken>,
    counters: HashMap<String, usize>,
}

/// The model-level fields of a finished graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelInfo {
    /// `producer_name` (`fgvc`).
    pub producer_name: String,
    /// `producer_version`.
    pub producer_version: String,
    /// `doc_string` of the model.
    pub doc: String,
    /// `metadata_props`, in order.
    pub metadata: Vec<(String, String)>,
}

impl ModelInfo {
    /// A producer and its version, no doc and no metadata.
    pub fn new(producer_name: &str, producer_version: &str) -> Self {
        ModelInfo {
            producer_name: producer_name.into(),
            producer_version: producer_version.into(),
            ..ModelInfo::default()
        }
    }
}

fn tensor_type(elem: tensor_proto::DataType, shape: &[Dim]) -> TypeProto {
    let dim = shape
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            denotation: None,
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Symbol(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
        })
        .collect();
    TypeProto {
        denotation: None,
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(elem as i32),
            shape: Some(TensorShapeProto { dim }),
        })),
    }
}

fn value_info(name: &str, shape: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(tensor_type(tensor_proto::DataType::Float, shape)),
        ..ValueInfoProto::default()
    }
}

impl Graph {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Graph {
            name: name.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            taken: HashMap::new(),
            counters: HashMap::new(),
        }
    }

    fn claim(&mut self, name: &str, what: Taken) -> Result<()> {
        if name.is_empty() || self.taken.contains_key(name) {
            return Err(ExportError::Duplicate(name.into()));
        }
        self.taken.insert(name.into(), what);
        Ok(())
    }

    /// A fresh name `{base}_{k}`.
    fn fresh(&mut self, base: &str) -> String {
        loop {
            let k = self.counters.entry(base.to_string()).or_insert(0);
            let name = format!("{base}_{k}");
            *k += 1;
            if !self.taken.contains_key(&name) {
                return name;
            }
        }
    }

    /// A `float32` graph input of `shape` (symbolic dimensions are dynamic).
    pub fn input(&mut self, name: &str, shape: Vec<Dim>) -> Result<Value> {
        self.claim(name, Taken::Value)?;
        self.inputs.push(value_info(name, &shape));
        Ok(Value {
            name: name.into(),
            shape,
        })
    }

    /// A named `float32` initializer (a weight) of `dims`, its values row-major. The same name given again
    /// with the same dims and values is the same initializer (a module used twice, as Coarse2Fine's
    /// backbone); with other contents it is an error.
    pub fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> Result<Value> {
        let count: usize = dims.iter().product();
        if count != data.len() {
            return crate::error::shape_error(
                "initializer",
                format!("{name}: {} values for dims {dims:?}", data.len()),
            );
        }
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d)).collect();
        if let Some(Taken::Initializer(i)) = self.taken.get(name) {
            let t = &self.initializers[*i];
            let same_dims = t.dims.iter().map(|&d| d as usize).eq(dims.iter().copied());
            if same_dims && t.raw_data.as_deref() == Some(&raw[..]) {
                return Ok(Value {
                    name: name.into(),
                    shape,
                });
            }
            return Err(ExportError::Duplicate(name.into()));
        }
        self.claim(name, Taken::Initializer(self.initializers.len()))?;
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(tensor_proto::DataType::Float as i32),
            name: Some(name.into()),
            raw_data: Some(raw),
            ..TensorProto::default()
        });
        Ok(Value {
            name: name.into(),
            shape,
        })
    }

    /// An anonymous `float32` constant (interpolation matrices, scalars) of `dims`.
    pub fn constant(&mut self, dims: &[usize], data: &[f32]) -> Result<Value> {
        let name = self.fresh("const");
        self.initializer(&name, dims, data)
    }

    /// A `float32` scalar constant (shape `[]`).
    pub fn scalar(&mut self, value: f32) -> Result<Value> {
        self.constant(&[], &[value])
    }

    /// An anonymous 1-d `int64` constant (shapes, axes, slice bounds).
    pub fn constant_i64(&mut self, values: &[i64]) -> Value {
        let name = self.fresh("const_i64");
        self.taken
            .insert(name.clone(), Taken::Initializer(self.initializers.len()));
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: Some(tensor_proto::DataType::Int64 as i32),
            name: Some(name.clone()),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..TensorProto::default()
        });
        Value {
            name,
            shape: vec![Dim::Fixed(values.len())],
        }
    }

    /// A node of `op` (standard domain) on `inputs` with `attributes`, whose single output has `shape`
    /// (the typed operators of this crate compute it; this is their common end).
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&Value],
        attributes: Vec<AttributeProto>,
        shape: Vec<Dim>,
    ) -> Value {
        let name = self.fresh(op);
        self.taken.insert(name.clone(), Taken::Value);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|v| v.name.clone()).collect(),
            output: vec![name.clone()],
            name: Some(name.clone()),
            op_type: Some(op.into()),
            attribute: attributes,
            ..NodeProto::default()
        });
        Value { name, shape }
    }

    /// Declares `value` a graph output called `name` (through an `Identity` node when its name differs).
    pub fn output(&mut self, name: &str, value: &Value) -> Result<()> {
        let value = if value.name == name {
            value.clone()
        } else {
            self.claim(name, Taken::Value)?;
            self.nodes.push(NodeProto {
                input: vec![value.name.clone()],
                output: vec![name.into()],
                name: Some(format!("{name}_output")),
                op_type: Some("Identity".into()),
                ..NodeProto::default()
            });
            Value {
                name: name.into(),
                shape: value.shape.clone(),
            }
        };
        if self.outputs.iter().any(|o| o.name.as_deref() == Some(name)) {
            return Err(ExportError::Duplicate(name.into()));
        }
        self.outputs.push(value_info(name, &value.shape));
        Ok(())
    }

    /// Nodes so far.
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The names of the initializers so far, in order.
    pub fn initializer_names(&self) -> Vec<&str> {
        self.initializers
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect()
    }

    /// The model: this graph with opset [`OPSET`], IR version [`IR_VERSION`] and `info`'s producer, doc
    /// and metadata.
    pub fn finish(self, info: &ModelInfo) -> ModelProto {
        ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            }],
            producer_name: Some(info.producer_name.clone()),
            producer_version: Some(info.producer_version.clone()),
            doc_string: (!info.doc.is_empty()).then(|| info.doc.clone()),
            graph: Some(GraphProto {
                node: self.nodes,
                name: Some(self.name),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..GraphProto::default()
            }),
            metadata_props: info
                .metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            ..ModelProto::default()
        }
    }
}

/// The protobuf encoding of `model` (the `.onnx` file's bytes).
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// A model read back from its protobuf encoding.
pub fn decode(bytes: &[u8]) -> std::result::Result<ModelProto, prost::DecodeError> {
    ModelProto::decode(bytes)
}

/// The `metadata_props` of `model` as `(key, value)` pairs.
pub fn metadata(model: &ModelProto) -> Vec<(String, String)> {
    model
        .metadata_props
        .iter()
        .map(|e| {
            (
                e.key.clone().unwrap_or_default(),
                e.value.clone().unwrap_or_default(),
            )
        })
        .collect()
}
