//! What a checkpoint carries for inference: class names, the run configuration, the test pipeline and the
//! named predictions, so a model restores from the file alone, with its run directory and dataset gone.
//!
//! The record is JSON in the safetensors metadata under `fgvc.inference`, readable by any safetensors
//! reader (`safe_open(f).metadata()["fgvc.inference"]` in Python).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Tensor};
use fgvc_augment::transforms::Pipeline;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Result, TrainError};
use crate::method::Method;

/// Metadata key of the [`InferenceInfo`] record.
pub const INFERENCE_KEY: &str = "fgvc.inference";

/// Everything inference needs besides the weights.
///
/// Fields may be added by later versions; readers ignore the ones they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceInfo {
    /// The fgvc version that wrote the checkpoint.
    pub fgvc_version: String,
    /// The method's registry name (`pmg`).
    pub method: String,
    /// The backbone's torchvision name (`resnet50`).
    pub backbone: String,
    /// Class names in label order (their count is the classifier's width).
    pub class_names: Vec<String>,
    /// The named predictions of `Method::predict`, the main one first.
    pub predictions: Vec<String>,
    /// The evaluation pipeline (resize, crop, normalisation) images go through before the model.
    pub test_pipeline: Pipeline,
    /// `(height, width)` of the model's input when the pipeline's output size does not depend on the image's
    /// (a resize to a fixed size, then a crop); `None` otherwise.
    pub input_size: Option<[u32; 2]>,
    /// The whole run configuration, as the run's `config.toml`.
    pub config: String,
}

impl InferenceInfo {
    /// The record of a model trained with `config` on classes `class_names`, predicting `predictions`.
    pub fn new(
        config: &Config,
        class_names: Vec<String>,
        predictions: Vec<String>,
    ) -> Result<Self> {
        let (_, test_pipeline) = config.data.pipelines()?;
        Ok(InferenceInfo {
            fgvc_version: env!("CARGO_PKG_VERSION").to_string(),
            method: config.method.name.clone(),
            backbone: config.model.backbone.clone(),
            class_names,
            predictions,
            input_size: config.data.input_sizes()?.test.size.map(|(h, w)| [h, w]),
            test_pipeline,
            config: config.to_toml(),
        })
    }

    /// The record of `method`, trained with `config` on classes `class_names`: its prediction names come
    /// from one evaluation-mode forward pass of a blank image at the test pipeline's size.
    pub fn of_method(
        config: &Config,
        method: &dyn Method,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let mut info = Self::new(config, class_names, Vec::new())?;
        let (_, crop) = config.data.sizes();
        let [h, w] = info.input_size.unwrap_or([crop, crop]);
        let device = method.store().device();
        let blank = Tensor::zeros((1, 3, h as usize, w as usize), DType::F32, device)?;
        info.predictions = method
            .predict(&blank)?
            .heads
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        Ok(info)
    }

    /// The embedded configuration, parsed and checked like a `config.toml`, with `overrides`
    /// (`key=value`) applied; `origin` names the checkpoint in errors.
    pub fn config(&self, origin: &str, overrides: &[String]) -> Result<Config> {
        Config::parse(
            &self.config,
            &format!("{origin} (its embedded configuration)"),
            overrides,
        )
    }

    /// The record as JSON.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("inference records serialise")
    }

    /// Reads the JSON of a record; `path` names the checkpoint in errors.
    pub(crate) fn from_json(doc: &str, path: &Path) -> Result<Self> {
        serde_json::from_str(doc)
            .map_err(|e| TrainError::checkpoint(path, format!("bad {INFERENCE_KEY} metadata: {e}")))
    }
}

/// The largest safetensors header read (the format's own limit).
const MAX_HEADER: u64 = 100 << 20;

/// The [`InferenceInfo`] of the checkpoint at `path`, read from its header alone (the tensors are not read):
/// `None` for a checkpoint without one.
pub fn read_inference(path: &Path) -> Result<Option<InferenceInfo>> {
    let bad = |m: String| TrainError::checkpoint(path, m);
    let mut file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(bad(format!(
            "not a safetensors file: its header claims {len} bytes (the limit is {MAX_HEADER})"
        )));
    }
    let mut header = Vec::new();
    file.take(len)
        .read_to_end(&mut header)
        .map_err(|e| TrainError::io(path, e))?;
    if header.len() as u64 != len {
        return Err(bad(format!(
            "truncated: its header should be {len} bytes, the file holds {}",
            header.len()
        )));
    }
    let doc: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        bad(format!(
            "not a safetensors file: its header is not JSON: {e}"
        ))
    })?;
    match doc["__metadata__"][INFERENCE_KEY].as_str() {
        Some(text) => Ok(Some(InferenceInfo::from_json(text, path)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_know_fixed_input_sizes() {
        let config = Config::parse("", "test", &["data.crop=32".into()]).unwrap();
        let info = InferenceInfo::new(&config, vec!["a".into(), "b".into()], vec!["logits".into()])
            .unwrap();
        assert_eq!(info.input_size, Some([32, 32]));
        assert_eq!(info.method, "baseline");
        let back = InferenceInfo::from_json(&info.to_json(), "x".as_ref()).unwrap();
        assert_eq!(back, info);
        assert_eq!(back.config("x", &[]).unwrap(), config);
        // A later version's extra field is ignored.
        let mut doc: serde_json::Value = serde_json::from_str(&info.to_json()).unwrap();
        doc["added_later"] = serde_json::json!(1);
        assert_eq!(
            InferenceInfo::from_json(&doc.to_string(), "x".as_ref()).unwrap(),
            info
        );
        let err = InferenceInfo::from_json("{}", "ck.safetensors".as_ref()).unwrap_err();
        assert!(err.to_string().contains("ck.safetensors"), "{err}");
    }

    #[test]
    fn header_reads_refuse_hostile_and_truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let read = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read_inference(&path).map_err(|e| e.to_string())
        };
        let err = read(&u64::MAX.to_le_bytes()).unwrap_err();
        assert!(
            err.contains("ck.safetensors") && err.contains("header claims"),
            "{err}"
        );
        let mut short = 100u64.to_le_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert!(read(&short).unwrap_err().contains("truncated"));
        assert!(read(b"abc").unwrap_err().contains("not a safetensors file"));
        let mut plain = 2u64.to_le_bytes().to_vec();
        plain.extend_from_slice(b"{}");
        assert_eq!(read(&plain).unwrap(), None);
    }

    #[test]
    fn a_shorter_side_resize_has_no_fixed_input_size() {
        let config = Config::parse(
            "[data]\ndataset = \"cub\"\ntest_pipeline = { steps = [{ op = \"resize_shorter\", size = 40 }], normalize = \"imagenet\" }\n",
            "test",
            &[],
        )
        .unwrap();
        let info = InferenceInfo::new(&config, vec!["a".into(), "b".into()], vec![]).unwrap();
        assert_eq!(info.input_size, None);
    }
}
