//! `fgvc train` never loses or mixes a run directory, and survives its output being closed: a second run
//! into a directory holding one is refused (nothing changed) until `--overwrite` or `--resume` says what to
//! do; `--set` values are blamed on the `--set`; `fgvc train 2>&1 | head -1` still finishes its run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const FGVC: &str = env!("CARGO_BIN_EXE_fgvc");

/// The embedded default, shrunk for CI: 4 classes of 32x32 images, a 4-wide ResNet-18, one epoch.
const TINY: [&str; 11] = [
    "data.synthetic.classes=4",
    "data.synthetic.image_size=32",
    "data.synthetic.train_per_class=4",
    "data.synthetic.val_per_class=2",
    "data.synthetic.test_per_class=2",
    "data.batch_size=8",
    "data.threads=1",
    "model.base_width=4",
    "train.threads=1",
    "train.log_every_steps=1",
    "train.epochs=1",
];

fn train_cmd(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(FGVC);
    cmd.arg("train").arg("--out").arg(out).arg("--no-progress");
    for s in TINY.iter().chain(extra) {
        cmd.arg("--set").arg(s);
    }
    cmd
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ok(output: Output) {
    assert!(output.status.success(), "fgvc failed:\n{}", stderr(&output));
}

fn failed(output: Output) -> String {
    assert!(!output.status.success(), "fgvc succeeded");
    stderr(&output)
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

#[test]
fn a_second_train_into_a_run_is_refused_until_overwrite_or_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(train_cmd(&run, &[]).output().unwrap());
    let before = snapshot(&run);
    assert!(before.contains_key(&run.join("eval-test.json")));
    // Again, and again with a bad backbone: refused, every file as it was.
    for extra in [&[][..], &["model.backbone=resnet152"][..]] {
        let err = failed(train_cmd(&run, extra).output().unwrap());
        assert_eq!(snapshot(&run), before, "{err}");
        if extra.is_empty() {
            assert!(
                err.contains("already holds a run")
                    && err.contains("--resume")
                    && err.contains("--overwrite")
                    && err.contains("--out"),
                "{err}"
            );
        } else {
            assert!(err.contains("model.backbone"), "{err}");
        }
    }
    // --overwrite with a bad configuration leaves everything too.
    let err = failed(
        train_cmd(&run, &["model.backbone=resnet152"])
            .arg("--overwrite")
            .output()
            .unwrap(),
    );
    assert!(err.contains("--set model.backbone=resnet152"), "{err}");
    assert_eq!(snapshot(&run), before);
    // --resume with a changed configuration names each key with both values.
    let err = failed(
        train_cmd(&run, &["optim.lr=0.02", "train.epochs=2"])
            .arg("--resume")
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("optim.lr: 0.002 (saved) vs 0.02 (now)")
            && err.contains("train.epochs: 1 (saved) vs 2 (now)"),
        "{err}"
    );
    assert_eq!(snapshot(&run), before);
    // --overwrite with a valid configuration replaces the run.
    ok(train_cmd(&run, &["seed=5"])
        .arg("--overwrite")
        .output()
        .unwrap());
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("seed = 5"), "{config}");
    assert!(run.join("best.safetensors").is_file());
    assert!(!run.join(".lock").exists());
    // The two flags contradict each other.
    let err = failed(
        train_cmd(&run, &[])
            .args(["--overwrite", "--resume"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("--resume") && err.contains("--overwrite"),
        "{err}"
    );
}

#[test]
fn a_value_given_with_set_is_blamed_on_the_set() {
    let err = failed(
        Command::new(FGVC)
            .args(["train", "--set", "optim.lr=-1"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("--set optim.lr=-1: optim.lr: must be positive"),
        "{err}"
    );
    assert!(!err.contains("embedded default config"), "{err}");
}

#[test]
fn closing_the_output_after_one_line_does_not_stop_training() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // `fgvc train 2>&1 | head -1`: both streams to a reader that leaves after the first line.
    let mut child = train_cmd(&run, &["train.epochs=3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("training"), "{first}");
    drop(stderr);
    drop(stdout);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "fgvc exited with {status} once its output was closed"
    );
    for f in [
        "best.safetensors",
        "checkpoint-last.safetensors",
        "eval-test.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
}
