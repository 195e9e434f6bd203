//! Render a grid of the synthetic dataset: one row per class, one column per instance.
//!
//! `cargo run -p fgvc-data --example synthetic_grid -- [out.png] [classes] [image_size] [per_class]`

use fgvc_data::{Split, Synthetic, SyntheticConfig};
use image::RgbImage;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .cloned()
        .unwrap_or_else(|| "synthetic_grid.png".into());
    let arg = |i: usize, default: usize| {
        args.get(i)
            .map(|s| s.parse())
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let classes = arg(1, 10)?;
    let size = arg(2, 64)? as u32;
    let per_class = arg(3, 8)?;
    let config = SyntheticConfig {
        classes,
        image_size: size,
        train_per_class: per_class,
        ..Default::default()
    };
    let data = Synthetic::new(config, Split::Train)?;
    let pad = 2;
    let mut grid = RgbImage::from_pixel(
        per_class as u32 * (size + pad) + pad,
        classes as u32 * (size + pad) + pad,
        image::Rgb([255, 255, 255]),
    );
    for k in 0..per_class {
        for c in 0..classes {
            let r = data.render(k * classes + c);
            image::imageops::replace(
                &mut grid,
                &r.image,
                (pad + k as u32 * (size + pad)) as i64,
                (pad + c as u32 * (size + pad)) as i64,
            );
        }
    }
    grid.save(&out)?;
    for (c, name) in fgvc_data::Dataset::class_names(&data).iter().enumerate() {
        println!("row {c}: {name}");
    }
    println!("wrote {out}");
    Ok(())
}
