//! A small hand-written SVG chart: grouped bars on a log scale. Self
//! contained (no fonts, scripts or styles from elsewhere) so the README can
//! embed it.

use std::fmt::Write as _;

/// One bar: its series (colour, legend) and value; None draws a cross
/// (the run failed).
pub struct Bar {
    pub series: String,
    pub value: Option<f64>,
}

/// Bars side by side under one label.
pub struct Group {
    pub label: String,
    pub bars: Vec<Bar>,
}

const COLOURS: [&str; 8] = [
    "#7f7f7f", "#1f77b4", "#6baed6", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b",
];
const BAR_W: f64 = 14.0;
const GROUP_GAP: f64 = 18.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 50.0;
const PLOT_H: f64 = 320.0;
const BOTTOM: f64 = 80.0;
const MIN_WIDTH: f64 = 720.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart: decades from below the smallest value to above the largest.
pub fn grouped_bars_log(title: &str, series: &[String], groups: &[Group]) -> String {
    let values = groups
        .iter()
        .flat_map(|g| g.bars.iter().filter_map(|b| b.value))
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (0.0, 1.0)
    };
    let y = |v: f64| TOP + PLOT_H - (v.log10() - lo) / (hi - lo) * PLOT_H;
    let colour = |name: &str| {
        let i = series.iter().position(|s| s == name).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };

    #[expect(clippy::cast_precision_loss, reason = "a handful of bars")]
    let group_w = |g: &Group| g.bars.len() as f64 * BAR_W;
    let plot_w: f64 = groups.iter().map(|g| group_w(g) + GROUP_GAP).sum::<f64>() + GROUP_GAP;
    // Wide enough for the title and the legend too.
    let width = (LEFT + plot_w + 20.0).max(MIN_WIDTH);
    let height = TOP + PLOT_H + BOTTOM;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"##,
        escape(title)
    );

    // Legend on one line under the title.
    let mut lx = LEFT;
    for name in series {
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.0}" y="30" width="10" height="10" fill="{}"/><text x="{:.0}" y="39">{}</text>"#,
            colour(name),
            lx + 14.0,
            escape(name)
        );
        #[expect(clippy::cast_precision_loss, reason = "short names")]
        let step = 24.0 + 6.5 * name.len() as f64;
        lx += step;
    }

    // Decade grid lines and labels.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "decades of MiB/s: small integers"
    )]
    for d in (lo as i32)..=(hi as i32) {
        let v = 10f64.powi(d);
        let yy = y(v);
        let label = if v >= 1.0 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.0}" stroke="#000000"/>"##,
        TOP + PLOT_H
    );

    let mut x = LEFT + GROUP_GAP;
    for g in groups {
        for (i, bar) in g.bars.iter().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "a handful of bars")]
            let bx = x + i as f64 * BAR_W;
            match bar.value {
                Some(v) if v > 0.0 => {
                    let top = y(v);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{bx:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {v:.1}</title></rect>"#,
                        BAR_W - 2.0,
                        TOP + PLOT_H - top,
                        colour(&bar.series),
                        escape(&format!("{} {}", bar.series, g.label)),
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#d62728">×<title>{}: failed</title></text>"##,
                        bx + BAR_W / 2.0 - 1.0,
                        TOP + PLOT_H - 4.0,
                        escape(&format!("{} {}", bar.series, g.label)),
                    );
                }
            }
        }
        let cx = x + group_w(g) / 2.0;
        let ly = TOP + PLOT_H + 14.0;
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-35 {cx:.1} {ly:.1})">{}</text>"#,
            escape(&g.label)
        );
        x += group_w(g) + GROUP_GAP;
    }
    s.push_str("</svg>\n");
    s
}
