//! The device a run uses, as the command lines name it (`cpu`, `cuda`, `metal`): one type for `fgvc` and
//! `cargo xtask`, which parses the name, knows the cargo feature a build needs for it, and opens the candle
//! [`Device`] with an error that says how to make it available.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// Where tensors live: the CPU, the first CUDA GPU or the Apple GPU.
///
/// ```
/// use fgvc_train::device::DeviceChoice;
///
/// let choice: DeviceChoice = "cuda".parse().unwrap();
/// assert_eq!(choice.feature(), Some("cuda"));
/// assert_eq!(choice.to_string(), "cuda");
/// assert!("tpu".parse::<DeviceChoice>().unwrap_err().to_string().contains("cpu, cuda, metal"));
/// assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceChoice {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// The first CUDA GPU (needs the `cuda` feature).
    Cuda,
    /// The Apple GPU (needs the `metal` feature).
    Metal,
}

impl DeviceChoice {
    /// Every choice, in the order command lines list them.
    pub const ALL: [DeviceChoice; 3] = [DeviceChoice::Cpu, DeviceChoice::Cuda, DeviceChoice::Metal];

    /// The name on the command line (`--device cuda`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Metal => "metal",
        }
    }

    /// The choice in a few words, with what it needs (the `--help` text of the value).
    pub fn description(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "The CPU (always available)",
            DeviceChoice::Cuda => "The first CUDA GPU (needs the `cuda` feature)",
            DeviceChoice::Metal => "The Apple GPU (needs the `metal` feature)",
        }
    }

    /// The cargo feature (of `fgvc-cli`, `fgvc-train`, `fgvc-backbone`) a build needs for this device;
    /// `None` for the CPU.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceChoice::Cpu => None,
            DeviceChoice::Cuda => Some("cuda"),
            DeviceChoice::Metal => Some("metal"),
        }
    }

    /// Opens the device (the first GPU of its kind). A build without the device's feature, or a machine
    /// without the GPU, fails with an [`OpenDeviceError`] saying what to do; candle's error is its source.
    pub fn open(self) -> Result<Device, OpenDeviceError> {
        let fails = |remedy: &'static str| {
            move |source| OpenDeviceError {
                choice: self,
                remedy,
                source,
            }
        };
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda => Device::new_cuda(0).map_err(fails(
                "build with `--features cuda` and check that a CUDA GPU is visible",
            )),
            DeviceChoice::Metal => {
                Device::new_metal(0).map_err(fails("build with `--features metal` on macOS"))
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DeviceChoice {
    type Err = UnknownDevice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceChoice::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDevice(s.to_string()))
    }
}

/// A device name that is not one of [`DeviceChoice::ALL`]; the message lists the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device `{}`; the choices are {}", .0, choices())]
pub struct UnknownDevice(pub String);

fn choices() -> String {
    DeviceChoice::ALL.map(DeviceChoice::name).join(", ")
}

/// The device could not be opened: the message says how to make it available (`--device cuda: build
/// with ...`), the source is candle's error.
#[derive(Debug, thiserror::Error)]
#[error("--device {choice}: {remedy}")]
pub struct OpenDeviceError {
    /// The device asked for.
    pub choice: DeviceChoice,
    /// What to do about it.
    pub remedy: &'static str,
    /// Why candle could not open it.
    #[source]
    pub source: candle_core::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_list_the_choices() {
        for d in DeviceChoice::ALL {
            assert_eq!(d.name().parse::<DeviceChoice>().unwrap(), d);
            assert_eq!(d.to_string(), d.name());
        }
        assert_eq!(DeviceChoice::default(), DeviceChoice::Cpu);
        let err = "tpu".parse::<DeviceChoice>().unwrap_err();
        assert_eq!(err, UnknownDevice("tpu".into()));
        assert_eq!(
            err.to_string(),
            "unknown device `tpu`; the choices are cpu, cuda, metal"
        );
        assert!("CUDA".parse::<DeviceChoice>().is_err(), "names are exact");
    }

    #[test]
    fn features_are_the_gpu_ones() {
        assert_eq!(DeviceChoice::Cpu.feature(), None);
        assert_eq!(DeviceChoice::Cuda.feature(), Some("cuda"));
        assert_eq!(DeviceChoice::Metal.feature(), Some("metal"));
    }

    #[test]
    fn the_cpu_opens() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_its_feature_says_how_to_build() {
        let err = DeviceChoice::Cuda.open().unwrap_err();
        assert_eq!(err.choice, DeviceChoice::Cuda);
        assert_eq!(
            err.to_string(),
            "--device cuda: build with `--features cuda` and check that a CUDA GPU is visible"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[cfg(not(feature = "metal"))]
    #[test]
    fn metal_without_its_feature_says_how_to_build() {
        let err = DeviceChoice::Metal.open().unwrap_err();
        assert_eq!(
            err.to_string(),
            "--device metal: build with `--features metal` on macOS"
        );
    }
}
