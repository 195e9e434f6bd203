//! Checkpoints: model weights, optimiser state and trainer state in one safetensors file, written atomically.
//!
//! Tensors are stored under their parameter names (torchvision's for a backbone, so a checkpoint's weights
//! load into any model with those names); optimiser buffers under `optim/<buffer>/<parameter>`. The trainer
//! state (epoch, step, seed, optimiser step counts, best score) is JSON in the safetensors metadata under
//! `fgvc.trainer_state`, and what inference needs (class names, configuration, test pipeline, prediction
//! names: [`InferenceInfo`]) under `fgvc.inference`, so a model restores from the file alone. One file, one rename: a killed run leaves either the previous checkpoint or the new
//! one, never weights from one step with optimiser state from another.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use fgvc_ops::ParamStore;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::OptimizerState;
use crate::run_dir::atomic_write;

mod inference;

pub use inference::{read_inference, InferenceInfo, INFERENCE_KEY};

/// Prefix of optimiser-state tensors.
pub const OPTIM_PREFIX: &str = "optim/";
const STATE_KEY: &str = "fgvc.trainer_state";
const OPTIM_META_KEY: &str = "fgvc.optimizer";
const FORMAT_KEY: &str = "fgvc.format";

/// The best evaluation so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestScore {
    /// Epoch (0-based) of the evaluation.
    pub epoch: usize,
    /// The selection score (top-1 accuracy of the primary prediction).
    pub score: f64,
    /// The split it was measured on (`val`, or `test` under the papers' protocol).
    pub split: String,
}

/// Where training stands: enough, with the weights and optimiser state, to continue exactly.
///
/// No RNG stream is saved: every random draw (data order, augmentation, dropout) is keyed by
/// `(seed, epoch, step)`, so the position is the whole state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The epoch to continue in (0-based).
    pub epoch: usize,
    /// Batches of that epoch already trained.
    pub batch_in_epoch: usize,
    /// Global batch steps trained so far.
    pub step: u64,
    /// The run's seed.
    pub seed: u64,
    /// The best evaluation so far.
    pub best: Option<BestScore>,
    /// Finished: every epoch trained.
    pub finished: bool,
    /// The processes that trained it (a data-parallel run's world size; 1 otherwise). A resumed run must
    /// have as many, since each process' part of every epoch depends on it.
    #[serde(default = "one_process")]
    pub world_size: usize,
}

fn one_process() -> usize {
    1
}

/// A checkpoint as read back.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Model tensors (parameters and buffers) by name.
    pub weights: BTreeMap<String, Tensor>,
    /// The optimiser state, when the checkpoint has one.
    pub optimizer: Option<OptimizerState>,
    /// The trainer state, when the checkpoint has one.
    pub state: Option<TrainerState>,
    /// What inference needs besides the weights; `None` in checkpoints of fgvc before 0.1.0's
    /// self-contained format.
    pub inference: Option<InferenceInfo>,
}

/// Writes the whole of `store` (parameters and buffers), `optimizer`, `state` and `inference` to `path`
/// atomically.
pub fn save(
    path: &Path,
    store: &ParamStore,
    optimizer: Option<&OptimizerState>,
    state: Option<&TrainerState>,
    inference: Option<&InferenceInfo>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = store
        .all()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().detach()))
        .collect();
    let mut meta = HashMap::new();
    meta.insert(FORMAT_KEY.to_string(), "1".to_string());
    if let Some(o) = optimizer {
        for (k, t) in &o.tensors {
            tensors.push((format!("{OPTIM_PREFIX}{k}"), t.clone()));
        }
        let doc = serde_json::json!({ "kind": o.kind, "meta": o.meta });
        meta.insert(OPTIM_META_KEY.to_string(), doc.to_string());
    }
    if let Some(s) = state {
        let doc =
            serde_json::to_string(s).map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
        meta.insert(STATE_KEY.to_string(), doc);
    }
    if let Some(i) = inference {
        meta.insert(INFERENCE_KEY.to_string(), i.to_json());
    }
    // Tensors on an accelerator are copied to the host by the serializer.
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
    atomic_write(path, &bytes)
}

/// Reads a checkpoint, putting its tensors on `device`.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    load_bytes(&bytes, path, device)
}

/// [`load`] of a checkpoint already in memory; `path` only names it in errors.
pub fn load_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Checkpoint> {
    let bad = |m: String| TrainError::checkpoint(path, m);
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let all = candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| bad(format!("cannot load its tensors: {e}")))?;
    let mut weights = BTreeMap::new();
    let mut optim = BTreeMap::new();
    for (name, t) in all {
        match name.strip_prefix(OPTIM_PREFIX) {
            Some(rest) => {
                optim.insert(rest.to_string(), t);
            }
            None => {
                weights.insert(name, t);
            }
        }
    }
    let optimizer = match meta.get(OPTIM_META_KEY) {
        Some(doc) => {
            let v: serde_json::Value = serde_json::from_str(doc)
                .map_err(|e| bad(format!("bad optimizer metadata: {e}")))?;
            Some(OptimizerState {
                kind: v["kind"]
                    .as_str()
                    .ok_or_else(|| bad("optimizer metadata has no kind".into()))?
                    .to_string(),
                tensors: optim,
                meta: v["meta"].clone(),
            })
        }
        None if optim.is_empty() => None,
        None => return Err(bad("optimizer tensors without optimizer metadata".into())),
    };
    let state = match meta.get(STATE_KEY) {
        Some(doc) => {
            Some(serde_json::from_str(doc).map_err(|e| bad(format!("bad trainer state: {e}")))?)
        }
        None => None,
    };
    let inference = meta
        .get(INFERENCE_KEY)
        .map(|doc| InferenceInfo::from_json(doc, path))
        .transpose()?;
    Ok(Checkpoint {
        weights,
        optimizer,
        state,
        inference,
    })
}

/// Copies `weights` into the variables of `store` with the same names. Every variable of the store must be
/// present with its shape; with `strict`, a tensor the store does not have is an error as well.
pub fn apply_weights(
    store: &ParamStore,
    weights: &BTreeMap<String, Tensor>,
    strict: bool,
) -> Result<()> {
    let all = store.all();
    let missing: Vec<&str> = all
        .iter()
        .filter(|(n, _)| !weights.contains_key(n))
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(TrainError::Msg(format!(
            "the checkpoint lacks {} tensors of the model, e.g. {:?}: it was made for another model \
             configuration",
            missing.len(),
            &missing[..missing.len().min(5)]
        )));
    }
    if strict {
        let extra: Vec<&String> = weights.keys().filter(|k| store.get(k).is_none()).collect();
        if !extra.is_empty() {
            return Err(TrainError::Msg(format!(
                "the checkpoint has {} tensors the model lacks, e.g. {:?}",
                extra.len(),
                &extra[..extra.len().min(5)]
            )));
        }
    }
    for (name, var) in all {
        let t = &weights[&name];
        if t.shape() != var.shape() {
            return Err(TrainError::Msg(format!(
                "checkpoint tensor {name:?} has shape {:?}, the model's has {:?}",
                t.shape(),
                var.shape()
            )));
        }
        var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
