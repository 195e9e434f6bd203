//! Paths and words as `train-cub` resolves and shows them: absolute, normalised, relative to the
//! workspace root where `fgvc train` runs, and quoted for a POSIX shell.

use std::path::{Path, PathBuf};

/// `path` shown relative to `root` when inside it, else as it is.
pub(super) fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `path` made absolute: relative paths are taken from `base`.
pub(super) fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Removes `.` components and folds `..` so that equal locations compare equal.
pub(super) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// A command-line word quoted for a POSIX shell when it needs it.
pub(super) fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("train.epochs=2"), "train.epochs=2");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn normalising_paths() {
        assert_eq!(normalise(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(shown(Path::new("/w"), Path::new("/w/data")), "data");
        assert_eq!(shown(Path::new("/w"), Path::new("/x/data")), "/x/data");
    }
}
