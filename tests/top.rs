//! `fold-coordinator top`: its view drawn with ratatui's `TestBackend` from a
//! status stream recorded off a real cluster, and the real binary run in a
//! pseudo-terminal (portable-pty, read back through a vt100 parser) against
//! a live coordinator that is killed and started again under it.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, TOKEN};
use fold::auth::BearerToken;
use fold::proto::v1;
use fold::top::view::{View, thousands};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Records the WatchStatus stream of every version, workers listed, until
/// every version is done.
fn record_status_stream(url: &str) -> Vec<v1::StatusReply> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = fold::channel::connect(url, BearerToken::new(Some(TOKEN)).unwrap())
            .await
            .unwrap();
        let request = v1::StatusRequest {
            workers: true,
            ..Default::default()
        };
        let mut stream = client.watch_status(request).await.unwrap().into_inner();
        let mut recorded = Vec::new();
        while let Some(reply) = stream.message().await.unwrap() {
            recorded.push(reply);
        }
        recorded
    })
}

/// What a view shows on a `width` x `height` screen, line by line.
fn render(view: &View, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| view.draw(frame)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..height)
        .map(|y| {
            let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
            line.trim_end().to_owned() + "\n"
        })
        .collect()
}

#[test]
fn top_draws_a_status_stream_recorded_off_a_running_version() {
    let cluster = Cluster::start(1, 1, &[]);
    cluster
        .coordinator
        .wait_for_workers(1, Duration::from_secs(20));
    let case = common::case("ts_0_25k");
    let text = case.texts[0].to_str().unwrap();
    common::succeeded(
        &cluster.coordinator.client(&["submit", text, "--quiet"]),
        "submit",
    );
    let recorded = record_status_stream(&cluster.coordinator.url());
    assert!(recorded.len() > 3, "{} snapshots", recorded.len());

    let mut view = View::new(cluster.coordinator.url());
    // Half-way through the stream: running, a worker holding units.
    let middle = recorded.len() / 2;
    for reply in &recorded[..middle] {
        view.update(reply.clone());
    }
    let running = render(&view, 120, 40);
    assert!(running.contains("live"), "{running}");
    assert!(running.contains("running"), "{running}");
    let worker = &recorded[middle - 1].worker_list[0];
    assert!(running.contains(&worker.name), "{running}");

    for reply in &recorded[middle..] {
        view.update(reply.clone());
    }
    let done = render(&view, 120, 40);
    let expected = &case.after_each_text[0];
    let orthos = thousands(expected["orthos"].as_u64().unwrap());
    let units = recorded.last().unwrap().versions[0].units_total;
    assert!(units >= 16, "{units} units");
    for shown in [
        format!(" {orthos} "),
        format!("{units}/{units} [##########] 100%"),
        "done".to_owned(),
        "rate, peak ".to_owned(),
        "best, version 1 (done)".to_owned(),
        format!(
            "dims {}, volume {}",
            expected["optimal"]["dims"].to_string().replace(',', ", "),
            expected["optimal"]["volume"]
        ),
    ] {
        assert!(done.contains(&shown), "no `{shown}` in\n{done}");
    }
    // The best ortho is drawn as its grid.
    let payload = expected["optimal"]["payload"].as_array().unwrap();
    let first_word = payload[0].as_str().unwrap();
    assert!(
        done.lines().any(|line| line
            .trim_start_matches('│')
            .trim_start()
            .starts_with(first_word)),
        "{done}"
    );
    let peak = recorded
        .iter()
        .map(|reply| reply.orthos_per_second)
        .fold(0.0, f64::max);
    assert!(peak > 0.0, "no rate recorded");
    assert!(
        done.contains(&format!("peak {}/s", thousands(peak.round() as u64))),
        "{done}"
    );
}

/// A child in a pseudo-terminal whose screen is kept by a vt100 parser.
struct PtyProcess {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    screen: Arc<Mutex<vt100::Parser>>,
    keys: Box<dyn Write + Send>,
}

impl PtyProcess {
    fn spawn(command: CommandBuilder, rows: u16, cols: u16) -> Self {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let child = pair.slave.spawn_command(command).expect("top starts");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let keys = pair.master.take_writer().expect("pty writer");
        let size = |n: u16| std::num::NonZero::new(n).expect("a terminal has a size");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(size(rows), size(cols), 0)));
        let parsed = screen.clone();
        std::thread::spawn(move || {
            let _master = pair.master;
            let mut bytes = [0u8; 4096];
            while let Ok(read) = reader.read(&mut bytes) {
                if read == 0 {
                    break;
                }
                parsed.lock().unwrap().process(&bytes[..read]);
            }
        });
        Self {
            child,
            screen,
            keys,
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until the screen shows every one of `needles`.
    fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let contents = self.contents();
            if needles.iter().all(|needle| contents.contains(needle)) {
                return contents;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {needles:?}:\n{contents}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PtyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn top_runs_in_a_terminal_and_survives_its_coordinator_restarting() {
    let mut cluster = Cluster::start(1, 1, &[]);
    let square = common::case("square");
    cluster.coordinator.submit_and_wait(&square.texts);

    let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_fold-coordinator"));
    command.args(["top", "--token", TOKEN, "--coordinator"]);
    command.arg(cluster.coordinator.url());
    command.env_remove("FOLD_TOKEN");
    command.env_remove("FOLD_LOG");
    command.env("TERM", "xterm-256color");
    command.cwd(cluster.dir.path());
    let mut top = PtyProcess::spawn(command, 40, 120);
    let source = square.texts[0].display().to_string();
    let file_name = source.rsplit('/').next().unwrap();
    let first = top.wait_for(&["live", file_name, "done"], Duration::from_secs(30));
    assert!(first.contains("fold top: http://127.0.0.1:"), "{first}");

    // The coordinator dies: top says it is reconnecting, keeping what it showed.
    cluster.coordinator.process.kill();
    let lost = top.wait_for(&["reconnecting"], Duration::from_secs(20));
    assert!(lost.contains(file_name), "{lost}");
    // Back on the same port and state: live again, and a new version shows up.
    cluster.coordinator.restart();
    let fox = common::case("fox");
    cluster.coordinator.submit_and_wait(&fox.texts);
    top.wait_for(&["live", "fox.txt"], Duration::from_secs(30));

    top.keys.write_all(b"q").unwrap();
    top.keys.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = top.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "top did not quit on q:\n{}",
            top.contents()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", top.contents());
    // The reader thread may not have seen the last bytes yet (on a loaded
    // machine, for a while): wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while top.screen.lock().unwrap().screen().alternate_screen() {
        assert!(
            Instant::now() < deadline,
            "top left the terminal on its alternate screen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
