//! The concurrent set of ortho ids found so far.

use std::hash::{BuildHasherDefault, Hasher};

use dashmap::DashSet;

use crate::ortho::OrthoId;

/// Ortho ids are already well-mixed hashes, so the set uses them as they are.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// The ids of every ortho found, shared by the threads of a batch.
#[derive(Default)]
pub struct SeenSet {
    ids: DashSet<OrthoId, BuildHasherDefault<IdHasher>>,
}

impl SeenSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `id`; returns whether it was new.
    #[inline]
    pub fn insert(&self, id: OrthoId) -> bool {
        self.ids.insert(id)
    }

    /// Whether `id` was found.
    pub fn contains(&self, id: OrthoId) -> bool {
        self.ids.contains(&id)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Consumes the set, yielding every id.
    pub fn into_ids(self) -> impl Iterator<Item = OrthoId> {
        self.ids.into_iter()
    }
}
