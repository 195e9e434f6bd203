//! Time one full training step of a method: everything its `train_step` does for one batch, built through the
//! same public API the trainer uses (`registry::build_method` from a [`Config`], the optimiser from the
//! method's default groups and `zero_grad`, a [`StepContext`]).
//!
//! ```sh
//! cargo run --release -p fgvc-train --example bench_methods -- pmg resnet50 224 4 3 [--device cpu|cuda|metal]
//! #                                                            method backbone size batch iters
//! ```
//!
//! * The configuration is the method's CUB preset in the registry (`configs/pmg-resnet50-cub.toml`, ...),
//!   so the official options and optimiser groups apply (PMG granularities 8/4/2 and four
//!   steps, DCL's 7x7 grid and three losses on 2B interleaved images, RMG-PMSI mosaic levels 3/2/1 with the
//!   stride-1 MobileNetV2 stem, Coarse2Fine's coarse + zoom + fine passes), with no pretrained weights
//!   (random initialisation), `num_classes` 200, the given backbone and batch size.
//! * The step is taken in the configuration's last epoch: Coarse2Fine is in its fine stage and RMG-PMSI's
//!   backbone is no longer frozen, i.e. the steady-state step.
//! * Inputs are random normal images and random labels. One warm-up step, then `iters` timed steps.
//!
//! Prints a readable line on stderr and one JSON line on stdout: median and mean seconds per step, images/s
//! (the batch's original images over the median step), the optimiser steps per batch, the process's peak
//! resident memory (VmHWM; host memory, also on a GPU). Run one configuration per process so that the peak is
//! its own; `benches/methods_torch.py` prints the same fields for the official PyTorch step.
//! The CPU thread count is candle's (`RAYON_NUM_THREADS`, default: all cores).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use fgvc_train::bench::{median, method_config, StepBench};
use fgvc_train::device::DeviceChoice;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<()> {
    // As the `fgvc` binary does: freed activation buffers are reused instead of page-faulted in each step.
    fgvc_ops::tune_allocator();
    let usage = "usage: bench_methods <method> <backbone> <size> <batch> <iters> [--device cpu|cuda|metal] \
                 [--classes N]";
    let mut positional = Vec::new();
    let mut device_name = "cpu".to_string();
    let mut classes = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => device_name = args.next().context(usage)?,
            "--classes" => classes = args.next().context(usage)?.parse()?,
            "-h" | "--help" => {
                println!("{usage}");
                return Ok(());
            }
            _ => positional.push(a),
        }
    }
    if positional.len() != 5 {
        bail!("{usage}");
    }
    let method_name = positional[0].as_str();
    let backbone = positional[1].as_str();
    let size: usize = positional[2].parse().context("size")?;
    let batch: usize = positional[3].parse().context("batch")?;
    let iters: usize = positional[4].parse().context("iters")?;
    let dev = device_name.parse::<DeviceChoice>()?.open()?;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = method_config(&root, method_name, backbone, size, batch)?;
    let mut bench = StepBench::new(config, classes, &dev)?;
    let parameters = bench.parameters();
    let batch_data = bench.random_batch((batch, size), classes, &dev)?;

    let mut times = Vec::with_capacity(iters);
    let mut optimizer_steps = 0;
    let mut loss = f64::NAN;
    for it in 0..=iters {
        let (step_loss, phases, dt) = bench.step(&batch_data)?;
        if !step_loss.is_finite() {
            bail!("non-finite loss {step_loss}");
        }
        (loss, optimizer_steps) = (step_loss, phases);
        if it > 0 {
            times.push(dt);
        }
    }
    let med = median(&times);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let peak = peak_rss_mib();
    let dev_label = match &dev {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    };
    let finite = |x: f64| {
        if x.is_finite() {
            serde_json::json!(x)
        } else {
            serde_json::Value::Null
        }
    };
    let record = serde_json::json!({
        "suite": "methods",
        "impl": "candle",
        "version": "candle 0.11.1",
        "method": method_name,
        "backbone": backbone,
        "size": size,
        "batch": batch,
        "iters": iters,
        "threads": candle_core::utils::get_num_threads(),
        "device": dev_label,
        "parameters": parameters,
        "optimizer_steps": optimizer_steps,
        "median_s": finite(med),
        "mean_s": finite(mean),
        "images_per_s": finite(batch as f64 / med),
        "peak_rss_mib": peak,
        "peak_device_mib": serde_json::Value::Null,
        "loss": finite(loss),
        "isa": fgvc_ops::isa().name(),
        "precision": fgvc_ops::precision().name(),
        "bf16_kernel": match fgvc_ops::precision() {
            fgvc_ops::Precision::Bf16 => fgvc_ops::Bf16Kernel::current().map(|k| k.name()),
            fgvc_ops::Precision::F32 => None,
        },
    });
    eprintln!(
        "candle {method_name} {backbone} {size} b{batch} on {dev_label}: {med:.3} s/step (median of {iters}, \
         mean {mean:.3}), {:.2} img/s, {optimizer_steps} optimiser steps, peak RSS {:.0} MiB, loss {loss:.3}",
        batch as f64 / med,
        peak.unwrap_or(f64::NAN)
    );
    println!("{record}");
    Ok(())
}
