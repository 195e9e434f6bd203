//! The command line of `cargo xtask bench`: the suite, the device, the PyTorch side and the workload
//! overrides.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use fgvc_train::device::DeviceChoice;

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

/// `cargo xtask bench` options.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which benchmark suite to run.
    #[arg(value_enum, default_value_t = Suite::All)]
    pub suite: Suite,
    /// Device of the backbones and methods workloads (criterion suites run on the CPU); cuda and metal build
    /// the examples with `--features cuda` / `--features metal`, and PyTorch uses CUDA or MPS when available.
    #[arg(long, value_parser = xtask::device_arg::parser(), default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
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
    /// Cap the instruction-set level of both sides: `FGVC_ISA` for ours, `ATEN_CPU_CAPABILITY` and `ONEDNN_MAX_CPU_ISA` for PyTorch
    /// (`scalar`, `avx2`, `avx512`); default: each side's widest on this CPU. Makes an AVX2 table on an
    /// AVX-512 machine.
    #[arg(long, value_name = "LEVEL")]
    pub isa: Option<fgvc_ops::Isa>,
    /// Precision of both sides: `bf16` runs our convolutions' products in bf16 (`FGVC_PRECISION`; AMX or
    /// AVX512_BF16) and PyTorch's forward and loss under `torch.autocast(dtype=torch.bfloat16)`.
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub precision: fgvc_ops::Precision,
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
    pub(super) fn wants_pytorch(&self) -> bool {
        self.vs_pytorch || self.python.is_some()
    }

    pub(super) fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// `cargo xtask bench` arguments as the command line parses them (for the tests).
#[cfg(test)]
pub(super) fn parse(args: &[&str]) -> BenchArgs {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
        .unwrap()
        .bench
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "--isa",
            "avx2",
        ]);
        assert_eq!(a.isa, Some(fgvc_ops::Isa::Avx2));
        assert_eq!(a.suite, Suite::Backbones);
        assert_eq!(a.device, DeviceChoice::Cuda);
        assert_eq!(a.device.feature(), Some("cuda"));
        assert!(a.vs_pytorch);
        assert_eq!(a.threads(), 4);
        assert_eq!((a.iters, a.size, a.batch), (Some(2), Some(448), Some(2)));
        let d = parse(&[]);
        assert_eq!(d.suite, Suite::All);
        assert_eq!(d.device, DeviceChoice::Cpu);
        assert!(d.threads() >= 1);
        let c = parse(&["augment", "--", "jigsaw"]);
        assert_eq!(c.criterion_args, ["jigsaw"]);
    }
}
