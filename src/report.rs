//! The figures of one version as users see them (ORTHO.md §7): the optimal
//! ortho as words, serialised as the golden JSON object. (Rendering them as
//! text is [`crate::output`]'s.)

use serde::{Deserialize, Serialize};

use crate::interner::{Interner, Version};
use crate::search::Figures;

/// The reported figures of one version, with the optimal ortho as words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReport {
    /// The interner version searched.
    pub version: Version,
    /// Number of token ids.
    pub vocabulary: u64,
    /// Distinct orthos found, the empty one excluded.
    pub orthos: u64,
    /// Orthos found that are leaves.
    pub frontier: u64,
    /// The optimal ortho, `None` when nothing was found.
    pub optimal: Option<OptimalReport>,
}

/// The optimal ortho as words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptimalReport {
    /// Sizes of the shape.
    pub dims: Vec<usize>,
    /// Product of `size - 1`.
    pub volume: u64,
    /// Filled slots.
    pub fullness: usize,
    /// Slots in position order as words, `None` for empty slots.
    pub payload: Vec<Option<String>>,
}

impl VersionReport {
    /// The report of `figures` found over `interner`'s current version.
    pub fn new(interner: &Interner, figures: &Figures) -> Self {
        Self::from_words(interner.version(), interner.words(), figures)
    }

    /// The report of `figures` found over version `version`, whose words are
    /// `words` in token-id order.
    pub fn from_words(version: Version, words: &[String], figures: &Figures) -> Self {
        Self {
            version,
            vocabulary: words.len() as u64,
            orthos: figures.orthos,
            frontier: figures.frontier,
            optimal: figures.optimal.as_ref().map(|ortho| OptimalReport {
                dims: ortho.dims().to_vec(),
                volume: ortho.volume(),
                fullness: ortho.fullness(),
                payload: ortho
                    .payload()
                    .map(|slot| slot.and_then(|token| words.get(token.0 as usize).cloned()))
                    .collect(),
            }),
        }
    }

    /// The report as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report always serialises")
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_golden_keys_and_nulls() {
        let report = VersionReport {
            version: Version::FIRST,
            vocabulary: 0,
            orthos: 0,
            frontier: 0,
            optimal: None,
        };
        assert_eq!(
            report.to_json_line(),
            r#"{"version":1,"vocabulary":0,"orthos":0,"frontier":0,"optimal":null}"#
        );
    }
}
