//! Who has a SQLite database open: every process that opens it holds a
//! shared lock on `<file>.instance-lock`; `relais restore` takes it
//! exclusively, so it refuses while any server (or command) has the file
//! open, and a server refuses to start while a restore runs.
//!
//! Why a lock file of our own rather than SQLite's locks: in WAL mode an
//! idle server holds no SQLite lock at all, so `BEGIN EXCLUSIVE` succeeds
//! beside a running server. `flock(2)` locks (Rust's `File::lock_shared`)
//! belong to the open file and are released by the kernel when the process
//! exits, however it exits: a crashed server leaves no stale lock behind.
//! They are advisory and local: a database on a network file system shared
//! by several hosts is not protected (nor supported by SQLite's WAL).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The lock file of the SQLite database at `db`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".instance-lock");
    PathBuf::from(name)
}

/// A held lock on a database's lock file; released when dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    fn open(db: &Path) -> anyhow::Result<File> {
        let path = lock_path(db);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))
    }

    /// Shared: any number of servers and commands at once, no restore.
    pub fn shared(db: &Path) -> anyhow::Result<Self> {
        let file = Self::open(db)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "{} is being restored (relais restore holds {}); try again when it is done",
                db.display(),
                lock_path(db).display()
            ),
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("locking {}: {e}", lock_path(db).display())
            }
        }
    }

    /// Exclusive: refused while any process has the database open.
    pub fn exclusive(db: &Path) -> anyhow::Result<Self> {
        let file = Self::open(db)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "{} is in use by a running Relais instance (it holds {}): stop every \
                 instance on this database before restoring",
                db.display(),
                lock_path(db).display()
            ),
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("locking {}: {e}", lock_path(db).display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_exclude_the_exclusive_one_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let a = InstanceLock::shared(&db).unwrap();
        let b = InstanceLock::shared(&db).unwrap();
        let err = InstanceLock::exclusive(&db).unwrap_err().to_string();
        assert!(err.contains("running Relais instance"), "{err}");
        drop((a, b));
        let restore = InstanceLock::exclusive(&db).unwrap();
        let err = InstanceLock::shared(&db).unwrap_err().to_string();
        assert!(err.contains("being restored"), "{err}");
        drop(restore);
        InstanceLock::shared(&db).unwrap();
    }
}
