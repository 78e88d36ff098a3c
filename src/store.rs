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
//! or a refused run never leaves it half-written. Everything read back is
//! checked (see `storage.rs`): each value against its checksum, each
//! text against its version's content hash, texts against versions; a
//! damaged file is an error naming it, never figures.

use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{Error, Result};
use crate::report::VersionReport;
use crate::search::{Checkpoint, Manifest};
use crate::storage::{self, CHECKS, Db, META, Reader, TxnResult, damage, damaged};

/// Name of the database file inside a state directory.
pub const STATE_FILE: &str = "fold-state.redb";

/// Format marker stored in the database; anything else is refused.
/// Format 1 kept a search log of whole orthos and ids; format 2 keeps the
/// history of [`crate::search::FORMAT_VERSION`].
const FORMAT: &str = "fold-state/2";

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
pub struct StoredCheckpoint {
    /// Content hash of the text being searched.
    pub hash: String,
    /// Where its search stood.
    pub checkpoint: Checkpoint,
    /// The dedup mode the search ran in ([`crate::search::Dedup::name`]);
    /// empty in checkpoints from before it was recorded (tree mode).
    #[serde(default)]
    pub dedup: String,
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
    /// `None` while the state is new (no file yet).
    db: Option<Db>,
}

/// What the state file should be, for open errors.
const WHAT: &str = "a fold state file";

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
            db: None,
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
        state.db = Some(Db::open_for_reading(&state.file, WHAT)?);
        state.read((), |txn| {
            Ok(storage::expect_format(txn.txn(), FORMAT, &state.file)?)
        })?;
        Ok(state)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the state for writing, creating it if it is new. Holding the
    /// writer also keeps any other fold process off this state dir.
    pub fn begin_writing(&mut self) -> Result<()> {
        self.writer().map(|_| ())
    }

    /// The writable database, opened (or created) on first use.
    fn writer(&mut self) -> Result<&Db> {
        if !self.db.as_ref().is_some_and(Db::writable) {
            // Release the read-only handle (and its lock) before opening for writing.
            self.db = None;
            let db = if self.file.exists() {
                Db::open_for_writing(&self.file, WHAT, seal_tables)?
            } else {
                std::fs::create_dir_all(&self.dir).map_err(|e| {
                    Error::io(format!("cannot create state dir {}", self.dir.display()), e)
                })?;
                Db::create(&self.file, create_tables)?
            };
            self.db = Some(db);
        }
        Ok(self.db.as_ref().expect("a writer was just opened"))
    }

    /// Runs `read` in a read transaction, or returns `empty` for a state
    /// that has no file yet.
    fn read<T>(&self, empty: T, read: impl FnOnce(&Reader) -> TxnResult<T>) -> Result<T> {
        match &self.db {
            None => Ok(empty),
            Some(db) => db.read(read),
        }
    }

    /// Runs `write` in a write transaction and commits it durably.
    fn write(&mut self, write: impl FnOnce(&WriteTransaction) -> TxnResult<()>) -> Result<()> {
        self.writer()?.write(write)
    }

    /// Every recorded version, in order (version 1 first).
    pub fn versions(&self) -> Result<Vec<VersionRecord>> {
        self.read(Vec::new(), |txn| {
            let mut records = Vec::new();
            for (expected, entry) in (1u32..).zip(txn.table(VERSIONS)?.iter()?) {
                let (version, record) = entry?;
                if version.value() != expected {
                    return Err(damage(format!("version {expected} is missing")));
                }
                let json = record.value();
                txn.verify(&format!("versions/{expected}"), json.as_bytes())?;
                let record: VersionRecord = serde_json::from_str(json)
                    .map_err(|e| damage(format!("version {expected}: {e}")))?;
                records.push(record);
            }
            Ok(records)
        })
    }

    /// How many versions are recorded (their records are not read).
    pub fn version_count(&self) -> Result<usize> {
        use redb::ReadableTableMetadata;
        self.read(0, |txn| Ok(txn.table(VERSIONS)?.len()? as usize))
    }

    /// The texts of every recorded version, in order, each checked against
    /// its version's content hash.
    pub fn texts(&self) -> Result<Vec<String>> {
        let records = self.versions()?;
        let texts = self.read(Vec::new(), |txn| {
            let mut texts = Vec::new();
            for (expected, entry) in (1u32..).zip(txn.table(TEXTS)?.iter()?) {
                let (version, text) = entry?;
                if version.value() != expected {
                    return Err(damage(format!("text {expected} is missing")));
                }
                let bytes = text.value();
                txn.verify(&format!("texts/{expected}"), bytes)?;
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| damage(format!("text of version {expected} is not UTF-8")))?;
                texts.push(text);
            }
            Ok(texts)
        })?;
        if texts.len() != records.len() {
            return Err(damaged(
                &self.file,
                format!(
                    "it records {} versions but {} texts",
                    records.len(),
                    texts.len()
                ),
            ));
        }
        for (version, (text, record)) in (1u32..).zip(texts.iter().zip(&records)) {
            if content_hash(text) != record.hash {
                return Err(damaged(
                    &self.file,
                    format!("the text of version {version} does not match its content hash"),
                ));
            }
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
    pub fn checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let Some(mut checkpoint) = self.search_entry::<StoredCheckpoint>("checkpoint")? else {
            return Ok(None);
        };
        let pending = self.read(None, |txn| {
            let pending = txn
                .table(PENDING)?
                .get("checkpoint")?
                .ok_or_else(|| damage("a checkpoint without its pending orthos"))?;
            let pending = pending.value().to_vec();
            txn.verify("pending/checkpoint", &pending)?;
            Ok(Some(pending))
        })?;
        let Some(pending) = pending else {
            return Ok(None);
        };
        checkpoint.checkpoint.pending = pending;
        Ok(Some(checkpoint))
    }

    fn search_entry<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.read(None, |txn| {
            // State written before the search log existed has no table.
            let Some(table) = txn.table_if_any(SEARCH)? else {
                return Ok(None);
            };
            let Some(json) = table.get(key)? else {
                return Ok(None);
            };
            let json = json.value();
            txn.verify(&format!("search/{key}"), json.as_bytes())?;
            serde_json::from_str(json)
                .map(Some)
                .map_err(|e| damage(format!("search {key}: {e}")))
        })
    }

    /// Durably records a checkpoint of the version being searched.
    pub fn save_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<()> {
        let json = serde_json::to_string(checkpoint).expect("a checkpoint always serialises");
        let pending = &checkpoint.checkpoint.pending;
        self.write(|txn| {
            txn.open_table(SEARCH)?
                .insert("checkpoint", json.as_str())?;
            storage::seal(txn, "search/checkpoint", json.as_bytes())?;
            txn.open_table(PENDING)?
                .insert("checkpoint", pending.as_slice())?;
            storage::seal(txn, "pending/checkpoint", pending)
        })
    }

    /// Durably replaces the search manifest (after the log was compacted).
    pub fn save_manifest(&mut self, manifest: &Manifest) -> Result<()> {
        let json = serde_json::to_string(manifest).expect("manifests serialise");
        self.write(|txn| {
            txn.open_table(SEARCH)?.insert("manifest", json.as_str())?;
            storage::seal(txn, "search/manifest", json.as_bytes())
        })
    }

    /// Forgets the search manifest, before the log it described is
    /// overwritten: the next version is then searched from scratch.
    pub fn forget_manifest(&mut self) -> Result<()> {
        if self.manifest()?.is_none() {
            return Ok(());
        }
        self.write(|txn| {
            txn.open_table(SEARCH)?.remove("manifest")?;
            storage::unseal(txn, "search/manifest")
        })
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
        // The tables are keyed by the bare number.
        let version = record.report.version.get();
        let json = serde_json::to_string(record).expect("a record always serialises");
        let manifest = manifest.map(|m| serde_json::to_string(m).expect("manifests serialise"));
        self.write(|txn| {
            {
                let mut search = txn.open_table(SEARCH)?;
                search.remove("checkpoint")?;
                storage::unseal(txn, "search/checkpoint")?;
                txn.open_table(PENDING)?.remove("checkpoint")?;
                storage::unseal(txn, "pending/checkpoint")?;
                match &manifest {
                    Some(manifest) => {
                        search.insert("manifest", manifest.as_str())?;
                        storage::seal(txn, "search/manifest", manifest.as_bytes())?;
                    }
                    None => {
                        search.remove("manifest")?;
                        storage::unseal(txn, "search/manifest")?;
                    }
                }
            }
            txn.open_table(TEXTS)?.insert(version, text.as_bytes())?;
            storage::seal(txn, &format!("texts/{version}"), text.as_bytes())?;
            txn.open_table(VERSIONS)?.insert(version, json.as_str())?;
            storage::seal(txn, &format!("versions/{version}"), json.as_bytes())
        })
    }
}

/// Writes the format marker and creates the tables of a new state database.
fn create_tables(txn: &WriteTransaction) -> TxnResult<()> {
    txn.open_table(META)?.insert("format", FORMAT)?;
    txn.open_table(TEXTS)?;
    txn.open_table(VERSIONS)?;
    txn.open_table(SEARCH)?;
    txn.open_table(PENDING)?;
    txn.open_table(CHECKS)?;
    Ok(())
}

/// Gives a state file written before checksums existed a checksum for each
/// of its values (see `storage.rs`).
fn seal_tables(txn: &WriteTransaction) -> TxnResult<()> {
    let text = |bytes: &[u8]| bytes.to_vec();
    let json = |value: &str| value.as_bytes().to_vec();
    storage::seal_table(txn, TEXTS, |v| v.to_string(), text)?;
    storage::seal_table(txn, VERSIONS, |v| v.to_string(), json)?;
    storage::seal_table(txn, SEARCH, |k| k.to_owned(), json)?;
    storage::seal_table(txn, PENDING, |k| k.to_owned(), text)?;
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
                version: crate::interner::Version::new(version),
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

    /// Changes the stored record of version 1 behind the checksums' back.
    fn overwrite_version_one(file: &Path, json: &str) {
        let db = redb::Database::open(file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(VERSIONS).unwrap().insert(1, json).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_value_that_does_not_match_its_checksum_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        StateDir::open(dir.path())
            .unwrap()
            .append("a b", &record(1, "a b"), None)
            .unwrap();
        let mut changed = record(1, "a b");
        changed.report.orthos += 1;
        let file = dir.path().join(STATE_FILE);
        overwrite_version_one(&file, &serde_json::to_string(&changed).unwrap());
        let error = StateDir::open(dir.path())
            .unwrap()
            .versions()
            .unwrap_err()
            .to_string();
        assert!(error.contains("fold-state.redb is damaged"), "{error}");
        assert!(error.contains("versions/1"), "{error}");
    }

    #[test]
    fn a_text_that_does_not_match_its_content_hash_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateDir::open(dir.path()).unwrap();
        // A record whose hash is of another text (as a damaged hash would be).
        let mut wrong = record(1, "a b");
        wrong.hash = content_hash("a c");
        state.append("a b", &wrong, None).unwrap();
        let error = state.texts().unwrap_err().to_string();
        assert!(error.contains("does not match its content hash"), "{error}");
    }

    #[test]
    fn a_state_written_before_checksums_is_read_and_sealed_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(STATE_FILE);
        {
            // What an earlier fold wrote: the same tables, no checksums.
            let db = redb::Database::create(&file).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format", FORMAT)
                .unwrap();
            txn.open_table(TEXTS)
                .unwrap()
                .insert(1, &b"a b"[..])
                .unwrap();
            let json = serde_json::to_string(&record(1, "a b")).unwrap();
            txn.open_table(VERSIONS)
                .unwrap()
                .insert(1, json.as_str())
                .unwrap();
            txn.commit().unwrap();
        }
        let mut state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.versions().unwrap(), vec![record(1, "a b")]);
        state.append("c d", &record(2, "c d"), None).unwrap();
        drop(state);
        // Sealed now: a change to version 1 is noticed.
        let mut changed = record(1, "a b");
        changed.report.frontier += 1;
        overwrite_version_one(&file, &serde_json::to_string(&changed).unwrap());
        assert!(StateDir::open(dir.path()).unwrap().versions().is_err());
    }

    #[test]
    fn a_state_dir_in_use_by_another_process_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = StateDir::open(dir.path()).unwrap();
        writer.append("a b", &record(1, "a b"), None).unwrap();
        // redb locks a file per open handle, so a second handle in this
        // process meets the lock as another process would.
        let error = match StateDir::open(dir.path()) {
            Ok(mut other) => other.begin_writing().unwrap_err(),
            Err(error) => error,
        }
        .to_string();
        assert!(error.contains("in use by another process"), "{error}");
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
    fn a_pipe_for_a_state_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        crate::test_support::make_fifo(&dir.path().join(STATE_FILE));
        let path = dir.path().to_owned();
        let error = crate::test_support::within_ten_seconds(move || {
            StateDir::open(&path).err().map(|e| e.to_string())
        });
        let error = error.expect("a pipe is no state file");
        assert!(error.contains("not a regular file"), "{error}");
    }

    #[test]
    fn file_instead_of_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(StateDir::open(&file).is_err());
    }
}
