//! The coordinator's durable state, in one redb file under the state dir:
//! submitted texts, units (what each covers, as it is now) and the results
//! counted for each unit at each version.
//!
//! A text is committed, with the units of its new first words, before its
//! submission is acknowledged. Splits (the new units and the exclusions they
//! add) and results are committed in groups, in the order they happened, so
//! a unit's result is never stored before the split that made the unit. A
//! change lost in a crash only means a unit is searched again after the
//! restart (without the lost splits, which its new attempt makes anew),
//! never that anything is counted twice.

use std::path::Path;

use prost::Message;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::coordinator::ledger::{CountedResult, UnitResult};
use crate::coordinator::units::UnitDef;
use crate::error::{Error, Result};
use crate::ids::{AttemptId, UnitId};
use crate::interner::Version;
use crate::proto::{self, v1};
use crate::search::Dedup;
use crate::storage::{self, CHECKS, Db, META, TxnResult, damage};

/// Name of the database file inside the state dir.
pub const COORDINATOR_FILE: &str = "coordinator.redb";

/// Format 1 kept one result per origin shard; format 2 keeps units.
const FORMAT: &str = "fold-coordinator/2";

/// What the file should be, for open errors.
const WHAT: &str = "a fold coordinator file";

const TEXTS: TableDefinition<u32, &[u8]> = TableDefinition::new("texts");
const SOURCES: TableDefinition<u32, &str> = TableDefinition::new("sources");
const UNITS: TableDefinition<u64, &[u8]> = TableDefinition::new("units");
const RESULTS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("results");

/// One stored version.
pub struct StoredVersion {
    /// The name it was submitted with.
    pub source: String,
    /// Its text.
    pub text: String,
}

/// Everything a coordinator stored.
pub struct Stored {
    /// Its versions, in order.
    pub versions: Vec<StoredVersion>,
    /// Its units, as they are now.
    pub units: Vec<UnitDef>,
    /// Counted results: (version, unit, encoded result).
    pub results: Vec<(Version, UnitId, Vec<u8>)>,
}

/// What a group of finished units changes in the store.
#[derive(Clone, Debug)]
pub enum Change {
    /// A unit was created or now excludes more.
    Unit(UnitDef),
    /// A unit's result at a version was counted.
    Result(Version, UnitId, CountedResult),
}

/// The coordinator's redb file.
pub struct CoordinatorStore {
    /// The dedup mode the store was created with.
    dedup: Dedup,
    db: Db,
}

impl CoordinatorStore {
    /// Opens (or creates) the store in `dir`, refusing files fold did not
    /// write. A state dir it creates is removed again if creating the file
    /// fails. A new store searches in `dedup` mode (tree when `None`); an
    /// existing one keeps the mode it was created with, and refuses another.
    pub fn open(dir: &Path, dedup: Option<Dedup>) -> Result<Self> {
        let path = dir.join(COORDINATOR_FILE);
        if !path.exists() {
            let foreign = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
            if foreign {
                return Err(Error::BadState(format!(
                    "state dir {} is not empty and holds no {COORDINATOR_FILE}: it was not written \
                     by fold serve; choose another --state-dir",
                    dir.display()
                )));
            }
            let created = !dir.exists();
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create state dir {}", dir.display()), e))?;
            let dedup = dedup.unwrap_or_default();
            return match Db::create(&path, |txn| create_tables(txn, dedup)) {
                Ok(db) => Ok(Self { dedup, db }),
                Err(error) => {
                    let _ = std::fs::remove_file(&path);
                    if created {
                        let _ = std::fs::remove_dir(dir);
                    }
                    Err(error)
                }
            };
        }
        let db = Db::open_for_writing(&path, WHAT, seal_tables)?;
        let stored = db.read(|txn| {
            storage::expect_format(txn.txn(), FORMAT, &path)?;
            let stored = txn.table(META)?.get("dedup")?;
            let name = stored.as_ref().map(|name| name.value()).unwrap_or_default();
            Dedup::from_name(name).ok_or_else(|| damage(format!("unknown dedup mode {name:?}")))
        })?;
        if let Some(asked) = dedup.filter(|&asked| asked != stored) {
            return Err(Error::BadState(format!(
                "state dir {} searches with --dedup {}; it cannot switch to --dedup {} (its \
                 units were made for the other mode): leave --dedup out, or use a new --state-dir",
                dir.display(),
                stored.name(),
                asked.name()
            )));
        }
        Ok(Self { dedup: stored, db })
    }

    /// The dedup mode of the store's searches.
    pub fn dedup(&self) -> Dedup {
        self.dedup
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Everything stored, each value checked against its checksum.
    pub fn load(&self) -> Result<Stored> {
        self.db.read(|txn| {
            let sources = txn.table(SOURCES)?;
            let mut versions = Vec::new();
            for (expected, entry) in (1u32..).zip(txn.table(TEXTS)?.iter()?) {
                let (version, text) = entry?;
                if version.value() != expected {
                    return Err(damage(format!("version {expected} is missing")));
                }
                txn.verify(&format!("texts/{expected}"), text.value())?;
                let text = String::from_utf8(text.value().to_vec())
                    .map_err(|_| damage(format!("text of version {expected} is not UTF-8")))?;
                let source = match sources.get(expected)? {
                    Some(source) => {
                        let source = source.value().to_owned();
                        txn.verify(&format!("sources/{expected}"), source.as_bytes())?;
                        source
                    }
                    None => String::new(),
                };
                versions.push(StoredVersion { source, text });
            }
            let mut units = Vec::new();
            for entry in txn.table(UNITS)?.iter()? {
                let (id, value) = entry?;
                let id = id.value();
                txn.verify(&format!("units/{id}"), value.value())?;
                let def = UnitDef::decode(value.value())
                    .map_err(|e| damage(format!("unit {id}: {e}")))?;
                if def.id != UnitId(id)
                    || def.created.get() as usize > versions.len()
                    || def.created == Version::ZERO
                {
                    return Err(damage(format!("unit {id} does not fit its record")));
                }
                units.push(def);
            }
            let mut results = Vec::new();
            for entry in txn.table(RESULTS)?.iter()? {
                let (key, value) = entry?;
                let (version, unit) = key.value();
                txn.verify(&format!("results/{version}/{unit}"), value.value())?;
                results.push((Version::new(version), UnitId(unit), value.value().to_vec()));
            }
            Ok(Stored {
                versions,
                units,
                results,
            })
        })
    }

    /// Durably stores the text of a new version and the units of its new
    /// first words.
    pub fn append_text(
        &self,
        version: Version,
        source: &str,
        text: &str,
        units: &[UnitDef],
    ) -> Result<()> {
        self.db.write(|txn| {
            txn.open_table(TEXTS)?
                .insert(version.get(), text.as_bytes())?;
            storage::seal(txn, &format!("texts/{version}"), text.as_bytes())?;
            txn.open_table(SOURCES)?.insert(version.get(), source)?;
            storage::seal(txn, &format!("sources/{version}"), source.as_bytes())?;
            write_units(txn, units)
        })
    }

    /// Durably applies a group of changes, in order, in one transaction.
    pub fn record(&self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.db.write(|txn| {
            for change in changes {
                match change {
                    Change::Unit(def) => write_units(txn, std::slice::from_ref(def))?,
                    Change::Result(version, unit, counted) => {
                        let bytes = encode_result(counted);
                        txn.open_table(RESULTS)?
                            .insert((version.get(), unit.0), bytes.as_slice())?;
                        storage::seal(txn, &format!("results/{version}/{unit}"), &bytes)?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// Writes the format marker and creates the tables of a new coordinator file.
fn create_tables(txn: &WriteTransaction, dedup: Dedup) -> TxnResult<()> {
    let mut meta = txn.open_table(META)?;
    meta.insert("format", FORMAT)?;
    meta.insert("dedup", dedup.name())?;
    drop(meta);
    txn.open_table(TEXTS)?;
    txn.open_table(SOURCES)?;
    txn.open_table(UNITS)?;
    txn.open_table(RESULTS)?;
    txn.open_table(CHECKS)?;
    Ok(())
}

/// Gives a coordinator file written before checksums existed a checksum for
/// each of its values (see `storage.rs`).
fn seal_tables(txn: &WriteTransaction) -> TxnResult<()> {
    storage::seal_table(txn, TEXTS, |v| v.to_string(), |bytes| bytes.to_vec())?;
    storage::seal_table(txn, SOURCES, |v| v.to_string(), |s| s.as_bytes().to_vec())?;
    storage::seal_table(txn, UNITS, |id| id.to_string(), |bytes| bytes.to_vec())?;
    storage::seal_table(
        txn,
        RESULTS,
        |(version, unit)| format!("{version}/{unit}"),
        |bytes| bytes.to_vec(),
    )
}

/// Writes unit records (new, or with more exclusions).
fn write_units(txn: &WriteTransaction, units: &[UnitDef]) -> TxnResult<()> {
    let mut table = txn.open_table(UNITS)?;
    for def in units {
        let bytes = def.encode();
        table.insert(def.id.0, bytes.as_slice())?;
        storage::seal(txn, &format!("units/{}", def.id), &bytes)?;
    }
    Ok(())
}

/// A counted result as stored: the counted attempt, then the wire's
/// `UnitDone` message.
pub fn encode_result(counted: &CountedResult) -> Vec<u8> {
    let mut bytes = counted.attempt.0.to_le_bytes().to_vec();
    let result = &counted.result;
    v1::UnitDone {
        attempt: counted.attempt.0,
        orthos: result.figures.orthos,
        frontier: result.figures.frontier,
        optimal: result.figures.optimal.as_ref().map(proto::tokens_of),
        base_version: result.base_version.get(),
        kept: result.kept,
        expanded: result.expanded,
    }
    .encode(&mut bytes)
    .expect("a Vec grows as needed");
    bytes
}

/// A stored result, checked against a vocabulary of `vocabulary` tokens.
pub fn decode_result(bytes: &[u8], vocabulary: usize) -> Result<CountedResult> {
    let bad = |what: String| Error::Inconsistent(format!("bad result record: {what}"));
    let (head, done) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| bad("too short".into()))?;
    let attempt = AttemptId(u64::from_le_bytes(*head));
    let done = v1::UnitDone::decode(done).map_err(|e| bad(e.to_string()))?;
    Ok(CountedResult {
        result: result_of(&done, vocabulary)?,
        attempt,
    })
}

/// A unit's result from a worker's `UnitDone`, checked against the vocabulary.
pub fn result_of(done: &v1::UnitDone, vocabulary: usize) -> Result<UnitResult> {
    Ok(UnitResult {
        figures: crate::search::Figures {
            orthos: done.orthos,
            frontier: done.frontier,
            optimal: done
                .optimal
                .as_ref()
                .map(|tokens| proto::ortho_of(tokens, vocabulary))
                .transpose()?,
        },
        base_version: Version::new(done.base_version),
        expanded: done.expanded,
        kept: done.kept,
    })
}
