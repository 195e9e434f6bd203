//! The machine a benchmark ran on, recorded with every row: a number without its CPU, core count and ISA
//! level cannot be compared with one from another machine.

use fgvc_ops::Isa;

/// The CPU and the ISA levels the two sides could use.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`), or the architecture where that is not readable.
    pub cpu: String,
    /// Logical cores the OS reports.
    pub logical_cores: usize,
    /// The widest ISA level fgvc-ops detects on this CPU.
    pub detected_isa: Isa,
    /// The cap `--isa` put on both sides, if any.
    pub isa_cap: Option<Isa>,
}

impl Machine {
    /// This machine, with the requested cap.
    pub fn here(isa_cap: Option<Isa>) -> Self {
        Machine {
            cpu: cpu_model(),
            logical_cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            detected_isa: Isa::detected(),
            isa_cap,
        }
    }

    /// One line for a table's header.
    pub fn describe(&self) -> String {
        let cap = match self.isa_cap {
            Some(c) => {
                format!(", capped at {c} (FGVC_ISA; ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA)")
            }
            None => String::new(),
        };
        format!(
            "{}, {} logical cores, widest ISA {}{cap}",
            self.cpu, self.logical_cores, self.detected_isa
        )
    }
}

/// `ATEN_CPU_CAPABILITY`'s name for a level (PyTorch's own cap: `default`, `avx2`, `avx512`).
pub fn aten_capability(isa: Isa) -> &'static str {
    match isa {
        Isa::Scalar => "default",
        Isa::Avx2 => "avx2",
        Isa::Avx512 => "avx512",
    }
}

/// `ONEDNN_MAX_CPU_ISA`'s name for a level: PyTorch's convolutions and matrix products run in oneDNN,
/// which ignores `ATEN_CPU_CAPABILITY` and dispatches on its own.
pub fn onednn_max_isa(isa: Isa) -> &'static str {
    match isa {
        Isa::Scalar => "SSE41",
        Isa::Avx2 => "AVX2",
        Isa::Avx512 => "AVX512_CORE_BF16",
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| model_name(&text))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The first `model name` line of a `/proc/cpuinfo` text.
fn model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_name_and_description() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\nflags\t: fpu\n";
        assert_eq!(model_name(info).as_deref(), Some("AMD EPYC 9R14"));
        assert_eq!(model_name("processor : 0\n"), None);
        let m = Machine {
            cpu: "AMD EPYC".into(),
            logical_cores: 2,
            detected_isa: Isa::Avx512,
            isa_cap: Some(Isa::Avx2),
        };
        assert_eq!(
            m.describe(),
            "AMD EPYC, 2 logical cores, widest ISA avx512, capped at avx2 (FGVC_ISA; ATEN_CPU_CAPABILITY and \
             ONEDNN_MAX_CPU_ISA)"
        );
        assert_eq!(aten_capability(Isa::Scalar), "default");
        assert_eq!(onednn_max_isa(Isa::Avx2), "AVX2");
    }
}
