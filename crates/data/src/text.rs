//! Small helpers for the plain-text index files of CUB and FGVC-Aircraft.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// One non-empty line of an index file: its 1-based number and its trimmed text.
pub(crate) struct Line {
    pub number: usize,
    pub text: String,
}

/// The non-empty lines of `path`; a missing file is a [`DataError::NotADataset`] with `hint`.
pub(crate) fn read_lines(
    root: &Path,
    path: &Path,
    dataset: &'static str,
    hint: &str,
) -> Result<Vec<Line>> {
    let content = match std::fs::read(path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::NotADataset {
                dataset,
                root: root.to_path_buf(),
                missing: path.strip_prefix(root).unwrap_or(path).to_path_buf(),
                hint: hint.to_string(),
            })
        }
        Err(e) => return Err(DataError::io(path, e)),
    };
    // Tolerate a UTF-8 BOM and Windows line ends; non-UTF-8 bytes are replaced rather than fatal.
    let text = String::from_utf8_lossy(&content);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let t = l.trim();
            (!t.is_empty()).then(|| Line {
                number: i + 1,
                text: t.to_string(),
            })
        })
        .collect())
}

/// Split a line into its first whitespace-separated field and the rest (trimmed), as torchvision's
/// `line.split(" ", 1)`: the rest may itself contain spaces.
pub(crate) fn split_first(line: &Line, path: &Path) -> Result<(String, String)> {
    match line.text.split_once(char::is_whitespace) {
        Some((a, b)) if !b.trim().is_empty() => Ok((a.to_string(), b.trim().to_string())),
        _ => Err(DataError::parse(
            path,
            line.number,
            format!("expected two fields, got {:?}", line.text),
        )),
    }
}

/// Parse all whitespace-separated fields of a line as numbers after the first (the id), expecting `n`.
pub(crate) fn numbers_after_id(line: &Line, path: &Path, n: usize) -> Result<(String, Vec<f64>)> {
    let mut it = line.text.split_whitespace();
    let id = it.next().unwrap_or_default().to_string();
    let nums: Vec<f64> = it
        .map(|f| f.parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            DataError::parse(
                path,
                line.number,
                format!("bad number in {:?}: {e}", line.text),
            )
        })?;
    if nums.len() != n {
        return Err(DataError::parse(
            path,
            line.number,
            format!("expected an id and {n} numbers, got {:?}", line.text),
        ));
    }
    Ok((id, nums))
}

/// The first of `candidates` that exists, if any.
pub(crate) fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.exists()).cloned()
}
