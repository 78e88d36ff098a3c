//! The stored history of a search: what later versions revisit, and the
//! one place its on-disk format is written down.
//!
//! The search is a tree (every ortho has one canonical parent), so an ortho
//! is stored as the step that made it from its parent: a token and, when it
//! filled the parent's last slot, the reshaping. The search expands its
//! pending orthos depth-first in batches; the history records each batch in
//! order, and replaying it ([`super::replay`]) redoes the same pops and pushes
//! with the recorded children instead of computed ones. So no ortho needs an
//! id, a parent pointer or its payload on disk.
//!
//! # Files
//!
//! One *segment* per searched version, two append-only files:
//!
//! * `history-G-S` — the orthos the version found, as blocks (below);
//! * `overrides-G-S` — orthos of earlier segments that the version expanded
//!   again (their candidates grew), each with its new [`Expansion`].
//!
//! `G` is the generation (compaction rewrites all segments into one of a new
//! generation) and `S` the segment's index in it.
//!
//! # Format ([`FORMAT_VERSION`])
//!
//! Each file starts with the 8 bytes `foldhist` and the format version as a
//! little-endian `u32`, then 4 zero bytes. Then blocks, each
//!
//! ```text
//! kind: u8 | payload length: u32 LE | CRC-32 of kind, length and payload: u32 LE | payload
//! ```
//!
//! A block is written whole or not at all as far as readers care: a reader
//! checks every block's CRC and refuses the file, naming it and the offset,
//! on a mismatch, a torn block or a length past the recorded end. The owner
//! records (durably, in its own database) how many bytes of each file are
//! valid, and a crash leaves at most a torn tail past that length, which is
//! cut off when the file is reopened.
//!
//! Block kinds and payloads (numbers are LEB128 varints unless said):
//!
//! * `1` roots — `count`, then `count` orthos in the ortho encoding: a
//!   slot-width byte `w` (2 or 4), then per ortho its shape id (`u16` LE) and
//!   each slot as a `w`-byte LE number, 0 for an empty slot, token + 1
//!   otherwise. Roots blocks open a *run*: the orthos searched from them.
//!   Replaying starts each run with an empty stack and pushes its roots in
//!   order.
//! * `2` batch — the orthos popped from the top of the stack as one batch
//!   (in stack order), each expanded: per ortho a *record*, its expansion
//!   (whether it was a leaf, the phrase nodes its candidates depend on) and
//!   the steps to its accepted children. The payload keeps the expansions
//!   and the children in two columns ([`super::records`] has the layout),
//!   so a reader can judge every record without reading any children.
//!   Replaying pushes each record's children, record after record, as the
//!   search did.
//! * `4` handoff — `count`: the search stopped with `count` orthos still
//!   pending and handed them to other searches (other units of a distributed
//!   search); replaying drops them, and the run ends if none are left.
//!   The search also ends its run this way on its own now and then (see
//!   [`BlockWriter::restart`]): a handoff of its whole stack, then a roots
//!   block of the same orthos. Runs are so bounded, and a later version
//!   reads a file's runs apart and replays them in parallel.
//! * `3` overrides (only in `overrides-G-S`) — `count`, the node-id width
//!   byte, then per entry the segment and record index it replaces the
//!   expansion of, and the new expansion (the reshaping flag is unused
//!   there).
//!
//! Format 3 split a batch's records into the two columns; format 2 kept
//! each record whole, and is refused.
//!
//! A record's index is its position among its segment's records; an ortho's
//! current expansion is its record's, unless a later segment overrides it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::backing::Backing;
use super::records::{BatchRecords, NodeWidth, RawRecord, encode_expansion};
use crate::error::{Error, Result};
use crate::ortho::{Expansion, Ortho};
use crate::spatial::{ShapeId, shapes};

/// The history format this build writes and reads.
pub const FORMAT_VERSION: u32 = 3;

const MAGIC: &[u8; 8] = b"foldhist";
const FILE_HEADER: usize = 16;
const BLOCK_HEADER: usize = 9;

/// Orthos per roots block.
const ROOTS_PER_BLOCK: usize = 4096;

/// A block's kind byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Roots = 1,
    Batch = 2,
    Overrides = 3,
    Handoff = 4,
}

impl BlockKind {
    fn of(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Roots),
            2 => Some(Self::Batch),
            3 => Some(Self::Overrides),
            4 => Some(Self::Handoff),
            _ => None,
        }
    }
}

/// The two files of segment `segment` of generation `generation`.
pub(crate) fn segment_paths(dir: &Path, generation: u32, segment: u32) -> [PathBuf; 2] {
    ["history", "overrides"].map(|kind| dir.join(format!("{kind}-{generation}-{segment}")))
}

/// The generation and segment a history file name belongs to, if it is one.
pub(crate) fn parse_segment_path(name: &str) -> Option<(u32, u32)> {
    let rest = name
        .strip_prefix("history-")
        .or_else(|| name.strip_prefix("overrides-"))?;
    let (generation, segment) = rest.split_once('-')?;
    Some((generation.parse().ok()?, segment.parse().ok()?))
}

/// Where a record sits: its segment and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RecordAt {
    pub segment: u32,
    pub index: u32,
}

fn damaged(path: &Path, offset: u64, what: impl std::fmt::Display) -> Error {
    Error::Damaged {
        path: path.to_owned(),
        detail: format!("at byte {offset}: {what}"),
    }
}

/// An append-only history or overrides file.
pub(crate) struct BlockWriter {
    file: Backing,
    block: Vec<u8>,
}

impl BlockWriter {
    /// A new file at `path`, kept in memory while small when `in_memory`.
    pub fn create(path: &Path, in_memory: bool) -> Result<Self> {
        let mut file = if in_memory {
            Backing::in_memory(path)
        } else {
            Backing::open(path, 0)?
        };
        let mut header = Vec::with_capacity(FILE_HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&[0; 4]);
        file.append(&header)?;
        Ok(Self {
            file,
            block: Vec::new(),
        })
    }

    /// Reopens `path` for appending after its first `len` valid bytes (a
    /// torn tail past them is cut off).
    pub fn reopen(path: &Path, len: u64) -> Result<Self> {
        if len < FILE_HEADER as u64 {
            return Self::create(path, false);
        }
        let file = Backing::open(path, len)?;
        check_header(path, &file)?;
        Ok(Self {
            file,
            block: Vec::new(),
        })
    }

    /// Appends one block whose payload `fill` writes.
    fn block(&mut self, kind: BlockKind, fill: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        block.extend_from_slice(&[0; BLOCK_HEADER]);
        fill(&mut block);
        let len = (block.len() - BLOCK_HEADER) as u32;
        block[0] = kind as u8;
        block[1..5].copy_from_slice(&len.to_le_bytes());
        let crc = block_crc(block[0], len, &block[BLOCK_HEADER..]);
        block[5..9].copy_from_slice(&crc.to_le_bytes());
        let written = self.file.append(&block);
        self.block = block;
        written
    }

    /// Appends a block as it was read from another history file.
    pub fn raw(&mut self, kind: BlockKind, payload: &[u8]) -> Result<()> {
        self.block(kind, |out| out.extend_from_slice(payload))
    }

    /// Appends the roots of a run.
    pub fn roots(&mut self, roots: &[Ortho]) -> Result<()> {
        for chunk in roots.chunks(ROOTS_PER_BLOCK) {
            self.block(BlockKind::Roots, |out| {
                put_varint(out, chunk.len() as u32);
                encode_orthos(chunk, out);
            })?;
        }
        Ok(())
    }

    /// Appends a batch block of the records of `parts`, in order, with
    /// node ids `width` bytes wide (see [`super::records`]).
    pub fn batch(&mut self, width: NodeWidth, parts: &[BatchRecords]) -> Result<()> {
        self.block(BlockKind::Batch, |out| {
            BatchRecords::encode(parts, width, out)
        })
    }

    /// Records that the `count` orthos at the bottom of the pending stack
    /// (the first found) were handed to other searches; the run goes on
    /// with the rest, and ends here if none are left.
    pub fn handoff(&mut self, count: usize) -> Result<()> {
        self.block(BlockKind::Handoff, |out| put_varint(out, count as u32))
    }

    /// Ends the run and starts another from the pending `stack` (a handoff
    /// of all of it, then its orthos as roots): the replayed stack is the
    /// same, but the new run can be replayed without the blocks before it,
    /// so a long history is replayed in parallel, run by run.
    pub fn restart(&mut self, stack: &[Ortho]) -> Result<()> {
        self.handoff(stack.len())?;
        self.roots(stack)
    }

    /// The bytes written so far.
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    /// Appends overrides.
    pub fn overrides(&mut self, entries: &[(RecordAt, Expansion)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let width = NodeWidth::fitting(
            entries
                .iter()
                .flat_map(|(_, e)| e.watch.nodes().iter().copied()),
        );
        self.block(BlockKind::Overrides, |out| {
            put_varint(out, entries.len() as u32);
            out.push(width.0);
            for (at, expansion) in entries {
                put_varint(out, at.segment);
                put_varint(out, at.index);
                encode_expansion(expansion, false, width, out);
            }
        })
    }

    /// Waits for the disk when `durable`; returns the length.
    pub fn sync(&mut self, durable: bool) -> Result<u64> {
        self.file.sync(durable)?;
        Ok(self.file.len())
    }

    /// The file.
    pub fn into_backing(self) -> Backing {
        self.file
    }
}

fn block_crc(kind: u8, len: u32, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(&len.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// Checks a file's header. The manifest that names the file says which
/// format it is in, so a header that says otherwise is damage.
fn check_header(path: &Path, file: &Backing) -> Result<()> {
    let mut header = [0u8; FILE_HEADER];
    file.read_at(&mut header, 0)?;
    if &header[..8] != MAGIC || header[12..] != [0; 4] {
        return Err(damaged(path, 0, "not a fold history file header"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(damaged(
            path,
            8,
            format!(
                "the header says history format {version}; this build writes format {FORMAT_VERSION}"
            ),
        ));
    }
    Ok(())
}

/// Reads the blocks of the first `len` bytes of a history or overrides file,
/// checking each.
pub(crate) struct BlockReader {
    file: Backing,
    path: PathBuf,
    len: u64,
    offset: u64,
    window: Vec<u8>,
    window_at: u64,
}

/// Bytes read from disk at a time.
const WINDOW: usize = 1 << 20;

impl BlockReader {
    /// Reads the file at `path` (which must hold at least `len` bytes).
    pub fn open(path: &Path, len: u64) -> Result<Self> {
        Self::over(path, len, Backing::open_read(path)?)
    }

    /// Maps the first `len` bytes of the file at `path` into memory; its
    /// runs are then read where they lie (see [`Backing::map_whole`]).
    pub fn open_mapped(path: &Path, len: u64) -> Result<Self> {
        Self::over(path, len, Backing::map_whole(path, len)?)
    }

    fn over(path: &Path, len: u64, file: Backing) -> Result<Self> {
        if file.len() < len {
            return Err(damaged(
                path,
                file.len(),
                format!("the file ends before the {len} bytes recorded as written"),
            ));
        }
        if len < FILE_HEADER as u64 {
            return Err(damaged(path, 0, "no header"));
        }
        check_header(path, &file)?;
        Ok(Self {
            file,
            path: path.to_owned(),
            len,
            offset: FILE_HEADER as u64,
            window: Vec::new(),
            window_at: 0,
        })
    }

    /// Makes the `len` bytes at `at` part of the read window; returns where
    /// they start in it.
    fn window_over(&mut self, at: u64, len: usize) -> Result<usize> {
        let end = at + len as u64;
        let window_end = self.window_at + self.window.len() as u64;
        if at < self.window_at || end > window_end {
            let size = (self.len - at).min(WINDOW.max(len) as u64) as usize;
            self.window.resize(size, 0);
            self.file.read_at(&mut self.window, at)?;
            self.window_at = at;
        }
        Ok((at - self.window_at) as usize)
    }

    /// The next block: its kind, payload and offset; `None` at the end.
    pub fn next(&mut self) -> Result<Option<(BlockKind, &[u8], u64)>> {
        let at = self.offset;
        if at == self.len {
            return Ok(None);
        }
        if self.len - at < BLOCK_HEADER as u64 {
            return Err(damaged(&self.path, at, "torn block header"));
        }
        let start = self.window_over(at, BLOCK_HEADER)?;
        let header: [u8; BLOCK_HEADER] = self.window[start..start + BLOCK_HEADER]
            .try_into()
            .expect("a header's length");
        let len = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes"));
        let payload_at = at + BLOCK_HEADER as u64;
        if self.len - payload_at < u64::from(len) {
            return Err(damaged(&self.path, at, "block runs past the recorded end"));
        }
        let start = self.window_over(payload_at, len as usize)?;
        let payload = &self.window[start..start + len as usize];
        let kind = checked_block(&self.path, at, &header, payload)?;
        self.offset = payload_at + u64::from(len);
        Ok(Some((kind, payload, at)))
    }
}

/// The kind of the block at `at` with this header and payload, once its
/// checksum and kind are checked.
fn checked_block(
    path: &Path,
    at: u64,
    header: &[u8; BLOCK_HEADER],
    payload: &[u8],
) -> Result<BlockKind> {
    let crc = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes"));
    if block_crc(header[0], payload.len() as u32, payload) != crc {
        return Err(damaged(path, at, "checksum mismatch"));
    }
    BlockKind::of(header[0])
        .ok_or_else(|| damaged(path, at, format!("unknown block kind {}", header[0])))
}

/// Blocks in file order, as a replay reads them: their kind, payload and
/// offset in the file; `None` at the end.
pub(crate) trait Blocks {
    fn next_block(&mut self) -> Result<Option<(BlockKind, &[u8], u64)>>;

    /// The file they come from, for messages.
    fn path(&self) -> &Path;
}

impl Blocks for BlockReader {
    fn next_block(&mut self) -> Result<Option<(BlockKind, &[u8], u64)>> {
        self.next()
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl BlockReader {
    /// Where the next run lies: its blocks up to the next roots block that
    /// follows other blocks (where the next run starts). Reads only block
    /// headers and batch counts; the blocks are checked when the run is
    /// read. `None` at the end of the file.
    pub fn next_run(&mut self) -> Result<Option<RunExtent>> {
        let mut run = RunExtent {
            start: self.offset,
            end: self.offset,
            records: 0,
        };
        let mut opened = false;
        while self.offset < self.len {
            let at = self.offset;
            if self.len - at < BLOCK_HEADER as u64 {
                return Err(damaged(&self.path, at, "torn block header"));
            }
            // The header and the first bytes of the payload (a batch's count).
            let peek = (self.len - at).min(BLOCK_HEADER as u64 + 5) as usize;
            let head = match self.file.memory() {
                Some(memory) => &memory[at as usize..at as usize + peek],
                None => {
                    let start = self.window_over(at, peek)?;
                    &self.window[start..start + peek]
                }
            };
            let kind = head[0];
            if kind == BlockKind::Roots as u8 && opened {
                break;
            }
            opened |= kind != BlockKind::Roots as u8;
            let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
            if kind == BlockKind::Batch as u8 {
                let count = get_varint(&mut &head[BLOCK_HEADER..])
                    .ok_or_else(|| damaged(&self.path, at, "bad count"))?;
                run.records = run
                    .records
                    .checked_add(count)
                    .ok_or_else(|| damaged(&self.path, at, "too many records"))?;
            }
            let end = at + BLOCK_HEADER as u64 + u64::from(len);
            if end > self.len {
                return Err(damaged(&self.path, at, "block runs past the recorded end"));
            }
            self.offset = end;
            run.end = end;
        }
        Ok((run.end > run.start).then_some(run))
    }

    /// The run at `extent` in memory (its blocks are checked as they are
    /// replayed): borrowed from the file's bytes when they are all in
    /// memory, or read into `bytes` (see [`Run::into_bytes`]). Runs are read
    /// by several threads at once.
    pub fn read_run(&self, extent: &RunExtent, mut bytes: Vec<u8>) -> Result<Run<'_>> {
        let len = (extent.end - extent.start) as usize;
        let bytes = match self.file.memory() {
            Some(memory) => Cow::Borrowed(
                usize::try_from(extent.start)
                    .ok()
                    .and_then(|start| memory.get(start..start.checked_add(len)?))
                    .ok_or_else(|| damaged(&self.path, extent.start, "a run past the end"))?,
            ),
            None => {
                self.file.read_to_vec(extent.start, len, &mut bytes)?;
                Cow::Owned(bytes)
            }
        };
        Ok(Run {
            path: &self.path,
            start: extent.start,
            bytes,
        })
    }

    /// The blocks of the run at `extent`, read from the file as they come
    /// (for a run too long to hold in memory).
    pub fn run_on_file(&mut self, extent: &RunExtent) -> RunOnFile<'_> {
        self.offset = extent.start;
        RunOnFile {
            reader: self,
            end: extent.end,
        }
    }
}

/// Where one run of a history lies (see [`BlockReader::next_run`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunExtent {
    /// Its first block's offset.
    pub start: u64,
    /// The offset past its last block.
    pub end: u64,
    /// The records its batches hold.
    pub records: u32,
}

impl RunExtent {
    /// Its bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// One run of a history in memory (see [`BlockReader::read_run`]).
pub(crate) struct Run<'a> {
    path: &'a Path,
    start: u64,
    bytes: Cow<'a, [u8]>,
}

impl Run<'_> {
    /// The file it was read from.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// Its memory, for the next run to be read into (none if borrowed).
    pub fn into_bytes(self) -> Vec<u8> {
        match self.bytes {
            Cow::Owned(bytes) => bytes,
            Cow::Borrowed(_) => Vec::new(),
        }
    }

    /// Its blocks, from the first.
    pub fn blocks(&self) -> RunBlocks<'_> {
        RunBlocks { run: self, at: 0 }
    }
}

/// The blocks of a [`Run`] in memory, each checked as it is read.
pub(crate) struct RunBlocks<'a> {
    run: &'a Run<'a>,
    /// The next block's place in the run's bytes.
    at: usize,
}

impl<'a> RunBlocks<'a> {
    /// The next block, borrowed from the run (not from the iterator, so
    /// that a reader may keep it while it reads on).
    pub fn next_in_run(&mut self) -> Result<Option<(BlockKind, &'a [u8], u64)>> {
        let bytes = &self.run.bytes[self.at..];
        if bytes.is_empty() {
            return Ok(None);
        }
        let at = self.run.start + self.at as u64;
        let torn = || damaged(self.run.path, at, "torn block");
        let header: &[u8; BLOCK_HEADER] = bytes
            .get(..BLOCK_HEADER)
            .and_then(|header| header.try_into().ok())
            .ok_or_else(torn)?;
        let len = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
        let payload = bytes
            .get(BLOCK_HEADER..BLOCK_HEADER + len)
            .ok_or_else(torn)?;
        let kind = checked_block(self.run.path, at, header, payload)?;
        self.at += BLOCK_HEADER + len;
        Ok(Some((kind, payload, at)))
    }
}

impl Blocks for RunBlocks<'_> {
    fn next_block(&mut self) -> Result<Option<(BlockKind, &[u8], u64)>> {
        self.next_in_run()
    }

    fn path(&self) -> &Path {
        self.run.path
    }
}

/// The blocks of one run read from the file, for a run too long to hold in
/// memory (see [`BlockReader::run_on_file`]).
pub(crate) struct RunOnFile<'a> {
    reader: &'a mut BlockReader,
    /// The offset past the run's last block.
    end: u64,
}

impl Blocks for RunOnFile<'_> {
    fn next_block(&mut self) -> Result<Option<(BlockKind, &[u8], u64)>> {
        if self.reader.offset >= self.end {
            return Ok(None);
        }
        self.reader.next()
    }

    fn path(&self) -> &Path {
        &self.reader.path
    }
}

/// Reads every override of the first `len` bytes of an overrides file.
pub(crate) fn read_overrides(path: &Path, len: u64) -> Result<Vec<(RecordAt, Expansion)>> {
    let mut reader = BlockReader::open(path, len)?;
    let mut entries = Vec::new();
    while let Some((kind, payload, at)) = reader.next()? {
        let bad = |e: &str| damaged(path, at, e);
        if kind != BlockKind::Overrides {
            return Err(bad("not an overrides block"));
        }
        let mut bytes = payload;
        let count = get_varint(&mut bytes).ok_or_else(|| bad("bad count"))?;
        let width = take_width(&mut bytes).ok_or_else(|| bad("bad node width"))?;
        for _ in 0..count {
            let segment = get_varint(&mut bytes).ok_or_else(|| bad("bad segment"))?;
            let index = get_varint(&mut bytes).ok_or_else(|| bad("bad index"))?;
            let (record, rest) = RawRecord::split(bytes, width).map_err(bad)?;
            bytes = rest;
            entries.push((RecordAt { segment, index }, record.expansion()));
        }
        if !bytes.is_empty() {
            return Err(bad("trailing bytes"));
        }
    }
    Ok(entries)
}

/// Takes a block's node-width byte off the front of `bytes`.
pub(crate) fn take_width(bytes: &mut &[u8]) -> Option<NodeWidth> {
    let (&width, rest) = bytes.split_first()?;
    *bytes = rest;
    NodeWidth::of(width)
}

/// Appends a LEB128 varint.
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Takes a LEB128 varint off the front of `bytes`.
#[inline]
pub(crate) fn get_varint(bytes: &mut &[u8]) -> Option<u32> {
    if let Some((&byte, rest)) = bytes.split_first()
        && byte < 0x80
    {
        *bytes = rest;
        return Some(u32::from(byte));
    }
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u32::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Appends orthos in the ortho encoding (see the module docs): two bytes a
/// slot whenever every token is below 65,535, four otherwise.
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

/// Decodes `count` orthos of the ortho encoding from the front of `bytes`.
pub(crate) fn decode_orthos(
    bytes: &mut &[u8],
    count: usize,
    mut visit: impl FnMut(Ortho),
) -> std::result::Result<(), String> {
    let (&width, rest) = bytes.split_first().ok_or("empty ortho list")?;
    *bytes = rest;
    let width = usize::from(width);
    if width != 2 && width != 4 {
        return Err(format!("bad slot width {width}"));
    }
    let mut slots = Vec::new();
    for _ in 0..count {
        let (shape, rest) = bytes.split_at_checked(2).ok_or("truncated ortho")?;
        let shape = ShapeId(u16::from_le_bytes([shape[0], shape[1]]));
        let capacity = shapes()
            .table_checked(shape)
            .ok_or("unknown shape")?
            .capacity;
        let (payload, rest) = rest
            .split_at_checked(capacity * width)
            .ok_or("truncated ortho")?;
        *bytes = rest;
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
        visit(Ortho::from_raw(shape, &slots).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// The orthos of a roots block's payload.
pub(crate) fn decode_roots(mut payload: &[u8]) -> std::result::Result<Vec<Ortho>, String> {
    let count = get_varint(&mut payload).ok_or("bad count")? as usize;
    let mut roots = Vec::with_capacity(count.min(ROOTS_PER_BLOCK));
    decode_orthos(&mut payload, count, |ortho| roots.push(ortho))?;
    if !payload.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(roots)
}

/// A list of orthos with its own checksum (a checkpoint's pending work).
pub(crate) fn encode_checked_orthos(orthos: &[Ortho]) -> Vec<u8> {
    let mut bytes = Vec::new();
    put_varint(&mut bytes, orthos.len() as u32);
    encode_orthos(orthos, &mut bytes);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// The orthos of [`encode_checked_orthos`], if the checksum holds.
pub(crate) fn decode_checked_orthos(bytes: &[u8]) -> std::result::Result<Vec<Ortho>, String> {
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or("truncated ortho list")?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err("checksum mismatch".into());
    }
    let mut body = body;
    let count = get_varint(&mut body).ok_or("bad count")? as usize;
    let mut orthos = Vec::with_capacity(count.min(1 << 20));
    decode_orthos(&mut body, count, |ortho| orthos.push(ortho))?;
    if !body.is_empty() {
        return Err("trailing bytes after the ortho list".into());
    }
    Ok(orthos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interner::Token;

    fn ortho(dims: &[usize], payload: &[i64]) -> Ortho {
        let payload: Vec<Option<Token>> = payload
            .iter()
            .map(|&t| (t >= 0).then_some(Token(t as u32)))
            .collect();
        Ortho::new(dims, &payload).unwrap()
    }

    #[test]
    fn varints_round_trip_and_reject_overlong_input() {
        for value in [0, 1, 127, 128, 300, 65_535, u32::MAX] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            let mut read = &bytes[..];
            assert_eq!(get_varint(&mut read), Some(value));
            assert!(read.is_empty());
        }
        assert_eq!(get_varint(&mut &[0x80u8, 0x80][..]), None);
        assert_eq!(get_varint(&mut &[0xffu8; 6][..]), None);
    }

    #[test]
    fn blocks_round_trip_and_any_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let [path, overrides_path] = segment_paths(dir.path(), 3, 1);
        let roots = vec![
            ortho(&[2, 2], &[1, -1, -1, -1]),
            ortho(&[3, 2], &[7, 8, 9, 10, -1, -1]),
        ];
        let mut writer = BlockWriter::create(&path, false).unwrap();
        writer.roots(&roots).unwrap();
        let mut records = BatchRecords::default();
        let expansion = Expansion {
            leaf: true,
            watch: crate::ortho::Watch::new(&[5]).unwrap(),
        };
        records.add(&expansion, false, &[], NodeWidth(2));
        writer.batch(NodeWidth(2), &[records]).unwrap();
        let len = writer.sync(true).unwrap();
        assert_eq!(
            parse_segment_path(path.file_name().unwrap().to_str().unwrap()),
            Some((3, 1))
        );

        let mut reader = BlockReader::open(&path, len).unwrap();
        let (kind, payload, _) = reader.next().unwrap().unwrap();
        assert_eq!(kind, BlockKind::Roots);
        assert_eq!(decode_roots(payload).unwrap(), roots);
        let (kind, payload, _) = reader.next().unwrap().unwrap();
        assert_eq!((kind, payload[0], payload[1]), (BlockKind::Batch, 1, 2));
        assert!(reader.next().unwrap().is_none());

        // Every single flipped bit is caught.
        let clean = std::fs::read(&path).unwrap();
        for byte in 0..clean.len() {
            for bit in [0, 3, 7] {
                let mut bad = clean.clone();
                bad[byte] ^= 1 << bit;
                std::fs::write(&path, &bad).unwrap();
                let outcome = (|| -> Result<()> {
                    let mut reader = BlockReader::open(&path, len)?;
                    while reader.next()?.is_some() {}
                    Ok(())
                })();
                let error = outcome.expect_err("damage goes unnoticed");
                assert!(
                    error.to_string().contains(&path.display().to_string()),
                    "{error}"
                );
            }
        }
        std::fs::write(&path, &clean).unwrap();
        // A file shorter than recorded, and a wrong format, are refused.
        assert!(BlockReader::open(&path, len + 1).is_err());
        let mut other = clean.clone();
        other[8] = 9;
        std::fs::write(&path, &other).unwrap();
        let refused = BlockReader::open(&path, len).err().unwrap().to_string();
        assert!(
            refused.contains("format 9") && refused.contains("damaged"),
            "{refused}"
        );

        let mut writer = BlockWriter::create(&overrides_path, false).unwrap();
        let at = RecordAt {
            segment: 0,
            index: 77,
        };
        writer.overrides(&[(at, expansion)]).unwrap();
        let len = writer.sync(true).unwrap();
        assert_eq!(
            read_overrides(&overrides_path, len).unwrap(),
            [(at, expansion)]
        );
    }

    #[test]
    fn a_checked_ortho_list_detects_damage() {
        let orthos = vec![
            ortho(&[2, 2], &[1, 2, 3, -1]),
            ortho(&[2, 2], &[70_000, -1, -1, -1]),
        ];
        let bytes = encode_checked_orthos(&orthos);
        assert_eq!(decode_checked_orthos(&bytes).unwrap(), orthos);
        for byte in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x10;
            assert!(decode_checked_orthos(&bad).is_err());
        }
    }
}
