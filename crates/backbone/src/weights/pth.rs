//! PyTorch checkpoints: the zip format (`torch.save` since 1.6) and the legacy stream format.
//!
//! Zip: `<archive>/data.pkl` is the pickled object, whose storages are persistent ids
//! `('storage', torch.FloatStorage, key, location, numel)` read from the uncompressed entries
//! `<archive>/data/<key>`.
//!
//! Legacy: five pickles in a row (magic number `0x1950a86a20f9469cfc6c`, protocol version 1001, `sys_info`,
//! the object with persistent ids `('storage', type, key, location, numel, view_metadata)`, the list of
//! storage keys), then for each key a little-endian `u64` element count and the raw elements.
//!
//! Reading is bounded by the file: zip entries may not overlap (no entry is read twice through another
//! name) and none may be larger than the file, every legacy storage must lie inside the file, and the
//! tensors built may together hold at most a small multiple of the file's bytes (see [`super::bounds`]).

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

use super::bounds::{self, Budget, OUTPUT_PER_FILE_BYTE, OUTPUT_SLACK};
use super::pickle::{self, Input, PickleError, Pickled, StorageKind, StorageRef, TensorRef, Value};
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

fn too_large(path: &Path, detail: impl Into<String>) -> WeightsError {
    WeightsError::TooLarge {
        path: path.to_path_buf(),
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
        PickleError::TooLarge(detail) => too_large(path, detail),
    }
}

/// Storage keys seen in persistent ids, with their element type and element count.
type StorageTable = HashMap<Rc<str>, (StorageKind, usize)>;

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

/// The bytes a storage of `numel` elements of `kind` occupies, or an error when that overflows.
fn storage_bytes(
    path: &Path,
    format: Format,
    key: &str,
    kind: StorageKind,
    numel: usize,
) -> Result<u64, WeightsError> {
    (numel as u64)
        .checked_mul(kind.element_size() as u64)
        .ok_or_else(|| {
            corrupt(
                path,
                format,
                format!("storage `{key}` declares an impossible {numel} elements"),
            )
        })
}

/// Reads a PyTorch checkpoint in either format from `reader`, which holds `len` bytes; `path` names the
/// file in errors.
pub(crate) fn read<R: Read + Seek>(
    reader: R,
    len: u64,
    path: &Path,
    format: Format,
    key: Option<&str>,
) -> Result<Checkpoint, WeightsError> {
    let mut output = Budget::new(
        len.saturating_mul(OUTPUT_PER_FILE_BYTE)
            .saturating_add(OUTPUT_SLACK),
    );
    match format {
        Format::PthZip => read_zip(reader, len, path, key, &mut output),
        Format::PthLegacy => read_legacy(reader, len, path, key, &mut output),
        Format::Safetensors => unreachable!("safetensors is read by the caller"),
    }
}

/// The whole of one zip entry, refused before allocating when it claims more bytes than the file has.
fn read_entry<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    len: u64,
    path: &Path,
) -> Result<Vec<u8>, WeightsError> {
    let format = Format::PthZip;
    let mut entry = zip
        .by_name(name)
        .map_err(|e| corrupt(path, format, format!("reading {name}: {e}")))?;
    let size = entry.size();
    if size > len || entry.compressed_size() > len {
        return Err(corrupt(
            path,
            format,
            format!("{name} claims {size} bytes, the file has {len}"),
        ));
    }
    let mut bytes = bounds::try_with_capacity(size as usize).map_err(|e| {
        too_large(
            path,
            format!("cannot allocate {size} bytes for {name}: {e}"),
        )
    })?;
    // One byte more than declared reaches the end of the entry, where its CRC is checked.
    (&mut entry)
        .take(size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(path, format, format!("reading {name}: {e}")))?;
    if bytes.len() as u64 != size {
        return Err(corrupt(
            path,
            format,
            format!("{name} holds {} bytes, its header says {size}", bytes.len()),
        ));
    }
    Ok(bytes)
}

fn read_zip<R: Read + Seek>(
    reader: R,
    len: u64,
    path: &Path,
    key: Option<&str>,
    output: &mut Budget,
) -> Result<Checkpoint, WeightsError> {
    let format = Format::PthZip;
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| corrupt(path, format, e.to_string()))?;
    // Entries sharing bytes let a small file name the same data many times (a zip bomb); torch.save
    // never writes them.
    if zip
        .has_overlapping_entries()
        .map_err(|e| corrupt(path, format, e.to_string()))?
    {
        return Err(corrupt(
            path,
            format,
            "zip entries overlap each other or the central directory (torch.save never writes that)",
        ));
    }
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
    let byteorder = format!("{prefix}byteorder");
    if names.contains(&byteorder) {
        let order = read_entry(&mut zip, &byteorder, len.min(64), path)?;
        let order = String::from_utf8_lossy(&order);
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
    let pickled = read_entry(&mut zip, pkl, len, path)?;
    let mut storages = StorageTable::new();
    let mut input = Input::new(pickled.as_slice(), pickled.len() as u64);
    let root = pickle::load(&mut input, &mut |pid| record_storage(&mut storages, pid))
        .map_err(|e| pickle_error(path, format, e))?;
    let (key, entries) = select_state_dict(path, &root.root, key)?;
    drop(root);
    let mut data: HashMap<Rc<str>, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        if !data.contains_key(&t.storage.key) {
            let k = &t.storage.key;
            let (kind, numel) = storages[k];
            let needed = storage_bytes(path, format, k, kind, numel)?;
            let entry_name = format!("{prefix}data/{k}");
            let size = zip
                .by_name(&entry_name)
                .map(|e| e.size())
                .map_err(|e| corrupt(path, format, format!("reading {entry_name}: {e}")))?;
            if size < needed {
                return Err(corrupt(
                    path,
                    format,
                    format!("storage `{k}` needs {needed} bytes, {entry_name} holds {size}"),
                ));
            }
            let bytes = read_entry(&mut zip, &entry_name, len, path)?;
            data.insert(k.clone(), bytes);
        }
        let tensor = materialize(
            path,
            format,
            &name,
            &t,
            &data[&t.storage.key],
            &storages,
            output,
        )?;
        tensors.push((name, tensor));
    }
    Ok(Checkpoint {
        format,
        key,
        tensors,
    })
}

fn read_legacy<R: Read + Seek>(
    mut reader: R,
    len: u64,
    path: &Path,
    key: Option<&str>,
    output: &mut Budget,
) -> Result<Checkpoint, WeightsError> {
    let format = Format::PthLegacy;
    let mut storages = StorageTable::new();
    let load = |r: &mut R,
                what: &str,
                storages: &mut StorageTable|
     -> Result<Pickled, WeightsError> {
        let pos = r.stream_position().map_err(|e| WeightsError::io(path, e))?;
        let mut input = Input::new(&mut *r, len.saturating_sub(pos));
        pickle::load(&mut input, &mut |pid| record_storage(storages, pid)).map_err(|e| match e {
            PickleError::Corrupt(d) => corrupt(path, format, format!("{what}: {d}")),
            other => pickle_error(path, format, other),
        })
    };
    match &load(&mut reader, "magic number", &mut storages)?.root {
        Value::BigInt(b) if **b == LEGACY_MAGIC => {}
        _ => return Err(corrupt(path, format, "wrong magic number")),
    }
    match &load(&mut reader, "protocol version", &mut storages)?.root {
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
    if let Value::Dict(info) = &load(&mut reader, "sys_info", &mut storages)?.root {
        let big_endian = info
            .borrow()
            .pairs()
            .any(|(k, v)| k.as_str() == Some("little_endian") && matches!(v, Value::Bool(false)));
        if big_endian {
            return Err(WeightsError::Unsupported {
                path: path.to_path_buf(),
                detail: "a checkpoint written on a big-endian machine".into(),
            });
        }
    }
    let root = load(&mut reader, "object", &mut storages)?;
    let keys: Vec<Rc<str>> = match &load(&mut reader, "storage keys", &mut storages)?.root {
        Value::List(l) => l
            .borrow()
            .iter()
            .map(|k| match k {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<Rc<str>>>>()
            .ok_or_else(|| corrupt(path, format, "storage key that is not a string"))?,
        other => {
            return Err(corrupt(
                path,
                format,
                format!("storage keys are a {}", other.kind()),
            ))
        }
    };
    let (key, entries) = select_state_dict(path, &root.root, key)?;
    drop(root);
    let needed: HashSet<&str> = entries.iter().map(|(_, t)| &*t.storage.key).collect();
    let mut data: HashMap<Rc<str>, Vec<u8>> = HashMap::new();
    for k in &keys {
        let &(kind, declared) = storages.get(k).ok_or_else(|| {
            corrupt(
                path,
                format,
                format!("storage `{k}` listed but never referenced"),
            )
        })?;
        let mut count = [0u8; 8];
        reader
            .read_exact(&mut count)
            .map_err(|_| corrupt(path, format, format!("file ends before storage `{k}`")))?;
        let numel = u64::from_le_bytes(count);
        if numel != declared as u64 {
            return Err(corrupt(
                path,
                format,
                format!("storage `{k}` holds {numel} elements, the pickle says {declared}"),
            ));
        }
        let nbytes = storage_bytes(path, format, k, kind, declared)?;
        let pos = reader
            .stream_position()
            .map_err(|e| WeightsError::io(path, e))?;
        if pos.saturating_add(nbytes) > len {
            return Err(corrupt(
                path,
                format,
                format!("file ends inside storage `{k}` ({nbytes} bytes from offset {pos}, file is {len})"),
            ));
        }
        if needed.contains(&**k) && !data.contains_key(k) {
            let mut bytes = bounds::try_with_capacity(nbytes as usize).map_err(|e| {
                too_large(
                    path,
                    format!("cannot allocate {nbytes} bytes for storage `{k}`: {e}"),
                )
            })?;
            (&mut reader)
                .take(nbytes)
                .read_to_end(&mut bytes)
                .map_err(|e| WeightsError::io(path, e))?;
            if bytes.len() as u64 != nbytes {
                return Err(corrupt(
                    path,
                    format,
                    format!("file ends inside storage `{k}`"),
                ));
            }
            data.insert(k.clone(), bytes);
        } else {
            reader
                .seek(SeekFrom::Current(nbytes as i64))
                .map_err(|e| WeightsError::io(path, e))?;
        }
    }
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let bytes = data
            .get(&t.storage.key)
            .ok_or_else(|| corrupt(path, format, format!("no data for the storage of `{name}`")))?;
        let tensor = materialize(path, format, &name, &t, bytes, &storages, output)?;
        tensors.push((name, tensor));
    }
    Ok(Checkpoint {
        format,
        key,
        tensors,
    })
}

/// A state dict's entries: names and the tensors the pickle describes.
type Entries = Vec<(String, Rc<TensorRef>)>;

/// Whether `v` is a non-empty dict whose keys are strings and whose values are all tensors.
fn is_tensor_dict(v: &Value) -> bool {
    let Value::Dict(d) = v else { return false };
    let d = d.borrow();
    !d.is_empty()
        && d.pairs()
            .all(|(k, v)| matches!((k, v), (Value::Str(_), Value::Tensor(_))))
}

/// `Some(entries)` when `v` is a tensor dict (see [`is_tensor_dict`]).
fn tensor_dict(v: &Value) -> Option<Entries> {
    if !is_tensor_dict(v) {
        return None;
    }
    let Value::Dict(d) = v else { return None };
    let d = d.borrow();
    d.pairs()
        .map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.to_string(), t.clone())),
            _ => None,
        })
        .collect()
}

/// At most `max` characters of `s`, with an ellipsis when it was cut.
fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

/// A one-line summary of a value for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Dict(d) => {
            let d = d.borrow();
            let tensors = d
                .pairs()
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

fn top_level_keys(d: &pickle::Dict) -> String {
    let keys: Vec<String> = d
        .pairs()
        .take(12)
        .map(|(k, v)| {
            format!(
                "`{}` ({})",
                clip(k.as_str().unwrap_or("<non-string>"), 60),
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
fn select_state_dict(
    path: &Path,
    root: &Value,
    key: Option<&str>,
) -> Result<(Option<String>, Entries), WeightsError> {
    let no_state_dict = |detail: String| WeightsError::NoStateDict {
        path: path.to_path_buf(),
        detail,
    };
    let Value::Dict(d) = root else {
        return Err(no_state_dict(format!(
            "the checkpoint holds a {}, not a dict",
            describe(root)
        )));
    };
    let items = d.borrow();
    if let Some(key) = key {
        let Some(v) = items.get_str(key) else {
            return Err(no_state_dict(format!(
                "no key `{}`; the top level has {}",
                clip(key, 60),
                top_level_keys(&items)
            )));
        };
        return match tensor_dict(v) {
            Some(entries) => Ok((Some(key.to_string()), entries)),
            None => Err(no_state_dict(format!(
                "`{}` holds a {}, not a dict of tensors",
                clip(key, 60),
                describe(v)
            ))),
        };
    }
    if let Some(entries) = tensor_dict(root) {
        return Ok((None, entries));
    }
    // Each distinct dict is checked once, however many keys the memo makes point at it.
    let mut checked: HashMap<*const (), bool> = HashMap::new();
    let candidates: Vec<(&str, &Value)> = items
        .pairs()
        .filter_map(|(k, v)| {
            let Value::Dict(inner) = v else { return None };
            let is = *checked
                .entry(Rc::as_ptr(inner) as *const ())
                .or_insert_with(|| is_tensor_dict(v));
            Some((k.as_str()?, v)).filter(|_| is)
        })
        .collect();
    let chosen = match candidates.len() {
        0 => {
            return Err(no_state_dict(format!(
                "neither the top level nor any entry is a dict of tensors; the top level has {}",
                top_level_keys(&items)
            )))
        }
        1 => candidates[0],
        _ => {
            let Some(preferred) = STATE_DICT_KEYS
                .iter()
                .find_map(|k| candidates.iter().find(|(name, _)| name == k))
            else {
                let names: Vec<String> = candidates
                    .iter()
                    .take(12)
                    .map(|(k, _)| clip(k, 60))
                    .collect();
                let more = if candidates.len() > 12 { ", ..." } else { "" };
                return Err(no_state_dict(format!(
                    "several entries are dicts of tensors ({}{more}); name the one to load",
                    names.join(", ")
                )));
            };
            *preferred
        }
    };
    let entries = tensor_dict(chosen.1).expect("checked to be a tensor dict");
    Ok((Some(chosen.0.to_string()), entries))
}

/// Copies a (possibly strided) tensor out of its storage's bytes, charging its size to `output`.
fn materialize(
    path: &Path,
    format: Format,
    name: &str,
    t: &TensorRef,
    bytes: &[u8],
    storages: &StorageTable,
    output: &mut Budget,
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
            format!(
                "`{name}` has an impossible size {:?}",
                &shape[..shape.len().min(16)]
            ),
        )
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(too_big)?;
    // Strides of the contiguous layout multiply every dim but zeros: they must fit as well.
    shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s.max(1)))
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
    let out_bytes = count * esize;
    if !output.take(out_bytes as u64) {
        return Err(too_large(
            path,
            format!(
                "`{name}` would bring the tensors read past {OUTPUT_PER_FILE_BYTE} times the file's size: \
                 its tensors view the same storages over and over"
            ),
        ));
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
    let mut out = bounds::try_with_capacity(out_bytes).map_err(|e| {
        too_large(
            path,
            format!("cannot allocate {out_bytes} bytes for `{name}`: {e}"),
        )
    })?;
    if contiguous {
        out.extend_from_slice(&bytes[base * esize..(base + count) * esize]);
    } else {
        // Dims of size 1 never move the index: without them the rank is at most log2(count), so a
        // shape padded with a million ones costs nothing per element.
        let dims: Vec<(usize, usize)> = shape
            .iter()
            .zip(&t.stride)
            .filter(|(s, _)| **s != 1)
            .map(|(s, st)| (*s, *st))
            .collect();
        let mut index = vec![0usize; dims.len()];
        for _ in 0..count {
            let at = base
                + index
                    .iter()
                    .zip(&dims)
                    .map(|(i, (_, st))| i * st)
                    .sum::<usize>();
            out.extend_from_slice(&bytes[at * esize..(at + 1) * esize]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < dims[d].0 {
                    break;
                }
                index[d] = 0;
            }
        }
    }
    Tensor::from_raw_buffer(&out, dtype, shape, &Device::Cpu)
        .map_err(|e| WeightsError::candle(path, e))
}
