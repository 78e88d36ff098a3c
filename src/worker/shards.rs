//! The shards a worker keeps: for each origin token it searched, the
//! exploration of that shard (every ortho found, see [`Exploration`]) and a
//! small record of which texts it is complete for.
//!
//! The next version of a kept shard is searched incrementally. A kept shard
//! is only reused for texts that extend the very texts it was searched on
//! (compared by content hash), so a data dir carried to another coordinator,
//! or left behind by a crash mid-search, is discarded rather than trusted.
//!
//! Kept shards are a cache (any shard can be searched again from scratch),
//! so they are written without waiting for the disk: a killed worker's
//! writes survive it, and a record is replaced by an atomic rename.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::interner::Token;
use crate::search::{Exploration, Manifest, Scope};

/// Name of the record beside a shard's exploration.
const RECORD: &str = "shard.json";

/// What a kept shard is complete for.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ShardRecord {
    origin: u32,
    /// Content hashes of the texts of versions 1..=manifest.version.
    texts: Vec<String>,
    manifest: Manifest,
}

/// An exploration ready for a shard's search.
pub struct ShardSearch {
    /// The exploration to advance.
    pub exploration: Exploration,
    /// The version it starts from (0: from scratch).
    pub base_version: u32,
    /// Whether it is a kept shard (or may become one once searched).
    kept: bool,
    may_keep: bool,
}

/// The kept shards under one directory.
pub struct ShardStore {
    dir: PathBuf,
    scratch: PathBuf,
    keep_from: u64,
}

impl ShardStore {
    /// Kept shards live in `dir`; one-off searches go under `scratch`. A
    /// shard searched from scratch is kept if it has at least `keep_from`
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

    fn shard_dir(&self, origin: u32) -> PathBuf {
        self.dir.join(origin.to_string())
    }

    /// Every kept shard: (origin, version).
    pub fn kept(&self) -> Vec<(u32, u32)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| read_record(&entry.path()).ok())
            .map(|record| (record.origin, record.manifest.version))
            .collect()
    }

    /// The exploration to search shard `origin` at version `texts.len()`
    /// with: the kept one when it is complete for a prefix of `texts`,
    /// otherwise a temporary one, kept afterwards if it is large enough
    /// (unless the kept shard is already past this version).
    pub fn open(&self, origin: u32, texts: &[String]) -> Result<ShardSearch> {
        let dir = self.shard_dir(origin);
        let scope = Scope::Origin(Token(origin));
        let version = texts.len() as u32;
        let fresh = |may_keep| -> Result<ShardSearch> {
            Ok(ShardSearch {
                exploration: Exploration::temporary(&self.scratch, scope.clone())?,
                base_version: 0,
                kept: false,
                may_keep,
            })
        };
        match read_record(&dir) {
            Ok(record) if record.origin == origin && record.manifest.version >= version => {
                // A newer search is kept; leave it be.
                return fresh(false);
            }
            Ok(record)
                if record.origin == origin
                    && texts.starts_with(&record.texts)
                    && record.texts.len() as u32 == record.manifest.version =>
            {
                let base_version = record.manifest.version;
                match Exploration::open(&dir, scope.clone(), record.manifest) {
                    Ok(mut exploration) => {
                        exploration.set_durable(false);
                        // The record no longer describes the log once it
                        // grows; it is written again when the search is done.
                        remove_record(&dir)?;
                        return Ok(ShardSearch {
                            exploration,
                            base_version,
                            kept: true,
                            may_keep: true,
                        });
                    }
                    Err(error) => {
                        tracing::warn!(origin, %error, "kept shard is unusable; searching afresh");
                    }
                }
            }
            Ok(_) => tracing::info!(origin, "kept shard is for other texts; searching afresh"),
            Err(_) => {}
        }
        // Whatever is there is of no use: discard it.
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("cannot remove {}", dir.display()), e))?;
        }
        fresh(true)
    }

    /// After `search` brought shard `origin` up to `texts`, keeps it if it
    /// is a kept shard or large enough to become one. Returns whether it is kept.
    pub fn keep(&self, origin: u32, texts: &[String], search: &mut ShardSearch) -> Result<bool> {
        let dir = self.shard_dir(origin);
        let exploration = &mut search.exploration;
        if !search.kept {
            let orthos = exploration.manifest().orthos();
            if !search.may_keep || orthos < self.keep_from {
                return Ok(false);
            }
            exploration.persist(&dir)?;
            search.kept = true;
        }
        let compacted = exploration.wants_compaction();
        if compacted {
            exploration.compact()?;
        }
        let record = ShardRecord {
            origin,
            texts: texts.to_vec(),
            manifest: exploration.manifest().clone(),
        };
        let json = serde_json::to_vec(&record).expect("records serialise");
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

fn read_record(dir: &Path) -> Result<ShardRecord> {
    let path = dir.join(RECORD);
    let bytes = std::fs::read(&path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadState(format!("{} is damaged: {e}", path.display())))
}

fn remove_record(dir: &Path) -> Result<()> {
    let path = dir.join(RECORD);
    std::fs::remove_file(&path)
        .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))
}
