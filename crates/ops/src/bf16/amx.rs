//! The AMX kernel: a 32x32 f32 block as four accumulator tiles (tmm0-3), fed per k-block by two A-tiles and
//! two B-tiles (tmm4-7) through `tdpbf16ps`. Inline assembly, since Rust's AMX intrinsics are unstable; the
//! tile registers are used by nothing else. Loading the tile configuration costs about as much as a small
//! block, so a [`Tiles`] guard loads it once for a run of blocks on one thread.

use super::pack::TILE;

/// Whether the CPU has AMX-TILE and AMX-BF16 and the operating system lets this process use them (Linux
/// grants the tile data state on request: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
pub(super) fn supported() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::arch::x86_64::__cpuid_count;
        // SAFETY: cpuid is available on every x86-64 CPU (the intrinsic is safe in newer Rust).
        #[allow(unused_unsafe)]
        let leaf7 = unsafe { __cpuid_count(7, 0) };
        let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        if !(amx_bf16 && amx_tile) {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain system call with integer arguments; it fails cleanly on kernels without AMX.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        r == 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// The 64-byte tile configuration: palette 1, eight tiles of 16 rows by 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// The tile configuration loaded on this thread while the guard lives (released on drop). Blocks run only
/// while one is held on their thread, and nothing that could run another product on the thread (a rayon
/// wait) may happen in between.
pub(super) struct Tiles(());

impl Tiles {
    /// Loads the configuration.
    ///
    /// # Safety
    /// [`supported`] returned true.
    pub(super) unsafe fn load() -> Self {
        // SAFETY: AMX is enabled for this process (the caller's contract); the configuration is valid.
        unsafe {
            std::arch::asm!("ldtilecfg [{cfg}]", cfg = in(reg) &CONFIG as *const TileConfig,
                options(nostack, readonly));
        }
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the configuration was loaded by `load`.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// `c (32x32, row stride ldc) = [c +] A-panels (a0, a1) * B-panels (b0, b1)` over `kb` k-blocks, the sums
/// starting from `c` itself when `accumulate`.
///
/// # Safety
/// A [`Tiles`] guard is held on this thread; each panel pointer addresses `kb` packed tiles; `c` addresses
/// 32 rows of 32 f32 at a stride of `ldc` elements, initialised when `accumulate`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn block(
    _tiles: &Tiles,
    a0: *const u16,
    a1: *const u16,
    b0: *const u16,
    b1: *const u16,
    kb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    debug_assert!(kb > 0);
    let step = TILE * 2; // bytes per tile
    let ldc = ldc * 4; // bytes per row of c
                       // SAFETY: the caller's contract; the accumulators start as c's four 16x16 quarters or zero.
    unsafe {
        if accumulate {
            std::arch::asm!(
                "tileloadd tmm0, [{c} + {ldc}*1]",
                "tileloadd tmm1, [{c} + {ldc}*1 + 64]",
                "tileloadd tmm2, [{c2} + {ldc}*1]",
                "tileloadd tmm3, [{c2} + {ldc}*1 + 64]",
                c = in(reg) c,
                c2 = in(reg) c.add(16 * ldc / 4),
                ldc = in(reg) ldc,
                options(nostack, readonly),
            );
        } else {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem),
            );
        }
    }
    // SAFETY: the caller's contract; every load reads one 1 KiB tile inside its panel, every store writes
    // 16 rows of 64 bytes inside c's block.
    unsafe {
        std::arch::asm!(
            "2:",
            "tileloadd tmm4, [{a0} + {s64}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {s64}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {s64}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, {step}",
            "add {a1}, {step}",
            "add {b0}, {step}",
            "add {b1}, {step}",
            "dec {kb}",
            "jnz 2b",
            "tilestored [{c} + {ldc}*1], tmm0",
            "tilestored [{c} + {ldc}*1 + 64], tmm1",
            "tilestored [{c2} + {ldc}*1], tmm2",
            "tilestored [{c2} + {ldc}*1 + 64], tmm3",
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b0 => _,
            b1 = inout(reg) b1 => _,
            kb = inout(reg) kb => _,
            c = in(reg) c,
            c2 = in(reg) c.add(16 * ldc / 4),
            ldc = in(reg) ldc,
            step = in(reg) step,
            s64 = in(reg) 64usize,
            options(nostack),
        );
    }
}
