//! Faults found by probing fold as a demanding user and an attacker would
//! (issue 12): damaged state files, absurd sizes, URLs of unknown schemes,
//! idle connections, memory that grew with every version, and the smaller
//! rough edges. Real binaries, real sockets on 127.0.0.1, real redb files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Cluster, json_lines, output_within, rss_kib, stdout_of, succeeded};
use fold::auth::BearerToken;
use fold::coordinator::persist::{Change, CoordinatorStore, decode_result};
use fold::{Figures, Ortho, Token};
use serde_json::Value;

/// Bookkeeping a coordinator may add for 100 versions of ts_0_20k's 1,097
/// words: a task per unit per version comes to well under that. (A copy
/// of the interner per version took about 3 MB each, 300 MB in all.)
const RSS_BOUND_KIB: u64 = 8 << 10;

#[test]
fn empty_versions_do_not_grow_the_coordinator_by_an_interner_each() {
    let case = common::case("ts_0_20k");
    let mut cluster = Cluster::start(0, 1, &[]);
    let text = case.texts[0].to_str().expect("UTF-8 path").to_owned();
    succeeded(
        &cluster.coordinator.client(&["submit", &text, "--quiet"]),
        "submit ts_0_20k",
    );
    let empty = cluster.write_file("empty.txt", b"");
    let empty = empty.to_str().expect("UTF-8 path").to_owned();
    let before = rss_kib(cluster.coordinator.process.pid());

    let mut args = vec!["submit", "--json", "--quiet"];
    args.extend(std::iter::repeat_n(empty.as_str(), 100));
    let replies = json_lines(&succeeded(&cluster.coordinator.client(&args), "submit"));
    assert_eq!(replies.last().unwrap()["version"], 101);
    let after = rss_kib(cluster.coordinator.process.pid());
    assert!(
        after < before + RSS_BOUND_KIB,
        "100 empty versions took the coordinator from {before} KiB to {after} KiB"
    );

    cluster.coordinator.restart();
    let status = cluster.coordinator.status();
    assert_eq!(status.len(), 101);
    assert!(status.iter().all(|line| line["vocabulary"] == 1097));
    let restarted = rss_kib(cluster.coordinator.process.pid());
    assert!(
        restarted < before + RSS_BOUND_KIB,
        "restarted on 101 versions, the coordinator takes {restarted} KiB (one version: {before} KiB)"
    );
}

/// `run --json --quiet` on `files` in `state_dir`, with at most 60 s.
fn run_json(files: &[PathBuf], state_dir: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
    command
        .arg("run")
        .args(files)
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--json", "--quiet", "--threads", "1"]);
    output_within(command, Duration::from_secs(60))
}

/// The figures of `run --json` lines, without `work`.
fn figures_of(stdout: &str) -> Vec<Value> {
    json_lines(stdout)
        .into_iter()
        .map(|mut line| {
            line.as_object_mut().map(|object| object.remove("work"));
            line
        })
        .collect()
}

/// Asserts a refusal is exit 1 with one `error:` line on stderr that
/// mentions `mention` (a file, a reason), no panic, and nothing on stdout.
fn assert_refused_naming(output: &Output, mention: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what}: exit {:?}\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: one stderr line expected:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("fold-coordinator: error: ") && lines[0].contains(mention),
        "{what}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(output.stdout.is_empty(), "{what}: printed figures");
}

/// Flips bit `bit` of byte `offset` of `file`.
fn flip_bit(file: &Path, offset: usize, bit: u8) {
    let mut bytes = std::fs::read(file).expect("file is readable");
    bytes[offset] ^= 1 << bit;
    std::fs::write(file, bytes).expect("file is writable");
}

/// Offsets of the digits of every `"orthos":N` in `bytes`: a flipped bit
/// there once gave other figures with exit 0.
fn figure_digits(bytes: &[u8]) -> Vec<usize> {
    let key = b"\"orthos\":";
    (0..bytes.len().saturating_sub(key.len()))
        .filter(|&at| &bytes[at..at + key.len()] == key)
        .flat_map(|at| {
            let digits = bytes[at + key.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            at + key.len()..at + key.len() + digits
        })
        .collect()
}

#[test]
fn a_flipped_bit_in_the_state_file_gives_the_right_figures_or_one_line_naming_it() {
    let texts = common::golden_dir().join("texts");
    let two = vec![texts.join("ts_0_2k.txt"), texts.join("sq.txt")];
    let three = [two.clone(), vec![texts.join("fox.txt")]].concat();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let expected = figures_of(&succeeded(&run_json(&two, &base), "first run"));
    let fresh = figures_of(&succeeded(
        &run_json(&three, &dir.path().join("fresh")),
        "fresh run",
    ));
    let file = base.join("fold-state.redb");
    let bytes = std::fs::read(&file).unwrap();
    let mut offsets: Vec<usize> = (0..bytes.len()).step_by(241).collect();
    offsets.extend(figure_digits(&bytes));
    assert!(offsets.len() > 300, "{} offsets", offsets.len());

    let (mut refused, mut fine) = (0, 0);
    for (trial, &offset) in offsets.iter().enumerate() {
        let copy = dir.path().join(format!("flip{trial}"));
        copy_dir(&base, &copy);
        let bit = (offset % 8) as u8;
        flip_bit(&copy.join("fold-state.redb"), offset, bit);
        // Half the runs read the state, half also append a version to it.
        let (files, want) = if trial % 2 == 0 {
            (&two, &expected[..])
        } else {
            (&three, &fresh[..])
        };
        let output = run_json(files, &copy);
        let what = format!("bit {bit} of byte {offset} flipped");
        if output.status.success() {
            assert_eq!(figures_of(&stdout_of(&output)), want, "{what}");
            fine += 1;
        } else {
            assert_refused_naming(&output, "fold-state.redb", &what);
            refused += 1;
        }
        let _ = std::fs::remove_dir_all(&copy);
    }
    // Both outcomes occur: the flips reach free space and live data.
    assert!(refused > 10 && fine > 10, "{refused} refused, {fine} fine");
}

/// Copies the files of `from` (one level of subdirectories) into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A coordinator state dir in which square was searched to the end by one
/// worker and every unit saved; nothing runs on it any more.
fn finished_square_state(dir: &Path) -> PathBuf {
    let square = common::case("square");
    let state = dir.join("coordinator");
    let mut coordinator = common::Coordinator::start(&state, &[]);
    let mut worker = coordinator.start_worker(&dir.join("worker"), 1);
    let reports = coordinator.submit_and_wait(&square.texts);
    common::assert_figures("square", 0, &reports[0], &square.after_each_text[0]);
    worker.kill();
    // Finished units are saved within 200 ms; Ctrl-C saves the rest.
    coordinator.process.signal("INT");
    let exit = coordinator.process.wait_timeout(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|status| status.success()),
        "{exit:?}\n{}",
        coordinator.process.log()
    );
    state
}

/// What `serve` on `state` does: refuses to start (its output), or starts
/// and reports `status --json` (then it is stopped).
enum Served {
    Refused(Output),
    Status(Vec<Value>),
}

fn serve_on(state: &Path) -> Served {
    let stdout = PathBuf::from(format!("{}.serve.out", state.display()));
    let log = PathBuf::from(format!("{}.serve.log", state.display()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--token", common::TOKEN])
        .arg("--state-dir")
        .arg(state)
        .env_remove("FOLD_TOKEN")
        .stdout(std::fs::File::create(&stdout).unwrap());
    let mut serve = common::Process::spawn("serve", command, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let printed = std::fs::read_to_string(&stdout).unwrap_or_default();
        if let Some(port) = printed
            .lines()
            .find_map(|line| line.strip_prefix("fold-coordinator: listening on 127.0.0.1:"))
        {
            let mut status = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
            status
                .args(["status", "--json", "--token", common::TOKEN])
                .arg("--coordinator")
                .arg(format!("http://127.0.0.1:{}", port.trim()))
                .env_remove("FOLD_TOKEN");
            let output = output_within(status, Duration::from_secs(30));
            return Served::Status(json_lines(&succeeded(&output, "status")));
        }
        if let Some(status) = serve.wait_timeout(Duration::from_millis(20)) {
            return Served::Refused(Output {
                status,
                stdout: printed.into_bytes(),
                stderr: serve.log().into_bytes(),
            });
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve neither started nor stopped"
        );
    }
}

#[test]
fn a_bad_result_record_stops_the_coordinator_with_one_line_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = finished_square_state(dir.path());
    let unit = {
        // A record that passes its checksum but names a token the version lacks.
        let store = CoordinatorStore::open(&state, None).unwrap();
        let (_, unit, stored) = store.load().unwrap().results.remove(0);
        let mut counted = decode_result(&stored, 4).unwrap();
        let outside = Ortho::new(&[2, 2], &[Some(Token(9_999)), None, None, None]).unwrap();
        counted.result.figures = Figures {
            orthos: 1,
            frontier: 1,
            optimal: Some(outside),
        };
        store
            .record(&[Change::Result(fold::Version::FIRST, unit, counted)])
            .unwrap();
        unit
    };
    match serve_on(&state) {
        Served::Refused(output) => {
            assert_refused_naming(&output, "coordinator.redb", "bad result record");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains(&format!("unit {unit} at version 1")),
                "{stderr}"
            );
        }
        Served::Status(status) => panic!("the coordinator started: {status:?}"),
    }
}

#[test]
fn a_flipped_bit_in_the_coordinator_state_gives_the_right_figures_or_one_line_naming_it() {
    let square = common::case("square");
    let dir = tempfile::tempdir().unwrap();
    let state = finished_square_state(dir.path());
    let file = state.join("coordinator.redb");
    let size = std::fs::metadata(&file).unwrap().len() as usize;
    let (mut refused, mut fine) = (0, 0);
    for (trial, offset) in (0..size).step_by(1021).enumerate() {
        let copy = dir.path().join(format!("flip{trial}"));
        copy_dir(&state, &copy);
        let bit = (trial % 8) as u8;
        flip_bit(&copy.join("coordinator.redb"), offset, bit);
        let what = format!("bit {bit} of byte {offset} flipped");
        match serve_on(&copy) {
            Served::Refused(output) => {
                assert_refused_naming(&output, "coordinator.redb", &what);
                refused += 1;
            }
            Served::Status(status) => {
                // Units whose records were lost are searched again; the
                // restored ones must be exactly what was found.
                assert_eq!(status.len(), 1, "{what}: {status:?}");
                if status[0]["state"] == "done" {
                    common::assert_figures("square", 0, &status[0], &square.after_each_text[0]);
                }
                assert_eq!(status[0]["vocabulary"], 4, "{what}");
                fine += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&copy);
    }
    assert!(refused >= 2 && fine >= 2, "{refused} refused, {fine} fine");
}

#[test]
fn idle_connections_beyond_the_limit_do_not_block_a_status_call() {
    let dir = tempfile::tempdir().unwrap();
    // 128 open files: the default cap is 64 connections. (Before, 300 idle
    // connections under a limit of 256 made status hang for 30 s and more.)
    let coordinator = common::Coordinator::start_with_fd_limit(&dir.path().join("c"), &[], 128);
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(coordinator.address()).expect("connects"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let started = std::time::Instant::now();
    let mut status = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
    status
        .args(["status", "--token", common::TOKEN, "--coordinator"])
        .arg(coordinator.url())
        .env_remove("FOLD_TOKEN");
    let output = output_within(status, Duration::from_secs(20));
    let took = started.elapsed();
    let stdout = succeeded(&output, "status with idle connections open");
    assert!(stdout.contains("0 version(s)"), "{stdout}");
    assert!(took < Duration::from_secs(5), "status took {took:?}");
    let log = coordinator.process.log();
    assert!(log.contains("connection limit reached"), "{log}");
    drop(idle);
}

#[test]
fn thread_counts_past_four_per_core_are_lowered_with_a_warning() {
    let square = common::case("square");
    let most = std::thread::available_parallelism().unwrap().get() * 4;
    for absurd in ["10000", "99999999999"] {
        let dir = tempfile::tempdir().unwrap();
        let output = common::run_coordinator(
            &square.texts,
            dir.path(),
            &["--json", "--quiet", "--threads", absurd],
        );
        let stdout = succeeded(&output, &format!("run --threads {absurd}"));
        common::assert_figures(
            "square",
            0,
            &json_lines(&stdout)[0],
            &square.after_each_text[0],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim(),
            format!(
                "fold-coordinator: warning: --threads {absurd} is more than 4 per core ({} \
                 cores); using {most}",
                most / 4
            )
        );
    }

    // A worker asked for 10,000 threads runs (and registers with) the bound.
    let cluster = Cluster::start(0, 1, &[]);
    let mut worker = cluster
        .coordinator
        .start_worker(&cluster.dir.path().join("w"), 10_000);
    cluster
        .coordinator
        .wait_for_workers(1, Duration::from_secs(20));
    let threads = list_workers(&cluster.coordinator.url())[0].threads;
    assert_eq!(threads as usize, most);
    let log = worker.log();
    assert!(
        log.contains("fold-worker: warning: --threads 10000 is more than 4 per core"),
        "{log}"
    );
    worker.kill();
}

/// The workers a coordinator lists.
fn list_workers(url: &str) -> Vec<fold::proto::v1::WorkerInfo> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let token = BearerToken::new(Some(common::TOKEN)).unwrap();
        let mut client = fold::channel::connect(url, token).await.unwrap();
        client
            .list_workers(fold::proto::v1::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers
    })
}

#[test]
fn leases_and_text_limits_outside_their_bounds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--lease-ms", "0"),
        ("--lease-ms", "99"),
        ("--lease-ms", "18446744073709551615"),
        ("--max-text-bytes", "1000000000000000"),
    ] {
        let mut serve = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
        serve
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token",
                "t",
                flag,
                value,
            ])
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        let output = output_within(serve, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag}")),
            "{flag} {value}: {stderr}"
        );
        assert!(!dir.path().join("state").exists(), "{flag} {value}");
    }
}

#[test]
fn coordinator_urls_other_than_http_or_https_are_refused() {
    let cluster = Cluster::start(0, 1, &[]);
    let port = cluster.coordinator.port;
    for (scheme, expected) in [
        (
            "ftp",
            "ftp:// is not supported; use http://HOST:PORT, or https://HOST:PORT for TLS",
        ),
        ("unix", "unix:// is not supported"),
    ] {
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut status = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
        status
            .args(["status", "--token", common::TOKEN, "--coordinator", &url])
            .env_remove("FOLD_TOKEN");
        let output = output_within(status, Duration::from_secs(20));
        assert_refused_naming(&output, expected, &format!("status --coordinator {url}"));

        let mut worker = Command::new(env!("CARGO_BIN_EXE_fold-worker"));
        worker
            .args([
                "--token",
                common::TOKEN,
                "--coordinator",
                &url,
                "--data-dir",
            ])
            .arg(cluster.dir.path().join(format!("worker-{scheme}")))
            .env_remove("FOLD_TOKEN");
        let output = output_within(worker, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "worker on {url}: {stderr}");
        assert!(
            stderr.starts_with("fold-worker: error: coordinator URL") && stderr.contains(expected),
            "worker on {url}: {stderr}"
        );
    }
    assert_eq!(cluster.coordinator.workers_connected(), 0);
}
