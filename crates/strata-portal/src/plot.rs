//! The SVG charts of the results page: a forest plot of effects and the
//! cumulative effect over the looks of an experiment.
//!
//! The charts are drawn here, on the server, as inline SVG, so the results
//! page needs no JavaScript and loads nothing from a CDN: the page works with
//! scripts off, behind strict content-security policies and offline.
//!
//! Every chart must be readable without colour and without sight:
//!
//! * each `<svg>` has `role="img"` and an `aria-labelledby` naming its
//!   `<title>` and a `<desc>` that states the figures in words, so a screen
//!   reader reads the same numbers a sighted user sees;
//! * the tone of an effect is also told by the marker's shape (circle:
//!   better, square: worse, diamond: neutral), and the sequential boundary is
//!   dashed, so nothing rests on hue alone.
//!
//! Colours come from the stylesheet, never from inline values, so one place
//! holds the WCAG-AA palette (and a dark theme). The elements carry these
//! classes: `plot`, `plot-forest`, `plot-looks` (the `<svg>`), `axis`,
//! `tick-label`, `grid`, `zero`, `interval`, `band`, `boundary`, `estimate`
//! with `marker` (forest dots) or `line` (the looks line) or `latest` (the
//! dot on the latest look), `tone-better`, `tone-worse`, `tone-neutral`,
//! `row-label`, `x-label`, `no-estimate`, and `plot-empty` (the `<p>` shown
//! when there is nothing to plot). Strokes and fills default to
//! `currentColor` through presentation attributes, which any stylesheet rule
//! overrides, so a chart stays legible even where the stylesheet is missing.
//! Style `.estimate.marker` with `fill` and `.estimate.line` with `stroke`
//! only: the line must keep `fill: none`.
//!
//! Size: each `<svg>` is `width="100%"` with a 480-unit-wide `viewBox` and its
//! height follows from the aspect ratio, so it fits a phone (text about 10 px
//! at 360 px) as well as a 1280 px page; there the stylesheet should cap it,
//! e.g. `.plot { max-width: 44rem }`, so the text does not grow too large.
//!
//! Element IDs (for `aria-labelledby`) are derived from the chart's kind and
//! title, not from global state, so output is deterministic. Two charts of the
//! same kind on one page must therefore have different titles.
//!
//! Numbers: values outside ±1e15 are clamped for drawing (no effect is that
//! large; it keeps every coordinate finite), NaN and ±∞ count as missing, and
//! coordinates carry at most two decimals to keep the markup small.

use std::fmt::Write as _;

use maud::{html, Markup};

/// The minus sign in labels: U+2212, which has the width of "+" and reads
/// better than a hyphen in columns of figures.
const MINUS: char = '\u{2212}';

/// Shown for a missing value: an en dash (U+2013).
const NONE: &str = "\u{2013}";

/// Values beyond this magnitude are clamped for drawing, so scales and
/// coordinates stay finite whatever the input.
const LIMIT: f64 = 1e15;

/// How an interval reads in the metric's direction (colours the mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// The effect is good for the metric (drawn as a circle).
    Better,
    /// The effect is bad for the metric (drawn as a square).
    Worse,
    /// No conclusion either way (drawn as a diamond).
    Neutral,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Better => "tone-better",
            Tone::Worse => "tone-worse",
            Tone::Neutral => "tone-neutral",
        }
    }

    /// The word the text alternative adds after a row's figures; neutral says
    /// nothing, since "no conclusion" is what the interval already shows.
    fn word(self) -> Option<&'static str> {
        match self {
            Tone::Better => Some("better"),
            Tone::Worse => Some("worse"),
            Tone::Neutral => None,
        }
    }
}

/// One row of a forest plot: one treatment's effect on one metric.
#[derive(Debug, Clone)]
pub struct ForestRow<'a> {
    /// The row's label, e.g. "treatment".
    pub label: &'a str,
    /// The effect (absolute or relative); `None` or non-finite: no estimate.
    pub estimate: Option<f64>,
    /// The effect's interval; dropped when either end is not finite.
    pub ci: Option<[f64; 2]>,
    /// How the interval reads in the metric's direction.
    pub tone: Tone,
}

/// One look of an experiment, for the effect-over-looks chart.
#[derive(Debug, Clone)]
pub struct LookPoint {
    /// The look's label, e.g. its date "2026-12-01", shown on the x axis
    /// (thinned when there are many looks).
    pub label: String,
    /// The cumulative effect at this look.
    pub estimate: Option<f64>,
    /// The interval at this look, drawn as a band.
    pub ci: Option<[f64; 2]>,
    /// The sequential boundary in effect units (lower, upper), when known;
    /// each end is used on its own, so a one-sided boundary draws one line.
    pub boundary: Option<[f64; 2]>,
}

/// Formats an effect for labels.
///
/// With `percent`, `v` is a relative lift: 0.021 gives "+2.1%", −0.004 gives
/// "−0.4%" (one decimal, more for tiny lifts so they never round to zero).
/// Otherwise `v` is absolute with three significant digits (whole numbers
/// from 100 on): 0.012345 gives "+0.0123". Negative numbers use the real
/// minus sign U+2212 ("−"), zero has no sign, and `None`, NaN or ±∞ give an
/// en dash "–". Magnitudes below 1e-6 or from 1e9 on use scientific notation
/// ("+1.23e9").
pub fn format_effect(v: Option<f64>, percent: bool) -> String {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return NONE.to_string();
    };
    // Clamping keeps `v * 100` finite for absurd inputs.
    let shown = if percent { v * 100.0 } else { v }.clamp(-f64::MAX, f64::MAX);
    let a = shown.abs();
    let body = if a == 0.0 {
        if percent { "0.0" } else { "0" }.to_string()
    } else if !(1e-6..1e9).contains(&a) {
        format!("{a:.2e}")
    } else {
        let mag = a.log10().floor() as i32;
        let decimals = if percent {
            (-mag).max(1)
        } else {
            (2 - mag).max(0)
        } as usize;
        format!("{a:.decimals$}")
    };
    with_sign(shown, body, percent)
}

/// Puts the sign and unit on a formatted magnitude; a magnitude that shows as
/// zero gets no sign (no "−0.0%").
fn with_sign(v: f64, body: String, percent: bool) -> String {
    let zero = body.chars().all(|c| c == '0' || c == '.');
    let mut s = String::with_capacity(body.len() + 4);
    if !zero {
        s.push(if v < 0.0 { MINUS } else { '+' });
    }
    s.push_str(&body);
    if percent {
        s.push('%');
    }
    s
}

/// Formats a tick label: like [`format_effect`], but with as many decimals as
/// the tick step needs, so neighbouring ticks never print the same text
/// (0.25% steps need two decimals, 1% steps none).
fn format_tick(v: f64, percent: bool, step: f64) -> String {
    let k = if percent { 100.0 } else { 1.0 };
    let step_shown = step * k;
    if !(1e-6..1e9).contains(&step_shown) {
        return format_effect(Some(v), percent);
    }
    let decimals = (0..=12)
        .find(|&d| {
            let s = step_shown * 10f64.powi(d);
            (s - s.round()).abs() < 1e-6 * s.max(1.0)
        })
        .unwrap_or(12) as usize;
    let shown = v * k;
    if shown.abs() < step_shown / 2.0 {
        // Zero is the reference; "0%" reads better than "0.000%".
        return if percent { "0%" } else { "0" }.to_string();
    }
    with_sign(shown, format!("{:.decimals$}", shown.abs()), percent)
}

/// A coordinate for the markup: at most two decimals, no "-0", and never NaN
/// or infinity (those would make the browser drop the element).
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".to_string();
    }
    // An integer divided by 100 is the double nearest to the two-decimal
    // number, whose shortest round-trip form has at most two decimals.
    let r = (v * 100.0).round() / 100.0;
    if r == 0.0 {
        "0".to_string()
    } else {
        format!("{r}")
    }
}

/// A value if it is finite: NaN and ±∞ count as missing.
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// A finite interval, (low, high).
type Interval = (f64, f64);

/// An interval if both ends are finite, ordered low to high.
fn interval(ci: Option<[f64; 2]>) -> Option<Interval> {
    let [a, b] = ci?;
    (a.is_finite() && b.is_finite()).then(|| (a.min(b), a.max(b)))
}

/// A linear axis with "nice" ends and ticks at multiples of `step`, where the
/// step is 1, 2, 2.5 or 5 × 10^k.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scale {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Scale {
    /// A scale covering zero and every finite value, padded by 5% on each side
    /// that holds data (zero alone at an edge needs no room), aiming at
    /// `target` intervals. When every value is zero (or none is finite) the
    /// domain is ±1% (`percent`) or ±1, so the axis never has zero width.
    fn covering(values: impl IntoIterator<Item = f64>, percent: bool, target: usize) -> Scale {
        let (mut min, mut max) = (0.0f64, 0.0f64);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let v = v.clamp(-LIMIT, LIMIT);
            min = min.min(v);
            max = max.max(v);
        }
        let span = max - min;
        if span > 0.0 {
            let pad = span * 0.05;
            if min < 0.0 {
                min -= pad;
            }
            if max > 0.0 {
                max += pad;
            }
        } else {
            let unit = if percent { 0.01 } else { 1.0 };
            (min, max) = (-unit, unit);
        }
        let step = nice_step((max - min) / target.max(1) as f64);
        // The epsilon keeps float noise (−0.02 / 0.01 = −2.0000000000000004)
        // from adding a whole empty step at either end.
        let lo = (min / step + 1e-9).floor() * step;
        let hi = (max / step - 1e-9).ceil() * step;
        Scale { lo, hi, step }
    }

    /// Maps `v` (clamped into the domain) onto `[a, b]`.
    fn map(&self, v: f64, a: f64, b: f64) -> f64 {
        let t = (v.clamp(self.lo, self.hi) - self.lo) / (self.hi - self.lo);
        a + t * (b - a)
    }

    /// The tick values, each an integer multiple of the step (so zero is
    /// exactly one of them).
    fn ticks(&self) -> Vec<f64> {
        let first = (self.lo / self.step).round() as i64;
        let last = (self.hi / self.step).round() as i64;
        // A nice scale has about `target` + 2 ticks; the cap only guards
        // against a pathological step.
        (first..=last.min(first + 50))
            .map(|k| k as f64 * self.step)
            .collect()
    }
}

/// The nice step nearest (on a log scale) to `raw`: 1, 2, 2.5 or 5 × 10^k.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powi(raw.log10().floor() as i32);
    let norm = raw / mag;
    // Thresholds are the geometric means of neighbouring nice numbers.
    let nice = if norm < 2f64.sqrt() {
        1.0
    } else if norm < 5f64.sqrt() {
        2.0
    } else if norm < 12.5f64.sqrt() {
        2.5
    } else if norm < 50f64.sqrt() {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A stable, page-unique ID stem from the chart kind and title: a readable
/// slug plus a hash of the whole title, so titles that differ only in case,
/// punctuation or non-ASCII letters still get different IDs.
fn chart_id(kind: &str, title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    // FNV-1a: tiny, deterministic, no dependency.
    let hash = title.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    if slug.is_empty() {
        format!("plot-{kind}-{hash:08x}")
    } else {
        format!("plot-{kind}-{slug}-{hash:08x}")
    }
}

/// Shortens a label to `max` characters (counted in chars, not bytes, so
/// multi-byte text never splits) with an ellipsis; the text alternative keeps
/// the full label.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// What an interval is called in the text alternative.
fn unit_words(percent: bool) -> &'static str {
    if percent {
        "relative lift"
    } else {
        "absolute difference"
    }
}

/// "+2.1% [+0.5%, +3.7%]", "+2.1% (no interval)" or "no estimate".
fn figures(estimate: Option<f64>, ci: Option<Interval>, percent: bool) -> String {
    let mut s = match estimate {
        Some(_) => format_effect(estimate, percent),
        None => "no estimate".to_string(),
    };
    match ci {
        Some((lo, hi)) => {
            let _ = write!(
                s,
                " [{}, {}]",
                format_effect(Some(lo), percent),
                format_effect(Some(hi), percent)
            );
        }
        None if estimate.is_some() => s.push_str(" (no interval)"),
        None => {}
    }
    s
}

/// The honest empty state: a sentence rather than an empty frame.
fn empty_state(title: &str, what: &str) -> Markup {
    html! {
        p class="plot-empty" { (title) ": " (what) "." }
    }
}

// Forest plot geometry, in viewBox units. The charts are `width="100%"` of a
// 480-unit viewBox: on a 360 px phone 13-unit text still shows at about 10 px,
// and on a wide screen the stylesheet caps the width (see the module doc).
const F_WIDTH: f64 = 480.0;
const F_LABEL_X: f64 = 116.0;
const F_X0: f64 = 124.0;
const F_X1: f64 = 456.0;
const F_TOP: f64 = 8.0;
const F_ROW: f64 = 28.0;
const F_LABEL_CHARS: usize = 16;
const F_TICKS: usize = 5;

/// A forest plot: each row's estimate as a dot with its interval as a bar,
/// around a zero line.
///
/// With `percent`, values are relative lifts (0.021 shows as "+2.1%"), else
/// absolute differences with a sign. A row without a finite estimate shows
/// "no estimate" where its dot would be. No rows give a `<p
/// class="plot-empty">` instead of an empty chart. The title names the chart
/// (`<title>`) and seeds its element IDs, so forest plots on one page need
/// different titles.
pub fn forest(title: &str, rows: &[ForestRow<'_>], percent: bool) -> Markup {
    if rows.is_empty() {
        return empty_state(title, "no effects to plot yet");
    }
    let clean: Vec<(Option<f64>, Option<Interval>)> = rows
        .iter()
        .map(|r| (finite(r.estimate), interval(r.ci)))
        .collect();
    let scale = Scale::covering(
        clean
            .iter()
            .flat_map(|&(e, ci)| [e, ci.map(|c| c.0), ci.map(|c| c.1)])
            .flatten(),
        percent,
        F_TICKS,
    );
    let x = |v: f64| scale.map(v, F_X0, F_X1);

    let id = chart_id("forest", title);
    let (title_id, desc_id) = (format!("{id}-title"), format!("{id}-desc"));
    let mut desc = format!(
        "Forest plot of {} effect{} as {}, with intervals, against zero. ",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        unit_words(percent)
    );
    for (i, (row, &(estimate, ci))) in rows.iter().zip(&clean).enumerate() {
        let sep = if i + 1 == rows.len() { "." } else { "; " };
        // A tone without an estimate would be a verdict without a figure.
        let tone = match (estimate, row.tone.word()) {
            (Some(_), Some(w)) => format!(", {w}"),
            _ => String::new(),
        };
        let _ = write!(
            desc,
            "{}: {}{tone}{sep}",
            row.label,
            figures(estimate, ci, percent)
        );
    }

    let axis_y = F_TOP + rows.len() as f64 * F_ROW + 4.0;
    let height = axis_y + 26.0;
    let zero_x = x(0.0);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="plot plot-forest"
            viewBox={ "0 0 " (num(F_WIDTH)) " " (num(height)) } width="100%"
            role="img" aria-labelledby={ (title_id) " " (desc_id) } font-size="13" {
            title id=(title_id) { (title) }
            desc id=(desc_id) { (desc) }
            g class="axis" {
                line x1=(num(F_X0)) y1=(num(axis_y)) x2=(num(F_X1)) y2=(num(axis_y))
                    stroke="currentColor" {}
                @for t in scale.ticks() {
                    @let tx = num(x(t));
                    line class="grid" x1=(tx) y1=(num(F_TOP)) x2=(tx) y2=(num(axis_y))
                        stroke="currentColor" stroke-opacity="0.12" {}
                    line x1=(tx) y1=(num(axis_y)) x2=(tx) y2=(num(axis_y + 4.0))
                        stroke="currentColor" {}
                    text class="tick-label" x=(tx) y=(num(axis_y + 17.0))
                        text-anchor="middle" font-size="12" {
                        (format_tick(t, percent, scale.step))
                    }
                }
            }
            line class="zero" x1=(num(zero_x)) y1=(num(F_TOP)) x2=(num(zero_x)) y2=(num(axis_y))
                stroke="currentColor" stroke-width="1.5" {}
            @for (i, (row, &(estimate, ci))) in rows.iter().zip(&clean).enumerate() {
                @let cy = F_TOP + (i as f64 + 0.5) * F_ROW;
                g class={ "row " (row.tone.class()) } {
                    text class="row-label" x=(num(F_LABEL_X)) y=(num(cy + 4.5)) text-anchor="end" {
                        (truncate(row.label, F_LABEL_CHARS))
                    }
                    @if let Some((lo, hi)) = ci {
                        line class={ "interval " (row.tone.class()) }
                            x1=(num(x(lo))) y1=(num(cy)) x2=(num(x(hi))) y2=(num(cy))
                            stroke="currentColor" stroke-width="2" {}
                    }
                    @match estimate {
                        Some(v) => (marker(row.tone, x(v), cy)),
                        None => {
                            // Above the bar when there is one, else mid-plot.
                            @let (tx, ty) = match ci {
                                Some((lo, hi)) => ((x(lo) + x(hi)) / 2.0, cy - 5.0),
                                None => ((F_X0 + F_X1) / 2.0, cy + 4.0),
                            };
                            text class="no-estimate" x=(num(tx)) y=(num(ty))
                                text-anchor="middle" font-size="12" font-style="italic" { "no estimate" }
                        }
                    }
                }
            }
        }
    }
}

/// The estimate's marker; its shape repeats the tone so the plot reads
/// without colour: circle (better), square (worse), diamond (neutral).
fn marker(tone: Tone, cx: f64, cy: f64) -> Markup {
    let class = format!("estimate marker {}", tone.class());
    match tone {
        Tone::Better => html! {
            circle class=(class) cx=(num(cx)) cy=(num(cy)) r="5" fill="currentColor" {}
        },
        Tone::Worse => html! {
            rect class=(class) x=(num(cx - 4.5)) y=(num(cy - 4.5)) width="9" height="9"
                fill="currentColor" {}
        },
        Tone::Neutral => {
            let d = format!(
                "M{},{}L{},{}L{},{}L{},{}Z",
                num(cx),
                num(cy - 6.0),
                num(cx + 6.0),
                num(cy),
                num(cx),
                num(cy + 6.0),
                num(cx - 6.0),
                num(cy)
            );
            html! { path class=(class) d=(d) fill="currentColor" {} }
        }
    }
}

// Effect-over-looks geometry, in viewBox units.
const L_WIDTH: f64 = 480.0;
const L_HEIGHT: f64 = 216.0;
const L_X0: f64 = 56.0;
const L_X1: f64 = 432.0;
const L_Y0: f64 = 12.0;
const L_Y1: f64 = 188.0;
const L_LABEL_CHARS: usize = 14;
const L_MAX_LABELS: usize = 8;
const L_TICKS: usize = 5;

/// The cumulative effect over looks: the estimate as a line, its interval as
/// a band, the sequential boundary as dashed lines, and a zero line.
///
/// Looks are spaced evenly in order; the x axis shows at most eight labels
/// (fewer when labels are long), thinned evenly from first to last. The chart
/// stays a handful of elements however many looks there are: one path for the
/// line, one for the band and one per boundary, broken where values are
/// missing. The y axis covers zero, every estimate and interval, and the
/// boundary where it is near them; the far-out boundary of early looks runs
/// off the chart, cut at its edge, rather than flattening the data. No
/// points give a `<p class="plot-empty">` instead of an empty
/// chart. The title seeds the element IDs, so charts of this kind on one page
/// need different titles.
pub fn over_looks(title: &str, points: &[LookPoint], percent: bool) -> Markup {
    if points.is_empty() {
        return empty_state(title, "no looks to plot yet");
    }
    let clean: Vec<CleanLook> = points
        .iter()
        .map(|p| CleanLook {
            estimate: finite(p.estimate),
            ci: interval(p.ci),
            lower: finite(p.boundary.map(|b| b[0])),
            upper: finite(p.boundary.map(|b| b[1])),
        })
        .collect();
    let data: Vec<f64> = clean
        .iter()
        .flat_map(|c| [c.estimate, c.ci.map(|i| i.0), c.ci.map(|i| i.1)])
        .flatten()
        .map(|v| v.clamp(-LIMIT, LIMIT))
        .collect();
    // The boundary widens the axis only within a quarter of the data's span:
    // early-look boundaries are many times wider than the data and would
    // flatten everything else. Beyond that reach the dashed lines are clipped
    // at the plot's edge. Without data, the boundary is all there is to show.
    let (dmin, dmax) = data
        .iter()
        .fold((0.0f64, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let reach = (dmax - dmin) / 4.0;
    let within = |b: &f64| data.is_empty() || (dmin - reach..=dmax + reach).contains(b);
    let bounds: Vec<f64> = clean
        .iter()
        .flat_map(|c| [c.lower, c.upper])
        .flatten()
        .map(|v| v.clamp(-LIMIT, LIMIT))
        .filter(within)
        .collect();
    let scale = Scale::covering(data.iter().chain(&bounds).copied(), percent, L_TICKS);
    let n = points.len();
    let px = |i: usize| {
        if n == 1 {
            (L_X0 + L_X1) / 2.0
        } else {
            L_X0 + i as f64 / (n - 1) as f64 * (L_X1 - L_X0)
        }
    };
    let py = |v: f64| scale.map(v, L_Y1, L_Y0);

    let series = |f: fn(&CleanLook) -> Option<f64>| -> Vec<Option<(f64, f64)>> {
        clean
            .iter()
            .enumerate()
            .map(|(i, c)| f(c).map(|v| (px(i), v.clamp(-LIMIT, LIMIT))))
            .collect()
    };
    let estimate_d = polyline(&series(|c| c.estimate), &scale, py);
    let lower_d = polyline(&series(|c| c.lower), &scale, py);
    let upper_d = polyline(&series(|c| c.upper), &scale, py);
    let band_d = band(
        clean
            .iter()
            .enumerate()
            .map(|(i, c)| c.ci.map(|(lo, hi)| (px(i), py(lo), py(hi)))),
    );
    let latest = clean
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| c.estimate.map(|v| (i, v)));

    // Labels are spaced evenly, so they fit when the gap between two exceeds
    // the widest label (about 6.7 units a character at font size 12).
    let widest = points
        .iter()
        .map(|p| p.label.chars().count().min(L_LABEL_CHARS))
        .max()
        .unwrap_or(1)
        .max(1);
    let fit = 1 + ((L_X1 - L_X0) / (widest as f64 * 6.7 + 14.0)) as usize;
    let labels = label_indices(n, fit.clamp(2, L_MAX_LABELS));

    let id = chart_id("looks", title);
    let (title_id, desc_id) = (format!("{id}-title"), format!("{id}-desc"));
    let desc = looks_desc(points, &clean, latest, percent);

    let zero_y = py(0.0);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="plot plot-looks"
            viewBox={ "0 0 " (num(L_WIDTH)) " " (num(L_HEIGHT)) } width="100%"
            role="img" aria-labelledby={ (title_id) " " (desc_id) } font-size="13" {
            title id=(title_id) { (title) }
            desc id=(desc_id) { (desc) }
            g class="axis" {
                line x1=(num(L_X0)) y1=(num(L_Y1)) x2=(num(L_X1)) y2=(num(L_Y1))
                    stroke="currentColor" {}
                @for t in scale.ticks() {
                    @let ty = num(py(t));
                    line class="grid" x1=(num(L_X0)) y1=(ty) x2=(num(L_X1)) y2=(ty)
                        stroke="currentColor" stroke-opacity="0.12" {}
                    text class="tick-label" x=(num(L_X0 - 6.0)) y=(num(py(t) + 4.0))
                        text-anchor="end" font-size="12" {
                        (format_tick(t, percent, scale.step))
                    }
                }
                @for &i in &labels {
                    @let lx = num(px(i));
                    line x1=(lx) y1=(num(L_Y1)) x2=(lx) y2=(num(L_Y1 + 4.0)) stroke="currentColor" {}
                    text class="x-label" x=(lx) y=(num(L_Y1 + 18.0)) text-anchor="middle" font-size="12" {
                        (truncate(&points[i].label, L_LABEL_CHARS))
                    }
                }
            }
            @if !band_d.is_empty() {
                path class="band" d=(band_d) fill="currentColor" fill-opacity="0.15" stroke="none" {}
            }
            line class="zero" x1=(num(L_X0)) y1=(num(zero_y)) x2=(num(L_X1)) y2=(num(zero_y))
                stroke="currentColor" stroke-width="1.5" {}
            @if !lower_d.is_empty() {
                path class="boundary boundary-lower" d=(lower_d) fill="none" stroke="currentColor"
                    stroke-width="1.5" stroke-dasharray="5 4" {}
            }
            @if !upper_d.is_empty() {
                path class="boundary boundary-upper" d=(upper_d) fill="none" stroke="currentColor"
                    stroke-width="1.5" stroke-dasharray="5 4" {}
            }
            @if !estimate_d.is_empty() {
                // Round caps make a look isolated between gaps show as a dot.
                path class="estimate line" d=(estimate_d) fill="none" stroke="currentColor"
                    stroke-width="2" stroke-linejoin="round" stroke-linecap="round" {}
            }
            @if let Some((i, v)) = latest {
                circle class="estimate latest" cx=(num(px(i))) cy=(num(py(v))) r="3.5"
                    fill="currentColor" {}
            }
        }
    }
}

/// Evenly thinned x-label indices: all of them when they fit, else `max`
/// spread from the first look to the last (rounded to the nearest look).
fn label_indices(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let gaps = max - 1;
    (0..max).map(|k| (k * (n - 1) + gaps / 2) / gaps).collect()
}

/// Path data for a line through `(x, value)` points: the pen lifts at gaps
/// (`None`) and wherever the line leaves the scale's domain, and segments that
/// cross the domain's edge are cut exactly at it, so a line that runs off the
/// chart is drawn up to the edge, never squashed onto it. A point alone
/// between gaps gets a zero-length segment, which round caps draw as a dot (a
/// bare moveto would draw nothing).
fn polyline(points: &[Option<(f64, f64)>], scale: &Scale, y: impl Fn(f64) -> f64) -> String {
    let mut d = String::new();
    // The index of the point the pen rests on after the last segment, if any.
    let mut pen_at: Option<usize> = None;
    for (i, &p) in points.iter().enumerate() {
        let Some((x1, v1)) = p else { continue };
        let prev = i.checked_sub(1).and_then(|j| points[j]);
        let Some((x0, v0)) = prev else {
            let alone = points.get(i + 1).is_none_or(|q| q.is_none());
            if alone && (scale.lo..=scale.hi).contains(&v1) {
                let _ = write!(d, "M{},{}h0", num(x1), num(y(v1)));
            }
            continue;
        };
        let Some((t0, t1)) = clip(v0, v1, scale.lo, scale.hi) else {
            pen_at = None;
            continue;
        };
        // Exact ends at t = 0 and 1 keep joined segments on the same point.
        let at = |t: f64| match t {
            0.0 => (x0, v0),
            1.0 => (x1, v1),
            _ => (x0 + t * (x1 - x0), v0 + t * (v1 - v0)),
        };
        if !(t0 == 0.0 && pen_at == Some(i - 1)) {
            let (sx, sv) = at(t0);
            let _ = write!(d, "M{},{}", num(sx), num(y(sv)));
        }
        let (ex, ev) = at(t1);
        let _ = write!(d, "L{},{}", num(ex), num(y(ev)));
        pen_at = (t1 == 1.0).then_some(i);
    }
    d
}

/// The part `[t0, t1]` of the segment from `v0` to `v1` (t from 0 to 1) that
/// lies within `[lo, hi]`, if any.
fn clip(v0: f64, v1: f64, lo: f64, hi: f64) -> Option<(f64, f64)> {
    if v0 == v1 {
        return (lo..=hi).contains(&v0).then_some((0.0, 1.0));
    }
    let (ta, tb) = ((lo - v0) / (v1 - v0), (hi - v0) / (v1 - v0));
    let (t0, t1) = (ta.min(tb).max(0.0), ta.max(tb).min(1.0));
    (t0 <= t1).then_some((t0, t1))
}

/// Path data for the interval band: one closed shape per run of looks with an
/// interval (upper edge forward, lower edge back). A look alone between gaps
/// gets a narrow bar, since a zero-width shape would not show.
fn band(points: impl Iterator<Item = Option<(f64, f64, f64)>>) -> String {
    let mut d = String::new();
    let mut run: Vec<(f64, f64, f64)> = Vec::new();
    let flush = |run: &mut Vec<(f64, f64, f64)>, d: &mut String| {
        match run.as_slice() {
            [] => {}
            [(x, y_lo, y_hi)] => {
                let _ = write!(
                    d,
                    "M{},{}H{}V{}H{}Z",
                    num(x - 3.0),
                    num(*y_hi),
                    num(x + 3.0),
                    num(*y_lo),
                    num(x - 3.0)
                );
            }
            _ => {
                for (k, (x, _, y_hi)) in run.iter().enumerate() {
                    let cmd = if k == 0 { 'M' } else { 'L' };
                    let _ = write!(d, "{cmd}{},{}", num(*x), num(*y_hi));
                }
                for (x, y_lo, _) in run.iter().rev() {
                    let _ = write!(d, "L{},{}", num(*x), num(*y_lo));
                }
                d.push('Z');
            }
        }
        run.clear();
    };
    for p in points {
        match p {
            Some(p) => run.push(p),
            None => flush(&mut run, &mut d),
        }
    }
    flush(&mut run, &mut d);
    d
}

/// A look with its non-finite values dropped (see [`finite`], [`interval`]).
#[derive(Clone, Copy)]
struct CleanLook {
    estimate: Option<f64>,
    ci: Option<Interval>,
    lower: Option<f64>,
    upper: Option<f64>,
}

/// The text alternative of the looks chart: how many looks, the latest look's
/// figures and boundary, and the last estimate when the latest look has none.
fn looks_desc(
    points: &[LookPoint],
    clean: &[CleanLook],
    latest: Option<(usize, f64)>,
    percent: bool,
) -> String {
    let n = points.len();
    let last = n - 1;
    let CleanLook {
        estimate,
        ci,
        lower,
        upper,
    } = clean[last];
    let mut desc = format!(
        "Cumulative effect as {} over {n} look{}. Latest look ({}): {}.",
        unit_words(percent),
        if n == 1 { "" } else { "s" },
        points[last].label,
        figures(estimate, ci, percent)
    );
    if lower.is_some() || upper.is_some() {
        let _ = write!(
            desc,
            " Sequential boundary there: {} to {}.",
            format_effect(lower, percent),
            format_effect(upper, percent)
        );
    }
    match latest {
        Some((i, _)) if i != last => {
            let CleanLook {
                estimate: e, ci: c, ..
            } = clean[i];
            let _ = write!(
                desc,
                " Last estimate, at look {} ({}): {}.",
                i + 1,
                points[i].label,
                figures(e, c, percent)
            );
        }
        None => desc.push_str(" No look has an estimate yet."),
        _ => {}
    }
    desc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `attr` on the first element whose tag contains `marker`.
    fn attr(svg: &str, marker: &str, attr: &str) -> String {
        let at = svg
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker} in {svg}"));
        let start = svg[..=at].rfind('<').unwrap();
        let end = at + svg[at..].find('>').unwrap();
        let tag = &svg[start..end];
        let key = format!(" {attr}=\"");
        let from = tag
            .find(&key)
            .unwrap_or_else(|| panic!("no {attr} in {tag}"))
            + key.len();
        tag[from..from + tag[from..].find('"').unwrap()].to_string()
    }

    fn coord(svg: &str, marker: &str, name: &str) -> f64 {
        attr(svg, marker, name).parse().unwrap()
    }

    fn row(label: &str, estimate: f64, ci: [f64; 2], tone: Tone) -> ForestRow<'_> {
        ForestRow {
            label,
            estimate: Some(estimate),
            ci: Some(ci),
            tone,
        }
    }

    fn looks(n: usize) -> Vec<LookPoint> {
        (0..n)
            .map(|i| {
                let e = 0.01 + 0.02 * (i as f64 / n as f64);
                let w = 0.05 / (1.0 + i as f64).sqrt();
                LookPoint {
                    label: format!("2026-{:02}-{:02}", 1 + i / 28 % 12, 1 + i % 28),
                    estimate: Some(e),
                    ci: Some([e - w, e + w]),
                    boundary: Some([-2.0 * w, 2.0 * w]),
                }
            })
            .collect()
    }

    #[test]
    fn format_effect_cases() {
        assert_eq!(format_effect(Some(0.021), true), "+2.1%");
        assert_eq!(format_effect(Some(-0.004), true), "\u{2212}0.4%");
        assert_eq!(format_effect(Some(0.012345), false), "+0.0123");
        assert_eq!(format_effect(Some(-1234.6), false), "\u{2212}1235");
        assert_eq!(format_effect(None, true), "\u{2013}");
        assert_eq!(format_effect(Some(f64::NAN), false), "\u{2013}");
        assert_eq!(format_effect(Some(f64::NEG_INFINITY), true), "\u{2013}");
        assert_eq!(format_effect(Some(0.0), true), "0.0%");
        assert_eq!(format_effect(Some(-0.0), false), "0");
        // Tiny lifts keep a significant digit instead of reading as zero.
        assert_eq!(format_effect(Some(0.0004), true), "+0.04%");
        assert_eq!(format_effect(Some(3e9), false), "+3.00e9");
        assert_eq!(format_effect(Some(f64::MAX), true), "+1.80e308%");
    }

    #[test]
    fn tick_labels_are_distinct_at_their_step() {
        assert_eq!(format_tick(0.0025, true, 0.0025), "+0.25%");
        assert_eq!(format_tick(-0.02, true, 0.01), "\u{2212}2%");
        assert_eq!(format_tick(0.0, true, 0.01), "0%");
        assert_eq!(format_tick(7.5, false, 2.5), "+7.5");
        assert_eq!(format_tick(0.3, false, 0.1), "+0.3");
    }

    #[test]
    fn nice_scale_covers_zero_and_values_with_nice_ticks() {
        let s = Scale::covering([-0.013, 0.037], true, 5);
        assert!(s.lo <= -0.013 && s.hi >= 0.037, "{s:?}");
        let m = s.step / 10f64.powi(s.step.log10().floor() as i32);
        assert!(
            [1.0, 2.0, 2.5, 5.0].iter().any(|n| (m - n).abs() < 1e-9),
            "step {} is not nice",
            s.step
        );
        let ticks = s.ticks();
        assert!(ticks.contains(&0.0), "{ticks:?}");
        for t in &ticks {
            let k = t / s.step;
            assert!(
                (k - k.round()).abs() < 1e-9,
                "{t} not a multiple of {}",
                s.step
            );
        }
        assert!((4..=10).contains(&ticks.len()), "{ticks:?}");
        // Worked by hand: padded [-0.0155, 0.0395], step 0.01.
        assert!((s.step - 0.01).abs() < 1e-12);
        assert!((s.lo + 0.02).abs() < 1e-12 && (s.hi - 0.04).abs() < 1e-12);
    }

    #[test]
    fn nice_step_picks_the_nearest_nice_number() {
        let cases = [
            (0.011, 0.01),
            (0.0016, 0.002),
            (0.0023, 0.0025),
            (3.0, 2.5),
            (0.004, 0.005),
            (37.0, 50.0),
            (0.008, 0.01),
        ];
        for (raw, want) in cases {
            let got = nice_step(raw);
            assert!((got - want).abs() < want * 1e-9, "{raw}: {got} != {want}");
        }
        // Over a sweep, every step is nice and within a factor of 1.6 of raw.
        for i in 0..400 {
            let raw = 10f64.powf(-6.0 + i as f64 * 0.03);
            let step = nice_step(raw);
            let m = step / 10f64.powi(step.log10().floor() as i32);
            assert!(
                [1.0, 2.0, 2.5, 5.0, 10.0]
                    .iter()
                    .any(|n| (m - n).abs() < 1e-9),
                "{raw}: {step}"
            );
            assert!(step / raw < 1.6 && raw / step < 1.6, "{raw}: {step}");
        }
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
    }

    #[test]
    fn degenerate_domains_have_width() {
        let cases: [&[f64]; 6] = [
            &[],
            &[0.0],
            &[0.0, 0.0, -0.0],
            &[0.02],
            &[-5.0, -5.0],
            &[f64::NAN, f64::INFINITY],
        ];
        for values in cases {
            for percent in [true, false] {
                let s = Scale::covering(values.iter().copied(), percent, 5);
                assert!(s.hi - s.lo > 0.0, "{values:?}: {s:?}");
                assert!(s.lo <= 0.0 && s.hi >= 0.0, "{values:?}: {s:?}");
                assert!(s.ticks().len() >= 2, "{values:?}: {s:?}");
            }
        }
        let huge = Scale::covering([1e300, -1e300], false, 5);
        assert!(huge.lo.is_finite() && huge.hi.is_finite() && huge.hi > huge.lo);
    }

    #[test]
    fn zero_line_and_dots_sit_where_the_scale_puts_them() {
        let rows = [
            row("a", 0.021, [0.005, 0.037], Tone::Better),
            row("b", -0.004, [-0.013, 0.005], Tone::Worse),
        ];
        let svg = forest("Conversion", &rows, true).into_string();
        // Domain worked by hand (see the scale test): [-0.02, 0.04].
        let at = |v: f64| F_X0 + (v + 0.02) / 0.06 * (F_X1 - F_X0);
        let zero = coord(&svg, "class=\"zero\"", "x1");
        assert!((zero - at(0.0)).abs() <= 0.006, "zero at {zero}");
        assert_eq!(zero, coord(&svg, "class=\"zero\"", "x2"));
        let dot = coord(&svg, "class=\"estimate marker tone-better\"", "cx");
        assert!((dot - at(0.021)).abs() <= 0.006, "dot at {dot}");
        let square = coord(&svg, "class=\"estimate marker tone-worse\"", "x") + 4.5;
        assert!(square < zero && zero < dot);
        assert!((square - at(-0.004)).abs() <= 0.01, "square at {square}");
        // The tick at zero is drawn at the zero line.
        assert!(svg.contains(&format!("x=\"{}\" y=", num(zero))));
    }

    #[test]
    fn markers_differ_by_tone() {
        let rows = [
            row("up", 0.02, [0.01, 0.03], Tone::Better),
            row("down", -0.02, [-0.03, -0.01], Tone::Worse),
            row("flat", 0.0, [-0.01, 0.01], Tone::Neutral),
        ];
        let svg = forest("Tones", &rows, true).into_string();
        assert!(svg.contains("<circle class=\"estimate marker tone-better\""));
        assert!(svg.contains("<rect class=\"estimate marker tone-worse\""));
        assert!(svg.contains("<path class=\"estimate marker tone-neutral\""));
    }

    #[test]
    fn non_finite_values_are_missing_and_never_printed() {
        let rows = [
            ForestRow {
                label: "row one",
                estimate: Some(f64::NAN),
                ci: Some([f64::NEG_INFINITY, 0.1]),
                tone: Tone::Neutral,
            },
            ForestRow {
                label: "row two",
                estimate: Some(f64::INFINITY),
                ci: None,
                tone: Tone::Better,
            },
            row("ok", 0.01, [f64::NAN, 0.02], Tone::Better),
        ];
        let svg = forest("Broken", &rows, false).into_string();
        let lower = svg.to_lowercase();
        assert!(!lower.contains("nan") && !lower.contains("inf"), "{svg}");
        assert_eq!(svg.matches("no estimate").count(), 2 + 2, "{svg}"); // 2 texts + 2 in desc
        assert!(
            !svg.contains("class=\"interval"),
            "no finite interval: {svg}"
        );
        assert!(svg.contains("ok: +0.0100 (no interval)"));

        let points = vec![
            LookPoint {
                label: "1".into(),
                estimate: Some(f64::NAN),
                ci: Some([f64::NAN, f64::INFINITY]),
                boundary: Some([f64::NEG_INFINITY, f64::NAN]),
            },
            LookPoint {
                label: "2".into(),
                estimate: Some(0.01),
                ci: Some([0.0, f64::INFINITY]),
                boundary: None,
            },
            LookPoint {
                label: "3".into(),
                estimate: Some(f64::INFINITY),
                ci: None,
                boundary: Some([-0.002, f64::INFINITY]),
            },
        ];
        let svg = over_looks("Broken looks", &points, true).into_string();
        assert!(
            !svg.contains("NaN") && !svg.to_lowercase().contains("inf"),
            "{svg}"
        );
        assert!(!svg.contains("class=\"band\""));
        assert!(!svg.contains("boundary-upper"));
        assert!(attr(&svg, "boundary-lower", "d").ends_with("h0"), "{svg}");
        assert!(svg.contains("Sequential boundary there: \u{2212}0.2% to \u{2013}."));
        assert!(svg.contains("Latest look (3): no estimate."), "{svg}");
        assert!(svg.contains("at look 2 (2): +1.0% (no interval)"), "{svg}");
    }

    #[test]
    fn labels_and_titles_are_escaped() {
        let rows = [row(
            "<script>alert(1)</script>",
            0.01,
            [0.0, 0.02],
            Tone::Better,
        )];
        let svg = forest("<b>title</b>", &rows, true).into_string();
        assert!(!svg.contains("<script>") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;: +1.0%"));
        let points = [LookPoint {
            label: "<script>".into(),
            estimate: Some(0.01),
            ci: None,
            boundary: None,
        }];
        let svg = over_looks("x", &points, true).into_string();
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn desc_states_every_row() {
        let rows = [
            row("treatment", 0.021, [0.005, 0.037], Tone::Better),
            row("variant b", -0.004, [-0.013, 0.005], Tone::Neutral),
            ForestRow {
                label: "variant c",
                estimate: None,
                ci: None,
                tone: Tone::Better,
            },
        ];
        let svg = forest("Conversion lift", &rows, true).into_string();
        let desc = &svg[svg.find("<desc").unwrap()..svg.find("</desc>").unwrap()];
        assert!(
            desc.contains("treatment: +2.1% [+0.5%, +3.7%], better"),
            "{desc}"
        );
        assert!(
            desc.contains("variant b: \u{2212}0.4% [\u{2212}1.3%, +0.5%]"),
            "{desc}"
        );
        assert!(desc.contains("variant c: no estimate."), "{desc}");
        assert!(desc.contains("3 effects"), "{desc}");
        // The svg is labelled by its title and description.
        let ids = attr(&svg, "<svg", "aria-labelledby");
        let (t, d) = ids.split_once(' ').unwrap();
        assert!(svg.contains(&format!("<title id=\"{t}\">Conversion lift</title>")));
        assert!(svg.contains(&format!("<desc id=\"{d}\">")));
        assert!(attr(&svg, "<svg", "viewBox").starts_with("0 0 480 "));
        assert_eq!(attr(&svg, "<svg", "width"), "100%");
        assert_eq!(attr(&svg, "<svg", "role"), "img");

        let svg = over_looks("Lift over looks", &looks(12), true).into_string();
        let desc = &svg[svg.find("<desc").unwrap()..svg.find("</desc>").unwrap()];
        let last = &looks(12)[11];
        let [lo, hi] = last.ci.unwrap();
        let expect = format!(
            "over 12 looks. Latest look ({}): {} [{}, {}].",
            last.label,
            format_effect(last.estimate, true),
            format_effect(Some(lo), true),
            format_effect(Some(hi), true)
        );
        assert!(desc.contains(&expect), "{desc}");
        assert!(desc.contains("Sequential boundary there:"), "{desc}");
    }

    #[test]
    fn ids_differ_between_titles_and_kinds() {
        let a = chart_id("forest", "Conversion");
        assert_eq!(a, chart_id("forest", "Conversion"));
        assert_ne!(a, chart_id("forest", "conversion"));
        assert_ne!(a, chart_id("looks", "Conversion"));
        assert_ne!(
            chart_id("forest", "Umsatz €"),
            chart_id("forest", "Umsatz £")
        );
        assert!(chart_id("forest", "Revenue / user").starts_with("plot-forest-revenue-user-"));
    }

    #[test]
    fn three_hundred_looks_stay_cheap() {
        let points = looks(300);
        let svg = over_looks("Many looks", &points, true).into_string();
        assert_eq!(svg.matches("<path class=\"estimate line\"").count(), 1);
        assert_eq!(svg.matches("<path class=\"band\"").count(), 1);
        assert_eq!(svg.matches("class=\"boundary ").count(), 2);
        let labels = svg.matches("class=\"x-label\"").count();
        assert!((2..=8).contains(&labels), "{labels} labels");
        assert!(svg.contains(&format!(">{}</text>", points[0].label)));
        assert!(svg.contains(&format!(">{}</text>", points[299].label)));
        assert!(svg.len() < 60_000, "{} bytes", svg.len());
        // Path data carries at most two decimals.
        for part in svg.split(" d=\"").skip(1) {
            let data = &part[..part.find('"').unwrap()];
            for number in data.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
                if let Some((_, frac)) = number.split_once('.') {
                    assert!(frac.len() <= 2, "{number} in {data}");
                }
            }
        }
        // Deterministic.
        assert_eq!(svg, over_looks("Many looks", &points, true).into_string());
    }

    #[test]
    fn gaps_break_the_paths() {
        let mut points = looks(5);
        points[2].estimate = None;
        points[2].ci = None;
        points[4].estimate = Some(f64::NAN);
        let svg = over_looks("Gaps", &points, false).into_string();
        let line = attr(&svg, "class=\"estimate line\"", "d");
        assert_eq!(line.matches('M').count(), 2, "{line}");
        assert!(line.ends_with("h0"), "lone look 4 draws a dot: {line}");
        let band = attr(&svg, "class=\"band\"", "d");
        assert_eq!(band.matches('Z').count(), 2, "{band}");
        // The latest dot marks the last finite estimate (look 4).
        let x = coord(&svg, "class=\"estimate latest\"", "cx");
        assert!((x - (L_X0 + 3.0 / 4.0 * (L_X1 - L_X0))).abs() < 0.01, "{x}");
    }

    #[test]
    fn wide_early_boundaries_are_clipped_not_squashing_the_data() {
        let mut points = looks(20);
        // Early-look boundaries of a group-sequential design are huge.
        points[0].boundary = Some([-1.0, 1.0]);
        points[1].boundary = Some([-0.6, 0.6]);
        let svg = over_looks("Clipped", &points, true).into_string();
        let ticks: Vec<&str> = svg
            .split("class=\"tick-label\"")
            .skip(1)
            .map(|t| &t[t.find('>').unwrap() + 1..t.find('<').unwrap()])
            .collect();
        assert!(
            !ticks.iter().any(|t| t.contains("60") || t.contains("100")),
            "{ticks:?}"
        );
        let upper = attr(&svg, "boundary-upper", "d");
        let ys: Vec<f64> = upper
            .split(['M', 'L'])
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.trim_end_matches("h0")
                    .split(',')
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(ys.iter().all(|&y| (L_Y0..=L_Y1).contains(&y)), "{upper}");
        // The line enters at the top edge of the plot, not from the first look.
        assert!(upper.starts_with('M') && ys[0] == L_Y0, "{upper}");
        assert!(!upper.starts_with(&format!("M{},", num(L_X0))), "{upper}");
    }

    #[test]
    fn clip_cuts_segments_at_the_domain_edge() {
        assert_eq!(clip(0.0, 1.0, 0.0, 2.0), Some((0.0, 1.0)));
        assert_eq!(clip(0.0, 4.0, 0.0, 2.0), Some((0.0, 0.5)));
        assert_eq!(clip(4.0, 0.0, 0.0, 2.0), Some((0.5, 1.0)));
        assert_eq!(clip(3.0, 4.0, 0.0, 2.0), None);
        assert_eq!(clip(3.0, 3.0, 0.0, 2.0), None);
    }

    #[test]
    fn positive_effects_lie_above_zero_over_looks() {
        let points = looks(10);
        let svg = over_looks("Above", &points, true).into_string();
        let zero = coord(&svg, "class=\"zero\"", "y1");
        let latest = coord(&svg, "class=\"estimate latest\"", "cy");
        assert!(latest < zero, "y grows downwards: {latest} vs {zero}");
    }

    #[test]
    fn empty_inputs_give_the_empty_state() {
        let f = forest("Effects", &[], true).into_string();
        assert_eq!(
            f,
            "<p class=\"plot-empty\">Effects: no effects to plot yet.</p>"
        );
        let l = over_looks("Over time", &[], false).into_string();
        assert!(
            l.starts_with("<p class=\"plot-empty\">") && !l.contains("<svg"),
            "{l}"
        );
    }

    #[test]
    fn label_thinning() {
        assert_eq!(label_indices(3, 8), vec![0, 1, 2]);
        let ix = label_indices(300, 8);
        assert_eq!(ix.len(), 8);
        assert_eq!((ix[0], ix[7]), (0, 299));
        assert!(ix.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn coordinates_are_short_and_finite() {
        assert_eq!(num(1.0 / 3.0), "0.33");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(270.666), "270.67");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }
}
