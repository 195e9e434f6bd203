//! The `--device` argument of `bench` and `train-cub`: [`DeviceChoice`]'s names, each listed with its
//! description in `--help`. fgvc-train has no clap, so the value parser is built here from its table.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use fgvc_train::device::DeviceChoice;

/// Parses `--device cpu|cuda|metal`; another name is refused with the possible values.
pub fn parser() -> impl TypedValueParser<Value = DeviceChoice> {
    PossibleValuesParser::new(
        DeviceChoice::ALL.map(|d| PossibleValue::new(d.name()).help(d.description())),
    )
    .map(|name| {
        name.parse::<DeviceChoice>()
            .expect("one of the possible values")
    })
}
