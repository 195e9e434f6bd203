//! `data.skip_bad`: a folder dataset with one corrupt file trains when it is on (the file is skipped, logged
//! and counted in the epoch records) and stops with an error naming the file when it is off.

use std::path::{Path, PathBuf};

use candle_core::Device;
use fgvc_data::{Dataset, Split, Synthetic, SyntheticConfig};
use fgvc_train::data::open_split;
use fgvc_train::{Config, TrainOptions, Trainer};

/// A folder dataset (train/ and test/, two classes of 32x32 synthetic birds as PNGs) with one corrupt
/// training file.
fn dataset(root: &Path) -> PathBuf {
    for (split, n) in [(Split::Train, 8), (Split::Test, 2)] {
        let config = SyntheticConfig {
            classes: 2,
            image_size: 32,
            train_per_class: n,
            test_per_class: n,
            ..SyntheticConfig::default()
        };
        let birds = Synthetic::new(config, split).unwrap();
        for i in 0..birds.len() {
            let class = ["a", "b"][birds.label(i) as usize];
            let path = root
                .join(split.as_str())
                .join(class)
                .join(format!("{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            fgvc_augment::save_png(&birds.load(i).unwrap(), &path).unwrap();
        }
    }
    let bad = std::fs::read_dir(root.join("train/b"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n this is not a picture").unwrap();
    bad
}

fn config(root: &Path, skip_bad: bool) -> Config {
    let sets: Vec<String> = [
        "data.dataset=\"folder\"".to_string(),
        format!("data.root={:?}", root.display().to_string()),
        "data.resize=36".into(),
        "data.crop=32".into(),
        "data.batch_size=4".into(),
        "data.threads=1".into(),
        "data.validation_fraction=0.1".into(),
        format!("data.skip_bad={skip_bad}"),
        "model.base_width=4".into(),
        "train.epochs=2".into(),
        "train.log_every_steps=1".into(),
    ]
    .into();
    Config::parse("", "test", &sets).unwrap()
}

#[test]
fn a_corrupt_file_is_skipped_and_counted_with_skip_bad() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dataset(&dir.path().join("data"));
    let config = config(&dir.path().join("data"), true);
    // The corrupt file is in the training part of the hold-out.
    let train = open_split(&config, Split::Train).unwrap();
    assert!((0..train.len()).any(|i| train.source_path(i).as_deref() == Some(bad.as_path())));

    let run = dir.path().join("run");
    let mut t = Trainer::new(config, &run, &Device::Cpu, TrainOptions::default()).unwrap();
    t.run().unwrap();
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let epochs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "epoch")
        .collect();
    assert_eq!(epochs.len(), 2);
    for e in &epochs {
        assert_eq!(e["skipped"], 1, "{e}");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",seconds,skipped"));
    let epoch_rows: Vec<&str> = csv.lines().filter(|l| l.starts_with("epoch,")).collect();
    assert_eq!(epoch_rows.len(), 2);
    assert!(epoch_rows.iter().all(|l| l.ends_with(",1")), "{csv}");
}

#[test]
fn without_skip_bad_the_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dataset(&dir.path().join("data"));
    let run = dir.path().join("run");
    let config = config(&dir.path().join("data"), false);
    let mut t = Trainer::new(config, &run, &Device::Cpu, TrainOptions::default()).unwrap();
    let err = t.run().unwrap_err().to_string();
    assert!(err.contains(&bad.display().to_string()), "{err}");
    // The epoch records of a run without skip_bad carry no count.
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    assert!(!text.contains("skipped"), "{text}");
}
