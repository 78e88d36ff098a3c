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
//! * `2` batch — `count`, then `count` records: the orthos popped from the
//!   top of the stack as one batch (in stack order), each expanded. A record
//!   is a head byte (bit 7: leaf; bit 6: the ortho had one empty slot, so its
//!   children are reshapings; bits 0–3: number of watched phrase nodes), the
//!   watched node ids, and unless it is a leaf, its accepted children: the
//!   number of distinct tokens, then per token (ascending) the difference to
//!   the previous token (the first token itself) and, for reshaping
//!   children, a byte with bit `j` set for over-reshaping `j` and bit 7 for
//!   the up-reshaping. Replaying pushes each record's children, record after
//!   record, as the search did.
//! * `3` overrides (only in `overrides-G-S`) — `count`, then per entry the
//!   segment and record index it replaces the expansion of, and the new head
//!   byte and watched nodes (bit 6 is unused there).
//!
//! A record's index is its position among its segment's records; an ortho's
//! current expansion is its record's, unless a later segment overrides it.

use std::path::{Path, PathBuf};

use super::backing::Backing;
use crate::error::{Error, Result};
use crate::ortho::{Expansion, MAX_PREFIXES, Ortho, ReshapeKind, Step, Watch};
use crate::spatial::{ShapeId, shapes};

/// The history format this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;

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
}

impl BlockKind {
    fn of(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Roots),
            2 => Some(Self::Batch),
            3 => Some(Self::Overrides),
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

    /// Appends a batch of `count` records, already encoded back to back
    /// (see [`encode_record`]).
    pub fn batch(&mut self, count: usize, records: &[&[u8]]) -> Result<()> {
        self.block(BlockKind::Batch, |out| {
            put_varint(out, count as u32);
            for part in records {
                out.extend_from_slice(part);
            }
        })
    }

    /// Appends overrides.
    pub fn overrides(&mut self, entries: &[(RecordAt, Expansion)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.block(BlockKind::Overrides, |out| {
            put_varint(out, entries.len() as u32);
            for (at, expansion) in entries {
                put_varint(out, at.segment);
                put_varint(out, at.index);
                encode_expansion(expansion, false, out);
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

fn check_header(path: &Path, file: &Backing) -> Result<()> {
    let mut header = [0u8; FILE_HEADER];
    file.read_at(&mut header, 0)?;
    if &header[..8] != MAGIC {
        return Err(damaged(path, 0, "not a fold history file"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::BadState(format!(
            "{} is in history format {version}; this build reads format {FORMAT_VERSION}",
            path.display()
        )));
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
    payload: Vec<u8>,
}

/// Bytes read from disk at a time.
const WINDOW: usize = 1 << 20;

impl BlockReader {
    /// Reads the file at `path` (which must hold at least `len` bytes).
    pub fn open(path: &Path, len: u64) -> Result<Self> {
        let file = Backing::open_read(path)?;
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
            payload: Vec::new(),
        })
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies `out.len()` bytes at `at` through the read window.
    fn read(&mut self, at: u64, out: &mut [u8]) -> Result<()> {
        let end = at + out.len() as u64;
        let window_end = self.window_at + self.window.len() as u64;
        if at < self.window_at || end > window_end {
            let size = (self.len - at).min(WINDOW.max(out.len()) as u64) as usize;
            self.window.resize(size, 0);
            self.file.read_at(&mut self.window, at)?;
            self.window_at = at;
        }
        let start = (at - self.window_at) as usize;
        out.copy_from_slice(&self.window[start..start + out.len()]);
        Ok(())
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
        let mut header = [0u8; BLOCK_HEADER];
        self.read(at, &mut header)?;
        let len = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes"));
        let payload_at = at + BLOCK_HEADER as u64;
        if self.len - payload_at < u64::from(len) {
            return Err(damaged(&self.path, at, "block runs past the recorded end"));
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.resize(len as usize, 0);
        self.read(payload_at, &mut payload)?;
        self.payload = payload;
        if block_crc(header[0], len, &self.payload) != crc {
            return Err(damaged(&self.path, at, "checksum mismatch"));
        }
        let kind = BlockKind::of(header[0])
            .ok_or_else(|| damaged(&self.path, at, format!("unknown block kind {}", header[0])))?;
        self.offset = payload_at + u64::from(len);
        Ok(Some((kind, &self.payload, at)))
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
        for _ in 0..count {
            let segment = get_varint(&mut bytes).ok_or_else(|| bad("bad segment"))?;
            let index = get_varint(&mut bytes).ok_or_else(|| bad("bad index"))?;
            let (record, rest) = RawRecord::split(bytes, false).map_err(bad)?;
            bytes = rest;
            entries.push((RecordAt { segment, index }, record.expansion()));
        }
        if !bytes.is_empty() {
            return Err(bad("trailing bytes"));
        }
    }
    Ok(entries)
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

const LEAF: u8 = 0x80;
const RESHAPES: u8 = 0x40;
const UP_BIT: u8 = 0x80;

fn encode_expansion(expansion: &Expansion, reshapes: bool, out: &mut Vec<u8>) {
    let nodes = expansion.watch.nodes();
    let mut head = nodes.len() as u8;
    if expansion.leaf {
        head |= LEAF;
    }
    if reshapes {
        head |= RESHAPES;
    }
    out.push(head);
    for &node in nodes {
        put_varint(out, node);
    }
}

/// Appends the record of one expanded ortho: its expansion and the steps of
/// its accepted children (in the order expansion emitted them: by token,
/// then over-reshapings in order, then the up-reshaping).
pub(crate) fn encode_record(
    expansion: &Expansion,
    reshapes: bool,
    children: &[Step],
    out: &mut Vec<u8>,
) {
    encode_expansion(expansion, reshapes, out);
    if expansion.leaf {
        return;
    }
    let groups = children
        .iter()
        .enumerate()
        .filter(|&(index, step)| index == 0 || children[index - 1].token != step.token)
        .count();
    put_varint(out, groups as u32);
    let mut previous = 0;
    let mut index = 0;
    while index < children.len() {
        let token = children[index].token;
        put_varint(out, token - previous);
        previous = token;
        let mut mask = 0u8;
        while index < children.len() && children[index].token == token {
            match children[index].reshape {
                Some(ReshapeKind::Over(over)) => mask |= 1 << over,
                Some(ReshapeKind::Up) => mask |= UP_BIT,
                None => {}
            }
            index += 1;
        }
        if reshapes {
            out.push(mask);
        }
    }
}

/// One encoded record, split but undecoded.
#[derive(Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    head: u8,
    nodes: [u32; MAX_PREFIXES],
    children: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// Splits the record at the front of `bytes`; `with_children` is false
    /// for override entries, which have none.
    pub fn split(
        mut bytes: &'a [u8],
        with_children: bool,
    ) -> std::result::Result<(Self, &'a [u8]), &'static str> {
        let (&head, rest) = bytes.split_first().ok_or("truncated record")?;
        bytes = rest;
        let count = usize::from(head & 0x0f);
        if count > MAX_PREFIXES {
            return Err("too many watched nodes");
        }
        let mut nodes = [0; MAX_PREFIXES];
        for node in &mut nodes[..count] {
            *node = get_varint(&mut bytes).ok_or("truncated watch")?;
        }
        let start = bytes;
        if with_children && head & LEAF == 0 {
            let groups = get_varint(&mut bytes).ok_or("truncated children")?;
            for _ in 0..groups {
                get_varint(&mut bytes).ok_or("truncated child")?;
                if head & RESHAPES != 0 {
                    bytes = bytes.get(1..).ok_or("truncated child")?;
                }
            }
        }
        let children = &start[..start.len() - bytes.len()];
        Ok((
            Self {
                head,
                nodes,
                children,
            },
            bytes,
        ))
    }

    /// Whether the ortho had no candidate.
    pub fn leaf(&self) -> bool {
        self.head & LEAF != 0
    }

    /// The watched phrase nodes.
    pub fn nodes(&self) -> &[u32] {
        &self.nodes[..usize::from(self.head & 0x0f)]
    }

    /// The expansion it records.
    pub fn expansion(&self) -> Expansion {
        Expansion {
            leaf: self.leaf(),
            watch: Watch::from_parts(self.nodes, self.head & 0x0f),
        }
    }

    /// Calls `visit` with the step of every accepted child, in order.
    pub fn children(&self, mut visit: impl FnMut(Step)) {
        if self.leaf() {
            return;
        }
        let mut bytes = self.children;
        let reshapes = self.head & RESHAPES != 0;
        let groups = get_varint(&mut bytes).unwrap_or(0);
        let mut token = 0;
        for _ in 0..groups {
            token += get_varint(&mut bytes).unwrap_or(0);
            if !reshapes {
                visit(Step {
                    token,
                    reshape: None,
                });
                continue;
            }
            let (&mask, rest) = bytes.split_first().unwrap_or((&0, &[]));
            bytes = rest;
            for over in 0..7u8 {
                if mask & 1 << over != 0 {
                    visit(Step {
                        token,
                        reshape: Some(ReshapeKind::Over(over)),
                    });
                }
            }
            if mask & UP_BIT != 0 {
                visit(Step {
                    token,
                    reshape: Some(ReshapeKind::Up),
                });
            }
        }
    }

    /// The same record with another expansion (an override applied).
    pub fn encode_with(&self, expansion: &Expansion, out: &mut Vec<u8>) {
        encode_expansion(expansion, self.head & RESHAPES != 0, out);
        if !expansion.leaf {
            if self.leaf() {
                // A former leaf has no recorded children: its new ones are
                // roots of a later run.
                put_varint(out, 0);
            } else {
                out.extend_from_slice(self.children);
            }
        }
    }
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
    fn records_round_trip_children_and_expansions() {
        let watch = Watch::new(&[3, 70_000, 129]).unwrap();
        let fills: Vec<Step> = [4, 9, 300, 70_001]
            .map(|token| Step {
                token,
                reshape: None,
            })
            .to_vec();
        let reshapes = vec![
            Step {
                token: 2,
                reshape: Some(ReshapeKind::Over(0)),
            },
            Step {
                token: 2,
                reshape: Some(ReshapeKind::Up),
            },
            Step {
                token: 5,
                reshape: Some(ReshapeKind::Over(1)),
            },
        ];
        for (children, reshaping) in [(fills, false), (reshapes, true), (Vec::new(), false)] {
            let expansion = Expansion { leaf: false, watch };
            let mut bytes = Vec::new();
            encode_record(&expansion, reshaping, &children, &mut bytes);
            bytes.push(0xEE);
            let (record, rest) = RawRecord::split(&bytes, true).unwrap();
            assert_eq!(rest, [0xEE]);
            assert_eq!(record.expansion(), expansion);
            let mut back = Vec::new();
            record.children(|step| back.push(step));
            assert_eq!(back, children);
        }
        let leaf = Expansion { leaf: true, watch };
        let mut bytes = Vec::new();
        encode_record(&leaf, false, &[], &mut bytes);
        let (record, rest) = RawRecord::split(&bytes, true).unwrap();
        assert!(rest.is_empty() && record.leaf());
        assert_eq!(record.nodes(), &[3, 70_000, 129]);
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
        let mut records = Vec::new();
        let expansion = Expansion {
            leaf: true,
            watch: Watch::new(&[5]).unwrap(),
        };
        encode_record(&expansion, false, &[], &mut records);
        writer.batch(1, &[&records]).unwrap();
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
        assert_eq!((kind, payload[0]), (BlockKind::Batch, 1));
        assert!(reader.next().unwrap().is_none());

        // Every single flipped bit past the header is caught.
        let clean = std::fs::read(&path).unwrap();
        for byte in FILE_HEADER..clean.len() {
            for bit in [0, 3, 7] {
                let mut bad = clean.clone();
                bad[byte] ^= 1 << bit;
                std::fs::write(&path, &bad).unwrap();
                let mut reader = BlockReader::open(&path, len).unwrap();
                let outcome = (|| -> Result<()> {
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
        assert!(refused.contains("format 9"), "{refused}");

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
