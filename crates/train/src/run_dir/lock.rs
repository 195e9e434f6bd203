//! The lock of a run directory: one training process at a time. `<run>/.lock` records its holder (pid, host,
//! start time) and is held with an OS advisory lock (`flock(2)`), which the kernel drops when the process
//! dies, so the lock a killed run left behind is recognised as stale and taken over.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// Who holds (or held) a run directory's lock, as its lock file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// When the lock was taken, UTC (`2026-04-14T09:30:00Z`).
    pub started: String,
}

impl Holder {
    /// This process, now.
    pub fn current() -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            started: utc_now(),
        }
    }

    /// The lock file's text (TOML: `pid`, `host`, `started`).
    pub fn to_text(&self) -> String {
        toml::to_string(self).expect("a holder serialises")
    }

    /// The holder a lock file's text records; `None` when it is empty or not a lock file.
    pub fn parse(text: &str) -> Option<Holder> {
        toml::from_str(text).ok()
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on host {}, started {}",
            self.pid, self.host, self.started
        )
    }
}

/// A held run-directory lock; dropping it (normal end, error, panic unwinding) removes the lock file and
/// releases the advisory lock. A killed process leaves the file, which the next run takes over.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    file: File,
    holder: Holder,
}

impl RunLock {
    /// Locks the existing directory `dir` for this process. A lock held by a live process is an error naming
    /// the directory and the holder's pid; a stale one (its advisory lock free, or its pid dead on this
    /// host) is taken over with a warning.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let me = Holder::current();
        let io = |e| TrainError::io(&path, e);
        // A holder that leaves removes the file between our open and our lock: then lock the new file.
        for _ in 0..8 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            let locked = try_lock(&file).map_err(io)?;
            if !same_file(&file, &path) {
                continue;
            }
            let previous = read_holder(&mut file);
            let dead = previous
                .as_ref()
                .is_some_and(|h| h.host == me.host && pid_alive(h.pid) == Some(false));
            match locked {
                // Another open file holds it: a live process, unless its recorded pid is dead here (an
                // unrelated process inherited the descriptor). Replace the file then.
                Some(false) if dead => {
                    warn_stale(dir, previous.as_ref());
                    fs::remove_file(&path).map_err(io)?;
                    continue;
                }
                Some(false) => return Err(in_use(dir, &path, previous.as_ref())),
                // No advisory locks on this file system: trust the recorded pid.
                None if previous.is_some() && !dead => {
                    return Err(in_use(dir, &path, previous.as_ref()))
                }
                _ => {}
            }
            if previous.is_some() {
                warn_stale(dir, previous.as_ref());
            }
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.write_all(me.to_text().as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            return Ok(RunLock {
                path,
                file,
                holder: me,
            });
        }
        Err(TrainError::Msg(format!(
            "{}: the lock file kept changing while taking it; is another run starting there?",
            path.display()
        )))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This process, as the lock file records it.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock (and only if it is still ours), then close it, which
        // releases the advisory lock.
        if same_file(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The holder recorded in `dir`'s lock file, if there is one.
pub fn recorded_holder(dir: &Path) -> Option<Holder> {
    Holder::parse(&fs::read_to_string(dir.join(LOCK_FILE)).ok()?)
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    Holder::parse(&text)
}

fn warn_stale(dir: &Path, previous: Option<&Holder>) {
    if let Some(h) = previous {
        tracing::warn!(
            "{}: taking over the stale lock of {h}: that process no longer runs",
            dir.display()
        );
    }
}

fn in_use(dir: &Path, path: &Path, holder: Option<&Holder>) -> TrainError {
    let who = holder.map_or_else(
        || "a process that has not recorded itself yet".to_string(),
        |h| h.to_string(),
    );
    TrainError::Msg(format!(
        "{} is in use: another training run holds its lock ({who}). Wait for it to finish, or write \
         elsewhere with --out; if that process is gone, delete {}",
        dir.display(),
        path.display()
    ))
}

/// Tries to take an exclusive `flock` on `file` without waiting: `Some(true)` taken, `Some(false)` held by
/// another open file, `None` when the file system has no advisory locks.
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<Option<bool>> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor this `File` owns for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(true));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(e) if e == libc::EWOULDBLOCK || e == libc::EAGAIN => return Ok(Some(false)),
            Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return Ok(None),
            _ => return Err(err),
        }
    }
}

#[cfg(not(unix))]
fn try_lock(_: &File) -> std::io::Result<Option<bool>> {
    Ok(None)
}

/// Whether `file` is still the file at `path` (not removed or replaced since it was opened).
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

/// Whether process `pid` runs on this host; `None` where that cannot be asked.
#[cfg(unix)]
pub(crate) fn pid_alive(pid: u32) -> Option<bool> {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return Some(false);
    };
    if pid <= 0 {
        return Some(false);
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Some(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Some(false),
        Some(libc::EPERM) => Some(true),
        _ => None,
    }
}

#[cfg(not(unix))]
pub(crate) fn pid_alive(_: u32) -> Option<bool> {
    None
}

#[cfg(unix)]
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if end > 0 {
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    "localhost".into()
}

#[cfg(not(unix))]
fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_else(|_| "localhost".into())
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (the proleptic Gregorian calendar).
fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil conversion.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso_8601() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(utc(1_776_159_000), "2026-04-14T09:30:00Z");
    }

    #[test]
    fn a_holder_round_trips_through_its_text() {
        let me = Holder::current();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(Holder::parse(&me.to_text()), Some(me));
        assert_eq!(Holder::parse(""), None);
        assert_eq!(Holder::parse("garbage"), None);
    }

    #[test]
    fn a_second_lock_is_refused_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(recorded_holder(dir.path()).as_ref(), Some(first.holder()));
        let text = fs::read(first.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains(&dir.path().display().to_string())
                && err.contains("is in use"),
            "{err}"
        );
        assert_eq!(
            fs::read(first.path()).unwrap(),
            text,
            "the refused lock changed the file"
        );
        let path = first.path().to_path_buf();
        drop(first);
        assert!(!path.exists(), "the lock file outlived its lock");
        let again = RunLock::acquire(dir.path()).unwrap();
        assert!(again.path().is_file());
    }

    #[cfg(unix)]
    #[test]
    fn liveness_of_pids() {
        assert_eq!(pid_alive(std::process::id()), Some(true));
        assert_eq!(pid_alive(0), Some(false));
        assert_eq!(pid_alive(u32::MAX), Some(false));
    }
}
