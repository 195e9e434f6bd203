//! The running statistics of a span of training steps: the loss, accuracy and throughput a `train` record
//! reports for the steps since the previous one, and an `epoch` record for a whole epoch.

use std::time::Instant;

use crate::method::StepStats;

/// Sums over the steps of an interval, and when it started.
#[derive(Debug, Clone)]
pub(super) struct IntervalStats {
    loss: f64,
    correct: usize,
    seen: usize,
    steps: u64,
    start: Instant,
}

impl IntervalStats {
    /// An interval starting now, with no step yet.
    pub(super) fn start() -> Self {
        IntervalStats {
            loss: 0.0,
            correct: 0,
            seen: 0,
            steps: 0,
            start: Instant::now(),
        }
    }

    /// Counts one step.
    pub(super) fn add(&mut self, stats: &StepStats) {
        self.loss += stats.loss;
        self.correct += stats.correct;
        self.seen += stats.count;
        self.steps += 1;
    }

    /// The mean loss of a step.
    pub(super) fn loss(&self) -> f64 {
        self.loss_over(self.steps as usize)
    }

    /// The loss summed over the interval, divided by `steps` (at least one).
    pub(super) fn loss_over(&self, steps: usize) -> f64 {
        self.loss / steps.max(1) as f64
    }

    /// The fraction of training images classified correctly.
    pub(super) fn accuracy(&self) -> f64 {
        self.correct as f64 / self.seen.max(1) as f64
    }

    /// Seconds since the interval started.
    pub(super) fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Training images per second over `seconds`.
    pub(super) fn images_per_sec(&self, seconds: f64) -> f64 {
        self.seen as f64 / seconds.max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(loss: f64, correct: usize, count: usize) -> StepStats {
        StepStats {
            loss,
            correct,
            count,
            losses: Vec::new(),
        }
    }

    #[test]
    fn means_over_the_steps_of_the_interval() {
        let mut s = IntervalStats::start();
        assert_eq!(
            (s.loss(), s.accuracy(), s.images_per_sec(1.0)),
            (0.0, 0.0, 0.0)
        );
        s.add(&step(1.5, 3, 8));
        s.add(&step(0.5, 5, 8));
        assert_eq!((s.loss(), s.accuracy()), (1.0, 0.5));
        assert_eq!(s.loss_over(4), 0.5);
        assert_eq!(s.images_per_sec(2.0), 8.0);
        assert!(s.seconds() >= 0.0);
    }
}
