//! The client subcommands of `fold-coordinator` (`submit`, `status`,
//! `optimal`): they talk to a running coordinator (through [`crate::channel`])
//! and print what it says in the same formats as `run`.

use std::io::Write;
use std::path::PathBuf;

use crate::channel::{Client, Connection};
use crate::error::{Error, Result};
use crate::progress::VersionBar;
use crate::proto::{self, TEXT_CHUNK_BYTES, v1};
use crate::text::read_text_file;

/// How `submit` behaves.
#[derive(Clone, Debug)]
pub struct SubmitOptions {
    /// Wait for each version to finish and print its figures.
    pub wait: bool,
    /// Print JSON.
    pub json: bool,
    /// No progress line.
    pub quiet: bool,
}

/// Submits `files` in order, each as the next version.
pub async fn submit(
    connection: &Connection,
    files: &[PathBuf],
    options: &SubmitOptions,
    out: &mut dyn Write,
) -> Result<()> {
    // Read everything first, so a bad file is refused before anything is sent.
    let texts = files
        .iter()
        .map(|path| read_text_file(path).map(|text| (path, text)))
        .collect::<Result<Vec<_>>>()?;
    let mut client = connection.connect().await?;
    for (path, text) in texts {
        let name = path.display().to_string();
        let chunks = text_chunks(&name, text.into_bytes());
        let reply = client
            .submit(tokio_stream::iter(chunks))
            .await?
            .into_inner();
        if !options.wait {
            let line = if options.json {
                serde_json::json!({"version": reply.version, "source": name, "bytes": reply.bytes, "hash": reply.hash})
                    .to_string()
            } else {
                format!(
                    "submitted {name} as version {} ({} bytes)",
                    reply.version, reply.bytes
                )
            };
            write_line(out, &line)?;
            continue;
        }
        let status = wait_for(&mut client, reply.version, !options.quiet).await?;
        let report = proto::report_of(&status);
        let text = if options.json {
            report.to_json_line() + "\n"
        } else {
            report.to_text()
        };
        write_all(out, &text)?;
    }
    Ok(())
}

/// A text as Submit chunks; the first carries the name.
fn text_chunks(name: &str, bytes: Vec<u8>) -> Vec<v1::SubmitChunk> {
    let mut chunks: Vec<v1::SubmitChunk> = bytes
        .chunks(TEXT_CHUNK_BYTES)
        .map(|data| v1::SubmitChunk {
            data: data.to_vec(),
            name: String::new(),
        })
        .collect();
    if chunks.is_empty() {
        chunks.push(v1::SubmitChunk::default());
    }
    chunks[0].name = name.to_owned();
    chunks
}

/// Watches a version until it is done, drawing a progress bar on stderr.
async fn wait_for(client: &mut Client, version: u32, progress: bool) -> Result<v1::VersionStatus> {
    let mut bar = VersionBar::new(version, progress);
    let mut updates = client
        .watch_status(v1::StatusRequest {
            version,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(reply) = updates.message().await? {
        let Some(status) = reply.versions.into_iter().next() else {
            continue;
        };
        bar.update(
            status.units_done,
            status.units_total,
            status.orthos,
            reply.workers,
            reply.orthos_per_second,
        );
        let done = status.state() == v1::VersionState::Done;
        last = Some(status);
        if done {
            break;
        }
    }
    bar.finish();
    match last {
        Some(status) if status.state() == v1::VersionState::Done => Ok(status),
        _ => Err(Error::Connect(format!(
            "the status stream of version {version} ended before it was done"
        ))),
    }
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusOptions {
    /// One JSON object per version per line.
    pub json: bool,
    /// Also list up to this many units of each version (0: none).
    pub units: u32,
    /// Also list the connected workers.
    pub workers: bool,
}

/// Prints the status of every version.
pub async fn status(
    connection: &Connection,
    options: StatusOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let mut client = connection.connect().await?;
    let reply = client
        .status(v1::StatusRequest {
            units: options.units,
            workers: options.workers,
            ..Default::default()
        })
        .await?
        .into_inner();
    for status in &reply.versions {
        let report = proto::report_of(status);
        let line = if options.json {
            let mut object = report.to_json();
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
            object.to_string()
        } else {
            format!(
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
            )
        };
        write_line(out, &line)?;
        if options.units > 0 && !options.json {
            for unit in &status.units {
                write_line(out, &unit_line(unit))?;
            }
        }
    }
    if options.workers && options.json {
        let workers: Vec<_> = reply.worker_list.iter().map(worker_json).collect();
        write_line(out, &serde_json::json!({ "workers": workers }).to_string())?;
    } else if options.workers {
        for worker in &reply.worker_list {
            write_line(out, &worker_line(worker))?;
        }
    }
    if !options.json {
        write_line(
            out,
            &format!(
                "{} version(s), {} worker(s) connected, {:.0} orthos/s, {} bytes exchanged with workers",
                reply.versions.len(),
                reply.workers,
                reply.orthos_per_second,
                reply.worker_wire_bytes
            ),
        )?;
    }
    Ok(())
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
        line += &format!(" on worker {worker} ({name})");
    }
    line += &format!(
        ", attempts {} ({} discarded), counted {}, orthos {}, frontier {}, {:.1} s",
        unit.attempts_started,
        unit.attempts_discarded,
        unit.times_counted,
        unit.orthos,
        unit.frontier,
        unit.elapsed_ms as f64 / 1000.0
    );
    if unit.parent > 0 {
        line += &format!(", split from unit {}", unit.parent);
    }
    if unit.split_into > 0 {
        line += &format!(", split into {} units", unit.split_into);
    }
    if unit.base_version > 0 {
        line += &format!(", brought up from version {}", unit.base_version);
    }
    line
}

/// Prints the optimal ortho of a version (0 = the latest).
pub async fn optimal(
    connection: &Connection,
    version: u32,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut client = connection.connect().await?;
    let reply = client
        .optimal(v1::OptimalRequest { version })
        .await?
        .into_inner();
    let optimal = reply.optimal.as_ref().map(proto::optimal_of);
    let text = if json {
        serde_json::json!({"version": reply.version, "state": reply.state().name(), "optimal": optimal})
            .to_string()
            + "\n"
    } else {
        match &optimal {
            None => format!(
                "version {} ({}): no ortho\n",
                reply.version,
                reply.state().name()
            ),
            Some(optimal) => format!(
                "version {} ({}): dims {:?}, volume {}, fullness {}\n{}",
                reply.version,
                reply.state().name(),
                optimal.dims,
                optimal.volume,
                optimal.fullness,
                optimal.grid()
            ),
        }
    };
    write_all(out, &text)
}

fn write_line(out: &mut dyn Write, line: &str) -> Result<()> {
    write_all(out, &format!("{line}\n"))
}

fn write_all(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write output", e))
}
