//! Allocator settings for training processes: keep freed tensor buffers in the heap for reuse instead of
//! returning each one to the kernel, so every step does not page-fault its activations in again.

/// Tells glibc's malloc to serve blocks up to 32 MiB (its maximum) from the heap, pad heap growth by 256 MiB
/// and keep up to 2 GiB of freed memory before trimming. A training step allocates and frees the same large
/// buffers every iteration; with glibc's defaults each one above a sliding threshold is `mmap`ed and
/// `munmap`ed, and its first touch page-faults (44% of a depthwise forward+backward profile, see
/// docs/performance.md). Call once at start-up, before the first tensor. A variable the user set
/// (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`) wins over its setting here. Returns
/// whether any setting was applied (never on other platforms and C libraries).
///
/// ```
/// let applied = fgvc_ops::tune_allocator();
/// assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn tune_allocator() -> bool {
    imp::tune()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    // glibc's <malloc.h> parameter numbers.
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_TOP_PAD: i32 = -2;
    const M_MMAP_THRESHOLD: i32 = -3;

    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }

    pub fn tune() -> bool {
        let settings = [
            ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, 32 << 20),
            ("MALLOC_TOP_PAD_", M_TOP_PAD, 256 << 20),
            ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, i32::MAX),
        ];
        let mut applied = false;
        for (env, param, value) in settings {
            if std::env::var_os(env).is_none() {
                // SAFETY: mallopt only changes allocator tunables; any value is accepted or refused (0).
                applied |= unsafe { mallopt(param, value) } == 1;
            }
        }
        applied
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn tune() -> bool {
        false
    }
}
