//! `fgvc train --distributed` as real processes under `mpirun` (Open MPI): two ranks with SyncBN train like
//! one process with both batches; a rank killed mid-epoch ends the job with an error instead of a hang, and
//! `--resume` then continues exactly; a hung rank is ended by the other's watchdog; a resume with another
//! number of processes is refused. Built only with the `mpi` feature:
//! `cargo test -p fgvc-cli --features mpi --test distributed` (needs `mpirun` on the PATH).
#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const FGVC: &str = env!("CARGO_BIN_EXE_fgvc");

/// 4 classes of 32x32 birds, a ResNet-18 layout 4 channels wide, at a small rate (see the in-process
/// equivalence tests of fgvc-train for why so few steps).
const TINY: &[&str] = &[
    "data.synthetic.classes=4",
    "data.synthetic.image_size=32",
    "data.synthetic.train_per_class=4",
    "data.synthetic.val_per_class=5",
    "data.synthetic.test_per_class=5",
    "data.threads=1",
    "model.base_width=4",
    "optim.lr=0.01",
    "train.epochs=2",
    "train.tensorboard=false",
];

fn sets(extra: &[&str]) -> Vec<String> {
    TINY.iter()
        .chain(extra)
        .flat_map(|s| ["--set".to_string(), s.to_string()])
        .collect()
}

/// `fgvc train --out out` in one process.
fn single(out: &Path, extra: &[&str]) -> Output {
    Command::new(FGVC)
        .args(["train", "--no-progress", "--out"])
        .arg(out)
        .args(sets(extra))
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap()
}

/// `mpirun -np n fgvc train --distributed --out out`, not yet waited for.
fn mpirun(n: usize, out: &Path, extra: &[&str], more: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--allow-run-as-root");
    }
    cmd.args([
        "--oversubscribe",
        "-np",
        &n.to_string(),
        "-x",
        "RAYON_NUM_THREADS=1",
        FGVC,
    ])
    .args(["train", "--distributed", "--no-progress", "--out"])
    .arg(out)
    .args(sets(extra))
    .args(more);
    cmd
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(n, v)| {
            let f = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (n, f)
        })
        .collect()
}

/// The largest difference over the model's tensors (not the optimiser's), relative to each tensor's largest
/// magnitude (at least 0.01).
fn worst_difference(a: &Path, b: &Path) -> (f32, String) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = (0f32, String::new());
    for (name, va) in a.iter().filter(|(n, _)| !n.contains('/')) {
        let scale = va.iter().fold(1e-2f32, |m, v| m.max(v.abs()));
        for (x, y) in va.iter().zip(&b[name]) {
            if (x - y).abs() / scale > worst.0 {
                worst = ((x - y).abs() / scale, name.clone());
            }
        }
    }
    worst
}

#[test]
fn two_processes_with_sync_batch_norm_train_like_one_with_both_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    ok(
        single(&one, &["data.batch_size=8", "train.sync_batch_norm=true"]),
        "one process",
    );
    let out = ok(
        mpirun(
            2,
            &two,
            &["data.batch_size=4", "train.sync_batch_norm=true"],
            &[],
        )
        .output()
        .unwrap(),
        "two processes",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Rank 0 alone reports.
    assert_eq!(stdout.matches("test accuracy").count(), 1, "{stdout}");
    let last = |d: &Path| d.join("checkpoint-last.safetensors");
    let (worst, name) = worst_difference(&last(&one), &last(&two));
    assert!(worst < 1e-3, "{name} differs by {worst} of its scale");
    // The same test figures: the evaluation was sharded and its counts summed.
    let report = |d: &Path| std::fs::read_to_string(d.join("eval-test.json")).unwrap();
    let count = |r: &str| r.contains("\"count\": 20");
    assert!(count(&report(&one)) && count(&report(&two)));

    // A single process may not resume the two-process run.
    let mut cmd = Command::new(FGVC);
    cmd.args(["train", "--resume", "--no-progress", "--out"])
        .arg(&two)
        .args(sets(&["data.batch_size=4", "train.sync_batch_norm=true"]));
    let resume = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&resume.stderr);
    assert!(
        !resume.status.success() && err.contains("trained by 2 processes and this one has 1"),
        "{err}"
    );
}

/// The pid of rank `rank` from the line every rank prints (`fgvc: rank 1 of 2: pid N on HOST`) in the
/// stderr file `log`, waiting for it.
fn rank_pid(log: &Path, rank: usize, deadline: Instant) -> i32 {
    let prefix = format!("fgvc: rank {rank} of 2: pid ");
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(&prefix)) {
            return line[prefix.len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no pid line for rank {rank}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the job to write `path`, failing at `deadline`.
fn wait_for(path: &Path, deadline: Instant) {
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was not written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `child` until `deadline`; kills it and fails if it is still running then.
fn wait_until(child: &mut Child, deadline: Instant, what: &str) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: still running after the deadline (a hang)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// A run long enough to interrupt: 64 images, 8 steps of 2 x 4 an epoch, 40 epochs (a few seconds), a
/// checkpoint every 2 steps.
const LONG: &[&str] = &[
    "data.synthetic.train_per_class=16",
    "data.batch_size=4",
    "train.epochs=40",
    "train.checkpoint_every_steps=2",
    "train.final_test=false",
];

#[test]
fn a_killed_rank_ends_the_job_and_resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, killed) = (dir.path().join("straight"), dir.path().join("killed"));
    ok(
        mpirun(2, &straight, LONG, &[]).output().unwrap(),
        "the uninterrupted run",
    );

    let log = dir.path().join("killed.log");
    let mut child = mpirun(2, &killed, LONG, &[])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = rank_pid(&log, 1, deadline);
    // Kill rank 1 once a checkpoint inside the first epoch is on disk.
    wait_for(&killed.join("checkpoint-last.safetensors"), deadline);
    signal(pid, "-KILL");
    let killed_at = Instant::now();
    let status = wait_until(
        &mut child,
        killed_at + Duration::from_secs(60),
        "the job after a kill",
    );
    assert!(!status.success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("rank 1"),
        "the error should name the dead rank:\n{err}"
    );
    let state = |d: &Path| {
        let bytes = std::fs::read(d.join("checkpoint-last.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        meta.metadata().clone().unwrap_or_default()
    };
    assert!(
        !format!("{:?}", state(&killed)).contains("\\\"finished\\\":true"),
        "the kill came too late to interrupt the run"
    );

    ok(
        mpirun(2, &killed, LONG, &["--resume"]).output().unwrap(),
        "the resumed run",
    );
    let (a, b) = (
        tensors(&straight.join("checkpoint-last.safetensors")),
        tensors(&killed.join("checkpoint-last.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for (name, va) in &a {
        assert!(va == &b[name], "{name} differs after the resume");
    }
}

#[test]
fn a_hung_rank_is_ended_by_the_others_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let log = dir.path().join("hung.log");
    let mut child = mpirun(2, &run, LONG, &["--dist-timeout", "5"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = rank_pid(&log, 1, deadline);
    wait_for(&run.join("checkpoint-last.safetensors"), deadline);
    // Freeze rank 1: it neither dies nor answers, which the runtime cannot see.
    signal(pid, "-STOP");
    let status = wait_until(
        &mut child,
        Instant::now() + Duration::from_secs(90),
        "the job with a hung rank",
    );
    signal(pid, "-KILL");
    assert!(!status.success());
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("rank 0: an all-reduce") && err.contains("has not completed after"),
        "rank 0's watchdog should name the collective it waited for:\n{err}"
    );
}

#[test]
fn fgvc_launch_starts_a_job_of_n_processes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = ok(
        Command::new(FGVC)
            .args([
                "launch",
                "--nproc",
                "2",
                "--",
                "train",
                "--no-progress",
                "--out",
            ])
            .arg(&run)
            .args(sets(&["data.batch_size=4"]))
            .output()
            .unwrap(),
        "fgvc launch",
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stderr.contains("rank 1 of 2"), "{stderr}");
    assert_eq!(stdout.matches("test accuracy").count(), 1, "{stdout}");
    assert!(run.join("best.safetensors").is_file());
}
