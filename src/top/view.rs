//! What `top` shows, free of terminals and sockets: the last status snapshot,
//! a history of the cluster's rate and the state of the connection, drawn
//! into any ratatui frame (a real terminal, or a `TestBackend` in tests).

use std::collections::VecDeque;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table};

use crate::proto::{self, v1};

/// Terminals at least this wide get every column of the versions table.
const WIDE: u16 = 110;

/// Rate samples kept for the sparkline (one per snapshot, about four a
/// second: a minute or so, more than any terminal is wide).
const RATE_HISTORY: usize = 300;

/// Where the view's connection to the coordinator stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet.
    Connecting,
    /// Snapshots are coming in.
    Live,
    /// The connection failed or broke; trying again.
    Reconnecting {
        /// Attempts so far since the connection was lost.
        attempt: u32,
        /// Why the last attempt failed.
        error: String,
    },
}

/// The live view's state.
pub struct View {
    coordinator: String,
    status: Option<v1::StatusReply>,
    rates: VecDeque<u64>,
    link: Link,
}

impl View {
    /// A view of the coordinator at `coordinator` (its URL, shown in the title).
    pub fn new(coordinator: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            status: None,
            rates: VecDeque::new(),
            link: Link::Connecting,
        }
    }

    /// A new snapshot arrived.
    pub fn update(&mut self, status: v1::StatusReply) {
        if self.rates.len() == RATE_HISTORY {
            self.rates.pop_front();
        }
        self.rates
            .push_back(status.orthos_per_second.round() as u64);
        self.status = Some(status);
        self.link = Link::Live;
    }

    /// The connection failed or broke with `error`; the last snapshot stays
    /// on screen, marked as stale.
    pub fn lost(&mut self, error: impl Into<String>) {
        let attempt = match &self.link {
            Link::Reconnecting { attempt, .. } => attempt + 1,
            _ => 1,
        };
        self.link = Link::Reconnecting {
            attempt,
            error: error.into(),
        };
    }

    /// The connection's state.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Draws the whole view into `frame`.
    pub fn draw(&self, frame: &mut Frame) {
        let versions = self.status.as_ref().map_or(0, |s| s.versions.len()) as u16;
        let workers = self.status.as_ref().map_or(0, |s| s.worker_list.len()) as u16;
        let [header, versions_area, workers_area, bottom, help] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Length(versions.clamp(1, 8) + 3),
            Constraint::Length(workers.clamp(1, 8) + 3),
            Constraint::Min(6),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let [rate_area, best_area] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(bottom);
        self.draw_header(frame, header);
        self.draw_versions(frame, versions_area);
        self.draw_workers(frame, workers_area);
        self.draw_rate(frame, rate_area);
        self.draw_best(frame, best_area);
        frame.render_widget(
            Paragraph::new("q: quit").style(Style::default().add_modifier(Modifier::DIM)),
            help,
        );
    }

    fn draw_header(&self, frame: &mut Frame, area: Rect) {
        let (state, style) = match &self.link {
            Link::Connecting => ("connecting…".to_owned(), Style::default().fg(Color::Yellow)),
            Link::Live => ("live".to_owned(), Style::default().fg(Color::Green)),
            Link::Reconnecting { attempt, error } => (
                format!("reconnecting (attempt {attempt}): {error}"),
                Style::default().fg(Color::Red),
            ),
        };
        let summary = match &self.status {
            None => "no snapshot yet".to_owned(),
            Some(status) => format!(
                "{} version(s), {} worker(s), {} orthos/s, {} bytes exchanged with workers",
                status.versions.len(),
                status.workers,
                thousands(status.orthos_per_second.round() as u64),
                thousands(status.worker_wire_bytes)
            ),
        };
        let block = Block::default()
            .borders(Borders::ALL)
            .title(format!(" fold top: {} ", self.coordinator));
        let text = vec![Line::from(vec![
            Span::styled(state, style),
            Span::raw(" · "),
            Span::raw(summary),
        ])];
        frame.render_widget(Paragraph::new(text).block(block), area);
    }

    fn draw_versions(&self, frame: &mut Frame, area: Rect) {
        // A narrow terminal gets the columns that matter most.
        let wide = area.width >= WIDE;
        let rows: Vec<Row> = self
            .status
            .iter()
            .flat_map(|status| status.versions.iter().rev().take(8).rev())
            .map(|version| version_row(version, wide))
            .collect();
        let (header, widths) = if wide {
            (
                vec![
                    "version", "source", "state", "units", "running", "words", "orthos", "frontier",
                ],
                vec![
                    Constraint::Length(7),
                    Constraint::Fill(1),
                    Constraint::Length(7),
                    Constraint::Length(30),
                    Constraint::Length(7),
                    Constraint::Length(8),
                    Constraint::Length(13),
                    Constraint::Length(13),
                ],
            )
        } else {
            (
                vec!["ver", "source", "state", "units", "orthos", "frontier"],
                vec![
                    Constraint::Length(3),
                    Constraint::Fill(1),
                    Constraint::Length(7),
                    Constraint::Length(16),
                    Constraint::Length(12),
                    Constraint::Length(12),
                ],
            )
        };
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(Block::default().borders(Borders::ALL).title(" versions "));
        frame.render_widget(table, area);
    }

    fn draw_workers(&self, frame: &mut Frame, area: Rect) {
        let rows: Vec<Row> = self
            .status
            .iter()
            .flat_map(|status| status.worker_list.iter().take(8))
            .map(|worker| {
                Row::new(vec![
                    Cell::from(worker.id.clone()),
                    Cell::from(worker.name.clone()),
                    Cell::from(worker.threads.to_string()),
                    Cell::from(worker.units.len().to_string()),
                    Cell::from(thousands(worker.units_done)),
                    Cell::from(thousands(worker.orthos_per_second.round() as u64)),
                ])
            })
            .collect();
        let header = Row::new(["id", "name", "threads", "holding", "done", "orthos/s"])
            .style(Style::default().add_modifier(Modifier::BOLD));
        let table = Table::new(
            rows,
            [
                Constraint::Length(4),
                Constraint::Fill(1),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Length(12),
            ],
        )
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(" workers "));
        frame.render_widget(table, area);
    }

    fn draw_rate(&self, frame: &mut Frame, area: Rect) {
        let peak = self.rates.iter().copied().max().unwrap_or(0);
        let title = format!(" rate, peak {}/s ", thousands(peak));
        // The newest samples that fit, so the line moves from right to left.
        let width = area.width.saturating_sub(2) as usize;
        let shown: Vec<u64> = self
            .rates
            .iter()
            .skip(self.rates.len().saturating_sub(width))
            .copied()
            .collect();
        let sparkline = Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(title))
            .data(&shown)
            .style(Style::default().fg(Color::Cyan));
        frame.render_widget(sparkline, area);
    }

    fn draw_best(&self, frame: &mut Frame, area: Rect) {
        let best = self.status.as_ref().and_then(|status| {
            status
                .versions
                .iter()
                .rev()
                .find_map(|version| version.optimal.as_ref().map(|o| (version, o)))
        });
        let (title, text) = match best {
            None => (" best ortho ".to_owned(), "none yet".to_owned()),
            Some((version, optimal)) => {
                let report = proto::optimal_of(optimal);
                (
                    format!(
                        " best, version {} ({}) ",
                        version.version,
                        version.state().name()
                    ),
                    format!(
                        "dims {:?}, volume {}, fullness {}\n{}",
                        report.dims,
                        report.volume,
                        report.fullness,
                        crate::output::grid(&report)
                    ),
                )
            }
        };
        frame.render_widget(
            Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(title)),
            area,
        );
    }
}

/// One version's row of the versions table (`wide`: with every column).
fn version_row(version: &v1::VersionStatus, wide: bool) -> Row<'static> {
    let percent = if version.units_total == 0 {
        100
    } else {
        u64::from(version.units_done) * 100 / u64::from(version.units_total)
    };
    let state_style = if version.state() == v1::VersionState::Done {
        Style::default().fg(Color::Green)
    } else {
        Style::default().fg(Color::Yellow)
    };
    let units = if wide {
        format!(
            "{}/{} {}",
            version.units_done,
            version.units_total,
            progress_bar(percent, 10)
        )
    } else {
        format!(
            "{}/{} {percent:>3}%",
            version.units_done, version.units_total
        )
    };
    // The file name says which text it is; the path would push the figures
    // off a narrow screen.
    let file_name = version.source.rsplit('/').next().unwrap_or_default();
    let mut cells = vec![
        Cell::from(version.version.to_string()),
        Cell::from(file_name.to_owned()),
        Cell::from(version.state().name()).style(state_style),
        Cell::from(units),
    ];
    if wide {
        cells.push(Cell::from(version.units_running.to_string()));
        cells.push(Cell::from(thousands(version.vocabulary)));
    }
    cells.push(Cell::from(thousands(version.orthos)));
    cells.push(Cell::from(thousands(version.frontier)));
    Row::new(cells)
}

/// `[#####     ] 50%`, `width` cells wide.
fn progress_bar(percent: u64, width: usize) -> String {
    let filled = (percent.min(100) as usize * width) / 100;
    format!(
        "[{}{}] {percent:>3}%",
        "#".repeat(filled),
        " ".repeat(width - filled)
    )
}

/// A number with thousands separators: 1,234,567.
pub fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(view: &View) -> String {
        screen_of(view, 120, 30)
    }

    fn screen_of(view: &View, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| view.draw(frame)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    #[test]
    fn numbers_get_thousands_separators_and_bars_fill() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(progress_bar(50, 10), "[#####     ]  50%");
        assert_eq!(progress_bar(100, 4), "[####] 100%");
    }

    #[test]
    fn a_lost_connection_shows_reconnecting_and_keeps_the_last_snapshot() {
        let mut view = View::new("http://127.0.0.1:1");
        assert!(screen(&view).contains("connecting"));
        view.update(v1::StatusReply {
            workers: 2,
            orthos_per_second: 1234.0,
            versions: vec![v1::VersionStatus {
                version: 1,
                state: v1::VersionState::Running as i32,
                source: "a.txt".into(),
                orthos: 41_863,
                units_done: 3,
                units_total: 6,
                ..Default::default()
            }],
            ..Default::default()
        });
        let live = screen(&view);
        assert!(live.contains("live"), "{live}");
        assert!(live.contains("41,863"), "{live}");
        assert!(live.contains("3/6 [#####     ]  50%"), "{live}");
        // An 80-column terminal keeps the figures, with a shorter unit column.
        let narrow = screen_of(&view, 80, 24);
        assert!(narrow.contains("a.txt"), "{narrow}");
        assert!(narrow.contains("3/6  50%"), "{narrow}");
        assert!(narrow.contains("41,863"), "{narrow}");
        view.lost("connection refused");
        view.lost("connection refused");
        let lost = screen(&view);
        assert!(lost.contains("reconnecting (attempt 2)"), "{lost}");
        assert!(lost.contains("41,863"), "{lost}");
    }
}
