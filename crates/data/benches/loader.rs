//! Loader throughput on CUB-sized JPEGs (500x375): decode alone, decode + PMG training pipeline (resize 550,
//! random crop 448 with padding 8, flip, normalise) on one thread, and whole loader epochs (batch 16, into
//! candle CPU tensors) with 1, 2, ... threads.
//!
//! `cargo bench -p fgvc-data --bench loader` (thread counts: `FGVC_BENCH_THREADS=1,2,4`, default `1,2`).
//! Criterion reports throughput in elements/s, i.e. images/s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fgvc_augment::transforms::Pipeline;
use fgvc_data::{
    decode_image, folder, Dataset, Loader, LoaderConfig, Split, Synthetic, SyntheticConfig,
    Validation,
};
use rand::{Rng, SeedableRng};

const IMAGES: usize = 64;

/// Photo-like JPEGs: a rendered bird scene with sensor-like noise, 500x375, quality 90.
fn make_images(dir: &std::path::Path) -> Vec<PathBuf> {
    let scenes = Synthetic::new(
        SyntheticConfig {
            classes: 8,
            image_size: 500,
            train_per_class: IMAGES / 8,
            ..Default::default()
        },
        Split::Train,
    )
    .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut paths = Vec::new();
    let mut bytes = 0u64;
    for i in 0..IMAGES {
        let scene = scenes.load(i).unwrap();
        let mut img = image::imageops::crop_imm(&scene, 0, 60, 500, 375).to_image();
        for p in img.pixels_mut() {
            for c in p.0.iter_mut() {
                *c = (*c as i32 + rng.random_range(-12..=12)).clamp(0, 255) as u8;
            }
        }
        let path = dir
            .join(format!("class{}", i % 8))
            .join(format!("{i:04}.jpg"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        drop(out);
        bytes += std::fs::metadata(&path).unwrap().len();
        paths.push(path);
    }
    eprintln!(
        "{IMAGES} JPEGs of 500x375, {:.0} KB on average",
        bytes as f64 / IMAGES as f64 / 1024.0
    );
    paths
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let paths = make_images(dir.path());
    let pipeline = Pipeline::pmg_train();

    let mut g = c.benchmark_group("cub_sized_jpeg");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(IMAGES as u64));
    g.bench_function("decode/1 thread", |b| {
        b.iter(|| {
            for p in &paths {
                std::hint::black_box(decode_image(p, "bench").unwrap());
            }
        })
    });
    g.bench_function("decode+pmg_train/1 thread", |b| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        b.iter(|| {
            for p in &paths {
                let img = decode_image(p, "bench").unwrap();
                std::hint::black_box(pipeline.run(img, &mut rng).unwrap());
            }
        })
    });

    let data: Arc<dyn Dataset> =
        Arc::new(folder::load(dir.path(), Split::Train, &Validation::None).unwrap());
    assert_eq!(data.len(), IMAGES);
    let threads: Vec<usize> = std::env::var("FGVC_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|t| {
            t.trim()
                .parse()
                .expect("FGVC_BENCH_THREADS: comma-separated thread counts")
        })
        .collect();
    for t in threads {
        let cfg = LoaderConfig {
            threads: t,
            prefetch: 2,
            ..LoaderConfig::train(16)
        };
        let loader = Loader::new(data.clone(), pipeline.clone(), cfg, &Device::Cpu).unwrap();
        let mut epoch = 0u64;
        g.bench_function(format!("loader epoch, batch 16/{t} threads"), |b| {
            b.iter(|| {
                epoch += 1;
                let mut n = 0;
                for batch in loader.epoch(epoch) {
                    n += batch.unwrap().len();
                }
                assert_eq!(n, IMAGES);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
