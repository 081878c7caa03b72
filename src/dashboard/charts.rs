//! Small server-rendered SVG line charts (no JavaScript charting library).

use crate::store::outcome_counts::LATENCY_BOUNDS_MS;
use maud::{html, Markup};

const W: f64 = 600.0;
const H: f64 = 140.0;
const PAD: f64 = 28.0;

/// A chart of one or two series over the same x values (seconds ago, oldest first).
pub fn line_chart(label: &str, unit: &str, xs: &[f64], first: &[f64], second: Option<(&str, &[f64])>) -> Markup {
    let max_y = first.iter().chain(second.map(|s| s.1).unwrap_or(&[])).fold(0.0_f64, |a, b| a.max(*b)).max(1.0);
    let (min_x, max_x) = (xs.first().copied().unwrap_or(0.0), xs.last().copied().unwrap_or(1.0));
    let span_x = (max_x - min_x).max(1.0);
    let points = |ys: &[f64]| -> String {
        xs.iter()
            .zip(ys)
            .map(|(x, y)| {
                let px = PAD + (x - min_x) / span_x * (W - PAD - 4.0);
                let py = H - 16.0 - y / max_y * (H - 28.0);
                format!("{px:.1},{py:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        figure {
            figcaption { (label) " " span.muted { "(max " (format_num(max_y)) " " (unit) @if let Some((name, _)) = second { "; orange: " (name) } ")" } }
            svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) {
                line.axis x1=(PAD) y1=(H - 16.0) x2=(W) y2=(H - 16.0) {}
                text x="0" y="12" { (format_num(max_y)) }
                text x="0" y=(H - 18.0) { "0" }
                text x=(PAD) y=(H - 2.0) { "-" (format_num((max_x - min_x) / 60.0)) " min" }
                text x=(W - 24.0) y=(H - 2.0) { "now" }
                @if xs.len() > 1 {
                    polyline.line points=(points(first)) {}
                    @if let Some((_, ys)) = second { polyline.line.second points=(points(ys)) {} }
                } @else {
                    text x=(W / 2.0 - 40.0) y=(H / 2.0) { "no data yet" }
                }
            }
        }
    }
}

fn format_num(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The latency (ms) at quantile `q` of counts per slot of [`LATENCY_BOUNDS_MS`] (the slot's
/// upper bound; the open last slot counts as twice the last bound).
pub fn quantile_ms(slots: &[i64], q: f64) -> f64 {
    let total: i64 = slots.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let want = (q * total as f64).ceil() as i64;
    let mut seen = 0;
    for (i, n) in slots.iter().enumerate() {
        seen += n;
        if seen >= want {
            return LATENCY_BOUNDS_MS.get(i).map_or(2.0 * 10_000.0, |b| *b as f64);
        }
    }
    2.0 * 10_000.0
}

#[cfg(test)]
mod tests {
    use super::quantile_ms;

    #[test]
    fn a_quantile_is_the_upper_bound_of_the_slot_it_falls_in() {
        // 10 under 5 ms, 80 under 50 ms, 10 under 1 s.
        let slots = [10, 0, 0, 80, 0, 0, 0, 10, 0, 0, 0, 0];
        assert_eq!(quantile_ms(&slots, 0.05), 5.0);
        assert_eq!(quantile_ms(&slots, 0.5), 50.0);
        assert_eq!(quantile_ms(&slots, 0.95), 1000.0);
        assert_eq!(quantile_ms(&[0; 12], 0.5), 0.0);
    }
}
