//! The PyTorch side of `--vs-pytorch`: whether a Python with torch is there, and `ops_torch.py` after the
//! criterion `ops` suite.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::BenchArgs;

/// The PyTorch script of the `ops` suite.
pub(super) const OPS_TORCH: &str = "crates/ops/benches/ops_torch.py";

/// Whether the PyTorch side can run.
#[derive(Debug, Clone, PartialEq)]
pub enum PyTorch {
    /// Not asked for.
    Off,
    /// `python` imports torch `version`.
    Available {
        /// The interpreter.
        python: PathBuf,
        /// `torch.__version__`.
        version: String,
    },
    /// Asked for but not usable; the message says why and that only ours runs.
    Unavailable(String),
}

/// `torch.__version__` as `python` reports it, or why it cannot.
pub fn detect_torch(python: &Path) -> std::result::Result<String, String> {
    match Command::new(python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .stdin(Stdio::null())
        .output()
    {
        Err(e) => Err(format!("could not run {}: {e}", python.display())),
        Ok(out) if !out.status.success() => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").trim().to_string();
            Err(format!(
                "`{} -c \"import torch\"` failed ({}){}",
                python.display(),
                out.status,
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ))
        }
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
    }
}

/// The PyTorch side `args` asks for, checked.
pub fn resolve_pytorch(args: &BenchArgs) -> PyTorch {
    if !args.wants_pytorch() {
        return PyTorch::Off;
    }
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| PathBuf::from("python3"));
    match detect_torch(&python) {
        Ok(version) => PyTorch::Available { python, version },
        Err(why) => PyTorch::Unavailable(format!(
            "--vs-pytorch: no PyTorch to compare with ({why}); printing ours only"
        )),
    }
}

/// `ops_torch.py` after criterion's `ops`, its output as it prints it.
pub(super) fn run_ops_torch(args: &BenchArgs, torch: &PyTorch) -> Result<()> {
    let PyTorch::Available { python, .. } = torch else {
        return Ok(());
    };
    let script = xtask::workspace_root().join(OPS_TORCH);
    if !script.exists() {
        eprintln!("--vs-pytorch: {OPS_TORCH} not found; no PyTorch numbers for ops");
        return Ok(());
    }
    println!("\nPyTorch on the same shapes ({OPS_TORCH}; it sets 2 threads itself):");
    let status = Command::new(python)
        .arg(&script)
        .env("OMP_NUM_THREADS", args.threads().to_string())
        .status()
        .with_context(|| format!("could not run {}", python.display()))?;
    if !status.success() {
        eprintln!("{OPS_TORCH} failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::bench::args::parse;
    use crate::bench::Suite;

    #[test]
    fn missing_python_means_ours_only_with_a_message() {
        let args = parse(&[
            "methods",
            "--python",
            "/nonexistent/python3",
            "--workload",
            "pmg",
        ]);
        assert!(args.wants_pytorch(), "--python implies --vs-pytorch");
        assert_eq!(args.suite, Suite::Methods);
        assert_eq!(args.workload, ["pmg"]);
        assert!(detect_torch(Path::new("/nonexistent/python3")).is_err());
        match resolve_pytorch(&args) {
            PyTorch::Unavailable(msg) => {
                assert!(msg.contains("/nonexistent/python3"), "{msg}");
                assert!(msg.contains("ours only"), "{msg}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // An interpreter that runs but cannot import torch (`false` exits 1 whatever its arguments).
        if Path::new("/bin/false").exists() {
            assert!(detect_torch(Path::new("/bin/false")).is_err());
        }
        assert_eq!(resolve_pytorch(&parse(&["methods"])), PyTorch::Off);
    }
}
