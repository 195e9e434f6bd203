//! The predict API on a tiny run trained for one epoch: restored from its run directory, it classifies image
//! files through the evaluation pipeline with the trained method's softmax, ranked and limited to k classes.

use std::path::PathBuf;

use candle_core::Device;
use fgvc_data::Split;
use fgvc_train::data::{eval_loader, open_split};
use fgvc_train::predict::{ModelFiles, Predictor, Weights};
use fgvc_train::run_dir::RunDir;
use fgvc_train::{Config, TrainOptions, Trainer};

/// 4 classes of 32x32 birds, 16 training images, a ResNet-18 layout 4 channels wide, one epoch; evaluation
/// batches of 3, so that 5 images are predicted in a full and a partial batch.
fn tiny() -> Config {
    let sets: Vec<String> = [
        "data.synthetic.classes=4",
        "data.synthetic.image_size=32",
        "data.synthetic.train_per_class=4",
        "data.synthetic.val_per_class=2",
        "data.synthetic.test_per_class=2",
        "data.batch_size=8",
        "data.eval_batch_size=3",
        "data.threads=1",
        "model.base_width=4",
        "train.epochs=1",
        "train.final_test=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Config::parse("", "tiny", &sets).unwrap()
}

/// The softmax of `logits`, in f64.
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

#[test]
fn predictions_of_a_restored_run_are_the_trained_methods_softmax_ranked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    let config = tiny();
    let mut trainer =
        Trainer::new(config.clone(), &root, &Device::Cpu, TrainOptions::default()).unwrap();
    trainer.run().unwrap();
    // One epoch: the selected weights are the trained ones, which the trainer's method still holds.
    let trained = trainer.method();

    // Five test images as PNG files.
    let test = open_split(&config, Split::Test).unwrap();
    let paths: Vec<PathBuf> = (0..5)
        .map(|i| {
            let path = dir.path().join(format!("bird{i}.png"));
            test.load(i).unwrap().save(&path).unwrap();
            path
        })
        .collect();

    let run = RunDir::open(&root).unwrap();
    let files = ModelFiles::of_run(&run, Weights::Selected);
    assert_eq!(files.checkpoint, run.best_checkpoint());
    let predictor = Predictor::open(&files, &Device::Cpu).unwrap();
    assert_eq!(predictor.batch_size(), 3);

    // The files are batched as the evaluation loader batches the dataset.
    let x = predictor.load_images(&paths[..3]).unwrap();
    let loader = eval_loader(&config, test.clone(), &Device::Cpu).unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(x.dims(), batch.images.dims());
    let (a, b) = (
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        batch
            .images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    assert_eq!(a, b);

    // Every image's probabilities are the softmax of the trained method's main logits.
    let x = predictor.load_images(&paths).unwrap();
    let logits = trained.predict(&x).unwrap().main().unwrap().1.clone();
    let expected: Vec<Vec<f64>> = logits
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|row| softmax(row))
        .collect();
    let probabilities = predictor.probabilities(&x).unwrap();
    assert_eq!(probabilities.len(), 5);
    for (row, want) in probabilities.iter().zip(&expected) {
        for (p, w) in row.iter().zip(want) {
            assert!((*p as f64 - w).abs() < 1e-6, "{row:?} vs {want:?}");
        }
    }

    let names = open_split(&config, Split::Train)
        .unwrap()
        .class_names()
        .to_vec();
    for k in [1, 3, 4, 9] {
        let predictions = predictor.predict_images(&paths, k).unwrap();
        assert_eq!(predictions.len(), 5);
        for ((prediction, path), want) in predictions.iter().zip(&paths).zip(&expected) {
            assert_eq!(&prediction.image, path);
            let top = prediction.top.as_ref().unwrap();
            assert_eq!(top.len(), k.min(4), "top-{k}");
            for (i, r) in top.iter().enumerate() {
                assert_eq!(r.rank, i + 1);
                assert_eq!(r.name, names[r.class]);
                assert!((r.probability as f64 - want[r.class]).abs() < 1e-6);
                // Sorted, and no class is more probable than one ranked above it.
                if let Some(next) = top.get(i + 1) {
                    assert!(r.probability >= next.probability);
                }
                let better = want.iter().filter(|&&p| p > want[r.class] + 1e-6).count();
                assert!(
                    better <= i,
                    "class {} ranked {} of {want:?}",
                    r.class,
                    r.rank
                );
            }
        }
        if k >= 4 {
            let total: f32 = predictions[0]
                .top
                .as_ref()
                .unwrap()
                .iter()
                .map(|r| r.probability)
                .sum();
            assert!((total - 1.0).abs() < 1e-5, "all classes sum to {total}");
        }
    }
    assert!(predictor
        .predict_images(&paths, 0)
        .unwrap_err()
        .to_string()
        .contains("at least 1"));

    // A file that cannot be decoded gets its own error; the files around it, in the same batch and after
    // it, are still classified exactly as before.
    let broken = root.join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff not a jpeg").unwrap();
    let mixed = [
        paths[0].clone(),
        broken.clone(),
        paths[1].clone(),
        paths[4].clone(),
    ];
    let predictions = predictor.predict_images(&mixed, 2).unwrap();
    assert_eq!(predictions.len(), 4);
    let error = predictions[1].top.as_ref().unwrap_err();
    assert!(error.contains("broken.jpg"), "{error}");
    let alone = predictor.predict_images(&paths, 2).unwrap();
    for (got, want) in [(0, 0), (2, 1), (3, 4)] {
        assert_eq!(predictions[got].image, alone[want].image);
        let (got, want) = (
            predictions[got].top.as_ref().unwrap(),
            alone[want].top.as_ref().unwrap(),
        );
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.rank, g.class), (w.rank, w.class));
            assert!((g.probability - w.probability).abs() < 1e-6);
        }
    }

    // The last checkpoint holds the same weights here, and restores to the same predictions.
    let last = Predictor::open(&ModelFiles::of_run(&run, Weights::Last), &Device::Cpu).unwrap();
    assert_eq!(last.probabilities(&x).unwrap(), probabilities);
}

/// A folder dataset of synthetic birds under `root/{train,test}/<class>/`, with class names of its own.
fn write_folder_dataset(root: &std::path::Path) -> Vec<String> {
    let source = tiny();
    let names = vec![
        "acadian flycatcher".to_string(),
        "bobolink".into(),
        "cardinal".into(),
        "dunlin".into(),
    ];
    for (split, split_name) in [(Split::Train, "train"), (Split::Test, "test")] {
        let data = open_split(&source, split).unwrap();
        for i in 0..data.len() {
            let dir = root.join(split_name).join(&names[data.label(i) as usize]);
            std::fs::create_dir_all(&dir).unwrap();
            data.load(i)
                .unwrap()
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
    }
    names
}

#[test]
fn a_checkpoint_restores_alone_with_its_run_directory_and_dataset_gone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("birds");
    let names = write_folder_dataset(&data);
    // Pretrained weights that will be deleted too: restoring must not read them.
    let pretrained = dir.path().join("start.safetensors");
    let warm = dir.path().join("warm");
    let mut t = Trainer::new(tiny(), &warm, &Device::Cpu, TrainOptions::default()).unwrap();
    t.run().unwrap();
    std::fs::copy(warm.join("checkpoint-last.safetensors"), &pretrained).unwrap();

    let root = dir.path().join("run");
    let sets = [
        "data.dataset=folder".to_string(),
        "data.crop=32".into(),
        "data.resize=36".into(),
        format!("data.root={:?}", data.display().to_string()),
        format!("model.pretrained={:?}", pretrained.display().to_string()),
        "model.pretrained_strict=false".into(),
    ];
    let config = Config::parse(&tiny().to_toml(), "tiny", &sets).unwrap();
    let mut trainer =
        Trainer::new(config.clone(), &root, &Device::Cpu, TrainOptions::default()).unwrap();
    trainer.run().unwrap();
    let image = dir.path().join("query.png");
    std::fs::copy(
        data.join("test/bobolink")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
        &image,
    )
    .unwrap();
    let before = Predictor::open(
        &ModelFiles::of_run(&RunDir::open(&root).unwrap(), Weights::Selected),
        &Device::Cpu,
    )
    .unwrap()
    .predict_images(std::slice::from_ref(&image), 4)
    .unwrap();

    // Only the checkpoint is left.
    let best = dir.path().join("best.safetensors");
    std::fs::rename(root.join("best.safetensors"), &best).unwrap();
    for gone in [&root, &data, &warm] {
        std::fs::remove_dir_all(gone).unwrap();
    }
    std::fs::remove_file(&pretrained).unwrap();

    let predictor = Predictor::from_checkpoint(&best, &Device::Cpu).unwrap();
    assert_eq!(predictor.class_names(), names.as_slice());
    assert_eq!(predictor.config(), &config);
    let after = predictor
        .predict_images(std::slice::from_ref(&image), 4)
        .unwrap();
    assert_eq!(after, before);
    let top = after[0].top.as_ref().unwrap();
    assert!(names.contains(&top[0].name), "{top:?}");

    let info = fgvc_train::checkpoint::load(&best, &Device::Cpu)
        .unwrap()
        .inference
        .unwrap();
    assert_eq!(info.predictions, ["logits"]);
    assert_eq!(info.input_size, Some([32, 32]));
    assert_eq!(info.fgvc_version, env!("CARGO_PKG_VERSION"));

    // Only data keys can be overridden; the model's are the weights'.
    let err = Predictor::from_checkpoint_with(&best, &["model.base_width=8".into()], &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.base_width") && err.contains("only data.*"),
        "{err}"
    );
    let smaller =
        Predictor::from_checkpoint_with(&best, &["data.eval_batch_size=1".into()], &Device::Cpu)
            .unwrap();
    assert_eq!(smaller.batch_size(), 1);
}

#[test]
fn an_older_checkpoint_says_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    let config = tiny();
    let mut trainer =
        Trainer::new(config.clone(), &root, &Device::Cpu, TrainOptions::default()).unwrap();
    trainer.run().unwrap();
    // The same weights, written as fgvc did before checkpoints carried their inference record.
    let old = root.join("old.safetensors");
    fgvc_train::checkpoint::save(&old, trainer.method().store(), None, None, None).unwrap();
    assert_eq!(fgvc_train::checkpoint::read_inference(&old).unwrap(), None);
    let restored = Predictor::from_checkpoint(&old, &Device::Cpu).unwrap();
    assert_eq!(
        restored.class_names(),
        open_split(&config, Split::Train).unwrap().class_names()
    );

    let alone = dir.path().join("old.safetensors");
    std::fs::rename(&old, &alone).unwrap();
    let err = Predictor::from_checkpoint(&alone, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("old.safetensors")
            && err.contains("carries no configuration")
            && err.contains("--config"),
        "{err}"
    );
}
