"""PyTorch's side of examples/allreduce.rs: torch.distributed.all_reduce over gloo (DDP's CPU backend) on the
same buffer sizes, after a barrier. Run: torchrun --nproc-per-node 2 crates/mpi/examples/allreduce_torch.py"""
import time

import torch
import torch.distributed as dist

SIZES = [
    ("ResNet-18/4 (synthetic baseline)", 177_037 * 4),
    ("one 25 MiB bucket", 25 << 20),
    ("ResNet-50", 25_557_032 * 4),
]

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
for name, nbytes in SIZES:
    buf = torch.ones(nbytes // 4)
    reps = max(5, min(200, 200_000_000 // nbytes))
    dist.all_reduce(buf)
    total = 0.0
    for _ in range(reps):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buf)
        total += time.perf_counter() - start
    if rank == 0:
        ms = 1e3 * total / reps
        print(f"{name}: {nbytes / 1e6:.1f} MB, {ms:.2f} ms per all-reduce over {world} processes "
              f"({nbytes / 1e6 / ms:.2f} GB/s algorithm bandwidth)")
dist.destroy_process_group()
