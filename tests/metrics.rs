//! Prometheus metrics of a real coordinator and worker, scraped over HTTP
//! while a version is searched and after: the counters move, and once the
//! version is done they agree with `status`.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, free_port, http_get, sample, version_line};

/// A scrape of `/metrics` on `port`, checked to be a 200.
fn scrape(port: u16) -> String {
    let (code, body) = http_get(port, "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of `name` in a scrape, failing the test when it is absent.
fn value(scrape: &str, name: &str) -> f64 {
    sample(scrape, name).unwrap_or_else(|| panic!("no sample `{name}` in\n{scrape}"))
}

#[test]
fn metrics_move_during_a_version_and_agree_with_status_after_it() {
    let (coordinator_port, worker_port) = (free_port(), free_port());
    let coordinator_listen = format!("127.0.0.1:{coordinator_port}");
    let mut cluster = Cluster::start(0, 1, &["--metrics-listen", &coordinator_listen]);
    cluster.worker_flags = vec![
        "--metrics-listen".into(),
        format!("127.0.0.1:{worker_port}"),
    ];
    cluster.add_worker(1);
    cluster
        .coordinator
        .wait_for_workers(1, Duration::from_secs(20));

    let idle = scrape(coordinator_port);
    assert_eq!(value(&idle, "fold_workers_connected"), 1.0);
    assert_eq!(value(&idle, "fold_orthos_found_total"), 0.0);
    assert_eq!(value(&idle, "fold_leases_expired_total"), 0.0);
    for line in [
        "# TYPE fold_orthos_found_total counter",
        "# TYPE fold_units gauge",
        "# HELP fold_wire_bytes_total",
    ] {
        assert!(idle.contains(line), "no `{line}` in\n{idle}");
    }
    let worker_idle = scrape(worker_port);
    assert_eq!(value(&worker_idle, "fold_coordinator_connected"), 1.0);
    assert_eq!(value(&worker_idle, "fold_units_abandoned_total"), 0.0);
    assert_eq!(http_get(coordinator_port, "/healthz"), (200, "ok\n".into()));
    assert_eq!(http_get(coordinator_port, "/nothing").0, 404);

    // ts_0_25k runs for seconds on one thread: scrape while it does.
    let case = common::case("ts_0_25k");
    let text = case.texts[0].to_str().unwrap();
    common::succeeded(
        &cluster.coordinator.client(&["submit", text, "--quiet"]),
        "submit",
    );
    let mut expanded = Vec::new();
    let mut found = Vec::new();
    let mut saw_running = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = cluster.coordinator.status();
        let coordinator = scrape(coordinator_port);
        let worker = scrape(worker_port);
        if version_line(&status, 1).is_some_and(|line| line["state"] == "done") {
            break;
        }
        saw_running |= value(&coordinator, "fold_units{state=\"running\"}") >= 1.0
            && value(&coordinator, "fold_versions{state=\"running\"}") == 1.0;
        if let Some(orthos) = sample(&worker, "fold_orthos_expanded_total") {
            expanded.push(orthos);
        }
        found.push(value(&coordinator, "fold_orthos_found_total"));
        assert!(Instant::now() < deadline, "version 1 did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(saw_running, "no scrape saw a running unit");
    assert!(
        expanded.windows(2).any(|pair| pair[1] > pair[0]),
        "the worker's expanded orthos never moved: {expanded:?}"
    );
    assert!(
        found.windows(2).all(|pair| pair[1] >= pair[0]),
        "a counter went back: {found:?}"
    );

    // Done: every figure agrees with status.
    let line = cluster
        .coordinator
        .wait_until_done(1, Duration::from_secs(10));
    let total = line["units_total"].as_f64().unwrap();
    let orthos = line["orthos"].as_f64().unwrap();
    let coordinator = scrape(coordinator_port);
    for (name, expected) in [
        ("fold_orthos_found_total", orthos),
        ("fold_units{state=\"done\"}", total),
        ("fold_units{state=\"running\"}", 0.0),
        ("fold_units{state=\"pending\"}", 0.0),
        ("fold_versions{state=\"done\"}", 1.0),
        ("fold_versions{state=\"running\"}", 0.0),
        (
            "fold_attempts_discarded_total",
            line["attempts_discarded"].as_f64().unwrap(),
        ),
        ("fold_version_duration_seconds_count", 1.0),
        ("fold_workers_connected", 1.0),
        ("fold_leases_expired_total", 0.0),
    ] {
        assert_eq!(value(&coordinator, name), expected, "{name}\n{coordinator}");
    }
    assert_eq!(
        orthos,
        case.after_each_text[0]["orthos"].as_f64().unwrap(),
        "{line}"
    );
    // Bytes on the wire: what status says, sent plus received.
    let human = common::succeeded(&cluster.coordinator.client(&["status"]), "status");
    let coordinator = scrape(coordinator_port);
    let wire = value(&coordinator, "fold_wire_bytes_total{direction=\"sent\"}")
        + value(
            &coordinator,
            "fold_wire_bytes_total{direction=\"received\"}",
        );
    assert!(
        human.contains(&format!("{wire} bytes exchanged with workers")),
        "{wire} bytes in the metrics; status says\n{human}"
    );

    // The one worker did every unit and found every ortho.
    let worker = scrape(worker_port);
    assert_eq!(value(&worker, "fold_units_done_total"), total);
    assert_eq!(value(&worker, "fold_orthos_found_total"), orthos);
    assert_eq!(value(&worker, "fold_units_held"), 0.0);
    assert!(value(&worker, "fold_orthos_expanded_total") > 0.0);
    assert!(value(&worker, "fold_wire_bytes_total{direction=\"sent\"}") > 0.0);
    assert!(value(&worker, "fold_wire_bytes_total{direction=\"received\"}") > 0.0);
}

#[test]
fn a_taken_metrics_port_stops_serve_and_the_worker_in_one_line_before_any_dir_is_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (state, data) = (dir.path().join("state"), dir.path().join("data"));
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
    serve
        .args(["serve", "--token", common::TOKEN, "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", &address])
        .arg("--state-dir")
        .arg(&state)
        .env_remove("FOLD_TOKEN");
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_fold-worker"));
    worker
        .args(["--token", common::TOKEN, "--metrics-listen", &address])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("FOLD_TOKEN");
    for (program, command) in [("fold-coordinator", serve), ("fold-worker", worker)] {
        let output = common::output_within(command, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{program}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{program}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "{program}: error: cannot listen on {address} for metrics"
            )),
            "{program}: {stderr}"
        );
    }
    assert!(!state.exists() && !data.exists());
}
