"""PyTorch counterpart of `cargo run --release -p fgvc-train --example bench_methods`: one training step of a
fine-grained method as its official PyTorch code runs it, timed.

    python3 crates/train/benches/methods_torch.py pmg resnet50 224 4 3 [--device cpu|cuda] [--threads N] \
        [--precision f32|bf16]
    #                                             method backbone size batch iters

Prints one JSON line on stdout (the fields of the Rust example) and a readable line on stderr. Needs only
torch and torchvision; everything is randomly initialised (no download) and fed random images and labels.
One warm-up step, then `iters` timed steps: median and mean seconds per step, images/s = batch / median
(images = the batch's original images); `--precision bf16` runs the step under
`torch.autocast(dtype=torch.bfloat16)` (the counterpart of our `FGVC_PRECISION=bf16`); peak RSS (VmHWM) and, on CUDA, peak allocated GPU memory.

The models and loops are written from the official code's semantics (see the repository's
docs/methods.md):

* `baseline` (`configs/baseline-resnet50-cub.toml`): torchvision resnet50 / mobilenet_v2 (classifier dropout
  off, as ours), CE, one SGD step (momentum 0.9, no weight decay, the new classifier at 10x).
* `pmg` (PMG `train.py`): four steps per batch; steps 1-3 feed `jigsaw_generator(x, 8 | 4 | 2)` (the
  official swap-with-cell-(0,0) loop, one permutation per batch), step 4 the batch itself; every step is a
  full forward of the backbone and all heads, loss `w * CE(out[k], y)` with w = 1, 1, 1, 2, backward, SGD
  step (momentum 0.9, weight decay 5e-4, heads at 10x the backbone's rate, `zero_grad` keeping zero
  gradients as PyTorch 1.x did). Heads: BasicConv 1x1 -> 512 and 3x3 -> C/2 (BatchNorm momentum 0.01),
  global max pool, BN1d-Linear-BN1d-ELU-Linear classifiers and `classifier_concat`.
* `dcl` (DCL `LoadModel` + `train_model.py`, `--cls_mul`): the batch is interleaved with its region-confused
  copies (the official adjacent-pair shuffle on a 7x7 grid, per image) into 2B images, with the official
  targets (y / y + C swap labels, the brightness-matching swap law); forward through the trunk, average
  pool, `classifier` and `classifier_swap` (no bias), `Convmask` (1x1 conv, average pool to 7x7, tanh);
  loss CE + CE(swap) + L1(mask, law); one SGD step (momentum 0.9, no weight decay, heads at 10x).
* `rmg-pmsi` (RMG-PMSI `main.py`): MobileNetV2 with the stride-1 stem of `MobilenetV2_for_PMSI` (on
  resnet50: its layer2-4), smooth convs, MSI (map1, dropout 0.5, map2, residual sigmoid gates),
  classifiers; four steps with `RMG(x, 3 | 2 | 1)` and the batch itself, loss weights 1, 1, 1, 2; two SGDs
  (backbone 3e-4, heads 3e-3, momentum 0.9, weight decay 5e-4) both stepped (epoch >= 5).
* `coarse2fine`: no public code exists, so there is no PyTorch counterpart; the script prints a JSON line
  with `"skipped"` and exits 0.

Where the official code hard-codes 448 px (jigsaw block size, PMG's max-pool kernels, DCL's 2x2 mask pool,
RMG's block size) the same operation is taken at the input's size: a global max pool, `size // n` blocks and
an average pool to the 7x7 grid, identical at 448. DCL's destruction and targets run on tensors inside the
step (as in fgvc) rather than on PIL images in loader workers (as in the official code).
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

METHODS = ["baseline", "pmg", "dcl", "rmg-pmsi", "coarse2fine"]


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------------------------------------
# Backbones with stage taps


class Trunk(nn.Module):
    """A torchvision backbone cut into the three deepest stages the multi-stage heads read."""

    def __init__(self, name, first_stride=None):
        super().__init__()
        if name == "resnet50":
            r = torchvision.models.resnet50()
            self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
            self.s3, self.s4, self.s5 = r.layer2, r.layer3, r.layer4
            self.channels = [512, 1024, 2048]
        elif name == "mobilenet_v2":
            f = torchvision.models.mobilenet_v2().features
            if first_stride is not None:
                f[0][0].stride = (first_stride, first_stride)
            self.stem = f[0:4]
            self.s3, self.s4, self.s5 = f[4:7], f[7:14], f[14:]
            self.channels = [32, 96, 1280]
        else:
            raise SystemExit(f"unknown backbone {name!r} (resnet50, mobilenet_v2)")

    def forward(self, x):
        x3 = self.s3(self.stem(x))
        x4 = self.s4(x3)
        x5 = self.s5(x4)
        return x3, x4, x5


def basic_conv(cin, cout, k, pad):
    """PMG's BasicConv / PMSI's Conv: conv (no bias), BatchNorm (momentum 0.01), ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, bias=False),
        nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01, affine=True),
        nn.ReLU(),
    )


def elu_classifier(cin, hidden, classes):
    return nn.Sequential(
        nn.BatchNorm1d(cin), nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ELU(inplace=True),
        nn.Linear(hidden, classes),
    )


def global_max(x):
    return F.adaptive_max_pool2d(x, 1).flatten(1)


class PMG(nn.Module):
    def __init__(self, backbone, classes, feature_size=512):
        super().__init__()
        self.features = Trunk(backbone)
        half = self.features.channels[-1] // 2
        for i, c in enumerate(self.features.channels, 1):
            setattr(self, f"conv_block{i}", nn.Sequential(basic_conv(c, feature_size, 1, 0),
                                                          basic_conv(feature_size, half, 3, 1)))
            setattr(self, f"classifier{i}", elu_classifier(half, feature_size, classes))
        self.classifier_concat = elu_classifier(3 * half, feature_size, classes)

    def forward(self, x):
        xs = self.features(x)
        xl = [global_max(getattr(self, f"conv_block{i}")(f)) for i, f in enumerate(xs, 1)]
        xc = [getattr(self, f"classifier{i}")(f) for i, f in enumerate(xl, 1)]
        return xc[0], xc[1], xc[2], self.classifier_concat(torch.cat(xl, 1))

    def groups(self, lr):
        heads = [self.classifier_concat, self.conv_block1, self.classifier1, self.conv_block2, self.classifier2,
                 self.conv_block3, self.classifier3]
        return [{"params": m.parameters(), "lr": 10 * lr} for m in heads] + [
            {"params": self.features.parameters(), "lr": lr}]


class PMSI(nn.Module):
    def __init__(self, backbone, classes, feature_size=320):
        super().__init__()
        self.features = Trunk(backbone, first_stride=1 if backbone == "mobilenet_v2" else None)
        half = self.features.channels[-1] // 2
        for i, c in enumerate(self.features.channels, 1):
            setattr(self, f"smooth_conv{i}", nn.Sequential(basic_conv(c, feature_size, 1, 0),
                                                           basic_conv(feature_size, half, 3, 1)))
            setattr(self, f"classifier{i}", elu_classifier(half, feature_size, classes))
        self.map1 = nn.Linear(3 * half, feature_size)
        self.map2 = nn.Linear(feature_size, half)
        self.classifier_concat = elu_classifier(3 * half, feature_size, classes)

    def forward(self, x, train_flag="train"):
        xs = self.features(x)
        xl = [global_max(getattr(self, f"smooth_conv{i}")(f)) for i, f in enumerate(xs, 1)]
        xm = self.map1(torch.cat(xl, 1))
        xm = F.dropout(xm, p=0.5, training=train_flag == "train")
        xm = self.map2(xm)
        m = [torch.sigmoid(xm * f) * f + f for f in xl]
        xc = [getattr(self, f"classifier{i}")(f) for i, f in enumerate(m, 1)]
        return xc[0], xc[1], xc[2], self.classifier_concat(torch.cat(m, 1))

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("features.")]


class DCL(nn.Module):
    """LoadModel with --cls_mul: 2C-way swap classifier, Convmask 1x1 -> pool -> tanh."""

    def __init__(self, backbone, classes, grid=7):
        super().__init__()
        if backbone == "resnet50":
            self.model = nn.Sequential(*list(torchvision.models.resnet50().children())[:-2])
            c = 2048
        else:
            self.model = torchvision.models.mobilenet_v2().features
            c = 1280
        self.grid = grid
        self.classifier = nn.Linear(c, classes, bias=False)
        self.classifier_swap = nn.Linear(c, 2 * classes, bias=False)
        self.Convmask = nn.Conv2d(c, 1, 1, stride=1, padding=0, bias=True)

    def forward(self, x):
        x = self.model(x)
        mask = self.Convmask(x)
        k = mask.shape[-1] // self.grid            # the official AvgPool2d(2, 2) on the 14x14 map at 448
        mask = torch.tanh(F.avg_pool2d(mask, k, k)).flatten(1)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x), self.classifier_swap(x), mask

    def groups(self, lr):
        heads = [self.classifier, self.classifier_swap, self.Convmask]
        ids = {id(p) for m in heads for p in m.parameters()}
        base = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": base, "lr": lr}] + [{"params": m.parameters(), "lr": 10 * lr} for m in heads]


# ----------------------------------------------------------------------------------------------------------
# Destructions, as the official codes make them


def jigsaw_generator(images, n):
    """PMG: shuffle the cells, then swap cell (0, 0) with each in turn (one n^2-cycle for the batch)."""
    cells = [[a, b] for a in range(n) for b in range(n)]
    block = images.shape[-1] // n
    random.shuffle(cells)
    jig = images.clone()
    for x, y in cells:
        temp = jig[..., 0:block, 0:block].clone()
        jig[..., 0:block, 0:block] = jig[..., x * block:(x + 1) * block, y * block:(y + 1) * block].clone()
        jig[..., x * block:(x + 1) * block, y * block:(y + 1) * block] = temp
    return jig


def rmg(images, r):
    """RMG-PMSI's recursive mosaic: r nested 4-cycles of quadrants, recursing into a random quadrant."""
    quads = [(0, 0), (0, 1), (1, 0), (1, 1)]
    out = images.clone()
    s = images.shape[-1]
    bx = by = 0
    for _ in range(r):
        random.shuffle(quads)
        s //= 2
        for x, y in quads:
            temp = out[..., bx:bx + s, by:by + s].clone()
            out[..., bx:bx + s, by:by + s] = out[..., bx + x * s:bx + (x + 1) * s, by + y * s:by + (y + 1) * s].clone()
            out[..., bx + x * s:bx + (x + 1) * s, by + y * s:by + (y + 1) * s] = temp
        random.shuffle(quads)
        x, y = quads[3]
        bx, by = bx + x * s, by + y * s
    return out


def dcl_swap_order(n):
    """The cell order of DCL's `swap` (transforms/functional.py): adjacent-pair shuffles in the row being
    built and of the last two completed rows. Returns source_of[destination cell]."""
    cells = list(range(n * n))
    tmpx, tmpy = [], []
    count_x = count_y = 0
    k, ran = 1, 2
    for i in range(n * n):
        tmpx.append(cells[i])
        count_x += 1
        if len(tmpx) >= k:
            tmp = tmpx[count_x - ran:count_x]
            random.shuffle(tmp)
            tmpx[count_x - ran:count_x] = tmp
        if count_x == n:
            tmpy.append(tmpx)
            count_x = 0
            count_y += 1
            tmpx = []
        if len(tmpy) >= k:
            tmp2 = tmpy[count_y - ran:count_y]
            random.shuffle(tmp2)
            tmpy[count_y - ran:count_y] = tmp2
    return [c for row in tmpy for c in row]


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def cell_sums(x, n):
    """Channel-summed mean of each cell of an n x n grid: [B, n*n] (ImageStat's sum of per-band means)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, n, h // n, n, w // n).mean(dim=(3, 5)).sum(1).reshape(b, n * n)


def dcl_batch(images, labels, classes, n=7):
    """The official training batch: [I0, phi(I0), I1, phi(I1), ...] with labels, swap labels and laws."""
    b, c, h, w = images.shape
    ch, cw = h // n, w // n
    cells = images.reshape(b, c, n, ch, n, cw).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c, ch, cw)
    order = torch.tensor([dcl_swap_order(n) for _ in range(b)], device=images.device)
    moved = torch.gather(cells, 1, order.view(b, n * n, 1, 1, 1).expand_as(cells))
    destroyed = moved.reshape(b, n, n, c, ch, cw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    # The law: the original image is the identity; each destroyed cell takes the index of the original cell
    # with the closest brightness (on pixel-scale images, as the code computes it on PIL images).
    mean, std = IMAGENET_MEAN.to(images.device), IMAGENET_STD.to(images.device)
    orig_s = cell_sums(images * std + mean, n)
    dest_s = cell_sums(destroyed * std + mean, n)
    q = (dest_s.unsqueeze(2) - orig_s.unsqueeze(1)).abs().argmin(2).float()
    cells_n = n * n
    law2 = (q - cells_n // 2) / cells_n
    law1 = ((torch.arange(cells_n, device=images.device).float() - cells_n // 2) / cells_n).expand(b, cells_n)
    x = torch.stack([images, destroyed], 1).reshape(2 * b, c, h, w)
    y = torch.stack([labels, labels], 1).reshape(2 * b)
    y_swap = torch.stack([labels, labels + classes], 1).reshape(2 * b)
    law = torch.stack([law1, law2], 1).reshape(2 * b, cells_n)
    return x, y, y_swap, law


# ----------------------------------------------------------------------------------------------------------
# One training step per method


def count(net):
    return sum(p.numel() for p in net.parameters())


def make_step(method, backbone, classes, device):
    ce = nn.CrossEntropyLoss()
    if method == "baseline":
        if backbone == "mobilenet_v2":
            net = torchvision.models.mobilenet_v2(num_classes=classes, dropout=0.0)
        else:
            net = getattr(torchvision.models, backbone)(num_classes=classes)
        net = net.to(device).train()
        # configs/baseline-resnet50-cub.toml: DCL's setup, the new classifier at 10x, no weight decay.
        head = net.fc if backbone.startswith("resnet") else net.classifier
        ids = {id(p) for p in head.parameters()}
        groups = [{"params": [p for p in net.parameters() if id(p) not in ids], "lr": 8e-4},
                  {"params": head.parameters(), "lr": 8e-3}]
        opt = torch.optim.SGD(groups, lr=8e-4, momentum=0.9)

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = ce(net(x), y)
            loss.backward()
            opt.step()
            return [loss.item()]

        return step, 1, count(net)
    if method == "pmg":
        net = PMG(backbone, classes).to(device).train()
        opt = torch.optim.SGD(net.groups(2e-4), lr=2e-4, momentum=0.9, weight_decay=5e-4)
        plan = [(8, 0, 1.0), (4, 1, 1.0), (2, 2, 1.0), (None, 3, 2.0)]

        def step(x, y):
            losses = []
            for n, k, w in plan:
                opt.zero_grad(set_to_none=False)          # PyTorch 1.3/1.4 semantics
                xin = jigsaw_generator(x, n) if n else x
                out = net(xin)
                loss = ce(out[k], y) * w
                loss.backward()
                opt.step()
                losses.append(loss.item())
            return losses

        return step, len(plan), count(net)
    if method == "dcl":
        net = DCL(backbone, classes).to(device).train()
        opt = torch.optim.SGD(net.groups(8e-4), lr=8e-4, momentum=0.9)
        l1 = nn.L1Loss()

        def step(x, y):
            xb, yb, ys, law = dcl_batch(x, y, classes)
            opt.zero_grad(set_to_none=False)              # PyTorch 0.4 semantics
            out = net(xb)
            loss = ce(out[0], yb) + ce(out[1], ys) + l1(out[2], law)
            loss.backward()
            opt.step()
            return [loss.item()]

        return step, 1, count(net)
    if method == "rmg-pmsi":
        net = PMSI(backbone, classes).to(device).train()
        opt_backbone = torch.optim.SGD(net.features.parameters(), lr=3e-4, momentum=0.9, weight_decay=5e-4)
        opt_heads = torch.optim.SGD(net.head_parameters(), lr=3e-3, momentum=0.9, weight_decay=5e-4)
        plan = [(3, 0, 1.0), (2, 1, 1.0), (1, 2, 1.0), (None, 3, 2.0)]
        epoch = 5                                         # steady state: the backbone is updated too

        def step(x, y):
            losses = []
            for r, k, w in plan:
                opt_backbone.zero_grad(set_to_none=False)  # torch >= 1.8, < 2.0
                opt_heads.zero_grad(set_to_none=False)
                out = net(rmg(x, r) if r else x, train_flag="train")
                loss = ce(out[k], y) * w
                loss.backward()
                if epoch >= 5:
                    opt_backbone.step()
                opt_heads.step()
                losses.append(loss.item())
            return losses

        return step, len(plan), count(net)
    raise SystemExit(f"unknown method {method!r} (known: {', '.join(METHODS)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("method", choices=METHODS)
    ap.add_argument("backbone")
    ap.add_argument("size", type=int)
    ap.add_argument("batch", type=int)
    ap.add_argument("iters", type=int)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "metal"])
    ap.add_argument("--threads", type=int,
                    default=int(os.environ.get("OMP_NUM_THREADS") or os.environ.get("RAYON_NUM_THREADS") or 2))
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    record = {
        "suite": "methods", "impl": "torch", "version": torch.__version__, "method": a.method,
        "backbone": a.backbone, "size": a.size, "batch": a.batch, "iters": a.iters, "threads": a.threads,
        "isa": torch.backends.cpu.get_cpu_capability(), "precision": a.precision,
    }
    device = "cpu"
    if a.device == "cuda":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif a.device == "metal":
        device = "mps" if torch.backends.mps.is_available() else "cpu"
    record["device"] = {"cuda": "cuda", "mps": "metal"}.get(device, "cpu")
    if a.device != "cpu" and device == "cpu":
        print(f"torch: {a.device} is not available, running on the CPU", file=sys.stderr)
    if a.method == "coarse2fine":
        record["skipped"] = "Coarse2Fine has no public code: no PyTorch counterpart"
        print(f"torch {a.method}: skipped ({record['skipped']})", file=sys.stderr)
        print(json.dumps(record), flush=True)
        return
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    step, opt_steps, params = make_step(a.method, a.backbone, a.classes, device)
    x = torch.randn(a.batch, 3, a.size, a.size, device=device)
    y = torch.randint(0, a.classes, (a.batch,), device=device)
    times = []
    for it in range(a.iters + 1):
        t0 = time.perf_counter()
        if a.precision == "bf16":
            with torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16):
                losses = step(x, y)
        else:
            losses = step(x, y)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if it > 0:
            times.append(dt)
        if not all(v == v and abs(v) != float("inf") for v in losses):
            raise SystemExit(f"non-finite loss {losses}")
    median = statistics.median(times) if times else float("nan")
    mean = sum(times) / len(times) if times else float("nan")
    record.update({
        "parameters": params, "optimizer_steps": opt_steps, "median_s": median if times else None,
        "mean_s": mean if times else None,
        "images_per_s": a.batch / median if times else None, "peak_rss_mib": peak_rss_mib(),
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "loss": sum(losses),
    })
    print(f"torch {a.method} {a.backbone} {a.size} b{a.batch} on {record['device']}: {median:.3f} s/step "
          f"(median of {a.iters}, mean {mean:.3f}), {record['images_per_s'] or 0:.2f} img/s, "
          f"peak RSS {record['peak_rss_mib'] or 0:.0f} MiB, loss {record['loss']:.3f}", file=sys.stderr)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
