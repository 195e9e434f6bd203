//! `cargo xtask bench [augment|data|ops|backbones|methods|all]`.
//!
//! * `augment`, `data`, `ops`: the packages' criterion benchmarks (`cargo bench`), their output as criterion
//!   prints it; with `--vs-pytorch`, `ops` then runs `crates/ops/benches/ops_torch.py`.
//! * `backbones`, `methods`: per-process example workloads. The example (`fgvc-backbone`'s `bench_backbones`,
//!   `fgvc-train`'s `bench_methods`) is built in release (with `--features cuda|metal` for `--device
//!   cuda|metal`) and each workload runs in its own process, so each peak-memory figure is its own. Each
//!   prints one JSON line; the records go to `<target>/bench/<suite>.json` and a markdown table to
//!   `<target>/bench/<suite>.md`, which is also printed. With `--vs-pytorch` the matching PyTorch script
//!   (`crates/backbone/benches/backbones_torch.py`, `crates/train/benches/methods_torch.py`) runs each
//!   workload right after ours, with the same thread count, and the table gains its columns and the speed
//!   ratio. Without a Python that imports torch, the comparison is skipped with a message.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

/// A benchmark suite.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Suite {
    /// Destructions and transforms (`fgvc-augment`, criterion).
    Augment,
    /// Decode and augmentation throughput of the loader (`fgvc-data`, criterion).
    Data,
    /// Conv, pooling and BatchNorm kernels (`fgvc-ops`, criterion bench `ops`).
    Ops,
    /// Backbone eval forward and train step: images/s and peak memory (`fgvc-backbone`, example
    /// `bench_backbones`, one process per workload).
    Backbones,
    /// One full training step of each method: images/s and peak memory (`fgvc-train`, example
    /// `bench_methods`, one process per workload).
    Methods,
    /// Everything above that exists.
    All,
}

/// Where the example workloads run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, ValueEnum)]
pub enum BenchDevice {
    /// The CPU (no GPU toolkit needed).
    #[default]
    Cpu,
    /// The first CUDA GPU: builds with `--features cuda`; PyTorch uses CUDA when `torch.cuda.is_available()`.
    Cuda,
    /// The Apple GPU: builds with `--features metal`; PyTorch uses MPS when available.
    Metal,
}

impl BenchDevice {
    /// The name the examples and scripts take (`--device`).
    pub fn name(self) -> &'static str {
        match self {
            BenchDevice::Cpu => "cpu",
            BenchDevice::Cuda => "cuda",
            BenchDevice::Metal => "metal",
        }
    }

    /// The cargo feature that enables it.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            BenchDevice::Cpu => None,
            BenchDevice::Cuda => Some("cuda"),
            BenchDevice::Metal => Some("metal"),
        }
    }
}

/// `cargo xtask bench` options.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which benchmark suite to run.
    #[arg(value_enum, default_value_t = Suite::All)]
    pub suite: Suite,
    /// Device of the backbones and methods workloads (criterion suites run on the CPU).
    #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
    pub device: BenchDevice,
    /// Also run the matching PyTorch script per workload (when Python with torch is available) and print
    /// the ratio.
    #[arg(long)]
    pub vs_pytorch: bool,
    /// The Python interpreter for the PyTorch side (default `python3`); implies --vs-pytorch.
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// CPU threads of both sides (RAYON_NUM_THREADS for ours, torch.set_num_threads and OMP_NUM_THREADS for
    /// PyTorch); default: the available cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed iterations per workload, after one warm-up (default: 3).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Run only the workloads whose name contains this text (e.g. `pmg`, `mobilenet_v2`); may repeat.
    #[arg(long)]
    pub workload: Vec<String>,
    /// Input side of every workload instead of its own.
    #[arg(long)]
    pub size: Option<usize>,
    /// Batch size of every workload instead of its own.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Where `<suite>.json` and `<suite>.md` go (default: `<cargo target dir>/bench`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Extra arguments for criterion, e.g. a filter such as `jigsaw`.
    #[arg(last = true)]
    pub criterion_args: Vec<String>,
}

impl BenchArgs {
    fn wants_pytorch(&self) -> bool {
        self.vs_pytorch || self.python.is_some()
    }

    fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// The criterion suites: package, its directory, and the bench target (`None`: all of the package's).
const CRITERION_SUITES: &[(Suite, &str, &str, Option<&str>)] = &[
    (Suite::Augment, "fgvc-augment", "crates/augment", None),
    (Suite::Data, "fgvc-data", "crates/data", None),
    (Suite::Ops, "fgvc-ops", "crates/ops", Some("ops")),
];

/// The PyTorch script of the `ops` suite.
const OPS_TORCH: &str = "crates/ops/benches/ops_torch.py";

const DEFAULT_ITERS: usize = 3;

/// One example workload: its name in tables and filters, the example's positional arguments (the iteration
/// count follows them), and its fields in the JSON records.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// E.g. `pmg resnet50 224 b4`.
    pub label: String,
    /// Positional arguments of the example and of the PyTorch script, before the iteration count.
    pub args: Vec<String>,
    /// `(name, value)` of each workload field (`method`, `backbone`, `size`, `batch`, ...).
    pub fields: Vec<(&'static str, Value)>,
}

/// The backbone workloads: model, input side, batch, mode.
const BACKBONE_WORKLOADS: &[(&str, usize, usize, &str)] = &[
    ("resnet50", 224, 8, "eval"),
    ("resnet50", 224, 8, "train"),
    ("mobilenet_v2", 224, 8, "eval"),
    ("mobilenet_v2", 224, 8, "train"),
    ("resnet50", 448, 2, "eval"),
    ("resnet50", 448, 2, "train"),
];

/// The method workloads: method, backbone, input side, batch. 224 px and batch 4 run on a 2-core CPU in
/// seconds per step; `--size 448 --batch 16` is the official setup.
const METHOD_WORKLOADS: &[(&str, &str, usize, usize)] = &[
    ("baseline", "resnet50", 224, 4),
    ("pmg", "resnet50", 224, 4),
    ("dcl", "resnet50", 224, 4),
    ("coarse2fine", "resnet50", 224, 4),
    ("baseline", "mobilenet_v2", 224, 4),
    ("rmg-pmsi", "mobilenet_v2", 224, 4),
    ("pmg", "mobilenet_v2", 224, 4),
    ("dcl", "mobilenet_v2", 224, 4),
];

/// The workloads of `backbones`, with `size` / `batch` overriding each one's.
pub fn backbone_workloads(size: Option<usize>, batch: Option<usize>) -> Vec<Workload> {
    BACKBONE_WORKLOADS
        .iter()
        .map(|&(model, s, b, mode)| {
            let (s, b) = (size.unwrap_or(s), batch.unwrap_or(b));
            Workload {
                label: format!("{model} {s} b{b} {mode}"),
                args: vec![model.into(), s.to_string(), b.to_string(), mode.into()],
                fields: vec![
                    ("model", json!(model)),
                    ("size", json!(s)),
                    ("batch", json!(b)),
                    ("mode", json!(mode)),
                ],
            }
        })
        .collect()
}

/// The workloads of `methods`, with `size` / `batch` overriding each one's.
pub fn method_workloads(size: Option<usize>, batch: Option<usize>) -> Vec<Workload> {
    METHOD_WORKLOADS
        .iter()
        .map(|&(method, backbone, s, b)| {
            let (s, b) = (size.unwrap_or(s), batch.unwrap_or(b));
            Workload {
                label: format!("{method} {backbone} {s} b{b}"),
                args: vec![method.into(), backbone.into(), s.to_string(), b.to_string()],
                fields: vec![
                    ("method", json!(method)),
                    ("backbone", json!(backbone)),
                    ("size", json!(s)),
                    ("batch", json!(b)),
                ],
            }
        })
        .collect()
}

/// The workloads whose label contains one of `patterns` (case-insensitive); all of them when there is none.
pub fn filter_workloads(workloads: Vec<Workload>, patterns: &[String]) -> Vec<Workload> {
    if patterns.is_empty() {
        return workloads;
    }
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_lowercase()).collect();
    workloads
        .into_iter()
        .filter(|w| {
            let label = w.label.to_lowercase();
            patterns.iter().any(|p| label.contains(p.as_str()))
        })
        .collect()
}

/// The JSON object a benchmark program printed: the last line of `stdout` that is a JSON object.
pub fn parse_json_line(stdout: &str) -> Result<Map<String, Value>> {
    let line = stdout
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the benchmark printed no JSON line")?;
    match serde_json::from_str::<Value>(line)
        .with_context(|| format!("the benchmark's JSON line does not parse: {line}"))?
    {
        Value::Object(map) => Ok(map),
        other => bail!("the benchmark's JSON line is not an object: {other}"),
    }
}

/// What one side measured for a workload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    /// Median seconds per iteration (step).
    pub median_s: Option<f64>,
    /// Images per second (batch / median).
    pub images_per_s: Option<f64>,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Peak device memory, MiB, where the side reports it.
    pub peak_device_mib: Option<f64>,
    /// The device the side actually ran on.
    pub device: Option<String>,
    /// The implementation's version (`candle 0.11.1`, `2.15.0`).
    pub version: Option<String>,
    /// Why the side has no number for this workload (`Coarse2Fine has no public code ...`).
    pub skipped: Option<String>,
}

impl Measurement {
    /// The fields of a benchmark program's JSON line.
    pub fn from_json(map: &Map<String, Value>) -> Self {
        let num = |k: &str| map.get(k).and_then(Value::as_f64);
        let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
        Measurement {
            median_s: num("median_s"),
            images_per_s: num("images_per_s"),
            peak_rss_mib: num("peak_rss_mib"),
            peak_device_mib: num("peak_device_mib"),
            device: text("device"),
            version: text("version"),
            skipped: text("skipped"),
        }
    }
}

/// The PyTorch side of a workload.
#[derive(Debug, Clone, PartialEq)]
pub enum TorchSide {
    /// Not requested, or no Python with torch.
    Off,
    /// Measured (possibly skipped by the script itself, see [`Measurement::skipped`]).
    Ran(Measurement),
    /// The script failed.
    Failed(String),
}

/// One workload's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// Ours, or why it failed.
    pub ours: std::result::Result<Measurement, String>,
    /// PyTorch's.
    pub torch: TorchSide,
}

impl Row {
    /// Ours over PyTorch in images/s (above 1: ours is faster).
    pub fn ratio(&self) -> Option<f64> {
        match (&self.ours, &self.torch) {
            (Ok(o), TorchSide::Ran(t)) => Some(o.images_per_s? / t.images_per_s?),
            _ => None,
        }
    }
}

/// How a suite run was set up, for the records and the table's heading.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// `backbones` or `methods`.
    pub suite: String,
    /// The requested device.
    pub device: String,
    /// CPU threads of both sides.
    pub threads: usize,
    /// Timed iterations.
    pub iters: usize,
    /// Whether the PyTorch columns are shown.
    pub with_torch: bool,
    /// PyTorch's version when it ran.
    pub torch_version: Option<String>,
}

/// The JSON records of a run: one object per workload.
pub fn records_json(info: &RunInfo, rows: &[Row]) -> Value {
    let opt = |x: Option<f64>| x.map_or(Value::Null, |v| json!(v));
    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("suite".into(), json!(info.suite));
            m.insert("workload".into(), json!(r.workload.label));
            for (k, v) in &r.workload.fields {
                m.insert((*k).into(), v.clone());
            }
            let ours = r.ours.as_ref().ok();
            m.insert(
                "device".into(),
                json!(ours
                    .and_then(|o| o.device.clone())
                    .unwrap_or_else(|| info.device.clone())),
            );
            m.insert("threads".into(), json!(info.threads));
            m.insert("iters".into(), json!(info.iters));
            m.insert(
                "ours_version".into(),
                opt_str(ours.and_then(|o| o.version.clone())),
            );
            m.insert("ours_median_s".into(), opt(ours.and_then(|o| o.median_s)));
            m.insert(
                "ours_images_per_s".into(),
                opt(ours.and_then(|o| o.images_per_s)),
            );
            m.insert(
                "ours_peak_mib".into(),
                opt(ours.and_then(|o| o.peak_rss_mib)),
            );
            if let Err(e) = &r.ours {
                m.insert("ours_error".into(), json!(e));
            }
            if info.with_torch {
                let t = match &r.torch {
                    TorchSide::Ran(t) => Some(t),
                    _ => None,
                };
                m.insert(
                    "pytorch_version".into(),
                    opt_str(t.and_then(|t| t.version.clone())),
                );
                m.insert(
                    "pytorch_device".into(),
                    opt_str(t.and_then(|t| t.device.clone())),
                );
                m.insert("pytorch_median_s".into(), opt(t.and_then(|t| t.median_s)));
                m.insert(
                    "pytorch_images_per_s".into(),
                    opt(t.and_then(|t| t.images_per_s)),
                );
                m.insert(
                    "pytorch_peak_mib".into(),
                    opt(t.and_then(|t| t.peak_rss_mib)),
                );
                if let Some(d) = t.and_then(|t| t.peak_device_mib) {
                    m.insert("pytorch_peak_device_mib".into(), json!(d));
                }
                m.insert("ratio".into(), opt(r.ratio()));
                match &r.torch {
                    TorchSide::Ran(Measurement {
                        skipped: Some(s), ..
                    }) => {
                        m.insert("pytorch_skipped".into(), json!(s));
                    }
                    TorchSide::Failed(e) => {
                        m.insert("pytorch_error".into(), json!(e));
                    }
                    _ => {}
                }
            }
            Value::Object(m)
        })
        .collect();
    Value::Array(records)
}

fn opt_str(s: Option<String>) -> Value {
    s.map_or(Value::Null, Value::String)
}

fn cell(x: Option<f64>, decimals: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

/// The markdown table of a run (with the PyTorch columns and the ratio when `info.with_torch`), followed
/// by notes on skipped or failed workloads.
pub fn render_markdown(info: &RunInfo, rows: &[Row]) -> String {
    let per = if info.suite == "methods" {
        "s/step"
    } else {
        "s/iter"
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "`cargo xtask bench {}`: device {}, {} threads, median of {} timed iterations after one warm-up; \
         images/s = batch / median; peak = the process's peak RSS{}.\n",
        info.suite,
        info.device,
        info.threads,
        info.iters,
        info.torch_version
            .as_ref()
            .map(|v| format!("; PyTorch {v}"))
            .unwrap_or_default()
    );
    if info.with_torch {
        let _ = writeln!(
            md,
            "| workload | device | ours {per} | ours img/s | PyTorch {per} | PyTorch img/s | ours / PyTorch \
             (speed) | ours peak MiB | PyTorch peak MiB |"
        );
        md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    } else {
        let _ = writeln!(md, "| workload | device | {per} | images/s | peak MiB |");
        md.push_str("|---|---|---|---|---|\n");
    }
    let mut notes = Vec::new();
    for r in rows {
        let ours = r.ours.as_ref().ok();
        let ours_dev = ours
            .and_then(|o| o.device.clone())
            .unwrap_or_else(|| info.device.clone());
        if let Err(e) = &r.ours {
            notes.push(format!("{}: ours failed: {e}", r.workload.label));
        }
        let ours_cells = [
            cell(ours.and_then(|o| o.median_s), 3),
            cell(ours.and_then(|o| o.images_per_s), 2),
        ];
        let ours_peak = cell(ours.and_then(|o| o.peak_rss_mib), 0);
        if !info.with_torch {
            let _ = writeln!(
                md,
                "| {} | {ours_dev} | {} | {} | {ours_peak} |",
                r.workload.label, ours_cells[0], ours_cells[1]
            );
            continue;
        }
        let t = match &r.torch {
            TorchSide::Ran(t) => Some(t),
            _ => None,
        };
        match &r.torch {
            TorchSide::Ran(Measurement {
                skipped: Some(s), ..
            }) => notes.push(format!("{}: PyTorch skipped: {s}", r.workload.label)),
            TorchSide::Failed(e) => {
                notes.push(format!("{}: PyTorch failed: {e}", r.workload.label))
            }
            _ => {}
        }
        let device = match t.and_then(|t| t.device.clone()) {
            Some(td) if td != ours_dev => format!("{ours_dev} (PyTorch: {td})"),
            _ => ours_dev,
        };
        let _ = writeln!(
            md,
            "| {} | {device} | {} | {} | {} | {} | {} | {ours_peak} | {} |",
            r.workload.label,
            ours_cells[0],
            ours_cells[1],
            cell(t.and_then(|t| t.median_s), 3),
            cell(t.and_then(|t| t.images_per_s), 2),
            r.ratio().map_or("–".into(), |x| format!("{x:.2}x")),
            cell(t.and_then(|t| t.peak_rss_mib), 0),
        );
    }
    if !notes.is_empty() {
        md.push('\n');
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

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

/// The cargo target directory: `CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| xtask::workspace_root().join("target"))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs `cargo xtask bench` as `args` says.
pub fn run(args: &BenchArgs) -> Result<()> {
    let torch = resolve_pytorch(args);
    match &torch {
        PyTorch::Unavailable(msg) => eprintln!("{msg}"),
        PyTorch::Available { python, version } => {
            eprintln!("comparing with PyTorch {version} ({})", python.display())
        }
        PyTorch::Off => {}
    }
    let all = args.suite == Suite::All;
    let mut failures = Vec::new();
    for &(suite, package, dir, target) in CRITERION_SUITES {
        if !(all || args.suite == suite) {
            continue;
        }
        if args.device != BenchDevice::Cpu {
            eprintln!(
                "note: the {package} criterion benchmarks run on the CPU (--device applies to backbones and \
                 methods)"
            );
        }
        if let Some(missing) = criterion_missing(package, dir, target) {
            if all {
                eprintln!("skipping: {missing}");
                continue;
            }
            bail!("{missing}");
        }
        run_criterion(args, package, target)?;
        if suite == Suite::Ops {
            run_ops_torch(args, &torch)?;
        }
    }
    for suite in [Suite::Backbones, Suite::Methods] {
        if all || args.suite == suite {
            if let Err(e) = run_examples(args, suite, &torch) {
                failures.push(format!("{e:#}"));
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// Why a criterion suite cannot run (its bench sources are not there yet), if so.
fn criterion_missing(package: &str, dir: &str, target: Option<&str>) -> Option<String> {
    let root = xtask::workspace_root();
    let missing = match target {
        Some(t) => !root
            .join(dir)
            .join("benches")
            .join(format!("{t}.rs"))
            .exists(),
        None => !root.join(dir).join("benches").is_dir(),
    };
    missing.then(|| {
        let what = target
            .map(|t| format!("bench `{t}` (benches/{t}.rs)"))
            .unwrap_or("benchmarks".into());
        format!("{package} has no {what} yet in {dir}")
    })
}

fn run_criterion(args: &BenchArgs, package: &str, target: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(cargo());
    cmd.args(["bench", "--package", package]);
    if let Some(t) = target {
        cmd.args(["--bench", t]);
    }
    if let Some(n) = args.threads {
        cmd.env("RAYON_NUM_THREADS", n.to_string());
    }
    let status = cmd
        .arg("--")
        .args(&args.criterion_args)
        .status()
        .with_context(|| format!("could not start cargo bench for {package}"))?;
    if !status.success() {
        bail!("cargo bench --package {package} failed with {status}");
    }
    Ok(())
}

/// `ops_torch.py` after criterion's `ops`, its output as it prints it.
fn run_ops_torch(args: &BenchArgs, torch: &PyTorch) -> Result<()> {
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
fn build_example(package: &str, example: &str, device: BenchDevice) -> Result<PathBuf> {
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

fn run_examples(args: &BenchArgs, suite: Suite, torch: &PyTorch) -> Result<()> {
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
                    .env("OMP_NUM_THREADS", threads.to_string())
                    .env("MKL_NUM_THREADS", threads.to_string());
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
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .unwrap()
            .bench
    }

    fn measured(median: f64, batch: f64, peak: f64, device: &str) -> Measurement {
        Measurement {
            median_s: Some(median),
            images_per_s: Some(batch / median),
            peak_rss_mib: Some(peak),
            device: Some(device.into()),
            ..Measurement::default()
        }
    }

    fn info(with_torch: bool) -> RunInfo {
        RunInfo {
            suite: "methods".into(),
            device: "cpu".into(),
            threads: 2,
            iters: 1,
            with_torch,
            torch_version: with_torch.then(|| "2.15.0".to_string()),
        }
    }

    #[test]
    fn json_line_is_the_last_object_among_other_output() {
        let out = "warming up\n{\"a\": 1}\nnoise\n  {\"suite\": \"methods\", \"median_s\": 2.5, \
                   \"images_per_s\": 1.6, \"peak_rss_mib\": 1200.0, \"peak_device_mib\": null, \
                   \"device\": \"cpu\", \"version\": \"candle 0.11.1\"}\n";
        let map = parse_json_line(out).unwrap();
        assert_eq!(map["suite"], "methods");
        let m = Measurement::from_json(&map);
        assert_eq!(m.median_s, Some(2.5));
        assert_eq!(m.images_per_s, Some(1.6));
        assert_eq!(m.peak_rss_mib, Some(1200.0));
        assert_eq!(m.peak_device_mib, None);
        assert_eq!(m.device.as_deref(), Some("cpu"));
        assert_eq!(m.skipped, None);
        assert!(parse_json_line("no json here\n").is_err());
        assert!(parse_json_line("{not json\n").is_err());
        assert!(parse_json_line("[1, 2]\n{\"x\": [1]}").is_ok());
        let skipped = parse_json_line(
            "{\"method\": \"coarse2fine\", \"skipped\": \"Coarse2Fine has no public code\"}",
        )
        .unwrap();
        let m = Measurement::from_json(&skipped);
        assert_eq!(m.skipped.as_deref(), Some("Coarse2Fine has no public code"));
        assert_eq!(m.images_per_s, None);
    }

    #[test]
    fn markdown_without_pytorch_has_ours_only() {
        let rows = vec![Row {
            workload: method_workloads(None, None).remove(1),
            ours: Ok(measured(2.0, 4.0, 1500.4, "cpu")),
            torch: TorchSide::Off,
        }];
        let md = render_markdown(&info(false), &rows);
        assert!(md.contains("| workload | device | s/step | images/s | peak MiB |"));
        assert!(md.contains("| pmg resnet50 224 b4 | cpu | 2.000 | 2.00 | 1500 |"));
        assert!(!md.contains("PyTorch"));
        let json = records_json(&info(false), &rows);
        let rec = &json[0];
        assert_eq!(rec["method"], "pmg");
        assert_eq!(rec["backbone"], "resnet50");
        assert_eq!(rec["size"], 224);
        assert_eq!(rec["ours_images_per_s"], 2.0);
        assert!(rec.get("ratio").is_none());
        assert!(rec.get("pytorch_images_per_s").is_none());
    }

    #[test]
    fn markdown_with_pytorch_shows_the_ratio_and_skips() {
        let ws = method_workloads(None, None);
        let rows = vec![
            Row {
                workload: ws[1].clone(),
                ours: Ok(measured(4.0, 4.0, 1500.0, "cpu")),
                torch: TorchSide::Ran(measured(2.0, 4.0, 1800.0, "cpu")),
            },
            Row {
                workload: ws[3].clone(),
                ours: Ok(measured(3.0, 4.0, 1400.0, "cpu")),
                torch: TorchSide::Ran(Measurement {
                    skipped: Some("Coarse2Fine has no public code".into()),
                    device: Some("cpu".into()),
                    ..Measurement::default()
                }),
            },
            Row {
                workload: ws[2].clone(),
                ours: Err("bench_methods exited with 1".into()),
                torch: TorchSide::Failed("methods_torch.py exited with 1".into()),
            },
        ];
        let md = render_markdown(&info(true), &rows);
        assert!(md.contains(
            "| ours s/step | ours img/s | PyTorch s/step | PyTorch img/s | ours / PyTorch"
        ));
        assert!(md.contains(
            "| pmg resnet50 224 b4 | cpu | 4.000 | 1.00 | 2.000 | 2.00 | 0.50x | 1500 | 1800 |"
        ));
        assert!(md.contains(
            "| coarse2fine resnet50 224 b4 | cpu | 3.000 | 1.33 | – | – | – | 1400 | – |"
        ));
        assert!(md.contains(
            "- coarse2fine resnet50 224 b4: PyTorch skipped: Coarse2Fine has no public code"
        ));
        assert!(md.contains("- dcl resnet50 224 b4: ours failed: bench_methods exited with 1"));
        assert!(md.contains("- dcl resnet50 224 b4: PyTorch failed"));
        assert!(md.contains("PyTorch 2.15.0"));
        let json = records_json(&info(true), &rows);
        assert_eq!(json[0]["ratio"], 0.5);
        assert_eq!(json[0]["pytorch_images_per_s"], 2.0);
        assert_eq!(json[0]["pytorch_peak_mib"], 1800.0);
        assert_eq!(json[1]["ratio"], Value::Null);
        assert_eq!(json[1]["pytorch_skipped"], "Coarse2Fine has no public code");
        assert_eq!(json[2]["ours_error"], "bench_methods exited with 1");
    }

    #[test]
    fn backbone_markdown_says_per_iteration_and_marks_a_device_fallback() {
        let mut i = info(true);
        i.suite = "backbones".into();
        i.device = "cuda".into();
        let rows = vec![Row {
            workload: backbone_workloads(None, None).remove(1),
            ours: Ok(measured(0.5, 8.0, 900.0, "cuda")),
            torch: TorchSide::Ran(measured(0.25, 8.0, 1000.0, "cpu")),
        }];
        let md = render_markdown(&i, &rows);
        assert!(md.contains("ours s/iter"));
        assert!(md.contains("| resnet50 224 b8 train | cuda (PyTorch: cpu) | 0.500 | 16.00 |"));
    }

    #[test]
    fn workload_filter_is_a_case_insensitive_substring_match() {
        let all = method_workloads(None, None);
        let n = all.len();
        assert_eq!(filter_workloads(all.clone(), &[]).len(), n);
        let pmg = filter_workloads(all.clone(), &["PMG".into()]);
        assert_eq!(pmg.len(), 2);
        assert!(pmg.iter().all(|w| w.label.starts_with("pmg ")));
        let one = filter_workloads(all.clone(), &["rmg-pmsi mobilenet".into()]);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].args, ["rmg-pmsi", "mobilenet_v2", "224", "4"]);
        let two = filter_workloads(
            all.clone(),
            &["coarse2fine".into(), "baseline mobilenet".into()],
        );
        assert_eq!(two.len(), 2);
        assert!(filter_workloads(all, &["nothing".into()]).is_empty());
        let big = method_workloads(Some(448), Some(16));
        assert_eq!(big[1].label, "pmg resnet50 448 b16");
        assert_eq!(big[1].args, ["pmg", "resnet50", "448", "16"]);
        assert_eq!(
            filter_workloads(backbone_workloads(None, None), &["train".into()]).len(),
            3
        );
    }

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

    #[test]
    fn command_line_options() {
        let a = parse(&[
            "backbones",
            "--device",
            "cuda",
            "--vs-pytorch",
            "--threads",
            "4",
            "--iters",
            "2",
            "--size",
            "448",
            "--batch",
            "2",
        ]);
        assert_eq!(a.suite, Suite::Backbones);
        assert_eq!(a.device, BenchDevice::Cuda);
        assert_eq!(a.device.feature(), Some("cuda"));
        assert!(a.vs_pytorch);
        assert_eq!(a.threads(), 4);
        assert_eq!((a.iters, a.size, a.batch), (Some(2), Some(448), Some(2)));
        let d = parse(&[]);
        assert_eq!(d.suite, Suite::All);
        assert_eq!(d.device, BenchDevice::Cpu);
        assert!(d.threads() >= 1);
        let c = parse(&["augment", "--", "jigsaw"]);
        assert_eq!(c.criterion_args, ["jigsaw"]);
    }

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
