//! The chain anchored outside the database: signed checkpoints in a file.
//!
//! The hash chain proves that no stored row was edited, or removed from the
//! middle. It cannot prove that none was removed from the end: someone with
//! write access to the database can delete the newest rows and set
//! `audit_head` back (after dropping its trigger), and the shorter chain is
//! still a valid chain. So each instance appends the head it committed —
//! `(seq, hash, time)`, signed with HMAC-SHA256 — to
//! `<data_dir>/audit_checkpoints`, at most once per
//! `audit.checkpoint_interval_ms`, and `relais audit verify` requires every
//! checkpoint's row to be in the chain with that hash. A checkpoint's hash
//! covers every row before it, so one checkpoint vouches for the whole chain
//! up to its row.
//!
//! The key is `<data_dir>/audit_anchor_key` (32 random bytes, hex, made on
//! first run with mode 0600): never in the database, so write access to the
//! database is not enough to forge a checkpoint. It is not derived from
//! `auth.jwt_secret` on purpose: that secret is often handed around in the
//! environment, and rotating it (after a leak, say) must not make every past
//! checkpoint unverifiable.
//!
//! Off the commit path: the database writer only records the head it has
//! just committed in a [`CommittedHead`] (a mutex and a condvar); the
//! [`Anchor`] thread appends the line and fsyncs it, once per interval at
//! most, and nothing when the head has not moved.
//!
//! Growth: a line is about 165 bytes (`v1`, seq, time to the second, two
//! 64-digit hex values). Writing one every second all day would be 86 400
//! lines, 14 MB; so every [`COMPACT_AFTER`] lines this process appends, the
//! file is compacted to its last [`KEEP_RECENT`] lines plus the last line of
//! every UTC hour before them. It stays under ~0.7 MB plus 24 lines (~4 KB)
//! per day of history, about 1.4 MB a year. Several instances may share a
//! data directory: appends and compaction take a lock on
//! `audit_checkpoints.lock`, and each append reopens the file, so none is
//! lost to another's compaction.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::Clock;
#[cfg(test)]
use crate::db::chain::ChainHead;
use crate::db::chain::CommittedHead;

/// The key file, in the data directory.
pub const KEY_FILE: &str = "audit_anchor_key";
/// The checkpoint file, in the data directory.
pub const CHECKPOINT_FILE: &str = "audit_checkpoints";
/// Taken (exclusively) around each append and compaction.
const LOCK_FILE: &str = "audit_checkpoints.lock";
/// The first field of every line: the format, and what the MAC covers.
const VERSION: &str = "v1";
/// How a checkpoint's time is written (UTC, to the second).
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";
/// Lines kept whole by a compaction (ten minutes' worth at one per second).
pub const KEEP_RECENT: usize = 600;
/// Lines this process appends between two compactions (an hour's worth).
pub const COMPACT_AFTER: usize = 3600;

type HmacSha256 = Hmac<Sha256>;

/// The checkpoint signing key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AnchorKey([u8; 32]);

impl std::fmt::Debug for AnchorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnchorKey(<redacted>)")
    }
}

impl AnchorKey {
    /// A key from its 32 bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads `<dir>/audit_anchor_key`, or makes it (mode 0600) on first run.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        if let Some(key) = Self::load(dir)? {
            return Ok(key);
        }
        fs::create_dir_all(dir)?;
        let path = dir.join(KEY_FILE);
        let bytes: [u8; 32] = rand::random();
        // Written aside then linked into place: the link is atomic and fails
        // if the key exists, so two instances starting together on one data
        // directory end up with the same, complete key.
        let aside = dir.join(format!("{KEY_FILE}.{}.tmp", uuid::Uuid::now_v7().simple()));
        let written = write_private(&aside, &format!("{}\n", hex::encode(bytes)))
            .and_then(|()| fs::hard_link(&aside, &path));
        let _ = fs::remove_file(&aside);
        match written {
            Ok(()) => {
                tracing::info!(path = %path.display(), "generated the audit anchor key");
                Ok(Self(bytes))
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Self::load(dir)?
                .ok_or_else(|| anyhow::anyhow!("{} vanished while starting", path.display())),
            Err(err) => Err(anyhow::anyhow!("writing {}: {err}", path.display())),
        }
    }

    /// Reads `<dir>/audit_anchor_key`; `None` when there is none.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(KEY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => anyhow::bail!("reading {}: {err}", path.display()),
        };
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| anyhow::anyhow!("{} is not 64 hexadecimal digits", path.display()))?;
        Ok(Some(Self(bytes)))
    }

    fn mac(&self, text: &str) -> HmacSha256 {
        // An HMAC takes a key of any length: this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        mac
    }
}

/// Creates `path` with mode 0600; fails if it exists.
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// One anchored point of the chain: row `seq` had hash `hash` at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub at: DateTime<Utc>,
}

/// Why a line of the checkpoint file was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a checkpoint line (a torn write, or an edit): as good as absent.
    #[error("not a checkpoint line ({0})")]
    Malformed(&'static str),
    /// A well-formed line whose signature does not match: forged or altered.
    #[error("its signature does not match (forged, altered, or signed with another key)")]
    BadSignature,
}

impl Checkpoint {
    /// The text the MAC covers.
    fn signed_text(&self) -> String {
        format!(
            "{VERSION} {} {} {}",
            self.seq,
            self.at.format(TIME_FORMAT),
            self.hash
        )
    }

    /// The line stored for this checkpoint, newline included.
    pub fn to_line(&self, key: &AnchorKey) -> String {
        let text = self.signed_text();
        let mac = hex::encode(key.mac(&text).finalize().into_bytes());
        format!("{text} {mac}\n")
    }

    /// Parses one line (without its newline) and checks its signature.
    pub fn parse_line(line: &str, key: &AnchorKey) -> Result<Self, LineError> {
        let fields: Vec<&str> = line.split(' ').collect();
        let [version, seq, at, hash, mac] = fields[..] else {
            return Err(LineError::Malformed("expected five fields"));
        };
        if version != VERSION {
            return Err(LineError::Malformed("unknown version"));
        }
        let seq: i64 = seq
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .ok_or(LineError::Malformed("seq"))?;
        let at = NaiveDateTime::parse_from_str(at, TIME_FORMAT)
            .map_err(|_| LineError::Malformed("time"))?
            .and_utc();
        if !is_hex64(hash) {
            return Err(LineError::Malformed("hash"));
        }
        if !is_hex64(mac) {
            return Err(LineError::Malformed("signature"));
        }
        let mac = hex::decode(mac).map_err(|_| LineError::Malformed("signature"))?;
        let checkpoint = Self {
            seq,
            hash: hash.to_owned(),
            at,
        };
        // Constant time: the comparison leaks nothing about the right MAC.
        key.mac(&checkpoint.signed_text())
            .verify_slice(&mac)
            .map_err(|_| LineError::BadSignature)?;
        Ok(checkpoint)
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The checkpoints a file holds.
#[derive(Debug, Default)]
pub struct Checkpoints {
    pub valid: Vec<Checkpoint>,
    /// Lines that are not checkpoints (a torn last write after a crash, an
    /// edit): skipped, since removing a line is no harder than garbling it.
    pub unreadable: usize,
}

/// A line whose signature does not check out.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ForgedLine {
    pub line: usize,
    pub reason: LineError,
}

/// Parses a checkpoint file's contents; a forged line fails the whole file.
pub fn parse_checkpoints(bytes: &[u8], key: &AnchorKey) -> Result<Checkpoints, ForgedLine> {
    let mut found = Checkpoints::default();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let parsed = std::str::from_utf8(line)
            .map_err(|_| LineError::Malformed("not UTF-8"))
            .and_then(|line| Checkpoint::parse_line(line, key));
        match parsed {
            Ok(checkpoint) => found.valid.push(checkpoint),
            Err(LineError::Malformed(_)) => found.unreadable += 1,
            Err(reason @ LineError::BadSignature) => {
                return Err(ForgedLine {
                    line: i + 1,
                    reason,
                });
            }
        }
    }
    Ok(found)
}

/// The checkpoint file of a data directory.
pub fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CHECKPOINT_FILE)
}

/// Reads and checks the checkpoints of a data directory (none when it has
/// no checkpoint file). Errors name the file and the line.
pub fn load_checkpoints(data_dir: &Path) -> anyhow::Result<Checkpoints> {
    let path = checkpoint_path(data_dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Checkpoints::default()),
        Err(err) => anyhow::bail!("reading {}: {err}", path.display()),
    };
    let key = AnchorKey::load(data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} exists but {} does not: its checkpoints cannot be checked",
            path.display(),
            data_dir.join(KEY_FILE).display()
        )
    })?;
    parse_checkpoints(&bytes, &key)
        .map_err(|err| anyhow::anyhow!("audit checkpoints {}, {err}", path.display()))
}

/// Which lines a compaction keeps: the last [`KEEP_RECENT`], the last of
/// each UTC hour before them, and any line it cannot read (left for
/// `verify` to judge, never silently dropped).
pub fn kept_by_compaction(lines: &[&str]) -> Vec<bool> {
    let recent_from = lines.len().saturating_sub(KEEP_RECENT);
    let hour_of = |line: &str| -> Option<String> {
        let at = line.split(' ').nth(2)?;
        NaiveDateTime::parse_from_str(at, TIME_FORMAT)
            .ok()
            .map(|t| t.format("%Y-%m-%dT%H").to_string())
    };
    let hours: Vec<Option<String>> = lines.iter().map(|l| hour_of(l)).collect();
    let mut last_of_hour = std::collections::HashMap::new();
    for (i, hour) in hours.iter().enumerate() {
        if let Some(hour) = hour {
            last_of_hour.insert(hour.as_str(), i);
        }
    }
    hours
        .iter()
        .enumerate()
        .map(|(i, hour)| {
            i >= recent_from
                || hour
                    .as_deref()
                    .is_none_or(|h| last_of_hour.get(h) == Some(&i))
        })
        .collect()
}

/// The file, its lock, and how many lines this process appended since it
/// last compacted it.
struct CheckpointFile {
    dir: PathBuf,
    path: PathBuf,
    lock: File,
    appended: usize,
    /// [`COMPACT_AFTER`], but for tests.
    compact_after: usize,
}

impl CheckpointFile {
    fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path: checkpoint_path(dir),
            lock,
            appended: 0,
            compact_after: COMPACT_AFTER,
        })
    }

    /// Appends one line durably (fsync), compacting when it is time.
    fn append(&mut self, line: &str) -> io::Result<()> {
        self.lock.lock()?;
        let result = self.append_locked(line);
        let _ = self.lock.unlock();
        result
    }

    fn append_locked(&mut self, line: &str) -> io::Result<()> {
        let created = !self.path.exists();
        // Reopened each time: another instance's compaction may have
        // replaced the file since.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)?;
        let mut text = String::with_capacity(line.len() + 1);
        if !ends_with_newline(&mut file)? {
            // A torn line from a crash stays a line of its own.
            text.push('\n');
        }
        text.push_str(line);
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        if created {
            sync_dir(&self.dir)?;
        }
        self.appended += 1;
        if self.appended >= self.compact_after {
            self.appended = 0;
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with the lines [`kept_by_compaction`] keeps.
    fn compact(&self) -> io::Result<()> {
        let bytes = fs::read(&self.path)?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let keep = kept_by_compaction(&lines);
        let mut out = String::with_capacity(bytes.len() / 4);
        for (line, keep) in lines.iter().zip(keep) {
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        let aside = self.dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        {
            let mut file = File::create(&aside)?;
            file.write_all(out.as_bytes())?;
            file.sync_all()?;
        }
        fs::rename(&aside, &self.path)?;
        sync_dir(&self.dir)
    }
}

fn ends_with_newline(file: &mut File) -> io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Makes a file's creation or renaming in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The thread that appends checkpoints.
pub struct Anchor {
    committed: Arc<CommittedHead>,
    thread: Option<JoinHandle<()>>,
}

impl Anchor {
    /// Starts anchoring the heads published to `committed` in `data_dir`.
    pub fn start(
        data_dir: &Path,
        key: AnchorKey,
        interval: Duration,
        committed: Arc<CommittedHead>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let file = CheckpointFile::open(data_dir)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", data_dir.display()))?;
        let heads = committed.clone();
        let thread = std::thread::Builder::new()
            .name("relais-audit-anchor".into())
            .spawn(move || run(file, &key, interval, &heads, &*clock))?;
        Ok(Self {
            committed,
            thread: Some(thread),
        })
    }

    /// Writes the last committed head, if not yet written, and stops.
    /// Blocking (an fsync): call it off the async workers.
    pub fn finish(mut self) {
        self.committed.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        // Not joined here: dropping must not block an async worker.
        if self.thread.is_some() {
            self.committed.stop();
        }
    }
}

fn run(
    mut file: CheckpointFile,
    key: &AnchorKey,
    interval: Duration,
    committed: &CommittedHead,
    clock: &dyn Clock,
) {
    let mut written = 0i64;
    loop {
        let (head, stopping) = committed.wait_past(written);
        if let Some(head) = head {
            let checkpoint = Checkpoint {
                seq: head.seq,
                hash: head.hash,
                at: clock.now(),
            };
            match file.append(&checkpoint.to_line(key)) {
                Ok(()) => {
                    written = checkpoint.seq;
                    tracing::debug!(seq = checkpoint.seq, "audit checkpoint written");
                }
                // Retried with the next head; the chain itself is unharmed.
                Err(err) => tracing::error!(
                    error = %err,
                    path = %file.path.display(),
                    "writing an audit checkpoint failed"
                ),
            }
        }
        if stopping {
            return;
        }
        // At most one checkpoint per interval: wait out the rest of it,
        // unless asked to stop (then write the last head at once).
        committed.wait_stopping(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> AnchorKey {
        AnchorKey::from_bytes([byte; 32])
    }

    fn checkpoint(seq: i64, at: &str) -> Checkpoint {
        Checkpoint {
            seq,
            hash: format!("{:064x}", seq * 7919),
            at: NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc(),
        }
    }

    #[test]
    fn a_line_reads_back_as_its_checkpoint() {
        let cp = checkpoint(42, "2026-12-01 08:15:00");
        let line = cp.to_line(&key(1));
        assert!(line.ends_with('\n'));
        assert!(line.starts_with("v1 42 2026-12-01T08:15:00Z "), "{line}");
        // The size the growth figures in the module doc assume.
        assert!((150..=175).contains(&line.len()), "{}", line.len());
        assert_eq!(Checkpoint::parse_line(line.trim_end(), &key(1)), Ok(cp));
    }

    #[test]
    fn any_change_to_a_line_breaks_its_signature() {
        let cp = checkpoint(42, "2026-12-01 08:15:00");
        let line = cp.to_line(&key(1));
        let line = line.trim_end();
        let hash = cp.hash.clone();
        let other_hash = format!("{:064x}", 1);
        let altered = [
            line.replacen("v1 42 ", "v1 43 ", 1),
            line.replacen("08:15:00Z", "08:15:01Z", 1),
            line.replacen(&hash, &other_hash, 1),
        ];
        for forged in &altered {
            assert_ne!(forged, line);
            assert_eq!(
                Checkpoint::parse_line(forged, &key(1)),
                Err(LineError::BadSignature),
                "{forged}"
            );
        }
        // Another key: the line is well formed but not ours.
        assert_eq!(
            Checkpoint::parse_line(line, &key(2)),
            Err(LineError::BadSignature)
        );
        // A signature flipped in its last digit.
        let mut flipped = line.to_owned();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            Checkpoint::parse_line(&flipped, &key(1)),
            Err(LineError::BadSignature)
        );
    }

    #[test]
    fn malformed_lines_are_told_apart_from_forged_ones() {
        let good = checkpoint(5, "2026-12-01 08:15:00").to_line(&key(1));
        let good = good.trim_end();
        let cases = [
            "",
            "v1",
            &good[..good.len() - 10], // a torn write
            &good.replacen("v1 ", "v2 ", 1),
            &good.replacen("v1 5 ", "v1 0 ", 1),
            &good.replacen("v1 5 ", "v1 -5 ", 1),
            &good.replacen("v1 5 ", "v1 five ", 1),
            &good.replacen("T08:15:00Z", "T25:15:00Z", 1),
            &good.replacen(' ', "  ", 1),
            &format!("{good} extra"),
            &good.to_uppercase(),
        ];
        for line in cases {
            assert!(
                matches!(
                    Checkpoint::parse_line(line, &key(1)),
                    Err(LineError::Malformed(_))
                ),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_file_with_a_forged_line_names_it_and_torn_lines_are_skipped() {
        let k = key(1);
        let mut file = String::new();
        file.push_str(&checkpoint(1, "2026-12-01 08:00:00").to_line(&k));
        file.push_str(&checkpoint(2, "2026-12-01 08:00:01").to_line(&k));
        let torn = checkpoint(3, "2026-12-01 08:00:02").to_line(&k);
        file.push_str(&torn[..40]);
        file.push('\n');
        file.push_str(&checkpoint(4, "2026-12-01 08:00:03").to_line(&k));
        let found = parse_checkpoints(file.as_bytes(), &k).unwrap();
        assert_eq!(
            found.valid.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [1, 2, 4]
        );
        assert_eq!(found.unreadable, 1);
        // Not UTF-8: unreadable, not a failure.
        let mut bytes = file.clone().into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\n");
        assert_eq!(parse_checkpoints(&bytes, &k).unwrap().unreadable, 2);

        file.push_str(&checkpoint(5, "2026-12-01 08:00:04").to_line(&key(9)));
        let err = parse_checkpoints(file.as_bytes(), &k).unwrap_err();
        assert_eq!(err.line, 5);
        assert_eq!(err.reason, LineError::BadSignature);
    }

    #[test]
    fn compaction_keeps_the_recent_lines_and_the_last_of_each_hour() {
        let k = key(1);
        let start = NaiveDateTime::parse_from_str("2026-12-01 06:00:00", "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc();
        // Three hours at one line every 3 s, then a line no one can read.
        let mut lines: Vec<String> = (0..3600i64)
            .map(|i| {
                Checkpoint {
                    seq: i + 1,
                    hash: format!("{i:064x}"),
                    at: start + chrono::Duration::seconds(3 * i),
                }
                .to_line(&k)
                .trim_end()
                .to_owned()
            })
            .collect();
        lines.insert(10, "garbage".into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let keep = kept_by_compaction(&refs);
        let kept: Vec<&str> = refs
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(l, _)| *l)
            .collect();
        // 06:59:57 and 07:59:57 (the last of their hours), the garbage, then
        // the 600 most recent (all in hour 08).
        assert_eq!(kept.len(), 2 + 1 + KEEP_RECENT, "{kept:?}");
        assert_eq!(kept[0], "garbage");
        assert!(kept[1].contains("T06:59:57Z"), "{}", kept[1]);
        assert!(kept[2].contains("T07:59:57Z"), "{}", kept[2]);
        assert_eq!(kept.last(), refs.last());
        // Compacting again drops nothing more.
        let again = kept_by_compaction(&kept);
        assert!(again.iter().all(|k| *k));
    }

    #[test]
    fn the_file_is_appended_compacted_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let k = AnchorKey::load_or_create(dir.path()).unwrap();
        let mut file = CheckpointFile::open(dir.path()).unwrap();
        // Sooner than in service, to spare the test thousands of fsyncs.
        file.compact_after = KEEP_RECENT + 50;
        let start = NaiveDateTime::parse_from_str("2026-12-01 06:00:00", "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc();
        for i in 0..(file.compact_after as i64 + 10) {
            let cp = Checkpoint {
                seq: i + 1,
                hash: format!("{i:064x}"),
                at: start + chrono::Duration::seconds(i),
            };
            file.append(&cp.to_line(&k)).unwrap();
        }
        let found = load_checkpoints(dir.path()).unwrap();
        assert_eq!(found.unreadable, 0);
        // Compacted once, after line 650 (all in hour 06, whose last line
        // is among the recent ones), then ten more appended.
        assert_eq!(found.valid.len(), KEEP_RECENT + 10);
        assert_eq!(found.valid.last().unwrap().seq, KEEP_RECENT as i64 + 60);
        assert_eq!(found.valid[0].seq, 51);

        // A torn write is isolated on its own line by the next append.
        let path = checkpoint_path(dir.path());
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(b"v1 99 2026").unwrap();
        let next = checkpoint(9999, "2026-12-01 09:00:00");
        file.append(&next.to_line(&k)).unwrap();
        let found = load_checkpoints(dir.path()).unwrap();
        assert_eq!(found.unreadable, 1);
        assert_eq!(found.valid.last(), Some(&next));
    }

    #[test]
    fn the_key_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AnchorKey::load(dir.path()).unwrap().is_none());
        let made = AnchorKey::load_or_create(dir.path()).unwrap();
        let again = AnchorKey::load_or_create(dir.path()).unwrap();
        assert_eq!(made.0, again.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = fs::metadata(dir.path().join(KEY_FILE)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [KEY_FILE]);
        assert!(!format!("{made:?}").contains(&hex::encode(made.0)));

        fs::write(dir.path().join(KEY_FILE), "not hex\n").unwrap();
        let err = AnchorKey::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(KEY_FILE), "{err}");
    }

    #[test]
    fn checkpoints_without_their_key_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_checkpoints(dir.path()).unwrap().valid.is_empty());
        fs::write(
            checkpoint_path(dir.path()),
            checkpoint(1, "2026-12-01 08:00:00").to_line(&key(1)),
        )
        .unwrap();
        let err = load_checkpoints(dir.path()).unwrap_err().to_string();
        assert!(err.contains(KEY_FILE), "{err}");
    }

    #[test]
    fn the_anchor_writes_at_most_once_per_interval_and_the_last_head_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let k = AnchorKey::load_or_create(dir.path()).unwrap();
        let committed = Arc::new(CommittedHead::default());
        let anchor = Anchor::start(
            dir.path(),
            k,
            Duration::from_secs(3600),
            committed.clone(),
            Arc::new(crate::clock::SystemClock),
        )
        .unwrap();
        let head = |seq: i64| ChainHead {
            seq,
            hash: format!("{seq:064x}"),
        };
        committed.publish(head(1));
        // The first head is written at once...
        for _ in 0..200 {
            if load_checkpoints(dir.path()).unwrap().valid.len() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // ...the next ones wait for the interval, and only the last counts.
        for seq in 2..=50 {
            committed.publish(head(seq));
        }
        committed.publish(head(7)); // older: ignored
        std::thread::sleep(Duration::from_millis(50));
        let seqs = |dir: &Path| -> Vec<i64> {
            load_checkpoints(dir)
                .unwrap()
                .valid
                .iter()
                .map(|c| c.seq)
                .collect()
        };
        assert_eq!(seqs(dir.path()), [1]);
        anchor.finish();
        assert_eq!(seqs(dir.path()), [1, 50]);
        assert_eq!(committed.latest().map(|h| h.seq), Some(50));
    }
}
