//! The exploration log: every ortho a search found, on disk, in the order it
//! was found, with what expanding it learned.
//!
//! One *segment* per searched version holds three append-only files:
//!
//! * `orthos-N` — the orthos found in that version, in discovery order. The
//!   search's queue is FIFO, so this file doubles as the work queue: the
//!   orthos still to expand are always a suffix of it, and a search keeps at
//!   most two chunks of it in memory however long the queue grows.
//! * `expansions-N` — one [`Expansion`] per expanded ortho, in the same order.
//! * `overrides-N` — orthos of older segments re-expanded in that version
//!   (their watched trie nodes grew), each with its new [`Expansion`].
//! * `ids-N` — the 64-bit id of each ortho of `orthos-N`, in the same order,
//!   so that reopening a log refills the seen set without hashing.
//!
//! A file is only ever appended to; a crash leaves at most a torn tail that
//! the owner truncates back to the lengths it recorded at a checkpoint.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::backing::Backing;
use crate::error::{Error, Result};
use crate::ortho::{Expansion, MAX_PREFIXES, Ortho, OrthoId, Watch};
use crate::spatial::{ShapeId, shapes};

/// Orthos per chunk of an `orthos` file.
const CHUNK: usize = 2_500;

/// The files of a segment, in the order [`segment_paths`] names them.
const KINDS: [&str; 4] = ["orthos", "expansions", "overrides", "ids"];

/// The four file names of segment `segment` of generation `generation`
/// (compaction starts a new generation; see [`copy_segment`]).
pub(crate) fn segment_paths(dir: &Path, generation: u32, segment: u32) -> [PathBuf; 4] {
    KINDS.map(|kind| {
        dir.join(match generation {
            0 => format!("{kind}-{segment}"),
            _ => format!("g{generation}-{kind}-{segment}"),
        })
    })
}

/// The generation and segment a log file name belongs to, if it is one.
pub(crate) fn parse_segment_path(name: &str) -> Option<(u32, u32)> {
    let (generation, rest) = match name.strip_prefix('g') {
        Some(rest) => {
            let (generation, rest) = rest.split_once('-')?;
            (generation.parse().ok()?, rest)
        }
        None => (0, name),
    };
    let (kind, segment) = rest.rsplit_once('-')?;
    KINDS.contains(&kind).then_some(())?;
    Some((generation, segment.parse().ok()?))
}

/// Appends a finished segment to compacted files: its orthos chunk by chunk,
/// and for each its current expansion (`current` returns an override, if
/// any). Returns the number of orthos copied.
pub(crate) fn copy_segment(
    orthos: (&Path, u64),
    expansions: (&Path, u64),
    out_orthos: &mut Backing,
    out_expansions: &mut RecordWriter,
    mut current: impl FnMut(u32) -> Option<Expansion>,
) -> Result<u64> {
    let mut frames = FrameReader::open(orthos.0, orthos.1)?;
    let mut records = RecordBlocks::open(expansions.0, expansions.1)?;
    let mut index = 0u32;
    while let Some(count) = frames.advance()? {
        let (_, len, _) = frames.current;
        let mut header = [0u8; FRAME_HEADER];
        header[..4].copy_from_slice(&(len as u32).to_le_bytes());
        header[4..].copy_from_slice(&count.to_le_bytes());
        frames.read()?;
        out_orthos.append(&header)?;
        out_orthos.append(&frames.payload)?;
        for _ in 0..count {
            let recorded = records
                .next()?
                .ok_or_else(|| storage(expansions.0, format!("record {index} is missing")))?;
            match current(index) {
                Some(expansion) => out_expansions.expansions(&[expansion])?,
                None => out_expansions.raw(recorded.0)?,
            }
            index += 1;
        }
    }
    if records.next()?.is_some() {
        return Err(storage(expansions.0, "more records than orthos"));
    }
    Ok(u64::from(index))
}

fn storage(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::storage(path, error)
}

fn io(path: &Path, what: &str, error: std::io::Error) -> Error {
    Error::io(format!("cannot {what} {}", path.display()), error)
}

/// Opens the first `len` bytes of `path` for buffered reading.
fn open_prefix(path: &Path, len: u64) -> Result<BufReader<std::io::Take<File>>> {
    let file = File::open(path).map_err(|e| io(path, "open", e))?;
    let actual = file.metadata().map_err(|e| io(path, "inspect", e))?.len();
    if actual < len {
        return Err(storage(
            path,
            format!("holds {actual} bytes but {len} were recorded"),
        ));
    }
    Ok(BufReader::with_capacity(1 << 16, file.take(len)))
}

/// Fills `out` from `reader`; `Ok(false)` at a clean end before the first byte.
fn read_or_end(reader: &mut impl Read, out: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < out.len() {
        match reader.read(&mut out[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Bytes before each chunk of an orthos file: its payload length and its
/// number of orthos, as little-endian `u32`s.
const FRAME_HEADER: usize = 8;

/// Reads the chunks of an orthos file one at a time.
struct FrameReader {
    reader: BufReader<std::io::Take<File>>,
    path: PathBuf,
    offset: u64,
    payload: Vec<u8>,
    /// The current chunk: payload offset, length and number of orthos.
    current: (u64, usize, u32),
}

impl FrameReader {
    fn open(path: &Path, len: u64) -> Result<Self> {
        Ok(Self {
            reader: open_prefix(path, len)?,
            path: path.to_owned(),
            offset: 0,
            payload: Vec::new(),
            current: (0, 0, 0),
        })
    }

    /// Moves to the next chunk and returns its number of orthos, without
    /// reading its payload yet.
    fn advance(&mut self) -> Result<Option<u32>> {
        let torn = |e: std::io::Error| storage(&self.path, format!("torn chunk: {e}"));
        let mut header = [0; FRAME_HEADER];
        if !read_or_end(&mut self.reader, &mut header).map_err(torn)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let count = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let offset = self.offset + FRAME_HEADER as u64;
        self.offset = offset + len as u64;
        self.current = (offset, len, count);
        Ok(Some(count))
    }

    /// Skips the current chunk's payload.
    fn skip(&mut self) -> Result<()> {
        let (_, len, _) = self.current;
        let torn = |e: std::io::Error| storage(&self.path, format!("torn chunk: {e}"));
        std::io::copy(
            &mut (&mut self.reader).take(len as u64),
            &mut std::io::sink(),
        )
        .map_err(torn)
        .and_then(|copied| {
            if copied == len as u64 {
                Ok(())
            } else {
                Err(storage(&self.path, "torn chunk"))
            }
        })
    }

    /// Reads the current chunk's payload.
    fn read(&mut self) -> Result<RawOrthos<'_>> {
        let (_, len, _) = self.current;
        self.payload.resize(len, 0);
        self.reader
            .read_exact(&mut self.payload)
            .map_err(|e| storage(&self.path, format!("torn chunk: {e}")))?;
        RawOrthos::new(&self.payload).map_err(|e| storage(&self.path, e))
    }

    /// The next chunk, read.
    fn next(&mut self) -> Result<Option<(u64, RawOrthos<'_>)>> {
        if self.advance()?.is_none() {
            return Ok(None);
        }
        let offset = self.current.0;
        Ok(Some((offset, self.read()?)))
    }
}

/// The orthos file of the segment being searched: the work queue.
///
/// Orthos live in three places, oldest first: `front` (in memory, popped
/// from), chunks on disk not yet read back, and `tail` (in memory, not yet
/// written). Every ortho reaches the disk exactly once.
pub(crate) struct OrthoQueue {
    file: Backing,
    ids: Backing,
    front: VecDeque<Ortho>,
    unread: VecDeque<(u64, u32)>,
    tail: Vec<Ortho>,
    /// The ids of `tail`, in the same order.
    tail_ids: Vec<OrthoId>,
    bytes: u64,
    written: u64,
    queued: u64,
    encoded: Vec<u8>,
}

impl OrthoQueue {
    /// Reopens the orthos file `path` at `len` bytes holding `count` orthos,
    /// of which the first `expanded` are done; the rest are queued again.
    pub fn open(path: &Path, ids: &Path, len: u64, count: u64, expanded: u64) -> Result<Self> {
        let file = Backing::open(path, len)?;
        let ids = Backing::open(ids, count * 8)?;
        let mut queue = Self::over(file, ids, count, expanded);
        let mut seen = 0u64;
        let mut skip = expanded;
        let mut frames = FrameReader::open(path, len)?;
        while let Some((offset, orthos)) = frames.next()? {
            let in_chunk = orthos.clone().count() as u64;
            seen += in_chunk;
            if skip >= in_chunk {
                skip -= in_chunk;
                continue;
            }
            // The first chunk with work left is loaded; later ones wait on disk.
            if queue.front.is_empty() && queue.unread.is_empty() {
                for raw in orthos.skip(skip as usize) {
                    queue.front.push_back(
                        raw.and_then(RawOrtho::decode)
                            .map_err(|e| storage(path, e))?,
                    );
                }
                skip = 0;
            } else {
                queue.unread.push_back((offset, frames.current.1 as u32));
            }
        }
        if seen != count {
            return Err(storage(
                path,
                format!("holds {seen} orthos but {count} were recorded"),
            ));
        }
        Ok(queue)
    }

    /// A new orthos file that stays in memory while small (see [`Backing`]).
    pub fn in_memory(path: &Path, ids: &Path) -> Self {
        Self::over(Backing::in_memory(path), Backing::in_memory(ids), 0, 0)
    }

    fn over(file: Backing, ids: Backing, count: u64, expanded: u64) -> Self {
        Self {
            bytes: file.len(),
            file,
            ids,
            front: VecDeque::new(),
            unread: VecDeque::new(),
            tail: Vec::new(),
            tail_ids: Vec::new(),
            written: count,
            queued: count.saturating_sub(expanded),
            encoded: Vec::new(),
        }
    }

    /// The orthos and ids files, once every found ortho is written to them.
    pub fn into_backing(mut self) -> Result<(Backing, Backing)> {
        self.write_tail()?;
        Ok((self.file, self.ids))
    }

    /// Orthos found and not yet popped.
    pub fn len(&self) -> u64 {
        self.queued
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Appends a newly found ortho and its id.
    pub fn push(&mut self, id: OrthoId, ortho: Ortho) -> Result<()> {
        debug_assert_eq!(id, ortho.id());
        self.tail.push(ortho);
        self.tail_ids.push(id);
        self.queued += 1;
        if self.tail.len() >= CHUNK {
            self.write_tail()?;
        }
        Ok(())
    }

    /// Moves up to `max` of the oldest queued orthos into `out`.
    pub fn pop_batch(&mut self, max: usize, out: &mut Vec<Ortho>) -> Result<()> {
        while out.len() < max {
            if let Some(ortho) = self.front.pop_front() {
                out.push(ortho);
                self.queued -= 1;
            } else if let Some((offset, len)) = self.unread.pop_front() {
                self.read_chunk(offset, len)?;
            } else if !self.tail.is_empty() {
                self.write_tail()?;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Writes every found ortho to the file, waits for the disk when
    /// `durable`, and returns the file's length in bytes and in orthos.
    pub fn sync(&mut self, durable: bool) -> Result<(u64, u64)> {
        self.write_tail()?;
        self.file.sync(durable)?;
        self.ids.sync(durable)?;
        Ok((self.bytes, self.written))
    }

    fn write_tail(&mut self) -> Result<()> {
        if self.tail.is_empty() {
            return Ok(());
        }
        self.encoded.clear();
        self.encoded.extend_from_slice(&[0; FRAME_HEADER]);
        encode_orthos(&self.tail, &mut self.encoded);
        let payload = (self.encoded.len() - FRAME_HEADER) as u32;
        self.encoded[..4].copy_from_slice(&payload.to_le_bytes());
        self.encoded[4..FRAME_HEADER].copy_from_slice(&(self.tail.len() as u32).to_le_bytes());
        self.file.append(&self.encoded)?;
        let offset = self.bytes + FRAME_HEADER as u64;
        self.bytes += self.encoded.len() as u64;
        self.encoded.clear();
        for id in self.tail_ids.drain(..) {
            self.encoded.extend_from_slice(&id.to_le_bytes());
        }
        self.ids.append(&self.encoded)?;
        self.written += self.tail.len() as u64;
        // Orthos that are next in line anyway stay in memory instead of
        // being read back.
        if self.unread.is_empty() && self.front.len() < CHUNK {
            self.front.extend(self.tail.drain(..));
        } else {
            self.unread.push_back((offset, payload));
            self.tail.clear();
        }
        Ok(())
    }

    fn read_chunk(&mut self, offset: u64, len: u32) -> Result<()> {
        let mut bytes = vec![0; len as usize];
        self.file.read_at(&mut bytes, offset)?;
        let path = self.file.path();
        for raw in RawOrthos::new(&bytes).map_err(|e| storage(path, e))? {
            let ortho = raw
                .and_then(RawOrtho::decode)
                .map_err(|e| storage(path, e))?;
            self.front.push_back(ortho);
        }
        Ok(())
    }
}

/// An append-only file of records (expansions or overrides).
pub(crate) struct RecordWriter {
    file: Backing,
    buffer: Vec<u8>,
}

impl RecordWriter {
    /// Bytes buffered before they are appended to the file.
    const BUFFER: usize = 1 << 16;

    /// Reopens `path` for appending at `len` bytes (a new file when 0).
    pub fn open(path: &Path, len: u64) -> Result<Self> {
        Ok(Self::over(Backing::open(path, len)?))
    }

    /// A new record file that stays in memory while small (see [`Backing`]).
    pub fn in_memory(path: &Path) -> Self {
        Self::over(Backing::in_memory(path))
    }

    fn over(file: Backing) -> Self {
        Self {
            file,
            buffer: Vec::with_capacity(Self::BUFFER),
        }
    }

    /// The file, with everything written to it.
    pub fn into_backing(mut self) -> Result<Backing> {
        self.flush()?;
        Ok(self.file)
    }

    /// Appends the expansions of a batch.
    pub fn expansions(&mut self, expansions: &[Expansion]) -> Result<()> {
        for expansion in expansions {
            encode_expansion(expansion, &mut self.buffer);
        }
        self.flush_when_full()
    }

    /// Appends an encoded expansion as it is.
    fn raw(&mut self, record: &[u8]) -> Result<()> {
        self.buffer.extend_from_slice(record);
        self.flush_when_full()
    }

    /// Appends one override: ortho `index` of segment `segment` now expands as `expansion`.
    pub fn override_of(&mut self, at: RecordAt, expansion: &Expansion) -> Result<()> {
        self.buffer.extend_from_slice(&at.segment.to_le_bytes());
        self.buffer.extend_from_slice(&at.index.to_le_bytes());
        encode_expansion(expansion, &mut self.buffer);
        self.flush_when_full()
    }

    fn flush_when_full(&mut self) -> Result<()> {
        if self.buffer.len() >= Self::BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file.append(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Writes everything out, waits for the disk when `durable`, and
    /// returns the file's length.
    pub fn sync(&mut self, durable: bool) -> Result<u64> {
        self.flush()?;
        self.file.sync(durable)?;
        Ok(self.file.len())
    }
}

/// Where an ortho's record lives: its segment and its index in that segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RecordAt {
    pub segment: u32,
    pub index: u32,
}

/// Reads the overrides file `path` up to `len` bytes.
pub(crate) fn read_overrides(path: &Path, len: u64) -> Result<Vec<(RecordAt, Expansion)>> {
    let mut bytes = Vec::new();
    open_prefix(path, len)?
        .read_to_end(&mut bytes)
        .map_err(|e| io(path, "read", e))?;
    let mut rest = bytes.as_slice();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (at, tail) = rest
            .split_at_checked(8)
            .ok_or_else(|| storage(path, "truncated override"))?;
        let at = RecordAt {
            segment: u32::from_le_bytes(at[..4].try_into().expect("4 bytes")),
            index: u32::from_le_bytes(at[4..].try_into().expect("4 bytes")),
        };
        let (expansion, tail) = decode_expansion(tail).map_err(|e| storage(path, e))?;
        out.push((at, expansion));
        rest = tail;
    }
    Ok(out)
}

/// Scans a finished segment. `pick` sees each ortho's index and recorded
/// expansion and returns the ortho's current expansion if the ortho is
/// wanted; `visit` then gets the wanted orthos, decoded. Chunks without a
/// wanted ortho are skipped without being decoded. Returns the number of
/// orthos scanned.
pub(crate) fn scan_segment(
    orthos: (&Path, u64),
    expansions: (&Path, u64),
    mut pick: impl FnMut(u32, RawExpansion<'_>) -> Option<Expansion>,
    mut visit: impl FnMut(u32, Ortho, Expansion) -> Result<()>,
) -> Result<u32> {
    let expansions_path = expansions.0;
    let mut frames = FrameReader::open(orthos.0, orthos.1)?;
    let mut records = RecordBlocks::open(expansions_path, expansions.1)?;
    let mut index = 0u32;
    let mut hits: Vec<(u32, Expansion)> = Vec::new();
    while let Some(count) = frames.advance()? {
        let first = index;
        for _ in 0..count {
            let recorded = records
                .next()?
                .ok_or_else(|| storage(expansions_path, format!("record {index} is missing")))?;
            if let Some(expansion) = pick(index, recorded) {
                hits.push((index - first, expansion));
            }
            index += 1;
        }
        if hits.is_empty() {
            frames.skip()?;
            continue;
        }
        let mut raws = frames.read()?.enumerate();
        for (offset, expansion) in hits.drain(..) {
            let raw = raws
                .by_ref()
                .find_map(|(at, raw)| (at as u32 == offset).then_some(raw))
                .ok_or_else(|| storage(orthos.0, "chunk is shorter than its count"))?;
            let ortho = raw
                .and_then(RawOrtho::decode)
                .map_err(|e| storage(orthos.0, e))?;
            visit(first + offset, ortho, expansion)?;
        }
    }
    if records.next()?.is_some() {
        return Err(storage(expansions_path, "more records than orthos"));
    }
    Ok(index)
}

/// Reads an expansions file in large blocks and parses records in place.
struct RecordBlocks {
    file: std::io::Take<File>,
    path: PathBuf,
    block: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecordBlocks {
    const BLOCK: usize = 1 << 20;

    fn open(path: &Path, len: u64) -> Result<Self> {
        Ok(Self {
            file: open_prefix(path, len)?.into_inner(),
            path: path.to_owned(),
            block: vec![0; Self::BLOCK],
            start: 0,
            end: 0,
        })
    }

    /// Makes at least `want` bytes available; `false` if the file ends first.
    #[cold]
    fn fill(&mut self, want: usize) -> Result<bool> {
        self.block.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < want {
            let read = self
                .file
                .read(&mut self.block[self.end..])
                .map_err(|e| io(&self.path, "read", e))?;
            if read == 0 {
                return Ok(false);
            }
            self.end += read;
        }
        Ok(true)
    }

    /// The next record, undecoded.
    #[inline]
    fn next(&mut self) -> Result<Option<RawExpansion<'_>>> {
        const LONGEST: usize = 1 + 4 * MAX_PREFIXES;
        if self.end - self.start < LONGEST && !self.fill(LONGEST)? && self.start == self.end {
            return Ok(None);
        }
        let (record, _) = RawExpansion::split(&self.block[self.start..self.end])
            .map_err(|e| storage(&self.path, e))?;
        self.start += record.0.len();
        Ok(Some(record))
    }
}

/// One encoded [`Expansion`], checked to be whole.
#[derive(Clone, Copy)]
pub(crate) struct RawExpansion<'a>(&'a [u8]);

impl<'a> RawExpansion<'a> {
    /// The record at the start of `bytes`, and what follows it.
    fn split(bytes: &'a [u8]) -> std::result::Result<(Self, &'a [u8]), String> {
        let &head = bytes.first().ok_or("missing expansion record")?;
        let count = usize::from(head & 0x7f);
        if count > MAX_PREFIXES {
            return Err("too many watched nodes".into());
        }
        let (record, rest) = bytes
            .split_at_checked(1 + 4 * count)
            .ok_or("truncated expansion record")?;
        Ok((Self(record), rest))
    }

    /// The watched node ids.
    #[inline]
    pub fn nodes(&self) -> impl Iterator<Item = u32> + '_ {
        self.0[1..]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The expansion.
    pub fn decode(&self) -> Expansion {
        let mut ids = [0u32; MAX_PREFIXES];
        let mut len = 0;
        for (id, node) in ids.iter_mut().zip(self.nodes()) {
            *id = node;
            len += 1;
        }
        Expansion {
            leaf: self.0[0] >> 7 == 1,
            watch: Watch::from_parts(ids, len),
        }
    }
}

/// Calls `visit` with the first `len` bytes of `path`, a block at a time.
fn read_blocks(path: &Path, len: u64, mut visit: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut reader = open_prefix(path, len)?;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len as usize;
    while left > 0 {
        let take = left.min(block.len());
        reader
            .read_exact(&mut block[..take])
            .map_err(|e| io(path, "read", e))?;
        visit(&block[..take])?;
        left -= take;
    }
    Ok(())
}

/// Calls `visit` with each of the first `count` ids of an ids file, in
/// blocks; `Ok(false)` (having visited none) if the file holds fewer.
pub(crate) fn scan_ids(path: &Path, count: u64, mut visit: impl FnMut(&[u64])) -> Result<bool> {
    let len = count * 8;
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() >= len => {}
        _ => return Ok(false),
    }
    let mut ids = Vec::new();
    read_blocks(path, len, |block| {
        ids.clear();
        ids.extend(
            block
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
        );
        visit(&ids);
        Ok(())
    })?;
    Ok(true)
}

/// Appends the first `len` bytes of `path` to `out`.
pub(crate) fn copy_prefix(path: &Path, len: u64, out: &mut Backing) -> Result<()> {
    read_blocks(path, len, |block| out.append(block))
}

/// Calls `visit` with every ortho in the first `len` bytes of an orthos file.
pub(crate) fn scan_orthos(path: &Path, len: u64, mut visit: impl FnMut(Ortho)) -> Result<u64> {
    let mut count = 0;
    let mut frames = FrameReader::open(path, len)?;
    while let Some((_, chunk)) = frames.next()? {
        for raw in chunk {
            visit(
                raw.and_then(RawOrtho::decode)
                    .map_err(|e| storage(path, e))?,
            );
            count += 1;
        }
    }
    Ok(count)
}

/// Chunk format: one byte giving the slot width `w` (2 or 4), then per ortho
/// its shape id as a little-endian `u16` and each slot as a little-endian
/// `w`-byte number: 0 for an empty slot, `token + 1` otherwise. Two bytes
/// suffice whenever the vocabulary is under 65,535 words, and fixed widths
/// decode without branching on every byte.
pub(crate) fn encode_orthos(orthos: &[Ortho], bytes: &mut Vec<u8>) {
    let narrow = orthos
        .iter()
        .flat_map(Ortho::raw_slots)
        .all(|&slot| slot.wrapping_add(1) <= u32::from(u16::MAX));
    let width = if narrow { 2 } else { 4 };
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
}

/// The orthos of one encoded chunk, undecoded.
#[derive(Clone)]
pub(crate) struct RawOrthos<'a> {
    width: usize,
    bytes: &'a [u8],
}

impl<'a> RawOrthos<'a> {
    pub fn new(chunk: &'a [u8]) -> std::result::Result<Self, String> {
        let (&width, bytes) = chunk.split_first().ok_or("empty chunk")?;
        let width = usize::from(width);
        if width != 2 && width != 4 {
            return Err(format!("bad slot width {width}"));
        }
        Ok(Self { width, bytes })
    }
}

impl<'a> Iterator for RawOrthos<'a> {
    type Item = std::result::Result<RawOrtho<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        let raw = (|| {
            let (shape, rest) = self.bytes.split_at_checked(2).ok_or("truncated chunk")?;
            let shape = ShapeId(u16::from_le_bytes([shape[0], shape[1]]));
            let capacity = shapes()
                .table_checked(shape)
                .ok_or("unknown shape in chunk")?
                .capacity;
            let (payload, rest) = rest
                .split_at_checked(capacity * self.width)
                .ok_or("truncated chunk")?;
            self.bytes = rest;
            Ok(RawOrtho {
                shape,
                width: self.width,
                payload,
            })
        })();
        if raw.is_err() {
            self.bytes = &[];
        }
        Some(raw)
    }
}

/// One encoded ortho.
pub(crate) struct RawOrtho<'a> {
    shape: ShapeId,
    width: usize,
    payload: &'a [u8],
}

impl RawOrtho<'_> {
    pub fn decode(self) -> std::result::Result<Ortho, String> {
        let capacity = self.payload.len() / self.width;
        let mut inline = [0u32; 16];
        let mut heap = Vec::new();
        let slots = if capacity <= inline.len() {
            &mut inline[..capacity]
        } else {
            heap.resize(capacity, 0);
            &mut heap[..]
        };
        if self.width == 2 {
            for (slot, b) in slots.iter_mut().zip(self.payload.chunks_exact(2)) {
                *slot = u32::from(u16::from_le_bytes([b[0], b[1]])).wrapping_sub(1);
            }
        } else {
            for (slot, b) in slots.iter_mut().zip(self.payload.chunks_exact(4)) {
                *slot = u32::from_le_bytes([b[0], b[1], b[2], b[3]]).wrapping_sub(1);
            }
        }
        Ortho::from_raw(self.shape, slots).map_err(|e| e.to_string())
    }
}

/// Expansion format: one byte, the leaf flag in bit 7 and the number `n` of
/// watched nodes below it, then the `n` node ids as little-endian `u32`s.
fn encode_expansion(expansion: &Expansion, bytes: &mut Vec<u8>) {
    let nodes = expansion.watch.nodes();
    bytes.push(u8::from(expansion.leaf) << 7 | nodes.len() as u8);
    for node in nodes {
        bytes.extend_from_slice(&node.to_le_bytes());
    }
}

fn decode_expansion(bytes: &[u8]) -> std::result::Result<(Expansion, &[u8]), String> {
    let (record, rest) = RawExpansion::split(bytes)?;
    Ok((record.decode(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interner::Token;

    fn ortho(n: u32) -> Ortho {
        Ortho::new(&[2, 2], &[Some(Token(n)), None, None, None]).unwrap()
    }

    fn drain(queue: &mut OrthoQueue, batch: usize) -> Vec<u32> {
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
    fn queue_is_fifo_bounded_in_memory_and_keeps_every_ortho_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orthos-1");
        let ids = dir.path().join("ids-1");
        let mut queue = OrthoQueue::open(&path, &ids, 0, 0, 0).unwrap();
        let mut expected = Vec::new();
        let mut popped = Vec::new();
        for round in 0..40u32 {
            for n in 0..900 {
                let value = round * 1000 + n;
                queue.push(ortho(value).id(), ortho(value)).unwrap();
                expected.push(value);
                assert!(queue.front.len() + queue.tail.len() <= 3 * CHUNK);
            }
            let mut out = Vec::new();
            queue.pop_batch(300, &mut out).unwrap();
            popped.extend(out.iter().map(|o| o.raw_slots()[0]));
        }
        popped.extend(drain(&mut queue, 1000));
        assert_eq!(popped, expected);
        let (bytes, count) = queue.sync(true).unwrap();
        assert_eq!(count, expected.len() as u64);
        let mut stored = Vec::new();
        let mut hashed = Vec::new();
        scan_orthos(&path, bytes, |o| {
            stored.push(o.raw_slots()[0]);
            hashed.push(o.id());
        })
        .unwrap();
        assert_eq!(stored, expected);
        let mut recorded = Vec::new();
        assert!(scan_ids(&ids, count, |block| recorded.extend_from_slice(block)).unwrap());
        assert_eq!(recorded, hashed);
        assert!(!scan_ids(&ids, count + 1, |_| unreachable!()).unwrap());
    }

    #[test]
    fn reopened_queue_resumes_after_the_expanded_orthos_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orthos-1");
        let ids = dir.path().join("ids-1");
        let mut queue = OrthoQueue::open(&path, &ids, 0, 0, 0).unwrap();
        for n in 0..7_000 {
            queue.push(ortho(n).id(), ortho(n)).unwrap();
        }
        let (bytes, count) = queue.sync(true).unwrap();
        for n in 7_000..9_000 {
            queue.push(ortho(n).id(), ortho(n)).unwrap();
        }
        queue.sync(true).unwrap();
        drop(queue);
        for expanded in [0, 1, 2_499, 2_500, 2_501, 6_999, 7_000] {
            let mut queue = OrthoQueue::open(&path, &ids, bytes, count, expanded).unwrap();
            assert_eq!(queue.len(), 7_000 - expanded);
            assert_eq!(
                drain(&mut queue, 999),
                (expanded as u32..7_000).collect::<Vec<_>>()
            );
        }
        assert!(OrthoQueue::open(&path, &ids, bytes, count + 1, 0).is_err());
        assert!(OrthoQueue::open(&path, &ids, bytes * 10, count, 0).is_err());
    }

    #[test]
    fn expansions_and_overrides_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let [orthos, expansions, overrides, ids] = segment_paths(dir.path(), 0, 3);
        let mut queue = OrthoQueue::open(&orthos, &ids, 0, 0, 0).unwrap();
        let records: Vec<Expansion> = (0..5u32)
            .map(|n| Expansion {
                leaf: n % 2 == 0,
                watch: Watch::new(&(0..n).map(|k| k * 1_000_003).collect::<Vec<_>>()).unwrap(),
            })
            .collect();
        for n in 0..5 {
            queue.push(ortho(n).id(), ortho(n)).unwrap();
        }
        let (ortho_bytes, _) = queue.sync(true).unwrap();
        let mut writer = RecordWriter::open(&expansions, 0).unwrap();
        writer.expansions(&records).unwrap();
        let expansion_bytes = writer.sync(true).unwrap();
        let mut seen = Vec::new();
        let scanned = scan_segment(
            (&orthos, ortho_bytes),
            (&expansions, expansion_bytes),
            |_, expansion| Some(expansion.decode()),
            |index, ortho, expansion| {
                seen.push((index, ortho, expansion));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(scanned, 5);
        assert_eq!(seen.len(), 5);
        for (n, (index, o, expansion)) in seen.into_iter().enumerate() {
            assert_eq!(
                (index as usize, o, expansion),
                (n, ortho(n as u32), records[n])
            );
        }

        let mut writer = RecordWriter::open(&overrides, 0).unwrap();
        let at = RecordAt {
            segment: 1,
            index: 77,
        };
        writer.override_of(at, &records[3]).unwrap();
        let len = writer.sync(true).unwrap();
        assert_eq!(read_overrides(&overrides, len).unwrap(), [(at, records[3])]);
        assert!(read_overrides(&overrides, len - 1).is_err());
    }

    #[test]
    fn log_file_names_carry_generation_and_segment() {
        let dir = Path::new("/x");
        for (generation, segment) in [(0, 0), (0, 12), (3, 0), (41, 7)] {
            for path in segment_paths(dir, generation, segment) {
                let name = path.file_name().unwrap().to_str().unwrap();
                assert_eq!(
                    parse_segment_path(name),
                    Some((generation, segment)),
                    "{name}"
                );
            }
        }
        for other in [
            "shard.json",
            "orthos",
            "g-orthos-1",
            "gx-orthos-1",
            "tmp-3",
            "orthos-x",
        ] {
            assert_eq!(parse_segment_path(other), None, "{other}");
        }
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let decode_all = |bytes: &[u8]| -> std::result::Result<Vec<Ortho>, String> {
            RawOrthos::new(bytes)?
                .map(|raw| raw.and_then(RawOrtho::decode))
                .collect()
        };
        assert!(decode_all(&[]).is_err(), "empty");
        assert!(decode_all(&[3]).is_err(), "bad width");
        assert!(decode_all(&[2, 0xff, 0x7f]).is_err(), "unknown shape");
        assert!(decode_all(&[2, 0, 0, 1]).is_err(), "truncated payload");
        assert!(decode_expansion(&[0x83, 1, 2]).is_err());
        assert!(decode_expansion(&[0x7f]).is_err());
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
        let encoded = |orthos: &[Ortho]| {
            let mut bytes = Vec::new();
            encode_orthos(orthos, &mut bytes);
            bytes
        };
        let decoded = |bytes: &[u8]| -> Vec<Ortho> {
            RawOrthos::new(bytes)
                .unwrap()
                .map(|raw| raw.unwrap().decode().unwrap())
                .collect()
        };
        // The first ortho needs four-byte slots; the second alone fits in two.
        assert_eq!(encoded(&orthos)[0], 4);
        assert_eq!(encoded(&orthos[1..])[0], 2);
        assert_eq!(decoded(&encoded(&orthos)), orthos);
        assert_eq!(decoded(&encoded(&orthos[1..])), &orthos[1..]);
        // The largest token that still fits in two bytes.
        let edge = vec![Ortho::new(&[2, 2], &[Some(Token(65_534)), None, None, None]).unwrap()];
        assert_eq!(encoded(&edge)[0], 2);
        assert_eq!(decoded(&encoded(&edge)), edge);
    }
}
