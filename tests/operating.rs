//! Operating a coordinator and its workers: what the logs say and how they
//! look in a file, locks on state and data dirs, a coordinator that cannot
//! listen, Ctrl-C, the token's scheme, empty submissions and the rate that
//! `status` shows. Real binaries, real sockets on 127.0.0.1.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Cluster, TOKEN, grpcurl, output_within, succeeded};
use fold::auth::BearerToken;
use fold::proto::v1;

/// `fold-coordinator serve` on `listen` and `state`, run to its end.
fn serve_until_it_stops(listen: &str, state: &Path) -> Output {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
    serve
        .args(["serve", "--token", TOKEN, "--listen", listen])
        .arg("--state-dir")
        .arg(state)
        .env_remove("FOLD_TOKEN");
    output_within(serve, Duration::from_secs(20))
}

/// The one stderr line of a failed command, checked to be an error.
fn one_error_line(output: &Output, program: &str, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: {stderr}");
    assert!(
        lines[0].starts_with(&format!("{program}: error: ")),
        "{what}: {stderr}"
    );
    lines[0].to_owned()
}

#[test]
fn a_second_coordinator_on_the_same_state_dir_is_told_another_process_holds_it() {
    let cluster = Cluster::start(0, 1, &[]);
    let output = serve_until_it_stops("127.0.0.1:0", &cluster.coordinator.state_dir);
    let line = one_error_line(&output, "fold-coordinator", "second serve");
    assert!(
        line.contains("coordinator.redb is in use by another process"),
        "{line}"
    );
}

#[test]
fn a_coordinator_that_cannot_listen_leaves_no_state_dir_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("new-state");
    let output = serve_until_it_stops(&address, &state);
    let line = one_error_line(&output, "fold-coordinator", "serve on a taken port");
    assert!(
        line.contains(&format!("cannot listen on {address}")),
        "{line}"
    );
    assert!(!state.exists(), "a state dir was left behind");
}

#[test]
fn a_second_worker_on_the_same_data_dir_is_refused() {
    let cluster = Cluster::start(1, 1, &[]);
    cluster
        .coordinator
        .wait_for_workers(1, Duration::from_secs(20));
    let mut second = Command::new(env!("CARGO_BIN_EXE_fold-worker"));
    second
        .args(["--token", TOKEN, "--coordinator"])
        .arg(cluster.coordinator.url())
        .arg("--data-dir")
        .arg(cluster.dir.path().join("worker0"))
        .env_remove("FOLD_TOKEN");
    let output = output_within(second, Duration::from_secs(20));
    let line = one_error_line(&output, "fold-worker", "second worker on one data dir");
    assert!(line.contains("is in use by another fold-worker"), "{line}");
    assert_eq!(cluster.coordinator.workers_connected(), 1);
}

#[test]
fn logs_in_a_file_have_no_colour_codes_and_workers_say_what_they_do() {
    let cluster = Cluster::start(0, 1, &[]);
    // The worker at its default log level.
    let log = cluster.dir.path().join("quiet-worker.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fold-worker"));
    command
        .args(["--token", TOKEN, "--threads", "1", "--coordinator"])
        .arg(cluster.coordinator.url())
        .arg("--data-dir")
        .arg(cluster.dir.path().join("quiet-worker"))
        .env_remove("FOLD_TOKEN")
        .env_remove("FOLD_LOG");
    let worker = common::Process::spawn("fold-worker", command, &log);
    let square = common::case("square");
    cluster.coordinator.submit_and_wait(&square.texts);

    let worker_log = worker.log();
    assert!(worker_log.contains("connected"), "{worker_log}");
    assert!(worker_log.contains("working on version 1"), "{worker_log}");
    let coordinator_log = cluster.coordinator.process.log();
    assert!(
        coordinator_log.contains("text submitted"),
        "{coordinator_log}"
    );
    for (name, log) in [("worker", &worker_log), ("coordinator", &coordinator_log)] {
        assert!(
            !log.contains('\u{1b}'),
            "the {name} log has escape codes:\n{log}"
        );
    }
}

#[test]
fn a_lowercase_bearer_scheme_is_accepted() {
    let cluster = Cluster::start(0, 1, &[]);
    let address = cluster.coordinator.address();
    for header in [
        format!("authorization: bearer {TOKEN}"),
        format!("authorization: BEARER {TOKEN}"),
    ] {
        let output = grpcurl(&[
            "-plaintext",
            "-H",
            &header,
            "-d",
            "{}",
            &address,
            "fold.v1.Coordinator/Status",
        ]);
        succeeded(&output, &header);
    }
}

/// A Coordinator client of `url` with the test token.
async fn client(url: &str) -> fold::channel::Client {
    fold::channel::connect(url, BearerToken::new(Some(TOKEN)).unwrap())
        .await
        .unwrap()
}

#[test]
fn a_submit_stream_with_no_chunk_is_refused_but_an_empty_file_is_a_version() {
    let cluster = Cluster::start(1, 1, &[]);
    let url = cluster.coordinator.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refused = runtime.block_on(async {
        client(&url)
            .await
            .submit(tokio_stream::iter(Vec::<v1::SubmitChunk>::new()))
            .await
            .unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        cluster.coordinator.status().is_empty(),
        "a version was made"
    );

    let empty = cluster.write_file("empty.txt", b"");
    let reports = cluster
        .coordinator
        .submit_and_wait(std::slice::from_ref(&empty));
    assert_eq!(reports[0]["version"], 1);
    assert_eq!(reports[0]["vocabulary"], 0);
    let status = cluster.coordinator.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0]["source"], empty.display().to_string());
}

#[test]
fn ctrl_c_stops_a_coordinator_with_a_worker_and_an_unfinished_submit() {
    let mut cluster = Cluster::start(1, 1, &[]);
    cluster
        .coordinator
        .wait_for_workers(1, Duration::from_secs(20));
    // A Submit that has sent one chunk and not ended, held open past Ctrl-C.
    let url = cluster.coordinator.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (chunks, stream) = tokio::sync::mpsc::channel(4);
    runtime
        .block_on(chunks.send(v1::SubmitChunk {
            data: b"the cat sat. ".repeat(1_000),
            name: "unfinished".into(),
        }))
        .unwrap();
    let submit = runtime.spawn(async move {
        client(&url)
            .await
            .submit(tokio_stream::wrappers::ReceiverStream::new(stream))
            .await
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!submit.is_finished());

    let started = Instant::now();
    cluster.coordinator.process.signal("INT");
    let exit = cluster
        .coordinator
        .process
        .wait_timeout(Duration::from_secs(20));
    let log = cluster.coordinator.process.log();
    let exit = exit.unwrap_or_else(|| panic!("the coordinator ignored Ctrl-C\n{log}"));
    assert!(exit.success(), "{exit}\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The connection goes before the sender, so the submission never ends.
    drop(runtime);
    drop(chunks);

    // The unfinished submission stored nothing.
    cluster.coordinator.restart();
    assert!(cluster.coordinator.status().is_empty());
}

/// The rate of the last line of a human `status`.
fn rate(status: &str) -> f64 {
    let summary = status.lines().last().unwrap_or_default();
    summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" orthos/s"))
        .and_then(|rate| rate.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {summary}"))
}

/// Polls the human `status` until version `version` is done; returns the
/// rate of each poll taken while it ran with at least one unit done.
fn rates_while_running(cluster: &Cluster, version: u64) -> Vec<f64> {
    let mut rates = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = succeeded(&cluster.coordinator.client(&["status"]), "status");
        let line = status
            .lines()
            .find(|line| line.starts_with(&format!("version {version} ")))
            .unwrap_or_default()
            .to_owned();
        if line.contains(": done,") {
            return rates;
        }
        if line.contains(": running,") && !line.contains("units 0/") {
            rates.push(rate(&status));
        }
        assert!(
            Instant::now() < deadline,
            "version {version} did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_rate_counts_new_orthos_and_shows_while_a_version_runs() {
    let cluster = Cluster::start_keeping(1, 1, 100, &[]);
    let case = common::case("ts_0_20k");
    let text = case.texts[0].to_str().unwrap();
    succeeded(
        &cluster.coordinator.client(&["submit", text, "--quiet"]),
        "submit",
    );
    let fresh = rates_while_running(&cluster, 1);
    assert!(!fresh.is_empty());
    assert!(fresh.iter().all(|&rate| rate > 0.0), "{fresh:?}");

    // Let the rate window forget version 1, then add one sentence of known
    // words: the worker brings its kept units up, finding few new orthos.
    std::thread::sleep(Duration::from_millis(5_500));
    let sentence = cluster.write_file("sentence.txt", b"I do think you have the.");
    succeeded(
        &cluster
            .coordinator
            .client(&["submit", sentence.to_str().unwrap(), "--quiet"]),
        "submit",
    );
    let incremental = rates_while_running(&cluster, 2);
    let after = rate(&succeeded(
        &cluster.coordinator.client(&["status"]),
        "status",
    ));
    let fastest = fresh.iter().copied().fold(0.0, f64::max);
    // Before, the orthos a kept unit had stored counted as found again.
    for rate in incremental.iter().chain([&after]) {
        assert!(
            *rate < fastest / 10.0,
            "{rate} orthos/s for a version of one sentence, {fastest} for ts_0_20k"
        );
    }
}
