//! Loader throughput on CUB-sized JPEGs (500x375, ~100 KB), reporting wall-clock images/s and CPU time per
//! image (the latter is robust on a machine shared with other work).
//!
//! `cargo run --release -p fgvc-data --example loader_throughput -- [images] [threads,...] [batch]`
//! (defaults: 64 images, threads 1,2, batch 16). The pipeline is PMG training: resize 550, random crop 448 (padding 8),
//! flip, normalise; batches become candle CPU tensors.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use fgvc_augment::transforms::Pipeline;
use fgvc_data::{
    decode_image, folder, Dataset, Loader, LoaderConfig, Split, Synthetic, SyntheticConfig,
    Validation,
};
use rand::{Rng, SeedableRng};

/// Process CPU time (user + system) in seconds, from /proc (Linux); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn measure(label: &str, images: usize, f: impl FnOnce()) {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    f();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(c0).map(|(a, b)| a - b);
    let cpu_text = cpu
        .map(|c| format!("{:6.2} ms CPU/image", 1000.0 * c / images as f64))
        .unwrap_or_default();
    println!(
        "{label:<38} {:7.1} images/s wall   {cpu_text}",
        images as f64 / wall
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let threads: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|t| t.parse()).collect())
        .transpose()?
        .unwrap_or(vec![1, 2]);
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(16);

    let dir = tempfile::tempdir()?;
    let scenes = Synthetic::new(
        SyntheticConfig {
            classes: 8,
            image_size: 500,
            train_per_class: n.div_ceil(8),
            ..Default::default()
        },
        Split::Train,
    )?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut paths = Vec::new();
    let mut bytes = 0;
    for i in 0..n {
        let mut img = image::imageops::crop_imm(&scenes.load(i)?, 0, 60, 500, 375).to_image();
        for p in img.pixels_mut() {
            for c in p.0.iter_mut() {
                *c = (*c as i32 + rng.random_range(-12..=12)).clamp(0, 255) as u8;
            }
        }
        let path = dir
            .path()
            .join(format!("c{}", i % 8))
            .join(format!("{i:05}.jpg"));
        std::fs::create_dir_all(path.parent().unwrap())?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img)?;
        drop(out);
        bytes += std::fs::metadata(&path)?.len();
        paths.push(path);
    }
    println!(
        "{n} JPEGs of 500x375, {:.0} KB on average; {} cores available",
        bytes as f64 / n as f64 / 1024.0,
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
    );
    let pipeline = Pipeline::pmg_train();

    measure("decode, 1 thread", n, || {
        for p in &paths {
            std::hint::black_box(decode_image(p, "bench").unwrap());
        }
    });
    measure("decode + pmg_train, 1 thread", n, || {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for p in &paths {
            let img = decode_image(p, "bench").unwrap();
            std::hint::black_box(pipeline.run(img, &mut rng).unwrap());
        }
    });
    let data: Arc<dyn Dataset> =
        Arc::new(folder::load(dir.path(), Split::Train, &Validation::None)?);
    for t in threads {
        let cfg = LoaderConfig {
            threads: t,
            ..LoaderConfig::train(batch)
        };
        let loader = Loader::new(data.clone(), pipeline.clone(), cfg, &Device::Cpu)?;
        let expected = loader.num_batches() * batch;
        // One epoch to warm up, two measured.
        for b in loader.epoch(0) {
            b?;
        }
        measure(
            &format!("loader, batch {batch}, {t} thread(s)"),
            2 * expected,
            || {
                for e in 1..=2 {
                    let mut got = 0;
                    for b in loader.epoch(e) {
                        got += b.unwrap().len();
                    }
                    assert_eq!(got, expected);
                }
            },
        );
    }
    Ok(())
}
