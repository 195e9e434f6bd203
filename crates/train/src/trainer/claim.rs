//! How a run claims its directory before writing to it: the lock (one process per directory), a fresh run
//! refusing a directory that holds another run unless told to replace it, and a resumed run checking that
//! its configuration is the one the run started with, key by key.

use std::path::Path;

use super::TrainOptions;
use crate::config::Config;
use crate::error::{Result, TrainError};
use crate::run_dir::{RunDir, RunLock};

/// Claims the run directory `root` for a run of `config`: nothing is created or changed when it is
/// refused. A fresh run gets a locked directory without run files (`options.overwrite` deletes those of
/// an earlier run); a resumed one gets its locked directory, whose `config.toml` matches `config`.
pub(super) fn claim(
    root: &Path,
    config: &Config,
    options: &TrainOptions,
) -> Result<(RunDir, RunLock)> {
    let run = RunDir::at(root);
    if options.resume && options.overwrite {
        return Err(TrainError::Msg(
            "--resume continues a run and --overwrite replaces it: give one of them".into(),
        ));
    }
    if options.resume {
        if !run.last_checkpoint().is_file() {
            return Err(TrainError::Msg(format!(
                "--resume: {} has no checkpoint-last.safetensors to resume from",
                run.root().display()
            )));
        }
        if !run.config().is_file() {
            return Err(TrainError::Msg(format!(
                "--resume: {} is missing; it holds the configuration the run started with, which a resumed \
                 run must match. Restore it, or start a new run (--overwrite to replace this one, --out DIR \
                 to write elsewhere)",
                run.config().display()
            )));
        }
    }
    let lock = run.lock()?;
    if options.resume {
        check_unchanged(&run, config)?;
    } else {
        let files = run.run_files();
        if !files.is_empty() {
            if !options.overwrite {
                return Err(holds_a_run(&run, &files));
            }
            let removed = run.remove_run_files()?;
            tracing::warn!(
                "--overwrite: deleted the {} files of the earlier run in {}",
                removed.len(),
                run.root().display()
            );
        }
    }
    Ok((run, lock))
}

/// Refuses a resume whose configuration differs from the saved one, naming every key with both values.
fn check_unchanged(run: &RunDir, config: &Config) -> Result<()> {
    let path = run.config();
    let saved = Config::load(&path, &[]).map_err(|e| {
        TrainError::Msg(format!(
            "--resume: the saved configuration does not load ({e}); restore {} or start a new run",
            path.display()
        ))
    })?;
    let differences = saved.differences(config);
    if differences.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = differences.iter().map(|d| format!("  {d}")).collect();
    Err(TrainError::Msg(format!(
        "--resume: the configuration differs from the one the run started with ({}):\n{}\nresume with the \
         same configuration and overrides, or start a new run (--overwrite to replace this one, --out DIR to \
         write elsewhere)",
        path.display(),
        list.join("\n")
    )))
}

fn holds_a_run(run: &RunDir, files: &[std::path::PathBuf]) -> TrainError {
    const SHOWN: usize = 4;
    let mut names: Vec<String> = files
        .iter()
        .take(SHOWN)
        .map(|f| {
            f.strip_prefix(run.root())
                .unwrap_or(f)
                .display()
                .to_string()
        })
        .collect();
    if files.len() > SHOWN {
        names.push(format!("{} more", files.len() - SHOWN));
    }
    TrainError::Msg(format!(
        "{} already holds a run ({}); nothing was changed. Pass --resume to continue it, --overwrite to \
         replace it, or --out DIR to write elsewhere",
        run.root().display(),
        names.join(", ")
    ))
}
