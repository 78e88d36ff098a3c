//! The generated protobuf types of `fold.v1`, and every conversion between
//! them and fold's domain types (so handlers never build wire types by hand).

use crate::error::{Error, Result};
use crate::interner::{Token, Version};
use crate::ortho::Ortho;
use crate::report::{OptimalReport, VersionReport};

/// Generated messages, client and server of `fold.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("fold.v1");
}

/// Bytes per chunk when texts are streamed, either way.
pub const TEXT_CHUNK_BYTES: usize = 1 << 20;

/// Largest gRPC message the coordinator accepts, and clients accept from it
/// (8 MiB; texts travel in 1 MiB chunks, so larger texts still work).
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// The encoded descriptor set of `fold.proto`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fold_descriptor.bin"));

/// An ortho as token ids on the wire.
pub fn tokens_of(ortho: &Ortho) -> v1::OrthoTokens {
    v1::OrthoTokens {
        dims: ortho.dims().iter().map(|&size| size as u32).collect(),
        slots: ortho
            .payload()
            .map(|slot| slot.map_or(0, |token| token.0 + 1))
            .collect(),
    }
}

/// An ortho from token ids on the wire, checked against the shape rules and
/// a vocabulary of `vocabulary` tokens.
pub fn ortho_of(tokens: &v1::OrthoTokens, vocabulary: usize) -> Result<Ortho> {
    let dims: Vec<usize> = tokens.dims.iter().map(|&size| size as usize).collect();
    let payload = tokens
        .slots
        .iter()
        .map(|&slot| match slot {
            0 => Ok(None),
            id if (id as usize) <= vocabulary => Ok(Some(Token(id - 1))),
            id => Err(Error::BadOrtho(format!(
                "token id {} outside a vocabulary of {vocabulary}",
                id - 1
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ortho::new(&dims, &payload)
}

/// Orthos from an encoded ortho list on the wire (see
/// [`crate::search::encode_ortho_list`]), checked against a vocabulary of
/// `vocabulary` tokens.
pub fn orthos_of(bytes: &[u8], vocabulary: usize) -> Result<Vec<Ortho>> {
    let orthos = crate::search::decode_ortho_list(bytes)
        .map_err(|e| Error::BadOrtho(format!("a bad ortho list: {e}")))?;
    let outside = orthos
        .iter()
        .flat_map(|ortho| ortho.payload().flatten())
        .find(|token| token.0 as usize >= vocabulary);
    match outside {
        Some(token) => Err(Error::BadOrtho(format!(
            "token id {} outside a vocabulary of {vocabulary}",
            token.0
        ))),
        None => Ok(orthos),
    }
}

impl v1::VersionState {
    /// The state of a version that is (or is not) done.
    pub fn of(done: bool) -> Self {
        if done { Self::Done } else { Self::Running }
    }

    /// Its name in fold's output: `running` or `done`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unknown",
            Self::Running => "running",
            Self::Done => "done",
        }
    }
}

impl v1::UnitState {
    /// Its name in fold's output: `pending`, `running` or `done`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unknown",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
        }
    }
}

/// A dedup mode on the wire.
pub fn dedup_of(dedup: crate::search::Dedup) -> v1::Dedup {
    match dedup {
        crate::search::Dedup::Tree => v1::Dedup::Tree,
        crate::search::Dedup::SeenSet => v1::Dedup::SeenSet,
    }
}

/// A dedup mode from the wire (an unknown value is the default, tree).
pub fn dedup_from(value: i32) -> crate::search::Dedup {
    match v1::Dedup::try_from(value) {
        Ok(v1::Dedup::SeenSet) => crate::search::Dedup::SeenSet,
        _ => crate::search::Dedup::Tree,
    }
}

/// The optimal ortho of a report, as words on the wire.
pub fn words_of(optimal: &OptimalReport) -> v1::OrthoWords {
    v1::OrthoWords {
        dims: optimal.dims.iter().map(|&size| size as u32).collect(),
        volume: optimal.volume,
        fullness: optimal.fullness as u32,
        payload: optimal
            .payload
            .iter()
            .map(|word| v1::Slot { word: word.clone() })
            .collect(),
    }
}

/// The optimal ortho of a report, from words on the wire.
pub fn optimal_of(words: &v1::OrthoWords) -> OptimalReport {
    OptimalReport {
        dims: words.dims.iter().map(|&size| size as usize).collect(),
        volume: words.volume,
        fullness: words.fullness as usize,
        payload: words.payload.iter().map(|slot| slot.word.clone()).collect(),
    }
}

/// The figures of a version status, as `run --json` reports them.
pub fn report_of(status: &v1::VersionStatus) -> VersionReport {
    VersionReport {
        version: Version::new(status.version),
        vocabulary: status.vocabulary,
        orthos: status.orthos,
        frontier: status.frontier,
        optimal: status.optimal.as_ref().map(optimal_of),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthos_round_trip_through_tokens() {
        let ortho = Ortho::new(
            &[3, 2],
            &[Some(Token(0)), Some(Token(5)), None, None, None, None],
        )
        .unwrap();
        let wire = tokens_of(&ortho);
        assert_eq!(wire.slots, vec![1, 6, 0, 0, 0, 0]);
        assert_eq!(ortho_of(&wire, 6).unwrap(), ortho);
        assert!(
            ortho_of(&wire, 5).is_err(),
            "token 5 is outside a vocabulary of 5"
        );
    }

    #[test]
    fn malformed_wire_orthos_are_errors() {
        let bad_shape = v1::OrthoTokens {
            dims: vec![2, 3],
            slots: vec![0; 6],
        };
        assert!(ortho_of(&bad_shape, 10).is_err());
        let short = v1::OrthoTokens {
            dims: vec![2, 2],
            slots: vec![1],
        };
        assert!(ortho_of(&short, 10).is_err());
    }
}
