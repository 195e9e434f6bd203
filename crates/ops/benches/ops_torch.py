"""PyTorch (CPU, 2 threads, f32) on the shapes of crates/ops/benches/ops.rs, for docs/performance.md.

python3 crates/ops/benches/ops_torch.py

Prints the median of `REPS` timed runs (after warm-up) per shape, forward and forward + backward (backward
seeded with ones, gradients for the input and the weights), in milliseconds.
"""
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)
B = 8
REPS = 10


def timeit(fn):
    for _ in range(2):
        fn()
    ts = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def pair(name, make):
    """make() -> (forward closure returning y, list of leaf tensors)."""
    f, _ = make()

    def fwd():
        with torch.no_grad():
            f()

    def fwd_bwd():
        y = f()
        y.backward(torch.ones_like(y))

    print(f"{name:24s} fwd {timeit(fwd):8.1f} ms   fwd+bwd {timeit(fwd_bwd):8.1f} ms", flush=True)


def conv(ci, co, k, size, stride):
    def make():
        x = torch.randn(B, ci, size, size, requires_grad=True)
        w = (torch.randn(co, ci, k, k) * 0.05).requires_grad_(True)
        return (lambda: F.conv2d(x, w, None, stride, k // 2)), [x, w]

    return make


def dw(c, size, stride):
    def make():
        x = torch.randn(B, c, size, size, requires_grad=True)
        w = (torch.randn(c, 1, 3, 3) * 0.3).requires_grad_(True)
        return (lambda: F.conv2d(x, w, None, stride, 1, 1, c)), [x, w]

    return make


def bn():
    x = torch.randn(B, 256, 56, 56, requires_grad=True)
    m = nn.BatchNorm2d(256).train()
    return (lambda: m(x)), [x]


def maxpool():
    x = torch.randn(B, 64, 112, 112, requires_grad=True)
    return (lambda: F.max_pool2d(x, 3, 2, 1)), [x]


print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {B}")
pair("conv3x3_64_56", conv(64, 64, 3, 56, 1))
pair("conv1x1_256to64_56", conv(256, 64, 1, 56, 1))
pair("conv3x3_256_14", conv(256, 256, 3, 14, 1))
pair("conv3x3_128_56_s2", conv(128, 128, 3, 56, 2))
pair("stem7x7_3to64_224_s2", conv(3, 64, 7, 224, 2))
pair("dw3x3_c144_56", dw(144, 56, 1))
pair("dw3x3_c96_112_s2", dw(96, 112, 2))
pair("bn_train_c256_56", bn)
pair("maxpool3s2p1_c64_112", maxpool)
