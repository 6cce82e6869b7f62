//! Online backups and restores of the whole database.
//!
//! A backup is a RocksDB checkpoint taken while hookd runs: RocksDB flushes the memtables, then
//! hard-links the table files (copies them when the target is on another file system) and
//! copies the live WAL into a new directory, all under its own consistency guarantee: the copy
//! holds exactly the writes that completed before the checkpoint was cut. Every event whose
//! ingest was acknowledged before the backup began is in it, with its deliveries pending or
//! final as they stood; attempt results stored after the cut are simply made again after a
//! restore (at least once).
//!
//! A restore copies such a directory into an empty `storage.path`; the daemon, started on it,
//! recovers as after any restart.
//!
//! Invariants: a backup never overwrites anything (its directory must not exist); a restore
//! never writes into a data directory that holds anything.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("path: {0} already exists; a backup goes into a new directory")]
    Exists(String),
    #[error("path: {0}")]
    Path(String),
    #[error("{0} is not a hookd backup (no RocksDB CURRENT file in it)")]
    NotABackup(String),
    #[error("storage.path {0} is not empty; restore only into an empty or missing directory")]
    NotEmpty(String),
    #[error("backup: {0}")]
    Engine(String),
    #[error("backup: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    /// RocksDB's last sequence number when the checkpoint was cut.
    pub sequence: u64,
    pub files: usize,
    pub bytes: u64,
    pub took_ms: u64,
}

fn contents(dir: &Path) -> std::io::Result<(usize, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

impl Store {
    /// Writes a consistent checkpoint of the running database into `path`, a directory that
    /// must not exist yet and whose parent must. Blocks on disk.
    pub fn backup(&self, path: &Path) -> Result<Backup, BackupError> {
        if !path.is_absolute() {
            return Err(BackupError::Path(format!(
                "{} is not an absolute path",
                path.display()
            )));
        }
        if path.exists() {
            return Err(BackupError::Exists(path.display().to_string()));
        }
        match path.parent() {
            Some(parent) if parent.is_dir() => {}
            _ => {
                return Err(BackupError::Path(format!(
                    "the parent directory of {} does not exist",
                    path.display()
                )))
            }
        }
        let started = Instant::now();
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)
            .map_err(|e| BackupError::Engine(e.into_string()))?;
        // The sequence read just before the cut: every write at or below it is in the copy.
        let sequence = self.db.latest_sequence_number();
        checkpoint
            .create_checkpoint(path)
            .map_err(|e| BackupError::Engine(e.into_string()))?;
        let (files, bytes) = contents(path)?;
        Ok(Backup {
            path: path.to_path_buf(),
            sequence,
            files,
            bytes,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// Installs the backup in `from` as the database of `storage_path` (missing or empty), as
/// [`Store::open`] expects it (`storage_path/db`, the directory at mode 0700), and checks that
/// RocksDB can read what was copied. Returns the files and bytes copied.
pub fn restore(from: &Path, storage_path: &Path) -> Result<(usize, u64), BackupError> {
    if !from.join("CURRENT").is_file() {
        return Err(BackupError::NotABackup(from.display().to_string()));
    }
    if storage_path.exists() && std::fs::read_dir(storage_path)?.next().is_some() {
        return Err(BackupError::NotEmpty(storage_path.display().to_string()));
    }
    std::fs::create_dir_all(storage_path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(storage_path, std::fs::Permissions::from_mode(0o700))?;
    }
    let db = storage_path.join("db");
    std::fs::create_dir(&db)?;
    let mut files = 0;
    let mut bytes = 0;
    // Each copied file, then the directory, reaches the disk before the restore says it is done.
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.metadata()?.is_file() {
            let to = db.join(entry.file_name());
            bytes += std::fs::copy(entry.path(), &to)?;
            std::fs::File::open(&to)?.sync_all()?;
            files += 1;
        }
    }
    std::fs::File::open(&db)?.sync_all()?;
    rocksdb::DB::list_cf(&rocksdb::Options::default(), &db)
        .map_err(|e| BackupError::Engine(format!("the copy does not open: {}", e.into_string())))?;
    Ok((files, bytes))
}
