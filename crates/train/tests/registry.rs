//! A method defined outside fgvc-train (a linear classifier on mean-pooled pixels) is registered in the method
//! table, then named by a configuration, trained, evaluated and checkpointed through the same paths as the
//! built-in methods, touching no other file: what `docs/adding-a-method.md` promises.

use candle_core::{Device, Tensor};
use fgvc_data::Batch;
use fgvc_ops::{Linear, ParamStore};
use fgvc_train::registry::{self, MethodDef, MethodSpec, Presets};
use fgvc_train::{
    Config, Method, Predictions, Result, StepContext, StepStats, TrainError, TrainOptions, Trainer,
};
use serde::Deserialize;

/// `[method.options]` of the toy method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ToyOptions {
    /// Multiplies the pooled pixels before the classifier.
    scale: f64,
}

impl Default for ToyOptions {
    fn default() -> Self {
        ToyOptions { scale: 1.0 }
    }
}

/// Mean-pooled RGB into one linear layer.
struct Toy {
    store: ParamStore,
    fc: Linear,
    scale: f64,
}

impl Toy {
    fn logits(&self, images: &Tensor) -> Result<Tensor> {
        let pooled = images.mean((2, 3))?.affine(self.scale, 0.0)?;
        Ok(pooled.apply(&self.fc)?)
    }
}

impl MethodDef for Toy {
    const NAME: &'static str = "toy";
    type Options = ToyOptions;

    fn check(options: &ToyOptions, _: &Config) -> Result<()> {
        if options.scale > 0.0 {
            return Ok(());
        }
        Err(TrainError::Config {
            origin: "[method.options]".into(),
            key: "method.options.scale".into(),
            message: format!("must be positive, got {}", options.scale),
        })
    }

    fn build(_: &Config, options: ToyOptions, classes: usize, store: ParamStore) -> Result<Self> {
        let fc = Linear::new(3, classes, true, &store.root().pp("heads").pp("fc"))?;
        Ok(Toy {
            store,
            fc,
            scale: options.scale,
        })
    }
}

impl Method for Toy {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn train_step(&mut self, batch: &Batch, ctx: &mut StepContext<'_>) -> Result<StepStats> {
        let logits = self.logits(&batch.images)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        let value = ctx.backward_step(&loss)?;
        let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
        let labels = batch.labels.to_vec1::<u32>()?;
        Ok(StepStats {
            loss: value,
            correct: predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count(),
            count: batch.len(),
            losses: vec![("ce".into(), value)],
        })
    }

    fn predict(&self, images: &Tensor) -> Result<Predictions> {
        Ok(Predictions::single("pooled", self.logits(images)?))
    }
}

const TOY: MethodSpec = MethodSpec::of::<Toy>(
    "A linear classifier on mean-pooled pixels (test only)",
    Presets::NONE,
);

fn toy_config(scale: f64) -> Result<Config> {
    let text = format!(
        "[method]\nname = \"toy\"\n[method.options]\nscale = {scale}\n[data.synthetic]\nclasses = 3\n\
         image_size = 16\ntrain_per_class = 4\nval_per_class = 2\ntest_per_class = 2\n[data]\nbatch_size = 4\n\
         threads = 1\n[train]\nepochs = 1\n"
    );
    Config::parse(&text, "toy.toml", &[])
}

#[test]
fn a_registered_method_trains_and_evaluates_through_the_table() {
    // A name nobody registered is refused when the configuration is parsed, listing the table.
    let err = Config::parse("[method]\nname = \"toy-2\"\n", "x.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown method \"toy-2\"") && err.contains("coarse2fine"),
        "{err}"
    );

    registry::register(TOY).unwrap();
    registry::register(TOY).unwrap(); // the same entry again is not an error
    assert!(registry::names().contains(&"toy"));

    // Its own check runs through the table, when the configuration is parsed and when it is checked
    // again after a change: a bad option names its key (and, when parsed, the file).
    let err = toy_config(-1.0).unwrap_err().to_string();
    assert!(
        err.contains("method.options.scale") && err.contains("toy.toml"),
        "{err}"
    );
    let mut bad = toy_config(2.0).unwrap();
    bad.method
        .options
        .insert("scale".into(), toml::Value::Float(-1.0));
    let err = registry::check(&bad).unwrap_err().to_string();
    assert!(err.contains("method.options.scale"), "{err}");

    // Trained for an epoch and evaluated by the ordinary trainer, which builds it through the table.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("toy");
    let config = toy_config(2.0).unwrap();
    let mut trainer = Trainer::new(config, &run, &Device::Cpu, TrainOptions::default()).unwrap();
    let summary = trainer.run().unwrap();
    assert!(summary.steps > 0);
    let test = summary.test.expect("a final test evaluation");
    assert_eq!(test.main().name, "pooled");
    assert!(run.join("best.safetensors").exists());
    let saved =
        fgvc_train::checkpoint::load(&run.join("checkpoint-last.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(saved.weights.contains_key("heads.fc.weight"));
}

#[test]
fn a_name_can_be_registered_once() {
    let builtin = MethodSpec { name: "pmg", ..TOY };
    assert!(registry::register(builtin).is_err());
    registry::register(TOY).unwrap();
    let other = MethodSpec {
        summary: "another method under the same name",
        ..TOY
    };
    let err = registry::register(other).unwrap_err().to_string();
    assert!(err.contains("already registered"), "{err}");
}
