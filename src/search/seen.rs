//! The concurrent set of ortho ids found so far.
//!
//! Ids are already well-mixed 64-bit hashes, so the set is a plain
//! open-addressing table of `u64`s, split into shards by the top bits of the
//! id, each behind its own lock. Inserting into a table much larger than the
//! caches costs a memory stall per id; [`SeenSet::prefetch`] lets the caller
//! start that load early and do other work while it arrives.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::ortho::OrthoId;

/// log2 of the number of shards.
const SHARD_BITS: u32 = 6;

/// Slots of a shard's table when the set is new.
const INITIAL_SLOTS: usize = 64;

/// The ids of every ortho found, shared by the threads of a batch.
pub struct SeenSet {
    shards: Box<[Shard]>,
}

struct Shard {
    table: Mutex<IdTable>,
    /// Address and index mask of the table's slots, readable without the
    /// lock; used only to compute prefetch addresses, which may be stale.
    slots_at: AtomicUsize,
    mask: AtomicUsize,
}

/// Linear-probing table; 0 marks an empty slot, so id 0 is kept aside.
struct IdTable {
    slots: Vec<u64>,
    len: usize,
    has_zero: bool,
}

impl Default for SeenSet {
    fn default() -> Self {
        Self::new()
    }
}

impl SeenSet {
    /// An empty set.
    pub fn new() -> Self {
        let shards = (0..1usize << SHARD_BITS)
            .map(|_| {
                let table = IdTable {
                    slots: vec![0; INITIAL_SLOTS],
                    len: 0,
                    has_zero: false,
                };
                Shard {
                    slots_at: AtomicUsize::new(table.slots.as_ptr() as usize),
                    mask: AtomicUsize::new(INITIAL_SLOTS - 1),
                    table: Mutex::new(table),
                }
            })
            .collect();
        Self { shards }
    }

    #[inline]
    fn shard(&self, id: OrthoId) -> &Shard {
        &self.shards[(id >> (64 - SHARD_BITS)) as usize]
    }

    /// Starts loading the cache line where `id` would be stored.
    #[inline]
    pub fn prefetch(&self, id: OrthoId) {
        #[cfg(target_arch = "x86_64")]
        {
            let shard = self.shard(id);
            let base = shard.slots_at.load(Ordering::Relaxed);
            let mask = shard.mask.load(Ordering::Relaxed);
            let address = base.wrapping_add((id as usize & mask) * 8);
            // SAFETY: a prefetch is only a hint; it never faults and never
            // dereferences, whatever the address (a stale one is harmless).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    address as *const i8,
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// Records `id`; returns whether it was new.
    #[inline]
    pub fn insert(&self, id: OrthoId) -> bool {
        let shard = self.shard(id);
        let mut table = shard
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let inserted = table.insert(id);
        if inserted && table.len * 4 > table.slots.len() * 3 {
            table.grow();
            shard
                .slots_at
                .store(table.slots.as_ptr() as usize, Ordering::Relaxed);
            shard.mask.store(table.slots.len() - 1, Ordering::Relaxed);
        }
        inserted
    }

    /// Whether `id` was found.
    pub fn contains(&self, id: OrthoId) -> bool {
        let table = self
            .shard(id)
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        table.contains(id)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.table.lock().unwrap_or_else(|p| p.into_inner()).len)
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the tables.
    pub fn approx_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .slots
                    .len() as u64
                    * 8
            })
            .sum()
    }

    /// Consumes the set, yielding every id.
    pub fn into_ids(self) -> impl Iterator<Item = OrthoId> {
        self.shards.into_vec().into_iter().flat_map(|shard| {
            let table = shard.table.into_inner().unwrap_or_else(|p| p.into_inner());
            let zero = table.has_zero.then_some(0);
            table.slots.into_iter().filter(|&id| id != 0).chain(zero)
        })
    }
}

impl IdTable {
    #[inline]
    fn insert(&mut self, id: u64) -> bool {
        if id == 0 {
            let new = !self.has_zero;
            self.has_zero = true;
            self.len += usize::from(new);
            return new;
        }
        let mask = self.slots.len() - 1;
        let mut index = id as usize & mask;
        loop {
            match self.slots[index] {
                0 => {
                    self.slots[index] = id;
                    self.len += 1;
                    return true;
                }
                slot if slot == id => return false,
                _ => index = (index + 1) & mask,
            }
        }
    }

    fn contains(&self, id: u64) -> bool {
        if id == 0 {
            return self.has_zero;
        }
        let mask = self.slots.len() - 1;
        let mut index = id as usize & mask;
        loop {
            match self.slots[index] {
                0 => return false,
                slot if slot == id => return true,
                _ => index = (index + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let doubled = vec![0; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        let mask = self.slots.len() - 1;
        for id in old.into_iter().filter(|&id| id != 0) {
            let mut index = id as usize & mask;
            while self.slots[index] != 0 {
                index = (index + 1) & mask;
            }
            self.slots[index] = id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_report_newness_across_growth() {
        let set = SeenSet::new();
        let ids: Vec<u64> = (0..50_000u64)
            .map(|n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for &id in &ids {
            set.prefetch(id);
            assert!(set.insert(id), "{id} is new");
        }
        for &id in &ids {
            assert!(!set.insert(id), "{id} was seen");
            assert!(set.contains(id));
        }
        assert!(!set.contains(12345));
        assert_eq!(set.len(), ids.len());
        let mut back: Vec<u64> = set.into_ids().collect();
        back.sort_unstable();
        let mut expected = ids;
        expected.sort_unstable();
        assert_eq!(back, expected);
    }

    #[test]
    fn id_zero_is_an_ordinary_member() {
        let set = SeenSet::new();
        assert!(!set.contains(0));
        assert!(set.insert(0));
        assert!(!set.insert(0));
        assert_eq!(set.len(), 1);
        assert_eq!(set.into_ids().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn concurrent_inserts_count_each_id_once() {
        let set = SeenSet::new();
        let new: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..20_000u64)
                            .filter(|n| set.insert(n.wrapping_mul(0xD6E8_FEB8_6659_FD93)))
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(new, 20_000);
        assert_eq!(set.len(), 20_000);
    }
}
