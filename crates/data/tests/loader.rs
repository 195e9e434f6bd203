//! The loader: batch shapes and contents, reproducibility across thread counts, drop_last, bad input,
//! grayscale and CMYK decoding.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use common::*;
use fgvc_augment::transforms::{Normalize, Pipeline};
use fgvc_data::{
    decode_image, folder, DataError, Dataset, Loader, LoaderConfig, Split, Synthetic,
    SyntheticConfig, Validation,
};

fn synthetic(n_per_class: usize) -> Arc<dyn Dataset> {
    let c = SyntheticConfig {
        classes: 5,
        image_size: 24,
        train_per_class: n_per_class,
        ..Default::default()
    };
    Arc::new(Synthetic::new(c, Split::Train).unwrap())
}

/// A random pipeline (crop offsets and flips vary), small enough to be fast.
fn random_pipeline() -> Pipeline {
    Pipeline::pmg_train_at(28, 20)
}

fn collect(loader: &Loader, epoch: u64) -> Vec<fgvc_data::Batch> {
    loader.epoch(epoch).collect::<Result<Vec<_>, _>>().unwrap()
}

fn flat(b: &fgvc_data::Batch) -> Vec<f32> {
    b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn batches_have_the_right_shape_labels_and_cover_the_epoch() {
    let data = synthetic(6); // 30 samples
    let loader = Loader::new(
        data.clone(),
        random_pipeline(),
        LoaderConfig::train(8).with_threads(2),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(loader.num_batches(), 3);
    let batches = collect(&loader, 0);
    assert_eq!(
        batches.len(),
        3,
        "30 samples in batches of 8 with drop_last"
    );
    let mut seen = Vec::new();
    for b in &batches {
        assert_eq!(b.images.dims(), &[8, 3, 20, 20]);
        assert_eq!(b.images.dtype(), candle_core::DType::F32);
        assert_eq!(b.labels.dtype(), candle_core::DType::U32);
        let labels = b.labels.to_vec1::<u32>().unwrap();
        assert_eq!(
            labels,
            b.indices.iter().map(|&i| data.label(i)).collect::<Vec<_>>()
        );
        // Normalize(0.5, 0.5) maps pixels into [-1, 1].
        assert!(flat(b).iter().all(|v| (-1.0..=1.0).contains(v)));
        seen.extend_from_slice(&b.indices);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 24, "no index twice in an epoch");
    assert_eq!(
        loader.order(0)[..24].to_vec(),
        batches
            .iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_batch_holds_the_pipeline_output_of_each_sample() {
    let data = synthetic(2);
    let loader = Loader::new(
        data.clone(),
        random_pipeline(),
        LoaderConfig::train(4).with_seed(3),
        &Device::Cpu,
    )
    .unwrap();
    let b = &collect(&loader, 2)[0];
    let all = flat(b);
    let per = 3 * 20 * 20;
    for (k, &i) in b.indices.iter().enumerate() {
        let p = loader.prepare(2, i).unwrap();
        assert_eq!(
            p.data,
            all[k * per..(k + 1) * per].to_vec(),
            "slot {k} (index {i})"
        );
        // The same as running the pipeline by hand with the documented per-sample generator.
        let mut rng = fgvc_data::sample_rng(3, 2, i);
        assert_eq!(
            p.data,
            random_pipeline()
                .run(data.load(i).unwrap(), &mut rng)
                .unwrap()
        );
    }
}

#[test]
fn reproducible_regardless_of_thread_count() {
    let data = synthetic(8);
    let run = |threads: usize, prefetch: usize| {
        let cfg = LoaderConfig {
            threads,
            prefetch,
            ..LoaderConfig::train(6).with_seed(11)
        };
        let loader = Loader::new(data.clone(), random_pipeline(), cfg, &Device::Cpu).unwrap();
        collect(&loader, 1)
            .iter()
            .map(|b| (b.indices.clone(), flat(b)))
            .collect::<Vec<_>>()
    };
    let one = run(1, 1);
    assert_eq!(one, run(3, 4));
    assert_eq!(one, run(2, 2));
}

#[test]
fn epochs_and_seeds_change_order_and_augmentation() {
    let data = synthetic(8);
    let loader = |seed| {
        Loader::new(
            data.clone(),
            random_pipeline(),
            LoaderConfig::train(8).with_seed(seed),
            &Device::Cpu,
        )
        .unwrap()
    };
    let a = loader(1);
    assert_eq!(a.order(0), a.order(0));
    assert_ne!(a.order(0), a.order(1));
    assert_ne!(a.order(0), loader(2).order(0));
    let mut sorted = a.order(5);
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40).collect::<Vec<_>>());
    // The same sample gets another crop/flip in another epoch, the same one in the same epoch.
    let differs = (0..8).any(|i| a.prepare(0, i).unwrap().data != a.prepare(1, i).unwrap().data);
    assert!(differs, "augmentation did not change between epochs");
    assert_eq!(
        a.prepare(4, 7).unwrap().data,
        loader(1).prepare(4, 7).unwrap().data
    );
    // Without shuffling the order is the dataset's.
    let eval = Loader::new(
        data.clone(),
        Pipeline::pmg_test_at(28, 20),
        LoaderConfig::eval(8),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(eval.order(3), (0..40).collect::<Vec<_>>());
}

#[test]
fn drop_last_and_the_batch_of_one_guard() {
    let data = synthetic(2); // 10 samples
    let test_pipeline = Pipeline::pmg_test_at(28, 20);
    let eval = Loader::new(
        data.clone(),
        test_pipeline.clone(),
        LoaderConfig::eval(4),
        &Device::Cpu,
    )
    .unwrap();
    let sizes: Vec<usize> = collect(&eval, 0).iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    let train = Loader::new(
        data.clone(),
        test_pipeline.clone(),
        LoaderConfig::train(4),
        &Device::Cpu,
    )
    .unwrap();
    let sizes: Vec<usize> = collect(&train, 0).iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![4, 4]);
    // With 10 samples and batches of 3, the last training batch would be a single sample: dropped.
    let train3 = Loader::new(
        data.clone(),
        test_pipeline.clone(),
        LoaderConfig::train(3),
        &Device::Cpu,
    )
    .unwrap();
    assert!(collect(&train3, 0).iter().all(|b| b.len() == 3));
    // Training configurations that BatchNorm cannot use are refused.
    let err = Loader::new(
        data.clone(),
        test_pipeline.clone(),
        LoaderConfig::train(1),
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("BatchNorm"), "{err}");
    let err = Loader::new(
        data.clone(),
        test_pipeline.clone(),
        LoaderConfig::train(16),
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no batch"), "{err}");
    let bad = LoaderConfig {
        prefetch: 0,
        ..LoaderConfig::eval(2)
    };
    assert!(Loader::new(data, test_pipeline, bad, &Device::Cpu).is_err());
}

#[test]
fn a_pipeline_without_a_fixed_size_is_a_clear_error_on_mixed_sizes() {
    let dir = tempfile::tempdir().unwrap();
    write_jpeg(&dir.path().join("a/0.jpg"), 10, 8, 1);
    write_jpeg(&dir.path().join("a/1.jpg"), 12, 8, 2);
    write_jpeg(&dir.path().join("b/0.jpg"), 12, 8, 3); // a folder dataset needs two classes
    let data = Arc::new(folder::load(dir.path(), Split::Train, &Validation::None).unwrap());
    let loader = Loader::new(
        data,
        Pipeline::new(vec![], Normalize::HALF),
        LoaderConfig::eval(2),
        &Device::Cpu,
    )
    .unwrap();
    let err = loader.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(
        err.contains("differ in shape") && err.contains("0.jpg") && err.contains("1.jpg"),
        "{err}"
    );
}

/// An image folder of 9 good images (3 classes) plus, in class `b`, a corrupt, a truncated and a vanished one.
fn folder_with_bad_files(root: &Path) -> Arc<dyn Dataset> {
    for (class, tag) in [("a", 10u8), ("b", 20), ("c", 30)] {
        for i in 0..3 {
            write_jpeg(
                &root.join(class).join(format!("good{i}.jpg")),
                30,
                30,
                tag + i,
            );
        }
    }
    std::fs::write(root.join("b/corrupt.jpg"), b"this is not a jpeg at all").unwrap();
    let mut bytes = std::fs::read(root.join("a/good0.jpg")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(root.join("b/truncated.jpg"), bytes).unwrap();
    write_jpeg(&root.join("b/vanished.jpg"), 30, 30, 0);
    let data = folder::load(root, Split::Train, &Validation::None).unwrap();
    std::fs::remove_file(root.join("b/vanished.jpg")).unwrap();
    Arc::new(data)
}

#[test]
fn bad_images_are_errors_that_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder_with_bad_files(dir.path());
    for (name, what) in [
        ("corrupt.jpg", "cannot decode"),
        ("truncated.jpg", "cannot decode"),
        ("vanished.jpg", "missing"),
    ] {
        let i = (0..data.len())
            .find(|&i| data.describe(i).ends_with(name))
            .unwrap();
        let err = data.load(i).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(what), "{name}: {err}");
    }
    let loader = Loader::new(
        data,
        Pipeline::pmg_test_at(24, 16),
        LoaderConfig::eval(4),
        &Device::Cpu,
    )
    .unwrap();
    let results: Vec<_> = loader.epoch(0).collect();
    let last = results.last().unwrap().as_ref().unwrap_err();
    assert!(
        matches!(
            last,
            DataError::Decode { .. } | DataError::MissingImage { .. }
        ),
        "{last}"
    );
    assert!(last.to_string().contains(".jpg"), "{last}");
    assert!(
        results[..results.len() - 1].iter().all(|r| r.is_ok()),
        "the epoch ends at the first error"
    );
}

#[test]
fn skip_bad_logs_counts_and_keeps_batches_full() {
    let dir = tempfile::tempdir().unwrap();
    let data = folder_with_bad_files(dir.path());
    assert_eq!(data.len(), 12);
    let cfg = LoaderConfig {
        skip_bad: true,
        ..LoaderConfig::train(3).with_threads(2)
    };
    let loader = Loader::new(
        data.clone(),
        Pipeline::pmg_train_at(24, 16),
        cfg,
        &Device::Cpu,
    )
    .unwrap();
    for epoch in 0..2 {
        let mut it = loader.epoch(epoch);
        let batches: Vec<_> = it.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(it.skipped(), 3);
        assert_eq!(batches.len(), 3, "9 good samples in full batches of 3");
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        assert!(batches.iter().all(|b| b.len() == 3));
        seen.sort_unstable();
        let good: Vec<usize> = (0..data.len())
            .filter(|&i| data.describe(i).contains("good"))
            .collect();
        assert_eq!(seen, good);
    }
    assert_eq!(loader.skipped_total(), 6);
}

#[test]
fn grayscale_and_cmyk_become_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let gray = dir.path().join("gray.jpg");
    write_gray_jpeg(&gray, 20, 10);
    let img = decode_image(&gray, "test").unwrap();
    assert_eq!(img.dimensions(), (20, 10));
    assert!(
        img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
        "gray stays gray in RGB"
    );
    assert!(img.get_pixel(19, 5)[0] > 80, "{:?}", img.get_pixel(19, 5));

    // Written by Pillow from CMYK pixels (255,0,0,0) on the left and (0,0,255,0) on the right; Pillow's
    // convert("RGB") gives cyan (0,255,255) and yellow (255,255,0).
    let cmyk = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmyk.jpg");
    let img = decode_image(&cmyk, "test").unwrap();
    assert_eq!(img.dimensions(), (16, 8));
    let close = |a: [u8; 3], b: [u8; 3]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (*x as i32 - y as i32).abs() <= 8)
    };
    assert!(
        close(img.get_pixel(2, 3).0, [0, 255, 255]),
        "{:?}",
        img.get_pixel(2, 3)
    );
    assert!(
        close(img.get_pixel(13, 3).0, [255, 255, 0]),
        "{:?}",
        img.get_pixel(13, 3)
    );

    // PNG with alpha and 16-bit PNG become plain 8-bit RGB.
    let rgba = dir.path().join("rgba.png");
    image::RgbaImage::from_pixel(3, 2, image::Rgba([10, 20, 30, 0]))
        .save(&rgba)
        .unwrap();
    assert_eq!(
        decode_image(&rgba, "test").unwrap().get_pixel(1, 1).0,
        [10, 20, 30]
    );
    let deep = dir.path().join("deep.png");
    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(3, 2, image::Rgb([65535u16, 0, 32896]))
        .save(&deep)
        .unwrap();
    assert_eq!(
        decode_image(&deep, "test").unwrap().get_pixel(0, 0).0,
        [255, 0, 128]
    );
}

#[test]
fn grayscale_images_load_as_three_channel_batches() {
    let dir = tempfile::tempdir().unwrap();
    write_gray_jpeg(&dir.path().join("k/0.jpg"), 20, 20);
    write_jpeg(&dir.path().join("k/1.jpg"), 20, 20, 5);
    write_jpeg(&dir.path().join("l/0.jpg"), 20, 20, 6); // a folder dataset needs two classes
    let data = Arc::new(folder::load(dir.path(), Split::Train, &Validation::None).unwrap());
    let loader = Loader::new(
        data,
        Pipeline::pmg_test_at(20, 16),
        LoaderConfig::eval(2),
        &Device::Cpu,
    )
    .unwrap();
    let b = collect(&loader, 0);
    assert_eq!(b[0].images.dims(), &[2, 3, 16, 16]);
}

#[test]
fn dropping_an_epoch_early_stops_cleanly() {
    let data = synthetic(20);
    let loader = Loader::new(
        data,
        random_pipeline(),
        LoaderConfig {
            prefetch: 1,
            ..LoaderConfig::train(4)
        },
        &Device::Cpu,
    )
    .unwrap();
    for epoch in 0..3 {
        let mut it = loader.epoch(epoch);
        assert!(it.next().unwrap().is_ok());
        drop(it); // must not hang or leak the producer
    }
    assert_eq!(collect(&loader, 9).len(), 25);
}

#[test]
fn the_default_synthetic_dataset_loads() {
    let data: Arc<dyn Dataset> =
        Arc::new(Synthetic::new(SyntheticConfig::default(), Split::Test).unwrap());
    let loader = Loader::new(
        data,
        Pipeline::pmg_test_at(72, 64),
        LoaderConfig::eval(50),
        &Device::Cpu,
    )
    .unwrap();
    let mut n = 0;
    for b in loader.epoch(0) {
        let b = b.unwrap();
        assert_eq!(b.images.dims()[1..], [3, 64, 64]);
        n += b.len();
    }
    assert_eq!(n, 500);
}
