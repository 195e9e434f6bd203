//! Configuration errors name the key path and where the value came from; overrides are type-checked; a
//! dataset that is not there says how to get it.

use fgvc_train::data::open_splits;
use fgvc_train::{Config, TrainError};

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn config_error(err: TrainError) -> (String, String, String) {
    match err {
        TrainError::Config {
            origin,
            key,
            message,
        } => (origin, key, message),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn unknown_key_names_its_path_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "seed = 1\n[optim]\nlr = 0.1\nlrr = 0.2\n");
    let err = Config::load(&path, &[]).unwrap_err();
    let text = err.to_string();
    let (origin, key, message) = config_error(err);
    assert_eq!(origin, path.display().to_string());
    assert_eq!(key, "optim.lrr");
    assert!(message.contains("unknown field `lrr`"), "{message}");
    assert!(
        text.contains("run.toml") && text.contains("optim.lrr"),
        "{text}"
    );

    // Deeper: a table inside an array of tables, and a nested section.
    let path = write(
        &dir,
        "[[optim.groups]]\nname = \"heads\"\nparams = [\"heads\"]\nrate = 1.0\n",
    );
    let (_, key, _) = config_error(Config::load(&path, &[]).unwrap_err());
    assert!(
        key.starts_with("optim.groups") && key.ends_with("rate"),
        "{key}"
    );
    let path = write(&dir, "[data.synthetic]\nclasses = 5\nsize = 3\n");
    let (_, key, _) = config_error(Config::load(&path, &[]).unwrap_err());
    assert_eq!(key, "data.synthetic.size");
    let path = write(&dir, "[trian]\nepochs = 1\n");
    let (_, key, _) = config_error(Config::load(&path, &[]).unwrap_err());
    assert_eq!(key, "trian");
}

#[test]
fn mistyped_value_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[train]\nepochs = \"many\"\n");
    let (origin, key, message) = config_error(Config::load(&path, &[]).unwrap_err());
    assert_eq!(
        (origin.as_str(), key.as_str()),
        (path.to_str().unwrap(), "train.epochs")
    );
    assert!(message.contains("invalid type"), "{message}");
    let path = write(&dir, "[schedule]\nkind = \"cosin\"\n");
    let (_, key, message) = config_error(Config::load(&path, &[]).unwrap_err());
    assert_eq!(key, "schedule.kind");
    assert!(message.contains("cosine"), "{message}");
    // Values serde accepts but the loop cannot use are refused with their key too.
    let path = write(&dir, "[data]\nbatch_size = 1\n");
    let (_, key, _) = config_error(Config::load(&path, &[]).unwrap_err());
    assert_eq!(key, "data.batch_size");
}

#[test]
fn overrides_are_applied_and_type_checked() {
    let c = Config::parse(
        "[optim]\nlr = 0.1\n",
        "base.toml",
        &[
            "optim.lr=0.5".into(),
            "train.epochs=3".into(),
            "data.dataset=synthetic".into(),
            "optim.zero_grad=\"zero\"".into(),
            "optim.kind=adamw".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.optim.lr, 0.5);
    assert_eq!(c.train.epochs, 3);
    assert_eq!(c.optim.zero_grad, Some(fgvc_train::optim::ZeroGrad::Zero));
    let (origin, key, _) =
        config_error(Config::parse("", "base.toml", &["train.epoch=3".into()]).unwrap_err());
    assert_eq!(
        (origin.as_str(), key.as_str()),
        ("--set train.epoch=3", "train.epoch")
    );
    let (origin, key, message) =
        config_error(Config::parse("", "base.toml", &["train.epochs=lots".into()]).unwrap_err());
    assert_eq!(
        (origin.as_str(), key.as_str()),
        ("--set train.epochs=lots", "train.epochs")
    );
    assert!(message.contains("invalid type"), "{message}");
    let (_, key, _) =
        config_error(Config::parse("", "base.toml", &["seed.x=1".into()]).unwrap_err());
    assert_eq!(key, "seed");
    assert!(Config::parse("", "base.toml", &["no_equals_sign".into()]).is_err());
}

#[test]
fn a_missing_dataset_says_how_to_get_it() {
    let c = Config::parse(
        "[data]\ndataset = \"cub\"\nroot = \"/nonexistent/CUB_200_2011\"\n",
        "cub.toml",
        &[],
    )
    .unwrap();
    let err = open_splits(&c).err().unwrap().to_string();
    assert!(err.contains("cargo xtask download cub"), "{err}");
    assert!(err.contains("/nonexistent/CUB_200_2011"), "{err}");
    let c = Config::parse("[data]\ndataset = \"cars\"\n", "cars.toml", &[]).unwrap();
    let err = open_splits(&c).err().unwrap().to_string();
    assert!(
        err.contains("data.root") && err.contains("cargo xtask download cars"),
        "{err}"
    );
}

#[test]
fn every_shipped_config_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
}
