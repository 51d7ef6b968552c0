//! The results table as an SVG chart: one group of horizontal bars per
//! workload, one bar per peer row, each bar going from 1.0 to the row's
//! ratio on a logarithmic axis (so 2× and 0.5× are the same length), with
//! the row's target marked when it has a numeric one.
//!
//! Written to `$MMAP_ACTOR_BENCH_CHART`, else `$CARGO_TARGET_DIR/peers.svg`,
//! else `target/peers.svg`. Text is left to the SVG viewer's fonts: the
//! SVG backend needs no font files or C libraries.

use std::path::PathBuf;

use plotters::backend::SVGBackend;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{Met, Row};

/// One bar: a row whose ratio is a single number.
struct Bar {
    id: &'static str,
    /// The workload, with what its ratio means.
    workload: String,
    label: String,
    ratio: f64,
    /// The ratio's number as the table prints it (`"33.4×"` of `"RSS 33.4×"`).
    text: String,
    /// The target's bound, and whether the ratio must be at least it.
    target: Option<(f64, bool)>,
    met: Met,
}

/// The one number written `N×` in `text` (`"1.54×"`, `"RSS 33.4×"`,
/// `"max late 0.02×"`), with its text. `None` for `"–"`, and for texts with
/// two ratios (`"0.04× / 352×"`: which one a bar would show is ambiguous).
fn ratio_text(text: &str) -> Option<(f64, &str)> {
    let mut found = text.match_indices('×').filter_map(|(at, sign)| {
        let digits = text[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_digit() || *c == '.')
            .last()
            .map(|(i, _)| i)?;
        let value = text[digits..at].parse::<f64>().ok()?;
        Some((value, &text[digits..at + sign.len()]))
    });
    let first = found.next()?;
    (found.next().is_none() && first.0.is_finite() && first.0 > 0.0).then_some(first)
}

fn ratio(text: &str) -> Option<f64> {
    ratio_text(text).map(|(value, _)| value)
}

/// A target's bound: `"≥ 1.5×"`, `"O(1) in size (≤ 1.25×)"`.
fn target(text: &str) -> Option<(f64, bool)> {
    let bound = ratio(text)?;
    let at_least = match (text.find('≥'), text.find('≤')) {
        (Some(_), None) => true,
        (None, Some(_)) => false,
        _ => return None,
    };
    Some((bound, at_least))
}

fn bars(rows: &[Row]) -> Vec<Bar> {
    rows.iter()
        .filter_map(|row| {
            let (ratio, text) = ratio_text(&row.ratio)?;
            let peer = if row.peer.is_empty() {
                "(no peer)"
            } else {
                &row.peer
            };
            let mut label = shorten(&plain(peer), 58);
            if row.target != "–" {
                label = format!("{label}  [{}]", shorten(&row.target, 30));
            }
            Some(Bar {
                id: row.id,
                workload: plain(&row.workload),
                label,
                ratio,
                text: text.to_string(),
                target: target(&row.target),
                met: row.met,
            })
        })
        .collect()
}

/// Table text without its Markdown marks.
fn plain(text: &str) -> String {
    text.replace(['`', '*'], "")
}

/// A workload's header: its start, and the parenthesis at its end that
/// says what the ratio is (`(speed-up = ours/peer op/s)`) in full.
fn header(workload: &str) -> String {
    match workload.rfind(" (") {
        Some(at) if workload.ends_with(')') => format!(
            "{}  {}",
            shorten(&workload[..at], 150 - (workload.len() - at).min(100)),
            &workload[at + 1..]
        ),
        _ => shorten(workload, 150),
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{}…", cut.trim_end())
    }
}

/// Where the chart goes.
fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("MMAP_ACTOR_BENCH_CHART") {
        return path.into();
    }
    let dir = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    PathBuf::from(dir).join("peers.svg")
}

/// Writes the chart of `rows`; a failure is reported, never fatal (the
/// table is already printed).
pub(crate) fn write(rows: &[Row]) {
    let bars = bars(rows);
    if bars.is_empty() {
        eprintln!("chart: no row has a numeric ratio; nothing drawn");
        return;
    }
    let path = path();
    let result = render(&bars).and_then(|svg| {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(&path, svg).map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => eprintln!("chart: {}", path.display()),
        Err(err) => eprintln!("chart: could not write {}: {err}", path.display()),
    }
}

// Layout, in pixels.
const WIDTH: u32 = 1280;
const LABELS: u32 = 560;
const ROW: f64 = 26.0;
const HEADER: f64 = 30.0;
const TOP: u32 = 70;
const BOTTOM: u32 = 110;

const GREEN_MET: RGBColor = RGBColor(46, 139, 87);
const RED_MISSED: RGBColor = RGBColor(200, 55, 45);
const GREY_INFO: RGBColor = RGBColor(150, 160, 170);

fn render(bars: &[Bar]) -> Result<String, String> {
    // Vertical positions in "row" units from the top: a header line per
    // workload, then its bars.
    let mut y = 0.0;
    let mut slots = Vec::with_capacity(bars.len());
    let mut headers = Vec::new();
    for (i, bar) in bars.iter().enumerate() {
        let new_id = i == 0 || bars[i - 1].id != bar.id;
        if new_id || bars[i - 1].workload != bar.workload {
            y += HEADER / ROW;
            let id = if new_id { bar.id } else { "" };
            headers.push((id, header(&bar.workload), y - 0.35));
        }
        slots.push(y + 0.5);
        y += 1.0;
    }
    let rows = y;
    let height = TOP + BOTTOM + (rows * ROW).ceil() as u32;

    let (mut lo, mut hi) = (1.0f64, 1.0f64);
    for bar in bars {
        for v in std::iter::once(bar.ratio).chain(bar.target.map(|t| t.0)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    // Room for the value labels beyond the bars' ends.
    let (lo, hi) = (lo / 4.0, hi * 4.0);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let title = ("sans-serif", 22).into_font().style(FontStyle::Bold);
        root.draw(&Text::new(
            "mmap-actor against its peers: ours ÷ peer, per workload",
            (20, 14),
            title,
        ))
        .map_err(|e| e.to_string())?;
        root.draw(&Text::new(
            "Each bar runs from 1 to the row's ratio, on a log scale. Each workload says what its ratio is: a speed-up (right of 1: ours is faster) or a time ratio (left of 1: ours is faster).",
            (20, 44),
            ("sans-serif", 14).into_font().color(&RGBColor(80, 80, 80)),
        ))
        .map_err(|e| e.to_string())?;

        legend(&root, height)?;

        let mut chart = ChartBuilder::on(&root)
            .margin_top(TOP)
            .margin_right(30)
            .margin_bottom(10)
            .y_label_area_size(LABELS)
            .x_label_area_size(BOTTOM - 50)
            .build_cartesian_2d((lo..hi).log_scale(), rows..0.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(12)
            .x_label_formatter(&|v| fmt_ratio(*v))
            .x_label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|e| e.to_string())?;

        // Group separators and headers, left of the plot.
        let left = chart.backend_coord(&(lo, 0.0)).0;
        let right = chart.backend_coord(&(hi, 0.0)).0;
        for (id, text, at) in &headers {
            let at = *at;
            let (_, py) = chart.backend_coord(&(lo, at));
            let y_line = py - 12;
            root.draw(&PathElement::new(
                vec![(10, y_line), (right, y_line)],
                RGBColor(190, 190, 190),
            ))
            .map_err(|e| e.to_string())?;
            root.draw(&Text::new(
                *id,
                (14, py - 4),
                ("sans-serif", 16).into_font().style(FontStyle::Bold),
            ))
            .map_err(|e| e.to_string())?;
            root.draw(&Text::new(
                text.clone(),
                (52, py - 2),
                ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(|e| e.to_string())?;
        }

        let label_style = TextStyle::from(("sans-serif", 13).into_font())
            .pos(Pos::new(HPos::Right, VPos::Center))
            .color(&RGBColor(30, 30, 30));
        for (bar, &at) in bars.iter().zip(&slots) {
            let color = match bar.met {
                Met::Yes => GREEN_MET,
                Met::No => RED_MISSED,
                Met::Info => GREY_INFO,
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(1.0, at - 0.36), (bar.ratio, at + 0.36)],
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
            let (px, py) = chart.backend_coord(&(bar.ratio, at));
            root.draw(&Text::new(
                bar.label.clone(),
                (left - 10, py),
                label_style.clone(),
            ))
            .map_err(|e| e.to_string())?;
            // The value beyond the bar's outer end, and beyond the target
            // marker when that is on the same side.
            let outward = bar.ratio >= 1.0;
            let mut end = px;
            if let Some((bound, _)) = bar.target {
                let marker = chart.backend_coord(&(bound, at)).0;
                if (outward && marker >= px) || (!outward && marker <= px) {
                    end = marker;
                }
            }
            let (x, anchor) = if outward {
                (end + 6, HPos::Left)
            } else {
                (end - 6, HPos::Right)
            };
            let value_style =
                TextStyle::from(("sans-serif", 13).into_font().style(FontStyle::Bold))
                    .pos(Pos::new(anchor, VPos::Center))
                    .color(&color);
            root.draw(&Text::new(bar.text.clone(), (x, py), value_style))
                .map_err(|e| e.to_string())?;
            if let Some((bound, _)) = bar.target {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(bound, at - 0.48), (bound, at + 0.48)],
                        BLACK.stroke_width(3),
                    )))
                    .map_err(|e| e.to_string())?;
            }
        }

        // The line at 1.0, over the bars.
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(1.0, 0.0), (1.0, rows)],
                BLACK.stroke_width(1),
            )))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// What the colours and the marker mean, bottom left.
fn legend<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, height: u32) -> Result<(), String> {
    let y = height as i32 - 22;
    let mut x = 20;
    let font = ("sans-serif", 14).into_font();
    for (color, what) in [
        (GREEN_MET, "target met"),
        (RED_MISSED, "target missed"),
        (GREY_INFO, "reference row (no target)"),
    ] {
        root.draw(&Rectangle::new(
            [(x, y - 7), (x + 14, y + 7)],
            color.filled(),
        ))
        .map_err(|e| e.to_string())?;
        root.draw(&Text::new(what, (x + 20, y - 8), font.clone()))
            .map_err(|e| e.to_string())?;
        x += 40 + 8 * what.len() as i32;
    }
    root.draw(&PathElement::new(
        vec![(x + 7, y - 10), (x + 7, y + 10)],
        BLACK.stroke_width(3),
    ))
    .map_err(|e| e.to_string())?;
    root.draw(&Text::new(
        "the row's target ([≥ N×]: at least, [≤ N×]: at most)",
        (x + 20, y - 8),
        font,
    ))
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn fmt_ratio(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}×")
    } else if v >= 1.0 {
        format!("{v:.1}×")
    } else if v >= 0.1 {
        format!("{v:.2}×")
    } else {
        format!("{v:.3}×")
    }
}
