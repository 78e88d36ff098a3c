//! `fold-coordinator top`: a live view of a running coordinator in the
//! terminal, fed by its WatchStatus stream (with `follow`, so it goes on
//! past the versions that are done, and with the workers listed).
//!
//! * [`view`] — what is shown, drawn with ratatui into any backend.
//! * this module — the terminal (raw mode, alternate screen), the keys, and
//!   the feed: a task that keeps a WatchStatus stream open and opens a new
//!   one, with backoff, whenever the coordinator goes away, so the view
//!   survives a coordinator restarting and says that it is reconnecting.
//!
//! q, Esc or Ctrl-C quit; so do SIGTERM and SIGINT. The terminal is
//! restored however the view ends.

pub mod view;

use std::io::IsTerminal;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use crate::auth::BearerToken;
use crate::channel::{Connection, Target, connect_to};
use crate::error::{Error, Result};
use crate::proto::v1;
use view::View;

/// First wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the feed tells the view.
enum Feed {
    /// A snapshot.
    Status(Box<v1::StatusReply>),
    /// The connection failed or broke; the feed tries again.
    Lost(String),
    /// The coordinator refused the token: trying again cannot help.
    Refused(String),
}

/// Shows the live view of the coordinator of `connection` until the user
/// quits.
pub async fn run(connection: Connection) -> Result<()> {
    let target = connection.target()?;
    let token = connection.bearer()?;
    if !std::io::stdout().is_terminal() {
        return Err(Error::Config(
            "top draws on a terminal, and stdout is not one (use `status` in scripts)".into(),
        ));
    }
    let mut terminal =
        ratatui::try_init().map_err(|e| Error::io("cannot set up the terminal", e))?;
    let result = show(&mut terminal, &target, token).await;
    ratatui::restore();
    result
}

/// The view's loop: redraw on every snapshot, key and second.
async fn show(
    terminal: &mut ratatui::DefaultTerminal,
    target: &Target,
    token: BearerToken,
) -> Result<()> {
    let mut view = View::new(target.url());
    let (feed_sender, mut feed) = mpsc::channel(16);
    let feeder = tokio::spawn(keep_watching(target.clone(), token, feed_sender));
    let _feeder = AbortOnDrop(feeder);
    let mut keys = spawn_key_reader();
    let stop = crate::runtime::shutdown_signal();
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        terminal
            .draw(|frame| view.draw(frame))
            .map_err(|e| Error::io("cannot draw on the terminal", e))?;
        tokio::select! {
            message = feed.recv() => match message {
                Some(Feed::Status(status)) => view.update(*status),
                Some(Feed::Lost(error)) => view.lost(error),
                Some(Feed::Refused(error)) => return Err(Error::Connect(error)),
                None => return Ok(()),
            },
            key = keys.recv() => match key {
                Some(key) if quits(&key) => return Ok(()),
                Some(_) => {}
                // The key reader stopped: the terminal is gone.
                None => return Ok(()),
            },
            () = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
    }
}

/// Whether a key press quits: q, Esc, or Ctrl-C (raw mode turns it into a key).
fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && (matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc)
            || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)))
}

/// Reads terminal events on a thread of its own (crossterm's reads block);
/// key presses come out of the returned channel (a resize needs nothing
/// but the redraw every event brings).
fn spawn_key_reader() -> mpsc::Receiver<KeyEvent> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        while !sender.is_closed() {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => return,
            }
            let forwarded = match event::read() {
                Ok(Event::Key(key)) => sender.blocking_send(key),
                Ok(_) => Ok(()),
                Err(_) => return,
            };
            if forwarded.is_err() {
                return;
            }
        }
    });
    receiver
}

/// Keeps a WatchStatus stream open to `target`, forwarding every snapshot,
/// and reconnects with backoff whenever it fails or ends.
async fn keep_watching(target: Target, token: BearerToken, feed: mpsc::Sender<Feed>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let error = match watch(&target, &token, &feed, &mut backoff).await {
            Ok(()) => return,
            Err(Error::Unauthenticated(message)) => {
                let _ = feed
                    .send(Feed::Refused(format!(
                        "the coordinator refused the token: {message}"
                    )))
                    .await;
                return;
            }
            Err(error) => error,
        };
        if feed.send(Feed::Lost(error.to_string())).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One WatchStatus stream, until it fails or ends (an error then), or until
/// the view is gone (`Ok`).
async fn watch(
    target: &Target,
    token: &BearerToken,
    feed: &mpsc::Sender<Feed>,
    backoff: &mut Duration,
) -> Result<()> {
    let mut client = connect_to(target, token.clone()).await?;
    let request = v1::StatusRequest {
        workers: true,
        follow: true,
        ..Default::default()
    };
    let mut stream = client.watch_status(request).await?.into_inner();
    while let Some(status) = stream.message().await? {
        *backoff = FIRST_BACKOFF;
        if feed.send(Feed::Status(Box::new(status))).await.is_err() {
            return Ok(());
        }
    }
    Err(Error::Connect(
        "the coordinator ended the status stream".into(),
    ))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
