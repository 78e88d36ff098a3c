//! The state directory: the texts ingested so far (by content hash) and the
//! figures of each version, in one redb file.
//!
//! Beside the database, `history/` holds the history of the search (see
//! [`crate::search::Exploration`]); the database records how far that
//! history is valid (the search manifest) and, while a version is being
//! searched, its last checkpoint with the orthos still to expand.
//!
//! A state directory is refused unless fold wrote it (or it is new or empty),
//! and every version is appended in a single durable transaction, so a crash
//! or a refused run never leaves it half-written.

use std::path::{Path, PathBuf};

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::report::VersionReport;
use crate::search::{Checkpoint, Manifest};

/// Name of the database file inside a state directory.
pub const STATE_FILE: &str = "fold-state.redb";

/// Format marker stored in the database; anything else is refused.
/// Format 1 kept a search log of whole orthos and ids; format 2 keeps the
/// history of [`crate::search::FORMAT_VERSION`].
const FORMAT: &str = "fold-state/2";

/// The table holding a fold database's format marker.
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const TEXTS: TableDefinition<u32, &[u8]> = TableDefinition::new("texts");
const VERSIONS: TableDefinition<u32, &str> = TableDefinition::new("versions");
/// The search manifest (key `manifest`) and the checkpoint of the version
/// being searched (key `checkpoint`), as JSON.
const SEARCH: TableDefinition<&str, &str> = TableDefinition::new("search");
/// The checkpoint's pending orthos (key `checkpoint`), encoded with a checksum.
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");

/// Name of the search history directory inside a state directory.
pub const HISTORY_DIR: &str = "history";

/// A checkpoint of the version being searched, and which text it is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunCheckpoint {
    /// Content hash of the text being searched.
    pub hash: String,
    /// Where its search stood.
    pub checkpoint: Checkpoint,
}

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
///
/// It is read through a read-only handle, so checking a run against the
/// record never touches the file; the database is opened for writing (and the
/// directory created) only when a version is appended.
pub struct StateDir {
    dir: PathBuf,
    file: PathBuf,
    handle: Option<Handle>,
}

enum Handle {
    Reader(ReadOnlyDatabase),
    Writer(Database),
}

impl Handle {
    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Self::Reader(db) => db.begin_read(),
            Self::Writer(db) => db.begin_read(),
        }
    }
}

impl StateDir {
    /// Opens `dir`. A missing or empty directory is a new, empty state; a
    /// directory with other contents, or a database fold did not write, is refused.
    pub fn open(dir: &Path) -> Result<Self> {
        let file = dir.join(STATE_FILE);
        if dir.exists() && !dir.is_dir() {
            return Err(Error::BadState(format!(
                "state dir {} exists but is not a directory",
                dir.display()
            )));
        }
        let mut state = Self {
            dir: dir.to_owned(),
            file,
            handle: None,
        };
        if !state.file.exists() {
            if dir.exists() {
                let mut entries = std::fs::read_dir(dir).map_err(|e| {
                    Error::io(format!("cannot list state dir {}", dir.display()), e)
                })?;
                if entries.next().is_some() {
                    return Err(Error::BadState(format!(
                        "state dir {} is not empty and holds no {STATE_FILE}: it was not written \
                         by fold; choose another --state-dir",
                        dir.display()
                    )));
                }
            }
            return Ok(state);
        }
        let handle = match ReadOnlyDatabase::open(&state.file) {
            Ok(db) => Handle::Reader(db),
            // A file left by a crash needs redb's repair, which only a writer does.
            Err(_) => Handle::Writer(Database::open(&state.file).map_err(|e| state.not_ours(e))?),
        };
        state.handle = Some(handle);
        state.check_format()?;
        Ok(state)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn not_ours(&self, error: impl std::fmt::Display) -> Error {
        Error::BadState(format!(
            "cannot open {} as a fold state file: {error}",
            self.file.display()
        ))
    }

    /// Opens the state for writing, creating it if it is new. Holding the
    /// writer also keeps any other fold process off this state dir.
    pub fn begin_writing(&mut self) -> Result<()> {
        self.writer().map(|_| ())
    }

    /// The writable database, opened (or created) on first use.
    fn writer(&mut self) -> Result<&Database> {
        if !matches!(self.handle, Some(Handle::Writer(_))) {
            // Release the read-only handle (and its lock) before opening for writing.
            self.handle = None;
            let db = if self.file.exists() {
                Database::open(&self.file).map_err(|e| match e {
                    redb::DatabaseError::Storage(redb::StorageError::Io(io)) => Error::io(
                        format!("cannot open {} for writing", self.file.display()),
                        io,
                    ),
                    other => self.not_ours(other),
                })?
            } else {
                std::fs::create_dir_all(&self.dir).map_err(|e| {
                    Error::io(format!("cannot create state dir {}", self.dir.display()), e)
                })?;
                let db = Database::create(&self.file).map_err(|e| self.fail(e))?;
                write_format(&db).map_err(|e| self.fail(e))?;
                db
            };
            self.handle = Some(Handle::Writer(db));
        }
        match &self.handle {
            Some(Handle::Writer(db)) => Ok(db),
            _ => unreachable!("a writer was just opened"),
        }
    }

    fn check_format(&self) -> Result<()> {
        let Some(handle) = &self.handle else {
            return Ok(());
        };
        let txn = handle.begin_read().map_err(|e| self.fail(e))?;
        expect_format(&txn, FORMAT, &self.file)
    }

    /// Every recorded version, in order (version 1 first).
    pub fn versions(&self) -> Result<Vec<VersionRecord>> {
        let Some(handle) = &self.handle else {
            return Ok(Vec::new());
        };
        let txn = handle.begin_read().map_err(|e| self.fail(e))?;
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
        let Some(handle) = &self.handle else {
            return Ok(Vec::new());
        };
        let txn = handle.begin_read().map_err(|e| self.fail(e))?;
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

    /// The search history's directory.
    pub fn history_dir(&self) -> PathBuf {
        self.dir.join(HISTORY_DIR)
    }

    /// How far the exploration log is valid, if it was ever written.
    pub fn manifest(&self) -> Result<Option<Manifest>> {
        self.search_entry("manifest")
    }

    /// The checkpoint of an unfinished version, if any.
    pub fn checkpoint(&self) -> Result<Option<RunCheckpoint>> {
        let Some(mut checkpoint) = self.search_entry::<RunCheckpoint>("checkpoint")? else {
            return Ok(None);
        };
        let Some(handle) = &self.handle else {
            return Ok(None);
        };
        let txn = handle.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(PENDING).map_err(|e| self.fail(e))?;
        let pending = table
            .get("checkpoint")
            .map_err(|e| self.fail(e))?
            .ok_or_else(|| self.corrupt("a checkpoint without its pending orthos".into()))?;
        checkpoint.checkpoint.pending = pending.value().to_vec();
        Ok(Some(checkpoint))
    }

    fn search_entry<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(handle) = &self.handle else {
            return Ok(None);
        };
        let txn = handle.begin_read().map_err(|e| self.fail(e))?;
        let table = match txn.open_table(SEARCH) {
            Ok(table) => table,
            // State written before the search log existed.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        let Some(json) = table.get(key).map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        serde_json::from_str(json.value())
            .map(Some)
            .map_err(|e| self.corrupt(format!("search {key}: {e}")))
    }

    /// Durably records a checkpoint of the version being searched.
    pub fn save_checkpoint(&mut self, checkpoint: &RunCheckpoint) -> Result<()> {
        let json = serde_json::to_string(checkpoint).expect("a checkpoint always serialises");
        let txn = self.writer()?.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut search = txn.open_table(SEARCH).map_err(|e| self.fail(e))?;
            search
                .insert("checkpoint", json.as_str())
                .map_err(|e| self.fail(e))?;
            let mut pending = txn.open_table(PENDING).map_err(|e| self.fail(e))?;
            pending
                .insert("checkpoint", checkpoint.checkpoint.pending.as_slice())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Durably replaces the search manifest (after the log was compacted).
    pub fn save_manifest(&mut self, manifest: &Manifest) -> Result<()> {
        let json = serde_json::to_string(manifest).expect("manifests serialise");
        let txn = self.writer()?.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut search = txn.open_table(SEARCH).map_err(|e| self.fail(e))?;
            search
                .insert("manifest", json.as_str())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Forgets the search manifest, before the log it described is
    /// overwritten: the next version is then searched from scratch.
    pub fn forget_manifest(&mut self) -> Result<()> {
        if self.manifest()?.is_none() {
            return Ok(());
        }
        let txn = self.writer()?.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut search = txn.open_table(SEARCH).map_err(|e| self.fail(e))?;
            search.remove("manifest").map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Durably records the next version: its text, its figures and, when
    /// given, the search manifest that includes it, all together; any
    /// checkpoint is dropped.
    pub fn append(
        &mut self,
        text: &str,
        record: &VersionRecord,
        manifest: Option<&Manifest>,
    ) -> Result<()> {
        let version = record.report.version;
        let json = serde_json::to_string(record).expect("a record always serialises");
        let manifest = manifest.map(|m| serde_json::to_string(m).expect("manifests serialise"));
        let txn = self.writer()?.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut search = txn.open_table(SEARCH).map_err(|e| self.fail(e))?;
            search.remove("checkpoint").map_err(|e| self.fail(e))?;
            let mut pending = txn.open_table(PENDING).map_err(|e| self.fail(e))?;
            pending.remove("checkpoint").map_err(|e| self.fail(e))?;
            match &manifest {
                Some(manifest) => search.insert("manifest", manifest.as_str()),
                None => search.remove("manifest"),
            }
            .map_err(|e| self.fail(e))?;
        }
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

/// Checks the format marker that every fold database carries in its `meta`
/// table, refusing files that fold (this version of it) did not write.
pub(crate) fn expect_format(
    txn: &redb::ReadTransaction,
    expected: &str,
    file: &Path,
) -> Result<()> {
    let format = txn.open_table(META).ok().and_then(|meta| {
        meta.get("format")
            .ok()
            .flatten()
            .map(|v| v.value().to_owned())
    });
    if format.as_deref() == Some(expected) {
        return Ok(());
    }
    if let Some(older) = format
        .as_deref()
        .filter(|f| f.split('/').next() == expected.split('/').next())
    {
        return Err(Error::BadState(format!(
            "{} was written by another version of fold (format {older}; this one reads {expected}); \
             it is left as it is: use a new --state-dir, or the fold that wrote it",
            file.display()
        )));
    }
    Err(Error::BadState(format!(
        "{} was not written by this version of fold (format {})",
        file.display(),
        format.as_deref().unwrap_or("missing")
    )))
}

/// Writes the format marker and creates the tables of a new state database.
fn write_format(db: &Database) -> std::result::Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("format", FORMAT)?;
    }
    txn.open_table(TEXTS)?;
    txn.open_table(VERSIONS)?;
    txn.open_table(SEARCH)?;
    txn.open_table(PENDING)?;
    txn.commit()?;
    Ok(())
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
            let mut state = StateDir::open(&path).unwrap();
            state.append("a b", &record(1, "a b"), None).unwrap();
            state.append("c d", &record(2, "c d"), None).unwrap();
        }
        let state = StateDir::open(&path).unwrap();
        assert_eq!(
            state.versions().unwrap(),
            vec![record(1, "a b"), record(2, "c d")]
        );
        assert_eq!(state.texts().unwrap(), vec!["a b", "c d"]);
    }

    #[test]
    fn reading_a_state_never_rewrites_its_file() {
        let dir = tempfile::tempdir().unwrap();
        StateDir::open(dir.path())
            .unwrap()
            .append("a b", &record(1, "a b"), None)
            .unwrap();
        let file = dir.path().join(STATE_FILE);
        let before = std::fs::read(&file).unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.versions().unwrap().len(), 1);
        assert_eq!(state.texts().unwrap().len(), 1);
        drop(state);
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }

    #[test]
    fn opening_a_missing_state_creates_nothing_until_a_version_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let mut state = StateDir::open(&path).unwrap();
        assert!(state.versions().unwrap().is_empty());
        assert!(!path.exists());
        state.append("a", &record(1, "a"), None).unwrap();
        assert!(path.join(STATE_FILE).exists());
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
