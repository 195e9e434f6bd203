//! The configurations of the miniature: the source task a backbone is pretrained on, and each method's
//! official fine-tuning recipe scaled down to the synthetic target set.
//!
//! Scaling keeps what the official code fixes relative to itself (the heads' rate over the backbone's, the
//! schedule's shape over the run, the loss weights, the optimiser steps per batch, the batch size, weight
//! decay and momentum) and changes what depends on the scale: the epochs, and every rate by one common
//! factor per backbone, chosen among [`Budget::lr_scales`] on the baseline's validation split.
//! docs/methods.md lists each recipe.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fgvc_train::methods::{baseline, coarse2fine, dcl, pmg, rmg_pmsi};
use toml::{Table, Value};

use crate::synthetic_table::{base_config, config_for};

/// The sizes of the miniature.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Classes of the source task (disjoint from the target's).
    pub source_classes: usize,
    /// Training images per source class.
    pub source_train_per_class: usize,
    /// Validation (and test) images per source class.
    pub source_val_per_class: usize,
    /// Seed of the source images (the target's is the preset's, 0).
    pub source_seed: u64,
    /// Epochs of pretraining on the source task.
    pub pretrain_epochs: usize,
    /// Epochs of every fine-tuning run.
    pub finetune_epochs: usize,
    /// Candidate factors on the official learning rates (all but Coarse2Fine's, see [`Recipe::scaled`]):
    /// each backbone's is the one whose baseline has the best mean val top-1 over the seeds.
    pub lr_scales: Vec<f64>,
    /// MobileNetV2's width multiplier (the synthetic table's 0.5).
    pub mobilenet_width: f64,
    /// ResNet-18's base width (the synthetic configs' 16).
    pub resnet_width: usize,
    /// Classes of the target (`None`: the presets' 5).
    pub target_classes: Option<usize>,
    /// Images per class of the target's train, val and test splits (`None`: the preset's 200/40/100).
    pub target_per_class: Option<[usize; 3]>,
}

impl Budget {
    /// The benchmark as docs/methods.md reports it.
    pub fn full() -> Self {
        Budget {
            source_classes: 60,
            source_train_per_class: 100,
            source_val_per_class: 10,
            source_seed: 1,
            pretrain_epochs: 15,
            finetune_epochs: 10,
            lr_scales: vec![1.0, 3.0, 10.0],
            mobilenet_width: 0.5,
            resnet_width: 16,
            // 20 classes that differ in fewer parts than the presets' 5, with CUB's 30 training images per
            // class (5994 / 200): the presets' target is solved at 97 % by a tuned baseline, which leaves
            // no room to tell the methods apart (docs/methods.md).
            target_classes: Some(20),
            target_per_class: Some([30, 20, 50]),
        }
    }

    /// The reduced version CI runs: one backbone at half width, small splits, few epochs.
    pub fn quick() -> Self {
        Budget {
            source_classes: 5,
            source_train_per_class: 200,
            source_val_per_class: 10,
            pretrain_epochs: 8,
            finetune_epochs: 3,
            resnet_width: 8,
            target_classes: None,
            target_per_class: Some([100, 20, 40]),
            lr_scales: vec![10.0],
            ..Budget::full()
        }
    }
}

/// An official recipe: the backbone's rate and everything fixed relative to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recipe {
    /// The backbone's learning rate in the official code (before the common factor).
    pub backbone_lr: f64,
    /// The new layers' rate over the backbone's.
    pub head_lr_mult: f64,
    /// SGD weight decay.
    pub weight_decay: f64,
    /// Originals per batch.
    pub batch_size: usize,
    /// Whether parameters without a gradient still get momentum and decay (PyTorch < 2.0).
    pub zero_grad_zero: bool,
    /// The schedule's shape.
    pub schedule: Shape,
    /// Whether the common factor applies. Not for Coarse2Fine: WS-DAN's logits are `fc(100 P)`, so its
    /// classifier's effective rate is 10^4 times the optimiser's and the common factor made every run
    /// diverge to chance (docs/methods.md); it keeps WS-DAN's absolute rate.
    pub scaled: bool,
}

/// A schedule shape, scaled to any number of epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// StepLR dividing the rate by 10 at each third of the run (DCL: 180 epochs, every 60).
    StepThirds,
    /// Cosine annealing over the run, set per epoch (PMG).
    CosineEpoch,
    /// Cosine per iteration with `t_max` the run's *images*, so the rate stays near constant (RMG-PMSI's
    /// code: `T_max = epochs x 5994`).
    CosineIterationImages,
    /// StepLR(2, 0.9) over 160 epochs (WS-DAN): the same total decay, 0.9^80, spread over the run.
    Exponential,
}

/// The official recipe of `method` (docs/methods.md, "The miniature of the papers' protocol").
pub fn official(method: &str) -> Result<Recipe> {
    let r = match method {
        // DCL's setup, the paper's ResNet-50 row: classifier at 10x, no decay, StepLR(60, 0.1) of 180.
        baseline::NAME | dcl::NAME => Recipe {
            backbone_lr: 0.0008,
            head_lr_mult: 10.0,
            weight_decay: 0.0,
            batch_size: 16,
            zero_grad_zero: false,
            schedule: Shape::StepThirds,
            scaled: true,
        },
        pmg::NAME => Recipe {
            backbone_lr: 0.0002,
            head_lr_mult: 10.0,
            weight_decay: 5e-4,
            batch_size: 16,
            zero_grad_zero: true,
            schedule: Shape::CosineEpoch,
            scaled: true,
        },
        rmg_pmsi::NAME => Recipe {
            backbone_lr: 0.0003,
            head_lr_mult: 10.0,
            weight_decay: 5e-4,
            batch_size: 32,
            zero_grad_zero: true,
            schedule: Shape::CosineIterationImages,
            scaled: true,
        },
        coarse2fine::NAME => Recipe {
            backbone_lr: 0.001,
            head_lr_mult: 1.0,
            weight_decay: 1e-5,
            batch_size: 12,
            zero_grad_zero: false,
            schedule: Shape::Exponential,
            scaled: false,
        },
        other => bail!("no official recipe for {other:?}"),
    };
    Ok(r)
}

/// Sets `key` (dotted, e.g. `method.options.beta`) in `table`, creating the tables on the way.
pub fn set(table: &mut Table, key: &str, value: Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().context("empty key")?;
    let mut t = table;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .with_context(|| format!("`{p}` of `{key}` is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// A method's synthetic preset (`configs/<method>-synthetic.toml`), read.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    /// The method's registry name.
    pub method: String,
    /// The file's text.
    pub text: String,
    /// Where it was read.
    pub path: PathBuf,
}

impl Preset {
    /// Reads the synthetic preset of `method` from the workspace at `root`.
    pub fn read(root: &Path, method: &str) -> Result<Preset> {
        let path = base_config(root, method)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Preset {
            method: method.into(),
            text,
            path,
        })
    }
}

/// Parses `preset` and swaps in `backbone`.
fn preset_table(preset: &Preset, backbone: &str, budget: &Budget) -> Result<Table> {
    let text = config_for(&preset.text, &preset.path, backbone, budget.mobilenet_width)?;
    let mut t: Table = toml::from_str(&text)?;
    if backbone == "resnet18" {
        set(
            &mut t,
            "model.base_width",
            (budget.resnet_width as i64).into(),
        )?;
    }
    if let Some(classes) = budget.target_classes {
        set(&mut t, "data.synthetic.classes", (classes as i64).into())?;
    }
    if let Some([train, val, test]) = budget.target_per_class {
        set(
            &mut t,
            "data.synthetic.train_per_class",
            (train as i64).into(),
        )?;
        set(&mut t, "data.synthetic.val_per_class", (val as i64).into())?;
        set(
            &mut t,
            "data.synthetic.test_per_class",
            (test as i64).into(),
        )?;
    }
    Ok(t)
}

/// The number of target classes and training images of a preset table.
fn target_size(t: &Table) -> Result<(usize, usize)> {
    let synthetic = t
        .get("data")
        .and_then(|d| d.get("synthetic"))
        .context("the preset has no [data.synthetic]")?;
    let get = |k: &str| {
        synthetic
            .get(k)
            .and_then(Value::as_integer)
            .map(|v| v as usize)
            .with_context(|| format!("the preset's [data.synthetic] has no integer `{k}`"))
    };
    let classes = get("classes")?;
    Ok((classes, classes * get("train_per_class")?))
}

/// The pretraining run of `backbone`: the baseline's preset (from-scratch AdamW recipe, which trains this
/// network from random weights) on a source task of `source_classes` classes that shares none of the
/// target's classes (`first_class` = the target's class count) and none of its images (another seed).
pub fn pretrain_config(baseline: &Preset, backbone: &str, budget: &Budget) -> Result<String> {
    let mut t = preset_table(baseline, backbone, budget)?;
    let (target_classes, _) = target_size(&t)?;
    let s = |v: usize| Value::Integer(v as i64);
    set(&mut t, "data.synthetic.classes", s(budget.source_classes))?;
    set(&mut t, "data.synthetic.first_class", s(target_classes))?;
    set(
        &mut t,
        "data.synthetic.train_per_class",
        s(budget.source_train_per_class),
    )?;
    set(
        &mut t,
        "data.synthetic.val_per_class",
        s(budget.source_val_per_class),
    )?;
    set(
        &mut t,
        "data.synthetic.test_per_class",
        s(budget.source_val_per_class),
    )?;
    set(
        &mut t,
        "data.synthetic.seed",
        Value::Integer(budget.source_seed as i64),
    )?;
    set(&mut t, "train.epochs", s(budget.pretrain_epochs))?;
    Ok(toml::to_string(&t)?)
}

/// The fine-tuning run of `preset`'s method on `backbone` from `pretrained`, with run seed `seed`: the method's
/// synthetic preset (data, head widths, destruction sizes for 64 px images) under its official recipe
/// scaled to `budget`'s epochs with its rates times `lr_scale`, then `overrides` (an ablation's changes).
pub fn finetune_config(
    preset: &Preset,
    backbone: &str,
    pretrained: &Path,
    seed: u64,
    budget: &Budget,
    lr_scale: f64,
    overrides: &[(String, Value)],
) -> Result<String> {
    let method = preset.method.as_str();
    let recipe = official(method)?;
    let mut t = preset_table(preset, backbone, budget)?;
    let (_, train_images) = target_size(&t)?;
    let epochs = budget.finetune_epochs.max(1);
    let int = |v: usize| Value::Integer(v as i64);
    t.insert("seed".into(), Value::Integer(seed as i64));
    set(
        &mut t,
        "model.pretrained",
        pretrained.display().to_string().into(),
    )?;
    set(&mut t, "data.batch_size", int(recipe.batch_size))?;
    let head_key = if method == baseline::NAME {
        "model.head_lr_mult"
    } else {
        "method.options.head_lr_mult"
    };
    set(&mut t, head_key, recipe.head_lr_mult.into())?;

    let mut optim = Table::new();
    optim.insert("kind".into(), "sgd".into());
    let scale = if recipe.scaled { lr_scale } else { 1.0 };
    optim.insert("lr".into(), (recipe.backbone_lr * scale).into());
    optim.insert("momentum".into(), 0.9.into());
    optim.insert("weight_decay".into(), recipe.weight_decay.into());
    if recipe.zero_grad_zero {
        optim.insert("zero_grad".into(), "zero".into());
    }
    t.insert("optim".into(), Value::Table(optim));

    let mut schedule = Table::new();
    match recipe.schedule {
        Shape::StepThirds => {
            schedule.insert("kind".into(), "step".into());
            schedule.insert("per".into(), "epoch".into());
            schedule.insert("step_size".into(), int(epochs.div_ceil(3)));
            schedule.insert("gamma".into(), 0.1.into());
        }
        Shape::CosineEpoch => {
            schedule.insert("kind".into(), "cosine".into());
            schedule.insert("per".into(), "epoch".into());
        }
        Shape::CosineIterationImages => {
            schedule.insert("kind".into(), "cosine".into());
            schedule.insert("per".into(), "iteration".into());
            schedule.insert("t_max".into(), int(epochs * train_images));
        }
        Shape::Exponential => {
            schedule.insert("kind".into(), "step".into());
            schedule.insert("per".into(), "epoch".into());
            schedule.insert("step_size".into(), int(1));
            schedule.insert("gamma".into(), 0.9f64.powf(80.0 / epochs as f64).into());
        }
    }
    t.insert("schedule".into(), Value::Table(schedule));

    match method {
        // Five of 150 epochs with the backbone frozen, as a fraction of the run (0 below 15 epochs).
        rmg_pmsi::NAME => set(
            &mut t,
            "method.options.backbone_freeze_epochs",
            int((epochs as f64 * 5.0 / 150.0).round() as usize),
        )?,
        // Stage one for 40 of 160 epochs.
        coarse2fine::NAME => set(
            &mut t,
            "method.options.coarse_epochs",
            int(((epochs as f64) / 4.0).round().max(1.0) as usize),
        )?,
        _ => {}
    }
    set(&mut t, "train.epochs", int(epochs))?;
    set(&mut t, "train.select", "val".into())?;
    for (key, value) in overrides {
        set(&mut t, key, value.clone())?;
    }
    Ok(toml::to_string(&t)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fgvc_train::Config;

    fn preset(method: &str) -> Preset {
        Preset::read(&crate::workspace_root(), method).unwrap()
    }

    #[test]
    fn every_method_and_backbone_gives_a_config_the_engine_accepts() {
        let weights = Path::new("/nonexistent/best.safetensors");
        for budget in [Budget::full(), Budget::quick()] {
            for method in crate::synthetic_table::methods() {
                let p = preset(method);
                for backbone in ["resnet18", "mobilenet_v2"] {
                    let cfg = finetune_config(&p, backbone, weights, 2, &budget, 3.0, &[]).unwrap();
                    let parsed = Config::parse(&cfg, "x.toml", &[])
                        .unwrap_or_else(|e| panic!("{method} on {backbone}: {e}"));
                    assert_eq!(parsed.seed, 2);
                    let target = &parsed.data.synthetic;
                    assert_eq!(target.classes, budget.target_classes.unwrap_or(5));
                    assert_eq!(target.first_class, 0);
                    assert_eq!(parsed.train.epochs, budget.finetune_epochs);
                    assert_eq!(parsed.model.pretrained.as_deref(), Some(weights));
                    let r = official(method).unwrap();
                    assert_eq!(parsed.data.batch_size, r.batch_size);
                    let scale = if r.scaled { 3.0 } else { 1.0 };
                    assert!((parsed.optim.lr - r.backbone_lr * scale).abs() < 1e-12);
                }
            }
            let cfg = pretrain_config(&preset(baseline::NAME), "resnet18", &budget).unwrap();
            let parsed = Config::parse(&cfg, "x.toml", &[]).unwrap();
            let source = parsed.data.synthetic;
            // The source starts after the target's classes: none is shared.
            assert_eq!(source.first_class, budget.target_classes.unwrap_or(5));
            assert_eq!(source.classes, budget.source_classes);
            assert_ne!(source.seed, 0);
            assert_eq!(parsed.train.epochs, budget.pretrain_epochs);
        }
    }

    #[test]
    fn schedules_keep_their_shape_at_any_length() {
        let p = preset(coarse2fine::NAME);
        let w = Path::new("w.safetensors");
        let mut budget = Budget::full();
        budget.finetune_epochs = 8;
        let cfg = finetune_config(&p, "resnet18", w, 0, &budget, 10.0, &[]).unwrap();
        let t: Table = toml::from_str(&cfg).unwrap();
        // WS-DAN decays by 0.9^80 over its run; over 8 epochs that is 0.9^10 per epoch.
        let gamma = t["schedule"]["gamma"].as_float().unwrap();
        assert!((gamma.powi(8) - 0.9f64.powi(80)).abs() < 1e-12);
        assert_eq!(
            t["method"]["options"]["coarse_epochs"].as_integer(),
            Some(2)
        );
        assert_eq!(t["method"]["options"]["head_lr_mult"].as_float(), Some(1.0));
        assert_eq!(t["optim"]["lr"].as_float(), Some(0.001));
        assert!(t["schedule"].get("warmup_iters").is_none());

        let p = preset(rmg_pmsi::NAME);
        let cfg = finetune_config(
            &p,
            "mobilenet_v2",
            w,
            0,
            &budget,
            10.0,
            &[("method.options.msi".into(), false.into())],
        )
        .unwrap();
        let t: Table = toml::from_str(&cfg).unwrap();
        assert_eq!(t["schedule"]["t_max"].as_integer(), Some(8 * 20 * 30));
        assert_eq!(t["method"]["options"]["msi"].as_bool(), Some(false));
        assert_eq!(t["optim"]["zero_grad"].as_str(), Some("zero"));

        let p = preset(baseline::NAME);
        let cfg = finetune_config(&p, "resnet18", w, 0, &budget, 10.0, &[]).unwrap();
        let t: Table = toml::from_str(&cfg).unwrap();
        assert_eq!(t["schedule"]["step_size"].as_integer(), Some(3));
        assert_eq!(t["model"]["head_lr_mult"].as_float(), Some(10.0));
    }
}
