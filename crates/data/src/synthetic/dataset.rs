//! The dataset: one split of the synthetic set, each image rendered on demand from its own keyed random
//! stream, with its label and ground-truth pose.

use image::RgbImage;

use super::classes::ClassSpec;
use super::config::SyntheticConfig;
use super::pose::{Part, Pose};
use super::scene::Scene;
use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};
use crate::rng::{keyed_rng, Domain};

/// One rendered image with its ground truth.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The image.
    pub image: RgbImage,
    /// The class.
    pub label: u32,
    /// Where the bird is.
    pub pose: Pose,
}

impl Rendered {
    /// The axis-aligned image box `[x0, y0, x1, y1]` (pixels) around `part`.
    pub fn part_box(&self, part: Part) -> [f32; 4] {
        let [x0, y0, x1, y1] = part.canonical_box();
        let corners = [[x0, y0], [x1, y0], [x0, y1], [x1, y1]].map(|p| self.pose.to_image(p));
        let min = |i: usize| corners.iter().map(|c| c[i]).fold(f32::INFINITY, f32::min);
        let max = |i: usize| {
            corners
                .iter()
                .map(|c| c[i])
                .fold(f32::NEG_INFINITY, f32::max)
        };
        [min(0), min(1), max(0), max(1)]
    }
}

/// The synthetic dataset, one split of it. Images are rendered on demand by [`Dataset::load`].
#[derive(Debug, Clone)]
pub struct Synthetic {
    config: SyntheticConfig,
    split: Split,
    name: String,
    class_names: Vec<String>,
    specs: Vec<ClassSpec>,
}

impl Synthetic {
    /// The `split` of the dataset that `config` describes.
    pub fn new(config: SyntheticConfig, split: Split) -> Result<Self> {
        config.validate()?;
        let vocabulary = config.first_class + config.classes;
        let specs: Vec<ClassSpec> = (config.first_class..vocabulary)
            .map(|c| ClassSpec::of(c, vocabulary))
            .collect();
        let class_names = specs
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{i:03} {}", s.name()))
            .collect();
        let first = match config.first_class {
            0 => String::new(),
            n => format!(" from class {n}"),
        };
        Ok(Synthetic {
            name: format!(
                "synthetic {}x{}x{} seed {}{first} ({split})",
                config.classes, config.image_size, config.image_size, config.seed
            ),
            config,
            split,
            class_names,
            specs,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// The split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The part levels of every class.
    pub fn class_specs(&self) -> &[ClassSpec] {
        &self.specs
    }

    /// Render sample `index` with its ground truth.
    ///
    /// # Panics
    /// When `index >= self.len()`.
    pub fn render(&self, index: usize) -> Rendered {
        assert!(
            index < self.len(),
            "index {index} out of range ({} samples)",
            self.len()
        );
        let label = (index % self.config.classes) as u32;
        let split_code = match self.split {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        };
        let mut rng = keyed_rng(
            Domain::Synthetic,
            self.config.seed,
            split_code,
            index as u64,
        );
        let scene = Scene::draw(
            &mut rng,
            self.specs[label as usize],
            self.config.image_size as f32,
        );
        let image = scene.render(&mut rng, self.config.image_size);
        Rendered {
            image,
            label,
            pose: scene.bird.pose,
        }
    }
}

impl Dataset for Synthetic {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.config.len(self.split)
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn label(&self, index: usize) -> u32 {
        assert!(
            index < self.len(),
            "index {index} out of range ({} samples)",
            self.len()
        );
        (index % self.config.classes) as u32
    }
    fn load(&self, index: usize) -> Result<RgbImage> {
        if index >= self.len() {
            return Err(DataError::Config(format!(
                "{}: index {index} out of range ({} samples)",
                self.name,
                self.len()
            )));
        }
        Ok(self.render(index).image)
    }
    fn describe(&self, index: usize) -> String {
        format!("{} #{index}", self.name)
    }
}
