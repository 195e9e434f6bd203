//! Data-parallel training with the ranks as threads of one process (`fgvc_distributed::in_process`), so the
//! equivalences run without an MPI job (the MPI engine's own tests run them as processes under `mpirun`):
//! two ranks with SyncBN equal one process with their batches together; without it, one process averaging
//! the two half-batch gradients; sharded evaluation equals a single one; a NaN on one rank stops both at
//! the same step; a resume with another number of processes is refused.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use fgvc_data::Batch;
use fgvc_distributed::{in_process, Group};
use fgvc_train::checkpoint;
use fgvc_train::data::{eval_loader, eval_loader_sharded, open_splits};
use fgvc_train::eval::{evaluate, evaluate_in};
use fgvc_train::registry::build_method;
use fgvc_train::{
    Config, Method, Predictions, StepContext, StepStats, TrainError, TrainOptions, TrainSummary,
    Trainer,
};

/// 4 classes of 32x32 birds, a ResNet-18 layout 4 channels wide, 16 training images: 2 steps of 8 images an
/// epoch. Few steps at a small rate: this tiny network is chaotic, and over 8 steps at 0.05 even the fused and
/// the composite BatchNorm of one process (which differ only in rounding) end 50% apart.
fn tiny(extra: &[&str]) -> Config {
    let mut sets: Vec<String> = [
        "data.synthetic.classes=4",
        "data.synthetic.image_size=32",
        "data.synthetic.train_per_class=4",
        "data.synthetic.val_per_class=5",
        "data.synthetic.test_per_class=5",
        "data.threads=1",
        "model.base_width=4",
        "optim.lr=0.01",
        "train.epochs=2",
        "train.tensorboard=false",
        "train.log_every_steps=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::parse("", "tiny", &sets).unwrap()
}

/// Runs `config` in `dir` on `world` ranks (threads), each building its own trainer; every rank's result.
fn run_ranks(
    world: usize,
    config: &Config,
    dir: &Path,
    resume: bool,
) -> Vec<fgvc_train::Result<TrainSummary>> {
    let handles: Vec<_> = in_process(world)
        .into_iter()
        .map(|group| {
            let (config, dir) = (config.clone(), dir.to_path_buf());
            std::thread::spawn(move || {
                let options = TrainOptions {
                    group,
                    resume,
                    ..TrainOptions::default()
                };
                Trainer::new(config, &dir, &Device::Cpu, options)?.run()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Every tensor of a checkpoint, by name; `buffers` false leaves out the BatchNorm running statistics.
fn tensors(path: &Path, buffers: bool) -> Vec<(String, Vec<f32>)> {
    let ckpt = checkpoint::load(path, &Device::Cpu).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = ckpt
        .weights
        .iter()
        .filter(|(n, _)| buffers || !(n.ends_with("running_mean") || n.ends_with("running_var")))
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .map(|(n, t)| {
            (
                n.clone(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The largest difference between two sets of tensors, relative to the largest magnitude of each tensor (at
/// least 0.01, so that biases still near their zero initialisation are compared absolutely).
fn worst_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> (f32, String) {
    assert_eq!(a.len(), b.len());
    let mut worst = (0f32, String::new());
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        let scale = va.iter().fold(1e-2f32, |m, v| m.max(v.abs()));
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs() / scale;
            if d > worst.0 {
                worst = (d, na.clone());
            }
        }
    }
    worst
}

fn last(dir: &Path) -> PathBuf {
    dir.join("checkpoint-last.safetensors")
}

#[test]
fn two_ranks_with_sync_batch_norm_train_like_one_process_with_both_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let single = Trainer::new(
        tiny(&["data.batch_size=8", "train.sync_batch_norm=true"]),
        &one,
        &Device::Cpu,
        TrainOptions::default(),
    )
    .unwrap()
    .run()
    .unwrap();
    let ranks = run_ranks(
        2,
        &tiny(&["data.batch_size=4", "train.sync_batch_norm=true"]),
        &two,
        false,
    );
    let ranks: Vec<TrainSummary> = ranks.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        (ranks[0].steps, ranks[1].steps),
        (single.steps, single.steps)
    );
    let (worst, name) = worst_difference(&tensors(&last(&one), true), &tensors(&last(&two), true));
    assert!(worst < 1e-3, "{name} differs by {worst} of its scale");
    // Rank 0 alone wrote the run; its test evaluation is the whole split's, on both ranks.
    let (t0, t1) = (
        ranks[0].test.as_ref().unwrap(),
        ranks[1].test.as_ref().unwrap(),
    );
    assert_eq!((t0.count, t1.count), (20, 20));
    assert_eq!(t0, t1);
    assert_eq!(t0.count, single.test.as_ref().unwrap().count);
    let records = std::fs::read_to_string(two.join("metrics.jsonl")).unwrap();
    assert_eq!(
        records.matches("\"kind\":\"epoch\"").count(),
        2,
        "{records}"
    );
}

#[test]
fn without_sync_batch_norm_two_ranks_average_two_half_batch_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    // One process: batches of 4, one optimiser step per two of them with the mean gradient, each
    // normalised with its own statistics, as each rank's is.
    Trainer::new(
        tiny(&["data.batch_size=4", "optim.accumulate=2"]),
        &one,
        &Device::Cpu,
        TrainOptions::default(),
    )
    .unwrap()
    .run()
    .unwrap();
    for r in run_ranks(2, &tiny(&["data.batch_size=4"]), &two, false) {
        r.unwrap();
    }
    let (worst, name) =
        worst_difference(&tensors(&last(&one), false), &tensors(&last(&two), false));
    assert!(worst < 1e-3, "{name} differs by {worst} of its scale");
    // And they differ from synchronised statistics: the option does something.
    let three = dir.path().join("three");
    for r in run_ranks(
        2,
        &tiny(&["data.batch_size=4", "train.sync_batch_norm=true"]),
        &three,
        false,
    ) {
        r.unwrap();
    }
    let (apart, _) = worst_difference(&tensors(&last(&two), false), &tensors(&last(&three), false));
    assert!(apart > 1e-3, "SyncBN changed nothing ({apart})");
}

#[test]
fn sharded_evaluation_reports_what_one_process_does() {
    let config = tiny(&["data.batch_size=3"]);
    let splits = open_splits(&config).unwrap();
    let method = build_method(&config, 4, &Device::Cpu).unwrap();
    let loader = eval_loader(&config, splits.val.clone(), &Device::Cpu).unwrap();
    let single = evaluate(&*method, &loader, "val").unwrap();
    let handles: Vec<_> = in_process(3)
        .into_iter()
        .map(|group| {
            let (config, val) = (config.clone(), splits.val.clone());
            std::thread::spawn(move || {
                let shard = fgvc_data::Shard::new(group.rank(), group.world_size()).unwrap();
                let method = build_method(&config, 4, &Device::Cpu).unwrap();
                let loader = eval_loader_sharded(&config, val, &Device::Cpu, shard).unwrap();
                assert!(loader.num_batches() < 4, "each rank reads a part");
                evaluate_in(&*method, &loader, "val", &group).unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), single);
    }
}

/// The tiny baseline, with a NaN loss at step 5 on rank 1 only.
struct PoisonedOnRankOne {
    inner: Box<dyn Method>,
    rank: usize,
}

impl Method for PoisonedOnRankOne {
    fn name(&self) -> &str {
        "poisoned"
    }
    fn store(&self) -> &fgvc_ops::ParamStore {
        self.inner.store()
    }
    fn train_step(
        &mut self,
        batch: &Batch,
        ctx: &mut StepContext<'_>,
    ) -> fgvc_train::Result<StepStats> {
        if self.rank == 1 && ctx.step() == 5 {
            ctx.backward_step(&Tensor::new(f32::NAN, batch.images.device())?)?;
        }
        self.inner.train_step(batch, ctx)
    }
    fn predict(&self, images: &Tensor) -> fgvc_train::Result<Predictions> {
        self.inner.predict(images)
    }
}

#[test]
fn a_nan_on_one_rank_stops_every_rank_at_that_step_and_resume_needs_the_same_world() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = tiny(&[
        "data.batch_size=4",
        "train.epochs=3",
        "train.final_test=false",
    ]);
    let handles: Vec<_> = in_process(2)
        .into_iter()
        .map(|group| {
            let (config, run) = (config.clone(), run.clone());
            std::thread::spawn(move || {
                let splits = open_splits(&config).unwrap();
                let inner = build_method(&config, 4, &Device::Cpu).unwrap();
                let method = Box::new(PoisonedOnRankOne {
                    inner,
                    rank: group.rank(),
                });
                let options = TrainOptions {
                    group,
                    ..TrainOptions::default()
                };
                Trainer::with_method(config, method, splits, &run, &Device::Cpu, options)
                    .unwrap()
                    .run()
            })
        })
        .collect();
    for (rank, h) in handles.into_iter().enumerate() {
        match h.join().unwrap() {
            Err(TrainError::NonFiniteLoss { step: 5, value, .. }) => assert!(value.is_nan()),
            other => panic!("rank {rank}: expected a NaN-loss error at step 5, got {other:?}"),
        }
    }
    // The last checkpoint is the end of epoch 1 (16 images, 2 x 4 per step: 2 steps an epoch).
    let ckpt = checkpoint::load(&last(&run), &Device::Cpu).unwrap();
    assert_eq!(ckpt.state.as_ref().unwrap().step, 4);
    assert_eq!(ckpt.state.as_ref().unwrap().world_size, 2);
    // A single process may not resume it.
    let err = Trainer::new(
        config,
        &run,
        &Device::Cpu,
        TrainOptions {
            resume: true,
            group: Group::local(),
            ..TrainOptions::default()
        },
    )
    .err()
    .expect("a resume with another world size is refused");
    assert!(
        err.to_string()
            .contains("trained by 2 processes and this one has 1"),
        "{err}"
    );
}
