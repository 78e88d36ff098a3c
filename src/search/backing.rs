//! An append-only file of the exploration log that may live in memory while
//! it is small: a one-off search of a few thousand orthos then touches no
//! disk at all, and one that grows spills to its file once and goes on there.
//! A file only read may also be mapped into memory whole.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::mapping::Mapping;
use crate::error::{Error, Result};
use crate::storage::refuse_special_as_damaged;

/// Bytes an in-memory file may hold before it moves to disk.
const SPILL_AT: usize = 4 << 20;

/// One append-only file, in memory or on disk.
pub(crate) struct Backing {
    path: PathBuf,
    state: State,
    len: u64,
}

enum State {
    Memory(Vec<u8>),
    /// Read-only: appending to or moving it is refused.
    Mapped(Mapping),
    Disk(File),
}

fn io(path: &Path, what: &str, error: std::io::Error) -> Error {
    Error::io(format!("cannot {what} {}", path.display()), error)
}

/// The file `path`, opened for reading, and its length. Files are only
/// read where their owner recorded them as written: one that is gone is
/// damage, like one that is cut short.
fn open_existing(path: &Path) -> Result<(File, u64)> {
    refuse_special_as_damaged(path)?;
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Damaged {
            path: path.to_owned(),
            detail: "the file is missing".into(),
        },
        _ => io(path, "open", e),
    })?;
    let len = file.metadata().map_err(|e| io(path, "inspect", e))?.len();
    Ok((file, len))
}

fn read_only(path: &Path) -> Error {
    Error::Internal(format!("{} is mapped for reading only", path.display()))
}

impl Backing {
    /// The file `path`, cut back to `len` bytes (created when `len` is 0),
    /// so a torn tail left by a crash disappears.
    pub fn open(path: &Path, len: u64) -> Result<Self> {
        refuse_special_as_damaged(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(len == 0)
            .truncate(false)
            .open(path)
            .map_err(|e| io(path, "open", e))?;
        let actual = file.metadata().map_err(|e| io(path, "inspect", e))?.len();
        if actual < len {
            return Err(Error::Damaged {
                path: path.to_owned(),
                detail: format!("holds {actual} bytes but {len} were recorded as written"),
            });
        }
        file.set_len(len).map_err(|e| io(path, "truncate", e))?;
        Ok(Self {
            path: path.to_owned(),
            state: State::Disk(file),
            len,
        })
    }

    /// The file `path` as it is, for reading only.
    pub fn open_read(path: &Path) -> Result<Self> {
        let (file, len) = open_existing(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: State::Disk(file),
            len,
        })
    }

    /// The file `path` mapped into memory (and faulted in at once) for
    /// reading only, up to its first `len` bytes.
    ///
    /// A mapping is only as sound as the file under it. fold maps only
    /// files of a state dir it holds (its redb store is locked for as long
    /// as the directory is open, so no other fold process writes there),
    /// and it never cuts a history file below what it recorded as written,
    /// which is all that is mapped; a file another program cuts short stops
    /// the process with a message (see [`super::mapping`]).
    pub fn map_whole(path: &Path, len: u64) -> Result<Self> {
        let (file, actual) = open_existing(path)?;
        let len = len.min(actual);
        let state = match usize::try_from(len) {
            Ok(0) => State::Memory(Vec::new()),
            // SAFETY: see above; the mapping covers only bytes recorded as
            // written, in a file no other process writes while fold holds it.
            Ok(map_len) => State::Mapped(
                unsafe { Mapping::new(&file, map_len) }.map_err(|e| io(path, "map", e))?,
            ),
            Err(_) => State::Disk(file),
        };
        Ok(Self {
            path: path.to_owned(),
            state,
            len,
        })
    }

    /// Its bytes, when it is in memory or mapped.
    pub fn memory(&self) -> Option<&[u8]> {
        match &self.state {
            State::Memory(bytes) => Some(bytes),
            State::Mapped(map) => Some(map),
            State::Disk(_) => None,
        }
    }

    /// A new, empty file that stays in memory until it outgrows a few
    /// megabytes; then it is created at `path` (and its directory with it).
    pub fn in_memory(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            state: State::Memory(Vec::new()),
            len: 0,
        }
    }

    /// Bytes written.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends `bytes`.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.state {
            State::Memory(memory) => {
                memory.extend_from_slice(bytes);
                if memory.len() > SPILL_AT {
                    let memory = std::mem::take(memory);
                    self.state = State::Disk(self.create(&memory)?);
                }
            }
            State::Mapped(_) => return Err(read_only(&self.path)),
            State::Disk(file) => file
                .write_all_at(bytes, self.len)
                .map_err(|e| io(&self.path, "write", e))?,
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Fills `out` from `offset`.
    pub fn read_at(&self, out: &mut [u8], offset: u64) -> Result<()> {
        let State::Disk(file) = &self.state else {
            let memory = self.memory().unwrap_or_default();
            let bytes = usize::try_from(offset)
                .ok()
                .and_then(|start| memory.get(start..start.checked_add(out.len())?))
                .ok_or_else(|| Error::Damaged {
                    path: self.path.clone(),
                    detail: format!("read of {} bytes at {offset} past the end", out.len()),
                })?;
            out.copy_from_slice(bytes);
            return Ok(());
        };
        file.read_exact_at(out, offset)
            .map_err(|e| io(&self.path, "read", e))
    }

    /// Replaces `out` with the `len` bytes at `offset`, without first
    /// zeroing its memory (threads may call this at once).
    pub fn read_to_vec(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        if self.memory().is_some() {
            out.resize(len, 0);
            return self.read_at(out, offset);
        }
        // A handle of its own, whose position no other thread moves.
        use std::io::{Read, Seek, SeekFrom};
        let mut file = File::open(&self.path).map_err(|e| io(&self.path, "open", e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io(&self.path, "read", e))?;
        out.reserve_exact(len);
        let read = file
            .take(len as u64)
            .read_to_end(out)
            .map_err(|e| io(&self.path, "read", e))?;
        if read != len {
            return Err(Error::Damaged {
                path: self.path.clone(),
                detail: format!("read of {len} bytes at {offset} past the end"),
            });
        }
        Ok(())
    }

    /// Waits for the disk when `durable` and the file is on disk.
    pub fn sync(&mut self, durable: bool) -> Result<()> {
        match &self.state {
            State::Disk(file) if durable => file.sync_data().map_err(|e| io(&self.path, "sync", e)),
            _ => Ok(()),
        }
    }

    /// Moves the file to `path`: writes it there from memory, or renames it.
    pub fn persist(&mut self, path: &Path) -> Result<()> {
        match &self.state {
            State::Memory(memory) => {
                let memory = memory.clone();
                self.path = path.to_owned();
                self.state = State::Disk(self.create(&memory)?);
            }
            State::Mapped(_) => return Err(read_only(&self.path)),
            State::Disk(_) => {
                std::fs::rename(&self.path, path).map_err(|e| io(path, "move a file to", e))?;
                self.path = path.to_owned();
            }
        }
        Ok(())
    }

    /// Creates the file at `self.path` holding `bytes`.
    fn create(&self, bytes: &[u8]) -> Result<File> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, "create", e))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, "create", e))?;
        file.write_all_at(bytes, 0)
            .map_err(|e| io(&self.path, "write", e))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_stays_in_memory_and_a_large_one_spills_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("file");
        let mut file = Backing::in_memory(&path);
        file.append(b"hello").unwrap();
        assert!(!path.exists());
        let mut out = [0; 3];
        file.read_at(&mut out, 1).unwrap();
        assert_eq!(&out, b"ell");
        assert!(file.read_at(&mut out, 4).is_err());
        file.append(&vec![7; SPILL_AT]).unwrap();
        assert!(path.exists());
        file.append(b"!").unwrap();
        file.read_at(&mut out, file.len() - 3).unwrap();
        assert_eq!(&out, &[7, 7, b'!']);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), file.len());
    }

    #[test]
    fn a_mapped_file_reads_what_was_written_up_to_its_length_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, b"hello world").unwrap();
        let mut mapped = Backing::map_whole(&path, 5).unwrap();
        assert_eq!(mapped.len(), 5);
        assert_eq!(mapped.memory(), Some(&b"hello"[..]));
        let mut out = Vec::new();
        mapped.read_to_vec(1, 3, &mut out).unwrap();
        assert_eq!(out, b"ell");
        assert!(mapped.read_to_vec(3, 3, &mut out).is_err());
        assert!(mapped.append(b"!").is_err());
        assert!(mapped.persist(&dir.path().join("moved")).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");

        // Recorded as longer than it is: only what is there is mapped, and
        // the reader above it sees the file end early.
        assert_eq!(Backing::map_whole(&path, 100).unwrap().len(), 11);
        assert_eq!(
            Backing::map_whole(&path, 0).unwrap().memory(),
            Some(&[][..])
        );
        let missing = Backing::map_whole(&dir.path().join("gone"), 5)
            .err()
            .unwrap();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }

    #[test]
    fn a_pipe_or_a_directory_for_a_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("pipe");
        crate::test_support::make_fifo(&pipe);
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for path in [pipe, sub] {
            let errors = crate::test_support::within_ten_seconds(move || {
                [
                    Backing::map_whole(&path, 10).err(),
                    Backing::open_read(&path).err(),
                    Backing::open(&path, 10).err(),
                ]
                .map(|error| error.map(|e| e.to_string()))
            });
            for error in errors {
                let error = error.expect("refused");
                assert!(error.contains("not a regular file"), "{error}");
            }
        }
    }

    #[test]
    fn persisting_writes_memory_out_or_moves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut small = Backing::in_memory(&dir.path().join("a"));
        small.append(b"abc").unwrap();
        small.persist(&dir.path().join("kept")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("kept")).unwrap(), b"abc");
        small.append(b"d").unwrap();
        assert_eq!(std::fs::read(dir.path().join("kept")).unwrap(), b"abcd");

        let mut large = Backing::open(&dir.path().join("b"), 0).unwrap();
        large.append(b"xyz").unwrap();
        large.persist(&dir.path().join("moved")).unwrap();
        assert!(!dir.path().join("b").exists());
        assert_eq!(std::fs::read(dir.path().join("moved")).unwrap(), b"xyz");
    }
}
