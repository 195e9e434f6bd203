//! Unpacking NVIDIA's wheels into one toolkit prefix.
//!
//! A wheel is a zip whose payload sits under `nvidia/<part>/` (`nvidia/cu13/bin/nvcc`,
//! `nvidia/cudnn/lib/libcudnn.so.9`). Those two levels are dropped, so every wheel lands in the same
//! `bin/`, `include/`, `lib/`, `nvvm/` tree that a CUDA install has and that `nvcc.profile` expects.
//! Python metadata (`*.dist-info`) is skipped. Entries that would escape the prefix, symlinks and
//! anything but files and folders are refused before anything is written; executable bits are kept.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where `entry` (a wheel member name) goes under the prefix, or `None` for a member that is not part
/// of the toolkit (metadata, the `nvidia/` folders themselves). A name that is absolute, climbs with
/// `..` or lies outside `nvidia/` is an error.
pub fn destination(entry: &str) -> Result<Option<PathBuf>> {
    let path = Path::new(entry);
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            _ => bail!("refusing wheel entry `{entry}`: it escapes the toolkit folder"),
        }
    }
    match parts.first() {
        None => Ok(None),
        Some(top) if top.to_string_lossy().ends_with(".dist-info") => Ok(None),
        Some(top) if *top == "nvidia" => {
            if parts.len() <= 2 || parts[2] == ".metadata" {
                return Ok(None);
            }
            Ok(Some(parts[2..].iter().collect()))
        }
        Some(_) => bail!("refusing wheel entry `{entry}`: it lies outside nvidia/"),
    }
}

/// Unpacks the toolkit part of `wheel` into `prefix`; returns how many files it wrote.
pub fn unpack_wheel(wheel: &Path, prefix: &Path) -> Result<usize> {
    let file = File::open(wheel).with_context(|| format!("{}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{}: not a readable wheel (zip)", wheel.display()))?;
    // Check every name first, so a hostile member leaves nothing behind.
    let mut plan = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let member = zip
            .by_index_raw(i)
            .with_context(|| format!("{}: corrupt member {i}", wheel.display()))?;
        let name = member
            .name()
            .with_context(|| format!("{}: member {i} has no readable name", wheel.display()))?
            .into_owned();
        let dest = destination(&name).with_context(|| format!("{}", wheel.display()))?;
        if member.is_symlink() {
            bail!("{}: refusing the symlink `{name}`", wheel.display());
        }
        if !(member.is_file() || member.is_dir()) {
            bail!(
                "{}: refusing `{name}`: not a file or folder",
                wheel.display()
            );
        }
        plan.push((i, dest, member.is_dir(), member.unix_mode()));
    }
    let mut written = 0;
    for (i, dest, is_dir, mode) in plan {
        let Some(rel) = dest else { continue };
        let out = prefix.join(rel);
        if is_dir {
            fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut member = zip
            .by_index(i)
            .with_context(|| format!("{}: corrupt member {i}", wheel.display()))?;
        let name = member.name().map(|n| n.into_owned()).unwrap_or_default();
        let mut f = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        io::copy(&mut member, &mut f)
            .with_context(|| format!("{}: extracting `{name}`", wheel.display()))?;
        set_mode(&out, mode)?;
        written += 1;
    }
    Ok(written)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Keep the owner's execute bit (nvcc, ptxas, cicc); nothing setuid or world-writable.
    let exec = mode.is_some_and(|m| m & 0o100 != 0);
    let perms = fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 });
    fs::set_permissions(path, perms).with_context(|| format!("{}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: Option<u32>) -> Result<()> {
    Ok(())
}

/// Adds the link names the linker looks for (`libcublas.so` beside `libcublas.so.13`) in `lib`, for
/// every versioned library that has none. Returns the names it made.
pub fn link_names(lib: &Path) -> Result<Vec<String>> {
    let mut made = Vec::new();
    let Ok(entries) = fs::read_dir(lib) else {
        return Ok(made);
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some((stem, _version)) = name.split_once(".so.") else {
            continue;
        };
        let link = lib.join(format!("{stem}.so"));
        if link.exists() || link.is_symlink() {
            continue;
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(&name, &link)
            .with_context(|| format!("linking {}", link.display()))?;
        #[cfg(not(unix))]
        fs::copy(lib.join(&name), &link).with_context(|| format!("{}", link.display()))?;
        made.push(format!("{stem}.so"));
    }
    made.sort();
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_land_under_the_prefix_without_the_nvidia_folders() {
        let d = |e| destination(e).unwrap();
        assert_eq!(d("nvidia/cu13/bin/nvcc"), Some(PathBuf::from("bin/nvcc")));
        assert_eq!(
            d("nvidia/cudnn/lib/libcudnn.so.9"),
            Some(PathBuf::from("lib/libcudnn.so.9"))
        );
        assert_eq!(d("nvidia/cu13/"), None);
        assert_eq!(d("nvidia/cu13/.metadata/x"), None);
        assert_eq!(d("nvidia_cuda_nvcc-13.0.88.dist-info/RECORD"), None);
        for bad in ["../x", "/etc/passwd", "nvidia/cu13/../../x", "other/file"] {
            assert!(destination(bad).is_err(), "{bad}");
        }
    }
}
