//! The GEMM behind our convolutions (the `gemm` crate) against the system OpenBLAS, on the products a
//! ResNet-50 training step at 224² runs, in the two ways the conv kernels can call them: one product split
//! across the threads, or one image per thread with single-threaded products.
//!
//! ```sh
//! apt-get install libopenblas-dev
//! RAYON_NUM_THREADS=2 cargo run --release -p fgvc-ops --features openblas-compare --example gemm_vs_openblas [rounds]
//! ```
//!
//! Rounds alternate the four variants so that a slow spell of the machine hits them alike; the table gives
//! the median and the best GFLOP/s of each over the rounds.

use std::time::Instant;

#[link(name = "openblas")]
extern "C" {
    fn cblas_sgemm(
        order: i32,
        trans_a: i32,
        trans_b: i32,
        m: i32,
        n: i32,
        k: i32,
        alpha: f32,
        a: *const f32,
        lda: i32,
        b: *const f32,
        ldb: i32,
        beta: f32,
        c: *mut f32,
        ldc: i32,
    );
    fn openblas_set_num_threads(n: i32);
}

/// `c = a * b`, all dense row-major, by the `gemm` crate.
fn crate_gemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every access of the three dense row-major matrices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `c = a * b`, all dense row-major, by OpenBLAS's CBLAS interface.
fn openblas(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    const ROW_MAJOR: i32 = 101;
    const NO_TRANS: i32 = 111;
    // SAFETY: the assert above bounds every access; the leading dimensions are the row lengths.
    unsafe {
        cblas_sgemm(
            ROW_MAJOR,
            NO_TRANS,
            NO_TRANS,
            m as i32,
            n as i32,
            k as i32,
            1.0,
            a.as_ptr(),
            k as i32,
            b.as_ptr(),
            n as i32,
            0.0,
            c.as_mut_ptr(),
            n as i32,
        )
    }
}

fn seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("rounds must be a number"))
        .unwrap_or(5);
    let threads = rayon::current_num_threads();
    // (m, n, k, what): forward Y = W * cols (m = C_out, n = OH*OW, k = C_in*kH*kW), input gradient
    // dcols = W^T * dY and weight gradient dW = dY * cols^T, per image, batch 8.
    let shapes = [
        (64, 3136, 576, "fwd 3x3 64->64 56²"),
        (256, 3136, 64, "fwd 1x1 64->256 56²"),
        (64, 3136, 256, "fwd 1x1 256->64 56²"),
        (128, 784, 1152, "fwd 3x3 128->128 28²"),
        (256, 196, 2304, "fwd 3x3 256->256 14²"),
        (256, 196, 1024, "fwd 1x1 1024->256 14²"),
        (1024, 196, 256, "fwd 1x1 256->1024 14²"),
        (512, 49, 4608, "fwd 3x3 512->512 7²"),
        (2048, 49, 512, "fwd 1x1 512->2048 7²"),
        (64, 12544, 147, "fwd stem 7x7 3->64 112²"),
        (576, 3136, 64, "dx 3x3 64->64 56²"),
        (2304, 196, 256, "dx 3x3 256->256 14²"),
        (256, 2304, 196, "dW 3x3 256->256 14²"),
        (4608, 49, 512, "dx 3x3 512->512 7²"),
        (512, 4608, 49, "dW 3x3 512->512 7²"),
    ];
    println!("{threads} threads, {rounds} rounds; GFLOP/s as median (best)\n");
    println!("| product | m x n x k | gemm crate, split | gemm crate, per image | OpenBLAS, split | OpenBLAS, per image |");
    println!("|---|---|---|---|---|---|");
    for (m, n, k, what) in shapes {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let mut c: Vec<Vec<f32>> = (0..threads.max(1)).map(|_| vec![0f32; m * n]).collect();
        let gflop = 2.0 * (m * n * k) as f64 / 1e9;
        let reps = (1.0 / gflop).clamp(3.0, 200.0) as usize;
        let mut rates = vec![Vec::new(); 4];
        for _ in 0..rounds {
            let split = seconds(reps, || crate_gemm(m, n, k, &a, &b, &mut c[0], threads));
            let per_image = seconds(reps, || {
                rayon::scope(|s| {
                    for ci in c.iter_mut() {
                        let (a, b) = (&a, &b);
                        s.spawn(move |_| crate_gemm(m, n, k, a, b, ci, 1));
                    }
                })
            }) / threads as f64;
            // SAFETY: a plain setter of OpenBLAS's thread count.
            unsafe { openblas_set_num_threads(threads as i32) };
            let blas_split = seconds(reps, || openblas(m, n, k, &a, &b, &mut c[0]));
            unsafe { openblas_set_num_threads(1) };
            let blas_per_image = seconds(reps, || {
                rayon::scope(|s| {
                    for ci in c.iter_mut() {
                        let (a, b) = (&a, &b);
                        s.spawn(move |_| openblas(m, n, k, a, b, ci));
                    }
                })
            }) / threads as f64;
            for (r, t) in rates
                .iter_mut()
                .zip([split, per_image, blas_split, blas_per_image])
            {
                r.push(gflop / t);
            }
        }
        let cell = |r: &Vec<f64>| {
            format!(
                "{:.0} ({:.0})",
                median(r.clone()),
                r.iter().cloned().fold(0., f64::max)
            )
        };
        println!(
            "| {what} | {m} x {n} x {k} | {} | {} | {} | {} |",
            cell(&rates[0]),
            cell(&rates[1]),
            cell(&rates[2]),
            cell(&rates[3])
        );
    }
}
