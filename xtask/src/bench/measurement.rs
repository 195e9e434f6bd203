//! What a benchmark program measured: its JSON line, parsed, for our side and PyTorch's, and one workload's
//! pair of results.

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::workloads::Workload;

/// The JSON object a benchmark program printed: the last line of `stdout` that is a JSON object.
pub fn parse_json_line(stdout: &str) -> Result<Map<String, Value>> {
    let line = stdout
        .lines()
        .map(str::trim)
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the benchmark printed no JSON line")?;
    match serde_json::from_str::<Value>(line)
        .with_context(|| format!("the benchmark's JSON line does not parse: {line}"))?
    {
        Value::Object(map) => Ok(map),
        other => bail!("the benchmark's JSON line is not an object: {other}"),
    }
}

/// What one side measured for a workload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    /// Median seconds per iteration (step).
    pub median_s: Option<f64>,
    /// Images per second (batch / median).
    pub images_per_s: Option<f64>,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Peak device memory, MiB, where the side reports it.
    pub peak_device_mib: Option<f64>,
    /// The device the side actually ran on.
    pub device: Option<String>,
    /// The implementation's version (`candle 0.11.1`, `2.15.0`).
    pub version: Option<String>,
    /// The instruction-set level the side ran at (ours: `fgvc_ops::isa()`; PyTorch: its reported CPU
    /// capability, e.g. `AVX512`).
    pub isa: Option<String>,
    /// Why the side has no number for this workload (`Coarse2Fine has no public code ...`).
    pub skipped: Option<String>,
}

impl Measurement {
    /// The fields of a benchmark program's JSON line.
    pub fn from_json(map: &Map<String, Value>) -> Self {
        let num = |k: &str| map.get(k).and_then(Value::as_f64);
        let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
        Measurement {
            median_s: num("median_s"),
            images_per_s: num("images_per_s"),
            peak_rss_mib: num("peak_rss_mib"),
            peak_device_mib: num("peak_device_mib"),
            device: text("device"),
            version: text("version"),
            isa: text("isa"),
            skipped: text("skipped"),
        }
    }
}

/// The PyTorch side of a workload.
#[derive(Debug, Clone, PartialEq)]
pub enum TorchSide {
    /// Not requested, or no Python with torch.
    Off,
    /// Measured (possibly skipped by the script itself, see [`Measurement::skipped`]).
    Ran(Measurement),
    /// The script failed.
    Failed(String),
}

/// One workload's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// Ours, or why it failed.
    pub ours: std::result::Result<Measurement, String>,
    /// PyTorch's.
    pub torch: TorchSide,
}

impl Row {
    /// Ours over PyTorch in images/s (above 1: ours is faster).
    pub fn ratio(&self) -> Option<f64> {
        match (&self.ours, &self.torch) {
            (Ok(o), TorchSide::Ran(t)) => Some(o.images_per_s? / t.images_per_s?),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_is_the_last_object_among_other_output() {
        let out = "warming up\n{\"a\": 1}\nnoise\n  {\"suite\": \"methods\", \"median_s\": 2.5, \
                   \"images_per_s\": 1.6, \"peak_rss_mib\": 1200.0, \"peak_device_mib\": null, \
                   \"device\": \"cpu\", \"version\": \"candle 0.11.1\"}\n";
        let map = parse_json_line(out).unwrap();
        assert_eq!(map["suite"], "methods");
        let m = Measurement::from_json(&map);
        assert_eq!(m.median_s, Some(2.5));
        assert_eq!(m.images_per_s, Some(1.6));
        assert_eq!(m.peak_rss_mib, Some(1200.0));
        assert_eq!(m.peak_device_mib, None);
        assert_eq!(m.device.as_deref(), Some("cpu"));
        assert_eq!(m.skipped, None);
        assert!(parse_json_line("no json here\n").is_err());
        assert!(parse_json_line("{not json\n").is_err());
        assert!(parse_json_line("[1, 2]\n{\"x\": [1]}").is_ok());
        let skipped = parse_json_line(
            "{\"method\": \"coarse2fine\", \"skipped\": \"Coarse2Fine has no public code\"}",
        )
        .unwrap();
        let m = Measurement::from_json(&skipped);
        assert_eq!(m.skipped.as_deref(), Some("Coarse2Fine has no public code"));
        assert_eq!(m.images_per_s, None);
    }
}
