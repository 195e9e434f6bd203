//! Throughput of the host transforms on one CUB-sized image (500 x 375): the PMG and DCL training pipelines end
//! to end, and each of their pieces. Run with `cargo bench -p fgvc-augment --bench transforms`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fgvc_augment::transforms::{
    horizontal_flip_in_place, random_crop, resize, resize_and_crop, rotate, Normalize, Pipeline,
    ResizeFilter,
};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A deterministic 500 x 375 photo-sized test image with texture in every channel.
fn test_image() -> RgbImage {
    RgbImage::from_fn(500, 375, |x, y| {
        image::Rgb([
            (x * 255 / 499) as u8,
            ((x * x * 5 + y * y * 3 + x * y * 11) % 256) as u8,
            if ((x / 8) + (y / 6)) % 2 == 0 {
                230
            } else {
                20
            },
        ])
    })
}

fn bench_pipelines(c: &mut Criterion) {
    let img = test_image();
    let mut group = c.benchmark_group("pipeline_500x375");
    group.throughput(Throughput::Elements(1));
    for (name, pipeline) in [
        ("pmg_train", Pipeline::pmg_train()),
        ("pmg_test", Pipeline::pmg_test()),
        ("dcl_train", Pipeline::dcl_train()),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut out = vec![0f32; 3 * 448 * 448];
        group.bench_function(name, |b| {
            b.iter(|| {
                pipeline
                    .run_into(black_box(img.clone()), &mut rng, &mut out)
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn bench_pieces(c: &mut Criterion) {
    let img = test_image();
    let resized = resize(&img, 550, 550, ResizeFilter::Bilinear).unwrap();
    let resized_512 = resize(&img, 512, 512, ResizeFilter::Bilinear).unwrap();
    let cropped = random_crop(&resized, 448, 448, 8, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    let mut group = c.benchmark_group("pieces");
    group.throughput(Throughput::Elements(1));
    group.bench_function("resize_500x375_to_550x550_bilinear", |b| {
        b.iter(|| resize(black_box(&img), 550, 550, ResizeFilter::Bilinear).unwrap())
    });
    group.bench_function("resize_and_crop_500x375_to_550x550_window_448", |b| {
        b.iter(|| {
            resize_and_crop(
                black_box(&img),
                (550, 550),
                ResizeFilter::Bilinear,
                (51, 51),
                (448, 448),
            )
            .unwrap()
        })
    });
    group.bench_function("resize_500x375_to_128x128_bilinear", |b| {
        b.iter(|| resize(black_box(&img), 128, 128, ResizeFilter::Bilinear).unwrap())
    });
    group.bench_function("random_crop_448_pad8_of_550", |b| {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        b.iter(|| random_crop(black_box(&resized), 448, 448, 8, &mut rng).unwrap())
    });
    group.bench_function("flip_448", |b| {
        let mut im = cropped.clone();
        b.iter(|| horizontal_flip_in_place(black_box(&mut im)))
    });
    group.bench_function("to_chw_448", |b| {
        let mut out = vec![0f32; 3 * 448 * 448];
        b.iter(|| {
            Normalize::HALF
                .write_chw(black_box(&cropped), &mut out)
                .unwrap()
        })
    });
    group.bench_function("rotate_512_by_7.3deg", |b| {
        b.iter(|| rotate(black_box(&resized_512), 7.3, [0, 0, 0]))
    });
    group.bench_function("clone_500x375", |b| b.iter(|| black_box(&img).clone()));
    group.finish();
}

criterion_group!(benches, bench_pipelines, bench_pieces);
criterion_main!(benches);
