//! Safe extraction of `.tgz` / `.tar.gz` archives.
//!
//! Every entry is checked before anything is written: absolute paths, `..` components, links pointing
//! outside the target, and device or FIFO entries are refused. The archive is extracted into a temporary
//! directory next to the target and its top-level entries are renamed into place only once everything has
//! been unpacked, so a failure (a refused entry, a corrupt archive, a full disk) leaves nothing behind.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use tar::{Archive, EntryType};

/// `path` as a plain relative path, or an error when it is absolute or climbs out with `..`.
fn contained(path: &Path, entry: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                bail!(
                    "refusing archive entry `{}`: it escapes the target directory",
                    entry.display()
                )
            }
        }
    }
    Ok(out)
}

/// Whether a symlink at `entry` pointing to `target` stays inside the extraction root (lexically).
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(parent) = entry.parent() {
        for c in parent.components() {
            if let Component::Normal(p) = c {
                depth.push(p);
            }
        }
    }
    for c in target.components() {
        match c {
            Component::Normal(p) => depth.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Extracts `archive` into `dest` (created if needed) and returns the top-level names it placed there.
/// An existing top-level file of the same name is replaced; an existing directory is an error (remove it
/// first, or skip extraction when it is already complete).
pub fn extract_tar_gz(archive: &Path, dest: &Path) -> Result<Vec<OsString>> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let file_name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.join(format!(".extract-{file_name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)
            .with_context(|| format!("removing the leftover {}", tmp.display()))?;
    }
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = unpack(archive, &tmp).and_then(|tops| {
        for top in &tops {
            let to = dest.join(top);
            if to.is_dir() && !to.is_symlink() {
                bail!(
                    "{} already exists; remove it to extract {} again",
                    to.display(),
                    archive.display()
                );
            }
            if to.exists() || to.is_symlink() {
                fs::remove_file(&to).with_context(|| format!("replacing {}", to.display()))?;
            }
            fs::rename(tmp.join(top), &to)
                .with_context(|| format!("moving {} into place", to.display()))?;
        }
        Ok(tops)
    });
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn unpack(archive: &Path, into: &Path) -> Result<Vec<OsString>> {
    let file = File::open(archive).with_context(|| format!("{}", archive.display()))?;
    let mut tar = Archive::new(GzDecoder::new(BufReader::new(file)));
    tar.set_preserve_permissions(false);
    let mut tops = BTreeSet::new();
    let entries = tar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{}: corrupt archive", archive.display()))?;
        let raw = entry
            .path()
            .with_context(|| format!("{}: bad entry name", archive.display()))?
            .into_owned();
        let rel = contained(&raw, &raw)?;
        let Some(Component::Normal(top)) = rel.components().next() else {
            continue; // the archive root itself (`./`)
        };
        match entry.header().entry_type() {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::GNUSparse => {}
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&rel, &target) {
                    bail!(
                        "refusing archive entry `{}`: a symlink to `{}` outside the target directory",
                        raw.display(),
                        target.display()
                    );
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                contained(&target, &raw)?;
            }
            other => bail!(
                "refusing archive entry `{}` of type {other:?}",
                raw.display()
            ),
        }
        tops.insert(top.to_os_string());
        let unpacked = entry
            .unpack_in(into)
            .with_context(|| format!("{}: extracting `{}`", archive.display(), raw.display()))?;
        if !unpacked {
            bail!(
                "refusing archive entry `{}`: it escapes the target directory",
                raw.display()
            );
        }
    }
    if tops.is_empty() {
        bail!("{}: the archive is empty", archive.display());
    }
    Ok(tops.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_links_are_checked_lexically() {
        let e = Path::new("e");
        assert_eq!(
            contained(Path::new("./a/b"), e).unwrap(),
            PathBuf::from("a/b")
        );
        assert!(contained(Path::new("a/../../b"), e).is_err());
        assert!(contained(Path::new("/etc/passwd"), e).is_err());
        assert!(link_stays_inside(Path::new("a/b/link"), Path::new("../c")));
        assert!(link_stays_inside(Path::new("a/link"), Path::new("../c")));
        assert!(!link_stays_inside(
            Path::new("a/link"),
            Path::new("../../c")
        ));
        assert!(!link_stays_inside(Path::new("link"), Path::new("/etc")));
    }
}
