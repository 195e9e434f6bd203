//! Geometry and colour helpers of the renderer: HSV colours, and point-in-shape tests (ellipse, segment,
//! convex polygon) that the bird and the clutter are drawn with.

/// A linear RGB colour in `[0, 1]`.
pub(super) type Rgbf = [f32; 3];

/// The RGB colour of hue `h` (degrees), saturation `s` and value `v`.
pub(super) fn hsv(h: f32, s: f32, v: f32) -> Rgbf {
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

/// `c` scaled by `f`, clipped at 1.
pub(super) fn scale_rgb(c: Rgbf, f: f32) -> Rgbf {
    [
        (c[0] * f).min(1.0),
        (c[1] * f).min(1.0),
        (c[2] * f).min(1.0),
    ]
}

/// Point `p` in the ellipse of centre `c`, radii `r`, rotated by `angle`.
pub(super) fn in_ellipse(p: [f32; 2], c: [f32; 2], r: [f32; 2], angle: f32) -> bool {
    let (s, co) = angle.sin_cos();
    let dx = p[0] - c[0];
    let dy = p[1] - c[1];
    let u = (co * dx + s * dy) / r[0];
    let v = (-s * dx + co * dy) / r[1];
    u * u + v * v <= 1.0
}

/// Squared distance.
pub(super) fn dist2(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

/// Point `p` within `half_width` of the segment `a`-`b`.
pub(super) fn near_segment(p: [f32; 2], a: [f32; 2], b: [f32; 2], half_width: f32) -> bool {
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
pub(super) fn in_convex(p: [f32; 2], poly: &[[f32; 2]]) -> bool {
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
