//! The distributed search against the embedded one, as whole processes on
//! this machine: `fold-coordinator run --threads 2` versus a coordinator with
//! two `fold-worker --threads 1`, each on ts_0_20k (1,280,079 orthos).
//!
//! The coordinator and workers start once; every iteration submits the text
//! again as a new version (same text, same interner content, same search) and
//! waits for it.

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

fn distributed(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = Command::new(COORDINATOR)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--state-dir",
        ])
        .arg(dir.path().join("coordinator"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("coordinator starts");
    let mut line = String::new();
    BufReader::new(coordinator.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _coordinator = Running(coordinator);
    let address = line.trim().rsplit(' ').next().unwrap().to_owned();
    let url = format!("http://{address}");
    let _workers: Vec<Running> = (0..2)
        .map(|index| {
            Running(
                Command::new(WORKER)
                    .args([
                        "--coordinator",
                        &url,
                        "--threads",
                        "1",
                        "--token",
                        TOKEN,
                        "--data-dir",
                    ])
                    .arg(dir.path().join(format!("worker{index}")))
                    .spawn()
                    .expect("worker starts"),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    c.bench_function("ts_0_20k/coordinator_2_workers_1_thread", |b| {
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(15));
    targets = embedded, distributed
}
criterion_main!(benches);
