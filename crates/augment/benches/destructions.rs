//! Each destruction on a 16x3x448x448 batch, next to a plain copy of the same batch (the goal: within 2x).
//!
//! `cargo bench -p fgvc-augment --bench destructions`

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fgvc_augment::{Jigsaw, JigsawMode, RcmMode, RecursiveMosaic, RegionConfusion};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn destructions(c: &mut Criterion) {
    let images = Tensor::rand(0f32, 1., (16, 3, 448, 448), &Device::Cpu).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut group = c.benchmark_group("destroy_16x3x448x448");
    group.throughput(Throughput::Elements(16));
    group.sample_size(30);
    group.bench_function("copy", |b| b.iter(|| images.copy().unwrap()));
    for n in [8, 4, 2] {
        let jigsaw = Jigsaw::new(n).unwrap();
        group.bench_function(format!("jigsaw_{n}"), |b| {
            b.iter(|| jigsaw.apply(&images, &mut rng).unwrap())
        });
    }
    let per_image = Jigsaw::with_mode(8, JigsawMode::PerImage).unwrap();
    group.bench_function("jigsaw_8_per_image", |b| {
        b.iter(|| per_image.apply(&images, &mut rng).unwrap())
    });
    for (name, mode) in [
        ("rcm_7_official", RcmMode::Official),
        ("rcm_7_paper", RcmMode::Paper),
    ] {
        let rcm = RegionConfusion::new(7, 2, mode).unwrap();
        group.bench_function(name, |b| b.iter(|| rcm.apply(&images, &mut rng).unwrap()));
    }
    let rcm = RegionConfusion::new(7, 2, RcmMode::Official).unwrap();
    let destroyed = rcm.apply(&images, &mut rng).unwrap().images;
    group.bench_function("rcm_7_official_law", |b| {
        b.iter(|| rcm.official_law(&images, &destroyed).unwrap())
    });
    for levels in [3, 2, 1] {
        let mosaic = RecursiveMosaic::new(levels).unwrap();
        group.bench_function(format!("mosaic_{levels}"), |b| {
            b.iter(|| mosaic.apply(&images, &mut rng).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, destructions);
criterion_main!(benches);
