//! The run directory: where a training run writes its resolved configuration, metrics, checkpoints and
//! plots, and the atomic file writes that keep it consistent when a run is killed.
//!
//! ```text
//! <run>/config.toml                 the resolved configuration (defaults, file and --set overrides)
//! <run>/metrics.jsonl, metrics.csv  one record per logged step interval and per evaluation
//! <run>/checkpoint-last.safetensors weights + optimiser state + trainer state (epoch, step, seed)
//! <run>/best.safetensors            the weights selected on the validation split (or test, if asked)
//! <run>/plots/{loss,accuracy,lr}.svg
//! <run>/eval-<split>.json           the final evaluation report
//! <run>/tb/events.out.tfevents.*    TensorBoard event files, one per training process
//! <run>/.lock                       while a process trains there: its pid, host and start time
//! ```
//!
//! A run directory is never mixed or lost: a training process holds its [`lock`], and a fresh run refuses a
//! directory that already holds run files ([`RunDir::run_files`]) unless asked to replace them.

pub mod lock;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
pub use lock::{Holder, RunLock};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, `fsync`, rename over
/// `path`, then `fsync` of the directory. A reader sees either the old or the new file, never a torn one,
/// even if the process is killed (SIGKILL) or the machine loses power mid-write.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| TrainError::Msg(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable. Directories cannot be opened for fsync on every platform.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        TrainError::io(path, e)
    })
}

/// Paths inside one run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root`, without touching the file system.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// The run directory at `root`, created (with `plots/`) if missing.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("plots")).map_err(|e| TrainError::io(&root, e))?;
        Ok(RunDir { root })
    }

    /// An existing run directory; an error naming the directory when it has no checkpoint.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let dir = RunDir { root: root.into() };
        if !dir.last_checkpoint().exists() {
            return Err(TrainError::Msg(format!(
                "{} is not a run directory (no checkpoint-last.safetensors)",
                dir.root.display()
            )));
        }
        Ok(dir)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// `metrics.jsonl`.
    pub fn metrics_jsonl(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `metrics.csv`.
    pub fn metrics_csv(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }

    /// `checkpoint-last.safetensors`.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint-last.safetensors")
    }

    /// `best.safetensors`.
    pub fn best_checkpoint(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }

    /// `plots/<name>.svg`.
    pub fn plot(&self, name: &str) -> PathBuf {
        self.root.join("plots").join(format!("{name}.svg"))
    }

    /// `eval-<split>.json`.
    pub fn eval_report(&self, split: &str) -> PathBuf {
        self.root.join(format!("eval-{split}.json"))
    }

    /// `tb/`, the TensorBoard log directory.
    pub fn tb(&self) -> PathBuf {
        self.root.join("tb")
    }

    /// Locks the directory (created with `plots/` if missing) for this process: see [`RunLock::acquire`].
    pub fn lock(&self) -> Result<RunLock> {
        fs::create_dir_all(self.root.join("plots")).map_err(|e| TrainError::io(&self.root, e))?;
        RunLock::acquire(&self.root)
    }

    /// The files of a run the directory holds, sorted: `config.toml`, the metrics, the checkpoints,
    /// `eval-*.json`, the plots, the TensorBoard event files and temporary files an interrupted atomic write left. Other files (a user's
    /// notes) are not run files.
    pub fn run_files(&self) -> Vec<PathBuf> {
        let fixed = [
            self.config(),
            self.metrics_jsonl(),
            self.metrics_csv(),
            self.last_checkpoint(),
            self.best_checkpoint(),
        ];
        let mut files: Vec<PathBuf> = fixed.into_iter().filter(|p| p.is_file()).collect();
        let matching = |dir: &Path, is_run_file: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
            let Ok(entries) = fs::read_dir(dir) else {
                return Vec::new();
            };
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter(|e| is_run_file(&e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        };
        files.extend(matching(&self.root, &|name| {
            (name.starts_with("eval-") && name.ends_with(".json")) || is_temporary(name)
        }));
        files.extend(matching(&self.root.join("plots"), &|name| {
            name.ends_with(".svg") || is_temporary(name)
        }));
        files.extend(matching(&self.tb(), &|name| {
            name.contains(fgvc_tensorboard::FILE_MARKER)
        }));
        files.sort();
        files
    }

    /// Deletes [`RunDir::run_files`] (`--overwrite`), returning what was deleted.
    pub fn remove_run_files(&self) -> Result<Vec<PathBuf>> {
        let files = self.run_files();
        for f in &files {
            fs::remove_file(f).map_err(|e| TrainError::io(f, e))?;
        }
        Ok(files)
    }
}

/// Whether `name` is a temporary file of [`atomic_write`] (`.NAME.tmp-PID`).
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let missing = dir.path().join("no/such/dir/a.txt");
        let err = atomic_write(&missing, b"x").unwrap_err().to_string();
        assert!(err.contains("no/such/dir/a.txt"), "{err}");
    }

    #[test]
    fn event_files_are_run_files() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("r")).unwrap();
        fs::create_dir(run.tb()).unwrap();
        let event_file = run.tb().join("events.out.tfevents.1700000000.host.1.0");
        fs::write(&event_file, b"").unwrap();
        fs::write(run.tb().join("notes.txt"), b"mine").unwrap();
        assert_eq!(run.run_files(), [event_file]);
        run.remove_run_files().unwrap();
        assert!(run.run_files().is_empty() && run.tb().join("notes.txt").is_file());
    }

    #[test]
    fn run_dir_layout() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("r")).unwrap();
        assert!(run.root().join("plots").is_dir());
        assert!(RunDir::open(run.root()).is_err());
        assert_eq!(run.plot("loss"), run.root().join("plots/loss.svg"));
    }

    #[test]
    fn run_files_are_the_files_a_run_writes() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("r")).unwrap();
        assert!(run.run_files().is_empty());
        for f in [
            "config.toml",
            "best.safetensors",
            "eval-test.json",
            "plots/loss.svg",
            ".metrics.csv.tmp-12",
            "notes.txt",
        ] {
            fs::write(run.root().join(f), f).unwrap();
        }
        let names: Vec<String> = run
            .run_files()
            .iter()
            .map(|p| p.strip_prefix(run.root()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                ".metrics.csv.tmp-12",
                "best.safetensors",
                "config.toml",
                "eval-test.json",
                "plots/loss.svg"
            ]
        );
        assert_eq!(run.remove_run_files().unwrap().len(), 5);
        assert!(run.run_files().is_empty());
        assert_eq!(
            fs::read(run.root().join("notes.txt")).unwrap(),
            b"notes.txt"
        );
    }
}
