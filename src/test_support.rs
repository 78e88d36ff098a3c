//! Helpers shared by the library's unit tests.

use std::path::Path;
use std::time::Duration;

/// Makes a named pipe at `path`.
pub fn make_fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path for the call's duration.
    let made = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo {}", path.display());
}

/// Runs `work` on a thread of its own and returns what it returns, failing
/// the test instead of hanging when it takes over ten seconds.
pub fn within_ten_seconds<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(work()));
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("did not finish within ten seconds")
}
