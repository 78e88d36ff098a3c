//! The client subcommands of `fold-coordinator` (`submit`, `status`,
//! `optimal`): they talk to a running coordinator and print what it says in
//! the same formats as `run`. Also the connection every client (the worker
//! and `top` too) makes: the URL checked, plain text for `http://`, TLS for
//! `https://` ([`Target`]), and a failure said in one sentence.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::coordinator::auth::BearerToken;
use crate::coordinator::service::TEXT_CHUNK_BYTES;
use crate::embedded::read_text_file;
use crate::error::{Error, Result};
use crate::progress::VersionBar;
use crate::proto::{self, v1};
use crate::tls;

/// Default coordinator URL of the client subcommands.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

/// A Coordinator client that sends the bearer token with every call.
pub type Client = v1::coordinator_client::CoordinatorClient<
    tonic::service::interceptor::InterceptedService<Channel, BearerToken>,
>;

/// Refuses a coordinator URL fold cannot honour: `http://` (plain text) and
/// `https://` (TLS) are spoken, nothing else.
pub fn check_url(url: &str) -> Result<()> {
    let refuse = |why: String| Err(Error::BadText(format!("coordinator URL {url}: {why}")));
    match url.split_once("://") {
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            Ok(())
        }
        Some((scheme, _)) => refuse(format!(
            "{scheme}:// is not supported; use http://HOST:PORT, or https://HOST:PORT for TLS"
        )),
        None => refuse("no scheme; use http://HOST:PORT, or https://HOST:PORT for TLS".into()),
    }
}

/// A coordinator to connect to: its URL, checked, and for an `https://` URL
/// what its certificate is verified against. Made once (reading the CA
/// file), used for every connection.
#[derive(Clone, Debug)]
pub struct Target {
    url: String,
    tls: Option<ClientTlsConfig>,
}

impl Target {
    /// The coordinator at `url`; `ca_cert` is the PEM file of the CA that
    /// signed its certificate (`None`: the system's roots), and only goes
    /// with an `https://` URL.
    pub fn new(url: &str, ca_cert: Option<&Path>) -> Result<Self> {
        check_url(url)?;
        let https = url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let tls = match (https, ca_cert) {
            (true, ca_cert) => Some(tls::client_config(ca_cert)?),
            (false, None) => None,
            (false, Some(path)) => {
                return Err(Error::BadText(format!(
                    "--ca-cert {} is for https:// URLs; the coordinator URL {url} is plain \
                     http://",
                    path.display()
                )));
            }
        };
        Ok(Self {
            url: url.to_owned(),
            tls,
        })
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Connects to the coordinator at `url` (see [`check_url`]), trusting the
/// system's roots for an `https://` URL.
pub async fn connect(url: &str, token: BearerToken) -> Result<Client> {
    connect_to(&Target::new(url, None)?, token).await
}

/// Connects to `target`. HTTP/2 keepalive pings notice a coordinator that
/// vanished without closing the connection. A failure is one sentence
/// saying why (see [`tls::explain_failure`]).
pub async fn connect_to(target: &Target, token: BearerToken) -> Result<Client> {
    let url = target.url();
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::BadText(format!("bad coordinator URL {url}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if let Some(tls) = &target.tls {
        endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
            Error::BadText(format!("cannot use TLS for {url}: {}", tls::causes(&e)))
        })?;
    }
    // A plain-text client would otherwise learn that the server speaks TLS
    // only from a baffling h2 error at its first rpc. Asked before the
    // channel connects, so that the check never waits behind the channel's
    // own connection at a coordinator's connection limit.
    if target.tls.is_none()
        && let Some(authority) = channel_authority(url)
        && tls::serves_tls(&authority).await
    {
        return Err(Error::Connect(format!(
            "the coordinator at {url} serves TLS; use https://{authority} (with --ca-cert for \
             a private CA)"
        )));
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Error::Connect(tls::explain_failure(Some(url), &e)))?;
    Ok(
        v1::coordinator_client::CoordinatorClient::with_interceptor(channel, token)
            .max_decoding_message_size(crate::coordinator::MAX_MESSAGE_BYTES),
    )
}

/// The `host:port` of a URL (port 80 when it has none, as for http://).
fn channel_authority(url: &str) -> Option<String> {
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    Some(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
}

/// Where the coordinator is and how to prove who we are.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The coordinator's URL.
    pub coordinator: String,
    /// The bearer token.
    pub token: Option<String>,
    /// The CA certificate that signed the coordinator's TLS certificate
    /// (`https://` only; `None`: the system's roots).
    pub ca_cert: Option<PathBuf>,
}

impl Connection {
    /// The coordinator to connect to.
    pub fn target(&self) -> Result<Target> {
        Target::new(&self.coordinator, self.ca_cert.as_deref())
    }

    /// The token to send.
    pub fn bearer(&self) -> Result<BearerToken> {
        BearerToken::new(self.token.as_deref())
    }

    async fn connect(&self) -> Result<Client> {
        let target = self.target()?;
        let client = connect_to(&target, self.bearer()?).await?;
        Ok(client)
    }
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
        let done = status.state == "done";
        last = Some(status);
        if done {
            break;
        }
    }
    bar.finish();
    match last {
        Some(status) if status.state == "done" => Ok(status),
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
    fn http_and_https_urls_are_accepted_and_nothing_else() {
        for fine in ["http://127.0.0.1:50051", "HTTP://host:1/", "https://host:1"] {
            assert!(check_url(fine).is_ok(), "{fine}");
        }
        for bad in ["ftp://host:1", "host:1", "unix:///tmp/socket"] {
            let error = check_url(bad).unwrap_err().to_string();
            assert!(error.contains("use http://HOST:PORT"), "{error}");
        }
    }

    #[test]
    fn a_ca_certificate_goes_with_https_only() {
        let error = Target::new("http://host:1", Some(Path::new("ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(error.contains("is for https:// URLs"), "{error}");
    }
}
