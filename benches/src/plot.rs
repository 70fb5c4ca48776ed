//! The SVG plot of one or more reports: server and generator CPU per stream against the
//! number of publishers (left), packaging delay p50 and p99 against it (right). Several
//! reports (one per server) share the axes, which is the side-by-side picture.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::Report;

/// Plot size in pixels: two panels side by side.
const SIZE: (u32, u32) = (1200, 480);
/// Headroom above the largest value, so lines never touch the frame.
const HEADROOM: f64 = 1.15;

/// Points of `figure` against the number of publishers, for the steps that measured it.
fn series(
    report: &Report,
    figure: impl Fn(&crate::report::StepReport) -> Option<f64>,
) -> Vec<(f64, f64)> {
    report.steps.iter().filter_map(|s| Some((s.publishers as f64, figure(s)?))).collect()
}

fn top(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max).max(1e-3) * HEADROOM
}

pub(crate) fn plot(reports: &[Report], path: &Path) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let max_n = top(reports.iter().flat_map(|r| r.steps.iter().map(|s| s.publishers as f64)));
    let cpu_ms = |s: &crate::report::StepReport, server: bool| {
        let figures = if server { s.server.as_ref()? } else { &s.generator };
        figures.cpu_per_stream.map(|c| c * 1000.0)
    };
    let cpu: Vec<_> = reports
        .iter()
        .map(|r| (series(r, |s| cpu_ms(s, true)), series(r, |s| cpu_ms(s, false))))
        .collect();
    let delay: Vec<_> = reports
        .iter()
        .map(|r| (series(r, |s| s.packaging_delay.p50_ms), series(r, |s| s.packaging_delay.p99_ms)))
        .collect();
    let max_cpu = top(cpu.iter().flat_map(|(a, b)| a.iter().chain(b).map(|p| p.1)));
    let max_delay = top(delay.iter().flat_map(|(a, b)| a.iter().chain(b).map(|p| p.1)));

    let panels = [
        (
            &left,
            "CPU per stream",
            "CPU ms per media second",
            max_cpu,
            &cpu,
            ["server", "generator"],
        ),
        (&right, "Packaging delay", "ms", max_delay, &delay, ["p50", "p99"]),
    ];
    for (area, caption, y_desc, y_max, lines, names) in panels {
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_n, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc("publishers").y_desc(y_desc).draw().map_err(|e| err(&e))?;
        for (i, (report, (first, second))) in reports.iter().zip(lines.iter()).enumerate() {
            for (j, (points, name)) in
                [(first, names[0]), (second, names[1])].into_iter().enumerate()
            {
                let color = Palette99::pick(i * 2 + j).to_rgba();
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(format!("{} {name}", report.label))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
