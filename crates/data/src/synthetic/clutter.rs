//! Background clutter: blobs, branches and decoys (loose beaks, bars and rings), drawn in pixels.

use super::raster::{dist2, in_convex, in_ellipse, near_segment, Rgbf};

/// Background clutter, in pixels.
pub(super) enum Clutter {
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
    /// The clutter's colour at pixel position `p`, or `None` off it.
    pub(super) fn colour_at(&self, p: [f32; 2]) -> Option<Rgbf> {
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
