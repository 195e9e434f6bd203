//! The `backbones` and `methods` suites: the example built in release, each workload in its own process
//! (so that each peak-memory figure is its own), optionally followed by the PyTorch script, and the
//! records and table written.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use fgvc_train::device::DeviceChoice;
use serde_json::{Map, Value};
use xtask::download::Downloader;

use super::machine::{aten_capability, onednn_max_isa, Machine};
use super::measurement::{parse_json_line, Measurement, Row, TorchSide};
use super::pytorch::PyTorch;
use super::render::{records_json, render_markdown, RunInfo};
use super::workloads::{backbone_workloads, filter_workloads, method_workloads};
use super::{target_dir, BenchArgs, Suite};
use xtask::cargo;

const DEFAULT_ITERS: usize = 3;

/// The example, package and PyTorch script of an example suite.
fn example_suite(suite: Suite) -> (&'static str, &'static str, &'static str, &'static str) {
    match suite {
        Suite::Backbones => (
            "backbones",
            "fgvc-backbone",
            "bench_backbones",
            "crates/backbone/benches/backbones_torch.py",
        ),
        _ => (
            "methods",
            "fgvc-train",
            "bench_methods",
            "crates/train/benches/methods_torch.py",
        ),
    }
}

/// Builds `example` of `package` in release and returns the executable.
fn build_example(package: &str, example: &str, device: DeviceChoice) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.args([
        "build",
        "--release",
        "-p",
        package,
        "--example",
        example,
        "--message-format=json-render-diagnostics",
    ]);
    if let Some(f) = device.feature() {
        cmd.args(["--features", f]);
    }
    // The example runs right after, so a toolkit installed for it brings its runtime libraries.
    cmd.envs(xtask::device_build_env(device, &Downloader::new(), true)?);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start cargo build for the {example} example"))?;
    if !out.status.success() {
        bail!(
            "building the {example} example failed with {}{}",
            out.status,
            device
                .feature()
                .map(|f| format!(" (--features {f} needs its GPU toolkit)"))
                .unwrap_or_default()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exe = executable_from_cargo_messages(&stdout, example)
        .unwrap_or_else(|| target_dir().join("release/examples").join(example));
    Ok(exe)
}

/// The executable cargo reports for the example `name` in its JSON messages.
pub fn executable_from_cargo_messages(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// Runs `cmd`, its stderr shown as it comes, and parses the JSON line of its stdout.
fn run_json(mut cmd: Command, what: &str) -> std::result::Result<Map<String, Value>, String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} exited with {}", out.status));
    }
    parse_json_line(&String::from_utf8_lossy(&out.stdout)).map_err(|e| format!("{what}: {e:#}"))
}

pub(super) fn run_examples(args: &BenchArgs, suite: Suite, torch: &PyTorch) -> Result<()> {
    let (name, package, example, script) = example_suite(suite);
    let workloads = match suite {
        Suite::Backbones => backbone_workloads(args.size, args.batch),
        _ => method_workloads(args.size, args.batch),
    };
    let all_labels: Vec<String> = workloads.iter().map(|w| w.label.clone()).collect();
    let workloads = filter_workloads(workloads, &args.workload);
    if workloads.is_empty() {
        if args.suite == Suite::All {
            return Ok(());
        }
        bail!(
            "no {name} workload matches {:?}; the workloads are: {}",
            args.workload,
            all_labels.join(", ")
        );
    }
    if !args.criterion_args.is_empty() {
        eprintln!("note: criterion arguments do not apply to the {name} suite (use --workload)");
    }
    let exe = build_example(package, example, args.device)?;
    let iters = args.iters.unwrap_or(DEFAULT_ITERS);
    let threads = args.threads();
    let script_path = xtask::workspace_root().join(script);
    let torch_python = match torch {
        PyTorch::Available { python, .. } if script_path.exists() => Some(python.clone()),
        PyTorch::Available { .. } => {
            eprintln!("--vs-pytorch: {script} not found; printing ours only");
            None
        }
        _ => None,
    };
    let mut rows = Vec::new();
    for w in workloads {
        eprintln!("== {name}: {}", w.label);
        let mut cmd = Command::new(&exe);
        cmd.args(&w.args)
            .arg(iters.to_string())
            .args(["--device", args.device.name()])
            .env("RAYON_NUM_THREADS", threads.to_string());
        if let Some(isa) = args.isa {
            cmd.env(fgvc_ops::ISA_ENV, isa.name());
        }
        cmd.env(fgvc_ops::PRECISION_ENV, args.precision.name());
        let ours = run_json(cmd, example).map(|m| Measurement::from_json(&m));
        let torch_side = match &torch_python {
            None => TorchSide::Off,
            Some(python) => {
                let mut cmd = Command::new(python);
                cmd.arg(&script_path)
                    .args(&w.args)
                    .arg(iters.to_string())
                    .args(["--device", args.device.name()])
                    .args(["--threads", &threads.to_string()])
                    .args(["--precision", args.precision.name()])
                    .env("OMP_NUM_THREADS", threads.to_string())
                    .env("MKL_NUM_THREADS", threads.to_string());
                if let Some(isa) = args.isa {
                    cmd.env("ATEN_CPU_CAPABILITY", aten_capability(isa))
                        .env("ONEDNN_MAX_CPU_ISA", onednn_max_isa(isa));
                }
                match run_json(cmd, script) {
                    Ok(m) => TorchSide::Ran(Measurement::from_json(&m)),
                    Err(e) => TorchSide::Failed(e),
                }
            }
        };
        rows.push(Row {
            workload: w,
            ours,
            torch: torch_side,
        });
    }
    let info = RunInfo {
        suite: name.into(),
        device: args.device.name().into(),
        threads,
        iters,
        machine: Machine::here(args.isa),
        precision: args.precision,
        with_torch: torch_python.is_some(),
        torch_version: match torch {
            PyTorch::Available { version, .. } if torch_python.is_some() => Some(version.clone()),
            _ => None,
        },
    };
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let json_path = out_dir.join(format!("{name}.json"));
    let md_path = out_dir.join(format!("{name}.md"));
    let json_text = serde_json::to_string_pretty(&records_json(&info, &rows))?;
    std::fs::write(&json_path, json_text + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = render_markdown(&info, &rows);
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("\n{md}");
    println!("wrote {} and {}", json_path.display(), md_path.display());
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.ours
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", r.workload.label))
        })
        .collect();
    if !failed.is_empty() {
        bail!("{name} workloads failed:\n{}", failed.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_is_read_from_cargo_messages() {
        let msgs = concat!(
            "{\"reason\":\"compiler-artifact\",\"target\":{\"name\":\"fgvc_train\"},\"executable\":null}\n",
            "{\"reason\":\"compiler-artifact\",\"target\":{\"name\":\"bench_methods\"},",
            "\"executable\":\"/t/release/examples/bench_methods\"}\n",
            "{\"reason\":\"build-finished\",\"success\":true}\n"
        );
        assert_eq!(
            executable_from_cargo_messages(msgs, "bench_methods"),
            Some(PathBuf::from("/t/release/examples/bench_methods"))
        );
        assert_eq!(
            executable_from_cargo_messages(msgs, "bench_backbones"),
            None
        );
    }
}
