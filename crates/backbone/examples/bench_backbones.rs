//! Throughput and peak memory of one backbone configuration: eval forward, or one training step (forward
//! in training mode, cross-entropy, backward, plain SGD update of every parameter).
//!
//! ```sh
//! cargo run --release -p fgvc-backbone --example bench_backbones -- resnet50 224 8 train 3 [--device cpu|cuda|metal]
//! #                                                                 model    size batch mode iters
//! ```
//!
//! Prints a readable line on stderr (model, size, batch, mode, seconds per iteration, images/s, peak memory)
//! and one JSON line on stdout with the same fields (`median_s`, `mean_s` after one warm-up, `images_per_s`
//! = batch / median, `peak_rss_mib` = the process's VmHWM). Run one configuration per process so that the peak
//! is its own; `benches/backbones_torch.py` prints the same fields for PyTorch, and `cargo xtask bench
//! backbones` runs both. `FGVC_PRECISION=bf16` runs the convolutions' products in bf16 (`fgvc_ops::Precision`).
//! On CUDA or Metal build with `--features cuda` / `--features metal`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use fgvc_backbone::{build, BackboneKind};
use fgvc_ops::ParamStore;

fn peak_rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kib / 1024.0)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A JSON number, or `null` when not finite.
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// The bf16 kernel the products use, as JSON (`null` in f32).
fn bf16_kernel() -> String {
    match (fgvc_ops::precision(), fgvc_ops::Bf16Kernel::current()) {
        (fgvc_ops::Precision::Bf16, Some(k)) => format!("\"{k}\""),
        _ => "null".into(),
    }
}

fn main() -> Result<()> {
    // As the `fgvc` binary does: freed activation buffers are reused instead of page-faulted in each step.
    fgvc_ops::tune_allocator();
    let usage = "usage: bench_backbones <model> <size> <batch> <eval|train> <iters> [--device cpu|cuda|metal]";
    let mut args = Vec::new();
    let mut device = "cpu".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--device" {
            device = it.next().context(usage)?;
        } else {
            args.push(a);
        }
    }
    if args.len() != 5 {
        bail!("{usage}");
    }
    let kind: BackboneKind = args[0].parse()?;
    let size: usize = args[1].parse()?;
    let batch: usize = args[2].parse()?;
    let train = match args[3].as_str() {
        "train" => true,
        "eval" => false,
        m => bail!("mode must be eval or train, got {m}"),
    };
    let iters: usize = args[4].parse()?;
    let dev = match device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0).context("--device cuda: build with `--features cuda`")?,
        "metal" => Device::new_metal(0).context("--device metal: build with `--features metal`")?,
        d => bail!("--device must be cpu, cuda or metal, got {d}"),
    };
    let store = ParamStore::new(0, DType::F32, &dev);
    let net = build(kind, Some(1000), &store.root())?;
    let n = batch * 3 * size * size;
    let x = Tensor::arange(0f32, n as f32, &dev)?
        .affine(0.013, 0.)?
        .sin()?
        .reshape((batch, 3, size, size))?;
    let labels = Tensor::from_vec(
        (0..batch as u32)
            .map(|i| i * 37 % 1000)
            .collect::<Vec<u32>>(),
        batch,
        &dev,
    )?;
    let params = store.trainable();
    // Plain SGD, in place (PyTorch's side: torch.optim.SGD(lr=1e-3)).
    let sgd = fgvc_ops::SgdStep {
        lr: 1e-3,
        weight_decay: 0.,
        momentum: 0.,
        dampening: 0.,
        nesterov: false,
    };
    let mut times = Vec::with_capacity(iters);
    for it in 0..=iters {
        let t0 = Instant::now();
        if train {
            let logits = net.forward_t(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            let grads = loss.backward()?;
            for (_, var) in &params {
                if let Some(g) = grads.get(var.as_tensor()) {
                    fgvc_ops::sgd_step(var, g, None, &sgd)?;
                }
            }
        } else {
            let logits = net.forward_t(&x, false)?;
            logits.sum_all()?.to_scalar::<f32>()?;
        }
        dev.synchronize()?;
        if it > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let med = median(&times);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let peak = peak_rss_mib()?;
    let mode = &args[3];
    eprintln!(
        "candle {kind} {size} b{batch} {mode} on {device}: {med:.3} s/iter (median of {iters}, mean {mean:.3}), \
         {:.2} img/s, peak RSS {peak:.0} MiB",
        batch as f64 / med,
    );
    println!(
        "{{\"suite\": \"backbones\", \"impl\": \"candle\", \"version\": \"candle 0.11.1\", \"model\": \"{kind}\", \
         \"size\": {size}, \"batch\": {batch}, \"mode\": \"{mode}\", \"iters\": {iters}, \"threads\": {}, \
         \"device\": \"{device}\", \"median_s\": {}, \"mean_s\": {}, \"images_per_s\": {}, \
         \"peak_rss_mib\": {}, \"peak_device_mib\": null, \"isa\": \"{}\", \"precision\": \"{}\", \
         \"bf16_kernel\": {}}}",
        candle_core::utils::get_num_threads(),
        num(med),
        num(mean),
        num(batch as f64 / med),
        num(peak),
        fgvc_ops::isa(),
        fgvc_ops::precision(),
        bf16_kernel(),
    );
    Ok(())
}
