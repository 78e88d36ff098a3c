//! The gRPC surface as an operator meets it: `grpcurl` (which must be on
//! PATH — these tests fail rather than skip without it) against a real
//! coordinator, reflection, health, the bearer token, and bad or hostile
//! input that must be refused with the right status code while the
//! coordinator keeps serving.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use fold::auth::BearerToken;
use fold::proto::v1;
use fold::report::VersionReport;
use fold::search::Unobserved;
use fold::{Interner, SearchConfig};
use serde_json::Value;

use common::{Cluster, TOKEN, assert_figures, assert_finished, failed, grpcurl, succeeded};

fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}")
}

/// `grpcurl -plaintext ARGS ADDRESS METHOD` with an optional header.
fn call(cluster: &Cluster, header: Option<&str>, data: &str, method: &str) -> std::process::Output {
    let address = cluster.coordinator.address();
    let mut args = vec!["-plaintext"];
    if let Some(header) = header {
        args.extend(["-H", header]);
    }
    args.extend(["-d", data, &address, method]);
    grpcurl(&args)
}

/// The services `grpcurl list` shows.
fn listed_services(cluster: &Cluster) -> Vec<String> {
    let listed = grpcurl(&["-plaintext", &cluster.coordinator.address(), "list"]);
    succeeded(&listed, "grpcurl list")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn square_text() -> PathBuf {
    common::case("square").texts[0].clone()
}

/// Submits sq.txt and waits: it must come out as `version` with the
/// square's golden figures when it is the only text.
fn submit_square(cluster: &Cluster) -> Value {
    let reports = cluster.coordinator.submit_and_wait(&[square_text()]);
    assert_eq!(reports.len(), 1);
    reports[0].clone()
}

#[test]
fn grpcurl_lists_the_coordinator_and_reflection() {
    let cluster = Cluster::start(0, 1, &[]);
    let services = listed_services(&cluster);
    assert!(
        services.iter().any(|s| s == "fold.v1.Coordinator"),
        "{services:?}"
    );
    assert!(
        services.iter().any(|s| s.starts_with("grpc.reflection.")),
        "{services:?}"
    );
}

#[test]
fn grpcurl_lists_every_service() {
    let cluster = Cluster::start(0, 1, &[]);
    let services = listed_services(&cluster);
    for service in ["fold.v1.Coordinator", "grpc.health.v1.Health"] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} missing: {services:?}"
        );
    }
    assert!(
        services
            .iter()
            .any(|s| s == "grpc.reflection.v1.ServerReflection"
                || s == "grpc.reflection.v1alpha.ServerReflection"),
        "reflection missing: {services:?}"
    );
    let health = call(&cluster, None, "{}", "grpc.health.v1.Health/Check");
    assert!(succeeded(&health, "Health/Check by reflection").contains("SERVING"));
}

/// grpcurl 1.8.6 speaks reflection v1alpha only; v1 is checked with tonic.
#[test]
fn reflection_v1_lists_the_coordinator() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let cluster = Cluster::start(0, 1, &[]);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let services: Vec<String> = runtime.block_on(async {
        let mut client = ServerReflectionClient::new(channel_to(&cluster.coordinator.url()).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1 answers")
            .into_inner();
        let reply = replies
            .message()
            .await
            .expect("a reply")
            .expect("one reply");
        match reply.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection reply {other:?}"),
        }
    });
    for service in ["fold.v1.Coordinator", "grpc.reflection.v1.ServerReflection"] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} missing: {services:?}"
        );
    }
}

#[test]
fn grpcurl_describes_the_coordinator_with_comments() {
    let cluster = Cluster::start(0, 1, &[]);
    let described = grpcurl(&[
        "-plaintext",
        &cluster.coordinator.address(),
        "describe",
        "fold.v1.Coordinator",
    ]);
    let description = succeeded(&described, "grpcurl describe");
    for rpc in [
        "Submit",
        "Status",
        "WatchStatus",
        "Optimal",
        "ListWorkers",
        "GetTexts",
        "Work",
    ] {
        assert!(
            description.contains(&format!("rpc {rpc} (")),
            "rpc {rpc} missing:\n{description}"
        );
    }
    for comment in [
        "The coordinator of a fold cluster.",
        "Status of every version, or of one version.",
    ] {
        assert!(
            description.contains(comment),
            "comment `{comment}` missing:\n{description}"
        );
    }
    // Messages are described from reflection too, field comments included.
    let message = grpcurl(&[
        "-plaintext",
        &cluster.coordinator.address(),
        "describe",
        "fold.v1.VersionStatus",
    ]);
    assert!(
        succeeded(&message, "describe VersionStatus")
            .contains("Attempts whose results were thrown away")
    );
}

#[test]
fn grpcurl_calls_status_with_the_token() {
    let cluster = Cluster::start(1, 1, &[]);
    submit_square(&cluster);

    let status = call(
        &cluster,
        Some(&bearer(TOKEN)),
        "{}",
        "fold.v1.Coordinator/Status",
    );
    let reply: Value = serde_json::from_str(&succeeded(&status, "Status with the token"))
        .expect("grpcurl prints JSON");
    let versions = reply["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "{reply}");
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["state"], "VERSION_STATE_DONE");
    // 64-bit integers are strings in the protobuf JSON mapping.
    assert_eq!(versions[0]["orthos"], "11");
    assert_eq!(versions[0]["source"], square_text().display().to_string());

    for (header, what) in [
        (None, "without a token"),
        (Some(bearer("wrong")), "with a wrong token"),
    ] {
        let refused = call(
            &cluster,
            header.as_deref(),
            "{}",
            "fold.v1.Coordinator/Status",
        );
        let err = failed(&refused, &format!("Status {what}"));
        assert!(err.contains("Unauthenticated"), "Status {what}: {err}");
    }

    // Health needs no token, and reflection describes it.
    let address = cluster.coordinator.address();
    for data in ["{}", r#"{"service":"fold.v1.Coordinator"}"#] {
        let health = grpcurl(&[
            "-plaintext",
            "-d",
            data,
            &address,
            "grpc.health.v1.Health/Check",
        ]);
        let reply = succeeded(&health, "Health/Check without a token");
        assert!(
            reply.contains("\"SERVING\""),
            "Health/Check {data}: {reply}"
        );
    }
}

#[test]
fn invalid_utf8_is_refused_without_using_a_version() {
    let cluster = Cluster::start(1, 1, &[]);
    let bad = cluster.write_file("bad.txt", b"one two. three \xff four.");

    // The client refuses the file before sending anything...
    let output = cluster.coordinator.client(&[
        "submit",
        bad.to_str().unwrap(),
        "--wait",
        "--json",
        "--quiet",
    ]);
    let err = failed(&output, "submit of invalid UTF-8");
    assert!(err.contains("not valid UTF-8"), "{err}");
    // ...and the coordinator refuses such bytes from any other client.
    let raw = call(
        &cluster,
        Some(&bearer(TOKEN)),
        r#"{"name":"bad","data":"b25lIP8gdHdv"}"#,
        "fold.v1.Coordinator/Submit",
    );
    let err = failed(&raw, "Submit of invalid UTF-8");
    assert!(err.contains("InvalidArgument"), "{err}");

    let report = submit_square(&cluster);
    assert_eq!(report["version"], 1, "a refused text used up a version");
    assert_figures(
        "square",
        0,
        &report,
        &common::case("square").after_each_text[0],
    );
    assert_eq!(cluster.coordinator.status().len(), 1);
}

#[test]
fn unknown_versions_and_wrong_tokens_get_their_status_codes() {
    let cluster = Cluster::start(1, 1, &[]);
    submit_square(&cluster);
    let coordinator = &cluster.coordinator;

    let err = failed(
        &coordinator.client(&["optimal", "--version", "99"]),
        "optimal 99",
    );
    assert!(err.contains("NotFound"), "{err}");
    let raw = call(
        &cluster,
        Some(&bearer(TOKEN)),
        r#"{"version":99}"#,
        "fold.v1.Coordinator/Optimal",
    );
    assert!(failed(&raw, "Optimal 99").contains("NotFound"));

    let err = failed(
        &coordinator.client_with_token(&["status", "--json"], "wrong"),
        "status with a wrong token",
    );
    assert!(err.contains("the coordinator refused the token"), "{err}");
    let err = failed(
        &coordinator.client_with_token(&["submit", square_text().to_str().unwrap()], "wrong"),
        "submit with a wrong token",
    );
    assert!(err.contains("the coordinator refused the token"), "{err}");
    assert_eq!(
        coordinator.status().len(),
        1,
        "a refused submit added a version"
    );

    let optimal = succeeded(&coordinator.client(&["optimal", "--json"]), "optimal");
    let optimal: Value = serde_json::from_str(optimal.trim()).expect("JSON");
    assert_eq!(optimal["version"], 1);
    assert_eq!(
        optimal["optimal"],
        common::case("square").after_each_text[0]["optimal"]
    );
}

#[test]
fn a_text_larger_than_one_grpc_message_is_accepted() {
    let cluster = Cluster::start(1, 1, &[]);
    let text = "the cat sat. ".repeat((5 << 20) / 13 + 1);
    assert!(text.len() > 5 << 20);
    let file = cluster.write_file("big.txt", text.as_bytes());

    let submitted =
        cluster
            .coordinator
            .client(&["submit", file.to_str().unwrap(), "--json", "--quiet"]);
    let reply = common::json_lines(&succeeded(&submitted, "submit of 5 MiB"));
    assert_eq!(reply[0]["version"], 1);
    assert_eq!(reply[0]["bytes"], text.len());

    let line = cluster
        .coordinator
        .wait_until_done(1, Duration::from_secs(60));
    assert_finished(&line);
    let interner = Interner::from_texts([text.as_str()]);
    let fresh = fold::search(&interner, &SearchConfig::default(), &mut Unobserved).unwrap();
    let expected = VersionReport::new(&interner, &fresh.figures).to_json();
    assert_figures("5 MiB of one sentence", 0, &line, &expected);
}

#[test]
fn a_text_over_max_text_bytes_is_refused_and_the_coordinator_keeps_serving() {
    let cluster = Cluster::start(1, 1, &["--max-text-bytes", "1000"]);
    let file = cluster.write_file("long.txt", "the cat sat. ".repeat(154).as_bytes());
    assert!(std::fs::metadata(&file).unwrap().len() >= 2000);

    let output =
        cluster
            .coordinator
            .client(&["submit", file.to_str().unwrap(), "--wait", "--quiet"]);
    let err = failed(&output, "submit over --max-text-bytes");
    assert!(err.contains("ResourceExhausted"), "{err}");

    let report = submit_square(&cluster);
    assert_figures(
        "square",
        0,
        &report,
        &common::case("square").after_each_text[0],
    );
}

#[test]
fn garbage_and_abandoned_streams_leave_the_coordinator_serving() {
    let mut cluster = Cluster::start(1, 1, &[]);

    // Not HTTP/2 at all, then an HTTP/2 preface followed by nonsense frames.
    let garbage: Vec<u8> = (0..10_240u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for prefix in [&b""[..], &preface[..]] {
        let mut stream = TcpStream::connect(cluster.coordinator.address()).expect("connects");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // The server may hang up part way through; that is its right.
        let _ = stream
            .write_all(prefix)
            .and_then(|()| stream.write_all(&garbage));
    }

    abandon_a_submit_mid_stream(&cluster.coordinator.url());

    let report = submit_square(&cluster);
    assert_eq!(
        report["version"], 1,
        "the abandoned submit used up a version"
    );
    assert_figures(
        "square",
        0,
        &report,
        &common::case("square").after_each_text[0],
    );
    let status = cluster.coordinator.status();
    assert_eq!(status.len(), 1, "{status:?}");
    assert_finished(&status[0]);
    assert!(cluster.coordinator.process.is_running());
    let log = cluster.coordinator.process.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Opens a Submit stream, sends one chunk, and drops the call (and its
/// connection) while the coordinator waits for the rest.
fn abandon_a_submit_mid_stream(url: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (chunks, stream) = tokio::sync::mpsc::channel(4);
    runtime.block_on(async {
        let channel = channel_to(url).await;
        let token = BearerToken::new(Some(TOKEN)).expect("token");
        let mut client =
            v1::coordinator_client::CoordinatorClient::with_interceptor(channel, token);
        chunks
            .send(v1::SubmitChunk {
                data: "the cat sat. ".repeat(10_000).into_bytes(),
                name: "abandoned".into(),
            })
            .await
            .expect("queued");
        let call = tokio::spawn(async move {
            client
                .submit(tokio_stream::wrappers::ReceiverStream::new(stream))
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !call.is_finished(),
            "the coordinator answered a Submit that had not ended"
        );
    });
    // The runtime goes first, and with it the call, the connection and the
    // task that streams the request: the sender dropped while that task still
    // ran would end the stream cleanly, making a complete submission.
    drop(runtime);
    drop(chunks);
}

/// A plaintext channel to the coordinator.
async fn channel_to(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect()
        .await
        .expect("connects to the coordinator")
}
