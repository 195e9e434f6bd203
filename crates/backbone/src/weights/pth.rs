//! PyTorch checkpoints: the zip format (`torch.save` since 1.6) and the legacy stream format.
//!
//! Zip: `<archive>/data.pkl` is the pickled object, whose storages are persistent ids
//! `('storage', torch.FloatStorage, key, location, numel)` read from the uncompressed entries
//! `<archive>/data/<key>`.
//!
//! Legacy: five pickles in a row (magic number `0x1950a86a20f9469cfc6c`, protocol version 1001, `sys_info`,
//! the object with persistent ids `('storage', type, key, location, numel, view_metadata)`, the list of
//! storage keys), then for each key a little-endian `u64` element count and the raw elements.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::pickle::{self, PickleError, StorageKind, StorageRef, TensorRef, Value};
use super::{Checkpoint, Format, WeightsError, STATE_DICT_KEYS};

/// The legacy magic number as the LONG1 bytes pickle writes (little-endian).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL: i64 = 1001;

fn corrupt(path: &Path, format: Format, detail: impl Into<String>) -> WeightsError {
    WeightsError::Corrupt {
        path: path.to_path_buf(),
        format,
        detail: detail.into(),
    }
}

fn pickle_error(path: &Path, format: Format, e: PickleError) -> WeightsError {
    match e {
        PickleError::Corrupt(detail) => corrupt(path, format, detail),
        PickleError::Forbidden(global) => WeightsError::ForbiddenGlobal {
            path: path.to_path_buf(),
            global,
        },
        PickleError::Unsupported(detail) => WeightsError::Unsupported {
            path: path.to_path_buf(),
            detail,
        },
    }
}

/// Storage keys seen in persistent ids, with their element type and element count.
type StorageTable = HashMap<String, (StorageKind, usize)>;

fn record_storage(table: &mut StorageTable, pid: Value) -> Result<Value, PickleError> {
    let (storage, numel) = pickle::storage_from_pid(pid)?;
    match table.get(&storage.key) {
        Some(&(kind, n)) if kind != storage.kind || n != numel => {
            return Err(PickleError::Corrupt(format!(
                "storage `{}` declared twice with different types",
                storage.key
            )))
        }
        _ => {
            table.insert(storage.key.clone(), (storage.kind, numel));
        }
    }
    Ok(Value::Storage(storage))
}

/// Reads a PyTorch checkpoint in either format.
pub(crate) fn read(
    path: &Path,
    format: Format,
    key: Option<&str>,
) -> Result<Checkpoint, WeightsError> {
    let file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| WeightsError::io(path, e))?
        .len();
    let mut reader = BufReader::new(file);
    let mut storages = StorageTable::new();
    match format {
        Format::PthZip => {
            let mut zip =
                zip::ZipArchive::new(reader).map_err(|e| corrupt(path, format, e.to_string()))?;
            let names: Vec<String> = zip
                .file_names()
                .map(|n| n.map(|n| n.into_owned()))
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt(path, format, e.to_string()))?;
            let pkl = names
                .iter()
                .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
                .ok_or_else(|| {
                    corrupt(
                        path,
                        format,
                        "zip archive without a data.pkl (not a torch.save file)",
                    )
                })?;
            let prefix = pkl
                .strip_suffix("data.pkl")
                .expect("checked suffix")
                .to_string();
            if let Ok(mut entry) = zip.by_name(&format!("{prefix}byteorder")) {
                let mut order = String::new();
                entry
                    .read_to_string(&mut order)
                    .map_err(|e| corrupt(path, format, e.to_string()))?;
                if order.trim() != "little" {
                    return Err(WeightsError::Unsupported {
                        path: path.to_path_buf(),
                        detail: format!(
                            "byte order `{}` (only little-endian checkpoints)",
                            order.trim()
                        ),
                    });
                }
            }
            let mut pickled = Vec::new();
            zip.by_name(pkl)
                .and_then(|mut e| e.read_to_end(&mut pickled).map_err(Into::into))
                .map_err(|e| corrupt(path, format, format!("reading {pkl}: {e}")))?;
            let root = pickle::load(&mut pickled.as_slice(), &mut |pid| {
                record_storage(&mut storages, pid)
            })
            .map_err(|e| pickle_error(path, format, e))?;
            let (key, entries) = select_state_dict(path, root, key)?;
            let mut data: HashMap<String, Vec<u8>> = HashMap::new();
            let mut tensors = Vec::with_capacity(entries.len());
            for (name, t) in entries {
                if !data.contains_key(&t.storage.key) {
                    let entry_name = format!("{prefix}data/{}", t.storage.key);
                    let mut bytes = Vec::new();
                    zip.by_name(&entry_name)
                        .and_then(|mut e| e.read_to_end(&mut bytes).map_err(Into::into))
                        .map_err(|e| corrupt(path, format, format!("reading {entry_name}: {e}")))?;
                    data.insert(t.storage.key.clone(), bytes);
                }
                let tensor =
                    materialize(path, format, &name, &t, &data[&t.storage.key], &storages)?;
                tensors.push((name, tensor));
            }
            Ok(Checkpoint {
                format,
                key,
                tensors,
            })
        }
        Format::PthLegacy => {
            let load = |r: &mut BufReader<File>, what: &str, storages: &mut StorageTable| {
                pickle::load(r, &mut |pid| record_storage(storages, pid)).map_err(|e| match e {
                    PickleError::Corrupt(d) => corrupt(path, format, format!("{what}: {d}")),
                    other => pickle_error(path, format, other),
                })
            };
            match load(&mut reader, "magic number", &mut storages)? {
                Value::BigInt(b) if b == LEGACY_MAGIC => {}
                _ => return Err(corrupt(path, format, "wrong magic number")),
            }
            match load(&mut reader, "protocol version", &mut storages)? {
                Value::Int(LEGACY_PROTOCOL) => {}
                Value::Int(v) => {
                    return Err(WeightsError::Unsupported {
                        path: path.to_path_buf(),
                        detail: format!("legacy protocol version {v} (expected {LEGACY_PROTOCOL})"),
                    })
                }
                other => {
                    return Err(corrupt(
                        path,
                        format,
                        format!("protocol version is a {}", other.kind()),
                    ))
                }
            }
            if let Value::Dict(info) = load(&mut reader, "sys_info", &mut storages)? {
                let big_endian = info.borrow().iter().any(|(k, v)| {
                    k.as_str() == Some("little_endian") && matches!(v, Value::Bool(false))
                });
                if big_endian {
                    return Err(WeightsError::Unsupported {
                        path: path.to_path_buf(),
                        detail: "a checkpoint written on a big-endian machine".into(),
                    });
                }
            }
            let root = load(&mut reader, "object", &mut storages)?;
            let keys = match load(&mut reader, "storage keys", &mut storages)? {
                Value::List(l) => l
                    .borrow()
                    .iter()
                    .map(|k| k.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| corrupt(path, format, "storage key that is not a string"))?,
                other => {
                    return Err(corrupt(
                        path,
                        format,
                        format!("storage keys are a {}", other.kind()),
                    ))
                }
            };
            let (key, entries) = select_state_dict(path, root, key)?;
            let needed: std::collections::HashSet<&str> = entries
                .iter()
                .map(|(_, t)| t.storage.key.as_str())
                .collect();
            let mut data: HashMap<String, Vec<u8>> = HashMap::new();
            for k in &keys {
                let &(kind, declared) = storages.get(k).ok_or_else(|| {
                    corrupt(
                        path,
                        format,
                        format!("storage `{k}` listed but never referenced"),
                    )
                })?;
                let mut count = [0u8; 8];
                reader.read_exact(&mut count).map_err(|_| {
                    corrupt(path, format, format!("file ends before storage `{k}`"))
                })?;
                let numel = u64::from_le_bytes(count);
                if numel != declared as u64 {
                    return Err(corrupt(
                        path,
                        format,
                        format!("storage `{k}` holds {numel} elements, the pickle says {declared}"),
                    ));
                }
                let nbytes = numel.saturating_mul(kind.element_size() as u64);
                let pos = reader
                    .stream_position()
                    .map_err(|e| WeightsError::io(path, e))?;
                if pos.saturating_add(nbytes) > file_len {
                    return Err(corrupt(
                        path,
                        format,
                        format!("file ends inside storage `{k}` ({nbytes} bytes from offset {pos}, file is {file_len})"),
                    ));
                }
                if needed.contains(k.as_str()) {
                    let mut bytes = vec![0u8; nbytes as usize];
                    reader
                        .read_exact(&mut bytes)
                        .map_err(|e| WeightsError::io(path, e))?;
                    data.insert(k.clone(), bytes);
                } else {
                    reader
                        .seek(SeekFrom::Current(nbytes as i64))
                        .map_err(|e| WeightsError::io(path, e))?;
                }
            }
            let mut tensors = Vec::with_capacity(entries.len());
            for (name, t) in entries {
                let bytes = data.get(&t.storage.key).ok_or_else(|| {
                    corrupt(path, format, format!("no data for the storage of `{name}`"))
                })?;
                let tensor = materialize(path, format, &name, &t, bytes, &storages)?;
                tensors.push((name, tensor));
            }
            Ok(Checkpoint {
                format,
                key,
                tensors,
            })
        }
        Format::Safetensors => unreachable!("safetensors is read by the caller"),
    }
}

/// `Some(entries)` when `v` is a non-empty dict whose keys are strings and whose values are all tensors.
fn tensor_dict(v: &Value) -> Option<Vec<(String, TensorRef)>> {
    let Value::Dict(d) = v else { return None };
    let d = d.borrow();
    if d.is_empty() {
        return None;
    }
    d.iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.clone(), t.clone())),
            _ => None,
        })
        .collect()
}

/// A one-line summary of a value for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Dict(d) => {
            let d = d.borrow();
            let tensors = d
                .iter()
                .filter(|(_, v)| matches!(v, Value::Tensor(_)))
                .count();
            format!("dict of {} entries, {tensors} tensors", d.len())
        }
        Value::List(l) => format!("list of {}", l.borrow().len()),
        Value::Tuple(t) => format!("tuple of {}", t.len()),
        Value::Int(i) => format!("int {i}"),
        Value::Float(x) => format!("float {x}"),
        Value::Str(s) if s.len() <= 40 => format!("str {s:?}"),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        other => other.kind().to_string(),
    }
}

fn top_level_keys(d: &[(Value, Value)]) -> String {
    let keys: Vec<String> = d
        .iter()
        .take(12)
        .map(|(k, v)| {
            format!(
                "`{}` ({})",
                k.as_str().unwrap_or("<non-string>"),
                describe(v)
            )
        })
        .collect();
    let more = if d.len() > 12 {
        format!(", ... ({} keys)", d.len())
    } else {
        String::new()
    };
    format!("{}{more}", keys.join(", "))
}

/// Finds the state dict: under `key` when given, else the root itself or the one nested dict of tensors.
type Entries = Vec<(String, TensorRef)>;

fn select_state_dict(
    path: &Path,
    root: Value,
    key: Option<&str>,
) -> Result<(Option<String>, Entries), WeightsError> {
    let no_state_dict = |detail: String| WeightsError::NoStateDict {
        path: path.to_path_buf(),
        detail,
    };
    let Value::Dict(d) = &root else {
        return Err(no_state_dict(format!(
            "the checkpoint holds a {}, not a dict",
            describe(&root)
        )));
    };
    let items = d.borrow();
    if let Some(key) = key {
        let Some((_, v)) = items.iter().find(|(k, _)| k.as_str() == Some(key)) else {
            return Err(no_state_dict(format!(
                "no key `{key}`; the top level has {}",
                top_level_keys(&items)
            )));
        };
        return match tensor_dict(v) {
            Some(entries) => Ok((Some(key.to_string()), entries)),
            None => Err(no_state_dict(format!(
                "`{key}` holds a {}, not a dict of tensors",
                describe(v)
            ))),
        };
    }
    if let Some(entries) = tensor_dict(&root) {
        return Ok((None, entries));
    }
    let candidates: Vec<(String, Entries)> = items
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), tensor_dict(v)?)))
        .collect();
    match candidates.len() {
        0 => Err(no_state_dict(format!(
            "neither the top level nor any entry is a dict of tensors; the top level has {}",
            top_level_keys(&items)
        ))),
        1 => {
            let (k, entries) = candidates.into_iter().next().expect("one candidate");
            Ok((Some(k), entries))
        }
        _ => {
            let names: Vec<&str> = candidates.iter().map(|(k, _)| k.as_str()).collect();
            let Some(preferred) = STATE_DICT_KEYS.iter().find(|k| names.contains(k)) else {
                return Err(no_state_dict(format!(
                    "several entries are dicts of tensors ({}); name the one to load",
                    names.join(", ")
                )));
            };
            let (k, entries) = candidates
                .into_iter()
                .find(|(k, _)| k == preferred)
                .expect("present");
            Ok((Some(k), entries))
        }
    }
}

/// Copies a (possibly strided) tensor out of its storage's bytes.
fn materialize(
    path: &Path,
    format: Format,
    name: &str,
    t: &TensorRef,
    bytes: &[u8],
    storages: &StorageTable,
) -> Result<Tensor, WeightsError> {
    let (kind, numel) = storages[&t.storage.key];
    let esize = kind.element_size();
    let StorageRef { view_offset, .. } = t.storage;
    let needed = (numel as u64).saturating_mul(esize as u64);
    if (bytes.len() as u64) < needed {
        return Err(corrupt(
            path,
            format,
            format!(
                "storage of `{name}` has {} bytes, expected {needed}",
                bytes.len()
            ),
        ));
    }
    let dtype = match kind {
        StorageKind::Dtype(d) => d,
        StorageKind::Bool => DType::U8,
        StorageKind::I8 => unreachable!("refused when the pickle was read"),
    };
    let shape = t.size.as_slice();
    let too_big = || {
        corrupt(
            path,
            format,
            format!("`{name}` has an impossible size {shape:?}"),
        )
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(too_big)?;
    if count == 0 {
        return Tensor::zeros(shape, dtype, &Device::Cpu)
            .map_err(|e| WeightsError::candle(path, e));
    }
    // The last element the view touches must lie inside the storage.
    let start = view_offset.checked_add(t.offset).ok_or_else(too_big)?;
    let last = shape
        .iter()
        .zip(&t.stride)
        .try_fold(start, |acc, (s, st)| {
            acc.checked_add((s - 1).checked_mul(*st)?)
        })
        .ok_or_else(too_big)?;
    if last >= numel {
        return Err(corrupt(
            path,
            format,
            format!("`{name}` reaches element {last} of a storage of {numel} elements"),
        ));
    }
    if count > numel {
        return Err(WeightsError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("`{name}` views {count} elements of a storage of {numel} (a broadcast or overlapping tensor)"),
        });
    }
    let base = view_offset + t.offset;
    let mut contiguous = true;
    let mut expected = 1;
    for (s, st) in t.size.iter().zip(&t.stride).rev() {
        if *s != 1 && *st != expected {
            contiguous = false;
        }
        expected *= s;
    }
    let out: Vec<u8> = if contiguous {
        bytes[base * esize..(base + count) * esize].to_vec()
    } else {
        let mut out = Vec::with_capacity(count * esize);
        let mut index = vec![0usize; shape.len()];
        for _ in 0..count {
            let at = base
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, st)| i * st)
                    .sum::<usize>();
            out.extend_from_slice(&bytes[at * esize..(at + 1) * esize]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    };
    Tensor::from_raw_buffer(&out, dtype, shape, &Device::Cpu)
        .map_err(|e| WeightsError::candle(path, e))
}
