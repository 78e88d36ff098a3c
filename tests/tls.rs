//! TLS end to end: a coordinator serving a certificate of a test CA made
//! here (rcgen), with submit, status, a worker and the real `grpcurl
//! -cacert` giving the golden figures over TLS; plain-text clients, clients
//! that do not trust the CA, and TLS clients of a plain-text coordinator
//! refused with one clear line; health for probes in plain text beside TLS.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{
    Cluster, Process, TOKEN, TestCerts, assert_figures, assert_finished, free_port, grpcurl,
    output_within, succeeded,
};
use serde_json::Value;

/// The one stderr line of a failed client, checked to be an error line.
fn one_error_line(output: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: not one line:\n{stderr}");
    assert!(
        lines[0].starts_with("fold-coordinator: error: "),
        "{what}: {stderr}"
    );
    lines[0].to_owned()
}

/// `fold-coordinator status` against `url` with extra flags.
fn status_at(url: &str, flags: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
    command
        .args(["status", "--token", TOKEN, "--coordinator", url])
        .args(flags)
        .env_remove("FOLD_TOKEN");
    output_within(command, Duration::from_secs(30))
}

#[test]
fn submit_status_a_worker_and_grpcurl_work_over_tls_with_golden_figures() {
    let cluster = Cluster::start_tls(1, 1, &[]);
    let certs = cluster.certs.as_ref().unwrap();
    assert!(cluster.coordinator.url().starts_with("https://"));
    for name in ["square", "ts_0_2k"] {
        let case = common::case(name);
        // Each case is the next version on this one coordinator, so only
        // the first can be compared with its golden figures as a whole.
        let reports = cluster.coordinator.submit_and_wait(&case.texts);
        if name == "square" {
            assert_figures(name, 0, &reports[0], &case.after_each_text[0]);
        }
    }
    let status = cluster.coordinator.status();
    assert_eq!(status.len(), 2);
    for line in &status {
        assert_finished(line);
    }
    let square = common::case("square");
    assert_figures("square", 0, &status[0], &square.after_each_text[0]);

    // grpcurl with the CA: reflection, health and the token-guarded Status.
    let address = cluster.coordinator.address();
    let ca = certs.ca.to_str().unwrap();
    let listed = succeeded(&grpcurl(&["-cacert", ca, &address, "list"]), "list");
    assert!(listed.contains("fold.v1.Coordinator"), "{listed}");
    let health = succeeded(
        &grpcurl(&[
            "-cacert",
            ca,
            "-d",
            "{}",
            &address,
            "grpc.health.v1.Health/Check",
        ]),
        "health",
    );
    assert!(health.contains("\"SERVING\""), "{health}");
    let header = format!("authorization: Bearer {TOKEN}");
    let reply = succeeded(
        &grpcurl(&[
            "-cacert",
            ca,
            "-H",
            &header,
            "-d",
            r#"{"version": 1}"#,
            &address,
            "fold.v1.Coordinator/Status",
        ]),
        "Status",
    );
    let reply: Value = serde_json::from_str(&reply).unwrap();
    let version = &reply["versions"][0];
    let expected = &square.after_each_text[0];
    // grpcurl prints 64-bit integers as strings.
    assert_eq!(version["orthos"], expected["orthos"].to_string(), "{reply}");
    assert_eq!(version["state"], "VERSION_STATE_DONE", "{reply}");

    // grpcurl without the CA, or in plain text, gets nowhere.
    let untrusted = grpcurl(&[
        "-cacert",
        certs.other_ca.to_str().unwrap(),
        &address,
        "list",
    ]);
    assert!(!untrusted.status.success());
    // (grpcurl keeps retrying a plain-text handshake until its timeout.)
    let plain = grpcurl(&["-plaintext", "-connect-timeout", "1", &address, "list"]);
    assert!(!plain.status.success());
}

#[test]
fn plain_text_and_untrusting_clients_are_refused_in_one_line() {
    let cluster = Cluster::start_tls(0, 1, &[]);
    let certs = cluster.certs.as_ref().unwrap();
    let port = cluster.coordinator.port;
    let https = format!("https://127.0.0.1:{port}");
    let ca = certs.ca.to_str().unwrap();
    succeeded(&status_at(&https, &["--ca-cert", ca]), "status with the CA");
    succeeded(
        &status_at(&format!("https://localhost:{port}"), &["--ca-cert", ca]),
        "status by host name",
    );

    let plain = one_error_line(
        &status_at(&format!("http://127.0.0.1:{port}"), &[]),
        "plain text",
    );
    assert!(
        plain.contains(&format!("serves TLS; use https://127.0.0.1:{port}")),
        "{plain}"
    );
    let other = certs.other_ca.to_str().unwrap();
    for flags in [&["--ca-cert", other][..], &[]] {
        let untrusted = one_error_line(&status_at(&https, flags), "untrusted");
        assert!(
            untrusted.contains("no trusted CA signed") && untrusted.contains("--ca-cert"),
            "{untrusted}"
        );
    }
    let not_pem = cluster.write_file("not.pem", b"hello");
    let line = one_error_line(
        &status_at(&https, &["--ca-cert", not_pem.to_str().unwrap()]),
        "not PEM",
    );
    assert!(line.contains("is not a PEM certificate"), "{line}");
    let line = one_error_line(
        &status_at(&format!("http://127.0.0.1:{port}"), &["--ca-cert", ca]),
        "CA with http",
    );
    assert!(line.contains("is for https:// URLs"), "{line}");

    // A TLS client of a plain-text coordinator.
    let plain_cluster = Cluster::start(0, 1, &[]);
    let url = format!("https://127.0.0.1:{}", plain_cluster.coordinator.port);
    let line = one_error_line(&status_at(&url, &["--ca-cert", ca]), "https to plain");
    assert!(
        line.contains("does not speak TLS; use an http:// URL"),
        "{line}"
    );

    // A worker that does not trust the CA says why, and keeps trying.
    let log = cluster.dir.path().join("untrusting-worker.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fold-worker"));
    command
        .args([
            "--token",
            TOKEN,
            "--coordinator",
            &https,
            "--ca-cert",
            other,
        ])
        .arg("--data-dir")
        .arg(cluster.dir.path().join("untrusting-worker"))
        .env_remove("FOLD_TOKEN");
    let mut worker = Process::spawn("fold-worker", command, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !worker.log().contains("no trusted CA signed") {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not say why: {}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(worker.is_running());
    assert_eq!(cluster.coordinator.workers_connected(), 0);
}

#[test]
fn health_is_served_in_plain_text_for_probes_beside_tls() {
    let health_port = free_port();
    let listen = format!("127.0.0.1:{health_port}");
    let cluster = Cluster::start_tls(0, 1, &["--health-listen", &listen]);
    let check = grpcurl(&[
        "-plaintext",
        "-d",
        "{}",
        &listen,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(
        succeeded(&check, "plain-text health").contains("\"SERVING\""),
        "{check:?}"
    );
    let named = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service": "fold.v1.Coordinator"}"#,
        &listen,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(succeeded(&named, "named health").contains("\"SERVING\""));
    // Only health is there: the Coordinator stays behind TLS and the token.
    let header = format!("authorization: Bearer {TOKEN}");
    let status = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        "-d",
        "{}",
        "-import-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/proto"),
        "-proto",
        "fold/v1/fold.proto",
        &listen,
        "fold.v1.Coordinator/Status",
    ]);
    assert!(!status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("Unimplemented"),
        "{status:?}"
    );
    drop(cluster);
}

#[test]
fn serve_refuses_missing_or_malformed_certificate_files_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path());
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = dir.path().join("missing.pem");
    let stranger = dir.path().join("stranger.key");
    std::fs::write(
        &stranger,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    for (cert, key, expected) in [
        (&missing, &certs.key, "cannot read --tls-cert"),
        (&certs.cert, &not_pem, "is not a PEM private key"),
        (&certs.key, &certs.key, "is not a PEM certificate"),
        (&certs.cert, &certs.ca, "is not a PEM private key"),
        // A key that does not go with the certificate.
        (&certs.cert, &stranger, "cannot serve TLS with --tls-cert"),
    ] {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
        serve
            .args(["serve", "--token", TOKEN, "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env_remove("FOLD_TOKEN");
        let output = output_within(serve, Duration::from_secs(20));
        let line = one_error_line(&output, expected);
        assert!(line.contains(expected), "{line}");
        assert!(!dir.path().join("state").exists());
    }
}
