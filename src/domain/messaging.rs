//! Messaging rules: what a message body may be, unread counting, read
//! markers, idempotency keys and the daily digest's day. No I/O.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

text_enum! {
    /// What a thread is about. Patients now; consultations and handovers get
    /// their thread with their own issue.
    SubjectType {
        Patient => "patient",
        Consultation => "consultation",
        Handover => "handover",
    }
}

/// The longest message body, in characters as sent.
pub const MAX_BODY_CHARS: usize = super::text::MESSAGE_MAX;

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::hours(24);

/// The longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A message body as stored: trimmed, 1 to 10 000 characters, free text
/// (see [`super::text`]: line breaks, tabs and emoji kept).
pub fn parse_body(raw: &str) -> Result<String, String> {
    use super::text::{Flavour, required};
    required(raw, "body", Flavour::Free, MAX_BODY_CHARS).map_err(|e| e.message)
}

/// A new message id, later than the thread's `last` one: a UUIDv7 from this
/// machine's clock or, when that clock is behind `last` (another instance's),
/// one millisecond after it. Ids in a thread then follow the order in which
/// posts commit (they are made under the thread's lock), so a reader paging
/// with `after=` never skips a message.
pub fn next_message_id(last: Option<&str>) -> String {
    let fresh = uuid::Uuid::now_v7().to_string();
    let Some(last) = last else { return fresh };
    if fresh.as_str() > last {
        return fresh;
    }
    let (secs, nanos) = uuid::Uuid::parse_str(last)
        .ok()
        .and_then(|u| u.get_timestamp())
        .map_or((0, 0), |t| t.to_unix());
    let millis = secs * 1000 + u64::from(nanos / 1_000_000) + 1;
    let at = uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1000,
        u32::try_from(millis % 1000).unwrap_or(0) * 1_000_000,
    );
    uuid::Uuid::new_v7(at).to_string()
}

/// Whether a message counts as unread for `reader`: written by someone else,
/// after the reader's marker. (The SQL of unread counts says the same.)
pub fn is_unread(message_id: &str, author_id: &str, reader_id: &str, marker: Option<&str>) -> bool {
    author_id != reader_id && marker.is_none_or(|m| message_id > m)
}

/// The marker after a reader says they have read up to `up_to`: it only
/// moves forward (ids are UUIDv7, ordered by time); `None` means unchanged.
pub fn advance_marker(current: Option<&str>, up_to: &str) -> Option<String> {
    match current {
        Some(current) if current >= up_to => None,
        _ => Some(up_to.to_owned()),
    }
}

/// Checks an `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub fn parse_idempotency_key(raw: &[u8]) -> Result<String, String> {
    if raw.is_empty() || raw.len() > MAX_KEY_LEN {
        return Err(format!("must have 1 to {MAX_KEY_LEN} characters"));
    }
    if !raw.iter().all(|b| b.is_ascii_graphic()) {
        return Err("only visible ASCII characters are allowed".into());
    }
    Ok(String::from_utf8_lossy(raw).into_owned())
}

/// What a request is, for idempotency: the operation, its target and its
/// (parsed, not byte-for-byte) content.
pub fn fingerprint(operation: &str, target: &str, content: &str) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in [operation, target, content].iter().enumerate() {
        if i > 0 {
            hasher.update(b"\x1f");
        }
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// What to do with a request whose key was seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyReuse {
    /// The same request again: answer as the first time, change nothing.
    Replay,
    /// Another request under the same key: refuse it.
    Conflict,
}

/// Compares a request with the one first stored under its key.
pub fn key_reuse(stored_fingerprint: &str, fingerprint: &str) -> KeyReuse {
    if stored_fingerprint == fingerprint {
        KeyReuse::Replay
    } else {
        KeyReuse::Conflict
    }
}

/// Whether a key stored at `created_at` is forgotten by `now`.
pub fn key_expired(created_at: NaiveDateTime, now: NaiveDateTime) -> bool {
    now - created_at >= IDEMPOTENCY_TTL
}

/// The day whose digest is due at `now`: the network's today once `hour`
/// has struck in its time zone, yesterday before. One digest per user and
/// day, so a digest missed while the service was down is sent late, never twice.
pub fn digest_day(now: DateTime<Utc>, hour: u32, zone: chrono_tz::Tz) -> NaiveDate {
    let local = now.with_timezone(&zone);
    let today = local.date_naive();
    if local.hour() >= hour {
        today
    } else {
        today.pred_opt().unwrap_or(today)
    }
}

/// What needs the caller now, in counts. New kinds (handovers to
/// acknowledge, consultations to answer, overdue items) join as fields here,
/// in [`InboxCounts::lines`], and in the query that fills them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InboxCounts {
    /// Threads with messages from others the caller has not read.
    pub unread_threads: i64,
    /// In-app notifications not yet marked read.
    pub unread_notifications: i64,
    /// Discharge handovers addressed to the caller, not yet acknowledged.
    pub handovers_to_acknowledge: i64,
    /// Consultations waiting for the caller's centre (specialists).
    pub consultations_to_answer: i64,
    /// The caller's consultations that are answered and wait to be closed.
    pub consultations_to_close: i64,
    /// Among the handovers and consultations above, those past their due time.
    pub overdue: i64,
    /// Pharmacist interventions addressed to the caller, not yet answered.
    pub interventions_to_answer: i64,
}

impl InboxCounts {
    /// Each count with its wording (for the digest email), in a fixed order.
    pub fn lines(&self) -> Vec<(i64, &'static str, &'static str)> {
        vec![
            (
                self.unread_threads,
                "conversation with unread messages",
                "conversations with unread messages",
            ),
            (
                self.unread_notifications,
                "unread notification",
                "unread notifications",
            ),
            (
                self.handovers_to_acknowledge,
                "discharge handover to acknowledge",
                "discharge handovers to acknowledge",
            ),
            (
                self.consultations_to_answer,
                "consultation request to answer",
                "consultation requests to answer",
            ),
            (
                self.consultations_to_close,
                "answered consultation to close",
                "answered consultations to close",
            ),
            (self.overdue, "overdue item", "overdue items"),
            (
                self.interventions_to_answer,
                "pharmacist intervention to answer",
                "pharmacist interventions to answer",
            ),
        ]
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lines().iter().all(|(n, _, _)| *n <= 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_trimmed_and_bounded() {
        assert_eq!(parse_body("  bonjour \n").unwrap(), "bonjour");
        assert_eq!(parse_body("a\nb\tc").unwrap(), "a\nb\tc");
        assert!(parse_body("   \n ").is_err());
        assert!(parse_body("").is_err());
        assert!(parse_body("a\u{0}b").is_err());
        let longest = "é".repeat(MAX_BODY_CHARS);
        assert_eq!(parse_body(&longest).unwrap(), longest);
        // The limit counts what was sent, surrounding spaces included.
        assert!(parse_body(&format!(" {longest} ")).is_err());
        assert!(parse_body(&"é".repeat(MAX_BODY_CHARS + 1)).is_err());
    }

    /// Replays a thread's messages against a reader's marker moves and checks
    /// the count against the rule: never negative, never one's own.
    #[test]
    fn unread_counts_follow_the_marker_and_skip_own_messages() {
        let ids: Vec<String> = (0..6).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let authors = ["a", "b", "a", "b", "b", "a"];
        let count = |marker: Option<&str>, reader: &str| {
            ids.iter()
                .zip(authors)
                .filter(|(id, author)| is_unread(id, author, reader, marker))
                .count()
        };
        assert_eq!(count(None, "a"), 3);
        assert_eq!(count(None, "b"), 3);
        assert_eq!(count(None, "c"), 6);
        assert_eq!(count(Some(&ids[2]), "a"), 2);
        assert_eq!(count(Some(&ids[5]), "a"), 0);
        assert_eq!(
            count(Some(&ids[4]), "a"),
            0,
            "own last message is not unread"
        );
        assert_eq!(count(Some(&ids[4]), "b"), 1);

        // Markers only move forward: going back changes nothing.
        let mut marker: Option<String> = None;
        for up_to in [&ids[3], &ids[1], &ids[3], &ids[5], &ids[0]] {
            if let Some(next) = advance_marker(marker.as_deref(), up_to) {
                marker = Some(next);
            }
        }
        assert_eq!(marker.as_deref(), Some(ids[5].as_str()));
        assert_eq!(advance_marker(Some(&ids[2]), &ids[2]), None);
        assert_eq!(advance_marker(Some(&ids[2]), &ids[3]), Some(ids[3].clone()));
    }

    #[test]
    fn message_ids_keep_the_thread_order_when_a_clock_lags() {
        let first = next_message_id(None);
        let second = next_message_id(Some(&first));
        assert!(second > first);
        // The last id came from an instance whose clock is an hour ahead.
        let ahead_ms = (chrono::Utc::now() + Duration::hours(1)).timestamp_millis() as u64;
        let ahead = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            ahead_ms / 1000,
            0,
        ))
        .to_string();
        let next = next_message_id(Some(&ahead));
        assert!(next > ahead, "{next} <= {ahead}");
        assert!(uuid::Uuid::parse_str(&next).is_ok());
        assert!(next_message_id(Some(&next)) > next);
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(parse_idempotency_key(b"abc-123_X").unwrap(), "abc-123_X");
        assert!(parse_idempotency_key(b"").is_err());
        assert!(parse_idempotency_key(b"with space").is_err());
        assert!(parse_idempotency_key("clé".as_bytes()).is_err());
        assert!(parse_idempotency_key(&[b'k'; 255]).is_ok());
        assert!(parse_idempotency_key(&[b'k'; 256]).is_err());

        let first = fingerprint("post_message", "thread-1", "hello");
        assert_eq!(
            key_reuse(&first, &fingerprint("post_message", "thread-1", "hello")),
            KeyReuse::Replay
        );
        for other in [
            fingerprint("post_message", "thread-1", "hello!"),
            fingerprint("post_message", "thread-2", "hello"),
            fingerprint("post_handover", "thread-1", "hello"),
            // Field boundaries cannot be shifted to collide.
            fingerprint("post_message", "thread-1h", "ello"),
        ] {
            assert_eq!(key_reuse(&first, &other), KeyReuse::Conflict);
        }

        let t = NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        assert!(!key_expired(
            t,
            t + Duration::hours(23) + Duration::minutes(59)
        ));
        assert!(key_expired(t, t + Duration::hours(24)));
    }

    #[test]
    fn the_digest_day_turns_at_the_digest_hour() {
        let at = |h, m| {
            NaiveDate::from_ymd_opt(2026, 11, 25)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap()
                .and_utc()
        };
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let yesterday = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let utc = chrono_tz::UTC;
        assert_eq!(digest_day(at(5, 59), 6, utc), yesterday);
        assert_eq!(digest_day(at(6, 0), 6, utc), today);
        assert_eq!(digest_day(at(23, 59), 6, utc), today);
        assert_eq!(digest_day(at(0, 0), 0, utc), today);
        // In Paris (UTC+1 in November), 7:00 is 6:00 UTC, and 23:30 UTC is
        // already the next day.
        let paris = chrono_tz::Europe::Paris;
        assert_eq!(digest_day(at(5, 59), 7, paris), yesterday);
        assert_eq!(digest_day(at(6, 0), 7, paris), today);
        assert_eq!(digest_day(at(23, 30), 0, paris), today.succ_opt().unwrap());
        // Each day of a week at any hour names one digest day, moving by one.
        let mut t = at(3, 17);
        let mut previous = digest_day(t, 6, paris);
        for _ in 0..7 {
            t += Duration::days(1);
            let day = digest_day(t, 6, paris);
            assert_eq!(day - previous, Duration::days(1));
            previous = day;
        }
    }

    #[test]
    fn inbox_counts_list_every_field() {
        let counts = InboxCounts {
            unread_threads: 2,
            unread_notifications: 5,
            handovers_to_acknowledge: 1,
            consultations_to_answer: 3,
            consultations_to_close: 4,
            overdue: 6,
            interventions_to_answer: 7,
        };
        let listed: Vec<i64> = counts.lines().iter().map(|l| l.0).collect();
        // A field added to the struct but not to `lines` would be missing here.
        let json = serde_json::to_value(counts).unwrap();
        let mut fields: Vec<i64> = json
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .collect();
        fields.sort_unstable();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, fields);
        assert!(!counts.is_empty());
        assert!(InboxCounts::default().is_empty());
    }
}
