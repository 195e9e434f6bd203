//! Learning-rate schedules: a factor applied to every group's base learning rate, computed on the host from
//! the position in training (epoch, iteration) so a resumed run gets exactly the same values.
//!
//! * `constant`;
//! * `cosine`: `eta_min + (1 - eta_min) * (1 + cos(pi * (t mod t_max) / t_max)) / 2`, with `t` the epoch
//!   (PMG: the value is constant within an epoch) or the global iteration (RMG-PMSI steps it per batch; with
//!   its `t_max` counted in images the rate stays near constant, which is reproducible with an explicit
//!   `t_max`);
//! * `step`: `gamma ^ floor(t / step_size)` (DCL's `StepLR(60, 0.1)` per epoch);
//! * optional linear warm-up over the first iterations, multiplied in (PyTorch's `LinearLR` chained).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The unit a schedule counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// The value changes once per epoch (`t` = 0-based epoch).
    #[default]
    Epoch,
    /// The value changes every iteration (`t` = 0-based global iteration).
    Iteration,
}

/// The shape of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Factor 1 throughout.
    #[default]
    Constant,
    /// Cosine annealing.
    Cosine,
    /// Multiply by `gamma` every `step_size` units.
    Step,
}

fn default_gamma() -> f64 {
    0.1
}

/// A schedule as configured (`[schedule]` in a run configuration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The shape.
    #[serde(default)]
    pub kind: ScheduleKind,
    /// The unit `t` counts in.
    #[serde(default)]
    pub per: Per,
    /// Cosine period in units of `per`; the run's length (epochs or iterations) when absent.
    #[serde(default)]
    pub t_max: Option<u64>,
    /// Cosine floor, as a fraction of the base rate.
    #[serde(default)]
    pub eta_min: f64,
    /// Step decay period in units of `per`.
    #[serde(default)]
    pub step_size: Option<u64>,
    /// Step decay factor (default 0.1).
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Linear warm-up length in iterations (0: none).
    #[serde(default)]
    pub warmup_iters: u64,
    /// Warm-up length in epochs, converted to iterations; added to `warmup_iters`.
    #[serde(default)]
    pub warmup_epochs: u64,
    /// Factor at the first warm-up iteration (it rises linearly to 1).
    #[serde(default)]
    pub warmup_start: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: ScheduleKind::Constant,
            per: Per::Epoch,
            t_max: None,
            eta_min: 0.0,
            step_size: None,
            gamma: default_gamma(),
            warmup_iters: 0,
            warmup_epochs: 0,
            warmup_start: 0.0,
        }
    }
}

/// A schedule resolved for a run of `epochs` epochs of `iters_per_epoch` iterations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    config: ScheduleConfig,
    iters_per_epoch: u64,
    t_max: u64,
    warmup: u64,
}

impl Schedule {
    /// Resolves `config` for a run; errors on a zero period or a step schedule without `step_size`.
    pub fn new(config: ScheduleConfig, epochs: u64, iters_per_epoch: u64) -> Result<Self> {
        let bad = |m: String| Err(TrainError::Msg(format!("schedule: {m}")));
        let length = match config.per {
            Per::Epoch => epochs,
            Per::Iteration => epochs * iters_per_epoch,
        };
        let t_max = config.t_max.unwrap_or(length).max(1);
        if config.kind == ScheduleKind::Step {
            match config.step_size {
                None | Some(0) => return bad("kind = \"step\" needs step_size >= 1".into()),
                _ => {}
            }
        }
        if !(0.0..=1.0).contains(&config.warmup_start) {
            return bad(format!(
                "warmup_start must be in [0, 1], got {}",
                config.warmup_start
            ));
        }
        Ok(Schedule {
            config,
            iters_per_epoch: iters_per_epoch.max(1),
            t_max,
            warmup: config.warmup_iters + config.warmup_epochs * iters_per_epoch,
        })
    }

    /// The factor for iteration `iter` (0-based, within the epoch) of epoch `epoch` (0-based).
    pub fn factor(&self, epoch: u64, iter: u64) -> f64 {
        let global = epoch * self.iters_per_epoch + iter;
        let t = match self.config.per {
            Per::Epoch => epoch,
            Per::Iteration => global,
        };
        let main = match self.config.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Cosine => {
                let phase = (t % self.t_max) as f64 / self.t_max as f64;
                let m = self.config.eta_min;
                m + (1.0 - m) * (1.0 + (std::f64::consts::PI * phase).cos()) / 2.0
            }
            ScheduleKind::Step => {
                let k = t / self.config.step_size.unwrap_or(1);
                self.config.gamma.powi(k as i32)
            }
        };
        let warm = if global < self.warmup {
            let s = self.config.warmup_start;
            s + (1.0 - s) * global as f64 / self.warmup as f64
        } else {
            1.0
        };
        main * warm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn pmg_cosine_per_epoch() {
        // PMG: lr0/2 (cos(pi e / 200) + 1), constant within an epoch.
        let cfg = ScheduleConfig {
            kind: ScheduleKind::Cosine,
            ..Default::default()
        };
        let s = Schedule::new(cfg, 200, 375).unwrap();
        close(s.factor(0, 0), 1.0);
        close(s.factor(0, 374), 1.0);
        close(s.factor(100, 7), 0.5);
        close(
            s.factor(199, 0),
            0.5 * ((std::f64::consts::PI * 199.0 / 200.0).cos() + 1.0),
        );
        assert!((s.factor(199, 0) - 6.2e-5).abs() < 1e-6);
    }

    #[test]
    fn cosine_per_iteration_and_rmg_t_max() {
        let cfg = ScheduleConfig {
            kind: ScheduleKind::Cosine,
            per: Per::Iteration,
            ..Default::default()
        };
        let s = Schedule::new(cfg, 2, 10).unwrap();
        close(s.factor(0, 0), 1.0);
        close(s.factor(1, 0), 0.5);
        close(
            s.factor(1, 5),
            0.5 * (1.0 + (std::f64::consts::PI * 0.75).cos()),
        );
        // RMG-PMSI: T_max = 150 epochs x 5994 images, stepped once per batch of 32 (187 per epoch).
        let rmg = ScheduleConfig {
            t_max: Some(150 * 5994),
            ..cfg
        };
        let s = Schedule::new(rmg, 150, 187).unwrap();
        let end = s.factor(149, 186);
        assert!((end - 0.9976).abs() < 1e-3, "{end}");
    }

    #[test]
    fn cosine_floor() {
        let cfg = ScheduleConfig {
            kind: ScheduleKind::Cosine,
            eta_min: 0.1,
            ..Default::default()
        };
        let s = Schedule::new(cfg, 4, 1).unwrap();
        close(s.factor(2, 0), 0.55);
    }

    #[test]
    fn dcl_step_decay() {
        let cfg = ScheduleConfig {
            kind: ScheduleKind::Step,
            step_size: Some(60),
            ..Default::default()
        };
        let s = Schedule::new(cfg, 360, 10).unwrap();
        close(s.factor(0, 0), 1.0);
        close(s.factor(59, 9), 1.0);
        close(s.factor(60, 0), 0.1);
        assert!((s.factor(180, 0) - 1e-3).abs() < 1e-15);
        let missing = ScheduleConfig {
            step_size: None,
            ..cfg
        };
        assert!(Schedule::new(missing, 10, 1).is_err());
    }

    #[test]
    fn linear_warmup_multiplies_the_schedule() {
        let cfg = ScheduleConfig {
            kind: ScheduleKind::Constant,
            warmup_iters: 4,
            warmup_start: 0.2,
            ..Default::default()
        };
        let s = Schedule::new(cfg, 3, 3).unwrap();
        let v: Vec<f64> = (0..6).map(|i| s.factor(i / 3, i % 3)).collect();
        for (a, b) in v.iter().zip([0.2, 0.4, 0.6, 0.8, 1.0, 1.0]) {
            close(*a, b);
        }
        let epochs = ScheduleConfig {
            kind: ScheduleKind::Cosine,
            warmup_epochs: 1,
            ..Default::default()
        };
        let s = Schedule::new(epochs, 2, 4).unwrap();
        close(s.factor(0, 2), 0.5);
        close(
            s.factor(1, 0),
            0.0 + 0.5 * (1.0 + (std::f64::consts::PI / 2.0).cos()),
        );
    }
}
