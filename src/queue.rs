//! The search's work queue: FIFO, with a bounded in-memory buffer that spills
//! to a temporary redb file.
//!
//! Orthos live in three places, oldest first: `front` (in memory, popped from),
//! spilled chunks on disk, and `back` (in memory, pushed to). At most
//! `buffer` orthos are held in memory however long the queue grows. The spill
//! file is private to one queue and removed when the queue is dropped; it is
//! scratch space, so its commits skip fsync.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{Database, StorageBackend, TableDefinition};

use crate::error::{Error, Result};
use crate::ortho::Ortho;
use crate::spatial::{ShapeId, shapes};

/// Default number of orthos a queue keeps in memory.
pub const DEFAULT_BUFFER: usize = 10_000;

const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunks");

/// Cache redb may use for the spill file.
const SPILL_CACHE_BYTES: usize = 4 << 20;

/// A FIFO of orthos that keeps at most `buffer` of them in memory.
pub struct WorkQueue {
    front: VecDeque<Ortho>,
    back: Vec<Ortho>,
    buffer: usize,
    chunk: usize,
    spill_dir: PathBuf,
    spill: Option<SpillFile>,
    len: u64,
    spilled_total: u64,
}

impl WorkQueue {
    /// An empty queue holding at most `buffer` orthos in memory, spilling the
    /// rest into a temporary file under `spill_dir` (created when first needed).
    pub fn new(buffer: usize, spill_dir: impl Into<PathBuf>) -> Self {
        let buffer = buffer.max(4);
        Self {
            front: VecDeque::new(),
            back: Vec::new(),
            buffer,
            chunk: buffer / 4,
            spill_dir: spill_dir.into(),
            spill: None,
            len: 0,
            spilled_total: 0,
        }
    }

    /// Number of queued orthos.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of orthos held in memory right now.
    pub fn in_memory(&self) -> usize {
        self.front.len() + self.back.len()
    }

    /// Total number of orthos ever written to the spill file.
    pub fn spilled_total(&self) -> u64 {
        self.spilled_total
    }

    /// Appends an ortho at the back.
    pub fn push(&mut self, ortho: Ortho) -> Result<()> {
        self.back.push(ortho);
        self.len += 1;
        if self.back.len() >= self.chunk {
            let nothing_on_disk = self.spill.as_ref().is_none_or(SpillFile::is_empty);
            if nothing_on_disk && self.front.len() + self.back.len() <= self.buffer - self.chunk {
                self.front.extend(self.back.drain(..));
            } else {
                self.spill_back()?;
            }
        }
        Ok(())
    }

    /// Moves up to `max` of the oldest orthos into `out`.
    pub fn pop_batch(&mut self, max: usize, out: &mut Vec<Ortho>) -> Result<()> {
        while out.len() < max {
            if let Some(ortho) = self.front.pop_front() {
                out.push(ortho);
                self.len -= 1;
                continue;
            }
            if let Some(spill) = self.spill.as_mut().filter(|spill| !spill.is_empty()) {
                spill.load_oldest(&mut self.front)?;
            } else if !self.back.is_empty() {
                self.front.extend(self.back.drain(..));
            } else {
                break;
            }
        }
        Ok(())
    }

    fn spill_back(&mut self) -> Result<()> {
        if self.spill.is_none() {
            self.spill = Some(SpillFile::create(&self.spill_dir)?);
        }
        let spill = self.spill.as_mut().expect("spill file was just created");
        spill.write_chunk(&self.back)?;
        self.spilled_total += self.back.len() as u64;
        self.back.clear();
        Ok(())
    }
}

/// A temporary redb file of encoded chunks keyed by sequence number, created
/// on the first spill.
///
/// Its commits are ordinary ones, so redb frees and reuses the pages of
/// chunks already read and the file stays proportional to what is queued; the
/// file sits on a [`ScratchBackend`], so no commit waits for the disk.
struct SpillFile {
    db: Option<Database>,
    path: PathBuf,
    next_write: u64,
    next_read: u64,
}

impl SpillFile {
    fn create(dir: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::io(
                format!("cannot create queue directory {}", dir.display()),
                e,
            )
        })?;
        let name = format!(
            "fold-queue-{}-{}.redb",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        // A file of this name can only be left by a dead process that had our
        // pid: it is scratch, so it is overwritten.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot create queue file {}", path.display()), e))?;
        let backend = FileBackend::new(file).map_err(|e| Error::storage(&path, e))?;
        let db = Database::builder()
            .set_cache_size(SPILL_CACHE_BYTES)
            .create_with_backend(ScratchBackend(backend))
            .map_err(|e| Error::storage(&path, e))?;
        Ok(Self {
            db: Some(db),
            path,
            next_write: 0,
            next_read: 0,
        })
    }

    fn is_empty(&self) -> bool {
        self.next_read == self.next_write
    }

    fn db(&self) -> &Database {
        self.db.as_ref().expect("database is open until drop")
    }

    fn write_chunk(&mut self, orthos: &[Ortho]) -> Result<()> {
        let bytes = encode(orthos);
        let seq = self.next_write;
        self.commit(|table| {
            table.insert(seq, bytes.as_slice())?;
            Ok(())
        })?;
        self.next_write += 1;
        Ok(())
    }

    fn load_oldest(&mut self, into: &mut VecDeque<Ortho>) -> Result<()> {
        let seq = self.next_read;
        let mut bytes = Vec::new();
        self.commit(|table| {
            if let Some(value) = table.remove(seq)? {
                bytes = value.value().to_vec();
            }
            Ok(())
        })?;
        if bytes.is_empty() {
            return Err(Error::storage(
                &self.path,
                format!("queue chunk {seq} is missing"),
            ));
        }
        decode(&bytes, into).map_err(|e| Error::storage(&self.path, e))?;
        self.next_read += 1;
        Ok(())
    }

    fn commit(
        &self,
        work: impl FnOnce(&mut redb::Table<u64, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<()> {
        let fail = |e: &dyn std::fmt::Display| Error::storage(&self.path, e);
        let txn = self.db().begin_write().map_err(|e| fail(&e))?;
        {
            let mut table = txn.open_table(CHUNKS).map_err(|e| fail(&e))?;
            work(&mut table).map_err(|e| fail(&e))?;
        }
        txn.commit().map_err(|e| fail(&e))
    }
}

/// A redb backend over a scratch file: like redb's file backend, except that
/// `sync_data` returns at once. The spill file never has to survive a crash
/// (a new search starts a new queue), so waiting for the disk buys nothing.
#[derive(Debug)]
struct ScratchBackend(FileBackend);

impl StorageBackend for ScratchBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Chunk format: one byte giving the slot width `w` (2 or 4), then per ortho
/// its shape id as a little-endian `u16` and each slot as a little-endian
/// `w`-byte number: 0 for an empty slot, `token + 1` otherwise. Two bytes
/// suffice whenever the vocabulary is under 65,535 words, and fixed widths
/// decode without branching on every byte.
fn encode(orthos: &[Ortho]) -> Vec<u8> {
    let narrow = orthos
        .iter()
        .flat_map(Ortho::raw_slots)
        .all(|&slot| slot.wrapping_add(1) <= u32::from(u16::MAX));
    let width = if narrow { 2 } else { 4 };
    let slots: usize = orthos.iter().map(|ortho| ortho.raw_slots().len()).sum();
    let mut bytes = Vec::with_capacity(1 + orthos.len() * 2 + slots * width);
    bytes.push(width as u8);
    for ortho in orthos {
        bytes.extend_from_slice(&ortho.shape().0.to_le_bytes());
        for &slot in ortho.raw_slots() {
            let value = slot.wrapping_add(1);
            if narrow {
                bytes.extend_from_slice(&(value as u16).to_le_bytes());
            } else {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
    }
    bytes
}

fn decode(bytes: &[u8], into: &mut VecDeque<Ortho>) -> std::result::Result<(), String> {
    let (&width, mut bytes) = bytes.split_first().ok_or("empty chunk")?;
    let width = usize::from(width);
    if width != 2 && width != 4 {
        return Err(format!("bad slot width {width}"));
    }
    let mut slots = Vec::new();
    while !bytes.is_empty() {
        let (shape, rest) = bytes.split_at_checked(2).ok_or("truncated chunk")?;
        let shape = ShapeId(u16::from_le_bytes([shape[0], shape[1]]));
        let capacity = shapes()
            .table_checked(shape)
            .ok_or("unknown shape in chunk")?
            .capacity;
        let (payload, rest) = rest
            .split_at_checked(capacity * width)
            .ok_or("truncated chunk")?;
        slots.clear();
        if width == 2 {
            slots.extend(
                payload
                    .chunks_exact(2)
                    .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])).wrapping_sub(1)),
            );
        } else {
            slots.extend(
                payload
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]).wrapping_sub(1)),
            );
        }
        into.push_back(Ortho::from_raw(shape, &slots).map_err(|e| e.to_string())?);
        bytes = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interner::Token;

    fn ortho(n: u32) -> Ortho {
        Ortho::new(&[2, 2], &[Some(Token(n)), None, None, None]).unwrap()
    }

    fn drain(queue: &mut WorkQueue, batch: usize) -> Vec<u32> {
        let mut all = Vec::new();
        loop {
            let mut out = Vec::new();
            queue.pop_batch(batch, &mut out).unwrap();
            if out.is_empty() {
                return all;
            }
            all.extend(out.iter().map(|o| o.raw_slots()[0]));
        }
    }

    #[test]
    fn small_queue_stays_in_memory_and_is_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = WorkQueue::new(100, dir.path());
        for n in 0..50 {
            queue.push(ortho(n)).unwrap();
        }
        assert_eq!(queue.spilled_total(), 0);
        assert_eq!(drain(&mut queue, 7), (0..50).collect::<Vec<_>>());
        assert!(queue.is_empty());
    }

    #[test]
    fn large_queue_spills_to_disk_keeps_order_and_bounds_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = WorkQueue::new(100, dir.path());
        let mut expected = Vec::new();
        let mut popped = Vec::new();
        // Interleave pushes and pops the way the batch loop does.
        for round in 0..20u32 {
            for n in 0..90 {
                let value = round * 1000 + n;
                queue.push(ortho(value)).unwrap();
                expected.push(value);
                assert!(queue.in_memory() <= 100);
            }
            let mut out = Vec::new();
            queue.pop_batch(30, &mut out).unwrap();
            popped.extend(out.iter().map(|o| o.raw_slots()[0]));
        }
        assert!(queue.spilled_total() > 0);
        assert!(queue.spill.is_some());
        popped.extend(drain(&mut queue, 1000));
        assert_eq!(popped, expected);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn spill_file_reuses_freed_pages_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = WorkQueue::new(400, dir.path());
        let size = || {
            let entry = std::fs::read_dir(dir.path())
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            entry.metadata().unwrap().len()
        };
        // Keep about 2,000 orthos queued while 100,000 pass through.
        for n in 0..2_000 {
            queue.push(ortho(n)).unwrap();
        }
        let settled = size();
        for n in 2_000..100_000 {
            queue.push(ortho(n)).unwrap();
            if n % 100 == 0 {
                let mut out = Vec::new();
                queue.pop_batch(100, &mut out).unwrap();
            }
        }
        assert!(
            size() <= settled * 4,
            "spill file grew from {settled} to {} bytes",
            size()
        );
    }

    #[test]
    fn spill_file_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = WorkQueue::new(8, dir.path());
        for n in 0..100 {
            queue.push(ortho(n)).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(queue);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_chunk_is_an_error_not_a_panic() {
        let mut into = VecDeque::new();
        assert!(decode(&[0], &mut into).is_err(), "truncated payload");
        assert!(
            decode(&[0xff, 0xff, 0x7f], &mut into).is_err(),
            "unknown shape"
        );
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut into).is_err());
        assert!(into.is_empty());
    }

    #[test]
    fn encoding_round_trips_empty_slots_and_both_widths() {
        let orthos = vec![
            Ortho::new(
                &[2, 2],
                &[
                    Some(Token(0)),
                    Some(Token(u32::MAX - 1)),
                    None,
                    Some(Token(300)),
                ],
            )
            .unwrap(),
            Ortho::new(
                &[3, 2],
                &[Some(Token(127)), None, None, None, None, Some(Token(128))],
            )
            .unwrap(),
        ];
        // The first ortho needs four-byte slots; the second alone fits in two.
        assert_eq!(encode(&orthos)[0], 4);
        assert_eq!(encode(&orthos[1..])[0], 2);
        let mut decoded = VecDeque::new();
        decode(&encode(&orthos), &mut decoded).unwrap();
        decode(&encode(&orthos[1..]), &mut decoded).unwrap();
        assert_eq!(Vec::from(decoded), [&orthos[..], &orthos[1..]].concat());
        // The largest token that still fits in two bytes.
        let edge = vec![Ortho::new(&[2, 2], &[Some(Token(65_534)), None, None, None]).unwrap()];
        assert_eq!(encode(&edge)[0], 2);
        let mut decoded = VecDeque::new();
        decode(&encode(&edge), &mut decoded).unwrap();
        assert_eq!(Vec::from(decoded), edge);
    }
}
