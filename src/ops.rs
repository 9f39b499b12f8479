//! Backups and restores: `relais backup` and `relais restore`.
//!
//! A backup is the database and its audit anchor: the signed checkpoints
//! and the key that signs them (`audit::anchor`), without which nobody can
//! tell that rows were removed from the end of the restored chain.
//!
//! - `relais backup --to FILE` writes `FILE.anchor/` (the checkpoint file
//!   and the key, as in a data directory) and then, on SQLite, `FILE`: a
//!   consistent copy taken with `VACUUM INTO` in one read transaction, so
//!   it runs beside live servers (who keep writing meanwhile) and holds every
//!   write committed before it started. The checkpoints are read *before*
//!   the copy is taken: each names a row committed before it was written,
//!   so the copy holds every row they name. The copy is verified against
//!   them before the command reports success. On PostgreSQL it writes the
//!   anchor folder and prints the `pg_dump` to run next (in that order, for
//!   the same reason); `relais audit verify --anchor FILE.anchor` against a
//!   database restored from that dump checks it.
//! - `relais restore --from FILE` (SQLite) takes the database's instance
//!   lock exclusively (`db::lock`: refused while any server has the file
//!   open), verifies the copy, moves the current database and anchor aside
//!   (`*.before-restore-<time>`: nothing is deleted), puts the copy and its
//!   anchor in place, and verifies the result as `relais audit verify` does.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::audit::anchor::{self, AnchorKey, CHECKPOINT_FILE, KEY_FILE};
use crate::audit::{self, Verdict};
use crate::config::Settings;
use crate::db::lock::InstanceLock;
use crate::db::{self, ConnectionManager, DbConnection};

/// The anchor folder written beside a backup `FILE`.
pub fn anchor_dir(backup: &Path) -> PathBuf {
    let mut name = backup.as_os_str().to_owned();
    name.push(".anchor");
    PathBuf::from(name)
}

/// What a backup or a restore did.
#[derive(Debug)]
pub struct Report {
    /// Audit rows in the verified copy.
    pub rows: i64,
    /// Checkpoints it was verified against.
    pub checkpoints: usize,
    /// Whether a database was verified here (not on PostgreSQL's backup,
    /// whose dump the operator takes next).
    pub verified: bool,
    /// What the operator should read (and, on PostgreSQL, run).
    pub lines: Vec<String>,
}

/// Copies the anchor of `data_dir` into `to` (created, mode 0700 on unix),
/// returning the checkpoints read (checked with the key).
fn copy_anchor(data_dir: &Path, to: &Path) -> anyhow::Result<anchor::Checkpoints> {
    let key = AnchorKey::load(data_dir)?;
    let bytes = match fs::read(anchor::checkpoint_path(data_dir)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => anyhow::bail!(
            "reading {}: {e}",
            anchor::checkpoint_path(data_dir).display()
        ),
    };
    let checkpoints = match &key {
        Some(key) => anchor::parse_checkpoints(&bytes, key).map_err(|e| {
            anyhow::anyhow!(
                "audit checkpoints {}, {e}",
                anchor::checkpoint_path(data_dir).display()
            )
        })?,
        None if bytes.is_empty() => anchor::Checkpoints::default(),
        None => anyhow::bail!(
            "{} exists but {} does not: its checkpoints cannot be checked",
            anchor::checkpoint_path(data_dir).display(),
            data_dir.join(KEY_FILE).display()
        ),
    };
    create_private_dir(to)?;
    write_new(&to.join(CHECKPOINT_FILE), &bytes, false)?;
    if key.is_some() {
        let text = fs::read(data_dir.join(KEY_FILE))?;
        write_new(&to.join(KEY_FILE), &text, true)?;
    }
    Ok(checkpoints)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))
}

/// Writes a new file (never over an existing one) and syncs it.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// A plain connection to a SQLite file (no pool, no writer thread): closed
/// for certain when dropped, before the file is moved.
fn open_sqlite(path: &Path) -> anyhow::Result<DbConnection> {
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")?;
    Ok(DbConnection::Sqlite(conn))
}

/// Migrates the SQLite copy at `path` to this version and verifies its
/// chain against `checkpoints`.
fn verify_copy(path: &Path, checkpoints: &[anchor::Checkpoint]) -> anyhow::Result<i64> {
    let mut conn = open_sqlite(path)?;
    db::run_migrations(&mut conn)?;
    match audit::verify_against(&mut conn, checkpoints)? {
        Verdict::Intact { rows } => Ok(rows),
        Verdict::Broken { seq, reason } => {
            anyhow::bail!(
                "the audit chain of {} is broken at row {seq}: {reason}",
                path.display()
            )
        }
    }
}

/// `relais backup --to FILE`.
pub fn backup(settings: &Settings, to: &Path) -> anyhow::Result<Report> {
    let anchor_to = anchor_dir(to);
    for path in [to, anchor_to.as_path()] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists: a backup never overwrites anything",
            path.display()
        );
    }
    let manager = ConnectionManager::new(&settings.database.url)?;
    // Shared, as a server's: a restore cannot start under the copy.
    let _lock = match manager.sqlite_path() {
        Some(path) => Some(InstanceLock::shared(path)?),
        None => None,
    };
    // First the anchor, then the database (see the module's doc).
    let checkpoints = copy_anchor(&settings.server.data_dir, &anchor_to).inspect_err(|_| {
        let _ = fs::remove_dir_all(&anchor_to);
    })?;
    let Some(db_path) = manager.sqlite_path() else {
        return Ok(Report {
            rows: 0,
            checkpoints: checkpoints.valid.len(),
            verified: false,
            lines: vec![
                format!("audit anchor written to {}", anchor_to.display()),
                "PostgreSQL: now run (the anchor first, the dump second, as here):".into(),
                format!(
                    "  pg_dump --format=custom --file={} \"$DATABASE_URL\"",
                    shell_word(&to.to_string_lossy())
                ),
                "to check it: restore it into a new database (createdb; pg_restore --dbname=…) and run".into(),
                format!(
                    "  RELAIS__DATABASE__URL=<that database> relais audit verify --anchor {}",
                    shell_word(&anchor_to.to_string_lossy())
                ),
            ],
        });
    };
    let partial = partial_path(to);
    let _ = fs::remove_file(&partial);
    let copied = (|| -> anyhow::Result<i64> {
        let mut conn = open_sqlite(db_path)?;
        if let DbConnection::Sqlite(lite) = &mut conn {
            diesel::sql_query("VACUUM INTO ?")
                .bind::<diesel::sql_types::Text, _>(partial.to_string_lossy().into_owned())
                .execute(lite)
                .map_err(|e| anyhow::anyhow!("copying {}: {e}", db_path.display()))?;
        }
        drop(conn);
        fs::File::open(&partial)?.sync_all()?;
        // Verified without migrating: the copy stays as it was taken.
        let mut conn = open_sqlite(&partial)?;
        match audit::verify_against(&mut conn, &checkpoints.valid)? {
            Verdict::Intact { rows } => Ok(rows),
            Verdict::Broken { seq, reason } => {
                anyhow::bail!("the copy's audit chain is broken at row {seq}: {reason}")
            }
        }
    })();
    let rows = match copied {
        Ok(rows) => rows,
        Err(err) => {
            // Nothing half-made is left behind: the next try starts afresh.
            let _ = fs::remove_file(&partial);
            let _ = fs::remove_dir_all(&anchor_to);
            return Err(err);
        }
    };
    fs::rename(&partial, to)?;
    sync_parent(to);
    Ok(Report {
        rows,
        checkpoints: checkpoints.valid.len(),
        verified: true,
        lines: vec![
            format!(
                "backup written to {} and its audit anchor to {}",
                to.display(),
                anchor_to.display()
            ),
            format!(
                "keep {} apart from the backup if you can: with it, checkpoints can be signed",
                anchor_to.join(KEY_FILE).display()
            ),
        ],
    })
}

/// `relais restore --from FILE` (SQLite).
pub fn restore(settings: &Settings, from: &Path) -> anyhow::Result<Report> {
    let manager = ConnectionManager::new(&settings.database.url)?;
    let Some(target) = manager.sqlite_path().map(Path::to_path_buf) else {
        anyhow::bail!(
            "database.url is PostgreSQL: restore with pg_restore into a new database, then \
             check it with `relais audit verify --anchor FILE.anchor` (see README, Operating Relais)"
        );
    };
    anyhow::ensure!(from.is_file(), "{} is not a file", from.display());
    let from_anchor = anchor_dir(from);
    let checkpoints = if from_anchor.is_dir() {
        anchor::load_checkpoints(&from_anchor)?
    } else {
        anyhow::bail!(
            "{} is missing: without the backup's audit anchor its chain cannot be checked",
            from_anchor.display()
        )
    };
    let lock = InstanceLock::exclusive(&target)?;
    let data_dir = &settings.server.data_dir;
    fs::create_dir_all(data_dir)?;

    // The copy goes next to the target first (same file system: the final
    // move is a rename) and is checked there.
    let staged = partial_path(&target);
    let _ = fs::remove_file(&staged);
    fs::copy(from, &staged).map_err(|e| anyhow::anyhow!("copying {}: {e}", from.display()))?;
    fs::File::open(&staged)?.sync_all()?;
    if let Err(err) = verify_copy(&staged, &checkpoints.valid) {
        let _ = fs::remove_file(&staged);
        return Err(err.context(format!("{} was not restored", from.display())));
    }

    // Nothing is deleted: the current database (with its WAL) and anchor
    // are moved aside.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut lines = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let current = with_suffix(&target, suffix);
        if current.exists() {
            let aside = with_suffix(
                &with_suffix(&target, &format!(".before-restore-{stamp}")),
                suffix,
            );
            fs::rename(&current, &aside)?;
            if suffix.is_empty() {
                lines.push(format!("the previous database is now {}", aside.display()));
            }
        }
    }
    fs::rename(&staged, &target)?;
    sync_parent(&target);
    for name in [CHECKPOINT_FILE, KEY_FILE] {
        let current = data_dir.join(name);
        let backed_up = from_anchor.join(name);
        let same = fs::read(&current).ok() == fs::read(&backed_up).ok();
        if current.exists() && !same {
            let aside = data_dir.join(format!("{name}.before-restore-{stamp}"));
            fs::rename(&current, &aside)?;
            lines.push(format!("the previous {name} is now {}", aside.display()));
        }
        if backed_up.exists() && !same {
            let bytes = fs::read(&backed_up)?;
            write_new(&current, &bytes, name == KEY_FILE)?;
        }
    }
    sync_parent(&data_dir.join(KEY_FILE));

    // As `relais audit verify` would, from the data directory.
    let installed = anchor::load_checkpoints(data_dir)?;
    let mut conn = open_sqlite(&target)?;
    let rows = match audit::verify_against(&mut conn, &installed.valid)? {
        Verdict::Intact { rows } => rows,
        Verdict::Broken { seq, reason } => {
            anyhow::bail!("after restoring, the audit chain is broken at row {seq}: {reason}")
        }
    };
    drop(conn);
    drop(lock);
    lines.insert(
        0,
        format!("{} restored to {}", from.display(), target.display()),
    );
    Ok(Report {
        rows,
        checkpoints: installed.valid.len(),
        verified: true,
        lines,
    })
}

/// Where a copy is written before it is complete and checked.
fn partial_path(path: &Path) -> PathBuf {
    with_suffix(path, ".partial")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes a rename in `path`'s folder durable (best effort).
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

/// `text` quoted for a POSIX shell when it needs it.
fn shell_word(text: &str) -> String {
    if text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(
            shell_word("/var/backups/relais.dump"),
            "/var/backups/relais.dump"
        );
        assert_eq!(shell_word("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_anchor_folder_sits_beside_the_backup() {
        assert_eq!(
            anchor_dir(Path::new("/b/relais-2026.db")),
            PathBuf::from("/b/relais-2026.db.anchor")
        );
    }
}
