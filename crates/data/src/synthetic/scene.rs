//! One image's scene: every random draw (pose, colours, background, clutter, colour jitter, noise) in a fixed
//! order, and its rendering with 2x2 supersampling.

use std::f32::consts::PI;

use image::{Rgb, RgbImage};
use rand::Rng;

use super::bird::{Bird, BAR_HALF_WIDTH, BEAK_LONG, BEAK_SHORT, BODY_R, EYE_R, RING_R};
use super::classes::{beak_hue_rgb, ClassSpec};
use super::clutter::Clutter;
use super::pose::Pose;
use super::raster::{hsv, scale_rgb, Rgbf};

/// Everything drawn for one image, before rendering.
pub(super) struct Scene {
    top: Rgbf,
    bottom: Rgbf,
    clutter: Vec<Clutter>,
    pub(super) bird: Bird,
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
    pub(super) fn draw<R: Rng>(rng: &mut R, spec: ClassSpec, size: f32) -> Scene {
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

    /// The `size` x `size` image, each pixel the mean of 2x2 samples, jittered and with noise from `rng`.
    pub(super) fn render<R: Rng>(&self, rng: &mut R, size: u32) -> RgbImage {
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
