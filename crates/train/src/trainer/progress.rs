//! The epoch and batch progress bars of a run, drawn on stderr; hidden when stderr is not a terminal or
//! progress is off.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::interval::IntervalStats;

/// The two bars: epochs of the run, batches of the epoch.
pub(super) struct Bars {
    multi: MultiProgress,
    epochs: ProgressBar,
    batches: ProgressBar,
}

impl Bars {
    /// Bars for `epochs` epochs of `ipe` batches, the first `start_epoch` already done.
    pub(super) fn new(show: bool, epochs: usize, ipe: usize, start_epoch: usize) -> Self {
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

    /// An epoch starts with `skip` batches already trained (a resumed run).
    pub(super) fn start_epoch(&self, skip: usize) {
        self.batches.reset();
        self.batches.set_position(skip as u64);
    }

    /// A batch was trained: its loss, the epoch's accuracy so far, the throughput of the current interval.
    pub(super) fn batch(&self, loss: f64, acc: f64, interval: &IntervalStats) {
        let rate = interval.images_per_sec(interval.seconds());
        self.batches.set_message(format!(
            "loss {loss:.4} acc {:.1}% {rate:.0} img/s",
            100.0 * acc
        ));
        self.batches.inc(1);
    }

    /// An epoch ended: logs its summary `line` above the bars.
    pub(super) fn end_epoch(&self, line: &str) {
        self.multi.suspend(|| tracing::info!("{line}"));
        self.epochs.inc(1);
    }

    /// Clears the bars.
    pub(super) fn finish(&self) {
        self.batches.finish_and_clear();
        self.epochs.finish_and_clear();
    }
}
