//! TensorBoard logging of tiny synthetic runs, read back with fgvc-tensorboard's reader: the scalars equal
//! `metrics.jsonl`, PMG's augmentation previews are the jigsaws of the first batch, a resumed run logs on
//! into a new file, evaluation images are logged, an unwritable directory is one warning, and turning it
//! off writes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use fgvc_tensorboard::Run;
use fgvc_train::metrics::{read_records, Record};
use fgvc_train::{Config, TrainError, TrainOptions, Trainer};
use image::RgbImage;

/// A run small enough for CI: 4 classes of 32x32 birds, a ResNet-18 layout 4 channels wide, 4 batches of
/// 8 per epoch.
fn tiny(extra: &[&str]) -> Config {
    let mut sets: Vec<String> = [
        "data.synthetic.classes=4",
        "data.synthetic.image_size=32",
        "data.synthetic.train_per_class=8",
        "data.synthetic.val_per_class=4",
        "data.synthetic.test_per_class=4",
        "data.batch_size=8",
        "data.threads=1",
        "model.base_width=4",
        "optim.lr=0.05",
        "train.epochs=1",
        "train.log_every_steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::parse("", "tiny", &sets).unwrap()
}

/// PMG with tiny heads: three jigsaw steps (8, 4, 2) and the concat step per batch.
const PMG: [&str; 3] = [
    "method.name=\"pmg\"",
    "method.options.feature_size=8",
    "method.options.block_channels=8",
];

fn train(config: Config, dir: &Path, options: TrainOptions) -> Trainer {
    let mut t = Trainer::new(config, dir, &Device::Cpu, options).unwrap();
    t.run().unwrap();
    t
}

/// `(tag, step) -> value` of every scalar in `run`; a tag logged twice at one step fails the test.
fn scalars(run: &Run) -> BTreeMap<(String, i64), f32> {
    let mut out = BTreeMap::new();
    for tag in run.scalar_tags() {
        for p in run.scalars(&tag) {
            let old = out.insert((tag.clone(), p.step), p.value);
            assert!(old.is_none(), "{tag} logged twice at step {}", p.step);
        }
    }
    out
}

/// What TensorBoard must hold for the records of `metrics.jsonl`, tag by tag as docs/tensorboard.md
/// lists them, with the main prediction's name.
fn expected(records: &[Record], main: &str) -> BTreeMap<(String, i64), f32> {
    let mut out = BTreeMap::new();
    for r in records {
        let step = r.step as i64;
        let mut put = |tag: String, v: Option<f64>| {
            if let Some(v) = v {
                out.insert((tag, step), v as f32);
            }
        };
        match r.kind.as_str() {
            "train" | "epoch" => {
                let k = &r.kind;
                put(format!("{k}/loss"), r.loss);
                put(format!("{k}/accuracy"), r.train_acc);
                put(format!("{k}/images_per_sec"), r.images_per_sec);
                put(format!("{k}/seconds"), r.seconds);
                for (name, v) in r.losses.iter().flatten() {
                    put(format!("{k}/loss/{name}"), Some(*v));
                }
                for (group, v) in r.lrs.iter().flatten() {
                    put(format!("lr/{group}"), Some(*v));
                }
            }
            "eval" | "test" => {
                let prefix = match r.kind.as_str() {
                    "eval" => format!("eval/{}", r.split.as_deref().unwrap()),
                    _ => "test".into(),
                };
                for (head, v) in r.heads.iter().flatten() {
                    put(format!("{prefix}/{head}/top1"), Some(*v));
                }
                put(format!("{prefix}/{main}/top5"), r.top5);
                put(format!("{prefix}/{main}/mean_per_class"), r.mean_per_class);
            }
            other => panic!("unexpected record kind {other}"),
        }
    }
    out
}

/// TensorBoard's scalars equal `metrics.jsonl`'s, every one of them; the only scalars it has beyond them
/// are the top-5 and mean per-class accuracy of the non-main predictions, which the metrics log omits.
fn assert_scalars_match_metrics(run_dir: &Path, main: &str) -> BTreeMap<(String, i64), f32> {
    let records = read_records(&run_dir.join("metrics.jsonl")).unwrap();
    let want = expected(&records, main);
    let got = scalars(&Run::read(&run_dir.join("tb")).unwrap());
    for (key, want) in &want {
        let got = *got.get(key).unwrap_or_else(|| panic!("{key:?} missing"));
        // The same f64 rounded to f32, but serde_json's default float parser can be one f64 ulp off, which
        // flips the rounding of a value on an f32 midpoint (a mean of two f32 losses): one f32 ulp.
        let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
        assert!(
            ulps <= 1,
            "{key:?}: {got} in TensorBoard, {want} in metrics.jsonl"
        );
    }
    for (tag, _) in got.keys().filter(|k| !want.contains_key(*k)) {
        let extra = (tag.ends_with("/top5") || tag.ends_with("/mean_per_class"))
            && !tag.contains(&format!("/{main}/"));
        assert!(extra, "{tag} is in TensorBoard but not in metrics.jsonl");
    }
    got
}

#[test]
fn a_pmg_run_logs_the_metrics_of_metrics_jsonl_and_previews_its_jigsaws() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("pmg");
    let t = train(tiny(&PMG), &run_dir, TrainOptions::default());
    let event_file = t.tensorboard().path().unwrap().to_path_buf();
    assert_eq!(event_file.parent().unwrap(), run_dir.join("tb"));
    assert!(t.tensorboard().failure().is_none());
    drop(t);

    let got = assert_scalars_match_metrics(&run_dir, "combined");
    // Every kind of scalar is there: PMG's four partial losses at both train records (steps 2 and 4), the
    // learning rate of both groups, the epoch, the validation and the test of every prediction.
    let tags: std::collections::BTreeSet<&str> = got.keys().map(|(t, _)| t.as_str()).collect();
    for tag in [
        "train/loss",
        "train/loss/jigsaw8",
        "train/loss/jigsaw4",
        "train/loss/jigsaw2",
        "train/loss/concat",
        "train/accuracy",
        "train/images_per_sec",
        "lr/backbone",
        "lr/heads",
        "epoch/loss/concat",
        "epoch/seconds",
        "eval/val/combined/top1",
        "eval/val/classifier1/mean_per_class",
        "eval/val/concat/top5",
        "test/combined/top1",
    ] {
        assert!(tags.contains(tag), "{tag} missing from {tags:?}");
    }
    let steps: Vec<i64> = got
        .keys()
        .filter(|(t, _)| t == "train/loss/jigsaw8")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(steps, [2, 4]);

    // One preview per jigsaw step, at step 0: 4 images (rows) of 32 px, original beside jigsaw.
    let run = Run::read(&run_dir.join("tb")).unwrap();
    let images: Vec<String> = run.image_tags().into_iter().collect();
    assert_eq!(
        images,
        [
            "augment/jigsaw2",
            "augment/jigsaw4",
            "augment/jigsaw8",
            "explain/gradcam"
        ]
    );
    // By default, Grad-CAM panels of the first validation images after the evaluation (4 steps in): one
    // row per image, the image beside the heatmap of each of PMG's five named predictions.
    let gradcam = run.images("explain/gradcam");
    assert_eq!(gradcam.iter().map(|p| p.step).collect::<Vec<_>>(), [4]);
    let grid = gradcam[0].decode("explain/gradcam").unwrap();
    assert!(
        grid.width() > 5 * grid.height() / 4,
        "{:?}",
        grid.dimensions()
    );
    for n in [8u32, 4, 2] {
        let tag = format!("augment/jigsaw{n}");
        let logged = run.images(&tag);
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0].step, 0);
        let grid = logged[0].decode(&tag).unwrap();
        assert_eq!(grid.dimensions(), (2 * 36 + 4, 4 * 36 + 4));
        for row in 0..4 {
            let cell = |col: u32, cx: u32, cy: u32| -> Vec<[u8; 3]> {
                let side = 32 / n;
                let (x0, y0) = (4 + col * 36 + cx * side, 4 + row * 36 + cy * side);
                (0..side * side)
                    .map(|i| grid.get_pixel(x0 + i % side, y0 + i / side).0)
                    .collect()
            };
            // A jigsaw moves whole cells: every cell of the destroyed image is a cell of the original.
            let originals: Vec<Vec<[u8; 3]>> = (0..n * n).map(|i| cell(0, i % n, i / n)).collect();
            let mut moved = 0;
            for i in 0..n * n {
                let c = cell(1, i % n, i / n);
                assert!(
                    originals.contains(&c),
                    "{tag} row {row}: cell {i} is no original cell"
                );
                moved += usize::from(c != originals[i as usize]);
            }
            assert!(moved > 0, "{tag} row {row}: nothing moved");
        }
    }
}

#[test]
fn a_resumed_run_logs_on_into_a_new_file_without_the_lost_steps() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("resumed");
    // 2 epochs of 4 steps, a record every step, checkpoints every 2 steps: the first process stops after
    // step 3 (logged, then lost: the checkpoint is at step 2), the second redoes it.
    let extra = [
        "train.epochs=2",
        "train.log_every_steps=1",
        "train.checkpoint_every_steps=2",
        "train.final_test=false",
    ];
    let stop = TrainOptions {
        stop_after_steps: Some(3),
        ..Default::default()
    };
    let mut t = Trainer::new(tiny(&extra), &run_dir, &Device::Cpu, stop).unwrap();
    assert!(matches!(t.run(), Err(TrainError::Stopped { step: 3 })));
    let first = t.tensorboard().path().unwrap().to_path_buf();
    drop(t);
    let first_bytes = std::fs::read(&first).unwrap();
    let before = scalars(&Run::read(&run_dir.join("tb")).unwrap());
    assert!(before.contains_key(&("train/images_per_sec".to_string(), 3)));

    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let t = train(tiny(&extra), &run_dir, resume);
    let second = t.tensorboard().path().unwrap().to_path_buf();
    drop(t);
    assert_ne!(first, second);
    assert_eq!(
        std::fs::read(&first).unwrap(),
        first_bytes,
        "the first file changed"
    );
    let run = Run::read(&run_dir.join("tb")).unwrap();
    assert_eq!(run.files(), [first, second]);
    // Each step once, with the values of the process that kept it: step 3's throughput is the second
    // process's, as in metrics.jsonl.
    let got = assert_scalars_match_metrics(&run_dir, "logits");
    let steps: Vec<i64> = got
        .keys()
        .filter(|(t, _)| t == "train/loss")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

#[test]
fn evaluation_images_are_logged_at_each_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("explain");
    let mut t = Trainer::new(
        tiny(&["train.epochs=2", "train.final_test=false"]),
        &run_dir,
        &Device::Cpu,
        TrainOptions::default(),
    )
    .unwrap();
    let calls = Arc::new(Mutex::new(0u8));
    let seen = calls.clone();
    t.set_eval_images(Box::new(move |method| {
        let mut n = seen.lock().unwrap();
        *n += 1;
        assert_eq!(method.name(), "baseline");
        Ok(vec![(
            "heatmap".into(),
            RgbImage::from_pixel(3, 2, image::Rgb([*n, 0, 0])),
        )])
    }));
    t.run().unwrap();
    drop(t);
    assert_eq!(*calls.lock().unwrap(), 2);
    let run = Run::read(&run_dir.join("tb")).unwrap();
    let logged = run.images("explain/heatmap");
    let got: Vec<(i64, [u8; 3])> = logged
        .iter()
        .map(|p| {
            (
                p.step,
                p.decode("explain/heatmap").unwrap().get_pixel(2, 1).0,
            )
        })
        .collect();
    // After each epoch's evaluation, at its step (4 steps per epoch).
    assert_eq!(got, [(4, [1, 0, 0]), (8, [2, 0, 0])]);
    // The baseline destroys nothing: no augmentation preview.
    assert!(run.image_tags().iter().all(|t| !t.starts_with("augment/")));
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_unwritable_tensorboard_directory_is_one_warning_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("blocked");
    std::fs::create_dir_all(&run_dir).unwrap();
    // A file where tb/ should be: no directory can be made there, whoever runs the test (root included).
    std::fs::write(run_dir.join("tb"), "not a directory").unwrap();
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let t = tracing::subscriber::with_default(subscriber, || {
        train(tiny(&[]), &run_dir, TrainOptions::default())
    });
    assert_eq!(t.state().step, 4);
    assert!(!t.tensorboard().is_on());
    let failure = t.tensorboard().failure().unwrap().to_string();
    assert!(
        failure.contains(&run_dir.join("tb").display().to_string()),
        "{failure}"
    );
    drop(t);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("TensorBoard")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("training goes on"));
    // Everything else of the run is there.
    let records = read_records(&run_dir.join("metrics.jsonl")).unwrap();
    assert!(records.iter().any(|r| r.kind == "test"));
    assert!(run_dir.join("checkpoint-last.safetensors").is_file());
}

#[test]
fn turned_off_it_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("off");
    let mut extra = PMG.to_vec();
    extra.push("train.tensorboard=false");
    let t = train(tiny(&extra), &run_dir, TrainOptions::default());
    assert!(!t.tensorboard().is_on() && t.tensorboard().failure().is_none());
    drop(t);
    assert!(!run_dir.join("tb").exists());
    assert!(run_dir.join("metrics.jsonl").is_file());
}
