//! Threads and messages: one thread per subject, read by whoever has a
//! basis on the subject at the time of the request.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query, path_id};
use super::idempotency::IdempotencyKey;
use super::scope::{RequestInfo, Resource, Scoped, authorize_linked};
use super::{Page, page_limit};
use crate::audit::{self, AuditRecord, Outcome};
use crate::auth::AuthUser;
use crate::domain::access::{Basis, Permission, Relations};
use crate::domain::messaging::{SubjectType, fingerprint, next_message_id, parse_body};
use crate::domain::role::Role;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::store::idempotency::{self, Claim};
use crate::store::messaging::{
    self, Message, MessageRow, Posted, Thread, ThreadQuery, VisibleThread, lock_thread,
    party_to_subject,
};
use crate::store::thread_page::{PageFacts, Pieces, PiecesBuilder};

/// A caller taking part in the thread `{id}`: they have a basis on its
/// subject now. Unknown threads and threads without a basis are both 404,
/// audited as denied; a read (GET) is audited as allowed before the handler runs.
#[derive(Clone)]
pub struct ThreadAccess {
    pub thread: Thread,
    /// The patient the thread concerns, if any (for the audit trail).
    pub patient_id: Option<String>,
    pub caller: AuthUser,
    /// The caller's basis on the patient (patient threads only).
    pub basis: Option<Basis>,
    /// The patient's relations (patient threads only).
    pub relations: Option<Relations>,
    pub info: RequestInfo,
}

impl ThreadAccess {
    /// The audit record of this (allowed) request.
    fn audit(&self, resource_type: &str, resource_id: &str) -> AuditRecord {
        self.info.record(
            &self.caller,
            resource_type,
            Some(resource_id),
            self.patient_id.as_deref(),
            self.basis,
            Outcome::Allowed,
        )
    }
}

fn no_such_thread() -> ApiError {
    ApiError::NotFound("no such thread".into())
}

impl FromRequest for ThreadAccess {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let scoped = Scoped::of(req, payload);
        Box::pin(async move {
            let Scoped {
                state,
                caller,
                id: thread_id,
                info,
                is_read,
            } = scoped.await?;
            let thread = {
                let id = thread_id.clone();
                state
                    .db
                    .read(move |conn| Ok(Thread::find(conn, &id)?))
                    .await?
            };
            let Some(thread) = thread else {
                let denied = info.record(
                    &caller,
                    "thread",
                    Some(&thread_id),
                    None,
                    None,
                    Outcome::Denied,
                );
                state.audit.record(denied).await?;
                return Err(no_such_thread());
            };
            // Patient threads: those with a basis on the patient. Consultation
            // and handover threads: their parties, with a basis on the
            // patient too when there is one (the one door).
            let party = match thread.subject_type {
                SubjectType::Patient => thread.patient_id.is_some(),
                _ => {
                    let (t, who) = (thread.clone(), caller.clone());
                    state
                        .db
                        .read(move |conn| Ok(party_to_subject(conn, &t, &who)?))
                        .await?
                }
            };
            let resource = Resource {
                kind: "thread",
                id: &thread.id,
            };
            let (basis, relations) = authorize_linked(
                &state,
                &caller,
                &info,
                resource,
                thread.patient_id.as_deref(),
                party,
                Permission::Read,
                false,
            )
            .await?;
            let patient_id = thread.patient_id.clone();
            let access = Self {
                thread,
                patient_id,
                caller,
                basis,
                relations,
                info,
            };
            if is_read {
                state
                    .audit
                    .record(access.audit("thread", &access.thread.id))
                    .await?;
            }
            Ok(access)
        })
    }
}

/// What a thread is about.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadSubject {
    #[serde(rename = "type")]
    pub kind: SubjectType,
    pub id: String,
}

/// The patient of a thread, as its participants see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadPatient {
    pub id: String,
    pub family_name: String,
    pub given_names: String,
}

/// A thread in the caller's list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadView {
    pub id: String,
    pub subject: ThreadSubject,
    pub patient: Option<ThreadPatient>,
    /// The caller's basis on the subject (why they take part).
    /// The caller's basis on the patient (patient threads; null for the
    /// threads of consultations and handovers, open to their parties).
    pub access_basis: Option<Basis>,
    /// `null` while the thread has no message.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Messages from others after the caller's read marker.
    pub unread_count: i64,
    pub created_at: DateTime<Utc>,
}

/// Filters of the thread list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadFilter {
    /// `true`: only threads with unread messages.
    pub unread: Option<bool>,
    /// Only the thread of this patient.
    #[param(format = Uuid)]
    pub patient_id: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn thread_view(v: VisibleThread) -> ThreadView {
    let VisibleThread {
        thread,
        basis,
        patient_name,
        unread_count,
    } = v;
    let patient = thread
        .patient_id
        .zip(patient_name)
        .map(|(id, (family_name, given_names))| ThreadPatient {
            id,
            family_name,
            given_names,
        });
    ThreadView {
        subject: ThreadSubject {
            kind: thread.subject_type,
            id: thread.subject_id,
        },
        id: thread.id,
        patient,
        access_basis: basis,
        last_message_at: thread.last_message_at.map(|t| t.and_utc()),
        unread_count,
        created_at: thread.created_at.and_utc(),
    }
}

#[utoipa::path(get, path = "/api/v1/threads", tag = "messaging",
    params(ThreadFilter),
    responses(
        (status = 200, description = "The caller's threads, latest activity first (each listed one is audited)", body = Page<ThreadView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Lists the threads the caller takes part in, with unread counts.
pub async fn list_threads(
    state: web::Data<AppState>,
    caller: AuthUser,
    info: RequestInfo,
    Query(filter): Query<ThreadFilter>,
) -> Result<web::Json<Page<ThreadView>>, ApiError> {
    let limit = page_limit(filter.limit)?;
    let patient_id = filter
        .patient_id
        .as_deref()
        .map(|p| path_id(p, "patient_id"))
        .transpose()?;
    let now = state.clock.now();
    let page = {
        let caller = caller.clone();
        state
            .db
            .read(move |conn| {
                let candidates = messaging::thread_candidates(
                    conn,
                    &caller,
                    now,
                    ThreadQuery {
                        unread_only: filter.unread == Some(true),
                        patient_id,
                        cursor: filter.cursor,
                        rows: limit + 1,
                    },
                )?;
                let raw = Page::from_rows(candidates, limit, |t| t.activity_id.clone());
                let items = messaging::visible_threads(conn, &caller, now, raw.items)?
                    .into_iter()
                    .map(thread_view)
                    .collect();
                Ok(Page {
                    items,
                    next_cursor: raw.next_cursor,
                })
            })
            .await?
    };
    let records = page
        .items
        .iter()
        .map(|t| {
            info.record(
                &caller,
                "thread",
                Some(&t.id),
                t.patient.as_ref().map(|p| p.id.as_str()),
                t.access_basis,
                Outcome::Allowed,
            )
        })
        .collect();
    state.audit.record_all(records).await?;
    Ok(web::Json(page))
}

/// Who wrote a message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageAuthor {
    pub id: String,
    pub full_name: String,
    pub role: Role,
}

/// A message (immutable).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    #[schema(format = Uuid)]
    pub thread_id: String,
    pub author: MessageAuthor,
    pub body: String,
    #[serde(serialize_with = "crate::api::rfc3339::utc")]
    pub created_at: DateTime<Utc>,
}

/// A message to post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// 1 to 10 000 characters once trimmed.
    #[schema(min_length = 1, max_length = 10000)]
    pub body: String,
}

/// A page of a thread.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    /// The previous page's `next_cursor`: only messages after it.
    #[param(format = Uuid)]
    pub cursor: Option<String>,
    /// The same as `cursor` (its older name, kept for clients that use it);
    /// with both, the later one counts.
    #[param(format = Uuid)]
    pub after: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

#[cfg(test)]
fn message_view(row: MessageRow) -> MessageView {
    let (id, thread_id, author_id, full_name, role, body, created_at) = row;
    MessageView {
        id,
        thread_id,
        author: MessageAuthor {
            id: author_id,
            full_name,
            role,
        },
        body,
        created_at: created_at.0.and_utc(),
    }
}

#[utoipa::path(get, path = "/api/v1/threads/{id}/messages", tag = "messaging",
    params(("id" = uuid::Uuid, Path, description = "Thread id"), MessageFilter),
    responses(
        (status = 200, description = "Oldest first; pass `next_cursor` back as `cursor` for the next page", body = Page<MessageView>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown thread, or no basis on its subject", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// A page of a thread's messages, in a stable order.
pub async fn list_messages(
    state: web::Data<AppState>,
    access: ThreadAccess,
    Query(filter): Query<MessageFilter>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(filter.limit)?;
    let cursor = filter
        .cursor
        .as_deref()
        .map(|c| path_id(c, "cursor"))
        .transpose()?;
    let alias = filter
        .after
        .as_deref()
        .map(|a| path_id(a, "after"))
        .transpose()?;
    // Both given: the messages after both, i.e. after the later one.
    let after = cursor.max(alias).unwrap_or_default();
    let thread_id = access.thread.id;
    // The page as held in memory when the database would answer the same
    // (see `store::thread_page`), else its rows; one statement either way.
    let found = state
        .db
        .read_autocommit({
            let (pages, thread_id, after) =
                (state.thread_pages.clone(), thread_id.clone(), after.clone());
            let newest = access.thread.last_message_id;
            move |conn| {
                if let Some(body) = pages.get(conn, &thread_id, &after, limit, newest.as_deref())? {
                    return Ok(Found::Held(body));
                }
                let rows = messaging::message_page(conn, &thread_id, &after, limit + 1)?;
                Ok(Found::Rows(rows))
            }
        })
        .await?;
    let body = match found {
        Found::Held(body) => body,
        Found::Rows(rows) => {
            let facts = PageFacts::of(&rows, limit);
            let pieces = page_pieces(&Page::from_rows(rows, limit, |r| r.0.clone()))?;
            let body = pieces.render();
            if let Some(facts) = facts {
                state
                    .thread_pages
                    .insert(&thread_id, &after, limit, facts, pieces);
            }
            body
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(body))
}

/// The JSON of `page` exactly as `Page<MessageView>` serialises (the tests
/// compare them byte for byte), kept as pieces: the thread's id and each
/// author are held once, not once a message (see `store::thread_page`).
fn page_pieces(page: &Page<MessageRow>) -> Result<Pieces, ApiError> {
    fn json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(value).map_err(ApiError::internal)
    }
    struct At(DateTime<Utc>);
    impl Serialize for At {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            crate::api::rfc3339::utc(&self.0, s)
        }
    }
    let mut b = PiecesBuilder::default();
    let mut authors: Vec<(&str, Vec<u8>)> = Vec::new();
    b.unique(b"{\"items\":[");
    for (i, (id, thread_id, author_id, full_name, role, body, created_at)) in
        page.items.iter().enumerate()
    {
        if i > 0 {
            b.shared(b",");
        }
        b.unique(b"{\"id\":");
        b.unique(&json(id)?);
        let mut thread = b",\"thread_id\":".to_vec();
        thread.extend(json(thread_id)?);
        thread.extend_from_slice(b",\"author\":");
        b.shared(&thread);
        match authors.iter().find(|(a, _)| a == author_id) {
            Some((_, author)) => b.shared(author),
            None => {
                let author = json(&MessageAuthor {
                    id: author_id.clone(),
                    full_name: full_name.clone(),
                    role: *role,
                })?;
                b.shared(&author);
                authors.push((author_id, author));
            }
        }
        b.unique(b",\"body\":");
        b.unique(&json(body)?);
        b.unique(b",\"created_at\":");
        b.unique(&json(&At(created_at.0.and_utc()))?);
        b.unique(b"}");
    }
    b.unique(b"],\"next_cursor\":");
    b.unique(&json(&page.next_cursor)?);
    b.unique(b"}");
    Ok(b.build())
}

/// A page of messages as held in memory, or its rows as read.
enum Found {
    Held(Bytes),
    Rows(Vec<MessageRow>),
}

#[utoipa::path(post, path = "/api/v1/threads/{id}/messages", tag = "messaging",
    params(
        ("id" = uuid::Uuid, Path, description = "Thread id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Up to 255 visible ASCII characters, kept 24 h per user: the same key with the same body answers as the first time and posts nothing more"),
    ),
    request_body = NewMessage,
    responses(
        (status = 201, description = "Posted; the other participants are notified", body = MessageView),
        (status = 400, description = "Malformed body or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown thread, or no basis on its subject", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body, or Idempotency-Key reused for another request", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Posts a message (any participant); messages cannot be edited or deleted.
pub async fn post_message(
    state: web::Data<AppState>,
    access: ThreadAccess,
    key: IdempotencyKey,
    Json(body): Json<NewMessage>,
) -> Result<HttpResponse, ApiError> {
    let text = parse_body(&body.body).map_err(|m| ApiError::invalid("body", m))?;
    let now = state.clock.now_naive();
    let public_url = state.settings.server.public_url.clone();
    let (status, response, replayed) = state
        .db
        .write(move |conn| {
            let locked = lock_thread(conn, &access.thread.id, &access.caller.id)?;
            let full_name = locked
                .author_name
                .ok_or(ApiError::Unauthorized("no such account"))?;
            let message = Message {
                id: next_message_id(locked.last_message_id.as_deref()),
                thread_id: access.thread.id.clone(),
                author_id: access.caller.id.clone(),
                body: text,
                created_at: now,
            };
            let view = MessageView {
                id: message.id.clone(),
                thread_id: message.thread_id.clone(),
                author: MessageAuthor {
                    id: access.caller.id.clone(),
                    full_name,
                    role: access.caller.role,
                },
                body: message.body.clone(),
                created_at: now.and_utc(),
            };
            let response = serde_json::to_string(&view).map_err(ApiError::internal)?;
            if let Some(key) = &key.0 {
                let print = fingerprint("post_message", &message.thread_id, &message.body);
                let claim = idempotency::claim(
                    conn,
                    &access.caller.id,
                    key,
                    &print,
                    StatusCode::CREATED,
                    &response,
                    now,
                )?;
                if let Claim::Replay { status, body } = claim {
                    // A replay shows the message again: audited like a read.
                    audit::append(conn, &[access.audit("thread", &access.thread.id)], now)?;
                    return Ok((status, body, true));
                }
            }
            let posted = Posted {
                thread: &access.thread,
                relations: access.relations.as_ref(),
                patient_id: access.patient_id.as_deref(),
            };
            messaging::post(conn, posted, &message, &public_url, now)?;
            audit::append(conn, &[access.audit("message", &message.id)], now)?;
            Ok((StatusCode::CREATED.as_u16(), response, false))
        })
        .await?;
    if !replayed {
        state.outbox.wake();
    }
    Ok(crate::error::respond(status, response, replayed))
}

/// How far the caller has read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// A message of this thread: it and everything before it count as read.
    #[schema(format = Uuid)]
    pub up_to: String,
}

/// The caller's read state in a thread.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadState {
    pub thread_id: String,
    /// The marker in force (unchanged when `up_to` was behind it).
    pub last_read_id: String,
    pub unread_count: i64,
}

#[utoipa::path(post, path = "/api/v1/threads/{id}/read", tag = "messaging",
    params(("id" = uuid::Uuid, Path, description = "Thread id")),
    request_body = MarkRead,
    responses(
        (status = 200, description = "The marker moved forward (a move backwards is ignored)", body = ReadState),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown thread, or no basis on its subject", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`up_to` is not a message of this thread", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
/// Marks the thread read up to a message.
pub async fn mark_thread_read(
    state: web::Data<AppState>,
    access: ThreadAccess,
    Json(body): Json<MarkRead>,
) -> Result<web::Json<ReadState>, ApiError> {
    let up_to = uuid::Uuid::parse_str(&body.up_to)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::invalid("up_to", "not a valid message id (UUID)"))?;
    let now = state.clock.now_naive();
    let state_view = state
        .db
        .write(move |conn| {
            let thread_id = access.thread.id.clone();
            let user_id = access.caller.id.clone();
            let (marker, unread) = messaging::mark_read(
                conn,
                &thread_id,
                &user_id,
                access.patient_id.as_deref(),
                &up_to,
                now,
            )?;
            audit::append(conn, &[access.audit("thread_read", &thread_id)], now)?;
            Ok(ReadState {
                thread_id,
                last_read_id: marker,
                unread_count: unread,
            })
        })
        .await?;
    Ok(web::Json(state_view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Stamp;

    fn row(i: u32, author: &str, name: &str, role: Role, body: &str, micros: u32) -> MessageRow {
        let at = chrono::NaiveDate::from_ymd_opt(2026, 12, 3)
            .unwrap()
            .and_hms_micro_opt(14, 0, i % 60, micros)
            .unwrap();
        (
            format!("0193a000-0000-7000-8000-{i:012}"),
            "0193a000-0000-7000-8000-thread000001".into(),
            author.into(),
            name.into(),
            role,
            body.into(),
            Stamp(at),
        )
    }

    /// The held pieces render what serde writes for `Page<MessageView>`,
    /// the documented shape, to the byte: escapes, an author given again,
    /// fractions of a second, a cursor or none, an empty page.
    #[test]
    fn a_page_in_pieces_is_its_serde_json_to_the_byte() {
        let rows = vec![
            row(
                1,
                "a1",
                "Dr \"Lefèvre\"",
                Role::Gp,
                "Douleur 7/10 \\ \n\ttab \u{1}",
                0,
            ),
            row(
                2,
                "a2",
                "Pharmacie d’Armor",
                Role::Pharmacist,
                "ok 😀 </script>",
                120_000,
            ),
            row(3, "a1", "Dr \"Lefèvre\"", Role::Gp, "", 123_456),
            row(4, "a3", "N", Role::HospitalDoctor, "x", 5),
        ];
        for limit in [1, 2, 3, 4, 10] {
            let page = Page::from_rows(rows.clone(), limit, |r| r.0.clone());
            let pieces = page_pieces(&page).unwrap().render();
            let expected = serde_json::to_vec(&page.map(message_view)).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&pieces),
                String::from_utf8_lossy(&expected),
                "limit {limit}"
            );
        }
        let empty = Page::from_rows(Vec::<MessageRow>::new(), 50, |r| r.0.clone());
        assert_eq!(
            &page_pieces(&empty).unwrap().render()[..],
            &serde_json::to_vec(&empty.map(message_view)).unwrap()[..]
        );
    }
}
