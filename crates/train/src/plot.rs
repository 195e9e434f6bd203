//! Small self-contained SVG line charts of a run's loss, accuracy and learning rate.

use std::fmt::Write;

use crate::metrics::Record;

/// One named line: `(x, y)` points in drawing order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
/// Canvas width and height, and the plot area's left, right, top and bottom margins, in pixels.
const W: f64 = 640.0;
const H: f64 = 400.0;
const L: f64 = 70.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 50.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A tick label with few significant digits.
fn tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// An SVG line chart of `series` with axes, five ticks per axis and a legend. Non-finite points are skipped;
/// with no finite point at all the chart says so.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        W / 2.0,
        escape(title)
    );
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts() {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no data yet</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return svg;
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + y0.abs().max(1e-12) * 0.1;
        y0 -= (y1 - y0).abs();
    }
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    let _ = writeln!(
        svg,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        W - L - R,
        H - T - B
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(xv),
            T,
            H - B,
            H - B + 16.0,
            tick(xv)
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#ddd"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            L,
            py(yv),
            W - R,
            L - 6.0,
            py(yv) + 4.0,
            tick(yv)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        (T + H - B) / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if path.len() == 1 {
            let _ = writeln!(
                svg,
                r#"<circle cx="{}" cy="{}" r="3" fill="{colour}"/>"#,
                path[0].split(',').next().unwrap_or("0"),
                path[0].split(',').nth(1).unwrap_or("0")
            );
        } else if !path.is_empty() {
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"#,
                path.join(" ")
            );
        }
        let ly = T + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="{colour}" stroke-width="3"/><text x="{3}" y="{4}">{5}</text>"#,
            W - R - 150.0,
            ly - 4.0,
            W - R - 130.0,
            W - R - 124.0,
            ly,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The three charts of a run from its records: `(name, svg)` for `loss`, `accuracy` and `lr`.
pub fn run_charts(records: &[Record]) -> Vec<(&'static str, String)> {
    let train: Vec<&Record> = records.iter().filter(|r| r.kind == "train").collect();
    let series = |name: &str, f: &dyn Fn(&Record) -> Option<(f64, f64)>, rs: &[&Record]| Series {
        name: name.into(),
        points: rs.iter().filter_map(|r| f(r)).collect(),
    };
    let loss = series("train loss", &|r| Some((r.step as f64, r.loss?)), &train);
    let mut acc = vec![series(
        "train (running)",
        &|r| Some((r.step as f64, r.train_acc?)),
        &train,
    )];
    let mut splits: Vec<String> = records
        .iter()
        .filter(|r| r.kind == "eval")
        .filter_map(|r| r.split.clone())
        .collect();
    splits.dedup();
    splits.sort();
    splits.dedup();
    for split in splits {
        let evals: Vec<&Record> = records
            .iter()
            .filter(|r| r.kind == "eval" && r.split.as_deref() == Some(&split))
            .collect();
        acc.push(series(
            &format!("{split} top-1"),
            &|r| Some((r.step as f64, r.top1?)),
            &evals,
        ));
    }
    let lr = series("lr", &|r| Some((r.step as f64, r.lr?)), &train);
    vec![
        ("loss", line_chart("Training loss", "step", "loss", &[loss])),
        ("accuracy", line_chart("Accuracy", "step", "accuracy", &acc)),
        (
            "lr",
            line_chart("Learning rate", "step", "learning rate", &[lr]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_maps_points_into_the_plot_area() {
        let s = Series {
            name: "a<b".into(),
            points: vec![(0.0, 1.0), (10.0, 0.0), (f64::NAN, 3.0)],
        };
        let svg = line_chart("t", "x", "y", &[s]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // (0, 1) is the top-left corner of the plot area, (10, 0) the bottom-right.
        assert!(svg.contains(&format!(
            "points=\"{:.1},{:.1} {:.1},{:.1}\"",
            L,
            T,
            W - R,
            H - B
        )));
        assert!(svg.contains("a&lt;b"));
        assert!(line_chart("t", "x", "y", &[]).contains("no data yet"));
    }

    #[test]
    fn run_charts_cover_loss_accuracy_and_lr() {
        let records = vec![
            Record {
                kind: "train".into(),
                step: 1,
                loss: Some(2.0),
                train_acc: Some(0.1),
                lr: Some(0.1),
                ..Default::default()
            },
            Record {
                kind: "eval".into(),
                step: 1,
                split: Some("val".into()),
                top1: Some(0.3),
                ..Default::default()
            },
        ];
        let charts = run_charts(&records);
        let names: Vec<&str> = charts.iter().map(|c| c.0).collect();
        assert_eq!(names, ["loss", "accuracy", "lr"]);
        assert!(charts[1].1.contains("val top-1"));
    }
}
