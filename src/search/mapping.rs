//! Read-only mappings of history files, and the one way they fail: a file
//! cut short by another program while it is mapped makes a read past its
//! new end raise SIGBUS, which would kill the process without a word.
//! fold cannot prevent that, so it makes it a clear failure: while a
//! mapping is live, a handler that finds a bus error inside one prints a
//! line naming the cause and exits with status 1. A run stopped this way
//! leaves its state dir as a crash would (every write is crash-safe), and
//! the next run finds the damaged file and searches its version afresh.
//! A bus error anywhere else goes to the handler that was there before.

use std::fs::File;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A file mapped into memory for reading, faulted in at once.
pub(crate) struct Mapping {
    map: memmap2::Mmap,
    slot: Option<usize>,
}

impl Mapping {
    /// Maps the first `len` bytes of `file` (`len` > 0).
    ///
    /// # Safety
    ///
    /// No one may write to the file's first `len` bytes while the mapping
    /// lives. (Cutting the file short is caught, see the module docs.)
    pub unsafe fn new(file: &File, len: usize) -> std::io::Result<Self> {
        // SAFETY: as the caller promises.
        let map = unsafe { memmap2::MmapOptions::new().len(len).populate().map(file)? };
        let slot = watch(map.as_ptr() as usize, map.len());
        Ok(Self { map, slot })
    }
}

impl std::ops::Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            unwatch(slot);
        }
    }
}

/// Live mappings that a bus error is recognised in: `[start, end)`, or
/// `[0, 0)` for a free slot. A mapping that finds no free slot is simply
/// not watched.
static RANGES: [[AtomicUsize; 2]; 16] = [const { [AtomicUsize::new(0), AtomicUsize::new(0)] }; 16];

/// Registers `[start, start + len)` (`start` > 0); returns its slot. The
/// slot is claimed by its start, and its end set after: it is never seen
/// covering more than the mapping.
fn watch(start: usize, len: usize) -> Option<usize> {
    install_handler();
    RANGES.iter().position(|range| {
        let claimed = range[0]
            .compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if claimed {
            range[1].store(start + len, Ordering::SeqCst);
        }
        claimed
    })
}

/// Frees `slot`: its end first, so it covers nothing while its start goes.
fn unwatch(slot: usize) {
    RANGES[slot][1].store(0, Ordering::SeqCst);
    RANGES[slot][0].store(0, Ordering::SeqCst);
}

/// Whether `address` lies in a watched mapping (async-signal-safe).
fn watched(address: usize) -> bool {
    RANGES.iter().any(|range| {
        let (start, end) = (
            range[0].load(Ordering::SeqCst),
            range[1].load(Ordering::SeqCst),
        );
        start <= address && address < end
    })
}

const MESSAGE: &[u8] = b"fold-coordinator: error: a history file was cut short by another program \
while this run read it (bus error); the run stopped unfinished and its state dir is as a crash \
leaves it: run again\n";

/// The handler that was in place before ours (std's, which reports stack
/// overflows), restored for a bus error outside our mappings.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

fn install_handler() {
    PREVIOUS.get_or_init(|| {
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_bus_error;
        // SAFETY: plain sigaction calls on zeroed, then filled, structs.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, &action, &mut previous);
            previous
        }
    });
}

/// SIGBUS: inside a watched mapping, one line and exit status 1; anywhere
/// else, the previous handler is put back and the faulting access runs
/// again under it.
extern "C" fn on_bus_error(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: only async-signal-safe calls (write, _exit, sigaction) and
    // atomic loads, on the siginfo the kernel hands over.
    unsafe {
        let address = (*info).si_addr() as usize;
        if watched(address) {
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
            libc::_exit(1);
        }
        // Set before this handler was: the default action (kill) if not.
        let default = std::mem::zeroed();
        let previous = PREVIOUS.get().unwrap_or(&default);
        libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "FOLD_TEST_CUT_A_MAPPING";

    /// Maps a file, cuts it short and reads past its new end: in a child
    /// process (this test run again), which must stop with the message and
    /// status 1, not die of the signal.
    #[test]
    fn a_mapping_cut_short_stops_the_process_with_a_clear_message() {
        if let Some(dir) = std::env::var_os(CHILD) {
            let path = std::path::Path::new(&dir).join("history");
            std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
            let file = File::open(&path).unwrap();
            // SAFETY: the test is the only writer, and cutting the file is
            // what is tested.
            let mapping = unsafe { Mapping::new(&file, 1 << 16) }.unwrap();
            assert_eq!(mapping[40_000], 7);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(0)
                .unwrap();
            let read = std::hint::black_box(&mapping[..])[40_000];
            panic!("read {read} past the end of a file cut short");
        }
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "search::mapping::tests::a_mapping_cut_short_stops_the_process_with_a_clear_message",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("was cut short by another program"),
            "{stderr}"
        );
    }

    #[test]
    fn a_mapping_is_watched_while_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        // SAFETY: nothing writes to the file.
        let mapping = unsafe { Mapping::new(&file, 3) }.unwrap();
        let start = mapping.as_ptr() as usize;
        assert!(watched(start) && watched(start + 2));
        assert_eq!(&mapping[..], b"abc");

        // A range no mapping can have (another test's may come and go).
        let far = usize::MAX - 1000;
        let slot = watch(far, 10).unwrap();
        assert!(watched(far) && watched(far + 9) && !watched(far + 10));
        unwatch(slot);
        assert!(!watched(far));
    }
}
