//! The figures of one version as users see them (ORTHO.md §7): one JSON
//! object, or a human-readable summary with the optimal ortho drawn as a grid.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::interner::Interner;
use crate::search::Figures;
use crate::spatial::{coordinates_in_position_order, flatten, unflatten};

/// The reported figures of one version, with the optimal ortho as words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReport {
    /// The interner version searched.
    pub version: u32,
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
    pub fn from_words(version: u32, words: &[String], figures: &Figures) -> Self {
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

    /// A human-readable summary: the figures, then the optimal ortho as a grid.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "version {}: vocabulary {}, orthos {}, frontier {}\n",
            self.version, self.vocabulary, self.orthos, self.frontier
        );
        match &self.optimal {
            None => out.push_str("optimal: none\n"),
            Some(optimal) => {
                let _ = writeln!(
                    out,
                    "optimal: dims {:?}, volume {}, fullness {}",
                    optimal.dims, optimal.volume, optimal.fullness
                );
                out.push_str(&optimal.grid());
            }
        }
        out
    }
}

impl OptimalReport {
    /// The payload laid out as rows (axis 0) and columns (axis 1), one grid
    /// per combination of the remaining axes. Empty slots show as `·`.
    pub fn grid(&self) -> String {
        let capacity: usize = self.dims.iter().product();
        if self.dims.len() < 2 || self.payload.len() != capacity {
            // Not a grid (only a broken peer could send this): show the slots as they are.
            return format!("  {:?}\n", self.payload);
        }
        let positions = coordinates_in_position_order(&self.dims);
        let mut cells = vec![""; self.payload.len()];
        for (position, coord) in positions.iter().enumerate() {
            cells[flatten(&self.dims, coord)] = self.payload[position].as_deref().unwrap_or("·");
        }
        let width = cells
            .iter()
            .map(|cell| cell.chars().count())
            .max()
            .unwrap_or(1);
        let (rows, cols) = (self.dims[0], self.dims[1]);
        let slice = rows * cols;
        let slices = self.payload.len() / slice;
        let mut out = String::new();
        for index in 0..slices {
            if slices > 1 {
                let rest = unflatten(&self.dims[2..], index);
                let label: Vec<String> = rest.iter().map(usize::to_string).collect();
                let _ = writeln!(out, "  slice [*, *, {}]:", label.join(", "));
            }
            for row in 0..rows {
                let line: Vec<String> = (0..cols)
                    .map(|col| format!("{:<width$}", cells[(row * cols + col) * slices + index]))
                    .collect();
                let _ = writeln!(out, "  {}", line.join("  ").trim_end());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(dims: &[usize], payload: &[Option<&str>]) -> OptimalReport {
        OptimalReport {
            dims: dims.to_vec(),
            volume: 0,
            fullness: 0,
            payload: payload.iter().map(|w| w.map(str::to_owned)).collect(),
        }
    }

    #[test]
    fn two_dimensional_grid_has_rows_along_axis_zero() {
        let grid = report(
            &[3, 2],
            &[
                Some("one"),
                Some("three"),
                Some("two"),
                Some("four"),
                None,
                None,
            ],
        )
        .grid();
        assert_eq!(grid, "  one    three\n  two    four\n  ·      ·\n");
    }

    #[test]
    fn three_dimensional_grid_prints_one_slice_per_extra_coordinate() {
        let words = ["a", "b", "c", "e", "d", "f", "g", "h"];
        let payload: Vec<Option<&str>> = words.iter().map(|w| Some(*w)).collect();
        let grid = report(&[2, 2, 2], &payload).grid();
        // Position order of [2,2,2]: 000 001 010 100 011 101 110 111.
        assert_eq!(
            grid,
            "  slice [*, *, 0]:\n  a  c\n  e  g\n  slice [*, *, 1]:\n  b  d\n  f  h\n"
        );
    }

    #[test]
    fn json_has_the_golden_keys_and_nulls() {
        let report = VersionReport {
            version: 1,
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
