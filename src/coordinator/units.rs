//! Units of work: the subtrees a version's search is split into.
//!
//! Every ortho has exactly one canonical parent (see [`crate::canonical`]),
//! so the orthos below any ortho form a closed, disjoint part of the search.
//! A unit is a set of such subtrees: its roots, less the subtrees of some of
//! their descendants that were handed to other units (its exclusions). The
//! units of a version partition its search, so their figures add up.
//!
//! Units are stable across versions: a unit's subtrees only grow as texts
//! are added, so every unit is searched (or brought up to date) again in
//! each later version, and new first words make new units. A running unit is
//! split by stopping it: its figures so far become final and the orthos it
//! had found but not expanded become the roots of new units, which the unit
//! excludes from then on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::canonical;
use crate::error::{Error, Result};
use crate::ids::UnitId;
use crate::interner::Version;
use crate::ortho::Ortho;
use crate::search::{decode_ortho_list, encode_ortho_list};

/// What a unit covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitDef {
    /// Its id.
    pub id: UnitId,
    /// The version it was created in.
    pub created: Version,
    /// The unit it was split from (0: a unit of new first words).
    pub parent: UnitId,
    /// Its subtree roots.
    pub roots: Vec<Ortho>,
    /// Orthos below the roots whose subtrees belong to other units.
    pub excluded: Vec<Ortho>,
}

impl UnitDef {
    /// The definitions of units made of `parts` (lists of roots) split off
    /// this one, numbered from `first_id`. Each keeps the exclusions that lie
    /// below its roots: a root can be an ancestor of an earlier exclusion
    /// (one split off when the unit was searched in an earlier version, or by
    /// an attempt that was lost). Each exclusion's ancestors are looked up
    /// among the roots, so the cost is linear in the exclusions.
    pub fn split(
        &self,
        parts: Vec<Vec<Ortho>>,
        version: Version,
        first_id: UnitId,
    ) -> Vec<UnitDef> {
        let owner: HashMap<&Ortho, usize> = parts
            .iter()
            .enumerate()
            .flat_map(|(index, roots)| roots.iter().map(move |root| (root, index)))
            .collect();
        let shallowest = owner.keys().map(|root| root.fullness()).min().unwrap_or(0);
        // Slot 0 (the first word) never changes below a root: a cheap first test.
        let first_words: HashSet<u32> = owner.keys().map(|root| root.raw_slots()[0]).collect();
        let mut excluded = vec![Vec::new(); parts.len()];
        for ortho in &self.excluded {
            if !first_words.contains(&ortho.raw_slots()[0]) {
                continue;
            }
            let part = std::iter::once(ortho.clone())
                .chain(canonical::ancestors(ortho))
                .take_while(|at| at.fullness() >= shallowest)
                .find_map(|at| owner.get(&at).copied());
            if let Some(part) = part {
                excluded[part].push(ortho.clone());
            }
        }
        (first_id.0..)
            .map(UnitId)
            .zip(parts)
            .zip(excluded)
            .map(|((id, roots), excluded)| UnitDef {
                id,
                created: version,
                parent: self.id,
                roots,
                excluded,
            })
            .collect()
    }

    /// The stored form: id, created, parent, then the roots and exclusions
    /// as ortho lists.
    pub fn encode(&self) -> Vec<u8> {
        let roots = encode_ortho_list(&self.roots);
        let excluded = encode_ortho_list(&self.excluded);
        let mut bytes = Vec::with_capacity(24 + roots.len() + excluded.len());
        bytes.extend_from_slice(&self.id.0.to_le_bytes());
        bytes.extend_from_slice(&self.created.get().to_le_bytes());
        bytes.extend_from_slice(&self.parent.0.to_le_bytes());
        bytes.extend_from_slice(&(roots.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&roots);
        bytes.extend_from_slice(&excluded);
        bytes
    }

    /// A unit from [`UnitDef::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| Error::Inconsistent(format!("bad unit record: {what}"));
        let (head, rest) = bytes.split_at_checked(24).ok_or_else(|| bad("too short"))?;
        let id = UnitId(u64::from_le_bytes(head[..8].try_into().expect("8 bytes")));
        let created = Version::new(u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")));
        let parent = UnitId(u64::from_le_bytes(
            head[12..20].try_into().expect("8 bytes"),
        ));
        let roots_len = u32::from_le_bytes(head[20..24].try_into().expect("4 bytes")) as usize;
        let (roots, excluded) = rest
            .split_at_checked(roots_len)
            .ok_or_else(|| bad("roots run past the end"))?;
        Ok(Self {
            id,
            created,
            parent,
            roots: decode_ortho_list(roots).map_err(|e| bad(&e))?,
            excluded: decode_ortho_list(excluded).map_err(|e| bad(&e))?,
        })
    }
}

/// A unit as the ledger holds it: its definition and its wire forms, made
/// once and shared by every assignment.
#[derive(Clone, Debug)]
pub struct Unit {
    /// What it covers.
    pub def: UnitDef,
    /// Its roots as an ortho list.
    pub roots_wire: Arc<Vec<u8>>,
    /// Its exclusions as an ortho list.
    pub excluded_wire: Arc<Vec<u8>>,
}

impl Unit {
    /// A unit of `def`.
    pub fn new(def: UnitDef) -> Self {
        Self {
            roots_wire: Arc::new(encode_ortho_list(&def.roots)),
            excluded_wire: Arc::new(encode_ortho_list(&def.excluded)),
            def,
        }
    }

    /// Excludes `handed_off` from now on.
    pub fn exclude(&mut self, handed_off: impl IntoIterator<Item = Ortho>) {
        self.def.excluded.extend(handed_off);
        self.excluded_wire = Arc::new(encode_ortho_list(&self.def.excluded));
    }
}

/// Groups new first words into `groups` units of about equal expected size:
/// tokens by decreasing weight, dealt round-robin.
pub fn deal_roots(tokens: &[(u32, u32)], groups: usize) -> Vec<Vec<Ortho>> {
    let mut tokens = tokens.to_vec();
    tokens.sort_by_key(|&(token, weight)| (std::cmp::Reverse(weight), token));
    let groups = groups.clamp(1, tokens.len().max(1));
    let mut dealt = vec![Vec::new(); groups];
    for (index, (token, _)) in tokens.into_iter().enumerate() {
        dealt[index % groups].push(first_word(token));
    }
    dealt.retain(|group| !group.is_empty());
    dealt
}

/// The ortho `[token, _, _, _]`: a first word.
pub fn first_word(token: u32) -> Ortho {
    Ortho::new(
        &[2, 2],
        &[Some(crate::interner::Token(token)), None, None, None],
    )
    .expect("a start ortho")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_records_round_trip() {
        let def = UnitDef {
            id: UnitId(7),
            created: Version::new(3),
            parent: UnitId(2),
            roots: vec![first_word(4), first_word(9)],
            excluded: vec![first_word(1)],
        };
        assert_eq!(UnitDef::decode(&def.encode()).unwrap(), def);
        assert!(UnitDef::decode(&def.encode()[..20]).is_err());
        let mut damaged = def.encode();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(UnitDef::decode(&damaged).is_err());
    }

    #[test]
    fn first_words_are_dealt_by_weight() {
        let dealt = deal_roots(&[(0, 1), (1, 9), (2, 5), (3, 7)], 2);
        let tokens: Vec<Vec<u32>> = dealt
            .iter()
            .map(|group| group.iter().map(|o| o.raw_slots()[0]).collect())
            .collect();
        assert_eq!(tokens, vec![vec![1, 2], vec![3, 0]]);
        assert_eq!(deal_roots(&[(5, 0)], 8).len(), 1);
        assert!(deal_roots(&[], 8).is_empty());
    }
}
