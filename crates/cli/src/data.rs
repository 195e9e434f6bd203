//! `fgvc data verify`: counts per split and class, and every missing or unreadable image of a dataset.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use fgvc_data::verify::{per_class_table, verify, Check};
use fgvc_data::{DatasetKind, OpenOptions};

/// Arguments of `fgvc data verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Dataset kind: cub, cars, aircraft, folder or synthetic.
    #[arg(long)]
    pub dataset: String,
    /// Dataset root, e.g. data/CUB_200_2011 (ignored for synthetic).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// How thoroughly to check each image.
    #[arg(long, value_enum, default_value_t = CheckLevel::Decode)]
    pub check: CheckLevel,
    /// Also print the image count of every class in every split.
    #[arg(long)]
    pub per_class: bool,
    /// The largest image accepted, in pixels (width x height), read from each file's header before it is
    /// decoded; larger ones are reported as unreadable.
    #[arg(long, default_value_t = fgvc_data::DEFAULT_MAX_IMAGE_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,
}

/// How thoroughly `verify` reads each image.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CheckLevel {
    /// The file exists.
    Exists,
    /// The header names a supported format and a size.
    Header,
    /// The whole image decodes.
    Decode,
}

/// Verifies the dataset and prints the report; an error when anything is missing or unreadable.
pub fn run(args: &VerifyArgs) -> Result<()> {
    let kind: DatasetKind = args.dataset.parse()?;
    let check = match args.check {
        CheckLevel::Exists => Check::Exists,
        CheckLevel::Header => Check::Header,
        CheckLevel::Decode => Check::Decode,
    };
    let root = match (&args.root, kind) {
        (Some(root), _) => root.clone(),
        (None, DatasetKind::Synthetic) => PathBuf::new(),
        (None, _) => bail!("--root is required for the {} dataset", args.dataset),
    };
    fgvc_data::set_max_image_pixels(args.max_image_pixels)?;
    let report = verify(kind, &root, &OpenOptions::default(), check)?;
    crate::output::print(&report.to_string())?;
    if args.per_class {
        crate::output::print(&per_class_table(&report))?;
    }
    if !report.is_ok() {
        bail!(
            "{} at {} has missing or unreadable files (listed above)",
            args.dataset,
            root.display()
        );
    }
    Ok(())
}
