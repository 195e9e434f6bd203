"""PyTorch CPU counterpart of `cargo run --release -p fgvc-backbone --example bench_backbones`.

    python3 crates/backbone/benches/backbones_torch.py resnet50 224 8 train 3

Same work: eval forward (no_grad), or a training step (train-mode forward, cross-entropy, backward, plain
SGD update), 2 threads, one warm-up then the mean over `iters`; peak RSS from VmHWM.
"""

import sys
import time

import torch
import torchvision


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    model, size, batch, mode, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    torch.set_num_threads(2)
    net = getattr(torchvision.models, model)(num_classes=1000)
    n = batch * 3 * size * size
    x = (torch.arange(n, dtype=torch.float32) * 0.013).sin().reshape(batch, 3, size, size)
    labels = torch.tensor([i * 37 % 1000 for i in range(batch)])
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    times = []
    for it in range(iters + 1):
        t0 = time.perf_counter()
        if mode == "train":
            net.train()
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), labels)
            loss.backward()
            opt.step()
        else:
            net.eval()
            with torch.no_grad():
                net(x).sum().item()
        if it > 0:
            times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    print(f"torch {model} {size} b{batch} {mode}: {mean:.3f} s/iter, {batch / mean:.2f} img/s, peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
