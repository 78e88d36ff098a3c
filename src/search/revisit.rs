//! Phase 2 of a new version (see [`super::exploration`]): the stored
//! history is replayed, and every stored ortho whose candidates may have
//! grown is expanded again.
//!
//! Three filters, cheapest first, keep a million records from costing a
//! million expansions: a record is dismissed undecoded unless one of its
//! watched phrase nodes changed since the stored version; then unless a
//! node gained a token that all its other watched nodes also complete with
//! ([`Watch::may_have_gained`]); the few left are expanded again, keeping
//! only children of candidates that are new (ORTHO.md §6).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::batch::Batches;
use super::history::{BlockReader, RawRecord, RecordAt, segment_paths};
use super::manifest::SegmentExtent;
use super::replay::replay;
use crate::error::{Error, Result};
use crate::interner::{Growth, Interner, PhraseNode};
use crate::ortho::{Expansion, Ortho, Watch};

/// An exploration's stored history, as the scan reads it.
pub(super) struct StoredHistory<'a> {
    pub dir: &'a Path,
    pub generation: u32,
    pub segments: &'a [SegmentExtent],
    /// Per segment, the current expansion of its orthos expanded again since.
    pub overrides: &'a [BTreeMap<u32, Expansion>],
}

impl StoredHistory<'_> {
    /// The files of `segment`.
    pub fn paths(&self, segment: u32) -> [PathBuf; 2] {
        segment_paths(self.dir, self.generation, segment)
    }
}

/// Replays every segment of `stored`, expands again the stored orthos whose
/// candidates may have grown since `base`, and adds the children of their
/// new candidates to `roots`. Returns their new expansions, to be recorded
/// as overrides.
pub(super) fn revisit(
    stored: &StoredHistory<'_>,
    batches: &mut Batches<'_>,
    base: u32,
    roots: &mut Vec<Ortho>,
) -> Result<Vec<(RecordAt, Expansion)>> {
    let interner = batches.interner;
    let growth = interner.growth_since(base);
    let batch_size = batches.batch_size.max(1);
    let mut pending: Vec<(RecordAt, Ortho, bool)> = Vec::new();
    let mut changed = Vec::new();
    let mut memo = GainMemo::default();
    for (segment, extent) in stored.segments.iter().enumerate() {
        let [path, _] = stored.paths(segment as u32);
        let reader = BlockReader::open(&path, extent.history_bytes)?;
        // Overrides in record order, met with a cursor as records pass.
        let known: Vec<(u32, Expansion)> = stored
            .overrides
            .get(segment)
            .into_iter()
            .flatten()
            .map(|(&index, &expansion)| (index, expansion))
            .collect();
        let mut next_known = 0;
        // The expansion the filter found wanting, for the visit after it.
        let current = std::cell::Cell::new(Expansion::default());
        let wanted = |index: u32, record: &RawRecord<'_>| {
            let mut overridden = None;
            if next_known < known.len() && known[next_known].0 <= index {
                while next_known < known.len() && known[next_known].0 < index {
                    next_known += 1;
                }
                if next_known < known.len() && known[next_known].0 == index {
                    overridden = Some(known[next_known].1);
                }
            }
            let expansion = match overridden {
                Some(overridden) => overridden,
                // Nearly every ortho is dismissed here, its record undecoded.
                None if !record
                    .nodes()
                    .any(|node| interner.grew_since(PhraseNode(node), base)) =>
                {
                    return false;
                }
                None => record.expansion(),
            };
            current.set(expansion);
            memo.may_have_gained(&expansion.watch, interner, base, &growth)
        };
        let records = replay(reader, wanted, |replayed| {
            let index = replayed.index;
            let at = RecordAt {
                segment: segment as u32,
                index,
            };
            let ortho = replayed.ortho().map_err(|detail| Error::Damaged {
                path: path.clone(),
                detail: format!("record {index}: {detail}"),
            })?;
            pending.push((at, ortho, current.get().leaf));
            if pending.len() >= batch_size {
                revisit_batch(batches, base, &mut pending, roots, &mut changed)?;
            }
            Ok(())
        })?;
        if u64::from(records) != extent.records {
            return Err(Error::Damaged {
                path,
                detail: format!(
                    "holds {records} records but {} were recorded",
                    extent.records
                ),
            });
        }
        batches.stats.scanned += u64::from(records);
    }
    revisit_batch(batches, base, &mut pending, roots, &mut changed)?;
    Ok(changed)
}

/// Remembers [`Watch::may_have_gained`] for watches of two nodes, which
/// siblings share: a scan asks it of a few hundred thousand records and
/// meets the same pairs again and again.
struct GainMemo {
    slots: Vec<(u32, u32, bool)>,
}

impl Default for GainMemo {
    fn default() -> Self {
        Self {
            slots: vec![(u32::MAX, u32::MAX, false); Self::SLOTS],
        }
    }
}

impl GainMemo {
    const SLOTS: usize = 1 << 14;

    fn may_have_gained(
        &mut self,
        watch: &Watch,
        interner: &Interner,
        base: u32,
        growth: &Growth,
    ) -> bool {
        let &[a, b] = watch.nodes() else {
            return watch.may_have_gained(interner, base, growth);
        };
        let hash = (u64::from(a) << 32 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = &mut self.slots[(hash >> 50) as usize];
        if (slot.0, slot.1) != (a, b) {
            *slot = (a, b, watch.may_have_gained(interner, base, growth));
        }
        slot.2
    }
}

/// Expands the stored orthos in `pending` again, keeping the children of
/// their new candidates as new roots and their new expansions.
fn revisit_batch(
    batches: &mut Batches<'_>,
    base: u32,
    pending: &mut Vec<(RecordAt, Ortho, bool)>,
    roots: &mut Vec<Ortho>,
    changed: &mut Vec<(RecordAt, Expansion)>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let orthos: Vec<Ortho> = pending.iter().map(|(_, ortho, _)| ortho.clone()).collect();
    let mut expanded = batches.expand(&orthos, base, false)?;
    batches.stats.revisited += orthos.len() as u64;
    for ((at, _, was_leaf), expansion) in pending.drain(..).zip(&expanded.expansions) {
        // Candidates only grow, so a leaf may stop being one but never the
        // other way round.
        if was_leaf && !expansion.leaf {
            batches.figures.frontier =
                batches.figures.frontier.checked_sub(1).ok_or_else(|| {
                    Error::Inconsistent("stored leaves do not add up to the frontier".into())
                })?;
        }
        changed.push((at, *expansion));
    }
    for part in expanded.children.iter_mut() {
        roots.append(part);
    }
    Ok(())
}
