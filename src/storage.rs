//! What fold's two redb files (`fold-state.redb` of `run`, `coordinator.redb`
//! of `serve`) share: the format marker, a checksum for every stored value,
//! clear errors when a file cannot be opened, and a guard that turns a panic
//! of the storage library into an error naming the file.
//!
//! redb trusts a file it shut down cleanly: a flipped bit can make it panic,
//! and a value read back is not checked against its page checksum. So fold
//! checks what it reads. Every value `V` stored under key `K` of table `T`
//! has a checksum (xxh3-64 of `V`) under `"T/K"` in the `checks` table,
//! written in the same transaction. Once a file has a `checks` table, a
//! value without its checksum is damage too (a flipped key would otherwise
//! go unnoticed); a file written before checksums existed has none, and gets
//! them all when it is next opened for writing ([`unsealed`], [`seal_table`]).
//!
//! A file opened for writing is opened with redb's integrity check
//! ([`open_for_writing`]): every page checksum is verified and the allocator
//! state rebuilt, so a damaged page is reported before anything is written
//! on top of it. Every redb call runs inside [`guarded`]: a panic there
//! becomes [`Error::Damaged`] naming the file, and prints nothing.
//!
//! [`Db`] puts this together for both files: it opens or creates one, and
//! runs read and write transactions whose code uses `?` on redb calls and
//! returns [`TxnError`]; the error becomes an [`Error`] naming the file once,
//! when the transaction ends.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use redb::{
    CommitError, Database, DatabaseError, ReadOnlyDatabase, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableTable, StorageError, TableDefinition, TableError, TableHandle,
    TransactionError, WriteTransaction,
};

use crate::error::{Error, Result};

/// The table holding a fold database's format marker.
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The checksum of every value of the other tables, by `table/key`.
pub(crate) const CHECKS: TableDefinition<&str, u64> = TableDefinition::new("checks");

/// The checksum stored for a value.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The error for a file whose contents cannot be trusted.
pub(crate) fn damaged(file: &Path, what: impl std::fmt::Display) -> Error {
    Error::Damaged {
        path: file.to_owned(),
        detail: what.to_string(),
    }
}

thread_local! {
    /// Depth of [`guarded`] calls on this thread: panics inside print nothing.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// Runs `operation`, which uses the redb file `file`. A panic inside it
/// (redb panics on some damaged files) becomes an error naming the file,
/// with nothing printed; the caller must not use that database again.
pub(crate) fn guarded<T>(file: &Path, operation: impl FnOnce() -> Result<T>) -> Result<T> {
    silence_guarded_panics();
    GUARDED.with(|depth| depth.set(depth.get() + 1));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(operation));
    GUARDED.with(|depth| depth.set(depth.get() - 1));
    outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown failure");
        Err(damaged(
            file,
            format!("redb failed on it: {}", message.replace('\n', " ")),
        ))
    })
}

/// Installs (once) a panic hook that stays silent inside [`guarded`] and
/// defers to the previous hook everywhere else.
fn silence_guarded_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// What can go wrong inside a transaction of a [`Db`]: redb fails, a value
/// read back is damaged (what is wrong with it), or another error of fold's.
/// The transaction's end turns it into an [`Error`] naming the file.
#[derive(Debug)]
pub(crate) enum TxnError {
    Redb(redb::Error),
    Damaged(String),
    Fold(Error),
}

/// The result of code inside a transaction.
pub(crate) type TxnResult<T> = std::result::Result<T, TxnError>;

/// A value read back that cannot be trusted: what is wrong with it.
pub(crate) fn damage(what: impl std::fmt::Display) -> TxnError {
    TxnError::Damaged(what.to_string())
}

impl TxnError {
    fn naming(self, file: &Path) -> Error {
        match self {
            Self::Redb(error) => Error::storage(file, error),
            Self::Damaged(what) => damaged(file, what),
            Self::Fold(error) => error,
        }
    }
}

impl From<Error> for TxnError {
    fn from(error: Error) -> Self {
        Self::Fold(error)
    }
}

macro_rules! redb_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for TxnError {
            fn from(error: $error) -> Self {
                Self::Redb(error.into())
            }
        }
    )*};
}

redb_errors!(
    redb::Error,
    StorageError,
    TableError,
    TransactionError,
    CommitError
);

/// One of fold's redb files, open for reading or for writing.
pub(crate) struct Db {
    path: PathBuf,
    /// Always `Some` until dropped (the drop is guarded too).
    handle: Option<Handle>,
}

enum Handle {
    Reader(ReadOnlyDatabase),
    Writer(Database),
}

/// A read transaction of a [`Db`], with the file's checksums.
pub(crate) struct Reader {
    txn: ReadTransaction,
    checks: Checks,
}

impl Reader {
    /// The transaction.
    pub fn txn(&self) -> &ReadTransaction {
        &self.txn
    }

    /// The table `table`.
    pub fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> TxnResult<ReadOnlyTable<K, V>> {
        Ok(self.txn.open_table(table)?)
    }

    /// The table `table`, if the file has it.
    pub fn table_if_any<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> TxnResult<Option<ReadOnlyTable<K, V>>> {
        match self.txn.open_table(table) {
            Ok(table) => Ok(Some(table)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Checks `bytes`, read under `key` (`table/key`), against its checksum.
    pub fn verify(&self, key: &str, bytes: &[u8]) -> TxnResult<()> {
        self.checks.verify(key, bytes).map_err(TxnError::Damaged)
    }
}

/// Whether `path` exists and is something other than a regular file (a
/// directory, pipe, socket or device): opening a pipe would wait for a
/// writer forever, and none of them is a file fold wrote.
pub(crate) fn is_special_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| !meta.is_file())
}

/// Refuses `path`, a file fold reads back, as damaged when it is there
/// but is not a regular file (see [`is_special_file`]).
pub(crate) fn refuse_special_as_damaged(path: &Path) -> Result<()> {
    if is_special_file(path) {
        return Err(Error::Damaged {
            path: path.to_owned(),
            detail: "it is not a regular file".into(),
        });
    }
    Ok(())
}

/// Refuses the database file `file` when it is not a regular file.
fn refuse_special(file: &Path) -> Result<()> {
    if is_special_file(file) {
        return Err(Error::BadState(format!(
            "{} is not a regular file",
            file.display()
        )));
    }
    Ok(())
}

impl Db {
    /// Creates the file `file`, running `init` (its format marker and
    /// tables) in its first transaction.
    pub fn create(
        file: &Path,
        init: impl FnOnce(&WriteTransaction) -> TxnResult<()>,
    ) -> Result<Self> {
        refuse_special(file)?;
        guarded(file, || {
            let db = Database::create(file).map_err(|e| Error::storage(file, e))?;
            let db = Self {
                path: file.to_owned(),
                handle: Some(Handle::Writer(db)),
            };
            db.write(init)?;
            Ok(db)
        })
    }

    /// Opens the existing file `file` (which should be `what`, for
    /// messages) for writing, verifying it first; a file written before
    /// checksums existed gets them from `seal` (see [`seal_table`]).
    pub fn open_for_writing(
        file: &Path,
        what: &str,
        seal: impl FnOnce(&WriteTransaction) -> TxnResult<()>,
    ) -> Result<Self> {
        refuse_special(file)?;
        guarded(file, || {
            let db = open_for_writing(file).map_err(|e| open_error(file, e, what, true))?;
            let db = Self {
                path: file.to_owned(),
                handle: Some(Handle::Writer(db)),
            };
            db.seal_if_unsealed(seal)?;
            Ok(db)
        })
    }

    /// Opens the existing file `file` for reading only; one that a crash
    /// left needing repair is opened for writing, which repairs it.
    pub fn open_for_reading(file: &Path, what: &str) -> Result<Self> {
        refuse_special(file)?;
        let handle = guarded(file, || match ReadOnlyDatabase::open(file) {
            Ok(db) => Ok(Handle::Reader(db)),
            Err(DatabaseError::RepairAborted) => open_for_writing(file)
                .map(Handle::Writer)
                .map_err(|e| open_error(file, e, what, true)),
            Err(error) => Err(open_error(file, error, what, false)),
        })?;
        Ok(Self {
            path: file.to_owned(),
            handle: Some(handle),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is open for writing.
    pub fn writable(&self) -> bool {
        matches!(self.handle, Some(Handle::Writer(_)))
    }

    /// Runs `read` in a read transaction.
    pub fn read<T>(&self, read: impl FnOnce(&Reader) -> TxnResult<T>) -> Result<T> {
        guarded(&self.path, || {
            let begun = match self.handle.as_ref().expect("open until dropped") {
                Handle::Reader(db) => db.begin_read(),
                Handle::Writer(db) => db.begin_read(),
            };
            let outcome = begun.map_err(TxnError::from).and_then(|txn| {
                let checks = Checks::open(&txn)?;
                read(&Reader { txn, checks })
            });
            outcome.map_err(|error| error.naming(&self.path))
        })
    }

    /// Runs `write` in a write transaction and commits it durably.
    pub fn write<T>(&self, write: impl FnOnce(&WriteTransaction) -> TxnResult<T>) -> Result<T> {
        let Some(Handle::Writer(db)) = &self.handle else {
            return Err(Error::Internal(format!(
                "{} was opened for reading only",
                self.path.display()
            )));
        };
        guarded(&self.path, || {
            let outcome = (|| {
                let txn = db.begin_write()?;
                let value = write(&txn)?;
                txn.commit()?;
                Ok(value)
            })();
            outcome.map_err(|error: TxnError| error.naming(&self.path))
        })
    }

    /// Runs `seal` on a file written before checksums existed (and writes
    /// nothing on one that has them).
    fn seal_if_unsealed(
        &self,
        seal: impl FnOnce(&WriteTransaction) -> TxnResult<()>,
    ) -> Result<()> {
        let Some(Handle::Writer(db)) = &self.handle else {
            return Ok(());
        };
        let outcome = (|| {
            let txn = db.begin_write()?;
            if unsealed(&txn)? {
                seal(&txn)?;
                txn.commit()?;
            }
            Ok(())
        })();
        outcome.map_err(|error: TxnError| error.naming(&self.path))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = guarded(&self.path, || {
                drop(handle);
                Ok(())
            });
        }
    }
}

/// Opens an existing redb file for writing, verifying it first: a damaged
/// page is an error rather than something redb trusts (and may panic on, or
/// write over) later. A commit that a crash left half-written is rolled
/// back, as redb always does.
pub(crate) fn open_for_writing(file: &Path) -> std::result::Result<redb::Database, DatabaseError> {
    redb::Database::builder()
        .set_check_integrity_on_open(true)
        .open(file)
}

/// A clear error for a redb file that cannot be opened (`for_writing`, or
/// to read); `what` says what the file should be ("a fold state file").
pub(crate) fn open_error(
    file: &Path,
    error: DatabaseError,
    what: &str,
    for_writing: bool,
) -> Error {
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            Error::InUse(format!(
                "{} is in use by another process (another fold process on the same state dir?); \
                 wait for it to finish, or use another --state-dir",
                file.display()
            ))
        }
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            Error::BadState(format!(
                "{} is not {what} (it is not a redb database: {io})",
                file.display()
            ))
        }
        DatabaseError::Storage(StorageError::Io(io)) => {
            let purpose = if for_writing { " for writing" } else { "" };
            Error::io(format!("cannot open {}{purpose}", file.display()), io)
        }
        DatabaseError::Storage(StorageError::Corrupted(message)) => damaged(file, message),
        other => Error::BadState(format!("cannot open {} as {what}: {other}", file.display())),
    }
}

/// Checks the format marker that every fold database carries in its `meta`
/// table, refusing files that fold (this version of it) did not write.
pub(crate) fn expect_format(txn: &ReadTransaction, expected: &str, file: &Path) -> Result<()> {
    let format = txn.open_table(META).ok().and_then(|meta| {
        meta.get("format")
            .ok()
            .flatten()
            .map(|v| v.value().to_owned())
    });
    if format.as_deref() == Some(expected) {
        return Ok(());
    }
    if let Some(other) = format
        .as_deref()
        .filter(|f| f.split('/').next() == expected.split('/').next())
    {
        return Err(Error::BadState(format!(
            "{} was written by another version of fold (format {other}; this one reads {expected}); \
             it is left as it is: use a new --state-dir, or the fold that wrote it",
            file.display()
        )));
    }
    Err(Error::BadState(format!(
        "{} was not written by this version of fold (format {}); it is from another version, \
         or damaged",
        file.display(),
        format.as_deref().unwrap_or("missing")
    )))
}

/// The checksums of a file, for reading; `None` for a file written before
/// checksums existed.
pub(crate) struct Checks {
    table: Option<redb::ReadOnlyTable<&'static str, u64>>,
}

impl Checks {
    /// The checksums of the file `txn` reads.
    pub(crate) fn open(txn: &ReadTransaction) -> std::result::Result<Self, redb::TableError> {
        match txn.open_table(CHECKS) {
            Ok(table) => Ok(Self { table: Some(table) }),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Self { table: None }),
            Err(error) => Err(error),
        }
    }

    /// Checks `bytes`, read under `key` (`table/key`), against its checksum.
    /// The error says what is wrong, for [`damaged`].
    pub(crate) fn verify(&self, key: &str, bytes: &[u8]) -> std::result::Result<(), String> {
        let Some(table) = &self.table else {
            return Ok(());
        };
        match table.get(key) {
            Ok(Some(sum)) if sum.value() == checksum(bytes) => Ok(()),
            Ok(Some(_)) => Err(format!("{key} does not match its checksum")),
            Ok(None) => Err(format!("{key} has no checksum")),
            Err(error) => Err(format!("cannot read the checksum of {key}: {error}")),
        }
    }
}

/// Records the checksum of `bytes`, stored under `key` (`table/key`).
pub(crate) fn seal(txn: &WriteTransaction, key: &str, bytes: &[u8]) -> TxnResult<()> {
    txn.open_table(CHECKS)?.insert(key, checksum(bytes))?;
    Ok(())
}

/// Forgets the checksum of a value removed from under `key`.
pub(crate) fn unseal(txn: &WriteTransaction, key: &str) -> TxnResult<()> {
    txn.open_table(CHECKS)?.remove(key)?;
    Ok(())
}

/// Whether the file `txn` writes was written before checksums existed (it
/// has no `checks` table); such a file gets them all with [`seal_table`]
/// before anything else is written.
pub(crate) fn unsealed(txn: &WriteTransaction) -> TxnResult<bool> {
    Ok(!txn
        .list_tables()?
        .any(|existing| existing.name() == CHECKS.name()))
}

/// Records the checksum of every value of `table`, its keys rendered as
/// they are in checksum keys by `render`, and its values as bytes by `bytes`.
pub(crate) fn seal_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<K, V>,
    render: impl Fn(K::SelfType<'_>) -> String,
    bytes: impl Fn(V::SelfType<'_>) -> Vec<u8>,
) -> TxnResult<()> {
    let source = txn.open_table(table)?;
    let mut checks = txn.open_table(CHECKS)?;
    for entry in source.iter()? {
        let (key, value) = entry?;
        let key = format!("{}/{}", table.name(), render(key.value()));
        checks.insert(key.as_str(), checksum(&bytes(value.value())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_guarded_is_an_error_naming_the_file() {
        let file = Path::new("/somewhere/fold-state.redb");
        let error = guarded::<()>(file, || panic!("entered unreachable code\nsecond line"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/somewhere/fold-state.redb"), "{error}");
        assert!(error.contains("entered unreachable code"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        // Nested and repeated calls keep working.
        assert_eq!(guarded(file, || guarded(file, || Ok(3))).unwrap(), 3);
        assert!(guarded::<()>(file, || panic!("again")).is_err());
    }
}
