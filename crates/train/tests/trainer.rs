//! The training loop end to end on tiny synthetic runs: learning, exact resume after an interruption,
//! NaN handling, the run directory's contents.

use std::path::Path;

use candle_core::{Device, Tensor};
use fgvc_data::Batch;
use fgvc_ops::ParamStore;
use fgvc_train::checkpoint;
use fgvc_train::data::open_splits;
use fgvc_train::registry::build_method;
use fgvc_train::{
    Config, Method, Predictions, StepContext, StepStats, TrainError, TrainOptions, Trainer,
};

/// A run small enough for CI: 4 classes of 32x32 birds, a ResNet-18 layout 4 channels wide.
fn tiny(extra: &[&str]) -> Config {
    let mut sets: Vec<String> = [
        "data.synthetic.classes=4",
        "data.synthetic.image_size=32",
        "data.synthetic.train_per_class=8",
        "data.synthetic.val_per_class=6",
        "data.synthetic.test_per_class=6",
        "data.batch_size=8",
        "data.threads=1",
        "model.base_width=4",
        "optim.lr=0.05",
        "train.epochs=2",
        "train.log_every_steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::parse("", "tiny", &sets).unwrap()
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ckpt = checkpoint::load(path, &Device::Cpu).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = ckpt
        .weights
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    for (n, t) in ckpt.optimizer.unwrap().tensors {
        out.push((
            format!("optim/{n}"),
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        ));
    }
    out
}

#[test]
fn resume_after_an_interruption_ends_with_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    // 32 images in batches of 8: 4 steps per epoch, 12 in all. Checkpoints every 2 steps within an epoch
    // (steps 2, 6, 10) and at every epoch end (4, 8, 12). Dropout and momentum are on, so both the keyed RNG
    // and the optimiser state matter.
    let extra = [
        "train.epochs=3",
        "train.checkpoint_every_steps=2",
        "model.dropout=0.3",
        "train.final_test=false",
    ];
    let straight = dir.path().join("straight");
    let mut t = Trainer::new(
        tiny(&extra),
        &straight,
        &Device::Cpu,
        TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(t.run().unwrap().steps, 12);

    // Stop after step 7, as a kill would: step 7 is lost, the run resumes from the checkpoint of step 6.
    let resumed = dir.path().join("resumed");
    let stop = TrainOptions {
        stop_after_steps: Some(7),
        ..Default::default()
    };
    let mut t = Trainer::new(tiny(&extra), &resumed, &Device::Cpu, stop).unwrap();
    match t.run() {
        Err(TrainError::Stopped { step: 7 }) => {}
        other => panic!("expected a stop after 7 steps, got {other:?}"),
    }
    drop(t);
    let ckpt =
        checkpoint::load(&resumed.join("checkpoint-last.safetensors"), &Device::Cpu).unwrap();
    let state = ckpt.state.unwrap();
    assert_eq!((state.epoch, state.batch_in_epoch, state.step), (1, 2, 6));

    let resume = TrainOptions {
        resume: true,
        ..Default::default()
    };
    let mut t = Trainer::new(tiny(&extra), &resumed, &Device::Cpu, resume).unwrap();
    assert_eq!(t.run().unwrap().steps, 12);

    let a = weights(&straight.join("checkpoint-last.safetensors"));
    let b = weights(&resumed.join("checkpoint-last.safetensors"));
    assert_eq!(a.len(), b.len());
    assert!(a
        .iter()
        .any(|(n, _)| n.starts_with("optim/momentum_buffer/")));
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va == vb, "{na} differs after resume");
    }
    // The metrics of the resumed run have each step once, as the uninterrupted run's.
    let steps = |run: &Path| -> Vec<(String, u64)> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                (
                    v["kind"].as_str().unwrap().to_string(),
                    v["step"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(steps(&resumed), steps(&straight));
    assert_eq!(
        steps(&straight)
            .iter()
            .filter(|(k, _)| k == "train")
            .count(),
        6
    );
    // Resuming with another configuration is refused, naming what changed (once the trainer that holds
    // the directory is gone: while it lives, the directory is locked).
    drop(t);
    let other = tiny(&[
        "train.epochs=4",
        "train.checkpoint_every_steps=2",
        "model.dropout=0.3",
        "train.final_test=false",
    ]);
    let err = Trainer::new(
        other,
        &resumed,
        &Device::Cpu,
        TrainOptions {
            resume: true,
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("configuration differs")
            && err
                .to_string()
                .contains("train.epochs: 3 (saved) vs 4 (now)"),
        "{err}"
    );
}

#[test]
fn a_short_run_learns_and_writes_its_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // 16 training images without augmentation, fitted with AdamW: a working loop drives the loss down and
    // the training accuracy far above chance (25%) within 40 steps.
    let mut config = tiny(&[
        "train.epochs=20",
        "data.synthetic.train_per_class=4",
        "optim.kind=adamw",
        "optim.lr=0.005",
        "schedule.kind=cosine",
        "train.log_every_steps=1",
    ]);
    config.data.train_pipeline = Some(config.data.pipelines().unwrap().1);
    let mut t = Trainer::new(config, &run, &Device::Cpu, TrainOptions::default()).unwrap();
    let summary = t.run().unwrap();
    assert_eq!(summary.steps, 40);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let train: Vec<&serde_json::Value> = records.iter().filter(|r| r["kind"] == "train").collect();
    let mean = |rs: &[&serde_json::Value], key: &str| {
        rs.iter().map(|r| r[key].as_f64().unwrap()).sum::<f64>() / rs.len() as f64
    };
    let (first, last) = (mean(&train[..4], "loss"), mean(&train[36..], "loss"));
    assert!(first > 1.0, "initial loss {first} should be near ln 4");
    assert!(last < 0.5 * first, "loss did not fall: {first} -> {last}");
    let acc = mean(&train[36..], "train_acc");
    assert!(
        acc >= 0.75,
        "training accuracy of the last two epochs {acc}"
    );
    let test = summary.test.unwrap();
    assert_eq!(test.count, 24);
    for f in [
        "config.toml",
        "metrics.jsonl",
        "metrics.csv",
        "checkpoint-last.safetensors",
        "best.safetensors",
        "eval-test.json",
        "plots/loss.svg",
        "plots/accuracy.svg",
        "plots/lr.svg",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval-test.json")).unwrap())
            .unwrap();
    assert_eq!(eval["protocol"], "best-on-val");
    assert_eq!(eval["heads"][0]["confusion"].as_array().unwrap().len(), 4);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), records.len() + 1);
    // The learning rate follows the cosine: it ends far lower than it starts.
    let lrs: Vec<f64> = train.iter().map(|r| r["lr"].as_f64().unwrap()).collect();
    assert!(lrs[39] < 0.05 * lrs[0], "{lrs:?}");
}

/// The baseline, with a NaN loss from step `nan_at` on.
struct Poisoned {
    inner: Box<dyn Method>,
    nan_at: u64,
}

impl Method for Poisoned {
    fn name(&self) -> &str {
        "poisoned"
    }
    fn store(&self) -> &ParamStore {
        self.inner.store()
    }
    fn train_step(
        &mut self,
        batch: &Batch,
        ctx: &mut StepContext<'_>,
    ) -> fgvc_train::Result<StepStats> {
        if ctx.step() >= self.nan_at {
            let nan = Tensor::new(f32::NAN, batch.images.device())?;
            ctx.backward_step(&nan)?;
            unreachable!("a NaN loss must not reach the optimiser");
        }
        self.inner.train_step(batch, ctx)
    }
    fn predict(&self, images: &Tensor) -> fgvc_train::Result<Predictions> {
        self.inner.predict(images)
    }
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = tiny(&["train.epochs=3"]);
    let splits = open_splits(&config).unwrap();
    let inner = build_method(&config, 4, &Device::Cpu).unwrap();
    let method = Box::new(Poisoned { inner, nan_at: 5 });
    let mut t = Trainer::with_method(
        config,
        method,
        splits,
        &run,
        &Device::Cpu,
        TrainOptions::default(),
    )
    .unwrap();
    let err = t.run().unwrap_err();
    match &err {
        TrainError::NonFiniteLoss {
            epoch: 1,
            step: 5,
            value,
        } => assert!(value.is_nan()),
        other => panic!("expected a NaN-loss error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("last good checkpoint is intact"),
        "{err}"
    );
    // The checkpoint is the end of epoch 1 (step 4) and holds finite weights.
    let ckpt = checkpoint::load(&run.join("checkpoint-last.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(ckpt.state.unwrap().step, 4);
    for (name, t) in &ckpt.weights {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name} is not finite");
    }
}
