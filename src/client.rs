//! The client subcommands of `fold-coordinator` (`submit`, `status`,
//! `optimal`): they talk to a running coordinator and print what it says in
//! the same formats as `run`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::coordinator::auth::BearerToken;
use crate::coordinator::service::TEXT_CHUNK_BYTES;
use crate::embedded::read_text_file;
use crate::error::{Error, Result};
use crate::proto::{self, v1};

/// Default coordinator URL of the client subcommands.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

/// A Coordinator client that sends the bearer token with every call.
pub type Client = v1::coordinator_client::CoordinatorClient<
    tonic::service::interceptor::InterceptedService<Channel, BearerToken>,
>;

/// Refuses a coordinator URL fold cannot honour. Only `http://` is spoken:
/// TLS is not supported yet, and connecting to an `https://` URL in plain
/// text would send the token in the clear while promising otherwise.
pub fn check_url(url: &str) -> Result<()> {
    let refuse = |why: String| Err(Error::BadText(format!("coordinator URL {url}: {why}")));
    match url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => Ok(()),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => refuse(format!(
            "TLS is not supported yet; use http://{rest} on a network you trust (the token \
             travels in plain text)"
        )),
        Some((scheme, _)) => refuse(format!(
            "{scheme}:// is not supported; use http://HOST:PORT"
        )),
        None => refuse("no scheme; use http://HOST:PORT".into()),
    }
}

/// Connects to the coordinator at `url` (see [`check_url`]). HTTP/2
/// keepalive pings notice a coordinator that vanished without closing the
/// connection.
pub async fn connect(url: &str, token: BearerToken) -> Result<Client> {
    check_url(url)?;
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::BadText(format!("bad coordinator URL {url}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|e| {
            Error::io(
                format!("cannot connect to the coordinator at {url}"),
                std::io::Error::other(with_causes(&e)),
            )
        })?;
    Ok(
        v1::coordinator_client::CoordinatorClient::with_interceptor(channel, token)
            .max_decoding_message_size(crate::coordinator::MAX_MESSAGE_BYTES),
    )
}

/// Where the coordinator is and how to prove who we are.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The coordinator's URL.
    pub coordinator: String,
    /// The bearer token.
    pub token: Option<String>,
}

impl Connection {
    async fn connect(&self) -> Result<Client> {
        connect(&self.coordinator, BearerToken::new(self.token.as_deref())?).await
    }
}

/// An error with its chain of causes ("transport error: connection refused").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        // Layered transports often repeat a cause word for word.
        if parts.last() != Some(&part) {
            parts.push(part);
        }
        cause = inner.source();
    }
    parts.join(": ")
}

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

/// Watches a version until it is done, drawing a progress line on stderr.
async fn wait_for(client: &mut Client, version: u32, progress: bool) -> Result<v1::VersionStatus> {
    let progress = progress && std::io::stderr().is_terminal();
    let mut updates = client
        .watch_status(v1::StatusRequest { version, units: 0 })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(reply) = updates.message().await? {
        let Some(status) = reply.versions.into_iter().next() else {
            continue;
        };
        if progress {
            eprint!(
                "\r\x1b[2Kversion {}: units {}/{}, {} orthos, {} workers, {:.0} orthos/s",
                status.version,
                status.units_done,
                status.units_total,
                status.orthos,
                reply.workers,
                reply.orthos_per_second
            );
        }
        let done = status.state == "done";
        last = Some(status);
        if done {
            break;
        }
    }
    if progress {
        eprint!("\r\x1b[2K");
    }
    match last {
        Some(status) if status.state == "done" => Ok(status),
        _ => Err(Error::Rpc {
            code: "Unavailable".into(),
            message: format!("the status stream of version {version} ended before it was done"),
        }),
    }
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusOptions {
    /// One JSON object per version per line.
    pub json: bool,
    /// Also list up to this many units of each version (0: none).
    pub units: u32,
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
            version: 0,
            units: options.units,
        })
        .await?
        .into_inner();
    for status in &reply.versions {
        let report = proto::report_of(status);
        let line = if options.json {
            let mut object = report.to_json();
            let mut extra = serde_json::json!({
                "state": status.state,
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
                status.state,
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

/// One unit as a JSON object; the worker is `null` unless it is running.
fn unit_json(unit: &v1::UnitStatus) -> serde_json::Value {
    serde_json::json!({
        "unit": unit.unit,
        "created": unit.created,
        "parent": unit.parent,
        "state": unit.state,
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
        unit.unit, unit.roots, unit.excluded, unit.state
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
        serde_json::json!({"version": reply.version, "state": reply.state, "optimal": optimal})
            .to_string()
            + "\n"
    } else {
        match &optimal {
            None => format!("version {} ({}): no ortho\n", reply.version, reply.state),
            Some(optimal) => format!(
                "version {} ({}): dims {:?}, volume {}, fullness {}\n{}",
                reply.version,
                reply.state,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_accepted() {
        for fine in ["http://127.0.0.1:50051", "HTTP://host:1/"] {
            assert!(check_url(fine).is_ok(), "{fine}");
        }
        let https = check_url("https://host:1").unwrap_err().to_string();
        assert!(https.contains("TLS is not supported yet"), "{https}");
        assert!(https.contains("http://host:1"), "{https}");
        for bad in ["ftp://host:1", "host:1", "unix:///tmp/socket"] {
            let error = check_url(bad).unwrap_err().to_string();
            assert!(error.contains("use http://HOST:PORT"), "{error}");
        }
    }
}
