//! The one directory walker of fgvc, for folder datasets and `predict` on a folder: it follows symbolic links
//! but enters no directory twice (tracked by device and inode; by canonical path off Unix) and yields no file
//! twice (by the same identity), so a link cycle cannot make it loop and a linked or hard-linked copy of an
//! image is seen once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// What makes two paths the same file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Identity {
    /// Device and inode (Unix).
    #[cfg_attr(not(unix), allow(dead_code))]
    Inode(u64, u64),
    /// The canonical path (elsewhere), or the path itself for an entry that cannot be resolved (a dangling
    /// link), which is then never taken for another.
    Path(PathBuf),
}

fn identity(path: &Path) -> Identity {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(path) {
            return Identity::Inode(m.dev(), m.ino());
        }
    }
    Identity::Path(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// A walk over one or more directory trees, remembering every directory entered and every file yielded.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # std::fs::write(dir.path().join("a.jpg"), b"")?;
/// # #[cfg(unix)] std::os::unix::fs::symlink(dir.path(), dir.path().join("loop"))?;
/// use fgvc_data::walk::Walker;
/// let mut walker = Walker::new();
/// // `loop` links back to the directory itself: it is not entered again.
/// let files = walker.files(dir.path(), None, |_| true)?;
/// assert_eq!(files, vec![dir.path().join("a.jpg")]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Walker {
    dirs: HashSet<Identity>,
    files: HashMap<Identity, PathBuf>,
    duplicates: Vec<(PathBuf, PathBuf)>,
}

impl Walker {
    /// A walker that has seen nothing yet.
    pub fn new() -> Self {
        Walker::default()
    }

    /// The files under `dir` that `keep` accepts and that this walker has not yielded before, in name
    /// order, depth first (a sub-directory's files come where its name sorts). `depth` limits how far it
    /// descends: `Some(0)` lists `dir`'s own files only, `None` has no limit. A directory this walker has
    /// entered before (a link cycle, or a second link to the same folder) is skipped; so is a file it has
    /// yielded before, which [`Walker::duplicates`] then records. Anything that is not a directory (a file,
    /// a dangling link) is offered to `keep`.
    pub fn files(
        &mut self,
        dir: &Path,
        depth: Option<usize>,
        keep: impl Fn(&Path) -> bool,
    ) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        self.walk(dir, depth, &keep, &mut out)?;
        Ok(out)
    }

    fn walk(
        &mut self,
        dir: &Path,
        depth: Option<usize>,
        keep: &dyn Fn(&Path) -> bool,
        out: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if !self.dirs.insert(identity(dir)) {
            tracing::debug!("{} was entered before; not again", dir.display());
            return Ok(());
        }
        for entry in sorted_entries(dir)? {
            if entry.is_dir() {
                match depth {
                    Some(0) => {}
                    d => self.walk(&entry, d.map(|d| d - 1), keep, out)?,
                }
            } else if keep(&entry) && self.add_file(&entry) {
                out.push(entry);
            }
        }
        Ok(())
    }

    /// Records `path` as yielded: `false` (and an entry in [`Walker::duplicates`]) when the walker has
    /// yielded the same file before, under this or another path.
    pub fn add_file(&mut self, path: &Path) -> bool {
        match self.files.entry(identity(path)) {
            std::collections::hash_map::Entry::Occupied(first) => {
                self.duplicates
                    .push((path.to_path_buf(), first.get().clone()));
                false
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(path.to_path_buf());
                true
            }
        }
    }

    /// The files skipped as the same file as one yielded before: `(skipped path, first path)`, in the order
    /// they were met.
    pub fn duplicates(&self) -> &[(PathBuf, PathBuf)] {
        &self.duplicates
    }
}

/// The entries of `dir`, sorted by name.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<_>>()?;
    out.sort();
    Ok(out)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn cycles_and_linked_copies_are_visited_once_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        for f in ["a.jpg", "b/x.jpg", "b/c/y.jpg", "z.txt"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        symlink(root, root.join("b/c/up")).unwrap(); // a cycle through the parent
        symlink(root.join("b"), root.join("b2")).unwrap(); // a second way into b
        symlink(root.join("a.jpg"), root.join("b/c/same.jpg")).unwrap(); // a linked copy
        std::fs::hard_link(root.join("b/x.jpg"), root.join("hard.jpg")).unwrap();
        symlink(root.join("gone.jpg"), root.join("dangling.jpg")).unwrap();

        let mut walker = Walker::new();
        let files = walker
            .files(root, None, |p| p.extension().is_some_and(|e| e == "jpg"))
            .unwrap();
        assert_eq!(
            files,
            vec![
                root.join("a.jpg"),
                root.join("b/c/y.jpg"),
                root.join("b/x.jpg"),
                root.join("dangling.jpg"),
            ]
        );
        assert_eq!(
            walker.duplicates(),
            &[
                (root.join("b/c/same.jpg"), root.join("a.jpg")),
                (root.join("hard.jpg"), root.join("b/x.jpg")),
            ]
        );
        // The same walker yields nothing new a second time; a fresh one with depth 0 only the top files.
        assert!(walker.files(root, None, |_| true).unwrap().is_empty());
        let top = Walker::new().files(root, Some(0), |_| true).unwrap();
        assert_eq!(top.len(), 4, "{top:?}"); // a.jpg, dangling.jpg, hard.jpg, z.txt
    }
}
