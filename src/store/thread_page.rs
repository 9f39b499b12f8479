//! Rendered pages of a thread's messages, held in memory and checked
//! against the database on every read, so that a page is never served
//! that the database would no longer answer.
//!
//! Why a held page is still right: a thread's messages are never edited or
//! deleted, and a new one always gets an id greater than every earlier one
//! (`lock_thread`, `next_message_id`). So the `limit` messages after
//! `after` never change once the page is full (a message past it exists);
//! a page that reached the end of the thread is still the answer while
//! the thread's newest message (`threads.last_message_id`, read by the
//! request's access check) is its last one. What can change is how the
//! page names its authors: a renamed account, a new role, a deleted one.
//! Each read compares the authors' current names and roles with those the
//! page was rendered with, in one keyed statement over a JSON array of
//! their ids; any difference and the page is read again.
//!
//! The access check and the read's audit row come first, as for every
//! read: this only replaces reading and rendering the rows. Entries are
//! looked up by the thread the request's basis was resolved on, hold only
//! that thread's page, live in memory only, and are never logged.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::db::{DbConnection, Fixed};
use crate::domain::role::Role;
use crate::store::byte_bound::{Bounded, Weighed, bounded};
use crate::store::messaging::MessageRow;

/// (thread, after, limit).
type Key = (String, String, i64);

/// An author as the page names them.
#[derive(QueryableByName, PartialEq, Eq, Debug)]
struct Author {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    full_name: String,
    #[diesel(sql_type = Text)]
    role: Role,
}

struct Held {
    body: Pieces,
    /// By id, each once.
    authors: Vec<Author>,
    /// Their ids, as the JSON array the check binds.
    ids: String,
    /// `None` for a full page; else its last message, which must still be
    /// the thread's newest.
    tail: Option<String>,
    bytes: u64,
}

impl Weighed for Held {
    fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// What a page's rows say about how long it stays right: who wrote them
/// and, for a page that reached the end of the thread, its last message.
pub struct PageFacts {
    authors: Vec<Author>,
    tail: Option<String>,
}

impl PageFacts {
    /// The facts of a page of `limit` messages read as up to `limit + 1`
    /// `rows` (the extra one says the page is full); `None` for an empty
    /// page, not worth keeping.
    pub fn of(rows: &[MessageRow], limit: i64) -> Option<Self> {
        let shown = &rows[..usize::try_from(limit).unwrap_or(usize::MAX).min(rows.len())];
        let last = shown.last()?;
        let tail = (shown.len() == rows.len()).then(|| last.0.clone());
        let mut authors: Vec<Author> = Vec::new();
        for (_, _, id, full_name, role, ..) in shown {
            if let Err(at) = authors.binary_search_by(|a| a.id.as_str().cmp(id)) {
                let author = Author {
                    id: id.clone(),
                    full_name: full_name.clone(),
                    role: *role,
                };
                authors.insert(at, author);
            }
        }
        Some(Self { authors, tail })
    }
}

/// Pages held in memory, bounded in bytes (`database.thread_page_cache_bytes`).
pub struct ThreadPages {
    pages: Option<Bounded<Key, Held>>,
    hits: prometheus::IntCounter,
    misses: prometheus::IntCounter,
}

/// The smallest an entry is counted for, so that the entries bound follows
/// from the bytes bound.
const ENTRY_FLOOR: u64 = 2048;

crate::statement_key!(
    /// The key of [`authors_sql!`]'s statement (one text per backend).
    AuthorsKey
);

/// `$each` is the backend's table function over the JSON array of ids,
/// named `j` with a column `value`, and the join to `users`: joined, not
/// `IN (SELECT …)`, which on SQLite builds and drops a temporary index on
/// every execution. SQLite's `CROSS JOIN` keeps the array the outer loop;
/// PostgreSQL plans a plain `JOIN` itself (and takes no `ON` after `CROSS
/// JOIN`).
macro_rules! authors_sql {
    ($each:literal) => {
        concat!(
            "SELECT u.id, u.full_name, u.role FROM ",
            $each,
            " users u ON u.id = j.value"
        )
    };
}

impl ThreadPages {
    /// A cache of about `max_bytes` of rendered pages (0: none, every read
    /// reads its rows).
    pub fn new(max_bytes: u64) -> Self {
        let max_entries = usize::try_from(max_bytes.div_ceil(ENTRY_FLOOR)).unwrap_or(usize::MAX);
        Self {
            pages: bounded(max_entries, max_bytes),
            hits: prometheus::IntCounter::new(
                "relais_thread_page_cache_hits_total",
                "Pages of a thread's messages served as held in memory, after checking their authors",
            )
            .expect("valid counter options"),
            misses: prometheus::IntCounter::new(
                "relais_thread_page_cache_misses_total",
                "Pages of a thread's messages read from the database",
            )
            .expect("valid counter options"),
        }
    }

    /// The page of `limit` messages after `after` in `thread_id`, if one is
    /// held and the database would answer the same now, given the thread's
    /// newest message `last_message_id` as the access check read it.
    pub fn get(
        &self,
        conn: &mut DbConnection,
        thread_id: &str,
        after: &str,
        limit: i64,
        last_message_id: Option<&str>,
    ) -> QueryResult<Option<Bytes>> {
        let held = self
            .pages
            .as_ref()
            .and_then(|p| p.get(&(thread_id.to_owned(), after.to_owned(), limit)))
            .filter(|h| h.tail.is_none() || h.tail.as_deref() == last_message_id);
        let Some(held) = held else {
            self.misses.inc();
            return Ok(None);
        };
        let sql = match conn {
            DbConnection::Postgres(_) => {
                authors_sql!("jsonb_array_elements_text(CAST({} AS jsonb)) AS j(value) JOIN")
            }
            DbConnection::Sqlite(_) => authors_sql!("json_each({}) AS j CROSS JOIN"),
        };
        let mut now: Vec<Author> = crate::per_backend!(conn, |c| Fixed::new(sql)
            .keyed::<AuthorsKey>()
            .bind::<Text, _>(&held.ids)
            .load(c))?;
        // By id as Rust orders it (a database's collation may differ).
        now.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        if now == held.authors {
            self.hits.inc();
            Ok(Some(held.body.render()))
        } else {
            self.misses.inc();
            Ok(None)
        }
    }

    /// Keeps `body`, the page whose rows gave `facts`.
    pub fn insert(&self, thread_id: &str, after: &str, limit: i64, facts: PageFacts, body: Pieces) {
        let Some(pages) = &self.pages else { return };
        let PageFacts { authors, tail } = facts;
        let ids = serde_json::to_string(&authors.iter().map(|a| a.id.as_str()).collect::<Vec<_>>())
            .expect("strings serialize");
        let bytes = (body.weight()
            + ids.len()
            + authors
                .iter()
                .map(|a| a.id.len() + a.full_name.len() + std::mem::size_of::<Author>())
                .sum::<usize>()
            + thread_id.len()
            + after.len()
            + tail.as_ref().map_or(0, String::len)
            + std::mem::size_of::<Held>()
            + std::mem::size_of::<Key>()) as u64;
        pages.insert(
            (thread_id.to_owned(), after.to_owned(), limit),
            Arc::new(Held {
                body,
                authors,
                ids,
                tail,
                bytes,
            }),
        );
    }

    /// Pages held now.
    pub fn len(&self) -> usize {
        self.pages.as_ref().map_or(0, |p| p.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// About how many bytes the held pages take.
    pub fn weight(&self) -> u64 {
        self.pages.as_ref().map_or(0, |p| p.weight())
    }

    /// Reads served from it, and reads that read their rows.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    /// Its metrics, for the application's registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.hits.clone()), Box::new(self.misses.clone())]
    }
}

/// A text kept as the pieces it is made of, each piece that repeats held
/// once: a page of messages names its thread and each author again in
/// every message, which is about a third of its JSON. Rendering copies the
/// pieces in order, nothing more; what the pieces are is the caller's
/// (the page's JSON is written by `api::threads`).
pub struct Pieces {
    text: Box<[u8]>,
    /// In order: the ranges of `text` that make the whole.
    spans: Box<[(u32, u32)]>,
    len: usize,
}

/// Builds [`Pieces`].
#[derive(Default)]
pub struct PiecesBuilder {
    text: Vec<u8>,
    spans: Vec<(u32, u32)>,
    shared: HashMap<Vec<u8>, (u32, u32)>,
    len: usize,
}

impl PiecesBuilder {
    /// Appends a piece that recurs (punctuation, a name given again): its
    /// bytes are held once however often it is appended.
    pub fn shared(&mut self, piece: &[u8]) {
        let span = match self.shared.get(piece) {
            Some(span) => *span,
            None => {
                let span = self.append(piece);
                self.shared.insert(piece.to_vec(), span);
                span
            }
        };
        self.spans.push(span);
        self.len += piece.len();
    }

    /// Appends a piece that does not recur (a message's id, its body).
    pub fn unique(&mut self, piece: &[u8]) {
        let span = self.append(piece);
        // Right after the previous span in the text: one span for both.
        match self.spans.last_mut() {
            Some(last) if last.1 == span.0 => last.1 = span.1,
            _ => self.spans.push(span),
        }
        self.len += piece.len();
    }

    fn append(&mut self, piece: &[u8]) -> (u32, u32) {
        let start = self.text.len();
        self.text.extend_from_slice(piece);
        let at = |n: usize| u32::try_from(n).expect("a page is far below 4 GiB");
        (at(start), at(self.text.len()))
    }

    pub fn build(self) -> Pieces {
        Pieces {
            text: self.text.into_boxed_slice(),
            spans: self.spans.into_boxed_slice(),
            len: self.len,
        }
    }
}

impl Pieces {
    /// The whole text.
    pub fn render(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.len);
        for &(start, end) in &self.spans {
            out.extend_from_slice(&self.text[start as usize..end as usize]);
        }
        Bytes::from(out)
    }

    /// What it holds in memory.
    fn weight(&self) -> usize {
        self.text.len() + std::mem::size_of_val(&*self.spans) + std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_render_what_was_appended_and_hold_a_repeated_piece_once() {
        let mut b = PiecesBuilder::default();
        let mut whole = Vec::new();
        for i in 0..50 {
            for (shared, piece) in [
                (false, format!("{{\"id\":\"m{i}\"")),
                (true, ",\"thread_id\":\"t\",\"author\":".to_owned()),
                (true, format!("{{\"name\":\"author {}\"}}", i % 3)),
                (false, format!(",\"body\":\"text {i}\"}}")),
                (true, ",".to_owned()),
            ] {
                whole.extend_from_slice(piece.as_bytes());
                if shared {
                    b.shared(piece.as_bytes());
                } else {
                    b.unique(piece.as_bytes());
                }
            }
        }
        let pieces = b.build();
        assert_eq!(&pieces.render()[..], &whole[..]);
        assert!(
            pieces.text.len() < whole.len() * 2 / 3,
            "{} of {}",
            pieces.text.len(),
            whole.len()
        );
        assert_eq!(PiecesBuilder::default().build().render().len(), 0);
    }
}
