//! The payload of a history's batch block (see [`super::history`] for the
//! file around it): the records of one batch of expanded orthos, written in
//! two columns so that a reader can judge every record's expansion without
//! reading any children, and often whole stretches of records at once.
//!
//! ```text
//! count | node width n: u8 | children: the number of children listed | expansions' length in bytes
//!       | expansions: sections, each
//!           records r (1..=256) | watches w (1..=r) | w × (node count: u8, node ids: n bytes each)
//!           | r × (flags: u8, watch: u8, an index into the section's watches)
//!       | children: per record that is not a leaf, its accepted children
//! ```
//!
//! Numbers are LEB128 varints. A record's expansion is its flags — [`LEAF`]
//! (no candidate) and [`RESHAPES`] (the ortho had one empty slot, so its
//! children are reshapings) — and the phrase nodes its candidates depend
//! on, its *watch*, which siblings often share: each section lists its
//! distinct watches once, so a reader judges a watch once for all the
//! records that have it, and passes over a section none of whose watches it
//! wants. A record's children are the number of distinct tokens, then per
//! token (ascending) the difference to the previous token (the first token
//! itself) and, for reshaping children, a byte with bit `j` set for
//! over-reshaping `j` and [`UP_BIT`] for the up-reshaping. Children are
//! listed record after record, in the order the search pushed them.
//!
//! Override entries (in `overrides-G-S` files) carry one expansion each:
//! a head byte (the flags, and the node count in bits 0–3) and the nodes.

use super::history::{get_varint, put_varint, take_width};
use crate::ortho::{Expansion, MAX_PREFIXES, ReshapeKind, Step, Watch};

/// Head-byte flag: the ortho is a leaf.
pub(crate) const LEAF: u8 = 0x80;
/// Head-byte flag: the ortho's children are reshapings.
pub(crate) const RESHAPES: u8 = 0x40;
/// Reshaping-mask bit of the up-reshaping.
pub(crate) const UP_BIT: u8 = 0x80;

/// A child's reshaping in one byte, as replays keep it: 0 for a fill,
/// `1 + j` for over-reshaping `j`, [`UP`] for the up-reshaping.
pub(crate) type ReshapeCode = u8;

/// The [`ReshapeCode`] of the up-reshaping.
pub(crate) const UP: ReshapeCode = 0xff;

/// The step a child's token and [`ReshapeCode`] stand for.
#[inline]
pub(crate) fn child_step(token: u32, reshape: ReshapeCode) -> Step {
    let reshape = match reshape {
        0 => None,
        UP => Some(ReshapeKind::Up),
        over => Some(ReshapeKind::Over(over - 1)),
    };
    Step { token, reshape }
}

/// Bytes per watched node id in a block: the fewest that hold every node
/// id of an automaton with `states` states.
pub(crate) fn node_width(states: usize) -> NodeWidth {
    NodeWidth(match states {
        0..=0x1_0000 => 2,
        0x1_0001..=0x100_0000 => 3,
        _ => 4,
    })
}

/// Bytes per watched node id (2, 3 or 4), one for all records of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct NodeWidth(pub(super) u8);

impl NodeWidth {
    /// The width in a block's width byte, if it is one.
    pub(super) fn of(byte: u8) -> Option<Self> {
        (2..=4).contains(&byte).then_some(Self(byte))
    }

    /// The narrowest width for these node ids.
    pub(super) fn fitting(nodes: impl Iterator<Item = u32>) -> Self {
        let largest = nodes.max().unwrap_or(0);
        node_width(largest as usize + 1)
    }

    #[inline]
    fn put(self, out: &mut Vec<u8>, node: u32) {
        let [a, b, c, d] = node.to_le_bytes();
        match self.0 {
            2 => out.extend_from_slice(&[a, b]),
            3 => out.extend_from_slice(&[a, b, c]),
            _ => out.extend_from_slice(&[a, b, c, d]),
        }
    }

    /// The node id in `bytes` (exactly this width long).
    #[inline]
    fn get(self, bytes: &[u8]) -> u32 {
        match *bytes {
            [a, b] => u32::from(u16::from_le_bytes([a, b])),
            [a, b, c] => u32::from_le_bytes([a, b, c, 0]),
            [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
            _ => u32::MAX,
        }
    }
}

/// Appends an expansion: its head byte and watched nodes.
pub(crate) fn encode_expansion(
    expansion: &Expansion,
    reshapes: bool,
    width: NodeWidth,
    out: &mut Vec<u8>,
) {
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
        width.put(out, node);
    }
}

/// Appends the children of one record: the steps of its accepted children
/// in the order expansion emitted them (by token, then over-reshapings in
/// order, then the up-reshaping).
fn encode_children(reshapes: bool, children: &[Step], out: &mut Vec<u8>) {
    let groups = if reshapes {
        children
            .iter()
            .enumerate()
            .filter(|&(index, step)| index == 0 || children[index - 1].token != step.token)
            .count()
    } else {
        // Each fill child has a token of its own.
        children.len()
    };
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

/// Records per section at most (a record names its watch in one byte).
const SECTION: usize = 256;

/// Slots of a section's table of watches (twice the most it can hold).
const TABLE: usize = 2 * SECTION;

/// The section being written: its records' flags and watches, and its
/// distinct watches, found again through a small hash table.
#[derive(Default)]
struct SectionWriter {
    /// Two bytes per record: flags, watch.
    pairs: Vec<u8>,
    /// The distinct watches, encoded back to back.
    watches: Vec<u8>,
    /// The distinct watches of up to [`KEY_NODES`] nodes, in order (longer
    /// ones, rare, are listed again each time).
    keys: Vec<Key>,
    /// Per slot, 1 + the index of a watch hashed there; 0 when empty
    /// (allocated on first use, so that a part stays small to move).
    table: Vec<u16>,
}

/// Nodes a watch may have to be found again in its section.
const KEY_NODES: usize = 4;

/// A distinct watch of a section: its node count and nodes (unused ones
/// `u32::MAX`); a longer watch's key has the count `u8::MAX`, never found.
type Key = (u8, [u32; KEY_NODES]);

impl SectionWriter {
    fn records(&self) -> usize {
        self.pairs.len() / 2
    }

    fn add(&mut self, flags: u8, watch: &Watch, width: NodeWidth) {
        let nodes = watch.nodes();
        let mut key = (nodes.len() as u8, [u32::MAX; KEY_NODES]);
        if nodes.len() > KEY_NODES {
            // Not looked up: a watch of its own.
            self.keys.push((u8::MAX, key.1));
            encode_watch(watch, width, &mut self.watches);
            let index = (self.keys.len() - 1) as u8;
            self.pairs.extend_from_slice(&[flags, index]);
            return;
        }
        key.1[..nodes.len()].copy_from_slice(nodes);
        // Siblings, next to each other, often share their watch.
        if let Some(&last) = self.pairs.last()
            && self.keys[usize::from(last)] == key
        {
            self.pairs.extend_from_slice(&[flags, last]);
            return;
        }
        if self.table.is_empty() {
            self.table.resize(TABLE, 0);
            self.keys.reserve(SECTION);
            self.pairs.reserve(2 * SECTION);
        }
        let [a, b, c, d] = key.1;
        let hash = (u64::from(a) | u64::from(b) << 32)
            .wrapping_add(u64::from(c) ^ u64::from(d) << 32)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut slot = (hash >> 32) as usize % TABLE;
        let index = loop {
            let Some(found) = usize::from(self.table[slot]).checked_sub(1) else {
                self.keys.push(key);
                encode_watch(watch, width, &mut self.watches);
                self.table[slot] = self.keys.len() as u16;
                break self.keys.len() - 1;
            };
            if self.keys[found] == key {
                break found;
            }
            slot = (slot + 1) % TABLE;
        };
        self.pairs.extend_from_slice(&[flags, index as u8]);
    }

    /// Its encoded length.
    fn len(&self) -> usize {
        varint_len(self.records() as u32)
            + varint_len(self.keys.len() as u32)
            + self.watches.len()
            + self.pairs.len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        if self.pairs.is_empty() {
            return;
        }
        put_varint(out, self.records() as u32);
        put_varint(out, self.keys.len() as u32);
        out.extend_from_slice(&self.watches);
        out.extend_from_slice(&self.pairs);
    }

    fn clear(&mut self) {
        self.pairs.clear();
        self.watches.clear();
        self.keys.clear();
        self.table.fill(0);
    }
}

/// Bytes of `value` as a varint.
fn varint_len(value: u32) -> usize {
    (32 - value.leading_zeros() as usize).div_ceil(7).max(1)
}

/// Records of (part of) a batch being written, in their two columns; a
/// batch block is the concatenation of its parts' columns.
#[derive(Default)]
pub(crate) struct BatchRecords {
    /// Finished sections.
    expansions: Vec<u8>,
    section: SectionWriter,
    children: Vec<u8>,
    count: u32,
    listed: u32,
}

impl BatchRecords {
    /// Adds the record of one expanded ortho: its expansion and the steps
    /// of its accepted children.
    pub fn add(
        &mut self,
        expansion: &Expansion,
        reshapes: bool,
        children: &[Step],
        width: NodeWidth,
    ) {
        self.add_expansion(expansion, reshapes, width);
        if !expansion.leaf {
            encode_children(reshapes, children, &mut self.children);
            self.listed += children.len() as u32;
        }
    }

    fn add_expansion(&mut self, expansion: &Expansion, reshapes: bool, width: NodeWidth) {
        let mut flags = 0;
        if expansion.leaf {
            flags |= LEAF;
        }
        if reshapes {
            flags |= RESHAPES;
        }
        self.section.add(flags, &expansion.watch, width);
        if self.section.records() == SECTION {
            self.section.write(&mut self.expansions);
            self.section.clear();
        }
        self.count += 1;
    }

    /// Writes the batch payload of `parts`, in order, with node ids `width`
    /// bytes wide.
    pub fn encode(parts: &[Self], width: NodeWidth, out: &mut Vec<u8>) {
        let sum = |of: fn(&Self) -> u32| parts.iter().map(of).sum::<u32>();
        put_varint(out, sum(|part| part.count));
        out.push(width.0);
        put_varint(out, sum(|part| part.listed));
        put_varint(
            out,
            sum(|part| (part.expansions.len() + part.section.len()) as u32),
        );
        for part in parts {
            out.extend_from_slice(&part.expansions);
            part.section.write(out);
        }
        for part in parts {
            out.extend_from_slice(&part.children);
        }
    }
}

/// Appends a watch as a section lists it: the node count, then the nodes.
fn encode_watch(watch: &Watch, width: NodeWidth, out: &mut Vec<u8>) {
    let nodes = watch.nodes();
    out.push(nodes.len() as u8);
    for &node in nodes {
        width.put(out, node);
    }
}

/// Reads the section at the front of `bytes` (node ids `width` bytes wide):
/// its watches into `watches`, as records with no flags; returns its
/// records' pairs (flags, watch), two bytes each.
pub(crate) fn read_section<'a>(
    bytes: &mut &'a [u8],
    width: NodeWidth,
    watches: &mut Vec<RawRecord<'a>>,
) -> std::result::Result<&'a [u8], &'static str> {
    watches.clear();
    read_section_with(bytes, width, |watch| watches.push(watch))
}

/// Reads the section at the front of `bytes` as [`read_section`] does, but
/// hands each watch to `each` in order instead of keeping it.
#[inline]
pub(crate) fn read_section_with<'a>(
    bytes: &mut &'a [u8],
    width: NodeWidth,
    mut each: impl FnMut(RawRecord<'a>),
) -> std::result::Result<&'a [u8], &'static str> {
    let records = get_varint(bytes).ok_or("bad section")? as usize;
    let count = get_varint(bytes).ok_or("bad section")? as usize;
    if records == 0 || records > SECTION || count == 0 || count > records {
        return Err("bad section");
    }
    for _ in 0..count {
        let (watch, rest) = RawRecord::split(bytes, width)?;
        if watch.head & !0x0f != 0 {
            return Err("bad watch");
        }
        each(watch);
        *bytes = rest;
    }
    let (pairs, rest) = bytes
        .split_at_checked(2 * records)
        .ok_or("truncated section")?;
    *bytes = rest;
    Ok(pairs)
}

/// The record a section's pair (flags, watch) stands for.
#[inline]
pub(crate) fn section_record<'a>(
    watches: &[RawRecord<'a>],
    pair: [u8; 2],
) -> std::result::Result<RawRecord<'a>, &'static str> {
    let (flags, watch) = section_pair(watches.len(), pair)?;
    let watch = &watches[watch];
    Ok(RawRecord {
        head: watch.head | flags,
        ..*watch
    })
}

/// A section's pair (flags, watch) checked against the section's `watches`
/// (how many it lists): the flags, and the index of the watch.
#[inline]
pub(crate) fn section_pair(
    watches: usize,
    [flags, watch]: [u8; 2],
) -> std::result::Result<(u8, usize), &'static str> {
    if usize::from(watch) >= watches {
        return Err("a record of a watch its section lacks");
    }
    if flags & !(LEAF | RESHAPES) != 0 {
        return Err("bad record flags");
    }
    Ok((flags, usize::from(watch)))
}

/// Whether a record with these flags had no candidate.
#[inline]
pub(crate) fn flags_leaf(flags: u8) -> bool {
    flags & LEAF != 0
}

/// The records of a batch's expansions column, one after another.
pub(crate) struct Records<'a> {
    rest: &'a [u8],
    width: NodeWidth,
    watches: Vec<RawRecord<'a>>,
    pairs: &'a [u8],
}

impl<'a> Records<'a> {
    /// The next record (the caller knows how many there are).
    #[inline]
    pub fn next_record(&mut self) -> std::result::Result<RawRecord<'a>, &'static str> {
        if self.pairs.is_empty() {
            self.pairs = read_section(&mut self.rest, self.width, &mut self.watches)?;
        }
        let (&pair, rest) = self.pairs.split_first_chunk::<2>().ok_or("bad section")?;
        self.pairs = rest;
        section_record(&self.watches, pair)
    }

    /// Checks that nothing is left over.
    pub fn finish(&self) -> std::result::Result<(), &'static str> {
        if self.rest.is_empty() && self.pairs.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes in a batch")
        }
    }
}

/// A batch block's payload, split into its columns but undecoded.
#[derive(Clone, Copy)]
pub(crate) struct BatchPayload<'a> {
    /// The records it holds.
    pub count: u32,
    pub width: NodeWidth,
    /// The children its records list in all.
    pub listed: u32,
    /// The expansions column: sections of `count` records in all.
    pub expansions: &'a [u8],
    /// The children column.
    pub children: &'a [u8],
}

impl<'a> BatchPayload<'a> {
    pub fn parse(mut bytes: &'a [u8]) -> std::result::Result<Self, &'static str> {
        let count = get_varint(&mut bytes).ok_or("bad count")?;
        let width = take_width(&mut bytes).ok_or("bad node width")?;
        let listed = get_varint(&mut bytes).ok_or("bad child count")?;
        let length = get_varint(&mut bytes).ok_or("bad expansions length")?;
        let (expansions, children) = bytes
            .split_at_checked(length as usize)
            .ok_or("truncated expansions")?;
        Ok(Self {
            count,
            width,
            listed,
            expansions,
            children,
        })
    }

    /// Its records, in order.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.expansions,
            width: self.width,
            watches: Vec::new(),
            pairs: &[],
        }
    }

    /// Calls `child` with the record index, token and [`ReshapeCode`] of
    /// every child listed, in order, after checking that the columns hold
    /// what the header says.
    pub fn each_child(
        &self,
        mut child: impl FnMut(u32, u32, ReshapeCode),
    ) -> std::result::Result<(), &'static str> {
        let mut records = self.records();
        let mut children = self.children;
        let mut listed = 0u32;
        for record in 0..self.count {
            let raw = records.next_record()?;
            listed += read_children(&mut children, raw.head(), |token, reshape| {
                child(record, token, reshape);
            })?;
        }
        records.finish()?;
        if !children.is_empty() {
            return Err("trailing bytes in a batch");
        }
        if listed != self.listed {
            return Err("a batch lists other children than it counts");
        }
        Ok(())
    }
}

/// Reads the children of one record with head byte `head` off the front of
/// `bytes` (nothing for a leaf), calling `child` with each child's token
/// and [`ReshapeCode`] in order. Returns how many there were.
#[inline]
pub(crate) fn read_children(
    bytes: &mut &[u8],
    head: u8,
    mut child: impl FnMut(u32, ReshapeCode),
) -> std::result::Result<u32, &'static str> {
    if head & LEAF != 0 {
        return Ok(0);
    }
    let reshapes = head & RESHAPES != 0;
    let groups = get_varint(bytes).ok_or("truncated children")?;
    let mut token = 0u32;
    let mut listed = 0;
    for _ in 0..groups {
        token = token
            .checked_add(get_varint(bytes).ok_or("truncated child")?)
            .ok_or("bad child token")?;
        if !reshapes {
            child(token, 0);
            listed += 1;
            continue;
        }
        let (&mask, rest) = bytes.split_first().ok_or("truncated child")?;
        *bytes = rest;
        for over in 0..7u8 {
            if mask & 1 << over != 0 {
                child(token, over + 1);
                listed += 1;
            }
        }
        if mask & UP_BIT != 0 {
            child(token, UP);
            listed += 1;
        }
    }
    Ok(listed)
}

/// One encoded expansion, split but undecoded: the scan of a history reads
/// a million of these for every few it decodes.
#[derive(Clone, Copy)]
pub(crate) struct RawRecord<'a> {
    head: u8,
    width: NodeWidth,
    /// The watched nodes, `width` bytes each.
    watch: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// Splits the expansion at the front of `bytes`, whose node ids are
    /// `width` bytes wide, from the rest.
    #[inline]
    pub fn split(
        bytes: &'a [u8],
        width: NodeWidth,
    ) -> std::result::Result<(Self, &'a [u8]), &'static str> {
        let (&head, rest) = bytes.split_first().ok_or("truncated record")?;
        let count = usize::from(head & 0x0f);
        if count > MAX_PREFIXES {
            return Err("too many watched nodes");
        }
        let (watch, rest) = rest
            .split_at_checked(count * usize::from(width.0))
            .ok_or("truncated watch")?;
        Ok((Self { head, width, watch }, rest))
    }

    /// The head byte (flags and the number of watched nodes).
    #[inline]
    pub fn head(&self) -> u8 {
        self.head
    }

    /// Whether the ortho had no candidate.
    #[inline]
    pub fn leaf(&self) -> bool {
        self.head & LEAF != 0
    }

    /// The watched phrase nodes.
    #[inline]
    pub fn nodes(&self) -> impl Iterator<Item = u32> + '_ {
        let width = self.width;
        self.watch
            .chunks_exact(usize::from(width.0))
            .map(move |bytes| width.get(bytes))
    }

    /// Reads the watched phrase nodes into `nodes`; returns how many.
    #[inline]
    pub fn read_nodes(&self, nodes: &mut [u32; MAX_PREFIXES]) -> usize {
        let mut len = 0;
        for (node, read) in nodes.iter_mut().zip(self.nodes()) {
            *node = read;
            len += 1;
        }
        len
    }

    /// Whether `test` holds for some watched phrase node.
    #[inline(always)]
    pub fn any_node(&self, mut test: impl FnMut(u32) -> bool) -> bool {
        // One loop per width, each with its width fixed.
        match self.width.0 {
            2 => self
                .watch
                .chunks_exact(2)
                .any(|b| test(u32::from(u16::from_le_bytes([b[0], b[1]])))),
            3 => self
                .watch
                .chunks_exact(3)
                .any(|b| test(u32::from_le_bytes([b[0], b[1], b[2], 0]))),
            _ => self
                .watch
                .chunks_exact(4)
                .any(|b| test(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        }
    }

    /// The expansion it records.
    pub fn expansion(&self) -> Expansion {
        let mut nodes = [0; MAX_PREFIXES];
        let len = self.read_nodes(&mut nodes);
        Expansion {
            leaf: self.leaf(),
            watch: Watch::from_parts(nodes, len as u8),
        }
    }
}

/// Re-encodes a batch block's `payload` into `out`, with the expansion
/// `changed(i)` gives for record `i` (if any) in place of the recorded one,
/// and node ids as wide as the new expansions need. A former leaf that is
/// one no more lists no children: its new ones are roots of a later run.
pub(crate) fn rewrite_batch(
    payload: &[u8],
    changed: impl Fn(u32) -> Option<Expansion>,
    out: &mut Vec<u8>,
) -> std::result::Result<(), &'static str> {
    let batch = BatchPayload::parse(payload)?;
    let mut stored = batch.records();
    let mut children = batch.children;
    let mut records = Vec::with_capacity(batch.count as usize);
    for at in 0..batch.count {
        let record = stored.next_record()?;
        let before = children;
        read_children(&mut children, record.head(), |_, _| ())?;
        let listed = &before[..before.len() - children.len()];
        let expansion = changed(at).unwrap_or_else(|| record.expansion());
        records.push((record.head() & RESHAPES != 0, expansion, listed));
    }
    stored.finish()?;
    if !children.is_empty() {
        return Err("trailing bytes in a batch");
    }
    let width = NodeWidth::fitting(
        records
            .iter()
            .flat_map(|(_, expansion, _)| expansion.watch.nodes().iter().copied()),
    )
    .max(batch.width);
    let mut part = BatchRecords::default();
    for (reshapes, expansion, listed) in &records {
        part.add_expansion(expansion, *reshapes, width);
        if !expansion.leaf && listed.is_empty() {
            put_varint(&mut part.children, 0);
        }
        part.children.extend_from_slice(listed);
    }
    part.listed = batch.listed;
    BatchRecords::encode(std::slice::from_ref(&part), width, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every child of a batch payload, as (record, step).
    fn children_of(payload: &[u8]) -> Vec<(u32, Step)> {
        let mut children = Vec::new();
        BatchPayload::parse(payload)
            .unwrap()
            .each_child(|record, token, reshape| {
                children.push((record, child_step(token, reshape)))
            })
            .unwrap();
        children
    }

    #[test]
    fn records_round_trip_children_and_expansions() {
        let watch = Watch::new(&[3, 70_000, 129]).unwrap();
        let fills: Vec<Step> = [4, 9, 300, 70_001].map(Step::fill).to_vec();
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
        let width = node_width(70_001);
        let parent = Expansion { leaf: false, watch };
        let leaf = Expansion { leaf: true, watch };
        // Two parts, as rayon tasks write them: the columns join in order.
        let mut first = BatchRecords::default();
        first.add(&parent, false, &fills, width);
        first.add(&leaf, false, &[], width);
        let mut second = BatchRecords::default();
        second.add(&parent, true, &reshapes, width);
        second.add(&parent, false, &[], width);
        let mut payload = Vec::new();
        BatchRecords::encode(&[first, second], width, &mut payload);

        let batch = BatchPayload::parse(&payload).unwrap();
        assert_eq!((batch.count, batch.listed), (4, 7));
        let mut records = batch.records();
        for expected in [parent, leaf, parent, parent] {
            assert_eq!(records.next_record().unwrap().expansion(), expected);
        }
        records.finish().unwrap();
        let expected: Vec<(u32, Step)> = (fills.iter().map(|&step| (0, step)))
            .chain(reshapes.iter().map(|&step| (2, step)))
            .collect();
        assert_eq!(children_of(&payload), expected);

        // A child too many or too few in the header is caught.
        let mut wrong = payload.clone();
        wrong[2] += 1;
        let batch = BatchPayload::parse(&wrong).unwrap();
        assert!(batch.each_child(|_, _, _| ()).is_err());
    }

    #[test]
    fn a_rewritten_batch_keeps_its_children_and_takes_the_new_expansions() {
        let width = node_width(100);
        let watch = |node| Watch::new(&[node]).unwrap();
        let mut part = BatchRecords::default();
        part.add(
            &Expansion {
                leaf: true,
                watch: watch(1),
            },
            false,
            &[],
            width,
        );
        part.add(
            &Expansion {
                leaf: false,
                watch: watch(2),
            },
            false,
            &[Step::fill(7), Step::fill(9)],
            width,
        );
        let mut payload = Vec::new();
        BatchRecords::encode(&[part], width, &mut payload);
        // The leaf grew candidates; its node ids now need three bytes.
        let grown = Expansion {
            leaf: false,
            watch: watch(70_000),
        };
        let mut rewritten = Vec::new();
        rewrite_batch(&payload, |at| (at == 0).then_some(grown), &mut rewritten).unwrap();
        let batch = BatchPayload::parse(&rewritten).unwrap();
        assert_eq!(batch.width, node_width(70_001));
        let mut records = batch.records();
        assert_eq!(records.next_record().unwrap().expansion(), grown);
        let record = records.next_record().unwrap();
        assert_eq!(record.nodes().collect::<Vec<_>>(), [2]);
        records.finish().unwrap();
        assert_eq!(
            children_of(&rewritten),
            [(1, Step::fill(7)), (1, Step::fill(9))]
        );
    }

    #[test]
    fn sections_list_each_watch_once_and_hold_at_most_256_records() {
        let width = node_width(100);
        let watch = |node| Watch::new(&[node, node + 1]).unwrap();
        // 600 leaves over 3 watches: three sections (256, 256, 88).
        let expansions: Vec<Expansion> = (0..600)
            .map(|i| Expansion {
                leaf: true,
                watch: watch(i % 3),
            })
            .collect();
        let mut part = BatchRecords::default();
        for (i, expansion) in expansions.iter().enumerate() {
            part.add(expansion, i % 2 == 0, &[], width);
        }
        let mut payload = Vec::new();
        BatchRecords::encode(&[part], width, &mut payload);
        let batch = BatchPayload::parse(&payload).unwrap();
        let mut column = batch.expansions;
        let mut sizes = Vec::new();
        let mut watches = Vec::new();
        while !column.is_empty() {
            let pairs = read_section(&mut column, batch.width, &mut watches).unwrap();
            sizes.push((pairs.len() / 2, watches.len()));
        }
        assert_eq!(sizes, [(256, 3), (256, 3), (88, 3)]);
        let mut records = batch.records();
        for (i, expansion) in expansions.iter().enumerate() {
            let record = records.next_record().unwrap();
            assert_eq!(record.expansion(), *expansion);
            assert_eq!(record.head() & RESHAPES != 0, i % 2 == 0);
        }
        records.finish().unwrap();
        // A record naming a watch its section lacks is caught.
        let mut bad = payload.clone();
        let last = bad.len() - 1;
        bad[last] = 7;
        let batch = BatchPayload::parse(&bad).unwrap();
        let mut records = batch.records();
        let outcome = (0..600).try_for_each(|_| records.next_record().map(drop));
        assert!(outcome.is_err());
    }
}
