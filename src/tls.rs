//! TLS for fold's gRPC traffic: rustls with its ring provider, through
//! tonic's TLS support.
//!
//! The coordinator's identity comes from PEM files (`serve --tls-cert
//! --tls-key`); clients and workers verify it against the CA of `--ca-cert`,
//! or against the system's roots when none is given. This module also turns
//! a failed connection (refused, wrong CA, TLS spoken to a plain-text server
//! or the other way round) into one sentence an operator can act on, instead
//! of a chain of hyper and h2 errors.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

/// How long a TLS handshake may take, on either side.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The coordinator's TLS settings from its certificate chain and private
/// key, both PEM files; either file missing or not PEM is a one-line error.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTlsConfig> {
    let cert_pem = read_pem(cert, "--tls-cert", "CERTIFICATE-----", "a PEM certificate")?;
    let key_pem = read_pem(key, "--tls-key", "PRIVATE KEY-----", "a PEM private key")?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .timeout(HANDSHAKE_TIMEOUT))
}

/// What a client or worker trusts: the CA certificate of `ca_cert` (a PEM
/// file), or the system's roots when it is `None`.
pub fn client_config(ca_cert: Option<&Path>) -> Result<ClientTlsConfig> {
    let config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
    Ok(match ca_cert {
        Some(path) => {
            let pem = read_pem(path, "--ca-cert", "CERTIFICATE-----", "a PEM certificate")?;
            config.ca_certificate(Certificate::from_pem(pem))
        }
        None => config.with_native_roots(),
    })
}

/// Reads a PEM file given by `flag`, refusing one without a `marker` block.
fn read_pem(path: &Path, flag: &str, marker: &str, what: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("cannot read {flag} {}", path.display()), e))?;
    if !String::from_utf8_lossy(&bytes).contains(marker) {
        return Err(Error::BadText(format!(
            "{flag} {} is not {what} (no `-----BEGIN ...{marker}` block)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// One sentence saying why a connection to the coordinator at `url` (when
/// known) failed, read off the error's chain of causes.
pub fn explain_failure(url: Option<&str>, error: &(dyn std::error::Error + 'static)) -> String {
    let chain = causes(error);
    let lower = chain.to_lowercase();
    let has = |needle: &str| lower.contains(&needle.to_lowercase());
    let at = url.map_or_else(String::new, |url| format!(" at {url}"));
    let https = url.is_some_and(|url| {
        url.get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    });
    if has("UnknownIssuer") || has("BadSignature") {
        format!(
            "the coordinator{at} presented a TLS certificate that no trusted CA signed; pass \
             the CA certificate that signed it with --ca-cert"
        )
    } else if has("NotValidForName") {
        format!(
            "the coordinator's TLS certificate is not valid for the host name{at}; connect by \
             a name or address the certificate lists"
        )
    } else if has("invalid peer certificate") {
        format!(
            "the coordinator{at} presented a TLS certificate that cannot be trusted ({})",
            last_cause(error)
        )
    } else if https && (has("corrupt message") || has("InvalidContentType")) {
        format!("the coordinator{at} does not speak TLS; use an http:// URL")
    } else if has("connection refused") {
        format!("cannot connect to the coordinator{at}: connection refused (is it running?)")
    } else if has("timed out") || has("deadline has elapsed") {
        format!("cannot connect to the coordinator{at}: timed out")
    } else if has("dns error") || has("failed to lookup address") {
        format!(
            "cannot connect to the coordinator{at}: its host name does not resolve ({})",
            last_cause(error)
        )
    } else if !https && (has("h2 protocol error") || has("frame with invalid size")) {
        format!(
            "the coordinator{at} broke off the HTTP/2 handshake; if it serves TLS, use an \
             https:// URL (with --ca-cert for a private CA)"
        )
    } else {
        format!("the connection to the coordinator{at} failed: {chain}")
    }
}

/// Whether the server at `authority` (`host:port`) is a TLS server: sent
/// the start of a plain-text HTTP/2 connection, a TLS server answers with a
/// TLS record (an alert, content type 21) where an HTTP/2 server answers
/// with a SETTINGS frame. Any doubt (no answer, an error) reads as no.
///
/// A plain-text client that reaches a TLS server otherwise fails only at
/// its first rpc, with an h2 error that says nothing of TLS; this check lets
/// it say what to do instead.
pub async fn serves_tls(authority: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    const TLS_ALERT: u8 = 21;
    const TLS_HANDSHAKE: u8 = 22;
    let wait = std::time::Duration::from_secs(2);
    let answer = tokio::time::timeout(wait, async {
        let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        stream.write_all(PREFACE).await.ok()?;
        let mut first = [0u8; 1];
        (stream.read(&mut first).await.ok()? == 1).then_some(first[0])
    })
    .await;
    matches!(answer, Ok(Some(TLS_ALERT | TLS_HANDSHAKE)))
}

/// An error with its chain of causes ("transport error: connection refused"),
/// a cause repeated word for word by layered transports shown once.
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if parts.last() != Some(&part) {
            parts.push(part);
        }
        cause = inner.source();
    }
    parts.join(": ")
}

/// The innermost cause of an error.
fn last_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(inner) = last.source() {
        last = inner;
    }
    last.to_string()
}

/// The transport error behind a gRPC status, if the status came from the
/// connection failing or breaking rather than from the coordinator's answer
/// (tonic gives such statuses the transport error as their source).
pub fn transport_failure(status: &tonic::Status) -> Option<&(dyn std::error::Error + 'static)> {
    std::error::Error::source(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);
    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    fn chain(parts: &[&'static str]) -> Chain {
        parts
            .iter()
            .rev()
            .fold(None, |inner, part| Some(Chain(part, inner.map(Box::new))))
            .unwrap()
    }

    #[test]
    fn failures_become_one_sentence_with_what_to_do() {
        let unknown = chain(&["transport error", "invalid peer certificate: UnknownIssuer"]);
        let text = explain_failure(Some("https://127.0.0.1:1"), &unknown);
        assert!(text.contains("--ca-cert"), "{text}");
        let refused = chain(&["transport error", "Connection refused (os error 111)"]);
        let text = explain_failure(Some("http://127.0.0.1:1"), &refused);
        assert!(text.contains("connection refused"), "{text}");
        let plain = chain(&["h2 protocol error", "http2 error"]);
        let text = explain_failure(None, &plain);
        assert!(text.contains("https://"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "hello").unwrap();
        let error = client_config(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("--ca-cert") && error.contains("not a PEM"),
            "{error}"
        );
        let missing = client_config(Some(&dir.path().join("none.pem")))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read --ca-cert"), "{missing}");
    }
}
