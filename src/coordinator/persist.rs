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
use crate::store::{META, expect_format};

/// Name of the database file inside the state dir.
pub const COORDINATOR_FILE: &str = "coordinator.redb";

const FORMAT: &str = "fold-coordinator/1";

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
    db: Database,
}

impl CoordinatorStore {
    /// Opens (or creates) the store in `dir`, refusing files fold did not write.
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
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create state dir {}", dir.display()), e))?;
            let db = Database::create(&path).map_err(|e| Error::storage(&path, e))?;
            let txn = db.begin_write().map_err(|e| Error::storage(&path, e))?;
            {
                let mut meta = txn.open_table(META).map_err(|e| Error::storage(&path, e))?;
                meta.insert("format", FORMAT)
                    .map_err(|e| Error::storage(&path, e))?;
                txn.open_table(TEXTS)
                    .map_err(|e| Error::storage(&path, e))?;
                txn.open_table(SOURCES)
                    .map_err(|e| Error::storage(&path, e))?;
                txn.open_table(SHARDS)
                    .map_err(|e| Error::storage(&path, e))?;
            }
            txn.commit().map_err(|e| Error::storage(&path, e))?;
            return Ok(Self { path, db });
        }
        let db = Database::open(&path).map_err(|e| {
            Error::BadState(format!(
                "cannot open {} as a fold coordinator file: {e}",
                path.display()
            ))
        })?;
        let store = Self { path, db };
        let txn = store.db.begin_read().map_err(|e| store.fail(e))?;
        expect_format(&txn, FORMAT, &store.path)?;
        drop(txn);
        Ok(store)
    }

    /// Every stored version, in order.
    pub fn load(&self) -> Result<Vec<StoredVersion>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let texts = txn.open_table(TEXTS).map_err(|e| self.fail(e))?;
        let sources = txn.open_table(SOURCES).map_err(|e| self.fail(e))?;
        let shards = txn.open_table(SHARDS).map_err(|e| self.fail(e))?;
        let mut versions = Vec::new();
        for (expected, entry) in (1u32..).zip(texts.iter().map_err(|e| self.fail(e))?) {
            let (version, text) = entry.map_err(|e| self.fail(e))?;
            if version.value() != expected {
                return Err(self.damaged(format!("version {expected} is missing")));
            }
            let text = String::from_utf8(text.value().to_vec())
                .map_err(|_| self.damaged(format!("text of version {expected} is not UTF-8")))?;
            let source = sources
                .get(expected)
                .map_err(|e| self.fail(e))?
                .map(|s| s.value().to_owned())
                .unwrap_or_default();
            let mut results = Vec::new();
            for entry in shards
                .range((expected, 0)..=(expected, u32::MAX))
                .map_err(|e| self.fail(e))?
            {
                let (key, value) = entry.map_err(|e| self.fail(e))?;
                results.push((key.value().1, value.value().to_vec()));
            }
            versions.push(StoredVersion {
                source,
                text,
                shards: results,
            });
        }
        Ok(versions)
    }

    /// Durably stores the text of a new version.
    pub fn append_text(&self, version: u32, source: &str, text: &str) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut texts = txn.open_table(TEXTS).map_err(|e| self.fail(e))?;
            texts
                .insert(version, text.as_bytes())
                .map_err(|e| self.fail(e))?;
            let mut sources = txn.open_table(SOURCES).map_err(|e| self.fail(e))?;
            sources.insert(version, source).map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Durably stores a group of finished shards in one transaction.
    pub fn record_shards(&self, results: &[(u32, u32, ShardResult)]) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut shards = txn.open_table(SHARDS).map_err(|e| self.fail(e))?;
            for (version, origin, result) in results {
                let bytes = encode_result(result);
                shards
                    .insert((*version, *origin), bytes.as_slice())
                    .map_err(|e| self.fail(e))?;
            }
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    fn fail(&self, error: impl std::fmt::Display) -> Error {
        Error::storage(&self.path, error)
    }

    fn damaged(&self, what: String) -> Error {
        Error::BadState(format!("{} is damaged: {what}", self.path.display()))
    }
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
