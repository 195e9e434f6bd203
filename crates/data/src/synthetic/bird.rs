//! The bird every class shares: its canonical geometry (body, head, eye, wing, beak, tail, legs) and its
//! colour at a canonical point, where the class's part levels show.

use super::classes::{ClassSpec, TailTip};
use super::pose::Pose;
use super::raster::{dist2, in_convex, in_ellipse, near_segment, scale_rgb, Rgbf};

/// Canonical geometry shared by all classes (before the per-image aspect jitter of the body).
const BODY_C: [f32; 2] = [0.0, 0.0];
pub(super) const BODY_R: [f32; 2] = [0.40, 0.22];
const HEAD_C: [f32; 2] = [0.42, -0.16];
const HEAD_R: f32 = 0.15;
const EYE_C: [f32; 2] = [0.47, -0.19];
pub(super) const EYE_R: f32 = 0.035;
pub(super) const RING_R: f32 = 0.072;
const WING_C: [f32; 2] = [-0.06, -0.04];
const WING_R: [f32; 2] = [0.28, 0.12];
const WING_ANGLE: f32 = -0.12;
pub(super) const BAR_HALF_WIDTH: f32 = 0.024;
const BEAK_BASE_X: f32 = 0.53;
const BEAK_Y: [f32; 2] = [-0.205, -0.115];
pub(super) const BEAK_SHORT: f32 = 0.12;
pub(super) const BEAK_LONG: f32 = 0.25;
const TAIL: [[f32; 2]; 4] = [[-0.30, -0.07], [-0.72, -0.14], [-0.72, 0.14], [-0.30, 0.07]];
const TAIL_TIP_X: f32 = -0.60;
const BAND_X: [f32; 2] = [-0.66, -0.58];
const LEGS: [[[f32; 2]; 2]; 2] = [[[0.0, 0.18], [-0.02, 0.36]], [[0.10, 0.17], [0.11, 0.35]]];
const LEG_HALF_WIDTH: f32 = 0.014;

/// One image's bird: its pose, its class's part levels, its body proportions and the colour of each part.
pub(super) struct Bird {
    pub(super) pose: Pose,
    pub(super) spec: ClassSpec,
    pub(super) body_r: [f32; 2],
    pub(super) body: Rgbf,
    pub(super) head: Rgbf,
    pub(super) wing: Rgbf,
    pub(super) tail: Rgbf,
    pub(super) beak: Rgbf,
    pub(super) ring: Rgbf,
    pub(super) bars: Rgbf,
    pub(super) tip_pale: Rgbf,
    pub(super) band_dark: Rgbf,
    pub(super) legs: Rgbf,
}

impl Bird {
    /// The colour at canonical point `q`, topmost layer first, or `None` off the bird.
    pub(super) fn colour_at(&self, q: [f32; 2]) -> Option<Rgbf> {
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
