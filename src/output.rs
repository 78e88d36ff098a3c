//! Everything fold prints for its users, in both forms (human text and one
//! JSON object per line): a version's figures and the work `run` did, a
//! submission, the coordinator's status listing, an optimal ortho drawn as a
//! grid. Commands produce values; this module renders them; callers print.

use std::fmt::Write as _;
use std::io::Write;

use crate::error::{Error, Result};
use crate::interner::Version;
use crate::proto::{self, v1};
use crate::report::{OptimalReport, VersionReport};
use crate::spatial::{coordinates_in_position_order, flatten, unflatten};

/// A version's figures: the report, then (as text) the optimal ortho as a
/// grid.
pub fn report(report: &VersionReport, json: bool) -> String {
    if json {
        return report.to_json_line() + "\n";
    }
    let mut out = format!(
        "version {}: vocabulary {}, orthos {}, frontier {}\n",
        report.version, report.vocabulary, report.orthos, report.frontier
    );
    match &report.optimal {
        None => out.push_str("optimal: none\n"),
        Some(optimal) => {
            let _ = writeln!(
                out,
                "optimal: dims {:?}, volume {}, fullness {}",
                optimal.dims, optimal.volume, optimal.fullness
            );
            out.push_str(&grid(optimal));
        }
    }
    out
}

/// What searching one version took, as `run` reports it beside the figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Work {
    /// Orthos expanded for the first time.
    pub processed: u64,
    /// Stored orthos of earlier versions checked.
    pub scanned: u64,
    /// Stored orthos expanded again.
    pub revisited: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Orthos expanded before the checkpoint this run resumed from.
    pub resumed_after: u64,
}

/// A searched version: its figures and, after them, the work it took (in
/// JSON, a `work` object beside the figures).
pub fn searched(report: &VersionReport, work: &Work, json: bool) -> String {
    #[derive(serde::Serialize)]
    struct Searched<'a> {
        #[serde(flatten)]
        report: &'a VersionReport,
        work: &'a Work,
    }
    if json {
        return serde_json::to_string(&Searched { report, work })
            .expect("a report always serialises")
            + "\n";
    }
    let resumed = if work.resumed_after > 0 {
        format!(", resumed after {} from a checkpoint", work.resumed_after)
    } else {
        String::new()
    };
    format!(
        "{}work: {} orthos expanded, {} stored orthos checked, {} revisited{resumed}\n",
        self::report(report, false),
        work.processed,
        work.scanned,
        work.revisited
    )
}

/// A text accepted by a coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The version it became.
    pub version: Version,
    /// Its size.
    pub bytes: u64,
    /// Its hash, as the coordinator records it.
    pub hash: String,
}

/// A submission, named as the user named the file.
pub fn submitted(name: &str, submitted: &Submitted, json: bool) -> String {
    if json {
        return serde_json::json!({
            "version": submitted.version,
            "source": name,
            "bytes": submitted.bytes,
            "hash": submitted.hash,
        })
        .to_string()
            + "\n";
    }
    format!(
        "submitted {name} as version {} ({} bytes)\n",
        submitted.version, submitted.bytes
    )
}

/// What `status` lists besides the versions.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusOptions {
    /// One JSON object per version per line.
    pub json: bool,
    /// Also list up to this many units of each version (0: none).
    pub units: u32,
    /// Also list the connected workers.
    pub workers: bool,
}

/// A coordinator's status: a line per version (with its units when asked),
/// the workers when asked, and (as text) a summary line.
pub fn status(reply: &v1::StatusReply, options: StatusOptions) -> String {
    let mut out = String::new();
    for status in &reply.versions {
        if options.json {
            let mut object = proto::report_of(status).to_json();
            let mut extra = serde_json::json!({
                "state": status.state().name(),
                "units_done": status.units_done,
                "units_total": status.units_total,
                "units_running": status.units_running,
                "units_pending": status.units_pending,
                "units_split": status.units_split,
                "attempts_discarded": status.attempts_discarded,
                "source": status.source,
            });
            if options.units > 0 {
                extra["units"] = status.units.iter().map(unit_json).collect();
            }
            if let (Some(object), Some(extra)) = (object.as_object_mut(), extra.as_object()) {
                object.extend(extra.clone());
            }
            let _ = writeln!(out, "{object}");
            continue;
        }
        let _ = writeln!(
            out,
            "version {} ({}): {}, units {}/{} ({} running, {} split), vocabulary {}, orthos {}, frontier {}",
            status.version,
            status.source,
            status.state().name(),
            status.units_done,
            status.units_total,
            status.units_running,
            status.units_split,
            status.vocabulary,
            status.orthos,
            status.frontier
        );
        if options.units > 0 {
            for unit in &status.units {
                let _ = writeln!(out, "{}", unit_line(unit));
            }
        }
    }
    if options.workers && options.json {
        let workers: Vec<_> = reply.worker_list.iter().map(worker_json).collect();
        let _ = writeln!(out, "{}", serde_json::json!({ "workers": workers }));
    } else if options.workers {
        for worker in &reply.worker_list {
            let _ = writeln!(out, "{}", worker_line(worker));
        }
    }
    if !options.json {
        let _ = writeln!(
            out,
            "{} version(s), {} worker(s) connected, {:.0} orthos/s, {} bytes exchanged with workers",
            reply.versions.len(),
            reply.workers,
            reply.orthos_per_second,
            reply.worker_wire_bytes
        );
    }
    out
}

/// One worker as a JSON object.
fn worker_json(worker: &v1::WorkerInfo) -> serde_json::Value {
    serde_json::json!({
        "id": worker.id,
        "name": worker.name,
        "threads": worker.threads,
        "units": worker.units,
        "units_done": worker.units_done,
        "connected_ms": worker.connected_ms,
        "orthos": worker.orthos,
        "orthos_per_second": worker.orthos_per_second,
        "cpu_seconds": worker.cpu_seconds,
    })
}

/// One worker as a line of `status --workers`.
fn worker_line(worker: &v1::WorkerInfo) -> String {
    format!(
        "  worker {} ({}): {} thread(s), holds [{}], {} units done, {} orthos expanded, {:.0} orthos/s, {:.1} CPU s, connected {:.0} s",
        worker.id,
        worker.name,
        worker.threads,
        worker.units.join(", "),
        worker.units_done,
        worker.orthos,
        worker.orthos_per_second,
        worker.cpu_seconds,
        worker.connected_ms as f64 / 1000.0
    )
}

/// One unit as a JSON object; the worker is `null` unless it is running.
fn unit_json(unit: &v1::UnitStatus) -> serde_json::Value {
    serde_json::json!({
        "unit": unit.unit,
        "created": unit.created,
        "parent": unit.parent,
        "state": unit.state().name(),
        "roots": unit.roots,
        "excluded": unit.excluded,
        "attempts_started": unit.attempts_started,
        "attempts_discarded": unit.attempts_discarded,
        "times_counted": unit.times_counted,
        "orthos": unit.orthos,
        "frontier": unit.frontier,
        "split_into": unit.split_into,
        "elapsed_ms": unit.elapsed_ms,
        "worker": unit.worker,
        "worker_name": unit.worker_name,
        "base_version": unit.base_version,
    })
}

/// One unit as an indented line under its version.
fn unit_line(unit: &v1::UnitStatus) -> String {
    let mut line = format!(
        "  unit {} ({} roots, {} excluded): {}",
        unit.unit,
        unit.roots,
        unit.excluded,
        unit.state().name()
    );
    if let Some(worker) = &unit.worker {
        let name = unit.worker_name.as_deref().unwrap_or_default();
        let _ = write!(line, " on worker {worker} ({name})");
    }
    let _ = write!(
        line,
        ", attempts {} ({} discarded), counted {}, orthos {}, frontier {}, {:.1} s",
        unit.attempts_started,
        unit.attempts_discarded,
        unit.times_counted,
        unit.orthos,
        unit.frontier,
        unit.elapsed_ms as f64 / 1000.0
    );
    if unit.parent > 0 {
        let _ = write!(line, ", split from unit {}", unit.parent);
    }
    if unit.split_into > 0 {
        let _ = write!(line, ", split into {} units", unit.split_into);
    }
    if unit.base_version > 0 {
        let _ = write!(line, ", brought up from version {}", unit.base_version);
    }
    line
}

/// The optimal ortho of a version, as a coordinator answered for it.
pub fn optimal(reply: &v1::OptimalReply, json: bool) -> String {
    let optimal = reply.optimal.as_ref().map(proto::optimal_of);
    let state = reply.state().name();
    if json {
        return serde_json::json!({"version": reply.version, "state": state, "optimal": optimal})
            .to_string()
            + "\n";
    }
    match &optimal {
        None => format!("version {} ({state}): no ortho\n", reply.version),
        Some(optimal) => format!(
            "version {} ({state}): dims {:?}, volume {}, fullness {}\n{}",
            reply.version,
            optimal.dims,
            optimal.volume,
            optimal.fullness,
            grid(optimal)
        ),
    }
}

/// An ortho's payload laid out as rows (axis 0) and columns (axis 1), one
/// grid per combination of the remaining axes. Empty slots show as `·`.
pub fn grid(optimal: &OptimalReport) -> String {
    let dims = &optimal.dims;
    let capacity: usize = dims.iter().product();
    if dims.len() < 2 || optimal.payload.len() != capacity {
        // Not a grid (only a broken peer could send this): show the slots as they are.
        return format!("  {:?}\n", optimal.payload);
    }
    let positions = coordinates_in_position_order(dims);
    let mut cells = vec![""; optimal.payload.len()];
    for (position, coord) in positions.iter().enumerate() {
        cells[flatten(dims, coord)] = optimal.payload[position].as_deref().unwrap_or("·");
    }
    let width = cells
        .iter()
        .map(|cell| cell.chars().count())
        .max()
        .unwrap_or(1);
    let (rows, cols) = (dims[0], dims[1]);
    let slices = optimal.payload.len() / (rows * cols);
    let mut out = String::new();
    for index in 0..slices {
        if slices > 1 {
            let rest = unflatten(&dims[2..], index);
            let label: Vec<String> = rest.iter().map(usize::to_string).collect();
            let _ = writeln!(out, "  slice [*, *, {}]:", label.join(", "));
        }
        for row in 0..rows {
            let line: Vec<String> = (0..cols)
                .map(|col| format!("{:<width$}", cells[(row * cols + col) * slices + index]))
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
    }
    out
}

/// Writes `text` to `out` and flushes it.
pub fn print(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write output", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn optimal(dims: &[usize], payload: &[Option<&str>]) -> OptimalReport {
        OptimalReport {
            dims: dims.to_vec(),
            volume: 0,
            fullness: 0,
            payload: payload.iter().map(|w| w.map(str::to_owned)).collect(),
        }
    }

    #[test]
    fn two_dimensional_grid_has_rows_along_axis_zero() {
        let payload = [
            Some("one"),
            Some("three"),
            Some("two"),
            Some("four"),
            None,
            None,
        ];
        assert_eq!(
            grid(&optimal(&[3, 2], &payload)),
            "  one    three\n  two    four\n  ·      ·\n"
        );
    }

    #[test]
    fn three_dimensional_grid_prints_one_slice_per_extra_coordinate() {
        let words = ["a", "b", "c", "e", "d", "f", "g", "h"];
        let payload: Vec<Option<&str>> = words.iter().map(|w| Some(*w)).collect();
        // Position order of [2,2,2]: 000 001 010 100 011 101 110 111.
        assert_eq!(
            grid(&optimal(&[2, 2, 2], &payload)),
            "  slice [*, *, 0]:\n  a  c\n  e  g\n  slice [*, *, 1]:\n  b  d\n  f  h\n"
        );
    }

    #[test]
    fn a_report_without_an_ortho_says_so_in_both_forms() {
        let empty = VersionReport {
            version: Version::FIRST,
            vocabulary: 0,
            orthos: 0,
            frontier: 0,
            optimal: None,
        };
        assert_eq!(
            report(&empty, true),
            "{\"version\":1,\"vocabulary\":0,\"orthos\":0,\"frontier\":0,\"optimal\":null}\n"
        );
        assert_eq!(
            report(&empty, false),
            "version 1: vocabulary 0, orthos 0, frontier 0\noptimal: none\n"
        );
    }
}
