//! A periodic progress line on stderr while a search runs.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::search::{Progress, SearchObserver};

/// How often the line is redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// Draws `label: N orthos, M queued, R orthos/s` on stderr, in place.
pub struct ProgressLine {
    label: String,
    enabled: bool,
    last_drawn: Option<Instant>,
}

impl ProgressLine {
    /// A progress line that draws only when `wanted` and stderr is a terminal.
    pub fn new(label: impl Into<String>, wanted: bool) -> Self {
        Self {
            label: label.into(),
            enabled: wanted && std::io::stderr().is_terminal(),
            last_drawn: None,
        }
    }

    /// Erases the line, if one was drawn.
    pub fn finish(&mut self) {
        if self.last_drawn.take().is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

impl SearchObserver for ProgressLine {
    fn on_batch(&mut self, progress: &Progress) -> Result<()> {
        let due = self
            .last_drawn
            .is_none_or(|at| at.elapsed() >= REDRAW_EVERY);
        if self.enabled && due && progress.elapsed >= REDRAW_EVERY {
            let rate = progress.orthos as f64 / progress.elapsed.as_secs_f64().max(1e-9);
            let mut stderr = std::io::stderr().lock();
            let _ = write!(
                stderr,
                "\r\x1b[2K{}: {} orthos, {} queued, {:.0} orthos/s",
                self.label, progress.orthos, progress.queued, rate
            );
            let _ = stderr.flush();
            self.last_drawn = Some(Instant::now());
        }
        Ok(())
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.finish();
    }
}
