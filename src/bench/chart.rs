//! `--svg`: the modes as bars (median wall time) with min–max whiskers, and
//! the first compared client's median beside each. Drawn with plotters.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::Report;

pub fn write_svg(report: &Report, path: &Path) -> Result<(), String> {
    let modes = &report.modes;
    if modes.is_empty() {
        return Err("nothing was measured".into());
    }
    let top = modes
        .iter()
        .map(|m| {
            m.max_seconds
                .max(other(m).map_or(0.0, |c| c.median_seconds))
        })
        .fold(0.0f64, f64::max)
        * 1.15
        + 0.1;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = axes(&root, report, top).map_err(|e| fail(&e))?;
    let compared = modes.iter().any(|m| other(m).is_some());
    let other_name = modes
        .iter()
        .find_map(other)
        .map(|c| c.tool.clone())
        .unwrap_or_default();
    let strata_color = RGBColor(52, 101, 164);
    let buildctl_color = RGBColor(204, 121, 38);
    chart
        .draw_series(modes.iter().enumerate().map(|(i, m)| {
            let (left, right) = if compared { (-0.4, 0.0) } else { (-0.3, 0.3) };
            bar(i, left, right, m.median_seconds, strata_color)
        }))
        .map_err(|e| fail(&e))?
        .label("strata")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], strata_color.filled()));
    chart
        .draw_series(modes.iter().enumerate().map(|(i, m)| {
            let x = if compared { -0.2 } else { 0.0 };
            ErrorBar::new_vertical(
                i as f64 + x,
                m.min_seconds,
                m.median_seconds,
                m.max_seconds,
                BLACK.stroke_width(2),
                8,
            )
        }))
        .map_err(|e| fail(&e))?;
    if compared {
        chart
            .draw_series(modes.iter().enumerate().filter_map(|(i, m)| {
                other(m).map(|c| bar(i, 0.0, 0.4, c.median_seconds, buildctl_color))
            }))
            .map_err(|e| fail(&e))?
            .label(other_name)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], buildctl_color.filled())
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

type Chart<'a> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The caption, the seconds axis and a label per mode.
fn axes<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    report: &'a Report,
    top: f64,
) -> Result<Chart<'a>, DrawingAreaErrorKind<std::io::Error>> {
    let modes = &report.modes;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "strata bench: {} (median wall time, min-max whiskers)",
                report.image
            ),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(modes.len() as f64 - 0.5), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("seconds")
        .x_labels(modes.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                modes
                    .get(i as usize)
                    .map(|m| m.mode.name().to_owned())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()?;
    Ok(chart)
}

/// The first client compared, if any.
fn other(m: &super::report::ModeSummary) -> Option<&super::report::Compared> {
    m.compared.first()
}

/// A bar over mode `i`, from `left` to `right` around its label.
fn bar(i: usize, left: f64, right: f64, height: f64, color: RGBColor) -> Rectangle<(f64, f64)> {
    let x = i as f64;
    Rectangle::new(
        [(x + left, 0.0), (x + right, height)],
        color.mix(0.85).filled(),
    )
}
