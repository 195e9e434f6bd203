//! The time of one all-reduce over MPI, as the trainer issues them (a bucket of f32 gradients summed over
//! every rank), at the sizes fgvc's models produce, after a barrier so that skew between ranks is not
//! counted: `mpirun -np 2 target/release/examples/allreduce`. `allreduce_torch.py` beside it times
//! PyTorch's gloo backend on the same sizes.

use std::time::{Duration, Instant};

use fgvc_distributed::Group;

/// Bytes per all-reduce: the synthetic baseline's gradient (177,037 parameters), DDP's 25 MiB bucket, and
/// ResNet-50's whole gradient (25.6 M parameters).
const SIZES: &[(&str, usize)] = &[
    ("ResNet-18/4 (synthetic baseline)", 177_037 * 4),
    ("one 25 MiB bucket", 25 << 20),
    ("ResNet-50", 25_557_032 * 4),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let group: Group = fgvc_mpi::init(Duration::from_secs(600))?;
    for &(name, bytes) in SIZES {
        let mut buf = vec![1f32; bytes / 4];
        let reps = (200_000_000 / bytes).clamp(5, 200);
        group.sum_f32(&mut buf)?; // warm-up
        let mut total = Duration::ZERO;
        for _ in 0..reps {
            group.barrier()?;
            let start = Instant::now();
            group.sum_f32(&mut buf)?;
            total += start.elapsed();
        }
        if group.is_main() {
            let ms = 1e3 * total.as_secs_f64() / reps as f64;
            println!(
                "{name}: {:.1} MB, {ms:.2} ms per all-reduce over {} processes ({:.2} GB/s algorithm bandwidth)",
                bytes as f64 / 1e6,
                group.world_size(),
                bytes as f64 / 1e6 / ms
            );
        }
    }
    Ok(())
}
