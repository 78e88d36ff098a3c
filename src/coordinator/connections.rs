//! The coordinator's TCP connections: at most a set number open at once, and
//! none kept open that never speaks.
//!
//! Connections beyond the cap wait in the listen backlog until one closes,
//! so the coordinator never runs out of file descriptors. A connection must
//! send its first 24 bytes (the HTTP/2 client preface, or with TLS the start
//! of its handshake) within [`Limits::handshake_timeout`], or it is closed; and when the cap is
//! reached, the oldest connection that has not sent its preface yet is
//! closed at once to make room. Idle TCP connections therefore cannot lock
//! clients out. Connections that did speak HTTP/2 are kept (workers hold
//! theirs for hours); HTTP/2 keepalive pings close those whose peer vanished.
//!
//! Hitting the cap is logged as a warning (at most every 10 s).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes of the HTTP/2 client preface, which every gRPC client sends first.
const PREFACE_BYTES: usize = 24;

/// Most connections the coordinator keeps open by default, whatever the
/// file descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// File descriptors kept free for everything but connections (the state
/// file, the runtime, logs).
const RESERVED_DESCRIPTORS: usize = 64;

/// How long a new connection may stay silent before it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often, at most, hitting the cap is logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How the coordinator limits its connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a connection may take to send its HTTP/2 preface.
    pub handshake_timeout: Duration,
}

/// The largest number of connections this process can hold open: its file
/// descriptor limit less a reserve, and at most [`DEFAULT_MAX_CONNECTIONS`].
pub fn connections_allowed() -> usize {
    open_files_limit()
        .map_or(DEFAULT_MAX_CONNECTIONS, |limit| {
            limit.saturating_sub(RESERVED_DESCRIPTORS)
        })
        .clamp(8, DEFAULT_MAX_CONNECTIONS)
}

/// The soft limit on open files (RLIMIT_NOFILE), where there is one.
fn open_files_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given, which lives
        // on this stack frame for the whole call.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        (read == 0 && limit.rlim_cur != libc::RLIM_INFINITY)
            .then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Accepts connections from `listener` within `limits`, until the returned
/// stream is dropped.
pub fn accept(
    listener: TcpListener,
    limits: Limits,
) -> ReceiverStream<Result<Connection, io::Error>> {
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(accept_loop(listener, limits, sender));
    ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    sender: mpsc::Sender<Result<Connection, io::Error>>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut silent = SilentConnections::default();
    let mut warned: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            // The server stopped: stop accepting.
            () = sender.closed() => return,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: try again shortly rather than spin.
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(%error, "cannot accept a connection");
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let evicted = silent.evict_oldest();
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        closed_a_silent_one = evicted,
                        "connection limit reached (--max-connections): new connections wait \
                         until one closes; connections that have not sent anything yet are \
                         closed first"
                    );
                    warned = Some(Instant::now());
                }
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                permit
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection::new(stream, permit, &mut silent, limits.handshake_timeout);
        if sender.send(Ok(connection)).await.is_err() {
            return;
        }
    }
}

/// Where a connection stands until it has sent its preface.
#[derive(Default)]
struct Silence {
    /// Set to close the connection at its next read.
    evicted: AtomicBool,
    /// Set once the preface arrived.
    spoke: AtomicBool,
    /// Wakes the connection's task to notice `evicted`.
    waker: Mutex<Option<Waker>>,
}

/// The connections that have not spoken yet, oldest first.
#[derive(Default)]
struct SilentConnections {
    queue: VecDeque<Weak<Silence>>,
}

impl SilentConnections {
    fn register(&mut self) -> Arc<Silence> {
        let silence = Arc::new(Silence::default());
        // Forget connections that closed or spoke, now and then.
        if self.queue.len() >= 64 && self.queue.len().is_power_of_two() {
            self.queue.retain(|weak| {
                weak.upgrade()
                    .is_some_and(|s| !s.spoke.load(Ordering::Acquire))
            });
        }
        self.queue.push_back(Arc::downgrade(&silence));
        silence
    }

    /// Closes the oldest connection that has not spoken; returns whether
    /// there was one.
    fn evict_oldest(&mut self) -> bool {
        while let Some(weak) = self.queue.pop_front() {
            let Some(silence) = weak.upgrade() else {
                continue;
            };
            if silence.spoke.load(Ordering::Acquire) {
                continue;
            }
            silence.evicted.store(true, Ordering::Release);
            if let Some(waker) = silence
                .waker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                waker.wake();
            }
            return true;
        }
        false
    }
}

/// An accepted connection: it holds one of the slots until it closes.
pub struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the preface arrives: the deadline, the bytes so far and the
    /// state the acceptor can evict it through.
    waiting: Option<Waiting>,
}

struct Waiting {
    deadline: Pin<Box<tokio::time::Sleep>>,
    received: usize,
    silence: Arc<Silence>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        silent: &mut SilentConnections,
        handshake_timeout: Duration,
    ) -> Self {
        Self {
            stream,
            _slot: slot,
            waiting: Some(Waiting {
                deadline: Box::pin(tokio::time::sleep(handshake_timeout)),
                received: 0,
                silence: silent.register(),
            }),
        }
    }

    fn closed(&self, why: &str) -> io::Error {
        let peer = self
            .stream
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        tracing::info!(%peer, "closing a connection: {why}");
        io::Error::new(io::ErrorKind::TimedOut, why.to_owned())
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(waiting) = &mut self.waiting {
            if waiting.silence.evicted.load(Ordering::Acquire) {
                let error = self.closed("it sent nothing and the connection limit was reached");
                return Poll::Ready(Err(error));
            }
            if waiting.deadline.as_mut().poll(cx).is_ready() {
                let error = self.closed("it sent nothing within the handshake timeout");
                return Poll::Ready(Err(error));
            }
            *waiting
                .silence
                .waker
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if polled.is_ready()
            && let Some(waiting) = &mut self.waiting
        {
            waiting.received += buf.filled().len() - before;
            if waiting.received >= PREFACE_BYTES {
                waiting.silence.spoke.store(true, Ordering::Release);
                self.waiting = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_stream::StreamExt;

    #[test]
    fn the_default_cap_leaves_descriptors_free() {
        let allowed = connections_allowed();
        assert!((8..=DEFAULT_MAX_CONNECTIONS).contains(&allowed));
        if let Some(limit) = open_files_limit() {
            assert!(allowed + RESERVED_DESCRIPTORS <= limit.max(8 + RESERVED_DESCRIPTORS));
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_for_a_new_one_at_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 1,
            handshake_timeout: Duration::from_secs(600),
        };
        let mut incoming = accept(listener, limits);
        let _silent = TcpStream::connect(address).await.unwrap();
        let mut first = incoming.next().await.unwrap().unwrap();
        let _second = TcpStream::connect(address).await.unwrap();
        // The cap is reached: the silent connection gives way.
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), first.read(&mut byte)).await;
        assert_eq!(read.unwrap().unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await;
        assert!(second.unwrap().unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_connection_that_says_nothing_is_closed_after_the_handshake_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = Limits {
            max_connections: 8,
            handshake_timeout: Duration::from_millis(100),
        };
        let mut incoming = accept(listener, limits);
        let _silent = TcpStream::connect(address).await.unwrap();
        let mut accepted = incoming.next().await.unwrap().unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), accepted.read(&mut byte)).await;
        assert_eq!(read.unwrap().unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
