//! The one-shot GPU check: everything `cargo xtask device-check --prepare DIR` ships to a bare GPU machine,
//! in one binary (every binary linking candle's CUDA backend carries all of its kernels' PTX, so one binary
//! keeps the bundle small).
//!
//! ```sh
//! device_check OUT_DIR --root REPO [--torch SCRIPT] [--python PYTHON] [--skip bench,train]
//! ```
//!
//! 1. **ops**: each fgvc-ops op on CUDA against the CPU kernels: forward, every gradient, the running
//!    statistics, the optimiser updates (this and the next in full f32: TF32 off).
//! 2. **steps**: one whole training step of ResNet-50, MobileNetV2 and VGG-16-BN (the baseline) and of every
//!    method recipe on CUDA against the CPU from the same weights and batch: the loss, every parameter's
//!    update and every buffer.
//! 3. **bench**: each method's training step at 448 px, batch 16, ours next to PyTorch eager fp32 (the
//!    `--torch` script, `crates/train/benches/methods_torch.py`) on the same GPU: images/s and device memory.
//! 4. **train**: two epochs of each method's synthetic configuration at 224 px (images/s through the real
//!    loader), and a run stopped part-way and resumed, which must end with the weights of one that was not.
//!
//! Writes `OUT_DIR/summary.json` and `OUT_DIR/summary.md`; exits non-zero when a check fails. With no CUDA
//! device it says so and exits 2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use fgvc_ops::{
    adamw_step, avg_pool2d, conv2d, depthwise_conv2d, elu, max_pool2d, relu6, sgd_step, AdamWStep,
    BatchNorm, Conv2dConfig, ParamStore, SgdStep,
};
use fgvc_train::bench::{median, method_config, StepBench};
use fgvc_train::{Config, TrainOptions, Trainer};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// One comparison's outcome.
struct Check {
    section: &'static str,
    name: String,
    /// The largest difference relative to the reference's largest magnitude, over every output.
    worst: f64,
    tolerance: f64,
    detail: String,
}

impl Check {
    /// The check `name` of `section` from what its comparison gave: the worst relative difference and a
    /// detail line, or the error that stopped it (a failure).
    fn new(
        section: &'static str,
        name: impl Into<String>,
        tolerance: f64,
        outcome: Result<(f64, String)>,
    ) -> Self {
        let (worst, detail) = outcome.unwrap_or_else(|e| (f64::INFINITY, format!("error: {e:#}")));
        Check {
            section,
            name: name.into(),
            worst,
            tolerance,
            detail,
        }
    }

    fn passed(&self) -> bool {
        self.worst <= self.tolerance
    }
}

/// The largest |a - b| over max(|a|, tiny).
fn relative(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let scale = a.iter().fold(1e-12f64, |m, v| m.max(v.abs() as f64));
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y).abs() as f64) / scale)
        .fold(0f64, f64::max);
    if a.iter().chain(b).all(|v| v.is_finite()) {
        worst
    } else {
        f64::INFINITY
    }
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?)
}

fn random(rng: &mut rand_chacha::ChaCha8Rng, shape: &[usize], scale: f32) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (rng.random::<f32>() - 0.5) * 3.4 * scale)
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Runs `f` on the CPU and on `gpu` and compares every tensor it returns.
fn compare(
    gpu: &Device,
    name: &str,
    tolerance: f64,
    f: impl Fn(&Device) -> Result<Vec<(&'static str, Tensor)>>,
) -> Check {
    let outcome = (|| -> Result<(f64, String)> {
        let cpu = f(&Device::Cpu)?;
        let got = f(gpu)?;
        let mut worst = 0f64;
        let mut parts = Vec::new();
        for ((what, c), (_, g)) in cpu.iter().zip(&got) {
            let r = relative(&flat(c)?, &flat(g)?);
            parts.push(format!("{what} {r:.1e}"));
            worst = worst.max(r);
        }
        Ok((worst, parts.join(", ")))
    })();
    Check::new("ops", name, tolerance, outcome)
}

/// y and the gradients of sum(y * r) with respect to `inputs` (moved to `dev` as variables).
fn with_grads(
    dev: &Device,
    inputs: &[&Tensor],
    r: &Tensor,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<Vec<(&'static str, Tensor)>> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(dev)?))
        .collect::<candle_core::Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts)?;
    let grads = (&y * r.to_device(dev)?)?.sum_all()?.backward()?;
    let mut out = vec![("y", y)];
    for (i, v) in vars.iter().enumerate() {
        let g = grads
            .get(v.as_tensor())
            .with_context(|| format!("no gradient for input {i}"))?;
        out.push((["d0", "d1", "d2", "d3"][i.min(3)], g.clone()));
    }
    Ok(out)
}

/// A convolution case: name, input and weight shapes, geometry, depthwise.
type ConvCase = (&'static str, [usize; 4], [usize; 4], Conv2dConfig, bool);

fn check_ops(gpu: &Device) -> Result<Vec<Check>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut checks = Vec::new();
    let mut dilated = Conv2dConfig::new(2, 1);
    dilated.dilation = (1, 2);
    dilated.padding = (1, 2);
    let convs: Vec<ConvCase> = vec![
        (
            "conv 3x3 same",
            [4, 16, 28, 30],
            [32, 16, 3, 3],
            Conv2dConfig::same(1),
            false,
        ),
        (
            "conv 1x1",
            [4, 64, 14, 14],
            [32, 64, 1, 1],
            Conv2dConfig::default(),
            false,
        ),
        (
            "conv 7x7 stride 2",
            [2, 3, 64, 60],
            [16, 3, 7, 7],
            Conv2dConfig::new(2, 3),
            false,
        ),
        (
            "conv stride 2 dilation (1,2)",
            [2, 8, 24, 25],
            [12, 8, 3, 3],
            dilated,
            false,
        ),
        (
            "depthwise 3x3",
            [4, 32, 28, 28],
            [32, 1, 3, 3],
            Conv2dConfig::same(1),
            true,
        ),
        (
            "depthwise 3x3 stride 2",
            [4, 32, 29, 30],
            [32, 1, 3, 3],
            Conv2dConfig::new(2, 1),
            true,
        ),
    ];
    for (name, xs, ws, cfg, depthwise) in convs {
        let x = random(&mut rng, &xs, 1.0)?;
        let w = random(&mut rng, &ws, 0.3)?;
        let (oh, ow) = cfg.output_size((xs[2], xs[3]), (ws[2], ws[3]));
        let r = random(&mut rng, &[xs[0], ws[0], oh, ow], 1.0)?;
        checks.push(compare(gpu, name, 1e-4, |dev| {
            with_grads(dev, &[&x, &w], &r, |t| {
                Ok(if depthwise {
                    depthwise_conv2d(&t[0], &t[1], None, &cfg)?
                } else {
                    conv2d(&t[0], &t[1], None, &cfg)?
                })
            })
        }));
    }

    let x = random(&mut rng, &[8, 16, 12, 12], 2.0)?;
    let r = random(&mut rng, &[8, 16, 12, 12], 1.0)?;
    checks.push(compare(
        gpu,
        "batch norm (train), running statistics",
        1e-4,
        |dev| {
            let store = ParamStore::new(5, DType::F32, dev);
            let bn = BatchNorm::new(16, &store.root().pp("bn"))?;
            let mut out = with_grads(dev, &[&x], &r, |t| Ok(bn.forward_t(&t[0], true)?))?;
            out.push(("running_mean", bn.running_mean().as_tensor().clone()));
            out.push(("running_var", bn.running_var().as_tensor().clone()));
            Ok(out)
        },
    ));
    checks.push(compare(gpu, "batch norm (eval)", 1e-5, |dev| {
        let store = ParamStore::new(5, DType::F32, dev);
        let bn = BatchNorm::new(16, &store.root().pp("bn"))?;
        with_grads(dev, &[&x], &r, |t| Ok(bn.forward_t(&t[0], false)?))
    }));

    let x = random(&mut rng, &[4, 8, 17, 18], 1.0)?;
    let r9 = random(&mut rng, &[4, 8, 9, 9], 1.0)?;
    checks.push(compare(gpu, "max pool 3x3 stride 2 pad 1", 1e-6, |dev| {
        with_grads(dev, &[&x], &r9, |t| Ok(max_pool2d(&t[0], 3, 2, 1)?))
    }));
    let r8 = random(&mut rng, &[4, 8, 8, 9], 1.0)?;
    checks.push(compare(gpu, "avg pool 2x2", 1e-6, |dev| {
        with_grads(dev, &[&x], &r8, |t| Ok(avg_pool2d(&t[0], 2, 2)?))
    }));
    let rx = random(&mut rng, &[4, 8, 17, 18], 1.0)?;
    checks.push(compare(gpu, "relu6, elu", 1e-6, |dev| {
        let mut out = with_grads(dev, &[&x], &rx, |t| Ok(relu6(&(&t[0] * 4.0)?)?))?;
        out.extend(with_grads(dev, &[&x], &rx, |t| Ok(elu(&t[0], 1.0)?))?);
        Ok(out)
    }));

    let p = random(&mut rng, &[64, 33], 1.0)?;
    let g = random(&mut rng, &[64, 33], 0.1)?;
    checks.push(compare(
        gpu,
        "sgd step (momentum, nesterov, decay)",
        1e-6,
        |dev| {
            let var = Var::from_tensor(&p.to_device(dev)?)?;
            let sgd = SgdStep {
                lr: 0.1,
                weight_decay: 5e-4,
                momentum: 0.9,
                dampening: 0.0,
                nesterov: true,
            };
            let gd = g.to_device(dev)?;
            let buf = sgd_step(&var, &gd, None, &sgd)?;
            let buf = sgd_step(&var, &gd, buf.as_ref(), &sgd)?;
            let mut out = vec![("param", var.as_tensor().clone())];
            out.extend(buf.map(|b| ("momentum", b.as_tensor().clone())));
            Ok(out)
        },
    ));
    checks.push(compare(gpu, "adamw step", 1e-6, |dev| {
        let var = Var::from_tensor(&p.to_device(dev)?)?;
        let m = Var::zeros(p.dims(), DType::F32, dev)?;
        let v = Var::zeros(p.dims(), DType::F32, dev)?;
        let gd = g.to_device(dev)?;
        for step in 1..=3 {
            let s = AdamWStep {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                step,
            };
            adamw_step(&var, &gd, &m, &v, &s)?;
        }
        Ok(vec![
            ("param", var.as_tensor().clone()),
            ("m", m.as_tensor().clone()),
            ("v", v.as_tensor().clone()),
        ])
    }));
    Ok(checks)
}

/// The weights of `bench`'s method by name, on the CPU.
fn weights(bench: &StepBench) -> Result<Vec<(String, Vec<f32>)>> {
    let mut out = Vec::new();
    for (name, v) in bench.method.store().trainable() {
        out.push((name, flat(v.as_tensor())?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// One training step of `method` on `backbone` on the CPU and on `gpu`, from the same weights and batch.
fn check_step(gpu: &Device, root: &Path, method: &str, backbone: &str) -> Check {
    let name = format!("{method} {backbone}");
    let outcome = (|| -> Result<(f64, String)> {
        let (size, batch, classes) = (112, 4, 10);
        let config = method_config(root, method, backbone, size, batch)?;
        let mut runs = Vec::new();
        for dev in [&Device::Cpu, gpu] {
            let mut bench = StepBench::new(config.clone(), classes, dev)?;
            let before = weights(&bench)?;
            let data = bench.random_batch((batch, size), classes, dev)?;
            let (loss, _, _) = bench.step(&data)?;
            runs.push((before, weights(&bench)?, loss));
        }
        let ((b_cpu, a_cpu, l_cpu), (b_gpu, a_gpu, l_gpu)) = (&runs[0], &runs[1]);
        let mut worst = relative(&[*l_cpu as f32], &[*l_gpu as f32]);
        let mut worst_name = "loss".to_string();
        for (((name, bc), (_, ac)), ((_, bg), (_, ag))) in
            b_cpu.iter().zip(a_cpu).zip(b_gpu.iter().zip(a_gpu))
        {
            let init = relative(bc, bg);
            let r = if fgvc_ops::is_buffer(name) {
                relative(ac, ag)
            } else {
                // The update (after - before), so the comparison is of the gradient step itself.
                let dc: Vec<f32> = ac.iter().zip(bc).map(|(a, b)| a - b).collect();
                let dg: Vec<f32> = ag.iter().zip(bg).map(|(a, b)| a - b).collect();
                relative(&dc, &dg)
            }
            .max(init);
            if r > worst {
                (worst, worst_name) = (r, name.clone());
            }
        }
        Ok((
            worst,
            format!("loss cpu {l_cpu:.5} cuda {l_gpu:.5}; worst: {worst_name}"),
        ))
    })();
    Check::new("steps", name, 2e-3, outcome)
}

/// The (method, backbone) pairs: the three backbones under the baseline, then each method on its paper's.
const STEPS: &[(&str, &str)] = &[
    ("baseline", "resnet50"),
    ("baseline", "mobilenet_v2"),
    ("baseline", "vgg16_bn"),
    ("pmg", "resnet50"),
    ("dcl", "resnet50"),
    ("rmg-pmsi", "mobilenet_v2"),
    ("coarse2fine", "resnet50"),
];

/// Device memory in use now, MiB (the driver's count for this GPU: every context on it).
fn device_used_mib() -> Option<f64> {
    let (free, total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
    Some((total - free) as f64 / 1048576.0)
}

fn bench_ours(gpu: &Device, root: &Path, method: &str, backbone: &str) -> Result<Value> {
    let (size, batch, classes, iters) = (448, 16, 200, 5);
    let config = method_config(root, method, backbone, size, batch)?;
    let base = device_used_mib();
    let mut bench = StepBench::new(config, classes, gpu)?;
    let data = bench.random_batch((batch, size), classes, gpu)?;
    let (mut times, mut peak) = (Vec::new(), 0f64);
    for it in 0..=iters {
        let (loss, _, dt) = bench.step(&data)?;
        if !loss.is_finite() {
            bail!("non-finite loss {loss}");
        }
        peak = peak.max(device_used_mib().unwrap_or(f64::NAN));
        if it > 0 {
            times.push(dt);
        }
    }
    let med = median(&times);
    Ok(json!({
        "images_per_s": batch as f64 / med,
        "median_s": med,
        "device_mib": base.map(|b| peak - b),
    }))
}

fn bench_torch(python: &str, script: &Path, method: &str, backbone: &str) -> Result<Value> {
    let out = Command::new(python)
        .arg(script)
        .args([method, backbone, "448", "16", "5", "--device", "cuda"])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().context("no output")?;
    Ok(serde_json::from_str(last)?)
}

/// Two epochs of `method`'s synthetic configuration at 224 px in `dir`.
fn train_short(gpu: &Device, root: &Path, method: &str, dir: &Path) -> Result<Value> {
    let spec = fgvc_train::registry::lookup(method)?;
    let preset = spec
        .presets
        .synthetic
        .context("no synthetic configuration")?;
    let config = preset.load(
        root,
        &[
            "train.epochs=2".into(),
            "data.crop=224".into(),
            "data.resize=256".into(),
        ],
    )?;
    let batch = config.data.batch_size;
    let t0 = Instant::now();
    let options = TrainOptions {
        overwrite: true,
        ..TrainOptions::default()
    };
    let summary = Trainer::new(config, dir, gpu, options)?.run()?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(json!({
        "steps": summary.steps,
        "seconds": seconds,
        "images_per_s": summary.steps as f64 * batch as f64 / seconds,
        "test_top1": summary.test.map(|t| t.main().top1),
    }))
}

/// A baseline run stopped after a few steps and resumed must end with the weights of an uninterrupted one.
fn check_resume(gpu: &Device, root: &Path, dir: &Path) -> Check {
    let outcome = (|| -> Result<(f64, String)> {
        let load = || -> Result<Config> {
            Ok(fgvc_train::registry::lookup("baseline")?
                .presets
                .synthetic
                .context("no synthetic configuration")?
                .load(root, &["train.epochs=2".into()])?)
        };
        let whole = dir.join("whole");
        let cut = dir.join("cut");
        let fresh = TrainOptions {
            overwrite: true,
            ..TrainOptions::default()
        };
        Trainer::new(load()?, &whole, gpu, fresh.clone())?.run()?;
        let stopped = TrainOptions {
            stop_after_steps: Some(7),
            ..fresh
        };
        let first = Trainer::new(load()?, &cut, gpu, stopped).and_then(|mut t| t.run());
        if !matches!(first, Err(fgvc_train::TrainError::Stopped { .. })) {
            bail!("the stopped run did not stop: {:?}", first.map(|s| s.steps));
        }
        let resumed = TrainOptions {
            resume: true,
            ..TrainOptions::default()
        };
        Trainer::new(load()?, &cut, gpu, resumed)?.run()?;
        let read = |d: &Path| -> Result<Vec<(String, Vec<f32>)>> {
            let mut ts: Vec<_> = candle_core::safetensors::load(
                d.join("checkpoint-last.safetensors"),
                &Device::Cpu,
            )?
            .into_iter()
            .filter(|(_, t)| t.dtype() == DType::F32)
            .map(|(n, t)| Ok((n, flat(&t)?)))
            .collect::<Result<_>>()?;
            ts.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(ts)
        };
        let (a, b) = (read(&whole)?, read(&cut)?);
        if a.len() != b.len() {
            bail!("the checkpoints hold {} and {} tensors", a.len(), b.len());
        }
        let worst = a
            .iter()
            .zip(&b)
            .map(|((_, x), (_, y))| relative(x, y))
            .fold(0f64, f64::max);
        Ok((worst, format!("{} tensors compared", a.len())))
    })();
    Check::new("train", "stopped and resumed = uninterrupted", 0.0, outcome)
}

fn main() -> Result<()> {
    let usage = "usage: device_check OUT_DIR --root REPO [--torch SCRIPT] [--python PYTHON] [--skip bench,train]";
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().context(usage)?);
    let (mut root, mut torch, mut python, mut skip) =
        (None, None, "python3".to_string(), String::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = Some(PathBuf::from(args.next().context(usage)?)),
            "--torch" => torch = Some(PathBuf::from(args.next().context(usage)?)),
            "--python" => python = args.next().context(usage)?,
            "--skip" => skip = args.next().context(usage)?,
            _ => bail!("{usage}"),
        }
    }
    let root = root.context(usage)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let gpu = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("device_check: no CUDA device: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    // The comparisons with the CPU in full f32; the benchmark and the training as PyTorch runs (TF32).
    fgvc_ops::set_tf32(false);
    let mut checks = check_ops(&gpu)?;
    eprintln!("ops: done in {:.0} s", started.elapsed().as_secs_f64());
    for (method, backbone) in STEPS {
        checks.push(check_step(&gpu, &root, method, backbone));
        eprintln!(
            "steps: {method} {backbone}: {}",
            checks
                .last()
                .map_or("", |c| if c.passed() { "ok" } else { "FAILED" })
        );
    }
    fgvc_ops::set_tf32(true);
    let mut bench = Vec::new();
    if !skip.contains("bench") {
        for (method, backbone) in STEPS.iter().skip(2) {
            let ours = bench_ours(&gpu, &root, method, backbone)
                .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            let theirs = match &torch {
                Some(script) => bench_torch(&python, script, method, backbone)
                    .unwrap_or_else(|e| json!({"error": format!("{e:#}")})),
                None => Value::Null,
            };
            eprintln!("bench: {method} {backbone}: ours {ours} pytorch {theirs}");
            bench.push(
                json!({"method": method, "backbone": backbone, "ours": ours, "pytorch": theirs}),
            );
        }
    }
    let mut train = Vec::new();
    if !skip.contains("train") {
        for spec in fgvc_train::registry::BUILTIN {
            let dir = out.join("runs").join(spec.name);
            let r = train_short(&gpu, &root, spec.name, &dir)
                .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
            eprintln!("train: {}: {r}", spec.name);
            train.push(json!({"method": spec.name, "run": r}));
        }
        checks.push(check_resume(&gpu, &root, &out.join("runs/resume")));
    }

    let failed: Vec<&Check> = checks.iter().filter(|c| !c.passed()).collect();
    let summary = json!({
        "commit": option_env!("FGVC_COMMIT"),
        "seconds": started.elapsed().as_secs_f64(),
        "passed": failed.is_empty(),
        "checks": checks.iter().map(|c| json!({
            "section": c.section, "name": c.name, "passed": c.passed(),
            "worst_relative": if c.worst.is_finite() { json!(c.worst) } else { Value::Null },
            "tolerance": c.tolerance, "detail": c.detail,
        })).collect::<Vec<_>>(),
        "bench": bench,
        "train": train,
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let mut md = String::from("| section | check | result | worst relative | tolerance | detail |\n|---|---|---|---|---|---|\n");
    for c in &checks {
        md.push_str(&format!(
            "| {} | {} | {} | {:.1e} | {:.0e} | {} |\n",
            c.section,
            c.name,
            if c.passed() { "ok" } else { "FAILED" },
            c.worst,
            c.tolerance,
            c.detail
        ));
    }
    md.push_str("\n| method | backbone | ours img/s | PyTorch img/s | ours MiB (driver, in use after a step) | PyTorch MiB (max_memory_allocated) |\n|---|---|---|---|---|---|\n");
    for b in &bench {
        let f = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            b["method"].as_str().unwrap_or(""),
            b["backbone"].as_str().unwrap_or(""),
            f(&b["ours"]["images_per_s"]),
            f(&b["pytorch"]["images_per_s"]),
            f(&b["ours"]["device_mib"]),
            f(&b["pytorch"]["peak_device_mib"]),
        ));
    }
    std::fs::write(out.join("summary.md"), &md)?;
    print!("{md}");
    if !failed.is_empty() {
        bail!("{} of {} checks failed", failed.len(), checks.len());
    }
    Ok(())
}
