//! A run directory is never lost or mixed: one trainer per directory (a stale lock is taken over), a fresh
//! run refuses a directory holding another run unless told to overwrite it (and then only once everything
//! has validated), and a resume needs the saved configuration and names every key that changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use fgvc_train::run_dir::{Holder, RunDir};
use fgvc_train::{Config, TrainOptions, Trainer};

/// A run small enough for CI: 4 classes of 32x32 birds, a ResNet-18 layout 4 channels wide, one epoch.
fn tiny(extra: &[&str]) -> Config {
    let mut sets: Vec<String> = [
        "data.synthetic.classes=4",
        "data.synthetic.image_size=32",
        "data.synthetic.train_per_class=4",
        "data.synthetic.val_per_class=2",
        "data.synthetic.test_per_class=2",
        "data.batch_size=8",
        "data.threads=1",
        "model.base_width=4",
        "optim.lr=0.05",
        "train.epochs=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::parse("", "tiny", &sets).unwrap()
}

fn options(resume: bool, overwrite: bool) -> TrainOptions {
    TrainOptions {
        resume,
        overwrite,
        ..TrainOptions::default()
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A finished one-epoch run in `run`.
fn trained(run: &Path) {
    let mut t = Trainer::new(tiny(&[]), run, &Device::Cpu, TrainOptions::default()).unwrap();
    t.run().unwrap();
}

fn refusal(config: Config, run: &Path, options: TrainOptions) -> String {
    match Trainer::new(config, run, &Device::Cpu, options) {
        Ok(_) => panic!("the trainer into {} was not refused", run.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_second_trainer_into_a_locked_directory_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut first = Trainer::new(tiny(&[]), &run, &Device::Cpu, TrainOptions::default()).unwrap();
    let before = snapshot(&run);
    assert!(run.join(".lock").is_file());
    for (resume, overwrite) in [(false, false), (false, true)] {
        let err = refusal(tiny(&[]), &run, options(resume, overwrite));
        assert!(
            err.contains(&run.display().to_string())
                && err.contains("is in use")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert_eq!(snapshot(&run), before, "a refused trainer changed the run");
    }
    // The first run is unaffected: it trains, evaluates with its own weights, and releases the lock.
    let summary = first.run().unwrap();
    assert!(summary.test.is_some());
    drop(first);
    assert!(!run.join(".lock").exists(), "the lock outlived its trainer");
}

#[test]
fn a_stale_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    // What a killed process leaves: a lock file nobody holds, naming a pid that does not exist.
    let dead = Holder {
        pid: i32::MAX as u32 - 1,
        ..Holder::current()
    };
    std::fs::write(run.join(".lock"), dead.to_text()).unwrap();
    let t = Trainer::new(tiny(&[]), &run, &Device::Cpu, TrainOptions::default()).unwrap();
    let now = Holder::parse(&std::fs::read_to_string(run.join(".lock")).unwrap()).unwrap();
    assert_eq!(now.pid, std::process::id());
    drop(t);
    assert!(!run.join(".lock").exists());
}

#[test]
fn a_fresh_run_into_a_directory_holding_a_run_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    trained(&run);
    let before = snapshot(&run);
    assert!(before.contains_key(&run.join("eval-test.json")));
    let err = refusal(tiny(&[]), &run, TrainOptions::default());
    assert!(
        err.contains(&run.display().to_string())
            && err.contains("already holds a run")
            && err.contains("--resume")
            && err.contains("--overwrite")
            && err.contains("--out"),
        "{err}"
    );
    assert_eq!(snapshot(&run), before);
    // A user's own file is not a run file: a directory holding only that is used as it is.
    let other = dir.path().join("notes");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("README.txt"), "mine").unwrap();
    drop(Trainer::new(tiny(&[]), &other, &Device::Cpu, TrainOptions::default()).unwrap());
    assert_eq!(std::fs::read(other.join("README.txt")).unwrap(), b"mine");
}

#[test]
fn overwrite_replaces_a_run_only_once_everything_has_validated() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    trained(&run);
    let before = snapshot(&run);
    // A configuration that fails validation (an unknown backbone set after parsing), and one whose dataset
    // cannot be opened: both refused before the earlier run is touched.
    let mut bad_backbone = tiny(&[]);
    bad_backbone.model.backbone = "resnet152".into();
    let err = refusal(bad_backbone, &run, options(false, true));
    assert!(err.contains("model.backbone"), "{err}");
    assert_eq!(snapshot(&run), before);
    let missing_data = tiny(&["data.dataset=cub", "data.root=/nonexistent/cub"]);
    let err = refusal(missing_data, &run, options(false, true));
    assert!(err.contains("/nonexistent/cub"), "{err}");
    assert_eq!(snapshot(&run), before);
    // A valid one replaces it: the earlier run's files are gone before the new run writes its own.
    let t = Trainer::new(tiny(&["seed=3"]), &run, &Device::Cpu, options(false, true)).unwrap();
    let files = RunDir::at(&run).run_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["config.toml", "metrics.csv", "metrics.jsonl"]);
    assert!(std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .contains("seed = 3"));
    drop(t);
}

#[test]
fn resume_needs_the_saved_configuration_and_names_every_changed_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    trained(&run);
    let before = snapshot(&run);
    let err = refusal(
        tiny(&["optim.lr=0.02", "train.epochs=2"]),
        &run,
        options(true, false),
    );
    assert!(
        err.contains("configuration differs")
            && err.contains("optim.lr: 0.05 (saved) vs 0.02 (now)")
            && err.contains("train.epochs: 1 (saved) vs 2 (now)"),
        "{err}"
    );
    assert_eq!(snapshot(&run), before);
    // The same configuration resumes (a finished run has nothing left to train).
    drop(Trainer::new(tiny(&[]), &run, &Device::Cpu, options(true, false)).unwrap());
    // Without the saved config.toml, a resume cannot check the configuration: refused, naming the file.
    std::fs::remove_file(run.join("config.toml")).unwrap();
    let before = snapshot(&run);
    let err = refusal(tiny(&[]), &run, options(true, false));
    assert!(
        err.contains(&run.join("config.toml").display().to_string()) && err.contains("missing"),
        "{err}"
    );
    assert_eq!(snapshot(&run), before);
    // Resuming a directory that holds no run creates nothing.
    let nowhere = dir.path().join("nowhere");
    let err = refusal(tiny(&[]), &nowhere, options(true, false));
    assert!(err.contains("no checkpoint-last"), "{err}");
    assert!(!nowhere.exists());
}
