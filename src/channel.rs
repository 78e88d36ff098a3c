//! The connection to a coordinator that every client makes (the client
//! subcommands, the worker and `top`): the URL checked, plain text for
//! `http://`, TLS for `https://` ([`Target`]), the bearer token sent with
//! every call, and a failure said in one sentence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::auth::BearerToken;
use crate::error::{Error, Result};
use crate::proto::v1;
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
            .max_decoding_message_size(crate::proto::MAX_MESSAGE_BYTES),
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

    /// Connects to the coordinator with the token.
    pub async fn connect(&self) -> Result<Client> {
        let target = self.target()?;
        let client = connect_to(&target, self.bearer()?).await?;
        Ok(client)
    }
}

/// An rpc's error status: a connection that broke or could not be made is
/// [`Error::Connect`] with one sentence saying why; any other status is the
/// coordinator's answer, [`Error::Rpc`].
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        // A connection that broke or could not be made: say why in one
        // sentence, rather than as the coordinator's answer.
        if let Some(source) = crate::tls::transport_failure(&status) {
            tracing::debug!(chain = %crate::tls::causes(source), "connection failed");
            return Self::Connect(crate::tls::explain_failure(None, source));
        }
        if status.code() == tonic::Code::Unauthenticated {
            return Self::Unauthenticated(status.message().to_owned());
        }
        Self::Rpc {
            code: format!("{:?}", status.code()),
            message: status.message().to_owned(),
        }
    }
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
