//! The `fgvc` binary end to end: train / eval / predict on a tiny synthetic run, a run killed with SIGKILL
//! and resumed, configuration errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use fgvc_data::{Split, Synthetic, SyntheticConfig};
use fgvc_train::checkpoint;

const FGVC: &str = env!("CARGO_BIN_EXE_fgvc");

/// The embedded default, shrunk for CI: 4 classes of 32x32 images, 32 training images, a 4-wide ResNet-18.
const TINY: [&str; 12] = [
    "data.synthetic.classes=4",
    "data.synthetic.image_size=32",
    "data.synthetic.train_per_class=8",
    "data.synthetic.val_per_class=4",
    "data.synthetic.test_per_class=4",
    "data.batch_size=8",
    "data.eval_batch_size=8",
    "data.threads=1",
    "model.base_width=4",
    "train.threads=1",
    "train.log_every_steps=1",
    "schedule.warmup_iters=0",
];

fn train_cmd(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(FGVC);
    cmd.arg("train").arg("--out").arg(out);
    for s in TINY.iter().chain(extra) {
        cmd.arg("--set").arg(s);
    }
    cmd
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "fgvc failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ckpt = checkpoint::load(path, &Device::Cpu).unwrap();
    let opt = ckpt
        .optimizer
        .unwrap()
        .tensors
        .into_iter()
        .map(|(n, t)| (format!("optim/{n}"), t));
    ckpt.weights
        .into_iter()
        .chain(opt)
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn train_eval_predict() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let stdout = ok(train_cmd(&run, &["train.epochs=2"]).output().unwrap());
    assert!(stdout.contains("test accuracy:"), "{stdout}");
    assert!(stdout.contains("best-on-val"), "{stdout}");
    assert!(run.join("best.safetensors").is_file());

    let stdout = ok(Command::new(FGVC)
        .args(["eval", "--run"])
        .arg(&run)
        .args(["--split", "val"])
        .output()
        .unwrap());
    assert!(
        stdout.contains("val split, 16 images, 4 classes"),
        "{stdout}"
    );
    assert!(stdout.contains("logits"), "{stdout}");

    // Two rendered test images as PNG files in a directory.
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let cfg = SyntheticConfig {
        classes: 4,
        image_size: 32,
        train_per_class: 1,
        val_per_class: 1,
        test_per_class: 1,
        seed: 0,
        first_class: 0,
    };
    let test = Synthetic::new(cfg, Split::Test).unwrap();
    for i in 0..2 {
        test.render(i)
            .image
            .save(images.join(format!("bird{i}.png")))
            .unwrap();
    }
    let stdout = ok(Command::new(FGVC)
        .args(["predict", "--run"])
        .arg(&run)
        .arg(&images)
        .args(["--topk", "3", "--format", "csv"])
        .output()
        .unwrap());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "image,rank,class,name,probability,error");
    assert_eq!(lines.len(), 1 + 2 * 3, "{stdout}");
    assert!(lines[1].contains("bird0.png,1,"), "{stdout}");

    // One bad file among good ones: the others are still classified, the bad one's error is in the output,
    // and the command exits non-zero.
    std::fs::write(images.join("broken.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    let output = Command::new(FGVC)
        .args(["predict", "--run"])
        .arg(&run)
        .arg(&images)
        .args(["--topk", "2", "--format", "json"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let doc = doc.as_array().unwrap();
    assert_eq!(doc.len(), 3, "{doc:?}");
    assert_eq!(doc.iter().filter(|p| p["top"].is_array()).count(), 2);
    let bad = doc.iter().find(|p| p.get("error").is_some()).unwrap();
    assert!(bad["image"].as_str().unwrap().ends_with("broken.png"));
    assert!(
        bad["error"].as_str().unwrap().contains("broken.png"),
        "{bad}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 of 3 image(s) could not be classified"),
        "{stderr}"
    );
    std::fs::remove_file(images.join("broken.png")).unwrap();

    // --topk 0 is refused, not silently taken as 1.
    let output = Command::new(FGVC)
        .args(["predict", "--run"])
        .arg(&run)
        .arg(&images)
        .args(["--topk", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--topk") && stderr.contains("at least 1"),
        "{stderr}"
    );
    let json = ok(Command::new(FGVC)
        .args(["predict", "--checkpoint"])
        .arg(run.join("best.safetensors"))
        .arg(images.join("bird1.png"))
        .args(["--format", "json", "--topk", "4"])
        .output()
        .unwrap());
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let top = doc[0]["top"].as_array().unwrap();
    let total: f64 = top.iter().map(|r| r["probability"].as_f64().unwrap()).sum();
    assert!(
        (total - 1.0).abs() < 1e-4,
        "top-4 of 4 classes sums to {total}"
    );

    // The checkpoint alone, its run directory gone: predict and eval (with test-time augmentation) still work.
    let alone = dir.path().join("model.safetensors");
    std::fs::rename(run.join("best.safetensors"), &alone).unwrap();
    std::fs::remove_dir_all(&run).unwrap();
    let again = ok(Command::new(FGVC)
        .args(["predict", "--checkpoint"])
        .arg(&alone)
        .arg(images.join("bird1.png"))
        .args(["--format", "json", "--topk", "4"])
        .output()
        .unwrap());
    assert_eq!(again, json);
    let stdout = ok(Command::new(FGVC)
        .args(["eval", "--checkpoint"])
        .arg(&alone)
        .args(["--tta", "flip", "--tta", "multicrop"])
        .output()
        .unwrap());
    assert!(
        stdout.contains("test split, 16 images, 4 classes"),
        "{stdout}"
    );
    for head in ["logits ", "logits+flip ", "logits+multicrop "] {
        assert!(stdout.contains(head), "{head}: {stdout}");
    }
    let output = Command::new(FGVC)
        .args(["eval", "--checkpoint"])
        .arg(&alone)
        .args(["--set", "model.base_width=8"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only data.* keys"), "{stderr}");
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    // 4 steps per epoch, 3 epochs; a checkpoint after every step.
    let extra = [
        "train.epochs=3",
        "train.checkpoint_every_steps=1",
        "train.final_test=false",
        "model.dropout=0.2",
    ];
    let straight = dir.path().join("straight");
    ok(train_cmd(&straight, &extra).output().unwrap());

    let killed = dir.path().join("killed");
    let mut child = train_cmd(&killed, &extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = killed.join("checkpoint-last.safetensors");
    let start = Instant::now();
    let step_at_kill = loop {
        let step = checkpoint::load(&ckpt, &Device::Cpu)
            .ok()
            .and_then(|c| c.state)
            .map(|s| s.step);
        if step.is_some_and(|s| s >= 5) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break step.unwrap();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(step_at_kill < 12, "killed after the last step");
    let stdout = ok(train_cmd(&killed, &extra).arg("--resume").output().unwrap());
    assert!(stdout.contains("trained 12 steps"), "{stdout}");
    let (a, b) = (
        weights(&straight.join("checkpoint-last.safetensors")),
        weights(&ckpt),
    );
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            va == vb,
            "{na} differs after a kill at step {step_at_kill} and a resume"
        );
    }
}

#[test]
fn configuration_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("bad.toml");
    std::fs::write(&path, "[optim]\nlrr = 0.1\n").unwrap();
    let out = Command::new(FGVC)
        .args(["train", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("optim.lrr"),
        "{stderr}"
    );

    let out = Command::new(FGVC)
        .args(["train", "--set", "train.epochs=many"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--set train.epochs=many") && stderr.contains("train.epochs"),
        "{stderr}"
    );

    let out = Command::new(FGVC)
        .args([
            "train",
            "--set",
            "data.dataset=cub",
            "--set",
            "data.root=/nonexistent/cub",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cargo xtask download cub"), "{stderr}");
}

/// A build without the `mpi` feature refuses `--distributed` and says how to get it, before touching the
/// run directory.
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_without_the_mpi_feature_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = train_cmd(&dir.path().join("run"), &[])
        .arg("--distributed")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--features mpi") && err.contains("libopenmpi-dev"),
        "{err}"
    );
    assert!(!dir.path().join("run").exists());
}

/// A mistyped `FGVC_ISA` is refused before anything is written, naming the variable and the levels; a valid
/// cap is logged.
#[test]
fn a_bad_isa_level_is_refused_and_a_cap_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let out = train_cmd(&dir.path().join("run"), &[])
        .env("FGVC_ISA", "avx3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FGVC_ISA") && err.contains("avx3") && err.contains("avx512"),
        "{err}"
    );
    assert!(!dir.path().join("run").exists());
    let out = train_cmd(&dir.path().join("run"), &[])
        .env("FGVC_ISA", "scalar")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("; CPU kernels scalar"), "{err}");
}

#[test]
fn an_estimate_times_steps_projects_the_run_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let stdout = ok(train_cmd(&out, &["train.epochs=3"])
        .args(["--estimate", "2"])
        .output()
        .unwrap());
    let line = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    // 4 classes x 8 training images, batch 8: 4 steps per epoch.
    assert_eq!(v["steps_per_epoch"], 4);
    assert_eq!(v["epochs"], 3);
    assert_eq!(v["device"], "cpu");
    let per_step = v["seconds_per_step"].as_f64().unwrap();
    let hours = v["projected_hours"].as_f64().unwrap();
    assert!(per_step > 0.0 && (hours * 3600.0 - per_step * 12.0).abs() < 1e-9);
    assert!(
        !out.exists(),
        "an estimate must not create the run directory"
    );
}
