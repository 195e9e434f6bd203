//! Pretrained weights and checkpoints: read safetensors and PyTorch files, copy them into a
//! [`ParamStore`] by name, save a store atomically.
//!
//! - [`read_tensors`] / [`read_checkpoint`] read every tensor of a file in one of three formats, told apart
//!   by their first bytes, not by the extension:
//!   - **safetensors**;
//!   - **PyTorch zip** (`torch.save` since 1.6);
//!   - **PyTorch legacy** (before 1.6: a stream of pickles followed by raw storages), which several
//!     torchvision checkpoints still use (`vgg16-397923af.pth`, `vgg16_bn-6c64b313.pth`,
//!     `mobilenet_v2-b0353104.pth`).
//!
//!   The pickles are read by a small interpreter that builds only data and tensors from an allow-list and
//!   refuses any other Python global: loading a file never runs code from it.
//! - A checkpoint may hold the `state_dict` itself or nest it under a key (`{"state_dict": sd, "epoch": 3}`,
//!   `model`, `state_dict_ema`, ...). The key is found automatically or named by the caller, and a file in
//!   which no tensors can be found is an error, never an empty result.
//! - [`load_into`] copies the tensors into a store's vars by name (with optional prefix mapping), converts
//!   dtype and device, skips `num_batches_tracked`, and returns a [`LoadReport`] of loaded, missing,
//!   unexpected and re-initialised names. A shape mismatch is an error, except under prefixes the caller
//!   marks for re-initialisation (a new classifier for another class count keeps its initialisation).
//! - [`load_pretrained`] loads a backbone's pretrained weights strictly: every model tensor must be in the
//!   file with its shape, a common name prefix (`module.`, `backbone.`, ...) is detected and stripped, and
//!   tensors the model has no place for are reported ([`PretrainedOptions::strict`] allows a partial load).
//! - [`save`] writes every var of a store, BatchNorm running statistics included, as safetensors through a
//!   temporary file and a rename, so a crash never leaves a half-written file; [`load`] reads it back
//!   strictly.
//! - [`catalog`] lists torchvision's ImageNet checkpoint of every backbone: file names, hashes, URL.
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use fgvc_backbone::weights::{load_into, LoadOptions};
//! use fgvc_backbone::ResNet;
//! use fgvc_ops::ParamStore;
//!
//! let store = ParamStore::new(0, DType::F32, &Device::Cpu);
//! let _net = ResNet::resnet50(Some(200), &store.root())?;
//! // ImageNet weights into a 200-class model: `fc` keeps its fresh initialisation.
//! let report = load_into(&store, "data/weights/resnet50.safetensors", &LoadOptions::new().reinitialise("fc."))?;
//! println!("{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bounds;
pub mod catalog;
mod pickle;
mod pretrained;
mod pth;

pub use pretrained::{detect_prefix, load_pretrained, Misfit, PretrainedOptions, PretrainedReport};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use fgvc_ops::ParamStore;

/// The file formats [`read_tensors`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Hugging Face safetensors.
    Safetensors,
    /// `torch.save` zip archive (PyTorch 1.6 and later).
    PthZip,
    /// `torch.save` legacy stream of pickles (before PyTorch 1.6, or `_use_new_zipfile_serialization=False`).
    PthLegacy,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Safetensors => "safetensors",
            Format::PthZip => "PyTorch zip checkpoint",
            Format::PthLegacy => "PyTorch legacy (pre-1.6) checkpoint",
        })
    }
}

/// How to turn an old or unusual checkpoint into safetensors with Python, quoted in error messages.
pub const CONVERT_HINT: &str = "convert it once with Python, for a file you trust (torch.load runs its pickle): \
python3 -c \"import sys, torch; from safetensors.torch import save_file; \
sd = torch.load(sys.argv[1], map_location='cpu', weights_only=False); sd = sd.get('state_dict', sd); \
save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])\" IN.pth OUT.safetensors";

/// What a refused pickle's error says after naming the global: why, and what to do that is safe.
const REFUSED_HINT: &str = "which is not a tensor or container (loading never executes code from a file). \
The file may be malicious: do not open it in Python. Get the weights from a source you trust, as \
safetensors or as a state_dict-only .pth; for a checkpoint you made yourself, re-save only the weights \
from the program that trained it (`torch.save(model.state_dict(), PATH)`)";

/// Everything that can go wrong reading, loading or saving weights. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file does not exist.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// An I/O error other than a missing file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The first bytes match no supported format.
    #[error(
        "{}: unknown weights format (first bytes {magic}); expected safetensors, a PyTorch zip checkpoint or \
         a legacy PyTorch checkpoint",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// The first bytes, in hex.
        magic: String,
    },
    /// The file has a known format but is truncated or damaged.
    #[error("{}: truncated or corrupt {format}: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: Format,
        /// What was wrong.
        detail: String,
    },
    /// The checkpoint's pickle names a Python global outside the allow-list (it would run code in Python).
    ///
    /// The message never suggests opening that file in Python: it may be malicious.
    #[error("{}: refusing to load: the checkpoint's pickle uses `{global}`, {REFUSED_HINT}", path.display())]
    ForbiddenGlobal {
        /// The file.
        path: PathBuf,
        /// The global, as `module.name`.
        global: String,
    },
    /// A valid feature of the format that this reader does not handle.
    #[error("{}: unsupported: {detail}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported, and what to do.
        detail: String,
    },
    /// The file asks for more memory than its size can account for (a huge declared length, storages
    /// viewed over and over, a pickle that copies without end), or an allocation failed.
    #[error("{}: refusing to load: {detail}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What was too large.
        detail: String,
    },
    /// No dict of tensors was found where a state dict should be.
    #[error("{}: no state dict found: {detail}", path.display())]
    NoStateDict {
        /// The file.
        path: PathBuf,
        /// What the file holds instead.
        detail: String,
    },
    /// A model tensor and the file's tensor of the same name differ in shape.
    #[error(
        "{}: shape mismatch for `{name}`: the model has {model:?}, the file has {file:?}{}",
        path.display(),
        renamed(name, file_name)
    )]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The model's name.
        name: String,
        /// The name in the file.
        file_name: String,
        /// The model's shape.
        model: Vec<usize>,
        /// The file's shape.
        file: Vec<usize>,
    },
    /// A strict load found missing, unexpected or re-initialised names.
    #[error("{}: strict load failed: {report}", path.display())]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// What did and did not match.
        report: Box<LoadReport>,
    },
    /// Pretrained weights that do not cover the model ([`load_pretrained`]): model tensors missing from
    /// the file or of another shape (strict), or no tensor fitting at all.
    #[error("{}: {misfit}", path.display())]
    DoNotFit {
        /// The file.
        path: PathBuf,
        /// What fits and what does not.
        misfit: Box<Misfit>,
    },
    /// A tensor operation failed (dtype conversion, copy into a var, serialisation).
    #[error("{}: {source}", path.display())]
    Candle {
        /// The file.
        path: PathBuf,
        /// The candle error.
        source: candle_core::Error,
    },
}

/// ` (as `file name`)` when a prefix mapping renamed the tensor, else nothing.
fn renamed(name: &str, file_name: &str) -> String {
    if name == file_name {
        String::new()
    } else {
        format!(" (as `{file_name}` in the file)")
    }
}

impl WeightsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            WeightsError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            WeightsError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    fn candle(path: &Path, source: candle_core::Error) -> Self {
        WeightsError::Candle {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The tensors of one file, in the file's order (sorted by name for safetensors).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The file's format.
    pub format: Format,
    /// The key the state dict was nested under (`None` for a bare state dict or safetensors).
    pub key: Option<String>,
    /// `(name, tensor)` pairs, all on the CPU in the file's dtype.
    pub tensors: Vec<(String, Tensor)>,
}

/// Keys that conventionally hold the state dict inside a training checkpoint, in order of preference.
pub const STATE_DICT_KEYS: &[&str] = &[
    "state_dict",
    "model",
    "model_state_dict",
    "net",
    "state_dict_ema",
    "model_ema",
];

/// Detects a file's format from its first bytes.
pub fn detect_format(path: impl AsRef<Path>) -> Result<Format, WeightsError> {
    let path = path.as_ref();
    let mut head = Vec::with_capacity(512);
    File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| WeightsError::io(path, e))?;
    format_of(&head, path)
}

/// The format whose signature `head` (a file's first bytes, up to 512) starts with; `path` names the file
/// in errors.
fn format_of(head: &[u8], path: &Path) -> Result<Format, WeightsError> {
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Format::PthZip);
    }
    // Legacy: PROTO 2, LONG1 of 10 bytes holding the magic number 0x1950a86a20f9469cfc6c.
    if head.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
        return Ok(Format::PthLegacy);
    }
    if head.len() >= 9 {
        let header_len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if head[8] == b'{' && (2..100 << 20).contains(&header_len) {
            return Ok(Format::Safetensors);
        }
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Err(WeightsError::Unsupported {
            path: path.to_path_buf(),
            detail: format!(
                "the tar-based PyTorch format of 2016 (torch < 0.1.10); {CONVERT_HINT}"
            ),
        });
    }
    if head.is_empty() {
        return Err(WeightsError::Corrupt {
            path: path.to_path_buf(),
            format: Format::Safetensors,
            detail: "the file is empty".into(),
        });
    }
    let magic = head
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(WeightsError::UnknownFormat {
        path: path.to_path_buf(),
        magic,
    })
}

/// Reads every tensor of a weights file (bare state dict, or one found under a [`STATE_DICT_KEYS`] key).
///
/// Equivalent to `read_checkpoint(path, None)?.tensors`.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>, WeightsError> {
    Ok(read_checkpoint(path, None)?.tensors)
}

/// Reads every tensor of a weights file. `key` names the entry holding the state dict in a nested
/// PyTorch checkpoint; without it a bare state dict is taken as is and a nested one is found by looking
/// for a dict of tensors (preferring [`STATE_DICT_KEYS`] when there are several). A file with no tensor
/// is an error.
pub fn read_checkpoint(
    path: impl AsRef<Path>,
    key: Option<&str>,
) -> Result<Checkpoint, WeightsError> {
    let path = path.as_ref();
    let format = detect_format(path)?;
    match format {
        Format::Safetensors => {
            let bytes = std::fs::read(path).map_err(|e| WeightsError::io(path, e))?;
            read_safetensors(&bytes, path, key)
        }
        Format::PthZip | Format::PthLegacy => {
            let file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
            let len = file
                .metadata()
                .map_err(|e| WeightsError::io(path, e))?
                .len();
            pth::read(BufReader::new(file), len, path, format, key)
        }
    }
}

/// [`read_checkpoint`] of a file already in memory; `path` only names it in errors.
///
/// Reading is bounded by `bytes.len()` for any input: lengths the file declares are checked against what
/// it holds before anything is allocated, and the tensors built hold at most a small multiple of its size.
pub fn read_checkpoint_bytes(
    bytes: &[u8],
    path: impl AsRef<Path>,
    key: Option<&str>,
) -> Result<Checkpoint, WeightsError> {
    let path = path.as_ref();
    let format = format_of(&bytes[..bytes.len().min(512)], path)?;
    match format {
        Format::Safetensors => read_safetensors(bytes, path, key),
        Format::PthZip | Format::PthLegacy => {
            pth::read(Cursor::new(bytes), bytes.len() as u64, path, format, key)
        }
    }
}

fn read_safetensors(
    bytes: &[u8],
    path: &Path,
    key: Option<&str>,
) -> Result<Checkpoint, WeightsError> {
    let format = Format::Safetensors;
    if let Some(key) = key {
        return Err(WeightsError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("safetensors files are flat; there is no key `{key}` to select"),
        });
    }
    let map = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| {
        WeightsError::Corrupt {
            path: path.to_path_buf(),
            format,
            detail: e.to_string(),
        }
    })?;
    if map.is_empty() {
        return Err(WeightsError::NoStateDict {
            path: path.to_path_buf(),
            detail: "the safetensors file holds no tensors".into(),
        });
    }
    let mut tensors: Vec<(String, Tensor)> = map.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Checkpoint {
        format,
        key: None,
        tensors,
    })
}

/// How [`load_into`] matches a file's tensors to a store's vars.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The key holding the state dict in a nested checkpoint (found automatically when `None`).
    pub key: Option<String>,
    /// Name mapping as `(store prefix, file prefix)` pairs: a store name starting with the store prefix is
    /// looked up in the file with that prefix replaced (first matching pair wins; names no pair matches are
    /// looked up unchanged). `("backbone.", "")` loads `conv1.weight` into `backbone.conv1.weight`.
    pub prefixes: Vec<(String, String)>,
    /// Store-name prefixes whose vars keep their initialisation when the file's shape differs (a new
    /// classifier for another class count), reported in [`LoadReport::reinitialised`].
    pub reinitialise: Vec<String>,
    /// Fail with [`WeightsError::Incomplete`] unless every var is loaded and every file tensor is used.
    pub strict: bool,
}

impl LoadOptions {
    /// Defaults: key found automatically, names unchanged, nothing re-initialised, not strict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the state dict from `key` of a nested checkpoint.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Loads store names starting with `store_prefix` from file names starting with `file_prefix`.
    pub fn map_prefix(
        mut self,
        store_prefix: impl Into<String>,
        file_prefix: impl Into<String>,
    ) -> Self {
        self.prefixes
            .push((store_prefix.into(), file_prefix.into()));
        self
    }

    /// Vars under `store_prefix` keep their initialisation on a shape mismatch (e.g. `"fc."`).
    pub fn reinitialise(mut self, store_prefix: impl Into<String>) -> Self {
        self.reinitialise.push(store_prefix.into());
        self
    }

    /// Requires a complete, exact match.
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// The file name a store name is looked up under.
    pub fn file_name(&self, store_name: &str) -> String {
        for (store_prefix, file_prefix) in &self.prefixes {
            if let Some(rest) = store_name.strip_prefix(store_prefix.as_str()) {
                return format!("{file_prefix}{rest}");
            }
        }
        store_name.to_string()
    }
}

/// A var that kept its initialisation because the file's tensor has another shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reinitialised {
    /// The store name.
    pub name: String,
    /// The var's shape.
    pub model: Vec<usize>,
    /// The file tensor's shape.
    pub file: Vec<usize>,
}

/// What [`load_into`] did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The file read.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// The key the state dict came from, for a nested checkpoint.
    pub key: Option<String>,
    /// Store names that received the file's values, sorted.
    pub loaded: Vec<String>,
    /// Store names the file has no tensor for (they keep their initialisation), sorted.
    /// `num_batches_tracked` counters are never reported.
    pub missing: Vec<String>,
    /// File names no var took (`num_batches_tracked` excluded), sorted.
    pub unexpected: Vec<String>,
    /// Vars under a re-initialise prefix whose shape differs from the file's.
    pub reinitialised: Vec<Reinitialised>,
}

impl LoadReport {
    /// True when every var was loaded and every file tensor was used.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.reinitialised.is_empty()
    }
}

fn list(f: &mut fmt::Formatter<'_>, title: &str, names: &[String]) -> fmt::Result {
    const SHOWN: usize = 8;
    if names.is_empty() {
        return Ok(());
    }
    write!(
        f,
        "\n  {title} ({}): {}",
        names.len(),
        names[..names.len().min(SHOWN)].join(", ")
    )?;
    if names.len() > SHOWN {
        write!(f, ", ... and {} more", names.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.loaded.len() + self.missing.len() + self.reinitialised.len();
        write!(
            f,
            "loaded {} of {} tensors from {} ({}",
            self.loaded.len(),
            total,
            self.path.display(),
            self.format
        )?;
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        f.write_str(")")?;
        list(f, "missing, kept their initialisation", &self.missing)?;
        list(f, "unexpected, ignored", &self.unexpected)?;
        let reinit: Vec<String> = self
            .reinitialised
            .iter()
            .map(|r| format!("{} {:?} (file {:?})", r.name, r.model, r.file))
            .collect();
        list(f, "re-initialised, shape differs", &reinit)
    }
}

fn is_counter(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// Copies the tensors of `path` into the vars of `store` with the same (mapped) names.
///
/// All shapes are checked before any var changes, so on error the store is untouched. Values are converted
/// to each var's dtype and device. See [`LoadOptions`] for name mapping, re-initialised prefixes and
/// strictness.
pub fn load_into(
    store: &ParamStore,
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<LoadReport, WeightsError> {
    let path = path.as_ref();
    let checkpoint = read_checkpoint(path, options.key.as_deref())?;
    let plan = plan_load(store, path, &checkpoint, options)?;
    if options.strict && !plan.report.is_complete() {
        return Err(WeightsError::Incomplete {
            path: path.to_path_buf(),
            report: Box::new(plan.report),
        });
    }
    plan.apply()
}

/// What [`load_into`] will copy, decided before any var changes.
struct LoadPlan<'c> {
    /// The report, with `loaded` still empty: [`LoadPlan::apply`] fills it.
    report: LoadReport,
    /// Store name, var, and the file tensor it takes.
    copies: Vec<(String, candle_core::Var, &'c Tensor)>,
}

impl LoadPlan<'_> {
    /// Store names that will be loaded.
    fn planned(&self) -> usize {
        self.copies.len()
    }

    /// Copies the planned tensors into their vars and returns the completed report.
    fn apply(self) -> Result<LoadReport, WeightsError> {
        let LoadPlan { mut report, copies } = self;
        for (name, var, tensor) in copies {
            tensor
                .to_dtype(var.dtype())
                .and_then(|t| t.to_device(var.device()))
                .and_then(|t| var.set(&t))
                .map_err(|e| {
                    WeightsError::candle(&report.path, e.context(format!("loading `{name}`")))
                })?;
            report.loaded.push(name);
        }
        report.loaded.sort();
        Ok(report)
    }
}

/// Matches the tensors of `checkpoint` (read from `path`) to the vars of `store` under `options`' names.
/// A shape mismatch outside the re-initialise prefixes is an error; strictness is the caller's.
fn plan_load<'c>(
    store: &ParamStore,
    path: &Path,
    checkpoint: &'c Checkpoint,
    options: &LoadOptions,
) -> Result<LoadPlan<'c>, WeightsError> {
    let file: HashMap<&str, &Tensor> = checkpoint
        .tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t))
        .collect();
    let mut used: HashSet<String> = HashSet::new();
    let mut report = LoadReport {
        path: path.to_path_buf(),
        format: checkpoint.format,
        key: checkpoint.key.clone(),
        loaded: Vec::new(),
        missing: Vec::new(),
        unexpected: Vec::new(),
        reinitialised: Vec::new(),
    };
    let mut copies = Vec::new();
    for (name, var) in store.all() {
        if is_counter(&name) {
            continue;
        }
        let file_name = options.file_name(&name);
        let Some(tensor) = file.get(file_name.as_str()) else {
            report.missing.push(name);
            continue;
        };
        used.insert(file_name.clone());
        if tensor.dims() != var.dims() {
            if options
                .reinitialise
                .iter()
                .any(|p| name.starts_with(p.as_str()))
            {
                report.reinitialised.push(Reinitialised {
                    name,
                    model: var.dims().to_vec(),
                    file: tensor.dims().to_vec(),
                });
                continue;
            }
            return Err(WeightsError::ShapeMismatch {
                path: path.to_path_buf(),
                name,
                file_name,
                model: var.dims().to_vec(),
                file: tensor.dims().to_vec(),
            });
        }
        copies.push((name, var, *tensor));
    }
    report.unexpected = checkpoint
        .tensors
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !is_counter(n) && !used.contains(n.as_str()))
        .cloned()
        .collect();
    report.unexpected.sort();
    Ok(LoadPlan { report, copies })
}

/// Loads a file written by [`save`] back into a store built the same way: strict, every var must match.
pub fn load(store: &ParamStore, path: impl AsRef<Path>) -> Result<LoadReport, WeightsError> {
    load_into(store, path, &LoadOptions::new().strict())
}

/// Writes every var of `store` (parameters and buffers such as BatchNorm running statistics) to `path` as
/// safetensors, atomically: see [`save_tensors`].
pub fn save(store: &ParamStore, path: impl AsRef<Path>) -> Result<(), WeightsError> {
    let tensors: Vec<(String, Tensor)> = store
        .all()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    save_tensors(&tensors, path)
}

/// Writes named tensors to `path` as safetensors through a temporary file in the same directory, which is
/// flushed to disk and then renamed over `path`: readers see the old file or the new one, never a part.
pub fn save_tensors(
    tensors: &[(String, Tensor)],
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| WeightsError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let mut map = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .to_device(&Device::Cpu)
            .map_err(|e| WeightsError::candle(path, e))?;
        map.insert(name.clone(), t);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.{}-{nanos}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        candle_core::safetensors::save(&map, &tmp).map_err(|e| WeightsError::candle(path, e))?;
        let f = File::options()
            .append(true)
            .open(&tmp)
            .map_err(|e| WeightsError::io(&tmp, e))?;
        f.sync_all().map_err(|e| WeightsError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| WeightsError::io(path, e))?;
        // Make the rename itself durable; not every platform can sync a directory, which is harmless.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Converts any supported weights file to safetensors (the conversion `cargo xtask weights` performs);
/// returns the number of tensors written. `num_batches_tracked` counters are kept, as in the original.
pub fn convert_to_safetensors(
    input: impl AsRef<Path>,
    key: Option<&str>,
    output: impl AsRef<Path>,
) -> Result<usize, WeightsError> {
    let checkpoint = read_checkpoint(input, key)?;
    save_tensors(&checkpoint.tensors, output)?;
    Ok(checkpoint.tensors.len())
}
