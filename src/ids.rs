//! The ids the coordinator and its workers both name work by: units and
//! attempts. On the wire ([`crate::proto`]) and in stored formats each is a
//! bare `u64`; each side converts where it reads or builds a wire message.

use serde::{Deserialize, Serialize};

/// Identifies a unit (the same in every version); on the wire and in the
/// store it is a `u64` (serialized as the bare number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnitId(pub u64);

impl UnitId {
    /// The id `n` after this one.
    pub fn after(self, n: u64) -> Self {
        Self(self.0 + n)
    }
}

impl std::fmt::Display for UnitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies one attempt at one unit at one version: a lease of the unit
/// to one worker. Unique across restarts (the first is taken from the
/// clock); on the wire it is the `attempt` field, and stored it is the bare
/// number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttemptId(pub u64);

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stored_as_bare_numbers() {
        let json = serde_json::to_string(&(UnitId(7), AttemptId(9))).unwrap();
        assert_eq!(json, "[7,9]");
        let read: (UnitId, AttemptId) = serde_json::from_str(&json).unwrap();
        assert_eq!(read, (UnitId(7), AttemptId(9)));
    }
}
