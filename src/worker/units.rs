//! The units a worker keeps: for each unit it searched (and kept, when
//! large enough), the exploration of that unit (every ortho found, see
//! [`Exploration`]) and a small record of what it is complete for.
//!
//! The next version of a kept unit is searched incrementally, but only when
//! the coordinator says so: it names the version whose searched orthos the
//! worker may bring up to date, and that version's counted attempt must be
//! the one that made them (an attempt that lost its lease may have left
//! orthos another attempt's split made wrong). A kept unit is also only
//! reused for texts that extend the very texts it was searched on (compared
//! by content hash), so a data dir carried to another coordinator is
//! discarded rather than trusted.
//!
//! Kept units are a cache (any unit can be searched again from scratch), so
//! they are written without waiting for the disk: a killed worker's writes
//! survive it, and a record is replaced by an atomic rename.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{AttemptId, UnitId};
use crate::interner::Version;
use crate::search::{Exploration, Manifest, Scope};

/// Name of the record beside a unit's exploration.
const RECORD: &str = "unit.json";

/// What a kept unit is complete for.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct UnitRecord {
    unit: UnitId,
    /// The attempt that searched it.
    attempt: AttemptId,
    /// Content hashes of the texts of versions 1..=manifest.version.
    #[serde(rename = "texts")]
    text_hashes: Vec<String>,
    manifest: Manifest,
}

/// A record as stored: the record and a CRC-32 of its JSON form, so that a
/// damaged figure (which would still parse) is caught, not counted.
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    crc32: u32,
    record: UnitRecord,
}

impl UnitRecord {
    fn checksum(&self) -> u32 {
        crc32fast::hash(&serde_json::to_vec(self).expect("records serialise"))
    }
}

/// An exploration ready for a unit's search.
pub struct UnitSearch {
    /// The exploration to advance.
    pub exploration: Exploration,
    /// The version it starts from (0: from scratch).
    pub base_version: Version,
    /// Whether it is a kept unit (or may become one once searched).
    kept: bool,
}

/// The kept units under one directory.
pub struct UnitStore {
    dir: PathBuf,
    scratch: PathBuf,
    keep_from: u64,
}

impl UnitStore {
    /// Kept units live in `dir`; one-off searches go under `scratch`. A
    /// unit searched from scratch is kept if it has at least `keep_from`
    /// orthos: smaller ones cost less to search again than to store.
    pub fn new(dir: PathBuf, scratch: PathBuf, keep_from: u64) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        Ok(Self {
            dir,
            scratch,
            keep_from,
        })
    }

    fn unit_dir(&self, unit: UnitId) -> PathBuf {
        self.dir.join(unit.to_string())
    }

    /// Every kept unit: (unit, version, attempt).
    pub fn kept(&self) -> Vec<(UnitId, Version, AttemptId)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| read_record(&entry.path()).ok())
            .map(|record| (record.unit, record.manifest.version, record.attempt))
            .collect()
    }

    /// The exploration to search `unit` at version `text_hashes.len()` with: the
    /// kept one when the coordinator allows bringing it up from
    /// `base_version` and it is complete for exactly that version of these
    /// texts; otherwise a temporary one over `scope`, kept afterwards if it is
    /// large enough. Whatever is kept for the unit and not used is discarded.
    pub fn open(
        &self,
        unit: UnitId,
        scope: Scope,
        text_hashes: &[String],
        base_version: Version,
    ) -> Result<UnitSearch> {
        let dir = self.unit_dir(unit);
        if base_version > Version::ZERO
            && let Some(record) = usable_record(&dir, unit)
            && record.unit == unit
            && record.manifest.version == base_version
            && record.text_hashes.len() as u32 == base_version.get()
            && text_hashes.starts_with(&record.text_hashes)
        {
            match Exploration::open(&dir, scope.clone(), record.manifest) {
                Ok(mut exploration) => {
                    exploration.set_durable(false);
                    // The record no longer describes the history once it
                    // grows; it is written again when the search is done.
                    remove_record(&dir)?;
                    return Ok(UnitSearch {
                        exploration,
                        base_version,
                        kept: true,
                    });
                }
                Err(error) => {
                    tracing::warn!(%unit, %error, "kept unit is unusable; searching afresh");
                }
            }
        }
        // Whatever is there is of no use: discard it.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("cannot remove {}", dir.display()), e))?;
        }
        Ok(UnitSearch {
            exploration: Exploration::temporary(&self.scratch, scope)?,
            base_version: Version::ZERO,
            kept: false,
        })
    }

    /// After `search` brought `unit` up to `text_hashes` in `attempt`, keeps it if
    /// it is a kept unit or large enough to become one. Returns whether it
    /// is kept.
    pub fn keep(
        &self,
        unit: UnitId,
        attempt: AttemptId,
        text_hashes: &[String],
        search: &mut UnitSearch,
    ) -> Result<bool> {
        let dir = self.unit_dir(unit);
        let exploration = &mut search.exploration;
        if !search.kept {
            if exploration.manifest().orthos() < self.keep_from {
                return Ok(false);
            }
            exploration.persist(&dir)?;
            search.kept = true;
        }
        let compacted = exploration.wants_compaction();
        if compacted {
            exploration.compact()?;
        }
        let record = UnitRecord {
            unit,
            attempt,
            text_hashes: text_hashes.to_vec(),
            manifest: exploration.manifest().clone(),
        };
        let stored = StoredRecord {
            crc32: record.checksum(),
            record,
        };
        let json = serde_json::to_vec(&stored).expect("records serialise");
        let temporary = dir.join(format!("{RECORD}.new"));
        let fail = |e| Error::io(format!("cannot write {}", temporary.display()), e);
        let file = std::fs::File::create(&temporary).map_err(fail)?;
        std::io::Write::write_all(&mut &file, &json).map_err(fail)?;
        std::fs::rename(&temporary, dir.join(RECORD)).map_err(fail)?;
        if compacted {
            exploration.remove_stale_files()?;
        }
        Ok(true)
    }
}

/// The record of a kept unit, if there is one that is not damaged (a
/// damaged one is said in a warning: the unit is searched afresh).
fn usable_record(dir: &Path, unit: UnitId) -> Option<UnitRecord> {
    match read_record(dir) {
        Ok(record) => Some(record),
        Err(error @ Error::Damaged { .. }) => {
            tracing::warn!(%unit, %error, "kept unit is unusable; searching afresh");
            None
        }
        Err(_) => None,
    }
}

fn read_record(dir: &Path) -> Result<UnitRecord> {
    let path = dir.join(RECORD);
    crate::storage::refuse_special_as_damaged(&path)?;
    let bytes = std::fs::read(&path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let damaged = |detail: String| Error::Damaged {
        path: path.clone(),
        detail,
    };
    let stored: StoredRecord =
        serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if stored.record.checksum() != stored.crc32 {
        return Err(damaged("checksum mismatch".into()));
    }
    Ok(stored.record)
}

fn remove_record(dir: &Path) -> Result<()> {
    let path = dir.join(RECORD);
    std::fs::remove_file(&path)
        .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))
}
