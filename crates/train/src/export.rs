//! Exporting a trained model for deployment: the inference graph as ONNX ([`onnx_model`]), every named
//! prediction an output, main one first, on a dynamic batch of normalised images; or the inference weights
//! alone as safetensors ([`safetensors_weights`]). Both carry the same metadata ([`metadata`]): the class
//! names, the evaluation pipeline (resize, crop, mean and std) and the fgvc version, so a deployment needs
//! nothing else. `fgvc export` is this module on the command line.

use std::collections::HashMap;

use fgvc_onnx::{Dim, Graph, ModelInfo, Value};

use crate::error::{Result, TrainError};
use crate::method::Method;
use crate::predict::Predictor;

/// The name of the graph input: normalised images `(N, 3, H, W)`, float32.
pub const INPUT: &str = "images";

/// The name of the dynamic batch dimension.
pub const BATCH: &str = "N";

/// The fgvc version written into the metadata.
pub const FGVC_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The evaluation crop `(height, width)` of `predictor`'s configuration: what its test pipeline feeds the
/// network, the default export size.
pub fn eval_size(predictor: &Predictor) -> Result<(usize, usize)> {
    let test = predictor.config().data.input_sizes()?.test;
    match test.size {
        Some((h, w)) => Ok((h as usize, w as usize)),
        None => Err(TrainError::Msg(format!(
            "the evaluation images of this model have no fixed size ({}): give the export size \
             (--height and --width)",
            test.key
        ))),
    }
}

/// The graph of `method`'s predictions on a `(N, 3, height, width)` input called [`INPUT`], every
/// prediction a graph output under its name, in [`Method::predict`]'s order. Returns the graph and the
/// output values.
pub fn onnx_graph(
    method: &dyn Method,
    height: usize,
    width: usize,
) -> Result<(Graph, Vec<(String, Value)>)> {
    if height == 0 || width == 0 {
        return Err(TrainError::Msg(format!(
            "export size {height}x{width}: both sides must be positive"
        )));
    }
    let mut g = Graph::new(&format!("fgvc-{}", method.name()));
    let images = g.input(
        INPUT,
        vec![Dim::symbol(BATCH), 3.into(), height.into(), width.into()],
    )?;
    let outputs = method.export(&mut g, &images)?;
    if outputs.is_empty() {
        return Err(TrainError::Msg(format!(
            "the method {:?} exported no prediction",
            method.name()
        )));
    }
    for (name, value) in &outputs {
        if name == INPUT {
            return Err(TrainError::Msg(format!(
                "a prediction is called {INPUT:?}, the name of the graph input"
            )));
        }
        g.output(name, value)?;
    }
    Ok((g, outputs))
}

/// The metadata of an export at `height` x `width` of `predictor` whose predictions are `outputs` over
/// `classes` classes: `fgvc_version`, `method`, `backbone`, `predictions` and `classes` (JSON arrays),
/// `input_height`, `input_width`, `mean` and `std` (JSON arrays, RGB, of pixels scaled to [0, 1]) and
/// `test_pipeline` (the evaluation pipeline as JSON: resize and crop steps, then the normalisation).
pub fn metadata(
    predictor: &Predictor,
    outputs: &[String],
    classes: usize,
    height: usize,
    width: usize,
) -> Result<Vec<(String, String)>> {
    let config = predictor.config();
    let (_, test) = config.data.pipelines()?;
    let class_names: Vec<String> = (0..classes).map(|i| predictor.class_name(i)).collect();
    Ok(vec![
        ("fgvc_version".into(), FGVC_VERSION.into()),
        ("method".into(), predictor.method().name().into()),
        ("backbone".into(), config.model.backbone.clone()),
        ("predictions".into(), json(&outputs.to_vec())),
        ("classes".into(), json(&class_names)),
        ("input".into(), INPUT.into()),
        ("input_height".into(), height.to_string()),
        ("input_width".into(), width.to_string()),
        ("mean".into(), json(&test.normalize.mean.to_vec())),
        ("std".into(), json(&test.normalize.std.to_vec())),
        ("test_pipeline".into(), json(&test)),
    ])
}

/// JSON text of a metadata value (lists of strings and numbers, the pipeline: serialisation cannot fail).
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("metadata values serialise")
}

/// The ONNX model of `predictor` at `height` x `width`: opset [`fgvc_onnx::OPSET`], a dynamic batch, every
/// prediction an output, and [`metadata`].
pub fn onnx_model(
    predictor: &Predictor,
    height: usize,
    width: usize,
) -> Result<fgvc_onnx::proto::ModelProto> {
    let method = predictor.method();
    let (g, outputs) = onnx_graph(method, height, width)?;
    let classes = outputs[0].1.fixed_dim("classes", 1)?;
    let names: Vec<String> = outputs.into_iter().map(|(n, _)| n).collect();
    let info = ModelInfo {
        producer_name: "fgvc".into(),
        producer_version: FGVC_VERSION.into(),
        doc: format!(
            "{} on {}: normalised RGB images (N, 3, {height}, {width}) to the logits of each prediction",
            method.name(),
            predictor.config().model.backbone
        ),
        metadata: metadata(predictor, &names, classes, height, width)?,
    };
    Ok(g.finish(&info))
}

/// The inference weights of `predictor` as a safetensors file: every parameter and BatchNorm buffer of
/// the model under its name (the backbone's are torchvision's, the methods' layers under `heads.`), no
/// optimiser or trainer state, with [`metadata`] (at the evaluation size `height` x `width`) as the
/// file's metadata.
pub fn safetensors_weights(predictor: &Predictor, height: usize, width: usize) -> Result<Vec<u8>> {
    let method = predictor.method();
    // The predictions' names and the class count, from the graph the ONNX export would write.
    let (_, outputs) = onnx_graph(method, height, width)?;
    let classes = outputs[0].1.fixed_dim("classes", 1)?;
    let names: Vec<String> = outputs.into_iter().map(|(n, _)| n).collect();
    let meta: HashMap<String, String> = metadata(predictor, &names, classes, height, width)?
        .into_iter()
        .collect();
    let tensors: Vec<(String, candle_core::Tensor)> = method
        .store()
        .all()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| TrainError::Msg(format!("safetensors: {e}")))
}
