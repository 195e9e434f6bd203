//! Throughput and peak memory of one backbone configuration: eval forward, or one training step (forward
//! in training mode, cross-entropy, backward, plain SGD update of every parameter).
//!
//! ```sh
//! cargo run --release -p fgvc-backbone --example bench_backbones -- resnet50 224 8 train 3
//! #                                                                 model    size batch mode iters
//! ```
//!
//! Prints one line: model, size, batch, mode, seconds per iteration (mean after one warm-up), images/s and
//! the process's peak resident memory (VmHWM). Run one configuration per process so that the peak is its
//! own; `benches/backbones_torch.py` prints the same line for PyTorch.

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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        bail!("usage: bench_backbones <model> <size> <batch> <eval|train> <iters>");
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
    let dev = Device::Cpu;
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
    let lr = 1e-3;
    let mut times = Vec::with_capacity(iters);
    for it in 0..=iters {
        let t0 = Instant::now();
        if train {
            let logits = net.forward_t(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            let grads = loss.backward()?;
            for (_, var) in &params {
                if let Some(g) = grads.get(var.as_tensor()) {
                    var.set(&(var.as_tensor() - g.affine(lr, 0.)?)?)?;
                }
            }
        } else {
            let logits = net.forward_t(&x, false)?;
            logits.sum_all()?.to_scalar::<f32>()?;
        }
        if it > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!(
        "candle {kind} {size} b{batch} {}: {mean:.3} s/iter, {:.2} img/s, peak RSS {:.0} MiB",
        args[3],
        batch as f64 / mean,
        peak_rss_mib()?
    );
    Ok(())
}
