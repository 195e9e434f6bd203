//! The running statistics of a span of training steps: the loss, accuracy and throughput a `train` record
//! reports for the steps since the previous one, and an `epoch` record for a whole epoch.

use std::collections::BTreeMap;
use std::time::Instant;

use fgvc_distributed::Group;

use crate::error::Result;
use crate::method::StepStats;

/// Sums over the steps of an interval, and when it started.
#[derive(Debug, Clone)]
pub(super) struct IntervalStats {
    loss: f64,
    correct: usize,
    seen: usize,
    steps: u64,
    /// Sums of the named partial losses.
    losses: BTreeMap<String, f64>,
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
            losses: BTreeMap::new(),
            start: Instant::now(),
        }
    }

    /// Counts one step.
    pub(super) fn add(&mut self, stats: &StepStats) {
        self.loss += stats.loss;
        self.correct += stats.correct;
        self.seen += stats.count;
        self.steps += 1;
        for (name, value) in &stats.losses {
            *self.losses.entry(name.clone()).or_default() += value;
        }
    }

    /// The mean loss of a step.
    pub(super) fn loss(&self) -> f64 {
        self.loss_over(self.steps as usize)
    }

    /// The loss summed over the interval, divided by `steps` (at least one).
    pub(super) fn loss_over(&self, steps: usize) -> f64 {
        self.loss / steps.max(1) as f64
    }

    /// The mean of each named partial loss over the interval's steps.
    pub(super) fn losses(&self) -> Option<BTreeMap<String, f64>> {
        self.losses_over(self.steps as usize)
    }

    /// Each named partial loss summed over the interval, divided by `steps` (at least one); `None` for a
    /// method that names no partial loss.
    pub(super) fn losses_over(&self, steps: usize) -> Option<BTreeMap<String, f64>> {
        let n = steps.max(1) as f64;
        (!self.losses.is_empty()).then(|| {
            self.losses
                .iter()
                .map(|(k, v)| (k.clone(), v / n))
                .collect()
        })
    }

    /// The fraction of training images classified correctly.
    pub(super) fn accuracy(&self) -> f64 {
        self.correct as f64 / self.seen.max(1) as f64
    }

    /// Seconds since the interval started.
    pub(super) fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The interval over every rank of `group`: losses averaged, images and correct ones summed (so the
    /// throughput is the whole group's). Every rank must call it at the same step.
    pub(super) fn reduced(&self, group: &Group) -> Result<IntervalStats> {
        if !group.is_distributed() {
            return Ok(self.clone());
        }
        let mut v = vec![self.loss, self.correct as f64, self.seen as f64];
        v.extend(self.losses.values());
        group.sum_f64(&mut v)?;
        let w = group.world_size() as f64;
        let mut out = self.clone();
        out.loss = v[0] / w;
        out.correct = v[1].round() as usize;
        out.seen = v[2].round() as usize;
        for (value, sum) in out.losses.values_mut().zip(&v[3..]) {
            *value = sum / w;
        }
        Ok(out)
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
        assert_eq!(s.losses_over(2), None);
        let mut p = IntervalStats::start();
        for (a, b) in [(1.0, 3.0), (2.0, 5.0)] {
            p.add(&StepStats {
                losses: vec![("jigsaw8".into(), a), ("concat".into(), b)],
                ..step(a + b, 0, 4)
            });
        }
        let means = p.losses_over(2).unwrap();
        assert_eq!((means["jigsaw8"], means["concat"]), (1.5, 4.0));
        assert!(s.seconds() >= 0.0);
    }
}
