//! Data-parallel runs on the command line: joining the MPI job `mpirun` started (`fgvc train
//! --distributed`), ending the whole job when one process fails, and `fgvc launch`, which starts the job on
//! this machine.

use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use fgvc_distributed::Group;

/// Joins the MPI job this process belongs to, and says which process it is on stderr (every rank: the
/// line names the process id, which an operator needs to find a hung one).
pub fn join(timeout: Duration) -> Result<Group> {
    let group = fgvc_mpi::init(timeout)?;
    if group.world_size() == 1 && !fgvc_mpi::launched_by_mpirun() {
        tracing::warn!(
            "--distributed without an MPI launcher: a job of one process (start N with `mpirun -np N` or \
             `fgvc launch --nproc N -- train ...`)"
        );
    }
    say(&format!(
        "fgvc: rank {} of {}: pid {} on {}",
        group.rank(),
        group.world_size(),
        std::process::id(),
        hostname()
    ));
    Ok(group)
}

/// Writes `line` to stderr in one `write`, so that the lines of the job's processes, which `mpirun` merges,
/// do not interleave mid-line (`eprintln!` writes each formatted piece separately).
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// `result`, or, when it is an error in a data-parallel run, the error printed with this process' rank
/// and the whole job ended, so that no other process waits for this one in its next collective.
pub fn or_abort<T>(group: &Group, result: fgvc_train::Result<T>) -> Result<T> {
    match result {
        Err(e) if group.is_distributed() => {
            say(&format!(
                "fgvc: error: rank {} of {}: {e}",
                group.rank(),
                group.world_size()
            ));
            group.collective().abort(1)
        }
        other => Ok(other?),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this machine".into())
}

/// Arguments of `fgvc launch`.
#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Processes to start.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub nproc: u32,
    /// The MPI launcher.
    #[arg(long, default_value = "mpirun")]
    pub mpirun: String,
    /// The fgvc command each process runs, after `--`: `train ...` (which gets `--distributed`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Starts `args.nproc` processes of this fgvc running `args.command` as one MPI job on this machine, each
/// with an equal share of the cores for its threads, and returns with the job's status.
pub fn launch(args: &LaunchArgs) -> Result<()> {
    if args.command.first().and_then(|c| c.to_str()) != Some("train") {
        bail!(
            "fgvc launch runs `train` (fgvc launch --nproc N -- train ...); got {:?}",
            args.command
        );
    }
    if !fgvc_mpi::AVAILABLE {
        // The same message the processes would each print.
        fgvc_mpi::init(Duration::from_secs(1))?;
    }
    let exe = std::env::current_exe().context("cannot find this fgvc executable")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.nproc as usize).max(1);
    let mut cmd = Command::new(&args.mpirun);
    cmd.arg("-np").arg(args.nproc.to_string());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Open MPI refuses to run as root unless told (containers, CI machines).
        cmd.arg("--allow-run-as-root");
    }
    if args.nproc as usize > cores {
        cmd.arg("--oversubscribe");
    }
    // Threads are sized below; Open MPI's default binding (to a core for two processes, to a socket for
    // more) would otherwise squeeze or spread them.
    cmd.args(["--bind-to", "none", "-x"])
        .arg(format!("RAYON_NUM_THREADS={threads}"));
    cmd.arg(&exe).arg("train").arg("--distributed");
    cmd.args(&args.command[1..]);
    tracing::info!(
        "starting {} processes of {} threads: {:?}",
        args.nproc,
        threads,
        cmd
    );
    let status = cmd.status().with_context(|| {
        format!(
            "cannot run {:?}: install Open MPI (Debian: `apt-get install openmpi-bin`) or give --mpirun",
            args.mpirun
        )
    })?;
    if !status.success() {
        bail!("the job ended with {status}");
    }
    Ok(())
}
