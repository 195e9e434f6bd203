//! [`InProcess`]: the ranks of a group as threads of one process, exchanging through shared memory. For
//! tests of distributed code without an MPI job (the two-process equivalences run as two threads), and for
//! anyone who wants several model replicas in one process.

use std::sync::{Arc, Barrier, Mutex};

use crate::collective::{Collective, Group};
use crate::error::Result;

/// One rank of a group of threads (see [`in_process`]). Sums are taken in rank order, so every rank gets
/// the same bits. A rank that stops calling the collectives leaves the others waiting: a test harness
/// should give each thread a timeout.
pub struct InProcess {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f64>>>,
    bytes: Mutex<Vec<u8>>,
}

/// The groups of `world` ranks in one process, rank `r` at index `r`: hand each to its own thread.
///
/// ```
/// use fgvc_distributed::in_process;
///
/// let handles: Vec<_> = in_process(3)
///     .into_iter()
///     .map(|g| std::thread::spawn(move || {
///         let mut v = [g.rank() as f64 + 1.];
///         g.sum_f64(&mut v).unwrap();
///         v[0]
///     }))
///     .collect();
/// for h in handles {
///     assert_eq!(h.join().unwrap(), 6.);
/// }
/// ```
pub fn in_process(world: usize) -> Vec<Group> {
    let world = world.max(1);
    let shared = Arc::new(Shared {
        barrier: Barrier::new(world),
        slots: Mutex::new(vec![Vec::new(); world]),
        bytes: Mutex::new(Vec::new()),
    });
    (0..world)
        .map(|rank| {
            Group::new(Arc::new(InProcess {
                rank,
                world,
                shared: Arc::clone(&shared),
            }))
        })
        .collect()
}

impl InProcess {
    /// Every rank deposits `values`; returns them all, in rank order, once every rank has.
    fn exchange(&self, values: Vec<f64>, reduce: impl FnOnce(&[Vec<f64>])) {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = values;
        self.shared.barrier.wait();
        reduce(&self.shared.slots.lock().unwrap_or_else(|e| e.into_inner()));
        self.shared.barrier.wait();
    }
}

impl Collective for InProcess {
    fn engine(&self) -> &str {
        "in-process"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        let values = buf.iter().map(|&v| f64::from(v)).collect();
        self.exchange(values, |all| {
            for (i, v) in buf.iter_mut().enumerate() {
                // In f32, as an engine reducing f32 would.
                *v = all.iter().fold(0f32, |s, r| s + r[i] as f32);
            }
        });
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.exchange(buf.to_vec(), |all| {
            for (i, v) in buf.iter_mut().enumerate() {
                *v = all.iter().fold(0., |s, r| s + r[i]);
            }
        });
        Ok(())
    }

    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        if self.rank == root {
            *self.shared.bytes.lock().unwrap_or_else(|e| e.into_inner()) = buf.clone();
        }
        self.shared.barrier.wait();
        if self.rank != root {
            *buf = self
                .shared
                .bytes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        }
        self.shared.barrier.wait();
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        panic!(
            "rank {} of an in-process group aborted with code {code}",
            self.rank
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_gets_the_sum_and_the_broadcast() {
        let handles: Vec<_> = in_process(2)
            .into_iter()
            .map(|g| {
                std::thread::spawn(move || {
                    let r = g.rank() as f32;
                    let mut a = [r, 10. * r + 1.];
                    g.sum_f32(&mut a).unwrap();
                    let mut b = if g.is_main() { vec![7, 8] } else { vec![] };
                    g.broadcast(0, &mut b).unwrap();
                    (a, b, g.count(g.rank() == 1).unwrap())
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), ([1., 12.], vec![7, 8], 1));
        }
    }
}
