//! The version number: which texts an interner, a search or a unit is at.

use serde::{Deserialize, Serialize};

/// A version: the number of texts ingested, so version `n` is the state
/// after the `n`th text. Version 0 ([`Version::ZERO`]) is before any text,
/// and as the base of a search it means "from scratch". On the wire and in
/// stored formats it is a `u32` (serialized as the bare number).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(u32);

impl Version {
    /// Before any text.
    pub const ZERO: Self = Self(0);

    /// The version of the first text.
    pub const FIRST: Self = Self(1);

    /// The version numbered `number` (as the wire and the store carry it).
    pub const fn new(number: u32) -> Self {
        Self(number)
    }

    /// Its number, as the wire and the store carry it.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The version of the next text.
    ///
    /// # Panics
    ///
    /// Past `u32::MAX` versions (four billion texts), rather than wrapping
    /// around to version 0.
    pub fn next(self) -> Self {
        Self(self.0.checked_add(1).expect("fewer than 2^32 versions"))
    }

    /// The version before this one (none before version 0).
    pub fn previous(self) -> Option<Self> {
        self.0.checked_sub(1).map(Self)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_serialize_as_bare_numbers() {
        let json = serde_json::to_string(&Version::new(7)).unwrap();
        assert_eq!(json, "7");
        assert_eq!(
            serde_json::from_str::<Version>("7").unwrap(),
            Version::new(7)
        );
    }

    #[test]
    fn versions_count_up_from_zero() {
        assert_eq!(Version::default(), Version::ZERO);
        assert_eq!(Version::ZERO.next(), Version::FIRST);
        assert_eq!(Version::FIRST.previous(), Some(Version::ZERO));
        assert_eq!(Version::ZERO.previous(), None);
        assert!(Version::FIRST < Version::new(2));
        assert_eq!(Version::new(12).to_string(), "12");
    }
}
