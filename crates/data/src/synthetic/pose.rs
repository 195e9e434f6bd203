//! The ground truth of an image: where the bird is ([`Pose`], canonical bird coordinates to pixels) and
//! where its class-defining parts lie in canonical coordinates ([`Part`]).

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
