//! The training loop: epochs of batches through a [`Method`], the schedule, evaluation and model selection,
//! metrics, plots and checkpoints, and exact resumption.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use fgvc_data::Loader;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::checkpoint::{self, BestScore, TrainerState};
use crate::config::{Config, Selection};
use crate::data::{eval_loader, open_splits, train_loader, Splits};
use crate::error::{Result, TrainError};
use crate::eval::{evaluate, EvalReport};
use crate::method::{Accumulator, Method, StepContext};
use crate::metrics::{MetricsLog, Record};
use crate::optim::build_optimizer;
use crate::optim::Optimizer;
use crate::plot::run_charts;
use crate::registry::build_method;
use crate::run_dir::{atomic_write, RunDir};
use crate::schedule::Schedule;

/// How a run starts.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `checkpoint-last.safetensors` of the run directory.
    pub resume: bool,
    /// Show progress bars (they are hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Stop with [`TrainError::Stopped`] after this many global steps (tests simulate a kill with it).
    pub stop_after_steps: Option<u64>,
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
    accumulator: Accumulator,
    options: TrainOptions,
}

impl Trainer {
    /// Prepares a run of `config` in `run_dir` on `device`: opens the data, builds the method and
    /// optimiser, and with `options.resume` restores the last checkpoint (weights, optimiser state, position).
    /// A fresh run writes the resolved configuration; a resumed one checks it is unchanged.
    pub fn new(
        config: Config,
        run_dir: &Path,
        device: &Device,
        options: TrainOptions,
    ) -> Result<Self> {
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
        let run = RunDir::create(run_dir)?;
        let mut optimizer = build_optimizer(&config, &*method)?;
        let train = train_loader(&config, splits.train.clone(), device)?;
        let test = eval_loader(&config, splits.test.clone(), device)?;
        let select_loader = match config.train.select {
            Selection::Val | Selection::Last => Some((
                "val".to_string(),
                eval_loader(&config, splits.val.clone(), device)?,
            )),
            Selection::BestOnTest => Some(("test".to_string(), test.clone())),
        };
        let schedule = Schedule::new(
            config.schedule,
            config.train.epochs as u64,
            train.num_batches() as u64,
        )?;
        let resolved = config.to_toml();
        let mut state = TrainerState {
            epoch: 0,
            batch_in_epoch: 0,
            step: 0,
            seed: config.seed,
            best: None,
            finished: false,
        };
        let log = if options.resume {
            let path = run.last_checkpoint();
            if !path.exists() {
                return Err(TrainError::Msg(format!(
                    "--resume: {} has no checkpoint-last.safetensors to resume from",
                    run.root().display()
                )));
            }
            if let Ok(saved) = std::fs::read_to_string(run.config()) {
                if saved != resolved {
                    return Err(TrainError::Msg(format!(
                        "--resume: the configuration differs from the one the run started with ({}); resume \
                         with the same configuration and overrides, or start a new run directory",
                        run.config().display()
                    )));
                }
            }
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
            tracing::info!(
                "resuming {} at epoch {}, batch {}, step {}",
                run.root().display(),
                state.epoch + 1,
                state.batch_in_epoch,
                state.step
            );
            MetricsLog::open(&run, Some(state.step))?
        } else {
            atomic_write(&run.config(), resolved.as_bytes())?;
            MetricsLog::open(&run, None)?
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
            accumulator,
            options,
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

    fn save_last(&self) -> Result<()> {
        let opt = self.optimizer.state()?;
        checkpoint::save(
            &self.run.last_checkpoint(),
            self.method.store(),
            Some(&opt),
            Some(&self.state),
        )
    }

    fn write_plots(&self) -> Result<()> {
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
        let every_ckpt = self.config.train.checkpoint_every_steps;
        let log_every = self.config.train.log_every_steps.max(1);
        let bars = Bars::new(self.options.progress, epochs, ipe, self.state.epoch);
        let mut last_ckpt_step = self.state.step;
        tracing::info!(
            "training {} ({} parameters) for {epochs} epochs of {ipe} batches of {} on {}; run directory {}",
            self.method.name(),
            self.method.store().trainable().iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
            self.config.data.batch_size,
            self.train.dataset().name(),
            self.run.root().display()
        );
        while self.state.epoch < epochs && !self.state.finished {
            let epoch = self.state.epoch;
            self.optimizer.groups_mut().apply_freezing(epoch);
            let skip = self.state.batch_in_epoch;
            bars.start_epoch(epoch, skip);
            let (mut loss_sum, mut correct, mut seen, mut steps_in_interval) =
                (0.0, 0usize, 0usize, 0u64);
            let (mut epoch_loss, mut epoch_correct, mut epoch_seen) = (0.0, 0usize, 0usize);
            let mut interval_start = Instant::now();
            let epoch_start = Instant::now();
            for (b, batch) in self.train.epoch(epoch as u64).enumerate() {
                if b < skip {
                    continue;
                }
                let batch = batch?;
                let factor = self.schedule.factor(epoch as u64, b as u64);
                self.optimizer.groups_mut().set_lr_factor(factor);
                let flush = (b + 1) % self.accumulator.every() == 0 || b + 1 == ipe;
                let mut ctx = StepContext::new(
                    &mut *self.optimizer,
                    &mut self.accumulator,
                    self.config.optim.clip_grad_norm,
                    flush,
                    self.config.seed,
                    epoch,
                    self.state.step,
                );
                let stats = self.method.train_step(&batch, &mut ctx)?;
                if !stats.loss.is_finite() {
                    return Err(TrainError::NonFiniteLoss {
                        epoch,
                        step: self.state.step,
                        value: stats.loss,
                    });
                }
                self.state.step += 1;
                self.state.batch_in_epoch = b + 1;
                loss_sum += stats.loss;
                correct += stats.correct;
                seen += stats.count;
                steps_in_interval += 1;
                epoch_loss += stats.loss;
                epoch_correct += stats.correct;
                epoch_seen += stats.count;
                bars.batch(
                    stats.loss,
                    epoch_correct as f64 / epoch_seen.max(1) as f64,
                    seen,
                    interval_start,
                );
                if self.state.step % log_every == 0 || b + 1 == ipe {
                    let (lr, lrs) = self.lr_record();
                    self.log.append(Record {
                        kind: "train".into(),
                        epoch,
                        step: self.state.step,
                        lr,
                        lrs: Some(lrs),
                        loss: Some(loss_sum / steps_in_interval as f64),
                        train_acc: Some(correct as f64 / seen.max(1) as f64),
                        images_per_sec: Some(
                            seen as f64 / interval_start.elapsed().as_secs_f64().max(1e-9),
                        ),
                        ..Default::default()
                    })?;
                    (loss_sum, correct, seen, steps_in_interval) = (0.0, 0, 0, 0);
                    interval_start = Instant::now();
                }
                if every_ckpt > 0
                    && self.state.step - last_ckpt_step >= every_ckpt
                    && self.accumulator.is_empty()
                    && b + 1 < ipe
                {
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
            // End of epoch: evaluate, select, checkpoint.
            let epoch_seconds = epoch_start.elapsed().as_secs_f64();
            let train_loss = epoch_loss / (ipe - skip).max(1) as f64;
            let train_acc = epoch_correct as f64 / epoch_seen.max(1) as f64;
            self.log.append(Record {
                kind: "epoch".into(),
                epoch,
                step: self.state.step,
                loss: Some(train_loss),
                train_acc: Some(train_acc),
                images_per_sec: Some(epoch_seen as f64 / epoch_seconds.max(1e-9)),
                seconds: Some(epoch_seconds),
                ..Default::default()
            })?;
            let mut line = format!(
                "epoch {}/{epochs}: train loss {train_loss:.4}, train acc {:.2}%, {epoch_seconds:.1} s",
                epoch + 1,
                100.0 * train_acc
            );
            if let Some((split, loader)) = &self.select_loader {
                let report = evaluate(&*self.method, loader, split)?;
                let main = report.main();
                line.push_str(&format!(", {split} top-1 {:.2}%", 100.0 * main.top1));
                self.log
                    .append(eval_record(&report, epoch, self.state.step))?;
                let improves = match (&self.state.best, self.config.train.select) {
                    (_, Selection::Last) => false,
                    (None, _) => true,
                    (Some(b), _) => main.top1 > b.score,
                };
                if improves {
                    let best = BestScore {
                        epoch,
                        score: main.top1,
                        split: split.clone(),
                    };
                    self.state.best = Some(best);
                    checkpoint::save(
                        &self.run.best_checkpoint(),
                        self.method.store(),
                        None,
                        Some(&self.state),
                    )?;
                }
            }
            self.state.epoch = epoch + 1;
            self.state.batch_in_epoch = 0;
            if self.state.epoch == epochs {
                self.state.finished = true;
            }
            if self.config.train.select == Selection::Last {
                checkpoint::save(
                    &self.run.best_checkpoint(),
                    self.method.store(),
                    None,
                    Some(&self.state),
                )?;
            }
            self.save_last()?;
            last_ckpt_step = self.state.step;
            self.write_plots()?;
            bars.end_epoch(&line);
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

    /// Loads the selected weights (`best.safetensors`) and evaluates the test split; writes
    /// `eval-test.json` and a `test` record.
    fn final_test(&mut self) -> Result<EvalReport> {
        let best = self.run.best_checkpoint();
        if best.exists() {
            let ckpt = checkpoint::load(&best, self.method.store().device())?;
            checkpoint::apply_weights(self.method.store(), &ckpt.weights, true)?;
        }
        let report = evaluate(&*self.method, &self.test, "test")?;
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
        let mut rec = eval_record(&report, self.state.epoch.saturating_sub(1), self.state.step);
        rec.kind = "test".into();
        self.log.append(rec)?;
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

/// The epoch and batch progress bars (hidden when stderr is not a terminal or progress is off).
struct Bars {
    multi: MultiProgress,
    epochs: ProgressBar,
    batches: ProgressBar,
}

impl Bars {
    fn new(show: bool, epochs: usize, ipe: usize, start_epoch: usize) -> Self {
        let target = if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let epochs_bar = multi.add(ProgressBar::new(epochs as u64));
        epochs_bar.set_style(
            ProgressStyle::with_template(
                "epoch {pos}/{len} [{wide_bar}] elapsed {elapsed_precise} eta {eta_precise}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        epochs_bar.set_position(start_epoch as u64);
        let batches = multi.add(ProgressBar::new(ipe as u64));
        batches.set_style(
            ProgressStyle::with_template("batch {pos}/{len} [{bar:30}] {msg} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Bars {
            multi,
            epochs: epochs_bar,
            batches,
        }
    }

    fn start_epoch(&self, _epoch: usize, skip: usize) {
        self.batches.reset();
        self.batches.set_position(skip as u64);
    }

    fn batch(&self, loss: f64, acc: f64, seen: usize, since: Instant) {
        let rate = seen as f64 / since.elapsed().as_secs_f64().max(1e-9);
        self.batches.set_message(format!(
            "loss {loss:.4} acc {:.1}% {rate:.0} img/s",
            100.0 * acc
        ));
        self.batches.inc(1);
    }

    fn end_epoch(&self, line: &str) {
        self.multi.suspend(|| tracing::info!("{line}"));
        self.epochs.inc(1);
    }

    fn finish(&self) {
        self.batches.finish_and_clear();
        self.epochs.finish_and_clear();
    }
}
