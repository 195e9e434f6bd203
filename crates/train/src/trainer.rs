//! The training loop: epochs of batches through a [`Method`], the schedule, evaluation and model selection,
//! metrics, plots and checkpoints, and exact resumption.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use fgvc_data::{Batch, Loader, Shard};
use fgvc_distributed::{Group, DEFAULT_BUCKET_BYTES};
use fgvc_ops::with_sync_batch_norm;

use crate::checkpoint::{self, BestScore, InferenceInfo, TrainerState};
use crate::config::{Config, Selection};
use crate::data::{eval_loader_sharded, open_splits, train_loader_sharded, Splits};
use crate::error::{Result, TrainError};
use crate::eval::{evaluate_in, EvalReport};
use crate::method::{keyed_rng, Accumulator, Method, StepContext, StepStats};
use crate::metrics::{MetricsLog, Record};
use crate::optim::build_optimizer;
use crate::optim::Optimizer;
use crate::plot::run_charts;
use crate::registry::build_method;
use crate::run_dir::{atomic_write, RunDir, RunLock};
use crate::schedule::Schedule;
use crate::tensorboard::{EvalImages, TbLogger};

mod claim;
mod interval;
mod progress;
mod replicas;

use interval::IntervalStats;
use progress::Bars;

/// How a run starts.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `checkpoint-last.safetensors` of the run directory (`--resume`): its `config.toml` must
    /// be there and equal the configuration, key by key.
    pub resume: bool,
    /// Replace the run the directory holds (`--overwrite`): its run files are deleted once the configuration
    /// has validated and the method is built. Without it (and without `resume`), a directory holding run
    /// files is refused and left as it is.
    pub overwrite: bool,
    /// Show progress bars (they are hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Stop with [`TrainError::Stopped`] after this many global steps (tests simulate a kill with it).
    pub stop_after_steps: Option<u64>,
    /// The process group of a data-parallel run (one process by default): each rank trains on its shard of
    /// every epoch with the gradients averaged over the group; rank 0 alone writes the run directory.
    pub group: Group,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Global batch steps trained.
    pub steps: u64,
    /// The selected evaluation.
    pub best: Option<BestScore>,
    /// The test split evaluated with the selected weights, when `train.final_test` is on.
    pub test: Option<EvalReport>,
    /// How the reported weights were selected (`val`, `best-on-test`, `last`).
    pub protocol: String,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
}

/// The label of a selection protocol in outputs.
pub fn protocol_label(selection: Selection) -> &'static str {
    match selection {
        Selection::Val => "best-on-val",
        Selection::BestOnTest => {
            "best-on-test (the papers' protocol: selected on the test split, optimistic)"
        }
        Selection::Last => "last-epoch",
    }
}

/// A training run in progress.
pub struct Trainer {
    config: Config,
    run: RunDir,
    method: Box<dyn Method>,
    optimizer: Box<dyn Optimizer>,
    schedule: Schedule,
    train: Loader,
    select_loader: Option<(String, Loader)>,
    test: Loader,
    state: TrainerState,
    log: MetricsLog,
    tb: TbLogger,
    /// Images rendered for TensorBoard after each evaluation (see [`Trainer::set_eval_images`]).
    eval_images: Option<EvalImages>,
    accumulator: Accumulator,
    options: TrainOptions,
    /// What every checkpoint carries for inference.
    inference: InferenceInfo,
    /// The process group (one process unless the run is data-parallel).
    group: Group,
    /// Seconds spent in gradient all-reduces and steps taken since the last epoch record.
    comm: (f64, u64),
    /// Held by rank 0 while the trainer lives; dropped last.
    _lock: Option<RunLock>,
}

impl Trainer {
    /// Prepares a run of `config` in `run_dir` on `device`: validates the whole configuration, opens the
    /// data, builds the method and optimiser, locks the run directory, and with `options.resume` restores
    /// the last checkpoint (weights, optimiser state, position). A fresh run refuses a directory holding
    /// another run (unless `options.overwrite`) and writes the resolved configuration; a resumed one checks
    /// it is unchanged. Nothing is written before every check has passed, and a refused run changes nothing.
    /// The lock is held until the trainer is dropped.
    pub fn new(
        config: Config,
        run_dir: &Path,
        device: &Device,
        options: TrainOptions,
    ) -> Result<Self> {
        config.validate("the configuration")?;
        let splits = open_splits(&config)?;
        let method = build_method(&config, splits.train.num_classes(), device)?;
        Self::with_method(config, method, splits, run_dir, device, options)
    }

    /// [`Trainer::new`] with a method built by the caller (a custom method, or a test's instrumented one)
    /// and the splits already open.
    pub fn with_method(
        config: Config,
        method: Box<dyn Method>,
        splits: Splits,
        run_dir: &Path,
        device: &Device,
        options: TrainOptions,
    ) -> Result<Self> {
        config.validate("the configuration")?;
        crate::precision::apply_precision(&config, device)?;
        let group = options.group.clone();
        let shard = Shard::new(group.rank(), group.world_size())?;
        let mut optimizer = build_optimizer(&config, &*method)?;
        let train = train_loader_sharded(&config, splits.train.clone(), device, shard)?;
        let eval = |ds| eval_loader_sharded(&config, ds, device, shard);
        let test = eval(splits.test.clone())?;
        let select_loader = match config.train.select {
            Selection::Val | Selection::Last => {
                Some(("val".to_string(), eval(splits.val.clone())?))
            }
            Selection::BestOnTest => Some(("test".to_string(), test.clone())),
        };
        let schedule = Schedule::new(
            config.schedule,
            config.train.epochs as u64,
            train.num_batches() as u64,
        )?;
        let inference =
            InferenceInfo::of_method(&config, &*method, splits.train.class_names().to_vec())?;
        // Rank 0 claims the directory; the others wait for it (a refusal ends the job) and never write.
        let (run, lock) = if group.is_main() {
            let (run, lock) = claim::claim(run_dir, &config, &options)?;
            (run, Some(lock))
        } else {
            (RunDir::at(run_dir), None)
        };
        group.barrier()?;
        let mut state = TrainerState {
            epoch: 0,
            batch_in_epoch: 0,
            step: 0,
            seed: config.seed,
            best: None,
            finished: false,
            world_size: group.world_size(),
        };
        let log = if options.resume {
            let path = run.last_checkpoint();
            let ckpt = checkpoint::load(&path, device)?;
            checkpoint::apply_weights(method.store(), &ckpt.weights, true)?;
            if let Some(o) = &ckpt.optimizer {
                optimizer
                    .load_state(o)
                    .map_err(|e| TrainError::checkpoint(&path, e.to_string()))?;
            }
            state = ckpt.state.ok_or_else(|| {
                TrainError::checkpoint(&path, "no trainer state: not a last checkpoint")
            })?;
            if state.world_size != group.world_size() {
                return Err(TrainError::checkpoint(
                    &path,
                    format!(
                        "--resume: the run was trained by {} processes and this one has {}; each process' \
                         part of every epoch depends on their number, so resume with {} (`mpirun -np {}`), \
                         or start a new run",
                        state.world_size,
                        group.world_size(),
                        state.world_size,
                        state.world_size
                    ),
                ));
            }
            tracing::info!(
                "resuming {} at epoch {}, batch {}, step {}",
                run.root().display(),
                state.epoch + 1,
                state.batch_in_epoch,
                state.step
            );
            if group.is_main() {
                MetricsLog::open(&run, Some(state.step))?
            } else {
                MetricsLog::detached(&run)
            }
        } else if group.is_main() {
            atomic_write(&run.config(), config.to_toml().as_bytes())?;
            MetricsLog::open(&run, None)?
        } else {
            MetricsLog::detached(&run)
        };
        replicas::check_identical(&group, method.store())?;
        let tb = if config.train.tensorboard && group.is_main() {
            TbLogger::open(&run.tb(), options.resume.then_some(state.step))
        } else {
            TbLogger::off()
        };
        let eval_images = match (&select_loader, config.train.tensorboard && group.is_main()) {
            (Some((_, loader)), true) => crate::tensorboard::gradcam_images(&*method, loader)?,
            _ => None,
        };
        let accumulator = Accumulator::new(config.optim.accumulate);
        Ok(Trainer {
            config,
            run,
            method,
            optimizer,
            schedule,
            train,
            select_loader,
            test,
            state,
            log,
            tb,
            eval_images,
            accumulator,
            options,
            inference,
            group,
            comm: (0.0, 0),
            _lock: lock,
        })
    }

    /// The method being trained.
    pub fn method(&self) -> &dyn Method {
        &*self.method
    }

    /// The run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// Where training stands.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The run's TensorBoard logging.
    pub fn tensorboard(&self) -> &TbLogger {
        &self.tb
    }

    /// Renders images with `hook` after each evaluation and logs them to TensorBoard as `explain/<name>`.
    pub fn set_eval_images(&mut self, hook: EvalImages) {
        self.eval_images = Some(hook);
    }

    /// Appends `record` to the metrics log and its scalars to TensorBoard.
    fn append(&mut self, record: Record) -> Result<()> {
        self.tb.record(&record);
        self.log.append(record)
    }

    fn save_last(&self) -> Result<()> {
        if !self.group.is_main() {
            return Ok(());
        }
        let opt = self.optimizer.state()?;
        checkpoint::save(
            &self.run.last_checkpoint(),
            self.method.store(),
            Some(&opt),
            Some(&self.state),
            Some(&self.inference),
        )
    }

    /// Saves the selected weights (and the state as it is) as `best.safetensors`.
    fn save_best(&self) -> Result<()> {
        if !self.group.is_main() {
            return Ok(());
        }
        checkpoint::save(
            &self.run.best_checkpoint(),
            self.method.store(),
            None,
            Some(&self.state),
            Some(&self.inference),
        )
    }

    fn write_plots(&self) -> Result<()> {
        if !self.group.is_main() {
            return Ok(());
        }
        for (name, svg) in run_charts(self.log.records()) {
            atomic_write(&self.run.plot(name), svg.as_bytes())?;
        }
        Ok(())
    }

    fn lr_record(&self) -> (Option<f64>, std::collections::BTreeMap<String, f64>) {
        let groups = self.optimizer.groups().groups();
        let lrs = groups
            .iter()
            .map(|g| (g.name.clone(), if g.frozen { 0.0 } else { g.lr }))
            .collect();
        (groups.first().map(|g| g.lr), lrs)
    }

    /// Trains to the last epoch (from where a resumed run stopped), then evaluates the test split with the
    /// selected weights. A NaN or infinite loss stops the run with [`TrainError::NonFiniteLoss`] and leaves
    /// the last checkpoint as it was.
    pub fn run(&mut self) -> Result<TrainSummary> {
        let start = Instant::now();
        let epochs = self.config.train.epochs;
        let ipe = self.train.num_batches();
        let bars = Bars::new(
            self.options.progress && self.group.is_main(),
            epochs,
            ipe,
            self.state.epoch,
        );
        let world = self.group.world_size();
        tracing::info!(
            "training {} ({} parameters) for {epochs} epochs of {ipe} batches of {}{} on {}{}; run directory {}",
            self.method.name(),
            self.method.store().trainable().iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
            self.config.data.batch_size,
            if world > 1 {
                format!(" per process x {world} processes")
            } else {
                String::new()
            },
            self.train.dataset().name(),
            // Runs reproduce bit for bit only at the same level and precision, so the log records both.
            if self.method.store().device().is_cpu() {
                format!("; CPU kernels {}{}", isa_description(), precision_description())
            } else {
                String::new()
            },
            self.run.root().display()
        );
        while self.state.epoch < epochs && !self.state.finished {
            let epoch = self.state.epoch;
            let batches = ipe - self.state.batch_in_epoch;
            let (trained, skipped) = self.train_epoch(epoch, &bars)?;
            self.end_epoch(epoch, &trained, batches, skipped, &bars)?;
        }
        bars.finish();
        let test = if self.config.train.final_test {
            Some(self.final_test()?)
        } else {
            None
        };
        self.write_plots()?;
        Ok(TrainSummary {
            run_dir: self.run.root().to_path_buf(),
            steps: self.state.step,
            best: self.state.best.clone(),
            test,
            protocol: protocol_label(self.config.train.select).to_string(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Trains the batches of `epoch` that are left (a resumed run skips those it trained before it stopped),
    /// appends a `train` record every `train.log_every_steps` steps and at the last batch, and saves the last
    /// checkpoint every `train.checkpoint_every_steps` steps. Returns the statistics of the batches trained and
    /// the files the loader skipped as bad in this pass.
    fn train_epoch(&mut self, epoch: usize, bars: &Bars) -> Result<(IntervalStats, usize)> {
        let ipe = self.train.num_batches();
        let every_ckpt = self.config.train.checkpoint_every_steps;
        let log_every = self.config.train.log_every_steps.max(1);
        self.optimizer.groups_mut().apply_freezing(epoch);
        let skip = self.state.batch_in_epoch;
        bars.start_epoch(skip);
        let mut last_ckpt_step = self.state.step;
        let mut interval = IntervalStats::start();
        let mut trained = IntervalStats::start();
        let mut batches = self.train.epoch(epoch as u64);
        for b in 0.. {
            let batch = batches.next();
            // Every rank trains the same number of steps: the epoch ends for all when one runs out (with
            // `data.skip_bad`, a rank that skipped files has fewer batches).
            if !self.group.all(batch.is_some())? {
                break;
            }
            let Some(batch) = batch else { break };
            if b < skip {
                continue;
            }
            let stats = self.train_batch(epoch, b, &batch?)?;
            interval.add(&stats);
            trained.add(&stats);
            bars.batch(stats.loss, trained.accuracy(), &interval);
            let last_batch = b + 1 == ipe;
            if self.state.step % log_every == 0 || last_batch {
                self.log_interval(epoch, &interval)?;
                interval = IntervalStats::start();
            }
            if every_ckpt > 0
                && self.state.step - last_ckpt_step >= every_ckpt
                && self.accumulator.is_empty()
                && !last_batch
            {
                // What was logged up to the checkpoint is on disk before the checkpoint is.
                self.tb.flush();
                self.save_last()?;
                last_ckpt_step = self.state.step;
            }
            if self.options.stop_after_steps == Some(self.state.step) {
                bars.finish();
                return Err(TrainError::Stopped {
                    step: self.state.step,
                });
            }
        }
        Ok((trained, batches.skipped()))
    }

    /// One training step on batch `b` of `epoch`, at the scheduled learning rate; the optimiser steps when
    /// the accumulated gradients are due (or at the epoch's last batch). Refuses a non-finite loss.
    fn train_batch(&mut self, epoch: usize, b: usize, batch: &Batch) -> Result<StepStats> {
        if self.state.step == 0 {
            let (seed, step) = (self.config.seed, self.state.step);
            let normalize = self.config.data.pipelines()?.0.normalize;
            let rng = |stream| keyed_rng(seed, epoch as u64, step, stream);
            self.tb
                .preview(&*self.method, &batch.images, &normalize, &rng, step)?;
        }
        let factor = self.schedule.factor(epoch as u64, b as u64);
        self.optimizer.groups_mut().set_lr_factor(factor);
        let flush = (b + 1) % self.accumulator.every() == 0 || b + 1 == self.train.num_batches();
        let mut ctx = StepContext::new(
            &mut *self.optimizer,
            &mut self.accumulator,
            self.config.optim.clip_grad_norm,
            flush,
            self.config.seed,
            epoch,
            self.state.step,
        )
        .with_group(&self.group, DEFAULT_BUCKET_BYTES);
        let stats = if self.config.train.sync_batch_norm {
            with_sync_batch_norm(&self.group, || self.method.train_step(batch, &mut ctx))?
        } else {
            self.method.train_step(batch, &mut ctx)?
        };
        self.comm.0 += ctx.comm_seconds();
        self.comm.1 += 1;
        if !stats.loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                epoch,
                step: self.state.step,
                value: stats.loss,
            });
        }
        self.state.step += 1;
        self.state.batch_in_epoch = b + 1;
        Ok(stats)
    }

    /// Appends the `train` record of the steps of `interval`, with the learning rates now.
    fn log_interval(&mut self, epoch: usize, interval: &IntervalStats) -> Result<()> {
        let interval = &interval.reduced(&self.group)?;
        let (lr, lrs) = self.lr_record();
        self.append(Record {
            kind: "train".into(),
            epoch,
            step: self.state.step,
            lr,
            lrs: Some(lrs),
            loss: Some(interval.loss()),
            losses: interval.losses(),
            train_acc: Some(interval.accuracy()),
            images_per_sec: Some(interval.images_per_sec(interval.seconds())),
            ..Default::default()
        })
    }

    /// Ends `epoch`, which had `batches` batches left to train and trained them with the statistics
    /// `trained`: appends its `epoch` record (the mean loss is over `batches`, even when a loader that skips
    /// bad samples yielded fewer) and, with `data.skip_bad`, the `skipped` files, evaluates and selects, moves the state to the next epoch, saves the
    /// checkpoints and redraws the plots.
    fn end_epoch(
        &mut self,
        epoch: usize,
        trained: &IntervalStats,
        batches: usize,
        skipped: usize,
        bars: &Bars,
    ) -> Result<()> {
        let trained = &trained.reduced(&self.group)?;
        if self.group.is_distributed() && self.group.is_main() {
            let (secs, steps) = std::mem::take(&mut self.comm);
            tracing::info!(
                "epoch {}: gradient all-reduce {:.1} ms per step over {} processes",
                epoch + 1,
                1e3 * secs / steps.max(1) as f64,
                self.group.world_size()
            );
        }
        let seconds = trained.seconds();
        let (train_loss, train_acc) = (trained.loss_over(batches), trained.accuracy());
        self.append(Record {
            kind: "epoch".into(),
            epoch,
            step: self.state.step,
            loss: Some(train_loss),
            losses: trained.losses_over(batches),
            train_acc: Some(train_acc),
            images_per_sec: Some(trained.images_per_sec(seconds)),
            seconds: Some(seconds),
            skipped: self.config.data.skip_bad.then_some(skipped),
            ..Default::default()
        })?;
        let mut line = format!(
            "epoch {}/{}: train loss {train_loss:.4}, train acc {:.2}%, {seconds:.1} s",
            epoch + 1,
            self.config.train.epochs,
            100.0 * train_acc
        );
        if let Some(selection) = self.select(epoch)? {
            line.push_str(&selection);
        }
        self.state.epoch = epoch + 1;
        self.state.batch_in_epoch = 0;
        if self.state.epoch == self.config.train.epochs {
            self.state.finished = true;
        }
        if self.config.train.select == Selection::Last {
            // Every epoch's weights are the selected ones, saved with the state after the epoch.
            self.save_best()?;
        }
        self.tb.flush();
        self.save_last()?;
        self.write_plots()?;
        bars.end_epoch(&line);
        Ok(())
    }

    /// Evaluates the selection split (validation, or test under the papers' protocol) after `epoch`,
    /// appends the `eval` record and, when the top-1 beats the best so far, selects this epoch's weights and
    /// saves them as `best.safetensors`. Returns the evaluation's part of the epoch line.
    fn select(&mut self, epoch: usize) -> Result<Option<String>> {
        let Some((split, loader)) = &self.select_loader else {
            return Ok(None);
        };
        let report = evaluate_in(&*self.method, loader, split, &self.group)?;
        let top1 = report.main().top1;
        self.log
            .append(eval_record(&report, epoch, self.state.step))?;
        let step = self.state.step;
        self.tb.evaluation(&format!("eval/{split}"), &report, step);
        if let Some(hook) = &mut self.eval_images {
            self.tb.eval_images(hook, &*self.method, step);
        }
        let improves = match (&self.state.best, self.config.train.select) {
            (_, Selection::Last) => false,
            (None, _) => true,
            (Some(b), _) => top1 > b.score,
        };
        if improves {
            self.state.best = Some(BestScore {
                epoch,
                score: top1,
                split: split.clone(),
            });
            self.save_best()?;
        }
        Ok(Some(format!(", {split} top-1 {:.2}%", 100.0 * top1)))
    }

    /// Loads the selected weights (`best.safetensors`) and evaluates the test split; writes
    /// `eval-test.json` and a `test` record.
    fn final_test(&mut self) -> Result<EvalReport> {
        // Every rank loads the weights rank 0 selected, once it has written them.
        self.group.barrier()?;
        let best = self.run.best_checkpoint();
        let seen = self.group.count(best.exists())?;
        if seen != 0 && seen != self.group.world_size() {
            return Err(TrainError::Msg(format!(
                "{} is visible to {seen} of the {} processes: the run directory must be on a filesystem \
                 every machine of a data-parallel run sees",
                best.display(),
                self.group.world_size()
            )));
        }
        if best.exists() {
            let ckpt = checkpoint::load(&best, self.method.store().device())?;
            checkpoint::apply_weights(self.method.store(), &ckpt.weights, true)?;
        }
        let report = evaluate_in(&*self.method, &self.test, "test", &self.group)?;
        let mut rec = eval_record(&report, self.state.epoch.saturating_sub(1), self.state.step);
        rec.kind = "test".into();
        self.log.append(rec)?;
        if !self.group.is_main() {
            return Ok(report);
        }
        let mut json: serde_json::Value =
            serde_json::from_str(&report.to_json()).expect("valid JSON");
        json["protocol"] =
            serde_json::Value::String(protocol_label(self.config.train.select).into());
        if let Some(b) = &self.state.best {
            json["selected_epoch"] = serde_json::json!(b.epoch);
        }
        atomic_write(
            &self.run.eval_report("test"),
            serde_json::to_string_pretty(&json)
                .expect("JSON")
                .as_bytes(),
        )?;
        self.tb.evaluation("test", &report, self.state.step);
        self.tb.flush();
        Ok(report)
    }
}

/// The metrics record of an evaluation.
fn eval_record(report: &EvalReport, epoch: usize, step: u64) -> Record {
    let main = report.main();
    Record {
        kind: "eval".into(),
        epoch,
        step,
        split: Some(report.split.clone()),
        top1: Some(main.top1),
        top5: Some(main.top5),
        mean_per_class: Some(main.mean_per_class),
        heads: Some(
            report
                .heads
                .iter()
                .map(|h| (h.name.clone(), h.top1))
                .collect(),
        ),
        ..Default::default()
    }
}

/// `, bf16 products (<kernel>)` in bf16 precision, else nothing.
fn precision_description() -> String {
    match (fgvc_ops::precision(), fgvc_ops::Bf16Kernel::current()) {
        (fgvc_ops::Precision::Bf16, Some(k)) => format!(", bf16 products ({k})"),
        _ => String::new(),
    }
}

/// The CPU kernels' instruction-set level, and the cap when one holds it below the CPU's.
fn isa_description() -> String {
    let (level, cpu) = (fgvc_ops::isa(), fgvc_ops::Isa::detected());
    if level == cpu {
        level.to_string()
    } else {
        format!(
            "{level} (capped by {}; this CPU has {cpu})",
            fgvc_ops::ISA_ENV
        )
    }
}
