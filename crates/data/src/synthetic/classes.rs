//! The classes: each is one combination of part levels (beak hue and length, eye ring, wing bars, tail tip),
//! spread over all combinations so that any class count works and every part varies.

use serde::{Deserialize, Serialize};

use super::raster::hsv;

/// Number of beak-colour levels.
pub(super) fn beak_levels(classes: usize) -> usize {
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

/// The beak colour of hue `level` out of `levels`, jittered per image.
pub(super) fn beak_hue_rgb(
    level: usize,
    levels: usize,
    hue_jitter: f32,
    value_jitter: f32,
) -> [f32; 3] {
    let hue = 45.0 + 360.0 * level as f32 / levels as f32 + hue_jitter;
    hsv(hue, 0.85, (0.9 + value_jitter).clamp(0.0, 1.0))
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
}
