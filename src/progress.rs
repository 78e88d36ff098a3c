//! Progress on stderr while something runs, drawn with indicatif: a spinner
//! with the search's counters for `run` ([`ProgressLine`]), and a bar of
//! units done for `submit --wait` ([`VersionBar`]). Both draw only when
//! asked to and stderr is a terminal, and leave nothing behind when done.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::Result;
use crate::interner::Version;
use crate::search::{Progress, SearchObserver};

/// How often a bar is redrawn, at most.
const REDRAW_HZ: u8 = 4;

/// A hidden bar, or one drawing on stderr when `wanted` and stderr is a terminal.
fn bar_on_stderr(wanted: bool, length: Option<u64>) -> ProgressBar {
    if !(wanted && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let bar = match length {
        Some(length) => ProgressBar::new(length),
        None => ProgressBar::no_length(),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(REDRAW_HZ));
    bar
}

/// `label: N orthos, M queued, R orthos/s` beside a spinner and the time
/// elapsed, for a search of unknown size.
pub struct ProgressLine {
    bar: ProgressBar,
}

impl ProgressLine {
    /// A progress line that draws only when `wanted` and stderr is a terminal.
    pub fn new(label: impl Into<String>, wanted: bool) -> Self {
        let bar = bar_on_stderr(wanted, None);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.into());
        // The spinner turns, and the elapsed time counts, between batches too.
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Self { bar }
    }

    /// Erases the line, if one was drawn.
    pub fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl SearchObserver for ProgressLine {
    fn on_batch(&mut self, progress: &Progress) -> Result<()> {
        if self.bar.is_hidden() {
            return Ok(());
        }
        let rate = progress.orthos as f64 / progress.elapsed.as_secs_f64().max(1e-9);
        self.bar.set_message(format!(
            "{} orthos, {} queued, {} orthos/s",
            HumanCount(progress.orthos),
            HumanCount(progress.queued),
            HumanCount(rate as u64)
        ));
        Ok(())
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A bar of one version's units done out of its total, with its orthos,
/// the workers connected and the cluster's rate. It first draws at the
/// first update, when the number of units is known.
pub struct VersionBar {
    bar: ProgressBar,
    /// Whether to draw at all.
    shown: bool,
    /// Whether the first update came.
    started: bool,
}

impl VersionBar {
    /// A bar for `version` that draws only when `wanted` and stderr is a terminal.
    pub fn new(version: Version, wanted: bool) -> Self {
        let shown = wanted && std::io::stderr().is_terminal();
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:20}] {pos}/{len} units [{elapsed}] {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("version {version}"));
        Self {
            bar,
            shown,
            started: false,
        }
    }

    /// Shows the latest figures.
    pub fn update(
        &mut self,
        units_done: u32,
        units_total: u32,
        orthos: u64,
        workers: u32,
        rate: f64,
    ) {
        self.bar.set_length(units_total.into());
        self.bar.set_position(units_done.into());
        self.bar.set_message(format!(
            "{} orthos, {workers} workers, {} orthos/s",
            HumanCount(orthos),
            HumanCount(rate as u64)
        ));
        if self.shown && !self.started {
            self.started = true;
            self.bar
                .set_draw_target(ProgressDrawTarget::stderr_with_hz(REDRAW_HZ));
            self.bar.enable_steady_tick(Duration::from_millis(250));
        }
    }

    /// Erases the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for VersionBar {
    fn drop(&mut self) {
        self.finish();
    }
}
