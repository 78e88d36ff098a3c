//! The compact ortho value: shape, payload, identity, and its children
//! (ORTHO.md §3–5 and the §7 ordering).
//!
//! An ortho is a shape id plus one `u32` per slot, [`EMPTY`] marking an empty
//! slot, so the payload length always equals the shape's capacity.

use std::cmp::Ordering;

use crate::canonical;
use crate::error::Error;
use crate::interner::{Completions, Growth, Interner, PhraseNode, Token, Version};
use crate::spatial::{ShapeId, ShapeTable, shapes};

/// The raw value of an empty slot.
pub const EMPTY: u32 = u32::MAX;

/// A stable 64-bit identity of an ortho: the same on every machine and build.
pub type OrthoId = u64;

/// Payloads up to this many slots live inline, without a heap allocation;
/// nearly every ortho of real text is that small.
const INLINE_SLOTS: usize = 16;

/// The slots of an ortho: inline when short, boxed otherwise.
#[derive(Clone)]
enum Slots {
    Inline { len: u8, slots: [u32; INLINE_SLOTS] },
    Heap(Box<[u32]>),
}

impl Slots {
    fn filled(len: usize, value: u32) -> Self {
        if len <= INLINE_SLOTS {
            Self::Inline {
                len: len as u8,
                slots: [value; INLINE_SLOTS],
            }
        } else {
            Self::Heap(vec![value; len].into_boxed_slice())
        }
    }

    fn copy_of(values: &[u32]) -> Self {
        let mut slots = Self::filled(values.len(), EMPTY);
        slots.copy_from_slice(values);
        slots
    }
}

impl std::ops::Deref for Slots {
    type Target = [u32];

    #[inline]
    fn deref(&self) -> &[u32] {
        match self {
            Self::Inline { len, slots } => &slots[..usize::from(*len)],
            Self::Heap(slots) => slots,
        }
    }
}

impl std::ops::DerefMut for Slots {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u32] {
        match self {
            Self::Inline { len, slots } => &mut slots[..usize::from(*len)],
            Self::Heap(slots) => slots,
        }
    }
}

impl PartialEq for Slots {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Slots {}

impl std::hash::Hash for Slots {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// A grid of token ids in position order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ortho {
    shape: ShapeId,
    slots: Slots,
}

impl Ortho {
    /// The empty ortho of shape `[2, 2]`, where every search starts.
    pub fn empty() -> Self {
        Self {
            shape: shapes().start(),
            slots: Slots::filled(4, EMPTY),
        }
    }

    /// Builds an ortho from sizes and a payload in position order.
    pub fn new(dims: &[usize], payload: &[Option<Token>]) -> Result<Self, Error> {
        let shape = shapes()
            .id(dims)
            .ok_or_else(|| Error::BadOrtho(format!("unsupported shape {dims:?}")))?;
        let slots: Vec<u32> = payload
            .iter()
            .map(|slot| slot.map_or(EMPTY, |token| token.0))
            .collect();
        Self::from_raw(shape, &slots)
    }

    /// Builds an ortho from a shape id and raw slots, checking their lengths agree.
    pub fn from_raw(shape: ShapeId, slots: &[u32]) -> Result<Self, Error> {
        let capacity = shapes().table(shape).capacity;
        if slots.len() != capacity {
            return Err(Error::BadOrtho(format!(
                "payload of {} slots for a shape of capacity {capacity}",
                slots.len()
            )));
        }
        Ok(Self {
            shape,
            slots: Slots::copy_of(slots),
        })
    }

    /// The shape id.
    pub fn shape(&self) -> ShapeId {
        self.shape
    }

    /// The shape's table.
    #[inline]
    pub fn table(&self) -> &'static ShapeTable {
        shapes().table(self.shape)
    }

    /// The sizes of the shape.
    pub fn dims(&self) -> &'static [usize] {
        &self.table().dims
    }

    /// Raw slots in position order; [`EMPTY`] marks an empty slot.
    pub fn raw_slots(&self) -> &[u32] {
        &self.slots
    }

    /// The payload in position order.
    pub fn payload(&self) -> impl Iterator<Item = Option<Token>> + '_ {
        self.slots
            .iter()
            .map(|&slot| (slot != EMPTY).then_some(Token(slot)))
    }

    /// Number of filled slots.
    pub fn fullness(&self) -> usize {
        self.slots.iter().filter(|&&slot| slot != EMPTY).count()
    }

    /// Product of `size - 1` over the shape.
    pub fn volume(&self) -> u64 {
        self.table().volume
    }

    /// The stable identity: xxh3 of the payload, seeded by a hash of the sizes.
    #[inline]
    pub fn id(&self) -> OrthoId {
        let seed = self.table().id_seed;
        let mut bytes = [0u8; 4 * 64];
        if self.slots.len() <= 64 {
            for (chunk, slot) in bytes.chunks_exact_mut(4).zip(self.slots.iter()) {
                chunk.copy_from_slice(&slot.to_le_bytes());
            }
            xxhash_rust::xxh3::xxh3_64_with_seed(&bytes[..4 * self.slots.len()], seed)
        } else {
            let long: Vec<u8> = self
                .slots
                .iter()
                .flat_map(|slot| slot.to_le_bytes())
                .collect();
            xxhash_rust::xxh3::xxh3_64_with_seed(&long, seed)
        }
    }

    /// `(volume, fullness)`: the primary key of the §7 order.
    #[inline]
    pub fn rank_key(&self) -> (u64, usize) {
        (self.volume(), self.fullness())
    }

    /// Orders orthos for the optimum of ORTHO.md §7: greater means better.
    /// Greater `(volume, fullness)` wins; ties go to the smaller `(dims, payload)`.
    pub fn rank_cmp(&self, other: &Self) -> Ordering {
        let (mine, theirs) = (self.table(), other.table());
        mine.volume
            .cmp(&theirs.volume)
            .then_with(|| self.fullness().cmp(&other.fullness()))
            .then_with(|| self.tie_cmp(other))
    }

    /// The §7 tie-break alone, for orthos of equal `(volume, fullness)`:
    /// greater when `self` has the smaller `(dims, payload)`.
    #[inline]
    pub fn tie_cmp(&self, other: &Self) -> Ordering {
        if self.shape != other.shape {
            return other.dims().cmp(self.dims());
        }
        // An empty slot is smaller than any token.
        for (&mine, &theirs) in self.slots.iter().zip(other.slots.iter()) {
            if mine != theirs {
                return theirs.wrapping_add(1).cmp(&mine.wrapping_add(1));
            }
        }
        Ordering::Equal
    }

    /// The payload as words, `None` for empty slots.
    pub fn words<'a>(&self, interner: &'a Interner) -> Vec<Option<&'a str>> {
        self.payload()
            .map(|slot| slot.and_then(|token| interner.word(token)))
            .collect()
    }
}

/// A slot has one required prefix per axis, and shapes within
/// [`crate::spatial::MAX_CAPACITY`] have at most this many axes.
pub const MAX_PREFIXES: usize = 10;

/// Reusable buffers for [`expand`], one set per thread.
#[derive(Default)]
pub struct Scratch {
    candidates: Vec<u32>,
    forbidden: Vec<u32>,
    watch: Watch,
}

/// The trie nodes an ortho's candidates depend on: while none of them grows,
/// its candidate set stays the same in every later version.
///
/// They are the nodes where the walks of its required prefixes ended; when
/// one prefix does not occur at all, that prefix's node alone (nothing can
/// change until it appears).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    nodes: [u32; MAX_PREFIXES],
    len: u8,
}

impl Watch {
    /// Watches `nodes` (at most [`MAX_PREFIXES`]; `None` if more).
    pub fn new(nodes: &[u32]) -> Option<Self> {
        let mut watch = Self::default();
        for &node in nodes {
            if usize::from(watch.len) == MAX_PREFIXES {
                return None;
            }
            watch.push(PhraseNode(node));
        }
        Some(watch)
    }

    /// Watches the first `len` of `nodes` (`len` at most [`MAX_PREFIXES`]).
    pub(crate) fn from_parts(nodes: [u32; MAX_PREFIXES], len: u8) -> Self {
        debug_assert!(usize::from(len) <= MAX_PREFIXES);
        Self { nodes, len }
    }

    /// The watched nodes.
    pub fn nodes(&self) -> &[u32] {
        &self.nodes[..usize::from(self.len)]
    }

    /// Whether the ortho may have gained a candidate since `growth` began:
    /// some watched node gained a token that every other watched node also
    /// completes with. (When only one node is watched, any growth counts:
    /// it may be a prefix that did not occur at all.)
    pub fn may_have_gained(&self, interner: &Interner, since: Version, growth: &Growth) -> bool {
        let nodes = self.nodes();
        if !nodes
            .iter()
            .any(|&node| interner.grew_since(PhraseNode(node), since))
        {
            return false;
        }
        // A split node may no longer be its prefix's node: nothing recorded
        // about it can be trusted, so the ortho must be looked at again.
        if nodes.len() == 1
            || nodes
                .iter()
                .any(|&node| interner.split_since(PhraseNode(node), since))
        {
            return true;
        }
        nodes.iter().enumerate().any(|(index, &node)| {
            growth.gained(PhraseNode(node)).iter().any(|&token| {
                nodes.iter().enumerate().all(|(other, &peer)| {
                    other == index || interner.node_completions(PhraseNode(peer)).contains(token)
                })
            })
        })
    }

    fn push(&mut self, node: PhraseNode) {
        self.nodes[usize::from(self.len)] = node.0;
        self.len += 1;
    }
}

/// What expanding an ortho learned about it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Whether it had no candidate (ORTHO.md §6.3).
    pub leaf: bool,
    /// What its candidates depend on.
    pub watch: Watch,
}

/// Which children of an expansion are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// Every child (a search that deduplicates them itself).
    Every,
    /// Only the children whose canonical parent is the ortho expanded (see
    /// [`crate::canonical`]): each ortho is then accepted exactly once.
    Canonical,
}

/// How a child is made from its parent: the token added to the parent's
/// next slot and, when that was the parent's last empty slot, the reshaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    /// The token added.
    pub token: u32,
    /// The reshaping of the full grid, if the token filled it.
    pub reshape: Option<ReshapeKind>,
}

/// One of the reshapings of ORTHO.md §5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReshapeKind {
    /// The over-reshaping at this index of the shape's list.
    Over(u8),
    /// The up-reshaping.
    Up,
}

impl Step {
    /// Filling the next slot with `token` (no reshaping).
    pub const fn fill(token: u32) -> Self {
        Self {
            token,
            reshape: None,
        }
    }

    /// The child this step makes from `parent` (the same child expansion
    /// hands over; no candidate check).
    pub fn apply(&self, parent: &Ortho) -> Result<Ortho, Error> {
        let table = parent.table();
        let next = parent
            .slots
            .iter()
            .position(|&slot| slot == EMPTY)
            .ok_or_else(|| Error::BadOrtho("a full grid has no next slot".into()))?;
        match self.reshape {
            None => Ok(fill(parent, table, next, self.token).0),
            Some(kind) => {
                let mut full = parent.slots.clone();
                full[next] = self.token;
                let reshape = match kind {
                    ReshapeKind::Over(index) => table.over.get(usize::from(index)),
                    ReshapeKind::Up => {
                        table
                            .up
                            .get(up_position(&parent.slots, table.dims.len(), self.token))
                    }
                };
                let reshape = reshape.ok_or_else(|| {
                    Error::BadOrtho(format!("no {kind:?} reshaping of {:?}", table.dims))
                })?;
                moved(&full, reshape)
            }
        }
    }
}

/// Computes the candidates of `ortho`'s next slot and hands every child to
/// `emit`.
pub fn expand(
    ortho: &Ortho,
    interner: &Interner,
    scratch: &mut Scratch,
    mut emit: impl FnMut(Ortho),
) -> Result<Expansion, Error> {
    expand_since(
        ortho,
        interner,
        Version::ZERO,
        Acceptance::Every,
        scratch,
        |_, child| emit(child),
    )
}

/// Expands `ortho`, handing over the children that `acceptance` keeps, each
/// with the step that made it, and only those of candidates that are new
/// since interner version `since` (those that some required prefix gained
/// after it; every candidate when `since` is [`Version::ZERO`]). The expansion describes
/// every candidate.
///
/// Re-expanding a stored ortho this way skips the children it already had.
pub fn expand_since(
    ortho: &Ortho,
    interner: &Interner,
    since: Version,
    acceptance: Acceptance,
    scratch: &mut Scratch,
    mut emit: impl FnMut(Step, Ortho),
) -> Result<Expansion, Error> {
    let table = ortho.table();
    let Some(next) = ortho.slots.iter().position(|&slot| slot == EMPTY) else {
        return Ok(Expansion {
            leaf: true,
            watch: Watch::default(),
        });
    };
    candidates(ortho, table, next, interner, scratch);
    let expansion = Expansion {
        leaf: scratch.candidates.is_empty(),
        watch: scratch.watch,
    };
    if expansion.leaf {
        return Ok(expansion);
    }
    if since > Version::ZERO {
        let watch = scratch.watch;
        scratch.candidates.retain(|&token| {
            watch.nodes().iter().any(|&node| {
                interner
                    .completion_added_in(PhraseNode(node), token)
                    .is_some_and(|added| added > since)
            })
        });
    }
    let canonical = acceptance == Acceptance::Canonical;
    let last_empty = ortho.fullness() + 1 == table.capacity;
    if last_empty {
        emit_reshape_children(
            ortho,
            table,
            next,
            &scratch.candidates,
            canonical,
            &mut emit,
        )?;
    } else {
        emit_fill_children(
            ortho,
            table,
            next,
            &scratch.candidates,
            canonical,
            &mut emit,
        );
    }
    Ok(expansion)
}

/// Hands `emit` the children of filling the last empty slot `next` with
/// each of `candidates` (its reshapings, §5); when `canonical`, only those
/// whose canonical parent is `ortho`.
#[inline]
fn emit_reshape_children(
    ortho: &Ortho,
    table: &ShapeTable,
    next: usize,
    candidates: &[u32],
    canonical: bool,
    emit: &mut impl FnMut(Step, Ortho),
) -> Result<(), Error> {
    for &token in candidates {
        reshape_children(ortho, table, next, token, |kind, child| {
            let source = match kind {
                ReshapeKind::Over(index) => table.over[usize::from(index)].source_index,
                ReshapeKind::Up => {
                    table.up[up_position(&ortho.slots, table.dims.len(), token)].source_index
                }
            };
            if !canonical || canonical::accepts_reshape(child.table(), &child.slots, source) {
                emit(
                    Step {
                        token,
                        reshape: Some(kind),
                    },
                    child,
                );
            }
        })?;
    }
    Ok(())
}

/// Hands `emit` the children of filling slot `next` (not the last empty
/// one) with each of `candidates`; when `canonical`, only those whose
/// canonical parent is `ortho`.
#[inline]
fn emit_fill_children(
    ortho: &Ortho,
    table: &ShapeTable,
    next: usize,
    candidates: &[u32],
    canonical: bool,
    emit: &mut impl FnMut(Step, Ortho),
) {
    // A fill child can only have another fill parent beyond `next` when the
    // slot after it is already filled (see `canonical`).
    let check_fill = canonical && ortho.slots.get(next + 1).is_some_and(|&slot| slot != EMPTY);
    let rivals = (check_fill && table.capacity <= 64)
        .then(|| canonical::fill_rivals(table, canonical::filled_mask(&ortho.slots), next));
    for &token in candidates {
        let (child, mirrored) = fill(ortho, table, next, token);
        if canonical {
            let accepted = !mirrored
                && match &rivals {
                    Some(rivals) => canonical::accepts_fill_against(table, &child.slots, rivals),
                    None => {
                        !check_fill || canonical::accepts_fill(table, &child.slots, next, false)
                    }
                };
            if !accepted {
                continue;
            }
        }
        emit(Step::fill(token), child);
    }
}

/// The child of putting `token` into slot `next` (not the last empty one),
/// and whether the `[2, 2]` mirror swap was applied.
fn fill(ortho: &Ortho, table: &ShapeTable, next: usize, token: u32) -> (Ortho, bool) {
    let mut slots = ortho.slots.clone();
    slots[next] = token;
    let mirrored = next == 2 && table.is_start() && slots[1] > slots[2];
    if mirrored {
        slots.swap(1, 2);
    }
    (
        Ortho {
            shape: ortho.shape,
            slots,
        },
        mirrored,
    )
}

/// Fills `scratch.candidates` with the sorted candidates of slot `next` (§4),
/// and `scratch.watch` with the trie nodes they depend on.
fn candidates(
    ortho: &Ortho,
    table: &ShapeTable,
    next: usize,
    interner: &Interner,
    scratch: &mut Scratch,
) {
    let rule = &table.slots[next];
    let slots = &ortho.slots;
    scratch.forbidden.clear();
    scratch.forbidden.extend(
        rule.shell_peers
            .iter()
            .map(|&peer| slots[peer as usize])
            .filter(|&slot| slot != EMPTY),
    );
    let forbidden = &scratch.forbidden;
    let candidates = &mut scratch.candidates;
    candidates.clear();
    let watch = &mut scratch.watch;
    *watch = Watch::default();

    if rule.prefixes.is_empty() {
        // Only the empty ortho's first slot: every token, which new versions
        // extend without any trie node to watch.
        candidates.extend((0..interner.vocabulary() as u32).filter(|t| !forbidden.contains(t)));
        return;
    }
    // Start from the smallest completion set and keep what every other set holds.
    let mut sets = [Completions::default(); MAX_PREFIXES];
    let count = rule.prefixes.len();
    for (set, prefix) in sets.iter_mut().zip(&rule.prefixes) {
        let walk = interner.walk(prefix.iter().map(|&position| slots[position as usize]));
        *set = walk.completions;
        if set.is_empty() {
            *watch = Watch::default();
            watch.push(walk.end);
            return;
        }
        watch.push(walk.end);
    }
    let sets = &mut sets[..count];
    match count {
        1 => {}
        2 => {
            if sets[1].len() < sets[0].len() {
                sets.swap(0, 1);
            }
        }
        _ => sets.sort_unstable_by_key(|set| set.len()),
    }
    let (smallest, rest) = sets.split_first().expect("at least one prefix");
    // When every set has a bitset and the smallest is longer than the
    // bitsets, intersecting them a word at a time beats testing its tokens.
    if let Some(first) = smallest.bits()
        && !rest.is_empty()
        && first.len() < smallest.len()
        && rest.iter().all(|set| set.bits().is_some())
    {
        for (index, &word) in first.iter().enumerate() {
            let mut word = rest.iter().fold(word, |word, set| {
                word & set.bits().expect("checked above")[index]
            });
            while word != 0 {
                let token = index as u32 * 64 + word.trailing_zeros();
                if !forbidden.contains(&token) {
                    candidates.push(token);
                }
                word &= word - 1;
            }
        }
        return;
    }
    candidates.extend(
        smallest.sorted.iter().copied().filter(|token| {
            !forbidden.contains(token) && rest.iter().all(|set| set.contains(*token))
        }),
    );
}

/// The children of filling the last empty slot `next` with `token` (§5):
/// the over-reshapings, then the up-reshaping when every size is 2.
fn reshape_children(
    ortho: &Ortho,
    table: &ShapeTable,
    next: usize,
    token: u32,
    mut emit: impl FnMut(ReshapeKind, Ortho),
) -> Result<(), Error> {
    let mut full = ortho.slots.clone();
    full[next] = token;
    for (index, reshape) in table.over.iter().enumerate() {
        emit(ReshapeKind::Over(index as u8), moved(&full, reshape)?);
    }
    if !table.up.is_empty() {
        let p = up_position(&ortho.slots, table.dims.len(), token);
        emit(ReshapeKind::Up, moved(&full, &table.up[p])?);
    }
    Ok(())
}

/// The up position `p` of ORTHO.md §5 for adding `token` as the last slot
/// of a `k`-axis grid of twos: the number of its axis slots (positions `1..=k`)
/// before the first one whose token is greater.
pub(crate) fn up_position(slots: &[u32], k: usize, token: u32) -> usize {
    (1..=k)
        .take_while(|&position| {
            let slot = slots[position];
            slot == EMPTY || slot <= token
        })
        .count()
}

fn moved(full: &[u32], reshape: &crate::spatial::Reshape) -> Result<Ortho, Error> {
    let shape = reshape
        .target
        .ok_or_else(|| Error::ShapeTooLarge(reshape.target_dims.to_vec()))?;
    let capacity = shapes().table(shape).capacity;
    let mut slots = Slots::filled(capacity, EMPTY);
    for (&token, &position) in full.iter().zip(reshape.map.iter()) {
        slots[position as usize] = token;
    }
    Ok(Ortho { shape, slots })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ortho(dims: &[usize], payload: &[i64]) -> Ortho {
        let payload: Vec<Option<Token>> = payload
            .iter()
            .map(|&t| (t >= 0).then_some(Token(t as u32)))
            .collect();
        Ortho::new(dims, &payload).unwrap()
    }

    const E: i64 = -1;

    /// A two-letter word per number, sorting like the numbers ("aa" < "ab" < ...).
    fn word(n: u32) -> String {
        let letter = |k: u32| char::from(b'a' + k as u8);
        format!("{}{}", letter(n / 26), letter(n % 26))
    }

    /// Text in which each listed phrase is its own sentence, over 100 words
    /// so that `word(n)` gets token id n.
    fn interner_with(phrases: &[&[u32]]) -> Interner {
        let mut text: Vec<String> = (0..100).map(|n| format!("{}.", word(n))).collect();
        for phrase in phrases {
            let words: Vec<String> = phrase.iter().map(|&n| word(n)).collect();
            text.push(format!("{}.", words.join(" ")));
        }
        let interner = Interner::from_texts([text.join(" ").as_str()]);
        assert_eq!(interner.token(&word(42)), Some(Token(42)));
        interner
    }

    fn children(parent: &Ortho, interner: &Interner) -> Vec<Ortho> {
        let mut out = Vec::new();
        expand(parent, interner, &mut Scratch::default(), |child| {
            out.push(child)
        })
        .unwrap();
        out
    }

    #[test]
    fn adding_to_a_two_by_two_keeps_one_mirror_image() {
        let interner = interner_with(&[&[10, 20], &[10, 30]]);
        let kids = children(&ortho(&[2, 2], &[10, E, E, E]), &interner);
        assert!(kids.contains(&ortho(&[2, 2], &[10, 20, E, E])));
        let kids = children(&ortho(&[2, 2], &[10, 20, E, E]), &interner);
        assert_eq!(kids, vec![ortho(&[2, 2], &[10, 20, 30, E])]);
        // [10,30,_,_] + 20 swaps into [10,20,30,_].
        let kids = children(&ortho(&[2, 2], &[10, 30, E, E]), &interner);
        assert_eq!(kids, vec![ortho(&[2, 2], &[10, 20, 30, E])]);
    }

    #[test]
    fn corner_of_two_by_two_requires_both_lines() {
        // Slot (1,1) needs completions of [20] and of [30]; only 40 follows both.
        let interner = interner_with(&[&[20, 40], &[30, 40], &[20, 41]]);
        let kids = children(&ortho(&[2, 2], &[10, 20, 30, E]), &interner);
        assert_eq!(
            kids,
            vec![
                ortho(&[3, 2], &[10, 20, 30, 40, E, E]),
                ortho(&[2, 2, 2], &[10, 20, 30, E, 40, E, E, E]),
            ]
        );
    }

    #[test]
    fn up_position_follows_axis_slot_tokens() {
        let interner = interner_with(&[&[20, 25], &[30, 25], &[20, 5], &[30, 5]]);
        let kids = children(&ortho(&[2, 2], &[10, 20, 30, E]), &interner);
        assert!(kids.contains(&ortho(&[2, 2, 2], &[10, 20, E, 30, E, 25, E, E])));
        assert!(kids.contains(&ortho(&[2, 2, 2], &[10, E, 20, 30, E, E, 5, E])));
    }

    #[test]
    fn three_by_two_next_slot_requires_column_and_forbids_shell() {
        // (2,0) needs completions of [10,30]; 40 sits in the same shell and is forbidden.
        let interner = interner_with(&[&[10, 30, 40], &[10, 30, 50]]);
        let kids = children(&ortho(&[3, 2], &[10, 20, 30, 40, E, E]), &interner);
        assert_eq!(kids, vec![ortho(&[3, 2], &[10, 20, 30, 40, 50, E])]);
    }

    #[test]
    fn cube_next_slot_forbids_both_shell_peers() {
        // (1,0,0) needs completions of [10]; 20 and 30 share its shell.
        let interner = interner_with(&[&[10, 20], &[10, 30], &[10, 11]]);
        let kids = children(&ortho(&[2, 2, 2], &[10, 20, 30, E, 40, E, E, E]), &interner);
        assert_eq!(
            kids,
            vec![ortho(&[2, 2, 2], &[10, 20, 30, 11, 40, E, E, E])]
        );
    }

    #[test]
    fn filling_three_by_two_reshapes_over_both_sizes() {
        let interner = interner_with(&[&[20, 40, 60], &[50, 60]]);
        let kids = children(&ortho(&[3, 2], &[10, 20, 30, 40, 50, E]), &interner);
        assert_eq!(
            kids,
            vec![
                ortho(&[4, 2], &[10, 20, 30, 40, 50, 60, E, E]),
                ortho(&[3, 3], &[10, 20, 30, E, 40, 50, E, 60, E]),
            ]
        );
    }

    #[test]
    fn filling_a_cube_reshapes_over_and_up() {
        // Slot 7 = (1,1,1) needs [40] (axis 0), [12] (axis 1), [13] (axis 2).
        let interner = interner_with(&[&[40, 14], &[12, 14], &[13, 14]]);
        let kids = children(
            &ortho(&[2, 2, 2], &[10, 20, 30, 11, 40, 12, 13, E]),
            &interner,
        );
        assert_eq!(
            kids,
            vec![
                ortho(&[3, 2, 2], &[10, 20, 30, 11, 40, 12, 13, E, 14, E, E, E]),
                ortho(
                    &[2, 2, 2, 2],
                    &[10, E, 20, 30, 11, E, E, 40, E, 12, 13, E, E, E, 14, E]
                ),
            ]
        );
    }

    #[test]
    fn ids_are_stable_and_distinguish_shapes() {
        let a = ortho(&[2, 2], &[1, 2, E, E]);
        assert_eq!(a.id(), ortho(&[2, 2], &[1, 2, E, E]).id());
        assert_ne!(a.id(), ortho(&[2, 2], &[2, 1, E, E]).id());
        assert_ne!(
            ortho(&[2, 2, 2], &[1, 2, E, E, E, E, E, E]).id(),
            ortho(&[4, 2], &[1, 2, E, E, E, E, E, E]).id()
        );
    }

    #[test]
    fn rank_prefers_volume_then_fullness_then_smaller_payload() {
        let small = ortho(&[2, 2], &[1, 2, 3, E]);
        let bigger = ortho(&[3, 2], &[1, 2, E, E, E, E]);
        assert_eq!(bigger.rank_cmp(&small), Ordering::Greater);
        let fuller = ortho(&[2, 2], &[1, 2, 3, 4]);
        assert_eq!(fuller.rank_cmp(&small), Ordering::Greater);
        let lower_ids = ortho(&[2, 2], &[0, 2, 3, E]);
        assert_eq!(lower_ids.rank_cmp(&small), Ordering::Greater);
        let empty_first = ortho(&[2, 2, 2], &[1, E, 2, 3, E, E, E, E]);
        let token_first = ortho(&[2, 2, 2], &[1, 2, E, 3, E, E, E, E]);
        assert_eq!(empty_first.rank_cmp(&token_first), Ordering::Greater);
    }
}
