//! SVG figures of the reports (plotters' SVG backend, rendered to a string so that the
//! output is byte-deterministic): line plots with a min-max band, and log-log scatter plots
//! with a fitted line.

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One series of a band plot: a middle line (e.g. the median over seeds) and a shaded band
/// between `lo` and `hi` (e.g. the minimum and maximum over seeds).
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    /// Legend label.
    pub label: String,
    /// The abscissae, increasing.
    pub x: Vec<f64>,
    /// The middle line.
    pub mid: Vec<f64>,
    /// The lower edge of the band.
    pub lo: Vec<f64>,
    /// The upper edge of the band.
    pub hi: Vec<f64>,
}

/// An axis: its label and whether it is logarithmic.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The label.
    pub label: String,
    /// Logarithmic scale (non-positive values are dropped).
    pub log: bool,
}

impl Axis {
    /// A linear axis.
    pub fn linear(label: &str) -> Self {
        Axis {
            label: label.into(),
            log: false,
        }
    }

    /// A logarithmic axis.
    pub fn log(label: &str) -> Self {
        Axis {
            label: label.into(),
            log: true,
        }
    }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::numerical("plot", e.to_string())
}

fn range(values: impl Iterator<Item = f64>, log: bool) -> Result<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return Err(Error::invalid("plot", "no finite values to plot"));
    }
    if log {
        if hi <= lo {
            return Ok((lo / 2.0, hi * 2.0));
        }
        let pad = (hi / lo).powf(0.05);
        Ok((lo / pad, hi * pad))
    } else {
        if hi <= lo {
            return Ok((lo - 1.0, hi + 1.0));
        }
        let pad = 0.05 * (hi - lo);
        Ok((lo - pad, hi + pad))
    }
}

fn keep(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// A short tick label: `0`, plain decimals with at most three digits after the point for
/// magnitudes in `[1e-2, 1e4)`, otherwise `1e5` or `2.5e-7` (mantissa trailing zeros dropped,
/// so the float noise of log-axis ticks such as `0.0999999999998` prints as `1e-1`).
pub fn tick_label(v: &f64) -> String {
    let v = *v;
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if (1e-2..1e4).contains(&a) {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        return s.to_string();
    }
    let s = format!("{v:.2e}");
    match s.split_once('e') {
        Some((mant, exp)) => {
            let mant = mant.trim_end_matches('0').trim_end_matches('.');
            format!("{mant}e{exp}")
        }
        None => s,
    }
}

/// Draws into a chart built on any of the four linear/log coordinate combinations: the
/// mesh (labelled by the axes), then `$body` (the series), then the legend.
macro_rules! with_chart {
    (@framed $chart:ident, $xa:expr, $ya:expr, $body:block) => {{
        $chart
            .configure_mesh()
            .x_label_formatter(&tick_label)
            .y_label_formatter(&tick_label)
            .x_desc($xa.label.as_str())
            .y_desc($ya.label.as_str())
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_err)?;
        $body
        $chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
    }};
    ($root:expr, $title:expr, $xa:expr, $ya:expr, $xr:expr, $yr:expr, |$chart:ident| $body:block) => {{
        let mut builder = ChartBuilder::on(&$root);
        builder
            .caption($title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64);
        match ($xa.log, $ya.log) {
            (false, false) => {
                let mut $chart = builder
                    .build_cartesian_2d($xr.0..$xr.1, $yr.0..$yr.1)
                    .map_err(plot_err)?;
                with_chart!(@framed $chart, $xa, $ya, $body)
            }
            (true, false) => {
                let mut $chart = builder
                    .build_cartesian_2d(($xr.0..$xr.1).log_scale(), $yr.0..$yr.1)
                    .map_err(plot_err)?;
                with_chart!(@framed $chart, $xa, $ya, $body)
            }
            (false, true) => {
                let mut $chart = builder
                    .build_cartesian_2d($xr.0..$xr.1, ($yr.0..$yr.1).log_scale())
                    .map_err(plot_err)?;
                with_chart!(@framed $chart, $xa, $ya, $body)
            }
            (true, true) => {
                let mut $chart = builder
                    .build_cartesian_2d(($xr.0..$xr.1).log_scale(), ($yr.0..$yr.1).log_scale())
                    .map_err(plot_err)?;
                with_chart!(@framed $chart, $xa, $ya, $body)
            }
        }
    }};
}

/// Renders one figure to an SVG string: a white 720 x 440 canvas that `draw` paints on.
fn render_svg(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// A line plot of each band's middle line over its shaded `[lo, hi]` band.
pub fn band_plot(title: &str, x_axis: &Axis, y_axis: &Axis, bands: &[Band]) -> Result<String> {
    for b in bands {
        if b.x.len() != b.mid.len() || b.x.len() != b.lo.len() || b.x.len() != b.hi.len() {
            return Err(Error::invalid(
                "plot",
                format!("series {} has columns of different lengths", b.label),
            ));
        }
    }
    let xr = range(bands.iter().flat_map(|b| b.x.iter().copied()), x_axis.log)?;
    let yr = range(
        bands
            .iter()
            .flat_map(|b| b.lo.iter().chain(&b.hi).chain(&b.mid).copied()),
        y_axis.log,
    )?;
    render_svg(|root| {
        with_chart!(root, title, x_axis, y_axis, xr, yr, |chart| {
            for (i, b) in bands.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let idx: Vec<usize> = (0..b.x.len())
                    .filter(|&k| {
                        keep(b.x[k], x_axis.log)
                            && keep(b.lo[k], y_axis.log)
                            && keep(b.hi[k], y_axis.log)
                    })
                    .collect();
                let mut poly: Vec<(f64, f64)> = idx.iter().map(|&k| (b.x[k], b.hi[k])).collect();
                poly.extend(idx.iter().rev().map(|&k| (b.x[k], b.lo[k])));
                if poly.len() >= 3 {
                    chart
                        .draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled())))
                        .map_err(plot_err)?;
                }
                let line: Vec<(f64, f64)> = (0..b.x.len())
                    .filter(|&k| keep(b.x[k], x_axis.log) && keep(b.mid[k], y_axis.log))
                    .map(|k| (b.x[k], b.mid[k]))
                    .collect();
                chart
                    .draw_series(LineSeries::new(line, color.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(b.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
        });
        Ok(())
    })
}

/// A scatter series of a log-log plot, with an optional fitted line
/// `ln y = intercept + slope ln x`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scatter {
    /// Legend label.
    pub label: String,
    /// The points.
    pub points: Vec<(f64, f64)>,
    /// `(slope, intercept)` of the fit in natural logarithms.
    pub fit: Option<(f64, f64)>,
}

/// A log-log scatter plot, each series with its fitted line over the range of its points.
pub fn loglog_plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Scatter],
) -> Result<String> {
    let x_axis = Axis::log(x_label);
    let y_axis = Axis::log(y_label);
    let xr = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        true,
    )?;
    let yr = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        true,
    )?;
    render_svg(|root| {
        with_chart!(root, title, x_axis, y_axis, xr, yr, |chart| {
            for (i, s) in series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|p| keep(p.0, true) && keep(p.1, true))
                    .collect();
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| Circle::new((x + 9, y), 3, color.filled()));
                if let (Some((slope, intercept)), false) = (s.fit, pts.is_empty()) {
                    let lo = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
                    let hi = pts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
                    let n = 32;
                    let line: Vec<(f64, f64)> = (0..=n)
                        .map(|k| {
                            let lx = lo.ln() + (hi.ln() - lo.ln()) * k as f64 / n as f64;
                            (lx.exp(), (intercept + slope * lx).exp())
                        })
                        .filter(|p| p.1 >= yr.0 && p.1 <= yr.1)
                        .collect();
                    chart
                        .draw_series(LineSeries::new(line, color.stroke_width(1)))
                        .map_err(plot_err)?;
                }
            }
        });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(&0.0999999999998), "0.1");
        assert_eq!(tick_label(&100000000.0), "1e8");
        assert_eq!(tick_label(&1e-12), "1e-12");
        assert_eq!(tick_label(&2.5e-7), "2.5e-7");
        assert_eq!(tick_label(&0.0), "0");
        assert_eq!(tick_label(&1500.0), "1500");
        assert_eq!(tick_label(&0.25), "0.25");
    }

    #[test]
    fn band_plot_renders_deterministically() {
        let band = Band {
            label: "median".into(),
            x: vec![1.0, 10.0, 100.0],
            mid: vec![0.1, 0.5, 0.01],
            lo: vec![0.05, 0.3, 0.001],
            hi: vec![0.2, 0.7, 0.02],
        };
        let a = band_plot(
            "t",
            &Axis::log("tau"),
            &Axis::log("y"),
            std::slice::from_ref(&band),
        )
        .unwrap();
        let b = band_plot("t", &Axis::log("tau"), &Axis::log("y"), &[band]).unwrap();
        assert!(a.starts_with("<svg"));
        assert!(a.contains("<polygon") || a.contains("<path") || a.contains("<polyline"));
        assert_eq!(a, b);
        let s = Scatter {
            label: "t1".into(),
            points: vec![(1e2, 1e4), (1e3, 1e6)],
            fit: Some((2.0, 0.0)),
        };
        let c = loglog_plot("fit", "d", "t1", &[s]).unwrap();
        assert!(c.contains("<circle"));
        assert!(band_plot("t", &Axis::log("x"), &Axis::log("y"), &[]).is_err());
    }
}
