//! The distributed search against the embedded one, as whole processes on
//! this machine: `fold-coordinator run --threads 2` versus a coordinator with
//! two (and eight) `fold-worker --threads 1`, each on ts_0_20k (1,280,079
//! orthos). Eight one-thread workers on two cores measure what splitting units
//! for many workers costs; `scripts/cluster-balance` measures how evenly they
//! share the work.
//!
//! The coordinator and workers start once; every iteration submits the text
//! again as a new version (same text, same interner content, same figures)
//! and waits for it. In `coordinator_2_workers_1_thread` the workers keep no
//! unit, so every version is searched from scratch, like the embedded run;
//! in `..._kept_units` they keep their large units (the default), so each
//! new version only rescans those and searches the small ones again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

const COORDINATOR: &str = env!("CARGO_BIN_EXE_fold-coordinator");
const WORKER: &str = env!("CARGO_BIN_EXE_fold-worker");
const TOKEN: &str = "bench-token";

/// Kills its process on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/texts/ts_0_20k.txt")
}

fn succeed(command: &mut Command) {
    let output = command.output().expect("command starts");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn embedded(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut round = 0;
    c.bench_function("ts_0_20k/embedded_run_2_threads", |b| {
        b.iter(|| {
            round += 1;
            let state = dir.path().join(round.to_string());
            succeed(
                Command::new(COORDINATOR)
                    .args(["run", "--json", "--quiet", "--threads", "2", "--state-dir"])
                    .arg(&state)
                    .arg(text()),
            );
        })
    });
}

/// A coordinator and `workers` one-thread workers that keep units of at
/// least `keep_from` orthos; returns the coordinator's URL and the processes.
fn cluster(dir: &Path, workers: usize, keep_from: u64) -> (String, Vec<Running>) {
    let mut coordinator = Command::new(COORDINATOR)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--state-dir",
        ])
        .arg(dir.join("coordinator"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("coordinator starts");
    let mut line = String::new();
    BufReader::new(coordinator.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut running = vec![Running(coordinator)];
    let address = line.trim().rsplit(' ').next().unwrap().to_owned();
    let url = format!("http://{address}");
    for index in 0..workers {
        let worker = Command::new(WORKER)
            .args(["--coordinator", &url, "--threads", "1", "--token", TOKEN])
            .args(["--keep-units-from", &keep_from.to_string(), "--data-dir"])
            .arg(dir.join(format!("worker{index}")))
            .spawn()
            .expect("worker starts");
        running.push(Running(worker));
    }
    std::thread::sleep(Duration::from_millis(500));
    (url, running)
}

fn distributed_with(c: &mut Criterion, name: &str, workers: usize, keep_from: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _running) = cluster(dir.path(), workers, keep_from);
    c.bench_function(name, |b| {
        b.iter(|| {
            succeed(
                Command::new(COORDINATOR)
                    .args([
                        "submit",
                        "--wait",
                        "--json",
                        "--quiet",
                        "--token",
                        TOKEN,
                        "--coordinator",
                        &url,
                    ])
                    .arg(text()),
            );
        })
    });
    let status = Command::new(COORDINATOR)
        .args(["status", "--token", TOKEN, "--coordinator", &url])
        .output()
        .unwrap();
    println!(
        "{}",
        String::from_utf8_lossy(&status.stdout)
            .lines()
            .last()
            .unwrap_or("")
    );
}

fn distributed(c: &mut Criterion) {
    distributed_with(c, "ts_0_20k/coordinator_2_workers_1_thread", 2, u64::MAX);
}

fn distributed_eight(c: &mut Criterion) {
    distributed_with(c, "ts_0_20k/coordinator_8_workers_1_thread", 8, u64::MAX);
}

fn distributed_kept(c: &mut Criterion) {
    distributed_with(
        c,
        "ts_0_20k/coordinator_2_workers_1_thread_kept_units",
        2,
        fold::worker::DEFAULT_KEEP_UNITS_FROM,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(15));
    targets = embedded, distributed, distributed_eight, distributed_kept
}
criterion_main!(benches);
