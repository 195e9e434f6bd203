//! The embedded synthetic fine-grained dataset: procedurally rendered birds, no download, no assets.
//!
//! Every class shares one global shape: a body ellipse, a head, a wing, a tail and legs. Classes differ only
//! in small local parts, each with a few levels:
//!
//! | part | levels |
//! |---|---|
//! | beak colour | 4 hues (more when more than 144 classes are asked for) |
//! | beak length | short, long |
//! | eye ring | none, pale ring |
//! | wing bars | none, one, two |
//! | tail tip | plain, pale tip, dark band |
//!
//! A class is one combination of levels; classes are spread over the combinations so that any class count
//! works and every part varies between classes. Everything else is drawn per image and carries no class
//! information: body and wing colour, a slight body aspect change, pose (rotation up to ±30°, a horizontal
//! flip), scale, position, a background gradient with clutter (blobs, branches, and decoys that look like
//! loose beaks, bars and rings), then global colour jitter (brightness, contrast, per-channel gain) and pixel
//! noise. Images are rendered with 2x2 supersampling, so any resolution works and parts scale with it.
//!
//! Each image is a pure function of `(seed, split, index)` through its own ChaCha8 stream, so the dataset is
//! identical across runs and thread counts, and different seeds give different images. Labels are
//! interleaved (`index % classes`), so every prefix is balanced.
//!
//! [`Rendered::pose`] exposes the ground-truth pose, and [`Rendered::part_box`] where each part is, for
//! checks like the fine-grained test of this crate or for evaluating attention maps.

use std::f32::consts::PI;

use image::{Rgb, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};
use crate::rng::{keyed_rng, Domain};

/// What to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Number of classes (any number from 2 up).
    pub classes: usize,
    /// Width and height of the square images, in pixels (at least 16).
    pub image_size: u32,
    /// Training images per class.
    pub train_per_class: usize,
    /// Validation images per class (an independent set, not taken from the training images).
    pub val_per_class: usize,
    /// Test images per class.
    pub test_per_class: usize,
    /// The seed every image derives from.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    /// 10 classes of 64x64 images, 100 training, 20 validation and 50 test images per class, seed 0.
    fn default() -> Self {
        SyntheticConfig {
            classes: 10,
            image_size: 64,
            train_per_class: 100,
            val_per_class: 20,
            test_per_class: 50,
            seed: 0,
        }
    }
}

impl SyntheticConfig {
    /// Number of images of `split`.
    pub fn len(&self, split: Split) -> usize {
        self.classes
            * match split {
                Split::Train => self.train_per_class,
                Split::Val => self.val_per_class,
                Split::Test => self.test_per_class,
            }
    }

    fn validate(&self) -> Result<()> {
        if self.classes < 2 {
            return Err(DataError::Config(format!(
                "synthetic dataset needs at least 2 classes, got {}",
                self.classes
            )));
        }
        if self.image_size < 16 {
            return Err(DataError::Config(format!(
                "synthetic image_size must be at least 16, got {}",
                self.image_size
            )));
        }
        Ok(())
    }
}

/// Number of beak-colour levels.
fn beak_levels(classes: usize) -> usize {
    classes.div_ceil(36).max(4)
}

/// A tail tip pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TailTip {
    /// Same colour as the tail.
    Plain,
    /// A pale tip.
    Pale,
    /// A dark band near the tip.
    DarkBand,
}

/// The part levels that define one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassSpec {
    /// Index of the beak hue, `0..beak_levels`.
    pub beak_colour: usize,
    /// Number of beak hues in this dataset.
    pub beak_levels: usize,
    /// Long (true) or short beak.
    pub long_beak: bool,
    /// A pale ring around the eye.
    pub eye_ring: bool,
    /// Number of pale bars across the wing, 0 to 2.
    pub wing_bars: u8,
    /// The tail tip.
    pub tail_tip: TailTip,
}

impl ClassSpec {
    /// The part levels of class `class` out of `classes`. Classes are distinct combinations, spread over all
    /// combinations by a stride coprime with their number, so every part varies even with few classes.
    pub fn of(class: usize, classes: usize) -> ClassSpec {
        let levels = beak_levels(classes);
        let capacity = levels * 36;
        let gcd = |mut a: usize, mut b: usize| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let mut stride = ((capacity as f64 * 0.618) as usize) | 1;
        while gcd(stride, capacity) != 1 {
            stride += 2;
        }
        let mut code = (class * stride) % capacity;
        let mut digit = |n: usize| {
            let d = code % n;
            code /= n;
            d
        };
        ClassSpec {
            beak_colour: digit(levels),
            beak_levels: levels,
            long_beak: digit(2) == 1,
            eye_ring: digit(2) == 1,
            wing_bars: digit(3) as u8,
            tail_tip: [TailTip::Plain, TailTip::Pale, TailTip::DarkBand][digit(3)],
        }
    }

    /// A readable name, e.g. `beak hue 2/4 long, eye ring, 1 wing bar, pale tail tip`.
    pub fn name(&self) -> String {
        format!(
            "beak hue {}/{} {}, {}, {} wing bar{}, {}",
            self.beak_colour + 1,
            self.beak_levels,
            if self.long_beak { "long" } else { "short" },
            if self.eye_ring {
                "eye ring"
            } else {
                "no eye ring"
            },
            self.wing_bars,
            if self.wing_bars == 1 { "" } else { "s" },
            match self.tail_tip {
                TailTip::Plain => "plain tail",
                TailTip::Pale => "pale tail tip",
                TailTip::DarkBand => "dark tail band",
            }
        )
    }
}

fn beak_hue_rgb(level: usize, levels: usize, hue_jitter: f32, value_jitter: f32) -> [f32; 3] {
    let hue = 45.0 + 360.0 * level as f32 / levels as f32 + hue_jitter;
    hsv(hue, 0.85, (0.9 + value_jitter).clamp(0.0, 1.0))
}

/// Where the bird is: canonical bird coordinates (body length about 1.5, head towards +x, y down) map to
/// pixels by `centre + R(angle) * S * F(flip) * (p - origin)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Image position of the bird's canonical origin, in pixels.
    pub centre: [f32; 2],
    /// Rotation in radians.
    pub angle: f32,
    /// Pixels per canonical unit.
    pub scale: f32,
    /// Mirrored horizontally (the bird faces left).
    pub flip: bool,
}

/// The canonical point that [`Pose::centre`] is the image of: the middle of the bird's length.
const ORIGIN: [f32; 2] = [0.04, 0.0];

impl Pose {
    /// The image position (pixels, continuous: pixel `(i, j)` covers `[i, i+1) x [j, j+1)`) of canonical point
    /// `p`.
    pub fn to_image(&self, p: [f32; 2]) -> [f32; 2] {
        let mut x = p[0] - ORIGIN[0];
        let y = p[1] - ORIGIN[1];
        if self.flip {
            x = -x;
        }
        let (s, c) = self.angle.sin_cos();
        [
            self.centre[0] + self.scale * (c * x - s * y),
            self.centre[1] + self.scale * (s * x + c * y),
        ]
    }

    /// The canonical point at image position `q` (the inverse of [`Pose::to_image`]).
    pub fn to_canonical(&self, q: [f32; 2]) -> [f32; 2] {
        let dx = (q[0] - self.centre[0]) / self.scale;
        let dy = (q[1] - self.centre[1]) / self.scale;
        let (s, c) = self.angle.sin_cos();
        let mut x = c * dx + s * dy;
        let y = -s * dx + c * dy;
        if self.flip {
            x = -x;
        }
        [x + ORIGIN[0], y + ORIGIN[1]]
    }
}

/// The parts that distinguish classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Part {
    /// The beak (colour and length).
    Beak,
    /// The eye and its ring.
    Eye,
    /// The wing and its bars.
    Wing,
    /// The tip of the tail.
    TailTip,
}

impl Part {
    /// All parts.
    pub const ALL: [Part; 4] = [Part::Beak, Part::Eye, Part::Wing, Part::TailTip];

    /// The part's box in canonical coordinates, `[x0, y0, x1, y1]`; it covers the part at every level
    /// (e.g. the long beak).
    pub fn canonical_box(self) -> [f32; 4] {
        match self {
            Part::Beak => [0.52, -0.23, 0.80, -0.09],
            Part::Eye => [0.40, -0.27, 0.56, -0.11],
            Part::Wing => [-0.34, -0.17, 0.22, 0.09],
            Part::TailTip => [-0.74, -0.17, -0.54, 0.17],
        }
    }
}

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
        let specs: Vec<ClassSpec> = (0..config.classes)
            .map(|c| ClassSpec::of(c, config.classes))
            .collect();
        let class_names = specs
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{i:03} {}", s.name()))
            .collect();
        Ok(Synthetic {
            name: format!(
                "synthetic {}x{}x{} seed {} ({split})",
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

// ---------------------------------------------------------------------------------------------------------
// Geometry and colour helpers.

type Rgbf = [f32; 3];

fn hsv(h: f32, s: f32, v: f32) -> Rgbf {
    let h = h.rem_euclid(360.0) / 60.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

fn scale_rgb(c: Rgbf, f: f32) -> Rgbf {
    [
        (c[0] * f).min(1.0),
        (c[1] * f).min(1.0),
        (c[2] * f).min(1.0),
    ]
}

fn in_ellipse(p: [f32; 2], c: [f32; 2], r: [f32; 2], angle: f32) -> bool {
    let (s, co) = angle.sin_cos();
    let dx = p[0] - c[0];
    let dy = p[1] - c[1];
    let u = (co * dx + s * dy) / r[0];
    let v = (-s * dx + co * dy) / r[1];
    u * u + v * v <= 1.0
}

fn dist2(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

fn near_segment(p: [f32; 2], a: [f32; 2], b: [f32; 2], half_width: f32) -> bool {
    let ab = [b[0] - a[0], b[1] - a[1]];
    let len2 = ab[0] * ab[0] + ab[1] * ab[1];
    let t = if len2 > 0.0 {
        (((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1]) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    dist2(p, [a[0] + t * ab[0], a[1] + t * ab[1]]) <= half_width * half_width
}

/// Point in a convex polygon given counter-clockwise or clockwise.
fn in_convex(p: [f32; 2], poly: &[[f32; 2]]) -> bool {
    let mut sign = 0.0f32;
    for i in 0..poly.len() {
        let a = poly[i];
        let b = poly[(i + 1) % poly.len()];
        let cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
        if cross != 0.0 {
            if sign == 0.0 {
                sign = cross.signum();
            } else if cross.signum() != sign {
                return false;
            }
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------------------
// The scene.

/// Canonical geometry shared by all classes (before the per-image aspect jitter of the body).
const BODY_C: [f32; 2] = [0.0, 0.0];
const BODY_R: [f32; 2] = [0.40, 0.22];
const HEAD_C: [f32; 2] = [0.42, -0.16];
const HEAD_R: f32 = 0.15;
const EYE_C: [f32; 2] = [0.47, -0.19];
const EYE_R: f32 = 0.035;
const RING_R: f32 = 0.072;
const WING_C: [f32; 2] = [-0.06, -0.04];
const WING_R: [f32; 2] = [0.28, 0.12];
const WING_ANGLE: f32 = -0.12;
const BAR_HALF_WIDTH: f32 = 0.024;
const BEAK_BASE_X: f32 = 0.53;
const BEAK_Y: [f32; 2] = [-0.205, -0.115];
const BEAK_SHORT: f32 = 0.12;
const BEAK_LONG: f32 = 0.25;
const TAIL: [[f32; 2]; 4] = [[-0.30, -0.07], [-0.72, -0.14], [-0.72, 0.14], [-0.30, 0.07]];
const TAIL_TIP_X: f32 = -0.60;
const BAND_X: [f32; 2] = [-0.66, -0.58];
const LEGS: [[[f32; 2]; 2]; 2] = [[[0.0, 0.18], [-0.02, 0.36]], [[0.10, 0.17], [0.11, 0.35]]];
const LEG_HALF_WIDTH: f32 = 0.014;

struct Bird {
    pose: Pose,
    spec: ClassSpec,
    body_r: [f32; 2],
    body: Rgbf,
    head: Rgbf,
    wing: Rgbf,
    tail: Rgbf,
    beak: Rgbf,
    ring: Rgbf,
    bars: Rgbf,
    tip_pale: Rgbf,
    band_dark: Rgbf,
    legs: Rgbf,
}

impl Bird {
    /// The colour at canonical point `q`, topmost layer first, or `None` off the bird.
    fn colour_at(&self, q: [f32; 2]) -> Option<Rgbf> {
        let spec = &self.spec;
        // Eye and ring.
        let d2 = dist2(q, EYE_C);
        if d2 <= EYE_R * EYE_R {
            return Some([0.04, 0.04, 0.05]);
        }
        if spec.eye_ring && d2 <= RING_R * RING_R {
            return Some(self.ring);
        }
        // Beak: a triangle from the head to the tip.
        let len = if spec.long_beak {
            BEAK_LONG
        } else {
            BEAK_SHORT
        };
        let tip = [BEAK_BASE_X + len, 0.5 * (BEAK_Y[0] + BEAK_Y[1]) + 0.01];
        if q[0] >= BEAK_BASE_X - 0.03
            && in_convex(
                q,
                &[
                    [BEAK_BASE_X - 0.03, BEAK_Y[0]],
                    tip,
                    [BEAK_BASE_X - 0.03, BEAK_Y[1]],
                ],
            )
        {
            return Some(self.beak);
        }
        // Head.
        if dist2(q, HEAD_C) <= HEAD_R * HEAD_R {
            return Some(self.head);
        }
        // Wing with bars.
        if in_ellipse(q, WING_C, WING_R, WING_ANGLE) {
            let (s, c) = WING_ANGLE.sin_cos();
            let u = c * (q[0] - WING_C[0]) + s * (q[1] - WING_C[1]);
            let bars: &[f32] = match spec.wing_bars {
                0 => &[],
                1 => &[0.0],
                _ => &[0.06, -0.07],
            };
            if bars.iter().any(|&b| (u - b).abs() <= BAR_HALF_WIDTH) {
                return Some(self.bars);
            }
            return Some(self.wing);
        }
        // Body, lit from above.
        if in_ellipse(q, BODY_C, self.body_r, 0.0) {
            let shade = 1.0 - 0.18 * (q[1] / self.body_r[1]).clamp(-1.0, 1.0);
            return Some(scale_rgb(self.body, shade));
        }
        // Tail and its tip.
        if in_convex(q, &TAIL) {
            return Some(match spec.tail_tip {
                TailTip::Pale if q[0] <= TAIL_TIP_X => self.tip_pale,
                TailTip::DarkBand if q[0] >= BAND_X[0] && q[0] <= BAND_X[1] => self.band_dark,
                _ => self.tail,
            });
        }
        if LEGS
            .iter()
            .any(|l| near_segment(q, l[0], l[1], LEG_HALF_WIDTH))
        {
            return Some(self.legs);
        }
        None
    }
}

/// Background clutter, in pixels.
enum Clutter {
    Blob {
        c: [f32; 2],
        r: [f32; 2],
        angle: f32,
        colour: Rgbf,
    },
    Stroke {
        a: [f32; 2],
        b: [f32; 2],
        half_width: f32,
        colour: Rgbf,
    },
    Triangle {
        pts: [[f32; 2]; 3],
        colour: Rgbf,
    },
    Ring {
        c: [f32; 2],
        r_in: f32,
        r_out: f32,
        colour: Rgbf,
    },
}

impl Clutter {
    fn colour_at(&self, p: [f32; 2]) -> Option<Rgbf> {
        let hit = match self {
            Clutter::Blob { c, r, angle, .. } => in_ellipse(p, *c, *r, *angle),
            Clutter::Stroke {
                a, b, half_width, ..
            } => near_segment(p, *a, *b, *half_width),
            Clutter::Triangle { pts, .. } => in_convex(p, pts),
            Clutter::Ring { c, r_in, r_out, .. } => {
                let d2 = dist2(p, *c);
                d2 <= r_out * r_out && d2 >= r_in * r_in
            }
        };
        hit.then_some(match self {
            Clutter::Blob { colour, .. }
            | Clutter::Stroke { colour, .. }
            | Clutter::Triangle { colour, .. }
            | Clutter::Ring { colour, .. } => *colour,
        })
    }
}

struct Scene {
    top: Rgbf,
    bottom: Rgbf,
    clutter: Vec<Clutter>,
    bird: Bird,
    brightness: f32,
    contrast: f32,
    gains: Rgbf,
    noise: f32,
}

fn pale<R: Rng>(rng: &mut R) -> Rgbf {
    let v = rng.random_range(0.86..0.97f32);
    hsv(rng.random_range(30.0..60.0), rng.random_range(0.0..0.15), v)
}

impl Scene {
    /// Draw every random quantity of one image; the number and order of draws are fixed for a given class.
    fn draw<R: Rng>(rng: &mut R, spec: ClassSpec, size: f32) -> Scene {
        // Pose.
        let scale = size * rng.random_range(0.40..0.52f32);
        let pose = Pose {
            centre: [
                size * (0.5 + rng.random_range(-0.07..0.07f32)),
                size * (0.5 + rng.random_range(-0.07..0.07f32)),
            ],
            angle: rng.random_range(-PI / 6.0..PI / 6.0),
            scale,
            flip: rng.random_bool(0.5),
        };
        // Bird colours: the body varies freely; parts get the class's levels with small jitter.
        let body = hsv(
            rng.random_range(0.0..360.0),
            rng.random_range(0.15..0.7),
            rng.random_range(0.35..0.8),
        );
        let head = scale_rgb(body, rng.random_range(0.85..1.15));
        let wing = scale_rgb(body, rng.random_range(0.55..0.8));
        let tail = scale_rgb(wing, rng.random_range(0.85..1.05));
        let beak = beak_hue_rgb(
            spec.beak_colour,
            spec.beak_levels,
            rng.random_range(-8.0..8.0),
            rng.random_range(-0.08..0.05),
        );
        let ring = pale(rng);
        let bars = pale(rng);
        let tip_pale = pale(rng);
        let band_dark = hsv(0.0, 0.0, rng.random_range(0.04..0.12));
        let legs = hsv(
            rng.random_range(0.0..40.0),
            0.3,
            rng.random_range(0.15..0.35),
        );
        let body_r = [
            BODY_R[0] * rng.random_range(0.92..1.08),
            BODY_R[1] * rng.random_range(0.9..1.1),
        ];
        let bird = Bird {
            pose,
            spec,
            body_r,
            body,
            head,
            wing,
            tail,
            beak,
            ring,
            bars,
            tip_pale,
            band_dark,
            legs,
        };

        // Background.
        let bg_h = rng.random_range(0.0..360.0f32);
        let bg_s = rng.random_range(0.05..0.5f32);
        let bg_v = rng.random_range(0.3..0.9f32);
        let top = hsv(bg_h, bg_s, (bg_v + 0.12).min(1.0));
        let bottom = hsv(
            bg_h + rng.random_range(-20.0..20.0),
            bg_s,
            (bg_v - 0.12).max(0.0),
        );
        let mut clutter = Vec::new();
        let pos = |rng: &mut R| [rng.random_range(0.0..size), rng.random_range(0.0..size)];
        let any_colour = |rng: &mut R| {
            hsv(
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..0.9),
                rng.random_range(0.1..0.95),
            )
        };
        for _ in 0..rng.random_range(2..6) {
            let c = pos(rng);
            let r = [
                size * rng.random_range(0.05..0.22),
                size * rng.random_range(0.04..0.15),
            ];
            clutter.push(Clutter::Blob {
                c,
                r,
                angle: rng.random_range(0.0..PI),
                colour: any_colour(rng),
            });
        }
        for _ in 0..rng.random_range(1..4) {
            let a = pos(rng);
            let b = pos(rng);
            let colour = hsv(
                rng.random_range(20.0..120.0),
                rng.random_range(0.2..0.7),
                rng.random_range(0.15..0.6),
            );
            clutter.push(Clutter::Stroke {
                a,
                b,
                half_width: size * rng.random_range(0.006..0.025),
                colour,
            });
        }
        // Decoys: loose beak-like triangles in beak hues, pale bars and rings, at the bird's scale, so that
        // colour statistics of the whole image say nothing about the class.
        for _ in 0..rng.random_range(1..4) {
            let c = pos(rng);
            let len = scale * rng.random_range(BEAK_SHORT..BEAK_LONG);
            let half = scale * 0.045;
            let t = rng.random_range(0.0..2.0 * PI);
            let (s, co) = t.sin_cos();
            let pts = [
                [c[0] - s * half, c[1] + co * half],
                [c[0] + s * half, c[1] - co * half],
                [c[0] + co * len, c[1] + s * len],
            ];
            let level = rng.random_range(0..spec.beak_levels);
            let colour = beak_hue_rgb(
                level,
                spec.beak_levels,
                rng.random_range(-8.0..8.0),
                rng.random_range(-0.08..0.05),
            );
            clutter.push(Clutter::Triangle { pts, colour });
        }
        for _ in 0..rng.random_range(0..3) {
            let a = pos(rng);
            let t = rng.random_range(0.0..2.0 * PI);
            let len = scale * rng.random_range(0.1..0.25);
            let b = [a[0] + t.cos() * len, a[1] + t.sin() * len];
            clutter.push(Clutter::Stroke {
                a,
                b,
                half_width: scale * BAR_HALF_WIDTH,
                colour: pale(rng),
            });
        }
        for _ in 0..rng.random_range(0..3) {
            let c = pos(rng);
            clutter.push(Clutter::Ring {
                c,
                r_in: scale * EYE_R,
                r_out: scale * RING_R,
                colour: pale(rng),
            });
        }

        Scene {
            top,
            bottom,
            clutter,
            bird,
            brightness: rng.random_range(0.8..1.2),
            contrast: rng.random_range(0.8..1.2),
            gains: [
                rng.random_range(0.92..1.08),
                rng.random_range(0.92..1.08),
                rng.random_range(0.92..1.08),
            ],
            noise: rng.random_range(0.005..0.03),
        }
    }

    fn colour_at(&self, p: [f32; 2], size: f32) -> Rgbf {
        if let Some(c) = self.bird.colour_at(self.bird.pose.to_canonical(p)) {
            return c;
        }
        for item in self.clutter.iter().rev() {
            if let Some(c) = item.colour_at(p) {
                return c;
            }
        }
        let t = p[1] / size;
        [0, 1, 2].map(|i| self.top[i] * (1.0 - t) + self.bottom[i] * t)
    }

    fn render<R: Rng>(&self, rng: &mut R, size: u32) -> RgbImage {
        const SS: u32 = 2;
        let sizef = size as f32;
        let mut img = RgbImage::new(size, size);
        for y in 0..size {
            for x in 0..size {
                let mut acc = [0.0f32; 3];
                for sy in 0..SS {
                    for sx in 0..SS {
                        let p = [
                            x as f32 + (sx as f32 + 0.5) / SS as f32,
                            y as f32 + (sy as f32 + 0.5) / SS as f32,
                        ];
                        let c = self.colour_at(p, sizef);
                        for i in 0..3 {
                            acc[i] += c[i];
                        }
                    }
                }
                let n = (SS * SS) as f32;
                let px = [0, 1, 2].map(|i| {
                    let v = acc[i] / n;
                    let v = (v - 0.5) * self.contrast + 0.5;
                    let v = v * self.brightness * self.gains[i];
                    let noise =
                        (rng.random::<f32>() + rng.random::<f32>() - 1.0) * self.noise * 1.7;
                    ((v + noise).clamp(0.0, 1.0) * 255.0).round() as u8
                });
                img.put_pixel(x, y, Rgb(px));
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_specs_are_distinct_and_every_part_varies() {
        for classes in [2usize, 3, 10, 37, 144, 200, 500] {
            let specs: Vec<ClassSpec> = (0..classes).map(|c| ClassSpec::of(c, classes)).collect();
            for i in 0..classes {
                for j in 0..i {
                    assert_ne!(
                        specs[i], specs[j],
                        "classes {i} and {j} of {classes} coincide"
                    );
                }
            }
            if classes >= 10 {
                let varies = |f: &dyn Fn(&ClassSpec) -> usize| {
                    specs
                        .iter()
                        .map(f)
                        .collect::<std::collections::HashSet<_>>()
                        .len()
                        > 1
                };
                assert!(varies(&|s| s.beak_colour));
                assert!(varies(&|s| s.long_beak as usize));
                assert!(varies(&|s| s.eye_ring as usize));
                assert!(varies(&|s| s.wing_bars as usize));
                assert!(varies(&|s| s.tail_tip as usize));
            }
        }
    }

    #[test]
    fn pose_roundtrips() {
        for flip in [false, true] {
            let pose = Pose {
                centre: [30.0, 20.0],
                angle: 0.4,
                scale: 25.0,
                flip,
            };
            let p = [0.3, -0.2];
            let q = pose.to_canonical(pose.to_image(p));
            assert!((q[0] - p[0]).abs() < 1e-5 && (q[1] - p[1]).abs() < 1e-5);
        }
        let flipped = Pose {
            centre: [0.0, 0.0],
            angle: 0.0,
            scale: 1.0,
            flip: true,
        };
        assert!(
            flipped.to_image([1.0, 0.0])[0] < 0.0,
            "a flipped bird faces left"
        );
    }

    #[test]
    fn rejects_degenerate_configs() {
        let bad = SyntheticConfig {
            classes: 1,
            ..Default::default()
        };
        assert!(Synthetic::new(bad, Split::Train).is_err());
        let tiny = SyntheticConfig {
            image_size: 8,
            ..Default::default()
        };
        assert!(Synthetic::new(tiny, Split::Train).is_err());
    }
}
