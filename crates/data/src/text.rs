//! Small helpers for the plain-text index files of CUB and FGVC-Aircraft: reading their lines, splitting
//! fields, and refusing what an index must not hold (an empty file, an id given twice).

use std::collections::HashMap;
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

/// [`read_lines`], refusing a file with no line at all: an index that lists nothing is broken, not empty.
pub(crate) fn read_nonempty_lines(
    root: &Path,
    path: &Path,
    dataset: &'static str,
    hint: &str,
) -> Result<Vec<Line>> {
    let lines = read_lines(root, path, dataset, hint)?;
    if lines.is_empty() {
        return Err(DataError::parse(
            path,
            0,
            format!("the file lists nothing; a complete {dataset} index is needed. {hint}"),
        ));
    }
    Ok(lines)
}

/// The values of one index file keyed by id, each with the line that gave it: a second line for the same id
/// is an error naming both lines, whether or not it agrees with the first.
pub(crate) struct Keyed<T> {
    path: PathBuf,
    what: &'static str,
    map: HashMap<String, (T, usize)>,
}

impl<T> Keyed<T> {
    /// An empty index of `path`, whose keys are called `what` in messages (`image id`).
    pub fn new(path: &Path, what: &'static str) -> Self {
        Keyed {
            path: path.to_path_buf(),
            what,
            map: HashMap::new(),
        }
    }

    /// Records `value` for `id` from line `line`.
    pub fn insert(&mut self, id: String, value: T, line: usize) -> Result<()> {
        if let Some((_, first)) = self.map.get(&id) {
            return Err(DataError::parse(
                &self.path,
                line,
                format!(
                    "{} {id} appears a second time (first on line {first}); each may appear once",
                    self.what
                ),
            ));
        }
        self.map.insert(id, (value, line));
        Ok(())
    }

    /// The value of `id`, if listed.
    pub fn get(&self, id: &str) -> Option<&T> {
        self.map.get(id).map(|(v, _)| v)
    }

    /// Whether `id` is listed.
    pub fn contains(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    /// An error for the first id (in line order) that `other` lists too, naming both files and lines.
    pub fn disjoint_from<U>(&self, other: &Keyed<U>) -> Result<()> {
        let shared = self
            .map
            .iter()
            .filter_map(|(id, (_, line))| other.map.get(id).map(|(_, o)| (id, *line, *o)))
            .min_by_key(|s| s.1);
        match shared {
            Some((id, line, other_line)) => Err(DataError::parse(
                &self.path,
                line,
                format!(
                    "{} {id} is also listed in {} (line {other_line}); the two lists must not share one",
                    self.what,
                    other.path.display()
                ),
            )),
            None => Ok(()),
        }
    }

    /// An error for the first id (in line order) that `known` does not contain, naming this file, its line
    /// and `other`, the file that should list it.
    pub fn all_in(&self, known: impl Fn(&str) -> bool, other: &Path) -> Result<()> {
        let mut stray: Vec<(&String, usize)> = self
            .map
            .iter()
            .filter(|(id, _)| !known(id))
            .map(|(id, (_, line))| (id, *line))
            .collect();
        stray.sort_by_key(|s| s.1);
        match stray.first() {
            Some((id, line)) => Err(DataError::parse(
                &self.path,
                *line,
                format!(
                    "{} {id} is not listed in {}{}",
                    self.what,
                    other.display(),
                    if stray.len() > 1 {
                        format!(" ({} such lines)", stray.len())
                    } else {
                        String::new()
                    }
                ),
            )),
            None => Ok(()),
        }
    }
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
