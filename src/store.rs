//! The state directory: the texts ingested so far (by content hash) and the
//! figures of each version, in one redb file.
//!
//! A state directory is refused unless fold wrote it (or it is new or empty),
//! and every version is appended in a single durable transaction, so a crash
//! or a refused run never leaves it half-written.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::report::VersionReport;

/// Name of the database file inside a state directory.
pub const STATE_FILE: &str = "fold-state.redb";

/// Format marker stored in the database; anything else is refused.
const FORMAT: &str = "fold-state/1";

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const TEXTS: TableDefinition<u32, &[u8]> = TableDefinition::new("texts");
const VERSIONS: TableDefinition<u32, &str> = TableDefinition::new("versions");

/// One recorded version: which text it was and what its search found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionRecord {
    /// Content hash of the text (see [`content_hash`]).
    pub hash: String,
    /// The file name the text came from, for messages.
    pub source: String,
    /// The figures of the version.
    pub report: VersionReport,
}

/// An open state directory.
pub struct StateDir {
    dir: PathBuf,
    file: PathBuf,
    db: Database,
}

impl StateDir {
    /// Opens `dir`, creating it (and its database) when it is missing or empty.
    pub fn open(dir: &Path) -> Result<Self> {
        let file = dir.join(STATE_FILE);
        if dir.exists() && !dir.is_dir() {
            return Err(Error::BadState(format!(
                "state dir {} exists but is not a directory",
                dir.display()
            )));
        }
        let fresh = !file.exists();
        if fresh {
            let foreign = std::fs::read_dir(dir)
                .map(|mut entries| entries.next().is_some())
                .unwrap_or(false);
            if foreign {
                return Err(Error::BadState(format!(
                    "state dir {} is not empty and holds no {STATE_FILE}: it was not written by fold; \
                     choose another --state-dir",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create state dir {}", dir.display()), e))?;
        }
        let db = if fresh {
            Database::create(&file)
        } else {
            Database::open(&file)
        }
        .map_err(|e| {
            Error::BadState(format!(
                "cannot open {} as a fold state file: {e}",
                file.display()
            ))
        })?;
        let state = Self {
            dir: dir.to_owned(),
            file,
            db,
        };
        if fresh {
            state.write_format()?;
        }
        state.check_format()?;
        Ok(state)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_format(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            meta.insert("format", FORMAT).map_err(|e| self.fail(e))?;
        }
        txn.open_table(TEXTS).map_err(|e| self.fail(e))?;
        txn.open_table(VERSIONS).map_err(|e| self.fail(e))?;
        txn.commit().map_err(|e| self.fail(e))
    }

    fn check_format(&self) -> Result<()> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let format = txn.open_table(META).ok().and_then(|meta| {
            meta.get("format")
                .ok()
                .flatten()
                .map(|v| v.value().to_owned())
        });
        match format.as_deref() {
            Some(FORMAT) => Ok(()),
            other => Err(Error::BadState(format!(
                "{} was not written by this version of fold (format {})",
                self.file.display(),
                other.unwrap_or("missing")
            ))),
        }
    }

    /// Every recorded version, in order (version 1 first).
    pub fn versions(&self) -> Result<Vec<VersionRecord>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(VERSIONS).map_err(|e| self.fail(e))?;
        let mut records = Vec::new();
        for (expected, entry) in (1u32..).zip(table.iter().map_err(|e| self.fail(e))?) {
            let (version, record) = entry.map_err(|e| self.fail(e))?;
            if version.value() != expected {
                return Err(self.corrupt(format!("version {expected} is missing")));
            }
            let record: VersionRecord = serde_json::from_str(record.value())
                .map_err(|e| self.corrupt(format!("version {expected}: {e}")))?;
            records.push(record);
        }
        Ok(records)
    }

    /// The texts of every recorded version, in order.
    pub fn texts(&self) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(TEXTS).map_err(|e| self.fail(e))?;
        let mut texts = Vec::new();
        for entry in table.iter().map_err(|e| self.fail(e))? {
            let (version, text) = entry.map_err(|e| self.fail(e))?;
            let text = String::from_utf8(text.value().to_vec()).map_err(|_| {
                self.corrupt(format!("text of version {} is not UTF-8", version.value()))
            })?;
            texts.push(text);
        }
        Ok(texts)
    }

    /// Durably records the next version: its text and its figures together.
    pub fn append(&self, text: &str, record: &VersionRecord) -> Result<()> {
        let version = record.report.version;
        let json = serde_json::to_string(record).expect("a record always serialises");
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut texts = txn.open_table(TEXTS).map_err(|e| self.fail(e))?;
            texts
                .insert(version, text.as_bytes())
                .map_err(|e| self.fail(e))?;
            let mut versions = txn.open_table(VERSIONS).map_err(|e| self.fail(e))?;
            versions
                .insert(version, json.as_str())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    fn fail(&self, error: impl std::fmt::Display) -> Error {
        Error::storage(&self.file, error)
    }

    fn corrupt(&self, what: String) -> Error {
        Error::BadState(format!("{} is damaged: {what}", self.file.display()))
    }
}

/// A stable content hash of a text: xxh3-128 as 32 hex digits.
pub fn content_hash(text: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u32, text: &str) -> VersionRecord {
        VersionRecord {
            hash: content_hash(text),
            source: format!("{version}.txt"),
            report: VersionReport {
                version,
                vocabulary: 1,
                orthos: 2,
                frontier: 3,
                optimal: None,
            },
        }
    }

    #[test]
    fn versions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        {
            let state = StateDir::open(&path).unwrap();
            state.append("a b", &record(1, "a b")).unwrap();
            state.append("c d", &record(2, "c d")).unwrap();
        }
        let state = StateDir::open(&path).unwrap();
        assert_eq!(
            state.versions().unwrap(),
            vec![record(1, "a b"), record(2, "c d")]
        );
        assert_eq!(state.texts().unwrap(), vec!["a b", "c d"]);
    }

    #[test]
    fn foreign_directory_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = StateDir::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("not written by fold"), "{error}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn garbage_state_file_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(STATE_FILE);
        std::fs::write(&file, b"not a database at all").unwrap();
        assert!(StateDir::open(dir.path()).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"not a database at all");
    }

    #[test]
    fn file_instead_of_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(StateDir::open(&file).is_err());
    }
}
