//! The bench's closing summary: every figure with its ratio to the raw pipeline. The machine
//! is shared and noisy, so (a) to (c) run in rounds, each sluice run is rated against the raw
//! run of its own round, and what is printed is the median ratio with its range.

use super::http::SluiceFigures;
use super::machine::MachineUsage;
use super::raw::RawFigures;

/// One round: the raw pipeline, then sluice's configurations, each run once.
pub struct Round<'a> {
    pub raw: Option<RawFigures>,
    pub runs: Vec<(&'a str, SluiceFigures)>,
}

/// The median of every raw figure over the rounds.
pub fn median_raw(rounds: &[Round]) -> Option<RawFigures> {
    let all: Vec<RawFigures> = rounds.iter().filter_map(|r| r.raw.clone()).collect();
    (!all.is_empty()).then(|| RawFigures::median(all))
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Prints the summary of `rounds`, then of the runs made `once` (rated against `raw`).
pub fn print(rounds: &[Round], raw: Option<&RawFigures>, once: &[(&str, SluiceFigures)]) {
    println!(
        "\nsummary, {} round(s) (end to end = 202 → committed; each ratio is against its own round's raw run: median [lowest–highest]):",
        rounds.len()
    );
    if let Some(raw) = raw {
        let (lo, hi) =
            range(&rounds.iter().filter_map(|r| r.raw.as_ref().map(|r| r.pipeline_rate)).collect::<Vec<_>>());
        println!(
            "  (a) raw pipeline, both at once        {:>8.0} msg/s  100%   (median; {lo:.0}–{hi:.0}; publish alone {:.0}/s)",
            raw.pipeline_rate, raw.publish_rate
        );
        paused(&rounds.iter().map(|r| r.raw.as_ref().and_then(|r| r.machine)).collect::<Vec<_>>());
    }
    // Every round runs the same configurations in the same order.
    let first = rounds.first().map_or(&[][..], |r| &r.runs[..]);
    let mut best: Option<(f64, String)> = None;
    for (i, (tag, sample)) in first.iter().enumerate() {
        let name = sample.load.describe();
        let runs: Vec<(&SluiceFigures, Option<&RawFigures>)> =
            rounds.iter().filter_map(|r| r.runs.get(i).map(|(_, f)| (f, r.raw.as_ref()))).collect();
        let ratios: Vec<f64> =
            runs.iter().filter_map(|(f, raw)| raw.map(|raw| 100.0 * f.e2e_rate / raw.pipeline_rate)).collect();
        let rate = median(runs.iter().map(|(f, _)| f.e2e_rate).collect());
        let p99 = median(runs.iter().map(|(f, _)| f.ingest.p99).collect());
        let rss = runs.iter().map(|(f, _)| f.peak_rss_mib).fold(0.0, f64::max);
        let ratio = if ratios.is_empty() {
            String::new()
        } else {
            let (lo, hi) = range(&ratios);
            format!("{:>4.0}% [{lo:.0}–{hi:.0}%]", median(ratios.clone()))
        };
        line(tag, &name, rate, &ratio, p99, rss);
        paused(&runs.iter().map(|(f, _)| f.machine).collect::<Vec<_>>());
        if *tag == "(b)" {
            let score = if ratios.is_empty() { rate } else { median(ratios) };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, name));
            }
        }
    }
    for (tag, r) in once {
        // Draining a backlog is compared with the raw consumer alone, not with both at once.
        let limit = |raw: &RawFigures| if r.load.prefill > 0 { raw.drain_rate } else { raw.pipeline_rate };
        let ratio = raw.map_or(String::new(), |raw| format!("{:>4.0}%", 100.0 * r.e2e_rate / limit(raw)));
        line(tag, &r.load.describe(), r.e2e_rate, &ratio, r.ingest.p99, r.peak_rss_mib);
        paused(&[r.machine]);
    }
    let singles = first.iter().filter(|(tag, _)| *tag == "(b)").count();
    if let (Some((_, name)), true) = (best, singles > 1) {
        println!("  (b) at saturation: {name}");
    }
}

/// Names the runs of a configuration that the host paused (see `machine`).
fn paused(usage: &[Option<MachineUsage>]) {
    let hit: Vec<String> =
        usage.iter().flatten().filter(|m| m.disturbed()).map(|m| format!("{:.0}%", 100.0 * m.lost)).collect();
    if !hit.is_empty() {
        println!(
            "        {} of {} run(s) lost {} of their time to host pauses",
            hit.len(),
            usage.len(),
            hit.join(", ")
        );
    }
}

/// One configuration's line of the summary.
fn line(tag: &str, name: &str, rate: f64, ratio: &str, p99: f64, rss: f64) {
    println!("  {tag} {name:<32} {rate:>8.0} cmd/s  {ratio}   ingest p99 {p99:.1} ms, peak RSS {rss:.0} MiB");
}
