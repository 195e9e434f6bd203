"""PyTorch counterpart of `cargo run --release -p fgvc-backbone --example bench_backbones`.

    python3 crates/backbone/benches/backbones_torch.py resnet50 224 8 train 3 [--device cpu|cuda] [--threads N] \
        [--precision f32|bf16]

Same work: eval forward (no_grad), or a training step (train-mode forward, cross-entropy, backward, plain
SGD update), `--threads` CPU threads (default: OMP_NUM_THREADS, else 2), one warm-up then `iters` timed
iterations. `--precision bf16` runs the forward and the loss under `torch.autocast(dtype=torch.bfloat16)`,
PyTorch's mixed precision (the counterpart of our `FGVC_PRECISION=bf16`). Prints a readable line on stderr and one JSON line on stdout with the Rust example's fields
(median and mean seconds, images/s = batch / median, peak RSS from VmHWM, peak GPU memory on CUDA).
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch
import torchvision


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("size", type=int)
    ap.add_argument("batch", type=int)
    ap.add_argument("mode", choices=["eval", "train"])
    ap.add_argument("iters", type=int)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "metal"])
    ap.add_argument("--threads", type=int,
                    default=int(os.environ.get("OMP_NUM_THREADS") or os.environ.get("RAYON_NUM_THREADS") or 2))
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = "cpu"
    if a.device == "cuda" and torch.cuda.is_available():
        device = "cuda"
    elif a.device == "metal" and torch.backends.mps.is_available():
        device = "mps"
    if a.device != "cpu" and device == "cpu":
        print(f"torch: {a.device} is not available, running on the CPU", file=sys.stderr)
    net = getattr(torchvision.models, a.model)(num_classes=1000).to(device)
    n = a.batch * 3 * a.size * a.size
    x = (torch.arange(n, dtype=torch.float32) * 0.013).sin().reshape(a.batch, 3, a.size, a.size).to(device)
    labels = torch.tensor([i * 37 % 1000 for i in range(a.batch)], device=device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    def autocast():
        if a.precision == "bf16":
            return torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    times = []
    for it in range(a.iters + 1):
        t0 = time.perf_counter()
        if a.mode == "train":
            net.train()
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(net(x), labels)
            loss.backward()
            opt.step()
        else:
            net.eval()
            with torch.no_grad(), autocast():
                net(x).float().sum().item()
        if device == "cuda":
            torch.cuda.synchronize()
        if it > 0:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times) if times else float("nan")
    mean = sum(times) / len(times) if times else float("nan")
    dev_label = {"cuda": "cuda", "mps": "metal"}.get(device, "cpu")
    record = {
        "suite": "backbones", "impl": "torch", "version": torch.__version__, "model": a.model, "size": a.size,
        "batch": a.batch, "mode": a.mode, "iters": a.iters, "threads": a.threads, "precision": a.precision,
        "isa": torch.backends.cpu.get_cpu_capability(), "device": dev_label,
        "median_s": median if times else None, "mean_s": mean if times else None,
        "images_per_s": a.batch / median if times else None, "peak_rss_mib": peak_rss_mib(),
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }
    print(f"torch {a.model} {a.size} b{a.batch} {a.mode} on {dev_label}: {median:.3f} s/iter (median of {a.iters}, "
          f"mean {mean:.3f}), {record['images_per_s'] or 0:.2f} img/s, peak RSS {record['peak_rss_mib'] or 0:.0f} MiB",
          file=sys.stderr)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
