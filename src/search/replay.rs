//! Replaying a stored history (see [`super::history`]): the search's own
//! pops and pushes, redone with the recorded children instead of computed
//! ones, so every stored ortho comes back with its record and nothing had
//! to store its payload.

use super::history::{BlockKind, BlockReader, RawRecord, decode_roots, get_varint};
use crate::error::{Error, Result};
use crate::ortho::Ortho;

/// Replays the blocks `reader` yields, calling `visit` with every record's
/// index, its ortho and the record, in the order the search expanded them.
/// Returns the number of records. The history must be complete: every run
/// ends with nothing left to expand.
pub(crate) fn replay(
    mut reader: BlockReader,
    mut visit: impl FnMut(u32, &Ortho, &RawRecord<'_>) -> Result<()>,
) -> Result<u32> {
    let path = reader.path().to_owned();
    let damaged = |at: u64, detail: String| Error::Damaged {
        path: path.clone(),
        detail: format!("at byte {at}: {detail}"),
    };
    let mut stack: Vec<Ortho> = Vec::new();
    let mut index = 0u32;
    let mut opening = true;
    let mut batch = Vec::new();
    while let Some((kind, payload, at)) = reader.next()? {
        match kind {
            BlockKind::Roots => {
                if !opening && !stack.is_empty() {
                    return Err(damaged(at, "a run starts before the last one ended".into()));
                }
                stack.extend(decode_roots(payload).map_err(|e| damaged(at, e))?);
                opening = true;
            }
            BlockKind::Batch => {
                opening = false;
                let mut bytes = payload;
                let count =
                    get_varint(&mut bytes).ok_or_else(|| damaged(at, "bad count".into()))?;
                let count = count as usize;
                if count > stack.len() {
                    return Err(damaged(
                        at,
                        format!("a batch of {count} with {} pending", stack.len()),
                    ));
                }
                batch.clear();
                batch.extend(stack.drain(stack.len() - count..));
                for ortho in &batch {
                    let (record, rest) =
                        RawRecord::split(bytes, true).map_err(|e| damaged(at, e.into()))?;
                    bytes = rest;
                    visit(index, ortho, &record)?;
                    let mut failed = None;
                    record.children(|step| match step.apply(ortho) {
                        Ok(child) => stack.push(child),
                        Err(error) => failed = Some(error),
                    });
                    if let Some(error) = failed {
                        return Err(damaged(at, error.to_string()));
                    }
                    index += 1;
                }
                if !bytes.is_empty() {
                    return Err(damaged(at, "trailing bytes in a batch".into()));
                }
            }
            BlockKind::Overrides => {
                return Err(damaged(at, "an overrides block in a history file".into()));
            }
        }
    }
    if !stack.is_empty() {
        return Err(damaged(
            reader_len_hint(&path),
            format!(
                "{} orthos recorded as found were never expanded",
                stack.len()
            ),
        ));
    }
    Ok(index)
}

/// The file's length, to point messages at its end.
fn reader_len_hint(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |meta| meta.len())
}
