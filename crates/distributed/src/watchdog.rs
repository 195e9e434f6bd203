//! The watchdog: a collective that has not completed within the timeout ends the process with a message
//! naming it, as PyTorch's NCCL watchdog does, so that a dead or unreachable rank never leaves the others
//! waiting forever. Under `mpirun` the runtime usually notices a dead rank first and ends the job; the
//! watchdog covers what it does not (a hung rank, a machine that dropped off the network).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The exit code of a process the watchdog ends (that of coreutils' `timeout`).
pub const EXIT_TIMEOUT: i32 = 124;

/// Watches the collective in flight, if any (see [`Watchdog::guard`]).
#[derive(Clone)]
pub struct Watchdog {
    inner: Arc<Inner>,
}

struct Inner {
    rank: usize,
    timeout: Duration,
    in_flight: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("rank", &self.inner.rank)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl Watchdog {
    /// Starts the watchdog thread of rank `rank`: it checks a few times per timeout and stops when the last
    /// clone of the watchdog is dropped.
    pub fn start(rank: usize, timeout: Duration) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            rank,
            timeout,
            in_flight: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let tick = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("fgvc-watchdog".into())
            .spawn(move || watch(weak, tick))?;
        Ok(Watchdog { inner })
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Marks `operation` as in flight until the guard is dropped.
    pub fn guard(&self, operation: &str) -> WatchdogGuard<'_> {
        *self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((operation.to_string(), Instant::now()));
        WatchdogGuard { dog: self }
    }
}

/// A collective in flight; dropping it ends the watch.
#[must_use = "the operation is watched until the guard is dropped"]
pub struct WatchdogGuard<'a> {
    dog: &'a Watchdog,
}

impl Drop for WatchdogGuard<'_> {
    fn drop(&mut self) {
        *self
            .dog
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn watch(inner: Weak<Inner>, tick: Duration) {
    loop {
        std::thread::sleep(tick);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let late = inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(_, since)| since.elapsed() >= inner.timeout)
            .map(|(op, since)| (op.clone(), since.elapsed()));
        if let Some((op, waited)) = late {
            // One write, so that the line does not interleave with the other processes' under mpirun.
            let line = format!(
                "fgvc: error: rank {}: {op} has not completed after {:.0} s (the timeout is {:.0} s): another \
                 rank has probably failed, been killed or lost its connection. Ending this process; the last \
                 checkpoint is intact and `--resume` with the same number of processes continues from it\n",
                inner.rank,
                waited.as_secs_f64(),
                inner.timeout.as_secs_f64()
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            // Not `exit`: the engine's exit handlers may wait for the very peers that are gone.
            // SAFETY: `_exit` ends the process at once; nothing of ours needs to run after it.
            unsafe { libc::_exit(EXIT_TIMEOUT) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_marks_and_clears_the_operation_in_flight() {
        let dog = Watchdog::start(3, Duration::from_secs(3600)).unwrap();
        {
            let _g = dog.guard("all-reduce of step 7");
            let held = dog.inner.in_flight.lock().unwrap().clone();
            assert_eq!(held.unwrap().0, "all-reduce of step 7");
        }
        assert!(dog.inner.in_flight.lock().unwrap().is_none());
        assert_eq!(dog.timeout(), Duration::from_secs(3600));
    }
}
