//! A report's figures, drawn with plotters as PNG and SVG from the same drawing code:
//! accuracy against virtual time and against version, speed-up against workers, staleness
//! histograms and where the wall time went. Text is drawn by plotters' font-kit backend
//! (freetype) in the system's sans-serif font, found through fontconfig.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::logs::JobSpan;
use super::metrics::WallBreakdown;
use crate::record::write_atomically;

/// Why a figure could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("{0}")]
    NoFont(String),
    #[error("drawing {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    #[error("encoding {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = FigureError> = std::result::Result<T, E>;

/// Every figure's size in pixels (PNG) and points (SVG).
pub const SIZE: (u32, u32) = (1000, 620);

/// Tableau's ten colours: distinguishable, and readable in print.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Checks once per process that fontconfig finds a sans-serif font, so that a machine without
/// fonts gets one clear error instead of a failure deep inside a figure.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        ("sans-serif", 16).into_font().box_size("fedsim").map(|_| ()).map_err(|e| {
            format!(
                "no sans-serif font for the figures ({e}): install Debian's fonts-dejavu-core \
                 (scripts/setup.sh does)"
            )
        })
    })
    .clone()
    .map_err(FigureError::NoFont)
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something that draws itself on any plotters backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Draws `figure` into `<stem>.png` and `<stem>.svg`; returns the two paths.
pub fn render(figure: &impl Figure, stem: &Path) -> Result<[PathBuf; 2]> {
    ensure_font()?;
    let (width, height) = SIZE;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        let drawing = |e: String| FigureError::Draw { path: png.clone(), message: e };
        figure.draw(&root).map_err(|e| drawing(e.to_string()))?;
        root.present().map_err(|e| drawing(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| FigureError::Draw {
        path: png.clone(),
        message: "the bitmap does not have the figure's size".to_owned(),
    })?;
    let mut encoded = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut encoded, image::ImageFormat::Png)
        .map_err(|source| FigureError::Encode { path: png.clone(), source })?;
    write_atomically(&png, encoded.get_ref())
        .map_err(|source| FigureError::Write { path: png.clone(), source })?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        let drawing = |e: String| FigureError::Draw { path: svg.clone(), message: e };
        figure.draw(&root).map_err(|e| drawing(e.to_string()))?;
        root.present().map_err(|e| drawing(e.to_string()))?;
    }
    write_atomically(&svg, text.as_bytes())
        .map_err(|source| FigureError::Write { path: svg.clone(), source })?;
    Ok([png, svg])
}

const CAPTION: u32 = 26;
const AXIS_NAME: u32 = 20;
const TICKS: u32 = 16;

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A titled chart with named axes (`[title, x name, y name]`) and a light grid.
fn axes<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    [title, x_name, y_name]: [&str; 3],
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", CAPTION))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_name)
        .y_desc(y_name)
        .axis_desc_style(("sans-serif", AXIS_NAME))
        .label_style(("sans-serif", TICKS))
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()?;
    Ok(chart)
}

fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    position: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", TICKS))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
}

/// One line per run: y against x.
pub struct Lines {
    pub title: String,
    pub x_name: String,
    pub y_name: String,
    pub series: Vec<Line>,
    /// Accuracies: the y axis ends at a tenth above the highest value, at most 1. Otherwise it
    /// ends a tenth above the highest value, whatever its unit.
    pub accuracy: bool,
}

pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Stroke width in pixels: runs that must coincide are drawn ever thinner on top of
    /// each other, so every one of them stays visible.
    pub width: u32,
    /// (x, low, high): a shaded band drawn under the line (the range over seeds); may be empty.
    pub band: Vec<(f64, f64, f64)>,
}

impl Figure for Lines {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let points = || self.series.iter().flat_map(|line| line.points.iter());
        let highs = self.series.iter().flat_map(|line| line.band.iter().map(|b| b.2));
        let x_max = points().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
        let y_max = points().map(|p| p.1).chain(highs).fold(0.0, f64::max);
        let y_top = if self.accuracy {
            ((y_max * 10.0).ceil() / 10.0 + 0.05).clamp(0.1, 1.0)
        } else {
            (y_max * 1.1).max(1e-6)
        };
        let names = [self.title.as_str(), &self.x_name, &self.y_name];
        let mut chart = axes(root, names, 0.0..x_max * 1.02, 0.0..y_top)?;
        for (i, line) in self.series.iter().enumerate().filter(|(_, l)| !l.band.is_empty()) {
            // The band's outline: along the highs, back along the lows.
            let outline: Vec<(f64, f64)> = line
                .band
                .iter()
                .map(|&(x, _, high)| (x, high))
                .chain(line.band.iter().rev().map(|&(x, low, _)| (x, low)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, color(i).mix(0.22).filled())))?;
        }
        for (i, line) in self.series.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), color(i).stroke_width(line.width)))?
                .label(&line.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color(i).stroke_width(3)));
        }
        legend(
            &mut chart,
            if self.accuracy { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight },
        )
    }
}

/// Speed-up against worker count, one line per experiment, with the ideal (linear) line.
pub struct Speedup {
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Figure for Speedup {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let points = || self.series.iter().flat_map(|(_, p)| p.iter());
        // Without a worker comparison the axes still span a useful range around the note.
        let least = if self.series.is_empty() { 4.0 } else { 1.0 };
        let max_workers = points().map(|p| p.0).fold(least, f64::max);
        let top = points().map(|p| p.1).fold(max_workers, f64::max) * 1.1;
        let names = [
            "Speed-up against workers (same results, less wall time)",
            "workers (training threads)",
            "speed-up (wall time of 1 worker / wall time)",
        ];
        let mut chart = axes(root, names, 0.0..max_workers + 0.5, 0.0..top)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (max_workers + 0.5, max_workers + 0.5)],
                8,
                6,
                BLACK.mix(0.6).stroke_width(2),
            ))?
            .label("ideal (linear)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.mix(0.6).stroke_width(2)));
        if self.series.is_empty() {
            chart.draw_series([Text::new(
                "no runs in this report differ only in their worker count",
                (0.3, top * 0.8),
                ("sans-serif", AXIS_NAME),
            )])?;
        }
        for (i, (name, points)) in self.series.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color(i).stroke_width(3)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color(i).stroke_width(3)));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 6, color(i).filled())))?;
            chart.draw_series(points.iter().map(|&(w, s)| {
                Text::new(format!("{s:.2}x"), (w + 0.06, s - 0.05 * top), ("sans-serif", TICKS))
            }))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}

/// One histogram of update staleness per run.
pub struct StalenessHistograms {
    pub panels: Vec<(String, Vec<u64>)>,
}

impl Figure for StalenessHistograms {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let root = root.titled("Staleness of applied client updates", ("sans-serif", CAPTION))?;
        let n = self.panels.len().max(1);
        let columns = if n <= 3 { n } else { n.div_ceil(2) };
        let rows = n.div_ceil(columns);
        let areas = root.split_evenly((rows, columns));
        for (i, (name, staleness)) in self.panels.iter().enumerate() {
            let max = staleness.iter().copied().max().unwrap_or(0);
            // At most about 50 bars per panel.
            let width = (max + 1).div_ceil(50).max(1);
            let mut counts = vec![0u64; (max / width + 1) as usize];
            for &s in staleness {
                counts[(s / width) as usize] += 1;
            }
            let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
            // At least ten bins wide, so that all-fresh updates (FedAvg) show as one thin bar.
            let right = (max + width).max(10 * width) as f64;
            let mut chart = ChartBuilder::on(&areas[i])
                .caption(name, ("sans-serif", AXIS_NAME))
                .margin(10)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..right, 0.0..top)?;
            chart
                .configure_mesh()
                .x_desc("staleness (versions)")
                .y_desc("client updates")
                .axis_desc_style(("sans-serif", TICKS))
                .label_style(("sans-serif", TICKS - 2))
                .light_line_style(WHITE.mix(0.0))
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .x_labels(6)
                .y_labels(5)
                .draw()?;
            chart.draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(b, &c)| {
                let x = (b as u64 * width) as f64;
                Rectangle::new([(x, 0.0), (x + width as f64 * 0.9, c as f64)], color(i).filled())
            }))?;
        }
        Ok(())
    }
}

/// Two stacked bars per run, each as long as its wall time: what the workers did (training,
/// idle) and what the coordinating thread did (server, evaluation, other).
pub struct WallTime {
    pub bars: Vec<(String, WallBreakdown)>,
}

impl Figure for WallTime {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        // The legend gets its own strip below the chart, so it never covers a bar.
        let (root, legend) = root.split_vertically(SIZE.1 - 80);
        let longest = self.bars.iter().map(|(_, b)| b.wall).fold(1e-9, f64::max);
        let n = self.bars.len();
        let names: Vec<String> = self.bars.iter().map(|(name, _)| name.clone()).collect();
        let longest_name = names.iter().map(|s| s.chars().count()).max().unwrap_or(0) as u32;
        let mut chart = ChartBuilder::on(&root)
            .caption("Where the wall time went", ("sans-serif", CAPTION))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size((longest_name * 9 + 20).clamp(60, 420))
            .build_cartesian_2d(0.0..longest * 1.3, -0.5..n as f64 - 0.5)?;
        chart
            .configure_mesh()
            .x_desc("wall time (s)")
            .axis_desc_style(("sans-serif", AXIS_NAME))
            .label_style(("sans-serif", TICKS))
            .light_line_style(WHITE.mix(0.0))
            .disable_y_mesh()
            .x_label_formatter(&tick)
            .y_labels(n.max(1))
            .y_label_formatter(&|y| row_label(&names, *y))
            .draw()?;
        type Part = (&'static str, RGBColor, bool, fn(&WallBreakdown) -> f64);
        // (legend, colour, on the workers' bar, seconds)
        let parts: [Part; 5] = [
            ("workers: training (mean per worker)", color(0), true, |b| b.training),
            ("workers: idle", RGBColor(200, 200, 200), true, |b| b.workers_idle),
            ("coordinator: server (aggregation, distillation)", color(1), false, |b| b.server),
            ("coordinator: evaluation", color(2), false, |b| b.evaluation),
            ("coordinator: other (waiting, planning, logging)", RGBColor(120, 120, 120), false, |b| {
                b.coordinator_other
            }),
        ];
        for (p, &(part, fill, workers, seconds)) in parts.iter().enumerate() {
            let bars = self.bars.iter().enumerate().map(|(i, (_, b))| {
                let y = (n - 1 - i) as f64 + if workers { 0.2 } else { -0.2 };
                let start: f64 = parts[..p].iter().filter(|q| q.2 == workers).map(|q| q.3(b)).sum();
                Rectangle::new([(start, y - 0.17), (start + seconds(b), y + 0.17)], fill.filled())
            });
            chart.draw_series(bars)?;
            // Workers' parts in the left column, the coordinator's in the right.
            let row = parts[..p].iter().filter(|q| q.2 == workers).count() as i32;
            let (x, y) = (if workers { 40 } else { 420 }, 8 + 24 * row);
            legend.draw(&Rectangle::new([(x, y), (x + 16, y + 14)], fill.filled()))?;
            legend.draw(&Text::new(part, (x + 24, y - 1), ("sans-serif", TICKS)))?;
        }
        chart.draw_series(self.bars.iter().enumerate().flat_map(|(i, (_, b))| {
            let y = (n - 1 - i) as f64;
            let x = b.wall + longest * 0.01;
            [
                Text::new(format!("workers {:.1} s", b.wall), (x, y + 0.27), ("sans-serif", TICKS)),
                Text::new(format!("coordinator {:.1} s", b.wall), (x, y - 0.13), ("sans-serif", TICKS)),
            ]
        }))?;
        Ok(())
    }
}

/// The name of the row drawn at `y` on a chart whose rows are `names`, top to bottom at
/// y = n - 1 down to 0; no label between rows.
fn row_label(names: &[String], y: f64) -> String {
    let (n, i) = (names.len(), y.round());
    if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
        names[n - 1 - i as usize].clone()
    } else {
        String::new()
    }
}

/// Axis numbers without needless decimals: 600, 2.5, 0.35.
fn tick(value: &f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{}", value.round() as i64)
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').to_owned()
    }
}

/// A run's clients on the virtual time axis: what each did when, idle between.
pub struct TimelinePanel {
    pub title: String,
    pub end: f64,
    /// (client, its jobs), top to bottom.
    pub lanes: Vec<(u32, Vec<JobSpan>)>,
}

/// Per-client timelines of a few runs, stacked.
pub struct Timeline {
    pub panels: Vec<TimelinePanel>,
}

impl Figure for Timeline {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (root, legend) = root.split_vertically(SIZE.1 - 44);
        let parts: [(&str, RGBColor); 5] = [
            ("download", color(0)),
            ("training", color(1)),
            ("upload", color(2)),
            ("leaf and hop to the server", color(4)),
            ("idle", RGBColor(236, 236, 236)),
        ];
        for (i, (name, fill)) in parts.iter().enumerate() {
            let x = 20 + 190 * i as i32;
            legend.draw(&Rectangle::new([(x, 12), (x + 16, 26)], fill.filled()))?;
            legend.draw(&Text::new(*name, (x + 22, 11), ("sans-serif", TICKS)))?;
        }
        legend.draw(&Text::new(
            "faded: never trained (dropped, cancelled, timed out, offline)",
            (20, 30),
            ("sans-serif", 13),
        ))?;
        let areas = root.split_evenly((self.panels.len().max(1), 1));
        for (panel, area) in self.panels.iter().zip(&areas) {
            let n = panel.lanes.len();
            let names: Vec<String> =
                panel.lanes.iter().map(|(client, _)| format!("client {client}")).collect();
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(90)
                .build_cartesian_2d(0.0..panel.end.max(1e-9), -0.5..n as f64 - 0.5)?;
            chart
                .configure_mesh()
                .label_style(("sans-serif", 12))
                .light_line_style(WHITE.mix(0.0))
                .disable_y_mesh()
                .x_label_formatter(&tick)
                .y_labels(n.max(1))
                .y_label_formatter(&|y| row_label(&names, *y))
                .draw()?;
            let lane_y = |lane: usize| (n - 1 - lane) as f64;
            chart.draw_series((0..n).map(|lane| {
                let y = lane_y(lane);
                Rectangle::new([(0.0, y - 0.3), (panel.end, y + 0.3)], parts[4].1.filled())
            }))?;
            for (lane, (_, jobs)) in panel.lanes.iter().enumerate() {
                let y = lane_y(lane);
                for job in jobs {
                    let cut = job.cut_at.unwrap_or(f64::INFINITY);
                    let alpha = if job.cut_at.is_some() { 0.3 } else { 1.0 };
                    let spans = [
                        (job.dispatched_at, job.download_end, parts[0].1, 0.3),
                        (job.download_end, job.train_end, parts[1].1, 0.3),
                        (job.train_end, job.upload_end, parts[2].1, 0.3),
                        (job.upload_end, job.at_server.unwrap_or(job.upload_end), parts[3].1, 0.12),
                    ];
                    chart.draw_series(
                        spans
                            .into_iter()
                            .map(|(start, end, fill, half)| {
                                (start.min(cut), end.min(cut).min(panel.end), fill, half)
                            })
                            .filter(|(start, end, ..)| end > start)
                            .map(|(start, end, fill, half)| {
                                Rectangle::new([(start, y - half), (end, y + half)], fill.mix(alpha).filled())
                            }),
                    )?;
                }
            }
        }
        Ok(())
    }
}
