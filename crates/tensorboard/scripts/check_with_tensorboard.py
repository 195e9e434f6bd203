#!/usr/bin/env python3
"""Checks that TensorBoard's own reader accepts the event files fgvc writes: an optional, manual check,
not part of the test suite (it needs the `tensorboard` Python package).

    python3 -m venv /tmp/tbvenv && /tmp/tbvenv/bin/pip install tensorboard
    /tmp/tbvenv/bin/python crates/tensorboard/scripts/check_with_tensorboard.py runs/NAME

RUN is a run directory (its event files in RUN/tb/). The script loads RUN/tb/ with TensorBoard's
EventAccumulator (which applies its restart rule, as `tensorboard --logdir` does), prints every tag, and
compares each scalar of a `train`, `epoch`, `eval` and `test` record of RUN/metrics.jsonl with the value
TensorBoard holds at that step (as float32). It exits non-zero on the first mismatch or missing value.
"""

import json
import struct
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
    IMAGES,
    SCALARS,
)


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def expected(records):
    """(tag, step) -> value of every scalar fgvc logs for the records of metrics.jsonl."""
    out = {}
    main = None
    for r in records:
        step = r["step"]
        kind = r["kind"]
        if kind in ("train", "epoch"):
            for key, name in [
                ("loss", "loss"),
                ("train_acc", "accuracy"),
                ("images_per_sec", "images_per_sec"),
                ("seconds", "seconds"),
                ("skipped", "skipped"),
            ]:
                if key in r:
                    out[(f"{kind}/{name}", step)] = r[key]
            for name, v in r.get("losses", {}).items():
                out[(f"{kind}/loss/{name}", step)] = v
            for group, v in r.get("lrs", {}).items():
                out[(f"lr/{group}", step)] = v
        elif kind in ("eval", "test"):
            prefix = f"eval/{r['split']}" if kind == "eval" else "test"
            heads = r.get("heads", {})
            for head, v in heads.items():
                out[(f"{prefix}/{head}/top1", step)] = v
                if v == r.get("top1") and main is None:
                    main = head
    return out


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    run = Path(argv[1])
    acc = EventAccumulator(str(run / "tb"), size_guidance={SCALARS: 0, IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    print(f"scalars: {len(tags['scalars'])} tags, images: {tags['images']}")
    held = {}
    for tag in tags["scalars"]:
        for e in acc.Scalars(tag):
            if (tag, e.step) in held:
                sys.exit(f"{tag} at step {e.step} twice: the restart rule did not apply")
            held[(tag, e.step)] = e.value
    records = [json.loads(l) for l in open(run / "metrics.jsonl") if l.strip()]
    want = expected(records)
    for (tag, step), v in sorted(want.items()):
        got = held.get((tag, step))
        if got is None:
            sys.exit(f"{tag} at step {step}: in metrics.jsonl ({v}), not in TensorBoard")
        if abs(got - f32(v)) > 1e-6 * max(1.0, abs(v)):
            sys.exit(f"{tag} at step {step}: {got} in TensorBoard, {v} in metrics.jsonl")
    for tag in tags["images"]:
        for e in acc.Images(tag):
            if not e.encoded_image_string.startswith(b"\x89PNG"):
                sys.exit(f"{tag} at step {e.step} is not a PNG")
            print(f"  {tag} step {e.step}: {e.width}x{e.height} PNG")
    print(f"ok: TensorBoard read {len(held)} scalar values; all {len(want)} of metrics.jsonl match")


if __name__ == "__main__":
    main(sys.argv)
