//! The payload of a history's batch block (see [`super::history`] for the
//! file around it): the records of one batch of expanded orthos, written in
//! two columns so that a reader can look at every record's expansion
//! without reading any children.
//!
//! ```text
//! count | node width n: u8 | children: the number of children listed | expansions' length in bytes
//!       | expansions: count × (head: u8, watched node ids: n bytes each)
//!       | children: per record that is not a leaf, its accepted children
//! ```
//!
//! Numbers are LEB128 varints. The head byte holds the flags [`LEAF`] (no
//! candidate) and [`RESHAPES`] (the ortho had one empty slot, so its
//! children are reshapings) and, in bits 0–3, the number of watched phrase
//! nodes. A record's children are the number of distinct tokens, then per
//! token (ascending) the difference to the previous token (the first token
//! itself) and, for reshaping children, a byte with bit `j` set for
//! over-reshaping `j` and [`UP_BIT`] for the up-reshaping. Children are
//! listed record after record, in the order the search pushed them.
//!
//! Override entries (in `overrides-G-S` files) carry expansions alone, in
//! the same encoding.

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

/// Records of (part of) a batch being written, in their two columns; a
/// batch block is the concatenation of its parts' columns.
#[derive(Default)]
pub(crate) struct BatchRecords {
    expansions: Vec<u8>,
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
        encode_expansion(expansion, reshapes, width, &mut self.expansions);
        if !expansion.leaf {
            encode_children(reshapes, children, &mut self.children);
            self.listed += children.len() as u32;
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
        put_varint(out, sum(|part| part.expansions.len() as u32));
        for part in parts {
            out.extend_from_slice(&part.expansions);
        }
        for part in parts {
            out.extend_from_slice(&part.children);
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
    /// The expansions column: `count` expansions.
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

    /// Calls `child` with the record index, token and [`ReshapeCode`] of
    /// every child listed, in order, after checking that the columns hold
    /// what the header says.
    pub fn each_child(
        &self,
        mut child: impl FnMut(u32, u32, ReshapeCode),
    ) -> std::result::Result<(), &'static str> {
        let mut expansions = self.expansions;
        let mut children = self.children;
        let mut listed = 0u32;
        for record in 0..self.count {
            let (raw, rest) = RawRecord::split(expansions, self.width)?;
            expansions = rest;
            listed += read_children(&mut children, raw.head(), |token, reshape| {
                child(record, token, reshape);
            })?;
        }
        if !expansions.is_empty() || !children.is_empty() {
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
        let mut len = 0;
        for (slot, node) in nodes.iter_mut().zip(self.nodes()) {
            *slot = node;
            len += 1;
        }
        Expansion {
            leaf: self.leaf(),
            watch: Watch::from_parts(nodes, len),
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
    let mut expansions = batch.expansions;
    let mut children = batch.children;
    let mut records = Vec::with_capacity(batch.count as usize);
    for at in 0..batch.count {
        let (record, rest) = RawRecord::split(expansions, batch.width)?;
        expansions = rest;
        let before = children;
        read_children(&mut children, record.head(), |_, _| ())?;
        let listed = &before[..before.len() - children.len()];
        let expansion = changed(at).unwrap_or_else(|| record.expansion());
        records.push((record.head() & RESHAPES != 0, expansion, listed));
    }
    if !expansions.is_empty() || !children.is_empty() {
        return Err("trailing bytes in a batch");
    }
    let width = NodeWidth::fitting(
        records
            .iter()
            .flat_map(|(_, expansion, _)| expansion.watch.nodes().iter().copied()),
    )
    .max(batch.width);
    let mut part = BatchRecords {
        count: batch.count,
        listed: batch.listed,
        ..BatchRecords::default()
    };
    for (reshapes, expansion, listed) in &records {
        encode_expansion(expansion, *reshapes, width, &mut part.expansions);
        if !expansion.leaf && listed.is_empty() {
            put_varint(&mut part.children, 0);
        }
        part.children.extend_from_slice(listed);
    }
    BatchRecords::encode(std::slice::from_ref(&part), width, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(token: u32) -> Step {
        Step {
            token,
            reshape: None,
        }
    }

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
        let fills: Vec<Step> = [4, 9, 300, 70_001].map(fill).to_vec();
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
        let mut expansions = batch.expansions;
        for expected in [parent, leaf, parent, parent] {
            let (record, rest) = RawRecord::split(expansions, batch.width).unwrap();
            assert_eq!(record.expansion(), expected);
            expansions = rest;
        }
        assert!(expansions.is_empty());
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
            &[fill(7), fill(9)],
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
        let (record, rest) = RawRecord::split(batch.expansions, batch.width).unwrap();
        assert_eq!(record.expansion(), grown);
        let (record, _) = RawRecord::split(rest, batch.width).unwrap();
        assert_eq!(record.nodes().collect::<Vec<_>>(), [2]);
        assert_eq!(children_of(&rewritten), [(1, fill(7)), (1, fill(9))]);
    }
}
