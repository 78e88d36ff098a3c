//! The canonical-parent rule: every ortho is accepted from exactly one of
//! its parents, so the search is a tree and needs no seen set
//! (`../shared/spec/CANONICAL-PARENT.md`).
//!
//! # Histories
//!
//! Call a sequence of orthos from the empty one a *history* when each step
//! is a step of ORTHO.md §5 for *some* token — fill the first empty slot
//! (with the `[2, 2]` mirror swap), or fill the last one and reshape (with
//! the up-axis that the tokens decide) — whether or not the token is a
//! candidate. [`has_history`] decides whether an ortho ends one. It reads the
//! ortho backwards: a `[2, 2]` ortho has one iff its filled slots are a
//! prefix in position order and slot 1 < slot 2 when both are filled; any
//! other shape `S` was entered by a reshaping from one of its *sources* (see
//! [`crate::spatial::Source`]), after which the search only filled the
//! slots outside that source's footprint, in position order. So the ortho
//! has a history iff for some source: the footprint is filled, the filled
//! slots outside it are a prefix of the outside slots, and the footprint read
//! back into the source shape, without its last slot (the one whose filling
//! triggered the reshaping), has a history — where for an up source, the
//! up position computed from that grid and the last token must give this
//! source's axis.
//!
//! # Lemma: reachable = history + lines + shells
//!
//! An ortho `C` is found by the search iff it has a history and
//! (L) every line that ends at a filled slot `c` (along an axis `i` with
//! `c[i] > 0`, from `c[i] = 0` up to `c`) is a phrase, and (S) no two
//! filled slots of one shell hold the same token.
//!
//! *Only if:* the search's own steps are a history. Reshaping keeps every
//! line a line (over keeps coordinates; up inserts a 0, so lines of the old
//! axes stay lines and the new axis has no filled line yet) and every shell
//! a shell (coordinate sums do not change), and the mirror swap exchanges two
//! slots whose lines (`[s0, s1]`, `[s0, s2]`) and shell are symmetric. Each
//! filled slot was a candidate when filled: its lines were phrases and its
//! token differed from the filled slots of its shell, and those slots and
//! lines are the same in `C`. Slots filled later were checked against it.
//!
//! *If:* replay the history. At each step the filled slot's required
//! prefixes (always filled, ORTHO.md §4) followed by its token are lines of
//! `C`, phrases by (L); its forbidden tokens are tokens of its shell in `C`,
//! different by (S). So every token of the history is a candidate, and the
//! history is the search's own path.
//!
//! # Theorem: local parents are parents
//!
//! Let `C` be found. A *local parent* of `C` is an ortho `P` with a history
//! such that one step of §5 from `P`, with some token `v`, yields `C`. Every
//! local parent is found by the search (and so is an actual parent of `C`):
//! `P`'s filled slots map into `C`'s by a map that keeps lines and shells
//! (identity, or a reshaping), so (L) and (S) hold for `P` because they hold
//! for `C`, and `P` has a history; by the lemma `P` is found. The token `v`
//! is a candidate of `P` for the same reason: the lines ending at its slot
//! and its shell are those of `C`. Conversely every actual parent is a local
//! parent. This is the observation of CANONICAL-PARENT.md §3, now proved,
//! whatever the number of reshapings in a history or of axes in a shape.
//!
//! # The rule
//!
//! The local parents of `C` (shape `S`, first empty slot `m`) are:
//!
//! * *fill parents*: `C` without the token in slot `r`, for each `r < m`
//!   such that this has a history (it is then `r`'s first empty slot);
//!   for a `[2, 2]` ortho with three filled slots, also the mirror parent
//!   `[s0, s2, _, _]`, which reaches `C` through the swap;
//! * *reshape parents*: when `C`'s filled slots are exactly the footprint of
//!   a source, that source grid without its last slot (if it has a history
//!   and, for an up source, its up position fits). Different sources have
//!   different footprints, so there is at most one.
//!
//! The *canonical parent* is the first of them in this order: fill parents
//! by descending `r`, then the reshape parent; the mirror parent never.
//! Accepting a child only from its canonical parent accepts every found
//! ortho exactly once: its canonical parent is found (theorem), expanded,
//! and generates it; no other parent accepts it.
//!
//! The check is cheap where it can be: a child that fills slot `q` of a
//! parent whose slot `q + 1` is empty has no fill parent beyond `q`; a
//! reshape child of a shape with a single source has no fill parent (its
//! filled slots are exactly that source's footprint, and a footprint with a
//! hole has no history through the only source). Only the remaining
//! children, in shapes with several sources, walk their histories back.
//!
//! Because the canonical parent depends on `C` alone, it is the same in every
//! version: an ortho new in version `n + 1` is accepted from a new ortho, or
//! from an old one through a candidate new in `n + 1`.

use crate::ortho::{EMPTY, Ortho, up_position};
use crate::spatial::{ShapeTable, Source, SourceKind, SourceMasks, shapes};

/// Slots of the grids read back into a source shape that live on the
/// stack; larger ones are allocated.
const INLINE_SLOTS: usize = 64;

/// Whether a child that fills slot `q` of its parent (not the parent's last
/// empty slot) is accepted from that parent. `mirrored` says the `[2, 2]`
/// swap was applied to make it, `child` is the child's payload.
pub(crate) fn accepts_fill(table: &ShapeTable, child: &[u32], q: usize, mirrored: bool) -> bool {
    if mirrored {
        return false;
    }
    let first_empty = first_empty(child);
    if first_empty == q + 1 {
        return true;
    }
    !(q + 1..first_empty).any(|r| has_history_without(table, child, r))
}

/// The fill parents that may compete with the one that made a child, as
/// far as the child's filled slots can tell: pairs of a slot `r` (the child
/// without it may be a fill parent) and a source of the shape whose
/// footprint and outside that pattern fits. Siblings share their pattern,
/// so this is worked out once per parent; only these pairs need the tokens.
#[derive(Clone, Copy)]
pub(crate) struct Rivals {
    pairs: [(u8, u8); Self::MOST],
    len: u8,
    /// Too many to list, or a shape without masks: check everything.
    all: bool,
}

impl Rivals {
    const MOST: usize = 32;

    /// No rival: every child with this pattern is accepted.
    pub fn none(&self) -> bool {
        self.len == 0 && !self.all
    }

    /// The rivals of children of shape `table` whose filled slots are
    /// `filled` (a mask), for removed slots `r` in `slots`.
    fn of(table: &ShapeTable, filled: u64, slots: std::ops::Range<usize>) -> Self {
        let mut rivals = Rivals {
            pairs: [(0, 0); Self::MOST],
            len: 0,
            all: false,
        };
        for r in slots {
            let without = filled & !(1 << r);
            for (index, source) in table.sources.iter().enumerate() {
                let Some(masks) = &source.masks else {
                    rivals.all = true;
                    return rivals;
                };
                if fits_masks(without, masks) {
                    if usize::from(rivals.len) == Self::MOST {
                        rivals.all = true;
                        return rivals;
                    }
                    rivals.pairs[usize::from(rivals.len)] = (r as u8, index as u8);
                    rivals.len += 1;
                }
            }
        }
        rivals
    }

    /// Whether one of the rivals is a fill parent of `child` (which then
    /// is not accepted from the parent that made it).
    fn any_wins(&self, table: &ShapeTable, child: &[u32], slots: std::ops::Range<usize>) -> bool {
        if self.all {
            return slots
                .into_iter()
                .any(|r| has_history_without(table, child, r));
        }
        self.pairs[..usize::from(self.len)]
            .iter()
            .any(|&(r, source)| {
                with_grid(child.len(), |grid| {
                    grid.copy_from_slice(child);
                    grid[usize::from(r)] = EMPTY;
                    source_grid_has_history(grid, &table.sources[usize::from(source)])
                })
            })
    }
}

/// The rivals of the children that fill slot `q` of a parent of shape
/// `table` whose filled slots are `parent` (a mask; the table must have at
/// most 64 slots), and the slots they are about.
pub(crate) fn fill_rivals(
    table: &ShapeTable,
    parent: u64,
    q: usize,
) -> (Rivals, std::ops::Range<usize>) {
    let child = parent | 1 << q;
    let first_empty = (!child).trailing_zeros() as usize;
    let slots = q + 1..first_empty.min(table.capacity);
    (Rivals::of(table, child, slots.clone()), slots)
}

/// Whether a fill child is accepted, given its parent's [`fill_rivals`].
#[inline]
pub(crate) fn accepts_fill_against(
    table: &ShapeTable,
    child: &[u32],
    rivals: &(Rivals, std::ops::Range<usize>),
) -> bool {
    rivals.0.none() || !rivals.0.any_wins(table, child, rivals.1.clone())
}

/// Whether a child made by reshaping through source `source` of its shape
/// (`table`) is accepted from the full grid's parent.
pub(crate) fn accepts_reshape(table: &ShapeTable, child: &[u32], source: usize) -> bool {
    if table.sources.len() == 1 {
        return true;
    }
    let slots = 0..first_empty(child);
    match &table.sources[source].masks {
        Some(masks) if !table.is_start() => {
            let rivals = Rivals::of(table, masks.footprint, slots.clone());
            rivals.none() || !rivals.any_wins(table, child, slots)
        }
        _ => !slots
            .into_iter()
            .any(|r| has_history_without(table, child, r)),
    }
}

/// Whether `slots`, of shape `table`, ends a history (see the module docs).
pub(crate) fn has_history(table: &ShapeTable, slots: &[u32]) -> bool {
    if table.is_start() {
        let filled = first_empty(slots);
        return slots[filled..].iter().all(|&slot| slot == EMPTY)
            && (filled < 3 || slots[1] < slots[2]);
    }
    table
        .sources
        .iter()
        .any(|source| has_history_through(slots, source))
}

/// Whether `slots` ends a history whose last reshaping came from `source`.
fn has_history_through(slots: &[u32], source: &Source) -> bool {
    let shape_fits = match &source.masks {
        Some(masks) => fits_masks(filled_mask(slots), masks),
        None => fits(slots, source),
    };
    shape_fits && source_grid_has_history(slots, source)
}

/// Whether the filled slots fill `source`'s footprint and a prefix of its
/// outside, by walking the positions.
fn fits(slots: &[u32], source: &Source) -> bool {
    if source
        .footprint
        .iter()
        .any(|&position| slots[usize::from(position)] == EMPTY)
    {
        return false;
    }
    let mut open = false;
    for &position in source.outside.iter() {
        let empty = slots[usize::from(position)] == EMPTY;
        if open && !empty {
            return false;
        }
        open |= empty;
    }
    true
}

/// [`fits`] for a grid of at most 64 slots, on masks of its filled slots.
#[inline]
fn fits_masks(filled: u64, masks: &SourceMasks) -> bool {
    let outside = filled & masks.outside;
    filled & masks.footprint == masks.footprint
        && masks.prefix[outside.count_ones() as usize] == outside
}

/// The filled slots of a grid of at most 64 slots, as a mask.
#[inline]
pub(crate) fn filled_mask(slots: &[u32]) -> u64 {
    slots.iter().enumerate().fold(0, |mask, (position, &slot)| {
        mask | u64::from(slot != EMPTY) << position
    })
}

/// Whether the footprint of `source` in `slots`, read back into the source
/// shape without its last slot, ends a history (and, for an up source, its
/// tokens put the new axis where `source` says).
fn source_grid_has_history(slots: &[u32], source: &Source) -> bool {
    let from = shapes().table(source.shape);
    with_grid(from.capacity, |grid| {
        for (slot, &position) in grid.iter_mut().zip(source.map.iter()) {
            *slot = slots[usize::from(position)];
        }
        let last = from.capacity - 1;
        let token = std::mem::replace(&mut grid[last], EMPTY);
        if let SourceKind::Up { axis } = source.kind {
            let k = from.dims.len();
            if axis != k - up_position(grid, k, token) {
                return false;
            }
        }
        has_history(from, grid)
    })
}

/// Whether `slots` without the token in slot `r` ends a history.
fn has_history_without(table: &ShapeTable, slots: &[u32], r: usize) -> bool {
    if !table.is_start() && table.capacity <= 64 {
        // Most candidates fail on the filled pattern alone: look at the
        // tokens only for the sources the pattern fits.
        let filled = filled_mask(slots) & !(1 << r);
        return table.sources.iter().any(|source| {
            let masks = source.masks.as_ref().expect("masks of a small shape");
            fits_masks(filled, masks)
                && with_grid(slots.len(), |grid| {
                    grid.copy_from_slice(slots);
                    grid[r] = EMPTY;
                    source_grid_has_history(grid, source)
                })
        });
    }
    with_grid(slots.len(), |grid| {
        grid.copy_from_slice(slots);
        grid[r] = EMPTY;
        has_history(table, grid)
    })
}

fn first_empty(slots: &[u32]) -> usize {
    slots
        .iter()
        .position(|&slot| slot == EMPTY)
        .unwrap_or(slots.len())
}

/// Runs `work` on a scratch grid of `len` slots.
fn with_grid<T>(len: usize, work: impl FnOnce(&mut [u32]) -> T) -> T {
    if len <= INLINE_SLOTS {
        let mut grid = [EMPTY; INLINE_SLOTS];
        work(&mut grid[..len])
    } else {
        work(&mut vec![EMPTY; len])
    }
}

/// Every local parent of a found ortho, canonical parent first (see the
/// module docs). The empty ortho, parent of the one-token orthos, is
/// included; an ortho with no history has none.
pub fn local_parents(ortho: &Ortho) -> Vec<Ortho> {
    let table = ortho.table();
    let slots = ortho.raw_slots();
    let first_empty = first_empty(slots);
    let mut parents = Vec::new();
    for r in (0..first_empty).rev() {
        if has_history_without(table, slots, r) {
            let mut parent = slots.to_vec();
            parent[r] = EMPTY;
            parents.push(from_raw(ortho, &parent));
        }
    }
    if table.is_start() && first_empty == 3 {
        parents.push(from_raw(ortho, &[slots[0], slots[2], EMPTY, EMPTY]));
    }
    let filled = slots.iter().filter(|&&slot| slot != EMPTY).count();
    for source in &table.sources {
        let exact = source.footprint.len() == filled
            && source
                .footprint
                .iter()
                .all(|&position| slots[usize::from(position)] != EMPTY);
        if !exact {
            continue;
        }
        let from = shapes().table(source.shape);
        let mut grid: Vec<u32> = source
            .map
            .iter()
            .map(|&position| slots[usize::from(position)])
            .collect();
        let token = std::mem::replace(&mut grid[from.capacity - 1], EMPTY);
        if let SourceKind::Up { axis } = source.kind {
            let k = from.dims.len();
            if axis != k - up_position(&grid, k, token) {
                continue;
            }
        }
        if has_history(from, &grid) {
            let parent =
                Ortho::from_raw(source.shape, &grid).expect("a source grid fits its shape");
            parents.push(parent);
        }
    }
    parents
}

/// The canonical parent of a found ortho: the one that accepts it.
pub fn canonical_parent(ortho: &Ortho) -> Option<Ortho> {
    local_parents(ortho).into_iter().next()
}

/// The canonical ancestors of a found ortho, its canonical parent first,
/// up to the first word it grew from. Every step up removes one filled slot.
pub fn ancestors(ortho: &Ortho) -> impl Iterator<Item = Ortho> {
    std::iter::successors(canonical_parent(ortho), canonical_parent)
}

/// Whether the found ortho `ortho` lies in the subtree of `root` (is
/// `root` or a descendant of it): whether walking up its canonical parents
/// meets `root`.
pub fn is_below(ortho: &Ortho, root: &Ortho) -> bool {
    let target = root.fullness();
    std::iter::once(ortho.clone())
        .chain(ancestors(ortho))
        .take_while(|at| at.fullness() >= target)
        .any(|at| at == *root)
}

fn from_raw(like: &Ortho, slots: &[u32]) -> Ortho {
    Ortho::from_raw(like.shape(), slots).expect("same shape, same length")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interner::Token;

    const E: i64 = -1;

    fn ortho(dims: &[usize], payload: &[i64]) -> Ortho {
        let payload: Vec<Option<Token>> = payload
            .iter()
            .map(|&t| (t >= 0).then_some(Token(t as u32)))
            .collect();
        Ortho::new(dims, &payload).unwrap()
    }

    fn history(o: &Ortho) -> bool {
        has_history(o.table(), o.raw_slots())
    }

    #[test]
    fn two_by_two_histories_are_mirror_ordered_prefixes() {
        assert!(history(&ortho(&[2, 2], &[E, E, E, E])));
        assert!(history(&ortho(&[2, 2], &[5, E, E, E])));
        assert!(!history(&ortho(&[2, 2], &[5, 9, 3, E])));
        assert!(history(&ortho(&[2, 2], &[5, 3, 9, E])));
        assert!(!history(&ortho(&[2, 2], &[5, E, 9, E])), "a hole");
    }

    #[test]
    fn a_mirrored_start_has_two_parents_and_the_unswapped_one_is_canonical() {
        let child = ortho(&[2, 2], &[10, 20, 30, E]);
        assert_eq!(
            local_parents(&child),
            vec![
                ortho(&[2, 2], &[10, 20, E, E]),
                ortho(&[2, 2], &[10, 30, E, E])
            ]
        );
        assert!(accepts_fill(child.table(), child.raw_slots(), 2, false));
        assert!(!accepts_fill(child.table(), child.raw_slots(), 2, true));
    }

    #[test]
    fn a_fresh_reshape_child_of_a_single_source_shape_has_one_parent() {
        // ORTHO.md §8: [2,2] [10,20,30,_] + 40 -> [3,2] [10,20,30,40,_,_].
        let child = ortho(&[3, 2], &[10, 20, 30, 40, E, E]);
        assert_eq!(
            local_parents(&child),
            vec![ortho(&[2, 2], &[10, 20, 30, E])]
        );
        assert!(accepts_reshape(child.table(), child.raw_slots(), 0));
    }

    #[test]
    fn an_up_child_needs_the_up_position_its_tokens_give() {
        // [2,2] [10,20,30,_] + 40 goes up at p = 2 (axis 0).
        let up = ortho(&[2, 2, 2], &[10, 20, 30, E, 40, E, E, E]);
        assert_eq!(local_parents(&up), vec![ortho(&[2, 2], &[10, 20, 30, E])]);
        // The same grid placed on axis 2 would need a token below 20.
        let misplaced = ortho(&[2, 2, 2], &[10, E, 20, 30, E, E, 40, E]);
        assert!(local_parents(&misplaced).is_empty());
        assert!(!history(&misplaced));
    }

    #[test]
    fn two_up_histories_can_meet_and_only_one_accepts() {
        // A [2,2,2] entered through axis 0 (footprint {0,1,2,4}: [10,20,30,40],
        // up position 2) and through axis 1 (footprint {0,1,3,5}:
        // [10,20,50,25], up position 1); the slots filled after each
        // reshaping, {3,5} and {2,4}, are prefixes of their outsides.
        let tokens = [10, 20, 30, 50, 40, 25, E, E];
        let meeting = ortho(&[2, 2, 2], &tokens);
        let parents = local_parents(&meeting);
        assert!(parents.len() >= 2, "{parents:?}");
        // Only the canonical parent (largest removed slot first) accepts.
        let accepted: Vec<usize> = (0..6)
            .filter(|&q| {
                let mut parent = meeting.raw_slots().to_vec();
                parent[q] = EMPTY;
                has_history(meeting.table(), &parent)
                    && first_empty(&parent) == q
                    && accepts_fill(meeting.table(), meeting.raw_slots(), q, false)
            })
            .collect();
        assert_eq!(accepted.len(), 1, "{accepted:?}");
        let mut canonical = meeting.raw_slots().to_vec();
        canonical[accepted[0]] = EMPTY;
        assert_eq!(parents[0].raw_slots(), &canonical[..]);
    }
}
