//! The coordinator's durable state: submitted texts and finished shards, in
//! one redb file under the state dir.
//!
//! A text is committed before its submission is acknowledged. Shard results
//! are committed in groups; a result lost in a crash only means that shard is
//! searched again after the restart, never that it is counted twice.

use std::path::{Path, PathBuf};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::coordinator::ledger::ShardResult;
use crate::error::{Error, Result};
use crate::proto::{self, v1};
use crate::storage::{self, CHECKS, Checks, META, damaged, guarded};

/// Name of the database file inside the state dir.
pub const COORDINATOR_FILE: &str = "coordinator.redb";

const FORMAT: &str = "fold-coordinator/1";

/// What the file should be, for open errors.
const WHAT: &str = "a fold coordinator file";

const TEXTS: TableDefinition<u32, &[u8]> = TableDefinition::new("texts");
const SOURCES: TableDefinition<u32, &str> = TableDefinition::new("sources");
const SHARDS: TableDefinition<(u32, u32), &[u8]> = TableDefinition::new("shards");

/// One stored version.
pub struct StoredVersion {
    /// The name it was submitted with.
    pub source: String,
    /// Its text.
    pub text: String,
    /// Finished shards: (origin, encoded result).
    pub shards: Vec<(u32, Vec<u8>)>,
}

/// The coordinator's redb file.
pub struct CoordinatorStore {
    path: PathBuf,
    /// Always `Some` until dropped (the drop is guarded too).
    db: Option<Database>,
}

impl CoordinatorStore {
    /// Opens (or creates) the store in `dir`, refusing files fold did not
    /// write. A state dir it creates is removed again if creating the file fails.
    pub fn open(dir: &Path) -> Result<Self> {
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
            let db = guarded(&path, || {
                let db = Database::create(&path).map_err(|e| Error::storage(&path, e))?;
                write_format(&db).map_err(|e| Error::storage(&path, e))?;
                Ok(db)
            });
            return match db {
                Ok(db) => Ok(Self { path, db: Some(db) }),
                Err(error) => {
                    let _ = std::fs::remove_file(&path);
                    if created {
                        let _ = std::fs::remove_dir(dir);
                    }
                    Err(error)
                }
            };
        }
        let db = guarded(&path, || {
            let db = storage::open_for_writing(&path)
                .map_err(|e| storage::open_error(&path, e, WHAT, true))?;
            seal_if_unsealed(&db).map_err(|e| Error::storage(&path, e))?;
            Ok(db)
        })?;
        let store = Self { path, db: Some(db) };
        store.read(|txn, _| storage::expect_format(txn, FORMAT, &store.path))?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> &Database {
        self.db
            .as_ref()
            .expect("the database is open until dropped")
    }

    /// Runs `read` in a read transaction with the file's checksums.
    fn read<T>(
        &self,
        read: impl FnOnce(&redb::ReadTransaction, &Checks) -> Result<T>,
    ) -> Result<T> {
        guarded(&self.path, || {
            let txn = self.db().begin_read().map_err(|e| self.fail(e))?;
            let checks = Checks::open(&txn).map_err(|e| self.fail(e))?;
            read(&txn, &checks)
        })
    }

    /// Runs `write` in a write transaction and commits it durably.
    fn write(
        &self,
        write: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        guarded(&self.path, || {
            let txn = self.db().begin_write().map_err(|e| self.fail(e))?;
            write(&txn).map_err(|e| self.fail(e))?;
            txn.commit().map_err(|e| self.fail(e))
        })
    }

    /// Every stored version, in order, each value checked against its checksum.
    pub fn load(&self) -> Result<Vec<StoredVersion>> {
        self.read(|txn, checks| {
            let texts = txn.open_table(TEXTS).map_err(|e| self.fail(e))?;
            let sources = txn.open_table(SOURCES).map_err(|e| self.fail(e))?;
            let shards = txn.open_table(SHARDS).map_err(|e| self.fail(e))?;
            let verify = |key: String, bytes: &[u8]| {
                checks
                    .verify(&key, bytes)
                    .map_err(|what| damaged(&self.path, what))
            };
            let mut versions = Vec::new();
            for (expected, entry) in (1u32..).zip(texts.iter().map_err(|e| self.fail(e))?) {
                let (version, text) = entry.map_err(|e| self.fail(e))?;
                if version.value() != expected {
                    return Err(damaged(
                        &self.path,
                        format!("version {expected} is missing"),
                    ));
                }
                verify(format!("texts/{expected}"), text.value())?;
                let text = String::from_utf8(text.value().to_vec()).map_err(|_| {
                    damaged(
                        &self.path,
                        format!("text of version {expected} is not UTF-8"),
                    )
                })?;
                let source = match sources.get(expected).map_err(|e| self.fail(e))? {
                    Some(source) => {
                        let source = source.value().to_owned();
                        verify(format!("sources/{expected}"), source.as_bytes())?;
                        source
                    }
                    None => String::new(),
                };
                let mut results = Vec::new();
                for entry in shards
                    .range((expected, 0)..=(expected, u32::MAX))
                    .map_err(|e| self.fail(e))?
                {
                    let (key, value) = entry.map_err(|e| self.fail(e))?;
                    let origin = key.value().1;
                    verify(format!("shards/{expected}/{origin}"), value.value())?;
                    results.push((origin, value.value().to_vec()));
                }
                versions.push(StoredVersion {
                    source,
                    text,
                    shards: results,
                });
            }
            Ok(versions)
        })
    }

    /// Durably stores the text of a new version.
    pub fn append_text(&self, version: u32, source: &str, text: &str) -> Result<()> {
        self.write(|txn| {
            txn.open_table(TEXTS)?.insert(version, text.as_bytes())?;
            storage::seal(txn, &format!("texts/{version}"), text.as_bytes())?;
            txn.open_table(SOURCES)?.insert(version, source)?;
            storage::seal(txn, &format!("sources/{version}"), source.as_bytes())
        })
    }

    /// Durably stores a group of finished shards in one transaction.
    pub fn record_shards(&self, results: &[(u32, u32, ShardResult)]) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut shards = txn.open_table(SHARDS)?;
            for (version, origin, result) in results {
                let bytes = encode_result(result);
                shards.insert((*version, *origin), bytes.as_slice())?;
                storage::seal(txn, &format!("shards/{version}/{origin}"), &bytes)?;
            }
            Ok(())
        })
    }

    fn fail(&self, error: impl std::fmt::Display) -> Error {
        Error::storage(&self.path, error)
    }
}

impl Drop for CoordinatorStore {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = guarded(&self.path, || {
                drop(db);
                Ok(())
            });
        }
    }
}

/// Writes the format marker and creates the tables of a new coordinator file.
fn write_format(db: &Database) -> std::result::Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert("format", FORMAT)?;
    txn.open_table(TEXTS)?;
    txn.open_table(SOURCES)?;
    txn.open_table(SHARDS)?;
    txn.open_table(CHECKS)?;
    txn.commit()?;
    Ok(())
}

/// Gives a coordinator file written before checksums existed a checksum for
/// each of its values (see `storage.rs`).
fn seal_if_unsealed(db: &Database) -> std::result::Result<(), redb::Error> {
    let txn = db.begin_write()?;
    if !storage::unsealed(&txn)? {
        return Ok(());
    }
    storage::seal_table(&txn, TEXTS, |v| v.to_string(), |bytes| bytes.to_vec())?;
    storage::seal_table(&txn, SOURCES, |v| v.to_string(), |s| s.as_bytes().to_vec())?;
    storage::seal_table(
        &txn,
        SHARDS,
        |(version, origin)| format!("{version}/{origin}"),
        |bytes| bytes.to_vec(),
    )?;
    txn.commit()?;
    Ok(())
}

/// A shard result as stored: the wire's `ShardDone` message.
pub fn encode_result(result: &ShardResult) -> Vec<u8> {
    v1::ShardDone {
        attempt: 0,
        orthos: result.orthos,
        frontier: result.frontier,
        optimal: result.optimal.as_ref().map(proto::tokens_of),
        base_version: 0,
        stored: false,
    }
    .encode_to_vec()
}

/// A stored shard result, checked against a vocabulary of `vocabulary` tokens.
pub fn decode_result(bytes: &[u8], vocabulary: usize) -> Result<ShardResult> {
    let done = v1::ShardDone::decode(bytes)
        .map_err(|e| Error::BadState(format!("bad shard record: {e}")))?;
    result_of(&done, vocabulary)
}

/// A shard result from a worker's `ShardDone`, checked against the vocabulary.
pub fn result_of(done: &v1::ShardDone, vocabulary: usize) -> Result<ShardResult> {
    Ok(ShardResult {
        orthos: done.orthos,
        frontier: done.frontier,
        optimal: done
            .optimal
            .as_ref()
            .map(|tokens| proto::ortho_of(tokens, vocabulary))
            .transpose()?,
    })
}
