//! The colour map of the heatmaps and the drawing primitives of the panels: Turbo, alpha blending, boxes.
//!
//! Turbo (A. Mikhailov, Google, 2019) is a rainbow map corrected for perceptual smoothness: dark blue for
//! nothing, through green and yellow, to dark red for the most. Here it is evaluated with the published
//! degree-5 polynomial fit of its sRGB channels (A. Du's approximation), which darkens its very lowest end
//! to near black.

use image::{Rgb, RgbImage};

/// The Turbo colour of `t` in `[0, 1]` (clamped; NaN maps to 0).
pub fn turbo(t: f32) -> Rgb<u8> {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) } as f64;
    let poly = |c: [f64; 6]| c.iter().rev().fold(0.0, |acc, &k| acc * t + k);
    let r = poly([
        0.135_721_38,
        4.615_392_60,
        -42.660_322_58,
        132.131_082_34,
        -152.942_393_96,
        59.286_379_43,
    ]);
    let g = poly([
        0.091_402_61,
        2.194_188_39,
        4.842_966_58,
        -14.185_033_33,
        4.277_298_57,
        2.829_566_04,
    ]);
    let b = poly([
        0.106_673_30,
        12.641_946_08,
        -60.582_048_36,
        110.362_767_71,
        -89.903_109_12,
        27.348_249_73,
    ]);
    let byte = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    Rgb([byte(r), byte(g), byte(b)])
}

/// `(1 - alpha) * under + alpha * over`, per channel.
pub(crate) fn blend(under: Rgb<u8>, over: Rgb<u8>, alpha: f32) -> Rgb<u8> {
    let mix = |a: u8, b: u8| ((1.0 - alpha) * a as f32 + alpha * b as f32).round() as u8;
    Rgb([
        mix(under[0], over[0]),
        mix(under[1], over[1]),
        mix(under[2], over[2]),
    ])
}

/// Draws the outline of the box `[x0, x1) x [y0, y1)` (pixels) `thickness` pixels wide, inside the box; a
/// box reaching past the image is clipped to it first, so its outline runs along the image's border there.
pub(crate) fn draw_box(
    image: &mut RgbImage,
    [x0, y0, x1, y1]: [i64; 4],
    thickness: i64,
    colour: Rgb<u8>,
) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x0, y0, x1, y1) = (x0.max(0), y0.max(0), x1.min(w), y1.min(h));
    for y in y0..y1 {
        for x in x0..x1 {
            let edge = x < x0 + thickness
                || x >= x1 - thickness
                || y < y0 + thickness
                || y >= y1 - thickness;
            if edge {
                image.put_pixel(x as u32, y as u32, colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turbo_runs_from_dark_blue_through_green_to_dark_red() {
        let low = turbo(0.1);
        let mid = turbo(0.5);
        let high = turbo(1.0);
        assert!(low[2] > low[0] && low[2] > low[1], "{low:?}");
        assert!(mid[1] > mid[0] && mid[1] > mid[2], "{mid:?}");
        assert!(high[0] > high[1] && high[0] > high[2], "{high:?}");
        // Clamped and NaN-safe.
        assert_eq!(turbo(-3.0), turbo(0.0));
        assert_eq!(turbo(7.0), high);
        assert_eq!(turbo(f32::NAN), turbo(0.0));
        // Lightness rises then falls: the ends are darker than the middle.
        let sum = |c: Rgb<u8>| c.0.iter().map(|&v| v as u32).sum::<u32>();
        assert!(sum(turbo(0.0)) < sum(mid) && sum(high) < sum(mid));
    }

    #[test]
    fn blend_and_box_touch_only_what_they_should() {
        assert_eq!(
            blend(Rgb([0, 100, 200]), Rgb([200, 100, 0]), 0.5),
            Rgb([100, 100, 100])
        );
        let mut img = RgbImage::new(6, 6);
        draw_box(&mut img, [1, 1, 5, 4], 1, Rgb([255, 0, 0]));
        let red = |x, y| img.get_pixel(x, y)[0] == 255;
        assert!(red(1, 1) && red(4, 1) && red(1, 3) && red(4, 3));
        assert!(!red(2, 2) && !red(0, 0) && !red(5, 5) && !red(1, 4));
        // A box past the image is clipped, not a panic.
        draw_box(&mut img, [-3, -3, 100, 100], 2, Rgb([0, 255, 0]));
        assert_eq!(img.get_pixel(0, 0)[1], 255);
        assert_eq!(img.get_pixel(3, 3)[1], 0);
    }
}
